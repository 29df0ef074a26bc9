"""Memory and synchronisation of the GPU paths, pinned on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from dcbench.knn_graph import choose_chunk, knn_torch

GiB = 2**30


def test_chosen_knn_chunk_for_imagenet_fits_half_the_free_memory():
    n, free = 1_281_167, 100 * GiB
    chunk = choose_chunk(n, free)
    assert 3 * chunk * n * 4 <= free // 2
    assert 3 * (chunk + 1) * n * 4 > free // 2  # the largest that fits
    assert 1 <= chunk < 16384


def test_chosen_knn_chunk_is_one_with_tiny_free_memory_and_at_most_the_rows():
    assert choose_chunk(1_281_167, 1024) == 1
    assert choose_chunk(1_281_167, 0) == 1
    assert choose_chunk(100, 100 * GiB) == 100


def test_knn_torch_without_chunk_uses_the_free_memory_and_explicit_chunk_is_honoured(monkeypatch):
    import dcbench.resources as R

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
    sizes = []
    real_topk = torch.topk

    def topk(t, *a, **k):
        sizes.append(t.shape[0])
        return real_topk(t, *a, **k)

    monkeypatch.setattr(torch, "topk", topk)
    monkeypatch.setattr(R, "available_bytes", lambda device="cpu": 2 * 3 * 50 * 4 * 7)  # room for 7 rows
    d_auto, i_auto = knn_torch(x, 5)
    assert sizes[0] == 7
    sizes.clear()
    d_fix, i_fix = knn_torch(x, 5, chunk=20)
    assert sizes == [20, 20, 10]
    np.testing.assert_allclose(d_auto, d_fix, rtol=1e-5, atol=1e-5)

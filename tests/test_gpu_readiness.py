"""Memory and synchronisation of the GPU paths, pinned on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
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


_GATHER_SCRIPT = r"""
import os, sys
import torch
import torch.distributed as dist
from dcbench.train import distributed as D

dist.init_process_group("gloo")
r, total, d = D.rank(), 11, 3
pos = torch.tensor([p for p in range(r, total, 2) if p != 7])  # image 7 unreadable: on no rank
local = pos[:, None].float() * 10 + torch.arange(d, dtype=torch.float32)
got = D.gather_rows(local, pos, total, chunk_bytes=2 * d * 4)  # two rows per collective
torch.save(got, sys.argv[1])
dist.destroy_process_group()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_rows_gives_rank0_every_row_in_order_and_other_ranks_none(tmp_path):
    import os
    import subprocess
    import sys

    port = str(_free_port())
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, "-c", _GATHER_SCRIPT, str(tmp_path / f"r{r}.pt")], env=env,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
    rows, valid = torch.load(tmp_path / "r0.pt")
    expect = torch.tensor([p for p in range(11) if p != 7])
    assert valid.tolist() == [p != 7 for p in range(11)]
    assert torch.equal(rows, expect[:, None].float() * 10 + torch.arange(3, dtype=torch.float32))
    assert torch.load(tmp_path / "r1.pt") is None


def test_dc_train_dist_timeout_min_reaches_init_process_group(monkeypatch, tmp_path):
    import datetime

    import torch.distributed as dist

    from dcbench.train.cli import main
    from dcbench.train.config import make_config

    seen = {}

    class Stop(Exception):
        pass

    def init_process_group(backend, **kw):
        seen.update(kw, backend=backend)
        raise Stop

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(Stop):
        main(["--out", str(tmp_path / "run"), "--quiet", "--dist-timeout-min", "7"])
    assert seen["timeout"] == datetime.timedelta(minutes=7) and seen["backend"] == "gloo"
    assert make_config().dist_timeout_min == 120

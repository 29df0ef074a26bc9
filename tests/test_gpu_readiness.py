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


# ---- nvJPEG decode waits for the work already queued on the stream


class _FakeStream:
    def __init__(self, events):
        self.events = events

    def synchronize(self):
        self.events.append("wait")


def _recording_decode(monkeypatch, fail_batch: bool):
    import torchvision.io

    events: list = []

    def decode_jpeg(data, mode=None, device=None):
        if isinstance(data, list):
            if fail_batch:
                raise RuntimeError("one bad file")
            events.append(f"decode x{len(data)}")
            return [torch.zeros(3, 2, 2, dtype=torch.uint8) for _ in data]
        events.append("decode x1")
        return torch.zeros(3, 2, 2, dtype=torch.uint8)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode_jpeg)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream(events))
    return events


def test_cuda_decode_waits_for_the_queued_kernels_before_each_decode(monkeypatch):
    from dcbench import imageload as IL

    datas = [torch.zeros(4, dtype=torch.uint8)] * 3
    events = _recording_decode(monkeypatch, fail_batch=False)
    IL._decode_all(datas, torch.device("cuda"))
    assert events == ["wait", "decode x3"]
    events = _recording_decode(monkeypatch, fail_batch=True)  # the one-by-one fallback
    IL._decode_all(datas, torch.device("cuda"))
    assert events == ["wait"] + ["wait", "decode x1"] * 3


def test_cpu_decode_does_not_touch_cuda_streams(monkeypatch):
    from dcbench import imageload as IL

    events = _recording_decode(monkeypatch, fail_batch=False)
    IL._decode_all([torch.zeros(4, dtype=torch.uint8)] * 2, torch.device("cpu"))
    assert events == ["decode x2"]


# ---- the feature buffer is gone before the training pass


def test_feature_buffer_is_freed_before_the_training_pass(tiny_data, tmp_path, monkeypatch):
    import weakref

    import tiny_runs

    from dcbench.train import loop as L

    buffers: list = []
    alive_at_train: list = []
    real_features, real_pass = L.compute_features, L.train_pass

    def compute_features(*a, **kw):
        f, p = real_features(*a, **kw)
        buffers.append(weakref.ref(f))
        return f, p

    def train_pass(*a, **kw):
        alive_at_train.append([r() is not None for r in buffers])
        return real_pass(*a, **kw)

    monkeypatch.setattr(L, "compute_features", compute_features)
    monkeypatch.setattr(L, "train_pass", train_pass)
    L.train(tiny_runs.tiny(tiny_data, tmp_path / "run", epochs=2))
    assert len(buffers) == 2 and alive_at_train == [[False], [False, False]]


# ---- the loader ceiling is a steady-state figure


def test_loader_ceiling_is_timed_after_warm_up_for_at_least_the_asked_seconds(tiny_data, monkeypatch):
    import time
    from pathlib import Path

    import tiny_runs

    from dcbench.train import feed as FD

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import gpu_epoch

    decoded = [0]
    clock_at_batch: list = []
    real_inputs, real_clock = FD.to_inputs, time.perf_counter

    def inputs(*a, **kw):
        decoded[0] += 1
        return real_inputs(*a, **kw)

    def clock():
        clock_at_batch.append(decoded[0])
        return real_clock()

    monkeypatch.setattr(FD, "to_inputs", inputs)
    monkeypatch.setattr(time, "perf_counter", clock)
    cfg = tiny_runs.tiny(tiny_data, "unused", batch_size=8)
    got = gpu_epoch.loader_ceiling(cfg, tiny_data, torch.device("cpu"), images=16, min_seconds=0.3,
                                   warmup_batches=3)
    assert got["warmup_images"] == 24 and clock_at_batch[0] == 3  # the clock starts after the warm-up
    assert got["timed_s"] >= 0.3 and got["timed_images"] == 16 * got["passes"]
    assert got["img_per_s"] == pytest.approx(got["timed_images"] / got["timed_s"])


# ---- --deterministic


def test_deterministic_flag_sets_the_kernels_for_the_run_only_and_keeps_cpu_numbers(tiny_data, tmp_path,
                                                                                      monkeypatch):
    import json
    import os

    import tiny_runs

    from dcbench.train import cli as train_cli
    from dcbench.train import loop as L

    seen: list = []
    real_pass = L.train_pass

    def train_pass(*a, **kw):
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark, "CUBLAS_WORKSPACE_CONFIG" in os.environ))
        return real_pass(*a, **kw)

    monkeypatch.setattr(L, "train_pass", train_pass)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic)
    args = ["--data", str(tiny_data), "--scale", "smoke", "--k", "4", "--pca-dim", "8", "--batch-size", "16",
            "--steps-per-epoch", "2", "--epochs", "1", "--workers", "0", "--seed", "1", "--quiet"]
    assert train_cli.main(args + ["--out", str(tmp_path / "det"), "--deterministic"]) == 0
    assert seen == [(True, True, False, True)]
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert json.loads((tmp_path / "det" / "config.json").read_text())["config"]["deterministic"] is True
    L.train(tiny_runs.tiny(tiny_data, tmp_path / "plain"))
    a, b = tiny_runs.weights(tmp_path / "det"), tiny_runs.weights(tmp_path / "plain")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- JPEG bytes are not pinned


def test_only_decoded_crops_are_pinned_for_the_gpu(tiny_data):
    import tiny_runs

    from dcbench.datasets import ImageFolder
    from dcbench.train import feed as L

    ds = ImageFolder(tiny_data)
    cuda = torch.device("cuda")
    for loader, workers, pinned in (("nvjpeg", 0, False), ("nvjpeg", 1, False), ("draft", 0, True),
                                    ("draft", 1, True)):
        cfg = tiny_runs.tiny(tiny_data, "unused", loader=loader, workers=workers)
        fn, _ = L.crop_loaders(cfg, loader)
        dl = L.Feed(ds, fn, cfg, cuda)(np.arange(4), np.zeros(4, dtype=np.int64), 2, 0)
        assert dl.pin_memory is pinned, (loader, workers)
    cfg = tiny_runs.tiny(tiny_data, "unused", loader="draft")
    assert L._pin(cfg, torch.device("cpu")) is False

"""dc-train under torchrun: 2 CPU processes (gloo), features gathered, clustering on rank 0, DDP."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dcbench.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_class_tree) -> Path:
    # 36 images: an odd split over 2 ranks is exercised by the strided shards
    return tiny_class_tree(tmp_path_factory.mktemp("dctrain_dist") / "data", per_class=9)


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_data, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = shutil.which("torchrun")
    if not torchrun:
        pytest.skip("torchrun not installed")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "dcbench.train.cli",
           "--data", str(tiny_data), "--out", str(out), "--scale", "smoke", "--k", "3", "--pca-dim", "6",
           "--batch-size", "8", "--steps-per-epoch", "2", "--epochs", "2", "--quiet", "--seed", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    ck = load_checkpoint(out / "checkpoint", with_train_state=True)
    assert ck.meta["epoch"] == 2 and ck.meta["num_clusters"] == 3
    lines = (out / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone writes
    import json

    rec = json.loads(lines[-1])
    assert rec["images"] == 36 and rec["empty"] == 0 and rec["nmi_prev"] is not None
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2

"""dc-bench run --engine slurm against a real single-node Slurm cluster that the test starts
(tests/slurm_cluster.py). It needs root and Debian's slurm-wlm + munge, so it is its own tier:
``tox -e slurm`` (DCBENCH_SLURM_TEST=1) runs it and fails if it cannot; elsewhere it is skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcbench.checkpoint import save_checkpoint, sha256_file
from dcbench.models import build_model

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurm, missing_binaries  # noqa: E402

REQUIRED = os.environ.get("DCBENCH_SLURM_TEST") == "1"

if not REQUIRED:
    pytest.skip("the Slurm tier runs in `tox -e slurm` (it starts a Slurm cluster as root)", allow_module_level=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert os.geteuid() == 0, "tox -e slurm must run as root: it starts munged, slurmctld and slurmd"
    missing = missing_binaries()
    assert not missing, f"missing {missing}: apt-get install -y slurm-wlm munge"
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as c:
        yield c


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurm-ck") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def bench(cluster, *argv, **kw):
    env = dict(cluster.env, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "dcbench.suite.cli", "run", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def test_slurm_engine_runs_each_task_as_a_job_and_a_second_run_skips(cluster, ckpt, tmp_path):
    res = tmp_path / "results"
    t0 = time.monotonic()
    p = bench(cluster, ckpt, "--engine", "slurm", "--tasks", "linear-imagenet,knn-graph", "--jobs", "2",
              "--results", res)
    print(p.stdout[-3000:], p.stderr[-3000:], f"slurm suite: {time.monotonic() - t0:.1f}s", sep="\n")
    assert p.returncode == 0
    sha = sha256_file(ckpt / "model.safetensors")
    results = [json.loads(f.read_text()) for f in sorted(res.glob("*.json"))]
    assert sorted(r["task"] for r in results) == ["knn-graph", "linear-imagenet"]
    assert all(r["checkpoint"]["sha256"] == sha and r["scale"] == "smoke" and r["metrics"] for r in results)
    assert (res / "LEADERBOARD.md").is_file()
    manifest = json.loads((res / "suite" / "suite-manifest.json").read_text())
    assert {e["engine"] for e in manifest["tasks"].values()} == {"slurm"}
    # one sbatch script per task, with the smoke row of the resource table, under the results folder
    scripts = sorted((res / "suite" / "slurm").glob("*/*_submission.sh"))
    assert len(scripts) == 2
    for s in scripts:
        text = s.read_text()
        assert "#SBATCH --cpus-per-task=1" in text and "#SBATCH --mem=4GB" in text and "#SBATCH --time=30" in text
    for e in manifest["tasks"].values():
        assert "slurm job" in (res / e["log"]).read_text()

    p = bench(cluster, ckpt, "--engine", "slurm", "--tasks", "linear-imagenet,knn-graph", "--results", res)
    assert p.returncode == 0 and p.stdout.count("skipped") >= 4


def test_ctrl_c_cancels_this_runs_slurm_jobs(cluster, ckpt, tmp_path):
    res = tmp_path / "results"
    env = dict(cluster.env, OMP_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "dcbench.suite.cli", "run", str(ckpt), "--engine", "slurm",
                          "--tasks", "lowshot", "--results", str(res)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    out = ""
    for line in p.stdout:
        out += line
        if "start  lowshot" in line:
            break
    # "start" is printed just before the engine creates the log and submits: wait for the job id
    logs, text, deadline = res / "suite" / "logs", "", time.monotonic() + 60
    while "submitted slurm job" not in text and time.monotonic() < deadline:
        time.sleep(0.5)
        text = "".join(f.read_text() for f in logs.glob("lowshot__*.log"))
    job_id = text.split("submitted slurm job ")[1].split()[0]
    p.send_signal(signal.SIGINT)
    out += p.stdout.read()
    assert p.wait(timeout=120) == 130, out
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id], env=env,
                               capture_output=True, text=True).stdout.strip()
        if state in ("CANCELLED", ""):
            break
        time.sleep(1)
    assert state in ("CANCELLED", ""), f"job {job_id} is {state} after Ctrl-C"

"""dc-bench run against hostile results folders and flags: files planted where a Slurm job's
outcome is read, reserved flags in --task-args, values that would inject into an sbatch script, a
link target or a Docker bind, manifests and folders that used to trace back, and a runner killed
with its task still running (classes: conftest.CLASSES)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from dcbench.suite import containers
from dcbench.suite import slurm as slurm_engine
from dcbench.suite.cli import main as bench_main
from dcbench.suite.local import process_start
from dcbench.suite.plan import Job, read_checkpoint

from .conftest import copy_ckpt, expect


@pytest.fixture(scope="session")
def data_root(base, tmp_path_factory):
    """ROOT/imagenet/{train,val}: the 3-class tiny tree, for knn-graph."""
    root = tmp_path_factory.mktemp("suite-data")
    for split in ("train", "val"):
        shutil.copytree(base.tree, root / "imagenet" / split)
    return root


def run_args(base, res, *extra):
    return ["run", base.ckpt, "--results", res, "--tasks", "knn-graph", "--no-leaderboard", *extra]


# --------------------------------------------------------------------------- planted pickle


class Planted:
    """Unpickling this creates MARKER: proof that a file from the results folder ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _fake_submit(monkeypatch, tmp_path, job_id="4242", state="COMPLETED"):
    """SlurmEngine with submitit's executor replaced: the job never runs, but its result pickle is
    already there, planted; returns (engine, marker)."""
    marker = tmp_path / "code-ran"
    planted = tmp_path / "res" / "suite" / "slurm" / job_id / f"{job_id}_0_result.pkl"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps(("success", Planted(marker))))

    class FakeJob:
        def __init__(self):
            self.job_id, self.paths = job_id, SimpleNamespace(result_pickle=planted)

        def done(self):
            return True

        def result(self):
            return pickle.loads(planted.read_bytes())[1]

    engine = slurm_engine.SlurmEngine(tmp_path / "res", "run-1")
    monkeypatch.setattr(engine, "executor", lambda job: SimpleNamespace(submit=lambda fn: FakeJob()))
    monkeypatch.setattr(slurm_engine, "squeue_state", lambda job_id: state)
    monkeypatch.setattr(slurm_engine, "POLL_S", 0.01)
    return engine, marker


@pytest.mark.hostile("pickle")
@pytest.mark.parametrize("state", ["COMPLETED", None], ids=["squeue-says-ended", "no-squeue"])
def test_a_planted_result_pickle_is_never_unpickled(base, tmp_path, monkeypatch, state):
    pytest.importorskip("submitit")
    engine, marker = _fake_submit(monkeypatch, tmp_path, state=state)
    job = Job("knn-graph", read_checkpoint(base.ckpt), "smoke", None, "embedded")
    log = tmp_path / "res" / "suite" / "logs" / job.log_name
    log.parent.mkdir(parents=True)
    rc, _, message = engine.run(job, log, tmp_path / "res")
    assert not marker.exists(), "the planted pickle was unpickled"
    assert rc is None and "without" in message


@pytest.mark.hostile("pickle")
def test_a_status_file_without_this_jobs_token_is_refused(tmp_path):
    from dcbench.errors import UserError

    status = tmp_path / "knn.abc.json"
    status.write_text(json.dumps({"token": "someone-else", "exit_code": 0}))
    with pytest.raises(UserError, match="token does not match"):
        slurm_engine.read_status(status, "mine")
    status.write_text(json.dumps({"token": "mine", "exit_code": 0}))
    assert slurm_engine.read_status(status, "mine") == 0
    link = tmp_path / "link.json"
    link.symlink_to(status)
    with pytest.raises(UserError, match="planted"):
        slurm_engine.read_status(link, "mine")


# --------------------------------------------------------------------------- reserved flags


@pytest.mark.hostile("reserved")
@pytest.mark.parametrize("flags", ["--ou /tmp/elsewhere", "--o=/tmp/elsewhere", "--check /other/ckpt",
                                   "--checkpoint=/other/ckpt", "--sc full", "--dev=cuda", "--da /x"])
def test_task_args_cannot_reach_a_reserved_flag_by_abbreviation(base, tmp_path, capfd, flags):
    expect(capfd, bench_main, run_args(base, tmp_path / "res", "--task-args", f"knn-graph={flags}"),
           root=tmp_path, out=None, code=2, match="is \\(or abbreviates\\) a flag dc-bench sets itself")


# --------------------------------------------------------------------------- injection


@pytest.mark.hostile("injection")
@pytest.mark.parametrize("flag,value", [
    ("--slurm-partition", "gpu\n#SBATCH --wrap=touch /tmp/owned"), ("--slurm-partition", "gpu; rm -rf ~"),
    ("--slurm-account", "acct\r\n#SBATCH -o /etc/x"), ("--slurm-account", "$(id)"), ("--slurm-partition", "")])
def test_slurm_names_that_would_inject_into_the_script_are_refused(base, tmp_path, capfd, flag, value):
    expect(capfd, bench_main, run_args(base, tmp_path / "res", "--engine", "slurm", flag, value),
           root=tmp_path, out=None, code=2, match="is not a Slurm name")


@pytest.mark.hostile("injection")
def test_a_link_planted_at_a_task_log_is_refused_not_followed(base, tmp_path, capfd):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    res = tmp_path / "res"
    job = Job("knn-graph", read_checkpoint(base.ckpt), "smoke", None, "embedded")
    logs = res / "suite" / "logs"
    logs.mkdir(parents=True)
    (logs / job.log_name).symlink_to(victim)
    expect(capfd, bench_main, run_args(base, res), root=tmp_path, out=res, code=2,
           match="is a link; a task log is never written through one")
    assert victim.read_text() == "precious"


@pytest.mark.hostile("injection")
def test_a_logs_folder_that_is_a_link_is_refused(base, tmp_path, capfd):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "res" / "suite").mkdir(parents=True)
    (tmp_path / "res" / "suite" / "logs").symlink_to(elsewhere)
    expect(capfd, bench_main, run_args(base, tmp_path / "res"), root=tmp_path, out=None, code=2,
           match="logs is a link; the suite writes only inside --results")
    assert not any(elsewhere.iterdir())


@pytest.mark.hostile("injection")
@pytest.mark.parametrize("folder", ["a:b", "ck:/etc:rw", "x,readonly=false"])
def test_colons_and_commas_in_paths_cannot_change_a_docker_mount(base, tmp_path, folder):
    pytest.importorskip("docker")
    ck = copy_ckpt(base.ckpt, tmp_path / folder / "ck")
    res = tmp_path / f"res{folder}"
    job = Job("knn-graph", read_checkpoint(ck), "smoke", None, "embedded")
    spec = containers.container_spec(job, image="dc-transfer", run_id="r", results=res, data_root=None,
                                     uid=1, gid=1, gpu=None)
    mounts = [(m["Source"], m["Target"], m["ReadOnly"]) for m in spec["mounts"]]
    assert mounts == [(str(ck.resolve()), "/checkpoints/ck", True), (str(res), "/results", False)]
    assert "volumes" not in spec


# --------------------------------------------------------------------------- tracebacks


def _manifest(res: Path, text: str) -> None:
    (res / "suite").mkdir(parents=True, exist_ok=True)
    (res / "suite" / "suite-manifest.json").write_text(text)


GOOD_HEAD = '{"schema": "dcbench-suite-manifest", "schema_version": 1, '


@pytest.mark.hostile("suite-traceback")
@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply|not a dcbench-suite-manifest"),
    ('{"schema": "dcbench-suite-manifest", "schema_version": 1, "runs": [], "tasks": {"x": '
     + "[" * 50_000 + "]" * 50_000 + "}}", "nested too deeply"),
    (GOOD_HEAD + '"runs": [], "tasks": {"knn-graph@abc": "ok"}}', "entry 'knn-graph@abc' is not an object"),
    (GOOD_HEAD + '"runs": [3], "tasks": {}}', "entry 'runs\\[0\\]' is not an object"),
    (GOOD_HEAD + '"runs": {}, "tasks": []}', "not a dcbench-suite-manifest file"),
], ids=["deep-list", "deep-entry", "task-entry-str", "run-entry-int", "wrong-containers"])
def test_a_hostile_manifest_is_one_line_naming_it(base, tmp_path, capfd, text, message):
    _manifest(tmp_path / "res", text)
    expect(capfd, bench_main, run_args(base, tmp_path / "res"), root=tmp_path, out=tmp_path / "res" / "suite",
           code=2, match=f"suite-manifest.json: ({message})")  # the suite's own lock file may appear


@pytest.mark.hostile("suite-traceback")
def test_an_oversized_manifest_is_not_read_whole(base, tmp_path, capfd):
    from dcbench.suite.manifest import MAX_BYTES

    _manifest(tmp_path / "res", "")
    # sparse, just past the cap (the harness hashes every file, so not gigabytes here)
    os.truncate(tmp_path / "res" / "suite" / "suite-manifest.json", MAX_BYTES + 1)
    expect(capfd, bench_main, run_args(base, tmp_path / "res"), root=tmp_path, out=tmp_path / "res" / "suite", code=2,
           match="more than a suite manifest may have")


@pytest.mark.hostile("suite-traceback")
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(base, tmp_path, capfd):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "res" / "suite").mkdir(parents=True)
    (tmp_path / "res" / "suite" / "suite-manifest.json.lock").symlink_to(victim)
    expect(capfd, bench_main, run_args(base, tmp_path / "res"), root=tmp_path, out=None, code=2,
           match="lock is a link; remove it")
    assert victim.read_text() == "precious"


@pytest.mark.hostile("suite-traceback")
@pytest.mark.parametrize("where", ["suite", "suite/logs"])
def test_a_file_where_the_suite_keeps_a_folder_is_one_line(base, tmp_path, capfd, where):
    res = tmp_path / "res"
    (res / where).parent.mkdir(parents=True, exist_ok=True)
    (res / where).write_text("a file")
    expect(capfd, bench_main, run_args(base, res), root=tmp_path, out=None, code=2,
           match="is a file where the suite keeps a folder")


# --------------------------------------------------------------------------- killed runner


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


@pytest.mark.hostile("orphan")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_killed_runner_takes_its_task_with_it_and_the_rerun_runs_it(base, data_root, tmp_path):
    res = tmp_path / "res"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DCBENCH_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "dcbench.suite.cli", *map(str, run_args(base, res, "--data-root", data_root))]
    runner = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children, deadline = [], time.monotonic() + 60
    while not children and time.monotonic() < deadline:
        time.sleep(0.1)
        children = _children(runner.pid)
    assert children, "the task never started"
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(process_start(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [c for c in children if process_start(c)]
    assert not alive, f"task process(es) {alive} outlived the killed runner"
    entry = next(iter(json.loads((res / "suite" / "suite-manifest.json").read_text())["tasks"].values()))
    assert entry["status"] == "running" and entry["runner_pid"] == runner.pid  # what the next run finds
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    entry = next(iter(json.loads((res / "suite" / "suite-manifest.json").read_text())["tasks"].values()))
    assert entry["status"] == "ok"


@pytest.mark.hostile("orphan")
def test_a_task_another_live_runner_is_running_is_not_started_twice(base, tmp_path, capfd):
    other = subprocess.Popen(["sleep", "60"])
    try:
        res = tmp_path / "res"
        job = Job("knn-graph", read_checkpoint(base.ckpt), "smoke", None, "embedded")
        import socket

        _manifest(res, json.dumps({"schema": "dcbench-suite-manifest", "schema_version": 1, "runs": [],
                                   "tasks": {job.id: {"status": "running", "host": socket.gethostname(),
                                                      "runner_pid": other.pid, "run_id": "other-run",
                                                      "runner_start": process_start(other.pid)}}}))
        expect(capfd, bench_main, run_args(base, res), root=tmp_path, out=res / "suite", code=2,
               match="is being run by another dc-bench \\(pid [0-9]+, run other-run\\)")
    finally:
        other.kill()
        other.wait()

"""dc-bench run (suite/): the plan, the resume rule, the local engine end to end, and the docker
engine's container spec and cancel, against a fake client (the real daemon run is docker/smoke.sh)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import UserError, run_cli
from dcbench.models import build_model
from dcbench.results import result_filename
from dcbench.suite import containers, tasks
from dcbench.suite.cli import main
from dcbench.suite.plan import Job, flag_values, parse_task_args, read_checkpoint
from dcbench.suite.progress import Progress
from dcbench.suite.runner import Outcome
from dcbench.tasks import task_names


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite-ck") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def test_a_checkpoint_is_named_in_the_suite_as_in_its_result_files(tmp_path):
    # dc-train names its checkpoint after the run (meta.json "name"), in a folder called checkpoint
    path = tmp_path / "my-run" / "checkpoint"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="dcbench-train",
                    name="my run+1")
    ref = read_checkpoint(path)
    result = {"task": "mlp", "variant": {"dataset": "imagenet"}, "created": "2026-01-01T00:00:00+00:00",
              "checkpoint": {"name": "my run+1", "sha256": ref.sha256}}
    assert ref.label == f"my-run+1-{ref.sha256[:8]}" and f"__{ref.label}__" in result_filename(result)


@pytest.fixture()
def quiet_env(monkeypatch, tmp_path):
    """Tasks on one thread, with a private feature cache (a cache hit would hide a rerun)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DCBENCH_CACHE", str(tmp_path / "features"))


def bench(argv, capsys) -> tuple[int, str, str]:
    code = run_cli(main, ["run", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def manifest(results: Path) -> dict:
    return json.loads((results / "suite" / "suite-manifest.json").read_text())


def result_files(results: Path) -> list[Path]:
    return sorted(results.glob("*.json"))


# ----------------------------------------------------------------------------------------------
# Plan: task table, data layout, flags


def test_task_table_covers_exactly_dcbenchs_task_list():
    assert tasks.parse_tasks("all") == list(task_names())
    assert tasks.parse_tasks("knn-graph,mlp,knn-graph") == ["knn-graph", "mlp"]
    with pytest.raises(UserError, match="unknown task voc-detecton"):
        tasks.parse_tasks("linear-imagenet,voc-detecton")


def test_full_scale_resources_ask_for_a_gpu_and_smoke_for_none():
    full = tasks.resources("voc-detection", "full", gpus=True)
    assert full.gpus == 1 and full.minutes >= 60
    assert tasks.resources("voc-detection", "smoke", gpus=False).gpus == 0


def test_missing_data_folders_are_all_named_before_anything_starts(tmp_path, ckpt, capsys):
    root = tmp_path / "data"
    (root / "imagenet" / "train").mkdir(parents=True)
    code, out, err = bench([ckpt, "--data-root", root, "--results", tmp_path / "res"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    for missing in ("imagenet/val", "places205/trainvalsplit_places205", "VOCdevkit/VOC2007", "VOCdevkit/VOC2012"):
        assert missing in err
    assert "imagenet/train " not in err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("bad, expect", [
    (["--task-args", "knn-graph=--out /tmp/x"], "a flag dc-bench sets itself"),
    (["--task-args", "nope=--k 1"], "TASK=FLAGS"),
    (["--tasks", "knn-graph", "--task-args", "mlp=--epochs 1"], "not among --tasks"),
    (["--jobs", "0"], "--jobs"),
])
def test_bad_flags_are_one_line_exit_2(tmp_path, ckpt, capsys, bad, expect):
    code, out, err = bench([ckpt, "--results", tmp_path / "res", *bad], capsys)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1


def test_damaged_checkpoint_is_refused_before_anything_starts(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    with open(bad / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    code, out, err = bench([bad, "--results", tmp_path / "res"], capsys)
    assert code == 2 and "sha256" in err and not (tmp_path / "res").exists()


def test_flag_values_read_both_spellings():
    assert flag_values(["--k", "5", "--no-cache", "--pca-dim=32", "--split", "val"]) == {
        "k": "5", "pca_dim": "32", "split": "val"}
    assert parse_task_args(["knn-graph=--k 5 --pca-dim 8"], ["knn-graph"]) == {"knn-graph": ["--k", "5", "--pca-dim", "8"]}


def test_off_a_terminal_a_heartbeat_names_each_running_task_and_the_stage_its_log_shows(ckpt, tmp_path):
    stream = io.StringIO()
    p = Progress(stream)
    job = Job("knn-graph", read_checkpoint(ckpt), "smoke", None, "embedded")
    log = tmp_path / "task.log"
    log.write_text("loading\nfeatures: 10/40 in 30s\rfeatures: 20/40 in 60s\n\n", encoding="utf-8")
    p.planned(1)
    p.started(job, log)
    p.tick(every_s=3600)                       # not yet due
    p.tick(every_s=0)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith(f"dc-bench: running {job.label} for ")
    assert lines[-1].endswith("[0/1 done]: features: 20/40 in 60s") and len(lines) == 2


def test_progress_is_plain_lines_when_not_a_terminal(ckpt):
    stream = io.StringIO()
    p = Progress(stream)
    job = Job("knn-graph", read_checkpoint(ckpt), "smoke", None, "embedded")
    p.planned(1)
    p.started(job)

    p.finished(Outcome(job, "ok", 1.5, "r.json", "suite/logs/x.log"))
    p.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["dc-bench: start  knn-graph (rand64-" + job.checkpoint.sha256[:8] + ")",
                     f"dc-bench: ok      knn-graph (rand64-{job.checkpoint.sha256[:8]}) in 1.5s -> r.json [1/1]"]


# ----------------------------------------------------------------------------------------------
# Local engine, end to end on the embedded data


@pytest.mark.slow
def test_suite_runs_the_tasks_then_leaderboard_and_a_second_run_skips_them(tmp_path, ckpt, capsys, quiet_env):
    res = tmp_path / "out" / "results"
    argv = [ckpt, "--tasks", "knn-graph,linear-imagenet", "--results", res, "--jobs", "2"]
    code, out, err = bench(argv, capsys)
    assert code == 0, out + err
    files = result_files(res)
    assert sorted(json.loads(f.read_text())["task"] for f in files) == ["knn-graph", "linear-imagenet"]
    board = (res / "LEADERBOARD.md").read_text()  # where dc-leaderboard RESULTS writes it too
    assert "knn-graph" in board or "ratio" in board
    assert not (tmp_path / "out" / "LEADERBOARD.md").exists()
    m = manifest(res)
    # the checkpoint has one name: the suite's logs carry the <name>-<sha8> of the result file names
    labels = {f.name.split("__")[2] for f in files}
    assert len(labels) == 1 and {e["log"].split("__")[1].removesuffix(".log") for e in m["tasks"].values()} == labels
    assert {e["status"] for e in m["tasks"].values()} == {"ok"}
    for e in m["tasks"].values():
        assert (res / e["log"]).is_file() and (res / e["result"]).is_file()
    assert m["runs"][-1]["exit"] == 0

    t0 = time.monotonic()
    code, out, err = bench(argv, capsys)
    assert code == 0
    assert out.count("skipped") >= 4  # two progress lines, two summary rows
    assert result_files(res) == files
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_failed_task_leaves_the_others_and_exits_1_with_its_log_tail(tmp_path, ckpt, capsys, quiet_env,
                                                                       embedded_root):
    # the documented --data-root layout, with one VOC2007 annotation corrupted
    root = tmp_path / "data"
    root.mkdir()
    (root / "imagenet").symlink_to(embedded_root / "classification")
    shutil.copytree(embedded_root / "VOCdevkit" / "VOC2007", root / "VOCdevkit" / "VOC2007")
    ann = sorted((root / "VOCdevkit" / "VOC2007" / "Annotations").glob("*.xml"))[0]
    ann.write_text("<annotation><size><width>96</width>")
    res = tmp_path / "results"
    code, out, err = bench([ckpt, "--data-root", root, "--scale", "smoke", "--tasks",
                            "voc-detection,knn-graph", "--results", res], capsys)
    assert code == 1
    m = manifest(res)
    status = {e["task"]: e for e in m["tasks"].values()}
    assert status["knn-graph"]["status"] == "ok" and (res / status["knn-graph"]["result"]).is_file()
    failed = status["voc-detection"]
    assert failed["status"] == "failed" and failed["exit_code"] == 2 and failed["result"] is None
    assert any(ann.name in line for line in failed["log_tail"])
    summary = out[out.index("dc-bench summary"):]
    assert "failed    voc-detection" in summary and f"| error: malformed VOC annotation {ann}" in summary
    assert [json.loads(f.read_text())["task"] for f in result_files(res)] == ["knn-graph"]
    assert (res / "LEADERBOARD.md").is_file()  # over what did finish


@pytest.mark.slow
def test_resume_rule_skips_the_same_request_and_reruns_a_changed_protocol_value(tmp_path, ckpt, capsys,
                                                                                 quiet_env):
    res = tmp_path / "results"

    def run(*extra):
        code, out, err = bench([ckpt, "--tasks", "knn-graph", "--results", res, "--no-leaderboard", *extra], capsys)
        assert code == 0, out + err
        return out

    run("--task-args", "knn-graph=--k 5")
    first = result_files(res)
    assert [json.loads(f.read_text())["protocol"]["k"] for f in first] == [5]
    assert "skipped   knn-graph" in run("--task-args", "knn-graph=--k 5")
    assert result_files(res) == first

    run("--task-args", "knn-graph=--k 6")  # a changed protocol value: run again
    new = [f for f in result_files(res) if f not in first]
    assert [json.loads(f.read_text())["protocol"]["k"] for f in new] == [6]

    # the same request again, but its result no longer records the value asked for: run again
    entry = next(iter(manifest(res)["tasks"].values()))
    path = res / entry["result"]
    doc = json.loads(path.read_text())
    doc["protocol"]["k"] = 7
    path.write_text(json.dumps(doc))
    assert "ok        knn-graph" in run("--task-args", "knn-graph=--k 6")
    n = len(result_files(res))
    assert "ok        knn-graph" in run("--task-args", "knn-graph=--k 6", "--force")
    assert len(result_files(res)) == n + 1


@pytest.mark.slow
def test_ctrl_c_stops_the_running_tasks_and_exits_130(tmp_path, ckpt, quiet_env):
    res = tmp_path / "results"
    p = subprocess.Popen([sys.executable, "-m", "dcbench.suite.cli", "run", str(ckpt), "--tasks", "lowshot",
                          "--results", str(res)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    for line in p.stdout:
        out += line
        if "start  lowshot" in line:
            break
    task = ["pgrep", "-f", "--", f"--out {res}"]
    deadline = time.monotonic() + 30
    while subprocess.run(task, capture_output=True).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert subprocess.run(task, capture_output=True).returncode == 0  # the task is running
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    out += p.stdout.read()
    assert p.wait(timeout=60) == 130, out
    assert "cancelled lowshot" in out
    left = subprocess.run(task, capture_output=True, text=True)
    assert left.returncode == 1 and left.stdout == ""  # 1: no process matched (2 would be a pgrep error)
    assert manifest(res)["tasks"][f"lowshot@{read_checkpoint(ckpt).sha256}"]["status"] == "cancelled"


# ----------------------------------------------------------------------------------------------
# Docker engine without a daemon


def _job(ckpt, data=None, data_root=None):
    return Job("voc-detection", read_checkpoint(ckpt), "full", data, "x", ["--layers", "all"])


def test_container_spec_mounts_user_labels_and_gpu_request(tmp_path, ckpt):
    root = tmp_path / "data"
    spec = containers.container_spec(_job(ckpt, root / "VOCdevkit"), image="dc-transfer:test", run_id="r1",
                                     results=tmp_path / "res", data_root=root, uid=1234, gid=567, gpu="1")
    assert spec["image"] == "dc-transfer:test" and spec["user"] == "1234:567"
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in spec["mounts"]] == [
        (str(ckpt.resolve()), "/checkpoints/rand64", "bind", True), (str(tmp_path / "res"), "/results", "bind", False),
        (str(root), "/data", "bind", True)]
    assert spec["command"] == ["voc-detection", "--checkpoint", "/checkpoints/rand64", "--out", "/results",
                               "--scale", "full", "--device", "cuda", "--data", "/data/VOCdevkit", "--layers", "all"]
    assert spec["labels"][containers.LABEL_RUN] == "r1" and spec["labels"][containers.LABEL_TASK] == "voc-detection"
    assert spec["network_mode"] == "none"
    (req,) = spec["device_requests"]
    assert req["DeviceIDs"] == ["1"] and req["Capabilities"] == [["gpu"]]


def test_container_spec_without_data_root_or_gpus_mounts_no_data_and_runs_on_cpu(tmp_path, ckpt):
    spec = containers.container_spec(_job(ckpt), image="dc-transfer", run_id="r", results=tmp_path,
                                     data_root=None, uid=0, gid=0, gpu=None)
    assert "--data" not in spec["command"] and spec["command"][spec["command"].index("--device") + 1] == "cpu"
    assert "/data" not in [m["Target"] for m in spec["mounts"]]
    assert "device_requests" not in spec


class FakeContainer:
    def __init__(self, client, spec):
        self.client, self.spec, self.removed, self.stopped = client, spec, False, False
        self.labels = spec["labels"]

    def start(self):
        pass

    def logs(self, stream, follow):
        yield b"loading\nresult: /results/x.js"
        yield b"on\n"

    def wait(self):
        return {"StatusCode": 0}

    def stop(self, timeout):
        self.stopped = True

    def remove(self, force):
        self.removed = True


class FakeClient:
    def __init__(self, existing=()):
        self.created = []
        self.existing = list(existing)
        self.filters = None

        class Containers:
            def create(_, **spec):
                c = FakeContainer(self, spec)
                self.created.append(c)
                return c

            def list(_, all, filters):
                self.filters = filters
                key, value = filters["label"].split("=", 1)
                return [c for c in self.created + self.existing if c.labels.get(key) == value]

        self.containers = Containers()


def test_docker_run_streams_prefixed_lines_into_the_log_and_removes_the_container(tmp_path, ckpt):
    client, echoed = FakeClient(), []
    eng = containers.DockerEngine("dc-transfer", "run-a", client=client, echo=echoed.append)
    log = tmp_path / "t.log"
    rc, out_seen, msg = eng.run(_job(ckpt), log, tmp_path)
    assert (rc, out_seen, msg) == (0, "/results", None)
    assert echoed == ["[voc-detection] loading", "[voc-detection] result: /results/x.json"]
    assert log.read_text().splitlines()[1:] == ["loading", "result: /results/x.json"]
    assert client.created[0].removed


def test_docker_cancel_stops_only_this_runs_containers(tmp_path, ckpt):
    other = FakeContainer(None, {"labels": {containers.LABEL_RUN: "run-b"}})
    client = FakeClient([other])
    mine = FakeContainer(client, {"labels": {containers.LABEL_RUN: "run-a"}})
    client.existing.append(mine)
    eng = containers.DockerEngine("dc-transfer", "run-a", client=client)
    eng.cancel()
    assert client.filters == {"label": f"{containers.LABEL_RUN}=run-a"}
    assert mine.stopped and mine.removed and not other.stopped and not other.removed
    assert eng.run(_job(ckpt), tmp_path / "l.log", tmp_path)[0] is None  # nothing starts after a cancel


def test_unreachable_docker_engine_is_one_line_exit_2(tmp_path, ckpt, capsys):
    code, out, err = bench([ckpt, "--engine", "docker", "--docker-host", f"unix://{tmp_path}/no.sock",
                            "--results", tmp_path / "res"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot reach the Docker engine" in err and "--docker-host" in err


def test_missing_image_says_how_to_build_it(ckpt):
    import docker

    class Images:
        def get(self, name):
            raise docker.errors.ImageNotFound(f"no {name}")

    client = FakeClient()
    client.images = Images()
    eng = containers.DockerEngine("dc-transfer:nope", "r", client=client)
    with pytest.raises(UserError, match=r"docker build -f docker/Dockerfile --target dc-transfer -t dc-transfer:nope"):
        eng.check([])


# ----------------------------------------------------------------------------------------------
# GPU hand-out and Slurm requests, without GPUs or a cluster (the real Slurm run: test_suite_slurm.py)


def test_local_engine_gives_each_running_task_its_own_gpu(tmp_path, ckpt, monkeypatch):
    import threading

    from dcbench.suite import local

    seen, both_running = [], threading.Barrier(2, timeout=10)

    class FakePopen:
        def __init__(self, argv, env, **kw):
            seen.append((env.get("CUDA_VISIBLE_DEVICES"), argv[argv.index("--device") + 1]))
            self.pid = -1

        def wait(self, timeout=None):
            both_running.wait()  # both tasks hold a GPU at the same time
            return 0

    monkeypatch.setattr(local.subprocess, "Popen", FakePopen)
    eng = local.LocalEngine(gpus=["3", "5"])
    c = read_checkpoint(ckpt)
    jobs = [Job(t, c, "smoke", None, "embedded") for t in ("knn-graph", "mlp")]
    threads = [threading.Thread(target=eng.run, args=(j, tmp_path / f"{j.task}.log", tmp_path)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == [("3", "cuda"), ("5", "cuda")]


def _fake_slurm_tools(folder: Path, monkeypatch) -> None:
    """sbatch, srun and scancel on PATH that are never run (submitit >= 1.5.4 looks for srun)."""
    folder.mkdir()
    for tool in ("sbatch", "srun", "scancel"):
        (folder / tool).write_text("#!/bin/sh\nexit 1\n")
        (folder / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_slurm_job_asks_for_the_table_row_and_the_partition_and_account(tmp_path, ckpt, monkeypatch):
    from dcbench.suite.slurm import SlurmEngine

    _fake_slurm_tools(tmp_path / "bin", monkeypatch)
    eng = SlurmEngine(tmp_path, "r", gpus=True, partition="gpu", account="proj1")
    job = Job("voc-detection", read_checkpoint(ckpt), "full", tmp_path, str(tmp_path))
    params = eng.executor(job).parameters
    assert {k: params[k] for k in ("gpus_per_node", "cpus_per_task", "mem", "time", "partition", "account")} == {
        "gpus_per_node": 1, "cpus_per_task": 8, "mem": "32GB", "time": 24 * 60, "partition": "gpu",
        "account": "proj1"}
    smoke = SlurmEngine(tmp_path, "r").executor(Job("mlp", job.checkpoint, "smoke", None, "embedded")).parameters
    assert "gpus_per_node" not in smoke and smoke["cpus_per_task"] == 1 and "partition" not in smoke


def test_slurm_engine_without_the_slurm_tools_names_each_missing_one(tmp_path, monkeypatch):
    from dcbench.suite.slurm import SlurmEngine

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing of Slurm's here
    with pytest.raises(UserError, match=r"sbatch, srun, scancel not found on PATH"):
        SlurmEngine(tmp_path, "r").check([])


def test_dry_run_runs_nothing_and_estimates_full_scale_cost_from_earlier_results(ckpt, tmp_path, capsys):
    from dcbench.results import SCHEMA_NAME, SCHEMA_VERSION

    results = tmp_path / "res"
    results.mkdir()
    base = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "variant": {"dataset": "imagenet"},
            "checkpoint": {"name": "x", "sha256": "c" * 64, "arch": "alexnet", "sobel": True, "origin": "random"},
            "selection": {"rule": "final"}, "protocol": {}, "environment": {}, "timings": {},
            "data": {"name": "imagenet", "root": "/d", "fingerprint": "f", "sizes": {"val": 10}},
            "created": "2026-01-01T00:00:00+00:00"}
    for i, wall in enumerate((3600.0, 7200.0, 5400.0)):
        r = {**base, "task": "knn", "metrics": {"desc_k10_top1": 50.0}, "scale": "full",
             "cost": {"wall_s": wall, "device": "NVIDIA H200", "device_count": 1, "gpu_hours": wall / 3600,
                      "peak_host_mb": 1.0}}
        (results / f"knn{i}.json").write_text(json.dumps(r))
    code, out, _ = bench([ckpt, "--tasks", "knn,mlp", "--results", results, "--dry-run"], capsys)
    assert code == 0
    assert "knn (rand64-" in out and "about 1.5 h, 1.50 GPU-h (median of 3 full-scale result(s) on NVIDIA H200)" in out
    assert "mlp (rand64-" in out and "no full-scale cost recorded" in out
    assert sorted(p.name for p in results.iterdir()) == ["knn0.json", "knn1.json", "knn2.json"]  # nothing ran

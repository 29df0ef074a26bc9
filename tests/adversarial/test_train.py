"""dc-train against hostile flags (classes 2, 4, 8), a diverging run (2), interrupted writes and
kills (3), hostile image trees (4, 8) and a full disk (7)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from PIL import Image

from dcbench.checkpoint import read_meta
from dcbench.train.cli import main as train_main

from .conftest import TRAIN_FLAGS, bin_of, case, expect, expect_process, limited

# (id, flags, what the error line must say)
BAD_FLAGS = [
    ("lr-nan", ["--lr", "nan"], "--lr must be a finite number"),
    ("lr-inf", ["--lr", "inf"], "--lr must be a finite number"),
    ("lr-minus-inf", ["--lr=-inf"], "--lr must be a finite number"),
    ("lr-overflows-float32", ["--lr", "1e300"], "--lr must be a finite number of float32 range"),
    ("lr-zero", ["--lr", "0"], "--lr must be positive"),
    ("lr-negative", ["--lr", "-0.1"], "--lr must be positive"),
    ("wd-nan", ["--wd", "nan"], "--wd must be a finite number"),
    ("wd-inf", ["--wd", "inf"], "--wd must be a finite number"),
    ("wd-negative", ["--wd", "-1"], "--wd must be >= 0"),
    ("momentum-nan", ["--momentum", "nan"], "--momentum must be a finite number"),
    ("momentum-above-1", ["--momentum", "1.5"], "--momentum in"),
    ("crop-scale-nan", ["--crop-min-scale", "nan"], "--crop-min-scale must be a finite number"),
    ("pic-sigma-inf", ["--clustering", "pic", "--pic-sigma", "inf"], "--pic-sigma must be a finite number"),
    ("seed-negative", ["--seed", "-1"], "--seed must be in"),
    ("seed-2-to-70", ["--seed", str(2**70)], "--seed must be in"),
    ("batch-size-1e9", ["--batch-size", "1000000000"], "needs at least .* GiB"),
    ("batch-size-zero", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("batch-size-negative", ["--batch-size", "-5"], "--batch-size must be at least 1"),
    ("steps-1e12", ["--steps-per-epoch", str(10**12)], "needs at least .* GiB"),
    ("steps-zero", ["--steps-per-epoch", "0"], "--steps-per-epoch must be positive"),
    ("input-size-100000", ["--input-size", "100000"], "--input-size must be in"),
    ("input-size-16", ["--input-size", "16"], "--input-size must be in"),
    ("epochs-zero", ["--epochs", "0"], "--epochs must be at least 1"),
    ("k-one", ["--k", "1"], "--k must be at least 2"),
    ("lr-not-a-number", ["--lr", "fast"], "argument --lr: invalid float value"),
]


def _class(case_id: str) -> int:
    if any(w in case_id for w in ("nan", "inf", "overflows")):
        return 2  # non-finite hyperparameters
    if case_id in ("batch-size-1e9", "steps-1e12", "input-size-100000"):
        return 4  # bounded up front
    return 8


@pytest.mark.parametrize("flags,message", [case(_class(c[0]), *c[1:], id=c[0]) for c in BAD_FLAGS])
def test_bad_training_flag_is_one_line_exit_2_and_writes_nothing(base, tmp_path, capfd, flags, message):
    out = tmp_path / "out"
    res = expect(capfd, train_main, ["--data", base.tree, "--out", out, *TRAIN_FLAGS, *flags],
                 root=tmp_path, out=out, code=2, match=message)
    assert not (out / "checkpoint").exists(), res


@pytest.mark.hostile(2)
def test_a_step_that_diverges_is_never_saved(base, tmp_path, capfd):
    # loss finite at the only step; the step itself sends the weights to inf (lr * wd * w overflows)
    out = tmp_path / "out"
    res = expect(capfd, train_main, ["--data", base.tree, "--out", out, *TRAIN_FLAGS, "--lr", "1e38", "--wd", "1e38"],
                 root=tmp_path, out=out, code=1, match="non-finite weights after epoch 1")
    assert "no checkpoint was written" in res.error
    assert not (out / "checkpoint").exists() and not (out / "assignments").exists()


@pytest.mark.hostile(2)
def test_a_second_epoch_that_diverges_leaves_the_first_as_the_last_good_checkpoint(base, tmp_path, capfd):
    out = tmp_path / "out"
    argv = ["--data", base.tree, "--out", out, *TRAIN_FLAGS, "--lr", "1e38", "--epochs", "2"]
    res = expect(capfd, train_main, argv, root=tmp_path, out=out, code=1, match="at epoch 2")
    assert f"the last good checkpoint {out / 'checkpoint'} (epoch 1) is intact" in res.error
    assert read_meta(out / "checkpoint")["epoch"] == 1  # and finite: expect() checked every written weight


def _run_copy(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base.run, run)
    return run


@pytest.mark.hostile(3)
def test_crash_between_the_renames_resumes_from_old_and_cleans_temporaries(base, tmp_path, capfd):
    run = _run_copy(base, tmp_path)
    os.rename(run / "checkpoint", run / "checkpoint.old")
    stale = run / ".checkpoint.k1ll3d.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    (run / ".log.jsonl.x1.tmp").write_text("partial")
    (run / "assignments" / ".epoch_0002.npz.x2.tmp").write_bytes(b"PK")
    moved = tuple(str(p.relative_to(tmp_path)) for p in run.rglob("*")
                  if "checkpoint.old" in p.parts or p.name.endswith(".tmp") or ".checkpoint.k1ll3d.tmp" in p.parts)
    (run / ".notes.tmp").write_text("not the trainer's: must survive")  # checked by expect()
    res = expect(capfd, train_main, ["--data", base.tree, "--out", run, *TRAIN_FLAGS, "--epochs", "2"],
                 root=tmp_path, out=run, code=0, may_change=moved + ("run/config.json", "run/log.jsonl"))
    assert "restored" in res.stderr and ".checkpoint.k1ll3d.tmp" in res.stderr
    assert read_meta(run / "checkpoint")["epoch"] == 2
    assert [r["epoch"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == [1, 2]
    assert [p.name for p in run.rglob("*.tmp")] == [".notes.tmp"] and not (run / "checkpoint.old").exists()


@pytest.mark.hostile(3)
def test_a_run_killed_while_writing_its_checkpoint_resumes_and_leaves_no_temporary(base, tmp_path, capfd):
    run = tmp_path / "run"
    argv = [bin_of("dc-train"), "--data", base.tree, "--out", run, *TRAIN_FLAGS, "--epochs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([str(a) for a in argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:  # kill inside a checkpoint write
        if list(run.glob(".checkpoint.*.tmp")):
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    expect(capfd, train_main, argv[1:], root=tmp_path, out=run, code=0,
           may_change=tuple(str(x.relative_to(tmp_path)) for x in run.rglob("*")))
    assert read_meta(run / "checkpoint")["epoch"] == 2
    assert not list(run.rglob("*.tmp")) and not (run / "checkpoint.old").exists()


# ---- hostile image trees


def _tree(base, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(base.tree, tree)
    return tree


def _train_ok(capfd, base, tmp_path, tree):
    out = tmp_path / "out"
    res = expect(capfd, train_main, ["--data", tree, "--out", out, *TRAIN_FLAGS], root=tmp_path, out=out, code=0)
    return res, json.loads((out / "log.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory):
    """A 13000 x 13000 PNG of a few KB that decodes to 169 megapixels (PIL warns past ~89)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (13000, 13000)).save(path, optimize=True)
    return path


@pytest.mark.hostile(4)
def test_decompression_bomb_in_the_training_tree_is_skipped_and_counted(base, tmp_path, capfd, bomb_png):
    tree = _tree(base, tmp_path)
    shutil.copy(bomb_png, tree / "c0" / "bomb.png")
    res, log = _train_ok(capfd, base, tmp_path, tree)
    assert "bomb.png" in res.stderr and log["images"] == 18


@pytest.mark.hostile(8)
def test_non_utf8_class_folder_is_one_line(base, tmp_path, capfd):
    tree = _tree(base, tmp_path)
    os.rename(tree / "c2", os.path.join(os.fsencode(tree), b"c\xff"))
    expect(capfd, train_main, ["--data", tree, "--out", tmp_path / "out", *TRAIN_FLAGS], root=tmp_path,
           out=tmp_path / "out", code=2, match="not UTF-8")


@pytest.mark.hostile(8)
def test_directory_link_loop_is_walked_once(base, tmp_path, capfd):
    tree = _tree(base, tmp_path)
    os.symlink("..", tree / "c0" / "up")  # c0/up/c0/up/... and c0/up/c1 ...
    os.symlink(".", tree / "c1" / "self")
    _, log = _train_ok(capfd, base, tmp_path, tree)
    # c0's walk sees c0 and, through the link, c1 and c2 once each; c1's link to itself is not descended
    assert log["images"] == 18 + 12


@pytest.mark.hostile(8)
def test_every_kind_of_unreadable_image_file_is_skipped_and_counted(base, tmp_path, capfd):
    tree = _tree(base, tmp_path)
    c1 = tree / "c1"
    os.symlink("loop.jpg", c1 / "loop.jpg")  # a link to itself
    os.symlink("/nonexistent/x.jpg", c1 / "dangling.jpg")
    (c1 / "empty.jpg").write_bytes(b"")
    (c1 / "truncated.jpg").write_bytes((c1 / "img0.jpg").read_bytes()[:200])
    (c1 / "markup.jpg").write_text("<script>alert(1)</script>")
    shutil.copy(c1 / "img0.jpg", os.path.join(os.fsencode(c1), b"\xff\xfe.jpg"))  # not UTF-8
    res, log = _train_ok(capfd, base, tmp_path, tree)
    # each fails the header check at listing or the decode (counted in "unreadable"): only the 18 good ones are read
    assert "skipped" in res.stderr and log["images"] == 18


@pytest.mark.hostile(8)
def test_tree_of_only_unreadable_images_is_one_line(tmp_path, capfd):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    for i in range(3):
        (tree / "a" / f"{i}.jpg").write_bytes(b"not an image")
    o = expect(capfd, train_main, ["--data", tree, "--out", tmp_path / "out", *TRAIN_FLAGS], root=tmp_path,
               out=tmp_path / "out", code=2, match="none of its 3 images is readable")
    assert len(o.stderr.strip().splitlines()) == 1, o.stderr  # the error alone, no warning before it


@pytest.mark.hostile(8)
def test_data_that_is_a_file_is_one_line(base, tmp_path, capfd):
    f = tmp_path / "data.jpg"
    f.write_bytes(b"x")
    expect(capfd, train_main, ["--data", f, "--out", tmp_path / "out", *TRAIN_FLAGS], root=tmp_path,
           out=tmp_path / "out", code=2, match="not a directory")


@pytest.mark.hostile(8)
def test_out_that_is_a_file_is_one_line(base, tmp_path, capfd):
    f = tmp_path / "out"
    f.write_text("precious")
    expect(capfd, train_main, ["--data", base.tree, "--out", f, *TRAIN_FLAGS], root=tmp_path, out=None,
           code=2, match="cannot write")


# ---- a full disk (subprocesses: the file-size limit must not hit the test runner)


@pytest.mark.hostile(7)
def test_full_disk_during_dc_data_make_leaves_nothing(tmp_path):
    out = tmp_path / "data"
    expect_process(limited(3000, bin_of("dc-data"), "make", out), root=tmp_path, out=out, code=2,
                   match="while writing")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.hostile(7)
def test_full_disk_with_a_previous_run_keeps_it_byte_identical(base, tmp_path):
    run = _run_copy(base, tmp_path)
    # the previous run's files must not change; only its provenance (config.json) is rewritten at start
    expect_process(limited(20_000_000, bin_of("dc-train"), "--data", base.tree, "--out", run, *TRAIN_FLAGS,
                           "--epochs", "2"),
                   root=tmp_path, out=run, code=2, match="while writing .*checkpoint",
                   may_change=("run/config.json", "run/log.jsonl"))
    assert read_meta(run / "checkpoint")["epoch"] == 1 and not list(run.glob(".checkpoint*"))


"""The adversarial suite's harness: tiny inputs built once per session, and one check every case
passes through (:func:`expect`).

Each case builds a hostile input (a checkpoint, an image or VOC tree, a result file, a flag),
runs a ``dc-*`` command's ``main`` in-process under :func:`dcbench.errors.run_cli` (the same exit
code and stderr as the installed command) or, where a process boundary is the point (kills,
file-size limits, worker processes), as a subprocess, and asserts:

- the exit code;
- stderr: no traceback, exactly one ``error:`` line when the command fails (none when it
  succeeds); other lines are only ``warning:``/``note:`` lines or faiss's own ``WARNING``;
- nothing written outside the output folder, and every file that existed before (inputs and
  previous outputs) byte-identical, the run's own provenance files excepted where a case says so;
- no ``model.safetensors`` the command wrote holds a non-finite weight.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dcbench.errors import run_cli

ALLOWED_NOISE = ("warning:", "note:", "WARNING clustering", "resuming ")
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")  # tqdm's "| 7/1740 [" (subprocesses have no TTY test)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------
# tiny inputs, built once


def write_tree(root: Path, classes: int = 3, per_class: int = 6, size: int = 72, seed: int = 0) -> Path:
    """An ImageFolder tree of random JPEGs: ROOT/c<i>/img<j>.jpg."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            px = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(px).save(root / f"c{c}" / f"img{j}.jpg", quality=80)
    return root


TRAIN_FLAGS = ["--k", "3", "--pca-dim", "4", "--batch-size", "6", "--steps-per-epoch", "1", "--epochs", "1",
               "--input-size", "64", "--workers", "0", "--quiet", "--seed", "0"]


@dataclass
class Base:
    root: Path
    tree: Path  # ImageFolder, 3 classes x 6 images
    ckpt: Path  # a random AlexNet checkpoint at 64 px
    run: Path  # a finished one-epoch dc-train output on ``tree``


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Base:
    from dcbench.checkpoint import save_checkpoint
    from dcbench.models import build_model
    from dcbench.train.cli import main as train_main

    root = tmp_path_factory.mktemp("adversarial-base")
    tree = write_tree(root / "tree")
    ckpt = save_checkpoint(root / "ckpt", build_model("alexnet", sobel=True, input_size=64, seed=0),
                           origin="random", name="tiny")
    run = root / "run"
    torch.set_num_threads(1)
    assert run_cli(train_main, ["--data", str(tree), "--out", str(run), *TRAIN_FLAGS]) == 0
    return Base(root=root, tree=tree, ckpt=ckpt, run=run)


def copy_ckpt(src: Path, dst: Path) -> Path:
    """A checkpoint copy whose weights file is a hard link (cheap); callers that change the weights
    write a new file, which breaks the link."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name == "model.safetensors":
            os.link(f, dst / f.name)
        else:
            shutil.copy2(f, dst / f.name)
    return dst


def edit_meta(ckpt: Path, **changes) -> Path:
    meta = json.loads((ckpt / "meta.json").read_text())
    meta.update(changes)
    (ckpt / "meta.json").write_text(json.dumps(meta))
    return ckpt


# ---------------------------------------------------------------------------------------------
# the check


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (or '->target' for a link, 'dir' for a folder) of everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.fsencode(p.relative_to(root)).decode("utf-8", "backslashreplace")
            if p.is_symlink():
                out[rel] = "->" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def nonfinite_checkpoints(root: Path, before: dict[str, str]) -> list[str]:
    """Weights files written (new or changed since ``before``) that hold a NaN or an infinity."""
    bad = []
    for f in root.rglob("model.safetensors"):
        rel = os.fsencode(f.relative_to(root)).decode("utf-8", "backslashreplace")
        if rel in before and before[rel] == hashlib.sha256(f.read_bytes()).hexdigest():
            continue  # the case's own input
        try:
            tensors = load_file(str(f))
        except Exception:  # noqa: BLE001 - a damaged file is the case's own input, not a written one
            continue
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
            bad.append(str(f.relative_to(root)))
    return bad


@dataclass
class Outcome:
    code: int
    error: str | None  # the one error line, without "error: "
    stderr: str
    stdout: str


def _check_stderr(code: int, err: str, ok_codes=(0,)) -> str | None:
    assert "Traceback" not in err, err[-3000:]
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    other = [line for line in lines if not line.startswith("error:") and not line.startswith(ALLOWED_NOISE)
             and not PROGRESS_BAR.search(line)]
    assert not other, f"unexpected stderr lines: {other[:5]}"
    if code in ok_codes:
        assert not errors, errors
        return None
    assert len(errors) == 1, f"expected one error line, got {lines}"
    return errors[0].removeprefix("error:").strip()


def expect(capfd, main, argv, *, root: Path, out: Path | None, code: int, match: str | None = None,
           may_change: tuple[str, ...] = (), absent: tuple[Path, ...] = ()) -> Outcome:
    """Run ``main(argv)`` under run_cli and assert the suite's promises (module docstring).

    ``root``: the sandbox (everything the case built); ``out``: the output folder, the only place
    new files may appear (None: nowhere); ``may_change``: relative paths of pre-existing files the
    command legitimately rewrites (its own provenance); ``absent``: paths outside ``root`` that
    must not exist afterwards (absolute-path escapes)."""
    before = snapshot(root)
    capfd.readouterr()
    rc = run_cli(main, [str(a) for a in argv])
    captured = capfd.readouterr()
    return _judge(rc, captured.err, captured.out, before, root=root, out=out, code=code, match=match,
                  may_change=may_change, absent=absent)


def expect_process(cmd: list, *, root: Path, out: Path | None, code: int, match: str | None = None,
                   may_change: tuple[str, ...] = (), absent: tuple[Path, ...] = (), env=None,
                   timeout: float = 240) -> Outcome:
    """As :func:`expect`, for a subprocess."""
    before = snapshot(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout,
                       cwd=root)
    return _judge(p.returncode, p.stderr, p.stdout, before, root=root, out=out, code=code, match=match,
                  may_change=may_change, absent=absent)


def _judge(rc, err, stdout, before, *, root, out, code, match, may_change, absent) -> Outcome:
    assert rc == code, f"exit {rc}, expected {code}; stderr: {err[-2000:]}"
    error = _check_stderr(rc, err)
    if match is not None:
        assert error is not None and re.search(match, error), error
    after = snapshot(root)
    out_rel = None if out is None else os.fsencode(Path(out).relative_to(root)).decode()
    for rel, digest in before.items():
        if rel in may_change:
            continue
        assert after.get(rel) == digest, f"{rel} changed or vanished"
    for rel in after.keys() - before.keys():
        inside = out_rel is not None and (rel == out_rel or rel.startswith(out_rel + "/"))
        assert inside, f"{rel} was written outside the output folder {out_rel}"
    for p in absent:
        assert not Path(p).exists(), f"{p} was written"
    assert not nonfinite_checkpoints(root, before), "a checkpoint with non-finite weights was written"
    return Outcome(rc, error, err, stdout)


FSIZE = Path(__file__).with_name("fsize.py")


def limited(nbytes: int, *cmd) -> list:
    """``cmd`` with files capped at ``nbytes``: a write past it fails (EFBIG), as on a full disk."""
    return [sys.executable, FSIZE, nbytes, *cmd]


def bin_of(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


# ---------------------------------------------------------------------------------------------
# a tiny VOCdevkit


def write_voc(root: Path, per_split: int = 4, size: tuple[int, int] = (80, 64), seed: int = 0) -> Path:
    """VOCdevkit/VOC2007 (trainval/test, one object per image, every class file) and VOC2012
    segmentation (train/val, palette masks of the image's size), at ``size`` = (w, h)."""
    from dcbench.datasets import VOC_CLASSES
    from dcbench.synth import voc_xml

    rng = np.random.default_rng(seed)
    w, h = size
    y7 = root / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (y7 / d).mkdir(parents=True, exist_ok=True)
    for split in ("trainval", "test"):
        ids = [f"{split}{i:03d}" for i in range(per_split)]
        for k, i in enumerate(ids):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(y7 / "JPEGImages" / f"{i}.jpg")
            obj = dict(name=VOC_CLASSES[k % 3], bndbox=(5, 6, w - 10, h - 8), truncated=False, difficult=False)
            (y7 / "Annotations" / f"{i}.xml").write_text(voc_xml("VOC2007", i, w, h, [obj], False))
        (y7 / "ImageSets/Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c, cls in enumerate(VOC_CLASSES):
            (y7 / "ImageSets/Main" / f"{cls}_{split}.txt").write_text(
                "".join(f"{i} {1 if c == k % 3 else -1}\n" for k, i in enumerate(ids)))
    y12 = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (y12 / d).mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ids = [f"{split}{i:03d}" for i in range(per_split)]
        for k, i in enumerate(ids):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(y12 / "JPEGImages" / f"{i}.jpg")
            mask = np.zeros((h, w), dtype=np.uint8)
            mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = 1 + k % 3
            mask[h // 4, :] = 255
            m = Image.fromarray(mask, mode="L").convert("P")
            m.save(y12 / "SegmentationClass" / f"{i}.png")
        (y12 / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root / "VOCdevkit"


@pytest.fixture(scope="session")
def voc(tmp_path_factory) -> Path:
    return write_voc(tmp_path_factory.mktemp("voc"))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def set_box(voc_root: Path, image_id: str, box=None, size=None, text=None) -> Path:
    """Rewrite one VOC2007 annotation: the first object's box, the image size, or the whole text."""
    import xml.etree.ElementTree as ET

    f = voc_root / "VOC2007" / "Annotations" / f"{image_id}.xml"
    if text is not None:
        f.write_text(text)
        return f
    tree = ET.parse(f)
    if box is not None:
        bb = tree.getroot().find("object/bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
            bb.find(tag).text = str(v)
    if size is not None:
        for tag, v in zip(("width", "height"), size):
            tree.getroot().find(f"size/{tag}").text = str(v)
    tree.write(f)
    return f


# ---------------------------------------------------------------------------------------------
# cases by class: a marker per case, a table at the end

CLASSES = {1: "output path from input escapes --out", 2: "non-finite training/values", 3: "interrupted writes",
           4: "resource exhaustion", 5: "markup injection", 6: "feature cache key", 7: "full disk",
           8: "bad values: one line, exit 2", 9: "VOC boxes outside the image",
           # the suite runner, dc-convert, and text on its way to markdown or a terminal
           "pickle": "a results-folder file that would be unpickled",
           "folder": "an output flag that would replace a folder it did not write",
           "reserved": "reserved flags reaching a task",
           "text": "text that would become markup or terminal control",
           "injection": "values that would inject into a script, a link target or a mount",
           "suite-traceback": "tracebacks in the suite and the converters",
           "orphan": "children outliving a killed runner",
           "quiet": "input accepted quietly"}


def pytest_configure(config):
    config.addinivalue_line("markers", "hostile(cls): the class of hostile input a case belongs to (CLASSES)")


def case(cls: int, *values, id: str):
    """One parametrized case of class ``cls``."""
    return pytest.param(*values, marks=pytest.mark.hostile(cls), id=id)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("hostile")
    report.user_properties.append(("hostile", marker.args[0] if marker else None))


def pytest_terminal_summary(terminalreporter):
    rows: dict = {}
    for status in ("passed", "failed", "error"):
        for r in terminalreporter.stats.get(status, []):
            if getattr(r, "when", "call") != "call" and status == "passed":
                continue
            cls = dict(getattr(r, "user_properties", [])).get("hostile")
            if cls is None and status == "passed":
                continue
            n_all, n_ok = rows.get(cls, (0, 0))
            rows[cls] = (n_all + 1, n_ok + (status == "passed"))
    if not rows:
        return
    terminalreporter.write_sep("-", "hostile-input cases by class")
    for cls in sorted(rows, key=lambda c: (c is None, isinstance(c, str), str(c))):
        n_all, n_ok = rows[cls]
        terminalreporter.write_line(f"class {cls}: {CLASSES.get(cls, 'unmarked')}: {n_all} case(s), {n_ok} passing")
    total = sum(v[0] for v in rows.values())
    terminalreporter.write_line(f"total: {total} case(s), {sum(v[1] for v in rows.values())} passing")

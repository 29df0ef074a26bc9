"""The newer surfaces against hostile input: output flags that would destroy a folder,
abbreviated flags, text that would become markup or terminal control, converter inputs that are not
a dict of tensors, and inputs that used to be accepted quietly (classes: conftest.CLASSES; the
suite runner's own cases are in test_suite.py)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from markdown_it import MarkdownIt

from dcbench.cli_convert import main as convert_main
from dcbench.cli_inspect import main as inspect_main
from dcbench.leaderboard.cli import main as leaderboard_main
from dcbench.leaderboard.figures_cli import main as figures_main
from dcbench.train.cli import main as train_main
from dcbench.transfer.cli import main as transfer_main

from .conftest import TRAIN_FLAGS, copy_ckpt, edit_meta, expect
from .test_leaderboard import good, inert

ESC = "\x1b]0;owned\x07\x1b[2J"


@pytest.fixture(scope="session")
def labelled(base, tmp_path_factory):
    """train/ and val/, each the 3-class tiny tree (18 images)."""
    root = tmp_path_factory.mktemp("labelled") / "cls"
    shutil.copytree(base.tree, root / "train")
    shutil.copytree(base.tree, root / "val")
    return root


def precious(folder):
    """A folder of someone else's work: files and a subfolder."""
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("three weeks of notes")
    (folder / "sub" / "data.bin").write_bytes(os.urandom(64))
    return folder


# --------------------------------------------------------------------------- output folders


@pytest.mark.hostile("folder")
def test_convert_out_that_is_someone_elses_folder_is_refused_and_kept(tmp_path, capfd):
    out = precious(tmp_path / "work")
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--out", out], root=tmp_path, out=None,
           code=2, match="exists and is not a checkpoint; choose another path")


@pytest.mark.hostile("folder")
def test_convert_out_dot_is_refused_without_a_temp_folder(tmp_path, capfd, monkeypatch):
    here = precious(tmp_path / "here")
    monkeypatch.chdir(here)
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--out", "."], root=tmp_path, out=None,
           code=2, match="is the current folder")
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--out", ".."], root=tmp_path, out=None,
           code=2, match="is the current folder or holds it")
    assert not [p for p in tmp_path.rglob("*.tmp")]


@pytest.mark.hostile("folder")
def test_convert_over_an_existing_checkpoint_needs_force(base, tmp_path, capfd):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--seed", "3", "--out", ck],
           root=tmp_path, out=None, code=2, match="already holds a checkpoint; pass --force")
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--seed", "3", "--out", ck, "--force",
                                 "--quiet"], root=tmp_path, out=ck, code=0, may_change=("ck/model.safetensors",
                                                                                         "ck/meta.json"))
    assert json.loads((ck / "meta.json").read_text())["source"] == "seed 3"


@pytest.mark.hostile("folder")
def test_checkpoint_with_extra_files_or_a_foreign_old_folder_is_never_replaced(base, tmp_path, capfd):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    (ck / "README.md").write_text("my notes about this model")
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--out", ck, "--force"],
           root=tmp_path, out=None, code=2, match="not a checkpoint")
    ck2 = copy_ckpt(base.ckpt, tmp_path / "ck2")
    precious(tmp_path / "ck2.old")  # the name a replacement sets the old version aside under
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--out", ck2, "--force"],
           root=tmp_path, out=None, code=2, match="ck2.old exists and is not a checkpoint; move it away")


@pytest.mark.hostile("folder")
def test_convert_export_onto_an_existing_file_needs_force(base, tmp_path, capfd):
    target = tmp_path / "model_final.pth"
    target.write_bytes(b"someone's detectron2 weights")
    expect(capfd, convert_main, ["--to", "detectron2", base.ckpt, target], root=tmp_path, out=None, code=2,
           match="exists; pass --force")
    expect(capfd, convert_main, ["--to", "detectron2", base.ckpt, tmp_path], root=tmp_path, out=None, code=2,
           match="is a folder; name the .pth file")


@pytest.mark.hostile("quiet")
@pytest.mark.parametrize("name", ["paper.json", "notes.txt"])
def test_transfer_out_that_is_a_file_is_refused_before_any_work(base, labelled, tmp_path, capfd, name):
    out = tmp_path / name
    out.write_text('{"my": "table"}')
    expect(capfd, transfer_main, ["knn-graph", "--checkpoint", base.ckpt, "--data", labelled, "--cache-dir",
                                  tmp_path / "cache", "--workers", "0", "--out", out],
           root=tmp_path, out=None, code=2, match=f"--out .*{name} is a file; --out is the folder")


# --------------------------------------------------------------------------- abbreviations


@pytest.mark.hostile("reserved")
@pytest.mark.parametrize("flag", ["--ou", "--o", "--chec", "--scal"])
def test_abbreviated_flags_are_not_taken_for_the_full_ones(base, labelled, tmp_path, capfd, flag):
    argv = ["knn-graph", "--checkpoint", base.ckpt, "--data", labelled, "--workers", "0", flag, tmp_path / "x"]
    if flag == "--chec":
        argv = ["knn-graph", flag, base.ckpt, "--data", labelled, "--out", tmp_path / "x"]
    expect(capfd, transfer_main, argv, root=tmp_path, out=None, code=2,
           match="unrecognized arguments|required: --checkpoint")


@pytest.mark.hostile("reserved")
def test_train_and_convert_take_no_abbreviations(tmp_path, capfd):
    expect(capfd, train_main, ["--ou", tmp_path / "run"], root=tmp_path, out=None, code=2,
           match="unrecognized arguments: --ou")
    expect(capfd, convert_main, ["--from", "random", "--ou", tmp_path / "ck"], root=tmp_path, out=None, code=2,
           match="unrecognized arguments: --ou")


# --------------------------------------------------------------------------- text


def describe_lines(ckpt) -> list[str]:
    from dcbench.checkpoint import describe, read_meta

    return describe(read_meta(ckpt), ckpt).splitlines() + ["parameters", "status"]


def _structure(markdown: str) -> list:
    """Every block and inline construct of a page, without the characters of the text."""
    out = []

    def walk(tokens):
        for t in tokens:
            if t.type not in ("text", "text_special"):
                out.append((t.type, t.tag, t.level))
            if t.children:
                walk(t.children)
    walk(MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(markdown))
    return out


@pytest.mark.hostile("text")
@pytest.mark.parametrize("hostile", [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "![x](https://evil.example/p.png)",
    "imagenet\n\n# Forged heading\n\n| a | b |\n|---|---|",
    "[click](javascript:alert(1)) *em* `code` ~~del~~",
], ids=["script", "img-onerror", "external-image", "newline-heading-table", "link-emphasis"])
def test_a_dataset_name_in_the_table_note_stays_text(tmp_path, capfd, hostile):
    res = tmp_path / "res"
    res.mkdir()
    for i, data in enumerate((hostile, "imagenet")):
        r = good(f"km{i}", data__name=data)
        r["details"] = {"classes": 10}
        (res / f"r{i}.json").write_text(json.dumps(r))
    page = tmp_path / "board" / "LEADERBOARD.md"
    expect(capfd, leaderboard_main, [res, "--out", page], root=tmp_path, out=page.parent, code=0)
    text = page.read_text()
    assert inert(text) == []
    # the same page with a plain name has exactly the same constructs
    for i, data in enumerate(("plainname", "imagenet")):
        r = good(f"km{i}", data__name=data)
        r["details"] = {"classes": 10}
        (res / f"r{i}.json").write_text(json.dumps(r))
    plain = tmp_path / "plain" / "LEADERBOARD.md"
    expect(capfd, leaderboard_main, [res, "--out", plain], root=tmp_path, out=plain.parent, code=0,
           may_change=("res/r0.json", "res/r1.json"))
    assert _structure(text) == _structure(plain.read_text())


@pytest.mark.hostile("text")
@pytest.mark.parametrize("metric", ["ratio_intra<img src=x onerror=alert(1)>", "x\n## forged", "![i](http://e/x.png)"])
def test_a_metric_name_the_task_does_not_declare_is_refused(tmp_path, capfd, metric):
    res = tmp_path / "res"
    res.mkdir()
    r = good()
    r["metrics"][metric] = 1.0
    (res / "r.json").write_text(json.dumps(r))
    page = tmp_path / "board" / "LEADERBOARD.md"
    expect(capfd, leaderboard_main, [res, "--out", page], root=tmp_path, out=page.parent, code=0)
    text = page.read_text()
    assert "is not a metric of knn\\-graph" in text and inert(text) == []
    assert "## forged" not in text.replace("\\#", "")


@pytest.mark.hostile("text")
def test_a_run_folder_name_with_a_newline_stays_in_its_cell(base, tmp_path, capfd):
    run = tmp_path / "run\n# Forged heading <img src=x onerror=alert(1)>"
    shutil.copytree(base.run, run)
    page = tmp_path / "fig" / "F.md"
    expect(capfd, figures_main, [run, "--out", page], root=tmp_path, out=tmp_path / "fig", code=0)
    text = page.read_text()
    assert inert(text) == [] and "\n# Forged" not in text
    headings = [t.content for t in MarkdownIt("commonmark").parse(text) if t.type == "inline"
                and t.map is not None and text.splitlines()[t.map[0]].startswith("#")]
    assert all("Forged" not in h for h in headings)


@pytest.mark.hostile("text")
def test_inspect_prints_file_values_as_inert_lines(base, tmp_path, capfd):
    ck = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck"), origin=f"random{ESC}\nstatus       OK (forged)",
                   source=f"{ESC}src", git_sha="\u202egnp.exe")
    o = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=0)
    assert "\x1b" not in o.stdout and "\x07" not in o.stdout and "\u202e" not in o.stdout
    lines = o.stdout.splitlines()
    assert [line[:12] for line in lines].count("status      ") == 1 and "\\x1b" in o.stdout
    assert len(lines) == len(describe_lines(base.ckpt)), "a value forged an extra line"


@pytest.mark.hostile("text")
@pytest.mark.parametrize("name", ["a\nb", f"x{ESC}", "\u202eevil", "x" * 201])
def test_convert_name_that_readers_refuse_is_refused_on_write(tmp_path, capfd, name):
    expect(capfd, convert_main, ["--from", "random", "--input-size", "64", "--name", name, "--out",
                                 tmp_path / "ck"], root=tmp_path, out=None, code=2,
           match="refusing to write .*: name is .*expected a printable string")


@pytest.mark.hostile("text")
def test_convert_prints_hostile_key_names_escaped(tmp_path, capfd):
    from dcbench.models import build_model

    sd = {f"module.{k}" if k.startswith("features") else k: v
          for k, v in build_model("alexnet", sobel=True, input_size=224, seed=0).state_dict().items()}
    forged = f"junk{ESC}\nwrote /tmp/forged"
    sd[forged] = torch.zeros(1)  # not an AlexNet weight: dropped, and listed
    src = tmp_path / "rel.pth"
    torch.save({"state_dict": sd, "arch": "alexnet", f"note{ESC}\nrenamed  x -> y": 1}, src)
    o = expect(capfd, convert_main, ["--from", "deepcluster-release", src, "--out", tmp_path / "ck"],
               root=tmp_path, out=tmp_path / "ck", code=0)
    assert "\x1b" not in o.stdout and "\\x1b" in o.stdout
    assert [line.split()[0] for line in o.stdout.splitlines()].count("wrote") == 1, o.stdout
    assert not [line for line in o.stdout.splitlines() if line.startswith("renamed  x")]


# --------------------------------------------------------------------------- converter inputs


@pytest.mark.hostile("suite-traceback")
@pytest.mark.parametrize("source,obj,message", [
    ("deepcluster-release", {"state_dict": [torch.zeros(2)], "arch": "alexnet"}, "state dict is a list"),
    ("deepcluster-release", {"state_dict": {"features.0.weight": "text"}, "arch": "alexnet"},
     "holds a str, not a tensor"),
    ("deepcluster-release", {"state_dict": {3: torch.zeros(1)}, "arch": "alexnet"}, "entry 3 holds a Tensor"),
    ("torchvision-vgg16bn", {"state_dict": [1, 2, 3]}, "state dict is a list"),
    ("torchvision-vgg16bn", {"classifier.6.weight": torch.zeros(())}, "classifier.6.weight has shape \\(\\)"),
    ("deepcluster-release", {"state_dict": {"top_layer.weight": torch.zeros(2_000_000, 0)}, "arch": "alexnet"},
     "top_layer.weight has shape \\(2000000, 0\\)"),
], ids=["list", "non-tensor", "int-key", "vgg-list", "vgg-0d-top", "huge-top"])
def test_converter_input_that_is_not_a_dict_of_tensors_is_one_line(tmp_path, capfd, source, obj, message):
    src = tmp_path / "in.pth"
    torch.save(obj, src)
    expect(capfd, convert_main, ["--from", source, src, "--out", tmp_path / "ck"], root=tmp_path, out=None,
           code=2, match=message)


# --------------------------------------------------------------------------- quiet acceptances


@pytest.mark.hostile("quiet")
def test_knn_graph_k_beyond_the_set_is_refused(base, labelled, tmp_path, capfd):
    expect(capfd, transfer_main, ["knn-graph", "--checkpoint", base.ckpt, "--data", labelled, "--workers", "0",
                                  "--k", "18", "--out", tmp_path / "out"], root=tmp_path, out=None, code=2,
           match="has 18 images, so a node has at most 17 neighbours; lower --k")


@pytest.mark.hostile("quiet")
def test_supervised_training_refuses_k_and_warns_without_val(base, tmp_path, capfd):
    flags = [f for f in TRAIN_FLAGS]
    i = flags.index("--k")
    del flags[i:i + 2]
    expect(capfd, train_main, ["--data", base.tree, "--out", tmp_path / "run", "--targets", "labels", "--k", "5",
                               *flags], root=tmp_path, out=None, code=2, match="--targets labels trains on the "
                                                                              "folder's classes instead; drop --k")
    o = expect(capfd, train_main, ["--data", base.tree, "--out", tmp_path / "run", "--targets", "labels", *flags],
               root=tmp_path, out=tmp_path / "run", code=0)
    assert "warning: no val/ folder beside" in o.stderr  # said although --quiet is on


@pytest.mark.hostile("quiet")
def test_inspect_calls_resumable_only_what_resume_takes(base, tmp_path, capfd):
    ck = copy_ckpt(base.run / "checkpoint", tmp_path / "ck")
    o = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=0)
    assert "present, resumable" in o.stdout
    edit_meta(ck, origin="torchvision")
    o = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=0)
    assert "not resumable: origin is torchvision" in o.stdout
    ck2 = copy_ckpt(base.run / "checkpoint", tmp_path / "ck2")
    state = torch.load(ck2 / "train_state.pt", weights_only=True)
    del state["assignment"]
    torch.save(state, ck2 / "train_state.pt")
    meta = json.loads((ck2 / "meta.json").read_text())
    from dcbench.checkpoint import sha256_file

    edit_meta(ck2, train_state_sha256=sha256_file(ck2 / "train_state.pt"))
    assert meta["origin"] == "dcbench-train"
    o = expect(capfd, inspect_main, [ck2], root=tmp_path, out=None, code=0)
    assert "not resumable: it lacks assignment" in o.stdout

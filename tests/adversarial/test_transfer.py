"""dc-transfer against hostile checkpoints and flags: names that would leave --out (class 1),
NaN/inf/zero/negative flags (classes 2, 8), non-finite weights (class 8), the feature cache and
the checkpoint's preprocessing (class 6), a full disk (class 7), bombs in the data (class 4)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from dcbench.transfer.cli import main as transfer_main

from .conftest import bin_of, case, copy_ckpt, edit_meta, expect, expect_process, limited


@pytest.fixture(scope="session")
def cls(base, tmp_path_factory):
    """ImageNet-style root: train/ and val/, each the 3-class tiny tree."""
    root = tmp_path_factory.mktemp("cls") / "cls"
    shutil.copytree(base.tree, root / "train")
    shutil.copytree(base.tree, root / "val")
    return root


def knn(ck, data, out, *extra):
    return ["knn-graph", "--checkpoint", ck, "--data", data, "--out", out, "--cache-dir", out / "cache",
            "--workers", "0", "--batch-size", "32", *extra]


# (id, argv after the task's --checkpoint/--data/--out, what the error says)
BAD_FLAGS = [
    ("mlp-lr-nan", ["mlp", "--lr", "nan"], "argument --lr: nan is not a finite number"),
    ("mlp-lr-inf", ["mlp", "--lr", "inf"], "argument --lr: inf is not a finite number"),
    ("mlp-lr-1e300", ["mlp", "--lr", "1e300"], "argument --lr: 1e300 is not a finite number of float32 range"),
    ("mlp-epochs-0", ["mlp", "--epochs", "0"], "argument --epochs: must be at least 1"),
    ("mlp-batch-size-0", ["mlp", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
    ("mlp-momentum-1.5", ["mlp", "--momentum", "1.5"], "argument --momentum: must be in"),
    ("mlp-weight-decay-negative", ["mlp", "--weight-decay=-1"], "argument --weight-decay: must be 0 or more"),
    ("linear-lr-nan", ["linear-imagenet", "--lr", "nan"], "argument --lr"),
    ("knn-k-negative", ["knn-graph", "--k=-5"], "argument --k: must be at least 1"),
    ("knn-k-zero", ["knn-graph", "--k", "0"], "argument --k: must be at least 1"),
    ("knn-pca-dim-negative", ["knn-graph", "--pca-dim=-1"], "argument --pca-dim: must be 0 or more"),
    ("knn-seed-negative", ["knn-graph", "--seed=-1"], "argument --seed: must be in"),
    ("knn-seed-2-to-70", ["knn-graph", "--seed", str(2**70)], "argument --seed: must be in"),
    ("knn-workers-negative", ["knn-graph", "--workers=-1"], "argument --workers: must be 0 or more"),
    ("vocc-iterations-0", ["voc-classification", "--iterations", "0"], "argument --iterations: must be at least 1"),
    ("vocc-batch-size-negative", ["voc-classification", "--batch-size=-1"], "argument --batch-size"),
    ("vocc-test-crops-0", ["voc-classification", "--test-crops", "0"], "argument --test-crops"),
    ("vocc-lr-nan", ["voc-classification", "--lr", "nan"], "argument --lr"),
    ("vocc-min-scale-2", ["voc-classification", "--min-scale", "2"], "argument --min-scale: must be in"),
    ("vocc-grad-clip-inf", ["voc-classification", "--grad-clip", "inf"], "argument --grad-clip"),
    ("lowshot-draws-0", ["lowshot", "--draws", "0"], "argument --draws"),
    ("lowshot-lr-inf", ["lowshot", "--lr", "inf"], "argument --lr"),
    ("vocd-iterations-0", ["voc-detection", "--iterations", "0"], "argument --iterations"),
    ("vocd-lr-negative", ["voc-detection", "--lr=-1"], "argument --lr: must be above 0"),
    ("vocs-lr-nan", ["voc-segmentation", "--lr", "nan"], "argument --lr"),
    ("vocs-iterations-text", ["voc-segmentation", "--iterations", "many"], "argument --iterations: 'many' is not"),
]


@pytest.mark.parametrize("argv,message", [case(2 if any(w in c[0] for w in ("nan", "inf", "1e300")) else 8,
                                               *c[1:], id=c[0]) for c in BAD_FLAGS])
def test_bad_transfer_flag_is_one_line_exit_2_before_any_work(base, tmp_path, capfd, argv, message):
    out = tmp_path / "out"
    task, *flags = argv
    expect(capfd, transfer_main, [task, "--checkpoint", base.ckpt, "--data", tmp_path, "--out", out, *flags],
           root=tmp_path, out=out, code=2, match=message)
    assert not out.exists()


@pytest.mark.hostile(1)
@pytest.mark.parametrize("name", ["../../escaped", "..", "a/../../../b", "/ABSOLUTE/pwn"],
                         ids=["dotdot-up-two", "dotdot", "nested-dotdot", "absolute"])
def test_knn_graph_pictures_stay_under_out_whatever_the_checkpoint_name(base, cls, tmp_path, capfd, name):
    absolute = tmp_path.parent / f"{tmp_path.name}-abs"
    name = name.replace("/ABSOLUTE", str(absolute))
    work = tmp_path / "a" / "b"
    ck = edit_meta(copy_ckpt(base.ckpt, work / "ck"), name=name)
    out = work / "out"
    expect(capfd, transfer_main, knn(ck, cls, out), root=tmp_path, out=out, code=0, absent=(absolute,))
    pngs = sorted(p.relative_to(out).parts[:2] for p in out.rglob("*.png"))
    assert len(pngs) == 3 and all(p[0] == "knn-graph" for p in pngs)
    result = json.loads(next(out.glob("knn-graph__*.json")).read_text())
    assert all((out / result["details"][f"png_{k}"]).is_file() for k in ("neighbours", "filters", "ratios"))


@pytest.mark.hostile(1)
def test_lowshot_draw_lists_stay_under_out(base, cls, tmp_path, capfd):
    ck = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck"), name="../../../escaped")
    out = tmp_path / "out"
    expect(capfd, transfer_main, ["lowshot", "--checkpoint", ck, "--data", cls, "--out", out, "--workers", "0",
                                  "--shots", "1", "--draws", "1", "--iterations", "1", "--no-random-baseline",
                                  "--batch-size", "3"], root=tmp_path, out=out, code=0)
    assert [p.parent.name for p in out.rglob("n1_draw0.txt")] == ["escaped-" + json.loads(
        (ck / "meta.json").read_text())["model_sha256"][:8]]


@pytest.mark.hostile(1)
def test_voc_detection_files_stay_under_out(base, voc, tmp_path, capfd):
    ck = edit_meta(copy_ckpt(base.run / "checkpoint", tmp_path / "ck"), name="/../../escaped")
    out = tmp_path / "out"
    expect(capfd, transfer_main, ["voc-detection", "--checkpoint", ck, "--data", voc, "--out", out,
                                  "--iterations", "1", "--workers", "0"], root=tmp_path, out=out, code=0)
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1 and dirs[0].name.startswith("voc-detection-escaped-")


@pytest.mark.hostile(1)
def test_a_link_inside_out_that_leads_elsewhere_is_refused(base, cls, tmp_path, capfd):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "knn-graph").symlink_to(tmp_path / "elsewhere")
    expect(capfd, transfer_main, knn(base.ckpt, cls, out), root=tmp_path, out=out, code=2, match="outside --out")
    assert not any((tmp_path / "elsewhere").iterdir())


@pytest.mark.hostile(8)
def test_out_that_is_an_existing_file_is_one_line(base, cls, tmp_path, capfd):
    out = tmp_path / "out"
    out.write_text("precious")
    cache = tmp_path / "cache"  # refused before any work: not even features are cached
    expect(capfd, transfer_main, ["knn-graph", "--checkpoint", base.ckpt, "--data", cls, "--out", out,
                                  "--cache-dir", cache, "--workers", "0"],
           root=tmp_path, out=None, code=2, match="is a file; --out is the folder result files go in")
    assert out.read_text() == "precious"


@pytest.mark.hostile(8)
def test_checkpoint_with_nan_weights_is_named_non_finite_not_a_changed_trunk(base, cls, tmp_path, capfd):
    from safetensors.torch import load_file, save_file

    from dcbench.checkpoint import sha256_file

    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    t = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()
    t["features.0.weight"][0] = float("nan")
    save_file(t, str(ck / "model.safetensors"))
    edit_meta(ck, model_sha256=sha256_file(ck / "model.safetensors"))
    out = tmp_path / "out"
    expect(capfd, transfer_main, ["mlp", "--checkpoint", ck, "--data", cls, "--out", out, "--workers", "0",
                                  "--epochs", "1"], root=tmp_path, out=out, code=2,
           match="^non-finite weights in .*features.0.weight")


@pytest.mark.hostile(6)
def test_feature_cache_is_not_shared_by_checkpoints_with_other_preprocessing(base, cls, tmp_path, capfd):
    a = copy_ckpt(base.ckpt, tmp_path / "a")
    b = edit_meta(copy_ckpt(base.ckpt, tmp_path / "b"), name="other-preprocessing",
                  preprocessing={"mean": [0.9, 0.1, 0.9], "std": [0.05, 0.5, 0.05], "colour_order": "RGB"})
    out = tmp_path / "out"
    results, entries = [], []
    for ck in (a, b):
        expect(capfd, transfer_main, knn(ck, cls, out), root=tmp_path, out=out, code=0)
        results.append(json.loads(max(out.glob("knn-graph__*.json"), key=lambda p: p.stat().st_mtime_ns).read_text()))
        entries.append(len(list((out / "cache").glob("*.safetensors"))))
    # b computed and cached its own features (as many entries again), and they differ from a's
    assert [r["details"]["feature_cache_hit"] for r in results] == [False, False] and entries[1] == 2 * entries[0]
    assert results[0]["metrics"] != results[1]["metrics"]


@pytest.mark.hostile(4)
def test_decompression_bomb_in_the_knn_data_is_skipped(base, cls, tmp_path, capfd):
    data = tmp_path / "cls"
    shutil.copytree(cls, data)
    Image.new("1", (13000, 13000)).save(data / "val" / "c1" / "bomb.png", optimize=True)
    out = tmp_path / "out"
    res = expect(capfd, transfer_main, knn(base.ckpt, data, out), root=tmp_path, out=out, code=0)
    assert "bomb.png" in res.stderr
    result = json.loads(next(out.glob("knn-graph__*.json")).read_text())
    assert result["data"]["sizes"]["val"] == 18


@pytest.mark.hostile(7)
def test_full_disk_in_knn_graph_is_one_line_and_leaves_no_truncated_file(base, cls, tmp_path):
    out = tmp_path / "out"
    expect_process(limited(200_000, bin_of("dc-transfer"), *knn(base.ckpt, cls, out)), root=tmp_path, out=out,
                   code=2, match="while writing|cannot write the feature cache")
    for f in out.rglob("*"):
        assert not f.name.endswith((".png", ".json", ".safetensors")) or f.stat().st_size < 200_000
        if f.suffix == ".png":
            with Image.open(f) as im:
                im.verify()
    assert not list(out.glob("knn-graph__*.json"))


@pytest.mark.hostile(8)
def test_mathtext_in_checkpoint_and_class_names_does_not_break_the_pictures(base, cls, tmp_path, capfd):
    data = tmp_path / "cls"
    shutil.copytree(cls, data)
    (data / "val" / "c0").rename(data / "val" / "c$\\frac{$")
    ck = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck"), name="$\\frac{$ck")
    out = tmp_path / "out"
    expect(capfd, transfer_main, knn(ck, data, out), root=tmp_path, out=out, code=0)
    assert len(list(out.rglob("*.png"))) == 3

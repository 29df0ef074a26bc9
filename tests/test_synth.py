"""The embedded-data generator: determinism, layout, VOC conventions, dc-data."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from dcbench import synth
from dcbench.cli_data import main as dc_data_main
from dcbench.errors import run_cli

TINY = dict(cls_train=2, cls_val=1, cls_size=96, places_train=1, places_val=1, places_size=96,
            voc07_trainval=4, voc07_test=2, voc12_train=2, voc12_val=2, voc_min=128, voc_max=160,
            ret_good=1, ret_ok=1, ret_junk=1, ret_distractors=2, ret_side=160)


def tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tiny_scale(monkeypatch):
    monkeypatch.setitem(synth.SCALES, "tiny", TINY)
    return "tiny"


@pytest.mark.slow
def test_same_seed_gives_byte_identical_tree(embedded_root, tmp_path):
    synth.make_datasets(tmp_path / "again", seed=0, scale="smoke")
    a, b = tree_hashes(embedded_root), tree_hashes(tmp_path / "again")
    assert len(a) > 1000
    assert a == b


def test_other_seed_differs_and_order_does_not_matter(embedded_root, tmp_path, tiny_scale):
    s0 = synth.make_datasets(tmp_path / "s0", seed=0, scale=tiny_scale)
    synth.make_datasets(tmp_path / "s1", seed=1, scale=tiny_scale)
    h0, h1 = tree_hashes(tmp_path / "s0"), tree_hashes(tmp_path / "s1")
    assert set(h0) == set(h1)
    jpgs = [k for k in h0 if k.endswith(".jpg")]
    assert all(h0[k] != h1[k] for k in jpgs)
    # each image has its own generator: the tiny tree's images equal the smoke tree's
    full = tree_hashes(embedded_root)
    cls = [k for k in jpgs if k.startswith(("classification/", "places/"))]
    assert cls and all(h0[k] == full[k] for k in cls)
    assert s0["classification"]["train"] == 2 * len(synth.CLASSIFICATION_FAMILIES)


def test_summary_and_layout(embedded_root):
    s = json.loads((embedded_root / "dcbench_data.json").read_text())
    assert s["seed"] == 0 and s["scale"] == "smoke" and s["generator_version"] == synth.GENERATOR_VERSION
    cfg = synth.SCALES["smoke"]
    for split in ("train", "val"):
        for c in synth.CLASSIFICATION_FAMILIES:
            files = list((embedded_root / "classification" / split / c).glob("*.jpg"))
            assert len(files) == cfg[f"cls_{split}"]
    im = Image.open(next((embedded_root / "classification" / "train" / "star").glob("*.jpg")))
    assert im.format == "JPEG" and im.mode == "RGB" and im.size == (96, 96)
    places = embedded_root / "places"
    cats = (places / "categories_places205.txt").read_text().splitlines()
    assert cats[0].startswith("/") and cats[0].split()[1] == "0"
    line = (places / "trainvalsplit_places205" / "train_places205.csv").read_text().splitlines()[0]
    rel, label = line.split(" ")
    assert (places / "images" / rel).is_file() and label.isdigit()
    voc = embedded_root / "VOCdevkit"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        assert (voc / "VOC2007" / sub).is_dir()
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation", "ImageSets/Main"):
        assert (voc / "VOC2012" / sub).is_dir()
    for split in ("train", "val", "trainval", "test"):
        assert (voc / "VOC2007" / "ImageSets" / "Main" / f"{split}.txt").is_file()
    for split in ("train", "val", "trainval"):
        assert (voc / "VOC2012" / "ImageSets" / "Segmentation" / f"{split}.txt").is_file()


def test_annotation_xml_fields(embedded_root):
    ann = embedded_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"
    root = ET.parse(ann).getroot()
    assert root.tag == "annotation" and root.findtext("filename") == "000001.jpg"
    w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
    assert int(root.findtext("size/depth")) == 3
    assert Image.open(ann.parent.parent / "JPEGImages" / "000001.jpg").size == (w, h)
    objs = root.findall("object")
    assert objs
    for o in objs:
        assert o.findtext("name") in synth.VOC_CLASSES
        assert o.findtext("pose") and o.findtext("truncated") in ("0", "1") and o.findtext("difficult") in ("0", "1")
        x0, y0, x1, y1 = (int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h


def test_voc_has_difficult_truncated_and_several_objects(embedded_root):
    s = json.loads((embedded_root / "dcbench_data.json").read_text())["voc2007"]
    n_img = s["images"]["trainval"] + s["images"]["test"]
    assert s["objects"] > 2 * n_img
    assert 0 < s["difficult"] < 0.4 * s["objects"]
    assert 0 < s["truncated"] < 0.7 * s["objects"]


def test_voc_class_files_follow_devkit_convention(embedded_root):
    main = embedded_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    ids = main.joinpath("test.txt").read_text().split()
    seen = set()
    for cls in synth.VOC_CLASSES:
        lines = main.joinpath(f"{cls}_test.txt").read_text().splitlines()
        assert [ln.split()[0] for ln in lines] == ids
        for ln in lines:
            assert ln[len(ids[0]):] in (" -1", "  1", "  0")
            seen.add(ln.split()[1])
    assert seen == {"1", "-1", "0"}
    # cross-check one image against its XML
    img = ids[0]
    root = ET.parse(embedded_root / "VOCdevkit" / "VOC2007" / "Annotations" / f"{img}.xml").getroot()
    for cls in synth.VOC_CLASSES:
        objs = [o for o in root.findall("object") if o.findtext("name") == cls]
        want = -1 if not objs else (0 if all(o.findtext("difficult") == "1" for o in objs) else 1)
        line = next(ln for ln in main.joinpath(f"{cls}_test.txt").read_text().splitlines() if ln.startswith(img))
        assert int(line.split()[1]) == want


def test_segmentation_masks_palette_and_void_border(embedded_root):
    base = embedded_root / "VOCdevkit" / "VOC2012"
    ids = (base / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    m = Image.open(base / "SegmentationClass" / f"{ids[0]}.png")
    assert m.mode == "P"
    assert m.getpalette()[:3 * 3] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    assert m.getpalette()[255 * 3:256 * 3] == [224, 224, 192]
    vals = set()
    for i in ids[:10]:
        a = np.asarray(Image.open(base / "SegmentationClass" / f"{i}.png"))
        vals |= set(np.unique(a).tolist())
        obj = (a > 0) & (a < 255)
        if obj.any():
            # objects never touch background directly: the 255 band lies between
            assert not ((obj[:, 1:] & (a[:, :-1] == 0)).any() or (obj[:, :-1] & (a[:, 1:] == 0)).any())
            assert (a == 255).any()
    assert 255 in vals and 0 in vals and max(v for v in vals if v != 255) <= 20


def test_dc_data_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep me")
    assert run_cli(dc_data_main, ["make", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--force" in err[0]
    assert (out / "x").read_text() == "keep me"


def test_dc_data_make_and_force(tmp_path, tiny_scale, monkeypatch, capsys):
    import dcbench.cli_data as cli

    monkeypatch.setattr(cli, "SCALES", synth.SCALES)
    out = tmp_path / "out"
    out.mkdir()
    (out / "junk").write_text("x")
    assert run_cli(dc_data_main, ["make", str(out), "--scale", "tiny", "--seed", "3", "--force"]) == 0
    assert not (out / "junk").exists()
    assert json.loads((out / "dcbench_data.json").read_text())["seed"] == 3
    assert run_cli(dc_data_main, ["make", str(out), "--scale", "nope"]) == 2


def test_embedded_data_cache(tmp_path, tiny_scale, monkeypatch, capsys):
    from dcbench.embedded import embedded_data

    monkeypatch.setenv("DCBENCH_DATA_CACHE", str(tmp_path / "cache"))
    root = embedded_data("tiny", seed=0)
    assert (root / "dcbench_data.json").is_file() and root.parent == tmp_path / "cache"
    assert "generating" in capsys.readouterr().err
    assert embedded_data("tiny", seed=0) == root
    assert capsys.readouterr().err == ""
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]

"""Dataset readers: formats, error messages naming the file, unreadable-image skipping."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dcbench import datasets as ds
from dcbench.errors import DataError


@pytest.fixture
def voc_copy(embedded_root, tmp_path):
    dst = tmp_path / "VOCdevkit"
    shutil.copytree(embedded_root / "VOCdevkit", dst)
    return dst


def test_imagefolder(embedded_root):
    d = ds.ImageFolder(embedded_root / "classification" / "train")
    assert d.classes == sorted(d.classes) and len(d.classes) == 10
    assert d.class_to_idx["arrow"] == 0
    assert len(d) == len(d.samples) == len(d.targets) == 600 and d.skipped == []
    img, label = d[0]
    assert img.size == (96, 96) and img.mode == "RGB" and label == 0


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="nothere"):
        ds.ImageFolder(tmp_path / "nothere")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        ds.ImageFolder(tmp_path / "empty")


def test_unreadable_images_skipped_and_reported_once(embedded_root, tmp_path, capsys):
    root = tmp_path / "imgs"
    shutil.copytree(embedded_root / "classification" / "val" / "star", root / "star")
    shutil.copytree(embedded_root / "classification" / "val" / "ring", root / "ring")
    (root / "star" / "garbage1.jpg").write_bytes(b"\x00not a jpeg at all" * 10)
    (root / "ring" / "garbage2.jpg").write_bytes(b"garbage")
    good = (root / "ring" / "ring_00000.jpg").read_bytes()
    (root / "ring" / "ring_truncated.jpg").write_bytes(good[: len(good) // 2])  # header parses, decode fails
    capsys.readouterr()
    d = ds.ImageFolder(root, transform=lambda im: torch.zeros(3, 4, 4))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipped 2" in err[0] and str(root) in err[0] and "garbage" in err[0]
    assert len(d.skipped) == 2 and len(d) == 41
    trunc = [i for i, (p, _) in enumerate(d.samples) if p.endswith("ring_truncated.jpg")]
    assert trunc and d[trunc[0]] is None and d[trunc[0]] is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ring_truncated" in err[0]
    batch = ds.collate_skip_none([d[0], d[trunc[0]], d[1]])
    assert batch[0].shape == (2, 3, 4, 4) and batch[1].tolist() == [0, 0]
    ds.ImageFolder(root)  # a second dataset over the same root reports nothing again
    assert capsys.readouterr().err == ""


def test_list_file_dataset(embedded_root):
    p = embedded_root / "places"
    d = ds.ListFileDataset(p / "images", p / "trainvalsplit_places205" / "val_places205.csv")
    assert len(d) == 160 and d.classes[0] == "/c/coast" and len(d.classes) == 8
    img, label = d[0]
    assert img.size == (96, 96) and isinstance(label, int)
    assert sorted(set(d.targets)) == list(range(8))


def test_list_file_errors_name_file_and_line(embedded_root, tmp_path):
    p = embedded_root / "places"
    with pytest.raises(DataError, match="missing.csv"):
        ds.ListFileDataset(p / "images", tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    good = (p / "trainvalsplit_places205" / "val_places205.csv").read_text().splitlines()
    bad.write_text("\n".join(good[:3] + ["c/coast/x.jpg notanint"]) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:4"):
        ds.ListFileDataset(p / "images", bad)


def test_voc_detection(embedded_root):
    d = ds.VOCDetection(embedded_root / "VOCdevkit", year="2007", split="trainval")
    assert len(d) == len(d.ids) == 120 and d.classes == ds.VOC_CLASSES and len(ds.VOC_CLASSES) == 20
    img, t = d[0]
    h, w = t["size"]
    assert img.size == (w, h) and t["image_id"] == d.ids[0]
    assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
    assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 20)).all()
    assert t["difficult"].dtype == torch.bool and t["truncated"].dtype == torch.bool
    assert (t["boxes"][:, 0] >= 0).all() and (t["boxes"][:, 2] <= w).all()
    assert (t["boxes"][:, 2] > t["boxes"][:, 0]).all()
    diff = torch.cat([d.target(i)["difficult"] for i in range(len(d))])
    assert diff.any() and not diff.all()
    # the data root itself is accepted too
    assert ds.VOCDetection(embedded_root, split="test").ids[0] not in d.ids


def test_voc_errors_name_file(voc_copy):
    with pytest.raises(DataError, match=r"Main[/\\]nosuch\.txt"):
        ds.VOCDetection(voc_copy, split="nosuch")
    ann = voc_copy / "VOC2007" / "Annotations" / "000002.xml"
    ann.write_text("<annotation><size><width>10</width>")
    with pytest.raises(DataError, match="000002.xml"):
        ds.VOCDetection(voc_copy, split="trainval")
    with pytest.raises(DataError, match=r"Segmentation[/\\]test\.txt"):
        ds.VOCSegmentation(voc_copy, split="test")
    with pytest.raises(DataError, match="VOC2010"):
        ds.VOCSegmentation(voc_copy / "VOC2012" / "JPEGImages", year="2010")


def test_voc_classification(embedded_root):
    d = ds.VOCClassification(embedded_root / "VOCdevkit", split="test")
    assert d.labels.shape == (120, 20)
    assert set(np.unique(d.labels).tolist()) == {-1.0, 0.0, 1.0}
    img, t = d[0]
    assert t.dtype == torch.float32 and t.shape == (20,) and torch.equal(t, torch.from_numpy(d.labels[0]))
    det = ds.VOCDetection(embedded_root / "VOCdevkit", split="test").target(0)
    present = {int(c) - 1 for c, dif in zip(det["labels"], det["difficult"]) if not dif}
    assert {i for i in range(20) if d.labels[0, i] == 1} == present


def test_voc_segmentation(embedded_root):
    d = ds.VOCSegmentation(embedded_root / "VOCdevkit", year="2012", split="val")
    assert len(d) == 60
    img, m = d[0]
    assert m.mode == "P" and m.size == img.size
    a = np.asarray(m)
    assert set(np.unique(a).tolist()) <= set(range(21)) | {255}
    seen = set()
    for i in range(len(d)):
        seen |= set(np.unique(np.asarray(d[i][1])).tolist())
    assert 255 in seen and len(seen - {0, 255}) >= 10


def test_fingerprint(embedded_root, tmp_path):
    f = ds.fingerprint(embedded_root / "classification")
    assert len(f) == 64 and f == ds.fingerprint(embedded_root / "classification")
    shutil.copytree(embedded_root / "places", tmp_path / "p")
    a = ds.fingerprint(tmp_path / "p")
    (tmp_path / "p" / "extra.txt").write_text("x")
    assert ds.fingerprint(tmp_path / "p") != a
    with pytest.raises(DataError):
        ds.fingerprint(tmp_path / "nope")

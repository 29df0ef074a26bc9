"""voc-detection: the VOC07 devkit metric against an independent computation, the frozen trunk,
bad input, and one small end-to-end run."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from outcome_checks import check_intervals  # tests/outcome_checks.py

from dcbench.checkpoint import save_checkpoint
from dcbench.datasets import VOC_CLASSES, VOCDetection
from dcbench.errors import DataError, run_cli
from dcbench.models import build_model
from dcbench.outcomes import Outcomes
from dcbench.transfer import cli, voc_eval
from dcbench.transfer.training import assert_unchanged, parameter_snapshot
from dcbench.transfer.voc_detection import (
    DetectionItems,
    build_detector,
    detector_forward,
    flip_boxes,
    protocol_defaults,
    train_detector,
)

CLASSES = ("bird", "cat", "dog", "person")


# ----------------------------------------------------------------------------------------------
# An independent reading of the VOC2007 rules: overlaps by counting pixels of the 1-based
# inclusive boxes, exact fractions, a plain greedy pass, precision maxima by brute force.
def _pixels(b):
    x1, y1, x2, y2 = (int(round(v)) for v in b)
    return {(x, y) for x in range(x1, x2 + 1) for y in range(y1, y2 + 1)}


def _reference_ap(dets, gts):
    """dets: [(image, score, box)], gts: {image: [(box, difficult)]} for one class -> AP or None."""
    npos = sum(1 for objs in gts.values() for _, d in objs if not d)
    ranked = sorted(enumerate(dets), key=lambda t: (-t[1][1], t[0]))  # stable on ties
    taken = set()
    outcome = []  # "tp", "fp" or "skip"
    for _, (img, _, box) in ranked:
        objs = gts.get(img, [])
        best, best_j = Fraction(-1), None
        p = _pixels(box)
        for j, (g, _) in enumerate(objs):
            q = _pixels(g)
            ov = Fraction(len(p & q), len(p | q))
            if ov > best:
                best, best_j = ov, j
        if best_j is not None and best > Fraction(1, 2):
            if objs[best_j][1]:
                outcome.append("skip")
            elif (img, best_j) in taken:
                outcome.append("fp")
            else:
                taken.add((img, best_j))
                outcome.append("tp")
        else:
            outcome.append("fp")
    if npos == 0:
        return None
    points = []
    for n in range(1, len(outcome) + 1):
        tp = outcome[:n].count("tp")
        fp = outcome[:n].count("fp")
        prec = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
        points.append((Fraction(tp, npos), prec))
    ap = Fraction(0)
    for k in range(11):
        ps = [p for r, p in points if r >= Fraction(k, 10)]
        ap += max(ps) if ps else 0
    return float(ap / 11)


def _devkit_tree(tmp_path: Path, gts: dict, dets: dict):
    """Write detections as devkit files; return (det_dir, annotations in reader form)."""
    annotations = {}
    for img in sorted({i for per in gts.values() for i in per} | {"000099"}):
        annotations[img] = [{"name": c, "bndbox": list(b), "difficult": d}
                            for c in CLASSES for b, d in gts.get(c, {}).get(img, [])]
    det_dir = tmp_path / "results"
    det_dir.mkdir()
    for c in CLASSES:
        lines = "".join(f"{i} {s} {b[0]} {b[1]} {b[2]} {b[3]}\n" for i, s, b in dets.get(c, []))
        (det_dir / f"comp4_det_test_{c}.txt").write_text(lines)
    return det_dir, annotations


GTS = {
    # cat: two images, one difficult object, one object found twice, one never found.
    "cat": {"000001": [((10, 10, 50, 50), False), ((60, 60, 90, 90), True)],
            "000002": [((5, 5, 40, 30), False), ((45, 5, 80, 30), False)],
            "000003": [((20, 20, 60, 70), False)]},
    # bird: ground truth but no detections -> AP 0.
    "bird": {"000003": [((1, 1, 30, 30), False)]},
    # dog: no ground truth at all (only detections) -> AP undefined, left out of the mean.
    # person: only difficult ground truth -> undefined too; its detections are ignored.
    "person": {"000002": [((10, 10, 30, 40), True)]},
}
DETS = {
    "cat": [
        ("000001", 0.9, (11, 11, 50, 49)),    # tp
        ("000001", 0.9, (10, 12, 51, 50)),    # tie, same object again -> fp
        ("000001", 0.8, (61, 61, 90, 89)),    # difficult -> ignored
        ("000002", 0.7, (5, 5, 40, 30)),      # tp
        ("000002", 0.7, (100, 100, 120, 120)),  # tie, nothing there -> fp
        ("000003", 0.6, (20, 20, 41, 70)),    # IoU 22*51 / 41*51 = 0.537 -> tp
        ("000002", 0.5, (45, 5, 62, 30)),     # IoU 18/36 = 0.5 exactly -> not > 0.5 -> fp
        ("000099", 0.4, (1, 1, 10, 10)),      # image without objects -> fp
    ],
    "dog": [("000001", 0.95, (10, 10, 50, 50))],
    "person": [("000002", 0.3, (10, 10, 30, 40))],
}


def test_devkit_ap_matches_independent_computation(tmp_path):
    det_dir, annotations = _devkit_tree(tmp_path, GTS, DETS)
    out = voc_eval.eval_detection_files(det_dir, annotations, CLASSES)
    for c in CLASSES:
        gts = {i: objs for i, objs in GTS.get(c, {}).items()}
        ref = _reference_ap(DETS.get(c, []), gts)
        if ref is None:
            assert out["ap"][c] is None, c
        else:
            assert out["ap"][c] == pytest.approx(100 * ref, abs=1e-9), c
    assert out["ap"]["bird"] == 0.0
    assert out["classes_without_ground_truth"] == ["dog", "person"]
    assert out["map"] == pytest.approx((out["ap"]["cat"] + 0.0) / 2)
    # cat by hand: ranking tp fp (skip) tp fp tp fp fp with 4 positives ->
    # recall .25 .25 .25 .5 .5 .75 .75 .75, precision 1 .5 .5 .667 .5 .6 .5 .429:
    # t=0,.1,.2 -> 1; t=.3,.4,.5 -> 2/3; t=.6,.7 -> .6; t>=.8 -> 0.
    assert out["ap"]["cat"] == pytest.approx(100 * (3 * 1 + 3 * 2 / 3 + 2 * 0.6) / 11)
    assert out["counts"]["cat"] == {"npos": 4, "tp": 3, "fp": 4}


def _outcomes_map(out: dict, annotations: dict) -> float:
    o = Outcomes(ids=list(annotations))
    o.detection("map", **out["outcomes"])
    return o.metrics["map"].statistic(np.ones(len(annotations)))


def test_eval_returns_each_detections_devkit_match_and_the_positives_per_image(tmp_path):
    det_dir, annotations = _devkit_tree(tmp_path, GTS, DETS)
    out = voc_eval.eval_detection_files(det_dir, annotations, CLASSES)
    o, ids = out["outcomes"], list(annotations)
    cat = o["cls"] == CLASSES.index("cat")
    # the cat file's order: tp, fp (same object again), skip (difficult), tp, fp (nothing there), tp,
    # fp (IoU exactly 0.5), fp (an image without objects)
    assert o["match"][cat].tolist() == [1, 0, -1, 1, 0, 1, 0, 0]
    assert [ids[i] for i in o["image"][cat]] == [d[0] for d in DETS["cat"]]
    assert o["score"][cat].tolist() == [d[1] for d in DETS["cat"]]
    assert o["match"][o["cls"] == CLASSES.index("person")].tolist() == [-1]  # only a difficult box there
    assert o["npos"].shape == (len(ids), len(CLASSES))
    assert o["npos"][:, CLASSES.index("cat")].tolist() == [1, 2, 1, 0]  # 000001's second cat is difficult
    assert o["npos"][:, CLASSES.index("person")].sum() == 0
    # and the outcomes give back the mAP at weights 1 (the mAP itself unchanged: checked above)
    assert _outcomes_map(out, annotations) == pytest.approx(out["map"], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_devkit_ap_random_cases(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gts, dets = {}, {}
    for c in CLASSES:
        per = {}
        for img in ("000001", "000002", "000003"):
            objs = []
            for _ in range(rng.integers(0, 3)):
                x, y = rng.integers(1, 40, size=2)
                w, h = rng.integers(5, 20, size=2)
                objs.append(((int(x), int(y), int(x + w), int(y + h)), bool(rng.random() < 0.25)))
            if objs:
                per[img] = objs
        gts[c] = per
        cand = [b for objs in per.values() for b, _ in objs] or [(1, 1, 10, 10)]
        dl = []
        for _ in range(rng.integers(0, 8)):
            b = cand[rng.integers(len(cand))]
            j = rng.integers(-3, 4, size=4)
            box = (int(b[0] + j[0]), int(b[1] + j[1]), int(b[2] + j[2]), int(b[3] + j[3]))
            if box[2] < box[0] or box[3] < box[1]:
                continue
            img = ("000001", "000002", "000003")[rng.integers(3)]
            dl.append((img, float(rng.choice([0.2, 0.5, 0.5, 0.9])), box))  # many ties
        dets[c] = dl
    det_dir, annotations = _devkit_tree(tmp_path, gts, dets)
    out = voc_eval.eval_detection_files(det_dir, annotations, CLASSES)
    for c in CLASSES:
        ref = _reference_ap(dets[c], gts[c])
        assert (out["ap"][c] is None) == (ref is None)
        if ref is not None:
            assert out["ap"][c] == pytest.approx(100 * ref, abs=1e-9)
    assert _outcomes_map(out, annotations) == pytest.approx(out["map"], abs=1e-9)  # ties broken alike


def test_detection_files_round_trip_and_unknown_image(tmp_path):
    dets = {"cat": [("000001", 0.5, (1.0, 2.0, 3.0, 4.0))]}
    voc_eval.write_detection_files(tmp_path, dets, CLASSES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"comp4_det_test_{c}.txt" for c in sorted(CLASSES)]
    assert voc_eval.read_detection_file(tmp_path / "comp4_det_test_cat.txt") == [
        ("000001", 0.5, (1.0, 2.0, 3.0, 4.0))]
    with pytest.raises(DataError, match="not in the test set"):
        voc_eval.eval_detection_files(tmp_path, {"000002": []}, CLASSES)
    (tmp_path / "comp4_det_test_cat.txt").write_text("000001 0.5 1 2 3\n")
    with pytest.raises(DataError, match="comp4_det_test_cat.txt:1"):
        voc_eval.read_detection_file(tmp_path / "comp4_det_test_cat.txt")


def test_voc07_ap_eleven_points():
    # One positive found at rank 2 of 2: precision .5 at recall 1 -> AP .5.
    assert voc_eval.voc07_ap(np.array([0.0, 1.0]), np.array([0.0, 0.5])) == pytest.approx(0.5)
    # Recall exactly 0.3 counts for the 0.3 threshold.
    assert voc_eval.voc07_ap(np.array([3 / 10]), np.array([1.0])) == pytest.approx(4 / 11)


# ----------------------------------------------------------------------------------------------
# Model, frozen trunk, bad input, end to end
@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory):
    model = build_model("alexnet", sobel=True, batchnorm=True, input_size=64, seed=0)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "rand64", model, origin="random")


def _proposals(embedded_root, path: Path, drop: str | None = None, outside: str | None = None) -> Path:
    """Ground-truth boxes jittered plus a few random boxes per image, in the documented JSON format."""
    rng = np.random.default_rng(0)
    boxes = {}
    for split in ("trainval", "test"):
        ds = VOCDetection(embedded_root, "2007", split)
        for image_id, ann in zip(ds.ids, ds.annotations):
            w, h = ann["width"], ann["height"]
            bl = [o["bndbox"] for o in ann["objects"]]
            for _ in range(8):
                x1, y1 = rng.integers(1, w // 2), rng.integers(1, h // 2)
                bl.append([int(x1), int(y1), int(rng.integers(x1, w + 1)), int(rng.integers(y1, h + 1))])
            boxes[image_id] = bl
    if drop:
        del boxes[drop]
    if outside:
        boxes[outside].append([5, 5, 10_000, 20])
    path.write_text(json.dumps({"format": "dcbench-proposals", "version": 1, "boxes": boxes}))
    return path


def test_flip_boxes_is_an_involution():
    b = torch.tensor([[0.0, 1.0, 10.0, 5.0], [3.0, 0.0, 20.0, 8.0]])
    f = flip_boxes(b, 20)
    assert f.tolist() == [[10.0, 1.0, 20.0, 5.0], [0.0, 0.0, 17.0, 8.0]]
    assert torch.equal(flip_boxes(f, 20), b)


@pytest.mark.parametrize("method", ["faster-rcnn", "fast-rcnn"])
def test_frozen_trunk_is_untouched(method, ckpt64, embedded_root, one_thread):
    from dcbench.checkpoint import load_checkpoint
    from dcbench.transfer.voc_detection import load_proposals

    torch.manual_seed(0)
    ck = load_checkpoint(ckpt64)
    proto = dict(protocol_defaults("smoke", method), iterations=3, lr=0.05, images_per_batch=2)
    det = build_detector(ck.model, ckpt64, proto, frozen_trunk=True, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert all(not p.requires_grad for p in det.backbone.parameters())
    before = parameter_snapshot(det.backbone)
    everything = parameter_snapshot(det)
    assert any(k.endswith("running_var") for k in before)
    ds = VOCDetection(embedded_root, "2007", "trainval")
    items = DetectionItems(ds, drop_difficult=True)
    batches = [[items[0], items[1]], [items[2], items[3]]]
    proposals = None
    if method == "fast-rcnn":
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            f = _proposals(embedded_root, Path(d) / "p.json")
            proposals = load_proposals(f, [ds, VOCDetection(embedded_root, "2007", "test")])
    losses = train_detector(det, batches, proto, torch.device("cpu"), proposals)
    assert len(losses) == 3
    assert_unchanged(det.backbone, before, "test")
    changed = {k for k, v in det.state_dict().items() if not torch.equal(v, everything[k])}
    assert any(k.startswith("roi_heads.box_head.classifier") for k in changed)  # fc6/fc7 did train
    assert not any(k.startswith("backbone.") for k in changed)
    assert any(k.startswith("rpn.") for k in changed) == (method == "faster-rcnn")
    det.eval()
    out = detector_forward(det, [items[0][0]], None, [proposals[items[0][2]]] if proposals else None)
    assert set(out[0]) == {"boxes", "scores", "labels"}


def test_box_head_starts_from_the_checkpoint_fc_layers(ckpt64):
    from dcbench.checkpoint import load_checkpoint

    ck = load_checkpoint(ckpt64)
    det = build_detector(ck.model, ckpt64, protocol_defaults("smoke", "faster-rcnn"), frozen_trunk=False,
                         mean=(0.5,) * 3, std=(0.25,) * 3)
    sd = det.state_dict()
    for k, v in ck.model.state_dict().items():
        if k.startswith("classifier."):
            assert torch.equal(sd[f"roi_heads.box_head.{k}"], v)
        elif k.startswith(("features.", "sobel.")):
            assert torch.equal(sd[f"backbone.{k}"], v), k
    assert det.roi_heads.box_roi_pool.output_size == tuple(ck.meta["feature_shape"][1:])


def _run(argv, capsys):
    code = run_cli(cli.main, argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("problem", ["missing", "outside"])
def test_bad_proposals_are_exit_2(problem, ckpt64, embedded_root, tmp_path, capsys):
    ids = VOCDetection(embedded_root, "2007", "test").ids
    f = _proposals(embedded_root, tmp_path / "props.json", drop=ids[3] if problem == "missing" else None,
                   outside=ids[5] if problem == "outside" else None)
    code, err = _run(["voc-detection", "--checkpoint", str(ckpt64), "--data", str(embedded_root), "--scale",
                      "smoke", "--proposals", str(f), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and str(f) in err
    assert (ids[3] if problem == "missing" else ids[5]) in err


def test_checkpoint_without_fc_is_exit_2(ckpt64, embedded_root, tmp_path, capsys, strip_fc):
    bad = strip_fc(ckpt64, tmp_path / "nofc")
    code, err = _run(["voc-detection", "--checkpoint", str(bad), "--data", str(embedded_root), "--scale",
                      "smoke", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and str(bad) in err and "classifier" in err


def test_fast_rcnn_needs_proposals(ckpt64, embedded_root, tmp_path, capsys):
    code, err = _run(["voc-detection", "--checkpoint", str(ckpt64), "--method", "fast-rcnn",
                      "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--proposals" in err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["faster-rcnn", "fast-rcnn"])
def test_voc_detection_end_to_end(method, ckpt64, embedded_root, tmp_path, one_thread):
    out = tmp_path / "results"
    argv = ["voc-detection", "--checkpoint", str(ckpt64), "--data", str(embedded_root), "--scale", "smoke",
            "--iterations", "6", "--workers", "0", "--out", str(out)]
    if method == "fast-rcnn":
        argv += ["--proposals", str(_proposals(embedded_root, tmp_path / "p.json"))]
    assert run_cli(cli.main, argv) == 0
    (path,) = out.glob("voc-detection__*.json")
    r = json.loads(path.read_text())
    assert r["variant"] == {"dataset": "VOC2007", "layers": "all", "method": method}
    assert set(r["metrics"]) == {"map"} and 0 <= r["metrics"]["map"] <= 100
    assert r["protocol"]["iterations"] == 6 and r["data"]["sizes"]["test"] > 0
    det_dir = Path(r["details"]["detections_dir"])
    files = sorted(det_dir.glob("comp4_det_test_*.txt"))
    assert len(files) == 20
    # the result's mAP is the devkit evaluation of the files written
    ds = VOCDetection(embedded_root, "2007", "test")
    again = voc_eval.eval_detection_files(det_dir, {i: a["objects"] for i, a in zip(ds.ids, ds.annotations)},
                                          VOC_CLASSES)
    assert again["map"] == pytest.approx(r["metrics"]["map"])
    outcomes = check_intervals(path, r, ["map"], contains=False, spread=False)  # see check_intervals
    assert outcomes["map"].arrays["npos"].shape == (r["data"]["sizes"]["test"], 20)

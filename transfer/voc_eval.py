"""PASCAL VOC metrics: the VOC2007 detection devkit rules and the segmentation confusion matrix.

Detection (``VOCdevkit/VOCcode/VOCevaldet.m``, VOC2007 rules):

- detections of one class are ranked by confidence, highest first; ties keep file order
  (MATLAB's ``sort`` is stable; we use a stable sort too, so the result is deterministic);
- a detection is matched to the ground-truth box of that class in its image with the largest
  overlap, IoU computed on 1-based inclusive pixel boxes (``+1`` on widths and heights);
- overlap ``> 0.5`` (strictly): if that ground truth is *difficult* the detection is ignored
  (neither true nor false positive); else a true positive the first time, a false positive
  for every later detection of the same object; overlap ``<= 0.5`` is a false positive;
- recall is over the non-difficult ground truth; AP is the VOC2007 11-point interpolated
  average precision (max precision at recall >= 0, 0.1, ..., 1.0, averaged).

A class without non-difficult ground truth has no defined AP (the devkit divides by zero);
such a class is reported as ``None`` and left out of the mean. A class with ground truth but
no detections has AP 0.

Detection files follow the devkit results format: ``comp4_det_test_<class>.txt`` with lines
``<image_id> <confidence> <xmin> <ymin> <xmax> <ymax>`` in 1-based pixel coordinates.

Segmentation: one ``21 x 21`` confusion matrix over all pixels of the split (rows = ground
truth, columns = prediction), label 255 ignored; IoU_c = TP / (TP + FP + FN); mean IoU over
the 21 classes (a class absent from both ground truth and predictions is left out, as in the
FCN evaluation code); pixel accuracy = trace / total.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from dcbench.atomic import write_text_atomic
from dcbench.errors import DataError
from dcbench.outcomes import class_iou, miou_scores, voc07_ap

DET_FILE = "comp4_det_test_{cls}.txt"


# --------------------------------------------------------------------------------------------
# Detection
def iou_inclusive(box: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of one 1-based inclusive pixel box against an (N, 4) array, devkit style (+1)."""
    ix1 = np.maximum(gts[:, 0], box[0])
    iy1 = np.maximum(gts[:, 1], box[1])
    ix2 = np.minimum(gts[:, 2], box[2])
    iy2 = np.minimum(gts[:, 3], box[3])
    iw = np.maximum(ix2 - ix1 + 1.0, 0.0)
    ih = np.maximum(iy2 - iy1 + 1.0, 0.0)
    inter = iw * ih
    union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
             + (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0) - inter)
    return inter / union


def eval_class(detections: Sequence[tuple[str, float, Sequence[float]]],
               ground_truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
               iou_threshold: float = 0.5) -> dict:
    """AP of one class.

    ``detections``: ``(image_id, confidence, (x1, y1, x2, y2))``, 1-based pixel boxes.
    ``ground_truth``: image_id -> (boxes (N, 4) 1-based, difficult (N,) bool) for this class,
    for every image of the test set (images without objects of the class may be omitted).
    Returns ``{"ap": float | None, "npos": int, "tp": int, "fp": int, "match": (len(detections),) int8}``,
    ``match`` in the order of ``detections``: 1 true positive, 0 false positive, -1 ignored (its best
    overlap is a difficult box).
    """
    npos = int(sum((~np.asarray(d, bool)).sum() for _, d in ground_truth.values()))
    conf = np.array([float(c) for _, c, _ in detections], dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    used = {k: np.zeros(len(b), bool) for k, (b, _) in ground_truth.items()}
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    match = np.full(len(order), -1, np.int8)
    for rank, i in enumerate(order):
        image_id, _, box = detections[i]
        box = np.asarray(box, dtype=np.float64)
        gt = ground_truth.get(image_id)
        if gt is None or len(gt[0]) == 0:
            fp[rank], match[i] = 1, 0
            continue
        gboxes, difficult = np.asarray(gt[0], np.float64).reshape(-1, 4), np.asarray(gt[1], bool)
        ov = iou_inclusive(box, gboxes)
        j = int(np.argmax(ov))
        if ov[j] > iou_threshold:
            if difficult[j]:
                continue
            if not used[image_id][j]:
                used[image_id][j] = True
                tp[rank], match[i] = 1, 1
            else:
                fp[rank], match[i] = 1, 0
        else:
            fp[rank], match[i] = 1, 0
    if npos == 0:
        return {"ap": None, "npos": 0, "tp": int(tp.sum()), "fp": int(fp.sum()), "match": match}
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / npos
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    # ignored (difficult) detections have tp = fp = 0: they add no point of their own, and the
    # devkit keeps them in the cumulative curve exactly this way.
    return {"ap": voc07_ap(recall, precision) if len(order) else 0.0, "npos": npos,
            "tp": int(tp.sum()), "fp": int(fp.sum()), "match": match}


def ground_truth_by_class(annotations: Mapping[str, Iterable[dict]], classes: Sequence[str]
                          ) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """image_id -> objects (``name``, ``bndbox`` 1-based, ``difficult``) into per-class ground truth."""
    out: dict[str, dict] = {c: {} for c in classes}
    for image_id, objects in annotations.items():
        per: dict[str, tuple[list, list]] = {c: ([], []) for c in classes}
        for o in objects:
            if o["name"] in per:
                per[o["name"]][0].append(o["bndbox"])
                per[o["name"]][1].append(bool(o.get("difficult", False)))
        for c, (b, d) in per.items():
            out[c][image_id] = (np.asarray(b, np.float64).reshape(-1, 4), np.asarray(d, bool))
    return out


def write_detection_files(out_dir: str | os.PathLike, detections: Mapping[str, Iterable[tuple]],
                          classes: Sequence[str]) -> list[Path]:
    """Write ``comp4_det_test_<class>.txt`` for every class (empty file if no detection)."""
    out_dir = Path(out_dir)
    paths = []
    for c in classes:
        path = out_dir / DET_FILE.format(cls=c)
        lines = [f"{i} {s:.6f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}\n"
                 for i, s, b in detections.get(c, ())]
        write_text_atomic(path, "".join(lines))
        paths.append(path)
    return paths


def read_detection_file(path: str | os.PathLike) -> list[tuple[str, float, tuple[float, ...]]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"detection file {path} does not exist")
    dets = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 6:
                raise ValueError
            dets.append((parts[0], float(parts[1]), tuple(float(v) for v in parts[2:])))
        except ValueError:
            raise DataError(f"{path}:{n}: expected '<image_id> <score> <x1> <y1> <x2> <y2>'") from None
    return dets


def eval_detection_files(det_dir: str | os.PathLike, annotations: Mapping[str, Iterable[dict]],
                         classes: Sequence[str], iou_threshold: float = 0.5) -> dict:
    """mAP from devkit-format files in ``det_dir``: ``{"map": %, "ap": {class: % or None}, ...}``.

    ``outcomes``: what the mAP is computed from, per image of ``annotations`` (in its order): every
    detection's image index, class index, confidence and match (:func:`eval_class`), and ``npos``
    (images, classes), the non-difficult boxes of each class in each image (the
    :mod:`dcbench.outcomes` ``detection`` kind)."""
    gt = ground_truth_by_class(annotations, classes)
    index = {image_id: n for n, image_id in enumerate(annotations)}
    npos = np.zeros((len(index), len(classes)), np.int64)
    for ci, c in enumerate(classes):
        for image_id, (_, difficult) in gt[c].items():
            npos[index[image_id], ci] = int((~difficult).sum())
    fields: dict[str, list[np.ndarray]] = {"image": [], "cls": [], "score": [], "match": []}
    per_class, counts = {}, {}
    for ci, c in enumerate(classes):
        path = Path(det_dir) / DET_FILE.format(cls=c)
        dets = read_detection_file(path)
        unknown = next((d[0] for d in dets if d[0] not in annotations), None)
        if unknown is not None:  # the devkit stops on an unrecognised image too
            raise DataError(f"{path}: image {unknown!r} is not in the test set")
        r = eval_class(dets, gt[c], iou_threshold)
        per_class[c] = None if r["ap"] is None else 100.0 * r["ap"]
        counts[c] = {k: r[k] for k in ("npos", "tp", "fp")}
        # file order: the stable sort by confidence then breaks ties as eval_class's does
        fields["image"].append(np.array([index[d[0]] for d in dets], np.int64))
        fields["cls"].append(np.full(len(dets), ci, np.int64))
        fields["score"].append(np.array([d[1] for d in dets], np.float64))
        fields["match"].append(r["match"])
    defined = [v for v in per_class.values() if v is not None]
    outcomes = {k: np.concatenate(v) for k, v in fields.items()}
    return {"map": float(np.mean(defined)) if defined else 0.0, "ap": per_class, "counts": counts,
            "classes_without_ground_truth": [c for c, v in per_class.items() if v is None],
            "outcomes": {**outcomes, "npos": npos}}


# --------------------------------------------------------------------------------------------
# Segmentation
def confusion_matrix(target: np.ndarray, pred: np.ndarray, num_classes: int = 21,
                     ignore_index: int = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = ground truth; ``ignore_index`` pixels skipped."""
    target, pred = np.asarray(target).ravel(), np.asarray(pred).ravel()
    if target.shape != pred.shape:
        raise ValueError(f"target and prediction differ in size ({target.size} vs {pred.size})")
    keep = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = num_classes * target[keep].astype(np.int64) + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(hist: np.ndarray) -> dict:
    """mean IoU, per-class IoU (None where a class is in neither ground truth nor prediction), pixel acc."""
    iou = class_iou(hist)
    return {**miou_scores(hist), "iou": [None if np.isnan(v) else float(100.0 * v) for v in iou]}

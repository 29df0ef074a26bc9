"""Per-image outcomes: what a task's metrics are computed from, kept beside its result so that every
metric gets a 95% bootstrap interval over the test images and two results on the same test images
can be compared pairwise.

A metric's outcomes are one of four kinds, each a statistic of *weighted* test images. A bootstrap
resample draws n of the n images with replacement; image i drawn c_i times is exactly image i
repeated c_i times, so the statistic of a resample is the statistic at weights c. At weights 1 every
kind reproduces the task's own metric, which :func:`check_reproduces` verifies before a result is
written.

- ``mean``: one value per image (percent), e.g. top-1 hits x 100 or a query's AP; the metric is
  their mean.
- ``ap``: scores (images x classes) and labels (1 positive, -1 negative, 0 left out), optionally a
  leading axis of draws; the metric is the mean over classes (and draws) of AP under ``rule``:
  ``sklearn`` (non-interpolated, ties one threshold), ``interpolated`` (area under the precision
  envelope) or ``11point`` (VOC2007).
- ``miou``: a confusion matrix per image (rows ground truth); the metric is ``score`` (``miou`` or
  ``pixel_acc``) of their sum.
- ``detection``: per detection its image, class, score and match (1 true, 0 false, -1 left out,
  as the devkit leaves a match to a difficult box), and positives per image and class; the metric
  is the mean over classes with a positive of the VOC2007 11-point AP.

The file is npz (``np.load(allow_pickle=False)``: it is data from whoever wrote the result), arrays
named ``<metric>__<field>`` plus ``__meta__`` (JSON as bytes: task, checkpoint sha256, the number of
images and the sha256 of their ordered ids), so a file that belongs to another result, another
checkpoint or another test set is recognised as such.

Intervals are percentile intervals of 1,000 resamples drawn from ``numpy.random.default_rng(seed)``,
the i-th resample's image indices being ``rng.integers(0, n, n)``: the same seed gives the same
resamples for every result on the same n images, which makes the comparison of two results paired.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dcbench.atomic import write_file_atomic
from dcbench.errors import ResultError
from dcbench.text import printable

KINDS = ("mean", "ap", "miou", "detection")
AP_RULES = ("sklearn", "interpolated", "11point")
RESAMPLES = 1000  # a common choice for percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13)
LEVEL = 95
SEED = 0  # one fixed seed for every result: paired comparisons need the same resamples on both sides
MAX_IMAGES = 10_000_000  # bounds what a stranger's file may make us allocate per axis
MAX_BYTES = 1 << 30  # on disk; a full-scale lowshot-svm file, the largest, is about 160 MB
MAX_UNPACKED = 4 << 30  # the arrays once decompressed: a small file must not unpack into a huge one
_CHUNK = 64  # resamples whose weights are held at once (64 x n float64)
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,100}")


def images_digest(ids: Sequence[str]) -> str:
    """sha256 of the ordered test image ids: two results share a test set when these agree."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Weighted statistics (weights = how often each image is drawn; all ones = the plain metric)


def _ap_one(scores: np.ndarray, labels: np.ndarray, w: np.ndarray, rule: str, order: np.ndarray) -> float:
    """AP of one class at image weights ``w``; ``order``: the images by descending score (a stable
    sort, computed once: weights never change the order, and a stable order restricted to the
    images kept is the stable order of those images)."""
    keep = (labels[order] != 0) & (w[order] > 0)
    idx = order[keep]
    s, pos, w = scores[idx], labels[idx] > 0, w[idx]
    npos = float(np.dot(w, pos))
    if npos == 0:
        return float("nan")
    tp = np.cumsum(w * pos)
    seen = np.cumsum(w)
    if rule == "sklearn":
        last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # a run of tied scores is one threshold
        recall, precision = tp[last] / npos, tp[last] / seen[last]
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    recall, precision = tp / npos, tp / seen
    if rule == "interpolated":
        return interpolated_ap(recall, precision)
    return voc07_ap(recall, precision)


def interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope: sum over recall steps of (step) * max precision at recall >= r."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * p[steps]))


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP: mean over t in {0, .1, .., 1} of max precision at recall >= t."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    ap = 0.0
    for k in range(11):
        # k / 10 is the double nearest to the threshold, as a recall of e.g. 3 / 10 is: a recall of
        # exactly 0.3 counts at t = 0.3 (np.arange(0, 1.1, 0.1)[3] = 0.30000000000000004 would not).
        mask = recall >= k / 10
        ap += (precision[mask].max() if mask.any() else 0.0) / 11.0
    return float(ap)


def _mean_ap(arrays: dict, w: np.ndarray, rule: str, orders: dict) -> float:
    scores, labels = arrays["scores"], arrays["labels"]
    if scores.ndim == 2:
        scores, labels = scores[None], labels[None]
    maps = []
    for d, (s, y) in enumerate(zip(scores, labels)):
        aps = []
        for c in range(s.shape[1]):
            if (d, c) not in orders:
                orders[d, c] = np.argsort(-s[:, c], kind="mergesort")
            aps.append(_ap_one(s[:, c], y[:, c], w, rule, orders[d, c]))
        aps = np.array(aps)
        maps.append(np.nanmean(aps) if np.isfinite(aps).any() else 0.0)
    return 100.0 * float(np.mean(maps))


def class_iou(hist: np.ndarray) -> np.ndarray:
    """IoU per class (fraction) of a confusion matrix (rows ground truth); NaN where a class is in
    neither ground truth nor prediction."""
    hist = np.asarray(hist, dtype=np.float64)
    tp = np.diag(hist)
    denom = hist.sum(0) + hist.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


def miou_scores(hist: np.ndarray) -> dict:
    """mean IoU and pixel accuracy (percent) of a confusion matrix."""
    hist = np.asarray(hist, dtype=np.float64)
    iou = class_iou(hist)
    total = hist.sum()
    return {"miou": float(100.0 * np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
            "pixel_acc": float(100.0 * np.diag(hist).sum() / total) if total else 0.0}


def _detection_map(arrays: dict, w: np.ndarray, orders: dict) -> float:
    image, cls, score, match = arrays["image"], arrays["cls"], arrays["score"], arrays["match"]
    npos_all = w @ arrays["npos"].astype(np.float64)
    aps = []
    for c in range(arrays["npos"].shape[1]):
        npos = npos_all[c]
        if npos == 0:
            continue
        if c not in orders:
            sel = np.flatnonzero(cls == c)
            orders[c] = sel[np.argsort(-score[sel].astype(np.float64), kind="stable")]
        order = orders[c]
        if order.size == 0:
            aps.append(0.0)
            continue
        wd = w[image[order]]
        m = match[order]
        ctp, cfp = np.cumsum(wd * (m == 1)), np.cumsum(wd * (m == 0))
        recall = ctp / npos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        aps.append(voc07_ap(recall, precision))
    return 100.0 * float(np.mean(aps)) if aps else 0.0


@dataclass
class Metric:
    """One metric's outcomes: its kind, its arrays and (for ``ap`` / ``miou``) the rule."""

    kind: str
    arrays: dict[str, np.ndarray]
    rule: str | None = None
    _orders: dict = field(default_factory=dict, repr=False, compare=False)  # per-class score orders

    @property
    def images(self) -> int:
        a = self.arrays
        if self.kind == "mean":
            return len(a["values"])
        if self.kind == "ap":
            return a["scores"].shape[-2]
        if self.kind == "miou":
            return len(a["confusion"])
        return len(a["npos"])

    def statistic(self, w: np.ndarray) -> float:
        """The metric at image weights ``w`` (float64, one per image)."""
        a = self.arrays
        if self.kind == "mean":
            return float(np.dot(w, a["values"]) / w.sum())
        if self.kind == "ap":
            return _mean_ap(a, w, self.rule, self._orders)
        if self.kind == "miou":
            k = a["confusion"].shape[1]
            hist = (w @ a["confusion"].reshape(len(w), -1).astype(np.float64)).reshape(k, k)
            return miou_scores(hist)[self.rule]
        return _detection_map(a, w, self._orders)

    def statistics(self, weights: np.ndarray) -> np.ndarray:
        """One statistic per row of ``weights`` (resamples x images); ``mean`` and ``miou`` as one
        matrix product per chunk of rows."""
        if self.kind == "mean":
            return weights @ self.arrays["values"].astype(np.float64) / weights.sum(1)
        if self.kind == "miou":
            conf = self.arrays["confusion"].reshape(weights.shape[1], -1).astype(np.float64)
            k = self.arrays["confusion"].shape[1]
            return np.array([miou_scores(h.reshape(k, k))[self.rule] for h in weights @ conf])
        return np.array([self.statistic(w) for w in weights])


def resample_weights(n: int, resamples: int = RESAMPLES, seed: int = SEED):
    """Yield chunks of bootstrap weights (rows = resamples, columns = images), each row the counts of
    ``rng.integers(0, n, n)`` for the next resample of one ``default_rng(seed)`` stream."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        rows = min(_CHUNK, resamples - done)
        w = np.empty((rows, n))
        for r in range(rows):
            w[r] = np.bincount(rng.integers(0, n, n), minlength=n)
        done += rows
        yield w


def bootstrap(metric: Metric, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The metric on each of ``resamples`` bootstrap resamples of the test images."""
    return np.concatenate([metric.statistics(w) for w in resample_weights(metric.images, resamples, seed)])


def percentile_interval(stats: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.percentile(stats, [(100 - level) / 2, 100 - (100 - level) / 2])
    return float(lo), float(hi)


def paired_difference(a: Metric, b: Metric, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """``a - b`` on the same test images: the difference at weights 1 and its percentile interval over
    resamples that draw the same images for both. ``significant`` when the interval excludes 0."""
    if a.images != b.images:
        raise ValueError("paired comparison of outcomes over different numbers of images")
    diffs = np.concatenate([a.statistics(w) - b.statistics(w)
                            for w in resample_weights(a.images, resamples, seed)])
    ones = np.ones(a.images)
    lo, hi = percentile_interval(diffs)
    return {"difference": a.statistic(ones) - b.statistic(ones), "low": lo, "high": hi,
            "significant": bool(lo > 0 or hi < 0)}


# --------------------------------------------------------------------------------------------
# Building them in a task


@dataclass
class Outcomes:
    """What a task collects while scoring the test set: the ordered test image ids and, per metric,
    its outcomes. Handed to :func:`dcbench.results.make_result`, which checks them and computes the
    intervals; :func:`dcbench.results.write_result` writes them beside the result."""

    ids: Sequence[str]
    metrics: dict[str, Metric] = field(default_factory=dict)

    def __post_init__(self):
        self.ids = [str(i) for i in self.ids]

    def _add(self, name: str, metric: Metric) -> None:
        if not _NAME.fullmatch(name) or "__" in name:
            raise ValueError(f"outcome metric name {name!r}")
        if metric.images != len(self.ids):
            raise ValueError(f"{name}: outcomes of {metric.images} images for a test set of {len(self.ids)}")
        self.metrics[name] = metric

    def mean(self, name: str, values) -> None:
        """Per-image values in percent (top-1: hit x 100); the metric is their mean."""
        self._add(name, Metric("mean", {"values": np.asarray(values, np.float64).ravel()}))

    def hits(self, name: str, hit) -> None:
        """Per-image top-k hits (bool)."""
        self.mean(name, 100.0 * np.asarray(hit, bool))

    def ap(self, name: str, scores, labels, rule: str) -> None:
        if rule not in AP_RULES:
            raise ValueError(rule)
        scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.int8)
        if scores.shape != labels.shape or scores.ndim not in (2, 3):
            raise ValueError(f"{name}: scores {scores.shape} and labels {labels.shape}")
        self._add(name, Metric("ap", {"scores": scores, "labels": labels}, rule))

    def miou(self, name: str, confusions, score: str = "miou") -> None:
        conf = np.asarray(confusions)
        if conf.ndim != 3 or conf.shape[1] != conf.shape[2]:
            raise ValueError(f"{name}: per-image confusions must be (images, K, K), not {conf.shape}")
        self._add(name, Metric("miou", {"confusion": conf.astype(np.int64)}, score))

    def detection(self, name: str, *, image, cls, score, match, npos) -> None:
        arrays = {"image": np.asarray(image, np.int64), "cls": np.asarray(cls, np.int64),
                  "score": np.asarray(score, np.float64), "match": np.asarray(match, np.int8),
                  "npos": np.asarray(npos, np.int64)}
        self._add(name, Metric("detection", arrays))

    @property
    def digest(self) -> str:
        return images_digest(self.ids)


def check_reproduces(outcomes: Outcomes, metrics: dict[str, float], source: str) -> None:
    """Every outcome must belong to a metric and give its value at weights 1 (a programming error
    of the task otherwise: its intervals would describe another number)."""
    ones = np.ones(len(outcomes.ids))
    for name, m in outcomes.metrics.items():
        if name not in metrics:
            raise ValueError(f"{source}: outcomes for {name!r}, which is not a metric of the result")
        got = m.statistic(ones)
        if not abs(got - metrics[name]) <= 1e-6 * max(1.0, abs(metrics[name])):
            raise ValueError(f"{source}: outcomes of {name} give {got!r}, the metric is {metrics[name]!r}")


def intervals_of(outcomes: Outcomes, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """The result's ``intervals`` block."""
    return {"method": "percentile bootstrap over test images", "level": LEVEL, "resamples": resamples,
            "seed": seed, "images": len(outcomes.ids),
            "metrics": {name: list(percentile_interval(bootstrap(m, resamples, seed)))
                        for name, m in outcomes.metrics.items()}}


# --------------------------------------------------------------------------------------------
# The file


def outcomes_path(result_path: Path) -> Path:
    """``x.json`` -> ``x.outcomes.npz``, in the same folder."""
    return result_path.with_name(result_path.name.removesuffix(".json") + ".outcomes.npz")


def write_outcomes(path: Path, outcomes: Outcomes, *, task: str, checkpoint_sha256: str) -> str:
    """Write the npz atomically; returns its sha256."""
    meta = {"task": task, "checkpoint_sha256": checkpoint_sha256, "images": len(outcomes.ids),
            "images_sha256": outcomes.digest,
            "metrics": {n: {"kind": m.kind, "rule": m.rule} for n, m in outcomes.metrics.items()}}
    arrays = {"__meta__": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)}
    for name, m in outcomes.metrics.items():
        for f, a in m.arrays.items():
            arrays[f"{name}__{f}"] = a
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    write_file_atomic(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


_FIELDS = {"mean": {"values": "f"}, "ap": {"scores": "f", "labels": "i"}, "miou": {"confusion": "i"},
           "detection": {"image": "i", "cls": "i", "score": "f", "match": "i", "npos": "i"}}


def read_outcomes(result: dict, result_path: Path) -> dict[str, Metric]:
    """The outcomes beside ``result`` (read from ``result_path``), checked against it: the file the
    result names (a plain name in the same folder), its sha256, its task, checkpoint, image count
    and image-id digest, every array's shape, and each metric reproduced at weights 1. Anything
    amiss raises :class:`ResultError` (one line): the caller leaves the interval out and says so."""
    block = result.get("outcomes")
    if not isinstance(block, dict):
        raise ResultError(f"{result_path}: no per-image outcomes recorded")
    name = block.get("file")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ResultError(f"{result_path}: outcomes file name is not a plain file name")
    path = result_path.parent / name
    where = printable(str(path), 200)
    try:
        if path.is_symlink() or not path.is_file():
            raise ResultError(f"{where}: per-image outcomes missing (interval left out)")
        if path.stat().st_size > MAX_BYTES:
            raise ResultError(f"{where}: larger than {MAX_BYTES >> 20} MB, not read")
        data = path.read_bytes()
    except OSError as e:
        raise ResultError(f"{where}: cannot read ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != block.get("sha256"):
        raise ResultError(f"{where}: sha256 differs from the one its result records (another run's file?)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            if sum(i.file_size for i in zf.infolist()) > MAX_UNPACKED:
                raise ResultError(f"{where}: unpacks to more than {MAX_UNPACKED >> 20} MB, not read")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = set(z.files)
            meta = json.loads(bytes(z["__meta__"]).decode())
            metrics = _metrics_from(z, names, meta, result, where)
    except ResultError:
        raise
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, json.JSONDecodeError,
            UnicodeDecodeError) as e:
        raise ResultError(printable(f"{where}: not a dcbench outcomes file ({e})", 300)) from None
    ones = None
    for mname, m in metrics.items():
        ones = np.ones(m.images) if ones is None or len(ones) != m.images else ones
        value = result["metrics"].get(mname)
        got = m.statistic(ones)
        if value is None or not abs(got - value) <= 1e-6 * max(1.0, abs(value)):
            raise ResultError(f"{where}: outcomes of {printable(mname, 60)} do not reproduce the result's value")
    return metrics


def _metrics_from(z, names: set, meta: dict, result: dict, where: str) -> dict[str, Metric]:
    if meta.get("task") != result["task"] or meta.get("checkpoint_sha256") != result["checkpoint"]["sha256"]:
        raise ResultError(f"{where}: outcomes of another task or checkpoint than its result's")
    n = meta.get("images")
    if not isinstance(n, int) or not 0 < n <= MAX_IMAGES or n != result["outcomes"].get("images"):
        raise ResultError(f"{where}: image count differs from its result's")
    if meta.get("images_sha256") != result["outcomes"].get("images_sha256"):
        raise ResultError(f"{where}: test image ids differ from its result's")
    declared = meta.get("metrics")
    if not isinstance(declared, dict) or declared.keys() != result["outcomes"].get("metrics", {}).keys():
        raise ResultError(f"{where}: metrics differ from its result's")
    out = {}
    for mname, spec in declared.items():
        kind, rule = spec.get("kind"), spec.get("rule")
        if kind not in KINDS or not isinstance(mname, str) or not _NAME.fullmatch(mname):
            raise ResultError(f"{where}: unknown outcome kind")
        arrays = {}
        for f, dtype in _FIELDS[kind].items():
            key = f"{mname}__{f}"
            if key not in names:
                raise ResultError(f"{where}: {printable(key, 80)} missing")
            a = z[key]
            if a.dtype.kind not in ("f" if dtype == "f" else "iub") or a.size > 64 * MAX_IMAGES:
                raise ResultError(f"{where}: {printable(key, 80)} has the wrong type or size")
            arrays[f] = a
        m = Metric(kind, arrays, rule)
        _check_shapes(m, n, where, mname)
        out[mname] = m
    return out


def _check_shapes(m: Metric, n: int, where: str, name: str) -> None:
    a = m.arrays
    ok = {"mean": lambda: a["values"].shape == (n,),
          "ap": lambda: (a["scores"].shape == a["labels"].shape and a["scores"].ndim in (2, 3)
                         and a["scores"].shape[-2] == n and m.rule in AP_RULES),
          "miou": lambda: (a["confusion"].ndim == 3 and a["confusion"].shape[0] == n
                           and a["confusion"].shape[1] == a["confusion"].shape[2] and m.rule in ("miou", "pixel_acc")),
          "detection": lambda: (a["npos"].ndim == 2 and a["npos"].shape[0] == n
                                and len({a[k].shape for k in ("image", "cls", "score", "match")}) == 1
                                and a["image"].ndim == 1
                                and (a["image"].size == 0 or (0 <= a["image"].min() and a["image"].max() < n
                                                              and 0 <= a["cls"].min()
                                                              and a["cls"].max() < a["npos"].shape[1])))}[m.kind]
    if not ok():
        raise ResultError(f"{where}: {printable(name, 60)}: arrays do not match {n} test images")


def same_test_set(a: dict, b: dict) -> bool:
    """Whether two results' outcomes cover the same test images in the same order."""
    oa, ob = a.get("outcomes") or {}, b.get("outcomes") or {}
    return bool(oa.get("images_sha256")) and oa.get("images_sha256") == ob.get("images_sha256")


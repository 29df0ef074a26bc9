"""The linear-SVM protocols of Goyal et al. 2019 on feature arrays: voc07-svm's cross-validated SVMs
and lowshot-svm's draws (the tasks, :mod:`dcbench.transfer.voc07_svm` and
:mod:`dcbench.transfer.lowshot_svm`, extract the features and write the results; tests call these on
small arrays).

No torch here: the joblib worker processes import this module to run each job, and importing torch
in each of them would cost seconds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.svm import LinearSVC

from dcbench.errors import UserError
from dcbench.outcomes import interpolated_ap, voc07_ap

# train_svm_kfold.py / GETTING_STARTED.md --costs_list, plus the 0.5**4 .. 0.5**19 that
# svm_helper.parse_cost_list always appends (VISSL: costs.base 0.5, power_range [4, 20])
PUBLISHED_COSTS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0,
                   *(0.5 ** p for p in range(4, 20)))

SVM_PARAMS = {  # train_svm_kfold.py / VISSL svm_trainer.py LinearSVC(...)
    "class_weight": {1: 2, -1: 1}, "intercept_scaling": 1.0, "penalty": "l2", "loss": "squared_hinge",
    "tol": 1e-4, "dual": True, "max_iter": 2000,
}
AP_RULES = ("interpolated", "11point")
DIFFICULT_RULES = ("negative", "ignore")
_EPS = 1e-5  # svm_helper.normalize_features: x / (||x|| + 1e-5)


def make_svm(cost: float, seed: int) -> LinearSVC:
    # liblinear's dual coordinate descent visits samples in a random order: seeded, so reruns agree
    return LinearSVC(C=float(cost), random_state=seed, **SVM_PARAMS)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, float64 (what liblinear trains on anyway: one conversion, shared by all jobs)."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.linalg.norm(x, axis=1) + _EPS)[:, None]


def check_tap(name: str, *arrays: np.ndarray, where: str) -> None:
    """A tap whose features are all zero (a dead layer) or not finite has nothing an SVM can learn from."""
    for x in arrays:
        if not np.isfinite(x).all():
            raise UserError(f"{where}: tap {name} gives non-finite features; the checkpoint's weights are broken "
                            f"there: leave the tap out with --layers, or use another checkpoint")
        if not np.any(x):
            raise UserError(f"{where}: tap {name} gives all-zero features (a dead layer: every output is 0 after "
                            f"its ReLU); leave it out with --layers (e.g. the other taps of {name}'s network), "
                            "or use a trained checkpoint")


def train_targets(labels: np.ndarray, difficult: str) -> tuple[np.ndarray, np.ndarray]:
    """One class's trainval column (1 / -1 / 0 difficult) -> (rows used, targets in {1, -1})."""
    if difficult not in DIFFICULT_RULES:
        raise ValueError(difficult)
    keep = labels != 0 if difficult == "ignore" else np.ones(len(labels), bool)
    return keep, np.where(labels[keep] > 0, 1, -1)


def cv_ap(x: np.ndarray, labels: np.ndarray, cost: float, *, folds: int, seed: int, difficult: str) -> float:
    """Mean ``folds``-fold cross-validation AP of one class at one cost, on trainval only.

    The folds are sklearn's ``cross_val_score(cv=folds)`` folds of the rows used (stratified, not
    shuffled); they are handed over as indices into ``x``, so the features are never copied here."""
    keep, y = train_targets(labels, difficult)
    rows = np.flatnonzero(keep)
    split = [(rows[a], rows[b]) for a, b in StratifiedKFold(folds).split(np.zeros(len(y)), y)]
    y_full = np.full(len(labels), -1)
    y_full[rows] = y
    scores = cross_val_score(make_svm(cost, seed), x, y_full, cv=split, scoring="average_precision")
    return float(scores.mean())


def fit_class(x: np.ndarray, labels: np.ndarray, cost: float, *, seed: int, difficult: str) -> LinearSVC:
    keep, y = train_targets(labels, difficult)
    return make_svm(cost, seed).fit(x if keep.all() else x[keep], y)


def ranked_pr(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each image, highest score first (a stable sort: ties keep file order)."""
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    tp = np.cumsum(np.asarray(positive, bool)[order])
    return tp / max(int(tp[-1]), 1), tp / np.arange(1, len(order) + 1)


def test_ap(scores: np.ndarray, labels: np.ndarray, rule: str) -> float:
    """AP of one class on test, difficult-only images left out; NaN without a positive."""
    keep = labels != 0
    positive = labels[keep] > 0
    if not positive.any():
        return float("nan")
    recall, precision = ranked_pr(scores[keep], positive)
    if rule == "interpolated":
        return interpolated_ap(recall, precision)
    if rule == "11point":
        return voc07_ap(recall, precision)
    raise ValueError(rule)


def workers(n_jobs: int) -> Parallel:
    """Worker processes, not threads: liblinear shuffles with one process-wide random generator, so
    two fits running in threads of one process would draw from it in turn and a seed would no longer
    fix the result. The features reach the workers as one read-only memory map (joblib's automatic
    memmapping of arrays over 1 MB), not as a copy per job."""
    return Parallel(n_jobs=n_jobs, max_nbytes="1M", mmap_mode="r")


def mean_ap(aps: Sequence[float]) -> float:
    """Mean over the classes with a defined AP; NaN when none has one."""
    aps = np.asarray(aps, float)
    defined = aps[~np.isnan(aps)]
    return float(np.mean(defined)) if defined.size else float("nan")


def voc07_svm(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              costs: Sequence[float], folds: int, seed: int, n_jobs: int, difficult: str = "negative",
              ap_rule: str = "interpolated", names: Sequence[str] = ()) -> dict:
    """The whole protocol for one tap: ``x_*`` already normalised (N, D), ``y_*`` (N, classes) in 1/-1/0.
    The cost is chosen from trainval alone; ``y_test`` is read only to score the refitted SVMs, whose
    test decision values (N_test, classes) are returned as ``scores`` (the per-image outcomes).

    Jobs: one per (class, cost) for the cross-validation, then one per class for the final fit, in
    :func:`workers`."""
    classes = range(y_train.shape[1])
    for c in classes:
        pos = int((y_train[:, c] > 0).sum())
        if pos < folds:
            raise UserError(f"class {_name(names, c)}: {pos} positive trainval images, fewer than --folds "
                            f"{folds}; lower --folds")
    par = workers(n_jobs)
    cv = par(delayed(cv_ap)(x_train, y_train[:, c], k, folds=folds, seed=seed, difficult=difficult)
             for c in classes for k in costs)
    cv = np.asarray(cv).reshape(len(classes), len(costs))
    chosen = [float(costs[i]) for i in np.argmax(cv, axis=1)]
    models = par(delayed(fit_class)(x_train, y_train[:, c], chosen[c], seed=seed, difficult=difficult)
                 for c in classes)
    scores = np.stack([m.decision_function(x_test) for m in models], axis=1)
    aps = [test_ap(scores[:, c], y_test[:, c], ap_rule) for c in classes]
    return {"map": mean_ap(aps), "aps": aps, "chosen": chosen, "cv": cv, "scores": scores}



def _name(names: Sequence[str], c: int) -> str:
    return str(names[c]) if c < len(names) else str(c)


def draw(labels: np.ndarray, k: int, seed: int, index: int,
         names: Sequence[str] = ()) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class: (k positive rows, (classes - 1) * k negative rows), sorted, drawn from ``labels``
    (N, classes) in 1 / -1 / 0 with ``default_rng([seed, k, index])``; difficult-only rows never drawn."""
    rng = np.random.default_rng([seed, k, index])
    n_neg = (labels.shape[1] - 1) * k
    out = []
    for c in range(labels.shape[1]):
        pos, neg = np.flatnonzero(labels[:, c] == 1), np.flatnonzero(labels[:, c] == -1)
        if len(pos) < k or len(neg) < n_neg:
            raise UserError(f"--shots {k}: class {_name(names, c)} has {len(pos)} positive and {len(neg)} negative trainval "
                            f"images, fewer than the {k} and {n_neg} a draw needs; lower --shots")
        out.append((np.sort(rng.choice(pos, k, replace=False)), np.sort(rng.choice(neg, n_neg, replace=False))))
    return out


def validation_rows(labels_c: np.ndarray, rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One class's held-out rows in one draw: every trainval row not drawn for that class (its SVM never
    sees them), difficult-only rows left out as on test. Not subsampled: at k = 96 a draw uses 1,920 of
    VOC07's 5,011 trainval images per class, and every image is drawn for some class, so no split
    disjoint from all the draws exists; per class, the rest of trainval is the largest honest one."""
    used = np.zeros(len(labels_c), bool)
    used[np.concatenate(rows)] = True
    return np.flatnonzero(~used & (labels_c != 0))


def _fit_drawn(x_train, rows, cost, seed) -> LinearSVC:
    pos, neg = rows
    idx = np.concatenate([pos, neg])
    return make_svm(cost, seed).fit(x_train[idx], np.r_[np.ones(len(pos), int), -np.ones(len(neg), int)])


def _class_aps(x_eval, y_eval_c, x_train, rows, costs, seed, ap_rule, eval_rows=None) -> list[float]:
    """AP of one class at every cost, trained on its drawn rows: on ``x_eval`` (test), or on the rows
    ``eval_rows`` of ``x_train`` (held-out; ``y_eval_c`` then labels those rows)."""
    aps = []
    for c in costs:
        m = _fit_drawn(x_train, rows, c, seed)
        # decision values of all of x_train then indexed: the memory-mapped features are never copied
        s = m.decision_function(x_eval)[eval_rows] if eval_rows is not None else m.decision_function(x_eval)
        aps.append(test_ap(s, y_eval_c, ap_rule))
    return aps


def _test_scores(x_train, x_test, rows, cost, seed) -> np.ndarray:
    return _fit_drawn(x_train, rows, cost, seed).decision_function(x_test)


LOWSHOT_SELECTIONS = ("held-out", "published")


def lowshot_svm(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
                shots: Sequence[int], draws: int, costs: Sequence[float], seed: int, n_jobs: int,
                ap_rule: str = "interpolated", selection: str = "held-out", names: Sequence[str] = ()) -> dict:
    """One tap: ``x_*`` normalised. Per k, the cost with the highest mAP averaged over the draws is
    chosen: on held-out trainval rows (``selection="held-out"``, :func:`validation_rows`, test never
    read for it) or on test (``"published"``, the published scripts' rule). Then every (draw, class)
    SVM is refitted at that cost (seeded: the same SVM as in the sweep) and scored on test once.

    Returns per k: ``maps`` (draws, costs), the mAPs the choice was made on; the chosen ``cost``;
    ``test_maps`` (draws,) at it and their ``mean`` / ``min`` / ``max`` / ``std`` (ddof 0); ``scores``
    (draws, N_test, classes), the test decision values; ``validation`` (held-out: the smallest and
    largest count of held-out images and positives over draws and classes). And the draws (row indices)."""
    if selection not in LOWSHOT_SELECTIONS:
        raise ValueError(selection)
    drawn = {k: [draw(y_train, k, seed, d, names) for d in range(draws)] for k in shots}
    classes = range(y_train.shape[1])
    jobs = [(k, d, c) for k in shots for d in range(draws) for c in classes]
    par = workers(n_jobs)
    if selection == "held-out":
        val = {(k, d, c): validation_rows(y_train[:, c], drawn[k][d][c]) for k, d, c in jobs}
        aps = par(delayed(_class_aps)(x_train, y_train[val[k, d, c], c], x_train, drawn[k][d][c], costs, seed,
                                      ap_rule, val[k, d, c]) for k, d, c in jobs)
    else:
        aps = par(delayed(_class_aps)(x_test, y_test[:, c], x_train, drawn[k][d][c], costs, seed, ap_rule)
                  for k, d, c in jobs)
    by = dict(zip(jobs, aps))
    out = {}
    for k in shots:
        maps = np.array([[mean_ap([by[k, d, c][i] for c in classes]) for i in range(len(costs))]
                         for d in range(draws)])
        if np.isnan(maps).all():
            raise UserError(f"--shots {k}: no class has a positive image left outside its draws to choose the "
                            "cost on; lower --shots, or pass --selection published (chosen on test)")
        # a draw whose held-out rows have no positive of any class is left out of the choice
        best = int(np.nanargmax(np.nanmean(maps, axis=0)))
        out[k] = {"maps": maps, "cost": float(costs[best])}
        if selection == "held-out":
            sizes = [(len(val[k, d, c]), int((y_train[val[k, d, c], c] > 0).sum()))
                     for d in range(draws) for c in classes]
            out[k]["validation"] = {"images": [min(n for n, _ in sizes), max(n for n, _ in sizes)],
                                    "positives": [min(p for _, p in sizes), max(p for _, p in sizes)]}
    scored = par(delayed(_test_scores)(x_train, x_test, drawn[k][d][c], out[k]["cost"], seed) for k, d, c in jobs)
    by = dict(zip(jobs, scored))
    for k in shots:
        scores = np.stack([np.stack([by[k, d, c] for c in classes], axis=1) for d in range(draws)])
        at = np.array([mean_ap([test_ap(scores[d, :, c], y_test[:, c], ap_rule) for c in classes])
                       for d in range(draws)])
        out[k].update(scores=scores, test_maps=at, mean=float(at.mean()), min=float(at.min()),
                      max=float(at.max()), std=float(at.std()))
    return {"per_k": out, "drawn": drawn}

"""Time and peak memory of voc07-svm's / lowshot-svm's SVM step (sklearn LinearSVC, liblinear), and the
full-scale cost extrapolated from it.

    OPENBLAS_CORETYPE=Haswell nice .venv/bin/python benchmarks/svm_cost.py

Synthetic features shaped like ReLU outputs (non-negative, about half zeros, a weak class signal,
8% positives), L2-normalised as the tasks do. Each case runs in a fresh process, so its peak RSS
(``ru_maxrss``) is that case's; ``rss_before_mb`` is the same process after the imports, before any data.

Cases:
- ``voc07_alexnet_conv5``: the real full-scale size, VOC07 trainval 5,011 x 9,216 (AlexNet conv5 at
  224 px pooled 2x2; the other AlexNet taps are 9,216-9,600 dims) and test 4,952: one (class, cost)
  cross-validation job (3 fits on 2/3 of trainval) at three costs, one refit on all of trainval, and
  the test scores;
- ``synthetic_100k_2048``: 100,000 x 2,048 (a pooled res5's dimensionality): one fit, one cost;
- ``lowshot_k96`` / ``lowshot_k16``: one low-shot job (1,920 / 320 drawn images x 9,216) at three costs.

The extrapolation multiplies these by the jobs one tap needs (20 classes x 26 costs x one CV job,
plus 20 refits; low-shot: 5 draws x 20 classes x 26 costs fits, sizes 20k for each k, fit time taken
linear in the rows between the two measured k) and by the taps (5), in one thread; ``--n-jobs N``
divides it by at most N. Writes benchmarks/out/svm_cost.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

COSTS_MEASURED = (1e-4, 0.1, 10.0)  # low, middle and high end of the published 26 (fit time grows with C)
N_COSTS, N_CLASSES, N_TAPS, DRAWS = 26, 20, 5, 5
SHOTS = (1, 2, 4, 8, 16, 32, 64, 96)


def _features(n: int, d: int, seed: int):
    import numpy as np

    from dcbench.transfer.linear_svm import normalise

    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.08, 1, -1)
    w = rng.normal(size=d).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, 4096):  # in blocks: no float64 temporary of the whole matrix
        blk = rng.standard_normal((min(4096, n - s), d), dtype=np.float32)
        blk += 0.3 * (y[s:s + 4096, None] > 0) * w
        x[s:s + 4096] = np.maximum(blk, 0)
    return normalise(x), y


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _case(name: str, queue) -> None:
    import numpy as np

    from dcbench.transfer.linear_svm import cv_ap, fit_class, make_svm

    out = {"case": name, "rss_before_mb": round(_rss_mb(), 1)}
    t = {}
    if name == "voc07_alexnet_conv5":
        x, y = _features(5011, 9216, 0)
        xt, _ = _features(4952, 9216, 1)
        labels = y.astype(np.int8)
        for c in COSTS_MEASURED:
            t0 = time.perf_counter()
            cv_ap(x, labels, c, folds=3, seed=0, difficult="negative")
            t[f"cv_job_C{c:g}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = fit_class(x, labels, 0.1, seed=0, difficult="negative")
        t["refit_C0.1_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m.decision_function(xt)
        t["test_scores_s"] = time.perf_counter() - t0
        out["shape"] = [5011, 9216]
    elif name == "synthetic_100k_2048":
        x, y = _features(100_000, 2048, 2)
        t0 = time.perf_counter()
        make_svm(0.1, 0).fit(x, y)
        t["fit_C0.1_s"] = time.perf_counter() - t0
        out["shape"] = [100_000, 2048]
    else:
        k = int(name.rsplit("k", 1)[1])
        n = 20 * k
        x, _ = _features(n, 9216, 3)
        y = np.r_[np.ones(k, int), -np.ones(n - k, int)]
        for c in COSTS_MEASURED:
            t0 = time.perf_counter()
            make_svm(c, 0).fit(x, y)
            t[f"fit_C{c:g}_s"] = time.perf_counter() - t0
        out["shape"] = [n, 9216]
    out["seconds"] = {k: round(v, 3) for k, v in t.items()}
    out["peak_rss_mb"] = round(_rss_mb(), 1)
    queue.put(out)


def run_case(name: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(name, q))
    t0 = time.perf_counter()
    p.start()
    out = q.get()
    p.join()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out), flush=True)
    return out


def extrapolate(cases: dict) -> dict:
    v = cases["voc07_alexnet_conv5"]["seconds"]
    cv = sum(v[f"cv_job_C{c:g}_s"] for c in COSTS_MEASURED) / len(COSTS_MEASURED)
    per_tap = N_CLASSES * N_COSTS * cv + N_CLASSES * (v["refit_C0.1_s"] + v["test_scores_s"])
    fit = {k: sum(cases[f"lowshot_k{k}"]["seconds"][f"fit_C{c:g}_s"] for c in COSTS_MEASURED) / len(COSTS_MEASURED)
           for k in (16, 96)}
    slope = (fit[96] - fit[16]) / (20 * 96 - 20 * 16)

    def t_fit(k):  # linear in the rows, never below the k = 16 measurement's intercept
        return max(fit[16] + slope * 20 * (k - 16), 0.0)

    # + scoring 4,952 test images per fit, measured in the voc07 case
    lowshot_tap = sum(DRAWS * N_CLASSES * N_COSTS * (t_fit(k) + v["test_scores_s"]) for k in SHOTS)
    return {
        "voc07_svm_one_tap_cpu_hours": round(per_tap / 3600, 2),
        "voc07_svm_alexnet_5_taps_cpu_hours": round(N_TAPS * per_tap / 3600, 2),
        "lowshot_svm_one_tap_cpu_hours": round(lowshot_tap / 3600, 2),
        "lowshot_svm_alexnet_5_taps_cpu_hours": round(N_TAPS * lowshot_tap / 3600, 2),
        "assumes": "one thread per job, jobs independent (--n-jobs N divides by at most N); CV job time "
                   "averaged over C in " + ",".join(f"{c:g}" for c in COSTS_MEASURED),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/out/svm_cost.json")
    args = ap.parse_args()
    names = ("voc07_alexnet_conv5", "lowshot_k96", "lowshot_k16", "synthetic_100k_2048")
    cases = {n: run_case(n) for n in names}
    est = extrapolate(cases)
    print(json.dumps(est, indent=1))
    out = {"cases": cases, "full_scale_estimate": est,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
           "command": "OPENBLAS_CORETYPE=Haswell nice .venv/bin/python benchmarks/svm_cost.py"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

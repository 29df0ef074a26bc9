"""Does the 95% percentile bootstrap interval of a VOC-style mAP hold the mAP itself? On a few
positives per class it need not: a resample that draws a positive twice ranks both copies side by
side, which raises AP, so the resampled mAPs sit above the value. This measures how far, at the
embedded smoke size (120 test images) and at VOC07's (4,952), for a chance-level and a useful ranking.

    OPENBLAS_CORETYPE=Haswell nice .venv/bin/python benchmarks/ap_interval_bias.py [--resamples 200]

Per case: 20 classes, 7% positives (about VOC07's mean rate), 1% difficult-only; scores normal with the
positives shifted by ``signal`` (0: chance; 1.5: a useful classifier); AP by the ``interpolated`` rule
(voc07-svm's default). Reported: the mAP, the median of its bootstrap mAPs, their difference, and
whether the percentile interval holds the mAP; over ``--repeats`` data sets. Writes
benchmarks/out/ap_interval_bias.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from dcbench.outcomes import Outcomes, bootstrap, percentile_interval


def _case(n: int, signal: float, seed: int, resamples: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random((n, 20)) < 0.07, 1, -1).astype(np.int8)
    labels[rng.random((n, 20)) < 0.01] = 0
    scores = rng.normal(size=(n, 20)) + signal * (labels > 0)
    o = Outcomes(ids=[str(i) for i in range(n)])
    o.ap("m", scores, labels, rule="interpolated")
    m = o.metrics["m"]
    value = m.statistic(np.ones(n))
    stats = bootstrap(m, resamples=resamples)
    lo, hi = percentile_interval(stats)
    return {"map": value, "bootstrap_median": float(np.median(stats)), "lo": lo, "hi": hi,
            "holds": bool(lo <= value <= hi)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "ap_interval_bias.json")
    args = ap.parse_args()
    out = {"resamples": args.resamples, "repeats": args.repeats, "load_1min": os.getloadavg()[0], "cases": {}}
    for n in (120, 4952):
        for signal in (0.0, 1.5):
            runs = [_case(n, signal, seed, args.resamples) for seed in range(args.repeats)]
            shift = [r["bootstrap_median"] - r["map"] for r in runs]
            name = f"n{n}_signal{signal}"
            out["cases"][name] = {"mean_map": round(float(np.mean([r["map"] for r in runs])), 2),
                                  "mean_median_minus_map": round(float(np.mean(shift)), 3),
                                  "mean_width": round(float(np.mean([r["hi"] - r["lo"] for r in runs])), 2),
                                  "intervals_holding_the_map": sum(r["holds"] for r in runs)}
            print(name, out["cases"][name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

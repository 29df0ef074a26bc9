"""What the 95% bootstrap intervals cost the VOC tasks at full scale: the time of
:func:`dcbench.outcomes.bootstrap` for one metric of each outcome kind these tasks record, on arrays of
VOC's real sizes, measured on a few resamples and extrapolated to the 1,000 a result uses.

    OPENBLAS_CORETYPE=Haswell nice .venv/bin/python benchmarks/voc_interval_cost.py [--resamples 8]

Cases (synthetic scores with a weak class signal; the statistic's cost depends on the sizes only):
- ``ap_voc07_test``: one ``ap`` metric on VOC07 test, 4,952 images x 20 classes (voc07-svm: one per
  tap; voc-classification: one);
- ``ap_lowshot_5_draws``: one ``ap`` metric with 5 draws (lowshot-svm: one per tap and k, so 40 for
  AlexNet's 5 taps x 8 k);
- ``detection_voc07``: one ``detection`` metric, 4,952 images, 20 classes, 100 detections per image
  (voc-detection's ``detections_per_image``, the most it keeps);
- ``miou_voc12_val``: one ``miou`` metric, 1,449 images x 21 x 21.
Writes benchmarks/out/voc_interval_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from dcbench.outcomes import RESAMPLES, Outcomes, bootstrap

N_TEST, N_CLASSES, N_SEG = 4952, 20, 1449


def _ap_case(rng, draws: int | None) -> Outcomes:
    shape = (N_TEST, N_CLASSES) if draws is None else (draws, N_TEST, N_CLASSES)
    labels = np.where(rng.random(shape[-2:]) < 0.07, 1, -1).astype(np.int8)
    labels[rng.random(shape[-2:]) < 0.01] = 0
    scores = rng.normal(size=shape) + (labels > 0)
    o = Outcomes(ids=[str(i) for i in range(N_TEST)])
    o.ap("m", scores, np.broadcast_to(labels, shape), rule="interpolated")
    return o


def _detection_case(rng, per_image: int) -> Outcomes:
    n = N_TEST * per_image
    o = Outcomes(ids=[str(i) for i in range(N_TEST)])
    o.detection("m", image=np.repeat(np.arange(N_TEST), per_image), cls=rng.integers(0, N_CLASSES, n),
                score=rng.random(n), match=rng.choice([1, 0, 0, 0, -1], n),
                npos=rng.integers(0, 2, (N_TEST, N_CLASSES)))
    return o


def _miou_case(rng) -> Outcomes:
    o = Outcomes(ids=[str(i) for i in range(N_SEG)])
    o.miou("m", rng.integers(0, 2000, (N_SEG, 21, 21)), score="miou")
    return o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=8, help="resamples timed per case (default: 8)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "voc_interval_cost.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cases = {"ap_voc07_test": lambda: _ap_case(rng, None), "ap_lowshot_5_draws": lambda: _ap_case(rng, 5),
             "detection_voc07": lambda: _detection_case(rng, 100), "miou_voc12_val": lambda: _miou_case(rng)}
    out = {"resamples_timed": args.resamples, "resamples_extrapolated": RESAMPLES, "cpu_count": os.cpu_count(),
           "load_1min": os.getloadavg()[0], "platform": platform.platform(), "cases": {}}
    for name, make in cases.items():
        metric = make().metrics["m"]
        t0 = time.perf_counter()
        bootstrap(metric, resamples=args.resamples)
        per = (time.perf_counter() - t0) / args.resamples
        out["cases"][name] = {"s_per_resample": round(per, 4), "s_per_interval": round(per * RESAMPLES, 1)}
        print(f"{name}: {per:.4f} s per resample, {per * RESAMPLES:.0f} s per interval of {RESAMPLES}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Cost of the 95% bootstrap intervals (1,000 resamples) at full-scale test-set sizes, per outcome kind.

    python benchmarks/bootstrap_cost.py [--resamples 1000]

Synthetic outcomes of the real sizes: ImageNet val top-1 hits (50,000), VOC2007 test classification
scores (4,952 x 20, AP), VOC2012 val segmentation confusions (1,449 x 21 x 21), VOC2007 test detections
(4,952 images, 20 classes, ~40 detections per image), and lowshot-svm's AP over 5 draws (one per tap and
k: AlexNet's 5 taps x 8 k make 40 of them). Prints a table and saves
benchmarks/out/bootstrap_cost.json (seconds per interval, load average): what writing a result and a
paired comparison in the leaderboard add.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from dcbench.outcomes import Metric, bootstrap, paired_difference


def cases(rng):
    n = 50_000
    yield "mean: ImageNet val top-1 (50,000)", Metric("mean", {"values": 100.0 * (rng.random(n) < 0.4)})
    n, c = 4952, 20
    labels = rng.choice([-1, 1, 0], size=(n, c), p=[0.9, 0.08, 0.02]).astype(np.int8)
    yield "ap: VOC07 test, 20 classes (4,952)", Metric("ap", {"scores": rng.normal(size=(n, c)), "labels": labels},
                                                       "sklearn")
    yield "ap, 5 draws: lowshot-svm, one tap and k", Metric(
        "ap", {"scores": rng.normal(size=(5, n, c)), "labels": np.stack([labels] * 5)}, "interpolated")
    n = 1449
    yield "miou: VOC12 val, 21 classes (1,449)", Metric("miou", {"confusion": rng.integers(0, 500, (n, 21, 21))},
                                                        "miou")
    n, d = 4952, 4952 * 40
    yield "detection: VOC07 test, ~198k detections", Metric("detection", {
        "image": rng.integers(0, n, d), "cls": rng.integers(0, 20, d), "score": rng.random(d),
        "match": rng.choice([1, 0, -1], size=d, p=[0.3, 0.68, 0.02]).astype(np.int8),
        "npos": rng.integers(0, 3, (n, 20))})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bootstrap_cost.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    load0 = os.getloadavg()
    for name, m in cases(rng):
        t = time.perf_counter()
        bootstrap(m, args.resamples)
        interval = time.perf_counter() - t
        t = time.perf_counter()
        paired_difference(m, m, args.resamples)
        paired = time.perf_counter() - t
        rows.append({"case": name, "interval_s": round(interval, 2), "paired_s": round(paired, 2)})
        print(f"{name:45s} interval {interval:7.2f} s   paired comparison {paired:7.2f} s", flush=True)
    out = {"resamples": args.resamples, "rows": rows, "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

"""How much does choosing the epoch on the test set flatter a linear probe?

    .venv/bin/python benchmarks/selection_rules.py --checkpoint RUN/checkpoint [--seeds 3] [--epochs 20]

Runs ``dc-transfer linear-imagenet`` at smoke scale on the embedded data (centre-crop features,
cached after the first run) under both selection rules, for seeds 0..S-1:

- ``held-out`` (the default): each layer's epoch chosen on a class-balanced fifth of the train
  split, trained on the rest, the test split scored once;
- ``thesis``: trained on the whole train split, test scored every epoch; ``last`` and ``best``
  (the thesis's ``_best``, chosen on the test set).

Prints per layer the mean over seeds of each, and ``best - last`` (how much the maximum over
epochs on test adds to the last epoch on the same run). Writes benchmarks/out/selection_rules.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from dcbench.atomic import write_text_atomic
from dcbench.errors import run_cli
from dcbench.results import read_result
from dcbench.transfer.cli import main

OUT = Path(__file__).parent / "out" / "selection_rules.json"


def one(checkpoint: Path, rule: str, seed: int, epochs: int, work: Path) -> dict:
    out = work / f"{rule}-{seed}"
    argv = ["linear-imagenet", "--checkpoint", str(checkpoint), "--out", str(out), "--scale", "smoke",
            "--device", "cpu", "--workers", "0", "--cache-dir", str(work / "cache"), "--seed", str(seed),
            "--epochs", str(epochs), "--selection", rule]
    if run_cli(main, argv) != 0:
        raise SystemExit(f"linear-imagenet --selection {rule} --seed {seed} failed")
    (path,) = out.glob("*.json")
    return read_result(path)


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)  # linear-imagenet's smoke default
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            held = one(args.checkpoint, "held-out", seed, args.epochs, Path(tmp))
            thesis = one(args.checkpoint, "thesis", seed, args.epochs, Path(tmp))
            for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
                rows.append({"seed": seed, "layer": layer, "held_out": held["metrics"][layer],
                             "held_out_interval": held["intervals"]["metrics"][layer],
                             "chosen_epoch": held["selection"]["chosen_epochs"][layer],
                             "held_out_top1_at_chosen": held["selection"]["held_out_top1"][layer],
                             "thesis_last": thesis["metrics"][layer], "thesis_best": thesis["metrics"][f"{layer}_best"],
                             "thesis_best_epoch": thesis["selection"]["best_epochs"][layer]})
    summary = {}
    print(f"{'layer':6} {'held-out':>9} {'last':>7} {'best':>7} {'best-last':>10}   (mean over {args.seeds} seeds, %)")
    for layer in sorted({r["layer"] for r in rows}):
        rs = [r for r in rows if r["layer"] == layer]
        m = {k: float(np.mean([r[k] for r in rs])) for k in ("held_out", "thesis_last", "thesis_best")}
        m["best_minus_last"] = m["thesis_best"] - m["thesis_last"]
        summary[layer] = m
        print(f"{layer:6} {m['held_out']:9.2f} {m['thesis_last']:7.2f} {m['thesis_best']:7.2f} "
              f"{m['best_minus_last']:10.2f}")
    write_text_atomic(OUT, json.dumps({"checkpoint": str(args.checkpoint), "epochs": args.epochs,
                                       "seeds": args.seeds, "summary": summary, "runs": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main_()

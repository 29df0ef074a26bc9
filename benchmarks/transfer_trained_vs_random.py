"""Every classification transfer task at smoke scale, on a trained and on a random checkpoint.

    nice .venv/bin/python benchmarks/transfer_trained_vs_random.py --trained CKPT --random CKPT

Runs ``dc-transfer TASK --scale smoke`` (embedded data, default smoke budgets) for mlp,
linear-imagenet, linear-places, voc-classification (fc6-8 and all), lowshot and knn-graph on
both checkpoints, prints one line per task with both metric sets, and writes
benchmarks/out/transfer_trained_vs_random.json (plus the result files under --results).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TASKS = [("mlp", []), ("linear-imagenet", []), ("linear-places", []), ("voc-classification", ["--layers", "fc6-8"]),
         ("voc-classification", ["--layers", "all"]), ("lowshot", []), ("knn-graph", [])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trained", type=Path, required=True)
    ap.add_argument("--random", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=Path("benchmarks/out/trained_vs_random_results"))
    ap.add_argument("--tasks", default=None, help="comma-separated subset of task names")
    ap.add_argument("--out", default="benchmarks/out/transfer_trained_vs_random.json")
    args = ap.parse_args()

    from dcbench.results import read_result
    from dcbench.transfer.cli import main as transfer

    wanted = set(args.tasks.split(",")) if args.tasks else None
    rows = []
    for task, extra in TASKS:
        if wanted and task not in wanted:
            continue
        row = {"task": task, "flags": extra}
        for label, ckpt in (("trained", args.trained), ("random", args.random)):
            out = args.results / label
            before = set(out.glob("*.json")) if out.exists() else set()
            transfer([task, "--checkpoint", str(ckpt), "--scale", "smoke", "--out", str(out), "--device", "cpu", *extra])
            (path,) = set(out.glob("*.json")) - before
            r = read_result(path)
            row[label] = {k: round(v, 2) for k, v in r["metrics"].items()}
            row[f"{label}_seconds"] = round(sum(r["timings"].values()), 1)
        rows.append(row)
        print(f"{task} {' '.join(extra)}: trained {row['trained']} | random {row['random']}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"trained": str(args.trained), "random": str(args.random), "rows": rows},
                                         indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

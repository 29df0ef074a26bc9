"""Can voc-segmentation on the embedded data tell a trained network from a random one?

    nice .venv/bin/python benchmarks/segmentation_separates.py [--random CKPT] [--deepcluster CKPT]
                                                              [--supervised CKPT] [--seeds 0,1,2]

Three AlexNet-Sobel checkpoints at smoke scale: random init (``dc-convert --from random
--input-size 64``, the leaderboard's random baseline), the default ``dc-train`` (DeepCluster) and
``dc-train --targets labels`` (supervised on the embedded ImageNet-like set). A checkpoint not
given is made under ``--work``. Each runs ``dc-transfer voc-segmentation --scale smoke`` (the
embedded VOC2012, smoke defaults) once per seed. Prints and writes
benchmarks/out/segmentation_separates.json: mIoU per checkpoint per seed, mean ± sd (sample sd),
whether each trained checkpoint's mean minus random's exceeds the sum of the two sds, the wall
time of every step and the load average around it (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(cmd: list[str]) -> float:
    """Run a dc-* command, fail loudly on a non-zero exit; return its wall time in seconds."""
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return round(time.perf_counter() - t, 1)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def make_checkpoints(args: argparse.Namespace, steps: list[dict]) -> dict[str, Path]:
    work = args.work
    made = {"random": args.random, "deepcluster": args.deepcluster, "supervised": args.supervised}
    recipes = {
        "random": [str(BIN / "dc-convert"), "--from", "random", "--input-size", "64", "--seed", "0",
                   "--out", str(work / "random")],
        "deepcluster": [str(BIN / "dc-train"), "--out", str(work / "deepcluster"), "--quiet"],
        "supervised": [str(BIN / "dc-train"), "--targets", "labels", "--out", str(work / "supervised"), "--quiet"],
    }
    for name, path in made.items():
        if path is not None:
            continue
        if name == "random":
            made[name] = work / "random"
        else:
            made[name] = work / name / "checkpoint"
        if not (made[name] / "meta.json").is_file():
            load = _load()
            wall = _run(recipes[name])
            steps.append({"step": f"make {name}", "command": " ".join(recipes[name][1:]), "wall_s": wall,
                          "load_before": load, "load_after": _load()})
            print(f"made {name}: {made[name]} ({wall} s)", flush=True)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=Path, default=None, help="random-init checkpoint (default: made)")
    ap.add_argument("--deepcluster", type=Path, default=None, help="dc-train checkpoint (default: made)")
    ap.add_argument("--supervised", type=Path, default=None, help="dc-train --targets labels checkpoint (default: made)")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/out/segmentation_separates_runs"),
                    help="where checkpoints and result files go")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/segmentation_separates.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    from dcbench.results import read_result
    from dcbench.synth import GENERATOR_VERSION

    steps: list[dict] = []
    t0 = time.perf_counter()
    ckpts = make_checkpoints(args, steps)
    rows = {name: {"checkpoint": str(ckpt), "miou": [], "pixel_acc": [], "wall_s": [], "load": []}
            for name, ckpt in ckpts.items()}

    def summary(complete: bool) -> dict:
        for row in rows.values():
            row["mean"] = round(statistics.mean(row["miou"]), 2) if row["miou"] else None
            row["sd"] = round(statistics.stdev(row["miou"]), 2) if len(row["miou"]) > 1 else None
        separation = {}
        rnd = rows["random"]
        for name in ("deepcluster", "supervised"):
            if rows[name]["sd"] is None or rnd["sd"] is None:
                continue
            gap = rows[name]["mean"] - rnd["mean"]
            margin = rows[name]["sd"] + rnd["sd"]
            separation[name] = {"gap": round(gap, 2), "sd_sum": round(margin, 2), "separates": bool(gap > margin)}
        return {
            "task": "voc-segmentation --scale smoke (embedded VOC2012)",
            "generator_version": GENERATOR_VERSION,
            "seeds": seeds,
            "complete": complete,
            "checkpoints": rows,
            "separation": separation,
            "steps": steps,
            "total_wall_s": round(time.perf_counter() - t0, 1),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
        }

    def save(result: dict) -> None:
        # written after every run, so a run cut short still leaves what it measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)

    # seeds outermost: a cut-short run has every checkpoint at the same seeds
    for seed in seeds:
        for name, ckpt in ckpts.items():
            out = args.work / "results" / name / f"seed{seed}"
            before = set(out.glob("*.json")) if out.exists() else set()
            load = _load()
            wall = _run([str(BIN / "dc-transfer"), "voc-segmentation", "--checkpoint", str(ckpt), "--scale", "smoke",
                         "--seed", str(seed), "--device", "cpu", "--out", str(out)])
            (path,) = set(out.glob("*.json")) - before
            metrics = read_result(path)["metrics"]
            row = rows[name]
            row["miou"].append(round(metrics["miou"], 2))
            row["pixel_acc"].append(round(metrics["pixel_acc"], 2))
            row["wall_s"].append(wall)
            row["load"].append([load, _load()])
            print(f"{name} seed {seed}: mIoU {metrics['miou']:.2f}, pixel acc {metrics['pixel_acc']:.2f} "
                  f"({wall} s, load {load} -> {_load()})", flush=True)
            save(summary(complete=False))
    result = summary(complete=True)
    separation = result["separation"]
    print()
    print(f"{'checkpoint':<12} {'mIoU per seed':<24} mean ± sd")
    for name, row in rows.items():
        print(f"{name:<12} {', '.join(f'{v:.2f}' for v in row['miou']):<24} {row['mean']} ± {row['sd']}")
    for name, s in separation.items():
        verdict = "separates" if s["separates"] else "does NOT separate"
        print(f"{name} - random = {s['gap']:.2f} vs sd sum {s['sd_sum']:.2f}: {verdict}")
    save(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

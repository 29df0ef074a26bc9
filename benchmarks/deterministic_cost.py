"""What ``dc-train --deterministic`` costs, side by side with the default kernels in one run.

    OPENBLAS_CORETYPE=Haswell nice .venv/bin/python benchmarks/deterministic_cost.py --epochs 2 --rounds 3   # CPU
    python benchmarks/deterministic_cost.py --device cuda --epochs 2 --rounds 3                              # a GPU

Each round trains the smoke preset (km-ImNet-Sob on the embedded data, or ``--data``) once without and
once with the flag, in alternating order, so a change of machine load hits both; the median wall
time per variant and their ratio are reported, with the sha256 of every run's weights: on the CPU
the flag changes no number, so all of them must agree; on a GPU the runs with the flag must agree
with each other. Writes benchmarks/out/deterministic_cost_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--data", default=None, help="an ImageFolder (default: the embedded data)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", default=None, help="default: benchmarks/out/deterministic_cost_<device>.json")
    args = ap.parse_args()

    from dcbench.checkpoint import sha256_file
    from dcbench.provenance import environment, git_sha, utc_now
    from dcbench.train.config import make_config
    from dcbench.train.loop import train

    runs: dict = {"default": [], "deterministic": []}
    with tempfile.TemporaryDirectory(prefix="dcbench-det-") as work:
        for r in range(args.rounds):
            order = ("default", "deterministic") if r % 2 == 0 else ("deterministic", "default")
            for name in order:
                out = Path(work) / f"{name}-{r}"
                cfg = make_config("km-ImNet-Sob", "smoke", out=str(out), epochs=args.epochs, device=args.device,
                                  workers=args.workers, quiet=True, deterministic=name == "deterministic",
                                  **({"data": args.data} if args.data else {}))
                t = time.perf_counter()
                train(cfg)
                s = time.perf_counter() - t
                runs[name].append({"s": round(s, 3), "sha256": sha256_file(out / "checkpoint" / "model.safetensors")})
                print(f"round {r + 1} {name:13s} {s:7.2f} s  {runs[name][-1]['sha256'][:12]}", flush=True)
    med = {k: statistics.median(x["s"] for x in v) for k, v in runs.items()}
    shas = {k: sorted({x["sha256"] for x in v}) for k, v in runs.items()}
    result = {
        "benchmark": "deterministic_cost", "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "args": vars(args), "runs": runs, "median_s": med,
        "ratio_deterministic_over_default": round(med["deterministic"] / med["default"], 3),
        "weights_identical_within_variant": {k: len(v) == 1 for k, v in shas.items()},
        "weights_identical_across_variants": shas["default"] == shas["deterministic"],
        "git_sha": git_sha(), "environment": environment(), "created": utc_now(),
    }
    print(f"median: default {med['default']:.2f} s, --deterministic {med['deterministic']:.2f} s, ratio "
          f"{result['ratio_deterministic_over_default']}; weights identical across variants: "
          f"{result['weights_identical_across_variants']}")
    out = Path(args.out or f"benchmarks/out/deterministic_cost_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

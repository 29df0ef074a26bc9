"""Time per mini-batch with and without SGT (thesis §4.7, Table 4.3), side by side in one run.

    nice .venv/bin/python benchmarks/sgt_timing.py --input-size 64 --batch-size 64 --rounds 3   # CPU check
    python benchmarks/sgt_timing.py --device cuda                                                # thesis sizes

Each variant (no approximation, then SGT 256 ... 4096) runs dc-train's own update
(``dcbench.train.update.sgd_step`` and ``sgt_rows``) on the same network, with the top layer's k
rows, for ``--steps`` updates per round; the variants alternate within every round, so a change of
machine load hits all of them alike, and the median over rounds is reported. Inputs are random
tensors already on the device and targets are drawn uniformly over the k clusters: the time is the
network update alone, no image loading (the thesis does not say whether its times include it).
k defaults to 10,000 (the k-means presets; the thesis's Table 4.3 run used PIC clusters, whose
number it does not give); with SGT n >= k dc-train would not approximate at all.
Prints a table beside the thesis's milliseconds and writes benchmarks/out/sgt_timing[_LABEL].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

THESIS = {0: 154, 256: 177, 512: 211, 1024: 277, 2048: 396, 4096: 713}  # Table 4.3, ms per mini-batch


def thesis_ms() -> dict[int, float]:
    """Table 4.3 from the leaderboard's transcription of the thesis (the same numbers as THESIS)."""
    from dcbench.leaderboard.literature import load_literature

    lit = load_literature()
    rows = lit[(lit["table"] == "4.3") & (lit["column"] == "ms_per_minibatch")]
    out = {0 if m == "no approx" else int(m.split()[-1]): float(v) for m, v in zip(rows["method"], rows["value"])}
    assert out == THESIS, out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--arch", default="alexnet")
    ap.add_argument("--sobel", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--input-size", type=int, default=224, help="thesis: 224")
    ap.add_argument("--batch-size", type=int, default=256, help="thesis: 256")
    ap.add_argument("--k", type=int, default=10_000, help="rows of the top layer (clusters)")
    ap.add_argument("--sgt", default="256,512,1024,2048,4096", help="SGT sizes, comma-separated")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="timed updates per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed updates per variant before round 1")
    ap.add_argument("--label", default=None, help="suffix of the output file (default: the device type)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from dcbench.models import build_model
    from dcbench.precision import memory_format
    from dcbench.provenance import environment, git_sha, utc_now
    from dcbench.train.config import make_config
    from dcbench.train.update import TopNet, sgd_step, sgt_rows

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    sizes = [int(v) for v in args.sgt.split(",") if v.strip()]
    if any(n >= args.k for n in sizes):
        raise SystemExit(f"error: every --sgt size must be below --k {args.k} (else dc-train does not approximate)")
    cfg = make_config("km-ImNet-Sob", "full", k=args.k, batch_size=args.batch_size, input_size=args.input_size,
                      arch=args.arch, sobel=args.sobel, precision=args.precision)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, sobel=args.sobel, input_size=args.input_size, num_classes=args.k, seed=args.seed)
    model.to(device, memory_format=memory_format(cfg.precision)).train()
    net = TopNet(model)
    trunk = [p for n, p in model.named_parameters() if not n.startswith("top_layer") and p.requires_grad]
    opt = torch.optim.SGD(trunk, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    top = model.top_layer
    rng = np.random.default_rng(args.seed)
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    x = x.contiguous(memory_format=memory_format(cfg.precision))

    variants = [0, *sizes]
    state = {}
    for n in variants:  # per-variant top-layer optimiser state, as dc-train keeps for one epoch
        state[n] = ((torch.optim.SGD(top.parameters(), lr=cfg.lr, momentum=cfg.top_momentum,
                                     weight_decay=cfg.weight_decay), {}) if n == 0 else
                    (None, {id(p): torch.zeros_like(p) for p in top.parameters()}))

    def step(n: int) -> None:
        y_np = rng.integers(0, args.k, args.batch_size)
        rows = None
        if n:
            rows = torch.from_numpy(sgt_rows(y_np, args.k, n, rng)).to(device)
        opt_top, bufs = state[n]
        sgd_step(net, top, opt, opt_top, bufs, x, torch.from_numpy(y_np).to(device), rows,
                 cfg, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for n in variants:
        for _ in range(args.warmup):
            step(n)
    sync()
    times: dict[int, list[float]] = {n: [] for n in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]  # alternate the order too
        for n in order:
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step(n)
            sync()
            times[n].append(1000 * (time.perf_counter() - t) / args.steps)
    thesis = thesis_ms()
    med = {n: statistics.median(v) for n, v in times.items()}
    rows = []
    print(f"{'variant':>10} {'ms/batch':>9} {'x no approx':>12} {'thesis ms':>10} {'thesis x':>9}")
    for n in variants:
        name = "no approx" if n == 0 else f"SGT {n}"
        row = {"variant": name, "sgt": n, "ms_per_minibatch": round(med[n], 2), "ratio_to_no_approx":
               round(med[n] / med[0], 3), "rounds_ms": [round(v, 2) for v in times[n]],
               "thesis_ms": thesis.get(n), "thesis_ratio": round(thesis[n] / thesis[0], 3) if n in thesis else None}
        rows.append(row)
        print(f"{name:>10} {row['ms_per_minibatch']:>9.1f} {row['ratio_to_no_approx']:>12.2f} "
              f"{row['thesis_ms'] or '-':>10} {row['thesis_ratio'] or '-':>9}")
    label = args.label or device.type
    out = Path(__file__).parent / "out" / f"sgt_timing_{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "sgt_timing", "label": label, "device": str(device),
              "note": ("CPU run at a reduced size to check the script; not comparable with the thesis's GPU "
                       "milliseconds, only the ratios are of interest" if device.type == "cpu" else
                       "GPU run"),
              "settings": {k: v for k, v in vars(args).items()}, "what": "median over rounds of the mean ms per "
              "update (forward, backward, trunk SGD, top-layer SGD or SGT lazy update), random inputs on the device",
              "results": rows, "git_sha": git_sha(), "environment": environment(), "created": utc_now()}
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

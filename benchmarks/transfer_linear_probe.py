"""One-pass five-head linear probe vs five single-layer runs (the original scripts' way).

    nice .venv/bin/python benchmarks/transfer_linear_probe.py --input-size 64 --images 256 --epochs 1

Both modes train the same five heads with the same optimiser on the same batches, streaming the
trunk (the full protocol's path, with augmentation there is no feature cache). One-pass: one
trunk forward per batch feeds all five heads. Single-layer: one run per layer, each forward
stopped after its layer (as eval_linear.py's ``forward``). Images are decoded once up front, so
the timing is the network work only. Reports seconds per mode, the ratio, and checks that both
modes give the same heads. Writes benchmarks/out/transfer_linear_probe.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="alexnet", choices=("alexnet", "vgg16"))
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=256, help="training images (from the embedded data)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings per mode")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/out/transfer_linear_probe.json")
    args = ap.parse_args()

    from dcbench.datasets import ImageFolder
    from dcbench.embedded import embedded_data
    from dcbench.models import build_model
    from dcbench.provenance import environment
    from dcbench.transfer import protocol, training
    from dcbench.transfer.linear_probe import LAYERS, make_forward, pooling_for

    meta = {"input_size": args.input_size, "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "colour_order": "RGB"}}
    ds = ImageFolder(embedded_data() / "classification" / "train",
                     protocol.center_crop_transform(meta, args.input_size))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:args.images].tolist()
    xs = torch.stack([ds[i][0] for i in idx])
    ys = torch.tensor([ds[i][1] for i in idx])
    batches = [(xs[s:s + args.batch_size], ys[s:s + args.batch_size]) for s in range(0, len(xs), args.batch_size)]
    val = [(x.unsqueeze(1), y) for x, y in batches[:1]]
    model = training.frozen(build_model(args.arch, input_size=args.input_size, seed=0).to(args.device))
    pools = pooling_for(args.arch, args.input_size)
    n_classes = len(ds.classes)

    def heads_for(layers):
        torch.manual_seed(0)
        all_heads = [nn.Linear(p.dim, n_classes) for p in pools]
        return nn.ModuleList([h for h, p in zip(all_heads, pools) if p.layer in layers]).to(args.device)

    def train(layers):
        heads = heads_for(layers)
        fwd = make_forward(model, pools, layers)
        t0 = time.perf_counter()
        training.train_heads(heads, training.stream_batches(lambda e: batches, fwd, args.device),
                           training.stream_val_batches(lambda: val, fwd, args.device), epochs=args.epochs,
                           lr=0.01, momentum=0.9, weight_decay=1e-7, device=args.device)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, heads

    timings = {"one_pass": [], "single_layer": [], "single_layer_per_layer": []}
    for _ in range(args.repeats):
        t, heads_one = train(LAYERS)
        timings["one_pass"].append(t)
        per, heads_single = {}, []
        for layer in LAYERS:
            t, h = train((layer,))
            per[layer] = t
            heads_single.append(h[0])
        timings["single_layer"].append(sum(per.values()))
        timings["single_layer_per_layer"].append(per)
    same = all(torch.allclose(a.weight, b.weight, atol=1e-5) for a, b in zip(heads_one, heads_single))
    best_one, best_single = min(timings["one_pass"]), min(timings["single_layer"])
    out = {"benchmark": "transfer_linear_probe", "arch": args.arch, "input_size": args.input_size,
           "images": len(xs), "batch_size": args.batch_size, "epochs": args.epochs, "device": args.device,
           "one_pass_s": round(best_one, 3), "five_single_runs_s": round(best_single, 3),
           "ratio_single_over_one_pass": round(best_single / best_one, 3), "same_heads": same,
           "timings": timings, "environment": environment()}
    print(f"{args.arch} @ {args.input_size}px, {len(xs)} images x {args.epochs} epoch(s), {args.device}: "
          f"one pass {best_one:.2f} s, five single-layer runs {best_single:.2f} s, "
          f"ratio {best_single / best_one:.2f}x, same heads: {same}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Does dc-train learn? Linear probes on frozen conv features: trained vs the same network at init.

    nice .venv/bin/python benchmarks/train_learns.py            # 3 seeds, ~60 min on 2 busy CPU cores

For each seed: train DeepCluster (km, Sobel, AlexNet-BN, 64-px crops) on the embedded
classification train split, then fit a logistic-regression probe on the frozen conv1..conv5
activations (avg-pooled, standardised) of a fixed probe-train set and score it on the held-out
val split. The same probe runs on the network at its initial weights (``build_model(seed=...)`` is
the trained run's init). Primary metric, fixed before running: conv5. Standard errors are binomial
on the held-out set; the gap's SE is sqrt(se_trained^2 + se_random^2).
Writes benchmarks/out/train_learns.json (updated after every seed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

PRIMARY = "conv5"


def conv_features(model, ds, tf, batch=100) -> dict[str, np.ndarray]:
    from torch.utils.data import DataLoader

    from dcbench.datasets import collate_skip_none
    from dcbench.imageload import normalise
    from dcbench.models import IMAGENET_MEAN, IMAGENET_STD
    from dcbench.train.feed import _View

    pools = [4, 3, 3, 3, 3]  # output grid per conv layer: dims 1536, 2304, 3456, 3456, 2304
    view = _View(ds, np.arange(len(ds)), np.asarray(ds.targets), tf)
    loader = DataLoader(view, batch_size=batch, shuffle=False, collate_fn=collate_skip_none)
    feats: dict[str, list] = {f"conv{i + 1}": [] for i in range(5)}
    labels = []
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            x = normalise(x, IMAGENET_MEAN, IMAGENET_STD)
            for i, o in enumerate(model.conv_outputs(x)):
                feats[f"conv{i + 1}"].append(torch.nn.functional.adaptive_avg_pool2d(o, pools[i]).flatten(1).numpy())
            labels.append(y.numpy())
    return {k: np.concatenate(v) for k, v in feats.items()} | {"y": np.concatenate(labels)}


def probe(train: dict, val: dict, layers=None) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    out = {}
    for layer in (k for k in train if k != "y" and (layers is None or k in layers)):
        sc = StandardScaler().fit(train[layer])
        clf = LogisticRegression(C=0.1, max_iter=300)
        clf.fit(sc.transform(train[layer]), train["y"])
        out[layer] = float((clf.predict(sc.transform(val[layer])) == val["y"]).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-scale", default="demo", help="embedded data scale (demo if the generator has it)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--steps-per-epoch", type=int, default=40)
    ap.add_argument("--subset-size", type=int, default=1280)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--pca-dim", type=int, default=32)
    ap.add_argument("--probe-train-per-class", type=int, default=200)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where dc-train runs (probes: CPU)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="dc-train's --precision")
    ap.add_argument("--workers", type=int, default=0, help="dc-train's DataLoader workers")
    ap.add_argument("--layers", nargs="+", default=None, help="probe only these (default conv1..conv5)")
    ap.add_argument("--workdir", default="benchmarks/out/train_learns_runs")
    ap.add_argument("--out", default="benchmarks/out/train_learns.json")
    args = ap.parse_args()

    from dcbench.datasets import ImageFolder
    from dcbench.embedded import embedded_data
    from dcbench.models import build_model
    from dcbench.provenance import environment
    from dcbench.train.config import make_config
    from dcbench.train.feed import crop_loaders
    from dcbench.train.loop import train
    from dcbench.train.run_state import read_log

    root = Path(embedded_data(scale=args.data_scale, seed=0)) / "classification"
    train_ds = ImageFolder(root / "train")
    val_ds = ImageFolder(root / "val")
    # Fixed probe-train subset: the first N images of each class (sorted file order).
    per: dict[int, int] = {}
    keep = []
    for i, (_, y) in enumerate(train_ds.samples):
        if per.get(y, 0) < args.probe_train_per_class:
            keep.append(i)
            per[y] = per.get(y, 0) + 1
    probe_ds = ImageFolder(root / "train")
    probe_ds.samples = [train_ds.samples[i] for i in keep]

    result = {"benchmark": "train_learns", "args": vars(args), "data": str(root), "train_images": len(train_ds),
              "probe_train_images": len(probe_ds), "val_images": len(val_ds), "primary_layer": PRIMARY,
              "seeds": [], "environment": environment()}
    outp = Path(args.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        t0 = time.perf_counter()
        cfg = make_config("km-ImNet-Sob", "smoke", data=str(root / "train"), out=f"{args.workdir}/seed{seed}",
                          seed=seed, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                          subset_size=args.subset_size, k=args.k, lr=args.lr, batch_size=args.batch_size,
                          pca_dim=args.pca_dim, quiet=True, workers=args.workers, device=args.device,
                          precision=args.precision)
        train(cfg)
        t_train = time.perf_counter() - t0
        from dcbench.checkpoint import load_checkpoint

        trained = load_checkpoint(Path(cfg.out) / "checkpoint").model
        random_init = build_model(cfg.arch, sobel=cfg.sobel, input_size=cfg.input_size,
                                  num_classes=cfg.k, seed=cfg.seed)
        _, centre = crop_loaders(cfg, "torchvision")
        accs = {}
        for name, net in (("trained", trained), ("random", random_init)):
            accs[name] = probe(conv_features(net, probe_ds, centre), conv_features(net, val_ds, centre), args.layers)
        n = len(val_ds)
        se = {k: {layer: math.sqrt(a * (1 - a) / n) for layer, a in v.items()} for k, v in accs.items()}
        gap = accs["trained"][PRIMARY] - accs["random"][PRIMARY]
        gap_se = math.sqrt(se["trained"][PRIMARY] ** 2 + se["random"][PRIMARY] ** 2)
        log = read_log(cfg.out)
        rec = {"seed": seed, "acc": accs, "se": se, "gap_primary": gap, "gap_se": gap_se,
               "gap_over_se": gap / gap_se if gap_se else None, "beats_random_by_2se": gap > 2 * gap_se,
               "train_seconds": round(t_train, 1), "total_seconds": round(time.perf_counter() - t0, 1),
               "log": [{k: r.get(k) for k in ("epoch", "loss", "log_k", "nmi_prev", "nmi_labels",
                                                "ratio_edge_intra_class", "size_min", "size_max")} for r in log]}
        result["seeds"].append(rec)
        print(json.dumps({k: rec[k] for k in ("seed", "acc", "gap_primary", "gap_se", "beats_random_by_2se",
                                              "train_seconds")}), flush=True)
        if result["seeds"]:
            gaps = [s["gap_primary"] for s in result["seeds"]]
            result["summary"] = {"mean_gap": float(np.mean(gaps)),
                                 "sem_gap_over_seeds": float(np.std(gaps, ddof=1) / math.sqrt(len(gaps)))
                                 if len(gaps) > 1 else None,
                                 "all_seeds_beat_random_by_2se": all(s["beats_random_by_2se"] for s in result["seeds"])}
        outp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Do a checkpoint's frozen features tell the embedded VOC classes apart, cell by cell?

    nice .venv/bin/python benchmarks/segmentation_cell_probe.py NAME=CKPT [NAME=CKPT ...]

A cheap companion to segmentation_separates.py that takes FCN training out of the question:
each checkpoint's conv trunk (eval mode, no gradient) maps every embedded VOC2012 scene (smoke
scale) to its conv5 grid, the one FCN-32s scores; each cell gets the majority label of the
pixels under it (255 left out). A multinomial logistic regression (sklearn, C=1) fitted on the
train cells is scored on the val cells: accuracy over all cells and over the cells whose label
is an object class (chance there: about 5%; predicting background everywhere scores 0).
Prints and writes benchmarks/out/segmentation_cell_probe.json.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def cells(net, dataset) -> tuple[np.ndarray, np.ndarray]:
    import torch

    feats, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if item is None:
            continue
        x, m = item
        with torch.no_grad():
            y = net.trunk(x[None])[0]
        gh, gw = y.shape[-2:]
        h, w = m.shape
        for a in range(gh):
            for b in range(gw):
                cell = m[a * h // gh:(a + 1) * h // gh, b * w // gw:(b + 1) * w // gw].flatten()
                cell = cell[cell != 255]
                if len(cell):
                    labels.append(int(torch.mode(cell).values))
                    feats.append(y[:, a, b].numpy())
    return np.array(feats), np.array(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="NAME=CHECKPOINT_DIR")
    ap.add_argument("--data", type=Path, default=None, help="dataset root (default: the embedded smoke data)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/segmentation_cell_probe.json"))
    args = ap.parse_args()

    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from dcbench.checkpoint import load_checkpoint, preprocessing
    from dcbench.datasets import VOCSegmentation
    from dcbench.embedded import embedded_data
    from dcbench.synth import GENERATOR_VERSION
    from dcbench.transfer.voc_segmentation import PairTransform, build_fcn, min_input_side

    torch.manual_seed(0)
    root = args.data or embedded_data("smoke", 0)
    rows = {}
    for spec in args.checkpoints:
        name, _, path = spec.partition("=")
        t = time.perf_counter()
        ckpt = load_checkpoint(Path(path))
        pre = preprocessing(ckpt.meta, str(Path(path) / "meta.json"))
        net = build_fcn(ckpt.model, Path(path), frozen_trunk=True).eval()
        tf = PairTransform(pre.mean, pre.std, min_input_side(ckpt.model))
        xt, yt = cells(net, VOCSegmentation(root, "2012", "train", transforms=tf))
        xv, yv = cells(net, VOCSegmentation(root, "2012", "val", transforms=tf))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pred = LogisticRegression(max_iter=500, C=1.0).fit(xt, yt).predict(xv)
        obj = yv > 0
        rows[name] = {"checkpoint": path, "train_cells": len(yt), "val_cells": len(yv),
                      "val_background_share": round(float((yv == 0).mean()), 3),
                      "acc": round(100 * float((pred == yv).mean()), 1),
                      "object_cell_acc": round(100 * float((pred[obj] == yv[obj]).mean()), 1),
                      "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name}: all cells {rows[name]['acc']}%, object cells {rows[name]['object_cell_acc']}% "
              f"({rows[name]['val_cells']} val cells, {rows[name]['seconds']} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(root), "generator_version": GENERATOR_VERSION,
                                    "features": "conv5 (the FCN trunk's output), frozen", "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

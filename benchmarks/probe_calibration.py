"""Calibrate the embedded classification set's difficulty with linear probes.

Linear-probe accuracy (standardised features, sklearn LogisticRegression), train -> val, from
(a) raw pixels downsampled to 32x32 and (b) every conv layer of a randomly initialised
AlexNet-BN (dcbench.models, or a local copy of the same trunk if models is absent), average
pooled to 2-3.5k dimensions. The target (the embedded sets must be hard enough that a random network does
not already solve them): random conv features roughly 30-60 % on the 10 classes, raw pixels
lower, both well below 100 %. Images are rendered exactly as dc-data writes them (JPEG round
trip in memory), nothing is written to disk but the JSON.

    python benchmarks/probe_calibration.py [--scale demo|smoke] [--seed 0]
Saves benchmarks/out/probe_calibration.json and prints it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dcbench import synth

OUT = Path(__file__).resolve().parent / "out" / "probe_calibration.json"
POOL = {1: 6, 2: 3, 3: 3, 4: 3, 5: 3}  # conv layer -> adaptive average-pool side


def render_split(seed: int, scale: str, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
    cfg = synth.SCALES[scale]
    n, size = cfg[f"cls_{split}"], cfg["cls_size"]
    n = min(n, limit) if limit else n
    xs, ys = [], []
    for label, cname in enumerate(synth.CLASSIFICATION_FAMILIES):
        for i in range(n):
            r = synth._rng(seed, f"classification/{split}/{cname}", i)
            buf = io.BytesIO()
            synth.render_classification(r, cname, size).save(buf, "JPEG", quality=synth.JPEG_QUALITY)
            xs.append(np.asarray(Image.open(buf).convert("RGB")))
            ys.append(label)
    return np.stack(xs), np.array(ys)


def local_alexnet_bn() -> torch.nn.Sequential:
    nn = torch.nn
    cfg = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(3, 2))
            continue
        o, k, s, p = v
        conv = nn.Conv2d(c, o, k, s, p)
        conv.weight.data.normal_(0, math.sqrt(2.0 / (k * k * o)))
        conv.bias.data.zero_()
        layers += [conv, nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
        c = o
    return nn.Sequential(*layers)


def conv_features(x: np.ndarray, seed: int, size: int) -> tuple[dict[int, np.ndarray], str]:
    torch.manual_seed(seed)
    try:
        from dcbench.models import build_model

        trunk = build_model("alexnet", sobel=False, input_size=size, seed=seed).features
        source = "dcbench.models.build_model('alexnet', sobel=False)"
    except ImportError:
        trunk = local_alexnet_bn()
        source = "local AlexNet-BN trunk"
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    relus = [i for i, m in enumerate(trunk) if isinstance(m, torch.nn.ReLU)]

    def batches():
        for i in range(0, len(x), 250):
            yield (torch.from_numpy(x[i:i + 250]).permute(0, 3, 1, 2).float() / 255 - mean) / std

    # BN running statistics from the data itself (cumulative average), then eval mode.
    for m in trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    trunk.train()
    with torch.no_grad():
        for k, b in enumerate(batches()):
            if k >= 8:
                break
            trunk(b)
    trunk.eval()
    feats: dict[int, list] = {k: [] for k in range(1, 6)}
    with torch.no_grad():
        for b in batches():
            h = b
            layer = 0
            for i, m in enumerate(trunk):
                h = m(h)
                if i in relus:
                    layer += 1
                    feats[layer].append(torch.nn.functional.adaptive_avg_pool2d(h, POOL[layer]).flatten(1).numpy())
    return {k: np.concatenate(v) for k, v in feats.items()}, source


def probe(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray, c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=c, max_iter=300, tol=1e-3)
    clf.fit(sc.transform(xtr), ytr)
    return 100.0 * float((clf.predict(sc.transform(xva)) == yva).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="demo", choices=sorted(synth.SCALES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", type=float, default=0.01, help="inverse L2 strength of the probes")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per class and split (quick runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    xtr, ytr = render_split(args.seed, args.scale, "train", args.limit)
    xva, yva = render_split(args.seed, args.scale, "val", args.limit)
    t_render = time.perf_counter() - t0
    size = xtr.shape[1]

    def pix(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
        return torch.nn.functional.interpolate(t, size=32, mode="area").flatten(1).numpy()

    t1 = time.perf_counter()
    res = {"pixels_32x32": probe(pix(xtr), ytr, pix(xva), yva, args.C)}
    ftr, source = conv_features(xtr, args.seed, size)
    fva, _ = conv_features(xva, args.seed, size)  # same seed: same weights
    dims = {}
    for k in range(1, 6):
        res[f"random_conv{k}"] = probe(ftr[k], ytr, fva[k], yva, args.C)
        dims[f"conv{k}"] = int(ftr[k].shape[1])
    out = dict(
        benchmark="probe_calibration",
        seed=args.seed, scale=args.scale, limit_per_class=args.limit or None, generator_version=synth.GENERATOR_VERSION,
        classes=list(synth.CLASSIFICATION_FAMILIES), image_size=size,
        n_train=int(len(ytr)), n_val=int(len(yva)), chance=100.0 / len(synth.CLASSIFICATION_FAMILIES),
        probe=dict(kind="sklearn LogisticRegression (lbfgs, multinomial) on standardised features", C=args.C,
                   max_iter=300, pixels="area-downsampled to 32x32x3 = 3072 dims",
                   conv=f"{source}, random init seed {args.seed}, BN stats from <=2000 train images, "
                        f"post-ReLU, adaptive avg-pool", conv_dims=dims),
        top1_percent={k: round(v, 2) for k, v in res.items()},
        best_random_conv=round(max(v for k, v in res.items() if k.startswith("random_conv")), 2),
        difficulty=synth.DIFFICULTY,
        timings_s=dict(render=round(t_render, 1), probes=round(time.perf_counter() - t1, 1)),
        environment=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                         threads=torch.get_num_threads()),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

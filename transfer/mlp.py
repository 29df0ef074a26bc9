"""mlp: ImageNet classification with frozen convolutions and the MLP retrained (thesis Table 5.2).

The conv trunk is frozen (eval mode); fc6, fc7 (the checkpoint's classifier layout, dropout
included) are re-initialised and trained with a new fc8 over the dataset's classes. Top-1 is
the softmax average over 10 crops (Resize 256, ten-crop 224), evaluated after every epoch.

Result: metrics ``top1`` (last epoch) and ``top1_best`` (best epoch, the thesis's "maximum
amongst 90 epochs"); selection ``last+best`` with ``best_epoch`` (1-based).

With ``--train-aug none`` (the smoke default) the trunk output (pool5) is extracted once, per
(checkpoint sha256, layer, data fingerprint, split, crops), cached, and the MLP trains on it.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from torch import nn

from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import ImageFolder, fingerprint
from dcbench.results import checkpoint_block, make_result
from dcbench.seeding import seed_everything
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    add_sgd_arguments,
    align_classes,
    dataset_dir,
    eval_crops_transform,
    input_size,
    loader_of,
    precision_of,
    remap_targets,
    resolve_protocol,
    save_and_report,
    train_transform,
)

# Protocol defaults: (full, smoke). No MLP script was released with DeepCluster; the optimiser
# follows its eval_linear.py, the epochs and crops the thesis.
DEFAULTS = {
    "epochs": (90, 4),             # thesis §5.1: "maximum of those accuracies amongst 90 epochs"
    "batch_size": (256, 128),      # eval_linear.py --batch_size 256
    "lr": (0.01, 0.01),            # eval_linear.py --lr 0.01
    "momentum": (0.9, 0.9),        # eval_linear.py --momentum 0.9
    "weight_decay": (1e-4, 1e-4),  # eval_linear.py default (--wd -4)
    "train_aug": ("crop-flip", "none"),  # eval_linear.py: Resize 256, CenterCrop 256, RandomCrop 224, flip
    "eval_crops": (10, 1),         # thesis §5.1: "top@1 accuracy ... averaged over 10 crops"
}


def build_head(model, n_classes: int) -> nn.Sequential:
    """fc6, fc7 in the checkpoint's layout, re-initialised N(0, 0.01), plus a new fc8."""
    classifier = copy.deepcopy(model.classifier)
    for m in classifier.modules():
        if isinstance(m, nn.Linear):
            training.init_linear(m)
    fc8 = nn.Linear(classifier[model.fc_indices[1]].out_features, n_classes)
    training.init_linear(fc8)
    for p in classifier.parameters():
        p.requires_grad = True
    return nn.Sequential(classifier, fc8)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_size_argument(p)
    add_sgd_arguments(p, DEFAULTS)


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        training.fc_layers(ckpt.model, args.checkpoint)  # retrains fc6-fc8: a trunk without them is refused
        size = input_size(args, ckpt.meta)
        root = dataset_dir(args, "classification", ("train", "val"))
        train = ImageFolder(root / "train", train_transform(ckpt.meta, size, proto["train_aug"], loader_of(args)))
        val = ImageFolder(root / "val", eval_crops_transform(ckpt.meta, size, proto["eval_crops"], loader_of(args)))
        remap_targets(val, align_classes(train.classes, val.classes, str(root / "val")))
        data_fp = fingerprint(root)
    seed_everything(args.seed)
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    before = training.parameter_snapshot(model)
    head = build_head(model, len(train.classes)).to(args.device)

    def forward(x):
        return [model.trunk(x).flatten(1)]

    bs, workers = proto["batch_size"], args.workers
    cache_hit = None
    if proto["train_aug"] == "none":
        base = {"kind": "pool5", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp, "input_size": size,
                "dtype": "float32"}
        with timer("features"):
            tr, ytr, hit_tr = training.extract_cached(
                args, {**base, "split": "train", "transform": "center-crop"}, ["pool5"],
                lambda: training.loader(train, bs, shuffle=False, workers=workers), forward,
                device=args.device, desc="features train", precision=precision_of(args), dtype=np.float32)
            va, yva, hit_va = training.extract_cached(
                args, {**base, "split": "val", "transform": f"crops{proto['eval_crops']}"}, ["pool5"],
                lambda: training.loader(val, bs, shuffle=False, workers=workers), forward,
                device=args.device, desc="features val", precision=precision_of(args), dtype=np.float32)
        cache_hit = hit_tr and hit_va
        train_b = training.cached_batches([tr["pool5"]], ytr, bs, args.seed, args.device)
        val_b = training.cached_val_batches([va["pool5"]], yva, bs, args.device)
        sizes = {"train": int(len(ytr)), "val": int(len(yva))}
    else:
        train_b = training.stream_batches(lambda e: training.loader(train, bs, shuffle=True, workers=workers,
                                                                seed=args.seed * 1000 + e), forward, args.device, precision_of(args))
        val_b = training.stream_val_batches(lambda: training.loader(val, max(1, bs // 2), shuffle=False,
                                                                workers=workers), forward, args.device, precision_of(args))
        sizes = {"train": len(train), "val": len(val)}
    with timer("train"):
        (hist,) = training.train_heads(nn.ModuleList([head]), train_b, val_b, epochs=proto["epochs"], lr=proto["lr"],
                                     momentum=proto["momentum"], weight_decay=proto["weight_decay"],
                                     device=args.device, desc="mlp", precision=precision_of(args))
    training.assert_unchanged(model, before, "mlp: frozen trunk")
    best = int(np.argmax(hist))
    result = make_result(
        task="mlp", variant={"dataset": "imagenet", "layers": "fc6-8"}, checkpoint=checkpoint_block(ckpt),
        metrics={"top1": hist[-1], "top1_best": hist[best]},
        protocol={**proto, "optimizer": "SGD", "lr_schedule": "lr0/sqrt(1+lr0*wd*t) per iteration (eval_linear.py)",
                  "loss": "cross-entropy", "trunk": "frozen, eval mode", "head": "fc6, fc7 re-initialised "
                  "N(0, 0.01) in the checkpoint's layout (dropout included), new fc8",
                  "eval_rule": "softmax averaged over crops", "input_size": size, "seed": args.seed},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp, "sizes": sizes},
        scale=args.scale, timings=timer.timings,
        selection={"rule": "last+best", "epochs": proto["epochs"], "best_epoch": best + 1},
        details={"history_top1": [round(v, 3) for v in hist], "classes": len(train.classes),
                 "feature_cache_hit": cache_hit, "trunk_unchanged": True})
    return save_and_report(args, result)


register(Task(
    name="mlp",
    description="frozen convs, fc6-fc8 re-initialised and trained; top-1 over 10 crops (Table 5.2)",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("train", "val"), resources=Resources(1, 10, 64, 48 * 60),
    metrics=r"top1(_best)?",
    table="mlp",
    needs_fc6_fc7=True,
))

"""mlp: ImageNet classification with frozen convolutions and the MLP retrained (thesis Table 5.2).

The conv trunk is frozen (eval mode); fc6, fc7 (the checkpoint's classifier layout, dropout
included) are re-initialised and trained with a new fc8 over the dataset's classes. Top-1 is
the softmax average over 10 crops (Resize 256, ten-crop 224), evaluated after every epoch (on
the held-out split by default, on the test split under the thesis's rule).

Result, ``--selection held-out`` (the default): the epoch is chosen by top-1 on a class-balanced
split held out of the TRAIN split (``--val-size``), the head put back in its state of that epoch
and the test split scored once: metric ``top1``; selection ``held-out`` with the ``split``,
``chosen_epochs`` (1-based) and ``held_out_top1`` (key ``top1``).
``--selection thesis``: ``top1`` (last epoch) and ``top1_best`` (best epoch on the test split, the
thesis's "maximum amongst 90 epochs"); selection ``last+best`` with ``best_epoch``.
Outcomes: every metric's per-image test top-1 hits.

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
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.seeding import seed_everything
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    add_selection_arguments,
    add_sgd_arguments,
    align_classes,
    dataset_dir,
    eval_crops_transform,
    input_size,
    loader_of,
    precision_of,
    remap_targets,
    resolve_protocol,
    sample_ids,
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
    add_selection_arguments(p)


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

    thesis = args.selection == "thesis"
    base = {"kind": "pool5", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp, "input_size": size,
            "dtype": "float32"}
    data = training.head_data(args, proto, train=train, val=val, forward=forward, names=["pool5"], base_key=base,
                              dtype=np.float32, timer=timer, held_out=not thesis, precision=precision_of(args))
    with timer("train"):
        fit = training.fit_heads(nn.ModuleList([head]), data, epochs=proto["epochs"], lr=proto["lr"],
                                 momentum=proto["momentum"], weight_decay=proto["weight_decay"],
                                 device=args.device, desc="mlp", precision=precision_of(args))
    training.assert_unchanged(model, before, "mlp: frozen trunk")
    (hist,), (chosen,) = fit.history, fit.chosen
    outcomes = Outcomes(ids=sample_ids(val))
    metrics = {}
    training.record_hits(metrics, outcomes, "top1", fit.test_hits[0])
    if thesis:
        training.record_hits(metrics, outcomes, "top1_best", fit.best_hits[0])
        selection = {"rule": "last+best", "epochs": proto["epochs"], "best_epoch": chosen + 1,
                     "note": "the thesis's rule: the test split scored after every epoch, the last and the "
                             "best reported (the best is chosen on the test set)"}
        history = {"history_top1": [round(v, 3) for v in hist]}
    else:
        selection = {"rule": "held-out", "epochs": proto["epochs"], "split": data.split,
                     "chosen_epochs": {"top1": chosen + 1},
                     "held_out_top1": {"top1": round(hist[chosen], 4)},
                     "note": "the epoch chosen by top-1 on the held-out split of train; the test split "
                             "scored once, with the head in its state of that epoch"}
        history = {"held_out_history_top1": [round(v, 3) for v in hist]}
    result = make_result(
        task="mlp", variant={"dataset": "imagenet", "layers": "fc6-8"}, checkpoint=checkpoint_block(ckpt),
        metrics=metrics,
        protocol={**proto, "optimizer": "SGD", "lr_schedule": "lr0/sqrt(1+lr0*wd*t) per iteration (eval_linear.py)",
                  "loss": "cross-entropy", "trunk": "frozen, eval mode", "head": "fc6, fc7 re-initialised "
                  "N(0, 0.01) in the checkpoint's layout (dropout included), new fc8",
                  "eval_rule": "softmax averaged over crops", "input_size": size, "selection": args.selection,
                  "seed": args.seed},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp, "sizes": data.sizes},
        scale=args.scale, timings=timer.timings, selection=selection,
        details={**history, "classes": len(train.classes), "feature_cache_hit": data.cache_hit,
                 "trunk_unchanged": True})
    return save_and_report(args, result, outcomes)


register(Task(
    name="mlp",
    description="frozen convs, fc6-fc8 re-initialised and trained; top-1 over 10 crops (Table 5.2)",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("train", "val"), resources=Resources(1, 10, 64, 48 * 60),
    metrics=r"top1(_best)?",
    table="mlp",
    needs_fc6_fc7=True,
))

"""voc07-svm: linear SVMs on frozen features, VOC2007 trainval -> test (Goyal et al. 2019, "Scaling and
Benchmarking Self-Supervised Visual Representation Learning", the VOC07 linear-SVM benchmark).

Features: for every probed tap (AlexNet/VGG16 conv1..conv5; ResNets conv1, res2..res5 and res5_gap),
the output average-pooled exactly as the linear probes pool it (:mod:`dcbench.transfer.linear_probe`:
at most 10,000 dims), on the centre crop of every VOC2007 trainval and test image, through the feature
cache (float32). Each tap's vectors are L2-normalised (x / (||x|| + 1e-5)), as the published scripts do.

Per tap and per VOC class, one-vs-rest: scikit-learn's ``LinearSVC`` (liblinear; squared hinge, L2,
dual, tol 1e-4, at most 2,000 iterations, class_weight {1: 2, -1: 1}, intercept_scaling 1.0). For
each cost C of the list, the mean AP of 3-fold cross-validation on trainval (``cross_val_score``,
stratified folds without shuffling, sklearn's ``average_precision`` scoring); the C with the highest
mean (the first on ties) is kept, the SVM refitted on all of trainval with it, and scored on test.

Labels (:class:`dcbench.datasets.VOCClassification`: 1 present, -1 absent, 0 only "difficult"
objects of the class). Training (``--train-difficult negative``, the published rule): a difficult-only
image is a negative, because the published loader maps it to its ignore label and the training
script then turns everything that is not 1 into -1; ``ignore`` leaves it out instead. Test: always left
out of that class's ranking (the published test script drops it).

Test AP (``--ap``): ``interpolated`` (default, the published scripts' ``calculate_ap``): the area under
the precision envelope (max precision at any recall >= r), summed over the recall steps — the VOC2010+
rule; ``11point``: the VOC2007 devkit's 11-point rule (:func:`dcbench.outcomes.voc07_ap`).
mAP = mean over classes with a positive test image.

Result: metrics ``<tap>_map`` (percent), each with its 95% bootstrap interval over the test images;
per-class test APs and cross-validation APs in ``details``. Selection ``cross-validation``
(``folds``, and ``chosen_costs``: the C per tap and class, also in ``details.chosen_costs``): C is
chosen on trainval alone and test is scored once, at that C. Per-image outcomes beside the result
(:mod:`dcbench.outcomes`, kind ``ap`` under the ``--ap`` rule): per tap, every test image's SVM
decision value per class and its label (1, -1, 0 = difficult only, left out).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dcbench import argtypes
from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import VOC_CLASSES, VOCClassification, fingerprint
from dcbench.errors import UserError
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.linear_probe import layer_names, make_forward, parse_layers, pooling_for
from dcbench.transfer.linear_svm import (
    AP_RULES,
    DIFFICULT_RULES,
    PUBLISHED_COSTS,
    SVM_PARAMS,
    check_tap,
    normalise,
    voc07_svm,
)
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    center_crop_transform,
    dataset_dir,
    default_help,
    input_size,
    precision_of,
    resolve_protocol,
    save_and_report,
)

DEFAULTS = {
    "costs": (PUBLISHED_COSTS, (0.01, 0.1, 1.0, 10.0)),  # smoke: four of the published costs
    "folds": (3, 3),              # train_svm_kfold.py: cross_val_score(..., cv=3)
    "batch_size": (256, 64),      # feature extraction only: changes no number
}


# --------------------------------------------------------------------------------------------
# Features (shared with lowshot-svm)


def parse_costs(spec) -> tuple[float, ...]:
    if isinstance(spec, tuple):
        return spec
    try:
        costs = tuple(float(s) for s in str(spec).split(",") if s.strip())
    except ValueError:
        costs = ()
    if not costs or not all(np.isfinite(c) and c > 0 for c in costs):
        raise UserError(f"--costs {spec}: give a comma-separated list of positive numbers, e.g. 0.01,0.1,1")
    return costs


def default_jobs() -> int:
    return min(8, os.cpu_count() or 1)


def add_feature_arguments(p: argparse.ArgumentParser, defaults: dict) -> None:
    """The flags both SVM tasks take."""
    add_input_size_argument(p)
    p.add_argument("--layers", default=None,
                   help="comma-separated subset of conv1..conv5 (ResNets: conv1,res2,res3,res4,res5,res5_gap) "
                        "(default: all of the checkpoint's)")
    p.add_argument("--costs", default=None,
                   help="comma-separated SVM costs C (default: the published 26 (full), 0.01,0.1,1,10 (smoke))")
    p.add_argument("--n-jobs", type=argtypes.positive_int, default=default_jobs(),
                   help="SVMs trained at once, in processes sharing the features (default: the CPU count, "
                        "at most 8; here: %(default)s)")
    p.add_argument("--ap", choices=AP_RULES, default="interpolated",
                   help="test AP: interpolated = the published scripts' (area under the precision envelope), "
                        "11point = the VOC2007 devkit's (default: interpolated)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help="images per forward pass; " + default_help(*defaults["batch_size"]))
    p.add_argument("--train-split", default="trainval", help="ImageSets/Main/<name>.txt to train on (default: trainval)")
    p.add_argument("--test-split", default="test", help="ImageSets/Main/<name>.txt to test on (default: test)")


def voc_features(args: argparse.Namespace, proto: dict, timer: Timer, what: str):
    """Load the checkpoint and the two VOC2007 splits, and return every tap's features (cached).

    Returns (ckpt, pools, layers, {split: (features per tap, labels (N, 20), ids)}, devkit, fingerprint,
    cache hit)."""
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = input_size(args, ckpt.meta)
        arch = ckpt.meta["arch"]
        layers = parse_layers(args.layers, layer_names(arch))
        pools = [p for p in pooling_for(arch, size) if p.layer in layers]
        devkit = dataset_dir(args, "VOCdevkit", ("VOC2007",))
        # VOCClassification hands transforms decoded images, so the PIL path (--loader draft's pixels are
        # the same wherever it applies)
        tf = center_crop_transform(ckpt.meta, size, "torchvision")
        sets = {s: VOCClassification(devkit, "2007", s, tf) for s in (args.train_split, args.test_split)}
        data_fp = fingerprint(devkit / "VOC2007")
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    forward = make_forward(model, pools, layers)
    base = {"kind": "conv-avgpool", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp,
            "dataset": "voc2007", "input_size": size, "pools": [asdict(p) for p in pools],
            "transform": "center-crop", "decode": "pil", "dtype": "float32"}
    out, hits = {}, []
    with timer("features"):
        for split, ds in sets.items():
            feats, labels, hit = training.extract_cached(
                args, {**base, "split": split}, layers,
                lambda ds=ds: training.loader(ds, proto["batch_size"], shuffle=False, workers=args.workers),
                forward, device=args.device, desc=f"features {split}", dtype=np.float32,
                precision=precision_of(args))
            if len(labels) != len(ds):
                raise UserError(f"{devkit / 'VOC2007'}: {len(ds) - len(labels)} {split} images could not be read; "
                                "every image is needed for the SVM protocol: repair or re-download VOC2007")
            # the labels as the class files say now: the cache key fingerprints file sizes only, so a
            # same-size rewrite of a label file would otherwise be read back with the old labels
            out[split] = (feats, ds.labels.astype(np.int8), list(ds.ids))
            hits.append(hit)
    where = f"{what} on {args.checkpoint}"
    for name in layers:
        check_tap(name, *(out[s][0][name] for s in sets), where=where)
    return ckpt, pools, layers, out, devkit, data_fp, all(hits), size


def pooling_block(pools) -> dict:
    return {p.layer: {"kernel": p.kernel, "stride": p.stride, "padding": p.padding, "out": p.out, "dim": p.dim}
            for p in pools}


# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_feature_arguments(p, DEFAULTS)
    p.add_argument("--folds", type=argtypes.positive_int, default=None,
                   help="cross-validation folds on trainval for choosing C; " + default_help(*DEFAULTS["folds"]))
    p.add_argument("--train-difficult", choices=DIFFICULT_RULES, default="negative",
                   help="difficult-only trainval images: negative (the published rule) or ignore "
                        "(default: negative; on test they are always left out)")


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    proto["costs"] = parse_costs(proto["costs"])
    if proto["folds"] < 2:
        raise UserError(f"--folds {proto['folds']}: cross-validation needs at least 2 folds (published: 3)")
    ckpt, pools, layers, feats, devkit, data_fp, hit, size = voc_features(args, proto, timer, "voc07-svm")
    (xtr, ytr, _), (xte, yte, test_ids) = feats[args.train_split], feats[args.test_split]
    metrics, chosen, per_class, cv_best = {}, {}, {}, {}
    outcomes = Outcomes(ids=test_ids)
    with timer("svm"):
        for name in layers:
            r = voc07_svm(normalise(xtr[name]), ytr, normalise(xte[name]), yte, costs=proto["costs"],
                          folds=proto["folds"], seed=args.seed, n_jobs=args.n_jobs,
                          difficult=args.train_difficult, ap_rule=args.ap, names=VOC_CLASSES)
            metrics[f"{name}_map"] = 100 * r["map"]
            # the test decision values and labels the mAP came from, under the same --ap rule
            outcomes.ap(f"{name}_map", r["scores"], yte, rule=args.ap)
            chosen[name] = dict(zip(VOC_CLASSES, r["chosen"]))
            per_class[name] = {c: (None if np.isnan(a) else round(100 * a, 3)) for c, a in zip(VOC_CLASSES, r["aps"])}
            cv_best[name] = {c: round(100 * float(v.max()), 3) for c, v in zip(VOC_CLASSES, r["cv"])}
    result = make_result(
        task="voc07-svm", variant={"dataset": "voc2007"}, checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "costs": list(proto["costs"]), "svm": "sklearn LinearSVC (liblinear)",
                  "svm_params": {**SVM_PARAMS, "class_weight": {"1": 2, "-1": 1}, "random_state": args.seed},
                  "normalise": "L2 per row, x / (||x|| + 1e-5)", "cost_rule": "max mean cross-validation AP "
                  "(sklearn average_precision) on trainval, per class; refit on trainval",
                  "train_difficult": args.train_difficult,
                  "test_difficult": "left out", "ap": args.ap, "layers": list(layers),
                  "pooling": pooling_block(pools), "transform": "centre crop", "input_size": size,
                  "train_split": args.train_split, "test_split": args.test_split, "seed": args.seed},
        data={"name": "voc2007", "root": str(devkit), "fingerprint": data_fp,
              "sizes": {args.train_split: int(len(ytr)), args.test_split: int(len(yte))}},
        scale=args.scale, timings=timer.timings,
        # C is chosen on trainval alone; test is scored once, at the chosen C
        selection={"rule": "cross-validation", "folds": proto["folds"], "source": args.train_split,
                   "scoring": "mean average_precision over the folds, per tap and class",
                   "chosen_costs": chosen, "epochs": None},
        details={"chosen_costs": chosen, "ap": per_class, "cv_ap_best": cv_best, "feature_cache_hit": hit,
                 "n_jobs": args.n_jobs})  # changes no number: the fits are seeded one by one
    return save_and_report(args, result, outcomes)


TAP_METRIC = r"(conv[1-5]|res[2-5]|res5_gap)"  # AlexNet/VGG16 convs, ResNet taps (linear_probe's names)
register(Task(
    name="voc07-svm",
    description="VOC07 linear SVMs per class on frozen conv1..conv5 (ResNets: conv1, res2-res5, res5_gap), "
                "C by 3-fold CV on trainval; test mAP (Goyal et al. 2019)",
    add_arguments=add_arguments, run=run,
    dataset="VOCdevkit", needs=("VOC2007",),
    # benchmarks/svm_cost.py: about 8-9 CPU-hours of SVMs for AlexNet's 5 taps, so ~35 min on 16 cores
    resources=Resources(1, 16, 64, 2 * 60),
    metrics=TAP_METRIC + r"_map",
    table="voc07-svm",
))

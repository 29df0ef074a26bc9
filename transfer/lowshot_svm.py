"""lowshot-svm: low-shot linear SVMs on frozen features of VOC2007 (Goyal et al. 2019, low-shot image
classification on VOC07).

The features, their normalisation and the SVM are :mod:`dcbench.transfer.voc07_svm`'s. For each k of
``--shots`` and each of ``--draws`` independent draws (numpy ``default_rng([seed, k, draw])``), for each
class: k trainval images where the class is present (label 1) and (classes - 1) * k where it is absent
(label -1) are drawn without replacement; every other trainval image, the difficult-only ones
included, is left out of that class's training (create_voc_low_shot_samples.py: k positives,
19 * k negatives, the rest its ignore label, which train_svm_low_shot.py drops). One SVM per class and
cost, trained on its drawn images only; every SVM is scored on the full test split (difficult-only
images left out; ``--ap`` as voc07-svm), mAP = mean over the classes.

Choosing C: with one positive image there is nothing to cross-validate. ``--selection held-out``
(default): per k, the cost whose mAP on held-out trainval images, averaged over the draws, is highest.
Each (k, draw, class) SVM is scored on the trainval images not drawn for that class in that draw,
difficult-only ones left out (:func:`dcbench.transfer.linear_svm.validation_rows`); a draw's mAP there
is over the classes with a held-out positive. A split disjoint from every draw does not exist: at k = 96 a
draw takes every trainval positive of VOC07's rarest classes and, over the 20 classes, nearly every
image; so the held-out rows are per draw and class, the rest of trainval, and their smallest and
largest counts are recorded in ``selection.split.size``. Test is then scored once, at the chosen cost
(each SVM refitted there: seeded, so the same SVM). ``--selection published`` keeps the published
scripts' rule (aggregate_low_shot_svm_stats.py / VISSL's ``aggregate_stats``): per k, the cost whose
test mAP averaged over the draws is highest -- a choice made on test, recorded as selection rule
``best-on-test``, for comparison with the published tables only. Either way the statistics are the
mean, min, max and std (numpy, ddof 0) over the draws of the test mAP at the chosen cost; the chosen
C per tap and k is in ``selection.chosen`` (and ``details.chosen_costs``), the mAPs the choice was made
on in ``details.val_map`` (held-out; ``details.map``: test, published), every draw's test mAP at the
chosen C in ``details.test_map``.

Result: metrics ``<tap>_k<k>_mean`` / ``_min`` / ``_max`` / ``_std`` (percent); each ``_mean`` has a 95%
bootstrap interval over the test images, from the per-image outcomes beside the result (kind ``ap``
under the ``--ap`` rule: every draw's test decision values per class and the test labels). The drawn
image ids are written beside the result, one JSON file per (k, draw) under
``OUT/lowshot-svm/<checkpoint>-<sha8>/`` (class -> positives, negatives), and listed with their sha256
in ``details.draws``. The draws depend on the seed and the labels only, so every checkpoint evaluated
with one seed sees the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from dcbench import argtypes
from dcbench.atomic import write_text_atomic
from dcbench.datasets import VOC_CLASSES
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.safepath import output_dir
from dcbench.tasks import Resources, Task, register
from dcbench.transfer.linear_svm import (
    LOWSHOT_SELECTIONS,
    PUBLISHED_COSTS,
    SVM_PARAMS,
    draw,
    lowshot_svm,
    normalise,
)
from dcbench.transfer.protocol import Timer, default_help, positive_ints, resolve_protocol, save_and_report
from dcbench.transfer.voc07_svm import (
    TAP_METRIC,
    add_feature_arguments,
    parse_costs,
    pooling_block,
    voc_features,
)

DEFAULTS = {
    "shots": ("1,2,4,8,16,32,64,96", "1,4"),  # create_voc_low_shot_samples.py --k_values
    "draws": (5, 2),                          # create_voc_low_shot_samples.py --num_samples 5
    "costs": (PUBLISHED_COSTS, (0.1, 1.0, 10.0)),  # the voc07-svm list (same scripts); smoke: three of it
    "batch_size": (256, 64),                  # feature extraction only: changes no number
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_feature_arguments(p, DEFAULTS)
    p.add_argument("--shots", default=None, help="k positive images per class; " + default_help(*DEFAULTS["shots"]))
    p.add_argument("--draws", type=argtypes.positive_int, default=None,
                   help="independent draws per k; " + default_help(*DEFAULTS["draws"]))
    p.add_argument("--selection", choices=LOWSHOT_SELECTIONS, default="held-out",
                   help="how C is chosen per k: held-out = on the trainval images each class's draw left out "
                        "(test scored once, at that C); published = the published scripts' rule, the best "
                        "mean test mAP over the draws (a choice made on test) (default: held-out)")


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    proto["costs"] = parse_costs(proto["costs"])
    shots = positive_ints(proto["shots"], "--shots", "1,2,4,8")
    ckpt, pools, layers, feats, devkit, data_fp, hit, size = voc_features(args, proto, timer, "lowshot-svm")
    (xtr, ytr, ids), (xte, yte, test_ids) = feats[args.train_split], feats[args.test_split]
    for k in shots:  # a k the data cannot give is a one-line error before any SVM is trained
        draw(ytr, k, args.seed, 0, VOC_CLASSES)
    held_out = args.selection == "held-out"
    metrics, chosen, maps, test_maps, validation = {}, {}, {}, {}, {}
    outcomes = Outcomes(ids=test_ids)
    with timer("svm"):
        for name in layers:
            r = lowshot_svm(normalise(xtr[name]), ytr, normalise(xte[name]), yte, shots=shots,
                            draws=proto["draws"], costs=proto["costs"], seed=args.seed, n_jobs=args.n_jobs,
                            ap_rule=args.ap, selection=args.selection, names=VOC_CLASSES)
            for k, s in r["per_k"].items():
                for stat in ("mean", "min", "max", "std"):
                    metrics[f"{name}_k{k}_{stat}"] = 100 * s[stat]
                # _mean is the mean over the draws of their test mAP: its outcomes are every draw's test
                # decision values (draws, images, classes); _min/_max/_std are statistics of the draws
                labels = np.broadcast_to(yte, s["scores"].shape)
                outcomes.ap(f"{name}_k{k}_mean", s["scores"], labels, rule=args.ap)
            chosen[name] = {f"k{k}": s["cost"] for k, s in r["per_k"].items()}
            maps[name] = {f"k{k}": np.round(100 * s["maps"], 3).tolist() for k, s in r["per_k"].items()}
            test_maps[name] = {f"k{k}": np.round(100 * s["test_maps"], 3).tolist() for k, s in r["per_k"].items()}
            if held_out:
                validation = {f"k{k}": s["validation"] for k, s in r["per_k"].items()}  # the same for every tap
    if held_out:
        selection = {"rule": "held-out", "chosen": chosen, "criterion": "per k, the highest held-out mAP "
                     "averaged over the draws; test scored once, at that cost",
                     "split": {"source": args.train_split, "seed": args.seed,
                               "rows": "per (k, draw, class): every trainval image not drawn for that class in "
                                       "that draw, difficult-only images left out (no split disjoint from all "
                                       "the draws exists: at k = 96 every positive of some classes is drawn)",
                               "size": validation}}
    else:
        selection = {"rule": "best-on-test", "chosen": chosen,
                     "protocol": "published (aggregate_low_shot_svm_stats.py / VISSL aggregate_stats): per k, "
                                 "the cost with the highest test mAP averaged over the draws"}
    drawn = r["drawn"]  # the same for every tap: they depend on the seed and the labels only
    texts = {}
    for k in shots:
        for d, per_class in enumerate(drawn[k]):
            # the schema name marks the file as dcbench's own, not a result (the leaderboard passes it by)
            texts[k, d] = json.dumps({"schema": "dcbench-lowshot-draw", "k": k, "draw": d, "seed": args.seed,
                                      "split": args.train_split,
                                      "classes": {c: {"positives": [ids[i] for i in pos],
                                                      "negatives": [ids[i] for i in neg]}
                                                  for c, (pos, neg) in zip(VOC_CLASSES, per_class)}}, indent=1) + "\n"
    # the name is meta.json's, i.e. the checkpoint author's: a slug, kept under --out
    folder = output_dir(args.out, "lowshot-svm", f"{ckpt.name}-{ckpt.sha256[:8]}")
    draw_files = [{"k": k, "draw": d, "file": str((folder / f"k{k}_draw{d}.json").relative_to(args.out)),
                   "sha256": hashlib.sha256(t.encode()).hexdigest()} for (k, d), t in texts.items()]
    result = make_result(
        task="lowshot-svm", variant={"dataset": "voc2007", "shots": ",".join(map(str, shots))},
        checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "shots": shots, "costs": list(proto["costs"]), "svm": "sklearn LinearSVC (liblinear)",
                  "svm_params": {**SVM_PARAMS, "class_weight": {"1": 2, "-1": 1}, "random_state": args.seed},
                  "normalise": "L2 per row, x / (||x|| + 1e-5)",
                  "sampling": "per class: k of label 1 and (classes - 1) * k of label -1, without replacement, "
                              "default_rng([seed, k, draw]); the rest (difficult-only included) left out",
                  "selection": args.selection,
                  "cost_rule": ("per k, the cost with the highest mAP on the held-out trainval images averaged "
                                "over the draws" if held_out else
                                "per k, the cost with the highest test mAP averaged over the draws (published "
                                "aggregate_low_shot_svm_stats.py)") + "; std over draws ddof 0",
                  "test_difficult": "left out", "ap": args.ap, "layers": list(layers),
                  "pooling": pooling_block(pools), "transform": "centre crop", "input_size": size,
                  "train_split": args.train_split, "test_split": args.test_split, "seed": args.seed},
        data={"name": "voc2007", "root": str(devkit), "fingerprint": data_fp,
              "sizes": {args.train_split: int(len(ytr)), args.test_split: int(len(yte))}},
        scale=args.scale, timings=timer.timings, selection=selection,
        details={"chosen_costs": chosen, ("val_map" if held_out else "map"): maps, "test_map": test_maps,
                 "draws": draw_files, "feature_cache_hit": hit,
                 "n_jobs": args.n_jobs})  # changes no number: the fits are seeded one by one
    # written once the result is complete and valid; each file atomically
    for (k, d), t in texts.items():
        write_text_atomic(folder / f"k{k}_draw{d}.json", t)
    return save_and_report(args, result, outcomes)


register(Task(
    name="lowshot-svm",
    description="VOC07 low-shot linear SVMs: k positives per class (k = 1..96), 5 draws, mean/min/max/std test "
                "mAP per frozen tap (Goyal et al. 2019)",
    add_arguments=add_arguments, run=run,
    dataset="VOCdevkit", needs=("VOC2007",),
    # benchmarks/svm_cost.py: about 8-9 CPU-hours of SVMs for AlexNet's 5 taps, so ~35 min on 16 cores
    resources=Resources(1, 16, 64, 2 * 60),
    metrics=TAP_METRIC + r"_k[0-9]+_(mean|min|max|std)",
    table="lowshot-svm",
))

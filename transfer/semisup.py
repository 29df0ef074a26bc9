"""semisup: ImageNet semi-supervised fine-tuning on 1% and 10% of the labelled train images
(the SimCLR subsets, as SimCLR appendix B.5, VISSL and mmselfsup report them).

For each fraction of ``--fractions`` the whole network (Sobel excepted) is fine-tuned from the
checkpoint with a new linear classifier on its descriptor (fc7; a ResNet's pooled res5), on that
fraction of the train split only; top-1 and top-5 on the full val split after the last step.

The images of a fraction come from ``--subset-1`` / ``--subset-10``: a text file with one image
file name per line, the format of SimCLR's ``imagenet_subsets/1percent.txt`` and ``10percent.txt``
(``n01440764_10026.JPEG``), matched to the train split's images by file name (a line holding a
'/' is a path relative to the train split). Without one, a class-balanced subset is drawn: from
each class, ``round(fraction% x its image count)`` images (at least one), numpy
``default_rng([seed, fraction])`` over the class's images in path order; that list is saved in the
same format to ``OUT/semisup/<checkpoint>-<sha8>/<fraction>percent_seed<seed>.txt``, so it can be
passed back with ``--subset-<fraction>``. A list naming images the split lacks, naming one twice,
or leaving a class without an image is refused before anything runs or is written.

Result (one per checkpoint): metrics ``top1_<f>pct`` / ``top5_<f>pct`` (percent) for each
fraction f; variant ``fractions`` ("1,10"); selection ``final``. Each fraction's image list
(its file, sha256, images, classes) and step count is in ``details.subsets``. Outcomes: the
per-image top-1 and top-5 hits of every metric. Nothing is chosen from data (fixed epochs, the lr a
fixed rule of the batch size), hence ``final``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dcbench import argtypes
from dcbench.atomic import write_text_atomic
from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import ImageFolder, fingerprint
from dcbench.errors import UserError
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.safepath import output_dir
from dcbench.tasks import Resources, Task, register
from dcbench.text import printable
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    align_classes,
    dataset_dir,
    default_help,
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

FRACTIONS = (1, 10)  # percent of the labelled train images: SimCLR's two subsets
MAX_LIST_BYTES = 64 * 2**20  # SimCLR's 10percent.txt is 2.6 MB; a list this size is not one

# (full, smoke). Full: SimCLR appendix B.5's fine-tuning (VISSL's semi_supervised configs agree on
# optimizer, momentum, regularisation, learning-rate rule and crops). Smoke: our budget, about a
# minute for both fractions on the embedded data (1 and 6 images per class) on two CPU cores.
DEFAULTS = {
    "fractions": ("1,10", "1,10"),
    "epochs_1": (60, 20),         # SimCLR B.5: 60 epochs on 1% of the labels
    "epochs_10": (30, 5),         # SimCLR B.5: 30 epochs on 10%
    "batch_size": (256, 16),      # VISSL eval_resnet_8gpu_transfer_in1k_semi_sup_fulltune: 8 x 32 (SimCLR: 4096)
    # full: None = SimCLR B.5's rule 0.05 x batch / 256 (VISSL: base 0.05 at 256, auto-scaled);
    # smoke: the rule's 0.05 unscaled, since ~20 steps at 0.003 leave the weights where they were
    "lr": (None, 0.05),
    "momentum": (0.9, 0.9),       # SimCLR B.5 and VISSL: Nesterov momentum 0.9
    "weight_decay": (0.0, 0.0),   # SimCLR B.5: no regularisation at all (VISSL: weight_decay 0)
    "lr_schedule": ("cosine", "cosine"),  # SimCLR code (model_util.learning_rate_schedule): cosine decay, no warmup
    "train_aug": ("rrc-flip", "rrc-flip"),  # SimCLR B.5: random crop, left-right flip, resize to 224
    "eval_crops": (1, 1),         # SimCLR B.5: one 224 centre crop (VISSL: Resize 256, CenterCrop 224)
}


def parse_fractions(spec: str) -> list[int]:
    parts = [s.strip() for s in str(spec).split(",") if s.strip()]
    try:
        fracs = sorted({int(s) for s in parts})
    except ValueError:
        fracs = []
    if not fracs or any(f not in FRACTIONS for f in fracs):
        raise UserError(f"--fractions {printable(spec)}: give 1, 10 or 1,10 (percent of the labelled images)")
    return fracs


def steps_for(n_images: int, epochs: int, batch_size: int) -> int:
    """SimCLR's step count (model_util.get_train_steps): images x epochs // batch + 1."""
    return n_images * epochs // batch_size + 1


def cosine_lr(lr: float, iterations: int):
    """Cosine decay from ``lr`` to 0 over ``iterations`` steps, no warmup (SimCLR's schedule)."""
    return lambda it: 0.5 * lr * (1.0 + math.cos(math.pi * min(it, iterations) / iterations))


# --------------------------------------------------------------------------------------------
# Subsets: drawn, written and read in SimCLR's list format


def draw_balanced(targets: list[int], paths: list[str], fraction: int, seed: int) -> list[int]:
    """Indices of ``fraction`` percent of each class's images (rounded, at least one), drawn without
    replacement from the class's images in path order; deterministic in (seed, fraction)."""
    rng = np.random.default_rng([seed, fraction])
    targets = np.asarray(targets)
    out: list[int] = []
    for c in np.unique(targets):
        ix = sorted(np.flatnonzero(targets == c).tolist(), key=lambda i: paths[i])
        n = max(1, round(len(ix) * fraction / 100))
        out.extend(ix[j] for j in rng.choice(len(ix), n, replace=False))
    return sorted(out)


def list_names(paths: list[str], train_root: Path) -> list[str]:
    """How each train image is written in a list: its file name, as SimCLR's lists do, unless two
    images of the split share one (then every image is written by its path under the split)."""
    base = [os.path.basename(p) for p in paths]
    if len(set(base)) == len(base):
        return base
    return [Path(p).relative_to(train_root).as_posix() for p in paths]


def subset_text(idx: list[int], names: list[str]) -> str:
    return "".join(f"{names[i]}\n" for i in idx)


def read_subset(path: Path, flag: str, paths: list[str], targets: list[int], classes: list[str],
                train_root: Path) -> tuple[list[int], str]:
    """The train indices a list names, and its text; every way a list can be wrong is one line
    naming the file and the fix."""
    where = f"{flag} {printable(path)}"
    try:
        if path.stat().st_size > MAX_LIST_BYTES:
            raise UserError(f"{where}: larger than {MAX_LIST_BYTES >> 20} MiB, so not an image list; pass "
                            "SimCLR's 1percent.txt / 10percent.txt or a list in that format")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{where}: no such file; pass an existing image list, or leave the flag out to draw one") from None
    except IsADirectoryError:
        raise UserError(f"{where}: a folder, not a file; pass the image list itself") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not UTF-8 text; pass a list of image file names, one per line") from None
    except OSError as e:
        raise UserError(f"{where}: cannot read it ({e.strerror or e}); check the path") from None
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    if not lines:
        raise UserError(f"{where}: names no image; pass a list of image file names, one per line")
    by_name: dict[str, list[int]] = {}
    by_rel: dict[str, int] = {}
    for i, p in enumerate(paths):
        by_name.setdefault(os.path.basename(p), []).append(i)
        by_rel[Path(p).relative_to(train_root).as_posix()] = i
    missing, ambiguous, idx = [], [], []
    for name in lines:
        hit = [by_rel[name]] if name in by_rel else by_name.get(name, [])
        if not hit:
            missing.append(name)
        elif len(hit) > 1:
            ambiguous.append(name)
        else:
            idx.append(hit[0])
    if missing:
        raise UserError(f"{where}: {len(missing)} of its {len(lines)} names are not images of {printable(train_root)} "
                        f"(first: {printable(missing[0], 80)}); pass the list made for this dataset's train split, "
                        f"or leave {flag} out to draw one")
    if ambiguous:
        raise UserError(f"{where}: {len(ambiguous)} names match several images of {printable(train_root)} (first: "
                        f"{printable(ambiguous[0], 80)}); write those lines as paths under the train split (class/file)")
    counts = Counter(idx)
    dups = [i for i, k in counts.items() if k > 1]
    if dups:
        first = os.path.basename(paths[dups[0]])
        raise UserError(f"{where}: {len(dups)} images are listed more than once (first: {printable(first, 80)}, "
                        f"{counts[dups[0]]} times); list each image once")
    covered = {targets[i] for i in idx}
    empty = [c for i, c in enumerate(classes) if i not in covered]
    if empty:
        raise UserError(f"{where}: {len(empty)} of the {len(classes)} classes have no image in it (first: "
                        f"{printable(empty[0], 80)}); every class needs at least one labelled image")
    return sorted(idx), text


# --------------------------------------------------------------------------------------------
# The task


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    add_input_size_argument(p)
    p.add_argument("--fractions", default=None,
                   help="percent of the labelled train images, 1, 10 or 1,10 (" + default_help(*d["fractions"]) + ")")
    for f in FRACTIONS:
        p.add_argument(f"--subset-{f}", type=Path, default=None, metavar="FILE",
                       help=f"the {f}%% images, one file name per line as SimCLR's {f}percent.txt "
                            "(default: a class-balanced draw, saved beside the result)")
        p.add_argument(f"--epochs-{f}", type=argtypes.positive_int, default=None,
                       help=f"epochs over the {f}%% subset (" + default_help(*d[f"epochs_{f}"]) + ")")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help="images per step, capped by the subset size (" + default_help(*d["batch_size"]) + ")")
    p.add_argument("--lr", type=argtypes.positive_float, default=None,
                   help="peak learning rate, cosine-decayed to 0 (default: 0.05 x batch size / 256 (full), 0.05 (smoke))")
    p.add_argument("--momentum", type=argtypes.fraction, default=None,
                   help="Nesterov momentum (" + default_help(*d["momentum"]) + ")")
    p.add_argument("--weight-decay", type=argtypes.nonneg_float, default=None,
                   help="weight decay (" + default_help(*d["weight_decay"]) + ")")
    p.add_argument("--eval-crops", type=int, choices=(1, 10), default=None,
                   help="crops per val image (" + default_help(*d["eval_crops"]) + ")")


def resolve(args: argparse.Namespace) -> tuple[dict, list[int]]:
    """The protocol (flags over the --scale defaults, the lr rule applied) and the fractions to run."""
    proto = resolve_protocol(args, DEFAULTS)
    fractions = parse_fractions(proto["fractions"])
    proto["fractions"] = ",".join(map(str, fractions))
    if proto["lr"] is None:
        proto["lr"] = 0.05 * proto["batch_size"] / 256
    return proto, fractions


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto, fractions = resolve(args)
    unused = [f for f in FRACTIONS if f not in fractions and getattr(args, f"subset_{f}", None) is not None]
    if unused:
        raise UserError(f"--subset-{unused[0]} was given but --fractions {proto['fractions']} leaves {unused[0]}% "
                        f"out; add {unused[0]} to --fractions or drop --subset-{unused[0]}")
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = input_size(args, ckpt.meta)
        root = dataset_dir(args, "classification", ("train", "val"))
        train = ImageFolder(root / "train", train_transform(ckpt.meta, size, proto["train_aug"], loader_of(args)))
        val = ImageFolder(root / "val", eval_crops_transform(ckpt.meta, size, proto["eval_crops"], loader_of(args)))
        remap_targets(val, align_classes(train.classes, val.classes, str(root / "val")))
        data_fp = fingerprint(root)
    paths, targets = [s[0] for s in train.samples], train.targets
    names = list_names(paths, root / "train")
    # Every subset is settled (read and checked, or drawn) before any training or writing.
    subsets = {}
    for f in fractions:
        given = getattr(args, f"subset_{f}", None)
        if given is not None:
            idx, text = read_subset(given, f"--subset-{f}", paths, targets, train.classes, root / "train")
            subsets[f] = {"idx": idx, "text": text, "source": "file", "file": str(given)}
        else:
            idx = draw_balanced(targets, paths, f, args.seed)
            subsets[f] = {"idx": idx, "text": subset_text(idx, names), "source": "drawn", "file": None}
    precision = precision_of(args)

    def val_loader():
        return training.loader(val, max(1, proto["batch_size"] // 2), shuffle=False, workers=args.workers)

    metrics, details = {}, {}
    outcomes = Outcomes(ids=sample_ids(val))
    for f in fractions:
        sub = subsets[f]
        data = torch.utils.data.Subset(train, sub["idx"])
        bs = min(proto["batch_size"], len(data))
        iterations = steps_for(len(data), proto[f"epochs_{f}"], bs)
        run_seed = int(np.random.SeedSequence([args.seed, f]).generate_state(1)[0])
        with timer(f"train_{f}pct"):
            torch.manual_seed(run_seed)
            net = training.place(training.with_new_classifier(copy.deepcopy(ckpt.model), len(train.classes)),
                                 args.device, precision)
            training.finetune_whole(net, training.endless_loader(data, bs, run_seed, args.workers),
                                    iterations=iterations, lr_at=cosine_lr(proto["lr"], iterations),
                                    momentum=proto["momentum"], weight_decay=proto["weight_decay"],
                                    nesterov=proto["momentum"] > 0, device=args.device, precision=precision,
                                    desc=f"fine-tune {f}%")
        with timer(f"eval_{f}pct"):
            scores, ys = training.predict_crops(net, val_loader, args.device, precision)
        training.record_hits(metrics, outcomes, f"top1_{f}pct", training.hits_top1(scores, ys))
        training.record_hits(metrics, outcomes, f"top5_{f}pct", training.hits_topk(scores, ys, 5))
        details[f"{f}pct"] = {"source": sub["source"], "file": sub["file"], "images": len(data),
                              "classes": len({targets[i] for i in sub["idx"]}), "batch_size": bs,
                              "iterations": iterations, "seed": run_seed,
                              "sha256": hashlib.sha256(sub["text"].encode()).hexdigest()}
    # Drawn lists are written only now, beside the result: a run that failed leaves none behind.
    drawn = [f for f in fractions if subsets[f]["source"] == "drawn"]
    if drawn:
        list_dir = output_dir(args.out, "semisup", f"{ckpt.name}-{ckpt.sha256[:8]}")
        for f in drawn:
            details[f"{f}pct"]["file"] = str(write_text_atomic(list_dir / f"{f}percent_seed{args.seed}.txt",
                                                               subsets[f]["text"]))
    result = make_result(
        task="semisup", variant={"dataset": "imagenet", "fractions": proto["fractions"]},
        checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "optimizer": "SGD, Nesterov momentum", "loss": "cross-entropy",
                  "steps": "images x epochs // batch + 1 (SimCLR)",
                  "trained": "whole network (Sobel frozen), BatchNorm in train mode",
                  "classifier": "new linear on the descriptor, N(0, 0.01)",
                  "draw_rule": "per class round(fraction% x images), at least 1; default_rng([seed, fraction])",
                  "match_rule": "list lines are train file names (or paths under train/)",
                  "eval_rule": "softmax averaged over crops", "input_size": size, "seed": args.seed},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp,
              "sizes": {"train": len(train), "val": len(val)}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"subsets": details, "classes": len(train.classes)})
    return save_and_report(args, result, outcomes)


register(Task(
    name="semisup",
    description="whole net fine-tuned on 1% and 10% of ImageNet's labelled images (SimCLR subsets); top-1/top-5",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("train", "val"), resources=Resources(1, 10, 64, 8 * 60),
    metrics=r"top[15]_(1|10)pct",
    table="semisup",
))

"""linear-imagenet, linear-places: linear probes on frozen conv1..conv5 (thesis Tables 5.3, 5.4).

The trunk is frozen and in eval mode. The output of each probed conv, after its ReLU, is
average-pooled (kernel = stride) to at most 10,000 dims and fed to its own linear classifier.
All five classifiers train together: one trunk forward per batch feeds all five heads (the
original scripts ran one job per layer, each repeating the trunk forward).

Probed layers: AlexNet conv1..conv5; VGG16 the last conv of each block (conv1_2, conv2_2,
conv3_3, conv4_3, conv5_3), named conv1..conv5. ResNets: conv1 (after bn1 and ReLU), res2..res5
(torchvision's layer1..layer4), each pooled by the same rule, plus ``res5_gap``: res5 globally
average-pooled (2,048-d), the standard linear probe of today's ResNet papers.

Pooling rule (:func:`pooling_for`): for a layer with C channels and an S x S map, the output
side is the largest o with C * o^2 <= 10,000 that AvgPool2d(k, stride=k, padding=p) can give
(p <= k / 2), with the smallest such k, then the smallest p. At 224 px this reproduces the
original AlexNet settings exactly (conv1 6/6 pad 3 -> 9600, conv2 4/4 -> 9216, conv3 and conv4
3/3 pad 1 -> 9600, conv5 2/2 -> 9216); smaller inputs give smaller maps and never upsample
(k = 1 when S^2 * C is already under the cap).

Result (one per dataset), ``--selection held-out`` (the default): a class-balanced split of the
TRAIN split (``--val-size``; :func:`dcbench.transfer.protocol.held_out_split`) is left out of
training; each head's epoch is the one of its best top-1 on it, the head is put back in its state
of that epoch, and the test split is scored once. Metrics ``conv1``..``conv5`` = those test top-1
(%); selection ``held-out`` with the ``split`` (source, size, per_class, seed), ``chosen_epochs``
(1-based) and ``held_out_top1`` per layer.

``--selection thesis`` (the thesis's rule, which chooses on the test set): trained on the whole
train split, the test split scored after every epoch; ``conv1``..``conv5`` = top-1 after the last
epoch and ``conv1_best``..``conv5_best`` = the best over epochs; selection ``last+best`` with
``best_epochs`` per layer and ``best_epoch`` = the last layer's.

Outcomes: every metric's per-image test top-1 hits.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import ImageFolder, ListFileDataset, fingerprint
from dcbench.errors import UserError
from dcbench.models import conv_shapes, get_architecture
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
    check_list_labels,
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

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
GAP = "res5_gap"
MAX_DIM = 10_000  # thesis §5.1: "a dimensionality between 9000 and 10000"

# Protocol defaults: (full, smoke). Full = the original scripts; smoke = seconds on a CPU.
DEFAULTS = {
    "epochs": (90, 20),            # thesis §5.1 "maximum ... amongst 90 epochs"; eval_linear.py --epochs 90
    "batch_size": (256, 128),      # eval_linear.py --batch_size 256
    "lr": (0.01, 0.01),            # eval_linear.py / eval_linear.sh --lr 0.01
    "momentum": (0.9, 0.9),        # eval_linear.py --momentum 0.9
    "weight_decay": (1e-7, 1e-7),  # eval_linear.sh --wd -7 (eval_linear.py's own default is 1e-4)
    "train_aug": ("crop-flip", "none"),  # eval_linear.py: Resize 256, CenterCrop 256, RandomCrop 224, flip
    "eval_crops": (10, 1),         # eval_linear.sh --tencrops; thesis §5.1 "averaged over 10 crops"
}


@dataclass(frozen=True)
class Pool:
    layer: str
    channels: int
    spatial: int
    kernel: int
    padding: int
    out: int

    @property
    def stride(self) -> int:
        return self.kernel

    @property
    def dim(self) -> int:
        return self.channels * self.out * self.out


def choose_pool(channels: int, side: int, max_dim: int = MAX_DIM) -> tuple[int, int, int]:
    """(kernel, padding, out side) by the rule in the module docstring."""
    o_max = max(1, math.isqrt(max_dim // channels))
    for o in range(min(o_max, side), 0, -1):
        for k in range(1, side + 1):
            for p in range(0, k // 2 + 1):
                if (side + 2 * p - k) // k + 1 == o:
                    return k, p, o
    return side, 0, 1


def layer_names(arch: str) -> tuple[str, ...]:
    """The probed layers of ``arch``: conv1..conv5; for a ResNet conv1, res2..res5 and res5_gap."""
    a = get_architecture(arch)
    return (*a.taps, GAP) if a.family == "resnet" else LAYERS


def pooling_for(arch: str, input_size: int) -> list[Pool]:
    """The average pooling of each probed layer (:func:`layer_names`) for ``arch`` at ``input_size``."""
    convs = conv_shapes(arch, input_size)[:-1]  # the last entry is the trunk output
    a = get_architecture(arch)
    pools = []
    for name, idx in zip(layer_names(arch), a.probe_taps):
        c, side, _ = convs[idx]
        if side < 1:
            raise UserError(f"input size {input_size} is too small for {arch} {name}")
        k, p, o = choose_pool(c, side)
        pools.append(Pool(name, c, side, k, p, o))
    if a.family == "resnet":  # global average pool of res5: one window over the whole map
        c, side, _ = convs[a.probe_taps[-1]]
        pools.append(Pool(GAP, c, side, side, 0, 1))
    return pools


def make_forward(model, pools: list[Pool], layers: tuple[str, ...]):
    """x -> pooled, flattened features of ``layers``: ONE trunk forward, stopped after the deepest."""
    if model.arch.family == "resnet":
        return _resnet_forward(model, pools, layers)
    wanted = {model.arch.probe_taps[LAYERS.index(n)]: n for n in layers}
    relus = model.conv_relu_indices
    last_module = relus[max(wanted)]
    avg = {p.layer: nn.AvgPool2d(p.kernel, stride=p.stride, padding=p.padding) for p in pools}

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        if model.sobel is not None:
            x = model.sobel(x)
        got = {}
        conv = 0
        for i, m in enumerate(model.features):
            x = m(x)
            if i in relus:
                if conv in wanted:
                    got[wanted[conv]] = avg[wanted[conv]](x).flatten(1)
                conv += 1
            if i == last_module:
                break
        return [got[n] for n in layers]

    return forward


def _resnet_forward(model, pools: list[Pool], layers: tuple[str, ...]):
    taps = model.arch.taps
    index = {n: taps.index(n) if n != GAP else len(taps) - 1 for n in layers}
    avg = {p.layer: nn.AvgPool2d(p.kernel, stride=p.stride, padding=p.padding) for p in pools}

    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        outs = model.tap_outputs(x, upto=max(index.values()))
        return [avg[n](outs[index[n]]).flatten(1) for n in layers]

    return forward


# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    add_input_size_argument(p)
    add_sgd_arguments(p, DEFAULTS)
    add_selection_arguments(p)
    p.add_argument("--layers", default=None,
                   help="comma-separated subset of conv1..conv5 (ResNets: conv1,res2,res3,res4,res5,res5_gap) "
                        "(default: all of the checkpoint's)")
    if task == "linear-places":
        p.add_argument("--images", type=Path, default=None,
                       help="Places205 image root (default: DATA/images); list files in "
                            "DATA/trainvalsplit_places205/{train,val}_places205.csv")
    p.set_defaults(task_name=task)


def parse_layers(spec: str | None, names: tuple[str, ...] = LAYERS) -> tuple[str, ...]:
    if spec is None:
        return names
    layers = tuple(s.strip() for s in spec.split(",") if s.strip())
    bad = [s for s in layers if s not in names]
    if bad or not layers:
        raise UserError(f"--layers {spec}: choose a comma-separated subset of {','.join(names)} (this checkpoint's)")
    return tuple(n for n in names if n in layers)


def load_data(args: argparse.Namespace, task: str, meta: dict, size: int, proto: dict):
    """(train dataset, val dataset, number of classes, dataset folder, name)."""
    train_tf = train_transform(meta, size, proto["train_aug"], loader_of(args))
    val_tf = eval_crops_transform(meta, size, proto["eval_crops"], loader_of(args))
    if task == "linear-imagenet":
        root = dataset_dir(args, "classification", ("train", "val"))
        train = ImageFolder(root / "train", train_tf)
        val = ImageFolder(root / "val", val_tf)
        remap_targets(val, align_classes(train.classes, val.classes, str(root / "val")))
        return train, val, len(train.classes), root, "imagenet"
    root = dataset_dir(args, "places", ("trainvalsplit_places205",))
    images = args.images or (root / "images" if (root / "images").is_dir() else root)
    lists = root / "trainvalsplit_places205"
    train = ListFileDataset(images, lists / "train_places205.csv", train_tf)
    val = ListFileDataset(images, lists / "val_places205.csv", val_tf)
    check_list_labels(train.targets, val.targets, str(lists / "val_places205.csv"))
    return train, val, max(train.targets) + 1, root, "places205"


def run(args: argparse.Namespace) -> Path:
    task = args.task_name
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = input_size(args, ckpt.meta)
        arch = ckpt.meta["arch"]
        layers = parse_layers(args.layers, layer_names(arch))
        pools = [p for p in pooling_for(arch, size) if p.layer in layers]
        train, val, n_classes, root, name = load_data(args, task, ckpt.meta, size, proto)
        data_fp = fingerprint(root)
    seed_everything(args.seed)
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    before = training.parameter_snapshot(model)
    forward = make_forward(model, pools, layers)
    heads = nn.ModuleList([nn.Linear(p.dim, n_classes) for p in pools]).to(args.device)
    thesis = args.selection == "thesis"
    base = {"kind": "conv-avgpool", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp,
            "input_size": size, "pools": [asdict(p) for p in pools], "dtype": "float16"}
    data = training.head_data(args, proto, train=train, val=val, forward=forward, names=layers, base_key=base,
                              dtype=np.float16, timer=timer, held_out=not thesis, precision=precision_of(args))
    with timer("train"):
        fit = training.fit_heads(heads, data, epochs=proto["epochs"], lr=proto["lr"], momentum=proto["momentum"],
                                 weight_decay=proto["weight_decay"], device=args.device, desc=task,
                                 precision=precision_of(args))
    training.assert_unchanged(model, before, "linear probe: frozen trunk")
    outcomes = Outcomes(ids=sample_ids(val))
    metrics = {}
    chosen = {p.layer: e + 1 for p, e in zip(pools, fit.chosen)}
    for i, p in enumerate(pools):
        training.record_hits(metrics, outcomes, p.layer, fit.test_hits[i])
        if thesis:
            training.record_hits(metrics, outcomes, f"{p.layer}_best", fit.best_hits[i])
    history = {p.layer: [round(v, 3) for v in h] for p, h in zip(pools, fit.history)}
    if thesis:
        selection = {"rule": "last+best", "epochs": proto["epochs"], "best_epoch": chosen[layers[-1]],
                     "best_epochs": chosen,
                     "note": "the thesis's rule: the test split scored after every epoch, the last and the "
                             "best reported (the best is chosen on the test set)"}
        details_history = {"history_top1": history}
    else:
        selection = {"rule": "held-out", "epochs": proto["epochs"], "split": data.split,
                     "chosen_epochs": chosen,
                     "held_out_top1": {p.layer: round(h[e], 4) for p, h, e in zip(pools, fit.history, fit.chosen)},
                     "note": "each layer's epoch chosen by top-1 on the held-out split of train; the test "
                             "split scored once, with each head in its state of that epoch"}
        details_history = {"held_out_history_top1": history}
    result = make_result(
        task=task, variant={"dataset": name}, checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "optimizer": "SGD", "lr_schedule": "lr0/sqrt(1+lr0*wd*t) per iteration (eval_linear.py)",
                  "loss": "cross-entropy", "trunk": "frozen, eval mode (BatchNorm running statistics)",
                  "eval_rule": "softmax averaged over crops" if proto["eval_crops"] > 1 else "centre crop",
                  "input_size": size, "layers": list(layers), "one_pass": True,
                  "pooling": {p.layer: {"kernel": p.kernel, "stride": p.stride, "padding": p.padding,
                                        "out": p.out, "dim": p.dim} for p in pools},
                  "selection": args.selection, "seed": args.seed},
        data={"name": name, "root": str(root), "fingerprint": data_fp, "sizes": data.sizes},
        scale=args.scale, timings=timer.timings, selection=selection,
        details={**details_history, "classes": n_classes, "feature_cache_hit": data.cache_hit,
                 "trunk_unchanged": True})
    return save_and_report(args, result, outcomes)


_PROBED = r"(conv[1-5](_[1-9])?|res[2-5]|res5_gap)(_best)?"  # AlexNet/VGG16 convs, ResNet stages
# One protocol, two tasks: they differ in data only (and Places's --images), not in code.
register(Task(
    name="linear-imagenet",
    description="ImageNet (ImageFolder): linear classifiers on frozen conv1..conv5, average-pooled to "
                "<=10k dims (Table 5.3)",
    add_arguments=functools.partial(add_arguments, task="linear-imagenet"), run=run,
    dataset="imagenet", needs=("train", "val"), resources=Resources(1, 10, 64, 48 * 60),
    metrics=_PROBED,
    table="linear-imagenet",
))
register(Task(
    name="linear-places",
    description="Places205 (list files): linear classifiers on frozen conv1..conv5, average-pooled to "
                "<=10k dims (Table 5.4)",
    add_arguments=functools.partial(add_arguments, task="linear-places"), run=run,
    dataset="places205", needs=("trainvalsplit_places205",), resources=Resources(1, 10, 64, 48 * 60),
    metrics=_PROBED,
    table="linear-places",
))

"""voc-classification: PASCAL VOC2007 multi-label classification, trainval -> test (thesis Table 5.5).

``--layers fc6-8``: the conv trunk is frozen; fc6, fc7 and a new 20-way fc8 are trained.
``--layers res5`` (ResNets, which have no fc6/fc7): the trunk is frozen and a new 20-way linear
layer is trained on res5, globally average-pooled (2,048-d), with fc6-8's schedule (our choice).
``--layers all``: the whole network is fine-tuned (Sobel excepted). In both, fc6-fc8 start
from a fresh initialisation (``--fc-init random``, as DeepCluster's scripts do; ``checkpoint``
keeps the checkpoint's fc6/fc7) and BatchNorm uses its running statistics throughout.

Loss: binary cross-entropy per class, summed over classes, averaged over the batch, with the
"difficult only" labels (0) masked out. Training crops: flip + RandomResizedCrop (scale
0.1-0.5, ratio 1). Test: the scores of 10 such random crops are summed per image; per class,
AP over the test images whose label is not "difficult only" (sklearn's non-interpolated
``average_precision_score`` rule: tied scores form one threshold); mAP = mean over classes
with at least one positive.

Result: metric ``map`` (percent) with its 95% bootstrap interval over the test images; per-class APs
in ``details.ap``; variant ``layers``; selection ``final`` (after the fixed number of iterations: no
choice is made from data). Per-image outcomes beside the result (:mod:`dcbench.outcomes`, kind ``ap``,
rule ``sklearn``): each scored test image's summed crop scores per class and its labels (1, -1, 0 =
difficult only, left out); an unreadable test image is not scored and not among them.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import transforms as T

from dcbench import argtypes
from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import VOC_CLASSES, VOCClassification, collate_skip_none, fingerprint
from dcbench.errors import UserError
from dcbench.outcomes import Outcomes
from dcbench.progress import progress
from dcbench.results import checkpoint_block, make_result
from dcbench.seeding import seed_everything
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    RepeatedCrops,
    Timer,
    add_input_size_argument,
    dataset_dir,
    input_size,
    normalize,
    precision_of,
    resolve_protocol,
    save_and_report,
)

LAYERS = ("fc6-8", "res5", "all")

# Protocol defaults per --layers: (full, smoke).
DEFAULTS = {
    "fc6-8": {
        "iterations": (150000, 40),  # eval_voc_classif_fc6_8.sh -nit 150000
        "batch_size": (16, 16),      # eval_voc_classif_fc6_8.sh BSZ=16
        "lr": (0.003, 0.003),        # eval_voc_classif_fc6_8.sh LR=0.003 (= eval_voc_classif.py default)
        "stepsize": (5000, 20),      # eval_voc_classif_fc6_8.sh stepsize=5000
    },
    "res5": {  # a linear layer on frozen features, like fc6-8's: its schedule (our choice)
        "iterations": (150000, 40),
        "batch_size": (16, 16),
        "lr": (0.003, 0.003),
        "stepsize": (5000, 20),
    },
    "all": {
        "iterations": (150000, 40),  # eval_voc_classif_all.sh -nit 150000
        "batch_size": (16, 16),      # eval_voc_classif_all.sh BSZ=16
        "lr": (0.001, 0.001),        # eval_voc_classif_all.sh LR=0.001
        "stepsize": (20000, 20),     # eval_voc_classif_all.sh stepsize=20000
    },
    "common": {
        "lr_gamma": (0.5, 0.5),          # eval_voc_classif.py: lr *= 0.5 every stepsize iterations
        "momentum": (0.9, 0.9),          # eval_voc_classif.py momentum=0.9
        "weight_decay": (1e-6, 1e-6),    # eval_voc_classif.py --wd 1e-6
        "grad_clip": (10.0, 10.0),       # eval_voc_classif.py clip_grad_norm_(..., 10)
        "min_scale": (0.1, 0.1),         # eval_voc_classif.py --min_scale 0.1
        "max_scale": (0.5, 0.5),         # eval_voc_classif.py --max_scale 0.5
        "test_crops": (10, 3),           # eval_voc_classif.py: 10 random crops at test
    },
}


def resolve_layers(layers: str | None, family: str, path) -> str:
    """``--layers`` for this checkpoint: fc6-8 needs fc6/fc7, res5 a ResNet; default fc6-8 / res5."""
    resnet = family == "resnet"
    if layers is None:
        return "res5" if resnet else "fc6-8"
    if layers == "fc6-8" and resnet:
        raise UserError(f"--layers fc6-8: {path} is a ResNet, which has no fc6/fc7; use --layers res5 "
                        "(linear on pooled res5) or all")
    if layers == "res5" and not resnet:
        raise UserError(f"--layers res5 is for ResNet checkpoints; {path} has fc6/fc7: use --layers fc6-8 or all")
    return layers


def build_model(model, fc_init: str) -> nn.Module:
    """A copy of the checkpoint's network with a new 20-way top layer (fc8; ResNets: on pooled res5)."""
    net = copy.deepcopy(model)
    if net.arch.family == "resnet":
        net.top_layer = nn.Linear(net.arch.descriptor_dim, len(VOC_CLASSES))
        net.top_layer.bias.data.fill_(0.1)
        return net
    if fc_init == "random":
        for m in net.classifier.modules():
            if isinstance(m, nn.Linear):
                training.init_linear(m, bias=0.1)  # eval_voc_classif.py: N(0, 0.01), bias 0.1
    net.top_layer = nn.Linear(net.classifier[net.fc_indices[1]].out_features, len(VOC_CLASSES))
    net.top_layer.bias.data.fill_(0.1)  # eval_voc_classif.py: default weight init, bias 0.1
    return net


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over classes of BCE against targets > 0, labels 0 (difficult only) masked; mean over batch."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, (targets > 0).float(), reduction="none")
    return loss.masked_fill(targets == 0, 0).sum() / targets.shape[0]


def trainable(net: nn.Module, layers: str) -> list[nn.Parameter]:
    for p in net.parameters():
        p.requires_grad = False
    if layers == "all":
        params = [p for n, p in net.named_parameters() if not n.startswith("sobel.")]
    else:
        mods = [net.top_layer] + ([net.classifier] if layers == "fc6-8" else [])
        params = [p for m in mods for p in m.parameters()]
    for p in params:
        p.requires_grad = True
    return params


def train(net: nn.Module, params, loader, *, iterations: int, lr: float, stepsize: int, gamma: float,
          momentum: float, weight_decay: float, clip: float, device: str, precision: str = "fp32") -> list[float]:
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    losses = training.DeviceLosses()
    net.train()
    for m in net.modules():  # eval_voc_classif.py: "in the batch norms always use global statistics"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    for it, (x, y) in enumerate(progress(training.steps(loader, iterations), total=iterations,
                                         desc="voc train")):
        if it and it % stepsize == 0:
            for g in opt.param_groups:
                g["lr"] *= gamma
        with training.amp(precision, device):
            out = net(x.to(device))
        loss = masked_bce(out.float(), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        losses.append(loss)
    return losses.flush()


class Indexed(torch.utils.data.Dataset):
    """``(x, y, index)`` of a dataset whose items are ``(x, y)`` or None (unreadable): the scored test
    images are known by index, so the per-image outcomes name exactly the images the mAP ranked."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        item = self.ds[i]
        return None if item is None else (*item, i)


def evaluate(net: nn.Module, batches, device: str, precision: str = "fp32"
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores summed over each image's crops (B, n, C, H, W inputs), the targets, and the images'
    indices (batches of :class:`Indexed`)."""
    net.eval()
    scores, targets, index = [], [], []
    with torch.no_grad():
        for batch in batches:
            if batch is None:
                continue
            x, y, i = batch
            n = x.shape[1]
            with training.amp(precision, device):
                out = net(x.flatten(0, 1).to(device))
            out = out.float().cpu()
            scores.append(out.view(-1, n, out.shape[1]).sum(1).numpy())
            targets.append(y.numpy())
            index.append(i.numpy())
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(index)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_size_argument(p)
    p.add_argument("--layers", choices=LAYERS, default=None,
                   help="fc6-8: frozen convs (default); res5: ResNets' frozen trunk, linear on pooled res5 "
                        "(their default); all: fine-tune everything")
    p.add_argument("--fc-init", choices=("random", "checkpoint"), default="random",
                   help="fc6/fc7 start: random (DeepCluster's scripts) or the checkpoint's weights")
    p.add_argument("--iterations", type=argtypes.positive_int, default=None, help="default: 150000 (full), 40 (smoke)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None, help="default: 16")
    p.add_argument("--lr", type=argtypes.positive_float, default=None, help="default: 0.003 (fc6-8), 0.001 (all)")
    p.add_argument("--stepsize", type=argtypes.positive_int, default=None, help="lr *= lr-gamma every N iterations")
    c = {k: v[0] for k, v in DEFAULTS["common"].items()}   # the same at both scales
    p.add_argument("--lr-gamma", type=argtypes.positive_float, default=None, help=f"lr factor at each step (default: {c['lr_gamma']})")
    p.add_argument("--momentum", type=argtypes.fraction, default=None, help=f"SGD momentum (default: {c['momentum']})")
    p.add_argument("--weight-decay", type=argtypes.nonneg_float, default=None, help=f"weight decay (default: {c['weight_decay']})")
    p.add_argument("--grad-clip", type=argtypes.positive_float, default=None,
                   help=f"gradient norm clipped to this (default: {c['grad_clip']})")
    p.add_argument("--min-scale", type=argtypes.unit_interval, default=None,
                   help=f"RandomResizedCrop's smallest area fraction (default: {c['min_scale']})")
    p.add_argument("--max-scale", type=argtypes.unit_interval, default=None,
                   help=f"RandomResizedCrop's largest area fraction (default: {c['max_scale']})")
    p.add_argument("--test-crops", type=argtypes.positive_int, default=None, help="random crops per test image (default: 10 full, 3 smoke)")
    p.add_argument("--train-split", default="trainval",
                   help="ImageSets/Main/<name>.txt to train on (default: trainval)")
    p.add_argument("--test-split", default="test", help="ImageSets/Main/<name>.txt to test on (default: test)")


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        args.layers = resolve_layers(args.layers, ckpt.model.arch.family, args.checkpoint)
        proto = resolve_protocol(args, {**DEFAULTS[args.layers], **DEFAULTS["common"]})
        size = input_size(args, ckpt.meta)
        devkit = dataset_dir(args, "VOCdevkit", ("VOC2007",))
        norm = [T.ToTensor(), normalize(ckpt.meta)]
        aug = T.Compose([T.RandomHorizontalFlip(),
                                T.RandomResizedCrop(size, scale=(proto["min_scale"], proto["max_scale"]),
                                                           ratio=(1.0, 1.0)), *norm])
        train_ds = VOCClassification(devkit, "2007", args.train_split, aug)
        test_ds = VOCClassification(devkit, "2007", args.test_split, RepeatedCrops(aug, proto["test_crops"]))
        data_fp = fingerprint(devkit / "VOC2007")
    seed_everything(args.seed)
    net = training.place(build_model(ckpt.model, args.fc_init), args.device, precision_of(args))
    params = trainable(net, args.layers)
    trunk = nn.ModuleList([m for n, m in net.named_children() if n not in ("classifier", "top_layer")])
    trunk_before = training.parameter_snapshot(trunk) if args.layers != "all" else None
    bs, workers = proto["batch_size"], args.workers
    # One loader for the whole run: successive permutations of trainval, iterations * batch samples.
    gen = torch.Generator().manual_seed(args.seed)
    sampler = torch.utils.data.RandomSampler(train_ds, num_samples=proto["iterations"] * bs, generator=gen)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=bs, sampler=sampler, num_workers=workers,
                                               collate_fn=collate_skip_none, generator=gen)
    with timer("train"):
        losses = train(net, params, train_loader, iterations=proto["iterations"], lr=proto["lr"],
                       stepsize=proto["stepsize"], gamma=proto["lr_gamma"], momentum=proto["momentum"],
                       weight_decay=proto["weight_decay"], clip=proto["grad_clip"], device=args.device,
                       precision=precision_of(args))
    if trunk_before is not None:
        training.assert_unchanged(trunk, trunk_before, f"voc-classification {args.layers}: frozen trunk")
    with timer("test"):
        torch.manual_seed(args.seed + 1)
        scores, targets, scored = evaluate(net, training.loader(Indexed(test_ds), max(1, bs // 2), shuffle=False,
                                                              workers=workers, seed=args.seed + 1),
                                           args.device, precision_of(args))
    aps = training.voc_class_aps(scores, targets)
    defined = ~np.isnan(aps)
    # what the mAP ranked: the scored test images' summed crop scores and labels (0 = difficult only, left
    # out), under voc_class_aps's rule (sklearn's: tied scores one threshold)
    outcomes = Outcomes(ids=[test_ds.ids[i] for i in scored])
    outcomes.ap("map", scores, targets, rule="sklearn")
    result = make_result(
        task="voc-classification", variant={"dataset": "voc2007", "layers": args.layers},
        checkpoint=checkpoint_block(ckpt), metrics={"map": float(np.mean(aps[defined]) * 100)},
        protocol={**proto, "layers": args.layers, "optimizer": "SGD",
                  "fc_init": args.fc_init if ckpt.model.arch.family == "convfc" else None,  # no fc6/fc7 to init
                  "lr_schedule": "step: lr *= lr_gamma every stepsize iterations",
                  "loss": "BCE with logits, difficult-only labels masked, summed over classes, mean over batch",
                  "batchnorm": "running statistics (features in eval mode)",
                  "train_transform": "flip, RandomResizedCrop(scale=(min_scale, max_scale), ratio=1)",
                  "test_rule": "scores summed over test_crops random crops; AP on non-difficult images "
                               "(sklearn average_precision_score rule); mean over classes with positives",
                  "train_split": args.train_split, "test_split": args.test_split, "input_size": size,
                  "seed": args.seed},
        data={"name": "voc2007", "root": str(devkit), "fingerprint": data_fp,
              "sizes": {args.train_split: len(train_ds), args.test_split: len(test_ds)}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"ap": {c: (None if np.isnan(a) else round(float(a) * 100, 3)) for c, a in zip(VOC_CLASSES, aps)},
                 "classes_without_positives": [c for c, d in zip(VOC_CLASSES, defined) if not d],
                 "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
                 "unreadable_test_images": len(test_ds) - len(scored)})
    return save_and_report(args, result, outcomes)


register(Task(
    name="voc-classification",
    description="VOC07 multi-label classification, trainval->test, --layers fc6-8|all (ResNets: res5|all); mAP (Table 5.5)",
    add_arguments=add_arguments, run=run,
    dataset="VOCdevkit", needs=("VOC2007",), resources=Resources(1, 8, 32, 24 * 60),
    metrics=r"map",
    table="voc",
))

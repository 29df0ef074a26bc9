"""voc-segmentation: FCN-32s on the checkpoint's conv trunk, VOC2012 seg train -> val, mean IoU.

The network (Long et al. 2015, FCN-32s), built from any format-v1 checkpoint:

    image -> [sobel] -> features (all of it, stride 32) -> fc6 as a conv (kernel = the conv5
    output's spatial size in the checkpoint, so fc6's weights apply unchanged; zero-padded to keep
    the size) -> ReLU -> dropout -> fc7 as a 1x1 conv -> ReLU -> dropout -> 21-way 1x1 "score"
    conv (zero init, as FCN) -> learned upsampling: a stride-32 transposed conv initialised to
    bilinear interpolation -> resized to the input size.

``--layers all`` fine-tunes everything except the frozen Sobel filters; ``--layers fc6-8`` leaves
the whole conv trunk untouched (no gradient, BatchNorm statistics frozen; checked after
training). In both, BatchNorm runs on its stored statistics: FCN trains with one image per
batch, where batch statistics are meaningless (the Caffe protocols of the thesis era folded BN
into the convs for the same reason). Label 255 is ignored in the loss and in the metric.

ResNet checkpoints (no fc6/fc7) get torchvision's FCN head instead (``FCNHead``: 3x3 conv to 512,
BatchNorm, ReLU, dropout 0.1, 1x1 conv to 21 classes; new) on res5 built with dilation 2 instead of
stride 2 (output stride 16, the same weights), bilinearly upsampled to the input, as torchvision's
``fcn_resnet50``; only ``--layers all``, the trunk's BatchNorm on stored statistics (the head's own
BatchNorm trains, over the positions of each one-image batch).

Run on the embedded data: ``dc-transfer voc-segmentation --scale smoke --checkpoint CKPT``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dcbench import argtypes
from dcbench.checkpoint import load_checkpoint, preprocessing
from dcbench.datasets import VOCSegmentation, fingerprint
from dcbench.errors import DataError, UserError
from dcbench.models import DeepClusterNet, make_network
from dcbench.outcomes import Outcomes
from dcbench.progress import progress
from dcbench.results import checkpoint_block, make_result
from dcbench.seeding import seed_everything
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    data_root,
    default_help,
    override_schedule,
    precision_of,
    resolve_protocol,
    save_and_report,
)
from dcbench.transfer.training import (
    ConvTrunk,
    StoredStatisticsTrunk,
    assert_unchanged,
    fc_layers,
    parameter_snapshot,
)
from dcbench.transfer.voc_eval import confusion_matrix, segmentation_scores

NUM_CLASSES = 21
IGNORE = 255
LAYERS = ("fc6-8", "all")

# Protocol defaults, (full, smoke). Full: FCN-32s as released with Long et al. 2015
# (fcn.berkeleyvision.org, voc-fcn32s solver.prototxt and solve.py; transcribed, not checked
# here against those files): SGD, lr 1e-10 on the *summed* per-pixel loss, momentum 0.99, one
# image per batch at full resolution, no augmentation, constant lr. The thesis gives no FCN
# settings of its own. Smoke: the embedded ~150 px images; a mean loss with an ordinary lr.
DEFAULTS = {
    "iterations": (100_000, 300),            # solve.py: 25 x 4000 steps
    "batch_size": (1, 1),
    "lr": (1e-10, 0.01),
    "loss_reduction": ("sum", "mean"),
    "momentum": (0.99, 0.9),
    "weight_decay": (5e-4, 5e-4),
    "lr_steps": ([], [200]),
    "min_side": (None, None),
}


# ----------------------------------------------------------------------------------------------
# FCN-32s
def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights of a transposed conv that does bilinear upsampling channel by channel."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


class FCN32s(nn.Module):
    def __init__(self, model: DeepClusterNet, path: Path, *, frozen_trunk: bool,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        fc6, fc7 = fc_layers(model, path)
        self.trunk = ConvTrunk(model, drop_last_pool=False, frozen=frozen_trunk)
        c, kh, kw = (int(v) for v in model.feature_shape)
        self.fc6_kernel = (kh, kw)
        # fc6/fc7 keep their Linear weights; forward slides them over the map (unfold + matmul),
        # which is the convolution FCN turns them into, without reshaping a single weight.
        self.fc6 = nn.Linear(fc6.in_features, fc6.out_features)
        self.fc7 = nn.Linear(fc7.in_features, fc7.out_features)
        self.fc6.load_state_dict(fc6.state_dict())
        self.fc7.load_state_dict(fc7.state_dict())
        if fc6.in_features != c * kh * kw:
            raise UserError(f"{path}: fc6 takes {fc6.in_features} inputs, conv5 gives {c}x{kh}x{kw}")
        self.drop6, self.drop7 = nn.Dropout(0.5), nn.Dropout(0.5)
        self.score = nn.Linear(fc7.out_features, num_classes)  # the 1x1 classifier conv
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        self.stride = 32
        self.upscore = nn.ConvTranspose2d(num_classes, num_classes, 2 * self.stride, stride=self.stride,
                                          padding=self.stride // 2, bias=False)
        self.upscore.weight.data.copy_(bilinear_kernel(num_classes, 2 * self.stride))

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("trunk.")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.trunk(x)
        kh, kw = self.fc6_kernel
        # "same" zero padding so a map smaller than fc6's window still gives one score per cell
        y = F.pad(y, ((kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2))
        n, _, ph, pw = y.shape
        oh, ow = ph - kh + 1, pw - kw + 1
        cols = F.unfold(y, (kh, kw)).transpose(1, 2)  # (n, oh*ow, c*kh*kw), fc6's input order
        y = self.drop6(F.relu(self.fc6(cols)))
        y = self.drop7(F.relu(self.fc7(y)))
        y = self.score(y).transpose(1, 2).reshape(n, -1, oh, ow)
        y = self.upscore(y)  # (oh*32) x (ow*32)
        return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)


class ResNetTrunk(StoredStatisticsTrunk):
    """The checkpoint's ResNet with a dilated res5 (stride 16), BatchNorm on stored statistics."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = make_network(model.spec, dilate_res5=True)  # same parameters, dilation instead of stride
        self.net.load_state_dict(model.state_dict())
        self.net.top_layer = None
        self.fix_sobel(self.net.sobel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trunk(x)


class ResNetFCN(nn.Module):
    def __init__(self, model: nn.Module, num_classes: int = NUM_CLASSES):
        super().__init__()
        from torchvision.models.segmentation.fcn import FCNHead

        self.trunk = ResNetTrunk(model)
        self.head = FCNHead(model.arch.descriptor_dim, num_classes)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.trunk(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_fcn(model: nn.Module, path: Path, *, frozen_trunk: bool) -> nn.Module:
    if model.arch.family == "resnet":
        if frozen_trunk:
            raise UserError(f"--layers fc6-8: {path} is a ResNet, which has no fc6/fc7; use --layers all")
        return ResNetFCN(model)
    return FCN32s(model, path, frozen_trunk=frozen_trunk)


# ----------------------------------------------------------------------------------------------
# Data
class PairTransform:
    """PIL (image, mask) -> normalised tensor, int64 mask; pads to ``min_side`` with label 255."""

    def __init__(self, mean, std, min_side: int):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.min_side = min_side

    def __call__(self, img: Image.Image, mask: Image.Image):
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        x = (x - self.mean) / self.std
        m = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
        ph, pw = max(0, self.min_side - x.shape[1]), max(0, self.min_side - x.shape[2])
        if ph or pw:  # zero = the mean colour after normalisation; padding is void
            x = F.pad(x, (0, pw, 0, ph))
            m = F.pad(m, (0, pw, 0, ph), value=IGNORE)
        return x, m


def _collate_one(batch):
    batch = [b for b in batch if b is not None]
    return batch[0] if batch else None


def min_input_side(model: DeepClusterNet) -> int:
    """The smallest square input for which the full trunk still yields a 1x1 map."""
    if model.arch.family == "resnet":
        return 64  # dilated res5 at stride 16: a 4x4 map (FCNHead's BatchNorm needs more than one position)
    c = 2 if model.sobel is not None else 3
    for side in range(32, 1025, 16):
        try:
            with torch.no_grad():
                model.features.eval()(torch.zeros(1, c, side, side))
            return side
        except RuntimeError:
            continue
    raise UserError(f"{model.spec.arch}: no input up to 1024 px gives a pool5 map")


# ----------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", choices=LAYERS, default="all",
                   help="fc6-8: frozen conv trunk; all: everything fine-tuned (Table 5.5 reports all)")
    p.add_argument("--train-split", default="train",
                   help="ImageSets/Segmentation/<name>.txt to train on (e.g. train_aug for the SBD-augmented "
                        "list: put the SBD masks as palette PNGs in SegmentationClass; must not overlap val)")
    p.add_argument("--val-split", default="val", help="ImageSets/Segmentation/<name>.txt to evaluate on")
    p.add_argument("--iterations", type=argtypes.positive_int, default=None, help=default_help(*DEFAULTS["iterations"]))
    p.add_argument("--lr", type=argtypes.positive_float, default=None, help=default_help(*DEFAULTS["lr"]))


def protocol(args: argparse.Namespace, family: str = "convfc") -> dict:
    proto = override_schedule(resolve_protocol(args, DEFAULTS), args)
    if family == "resnet":
        proto.update(model="FCN: torchvision FCNHead on dilated res5 (output stride 16)", layers=args.layers,
                     train_split=args.train_split, val_split=args.val_split, lr_gamma=0.1,
                     augmentation="none (as FCN)", batchnorm="trunk: stored statistics (eval mode); head: trained",
                     upsampling="bilinear to the input", ignore_label=IGNORE,
                     metric="mean IoU over 21 classes (confusion matrix over the whole val split; classes in "
                     "neither ground truth nor prediction left out)",
                     source="our choice: torchvision fcn_resnet50's head with the FCN-32s schedule above")
        return proto
    proto.update(
        model="FCN-32s", layers=args.layers, train_split=args.train_split, val_split=args.val_split,
        lr_gamma=0.1, augmentation="none (as FCN)", batchnorm="stored statistics (eval mode) in both variants",
        fc6="conv, kernel = checkpoint conv5 output size, zero 'same' padding",
        upsampling="transposed conv stride 32, bilinear init, learned; then resized to the input",
        score_init="zeros", dropout=0.5, ignore_label=IGNORE, metric="mean IoU over 21 classes (confusion "
        "matrix over the whole val split; classes in neither ground truth nor prediction left out)",
        source="Long et al. 2015 FCN-32s (voc-fcn32s solver.prototxt / solve.py)",
    )
    return proto


def train_fcn(net: FCN32s, loader, proto: dict, device: torch.device, seed: int,
              precision: str = "fp32") -> list[float]:
    """SGD on (image, mask) pairs for ``proto['iterations']`` steps; returns the loss per step."""
    params = net.head_parameters() if net.trunk.frozen else [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=proto["lr"], momentum=proto["momentum"],
                          weight_decay=proto["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=proto["lr_steps"], gamma=0.1)
    net.train()
    bar = progress(training.steps(loader, proto["iterations"]), total=proto["iterations"], desc="fcn train",
                   mininterval=2)
    losses = training.DeviceLosses(
        diverged=f"FCN training diverged at lr {proto['lr']} (loss is not finite); pass a lower --lr", bar=bar)
    for x, m in bar:
        # An all-void image's mean loss is 0/0: no loss to follow (checked on the host copy, no sync).
        # Its forward still runs, as before this check moved here: it draws dropout's random numbers.
        no_loss = proto["loss_reduction"] == "mean" and not bool((m != IGNORE).any())
        x, m = x.unsqueeze(0).to(device), m.unsqueeze(0).to(device)
        with training.amp(precision, device):
            logits = net(x)
        if no_loss:
            continue
        loss = F.cross_entropy(logits.float(), m, ignore_index=IGNORE, reduction=proto["loss_reduction"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss)
    return losses.flush()


@torch.no_grad()
def evaluate_fcn(net: FCN32s, dataset, device: torch.device, precision: str = "fp32"
                 ) -> tuple[np.ndarray, list[int]]:
    """Per evaluated image its 21 x 21 confusion matrix (rows ground truth, void pixels left out) and
    the dataset indices of those images (an unreadable one is skipped). Their sum is the split's
    matrix the metrics come from; the per-image matrices are its outcomes, so a bootstrap resample of
    the images is the sum over the resampled images."""
    net.eval()
    per_image, index = [], []
    for i in progress(range(len(dataset)), desc="fcn eval", mininterval=2):
        item = dataset[i]
        if item is None:
            continue
        x, m = item
        with training.amp(precision, device):
            pred = net(x.unsqueeze(0).to(device)).argmax(1)[0].cpu().numpy()
        per_image.append(confusion_matrix(m.numpy(), pred, NUM_CLASSES, IGNORE))
        index.append(i)
    if not per_image:
        raise DataError(f"{dataset.root}: none of the {len(dataset)} evaluation images could be read; "
                        "repair or re-download the images")
    return np.stack(per_image), index


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    seed_everything(args.seed)
    ckpt = load_checkpoint(args.checkpoint)
    proto = protocol(args, ckpt.model.arch.family)
    device = torch.device(args.device)
    root = data_root(args)
    pre = preprocessing(ckpt.meta, str(args.checkpoint / "meta.json"))
    mean, std = pre.mean, pre.std
    net = build_fcn(ckpt.model, args.checkpoint, frozen_trunk=args.layers == "fc6-8")
    tf = PairTransform(mean, std, min_input_side(ckpt.model))
    train_set = VOCSegmentation(root, "2012", args.train_split, transforms=tf)
    val_set = VOCSegmentation(root, "2012", args.val_split, transforms=tf)
    overlap = sorted(set(train_set.ids) & set(val_set.ids))
    if overlap:
        raise DataError(f"{train_set.base / 'ImageSets' / 'Segmentation' / (args.train_split + '.txt')}: "
                        f"{len(overlap)} images are also in {args.val_split} (first: {overlap[0]}); remove them")
    training.place(net, device, precision_of(args))
    trunk_before = parameter_snapshot(net.trunk) if net.trunk.frozen else None
    gen = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=1, shuffle=True, generator=gen,
                                         num_workers=args.workers, collate_fn=_collate_one)
    with timer("train"):
        losses = train_fcn(net, loader, proto, device, args.seed, precision_of(args))
    if trunk_before is not None:
        assert_unchanged(net.trunk, trunk_before, "voc-segmentation fc6-8")
    with timer("eval"):
        confusions, evaluated = evaluate_fcn(net, val_set, device, precision_of(args))
    hist = confusions.sum(0)
    scores = segmentation_scores(hist)
    outcomes = Outcomes(ids=[val_set.ids[i] for i in evaluated])
    for name in ("miou", "pixel_acc"):  # both are functions of the summed matrix
        outcomes.miou(name, confusions, score=name)
    classes = list(val_set.classes)
    result = make_result(
        task="voc-segmentation",
        variant={"dataset": "VOC2012", "layers": args.layers},
        checkpoint=checkpoint_block(ckpt),
        metrics={"miou": scores["miou"], "pixel_acc": scores["pixel_acc"]},
        protocol=proto,
        data={"name": "VOC2012", "root": str(root), "fingerprint": fingerprint(train_set.base),
              "sizes": {args.train_split: len(train_set), args.val_split: len(val_set)}},
        scale=args.scale,
        timings=timer.timings,
        selection={"rule": "last", "epochs": None},
        details={"iou": dict(zip(classes, scores["iou"])),
                 "final_loss": float(np.mean(losses[-20:])) if losses else None,
                 "confusion_matrix": hist.tolist(), "classes": classes,
                 "seed": args.seed, "nan_free": all(math.isfinite(v) for v in losses),
                 "unreadable_val_images": len(val_set) - len(evaluated)},
    )
    return save_and_report(args, result, outcomes)


register(Task(
    name="voc-segmentation",
    description="VOC2012 semantic segmentation, FCN-32s from conv trunk + fc6/fc7 (Table 5.5); mean IoU",
    add_arguments=add_arguments, run=run,
    dataset="VOCdevkit", needs=("VOC2012",), resources=Resources(1, 8, 32, 24 * 60),
    metrics=r"miou|pixel_acc",
    table="voc",
))

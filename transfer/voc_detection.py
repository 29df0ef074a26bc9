"""voc-detection: Faster R-CNN / Fast R-CNN on the checkpoint's conv trunk, VOC07 trainval -> test, mAP.

The detector, built from any format-v1 checkpoint with torchvision's detection models:

    image -> [sobel] -> conv trunk up to conv5 (the last max-pool dropped: stride 16)
          -> RoI max pooling (Fast R-CNN's RoIPool, spatial scale 1/16) to the checkpoint's conv5
             output size (feature_shape), so fc6's weights apply unchanged
          -> the checkpoint's classifier (fc6, fc7 with their ReLU/dropout) as the box head
          -> 21-way classification + class-specific box regression (new, Fast R-CNN init)

Where each default comes from. The DeepCluster paper's detection rows (and so the thesis's
Table 5.5) used **Fast R-CNN with precomputed selective-search proposals**; that is
``--method fast-rcnn --proposals FILE`` here (precomputed proposals through the same RoI heads),
the faithful mode. No proposals ship with the embedded data or can be computed here, so the
default is ``--method faster-rcnn``: our choice, not the thesis's protocol -- torchvision's RPN on
conv5 replaces the external proposals, with py-faster-rcnn's VOC07 end2end schedule; its numbers
are not directly comparable with the published rows. ``--layers fc6-8`` freezes the whole trunk
(no gradient, BatchNorm statistics untouched; checked exactly after training); ``--layers all``
fine-tunes it. BatchNorm always runs on its stored statistics (our choice: two images per batch
give meaningless batch statistics). Training: multi-scale (shorter side drawn per image) and
horizontal flips, as Fast R-CNN; difficult objects are left out of training, as in Fast R-CNN.
Test: one scale.

ResNet checkpoints (no fc6/fc7) get torchvision's ResNet-FPN Faster R-CNN instead (our choice
of FPN over C4: the C4 box head runs res5 on every RoI, too slow for CPU smoke runs):
    image -> [sobel] -> the checkpoint's ResNet (res2..res5) -> torchvision FeaturePyramidNetwork
          (256 channels, P2-P6) -> RPN (one anchor size per level) -> MultiScaleRoIAlign 7x7
          -> TwoMLPHead (2 x 1024, new) -> 21-way classification + box regression (new)
as torchvision's ``fasterrcnn_resnet50_fpn``; only ``--layers all`` (BatchNorm on stored
statistics, as above). Fast R-CNN with ``--proposals`` runs through the same RoI heads.

Output: ``comp4_det_test_<class>.txt`` per class (VOC devkit results format, 1-based pixel boxes)
in ``<out>/voc-detection-<checkpoint>-<variant>-<time>/``, and mAP by the VOC2007 rules computed
from those files (:mod:`dcbench.transfer.voc_eval`). Result: metric ``map`` with its 95% bootstrap
interval over the test images; selection ``last`` (the detector after its fixed schedule: no choice
made from data). Per-image outcomes beside the result (:mod:`dcbench.outcomes`, kind ``detection``):
every detection's test image, class, confidence and match as the devkit rule decides it (1 true,
0 false positive, -1 ignored: matched to a difficult box), and the non-difficult boxes per test
image and class -- a resample of the images carries their detections and their boxes together.

Proposals file (``--proposals``), JSON::

    {"format": "dcbench-proposals", "version": 1,
     "boxes": {"<image_id>": [[x1, y1, x2, y2], ...], ...}}

1-based inclusive pixel coordinates as in the VOC annotations (1 <= x1 <= x2 <= width), one
entry per trainval *and* test image (an image may have an empty list). Selective-search boxes
from Fast R-CNN's ``selective_search_data/voc_2007_*.mat`` convert by reordering each row
``[y1 x1 y2 x2]`` to ``[x1 y1 x2 y2]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from dcbench import argtypes
from dcbench.checkpoint import load_checkpoint, preprocessing
from dcbench.datasets import VOC_CLASSES, VOCDetection, fingerprint
from dcbench.errors import DataError, UserError
from dcbench.models import DeepClusterNet
from dcbench.outcomes import Outcomes
from dcbench.progress import progress
from dcbench.results import checkpoint_block, make_result
from dcbench.safepath import safe_slug, under
from dcbench.seeding import seed_everything
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    data_root,
    default_help,
    defaults_at,
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
from dcbench.transfer.voc_eval import eval_detection_files, write_detection_files

LAYERS = ("fc6-8", "all")
METHODS = ("faster-rcnn", "fast-rcnn")
PROPOSALS_FORMAT = "dcbench-proposals"

# Protocol defaults, (full, smoke). Full: the Fast R-CNN paper (Girshick 2015) and its released
# config.py / VOC solvers, and for the RPN py-faster-rcnn's end2end VOC07 config -- transcribed,
# not checked here against those files. Smoke: the embedded ~150 px images; small scales,
# anchors and budgets.
DEFAULTS = {
    "common": {
        "lr": (0.001, 0.01),                  # Fast R-CNN solver base_lr 0.001
        "momentum": (0.9, 0.9),
        "weight_decay": (5e-4, 5e-4),
        "lr_gamma": (0.1, 0.1),
        "images_per_batch": (2, 2),           # Fast R-CNN: 2 images x 64 RoIs
        "rois_per_image": (64, 32),
        "fg_fraction": (0.25, 0.25),          # 25% foreground RoIs, fg IoU >= .5, bg [.1, .5)
        "fg_iou": (0.5, 0.5),
        "bg_iou": (0.5, 0.5),
        "train_scales": ([480, 576, 688, 864, 1200], [128, 160, 192]),  # paper §5.2 multi-scale
        "test_scale": (600, 160),
        "max_size": (1000, 320),
        "test_nms": (0.3, 0.3),
        "score_thresh": (0.05, 0.001),
        "detections_per_image": (100, 100),
        "flip": (True, True),
        "anchor_sizes": ([128, 256, 512], [16, 32, 64, 128]),        # py-faster-rcnn anchors
        "anchor_ratios": ([0.5, 1.0, 2.0], [0.5, 1.0, 2.0]),
        "rpn_batch_per_image": (256, 64),
        "rpn_nms": (0.7, 0.7),
        "rpn_pre_nms_train": (12000, 600),
        "rpn_post_nms_train": (2000, 200),
        "rpn_pre_nms_test": (6000, 300),
        "rpn_post_nms_test": (300, 100),
    },
    "fast-rcnn": {"iterations": (40_000, 120), "lr_steps": ([30_000], [90])},     # Fast R-CNN VOC solver
    "faster-rcnn": {"iterations": (70_000, 120), "lr_steps": ([50_000], [90])},   # py-faster-rcnn end2end VOC07
}


def protocol_defaults(scale: str, method: str) -> dict:
    """The default protocol of ``method`` at ``scale``, before any flag."""
    return defaults_at({**DEFAULTS["common"], **DEFAULTS[method]}, scale)


FEATURE_STRIDE = 16


# ----------------------------------------------------------------------------------------------
# Model
class RoIPoolConv5(nn.Module):
    """Fast R-CNN RoI max pooling on the single stride-16 map, with MultiScaleRoIAlign's call signature."""

    def __init__(self, output_size: tuple[int, int], spatial_scale: float = 1.0 / FEATURE_STRIDE):
        super().__init__()
        self.output_size, self.spatial_scale = tuple(output_size), spatial_scale

    def forward(self, features: dict, proposals: list[torch.Tensor], image_shapes) -> torch.Tensor:
        return torchvision.ops.roi_pool(features["0"], proposals, self.output_size, self.spatial_scale)


class BoxHead(nn.Module):
    """The checkpoint's classifier (fc6, fc7 with its ReLUs and dropouts) on pooled RoIs."""

    def __init__(self, classifier: nn.Sequential):
        super().__init__()
        self.classifier = copy.deepcopy(classifier)
        self.out_channels = [m for m in self.classifier if isinstance(m, nn.Linear)][-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(x, 1))


FPN_ANCHORS = ([32, 64, 128, 256, 512], [16, 32, 64, 128, 256])  # (full: torchvision/Detectron FPN, smoke)
# (full, smoke) lr of the ResNet-FPN detector, our choice: torchvision's detection reference (0.02 for 16
# images) scaled to 2 images; smoke 0.001 (a random-init ResNet-50 diverged there at 0.01, and its loss rose to 24
# in 6 iterations at 0.0025, against 5.3 at 0.001).
FPN_LR = (0.0025, 0.001)


class ResNetFPN(StoredStatisticsTrunk):
    """The checkpoint's ResNet (res2..res5; BatchNorm on stored statistics) under torchvision's FPN."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.body = copy.deepcopy(model)
        self.body.top_layer = None
        self.fix_sobel(self.body.sobel)
        chans = [int(m[-1].conv3.out_channels) for m in self.body.stages]
        self.fpn = FeaturePyramidNetwork(chans, 256, extra_blocks=LastLevelMaxPool())
        self.out_channels = 256
        self.train(False)

    def forward(self, x: torch.Tensor) -> OrderedDict:
        outs = self.body.tap_outputs(x)[1:]
        return self.fpn(OrderedDict((str(i), o) for i, o in enumerate(outs)))


def build_resnet_detector(model: nn.Module, proto: dict, *, mean, std,
                          num_classes: int = len(VOC_CLASSES) + 1) -> FasterRCNN:
    backbone = ResNetFPN(model)
    anchors = AnchorGenerator(sizes=tuple((int(s),) for s in proto["anchor_sizes"]),
                              aspect_ratios=(tuple(proto["anchor_ratios"]),) * len(proto["anchor_sizes"]))
    return FasterRCNN(
        backbone, num_classes=num_classes, min_size=tuple(proto["train_scales"]), max_size=proto["max_size"],
        image_mean=list(mean), image_std=list(std), rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=proto["rpn_pre_nms_train"], rpn_post_nms_top_n_train=proto["rpn_post_nms_train"],
        rpn_pre_nms_top_n_test=proto["rpn_pre_nms_test"], rpn_post_nms_top_n_test=proto["rpn_post_nms_test"],
        rpn_nms_thresh=proto["rpn_nms"], rpn_batch_size_per_image=proto["rpn_batch_per_image"],
        box_score_thresh=proto["score_thresh"], box_nms_thresh=proto["test_nms"],
        box_detections_per_img=proto["detections_per_image"], box_fg_iou_thresh=proto["fg_iou"],
        box_bg_iou_thresh=proto["bg_iou"], box_batch_size_per_image=proto["rois_per_image"],
        box_positive_fraction=proto["fg_fraction"],
    )


def build_detector(model: DeepClusterNet, path: Path, proto: dict, *, frozen_trunk: bool,
                   mean, std, num_classes: int = len(VOC_CLASSES) + 1) -> FasterRCNN:
    if model.arch.family == "resnet":
        if frozen_trunk:
            raise UserError(f"--layers fc6-8: {path} is a ResNet, which has no fc6/fc7; use --layers all")
        return build_resnet_detector(model, proto, mean=mean, std=std, num_classes=num_classes)
    fc_layers(model, path)  # one-line error if fc6/fc7 are missing
    trunk = ConvTrunk(model, drop_last_pool=True, frozen=frozen_trunk)
    _, kh, kw = (int(v) for v in model.feature_shape)
    head = BoxHead(model.classifier)
    predictor = FastRCNNPredictor(head.out_channels, num_classes)
    # Fast R-CNN's initialisation of the new layers
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    anchors = AnchorGenerator(sizes=(tuple(proto["anchor_sizes"]),),
                              aspect_ratios=(tuple(proto["anchor_ratios"]),))
    det = FasterRCNN(
        trunk, num_classes=None, min_size=tuple(proto["train_scales"]), max_size=proto["max_size"],
        image_mean=list(mean), image_std=list(std), rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=proto["rpn_pre_nms_train"], rpn_post_nms_top_n_train=proto["rpn_post_nms_train"],
        rpn_pre_nms_top_n_test=proto["rpn_pre_nms_test"], rpn_post_nms_top_n_test=proto["rpn_post_nms_test"],
        rpn_nms_thresh=proto["rpn_nms"], rpn_batch_size_per_image=proto["rpn_batch_per_image"],
        box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], (kh, kw), 2), box_head=head, box_predictor=predictor,
        box_score_thresh=proto["score_thresh"], box_nms_thresh=proto["test_nms"],
        box_detections_per_img=proto["detections_per_image"], box_fg_iou_thresh=proto["fg_iou"],
        box_bg_iou_thresh=proto["bg_iou"], box_batch_size_per_image=proto["rois_per_image"],
        box_positive_fraction=proto["fg_fraction"],
    )
    # FasterRCNN's constructor only accepts RoIAlign; Fast R-CNN pools with RoIPool, swapped in here.
    det.roi_heads.box_roi_pool = RoIPoolConv5((kh, kw))
    return det


def detector_forward(det: FasterRCNN, images: list[torch.Tensor], targets=None, proposals=None):
    """Faster R-CNN (``proposals`` None) or Fast R-CNN from given proposals (0-based boxes in the
    original image frame) through the same transform, trunk and RoI heads."""
    if proposals is None:
        return det(images, targets)
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, targets = det.transform(images, targets)
    props = [resize_boxes(p, osz, nsz) for p, osz, nsz in zip(proposals, original_sizes, image_list.image_sizes)]
    features = det.backbone(image_list.tensors)
    if not isinstance(features, dict):
        features = OrderedDict([("0", features)])
    detections, losses = det.roi_heads(features, props, image_list.image_sizes, targets)
    if det.training:
        return losses
    return det.transform.postprocess(detections, image_list.image_sizes, original_sizes)


# ----------------------------------------------------------------------------------------------
# Proposals
def load_proposals(path: Path, datasets: list[VOCDetection]) -> dict[str, torch.Tensor]:
    """Read and check a proposals file; return image_id -> (N, 4) 0-based continuous boxes."""
    if not path.is_file():
        raise UserError(f"--proposals {path} does not exist; pass a {PROPOSALS_FORMAT} JSON file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if (not isinstance(obj, dict) or obj.get("format") != PROPOSALS_FORMAT or obj.get("version") != 1
            or not isinstance(obj.get("boxes"), dict)):
        raise DataError(f"{path}: expected {{\"format\": \"{PROPOSALS_FORMAT}\", \"version\": 1, "
                        "\"boxes\": {image_id: [[x1, y1, x2, y2], ...]}}")
    boxes = obj["boxes"]
    out = {}
    for ds in datasets:
        missing = [i for i in ds.ids if i not in boxes]
        if missing:
            raise DataError(f"{path}: no proposals for {len(missing)} {ds.split} images (first: {missing[0]}); "
                            "the file must cover every trainval and test image")
        for idx, image_id in enumerate(ds.ids):
            h, w = ds.annotations[idx]["height"], ds.annotations[idx]["width"]
            try:
                b = np.asarray(boxes[image_id], dtype=np.float64).reshape(-1, 4)
            except (TypeError, ValueError):
                raise DataError(f"{path}: proposals of image {image_id} are not a list of [x1, y1, x2, y2]") from None
            bad = ~((b[:, 0] >= 1) & (b[:, 1] >= 1) & (b[:, 2] <= w) & (b[:, 3] <= h)
                    & (b[:, 0] <= b[:, 2]) & (b[:, 1] <= b[:, 3]))
            if bad.any():
                raise DataError(f"{path}: image {image_id} has {int(bad.sum())} proposals outside its {w}x{h} "
                                f"frame or inverted (first: {b[bad][0].tolist()}); boxes are 1-based, "
                                "1 <= x1 <= x2 <= width")
            b = b.copy()
            b[:, :2] -= 1  # 1-based inclusive -> 0-based continuous, as the dataset reader does
            out[image_id] = torch.as_tensor(b, dtype=torch.float32)
    return out


# ----------------------------------------------------------------------------------------------
# Data
class DetectionItems(torch.utils.data.Dataset):
    """(image tensor in [0, 1], target with difficult objects removed, image_id, original size)."""

    def __init__(self, ds: VOCDetection, drop_difficult: bool):
        self.ds, self.drop_difficult = ds, drop_difficult

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        item = self.ds[i]
        if item is None:
            return None
        img, t = item
        x = torchvision.transforms.functional.to_tensor(img)
        keep = ~t["difficult"] if self.drop_difficult else torch.ones(len(t["labels"]), dtype=torch.bool)
        return x, {"boxes": t["boxes"][keep], "labels": t["labels"][keep]}, t["image_id"]


def _collate(batch):
    return [b for b in batch if b is not None]


def flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror 0-based continuous boxes in an image ``width`` wide."""
    b = boxes.clone()
    b[:, 0], b[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return b


# ----------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", choices=LAYERS, default="all",
                   help="fc6-8: frozen conv trunk; all: everything fine-tuned (Table 5.5 reports all)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="faster-rcnn (RPN, default) or fast-rcnn (needs --proposals)")
    p.add_argument("--proposals", type=Path, default=None,
                   help='precomputed proposals for Fast R-CNN (implies --method fast-rcnn): JSON {"format": '
                        '"dcbench-proposals", "version": 1, "boxes": {"<image_id>": [[x1, y1, x2, y2], ...]}}, '
                        "1-based pixel boxes inside the image, one entry per trainval and test image")
    p.add_argument("--iterations", type=argtypes.positive_int, default=None,
                   help="; ".join(f"{m}: {default_help(*DEFAULTS[m]['iterations'])}" for m in METHODS))
    p.add_argument("--lr", type=argtypes.positive_float, default=None, help=default_help(*DEFAULTS["common"]["lr"]))


def protocol(args: argparse.Namespace, method: str, family: str = "convfc") -> dict:
    proto = override_schedule(resolve_protocol(args, {**DEFAULTS["common"], **DEFAULTS[method]}), args)
    if family == "resnet":
        if args.lr is None:
            proto["lr"] = FPN_LR[0 if args.scale == "full" else 1]
        proto.update(
            anchor_sizes=list(FPN_ANCHORS[0 if args.scale == "full" else 1]),
            roi_pooling="MultiScaleRoIAlign 7x7, sampling ratio 2, on FPN levels P2-P5 (torchvision)",
            box_head="TwoMLPHead 2 x 1024, new (torchvision fasterrcnn_resnet50_fpn)",
            backbone="checkpoint ResNet res2-res5 + torchvision FeaturePyramidNetwork (256 ch, P6 by max-pool), new",
        )
        proto.update(method=method, layers=args.layers, train_split="VOC2007 trainval", test_split="VOC2007 test",
                     engine=f"torchvision {torchvision.__version__} FasterRCNN (ResNet-FPN)",
                     batchnorm="stored statistics (eval mode)", train_difficult=False,
                     proposals=str(args.proposals) if args.proposals else None,
                     metric="VOC2007 11-point AP, IoU > 0.5, difficult ignored, duplicates false positives",
                     source="our choice: torchvision's ResNet-FPN Faster R-CNN with the schedule above")
        return proto
    proto.update(
        method=method, layers=args.layers, train_split="VOC2007 trainval", test_split="VOC2007 test",
        engine=f"torchvision {torchvision.__version__} FasterRCNN / RoIHeads",
        roi_pooling=f"RoIPool (max) at 1/{FEATURE_STRIDE} on conv5 (last max-pool removed), output = checkpoint "
                    "feature_shape", box_head="checkpoint classifier (fc6, fc7, ReLU, dropout)",
        batchnorm="stored statistics (eval mode) in both variants", train_difficult=False,
        proposals=str(args.proposals) if args.proposals else None,
        metric="VOC2007 11-point AP, IoU > 0.5, difficult ignored, duplicates false positives",
        source=("Fast R-CNN (Girshick 2015) solver/config, the DeepCluster paper's detector" if method == "fast-rcnn"
                else "our choice (not the thesis's protocol, which used Fast R-CNN with precomputed "
                     "proposals): py-faster-rcnn end2end VOC07 + Fast R-CNN multi-scale training"),
    )
    return proto


def train_detector(det: FasterRCNN, loader, proto: dict, device, proposals=None, precision: str = "fp32") -> list[float]:
    trainable = [p for n, p in det.named_parameters()
                 if p.requires_grad and not (proposals is not None and n.startswith("rpn."))]
    opt = torch.optim.SGD(trainable, lr=proto["lr"], momentum=proto["momentum"],
                          weight_decay=proto["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=proto["lr_steps"], gamma=proto["lr_gamma"])
    det.transform.min_size = tuple(proto["train_scales"])  # drawn per image: multi-scale training
    det.train()
    gen = torch.Generator().manual_seed(int(torch.initial_seed()) % (2 ** 31))
    bar = progress(training.steps(loader, proto["iterations"]), total=proto["iterations"],
                   desc="detector train", mininterval=2)
    # Read every step: torchvision's samplers sync the host each step anyway, and NaN boxes would fail
    # inside them before a later read could name the cause.
    losses = training.DeviceLosses(
        every=1, diverged=f"detector training diverged at lr {proto['lr']} (loss is not finite); pass a lower --lr", bar=bar)
    for batch in bar:
        images, targets, props = [], [], []
        for x, t, image_id in batch:
            p = proposals[image_id] if proposals is not None else None
            if proto["flip"] and torch.rand((), generator=gen) < 0.5:
                w = x.shape[-1]
                x, t = x.flip(-1), {"boxes": flip_boxes(t["boxes"], w), "labels": t["labels"]}
                if p is not None:
                    p = flip_boxes(p, w)
            images.append(x.to(device))
            targets.append({k: v.to(device) for k, v in t.items()})
            if p is not None:
                props.append(p.to(device))
        with training.amp(precision, device):
            loss_dict = detector_forward(det, images, targets, props if proposals is not None else None)
        loss = sum(v.float() for v in loss_dict.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss)
    return losses.flush()


@torch.no_grad()
def detect(det: FasterRCNN, dataset: DetectionItems, proto: dict, device, proposals=None,
           precision: str = "fp32") -> dict:
    """class name -> [(image_id, score, (x1, y1, x2, y2) 1-based devkit pixels)]."""
    det.eval()
    det.transform.min_size = (proto["test_scale"],)
    out: dict[str, list] = {c: [] for c in VOC_CLASSES}
    for i in progress(range(len(dataset)), desc="detector test", mininterval=2):
        item = dataset[i]
        if item is None:
            continue
        x, _, image_id = item
        props = [proposals[image_id].to(device)] if proposals is not None else None
        with training.amp(precision, device):
            res = detector_forward(det, [x.to(device)], None, props)[0]
        for box, score, label in zip(res["boxes"].cpu().tolist(), res["scores"].cpu().tolist(),
                                     res["labels"].cpu().tolist()):
            # 0-based continuous [x1, x2] -> devkit 1-based inclusive pixels (inverse of the reader)
            out[VOC_CLASSES[label - 1]].append((image_id, score, (box[0] + 1, box[1] + 1, box[2], box[3])))
    return out


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    seed_everything(args.seed)
    method = args.method or ("fast-rcnn" if args.proposals else "faster-rcnn")
    if method == "fast-rcnn" and args.proposals is None:
        raise UserError("--method fast-rcnn needs --proposals FILE (precomputed boxes, see --help)")
    if method == "faster-rcnn" and args.proposals is not None:
        raise UserError("--proposals is for --method fast-rcnn; drop one of them")
    ckpt = load_checkpoint(args.checkpoint)
    proto = protocol(args, method, ckpt.model.arch.family)
    device = torch.device(args.device)
    root = data_root(args)
    train_ds = VOCDetection(root, "2007", "trainval")
    test_ds = VOCDetection(root, "2007", "test")
    proposals = load_proposals(args.proposals, [train_ds, test_ds]) if args.proposals else None
    pre = preprocessing(ckpt.meta, str(args.checkpoint / "meta.json"))
    mean, std = pre.mean, pre.std
    det = build_detector(ckpt.model, args.checkpoint, proto, frozen_trunk=args.layers == "fc6-8",
                         mean=mean, std=std)
    det = training.place(det, device, precision_of(args))
    trunk_before = parameter_snapshot(det.backbone) if args.layers == "fc6-8" else None
    gen = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(DetectionItems(train_ds, drop_difficult=True),
                                         batch_size=proto["images_per_batch"], shuffle=True, generator=gen,
                                         num_workers=args.workers, collate_fn=_collate)
    with timer("train"):
        losses = train_detector(det, loader, proto, device, proposals, precision_of(args))
    if trunk_before is not None:
        assert_unchanged(det.backbone, trunk_before, "voc-detection fc6-8")
    with timer("test"):
        dets = detect(det, DetectionItems(test_ds, drop_difficult=False), proto, device, proposals,
                      precision_of(args))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    # the name is meta.json's, i.e. the checkpoint author's: a slug, kept under --out
    det_dir = under(args.out, f"voc-detection-{safe_slug(ckpt.name)}-{method}-{args.layers}-{stamp}")
    with timer("eval"):
        write_detection_files(det_dir, dets, VOC_CLASSES)
        annotations = {i: a["objects"] for i, a in zip(test_ds.ids, test_ds.annotations)}
        scores = eval_detection_files(det_dir, annotations, VOC_CLASSES)
    print(f"detections: {det_dir}")
    result = make_result(
        task="voc-detection",
        variant={"dataset": "VOC2007", "layers": args.layers, "method": method},
        checkpoint=checkpoint_block(ckpt),
        metrics={"map": scores["map"]},
        protocol=proto,
        data={"name": "VOC2007", "root": str(root), "fingerprint": fingerprint(train_ds.base),
              "sizes": {"trainval": len(train_ds), "test": len(test_ds)}},
        scale=args.scale,
        timings=timer.timings,
        selection={"rule": "last", "epochs": None},
        details={"ap": scores["ap"], "counts": scores["counts"],
                 "unreadable_test_images": len(test_ds.skipped),
                 "classes_without_ground_truth": scores["classes_without_ground_truth"],
                 "detections_dir": str(det_dir), "final_loss": float(np.mean(losses[-10:])) if losses else None,
                 "seed": args.seed},
    )
    # the mAP's own inputs: every detection's image, class, confidence and devkit match, and the
    # non-difficult boxes per test image and class (an unreadable image keeps its boxes: the devkit
    # counts them as missed)
    outcomes = Outcomes(ids=list(annotations))
    outcomes.detection("map", **scores["outcomes"])
    return save_and_report(args, result, outcomes)


register(Task(
    name="voc-detection",
    description="VOC07 detection, Faster/Fast R-CNN on conv5 + fc6/fc7 box head (Table 5.5); mAP@0.5",
    add_arguments=add_arguments, run=run,
    dataset="VOCdevkit", needs=("VOC2007",), resources=Resources(1, 8, 32, 24 * 60),
    metrics=r"map",
    table="voc",
))

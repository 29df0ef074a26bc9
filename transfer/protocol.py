"""What a transfer protocol *is*, as opposed to how it trains: the flags every task takes, the
(full, smoke) defaults tables and the help drawn from them, where the data lives, the held-out
split of the train set that epochs are chosen on, the image transforms, class alignment between
splits, and writing the result.

Role split: this module never runs a network; :mod:`dcbench.transfer.training` holds the
computation (loaders, the step iterator, feature extraction and its cache, heads, metrics, the
frozen-weights check, the conv trunk). A task module imports both and keeps its own loop.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms as T

from dcbench import argtypes
from dcbench import imageload as IL
from dcbench.checkpoint import preprocessing
from dcbench.choices import family_of
from dcbench.errors import UserError
from dcbench.precision import PRECISIONS, resolve_precision
from dcbench.results import write_result
from dcbench.text import printable

# --------------------------------------------------------------------------------------------
# Flags and defaults tables

TRANSFER_LOADERS = ("draft", "torchvision")  # nvjpeg is dc-train's: its crops run in the training loop


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every ``dc-transfer TASK`` takes (the suite sets --checkpoint, --data, --out, --scale, --device)."""
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (format v1 or v2)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset root (default: the embedded data, generated once and cached)")
    p.add_argument("--out", type=Path, default=Path("results"),
                   help="folder for result JSON files (default: results, in the current folder)")
    p.add_argument("--scale", choices=("smoke", "full"), default=None,
                   help="full = the thesis protocol; smoke = small budgets for the embedded data "
                        "(default: smoke without --data, full with it, as dc-train)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="random seed of the protocol (default: 0)")
    p.add_argument("--seeds", type=argtypes.positive_int, default=1,
                   help="run the trained part (probe, head, SVM draws) with seeds SEED..SEED+N-1; the result "
                        "is SEED's, with the mean and standard deviation over the N runs (default: 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default: cuda when available, else cpu; here: %(default)s)")
    p.add_argument("--workers", type=argtypes.nonneg_int, default=min(4, os.cpu_count() or 1),
                   help="data-loader workers (default: the CPU count, at most 4; here: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32, or bf16 autocast for every network forward "
                        "(default: auto = bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--loader", choices=TRANSFER_LOADERS, default="draft",
                   help="image decoding: draft = at reduced size when the crop allows (pixels otherwise "
                        "identical to torchvision's), torchvision = PIL full decode (default: draft)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="feature cache (default: $DCBENCH_CACHE or ~/.cache/dcbench/features)")
    p.add_argument("--no-cache", action="store_true", help="recompute features even if cached")


def override_schedule(proto: dict, args: argparse.Namespace) -> dict:
    """Apply ``--iterations`` / ``--lr`` to a protocol dict; lr steps past the new end are dropped."""
    proto = dict(proto)
    if args.iterations is not None:
        if args.iterations < 1:
            raise UserError("--iterations must be at least 1")
        proto["iterations"] = args.iterations
        proto["lr_steps"] = [s for s in proto["lr_steps"] if s < args.iterations]
    if args.lr is not None:
        if not args.lr > 0:
            raise UserError("--lr must be positive")
        proto["lr"] = args.lr
    return proto


def add_input_size_argument(p: argparse.ArgumentParser) -> None:
    """``--input-size``: for tasks that feed the checkpoint's own input size (checked, never resized)."""
    p.add_argument("--input-size", type=argtypes.positive_int, default=None,
                   help="network input size; must equal the checkpoint's (default: the checkpoint's)")


SMOKE_INPUT_SIZE = 64  # the input size of dc-train's smoke scale, which the embedded data is drawn for


def input_size(args: argparse.Namespace, meta: dict) -> int:
    """The input size a task feeds: the checkpoint's; a different ``--input-size`` is a one-line
    user error.

    At smoke scale on the embedded data, a ResNet built for another size runs at 64 px: its weights
    do not depend on the size, and upsampling the 64-px images to 224 only costs minutes (the result
    records both sizes; ``--input-size`` with the checkpoint's own size keeps it). An AlexNet or VGG16
    cannot change size (fc6 is as wide as the size makes conv5), so it runs at its own size, upsampled,
    with a note: its rows are not ranked against 64-px ones."""
    size = int(meta["input_size"])
    asked = getattr(args, "input_size", None)
    if asked is not None and int(asked) != size:
        raise UserError(f"--input-size {asked}: checkpoint {args.checkpoint} was built for {size}px inputs; "
                        f"pass --input-size {size} (or convert the weights at {asked}px with dc-convert)")
    embedded_smoke = getattr(args, "scale", None) == "smoke" and getattr(args, "data", "") is None
    if asked is None and embedded_smoke and size != SMOKE_INPUT_SIZE:
        if family_of(meta["arch"]) == "resnet":
            print(f"note: {printable(str(args.checkpoint), 200)} is built for {size}px inputs; at smoke scale the "
                  f"ResNet runs at the embedded data's {SMOKE_INPUT_SIZE}px (its weights do not depend on the "
                  f"size; --input-size {size} keeps {size}px)", file=sys.stderr)
            args.adapted_input_size = {"checkpoint": size, "run": SMOKE_INPUT_SIZE,
                                       "why": "smoke scale on the embedded data: a ResNet runs at 64 px"}
            return SMOKE_INPUT_SIZE
        print(f"note: {printable(str(args.checkpoint), 200)} is built for {size}px inputs, the embedded data for "
              f"{SMOKE_INPUT_SIZE}px: its images are upsampled (slower; the leaderboard does not rank it against "
              f"{SMOKE_INPUT_SIZE}px rows). A random baseline comparable with dc-train's smoke checkpoint: "
              f"dc-convert --from random --input-size {SMOKE_INPUT_SIZE}", file=sys.stderr)
    return size


def default_help(full, smoke) -> str:
    return f"default: {full}" if full == smoke else f"default: {full} (full), {smoke} (smoke)"


def add_sgd_arguments(p: argparse.ArgumentParser, defaults: dict) -> None:
    """The optimiser / crop flags of the probe-style tasks, their help drawn from ``defaults``
    ((full, smoke) pairs), so the help can never disagree with what :func:`resolve_protocol` uses."""
    p.add_argument("--epochs", type=argtypes.positive_int, default=None, help=default_help(*defaults["epochs"]))
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None, help=default_help(*defaults["batch_size"]))
    p.add_argument("--lr", type=argtypes.positive_float, default=None, help=default_help(*defaults["lr"]))
    p.add_argument("--momentum", type=argtypes.fraction, default=None, help=default_help(*defaults["momentum"]))
    p.add_argument("--weight-decay", type=argtypes.nonneg_float, default=None, help=default_help(*defaults["weight_decay"]))
    p.add_argument("--train-aug", choices=("crop-flip", "none"), default=None,
                   help="crop-flip streams the trunk through augmented crops; none caches the frozen "
                        "features. " + default_help(*defaults["train_aug"]))
    p.add_argument("--eval-crops", type=int, choices=(1, 10), default=None,
                   help=default_help(*defaults["eval_crops"]))


def defaults_at(defaults: dict, scale: str) -> dict:
    """The column of a (full, smoke) defaults table for ``scale``."""
    col = 0 if scale == "full" else 1
    return {k: copy.deepcopy(v[col]) for k, v in defaults.items()}


def positive_ints(spec, flag: str, example: str) -> list[int]:
    """A comma-separated list flag (``--shots 4,8``, ``--k 10,20``) as sorted distinct positive integers."""
    try:
        values = sorted({int(s) for s in str(spec).split(",") if s.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise UserError(f"{flag} {spec}: give a comma-separated list of positive integers, e.g. {example}")
    return values


def resolve_protocol(args: argparse.Namespace, defaults: dict) -> dict:
    """Each protocol value: the flag if given, else the (full, smoke) default for --scale."""
    out = defaults_at(defaults, args.scale)
    for k in out:
        given = getattr(args, k, None)
        if given is not None:
            out[k] = given
    return out


# --------------------------------------------------------------------------------------------
# Choosing from data: a held-out split of the TRAIN set

SELECTIONS = ("held-out", "thesis")
# A fixed held-out size at full scale: the standard error of a top-1 near 50% on n images is
# sqrt(0.25 / n), 0.5 points at n = 10,000 (ImageNet: 10 per class, Places205: 48 per class).
HELD_OUT_FULL = 10_000
HELD_OUT_SMOKE_FRACTION = 5  # smoke: a fifth of train, so the embedded data keeps most for training
_HELD_OUT_STREAM = 0x48454C44  # "HELD": the split's own numpy stream, apart from every other draw of a seed


def add_selection_arguments(p: argparse.ArgumentParser, what: str = "epoch") -> None:
    """``--selection`` and ``--val-size`` of a task that chooses its ``what`` from data."""
    p.add_argument("--selection", choices=SELECTIONS, default="held-out",
                   help=f"held-out: choose the {what} by top-1 on a class-balanced split carved from the train "
                        "split (trained on the rest), then score the test split once; thesis: score the test "
                        f"split every {what} and report the last and the best (the thesis's rule, which "
                        "chooses on the test set) (default: held-out)")
    p.add_argument("--val-size", type=argtypes.positive_int, default=None,
                   help=f"images held out of the train split for --selection held-out, the same number per "
                        f"class (default: {HELD_OUT_FULL} (full), a fifth of train (smoke))")


def held_out_size(args: argparse.Namespace, n_train: int) -> int:
    """``--val-size``, else the scale's default."""
    given = getattr(args, "val_size", None)
    if given is not None:
        return int(given)
    return HELD_OUT_FULL if args.scale == "full" else max(1, n_train // HELD_OUT_SMOKE_FRACTION)


def held_out_split(labels: Sequence[int], size: int, seed: int, where: str) -> tuple[list[int], list[int], dict]:
    """(train indices, held-out indices, the selection's ``split`` block) of ``labels`` (the TRAIN
    split's): ``size // classes`` images of every class held out, drawn without replacement by
    ``numpy.random.default_rng([seed, stream])`` over each class's indices in dataset order. Only
    train labels are read, so nothing about the test split can move the split or what it chooses."""
    y = np.asarray(labels)
    classes = np.unique(y)
    per_class = int(size) // len(classes)
    if per_class < 1:
        raise UserError(f"--val-size {size}: fewer than one image per class ({len(classes)} classes in {where}); "
                        f"give at least {len(classes)}")
    counts = np.bincount(np.searchsorted(classes, y), minlength=len(classes))
    if counts.min() <= per_class:
        c = classes[int(np.argmin(counts))]
        raise UserError(f"--val-size {size}: class {c} of {where} has {counts.min()} images, and holding out "
                        f"{per_class} per class leaves it none to train on; give a smaller --val-size")
    rng = np.random.default_rng([seed, _HELD_OUT_STREAM])
    held = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes]))
    rest = np.setdiff1d(np.arange(len(y)), held)
    block = {"source": "train", "size": int(len(held)), "per_class": per_class, "seed": int(seed),
             "train_left": int(len(rest)), "rule": "class-balanced, numpy default_rng([seed, 0x48454C44])"}
    return rest.tolist(), held.tolist(), block


# --------------------------------------------------------------------------------------------
# Data


def dataset_dir(args: argparse.Namespace, sub: str, required: tuple[str, ...]) -> Path:
    """The folder of one dataset: ``--data`` itself if it holds ``required``, else ``--data/sub``
    (so the embedded root and a real dataset root both work); without --data, embedded/sub."""
    root = data_root(args)
    for cand in (root, root / sub):
        if all((cand / r).exists() for r in required):
            return cand
    want = " and ".join(required)
    raise UserError(f"--data {root}: expected {want} there (or under {root / sub}); "
                    "pass the dataset root")


def data_root(args: argparse.Namespace) -> Path:
    """``--data`` if given (must exist), else the embedded data at smoke scale."""
    if args.data is not None:
        if not args.data.is_dir():
            raise UserError(f"--data {args.data} is not a directory; pass the dataset root")
        return args.data
    from dcbench.embedded import embedded_data

    return embedded_data(scale="smoke", seed=0)


def align_classes(train_classes: Sequence[str], val_classes: Sequence[str], where: str) -> list[int]:
    """Map each val class index to the train class index of the same name; a val class the
    train split lacks is a one-line user error."""
    index = {c: i for i, c in enumerate(train_classes)}
    missing = [c for c in val_classes if c not in index]
    if missing:
        raise UserError(f"{where}: val classes missing from train: {', '.join(map(str, missing[:5]))}"
                        f"{' ...' if len(missing) > 5 else ''}; train and val must share the class set")
    return [index[c] for c in val_classes]


def sample_ids(dataset) -> list[str]:
    """The test images' ids in scoring order, for :class:`dcbench.outcomes.Outcomes`: VOC image ids,
    else paths relative to the dataset's image root (so the same test set stored elsewhere has the
    same ids and two results on it can be compared pairwise)."""
    if hasattr(dataset, "ids"):
        return [str(i) for i in dataset.ids]
    root = Path(dataset.root)
    return [os.path.relpath(p, root) for p, _ in dataset.samples]


def remap_targets(dataset, mapping: list[int]) -> None:
    """Rewrite a (ImageFolder / ListFileDataset) dataset's targets through ``mapping`` in place."""
    dataset.samples = [(p, mapping[t]) for p, t in dataset.samples]


def check_list_labels(train_labels: Sequence[int], val_labels: Sequence[int], where: str) -> None:
    missing = sorted(set(val_labels) - set(train_labels))
    if missing:
        raise UserError(f"{where}: val labels missing from train: {', '.join(map(str, missing[:5]))}"
                        f"{' ...' if len(missing) > 5 else ''}; train and val must share the class set")


# --------------------------------------------------------------------------------------------
# Transforms


def normalize(meta: dict) -> T.Normalize:
    """The checkpoint's own normalisation (:func:`dcbench.checkpoint.preprocessing`; no fall-back)."""
    pre = preprocessing(meta)
    return T.Normalize(pre.mean, pre.std)


class PathCrop:
    """``path -> normalised float (C, H, W)`` through a :mod:`dcbench.imageload` crop (``--loader
    draft``): the JPEG is decoded at reduced size when the crop allows, and otherwise the pixels are
    bit-identical to the torchvision transform it replaces (same random draws, same arithmetic).
    ``then`` runs on the uint8 crop (crop-flip's RandomCrop and flip); ``batch_dim`` adds the
    one-crop axis of ``--eval-crops 1``."""

    reads_path = True  # dcbench.datasets hands it the file path instead of a decoded image

    def __init__(self, crop: Callable, meta: dict, then: Callable | None = None, batch_dim: bool = False):
        pre = preprocessing(meta)
        self.crop, self.then, self.batch_dim = crop, then, batch_dim
        self.mean, self.std = tuple(pre.mean), tuple(pre.std)

    def __call__(self, path: str) -> torch.Tensor:
        x = self.crop(path)
        if self.then is not None:
            x = self.then(x)
        x = IL.normalise(x[None], self.mean, self.std)
        return x if self.batch_dim else x[0]


def train_transform(meta: dict, size: int, kind: str, loader: str = "draft") -> Callable:
    """Training augmentation by name.

    ``crop-flip``: Resize(256) CenterCrop(256) RandomCrop(224) flip  (eval_linear.py)
    ``rrc-flip``:  RandomResizedCrop(224) flip                      (torchvision ImageNet recipe)
    ``voc``:       flip, RandomResizedCrop(224, scale 0.1-0.5, ratio 1)  (eval_voc_classif.py)
    ``none``:      the evaluation centre crop (deterministic, so features can be cached)

    ``loader="draft"`` (default) reads paths through :class:`PathCrop`; ``torchvision`` is the PIL
    path. ``voc`` is always the PIL path: it draws the flip before the box, and at 10-50% of a VOC
    image no reduced-size decode is possible anyway.
    """
    check_loader(loader)
    norm = [T.ToTensor(), normalize(meta)]
    if kind == "crop-flip":
        big = IL.resize_for(size)
        if loader == "draft":
            return PathCrop(IL.CentreCrop(big, big), meta, then=T.Compose([T.RandomCrop(size), T.RandomHorizontalFlip()]))
        return T.Compose([T.Resize(big), T.CenterCrop(big), T.RandomCrop(size), T.RandomHorizontalFlip(), *norm])
    if kind == "rrc-flip":
        if loader == "draft":
            return PathCrop(IL.RandomCrop(size, (0.08, 1.0)), meta)  # RandomResizedCrop's default scale
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    if kind == "voc":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomResizedCrop(size, scale=(0.1, 0.5), ratio=(1.0, 1.0)),
                          *norm])
    if kind == "none":
        return center_crop_transform(meta, size, loader)
    raise ValueError(f"unknown augmentation {kind!r}")


def check_loader(loader: str) -> None:
    if loader not in TRANSFER_LOADERS:
        raise UserError(f"--loader must be one of {', '.join(TRANSFER_LOADERS)}, not {loader!r}")


def center_crop_transform(meta: dict, size: int, loader: str = "draft") -> Callable:
    check_loader(loader)
    if loader == "draft":
        return PathCrop(IL.CentreCrop(IL.resize_for(size), size), meta)
    return T.Compose([T.Resize(IL.resize_for(size)), T.CenterCrop(size), T.ToTensor(), normalize(meta)])


class _StackCrops:
    def __init__(self, meta: dict):
        self.norm = T.Compose([T.ToTensor(), normalize(meta)])

    def __call__(self, crops):
        return torch.stack([self.norm(c) for c in crops])


def ten_crop_transform(meta: dict, size: int) -> T.Compose:
    """Resize(256) then the 4 corners + centre, and their mirrors: a (10, C, H, W) tensor."""
    return T.Compose([T.Resize(IL.resize_for(size)), T.TenCrop(size), _StackCrops(meta)])


class RepeatedCrops:
    """``n`` independent draws of a random transform, stacked: (n, C, H, W) (eval_voc_classif.py's
    10 random test crops)."""

    def __init__(self, transform: Callable, n: int):
        self.transform, self.n = transform, n

    def __call__(self, img):
        return torch.stack([self.transform(img) for _ in range(self.n)])


def eval_crops_transform(meta: dict, size: int, crops: int, loader: str = "draft") -> Callable:
    """1 = centre crop (a (1, C, H, W) tensor); 10 = ten-crop (always the PIL path: the full resized
    image is needed for its corners)."""
    check_loader(loader)
    if crops == 10:
        return ten_crop_transform(meta, size)
    if crops == 1:
        if loader == "draft":
            return PathCrop(IL.CentreCrop(IL.resize_for(size), size), meta, batch_dim=True)
        center = center_crop_transform(meta, size, loader)
        return lambda img: center(img).unsqueeze(0)
    raise UserError(f"--eval-crops {crops}: choose 1 (centre) or 10 (ten-crop)")


# --------------------------------------------------------------------------------------------
# Results


class Timer:
    """Collects wall-clock seconds per named stage for the result's ``timings``."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.timings[name] = timer.timings.get(name, 0.0) + time.perf_counter() - self.t0

        return _Stage()


def precision_of(args: argparse.Namespace) -> str:
    """``--precision`` resolved for ``--device`` (fp32 when a caller's args predate the flag)."""
    return resolve_precision(getattr(args, "precision", "fp32"), torch.device(args.device))


def loader_of(args: argparse.Namespace) -> str:
    """``--loader`` (torchvision when a caller's args predate the flag)."""
    return getattr(args, "loader", "torchvision")


def save_and_report(args: argparse.Namespace, result: dict, outcomes=None) -> Path:
    """Write the result (and its per-image ``outcomes``, :class:`dcbench.outcomes.Outcomes`, from
    which its intervals come) under ``--out``, and print its metrics."""
    # every result says how it computed and decoded
    result["protocol"] = {**result["protocol"], "precision": precision_of(args), "loader": loader_of(args)}
    if getattr(args, "adapted_input_size", None):
        result["protocol"]["input_size_adapted"] = args.adapted_input_size
    path = write_result(result, args.out, outcomes)
    ci = result.get("intervals", {}).get("metrics", {})
    metrics = ", ".join(f"{k}={v:.2f}" + (f" [{ci[k][0]:.2f}, {ci[k][1]:.2f}]" if k in ci else "")
                        for k, v in result["metrics"].items())
    print(f"{result['task']} [{result['scale']}] {printable(result['checkpoint']['name'])}: {metrics}")
    print(f"result: {path}")
    return path

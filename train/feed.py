"""The data feed of dc-train: which crops an image gets, and the loaders that deliver them.

:func:`crop_loaders` builds the training and centre crops for ``--loader`` (torchvision's
transforms, PIL's reduced-size ``draft`` decode, or file bytes for nvJPEG); :class:`Feed` runs
one crop over one dataset for a whole run, so worker processes start once, and every item
re-seeds torch's RNG from the batch seed and its position: a crop depends on the seed, not on
which worker drew it. :func:`to_inputs` turns a collated batch into the network's input.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dcbench import imageload as IL
from dcbench.datasets import collate_skip_none, load_or_skip
from dcbench.errors import UserError
from dcbench.models import IMAGENET_MEAN, IMAGENET_STD
from dcbench.precision import memory_format
from dcbench.train.config import TrainConfig


def _worker_init(_: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def transforms(cfg: TrainConfig):
    """torchvision's PIL-to-PIL crops (the reference path; ToTensor + Normalize are :func:`IL.normalise`)."""
    import torchvision.transforms as T

    resize = IL.resize_for(cfg.input_size)
    crop = {"random-sized": [T.RandomResizedCrop(cfg.input_size, scale=(cfg.crop_min_scale, 1.0))],
            "random": [T.Resize(resize), T.RandomCrop(cfg.input_size)],
            "central": [T.Resize(resize), T.CenterCrop(cfg.input_size)]}[cfg.crop]
    flip = {"horizontal": [T.RandomHorizontalFlip()], "vertical": [T.RandomVerticalFlip()], "none": []}[cfg.flip]
    train = T.Compose(crop + flip)
    centre = T.Compose([T.Resize(resize), T.CenterCrop(cfg.input_size)])
    return train, centre


def crop_loaders(cfg: TrainConfig, loader: str) -> tuple:
    """(training crop, centre crop): callables ``path -> uint8 CHW`` (or file bytes + box for nvjpeg)."""
    resize = IL.resize_for(cfg.input_size)
    scale = (cfg.crop_min_scale, 1.0)
    if loader == "torchvision":
        train_tf, centre_tf = transforms(cfg)
        return IL.TorchvisionCrop(train_tf), IL.TorchvisionCrop(centre_tf)
    if loader == "nvjpeg":
        sized = cfg.crop == "random-sized"
        return (IL.JpegBytes(cfg.input_size, scale if sized else None, resize=None if sized else resize,
                             crop=cfg.crop, flip=cfg.flip),
                IL.JpegBytes(cfg.input_size, None, resize=resize))
    return (IL.RandomCrop(cfg.input_size, scale, crop=cfg.crop, flip=cfg.flip, resize=resize),
            IL.CentreCrop(resize, cfg.input_size))


class _View(Dataset):
    """``fn(path of the items[i]-th image of ds)``, paired with ``tags[i]``; None if unreadable."""

    def __init__(self, ds, items: np.ndarray, tags: np.ndarray, fn):
        self.ds, self.items, self.tags, self.fn = ds, items, tags, fn

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        x = load_or_skip(self.ds, self.ds.samples[int(self.items[i])][0], self.fn)
        if x is None:
            return None
        return x, int(self.tags[i])


def _collate(cfg: TrainConfig):
    return IL.collate_bytes if cfg.loader == "nvjpeg" else collate_skip_none


def _pin(cfg: TrainConfig, device: torch.device) -> bool:
    """Pinned host batches speed the copy of decoded crops to the GPU; nvjpeg's batches are file
    bytes that ``decode_jpeg`` reads on the host, so pinning them would only cost a copy."""
    return device.type == "cuda" and cfg.loader != "nvjpeg"


def _loader(view: Dataset, batch_size: int, cfg: TrainConfig, seed: int, device: torch.device) -> DataLoader:
    """A one-pass loader whose workers draw from torch's RNG seeded by ``seed`` (the landed path)."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(view, batch_size=batch_size, shuffle=False, num_workers=cfg.workers,
                      collate_fn=_collate(cfg), generator=g, worker_init_fn=_worker_init,
                      pin_memory=_pin(cfg, device), prefetch_factor=cfg.prefetch if cfg.workers > 0 else None,
                      drop_last=False)


class _Batches(torch.utils.data.Sampler):
    """The batch sampler of a persistent loader: this pass's batches, replaced before each pass."""

    def __init__(self):
        self.batches: list = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededView(Dataset):
    """Whole batches ``(dataset indices, tags, seed)``: item j re-seeds torch's RNG with seed + j first."""

    def __init__(self, ds, fn):
        self.ds, self.fn = ds, fn

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, request: list) -> list:
        items, tags, seed = request[0]
        out = []
        for j, (i, tag) in enumerate(zip(items.tolist(), tags.tolist())):
            torch.manual_seed(seed + j)
            x = load_or_skip(self.ds, self.ds.samples[i][0], self.fn)
            out.append(None if x is None else (x, tag))
        return out


class Feed:
    """One crop function over one dataset for a whole run: ``feed(items, tags, batch_size, seed)``
    iterates collated batches.

    With workers, one persistent DataLoader: its workers start once per run, not once per epoch,
    and every item re-seeds torch's RNG from (``seed``, its position), so a crop depends on the
    seed only, not on which worker (or how many) drew it, and a resumed run draws the same crops.
    Without workers (the smoke default) it is the landed single-process loader, bit for bit.
    """

    def __init__(self, ds, fn, cfg: TrainConfig, device: torch.device):
        self.ds, self.fn, self.cfg, self.device = ds, fn, cfg, device
        self._batches = _Batches()
        self._loader = None

    def __call__(self, items: np.ndarray, tags: np.ndarray, batch_size: int, seed: int):
        if self.cfg.workers == 0:
            return _loader(_View(self.ds, items, tags, self.fn), batch_size, self.cfg, seed, self.device)
        if self._loader is None:
            # Its own generator: starting the workers must not draw from the global RNG (dropout's).
            self._loader = DataLoader(_SeededView(self.ds, self.fn), batch_sampler=self._batches,
                                      num_workers=self.cfg.workers, collate_fn=_collate(self.cfg),
                                      pin_memory=_pin(self.cfg, self.device), prefetch_factor=self.cfg.prefetch,
                                      persistent_workers=True, generator=torch.Generator().manual_seed(0))
        base = int(seed) << 32  # stage seeds are 32-bit: every (stage, position) gets its own torch seed
        self._batches.batches = [[(items[s:s + batch_size], tags[s:s + batch_size], base + s)]
                                 for s in range(0, len(items), batch_size)]
        return self._loader


def to_inputs(batch, cfg: TrainConfig, device: torch.device, centre: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch -> (normalised float input on ``device`` in the precision's layout, tags)."""
    if cfg.loader == "nvjpeg":
        datas, params, tags = batch
        # central and random training crops come as crops of the resized image, like the centre crop
        x, keep = IL.decode_batch(datas, params, cfg.input_size, device, centre=centre or cfg.crop != "random-sized")
        tags = tags[keep]
    else:
        x, tags = batch
        x = x.to(device, non_blocking=True)
    x = IL.normalise(x, IMAGENET_MEAN, IMAGENET_STD).contiguous(memory_format=memory_format(cfg.precision))
    return x, tags


def resolve_data(cfg: TrainConfig) -> Path:
    """The training ImageFolder: ``--data`` (or its ``classification/train``), else the embedded data."""
    if cfg.data is None:
        from dcbench.embedded import embedded_data

        root = Path(embedded_data(scale="smoke", seed=0)) / "classification" / "train"
    else:
        root = Path(cfg.data)
        if (root / "classification" / "train").is_dir():  # the embedded / dc-data layout
            root = root / "classification" / "train"
    if not root.exists():
        raise UserError(f"--data {root} does not exist; pass an ImageFolder root (ROOT/<class>/<image>.jpg)")
    if not root.is_dir():
        raise UserError(f"--data {root} is not a directory; pass an ImageFolder root (ROOT/<class>/<image>.jpg)")
    return root



@dataclass(frozen=True)
class ValSet:
    """``--targets labels``: the folder scored each epoch (centre crops) and its images' classes."""

    root: Path
    feed: Feed
    items: np.ndarray
    targets: np.ndarray


def val_set(cfg: TrainConfig, root: Path, ds, device) -> ValSet | None:
    """The val set of a supervised run: ``--val-data``, else ``val/`` beside the train folder, else None."""
    from dcbench.datasets import ImageFolder

    if cfg.val_data is not None:
        vroot = Path(cfg.val_data)
        if not vroot.is_dir():
            raise UserError(f"--val-data {vroot} is not a folder; pass an ImageFolder with the training classes")
    else:
        vroot = root.parent / "val"
        if root.name != "train" or not vroot.is_dir():
            # said even under --quiet: a supervised run without its accuracy curve is easy to miss
            print(f"warning: no val/ folder beside {root}, so no val top-1 is logged; pass --val-data DIR",
                  file=sys.stderr)
            return None
    vds = ImageFolder(vroot, transform=None)
    if list(vds.classes) != list(ds.classes):
        raise UserError(f"--val-data {vroot}: its class folders are not those of {root}; pass a val folder "
                        "with the same class names")
    return ValSet(vroot, Feed(vds, crop_loaders(cfg, cfg.loader)[1], cfg, device), np.arange(len(vds)),
                  np.asarray(vds.targets))


"""Train/eval pieces the classification transfer tasks share: transforms, loaders, crop averaging,
top-1, VOC-classification AP, the original scripts' learning-rate rules, class alignment,
feature extraction with the per-layer cache. Pure functions where possible, so tests call them
on tiny tensors.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from dcbench.datasets import collate_skip_none
from dcbench.errors import UserError
from dcbench.transfer.common import cache_get, cache_put, normalize

# --------------------------------------------------------------------------------------------
# Transforms


def resize_for(size: int) -> int:
    """The ImageNet convention 256 -> 224, scaled to other input sizes."""
    return round(size * 256 / 224)


def train_transform(meta: dict, size: int, kind: str) -> T.Compose:
    """Training augmentation by name.

    ``crop-flip``: Resize(256) CenterCrop(256) RandomCrop(224) flip  (eval_linear.py)
    ``rrc-flip``:  RandomResizedCrop(224) flip                      (torchvision ImageNet recipe)
    ``voc``:       flip, RandomResizedCrop(224, scale 0.1-0.5, ratio 1)  (eval_voc_classif.py)
    ``none``:      the evaluation centre crop (deterministic, so features can be cached)
    """
    norm = [T.ToTensor(), normalize(meta)]
    if kind == "crop-flip":
        big = resize_for(size)
        return T.Compose([T.Resize(big), T.CenterCrop(big), T.RandomCrop(size), T.RandomHorizontalFlip(), *norm])
    if kind == "rrc-flip":
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    if kind == "voc":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomResizedCrop(size, scale=(0.1, 0.5), ratio=(1.0, 1.0)),
                          *norm])
    if kind == "none":
        return center_crop_transform(meta, size)
    raise ValueError(f"unknown augmentation {kind!r}")


TRAIN_AUGS = ("crop-flip", "rrc-flip", "voc", "none")


def center_crop_transform(meta: dict, size: int) -> T.Compose:
    return T.Compose([T.Resize(resize_for(size)), T.CenterCrop(size), T.ToTensor(), normalize(meta)])


class _StackCrops:
    def __init__(self, meta: dict):
        self.norm = T.Compose([T.ToTensor(), normalize(meta)])

    def __call__(self, crops):
        return torch.stack([self.norm(c) for c in crops])


def ten_crop_transform(meta: dict, size: int) -> T.Compose:
    """Resize(256) then the 4 corners + centre, and their mirrors: a (10, C, H, W) tensor."""
    return T.Compose([T.Resize(resize_for(size)), T.TenCrop(size), _StackCrops(meta)])


class RepeatedCrops:
    """``n`` independent draws of a random transform, stacked: (n, C, H, W) (eval_voc_classif.py's
    10 random test crops)."""

    def __init__(self, transform: Callable, n: int):
        self.transform, self.n = transform, n

    def __call__(self, img):
        return torch.stack([self.transform(img) for _ in range(self.n)])


def eval_crops_transform(meta: dict, size: int, crops: int) -> Callable:
    """1 = centre crop (a (1, C, H, W) tensor); 10 = ten-crop."""
    if crops == 10:
        return ten_crop_transform(meta, size)
    if crops == 1:
        center = center_crop_transform(meta, size)
        return lambda img: center(img).unsqueeze(0)
    raise UserError(f"--eval-crops {crops}: choose 1 (centre) or 10 (ten-crop)")


# --------------------------------------------------------------------------------------------
# Metrics


def average_crops(scores: torch.Tensor, ncrops: int, softmax: bool = True) -> torch.Tensor:
    """(B * ncrops, C) scores, crops of one image adjacent -> (B, C) mean over crops.

    With ``softmax`` the probabilities are averaged (eval_linear.py's ten-crop rule); without,
    the raw scores are (VOC: sum of scores ranks like their mean)."""
    if scores.shape[0] % ncrops:
        raise ValueError(f"{scores.shape[0]} scores is not a multiple of {ncrops} crops")
    if softmax:
        scores = torch.softmax(scores, dim=1)
    return scores.view(-1, ncrops, scores.shape[1]).mean(1)


def top1(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray) -> float:
    """Top-1 accuracy in percent (ties resolved by the lowest class index, like argmax)."""
    scores, targets = torch.as_tensor(scores), torch.as_tensor(targets)
    return float((scores.argmax(1) == targets).float().mean() * 100)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Non-interpolated AP over distinct score thresholds, as sklearn's ``average_precision_score``:
    sum over thresholds (descending) of (recall step) * precision; tied scores form one threshold.
    ``labels`` in {0, 1}. NaN when there is no positive."""
    scores, labels = np.asarray(scores, float), np.asarray(labels) > 0
    npos = labels.sum()
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def voc_class_aps(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class AP (fraction) for VOC classification. ``targets`` in {1, 0 = difficult only, -1}:
    images whose only objects of a class are difficult are left out of that class's ranking."""
    scores, targets = np.asarray(scores, float), np.asarray(targets)
    aps = np.empty(targets.shape[1])
    for c in range(targets.shape[1]):
        keep = targets[:, c] != 0
        aps[c] = average_precision(scores[keep, c], targets[keep, c] > 0)
    return aps


# --------------------------------------------------------------------------------------------
# Training helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def inverse_sqrt_lr(lr0: float, weight_decay: float, step: int) -> float:
    """eval_linear.py's ``learning_rate_decay``: lr0 / sqrt(1 + lr0 * wd * t), t = iterations done."""
    return lr0 / float(np.sqrt(1.0 + lr0 * weight_decay * step))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def loader(ds: Dataset, batch_size: int, *, shuffle: bool, workers: int, seed: int = 0,
           drop_last: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, drop_last=drop_last,
                      collate_fn=collate_skip_none, generator=gen, persistent_workers=False)


def align_classes(train_classes: Sequence[str], val_classes: Sequence[str], where: str) -> list[int]:
    """Map each val class index to the train class index of the same name; a val class the
    train split lacks is a one-line user error."""
    index = {c: i for i, c in enumerate(train_classes)}
    missing = [c for c in val_classes if c not in index]
    if missing:
        raise UserError(f"{where}: val classes missing from train: {', '.join(map(str, missing[:5]))}"
                        f"{' ...' if len(missing) > 5 else ''}; train and val must share the class set")
    return [index[c] for c in val_classes]


def remap_targets(dataset, mapping: list[int]) -> None:
    """Rewrite a (ImageFolder / ListFileDataset) dataset's targets through ``mapping`` in place."""
    dataset.samples = [(p, mapping[t]) for p, t in dataset.samples]


def check_list_labels(train_labels: Sequence[int], val_labels: Sequence[int], where: str) -> None:
    missing = sorted(set(val_labels) - set(train_labels))
    if missing:
        raise UserError(f"{where}: val labels missing from train: {', '.join(map(str, missing[:5]))}"
                        f"{' ...' if len(missing) > 5 else ''}; train and val must share the class set")


def frozen(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm uses its running statistics)."""
    for p in module.parameters():
        p.requires_grad = False
    return module.eval()


def init_linear(m: nn.Linear, bias: float = 0.0) -> None:
    """DeepCluster's linear init: N(0, 0.01), constant bias."""
    m.weight.data.normal_(0, 0.01)
    m.bias.data.fill_(bias)


def state_fingerprint(module: nn.Module) -> float:
    """A cheap sum of all parameters and buffers, to assert frozen weights did not move."""
    with torch.no_grad():
        return float(sum(t.double().sum() for t in module.state_dict().values() if t.is_floating_point()))


# --------------------------------------------------------------------------------------------
# Heads on frozen features: one feature pass feeds every head


def _default_help(full, smoke) -> str:
    return f"default: {full}" if full == smoke else f"default: {full} (full), {smoke} (smoke)"


def add_sgd_arguments(p: argparse.ArgumentParser, defaults: dict) -> None:
    """The optimiser / crop flags of the probe-style tasks, their help drawn from ``defaults``
    ((full, smoke) pairs), so the help can never disagree with what :func:`resolve_protocol` uses."""
    p.add_argument("--epochs", type=int, default=None, help=_default_help(*defaults["epochs"]))
    p.add_argument("--batch-size", type=int, default=None, help=_default_help(*defaults["batch_size"]))
    p.add_argument("--lr", type=float, default=None, help=_default_help(*defaults["lr"]))
    p.add_argument("--momentum", type=float, default=None, help=_default_help(*defaults["momentum"]))
    p.add_argument("--weight-decay", type=float, default=None, help=_default_help(*defaults["weight_decay"]))
    p.add_argument("--train-aug", choices=("crop-flip", "none"), default=None,
                   help="crop-flip streams the trunk through augmented crops; none caches the frozen "
                        "features. " + _default_help(*defaults["train_aug"]))
    p.add_argument("--eval-crops", type=int, choices=(1, 10), default=None,
                   help=_default_help(*defaults["eval_crops"]))


def resolve_protocol(args: argparse.Namespace, defaults: dict) -> dict:
    """Each protocol value: the flag if given, else the (full, smoke) default for --scale."""
    col = 0 if args.scale == "full" else 1
    out = {}
    for k, v in defaults.items():
        given = getattr(args, k, None)
        out[k] = v[col] if given is None else given
    return out


def train_heads(heads: nn.ModuleList, train_batches, val_batches, *, epochs: int, lr: float, momentum: float,
                weight_decay: float, device: str, desc: str = "probe") -> list[list[float]]:
    """Train every head together; ``train_batches(epoch)`` and ``val_batches()`` yield
    (list of per-head features, labels[, ncrops]). Returns top-1 history[head][epoch]."""
    opt = torch.optim.SGD(heads.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    history: list[list[float]] = [[] for _ in heads]
    step = 0
    for epoch in tqdm(range(epochs), desc=desc, leave=False, disable=None):
        heads.train()
        for feats, y in train_batches(epoch):
            set_lr(opt, inverse_sqrt_lr(lr, weight_decay, step))
            y = y.to(device)
            loss = sum(loss_fn(h(f), y) for h, f in zip(heads, feats))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        heads.eval()
        scores: list[list[torch.Tensor]] = [[] for _ in heads]
        ys = []
        with torch.no_grad():
            for feats, y, ncrops in val_batches():
                for i, (h, f) in enumerate(zip(heads, feats)):
                    scores[i].append(average_crops(h(f).float().cpu(), ncrops, softmax=True))
                ys.append(y)
        y = torch.cat(ys)
        for i in range(len(heads)):
            history[i].append(top1(torch.cat(scores[i]), y))
    return history


def cached_batches(feats: list[np.ndarray], y: np.ndarray, batch_size: int, seed: int, device: str):
    """train_batches over cached (N, D) features: a fresh permutation per epoch."""
    yt = torch.from_numpy(y).long()
    xs = [torch.from_numpy(f).float().to(device) for f in feats]

    def batches(epoch: int):
        perm = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(len(y)))
        for s in range(0, len(y), batch_size):
            idx = perm[s:s + batch_size]
            yield [x[idx.to(device)] for x in xs], yt[idx]

    return batches


def cached_val_batches(feats: list[np.ndarray], y: np.ndarray, batch_size: int, device: str):
    """val_batches over cached (N, ncrops, D) features."""
    ncrops = feats[0].shape[1]
    xs = [torch.from_numpy(f).float().to(device) for f in feats]
    yt = torch.from_numpy(y).long()

    def batches():
        for s in range(0, len(y), batch_size):
            yield [x[s:s + batch_size].flatten(0, 1) for x in xs], yt[s:s + batch_size], ncrops

    return batches


def stream_batches(make_loader, forward, device: str):
    """train_batches that run the trunk: one ``forward`` call per batch for all heads."""
    def batches(epoch: int):
        for batch in make_loader(epoch):
            if batch is None:
                continue
            x, y = batch
            with torch.no_grad():
                feats = forward(x.to(device))
            yield feats, y

    return batches


def stream_val_batches(make_loader, forward, device: str):
    def batches():
        for batch in make_loader():
            if batch is None:
                continue
            x, y = batch
            ncrops = x.shape[1]
            with torch.no_grad():
                feats = forward(x.flatten(0, 1).to(device))
            yield feats, y, ncrops

    return batches


# --------------------------------------------------------------------------------------------
# Feature extraction with the per-layer cache


def extract_cached(args: argparse.Namespace, base_key: dict, names: Sequence[str],
                   batches: Callable[[], DataLoader], forward: Callable[[torch.Tensor], list[torch.Tensor]],
                   *, device: str, desc: str, dtype=np.float16) -> tuple[dict[str, np.ndarray], np.ndarray, bool]:
    """Features of every image for each of ``names`` (one forward per batch gives all of them).

    Each name is cached separately under ``base_key + {"layer": name}``; the labels under
    ``"labels"``. Inputs of shape (B, n, C, H, W) (multi-crop) give features (N, n, D).
    Returns (features per name, labels, whether everything came from the cache)."""
    keys = {n: {**base_key, "layer": n} for n in names}
    label_key = {**base_key, "layer": "labels"}
    found = {n: cache_get(args, k) for n, k in keys.items()}
    labels = cache_get(args, label_key)
    if labels is not None and all(v is not None for v in found.values()):
        return {n: v["x"] for n, v in found.items()}, labels["y"], True
    feats: dict[str, list[np.ndarray]] = {n: [] for n in names}
    ys: list[np.ndarray] = []
    with torch.no_grad():
        for batch in tqdm(batches(), desc=desc, leave=False, disable=None):
            if batch is None:
                continue
            x, y = batch
            crops = x.shape[1] if x.dim() == 5 else 0
            if crops:
                x = x.flatten(0, 1)
            outs = forward(x.to(device))
            for n, o in zip(names, outs):
                o = o.flatten(1).float().cpu().numpy().astype(dtype)
                feats[n].append(o.reshape(-1, crops, o.shape[1]) if crops else o)
            ys.append(y.numpy())
    out = {n: np.concatenate(v) for n, v in feats.items()}
    y = np.concatenate(ys)
    for n in names:
        cache_put(args, keys[n], {"x": out[n]})
    cache_put(args, label_key, {"y": y})
    return out, y, False

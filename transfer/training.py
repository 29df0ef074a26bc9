"""How the transfer tasks compute: data loaders and the one "N steps over a loader" iterator,
learning-rate rules, the frozen-weights check, the checkpoint's conv trunk and fc6/fc7 for the
detection and segmentation heads, feature extraction with its on-disk cache, linear/MLP heads on
frozen features, crop averaging and the metrics. Pure functions where possible, so tests call
them on tiny tensors.

Role split: flags, defaults, data folders, transforms and results are in
:mod:`dcbench.transfer.protocol`; each protocol's own training loop stays in its task module.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dcbench.atomic import write_file_atomic
from dcbench.datasets import collate_skip_none
from dcbench.errors import UserError
from dcbench.models import DeepClusterNet
from dcbench.precision import autocast, memory_format
from dcbench.progress import progress

# --------------------------------------------------------------------------------------------
# Loaders, steps, learning rates


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

class DeviceLosses:
    """Per-step training losses kept on the device and read back every ``every`` steps and at the
    end: a host sync per step (``loss.item()``) would stall the GPU's queue each step.

    ``diverged`` (a message) raises :class:`UserError` when a read finds a non-finite loss: at most
    ``every`` steps after the divergence, and before anything is written.
    """

    def __init__(self, every: int = 50, diverged: str | None = None, bar=None):
        self.every, self.diverged, self.bar = every, diverged, bar
        self.values: list[float] = []
        self._pending: list[torch.Tensor] = []

    def append(self, loss: torch.Tensor) -> None:
        self._pending.append(loss.detach().float().reshape(()))
        if len(self._pending) >= self.every:
            self.flush()

    def flush(self) -> list[float]:
        if self._pending:
            values = torch.stack(self._pending).cpu().tolist()
            self._pending.clear()
            self.values.extend(values)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{values[-1]:.3f}", refresh=False)
            if self.diverged and not all(np.isfinite(values)):
                raise UserError(self.diverged)
        return self.values


def steps(loader: Iterable, n: int) -> Iterator:
    """``n`` batches from ``loader``, starting it again whenever it runs out; a batch that is None
    or empty (every image of it unreadable) is skipped and not counted."""
    it = iter(loader)
    done = 0
    while done < n:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        if batch is None or (isinstance(batch, list) and not batch):
            continue
        done += 1
        yield batch


def frozen(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm uses its running statistics)."""
    for p in module.parameters():
        p.requires_grad = False
    return module.eval()


def init_linear(m: nn.Linear, bias: float = 0.0) -> None:
    """DeepCluster's linear init: N(0, 0.01), constant bias."""
    m.weight.data.normal_(0, 0.01)
    m.bias.data.fill_(bias)


def parameter_snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer (BN running statistics included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, snapshot: dict[str, torch.Tensor], what: str) -> None:
    """The moco-style sanity check: a frozen part must be bit-identical after training."""
    for k, v in module.state_dict().items():
        if not torch.equal(v, snapshot[k]):
            raise RuntimeError(f"{what}: {k} changed during training although it is frozen")


# --------------------------------------------------------------------------------------------
# Whole-network fine-tuning (lowshot, semisup): a new classifier on the descriptor, every layer
# but the Sobel filter trained, BatchNorm in train mode


def with_new_classifier(net: nn.Module, n_classes: int) -> nn.Module:
    """``net`` with a new ``top_layer`` (N(0, 0.01)) on its descriptor (fc7; a ResNet's pooled res5),
    every parameter trainable except the fixed Sobel filter."""
    net.top_layer = nn.Linear(net.arch.descriptor_dim, n_classes)
    init_linear(net.top_layer)
    for p in net.parameters():
        p.requires_grad = True
    if net.sobel is not None:
        for p in net.sobel.parameters():
            p.requires_grad = False
    return net


def endless_loader(dataset: Dataset, batch_size: int, seed: int, workers: int) -> DataLoader:
    """Successive random permutations of ``dataset``, endless in practice (10^9 samples), seeded per run."""
    gen = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=10**9, generator=gen)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_skip_none, generator=gen)


def finetune_whole(net: nn.Module, loader, *, iterations: int, lr_at: Callable[[int], float], momentum: float,
                   weight_decay: float, device: str, precision: str = "fp32", nesterov: bool = False,
                   desc: str = "fine-tune") -> None:
    """``iterations`` SGD steps of cross-entropy over ``loader`` on every trainable parameter; the
    learning rate of step ``it`` (0-based) is ``lr_at(it)``."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr_at(0), momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for it, (x, y) in enumerate(progress(steps(loader, iterations), total=iterations, desc=desc)):
        set_lr(opt, lr_at(it))
        with amp(precision, device):
            out = net(x.to(device))
        loss = loss_fn(out.float(), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def predict_crops(net: nn.Module, make_loader, device: str, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax averaged over each image's crops (N, C), labels (N,)) of a loader of (B, n, C, H, W) crops."""
    net.eval()
    scores, ys = [], []
    with torch.no_grad():
        for batch in progress(make_loader(), desc="evaluate"):
            if batch is None:
                continue
            x, y = batch
            n = x.shape[1]
            with amp(precision, device):
                out = net(x.flatten(0, 1).to(device))
            scores.append(average_crops(out.float().cpu(), n))
            ys.append(y)
    return torch.cat(scores), torch.cat(ys)


# --------------------------------------------------------------------------------------------
# The checkpoint's conv trunk and fc6/fc7 (detection, segmentation)


class StoredStatisticsTrunk(nn.Module):
    """The base of every trunk the dense tasks fine-tune: BatchNorm always on the checkpoint's stored
    statistics (their batches of one or two images make batch statistics noise, as in Fast R-CNN and
    FCN), the Sobel filter fixed, and with ``frozen`` the whole trunk in eval mode."""

    frozen = False

    def fix_sobel(self, sobel: nn.Module | None) -> None:
        if sobel is not None:
            for p in sobel.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode and not self.frozen)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class ConvTrunk(StoredStatisticsTrunk):
    """The checkpoint's Sobel (frozen) + conv trunk, with BatchNorm always on stored statistics.

    ``drop_last_pool``: conv5 at stride 16 (detection) instead of pool5 at stride 32 (FCN).
    ``frozen``: no parameter gets a gradient and the module stays in eval mode (the fc6-8 variant).
    """

    def __init__(self, model: DeepClusterNet, *, drop_last_pool: bool, frozen: bool):
        super().__init__()
        self.sobel = model.sobel
        layers = list(model.features)
        if drop_last_pool:
            if not isinstance(layers[-1], nn.MaxPool2d):
                raise UserError(f"{model.spec.arch} trunk does not end in a max-pool; cannot take conv5")
            layers = layers[:-1]
        self.features = nn.Sequential(*layers)
        self.frozen = frozen
        self.out_channels = next(m.out_channels for m in reversed(layers) if isinstance(m, nn.Conv2d))
        for p in self.parameters():
            p.requires_grad = not frozen
        self.fix_sobel(self.sobel)
        self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sobel is not None:
            x = self.sobel(x)
        return self.features(x)


def fc_layers(model: DeepClusterNet, path: Path) -> tuple[nn.Linear, nn.Linear]:
    """fc6 and fc7 of the checkpoint, or a one-line error naming the checkpoint."""
    classifier = getattr(model, "classifier", None)
    try:
        fc6, fc7 = (classifier[i] for i in model.fc_indices)
    except (TypeError, IndexError, AttributeError):
        fc6 = fc7 = None
    if not isinstance(fc6, nn.Linear) or not isinstance(fc7, nn.Linear):
        arch = getattr(getattr(model, "spec", None), "arch", "this")
        raise UserError(f"{path}: this task needs fc6/fc7 (classifier.*) and the checkpoint ({arch}) has none")
    return fc6, fc7


# --------------------------------------------------------------------------------------------
# Feature extraction with the per-layer cache


def cache_dir(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    return Path(os.environ.get("DCBENCH_CACHE", Path.home() / ".cache" / "dcbench" / "features"))


def cache_path(args: argparse.Namespace, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir(args) / f"{digest}.safetensors"


def cache_get(args: argparse.Namespace, key: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays for ``key``, or None (absent, unreadable, or ``--no-cache``)."""
    path = cache_path(args, key)
    if path.is_file() and not args.no_cache:
        try:
            return load_np(str(path))
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never trusted
            print(f"warning: ignoring unreadable feature cache {path}", file=sys.stderr)
    return None


def cache_put(args: argparse.Namespace, key: dict, arrays: dict[str, np.ndarray]) -> Path:
    path = cache_path(args, key)
    try:
        write_file_atomic(path, lambda p: save_np({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                                  str(p), metadata={"key": json.dumps(key, default=str)}))
    except SafetensorError as e:  # its own type, also for a full disk (the OSError is inside the message)
        raise UserError(f"cannot write the feature cache {path} ({str(e)[:200]}); free disk space or pass "
                        "--cache-dir on another disk") from None
    return path


def checkpoint_identity(ckpt) -> dict:
    """What of a checkpoint decides its features, for cache keys: the weights' sha256, and the
    preprocessing and model description from meta.json (not covered by that sha256: the same
    weights with another mean/std give other features)."""
    meta = ckpt.meta
    return {"sha256": ckpt.sha256, "preprocessing": meta.get("preprocessing"),
            **{k: meta.get(k) for k in ("arch", "sobel", "batchnorm", "input_size")}}


def extract_cached(args: argparse.Namespace, base_key: dict, names: Sequence[str],
                   batches: Callable[[], DataLoader], forward: Callable[[torch.Tensor], list[torch.Tensor]],
                   *, device: str, desc: str, dtype=np.float16,
                   precision: str = "fp32") -> tuple[dict[str, np.ndarray], np.ndarray, bool]:
    """Features of every image for each of ``names`` (one forward per batch gives all of them).

    Each name is cached separately under ``base_key + {"layer": name}``; the labels under
    ``"labels"``. Inputs of shape (B, n, C, H, W) (multi-crop) give features (N, n, D).
    Returns (features per name, labels, whether everything came from the cache)."""
    if precision != "fp32":  # bf16 features are other numbers: another cache entry
        base_key = {**base_key, "precision": precision}
    keys = {n: {**base_key, "layer": n} for n in names}
    label_key = {**base_key, "layer": "labels"}
    found = {n: cache_get(args, k) for n, k in keys.items()}
    labels = cache_get(args, label_key)
    if labels is not None and all(v is not None for v in found.values()):
        return {n: v["x"] for n, v in found.items()}, labels["y"], True
    feats: dict[str, list[np.ndarray]] = {n: [] for n in names}
    ys: list[np.ndarray] = []
    with torch.no_grad():
        for batch in progress(batches(), desc=desc):
            if batch is None:
                continue
            x, y = batch
            crops = x.shape[1] if x.dim() == 5 else 0
            if crops:
                x = x.flatten(0, 1)
            with amp(precision, device):
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


# --------------------------------------------------------------------------------------------
# Heads on frozen features: one feature pass feeds every head


class EpochRecord:
    """What :func:`train_heads` keeps of its per-epoch evaluation beyond top-1, per head: the
    state (on the CPU) and the per-image top-1 hits at its best epoch (the first maximum, as
    ``np.argmax`` of the history picks it), and the hits of the last epoch."""

    def __init__(self, n_heads: int):
        self.best_epoch: list[int | None] = [None] * n_heads
        self.best_state: list[dict | None] = [None] * n_heads
        self.best_hits: list[np.ndarray | None] = [None] * n_heads
        self.last_hits: list[np.ndarray | None] = [None] * n_heads

    def restore_best(self, heads: nn.ModuleList) -> None:
        """Put every head back in its state of its best epoch."""
        for h, state in zip(heads, self.best_state):
            h.load_state_dict(state)


def score_heads(heads: nn.ModuleList, val_batches, *, device: str,
                precision: str = "fp32") -> tuple[list[torch.Tensor], torch.Tensor]:
    """(per head: softmax averaged over each image's crops (N, C), labels (N,)) of ``val_batches()``."""
    heads.eval()
    scores: list[list[torch.Tensor]] = [[] for _ in heads]
    ys = []
    with torch.no_grad():
        for feats, y, ncrops in val_batches():
            for i, (h, f) in enumerate(zip(heads, feats)):
                with amp(precision, device):
                    s = h(f)
                scores[i].append(average_crops(s.float().cpu(), ncrops, softmax=True))
            ys.append(y)
    return [torch.cat(s) for s in scores], torch.cat(ys)


def hits_top1(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per-image top-1 hits (bool), ties to the lowest class index as :func:`top1`."""
    return (torch.as_tensor(scores).argmax(1) == torch.as_tensor(targets)).numpy()


def record_hits(metrics: dict, outcomes, name: str, hits: np.ndarray) -> None:
    """A hit-rate metric (percent: top-1, top-5) and its per-image outcomes
    (:class:`dcbench.outcomes.Outcomes`), both from the same hits, so they agree exactly."""
    metrics[name] = 100.0 * int(hits.sum()) / len(hits)
    outcomes.hits(name, hits)


def train_heads(heads: nn.ModuleList, train_batches, val_batches, *, epochs: int, lr: float, momentum: float,
                weight_decay: float, device: str, desc: str = "probe", precision: str = "fp32",
                record: EpochRecord | None = None) -> list[list[float]]:
    """Train every head together; ``train_batches(epoch)`` and ``val_batches()`` yield
    (list of per-head features, labels[, ncrops]). Returns top-1 history[head][epoch] on
    ``val_batches``; ``record`` also keeps each head's best-epoch state and the per-image hits."""
    opt = torch.optim.SGD(heads.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    history: list[list[float]] = [[] for _ in heads]
    step = 0
    for epoch in progress(range(epochs), desc=desc):
        heads.train()
        for feats, y in train_batches(epoch):
            set_lr(opt, inverse_sqrt_lr(lr, weight_decay, step))
            y = y.to(device)
            with amp(precision, device):
                out = [h(f) for h, f in zip(heads, feats)]
            loss = sum(loss_fn(o.float(), y) for o in out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        scores, y = score_heads(heads, val_batches, device=device, precision=precision)
        for i, h in enumerate(heads):
            acc = top1(scores[i], y)
            if record is not None:
                hit = hits_top1(scores[i], y)
                record.last_hits[i] = hit
                if record.best_epoch[i] is None or acc > history[i][record.best_epoch[i]]:
                    record.best_epoch[i], record.best_hits[i] = epoch, hit
                    record.best_state[i] = {k: v.detach().to("cpu", copy=True) for k, v in h.state_dict().items()}
            history[i].append(acc)
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


def stream_batches(make_loader, forward, device: str, precision: str = "fp32"):
    """train_batches that run the trunk: one ``forward`` call per batch for all heads."""
    def batches(epoch: int):
        for batch in make_loader(epoch):
            if batch is None:
                continue
            x, y = batch
            with torch.no_grad(), amp(precision, device):
                feats = forward(x.to(device))
            yield feats, y

    return batches


def stream_val_batches(make_loader, forward, device: str, precision: str = "fp32"):
    def batches():
        for batch in make_loader():
            if batch is None:
                continue
            x, y = batch
            ncrops = x.shape[1]
            with torch.no_grad(), amp(precision, device):
                feats = forward(x.flatten(0, 1).to(device))
            yield feats, y, ncrops

    return batches


@dataclass
class HeadData:
    """The batches a frozen-feature head task trains, chooses and scores on: ``train(epoch)``,
    ``held_out()`` (None under the thesis's rule, which chooses on ``test()``), the split sizes,
    whether every feature came from the cache (None when streamed) and the held-out split block."""

    train: Callable
    held_out: Callable | None
    test: Callable
    sizes: dict
    cache_hit: bool | None
    split: dict | None


def head_data(args: argparse.Namespace, proto: dict, *, train, val, forward, names: Sequence[str], base_key: dict,
              dtype, timer, held_out: bool, precision: str = "fp32") -> HeadData:
    """Batches of ``forward``'s features for the probe-style heads (linear probes, mlp).

    ``held_out``: a class-balanced split of ``train`` (:func:`dcbench.transfer.protocol.held_out_split`)
    is left out of training and scored as ``val`` is (its transform, its crops), to choose on.
    ``--train-aug none`` extracts and caches the features (the held-out images' centre-crop features
    are the train split's own rows; with ten test crops they are extracted once more, under the
    test transform); otherwise the trunk runs on every batch."""
    from dcbench.transfer.protocol import held_out_size, held_out_split

    bs, workers, device = proto["batch_size"], args.workers, args.device
    if not held_out and getattr(args, "val_size", None) is not None:
        raise UserError(f"--val-size {args.val_size}: --selection thesis holds nothing out (it chooses on the test "
                        "split); drop --val-size or use --selection held-out")
    rest = held = split = None
    if held_out:
        rest, held, split = held_out_split(train.targets, held_out_size(args, len(train)), args.seed,
                                           str(getattr(train, "list_file", train.root)))
    held_ds = copy.copy(train)  # the held-out images under the test transform
    held_ds.transform = val.transform
    if proto["train_aug"] == "none":
        def extract(ds, key, what):
            return extract_cached(args, {**base_key, **key}, names,
                                  lambda: loader(ds, bs, shuffle=False, workers=workers), forward,
                                  device=device, desc=f"features {what}", precision=precision, dtype=dtype)

        with timer("features"):
            tr, ytr, hit_tr = extract(train, {"split": "train", "transform": "center-crop"}, "train")
            va, yva, hit_va = extract(val, {"split": "val", "transform": f"crops{proto['eval_crops']}"}, "val")
            hits = [hit_tr, hit_va]
            if held_out:
                if len(ytr) != len(train):
                    raise UserError(f"{train.root}: {len(train) - len(ytr)} training images could not be decoded, "
                                    "so the held-out split cannot be drawn; remove them (see the warnings)")
                if proto["eval_crops"] == 1:  # the centre crop is the test transform: the rows are the features
                    ho = {n: tr[n][held][:, None] for n in names}
                else:
                    ho, _, hit_ho = extract(torch.utils.data.Subset(held_ds, held),
                                            {"split": "train", "transform": f"crops{proto['eval_crops']}",
                                             "held_out": split}, "held-out")
                    hits.append(hit_ho)
                yho = ytr[held]
                tr, ytr = {n: tr[n][rest] for n in names}, ytr[rest]
        train_b = cached_batches([tr[n] for n in names], ytr, bs, args.seed, device)
        held_b = cached_val_batches([ho[n] for n in names], yho, bs, device) if held_out else None
        test_b = cached_val_batches([va[n] for n in names], yva, bs, device)
        sizes = {"train": int(len(ytr)), "val": int(len(yva))}
        cache_hit = all(hits)
    else:
        fit_ds = torch.utils.data.Subset(train, rest) if held_out else train
        train_b = stream_batches(lambda e: loader(fit_ds, bs, shuffle=True, workers=workers, seed=args.seed * 1000 + e),
                                 forward, device, precision)
        held_b = stream_val_batches(lambda: loader(torch.utils.data.Subset(held_ds, held), max(1, bs // 2),
                                                   shuffle=False, workers=workers),
                                    forward, device, precision) if held_out else None
        test_b = stream_val_batches(lambda: loader(val, max(1, bs // 2), shuffle=False, workers=workers),
                                    forward, device, precision)
        sizes = {"train": len(fit_ds), "val": len(val)}
        cache_hit = None
    if held_out:
        sizes["held_out"] = split["size"]
    return HeadData(train_b, held_b, test_b, sizes, cache_hit, split)


@dataclass
class Fitted:
    """What :func:`fit_heads` gives per head: the top-1 history it chose on (held-out or test), the
    chosen epoch (0-based), the test hits of the reported metric, and under the thesis's rule the
    test hits at the best epoch (its ``_best`` metric)."""

    history: list[list[float]]
    chosen: list[int]
    test_hits: list[np.ndarray]
    best_hits: list[np.ndarray] | None


def fit_heads(heads: nn.ModuleList, data: HeadData, *, epochs: int, lr: float, momentum: float, weight_decay: float,
              device: str, desc: str, precision: str = "fp32") -> Fitted:
    """Train the heads and score the test split. With a held-out split: each head is put back in
    its state of its best held-out epoch and the test split is scored once. Without (the thesis):
    the test split is scored every epoch; the last epoch's hits and the best epoch's are kept."""
    record = EpochRecord(len(heads))
    opt = {"epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "device": device,
           "desc": desc, "precision": precision, "record": record}
    if data.held_out is None:
        hist = train_heads(heads, data.train, data.test, **opt)
        return Fitted(hist, list(record.best_epoch), list(record.last_hits), list(record.best_hits))
    hist = train_heads(heads, data.train, data.held_out, **opt)
    record.restore_best(heads)
    scores, y = score_heads(heads, data.test, device=device, precision=precision)
    return Fitted(hist, list(record.best_epoch), [hits_top1(s, y) for s in scores], None)


def place(module: nn.Module, device, precision: str = "fp32") -> nn.Module:
    """``module`` on ``device`` in ``--precision``'s layout: channels_last under bf16, which the GPU's
    convolution kernels want (their outputs then stay channels_last through the trunk)."""
    return module.to(device=torch.device(device), memory_format=memory_format(precision))


def amp(precision: str, device) -> object:
    """``--precision``'s forward context on ``device`` (a name or a torch.device)."""
    return autocast(precision, torch.device(device))


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


def topk(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, k: int) -> float:
    """Top-k accuracy in percent: the target among the k highest scores (k capped by the class count)."""
    return float(hits_topk(scores, targets, k).mean() * 100)


def hits_topk(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """Per-image top-k hits (bool) of :func:`topk`."""
    scores, targets = torch.as_tensor(scores), torch.as_tensor(targets)
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == targets[:, None]).any(1).numpy()


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

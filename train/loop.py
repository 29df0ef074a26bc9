"""The DeepCluster epoch loop (DESIGN §5, thesis Algorithms 1-2), resumable at epoch boundaries.

One epoch: draw the subset X~ of the pool X -> fc7 features (pre-ReLU, eval mode, centre crops)
-> PCA-whitening + L2 -> k-means / PIC -> fresh top layer -> one training pass over batches
sampled uniformly over clusters -> log line, assignments file, checkpoint (atomically replaced).

Exact resume: every random choice of epoch ``e`` is drawn from generators seeded by
``(seed, e, stage)``, and everything carried across epochs (weights, BN statistics, the trunk's
SGD momentum, the last assignment) is in the checkpoint. A run killed anywhere restarts the
interrupted epoch from the last checkpoint and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dcbench import imageload as IL
from dcbench.atomic import disk_error, write_file_atomic, write_json_atomic
from dcbench.checkpoint import (
    META,
    load_checkpoint,
    nonfinite_tensors,
    recover_interrupted_write,
    save_checkpoint,
    train_state_problem,
)
from dcbench.errors import CheckpointError, UserError
from dcbench.knn_graph import knn, knn_torch, random_graph_ratio, ratio_edge_intra_class
from dcbench.models import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, build_model
from dcbench.precision import autocast, memory_format, resolve_precision
from dcbench.provenance import environment, git_sha, utc_now
from dcbench.resources import require_memory, training_bytes
from dcbench.seeding import seed_everything
from dcbench.train import distributed as D
from dcbench.train import heads as H
from dcbench.train import sampler as S
from dcbench.train.clustering import (
    _faiss_gpu_available,
    cluster,
    pca_whiten,
    pca_whiten_torch,
    resolve_engine,
)
from dcbench.train.config import LEGACY_DEFAULTS, RESUME_FREE, TrainConfig
from dcbench.train.determinism import deterministic_kernels
from dcbench.train.metrics import cluster_stats, nmi

CHECKPOINT = "checkpoint"
LOG_EVERY = 50  # training steps between two reads of the running loss (each read waits for the device)


class TrainingDiverged(UserError):
    """The loss became NaN/inf: exit 1 (not a usage error), last good checkpoint left intact."""

    exit_code = 1


# ---------------------------------------------------------------------------------------------
# randomness
def stage_seed(seed: int, epoch: int, stage: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stage]).generate_state(1, dtype=np.uint32)[0])


def _worker_init(_: int) -> None:
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


# ---------------------------------------------------------------------------------------------
# data
def transforms(cfg: TrainConfig):
    """torchvision's PIL-to-PIL crops (the reference path; ToTensor + Normalize are :func:`IL.normalise`)."""
    import torchvision.transforms as T

    resize = int(round(cfg.input_size * 256 / 224))
    crop = {"random-sized": [T.RandomResizedCrop(cfg.input_size, scale=(cfg.crop_min_scale, 1.0))],
            "random": [T.Resize(resize), T.RandomCrop(cfg.input_size)],
            "central": [T.Resize(resize), T.CenterCrop(cfg.input_size)]}[cfg.crop]
    flip = {"horizontal": [T.RandomHorizontalFlip()], "vertical": [T.RandomVerticalFlip()], "none": []}[cfg.flip]
    train = T.Compose(crop + flip)
    centre = T.Compose([T.Resize(resize), T.CenterCrop(cfg.input_size)])
    return train, centre


def crop_loaders(cfg: TrainConfig, loader: str) -> tuple:
    """(training crop, centre crop): callables ``path -> uint8 CHW`` (or file bytes + box for nvjpeg)."""
    resize = int(round(cfg.input_size * 256 / 224))
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
        from dcbench.datasets import _load_or_skip

        x = _load_or_skip(self.ds, self.ds.samples[int(self.items[i])][0], self.fn)
        if x is None:
            return None
        return x, int(self.tags[i])


def _collate(cfg: TrainConfig):
    from dcbench.datasets import collate_skip_none

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
        from dcbench.datasets import _load_or_skip

        items, tags, seed = request[0]
        out = []
        for j, (i, tag) in enumerate(zip(items.tolist(), tags.tolist())):
            torch.manual_seed(seed + j)
            x = _load_or_skip(self.ds, self.ds.samples[i][0], self.fn)
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


def _inputs(batch, cfg: TrainConfig, device: torch.device, centre: bool) -> tuple[torch.Tensor, torch.Tensor]:
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


# ---------------------------------------------------------------------------------------------
# model pieces
class _Net(nn.Module):
    """What DDP wraps: forward to the (optionally row-subsetted, SGT) top layer, through ``head``
    (see :mod:`dcbench.train.heads`)."""

    def __init__(self, model, head: str = "full"):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x, rows: torch.Tensor | None = None):
        m = self.model
        h = H.top_input(m, x, self.head)  # full: fc7 after its ReLU; a ResNet's pooled res5
        if rows is None:
            return m.top_layer(h)
        return F.linear(h, m.top_layer.weight[rows], m.top_layer.bias[rows])


def reset_top_layer(model, num_clusters: int, device) -> None:
    """A fresh classifier for the new pseudo-labels, initialised as the original code does."""
    top = nn.Linear(model.arch.descriptor_dim, num_clusters)
    top.weight.data.normal_(0, 0.01)
    top.bias.data.zero_()
    model.top_layer = top.to(device)
    model.spec = dataclasses.replace(model.spec, num_classes=num_clusters)


def trunk_parameters(model) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if not n.startswith("top_layer") and p.requires_grad]


@torch.no_grad()
def compute_features(model, ds, items: np.ndarray, positions: np.ndarray, fn, cfg: TrainConfig, device,
                     seed: int, show: bool, buffer_device=None,
                     buffer_dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The clustering descriptors (fc7 pre-ReLU by default, ``--descriptor``, ``--head``; ResNets: pooled
    res5) of ``ds[items]`` in eval mode; returns (features, positions read).

    The features land in one preallocated buffer (``buffer_dtype`` on ``buffer_device``, default the
    CPU), in reading order; unreadable images leave no row, so the result is a view of its first rows.
    """
    model.eval()
    feed = fn if isinstance(fn, Feed) else Feed(ds, fn, cfg, device)
    loader = feed(items, positions, cfg.batch_size, seed)
    buf = torch.empty(len(items), model.arch.descriptor_dim, dtype=buffer_dtype, device=buffer_device or "cpu")
    pos = torch.empty(len(items), dtype=torch.int64)
    m = 0
    for batch in tqdm(loader, desc="features", leave=False, disable=not show, file=sys.stderr):
        if batch is None:
            continue
        x, p = _inputs(batch, cfg, device, centre=True)
        with autocast(cfg.precision, device):
            f = H.descriptor(model, x, cfg.head, cfg.descriptor)
        buf[m:m + len(p)] = f
        pos[m:m + len(p)] = p
        m += len(p)
    return buf[:m], pos[:m]


def _diag_hook(diags: list, every: int, steps: int, run):
    """``after_step`` for ``--diag-every``: after update n (0 < n < steps, n a multiple of ``every``)
    append ``{"step": n, **run()}``; the last update's diagnostics are the next epoch's first."""
    def hook(n: int) -> None:
        if n % every == 0 and n < steps:
            diags.append({"step": n, **run()})
    return hook


@torch.no_grad()
def diagnose(model, ds, items: np.ndarray, y: np.ndarray, feed, cfg: TrainConfig, device, seed: int,
             use_faiss_gpu: bool, torch_engine: bool) -> dict:
    """Diagnostics within an epoch (``--diag-every``, thesis §4.4) on the images ``items`` (labels
    ``y``): the 10-NN ratio edge intra-class of their PCA-whitened descriptors, as at the start of an
    epoch, and the NMI with the labels of a fresh clustering of just these images (the epoch's own
    assignment does not change within the epoch, so its NMI could not move)."""
    f, pos = compute_features(model, ds, items, np.arange(len(items)), feed, cfg, device, seed, False)
    yy = y[pos.numpy()]
    if f.shape[0] < 12:
        return {}
    if torch_engine:
        xw = pca_whiten_torch(f.to(device), cfg.pca_dim, chunk=cfg.block_rows)
        _, nbrs = knn_torch(xw, 10, chunk=cfg.cluster_chunk)
    else:
        xw = pca_whiten(f.numpy(), cfg.pca_dim)
        _, nbrs = knn(xw, 10, use_gpu=use_faiss_gpu)
    out = {"ratio_edge_intra_class": float(np.mean(list(ratio_edge_intra_class(nbrs, yy).values())))}
    if cfg.clustering == "pic" or xw.shape[0] >= cfg.k:
        out["nmi_labels"] = nmi(cluster(xw, cfg, seed=seed, use_gpu=use_faiss_gpu, engine=cfg.cluster_engine), yy)
    return out


def _val_set(cfg: TrainConfig, root: Path, ds, device):
    """``--targets labels``: (folder, feed, items, targets) of the val set scored each epoch, or None."""
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
    return vroot, Feed(vds, crop_loaders(cfg, cfg.loader)[1], cfg, device), np.arange(len(vds)), np.asarray(vds.targets)


@torch.no_grad()
def top1(model, feed, items: np.ndarray, targets: np.ndarray, cfg: TrainConfig, device) -> float:
    """Centre-crop top-1 (%) of the network's top layer (``--targets labels``; thesis §4.7, Table 4.2)."""
    model.eval()
    correct = n = 0
    for batch in feed(items, targets, cfg.batch_size, 0):
        if batch is None:
            continue
        x, y = _inputs(batch, cfg, device, centre=True)
        with autocast(cfg.precision, device):
            logits = model.top_layer(H.top_input(model, x, cfg.head))
        correct += int((logits.argmax(1).cpu() == y).sum())
        n += len(y)
    return 100.0 * correct / max(n, 1)


def _now(device: torch.device) -> float:
    """The clock after the device's queued work: CUDA runs asynchronously, stage times would drift."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _all_finite(x: torch.Tensor, chunk: int) -> bool:
    return all(bool(torch.isfinite(x[s:s + chunk]).all()) for s in range(0, x.shape[0], chunk))


def diag_rows(priority: np.ndarray, dataset_index: np.ndarray, size: int) -> np.ndarray:
    """Positions (sorted) of the ``size`` entries of ``dataset_index`` first in the fixed random
    ``priority`` order; all of them when ``size`` is 0 or not smaller. A fixed pool gives the same
    images every epoch; Algorithm 2's changing subsets share as many as they can."""
    if size == 0 or len(dataset_index) <= size:
        return np.arange(len(dataset_index))
    return np.sort(np.argsort(priority[dataset_index], kind="stable")[:size])


def _oom_types() -> tuple[type, ...]:
    return tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                 if t is not None)


# ---------------------------------------------------------------------------------------------
# output helpers
def _write_assignments(path: Path, index: np.ndarray, labels: np.ndarray) -> None:
    def w(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, index=index.astype(np.int64), cluster=labels.astype(np.int32))
    write_file_atomic(path, w)


def load_assignments(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices, cluster ids; -1 = unreadable image) of one epoch's assignments file."""
    with np.load(path, allow_pickle=False) as z:
        return z["index"], z["cluster"]


def _append_log(path: Path, record: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise disk_error(e, path) from None


def _trim_log(path: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (a run killed between log and checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= last_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    write_file_atomic(path, lambda p: p.write_text("".join(k + "\n" for k in keep), encoding="utf-8"))


def read_log(out: str | os.PathLike) -> list[dict]:
    p = Path(out) / "log.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _config_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def _clean_stale(out: Path) -> list[str]:
    """Recover the checkpoint from an interrupted swap and delete the temporaries that killed writes
    of this run left behind (``.NAME.<random>.tmp``, see dcbench.atomic)."""
    notes = []
    note = recover_interrupted_write(out / CHECKPOINT)
    if note:
        notes.append(note)
    # only the names this trainer writes (--out may be a folder shared with other things)
    for folder, pattern in ((out, ".log.jsonl.*.tmp"), (out, ".config.json.*.tmp"),
                            (out / "assignments", ".epoch_*.npz.*.tmp"), (out / "snapshots", ".epoch_*.*.tmp")):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(pattern):
            if tmp.is_symlink():
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            notes.append(f"removed the unfinished write {tmp.relative_to(out)}")
    return notes


def _check_train_state(ts, ckpt: Path) -> None:
    problem = train_state_problem(ts)
    if problem is not None:
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: {problem}; delete {ckpt} (or use another --out) "
                              "to start afresh")


def _nonfinite_optimizer_state(opt) -> list[str]:
    """Names (``optimizer.<param>.<buffer>``) of the optimizer's non-finite state tensors (momentum)."""
    return nonfinite_tensors({f"optimizer.{i}.{k}": v for i, st in opt.state_dict()["state"].items()
                              for k, v in st.items() if isinstance(v, torch.Tensor)})


def _load_optimizer(opt, state: dict, ckpt: Path) -> None:
    try:
        opt.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: the optimizer state does not fit this model "
                              f"({first}); delete {ckpt} (or use another --out) to start afresh") from None
    bad = _nonfinite_optimizer_state(opt)
    if bad:
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: non-finite optimizer state ({bad[0]}); "
                              f"delete {ckpt} (or use another --out) to start afresh")


def _check_resources(cfg: TrainConfig, subset_n: int, world: int, device) -> None:
    """Refuse, before any work, what cannot fit: one SGD step, and one epoch's draw of images."""
    spec = ModelSpec(arch=cfg.arch, sobel=cfg.sobel, batchnorm=True, input_size=cfg.input_size,
                     num_classes=cfg.k if cfg.clustering == "kmeans" else max(2, subset_n))
    require_memory(training_bytes(spec, cfg.batch_size // world),
                   f"training {cfg.arch} at --input-size {cfg.input_size} with --batch-size {cfg.batch_size}",
                   "lower --batch-size or --input-size", device)
    steps = cfg.steps_per_epoch or max(1, cfg.epoch_multiplier * subset_n // cfg.batch_size)
    # the draw: image positions, their targets and this rank's share, int64 each, plus the sampler's
    # temporaries (about as many again)
    require_memory(48 * steps * cfg.batch_size,
                   f"one epoch's draw of --steps-per-epoch {steps} x --batch-size {cfg.batch_size} images",
                   "lower --steps-per-epoch or --batch-size")


def _last_good(ckpt: Path) -> str:
    """Where the run can be taken up again, read from disk (never a checkpoint of the failing epoch)."""
    try:
        epoch = json.loads((ckpt / META).read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError, RecursionError):
        return "no checkpoint was written"
    return f"the last good checkpoint {ckpt} (epoch {epoch}) is intact"


def _check_resumable(saved: dict, cfg: TrainConfig, ckpt: Path) -> None:
    now = _config_json(cfg)
    saved = {**LEGACY_DEFAULTS, **saved}
    diffs = [f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in now
             if k not in RESUME_FREE and saved.get(k) != now[k]]
    if diffs:
        raise UserError(f"{ckpt} holds a run with other settings ({'; '.join(diffs[:3])}); "
                        "use another --out or the same flags to resume")


# ---------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run (or resume) a training; returns a summary. Works alone or under torchrun."""
    cfg.validate()
    with deterministic_kernels(cfg.deterministic):
        rank, world, ddp_device = D.init(cfg.dist_timeout_min)
        try:
            return _train(cfg, resume, rank, world, ddp_device)
        finally:
            D.cleanup()


def _train(cfg: TrainConfig, resume: bool, rank: int, world: int, ddp_device) -> dict:
    from dcbench.datasets import ImageFolder, fingerprint

    main = rank == 0
    show = main and not cfg.quiet
    if ddp_device is not None:
        device = ddp_device
    elif cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda, but CUDA is not available; use --device cpu")
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    # What "auto" means on this machine, recorded resolved (config.json, the checkpoint's train_config).
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device),
                              cluster_engine=resolve_engine(cfg.cluster_engine, device, cfg.faiss_gpu),
                              loader=IL.resolve_loader(cfg.loader, device, quiet=not main or cfg.quiet))
    use_faiss_gpu = cfg.faiss_gpu and _faiss_gpu_available()
    torch_engine = cfg.cluster_engine == "torch"
    # Feature memory (issue 11): one buffer, fp16 on the GPU for the torch engine (1.28M x 4096 is 10.5 GB),
    # fp32 on the CPU otherwise (faiss reads it without a copy).
    on_gpu_buffer = torch_engine and device.type == "cuda" and ddp_device is None
    feat_device, feat_dtype = (device, torch.float16) if on_gpu_buffer else (torch.device("cpu"), torch.float32)

    out = Path(cfg.out)
    ckpt = out / CHECKPOINT
    log_path = out / "log.jsonl"
    if main:
        root = resolve_data(cfg)
    D.barrier()
    root = resolve_data(cfg) if not main else root
    ds = ImageFolder(root, transform=None)
    n_images = len(ds)
    gt = np.asarray(ds.targets) if len(ds.classes) > 1 else None
    if cfg.targets == "labels" and gt is None:
        raise UserError(f"--targets labels needs labelled data, but {root} has {len(ds.classes)} class folder; "
                        "pass an ImageFolder with one folder per class (ROOT/<class>/<image>.jpg)")
    if cfg.pool_size and cfg.pool_size > n_images:
        raise UserError(f"--pool-size {cfg.pool_size} is larger than the {n_images} readable images in {root}")
    pool = (np.sort(np.random.default_rng([cfg.seed, 10**6]).choice(n_images, cfg.pool_size, replace=False))
            if cfg.pool_size else np.arange(n_images))
    subset_n = min(cfg.subset_size or len(pool), len(pool))
    if cfg.clustering == "kmeans" and cfg.targets != "labels" and subset_n < cfg.k:
        raise UserError(f"{subset_n} images for {cfg.k} clusters in {root}: k-means needs at least as many "
                        "images as clusters (lower --k or give more data)")
    _check_resources(cfg, subset_n, world, device)
    train_tf, centre_tf = (Feed(ds, fn, cfg, device) for fn in crop_loaders(cfg, cfg.loader))
    val = _val_set(cfg, root, ds, device) if cfg.targets == "labels" and main else None
    diag_priority = np.random.default_rng([cfg.seed, 10**6 + 1]).permutation(n_images)
    if main:
        for note in _clean_stale(out):
            print(f"note: {note}", file=sys.stderr)
    D.barrier()

    # ---- model, optimizer, resume
    start_epoch, prev = 0, None
    has_ckpt = (ckpt / META).is_file()
    if resume and not has_ckpt:
        raise UserError(f"--resume: no checkpoint in {out} (expected {ckpt}/{META}); drop --resume to start")
    if has_ckpt:
        ck = load_checkpoint(ckpt, with_train_state=True)
        _check_resumable(ck.meta.get("train_config", {}), cfg, ckpt)
        if ck.train_state is None:
            raise UserError(f"{ckpt} has no train_state.pt, so it cannot be resumed; use another --out")
        model, ts = ck.model, ck.train_state
        _check_train_state(ts, ckpt)
        start_epoch = int(ts["epoch"])
        prev = (ts["assignment_index"].numpy(), ts["assignment"].numpy())
        if main and not cfg.quiet:
            print(f"resuming {out} after epoch {start_epoch}", file=sys.stderr)
    else:
        n_top = len(ds.classes) if cfg.targets == "labels" else cfg.k if cfg.clustering == "kmeans" else 0
        model = build_model(cfg.arch, sobel=cfg.sobel, batchnorm=True, input_size=cfg.input_size,
                            num_classes=n_top, seed=cfg.seed)
        ts = None
    model.to(device, memory_format=memory_format(cfg.precision))
    opt = torch.optim.SGD(trunk_parameters(model), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    if ts is not None:
        _load_optimizer(opt, ts["optimizer"], ckpt)
    data_fp = fingerprint(root) if main else None
    if main:
        if start_epoch == 0 and log_path.exists():
            log_path.unlink()
        _trim_log(log_path, start_epoch)
        write_json_atomic(out / "config.json", {
            "config": _config_json(cfg), "data_root": str(root), "num_images": n_images,
            "data_fingerprint": data_fp, "world_size": world, "resumed_from_epoch": start_epoch,
            **({"val_root": str(val[0])} if val is not None else {}),
            "git_sha": git_sha(), "environment": environment(), "started": utc_now()})
    if start_epoch >= cfg.epochs and main and not cfg.quiet:
        print(f"{out}: already trained for {start_epoch} epochs (--epochs {cfg.epochs}); nothing to do",
              file=sys.stderr)

    last = {}
    for epoch in range(start_epoch, cfg.epochs):
        times = {}
        t0 = time.perf_counter()
        # Targets that do not change this epoch: the labels, or the clusters of the first epoch
        # (--targets fixed-clusters); then nothing is clustered and the top layer is kept.
        held = cfg.targets == "labels" or (cfg.targets == "fixed-clusters" and prev is not None)
        # ---- X~: this epoch's subset of the pool (Algorithm 2)
        if cfg.targets == "fixed-clusters" and prev is not None:
            subset = prev[0]
        elif subset_n < len(pool):
            subset = np.sort(np.random.default_rng(stage_seed(cfg.seed, epoch, 1)).choice(
                pool, subset_n, replace=False))
        else:
            subset = pool
        # ---- features (strided shard per rank, gathered)
        seed_everything(stage_seed(cfg.seed, epoch, 2))
        mine = np.arange(rank, len(subset), world)
        try:
            f_local, p_local = compute_features(model, ds, subset[mine], mine, centre_tf, cfg, device,
                                                stage_seed(cfg.seed, epoch, 2), show, feat_device, feat_dtype)
        except _oom_types():
            raise UserError(f"the GPU ran out of memory computing features (epoch {epoch + 1}); lower "
                            f"--batch-size (now {cfg.batch_size}); the last checkpoint {ckpt} is intact") from None
        if D.is_dist():
            gathered = D.gather_rows(f_local.to(device) if ddp_device is not None else f_local,
                                     p_local, len(subset))
            x, valid = gathered if main else (None, None)
            del gathered
        else:  # rows are in reading order: the readable images' features are the buffer itself
            valid = torch.zeros(len(subset), dtype=torch.bool)
            valid[p_local] = True
            x = f_local
        # x is the only name left for the buffer (10.5 GB at ImageNet scale): PCA's `del x` frees it
        # before the training pass, and the next epoch's buffer is not allocated beside this one
        del f_local
        times["features"] = _now(device) - t0
        record: dict = {"epoch": epoch + 1}
        if main:
            valid_np = valid.numpy()
            if x.shape[0] == 0:
                raise UserError(f"every image of {root} failed to decode; check the data folder")
            if cfg.clustering == "kmeans" and not held and x.shape[0] < cfg.k:
                raise UserError(f"only {x.shape[0]} readable images for {cfg.k} clusters in {root}; lower --k")
            if not _all_finite(x, cfg.block_rows):
                raise TrainingDiverged(f"non-finite features at epoch {epoch + 1}; lower --lr; {_last_good(ckpt)}")
            stage = "PCA-whitening"
            try:
                t = time.perf_counter()
                spectrum: dict = {}
                if torch_engine:
                    xw = pca_whiten_torch(x.to(device), cfg.pca_dim, chunk=cfg.block_rows, stats=spectrum)
                else:
                    xw = pca_whiten(x.numpy(), cfg.pca_dim, stats=spectrum)
                del x
                times["pca"] = _now(device) - t
                stage = "k-means" if cfg.clustering == "kmeans" else "PIC"
                t = time.perf_counter()
                if held:
                    labels = (np.where(valid_np, gt[subset], -1) if cfg.targets == "labels"
                              else np.where(valid_np, prev[1], -1)).astype(np.int64)
                    lab = labels[valid_np]
                    keep = lab >= 0
                    if not keep.all():  # unreadable when the clusters were made: left out of the diagnostics
                        xw = xw[torch.from_numpy(keep).to(xw.device)] if torch_engine else xw[keep]
                        valid_np, lab = labels >= 0, lab[keep]
                else:
                    lab = cluster(xw, cfg, seed=stage_seed(cfg.seed, epoch, 3), use_gpu=use_faiss_gpu,
                                  engine=cfg.cluster_engine)
                    labels = np.full(len(subset), -1, dtype=np.int64)
                    labels[valid_np] = lab
                times["clustering"] = _now(device) - t
                record["pca_variance"] = spectrum.get("pca_variance") or None
                # ---- diagnostics
                stage = "the diagnostics"
                t = time.perf_counter()
                record.update(cluster_stats(lab))
                record["images"] = int(valid_np.sum())
                record["unreadable"] = int((~valid_np).sum())
                if prev is not None:
                    common, ia, ib = np.intersect1d(subset, prev[0], return_indices=True)
                    keep = (labels[ia] >= 0) & (prev[1][ib] >= 0)
                    record["nmi_prev"] = nmi(labels[ia][keep], prev[1][ib][keep]) if keep.any() else None
                else:
                    record["nmi_prev"] = None
                if gt is not None:
                    sel = diag_rows(diag_priority, subset[valid_np], cfg.diag_sample)
                    y = gt[subset][valid_np][sel]
                    record["diag_sample"] = int(len(sel))
                    record["nmi_labels"] = nmi(lab[sel], y)
                    if torch_engine:
                        _, nbrs = knn_torch(xw[torch.from_numpy(sel).to(xw.device)], 10, chunk=cfg.cluster_chunk)
                    else:
                        _, nbrs = knn(xw[sel], 10, use_gpu=use_faiss_gpu)
                    per_class = ratio_edge_intra_class(nbrs, y)
                    record["ratio_edge_intra_class"] = float(np.mean(list(per_class.values())))
                    # Figure 4.1: the per-class ratios (by class index) and what a random graph scores
                    record["ratio_per_class"] = [round(per_class[c], 5) for c in sorted(per_class)]
                    record["ratio_random_graph"] = float(np.mean(list(random_graph_ratio(y).values())))
                del xw
                times["metrics"] = _now(device) - t
            except _oom_types():
                hint = {"the diagnostics": f"lower --diag-sample (now {cfg.diag_sample})"}.get(
                    stage, f"lower --cluster-chunk (now {cfg.cluster_chunk or 'chosen from the free memory'})")
                raise UserError(f"the GPU ran out of memory during {stage} (epoch {epoch + 1}); {hint}, or "
                                f"cluster on the CPU (--cluster-engine faiss --no-faiss-gpu); the last "
                                f"checkpoint {ckpt} is intact") from None
            lab_t = torch.from_numpy(labels)
        else:
            lab_t = None
        labels = D.broadcast_array(lab_t, 0, ddp_device).numpy()

        # ---- training pass
        t = time.perf_counter()
        m = int(labels.max()) + 1
        seed_everything(stage_seed(cfg.seed, epoch, 4))
        m = len(ds.classes) if cfg.targets == "labels" else m
        kept = model.top_layer
        if not (held and epoch > 0 and kept is not None and kept.out_features == m):
            reset_top_layer(model, m, device)
        steps = cfg.steps_per_epoch or max(1, cfg.epoch_multiplier * int((labels >= 0).sum()) // cfg.batch_size)
        draw = S.draw(cfg.sampler, labels, steps * cfg.batch_size,
                      np.random.default_rng(stage_seed(cfg.seed, epoch, 5)))
        items, targets = subset[draw], labels[draw]
        per = cfg.batch_size // world
        mine = np.concatenate([np.arange(b * cfg.batch_size + rank * per, b * cfg.batch_size + (rank + 1) * per)
                               for b in range(steps)])
        diags: list[dict] = []
        after_step = None
        if cfg.diag_every and gt is not None and main:
            diag_items = subset[diag_rows(diag_priority, subset, cfg.diag_sample)]
            after_step = _diag_hook(diags, cfg.diag_every, steps, functools.partial(
                diagnose, model, ds, diag_items, gt[diag_items], centre_tf, cfg, device,
                stage_seed(cfg.seed, epoch, 8), use_faiss_gpu, torch_engine))
        loss_sum, loss_n = _train_pass(model, opt, ds, items, targets, mine, per, steps, m, train_tf, cfg,
                                       device, epoch, ckpt, show, ddp_device, after_step)
        times["train"] = _now(device) - t
        record["loss"] = loss_sum / max(loss_n, 1)
        record["steps"] = steps
        record["log_k"] = math.log(m)
        if diags:
            record["diag"] = diags
        if val is not None:
            t = time.perf_counter()
            record["val_top1"] = top1(model, val[1], val[2], val[3], cfg, device)
            times["val"] = _now(device) - t

        # ---- outputs (rank 0): assignments, log line, checkpoint, snapshot
        # The loss is read only every LOG_EVERY steps and before the last step's update, so a step that
        # diverges may show only in the weights: check them (and the momentum) before anything of this
        # epoch is written.
        bad = nonfinite_tensors(model.state_dict()) + _nonfinite_optimizer_state(opt)
        if bad:
            raise TrainingDiverged(f"non-finite weights after epoch {epoch + 1} ({len(bad)} tensor(s), first: "
                                   f"{bad[0]}); lower --lr (now {cfg.lr}); nothing of this epoch was saved; "
                                   f"{_last_good(ckpt)}")
        prev = (subset, labels)
        if main:
            t = time.perf_counter()
            _write_assignments(out / "assignments" / f"epoch_{epoch + 1:04d}.npz", subset, labels)
            times["save"] = time.perf_counter() - t
            record["time"] = {k: round(v, 3) for k, v in times.items()}
            record["time"]["total"] = round(time.perf_counter() - t0, 3)
            _append_log(log_path, record)
            state = {"epoch": epoch + 1, "optimizer": opt.state_dict(),
                     "assignment_index": torch.from_numpy(subset.astype(np.int64)),
                     "assignment": torch.from_numpy(labels.astype(np.int64)),
                     "seed": cfg.seed, "torch_rng": torch.get_rng_state()}
            save_checkpoint(ckpt, model, origin="dcbench-train", name=out.name, epoch=epoch + 1,
                            num_clusters=m, train_config=_config_json(cfg), data_fingerprint=data_fp,
                            train_state=state)
            if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0:
                save_checkpoint(out / "snapshots" / f"epoch_{epoch + 1:04d}", model, origin="dcbench-train",
                                name=f"{out.name}-epoch{epoch + 1}", epoch=epoch + 1, num_clusters=m,
                                train_config=_config_json(cfg), data_fingerprint=data_fp)
            if show:
                extra = "".join(f" {k}={record[k]:.3f}" for k in ("nmi_prev", "nmi_labels", "ratio_edge_intra_class",
                                                                      "val_top1") if record.get(k) is not None)
                print(f"epoch {epoch + 1}/{cfg.epochs} loss={record['loss']:.4f} (chance: ln k={record['log_k']:.3f}) "
                      f"clusters={record['num_clusters']} min={record['size_min']}{extra} "
                      f"{record['time']['total']:.1f}s", file=sys.stderr)
        D.barrier()
        last = record
    return {"out": str(out), "epochs": cfg.epochs, "start_epoch": start_epoch, "last": last}


def sgt_rows(batch_targets: np.ndarray, m: int, sgt: int, rng: np.random.Generator) -> np.ndarray:
    """SGT (thesis §4.7): the rows of the batch's targets plus random others, ``sgt`` in all, sorted."""
    gtargets = np.unique(batch_targets)
    others = np.setdiff1d(np.arange(m), gtargets)
    extra = rng.choice(others, max(0, min(sgt - gtargets.size, others.size)), replace=False)
    return np.sort(np.concatenate([gtargets, extra]))


def sgd_step(net, top, opt, opt_top, bufs: dict, x, y, rows, cfg: TrainConfig, device) -> torch.Tensor:
    """One update: the trunk by ``opt``; the top layer by ``opt_top``, or, with SGT ``rows``, a lazy
    SGD with momentum on those rows only. Returns the batch's (detached) loss."""
    if rows is not None:
        y = torch.searchsorted(rows, y)
    with autocast(cfg.precision, device):
        loss = F.cross_entropy(net(x, rows), y)
    opt.zero_grad(set_to_none=True)
    if opt_top is not None:
        opt_top.zero_grad(set_to_none=True)
    else:
        top.weight.grad = top.bias.grad = None
    loss.backward()
    opt.step()
    if opt_top is not None:
        opt_top.step()
    else:
        with torch.no_grad():  # lazy SGD on the selected rows only
            for p in (top.weight, top.bias):
                b = bufs[id(p)]
                b[rows] = cfg.top_momentum * b[rows] + p.grad[rows] + cfg.weight_decay * p[rows]
                p[rows] = p[rows] - cfg.lr * b[rows]
    return loss.detach()


def _train_pass(model, opt, ds, items, targets, mine, per, steps, m, tf, cfg, device, epoch, ckpt, show,
                ddp_device, after_step=None) -> tuple[float, int]:
    """One epoch's updates; ``after_step(n)`` (if given) runs after the n-th update (``--diag-every``)."""
    net: nn.Module = _Net(model, cfg.head)
    if D.is_dist():
        # 2fc leaves fc7 out of the forward: DDP must be told that some parameters get no gradient
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ddp_device] if ddp_device is not None else None,
                                                  find_unused_parameters=cfg.head == "2fc")
    sgt = cfg.sgt and cfg.sgt < m
    top = model.top_layer
    opt_top = None if sgt else torch.optim.SGD(top.parameters(), lr=cfg.lr, momentum=cfg.top_momentum,
                                               weight_decay=cfg.weight_decay)
    bufs = {id(p): torch.zeros_like(p) for p in top.parameters()} if sgt else {}
    rng_rows = np.random.default_rng(stage_seed(cfg.seed, epoch, 6))
    model.train()
    feed = tf if isinstance(tf, Feed) else Feed(ds, tf, cfg, device)
    loader = feed(items[mine], targets[mine], per, stage_seed(cfg.seed, epoch, 7))
    # The running loss stays on the device (float64: the same sums as adding Python floats) and is
    # read every LOG_EVERY steps, not every step: a read waits for the GPU to finish.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_n = 0
    bar = tqdm(loader, total=steps, desc=f"train {epoch + 1}", leave=False, disable=not show, file=sys.stderr)

    def check(step: int) -> float:
        lv = float(loss_sum)
        if not math.isfinite(lv):
            raise TrainingDiverged(f"loss is {lv} at epoch {epoch + 1}, by step {step + 1}; lower --lr "
                                   f"(now {cfg.lr}); {_last_good(ckpt)}")
        return lv

    step = -1
    for step, batch in enumerate(bar):
        rows = None
        if sgt:  # rows of the global batch's targets plus random others, sgt in all (thesis §4.7)
            rows_np = sgt_rows(targets[step * cfg.batch_size:(step + 1) * cfg.batch_size], m, cfg.sgt, rng_rows)
            rows = torch.from_numpy(rows_np).to(device)
        if batch is None:
            continue
        x, y = _inputs(batch, cfg, device, centre=False)
        y = y.to(device, non_blocking=True)
        loss = sgd_step(net, top, opt, opt_top, bufs, x, y, rows, cfg, device)
        loss_sum += loss.double() * y.shape[0]
        loss_n += y.shape[0]
        if (step + 1) % LOG_EVERY == 0:
            lv = check(step)
            if show:
                bar.set_postfix(loss=f"{lv / max(loss_n, 1):.4f}")
        if after_step is not None:
            after_step(step + 1)
            model.train()
    return check(step), loss_n

"""The DeepCluster epoch loop (thesis Algorithms 1-2), resumable at epoch boundaries.

One epoch: draw the subset X~ of the pool X -> fc7 features (pre-ReLU, eval mode, centre crops)
-> PCA-whitening + L2 -> k-means / PIC -> fresh top layer -> one training pass over batches
sampled uniformly over clusters -> log line, assignments file, checkpoint (atomically replaced).
:func:`_train` is that sentence in code; each stage below is one function over the run's typed
state (:mod:`dcbench.train.context`).

Exact resume: every random choice of epoch ``e`` is drawn from generators seeded by
``(seed, e, stage)`` (:mod:`dcbench.train.seeds`), and everything carried across epochs (weights,
BN statistics, the trunk's SGD momentum, the last assignment) is in the checkpoint. A run killed
anywhere restarts the interrupted epoch from the last checkpoint and ends with the weights of an
uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dcbench import imageload as IL
from dcbench.atomic import write_json_atomic
from dcbench.checkpoint import META, load_checkpoint, nonfinite_tensors, save_checkpoint
from dcbench.errors import UserError
from dcbench.models import ModelSpec, build_model
from dcbench.precision import memory_format, resolve_precision
from dcbench.provenance import environment, git_sha, utc_now
from dcbench.resources import require_memory, training_bytes
from dcbench.seeding import seed_everything
from dcbench.train import distributed as D
from dcbench.train import seeds
from dcbench.train.clustering import (
    cluster,
    faiss_gpu_available,
    pca_whiten,
    pca_whiten_torch,
    resolve_engine,
)
from dcbench.train.config import TrainConfig
from dcbench.train.context import Epoch, Run
from dcbench.train.determinism import deterministic_kernels
from dcbench.train.diagnostics import diag_hook, diag_rows, diagnose, epoch_diagnostics, top1
from dcbench.train.features import all_finite, compute_features
from dcbench.train.feed import Feed, crop_loaders, resolve_data, val_set
from dcbench.train.run_state import (
    TrainingDiverged,
    append_log,
    check_resumable,
    check_train_state,
    clean_stale,
    config_json,
    last_good,
    load_optimizer,
    nonfinite_optimizer_state,
    trim_log,
    write_assignments,
)
from dcbench.train.update import draw_batches, reset_top_layer, train_pass, trunk_parameters


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
    """Algorithm 1: per epoch, features -> PCA-whiten -> cluster -> diagnose -> train -> save."""
    run = set_up(cfg, rank, world, ddp_device)
    restore_or_build_model(run, resume)
    record_run_config(run)
    last: dict = {}
    for epoch in range(run.start_epoch, run.cfg.epochs):
        ep = begin_epoch(run, epoch)
        extract_features(run, ep)
        labels = cluster_features(run, ep) if run.main else None  # rank 0 alone whitens and clusters
        labels = D.broadcast_array(None if labels is None else torch.from_numpy(labels), 0, run.ddp_device).numpy()
        train_on_targets(run, ep, labels)
        refuse_nonfinite_weights(run, ep)
        run.previous = (ep.subset, labels)
        if run.main:
            save_epoch(run, ep, labels)
        D.barrier()
        last = ep.record
    return {"out": str(run.out), "epochs": run.cfg.epochs, "start_epoch": run.start_epoch, "last": last}


# ---------------------------------------------------------------------------------------------
# set-up
def _device(cfg: TrainConfig, ddp_device) -> torch.device:
    if ddp_device is not None:
        return ddp_device
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda, but CUDA is not available; use --device cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def set_up(cfg: TrainConfig, rank: int, world: int, ddp_device) -> Run:
    """The device, the data, the pool and the feeds; every refusal that needs no work comes here."""
    from dcbench.datasets import ImageFolder

    main = rank == 0
    device = _device(cfg, ddp_device)
    if world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    # What "auto" means on this machine, recorded resolved (config.json, the checkpoint's train_config).
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device),
                              cluster_engine=resolve_engine(cfg.cluster_engine, device, cfg.faiss_gpu),
                              loader=IL.resolve_loader(cfg.loader, device, quiet=not main or cfg.quiet))
    # One feature buffer: fp16 on the GPU for the torch engine (1.28M x 4096 is 10.5 GB), fp32 on the
    # CPU otherwise (faiss reads it without a copy).
    on_gpu = cfg.cluster_engine == "torch" and device.type == "cuda" and ddp_device is None
    if main:
        root = resolve_data(cfg)
    D.barrier()  # rank 0 may have made the embedded data
    root = resolve_data(cfg) if not main else root
    ds = ImageFolder(root, transform=None)
    n_images = len(ds)
    classes = np.asarray(ds.targets) if len(ds.classes) > 1 else None
    if cfg.targets == "labels" and classes is None:
        raise UserError(f"--targets labels needs labelled data, but {root} has {len(ds.classes)} class folder; "
                        "pass an ImageFolder with one folder per class (ROOT/<class>/<image>.jpg)")
    if cfg.pool_size and cfg.pool_size > n_images:
        raise UserError(f"--pool-size {cfg.pool_size} is larger than the {n_images} readable images in {root}")
    pool = (np.sort(np.random.default_rng([cfg.seed, 10**6]).choice(n_images, cfg.pool_size, replace=False))
            if cfg.pool_size else np.arange(n_images))
    subset_size = min(cfg.subset_size or len(pool), len(pool))
    if cfg.clustering == "kmeans" and cfg.targets != "labels" and subset_size < cfg.k:
        raise UserError(f"{subset_size} images for {cfg.k} clusters in {root}: k-means needs at least as many "
                        "images as clusters (lower --k or give more data)")
    _check_resources(cfg, subset_size, world, device)
    train_feed, centre_feed = (Feed(ds, fn, cfg, device) for fn in crop_loaders(cfg, cfg.loader))
    run = Run(cfg=cfg, rank=rank, world=world, device=device, ddp_device=ddp_device, out=Path(cfg.out), root=root,
              ds=ds, classes=classes, pool=pool, subset_size=subset_size,
              diag_priority=np.random.default_rng([cfg.seed, 10**6 + 1]).permutation(n_images),
              train_feed=train_feed, centre_feed=centre_feed,
              val=val_set(cfg, root, ds, device) if cfg.targets == "labels" and main else None,
              faiss_on_gpu=cfg.faiss_gpu and faiss_gpu_available(),
              feature_device=device if on_gpu else torch.device("cpu"),
              feature_dtype=torch.float16 if on_gpu else torch.float32)
    if main:
        for note in clean_stale(run.out):
            print(f"note: {note}", file=sys.stderr)
    D.barrier()
    return run


def _check_resources(cfg: TrainConfig, subset_size: int, world: int, device) -> None:
    """Refuse, before any work, what cannot fit: one SGD step, and one epoch's draw of images."""
    spec = ModelSpec(arch=cfg.arch, sobel=cfg.sobel, batchnorm=True, input_size=cfg.input_size,
                     num_classes=cfg.k if cfg.clustering == "kmeans" else max(2, subset_size))
    require_memory(training_bytes(spec, cfg.batch_size // world),
                   f"training {cfg.arch} at --input-size {cfg.input_size} with --batch-size {cfg.batch_size}",
                   "lower --batch-size or --input-size", device)
    steps = cfg.steps_per_epoch or max(1, cfg.epoch_multiplier * subset_size // cfg.batch_size)
    # the draw: image positions, their targets and this rank's share, int64 each, plus the sampler's
    # temporaries (about as many again)
    require_memory(48 * steps * cfg.batch_size,
                   f"one epoch's draw of --steps-per-epoch {steps} x --batch-size {cfg.batch_size} images",
                   "lower --steps-per-epoch or --batch-size")


def restore_or_build_model(run: Run, resume: bool) -> None:
    """The model and optimizer: from the checkpoint in ``--out`` (checked), or new."""
    cfg, ckpt = run.cfg, run.checkpoint
    has_ckpt = (ckpt / META).is_file()
    if resume and not has_ckpt:
        raise UserError(f"--resume: no checkpoint in {run.out} (expected {ckpt}/{META}); drop --resume to start")
    state = None
    if has_ckpt:
        saved = load_checkpoint(ckpt, with_train_state=True)
        check_resumable(saved.meta.get("train_config", {}), cfg, ckpt)
        if saved.train_state is None:
            raise UserError(f"{ckpt} has no train_state.pt, so it cannot be resumed; use another --out")
        model, state = saved.model, saved.train_state
        check_train_state(state, ckpt)
        run.start_epoch = int(state["epoch"])
        run.previous = (state["assignment_index"].numpy(), state["assignment"].numpy())
        if run.show:
            print(f"resuming {run.out} after epoch {run.start_epoch}", file=sys.stderr)
    else:
        top_rows = (len(run.ds.classes) if cfg.targets == "labels" else cfg.k if cfg.clustering == "kmeans"
                    else 0)
        model = build_model(cfg.arch, sobel=cfg.sobel, batchnorm=True, input_size=cfg.input_size,
                            num_classes=top_rows, seed=cfg.seed)
    model.to(run.device, memory_format=memory_format(cfg.precision))
    run.model = model
    run.optimizer = torch.optim.SGD(trunk_parameters(model), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay)
    if state is not None:
        load_optimizer(run.optimizer, state["optimizer"], ckpt)


def record_run_config(run: Run) -> None:
    """Rank 0: the log cut back to the checkpoint's epoch, and ``config.json`` (what ran, where, on what)."""
    from dcbench.datasets import fingerprint

    if not run.main:
        return
    cfg = run.cfg
    run.data_fingerprint = fingerprint(run.root)
    if run.start_epoch == 0 and run.log_path.exists():
        run.log_path.unlink()
    trim_log(run.log_path, run.start_epoch)
    write_json_atomic(run.out / "config.json", {
        "config": config_json(cfg), "data_root": str(run.root), "num_images": len(run.ds),
        "data_fingerprint": run.data_fingerprint, "world_size": run.world, "resumed_from_epoch": run.start_epoch,
        **({"val_root": str(run.val.root)} if run.val is not None else {}),
        "git_sha": git_sha(), "environment": environment(), "started": utc_now()})
    if run.start_epoch >= cfg.epochs and not cfg.quiet:
        print(f"{run.out}: already trained for {run.start_epoch} epochs (--epochs {cfg.epochs}); nothing to do",
              file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# the stages of an epoch
def _now(device: torch.device) -> float:
    """The clock after the device's queued work: CUDA runs asynchronously, stage times would drift."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _oom_types() -> tuple[type, ...]:
    return tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                 if t is not None)


def begin_epoch(run: Run, epoch: int) -> Epoch:
    """X~: this epoch's subset of the pool (Algorithm 2), or the held one (``--targets fixed-clusters``)."""
    cfg, started = run.cfg, time.perf_counter()
    fixed = cfg.targets == "fixed-clusters" and run.previous is not None
    if fixed:
        subset = run.previous[0]
    elif run.subset_size < len(run.pool):
        subset = np.sort(np.random.default_rng(seeds.stage_seed(cfg.seed, epoch, seeds.SUBSET)).choice(
            run.pool, run.subset_size, replace=False))
    else:
        subset = run.pool
    return Epoch(index=epoch, subset=subset, held=cfg.targets == "labels" or fixed, started=started,
                 record={"epoch": epoch + 1})


def extract_features(run: Run, ep: Epoch) -> None:
    """Every rank computes a strided shard of the subset's features; rank 0 gathers them in ``ep``."""
    cfg = run.cfg
    seed = seeds.stage_seed(cfg.seed, ep.index, seeds.FEATURES)
    seed_everything(seed)
    mine = np.arange(run.rank, len(ep.subset), run.world)
    try:
        rows, positions = compute_features(run.model, run.ds, ep.subset[mine], mine, run.centre_feed, cfg,
                                           run.device, seed, run.show, run.feature_device, run.feature_dtype)
    except _oom_types():
        raise UserError(f"the GPU ran out of memory computing features (epoch {ep.index + 1}); lower "
                        f"--batch-size (now {cfg.batch_size}); the last checkpoint {run.checkpoint} is intact") from None
    if D.is_dist():
        gathered = D.gather_rows(rows.to(run.device) if run.ddp_device is not None else rows, positions,
                                 len(ep.subset))
        del rows  # on rank 0 the gathered copy is the buffer from here on
        ep.features, readable = gathered if run.main else (None, None)
    else:  # rows are in reading order: the readable images' features are the buffer itself
        readable = torch.zeros(len(ep.subset), dtype=torch.bool)
        readable[positions] = True
        ep.features = rows
    ep.readable = None if readable is None else readable.numpy()
    ep.times["features"] = _now(run.device) - ep.started


def cluster_features(run: Run, ep: Epoch) -> np.ndarray:
    """Rank 0: PCA-whiten + L2, cluster (or take the held targets), diagnose; the target of every
    subset image (-1 = unreadable)."""
    cfg = run.cfg
    n = ep.features.shape[0]
    if n == 0:
        raise UserError(f"every image of {run.root} failed to decode; check the data folder")
    if cfg.clustering == "kmeans" and not ep.held and n < cfg.k:
        raise UserError(f"only {n} readable images for {cfg.k} clusters in {run.root}; lower --k")
    if not all_finite(ep.features, cfg.block_rows):
        raise TrainingDiverged(f"non-finite features at epoch {ep.index + 1}; lower --lr; {last_good(run.checkpoint)}")
    try:
        whitened, spectrum = whiten(run, ep)
        labels, whitened, readable = assign_targets(run, ep, whitened)
        ep.record["pca_variance"] = spectrum.get("pca_variance") or None
        ep.stage, started = "the diagnostics", time.perf_counter()
        epoch_diagnostics(run, ep, whitened, labels, readable)
        del whitened
        ep.times["metrics"] = _now(run.device) - started
    except _oom_types():
        hint = (f"lower --diag-sample (now {cfg.diag_sample})" if ep.stage == "the diagnostics" else
                f"lower --cluster-chunk (now {cfg.cluster_chunk or 'chosen from the free memory'})")
        raise UserError(f"the GPU ran out of memory during {ep.stage} (epoch {ep.index + 1}); {hint}, or "
                        f"cluster on the CPU (--cluster-engine faiss --no-faiss-gpu); the last "
                        f"checkpoint {run.checkpoint} is intact") from None
    return labels


def whiten(run: Run, ep: Epoch) -> tuple:
    """PCA-whitening + L2 of the epoch's features; the feature buffer is released here."""
    cfg = run.cfg
    ep.stage, started = "PCA-whitening", time.perf_counter()
    x, ep.features = ep.features, None
    spectrum: dict = {}
    if run.torch_engine:
        whitened = pca_whiten_torch(x.to(run.device), cfg.pca_dim, chunk=cfg.block_rows, stats=spectrum)
    else:
        whitened = pca_whiten(x.numpy(), cfg.pca_dim, stats=spectrum)
    del x
    ep.times["pca"] = _now(run.device) - started
    return whitened, spectrum


def assign_targets(run: Run, ep: Epoch, whitened) -> tuple[np.ndarray, object, np.ndarray]:
    """k-means / PIC on the whitened features, or the held targets; returns (target of every subset
    image, -1 = none; the whitened rows of the images with a target; which images have one)."""
    cfg, readable = run.cfg, ep.readable
    ep.stage, started = ("k-means" if cfg.clustering == "kmeans" else "PIC"), time.perf_counter()
    if ep.held:
        source = run.classes[ep.subset] if cfg.targets == "labels" else run.previous[1]
        labels = np.where(readable, source, -1).astype(np.int64)
        keep = labels[readable] >= 0
        if not keep.all():  # unreadable when the clusters were made: left out of the diagnostics
            whitened = whitened[torch.from_numpy(keep).to(whitened.device)] if run.torch_engine else whitened[keep]
            readable = labels >= 0
    else:
        labels = np.full(len(ep.subset), -1, dtype=np.int64)
        labels[readable] = cluster(whitened, cfg, seed=seeds.stage_seed(cfg.seed, ep.index, seeds.CLUSTERING),
                                   use_gpu=run.faiss_on_gpu, engine=cfg.cluster_engine)
    ep.times["clustering"] = _now(run.device) - started
    return labels, whitened, readable


def train_on_targets(run: Run, ep: Epoch, labels: np.ndarray) -> None:
    """A fresh top layer (kept while the targets are held) and one pass of SGD on the targets."""
    cfg, model, started = run.cfg, run.model, time.perf_counter()
    num_targets = int(labels.max()) + 1
    seed_everything(seeds.stage_seed(cfg.seed, ep.index, seeds.TRAINING))
    num_targets = len(run.ds.classes) if cfg.targets == "labels" else num_targets
    top = model.top_layer
    if not (ep.held and ep.index > 0 and top is not None and top.out_features == num_targets):
        reset_top_layer(model, num_targets, run.device)
    batches = draw_batches(run, ep, labels, num_targets)
    within: list[dict] = []
    after_step = None
    if cfg.diag_every and run.classes is not None and run.main:
        items = ep.subset[diag_rows(run.diag_priority, ep.subset, cfg.diag_sample)]
        after_step = diag_hook(within, cfg.diag_every, batches.steps, functools.partial(
            diagnose, model, run.ds, items, run.classes[items], run.centre_feed, cfg, run.device,
            seeds.stage_seed(cfg.seed, ep.index, seeds.DIAGNOSTICS), run.faiss_on_gpu, run.torch_engine))
    loss_sum, loss_n = train_pass(run, ep, batches, after_step)
    ep.times["train"] = _now(run.device) - started
    ep.record.update(loss=loss_sum / max(loss_n, 1), steps=batches.steps, log_k=math.log(num_targets))
    if within:
        ep.record["diag"] = within
    if run.val is not None:
        started = time.perf_counter()
        ep.record["val_top1"] = top1(model, run.val.feed, run.val.items, run.val.targets, cfg, run.device)
        ep.times["val"] = _now(run.device) - started


def refuse_nonfinite_weights(run: Run, ep: Epoch) -> None:
    """The loss is read only every LOG_EVERY steps and before the last step's update, so a step that
    diverges may show only in the weights: check them (and the momentum) before anything is written."""
    bad = nonfinite_tensors(run.model.state_dict()) + nonfinite_optimizer_state(run.optimizer)
    if bad:
        raise TrainingDiverged(f"non-finite weights after epoch {ep.index + 1} ({len(bad)} tensor(s), first: "
                               f"{bad[0]}); lower --lr (now {run.cfg.lr}); nothing of this epoch was saved; "
                               f"{last_good(run.checkpoint)}")


def save_epoch(run: Run, ep: Epoch, labels: np.ndarray) -> None:
    """Rank 0: the assignments, the log line, the checkpoint (with the state to resume) and a snapshot."""
    cfg, out, record, epoch = run.cfg, run.out, ep.record, ep.index + 1
    started = time.perf_counter()
    write_assignments(out / "assignments" / f"epoch_{epoch:04d}.npz", ep.subset, labels)
    ep.times["save"] = time.perf_counter() - started
    record["time"] = {k: round(v, 3) for k, v in ep.times.items()}
    record["time"]["total"] = round(time.perf_counter() - ep.started, 3)
    append_log(run.log_path, record)
    num_targets = run.model.top_layer.out_features
    state = {"epoch": epoch, "optimizer": run.optimizer.state_dict(),
             "assignment_index": torch.from_numpy(ep.subset.astype(np.int64)),
             "assignment": torch.from_numpy(labels.astype(np.int64)),
             "seed": cfg.seed, "torch_rng": torch.get_rng_state()}
    save_checkpoint(run.checkpoint, run.model, origin="dcbench-train", name=out.name, epoch=epoch,
                    num_clusters=num_targets, train_config=config_json(cfg), data_fingerprint=run.data_fingerprint,
                    train_state=state)
    if cfg.snapshot_every and epoch % cfg.snapshot_every == 0:
        save_checkpoint(out / "snapshots" / f"epoch_{epoch:04d}", run.model, origin="dcbench-train",
                        name=f"{out.name}-epoch{epoch}", epoch=epoch, num_clusters=num_targets,
                        train_config=config_json(cfg), data_fingerprint=run.data_fingerprint)
    if run.show:
        extra = "".join(f" {k}={record[k]:.3f}" for k in ("nmi_prev", "nmi_labels", "ratio_edge_intra_class",
                                                              "val_top1") if record.get(k) is not None)
        print(f"epoch {epoch}/{cfg.epochs} loss={record['loss']:.4f} (chance: ln k={record['log_k']:.3f}) "
              f"clusters={record['num_clusters']} min={record['size_min']}{extra} "
              f"{record['time']['total']:.1f}s", file=sys.stderr)

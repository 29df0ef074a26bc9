"""Plumbing every transfer task shares: flags, checkpoint loading, data location, feature
cache, result writing. A task module adds its own flags and a ``run(args)``; nothing else."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from torchvision import transforms as T

from dcbench.atomic import write_file_atomic
from dcbench.errors import UserError
from dcbench.results import write_result


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every ``dc-transfer TASK`` takes (DESIGN §8)."""
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory (format v1)")
    p.add_argument("--data", type=Path, default=None,
                   help="dataset root (default: the embedded data, generated once and cached)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder for result JSON files")
    p.add_argument("--scale", choices=("smoke", "full"), default=None,
                   help="full = the thesis protocol; smoke = small budgets for the embedded data "
                        "(default: smoke without --data, full with it, as dc-train)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="data-loader workers")
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
    p.add_argument("--input-size", type=int, default=None,
                   help="network input size; must equal the checkpoint's (default: the checkpoint's)")


def input_size(args: argparse.Namespace, meta: dict) -> int:
    """The checkpoint's input size; a different ``--input-size`` is a one-line user error."""
    size = int(meta["input_size"])
    asked = getattr(args, "input_size", None)
    if asked is not None and int(asked) != size:
        raise UserError(f"--input-size {asked}: checkpoint {args.checkpoint} was built for {size}px inputs; "
                        f"pass --input-size {size} (or convert the weights at {asked}px with dc-convert)")
    return size


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


def normalize(meta: dict) -> T.Normalize:
    pre = meta.get("preprocessing") or {}
    return T.Normalize(pre.get("mean", (0.485, 0.456, 0.406)), pre.get("std", (0.229, 0.224, 0.225)))


def eval_transform(meta: dict, size: int | None = None) -> T.Compose:
    """Resize to size*256/224 then centre crop, the ImageNet evaluation convention."""
    size = size or int(meta["input_size"])
    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize(meta)])


def cache_dir(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    return Path(os.environ.get("DCBENCH_CACHE", Path.home() / ".cache" / "dcbench" / "features"))


def cached_arrays(args: argparse.Namespace, key: dict, compute: Callable[[], dict[str, np.ndarray]]
                  ) -> dict[str, np.ndarray]:
    """Return ``compute()``'s arrays, cached on disk under a hash of ``key``.

    ``key`` must name everything the arrays depend on: checkpoint sha256, layer, data
    fingerprint, split and transform. A repeated run then skips the forward passes.
    """
    arrays = cache_get(args, key)
    if arrays is None:
        arrays = compute()
        cache_put(args, key, arrays)
    return arrays


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
    write_file_atomic(path, lambda p: save_np({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                              str(p), metadata={"key": json.dumps(key, default=str)}))
    return path


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


def save_and_report(args: argparse.Namespace, result: dict) -> Path:
    path = write_result(result, args.out)
    metrics = ", ".join(f"{k}={v:.2f}" for k, v in result["metrics"].items())
    print(f"{result['task']} [{result['scale']}] {result['checkpoint']['name']}: {metrics}")
    print(f"result: {path}")
    return path

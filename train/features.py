"""The clustering descriptors of a set of images, computed once per epoch in eval mode."""

from __future__ import annotations

import numpy as np
import torch

from dcbench.precision import autocast
from dcbench.progress import progress
from dcbench.train import heads as H
from dcbench.train.config import TrainConfig
from dcbench.train.feed import Feed, to_inputs


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
    filled = 0
    for batch in progress(loader, desc="features", show=show):
        if batch is None:
            continue
        x, p = to_inputs(batch, cfg, device, centre=True)
        with autocast(cfg.precision, device):
            f = H.descriptor(model, x, cfg.head, cfg.descriptor)
        buf[filled:filled + len(p)] = f
        pos[filled:filled + len(p)] = p
        filled += len(p)
    return buf[:filled], pos[:filled]


def all_finite(x: torch.Tensor, chunk: int) -> bool:
    """No NaN or inf in ``x``, checked ``chunk`` rows at a time (no full-size temporary)."""
    return all(bool(torch.isfinite(x[s:s + chunk]).all()) for s in range(0, x.shape[0], chunk))

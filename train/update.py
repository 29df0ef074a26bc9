"""The training pass of an epoch: SGD on the cluster ids (or labels) through a fresh top layer.

The batches are drawn uniformly over the clusters (``--sampler``), the top layer is re-created after
each reassignment, and with SGT (``--sgt N``) only N rows of it are updated per batch, by a lazy
SGD with momentum on those rows. Under torchrun each rank takes its share of every global batch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcbench.precision import autocast
from dcbench.progress import progress
from dcbench.train import distributed as D
from dcbench.train import heads as H
from dcbench.train import sampler as S
from dcbench.train import seeds
from dcbench.train.config import TrainConfig
from dcbench.train.context import Epoch, Run
from dcbench.train.feed import to_inputs
from dcbench.train.run_state import TrainingDiverged, last_good

LOG_EVERY = 50  # training steps between two reads of the running loss (each read waits for the device)


class TopNet(nn.Module):
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


@dataclasses.dataclass(frozen=True)
class Batches:
    """One epoch's draw: the images and targets of every global batch, one after the other."""

    items: np.ndarray  # dataset indices, steps x batch size
    targets: np.ndarray
    steps: int
    num_targets: int  # rows of the top layer
    per_rank: int  # images of a global batch each rank trains on
    mine: np.ndarray  # positions in items of this rank's share of every batch


def draw_batches(run: Run, ep: Epoch, labels: np.ndarray, num_targets: int) -> Batches:
    """``steps`` batches drawn by ``--sampler`` over this epoch's targets (-1 = unreadable, never drawn)."""
    cfg = run.cfg
    steps = cfg.steps_per_epoch or max(1, cfg.epoch_multiplier * int((labels >= 0).sum()) // cfg.batch_size)
    draw = S.draw(cfg.sampler, labels, steps * cfg.batch_size,
                  np.random.default_rng(seeds.stage_seed(cfg.seed, ep.index, seeds.SAMPLER)))
    per = cfg.batch_size // run.world
    mine = np.concatenate([np.arange(b * cfg.batch_size + run.rank * per, b * cfg.batch_size + (run.rank + 1) * per)
                           for b in range(steps)])
    return Batches(ep.subset[draw], labels[draw], steps, num_targets, per, mine)


def sgt_rows(batch_targets: np.ndarray, m: int, sgt: int, rng: np.random.Generator) -> np.ndarray:
    """SGT (thesis §4.7): the rows of the batch's targets plus random others, ``sgt`` in all, sorted."""
    gtargets = np.unique(batch_targets)
    others = np.setdiff1d(np.arange(m), gtargets)
    extra = rng.choice(others, max(0, min(sgt - gtargets.size, others.size)), replace=False)
    return np.sort(np.concatenate([gtargets, extra]))


def sgd_step(net, top, opt, opt_top, momenta: dict, x, y, rows, cfg: TrainConfig, device) -> torch.Tensor:
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
                b = momenta[id(p)]
                b[rows] = cfg.top_momentum * b[rows] + p.grad[rows] + cfg.weight_decay * p[rows]
                p[rows] = p[rows] - cfg.lr * b[rows]
    return loss.detach()



def train_pass(run: Run, ep: Epoch, batches: Batches, after_step=None) -> tuple[float, int]:
    """One epoch's updates; returns (sum of the batch losses x their sizes, images trained on).

    ``after_step(n)`` (if given) runs after the n-th update (``--diag-every``)."""
    cfg, model, device = run.cfg, run.model, run.device
    net: nn.Module = TopNet(model, cfg.head)
    if D.is_dist():
        # 2fc leaves fc7 out of the forward: DDP must be told that some parameters get no gradient
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[run.ddp_device] if run.ddp_device is not None else None,
            find_unused_parameters=cfg.head == "2fc")
    num_targets = batches.num_targets
    sgt = cfg.sgt and cfg.sgt < num_targets
    top = model.top_layer
    opt_top = None if sgt else torch.optim.SGD(top.parameters(), lr=cfg.lr, momentum=cfg.top_momentum,
                                               weight_decay=cfg.weight_decay)
    momenta = {id(p): torch.zeros_like(p) for p in top.parameters()} if sgt else {}
    rng_rows = np.random.default_rng(seeds.stage_seed(cfg.seed, ep.index, seeds.SGT_ROWS))
    model.train()
    mine = batches.mine
    loader = run.train_feed(batches.items[mine], batches.targets[mine], batches.per_rank,
                            seeds.stage_seed(cfg.seed, ep.index, seeds.CROPS))
    # The running loss stays on the device (float64: the same sums as adding Python floats) and is
    # read every LOG_EVERY steps, not every step: a read waits for the GPU to finish.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_n = 0
    bar = progress(loader, total=batches.steps, desc=f"train {ep.index + 1}", show=run.show)

    def check(step: int) -> float:
        total = float(loss_sum)
        if not math.isfinite(total):
            raise TrainingDiverged(f"loss is {total} at epoch {ep.index + 1}, by step {step + 1}; lower --lr "
                                   f"(now {cfg.lr}); {last_good(run.checkpoint)}")
        return total

    step = -1
    for step, batch in enumerate(bar):
        rows = None
        if sgt:  # rows of the global batch's targets plus random others, sgt in all (thesis §4.7)
            in_batch = batches.targets[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            rows = torch.from_numpy(sgt_rows(in_batch, num_targets, cfg.sgt, rng_rows)).to(device)
        if batch is None:
            continue
        x, y = to_inputs(batch, cfg, device, centre=False)
        y = y.to(device, non_blocking=True)
        loss = sgd_step(net, top, run.optimizer, opt_top, momenta, x, y, rows, cfg, device)
        loss_sum += loss.double() * y.shape[0]
        loss_n += y.shape[0]
        if (step + 1) % LOG_EVERY == 0:
            total = check(step)
            if run.show:
                bar.set_postfix(loss=f"{total / max(loss_n, 1):.4f}")
        if after_step is not None:
            after_step(step + 1)
            model.train()
    return check(step), loss_n

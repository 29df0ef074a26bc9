"""What the log says about the clusters and the features: the thesis's §4.4 diagnostics.

At the start of every epoch (:func:`epoch_diagnostics`): cluster sizes, the NMI of this epoch's
clusters with the last epoch's and, for labelled data, with the labels, and the 10-NN graph's
ratio of edges within a class (Figure 4.1), all on a fixed random sample of images (``--diag-sample``).
Within an epoch (``--diag-every``, :func:`diagnose`), and the supervised reference's val top-1.
"""

from __future__ import annotations

import numpy as np
import torch

from dcbench.knn_graph import knn, knn_torch, random_graph_ratio, ratio_edge_intra_class
from dcbench.precision import autocast
from dcbench.train import heads as H
from dcbench.train.clustering import cluster, pca_whiten, pca_whiten_torch
from dcbench.train.config import TrainConfig
from dcbench.train.context import Epoch, Run
from dcbench.train.features import compute_features
from dcbench.train.feed import to_inputs
from dcbench.train.metrics import cluster_stats, nmi


def diag_rows(priority: np.ndarray, dataset_index: np.ndarray, size: int) -> np.ndarray:
    """Positions (sorted) of the ``size`` entries of ``dataset_index`` first in the fixed random
    ``priority`` order; all of them when ``size`` is 0 or not smaller. A fixed pool gives the same
    images every epoch; Algorithm 2's changing subsets share as many as they can."""
    if size == 0 or len(dataset_index) <= size:
        return np.arange(len(dataset_index))
    return np.sort(np.argsort(priority[dataset_index], kind="stable")[:size])


def epoch_diagnostics(run: Run, ep: Epoch, whitened, labels: np.ndarray, readable: np.ndarray) -> None:
    """Add the epoch-start diagnostics of this epoch's ``labels`` (-1 = unreadable) to ``ep.record``."""
    cfg, record = run.cfg, ep.record
    lab = labels[readable]
    record.update(cluster_stats(lab))
    record["images"] = int(readable.sum())
    record["unreadable"] = int((~readable).sum())
    if run.previous is not None:
        before_subset, before = run.previous
        _, ia, ib = np.intersect1d(ep.subset, before_subset, return_indices=True)
        keep = (labels[ia] >= 0) & (before[ib] >= 0)
        record["nmi_prev"] = nmi(labels[ia][keep], before[ib][keep]) if keep.any() else None
    else:
        record["nmi_prev"] = None
    if run.classes is None:
        return
    sample = diag_rows(run.diag_priority, ep.subset[readable], cfg.diag_sample)
    y = run.classes[ep.subset][readable][sample]
    record["diag_sample"] = int(len(sample))
    record["nmi_labels"] = nmi(lab[sample], y)
    if run.torch_engine:
        _, nbrs = knn_torch(whitened[torch.from_numpy(sample).to(whitened.device)], 10, chunk=cfg.cluster_chunk)
    else:
        _, nbrs = knn(whitened[sample], 10, use_gpu=run.faiss_on_gpu)
    per_class = ratio_edge_intra_class(nbrs, y)
    record["ratio_edge_intra_class"] = float(np.mean(list(per_class.values())))
    # Figure 4.1: the per-class ratios (by class index) and what a random graph scores
    record["ratio_per_class"] = [round(per_class[c], 5) for c in sorted(per_class)]
    record["ratio_random_graph"] = float(np.mean(list(random_graph_ratio(y).values())))


def diag_hook(diags: list, every: int, steps: int, measure):
    """``after_step`` for ``--diag-every``: after update n (0 < n < steps, n a multiple of ``every``)
    append ``{"step": n, **measure()}``; the last update's diagnostics are the next epoch's first."""
    def hook(n: int) -> None:
        if n % every == 0 and n < steps:
            diags.append({"step": n, **measure()})
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


@torch.no_grad()
def top1(model, feed, items: np.ndarray, targets: np.ndarray, cfg: TrainConfig, device) -> float:
    """Centre-crop top-1 (%) of the network's top layer (``--targets labels``; thesis §4.7, Table 4.2)."""
    model.eval()
    correct = n = 0
    for batch in feed(items, targets, cfg.batch_size, 0):
        if batch is None:
            continue
        x, y = to_inputs(batch, cfg, device, centre=True)
        with autocast(cfg.precision, device):
            logits = model.top_layer(H.top_input(model, x, cfg.head))
        correct += int((logits.argmax(1).cpu() == y).sum())
        n += len(y)
    return 100.0 * correct / max(n, 1)

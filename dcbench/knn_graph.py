"""The k-NN graph diagnostic of thesis §4.1, shared by dc-train's epoch log and the knn-graph task.

For a labelled set, build the k-NN graph of the features; for each class C, the *ratio edge
intra-class* is the share of edges leaving C's nodes that end in C. High ratios mean the
features put same-class images next to each other.
"""

from __future__ import annotations

import numpy as np


def knn(x: np.ndarray, k: int, use_gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 distances and indices of each row's k nearest other rows, self excluded."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    index = faiss.IndexFlatL2(x.shape[1])
    if use_gpu and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(x)
    dist, idx = index.search(x, k + 1)
    # Drop the point itself; with duplicate rows it need not be in column 0.
    self_mask = idx == np.arange(n)[:, None]
    keep = ~self_mask
    keep[~self_mask.any(axis=1), -1] = False
    return dist[keep].reshape(n, k), idx[keep].reshape(n, k).astype(np.int64)


# Rows per block when the free memory cannot be told.
FALLBACK_CHUNK = 4096


def choose_chunk(n_rows: int, free_bytes: int, bytes_per_row_pair: int = 4, blocks_live: int = 3,
                 headroom: float = 0.5) -> int:
    """The most rows per block (1..n_rows) whose ``blocks_live`` blocks of chunk x n_rows pairwise
    values fit in ``headroom`` of ``free_bytes``."""
    n_rows = max(1, int(n_rows))
    per_row = blocks_live * n_rows * bytes_per_row_pair
    return max(1, min(n_rows, int(headroom * max(0, free_bytes)) // per_row))


def knn_torch(x, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn` in torch on ``x``'s device (exact; ties may order differently from faiss).

    ``chunk`` rows per block; None = as many as the free memory of the device allows
    (:func:`choose_chunk`): each block holds chunk x n distances, so a fixed chunk that suits a
    small set exhausts the memory at ImageNet's 1.28M rows."""
    import torch

    from dcbench.resources import available_bytes

    x = torch.as_tensor(x).to(torch.float32)
    n = x.shape[0]
    k = min(k, n - 1)
    if chunk is None:
        free = available_bytes(x.device)
        # the block's product, its distances and topk's working copy are live at once
        chunk = FALLBACK_CHUNK if free is None else choose_chunk(n, free)
    sq = (x * x).sum(1)
    dist = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d2 = (sq[s:e, None] - 2 * x[s:e] @ x.T + sq[None, :]).clamp_min_(0)
        d2[torch.arange(e - s, device=x.device), torch.arange(s, e, device=x.device)] = float("inf")  # not itself
        v, i = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        dist[s:e], idx[s:e] = v.cpu().numpy(), i.cpu().numpy()
    return dist, idx


def ratio_edge_intra_class(neighbours: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Per class: the fraction (0..1) of k-NN edges leaving the class's nodes that stay in it."""
    labels = np.asarray(labels)
    same = labels[neighbours] == labels[:, None]
    return {int(c): float(same[labels == c].mean()) for c in np.unique(labels)}


def random_graph_ratio(labels: np.ndarray) -> dict[int, float]:
    """What a uniformly random graph would score per class: (|C| - 1) / (N - 1)."""
    labels = np.asarray(labels)
    n = len(labels)
    return {int(c): float((np.sum(labels == c) - 1) / (n - 1)) for c in np.unique(labels)}

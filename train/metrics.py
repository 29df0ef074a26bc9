"""Per-epoch diagnostics: NMI between assignments, cluster-size statistics (the k-NN graph ratio
lives in dcbench.knn_graph, shared with the knn-graph task)."""

from __future__ import annotations

import numpy as np


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(np.asarray(a), np.asarray(b)))


def cluster_stats(labels: np.ndarray) -> dict:
    """Sizes of the clusters that exist (labels 0..max): min/median/mean/max, empty count, log2 histogram."""
    sizes = np.bincount(labels)
    nonempty = sizes[sizes > 0]
    edges = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, np.inf]
    hist, _ = np.histogram(nonempty, bins=edges)
    return {
        "num_clusters": int(sizes.size),
        "empty": int((sizes == 0).sum()),
        "singletons": int((sizes == 1).sum()),
        "size_min": int(nonempty.min()), "size_median": float(np.median(nonempty)),
        "size_mean": float(nonempty.mean()), "size_max": int(nonempty.max()),
        "size_histogram": {f"{int(lo)}-{'inf' if hi == np.inf else int(hi) - 1}": int(h)
                           for lo, hi, h in zip(edges[:-1], edges[1:], hist) if h},
    }

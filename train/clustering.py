"""DeepCluster's clustering stage as pure functions: PCA-whitening, k-means, PIC.

- :func:`pca_whiten` (PCA-whitening + L2, as the original code) lives in :mod:`dcbench.whitening`,
  shared with the knn-graph task; its names are re-exported here.
- :func:`kmeans` is faiss k-means (GPU index when available); empty clusters never survive.
- :func:`pic` is the Power Iteration Clustering variant of the original code (thesis §4.6).
"""

from __future__ import annotations

import numpy as np

from dcbench.errors import UserError
from dcbench.knn_graph import knn
from dcbench.whitening import faiss_pca_whiten, pca_apply, pca_fit, pca_whiten, top_eigh  # noqa: F401


# ---------------------------------------------------------------------------------------------
# faiss helpers
def _faiss_gpu_available() -> bool:
    try:
        import faiss
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001
        return False


def _flat_index(d: int, use_gpu: bool):
    import faiss

    if use_gpu and _faiss_gpu_available():
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = 0
        cfg.useFloat16 = False
        return faiss.GpuIndexFlatL2(res, d, cfg)
    return faiss.IndexFlatL2(d)


# ---------------------------------------------------------------------------------------------
# k-means
def fill_empty_clusters(x: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Give every empty cluster half of a randomly picked non-empty cluster (thesis §3.2).

    The donor's members are split along a random direction through their mean, so the moved half
    is a coherent piece of the donor, not a random scatter.
    """
    labels = labels.astype(np.int64).copy()
    counts = np.bincount(labels, minlength=k)
    for c in np.flatnonzero(counts == 0):
        donors = np.flatnonzero(counts >= 2)
        if donors.size == 0:
            break
        donor = int(rng.choice(donors))
        members = np.flatnonzero(labels == donor)
        pts = x[members].astype(np.float64)
        proj = (pts - pts.mean(axis=0)) @ rng.standard_normal(x.shape[1])
        order = np.argsort(proj, kind="stable")
        moved = members[order[len(members) // 2:]]
        labels[moved] = c
        counts[donor] -= moved.size
        counts[c] = moved.size
    return labels


def kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, use_gpu: bool = True,
           max_points_per_centroid: int = 10_000_000, verbose: bool = False) -> tuple[np.ndarray, float]:
    """faiss k-means; returns (labels int64 (n,), final objective). No cluster is left empty."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n < k:
        raise UserError(f"{n} images for {k} clusters: k-means needs at least as many images as clusters "
                        "(lower --k or give more data)")
    clus = faiss.Clustering(d, k)
    clus.seed = int(seed) % (2**31)
    clus.niter = niter
    clus.max_points_per_centroid = max_points_per_centroid
    # faiss only uses min_points_per_centroid to print "WARNING clustering n points to k centroids:
    # please provide at least 39k training points"; DeepCluster clusters few points per centroid on
    # purpose (smoke: 600 images, k = 50), so the warning is silenced. The clustering is unchanged.
    clus.min_points_per_centroid = 1
    clus.verbose = verbose
    index = _flat_index(d, use_gpu)
    clus.train(x, index)
    _, idx = index.search(x, 1)
    stats = clus.iteration_stats
    loss = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    labels = fill_empty_clusters(x, idx[:, 0], k, np.random.default_rng([int(seed), 7]))
    return labels, loss


# ---------------------------------------------------------------------------------------------
# PIC
def pic_from_graph(nbr_idx: np.ndarray, nbr_dist: np.ndarray, sigma: float = 0.2, alpha: float = 0.001,
                   n_iter: int = 200, distribute_singletons: bool = True) -> np.ndarray:
    """PIC on a k-NN graph (rows: a node's neighbours, self excluded; squared L2 distances).

    Affinity: Gaussian kernel exp(-d / sigma^2) on the squared distances, symmetrised (W + W^T).
    Power iterations v <- alpha W^T v + (1 - alpha)/n, L1-normalised. Each node then points to the
    neighbour j maximising W_ij (v_j - v_i) when positive (else to itself); following pointers to a
    local maximum gives the clusters. Singletons join the cluster of their nearest non-singleton
    neighbour (if any). Returns contiguous labels 0..m-1.
    """
    import scipy.sparse as sp

    n, k = nbr_idx.shape
    rows = np.repeat(np.arange(n), k)
    cols = nbr_idx.reshape(-1).astype(np.int64)
    data = np.exp(-nbr_dist.reshape(-1).astype(np.float64) / sigma**2)
    a = sp.csr_matrix((data, (rows, cols)), shape=(n, n))
    w = (a + a.T).tocsr()
    wt = w.T.tocsr()
    v = np.full(n, 1.0 / n)
    for _ in range(n_iter):
        v = alpha * (wt @ v) + (1 - alpha) / n
        v /= v.sum()
    coo = w.tocoo()
    score = coo.data * (v[coo.col] - v[coo.row])
    pointer = np.arange(n)
    pos = score > 0
    r, c, s = coo.row[pos], coo.col[pos], score[pos]
    if r.size:
        order = np.lexsort((-s, r))  # by row, best score first
        r, c = r[order], c[order]
        first = np.ones(r.size, dtype=bool)
        first[1:] = r[1:] != r[:-1]
        pointer[r[first]] = c[first]
    while True:  # pointer jumping to the local maxima (no cycles: v strictly increases)
        nxt = pointer[pointer]
        if np.array_equal(nxt, pointer):
            break
        pointer = nxt
    _, labels = np.unique(pointer, return_inverse=True)
    labels = labels.astype(np.int64)
    if distribute_singletons:
        sizes = np.bincount(labels)
        new = labels.copy()
        for s_node in np.flatnonzero(sizes[labels] == 1):
            for nb in nbr_idx[s_node]:
                if sizes[labels[nb]] != 1:
                    new[s_node] = labels[nb]
                    break
        _, labels = np.unique(new, return_inverse=True)
        labels = labels.astype(np.int64)
    return labels


def pic(x: np.ndarray, nnn: int = 5, sigma: float = 0.2, alpha: float = 0.001, n_iter: int = 200,
        distribute_singletons: bool = True, use_gpu: bool = True) -> np.ndarray:
    """Power Iteration Clustering on the nnn-NN graph of ``x`` (faiss search)."""
    if x.shape[0] < 2:
        raise UserError(f"PIC needs at least 2 images, got {x.shape[0]}")
    dist, idx = knn(x, nnn, use_gpu)
    return pic_from_graph(idx, dist, sigma, alpha, n_iter, distribute_singletons)


def cluster(x: np.ndarray, cfg, seed: int, use_gpu: bool = True) -> np.ndarray:
    """The configured clustering on already whitened, normalised features."""
    if cfg.clustering == "kmeans":
        labels, _ = kmeans(x, cfg.k, niter=cfg.kmeans_iters, seed=seed, use_gpu=use_gpu,
                           max_points_per_centroid=cfg.max_points_per_centroid)
        return labels
    return pic(x, nnn=cfg.pic_knn, sigma=cfg.pic_sigma, alpha=cfg.pic_alpha, n_iter=cfg.pic_iters,
               distribute_singletons=cfg.pic_singletons, use_gpu=use_gpu)

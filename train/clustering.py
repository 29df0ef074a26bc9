"""DeepCluster's clustering stage as pure functions: PCA-whitening, k-means, PIC.

- :func:`pca_whiten` (PCA-whitening + L2, as the original code) lives in :mod:`dcbench.whitening`,
  shared with the knn-graph task; its names are re-exported here.
- :func:`kmeans` is faiss k-means (GPU index when available); empty clusters never survive.
- :func:`pic` is the Power Iteration Clustering variant of the original code (thesis §4.6).
- :func:`pca_whiten_torch` and :func:`kmeans_torch` are the same maths in torch, on whatever
  device the features are (the GPU engine: faiss-gpu wheels exist for CUDA 12 only); they
  read the features in blocks of ``chunk`` rows, so an fp16 buffer is never copied whole.
"""

from __future__ import annotations

import numpy as np
import torch

from dcbench.errors import UserError
from dcbench.knn_graph import knn
from dcbench.whitening import (  # noqa: F401
    faiss_pca_whiten,
    pca_apply,
    pca_fit,
    pca_whiten,
    top_eigh,
    variance_shares,
)


# ---------------------------------------------------------------------------------------------
# faiss helpers
def faiss_gpu_available() -> bool:
    try:
        import faiss
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001
        return False


def _flat_index(d: int, use_gpu: bool):
    import faiss

    if use_gpu and faiss_gpu_available():
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


def cluster(x, cfg, seed: int, use_gpu: bool = True, engine: str = "faiss") -> np.ndarray:
    """The configured clustering on already whitened, normalised features (numpy for faiss, a tensor for torch)."""
    if engine == "torch":
        if cfg.clustering == "kmeans":
            labels, _ = kmeans_torch(x, cfg.k, niter=cfg.kmeans_iters, seed=seed, chunk=cfg.block_rows)
            return labels
        from dcbench.knn_graph import knn_torch

        dist, idx = knn_torch(x, cfg.pic_knn, chunk=cfg.cluster_chunk)
        return pic_from_graph(idx, dist, cfg.pic_sigma, cfg.pic_alpha, cfg.pic_iters, cfg.pic_singletons)
    if cfg.clustering == "kmeans":
        labels, _ = kmeans(x, cfg.k, niter=cfg.kmeans_iters, seed=seed, use_gpu=use_gpu,
                           max_points_per_centroid=cfg.max_points_per_centroid)
        return labels
    return pic(x, nnn=cfg.pic_knn, sigma=cfg.pic_sigma, alpha=cfg.pic_alpha, n_iter=cfg.pic_iters,
               distribute_singletons=cfg.pic_singletons, use_gpu=use_gpu)


# ---------------------------------------------------------------------------------------------
# the torch engine
def faiss_installed() -> bool:
    try:
        import faiss  # noqa: F401
        return True
    except ImportError:
        return False


def resolve_engine(name: str, device: torch.device, faiss_gpu: bool = True) -> str:
    """--cluster-engine: auto = faiss-gpu or torch on CUDA, faiss (else torch) on the CPU."""
    if name == "auto":
        if device.type == "cuda":
            return "faiss" if faiss_gpu and faiss_gpu_available() else "torch"
        return "faiss" if faiss_installed() else "torch"
    if name == "faiss":
        if not faiss_installed():
            raise UserError("--cluster-engine faiss, but faiss is not installed; pip install faiss-cpu "
                            "(or faiss-gpu-cu12), or use --cluster-engine torch")
        if device.type == "cuda" and faiss_gpu and not faiss_gpu_available():
            raise UserError("--cluster-engine faiss on CUDA, but the installed faiss has no GPU support; use "
                            "--cluster-engine torch, or add --no-faiss-gpu to cluster with faiss on the CPU")
    elif name != "torch":
        raise UserError(f"--cluster-engine must be auto, faiss or torch, not {name!r}")
    return name


def _blocks(n: int, chunk: int):
    for s in range(0, n, chunk):
        yield s, min(n, s + chunk)


def pca_whiten_torch(x: torch.Tensor, dim: int = 256, eigen_power: float = -0.5, chunk: int = 16384,
                     stats: dict | None = None) -> torch.Tensor:
    """:func:`pca_whiten` in torch on ``x``'s device: float32 (n, dim), rows L2-normalised.

    Same centring, covariance normalisation (1/n), eigenvalue floor and scaling as :func:`pca_fit`;
    ``x`` may be fp16 (read block by block in fp32); sums accumulate in float64. ``stats`` receives
    the spectrum (``pca_variance``) as :func:`pca_fit` gives it.
    """
    n, d = x.shape
    dim = max(1, min(dim, d, n - 1 if n > 1 else 1))
    dev = x.device
    mean = torch.zeros(d, dtype=torch.float64, device=dev)
    for s, e in _blocks(n, chunk):
        mean += x[s:e].to(torch.float64).sum(0)
    mean32 = (mean / n).to(torch.float32)
    if n >= d:
        cov = torch.zeros(d, d, dtype=torch.float64, device=dev)
        for s, e in _blocks(n, chunk):
            xc = x[s:e].to(torch.float32) - mean32
            cov += (xc.T @ xc).to(torch.float64)
        cov /= n
        total = float(cov.diagonal().sum())
        w, v = torch.linalg.eigh(cov)
        w, v = w.flip(0)[:dim], v.flip(1)[:, :dim]
    else:  # fewer points than dimensions: the Gram matrix, as pca_fit and faiss do
        xc = x.to(torch.float32) - mean32
        gram = (xc @ xc.T).to(torch.float64) / n
        total = float(gram.diagonal().sum())
        w, u = torch.linalg.eigh(gram)
        del gram
        w, u = w.flip(0)[:dim], u.flip(1)[:, :dim]
        v = xc.T.to(torch.float64) @ u
        v = v / v.norm(dim=0).clamp_min(1e-30)
        del xc
    if stats is not None:
        stats["pca_variance"] = variance_shares(w.cpu().numpy(), total)
    floor = float(w[0]) * 1e-12 if float(w[0]) > 0 else 1e-30
    w = w.clamp_min(floor)
    proj = (v * w.pow(eigen_power)[None, :]).to(torch.float32)
    out = torch.empty(n, dim, dtype=torch.float32, device=dev)
    for s, e in _blocks(n, chunk):
        y = (x[s:e].to(torch.float32) - mean32) @ proj
        out[s:e] = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return out


def _assign(x: torch.Tensor, c: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every row and its squared distance, block by block."""
    n = x.shape[0]
    cn = (c * c).sum(1)
    lab = torch.empty(n, dtype=torch.int64, device=x.device)
    dist = torch.empty(n, dtype=torch.float32, device=x.device)
    for s, e in _blocks(n, chunk):
        xb = x[s:e].to(torch.float32)
        d2 = torch.addmm(cn[None, :], xb, c.T, alpha=-2.0)  # ||c||^2 - 2 x.c
        m, i = d2.min(dim=1)
        lab[s:e] = i
        dist[s:e] = (m + (xb * xb).sum(1)).clamp_min_(0)
    return lab, dist


def _split_empty(c: torch.Tensor, counts: np.ndarray, rng: np.random.Generator) -> None:
    """faiss's rule for a centroid left empty: copy a cluster picked with probability ~ its size - 1,
    and push the two copies apart by a relative 1/1024 in alternating directions."""
    eps = 1.0 / 1024
    sign = torch.ones(c.shape[1], dtype=c.dtype, device=c.device)
    sign[1::2] = -1
    for ci in np.flatnonzero(counts == 0):
        p = np.maximum(counts - 1, 0).astype(np.float64)
        if p.sum() <= 0:
            break
        cj = int(rng.choice(len(counts), p=p / p.sum()))
        c[ci] = c[cj] * (1 + eps * sign)
        c[cj] = c[cj] * (1 - eps * sign)
        counts[ci] = counts[cj] // 2
        counts[cj] -= counts[ci]


def kmeans_torch(x: torch.Tensor, k: int, niter: int = 20, seed: int = 0,
                 chunk: int = 16384) -> tuple[np.ndarray, float]:
    """Lloyd's k-means on ``x``'s device, as faiss runs it: k distinct random points as the initial
    centroids, ``niter`` assign/update rounds with faiss's empty-centroid split, a final assignment;
    then :func:`fill_empty_clusters`. Returns (labels int64 (n,), objective = sum of squared distances).
    Deterministic on the CPU; on CUDA the centroid sums use atomics, so the last bits may vary."""
    n, d = x.shape
    if n < k:
        raise UserError(f"{n} images for {k} clusters: k-means needs at least as many images as clusters "
                        "(lower --k or give more data)")
    rng = np.random.default_rng([int(seed), 11])
    init = torch.from_numpy(np.sort(rng.choice(n, k, replace=False))).to(x.device)
    c = x[init].to(torch.float32)
    for _ in range(niter):
        lab, _ = _assign(x, c, chunk)
        sums = torch.zeros(k, d, dtype=torch.float32, device=x.device)
        for s, e in _blocks(n, chunk):
            sums.index_add_(0, lab[s:e], x[s:e].to(torch.float32))
        counts_t = torch.bincount(lab, minlength=k)
        nonempty = counts_t > 0
        c[nonempty] = sums[nonempty] / counts_t[nonempty, None].to(torch.float32)
        counts = counts_t.cpu().numpy()
        if (counts == 0).any():
            _split_empty(c, counts, rng)
    lab, dist = _assign(x, c, chunk)
    labels = lab.cpu().numpy()
    if np.bincount(labels, minlength=k).min() == 0:
        labels = fill_empty_clusters(x.to(torch.float32).cpu().numpy(), labels, k, np.random.default_rng([int(seed), 7]))
    return labels, float(dist.to(torch.float64).sum())


def kmeans_objective(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of points to the mean of their cluster (to compare two partitions)."""
    x = np.asarray(x, dtype=np.float64)
    k = int(labels.max()) + 1
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, labels, x)
    means = sums / np.maximum(np.bincount(labels, minlength=k), 1)[:, None]
    return float(((x - means[labels]) ** 2).sum())

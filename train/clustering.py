"""DeepCluster's clustering stage as pure functions: PCA-whitening, k-means, PIC.

- :func:`pca_whiten` spans the same subspace as ``faiss.PCAMatrix(d, dim, -0.5)`` (same centring,
  same covariance normalisation, same eigenvalue scaling) and then L2-normalises rows, as the
  original code does. It is faster than faiss's: the covariance is one multi-threaded BLAS product
  (symmetric rank-k update) and only the top ``dim`` eigenpairs are computed (LAPACK ``syevr``).
- :func:`kmeans` is faiss k-means (GPU index when available); empty clusters never survive.
- :func:`pic` is the Power Iteration Clustering variant of the original code (thesis §4.6).
"""

from __future__ import annotations

import numpy as np
import torch

from dcbench.errors import UserError
from dcbench.knn_graph import knn


# ---------------------------------------------------------------------------------------------
# PCA-whitening
def top_eigh(a: np.ndarray, dim: int, oversample: int = 64, tol: float = 1e-12, max_iter: int = 300,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``dim`` eigenpairs (descending) of a symmetric PSD matrix, float64.

    Block subspace iteration with Rayleigh-Ritz (BLAS-3 matrix products only) until the Ritz
    values settle, for ``dim`` well below the size; otherwise LAPACK syevr on the wanted range.
    A full tridiagonalisation of a 4096 x 4096 matrix is what makes faiss.PCAMatrix slow.
    """
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    d = a.shape[0]
    b = min(d, dim + oversample)
    if 2 * b >= d or d <= 2048:
        with threadpool_limits(1):  # LAPACK's tridiagonalisation does not scale; oversubscription hurts
            w, v = scipy.linalg.eigh(a, subset_by_index=[d - dim, d - 1], driver="evr", check_finite=False)
        return w[::-1].copy(), v[:, ::-1].copy()
    at = torch.from_numpy(np.ascontiguousarray(a))
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, b, generator=g, dtype=torch.float64))
    prev = None
    for _ in range(max_iter):
        z = at @ q
        t = q.T @ z
        w, u = torch.linalg.eigh((t + t.T) / 2)
        top = w[-dim:]
        if prev is not None and float((top - prev).abs().max()) <= tol * float(w[-1].abs()):
            break
        prev = top
        q, _ = torch.linalg.qr(z)
    v = q @ u[:, -dim:]
    return w[-dim:].flip(0).numpy().copy(), v.flip(1).numpy().copy()


def pca_fit(x: np.ndarray, dim: int, eigen_power: float = -0.5, chunk: int = 16384):
    """Mean (d,), projection (d, dim) float32 and eigenvalues (dim,), descending, like faiss.PCAMatrix."""

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    dim = min(dim, d)
    mean = x.mean(axis=0, dtype=np.float64)
    mean32 = mean.astype(np.float32)
    if n >= d:
        # Covariance (1/n) Xc^T Xc: symmetric rank-k updates (BLAS ssyrk, half a GEMM) per block.
        from scipy.linalg import blas

        cov32 = np.zeros((d, d), dtype=np.float32, order="F")
        for s in range(0, n, chunk):
            xc = x[s:s + chunk] - mean32
            cov32 = blas.ssyrk(1.0, xc.T, trans=0, beta=1.0, c=cov32, overwrite_c=1)
        cov = np.triu(cov32).astype(np.float64)
        cov = cov + np.triu(cov, 1).T
        cov /= n
        w, v = top_eigh(cov, dim)
    else:
        # Fewer points than dimensions: eigenvectors of the Gram matrix (what faiss does too).
        xc = torch.from_numpy(x) - torch.from_numpy(mean32)
        gram = (xc @ xc.T).double().numpy() / n
        dim = min(dim, n)
        w, u = top_eigh(gram, dim)
        v = (xc.T.double().numpy() @ u)
        norms = np.linalg.norm(v, axis=0)
        v = v / np.maximum(norms, 1e-30)
    w = np.maximum(w, w[0] * 1e-12 if w[0] > 0 else 1e-30)
    proj = (v * (w ** eigen_power)[None, :]).astype(np.float32)
    return mean32, np.ascontiguousarray(proj), w


def pca_apply(x: np.ndarray, mean: np.ndarray, proj: np.ndarray, normalise: bool = True) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y = (xt - torch.from_numpy(mean)) @ torch.from_numpy(proj)
    if normalise:
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return y.numpy()


def pca_whiten(x: np.ndarray, dim: int = 256, eigen_power: float = -0.5) -> np.ndarray:
    """PCA-whitening to ``dim`` dims (eigenvalues to ``eigen_power``) then L2 normalisation.

    ``dim`` is clamped to the rank available (n - 1 for n points, d): tiny smoke sets stay valid.
    """
    n, d = x.shape
    dim = max(1, min(dim, d, n - 1 if n > 1 else 1))
    mean, proj, _ = pca_fit(x, dim, eigen_power)
    return pca_apply(x, mean, proj)


def faiss_pca_whiten(x: np.ndarray, dim: int = 256, eigen_power: float = -0.5) -> np.ndarray:
    """The original recipe: faiss.PCAMatrix then L2 normalisation (for benchmarks and tests)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    mat = faiss.PCAMatrix(x.shape[1], dim, eigen_power)
    mat.train(x)
    y = mat.apply_py(x)
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)


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

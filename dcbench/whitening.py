"""PCA-whitening followed by L2 normalisation: DeepCluster's descriptor step, in one place.

The trainer whitens the features it clusters with it (``dcbench.train.clustering`` re-exports
these names) and the knn-graph task whitens its descriptors with the same function, so "the
clustering features" means the same thing in both.

- :func:`pca_whiten` spans the same subspace as ``faiss.PCAMatrix(d, dim, -0.5)`` (same centring,
  same covariance normalisation, same eigenvalue scaling) and then L2-normalises rows, as the
  original code does. It is faster than faiss's: the covariance is one multi-threaded BLAS product
  (symmetric rank-k update) and only the top ``dim`` eigenpairs are computed (LAPACK ``syevr``).
"""

from __future__ import annotations

import numpy as np
import torch


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


def variance_shares(eigenvalues, total: float) -> list[float]:
    """Cumulative share of the total variance kept by the top-k eigenvalues, k = 1..len (thesis
    Figure 4.3): non-decreasing, in [0, 1]. ``total`` is the trace of the covariance (all of them)."""
    w = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    if not (total > 0 and np.isfinite(total)):
        return []
    return [round(float(v), 6) for v in np.minimum(np.maximum.accumulate(np.cumsum(w) / total), 1.0)]


def pca_fit(x: np.ndarray, dim: int, eigen_power: float = -0.5, chunk: int = 16384, stats: dict | None = None):
    """Mean (d,), projection (d, dim) float32 and eigenvalues (dim,), descending, like faiss.PCAMatrix.

    ``stats``, when given, receives ``pca_variance``: :func:`variance_shares` of the eigenvalues."""

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
        total = float(np.trace(cov))
        w, v = top_eigh(cov, dim)
    else:
        # Fewer points than dimensions: eigenvectors of the Gram matrix (what faiss does too).
        xc = torch.from_numpy(x) - torch.from_numpy(mean32)
        gram = (xc @ xc.T).double().numpy() / n
        total = float(np.trace(gram))
        dim = min(dim, n)
        w, u = top_eigh(gram, dim)
        v = (xc.T.double().numpy() @ u)
        norms = np.linalg.norm(v, axis=0)
        v = v / np.maximum(norms, 1e-30)
    if stats is not None:
        stats["pca_variance"] = variance_shares(w, total)
    w = np.maximum(w, w[0] * 1e-12 if w[0] > 0 else 1e-30)
    proj = (v * (w ** eigen_power)[None, :]).astype(np.float32)
    return mean32, np.ascontiguousarray(proj), w


def pca_apply(x: np.ndarray, mean: np.ndarray, proj: np.ndarray, normalise: bool = True) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y = (xt - torch.from_numpy(mean)) @ torch.from_numpy(proj)
    if normalise:
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return y.numpy()


def pca_whiten(x: np.ndarray, dim: int = 256, eigen_power: float = -0.5, stats: dict | None = None) -> np.ndarray:
    """PCA-whitening to ``dim`` dims (eigenvalues to ``eigen_power``) then L2 normalisation.

    ``dim`` is clamped to the rank available (n - 1 for n points, d): tiny smoke sets stay valid.
    ``stats``, when given, receives the spectrum (``pca_variance``, see :func:`pca_fit`).
    """
    n, d = x.shape
    dim = max(1, min(dim, d, n - 1 if n > 1 else 1))
    mean, proj, _ = pca_fit(x, dim, eigen_power, stats=stats)
    return pca_apply(x, mean, proj)


def faiss_pca_whiten(x: np.ndarray, dim: int = 256, eigen_power: float = -0.5) -> np.ndarray:
    """The original recipe: faiss.PCAMatrix then L2 normalisation (for benchmarks and tests)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    mat = faiss.PCAMatrix(x.shape[1], dim, eigen_power)
    mat.train(x)
    y = mat.apply_py(x)
    return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

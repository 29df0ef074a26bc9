"""Our PCA-whitening and clustering stage vs the original DeepCluster recipe, on the same features.

    nice .venv/bin/python benchmarks/pca_clustering_vs_faiss.py --n 100000 --d 4096 --k 1000

Features: by default synthetic with a decaying spectrum (distinct eigenvalues, so the eigenvectors -
and hence the comparison up to sign - are well defined), float32. Reports:
- PCA-whitening (256 dims, eigen power -0.5, then L2): ours vs faiss.PCAMatrix — seconds, and the max
  absolute difference of the whitened, normalised outputs after matching each component's sign;
  also the max deviation between the two 256-dim subspaces' projectors.
- The whole clustering stage: ours (pca_whiten + faiss k-means, niter 20, empty clusters refilled)
  vs the original (faiss.PCAMatrix + faiss.Clustering niter 20, max_points_per_centroid 10M) —
  seconds, NMI between the two assignments, number of empty clusters.
Writes benchmarks/out/pca_clustering_vs_faiss.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/out/pca_clustering_vs_faiss.json")
    args = ap.parse_args()

    import faiss

    from dcbench.provenance import environment
    from dcbench.train.clustering import (
        faiss_pca_whiten,
        fill_empty_clusters,
        kmeans,
        pca_apply,
        pca_fit,
        pca_whiten,
    )
    from dcbench.train.metrics import nmi

    rng = np.random.default_rng(args.seed)
    # Low-rank structure + isotropic noise, with a clearly decaying spectrum, like fc7 features.
    r = min(512, args.d)
    basis = np.linalg.qr(rng.standard_normal((args.d, r)))[0].astype(np.float32)
    coef = (rng.standard_normal((args.n, r)) * np.geomspace(20, 0.5, r)).astype(np.float32)
    x = coef @ basis.T
    x += 0.1 * rng.standard_normal((args.n, args.d), dtype=np.float32)
    x += rng.standard_normal(args.d).astype(np.float32)  # a non-zero mean to centre
    del coef
    print(f"features {x.shape}, {x.nbytes / 2**30:.2f} GiB; torch threads {torch.get_num_threads()}, "
          f"faiss threads {faiss.omp_get_max_threads()}", flush=True)

    t = time.perf_counter()
    mean, proj, _ = pca_fit(x, args.dim)
    ours = pca_apply(x, mean, proj)
    t_ours = time.perf_counter() - t
    print(f"ours PCA {t_ours:.1f}s", flush=True)

    t = time.perf_counter()
    mat = faiss.PCAMatrix(args.d, args.dim, -0.5)
    mat.train(x)
    theirs = mat.apply_py(x)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    t_faiss = time.perf_counter() - t
    print(f"faiss PCAMatrix {t_faiss:.1f}s", flush=True)

    sign = np.sign((ours * theirs).sum(axis=0))
    maxdiff = float(np.abs(ours * sign - theirs).max())
    qa = np.linalg.qr(proj.astype(np.float64))[0]
    qb = np.linalg.qr(faiss.vector_to_array(mat.PCAMat).reshape(-1, args.d)[: args.dim].T.astype(np.float64))[0]
    subspace_dev = float(np.abs(qa @ qa.T - qb @ qb.T).max())
    print(f"max |diff| whitened+normalised (up to sign) {maxdiff:.2e}; projector deviation {subspace_dev:.2e}",
          flush=True)

    # ---- whole clustering stage
    t = time.perf_counter()
    lab_ours, _ = kmeans(pca_whiten(x, args.dim), args.k, niter=20, seed=args.seed)
    t_stage_ours = time.perf_counter() - t
    print(f"ours stage {t_stage_ours:.1f}s", flush=True)

    t = time.perf_counter()
    y = faiss_pca_whiten(x, args.dim)  # faiss.PCAMatrix(d, dim, -0.5), trained here, then L2
    clus = faiss.Clustering(args.dim, args.k)
    clus.seed = args.seed
    clus.niter = 20
    clus.max_points_per_centroid = 10_000_000
    index = faiss.IndexFlatL2(args.dim)
    clus.train(y, index)
    _, idx = index.search(y, 1)
    lab_orig = idx[:, 0]
    t_stage_orig = time.perf_counter() - t
    empty_orig = int((np.bincount(lab_orig, minlength=args.k) == 0).sum())
    print(f"original stage {t_stage_orig:.1f}s", flush=True)
    assert (np.bincount(fill_empty_clusters(y, lab_orig, args.k, rng), minlength=args.k) > 0).all()

    res = {
        "benchmark": "pca_clustering_vs_faiss",
        "data": {"n": args.n, "d": args.d, "kind": "synthetic, rank-512 decaying spectrum + noise", "seed": args.seed},
        "pca": {"dim": args.dim, "eigen_power": -0.5, "ours_s": round(t_ours, 2), "faiss_PCAMatrix_s": round(t_faiss, 2),
                "speedup": round(t_faiss / t_ours, 2), "max_abs_diff_whitened_normalised_up_to_sign": maxdiff,
                "projector_max_deviation": subspace_dev},
        "clustering_stage": {"k": args.k, "niter": 20, "ours_s": round(t_stage_ours, 2),
                             "original_s": round(t_stage_orig, 2), "nmi_ours_vs_original": nmi(lab_ours, lab_orig),
                             "empty_clusters_ours": int((np.bincount(lab_ours, minlength=args.k) == 0).sum()),
                             "empty_clusters_original": empty_orig},
        "environment": environment(),
        "note": "2 shared CPU cores, other jobs running: absolute times are noisy; both sides ran in the same process",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: res[k] for k in ("pca", "clustering_stage")}, indent=2))


if __name__ == "__main__":
    main()

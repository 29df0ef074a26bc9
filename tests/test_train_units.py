"""dc-train building blocks: PCA-whitening vs faiss, k-means without empty clusters, PIC, sampler, config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcbench.errors import UserError
from dcbench.knn_graph import ratio_edge_intra_class
from dcbench.train import clustering as C
from dcbench.train import sampler as S
from dcbench.train.config import PRESETS, make_config
from dcbench.train.metrics import cluster_stats


def _spectrum_data(n=2000, d=256, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.05, d)  # distinct eigenvalues: the eigenvectors are well defined
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return ((rng.standard_normal((n, d)) * scales) @ q.T + 3.0).astype(np.float32)


@pytest.mark.parametrize("n", [2000, 120])  # n >= d (covariance) and n < d (Gram matrix)
def test_pca_whitening_matches_faiss(n):
    faiss = pytest.importorskip("faiss")
    x = _spectrum_data(n=n)
    dim = 32
    ours = C.pca_whiten(x, dim)
    mat = faiss.PCAMatrix(x.shape[1], dim, -0.5)
    mat.train(x)
    theirs = mat.apply_py(x)
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    # Same subspace: the projector onto our components equals faiss's.
    mean, proj, _ = C.pca_fit(x, dim)
    qa, _ = np.linalg.qr(proj.astype(np.float64))
    qb, _ = np.linalg.qr(faiss.vector_to_array(mat.PCAMat).reshape(-1, x.shape[1])[:dim].T.astype(np.float64))
    assert np.abs(qa @ qa.T - qb @ qb.T).max() < 1e-3
    # Same whitened, normalised output up to the sign of each component.
    sign = np.sign((ours * theirs).sum(axis=0))
    assert np.abs(ours * sign - theirs).max() < 1e-3
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_pca_whiten_clamps_dim_to_rank():
    x = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    y = C.pca_whiten(x, 256)
    assert y.shape == (10, 9) and np.isfinite(y).all()


def test_kmeans_never_leaves_a_cluster_empty():
    rng = np.random.default_rng(0)
    # 3 tight blobs asked for 12 clusters, several duplicated points: faiss alone can leave empties.
    x = np.concatenate([rng.normal(c, 0.01, (40, 8)) for c in (0, 5, 10)]).astype(np.float32)
    x[:30] = x[0]
    labels, _ = C.kmeans(x, 12, seed=3)
    assert labels.shape == (120,)
    assert (np.bincount(labels, minlength=12) > 0).all()


def test_fill_empty_clusters_splits_a_donor():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    labels = np.array([0] * 6 + [1] * 4)
    out = C.fill_empty_clusters(x, labels, 4, np.random.default_rng(0))
    counts = np.bincount(out, minlength=4)
    assert (counts > 0).all() and counts.sum() == 10


def test_kmeans_on_few_points_per_centroid_prints_no_faiss_warning(capfd):
    x = np.random.default_rng(0).standard_normal((600, 32)).astype(np.float32)   # the smoke run's shape
    labels, _ = C.kmeans(x, 50, seed=3, use_gpu=False)
    assert labels.shape == (600,)
    assert "WARNING" not in capfd.readouterr().err


def test_kmeans_fewer_images_than_clusters_is_a_user_error():
    with pytest.raises(UserError, match="at least as many images as clusters"):
        C.kmeans(np.zeros((5, 4), np.float32), 10)


def test_pic_known_answer_two_components():
    # Two 4-cliques joined by nothing: each node's neighbours are the other 3 of its clique.
    idx = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2],
                    [5, 6, 7], [4, 6, 7], [4, 5, 7], [4, 5, 6]])
    dist = np.full(idx.shape, 0.01, dtype=np.float32)
    dist[0] = [0.001, 0.002, 0.003]  # nodes 0 and 4 are the most central of their cliques
    dist[4] = [0.001, 0.002, 0.003]
    labels = C.pic_from_graph(idx, dist, sigma=0.2, alpha=0.001, n_iter=50)
    assert len(set(labels[:4])) == 1 and len(set(labels[4:])) == 1 and labels[0] != labels[4]


def test_pic_moves_singletons_to_nearest_non_singleton_cluster():
    # Node 4 is only ever a neighbour of itself (its neighbours don't point back) and sits lower than
    # them in v: it points to its best neighbour anyway. Force a singleton by a graph with no edges
    # into node 4 and zero affinity out of it (huge distance), then check redistribution.
    idx = np.array([[1, 2], [0, 2], [0, 1], [0, 1], [3, 0]])
    dist = np.array([[.01, .01], [.01, .01], [.01, .01], [.01, .01], [1e6, 1e6]], dtype=np.float32)
    kept = C.pic_from_graph(idx, dist, distribute_singletons=False, n_iter=20)
    moved = C.pic_from_graph(idx, dist, distribute_singletons=True, n_iter=20)
    assert np.bincount(kept).min() == 1  # node 4 alone without the heuristic
    assert np.bincount(moved).min() > 1 and moved[4] == moved[3]


def test_pic_on_points_separates_blobs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.02, (30, 4)), rng.normal(3, 0.02, (30, 4))]).astype(np.float32)
    labels = C.pic(x, nnn=5, sigma=0.2)
    assert set(labels[:30]).isdisjoint(set(labels[30:]))


def test_uniform_sampler_counts_are_uniform_over_clusters():
    # Very unbalanced clusters: 1000, 100, 10, 1 images (plus -1 = unreadable, never drawn).
    labels = np.concatenate([np.full(1000, 0), np.full(100, 1), np.full(10, 2), np.full(1, 3), [-1, -1]])
    n = 40_000
    pos = S.uniform_over_clusters(labels, n, np.random.default_rng(0))
    counts = np.bincount(labels[pos], minlength=4)
    assert (labels[pos] >= 0).all()
    # Binomial(n, 1/4): 5 standard deviations.
    sd = math.sqrt(n * 0.25 * 0.75)
    assert np.abs(counts - n / 4).max() < 5 * sd
    # Within a cluster, images are drawn uniformly too.
    inner = np.bincount(pos[labels[pos] == 1], minlength=1100)[1000:1100]
    assert inner.min() > 0


def test_proportional_sampler_follows_cluster_sizes():
    labels = np.concatenate([np.full(900, 0), np.full(100, 1)])
    pos = S.draw("proportional", labels, 20_000, np.random.default_rng(0))
    share = (labels[pos] == 1).mean()
    assert abs(share - 0.1) < 0.01


def test_sampler_is_reproducible():
    labels = np.random.default_rng(0).integers(0, 7, 500)
    a = S.draw("uniform", labels, 100, np.random.default_rng(5))
    b = S.draw("uniform", labels, 100, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_ratio_edge_intra_class():
    nbrs = np.array([[1], [0], [3], [0]])
    labels = np.array([0, 0, 1, 1])
    # class 0: both edges intra (1.0); class 1: 2->3 intra, 3->0 not (0.5)
    assert ratio_edge_intra_class(nbrs, labels) == {0: pytest.approx(1.0), 1: pytest.approx(0.5)}


def test_cluster_stats():
    s = cluster_stats(np.array([0, 0, 0, 2]))
    assert s["num_clusters"] == 3 and s["empty"] == 1 and s["size_max"] == 3 and s["singletons"] == 1


@pytest.mark.parametrize("name", [n for n in PRESETS if not n.endswith("-R101")])  # Table 5.1's five
def test_presets_full_scale_follow_the_thesis(name):
    cfg = make_config(name, "full")
    assert cfg.batch_size == 256 and cfg.momentum == 0.9 and cfg.input_size == 224 and cfg.pca_dim == 256
    assert cfg.kmeans_iters == 20
    yfcc = "fl" in name
    assert cfg.epochs == (167 if yfcc else 500)
    # every model gets ImageNet's 500 x 5,004 = 2.502M updates (YFCC: 167 longer epochs), within 10 steps
    steps = cfg.steps_per_epoch if yfcc else cfg.epoch_multiplier * 1_281_167 // cfg.batch_size
    assert abs(cfg.epochs * steps - 500 * 5_004) <= 10
    table = {"PIC-ImNet-Sob": ("pic", True, 0.05, 1e-5), "km-ImNet-Sob": ("kmeans", True, 0.02, 1e-5),
             "km-ImNet-RGB": ("kmeans", False, 0.02, 1e-6), "km-fl1M-Sob": ("kmeans", True, 0.02, 1e-5),
             "km-fl2M-Sob": ("kmeans", True, 0.02, 1e-5)}[name]
    assert (cfg.clustering, cfg.sobel, cfg.lr, cfg.weight_decay) == table
    if cfg.clustering == "kmeans":
        assert cfg.k == (1000 if name == "km-ImNet-RGB" else 10_000)


@pytest.mark.parametrize("name,sobel", [("PIC-ImNet-Sob-R101", True), ("PIC-ImNet-RGB-R101", False)])
def test_resnet101_presets_follow_thesis_section_4_5(name, sobel):
    cfg = make_config(name, "full")  # Figure 4.6: ResNet-101, PIC, ImageNet, 50 epochs, (a) Sobel / (b) RGB
    assert (cfg.arch, cfg.clustering, cfg.epochs, cfg.sobel) == ("resnet101", "pic", 50, sobel)
    assert (cfg.lr, cfg.weight_decay) == (0.05, 1e-5)  # not in the thesis: PIC-ImNet-Sob's (our choice)
    assert make_config(name, "smoke").arch == "resnet101"


def test_presets_table_matches_reference_csv():
    import csv
    from pathlib import Path

    ref = Path("/work/shared/reference/thesis_presets.csv")
    if not ref.is_file():
        pytest.skip("reference table not available")
    rows = [r for r in csv.DictReader(line for line in ref.read_text().splitlines() if not line.startswith("#"))]
    for r in rows:
        cfg = make_config(r["model"], "full")
        assert cfg.lr == float(r["lr"]) and cfg.weight_decay == float(r["wd"])
        assert cfg.sobel == (r["sobel"] == "yes")


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="--epochs"):
        make_config("km-ImNet-Sob", "smoke", epochs=0)
    with pytest.raises(UserError, match="preset"):
        make_config("nope", "smoke")

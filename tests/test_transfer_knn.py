"""dc-transfer knn: the weighted k-NN rule against a brute-force NumPy version, chunking, the
bank-size error, the features it reads, and one end-to-end run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.tasks import registry
from dcbench.transfer import knn, linear_probe
from dcbench.transfer.cli import main

T = 0.07


# --------------------------------------------------------------------------------------------
# The reference: every query against every bank row, sorted in plain Python


def brute_force(bank, bank_labels, queries, k, temperature, n_classes):
    """(neighbour indices, their similarities, class scores, classes ranked) per query, by the rule
    written out: cosine similarity, ties to the lower index, exp(s/T) votes summed in neighbour order,
    classes by score then index."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for row in q.astype(np.float32) @ b.astype(np.float32).T:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        sims = row[order]
        weights = np.exp(sims.astype(np.float64) / temperature)
        scores = np.zeros(n_classes)
        for j, w in zip(order, weights):
            scores[bank_labels[j]] += w
        ranked = sorted(range(n_classes), key=lambda c: (-scores[c], c))
        out.append((order, sims, scores, ranked))
    return out


def lattice(rng, n, dim=16, nonzero=4):
    """Rows with ``nonzero`` entries of +-0.5 (unit length), scaled by a power of two: every norm,
    division and dot product is exact in float32, so any summation order gives the same bits, and
    similarities tie often (multiples of 1/4)."""
    x = np.zeros((n, dim), np.float32)
    for i in range(n):
        x[i, rng.choice(dim, nonzero, replace=False)] = rng.choice([-0.5, 0.5], nonzero)
    return x * (2.0 ** rng.integers(-2, 3, size=(n, 1))).astype(np.float32)


def task_knn(bank, bank_labels, queries, k, temperature, n_classes, chunk):
    sims, idx = knn.nearest(knn.normalised(bank, torch.float32, "cpu"), queries, k, chunk)
    scores = knn.class_scores(sims, idx, bank_labels, k, temperature, n_classes)
    return sims, idx, scores, knn.ranked_classes(scores)


@pytest.mark.parametrize("k", [1, 3, 8, 40, 60])
def test_knn_equals_brute_force_exactly_on_tied_data(k):
    rng = np.random.default_rng(k)
    bank, queries = lattice(rng, 60), lattice(rng, 25)
    labels = rng.integers(0, 6, 60)
    sims, idx, scores, ranked = task_knn(bank, labels, queries, k, T, 6, chunk=7)
    ref = brute_force(bank, labels, queries, k, T, 6)
    ties = 0
    for i, (order, rsims, rscores, rranked) in enumerate(ref):
        assert idx[i].tolist() == order
        assert np.array_equal(sims[i], rsims)
        assert np.array_equal(scores[i], rscores)  # same votes, same float64 sums, bit for bit
        assert ranked[i].tolist() == rranked
        ties += len(rsims) != len(set(rsims.tolist()))
    assert k == 1 or ties > 0  # the data really exercise the tie rule


def test_knn_equals_brute_force_on_gaussian_features():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((300, 32)).astype(np.float32)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 300)
    k = 20
    sims, idx, scores, ranked = task_knn(bank, labels, queries, k, T, 10, chunk=16)
    for i, (order, rsims, rscores, rranked) in enumerate(brute_force(bank, labels, queries, k, T, 10)):
        assert idx[i].tolist() == order
        assert ranked[i].tolist() == rranked
        # torch's and NumPy's matmuls may sum the 32 products in other orders: last-bit differences
        np.testing.assert_allclose(sims[i], rsims, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(scores[i], rscores, rtol=1e-4)


def test_smaller_k_are_prefixes_of_one_search():
    rng = np.random.default_rng(3)
    bank, queries = lattice(rng, 80), lattice(rng, 30)
    labels = rng.integers(0, 5, 80)
    sims, idx = knn.nearest(knn.normalised(bank, torch.float32, "cpu"), queries, 50, chunk=9)
    acc = knn.knn_accuracy(sims, idx, labels, labels[:30], [5, 20, 50], T, 5)
    for k in (5, 20, 50):
        s_k, i_k = knn.nearest(knn.normalised(bank, torch.float32, "cpu"), queries, k, chunk=9)
        assert np.array_equal(i_k, idx[:, :k]) and np.array_equal(s_k, sims[:, :k])
        assert knn.knn_accuracy(s_k, i_k, labels, labels[:30], [k], T, 5)[k] == acc[k]


@pytest.mark.parametrize("data", ["lattice", "gaussian"])
def test_chunked_search_equals_unchunked(data):
    rng = np.random.default_rng(7)
    if data == "lattice":
        bank, queries = lattice(rng, 90), lattice(rng, 33)
    else:
        bank = rng.standard_normal((90, 24)).astype(np.float32)
        queries = rng.standard_normal((33, 24)).astype(np.float32)
    labels = rng.integers(0, 4, 90)
    b = knn.normalised(bank, torch.float32, "cpu")
    whole = knn.nearest(b, queries, 30, chunk=len(queries))
    acc = knn.knn_accuracy(*whole, labels, labels[:33], [10, 30], T, 4)
    for chunk in (1, 5, 32):
        part = knn.nearest(b, queries, 30, chunk=chunk)
        assert np.array_equal(part[1], whole[1])  # the same neighbours, in the same order
        if data == "lattice":  # exact similarities: bit-identical
            assert np.array_equal(part[0], whole[0])
        else:  # BLAS sums a row's products in an order that depends on the block's row count
            np.testing.assert_allclose(part[0], whole[0], rtol=1e-6)
        assert knn.knn_accuracy(*part, labels, labels[:33], [10, 30], T, 4, chunk=chunk) == acc


def test_tied_neighbours_keep_the_lowest_indices():
    # five identical bank rows, k = 3 cuts through the tie: rows 1, 2, 4 of them, in that order
    bank = np.array([[0, 1], [1, 0], [1, 0], [0, -1], [1, 0], [1, 0], [1, 0]], np.float32)
    sims, idx = knn.nearest(knn.normalised(bank, torch.float32, "cpu"), np.array([[1, 0]], np.float32), 3, 1)
    assert idx.tolist() == [[1, 2, 4]] and sims.tolist() == [[1.0, 1.0, 1.0]]
    # two classes with equal scores: the lower class index ranks first
    scores = knn.class_scores(np.array([[0.5, 0.5]], np.float32), np.array([[1, 0]]), np.array([3, 1]), 2, T, 4)
    assert knn.ranked_classes(scores)[0].tolist() == [1, 3, 0, 2]


def test_top5_counts_among_min_5_and_k():
    # the label is the second-best class: top-5 hit for k >= 2, but with k = 1 only one class is voted
    bank = np.array([[1, 0], [0.9, 0.1], [-1, 0]], np.float32)
    sims, idx = knn.nearest(knn.normalised(bank, torch.float32, "cpu"), np.array([[1, 0]], np.float32), 3, 1)
    acc = knn.knn_accuracy(sims, idx, np.array([0, 1, 2]), np.array([1]), [1, 2, 3], T, 3)
    assert acc == {1: (0.0, 0.0), 2: (0.0, 100.0), 3: (0.0, 100.0)}


def test_metric_names_fit_the_declared_pattern():
    pattern = registry()["knn"].metrics
    for name in ("desc_k20_top1", "conv5_k200_top5", "res5_k10_top1"):
        assert re.fullmatch(pattern, name)
    assert not re.fullmatch(pattern, "desc_k0_top1") and not re.fullmatch(pattern, "desc_k20_top3")


# --------------------------------------------------------------------------------------------
# The features: the descriptor and the probes' pooled last tap, from one forward


@pytest.mark.parametrize("arch,sobel,batchnorm,size", [
    ("alexnet", True, True, 64), ("alexnet", False, False, 64), ("vgg16", True, True, 32), ("resnet50", True, True, 64)])
def test_forward_gives_the_descriptor_and_the_probe_tap(arch, sobel, batchnorm, size, one_thread):
    model = build_model(arch, sobel=sobel, batchnorm=batchnorm, input_size=size, seed=0).eval()
    tap = linear_probe.layer_names(arch)[4]
    pool = next(p for p in linear_probe.pooling_for(arch, size) if p.layer == tap)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        desc, conv = knn.make_forward(model, pool)(x)
        assert torch.equal(desc, model.penultimate(x))
        assert torch.equal(conv, linear_probe.make_forward(model, [pool], (tap,))(x)[0])
    assert conv.shape == (2, pool.dim)


# --------------------------------------------------------------------------------------------
# dc-transfer knn


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


@pytest.fixture(scope="module")
def tiny_split_tree(tmp_path_factory, tiny_class_tree) -> Path:
    """train/ (4 classes x 6 images) and val/ (4 x 3) drawn by the embedded-data generator."""
    root = tmp_path_factory.mktemp("knn-data")
    tiny_class_tree(root / "train", per_class=6)
    tiny_class_tree(root / "val", per_class=3)
    return root


def _argv(ckpt, data, tmp_path, *extra):
    return [str(a) for a in ("knn", "--checkpoint", ckpt, "--data", data, "--out", tmp_path / "res",
                             "--scale", "smoke", "--device", "cpu", "--workers", "0",
                             "--cache-dir", tmp_path / "cache", *extra)]


def test_k_larger_than_the_bank_is_one_line_and_writes_nothing(ckpt64, tiny_split_tree, tmp_path, capsys):
    code = run_cli(main, _argv(ckpt64, tiny_split_tree, tmp_path))  # smoke default k = 10,20,100,200
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--k 10,20,100,200" in err and "has 24 images" in err and "k = 200" in err
    assert not (tmp_path / "res").exists() and not (tmp_path / "cache").exists()


def test_bad_k_list_is_one_line(ckpt64, tiny_split_tree, tmp_path, capsys):
    code = run_cli(main, _argv(ckpt64, tiny_split_tree, tmp_path, "--k", "5,x"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--k 5,x" in err


def test_end_to_end_writes_a_schema_valid_result(ckpt64, tiny_split_tree, tmp_path, capsys, one_thread):
    argv = _argv(ckpt64, tiny_split_tree, tmp_path, "--k", "3,10,24", "--chunk", "5")
    assert run_cli(main, argv) == 0
    files = sorted((tmp_path / "res").glob("knn__*.json"))
    assert len(files) == 1
    result = read_result(files[0])  # validates against the schema and the task's metric pattern
    expected = {f"{f}_k{k}_top{t}" for f in ("desc", "conv5") for k in (3, 10, 24) for t in (1, 5)}
    assert set(result["metrics"]) == expected
    m = result["metrics"]
    for f in ("desc", "conv5"):
        for k in (3, 10, 24):
            assert 0 <= m[f"{f}_k{k}_top1"] <= m[f"{f}_k{k}_top5"] <= 100
            # 12 queries: every accuracy is a whole number of them
            assert abs(m[f"{f}_k{k}_top1"] * 12 / 100 - round(m[f"{f}_k{k}_top1"] * 12 / 100)) < 1e-9
    assert result["data"]["sizes"] == {"train": 24, "val": 12}
    assert result["protocol"]["k"] == "3,10,24" and result["protocol"]["temperature"] == 0.07
    assert result["protocol"]["feature_dims"]["desc"] == 4096
    assert result["details"]["feature_cache_hit"] is False
    # the same run again (into another folder: result names are stamped to the second): features from
    # the cache, the same numbers
    argv[argv.index("--out") + 1] = str(tmp_path / "res2")
    assert run_cli(main, argv) == 0
    again = [read_result(f) for f in sorted((tmp_path / "res2").glob("knn__*.json"))]
    assert len(again) == 1 and again[0]["metrics"] == m and again[0]["details"]["feature_cache_hit"] is True


def test_leaderboard_table_is_laid_out_by_the_metric_names():
    from dcbench.leaderboard import tables

    names = {f"{f}_k{k}_top{t}" for f in ("desc", "conv5") for k in (10, 20, 100, 200) for t in (1, 5)}
    spec = tables.knn_classification_spec(names)
    assert spec.key == "knn" and registry()["knn"].table == "knn"
    assert [c.metric for c in spec.columns][:5] == ["desc_k10_top1", "desc_k10_top5", "desc_k20_top1",
                                                  "desc_k20_top5", "desc_k100_top1"]
    assert [c.metric for c in spec.columns][8] == "conv5_k10_top1" and len(spec.columns) == 16
    assert tables.knn_classification_spec({"res5_k20_top1"}, "resnet").key == "resnet-knn"

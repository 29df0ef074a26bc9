"""voc07-svm and lowshot-svm: the SVM protocol against a plain scikit-learn loop, the low-shot draws,
a dead tap's one-line error, and both tasks end to end on the embedded VOCdevkit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.transfer.cli import main
from dcbench.transfer.linear_svm import draw, interpolated_ap, lowshot_svm, normalise, voc07_svm
from dcbench.transfer.voc_eval import voc07_ap

COSTS = (0.01, 0.1, 1.0, 10.0)


def _data(seed: int, n: int, d: int = 24, classes: int = 3):
    """Features with a class signal, labels 1 / -1 and a few 0 (difficult only)."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.random((n, classes)) < 0.3, 1, -1).astype(np.int8)
    y[rng.random((n, classes)) < 0.06] = 0
    x = rng.normal(size=(n, d)) + 1.5 * (y > 0).astype(float) @ rng.normal(size=(classes, d))
    return np.abs(x).astype(np.float32), y


def _plain_ap(scores, labels) -> float:
    """The published rule, written out: precision envelope over the ranked non-difficult images."""
    keep = labels != 0
    s, pos = scores[keep], labels[keep] > 0
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(pos[order])
    rec, prec = tp / pos.sum(), tp / np.arange(1, len(s) + 1)
    ap, prev = 0.0, 0.0
    for i in range(len(s)):
        if rec[i] > prev:
            ap += (rec[i] - prev) * prec[i:].max()
            prev = rec[i]
    return ap


def _plain_svm(cost):
    return LinearSVC(C=cost, class_weight={1: 2, -1: 1}, intercept_scaling=1.0, penalty="l2", loss="squared_hinge",
                     tol=1e-4, dual=True, max_iter=2000, random_state=0)


@pytest.mark.parametrize("difficult", ["negative", "ignore"])
def test_chosen_cost_and_map_equal_a_plain_sklearn_loop(difficult):
    xtr, ytr = _data(0, 90)
    xte, yte = _data(1, 60)
    xtr, xte = normalise(xtr), normalise(xte)
    got = voc07_svm(xtr, ytr, xte, yte, costs=COSTS, folds=3, seed=0, n_jobs=2, difficult=difficult)
    chosen, aps = [], []
    for c in range(ytr.shape[1]):
        keep = ytr[:, c] != 0 if difficult == "ignore" else np.ones(len(ytr), bool)
        x, y = xtr[keep], np.where(ytr[keep, c] > 0, 1, -1)
        cv = [cross_val_score(_plain_svm(k), x, y, cv=3, scoring="average_precision").mean() for k in COSTS]
        chosen.append(COSTS[int(np.argmax(cv))])
        np.testing.assert_allclose(got["cv"][c], cv, rtol=0, atol=1e-12)
        aps.append(_plain_ap(_plain_svm(chosen[-1]).fit(x, y).decision_function(xte), yte[:, c]))
    assert got["chosen"] == chosen
    assert got["map"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert len(set(chosen)) > 1 or len(set(np.argmax(got["cv"], axis=1))) == 1  # the sweep really chooses


def test_a_seed_gives_the_same_numbers_whatever_the_number_of_jobs():
    # liblinear's shuffling generator is process-wide: parallel fits must not share it
    xtr, ytr = _data(5, 300, d=64, classes=4)
    xte, yte = _data(6, 100, d=64, classes=4)
    xtr, xte = normalise(xtr), normalise(xte)
    one = voc07_svm(xtr, ytr, xte, yte, costs=COSTS, folds=3, seed=3, n_jobs=1)
    two = voc07_svm(xtr, ytr, xte, yte, costs=COSTS, folds=3, seed=3, n_jobs=2)
    assert one["map"] == two["map"] and one["chosen"] == two["chosen"]
    np.testing.assert_array_equal(one["cv"], two["cv"])
    a = lowshot_svm(xtr, ytr, xte, yte, shots=[2], draws=2, costs=COSTS, seed=3, n_jobs=1)
    b = lowshot_svm(xtr, ytr, xte, yte, shots=[2], draws=2, costs=COSTS, seed=3, n_jobs=2)
    np.testing.assert_array_equal(a["per_k"][2]["maps"], b["per_k"][2]["maps"])


def test_difficult_rule_changes_what_the_svm_trains_on():
    xtr, ytr = _data(0, 90)
    xte, yte = _data(1, 60)
    xtr, xte = normalise(xtr), normalise(xte)
    neg = voc07_svm(xtr, ytr, xte, yte, costs=(1.0,), folds=3, seed=0, n_jobs=1, difficult="negative")
    ign = voc07_svm(xtr, ytr, xte, yte, costs=(1.0,), folds=3, seed=0, n_jobs=1, difficult="ignore")
    assert not np.allclose(neg["cv"], ign["cv"])


def test_interpolated_ap_is_the_area_under_the_precision_envelope_and_11point_is_the_devkits():
    # ranking: positive, negative, positive -> recall .5 .5 1, precision 1 .5 2/3
    rec, prec = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    assert interpolated_ap(rec, prec) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert voc07_ap(rec, prec) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_map_with_11point_rule_uses_the_voc07_devkit_ap():
    xtr, ytr = _data(0, 90)
    xte, yte = _data(1, 60)
    xtr, xte = normalise(xtr), normalise(xte)
    a = voc07_svm(xtr, ytr, xte, yte, costs=(1.0,), folds=3, seed=0, n_jobs=1, ap_rule="11point")
    b = voc07_svm(xtr, ytr, xte, yte, costs=(1.0,), folds=3, seed=0, n_jobs=1, ap_rule="interpolated")
    assert a["chosen"] == b["chosen"] and a["map"] != b["map"]


def test_lowshot_draws_are_reproducible_from_the_seed_with_exactly_k_positives_per_class():
    _, y = _data(2, 400, classes=4)
    for k in (1, 2, 8):
        a, b, other = draw(y, k, 5, 0), draw(y, k, 5, 0), draw(y, k, 6, 0)
        assert all(np.array_equal(p, q) and np.array_equal(n, m) for (p, n), (q, m) in zip(a, b))
        assert any(not np.array_equal(p, q) for (p, _), (q, _) in zip(a, other))
        for c, (pos, neg) in enumerate(a):
            assert len(pos) == len(set(pos)) == k and (y[pos, c] == 1).all()
            assert len(neg) == len(set(neg)) == 3 * k and (y[neg, c] == -1).all()  # (classes - 1) * k, never difficult
    assert any(not np.array_equal(p, q) for (p, _), (q, _) in zip(draw(y, 2, 5, 0), draw(y, 2, 5, 1)))


def test_lowshot_statistics_are_over_the_draws_at_the_best_mean_cost():
    xtr, ytr = _data(3, 200, classes=3)
    xte, yte = _data(4, 80, classes=3)
    r = lowshot_svm(normalise(xtr), ytr, normalise(xte), yte, shots=[2, 4], draws=3, costs=COSTS, seed=0, n_jobs=2)
    for k in (2, 4):
        s = r["per_k"][k]
        assert s["maps"].shape == (3, len(COSTS))
        best = int(np.argmax(s["maps"].mean(0)))
        at = s["maps"][:, best]
        assert s["cost"] == COSTS[best]
        assert (s["mean"], s["min"], s["max"], s["std"]) == pytest.approx((at.mean(), at.min(), at.max(), at.std()))
    # one (k, draw, cost) redone by hand: every class trained on its drawn rows only
    full = [_plain_ap(_plain_svm(COSTS[0]).fit(normalise(xtr)[np.r_[p, n]], np.r_[np.ones(len(p)), -np.ones(len(n))])
                      .decision_function(normalise(xte)), yte[:, c]) for c, (p, n) in enumerate(r["drawn"][2][1])]
    assert r["per_k"][2]["maps"][1, 0] == pytest.approx(np.mean(full), abs=1e-12)


# --------------------------------------------------------------------------------------------
# End to end on the embedded VOCdevkit


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def _common(ckpt, data, tmp_path):
    return ["--checkpoint", ckpt, "--data", data, "--out", tmp_path / "res", "--scale", "smoke", "--device", "cpu",
            "--workers", "0", "--cache-dir", tmp_path / "cache", "--n-jobs", "2"]


def _run(argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    return code, capsys.readouterr()


def test_voc07_svm_end_to_end_writes_a_valid_result(ckpt64, embedded_root, tmp_path, capsys):
    code, _ = _run(["voc07-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv2,conv5",
                    "--costs", "0.1,1"], capsys)
    assert code == 0
    (path,) = (tmp_path / "res").glob("voc07-svm__*.json")
    r = read_result(path)  # schema-validated
    assert set(r["metrics"]) == {"conv2_map", "conv5_map"}
    assert all(0 < v <= 100 for v in r["metrics"].values())
    assert set(r["details"]["chosen_costs"]["conv5"].values()) <= {0.1, 1.0}
    assert r["data"]["sizes"] == {"trainval": 120, "test": 120}
    # a second run reads the features from the cache and gives the same numbers
    code, _ = _run(["voc07-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv2,conv5",
                    "--costs", "0.1,1", "--out", tmp_path / "res2"], capsys)
    (again,) = (tmp_path / "res2").glob("*.json")
    r2 = read_result(again)
    assert r2["details"]["feature_cache_hit"] and r2["metrics"] == r["metrics"]


def test_lowshot_svm_end_to_end_records_the_drawn_images(ckpt64, embedded_root, tmp_path, capsys):
    code, _ = _run(["lowshot-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv5",
                    "--costs", "0.1,1", "--shots", "1,2", "--draws", "2"], capsys)
    assert code == 0
    (path,) = (tmp_path / "res").glob("lowshot-svm__*.json")
    r = read_result(path)
    assert set(r["metrics"]) == {f"conv5_k{k}_{s}" for k in (1, 2) for s in ("mean", "min", "max", "std")}
    assert len(r["details"]["draws"]) == 4
    for rec in r["details"]["draws"]:
        f = tmp_path / "res" / rec["file"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == rec["sha256"]
        classes = json.loads(f.read_text())["classes"]
        assert len(classes) == 20 and all(len(v["positives"]) == rec["k"] and len(v["negatives"]) == 19 * rec["k"]
                                          for v in classes.values())


def test_resnet_taps_run_through_voc07_svm(embedded_root, tmp_path, capsys):
    ckpt = tmp_path / "r50"
    save_checkpoint(ckpt, build_model("resnet50", input_size=64, seed=0), origin="random")
    code, _ = _run(["voc07-svm", *_common(ckpt, embedded_root, tmp_path), "--layers", "res5_gap",
                    "--costs", "1"], capsys)
    assert code == 0
    (path,) = (tmp_path / "res").glob("*.json")
    r = read_result(path)
    assert list(r["metrics"]) == ["res5_gap_map"] and r["protocol"]["pooling"]["res5_gap"]["dim"] == 2048


@pytest.mark.parametrize("task", ["voc07-svm", "lowshot-svm"])
def test_all_zero_tap_is_one_line_naming_it_and_nothing_is_written(task, embedded_root, tmp_path, capsys):
    model = build_model("alexnet", sobel=True, input_size=64, seed=0)
    conv3 = [m for m in model.features if isinstance(m, torch.nn.Conv2d)][2]
    with torch.no_grad():
        conv3.weight.zero_()
        if conv3.bias is not None:
            conv3.bias.fill_(-1.0)
    bn3 = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)][2]
    with torch.no_grad():
        bn3.bias.fill_(-5.0)  # whatever the statistics, the ReLU after conv3 outputs 0
    ckpt = tmp_path / "dead3"
    save_checkpoint(ckpt, model, origin="random")
    code, out = _run([task, *_common(ckpt, embedded_root, tmp_path), "--layers", "conv1,conv3", "--costs", "1"]
                     + (["--shots", "1", "--draws", "1"] if task == "lowshot-svm" else []), capsys)
    assert code == 2
    assert out.err.count("\n") == 1 and "tap conv3" in out.err and "all-zero" in out.err and "--layers" in out.err
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*"))


def test_a_k_the_data_cannot_give_is_one_line(ckpt64, embedded_root, tmp_path, capsys):
    code, out = _run(["lowshot-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv5",
                      "--shots", "96", "--draws", "1"], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "--shots 96" in out.err and "lower --shots" in out.err
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*"))

"""voc07-svm and lowshot-svm: the SVM protocol against a plain scikit-learn loop, the low-shot draws,
a dead tap's one-line error, and both tasks end to end on the embedded VOCdevkit."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from outcome_checks import check_intervals  # tests/outcome_checks.py
from sklearn.model_selection import cross_val_score
from sklearn.svm import LinearSVC

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.transfer.cli import main
from dcbench.transfer.linear_svm import (
    draw,
    interpolated_ap,
    lowshot_svm,
    normalise,
    validation_rows,
    voc07_svm,
)
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


def test_published_selection_takes_the_best_mean_test_cost_and_its_statistics_over_the_draws():
    xtr, ytr = _data(3, 200, classes=3)
    xte, yte = _data(4, 80, classes=3)
    r = lowshot_svm(normalise(xtr), ytr, normalise(xte), yte, shots=[2, 4], draws=3, costs=COSTS, seed=0, n_jobs=2,
                    selection="published")
    for k in (2, 4):
        s = r["per_k"][k]
        assert s["maps"].shape == (3, len(COSTS)) and s["scores"].shape == (3, len(yte), 3)
        best = int(np.argmax(s["maps"].mean(0)))
        at = s["maps"][:, best]
        assert s["cost"] == COSTS[best]
        np.testing.assert_array_equal(s["test_maps"], at)  # the refit at the chosen cost is the same SVM
        assert (s["mean"], s["min"], s["max"], s["std"]) == pytest.approx((at.mean(), at.min(), at.max(), at.std()))
    # one (k, draw, cost) redone by hand: every class trained on its drawn rows only
    full = [_plain_ap(_plain_svm(COSTS[0]).fit(normalise(xtr)[np.r_[p, n]], np.r_[np.ones(len(p)), -np.ones(len(n))])
                      .decision_function(normalise(xte)), yte[:, c]) for c, (p, n) in enumerate(r["drawn"][2][1])]
    assert r["per_k"][2]["maps"][1, 0] == pytest.approx(np.mean(full), abs=1e-12)


def test_held_out_selection_scores_each_class_on_the_trainval_rows_its_draw_left_out():
    xtr, ytr = _data(3, 200, classes=3)
    xte, yte = _data(4, 80, classes=3)
    xtr, xte = normalise(xtr), normalise(xte)
    r = lowshot_svm(xtr, ytr, xte, yte, shots=[2, 4], draws=3, costs=COSTS, seed=0, n_jobs=2)
    for k in (2, 4):
        s = r["per_k"][k]
        best = int(np.argmax(s["maps"].mean(0)))
        assert s["cost"] == COSTS[best]
        assert (s["mean"], s["min"], s["max"], s["std"]) == pytest.approx(
            (s["test_maps"].mean(), s["test_maps"].min(), s["test_maps"].max(), s["test_maps"].std()))
        lo, hi = s["validation"]["images"]
        assert 0 < lo <= hi <= len(ytr) - 3 * k  # every class's k + 2k drawn rows are out of its split
    # one (k, draw, cost) redone by hand on the rows that draw did not use for each class
    aps = []
    for c, (pos, neg) in enumerate(r["drawn"][4][2]):
        rows = validation_rows(ytr[:, c], (pos, neg))
        assert not set(rows) & (set(pos) | set(neg)) and (ytr[rows, c] != 0).all()
        assert len(rows) == int((ytr[:, c] != 0).sum()) - len(pos) - len(neg)
        svm = _plain_svm(COSTS[1]).fit(xtr[np.r_[pos, neg]], np.r_[np.ones(len(pos)), -np.ones(len(neg))])
        aps.append(_plain_ap(svm.decision_function(xtr[rows]), ytr[rows, c]))
    assert r["per_k"][4]["maps"][2, 1] == pytest.approx(np.mean(aps), abs=1e-12)
    # and the test mAP of that draw at the chosen cost, by hand
    cost = r["per_k"][4]["cost"]
    test = [_plain_ap(_plain_svm(cost).fit(xtr[np.r_[p, n]], np.r_[np.ones(len(p)), -np.ones(len(n))])
                      .decision_function(xte), yte[:, c]) for c, (p, n) in enumerate(r["drawn"][4][2])]
    assert r["per_k"][4]["test_maps"][2] == pytest.approx(np.mean(test), abs=1e-12)


def _poisoned(y: np.ndarray) -> np.ndarray:
    """Every test label wrong: present <-> absent (difficult-only stays left out)."""
    return -y


def test_held_out_cost_is_chosen_without_the_test_labels():
    xtr, ytr = _data(3, 200, classes=3)
    xte, yte = _data(4, 80, classes=3)
    xtr, xte = normalise(xtr), normalise(xte)
    kw = dict(shots=[1, 2, 4], draws=3, costs=COSTS, seed=0, n_jobs=2)
    clean = lowshot_svm(xtr, ytr, xte, yte, **kw)
    bad = lowshot_svm(xtr, ytr, xte, _poisoned(yte), **kw)
    for k in (1, 2, 4):
        a, b = clean["per_k"][k], bad["per_k"][k]
        assert a["cost"] == b["cost"]
        np.testing.assert_array_equal(a["maps"], b["maps"])
        assert a["mean"] != pytest.approx(b["mean"], abs=1e-3)  # the test labels do reach the test metric
    # the published rule chooses on test, so the same poison can move its choice
    pub = [lowshot_svm(xtr, ytr, xte, y, **kw, selection="published") for y in (yte, _poisoned(yte))]
    assert any(not np.array_equal(pub[0]["per_k"][k]["maps"], pub[1]["per_k"][k]["maps"]) for k in (1, 2, 4))


def test_voc07_svm_cost_is_chosen_without_the_test_labels():
    xtr, ytr = _data(0, 90)
    xte, yte = _data(1, 60)
    xtr, xte = normalise(xtr), normalise(xte)
    a = voc07_svm(xtr, ytr, xte, yte, costs=COSTS, folds=3, seed=0, n_jobs=2)
    b = voc07_svm(xtr, ytr, xte, _poisoned(yte), costs=COSTS, folds=3, seed=0, n_jobs=2)
    assert a["chosen"] == b["chosen"] and a["map"] != pytest.approx(b["map"], abs=1e-3)
    np.testing.assert_array_equal(a["scores"], b["scores"])  # the same SVMs, scored against other labels


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


def poisoned_devkit(embedded_root: Path, dst: Path) -> Path:
    """A copy of the embedded VOC2007 whose every test label is wrong (present <-> absent; difficult-only
    stays so), the images linked, not copied."""
    src = embedded_root / "VOCdevkit" / "VOC2007"
    base = dst / "VOCdevkit" / "VOC2007"
    (base / "ImageSets").mkdir(parents=True)
    (base / "JPEGImages").symlink_to(src / "JPEGImages", target_is_directory=True)
    shutil.copytree(src / "ImageSets" / "Main", base / "ImageSets" / "Main")
    flip = {"1": "-1", "-1": "1", "0": "0"}
    for f in (base / "ImageSets" / "Main").glob("*_test.txt"):
        f.write_text("".join(f"{i} {flip[v]}\n" for i, v in (line.split() for line in f.read_text().splitlines())))
    return dst


def test_voc07_svm_end_to_end_writes_a_valid_result(ckpt64, embedded_root, tmp_path, capsys):
    code, _ = _run(["voc07-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv2,conv5",
                    "--costs", "0.1,1"], capsys)
    assert code == 0
    (path,) = (tmp_path / "res").glob("voc07-svm__*.json")
    r = read_result(path)  # schema-validated
    assert set(r["metrics"]) == {"conv2_map", "conv5_map"}
    assert all(0 < v <= 100 for v in r["metrics"].values())
    assert set(r["details"]["chosen_costs"]["conv5"].values()) <= {0.1, 1.0}
    assert r["selection"] == {"rule": "cross-validation", "folds": 3, "source": "trainval",
                              "scoring": r["selection"]["scoring"], "chosen_costs": r["details"]["chosen_costs"],
                              "epochs": None}
    assert r["data"]["sizes"] == {"trainval": 120, "test": 120}
    outcomes = check_intervals(path, r, ["conv2_map", "conv5_map"], contains=False)  # AP: see check_intervals
    assert outcomes["conv5_map"].rule == "interpolated"
    # a second run reads the features from the cache and gives the same numbers
    code, _ = _run(["voc07-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv2,conv5",
                    "--costs", "0.1,1", "--out", tmp_path / "res2"], capsys)
    (again,) = (tmp_path / "res2").glob("*.json")
    r2 = read_result(again)
    assert r2["details"]["feature_cache_hit"] and r2["metrics"] == r["metrics"]


def test_voc07_svm_costs_do_not_move_when_every_test_label_is_wrong(ckpt64, embedded_root, tmp_path, capsys):
    bad = poisoned_devkit(embedded_root, tmp_path / "bad")
    results = []
    for data, out in ((embedded_root, "good"), (bad, "bad")):
        argv = _common(ckpt64, data, tmp_path)
        argv[argv.index("--out") + 1] = tmp_path / out
        code, _ = _run(["voc07-svm", *argv, "--layers", "conv5", "--costs", "0.1,1,10", "--ap", "11point"], capsys)
        assert code == 0
        (path,) = (tmp_path / out).glob("voc07-svm__*.json")
        results.append(read_result(path))
    good, poisoned = results
    assert good["selection"]["chosen_costs"] == poisoned["selection"]["chosen_costs"]
    assert good["metrics"]["conv5_map"] != pytest.approx(poisoned["metrics"]["conv5_map"], abs=0.01)


def test_lowshot_svm_end_to_end_records_the_drawn_images(ckpt64, embedded_root, tmp_path, capsys):
    code, _ = _run(["lowshot-svm", *_common(ckpt64, embedded_root, tmp_path), "--layers", "conv5",
                    "--costs", "0.1,1", "--shots", "1,2", "--draws", "2"], capsys)
    assert code == 0
    (path,) = (tmp_path / "res").glob("lowshot-svm__*.json")
    r = read_result(path)
    assert set(r["metrics"]) == {f"conv5_k{k}_{s}" for k in (1, 2) for s in ("mean", "min", "max", "std")}
    sel = r["selection"]
    assert sel["rule"] == "held-out" and sel["chosen"] == r["details"]["chosen_costs"]
    assert sel["split"]["source"] == "trainval" and set(sel["split"]["size"]) == {"k1", "k2"}
    assert 0 < sel["split"]["size"]["k2"]["images"][0] <= 120 - 40  # 2 + 38 drawn per class
    # _min/_max/_std are statistics of the draws: no interval over images
    outcomes = check_intervals(path, r, ["conv5_k1_mean", "conv5_k2_mean"], contains=False)  # AP: see there
    assert outcomes["conv5_k2_mean"].arrays["scores"].shape == (2, 120, 20)
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


def test_lowshot_svm_held_out_costs_do_not_move_when_every_test_label_is_wrong(ckpt64, embedded_root, tmp_path,
                                                                               capsys):
    bad = poisoned_devkit(embedded_root, tmp_path / "bad")
    results = {}
    for data, out, sel in ((embedded_root, "good", "held-out"), (bad, "bad", "held-out"),
                           (embedded_root, "pub", "published")):
        argv = _common(ckpt64, data, tmp_path)
        argv[argv.index("--out") + 1] = tmp_path / out
        code, _ = _run(["lowshot-svm", *argv, "--layers", "conv5", "--costs", "0.01,1,100", "--shots", "1,2",
                        "--draws", "2", "--selection", sel], capsys)
        assert code == 0
        (path,) = (tmp_path / out).glob("lowshot-svm__*.json")
        results[out] = read_result(path)
    good, poisoned, pub = results["good"], results["bad"], results["pub"]
    assert good["selection"]["chosen"] == poisoned["selection"]["chosen"]
    assert good["details"]["val_map"] == poisoned["details"]["val_map"]
    assert good["metrics"]["conv5_k2_mean"] != pytest.approx(poisoned["metrics"]["conv5_k2_mean"], abs=0.01)
    assert pub["selection"]["rule"] == "best-on-test" and "published" in pub["selection"]["protocol"]
    assert "map" in pub["details"] and "val_map" not in pub["details"]


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

"""dc-transfer classification tasks end to end (tiny budgets), and their bad-input lines."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from outcome_checks import check_intervals  # tests/outcome_checks.py
from PIL import Image

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import UserError, run_cli
from dcbench.models import build_model
from dcbench.outcomes import read_outcomes
from dcbench.results import read_result
from dcbench.transfer.cli import main
from dcbench.transfer.protocol import held_out_split


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def _run(argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _common(ckpt, data, tmp_path):
    return ["--checkpoint", ckpt, "--data", data, "--out", tmp_path / "res", "--scale", "smoke",
            "--device", "cpu", "--workers", "0", "--cache-dir", tmp_path / "cache"]


def _only_result(tmp_path: Path) -> dict:
    files = sorted((tmp_path / "res").glob("*.json"))
    assert len(files) == 1, files
    return read_result(files[0])


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def _tiny_tree(root: Path, split_classes: dict[str, list[str]]) -> Path:
    for split, classes in split_classes.items():
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 40), (i * 90, 30, 60)).save(d / f"{i}.jpg")
    return root


@pytest.mark.parametrize("task", ["mlp", "linear-imagenet"])
def test_val_class_missing_from_train(task, ckpt64, tmp_path, capsys):
    data = _tiny_tree(tmp_path / "data", {"train": ["a", "b"], "val": ["a", "zebra"]})
    code, err = _run([task, *_common(ckpt64, data, tmp_path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "zebra" in err and "missing from train" in err


def test_places_val_label_missing_from_train(ckpt64, tmp_path, capsys):
    root = tmp_path / "places"
    (root / "images" / "x").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 40)).save(root / "images" / "x" / f"{i}.jpg")
    lists = root / "trainvalsplit_places205"
    lists.mkdir()
    (lists / "train_places205.csv").write_text("x/0.jpg 0\nx/1.jpg 1\n")
    (lists / "val_places205.csv").write_text("x/2.jpg 7\n")
    code, err = _run(["linear-places", *_common(ckpt64, root, tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "val labels missing from train: 7" in err


@pytest.mark.parametrize("task", ["mlp", "linear-imagenet", "linear-places", "voc-classification",
                                  "lowshot", "knn-graph"])
def test_input_size_mismatch(task, ckpt64, tmp_path, capsys):
    data = _tiny_tree(tmp_path / "data", {"train": ["a"], "val": ["a"]})
    code, err = _run([task, *_common(ckpt64, data, tmp_path), "--input-size", "224"], capsys)
    assert code == 2 and err.count("\n") == 1 and "built for 64px" in err


def test_missing_data_and_bad_layers(ckpt64, tmp_path, capsys):
    code, err = _run(["linear-imagenet", *_common(ckpt64, tmp_path / "nope", tmp_path)], capsys)
    assert code == 2 and "--data" in err and err.count("\n") == 1
    data = _tiny_tree(tmp_path / "data", {"train": ["a"], "val": ["a"]})
    code, err = _run(["linear-imagenet", *_common(ckpt64, data, tmp_path), "--layers", "conv9"], capsys)
    assert code == 2 and "--layers" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["voc-classification", "--fc-init", "checkpoint"], ["mlp"]])
def test_checkpoint_without_fc_layers_is_exit_2(ckpt64, tmp_path, capsys, strip_fc, argv):
    """fc6-8 protocols need the checkpoint's fc6/fc7: a file without them is refused, naming it."""
    bad = strip_fc(ckpt64, tmp_path / "nofc")
    code, err = _run([argv[0], *_common(bad, tmp_path, tmp_path), *argv[1:]], capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(bad) in err and "classifier" in err


@pytest.mark.parametrize("task", ["knn-graph", "voc-segmentation"])
def test_checkpoint_without_preprocessing_is_exit_2_not_imagenet_constants(task, ckpt64, tmp_path, capsys):
    import shutil

    bad = tmp_path / "nopre"
    shutil.copytree(ckpt64, bad)
    meta = json.loads((bad / "meta.json").read_text())
    del meta["preprocessing"]
    (bad / "meta.json").write_text(json.dumps(meta))
    code, err = _run([task, *_common(bad, _tiny_tree(tmp_path / "data", {"val": ["a"]}), tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "preprocessing" in err


# --------------------------------------------------------------------------------------------
# The held-out split the probes choose their epoch on


def test_held_out_split_is_class_balanced_seeded_and_disjoint_from_what_trains():
    labels = [c for c in range(4) for _ in range(10)] + [0, 1]  # class 0 and 1 a little larger
    rest, held, block = held_out_split(labels, 9, seed=3, where="train/")
    assert block == {**block, "source": "train", "size": 8, "per_class": 2, "seed": 3, "train_left": 34}
    assert sorted(rest + held) == list(range(len(labels))) and not set(rest) & set(held)
    assert Counter(labels[i] for i in held) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert held_out_split(labels, 9, seed=3, where="train/") == (rest, held, block)  # same seed, same split
    assert held_out_split(labels, 9, seed=4, where="train/")[1] != held


@pytest.mark.parametrize("size, words", [(3, "fewer than one image per class"), (40, "smaller --val-size")])
def test_held_out_split_that_cannot_be_drawn_is_a_user_error(size, words):
    with pytest.raises(UserError, match=words):
        held_out_split([c for c in range(4) for _ in range(10)], size, seed=0, where="train/")


# --------------------------------------------------------------------------------------------
# End to end on the embedded data (tiny budgets)


def _check_outcomes(result: dict, res_dir: Path, metrics=None) -> None:
    """``metrics`` (default: every metric) have per-image outcomes, the file reads back, and each
    interval holds its value."""
    path = next(p for p in res_dir.glob("*.json") if read_result(p)["created"] == result["created"])
    outcomes = read_outcomes(result, path)
    expected = set(result["metrics"]) if metrics is None else set(metrics)
    assert set(outcomes) == expected == set(result["intervals"]["metrics"])
    for name, (lo, hi) in result["intervals"]["metrics"].items():
        assert lo <= result["metrics"][name] <= hi, name
    assert result["intervals"]["images"] == result["data"]["sizes"]["val"]


@pytest.mark.slow
def test_linear_imagenet_end_to_end_and_cache(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-imagenet", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "2"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    layers = {f"conv{i}" for i in range(1, 6)}
    assert set(r["metrics"]) == layers  # held-out selection: one test number per layer, no "_best"
    sel = r["selection"]
    assert sel["rule"] == "held-out" and set(sel["chosen_epochs"]) == set(sel["held_out_top1"]) == layers
    assert all(1 <= e <= 2 for e in sel["chosen_epochs"].values())
    # smoke default: a fifth of the 600 embedded train images, 12 of each of the 10 classes
    assert sel["split"] == {**sel["split"], "source": "train", "size": 120, "per_class": 12, "seed": 0}
    assert r["data"]["sizes"] == {"train": 480, "held_out": 120, "val": 200}
    assert r["protocol"]["pooling"]["conv1"]["dim"] == 6144 and r["details"]["feature_cache_hit"] is False
    _check_outcomes(r, tmp_path / "res")
    for f in (tmp_path / "res").iterdir():
        f.unlink()
    assert _run(argv, capsys)[0] == 0  # second run: features from the cache, same numbers
    r2 = _only_result(tmp_path)
    assert r2["details"]["feature_cache_hit"] is True and r2["metrics"] == r["metrics"]
    assert r2["selection"] == r["selection"]


@pytest.mark.slow
def test_linear_imagenet_thesis_rule_reports_last_and_best_on_test(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-imagenet", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "3", "--selection", "thesis",
            "--layers", "conv1,conv5"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"conv1", "conv1_best", "conv5", "conv5_best"}
    sel = r["selection"]
    assert sel["rule"] == "last+best" and "thesis" in sel["note"] and set(sel["best_epochs"]) == {"conv1", "conv5"}
    for layer in ("conv1", "conv5"):  # the metrics are the test history's last and best entries
        hist = r["details"]["history_top1"][layer]
        assert r["metrics"][layer] == pytest.approx(hist[-1], abs=1e-3)
        assert r["metrics"][f"{layer}_best"] == pytest.approx(max(hist), abs=1e-3)
        assert hist[sel["best_epochs"][layer] - 1] == max(hist)
    assert r["data"]["sizes"] == {"train": 600, "val": 200}  # nothing held out
    _check_outcomes(r, tmp_path / "res")


def _poisoned_copy(embedded_root: Path, dst: Path) -> Path:
    """The embedded classification data with EVERY test label wrong: the val class folders renamed
    in a cycle (a -> b -> ... -> a), the train split untouched."""
    src = embedded_root / "classification"
    shutil.copytree(src, dst / "classification")
    val = dst / "classification" / "val"
    classes = sorted(d.name for d in val.iterdir())
    for c in classes:
        (val / c).rename(val / f"tmp-{c}")
    for c, new in zip(classes, classes[1:] + classes[:1]):
        (val / f"tmp-{c}").rename(val / new)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("task", ["linear-imagenet", "mlp"])
def test_poisoned_test_labels_leave_the_chosen_epochs_unchanged(task, ckpt64, embedded_root, tmp_path, capsys):
    """Held-out selection reads no test label: with every test label wrong, the same epochs are chosen
    (same held-out scores), while the test metric does change."""
    poisoned = _poisoned_copy(embedded_root, tmp_path / "poisoned")
    extra = ["--epochs", "4"] + (["--layers", "conv1,conv5"] if task == "linear-imagenet" else [])
    results = []
    for i, data in enumerate((embedded_root, poisoned)):
        argv = [task, *_common(ckpt64, data, tmp_path), "--out", tmp_path / f"res{i}", *extra]
        assert _run(argv, capsys)[0] == 0
        (path,) = (tmp_path / f"res{i}").glob("*.json")
        results.append(read_result(path))
    clean, bad = results
    assert bad["selection"]["chosen_epochs"] == clean["selection"]["chosen_epochs"]
    assert bad["selection"]["held_out_top1"] == clean["selection"]["held_out_top1"]
    assert bad["selection"]["split"] == clean["selection"]["split"]
    assert bad["metrics"] != clean["metrics"]


@pytest.mark.slow
def test_streamed_probe_holds_out_the_same_split_as_the_cached_one(ckpt64, embedded_root, tmp_path, capsys):
    """--train-aug crop-flip runs the trunk on every batch: it trains on the images the cached path
    trains on and chooses on the same held-out images, scored as the test split is."""
    runs = {}
    for aug in ("crop-flip", "none"):
        argv = ["linear-imagenet", *_common(ckpt64, embedded_root, tmp_path), "--out", tmp_path / aug,
                "--epochs", "2", "--layers", "conv1", "--train-aug", aug]
        assert _run(argv, capsys)[0] == 0
        (path,) = (tmp_path / aug).glob("*.json")
        runs[aug] = read_result(path)
        _check_outcomes(runs[aug], tmp_path / aug)
    streamed, cached = runs["crop-flip"], runs["none"]
    assert streamed["selection"]["split"] == cached["selection"]["split"]
    assert streamed["data"]["sizes"] == cached["data"]["sizes"] == {"train": 480, "held_out": 120, "val": 200}
    assert streamed["details"]["feature_cache_hit"] is None and streamed["selection"]["rule"] == "held-out"


@pytest.mark.slow
def test_a_val_size_that_cannot_be_used_is_one_line(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-imagenet", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--val-size", "600"]
    code, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "--val-size 600" in err and "smaller --val-size" in err
    code, err = _run([*argv[:-2], "--val-size", "50", "--selection", "thesis"], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds nothing out" in err  # refused, not ignored


@pytest.mark.slow
def test_linear_places_end_to_end(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-places", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--layers", "conv1,conv5"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"conv1", "conv5"} and r["selection"]["rule"] == "held-out"
    assert r["variant"]["dataset"] == "places205" and r["data"]["sizes"]["val"] > 0
    _check_outcomes(r, tmp_path / "res")


@pytest.mark.slow
def test_mlp_end_to_end_ten_crops(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["mlp", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--eval-crops", "10"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"top1"} and r["protocol"]["eval_crops"] == 10
    sel = r["selection"]
    assert sel["rule"] == "held-out" and sel["chosen_epochs"] == {"top1": 1} and sel["split"]["size"] == 120
    _check_outcomes(r, tmp_path / "res")


@pytest.mark.slow
def test_mlp_thesis_rule(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["mlp", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--selection", "thesis"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"top1", "top1_best"}
    assert {k: r["selection"][k] for k in ("rule", "epochs", "best_epoch")} == {
        "rule": "last+best", "epochs": 1, "best_epoch": 1}
    _check_outcomes(r, tmp_path / "res")


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["fc6-8", "all"])
def test_voc_classification_end_to_end(layers, ckpt64, embedded_root, tmp_path, capsys):
    argv = ["voc-classification", *_common(ckpt64, embedded_root, tmp_path), "--layers", layers,
            "--iterations", "2", "--test-crops", "2"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"map"} and r["variant"]["layers"] == layers
    assert len(r["details"]["ap"]) == 20
    json.dumps(r)
    (path,) = (tmp_path / "res").glob("*.json")
    outcomes = check_intervals(path, r, ["map"], contains=False)  # AP on a few positives: see check_intervals
    m = outcomes["map"]
    assert m.kind == "ap" and m.rule == "sklearn" and m.arrays["scores"].shape == (120, 20)
    assert set(np.unique(m.arrays["labels"])) <= {-1, 0, 1} and r["details"]["unreadable_test_images"] == 0


@pytest.mark.slow
def test_lowshot_end_to_end_records_draws(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["lowshot", *_common(ckpt64, embedded_root, tmp_path), "--shots", "2", "--draws", "2",
            "--iterations", "1"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"n2_mean", "n2_std", "random_n2_mean", "random_n2_std"}
    # the means over draws have outcomes (each test image's hit rate over the draws), the stds none
    _check_outcomes(r, tmp_path / "res", {"n2_mean", "random_n2_mean"})
    for init, name in (("checkpoint", "n2_mean"), ("random", "random_n2_mean")):
        accs = [x["top1"] for x in r["details"]["runs"] if x["init"] == init]
        assert r["metrics"][name] == pytest.approx(sum(accs) / len(accs), abs=1e-3)
    runs = r["details"]["runs"]
    assert len(runs) == 4 and len({x["seed"] for x in runs}) == 2
    lines = Path(runs[0]["images"]).read_text().split()
    assert len(lines) == 2 * 10  # 2 per class, 10 classes
    # The random-init run of a draw uses the checkpoint run's images.
    assert runs[0]["images_sha256"] == runs[1]["images_sha256"] != runs[2]["images_sha256"]


@pytest.mark.slow
def test_knn_graph_end_to_end_pictures(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["knn-graph", *_common(ckpt64, embedded_root, tmp_path)]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert {"ratio_intra", "ratio_median", "random_graph_mean"} <= set(r["metrics"])
    # the embedded val classes are of equal size: ratio_intra is a mean over nodes, the rest are not
    _check_outcomes(r, tmp_path / "res", {"ratio_intra"})
    assert len(r["details"]["per_class"]) == 10
    for name in ("png_neighbours", "png_filters", "png_ratios"):
        p = r["details"][name]  # relative to the result's folder, which can move as a whole
        assert not Path(p).is_absolute() and (tmp_path / "res" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["details"]["filters_composed_with_sobel"] is True

"""dc-transfer classification tasks end to end (tiny budgets), and their bad-input lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from outcome_checks import check_intervals  # tests/outcome_checks.py
from PIL import Image

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.transfer.cli import main


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
# End to end on the embedded data (tiny budgets)


@pytest.mark.slow
def test_linear_imagenet_end_to_end_and_cache(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-imagenet", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "2"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {f"conv{i}{s}" for i in range(1, 6) for s in ("", "_best")}
    assert r["selection"]["rule"] == "last+best" and set(r["selection"]["best_epochs"]) == {
        f"conv{i}" for i in range(1, 6)}
    assert r["protocol"]["pooling"]["conv1"]["dim"] == 6144 and r["details"]["feature_cache_hit"] is False
    for f in (tmp_path / "res").glob("*.json"):
        f.unlink()
    assert _run(argv, capsys)[0] == 0  # second run: features from the cache, same numbers
    r2 = _only_result(tmp_path)
    assert r2["details"]["feature_cache_hit"] is True and r2["metrics"] == r["metrics"]


@pytest.mark.slow
def test_linear_places_end_to_end(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["linear-places", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--layers", "conv1,conv5"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"conv1", "conv1_best", "conv5", "conv5_best"}
    assert r["variant"]["dataset"] == "places205" and r["data"]["sizes"]["val"] > 0


@pytest.mark.slow
def test_mlp_end_to_end_ten_crops(ckpt64, embedded_root, tmp_path, capsys):
    argv = ["mlp", *_common(ckpt64, embedded_root, tmp_path), "--epochs", "1", "--eval-crops", "10"]
    assert _run(argv, capsys)[0] == 0
    r = _only_result(tmp_path)
    assert set(r["metrics"]) == {"top1", "top1_best"} and r["protocol"]["eval_crops"] == 10
    assert r["selection"] == {"rule": "last+best", "epochs": 1, "best_epoch": 1}


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
    assert len(r["details"]["per_class"]) == 10
    for name in ("png_neighbours", "png_filters", "png_ratios"):
        p = r["details"][name]  # relative to the result's folder, which can move as a whole
        assert not Path(p).is_absolute() and (tmp_path / "res" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r["details"]["filters_composed_with_sobel"] is True

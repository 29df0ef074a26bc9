"""dc-transfer semisup: the class-balanced draw, SimCLR-format image lists in and out, the
refusal of bad lists, and an end-to-end run on a tiny checkpoint (tiny budgets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.outcomes import read_outcomes
from dcbench.results import read_result
from dcbench.transfer.cli import main
from dcbench.transfer.semisup import cosine_lr, draw_balanced, list_names, read_subset, resolve, steps_for

CLASSES = ("n01", "n02", "n03", "n04")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def _tree(root: Path, train_per_class: int = 20, val_per_class: int = 2, shared_names: bool = False) -> Path:
    """An ImageNet-like train/val tree: files named <class>_<i>.JPEG as ImageNet's are (or, with
    ``shared_names``, the same i.JPEG in every class)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for ci, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.normal(60 * ci, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / (f"{i}.JPEG" if shared_names else f"{c}_{i}.JPEG"), quality=85)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _tree(tmp_path_factory.mktemp("semisup") / "imagenet")


def _run(argv, capsys):
    code = run_cli(main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def _argv(ckpt, data, out, *extra):
    return ["semisup", "--checkpoint", ckpt, "--data", data, "--out", out, "--scale", "smoke", "--device", "cpu",
            "--workers", "0", "--epochs-1", "1", "--epochs-10", "1", "--batch-size", "4", *extra]


def _written(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


# --------------------------------------------------------------------------------------------
# The full-scale recipe


def test_full_scale_defaults_are_simclrs_fine_tuning_recipe():
    import argparse

    from dcbench.transfer.semisup import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    proto, fractions = resolve(argparse.Namespace(**vars(p.parse_args([])), scale="full"))
    assert fractions == [1, 10]
    assert (proto["epochs_1"], proto["epochs_10"], proto["batch_size"]) == (60, 30, 256)
    assert (proto["lr"], proto["momentum"], proto["weight_decay"]) == (0.05, 0.9, 0.0)   # 0.05 x 256 / 256
    assert (proto["train_aug"], proto["eval_crops"], proto["lr_schedule"]) == ("rrc-flip", 1, "cosine")
    big, _ = resolve(argparse.Namespace(**vars(p.parse_args(["--batch-size", "4096"])), scale="full"))
    assert big["lr"] == 0.8   # SimCLR's own batch: its 0.8
    assert steps_for(12811, 60, 256) == 3003   # SimCLR's 1% list: 12,811 images
    lr = cosine_lr(0.05, 100)
    assert lr(0) == 0.05 and abs(lr(50) - 0.025) < 1e-12 and lr(100) < 1e-12


# --------------------------------------------------------------------------------------------
# The draw


def test_balanced_draw_is_reproducible_and_takes_the_fraction_of_every_class():
    targets = [0] * 120 + [1] * 50 + [2] * 7
    paths = [f"c{t}/img{i:04d}.JPEG" for i, t in enumerate(targets)]
    ten = draw_balanced(targets, paths, 10, seed=3)
    assert ten == draw_balanced(targets, paths, 10, seed=3)
    assert np.bincount(np.asarray(targets)[ten]).tolist() == [12, 5, 1]   # round(10%), at least one
    assert np.bincount(np.asarray(targets)[draw_balanced(targets, paths, 1, seed=3)]).tolist() == [1, 1, 1]
    assert len(set(ten)) == len(ten) == 18 and ten == sorted(ten)
    assert draw_balanced(targets, paths, 10, seed=4) != ten


def test_the_draw_depends_on_the_images_not_on_the_order_they_were_listed_in():
    targets = [0] * 30 + [1] * 30
    paths = [f"c{t}/img{i:04d}.JPEG" for i, t in enumerate(targets)]
    order = np.random.default_rng(1).permutation(60)
    shuffled_t, shuffled_p = [targets[i] for i in order], [paths[i] for i in order]
    picked = {paths[i] for i in draw_balanced(targets, paths, 10, seed=0)}
    assert {shuffled_p[i] for i in draw_balanced(shuffled_t, shuffled_p, 10, seed=0)} == picked


def test_lists_use_file_names_unless_two_classes_share_one(tmp_path):
    root = tmp_path / "train"
    assert list_names([str(root / "a" / "a_1.JPEG"), str(root / "b" / "b_1.JPEG")], root) == ["a_1.JPEG", "b_1.JPEG"]
    assert list_names([str(root / "a" / "1.JPEG"), str(root / "b" / "1.JPEG")], root) == ["a/1.JPEG", "b/1.JPEG"]


def test_a_simclr_style_list_is_matched_by_file_name(tmp_path):
    root = tmp_path / "train"
    paths = [str(root / c / f"{c}_{i}.JPEG") for c in ("n01", "n02") for i in range(3)]
    targets = [0, 0, 0, 1, 1, 1]
    lst = tmp_path / "1percent.txt"
    lst.write_text("n02_2.JPEG\nn01_0.JPEG\n\n", encoding="utf-8")   # any order; blank lines ignored
    idx, _ = read_subset(lst, "--subset-1", paths, targets, ["n01", "n02"], root)
    assert idx == [0, 5]


# --------------------------------------------------------------------------------------------
# End to end: a schema-valid result for both fractions, and the saved lists passed back


def test_end_to_end_result_and_saved_lists_round_trip(ckpt, data, tmp_path, capsys, one_thread):
    out = tmp_path / "res"
    code, err = _run(_argv(ckpt, data, out), capsys)
    assert code == 0, err
    (first,) = out.glob("*.json")
    r = read_result(first)  # schema-valid
    assert set(r["metrics"]) == {"top1_1pct", "top5_1pct", "top1_10pct", "top5_10pct"}
    assert all(0 <= v <= 100 for v in r["metrics"].values())
    assert r["metrics"]["top5_1pct"] == 100.0  # 4 classes: the top 5 always holds the answer
    outcomes = read_outcomes(r, first)  # per-image top-1 / top-5 hits of every metric
    assert set(outcomes) == set(r["metrics"]) == set(r["intervals"]["metrics"])
    assert r["intervals"]["images"] == r["data"]["sizes"]["val"]
    for name, (lo, hi) in r["intervals"]["metrics"].items():
        assert lo <= r["metrics"][name] <= hi, name
    subs = r["details"]["subsets"]
    assert (subs["1pct"]["images"], subs["10pct"]["images"]) == (4, 8) and subs["10pct"]["classes"] == 4
    lists = {f: Path(subs[f"{f}pct"]["file"]) for f in (1, 10)}
    assert lists[10].read_text().splitlines() == sorted(lists[10].read_text().splitlines())
    assert all(line.startswith("n0") and line.endswith(".JPEG") and "/" not in line
               for line in lists[10].read_text().splitlines())

    again = tmp_path / "again"
    code, err = _run(_argv(ckpt, data, again, "--subset-1", lists[1], "--subset-10", lists[10]), capsys)
    assert code == 0, err
    (second,) = again.glob("*.json")
    r2 = read_result(second)
    for f in ("1pct", "10pct"):
        assert r2["details"]["subsets"][f]["source"] == "file"
        assert r2["details"]["subsets"][f]["sha256"] == subs[f]["sha256"]   # the very same images
    assert r2["metrics"] == r["metrics"]   # same images, same seed: same numbers
    assert not (again / "semisup").exists()  # a list given is not written again


@pytest.mark.slow
def test_a_tree_whose_classes_share_file_names_round_trips_by_path(ckpt, tmp_path, capsys, one_thread):
    shared = _tree(tmp_path / "shared", train_per_class=10, val_per_class=1, shared_names=True)
    out = tmp_path / "res"
    code, err = _run(_argv(ckpt, shared, out, "--fractions", "10"), capsys)
    assert code == 0, err
    (res,) = out.glob("*.json")
    listed = Path(read_result(res)["details"]["subsets"]["10pct"]["file"])
    assert all(line.split("/")[0] in CLASSES for line in listed.read_text().splitlines())
    code, err = _run(_argv(ckpt, shared, tmp_path / "again", "--fractions", "10", "--subset-10", listed), capsys)
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# Bad lists: one line naming the file and the fix, exit 2, nothing written


def _every_class_once() -> list[str]:
    return [f"{c}_0.JPEG" for c in CLASSES]


BAD_LISTS = {
    "names-not-in-the-dataset": ([*_every_class_once(), "n09_1.JPEG", "n09_2.JPEG"],
                                 ["2 of its 6 names are not images of", "first: n09_1.JPEG", "train split"]),
    "duplicates": ([*_every_class_once(), "n02_3.JPEG", "n02_3.JPEG", "n03/n03_0.JPEG"],
                   ["2 images are listed more than once", "list each image once"]),
    "a-class-with-no-image": ([f"{c}_0.JPEG" for c in CLASSES[:3]],
                              ["1 of the 4 classes have no image in it", "first: n04", "at least one"]),
    "empty": ([], ["names no image"]),
}


@pytest.mark.parametrize("case", sorted(BAD_LISTS))
def test_a_bad_subset_list_is_one_line_and_exit_2_with_nothing_written(case, ckpt, data, tmp_path, capsys):
    lines, expected = BAD_LISTS[case]
    bad = tmp_path / "1percent.txt"
    bad.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    out = tmp_path / "res"
    code, err = _run(_argv(ckpt, data, out, "--subset-1", bad), capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--subset-1 {bad}" in err
    for text in expected:
        assert text in err, err
    assert _written(out) == []


def test_a_bad_second_list_leaves_the_first_fractions_draw_unwritten(ckpt, data, tmp_path, capsys):
    out = tmp_path / "res"
    code, err = _run(_argv(ckpt, data, out, "--subset-10", tmp_path / "missing.txt"), capsys)
    assert code == 2 and err.count("\n") == 1 and "no such file" in err and "missing.txt" in err
    assert _written(out) == []


def test_a_list_that_is_not_text_is_refused(ckpt, data, tmp_path, capsys):
    bad = tmp_path / "10percent.txt"
    bad.write_bytes(b"\xff\xfe\x00binary")
    code, err = _run(_argv(ckpt, data, tmp_path / "res", "--subset-10", bad), capsys)
    assert code == 2 and err.count("\n") == 1 and "not UTF-8" in err


def test_fractions_other_than_1_and_10_are_refused(ckpt, data, tmp_path, capsys):
    code, err = _run(_argv(ckpt, data, tmp_path / "res", "--fractions", "5"), capsys)
    assert code == 2 and err.count("\n") == 1 and "--fractions 5" in err


def test_a_list_for_a_fraction_that_is_not_run_is_refused_not_ignored(ckpt, data, tmp_path, capsys):
    lst = tmp_path / "1percent.txt"
    lst.write_text("".join(f"{x}\n" for x in _every_class_once()), encoding="utf-8")
    code, err = _run(_argv(ckpt, data, tmp_path / "res", "--fractions", "10", "--subset-1", lst), capsys)
    assert code == 2 and err.count("\n") == 1 and "--subset-1 was given but --fractions 10" in err
    assert _written(tmp_path / "res") == []


# --------------------------------------------------------------------------------------------
# The leaderboard: its own table, and the one cited DeepCluster number beside ResNet results


def test_cited_semisup_numbers_are_mmselfsups_and_sit_in_the_resnet_table_only():
    from dcbench.leaderboard.literature import load_literature
    from dcbench.leaderboard.tables import build_table, specs_for

    lit = load_literature()
    rows = lit[lit["table"] == "semisup-r50"].set_index(["method", "column"])["value"]
    dc = "DeepCluster (mmselfsup ResNet-50 Sobel)"
    assert (rows[(dc, "semisup_top1_1pct")], rows[(dc, "semisup_top5_1pct")]) == (33.44, 58.62)
    assert (rows[(dc, "semisup_top1_10pct")], rows[(dc, "semisup_top5_10pct")]) == (52.94, 77.96)
    assert set(lit.loc[lit["table"] == "semisup-r50", "citation"]) == {"mmselfsup docs/MODEL_ZOO.md"}
    import pandas as pd

    resnet = next(s for s in specs_for(pd.DataFrame(), "resnet") if s.key == "resnet-semisup")
    table = build_table(resnet, pd.DataFrame(), lit, "full")
    row = next(r for r in table.rows if r.label == dc)
    assert row.values == {"1% top-1": 33.44, "1% top-5": 58.62, "10% top-1": 52.94, "10% top-5": 77.96}
    assert row.source == "reported (mmselfsup docs/MODEL_ZOO.md)"
    convfc = next(s for s in specs_for(pd.DataFrame(), "convfc") if s.key == "semisup")
    assert build_table(convfc, pd.DataFrame(), lit, "full").rows == []  # no AlexNet/VGG16 number is cited

"""dc-transfer retrieval: the Oxford/Paris readers and their errors, compute_ap against an independent
computation, the R-MAC region grid, and one end-to-end run on a tiny embedded-style tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from outcome_checks import check_intervals  # tests/outcome_checks.py

from dcbench import synth
from dcbench.buildings import read_dataset
from dcbench.checkpoint import save_checkpoint
from dcbench.errors import DataError, run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.transfer import retrieval
from dcbench.transfer.cli import main
from dcbench.transfer.retrieval import query_outcomes

TINY = dict(ret_good=2, ret_ok=1, ret_junk=1, ret_distractors=3, ret_side=160)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ret")
    synth._make_retrieval(out, 0, TINY, None)
    return out / "retrieval"


@pytest.fixture
def copy(tree, tmp_path):
    shutil.copytree(tree, tmp_path / "retrieval")
    return tmp_path / "retrieval"


# --------------------------------------------------------------------------------------------
# Readers


def test_readers_follow_the_published_layouts(tree):
    ox, pa = read_dataset(tree / "oxford5k", "oxford5k"), read_dataset(tree / "paris6k", "paris6k")
    for ds in (ox, pa):
        assert len(ds.queries) == 5 and len(ds.names) == 5 * 5 + 3
        q = ds.queries[0]
        assert ds.names[q.image] in q.positives and len(q.positives) == 4 and len(q.junk) == 1
    assert (tree / "oxford5k" / "oxbuild_images" / "all_souls_000001.jpg").is_file()
    assert (tree / "paris6k" / "paris" / "defense" / "paris_defense_000001.jpg").is_file()
    assert (tree / "oxford5k" / "gt_files_170407" / "all_souls_1_query.txt").read_text().startswith("oxc1_all_souls_000001 ")
    assert (tree / "paris6k" / "paris_120310" / "defense_1_query.txt").read_text().startswith("paris_defense_000001 ")


def _one_line_error(capsys, argv):
    code = run_cli(main, argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def _argv(ckpt, data, tmp_path):
    return [str(a) for a in ("retrieval", "--checkpoint", ckpt, "--data", data, "--out", tmp_path / "res",
                             "--scale", "smoke", "--device", "cpu", "--workers", "0")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


def test_box_outside_its_image_is_one_line_naming_the_file(copy, ckpt, tmp_path, capsys):
    qf = copy / "oxford5k" / "gt_files_170407" / "balliol_1_query.txt"
    qf.write_text("oxc1_balliol_000001 10 10 500 90\n")
    err = _one_line_error(capsys, _argv(ckpt, copy, tmp_path))
    assert str(qf) in err and "not inside its image" in err
    assert not (tmp_path / "res").exists()


def test_missing_list_is_one_line_naming_the_file(copy, ckpt, tmp_path, capsys):
    missing = copy / "paris6k" / "paris_120310" / "eiffel_1_junk.txt"
    missing.unlink()
    err = _one_line_error(capsys, _argv(ckpt, copy, tmp_path))
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("text,words", [("oxc1_nope_000001 1 1 5 5\n", "not a readable image"),
                                        ("all_souls_000001 1 1 5 5\n", "malformed line"),
                                        ("oxc1_all_souls_000001 1 1 x 5\n", "not four numbers"),
                                        ("oxc1_all_souls_000001 9 1 5 5\n", "not inside")])
def test_malformed_query_lines_name_the_file(copy, text, words):
    qf = copy / "oxford5k" / "gt_files_170407" / "all_souls_1_query.txt"
    qf.write_text(text)
    with pytest.raises(DataError, match=words) as e:
        read_dataset(copy / "oxford5k", "oxford5k")
    assert str(qf) in str(e.value)


def test_list_naming_no_image_is_an_error(copy):
    f = copy / "oxford5k" / "gt_files_170407" / "bodleian_1_ok.txt"
    f.write_text("bodleian_000099\n")
    with pytest.raises(DataError, match="is no image of the dataset"):
        read_dataset(copy / "oxford5k", "oxford5k")


# --------------------------------------------------------------------------------------------
# AP: the trapezoidal rule of compute_ap.cpp against an independent computation


def independent_ap(ranked, positives, junk):
    """Junk removed first; then each positive found at 1-based rank r (the i-th found) adds
    1/|P| x (precision just before it, (i-1)/(r-1), or 1 at rank 1, + its precision i/r) / 2."""
    kept = [n for n in ranked if n not in junk]
    ranks = [r for r, n in enumerate(kept, 1) if n in positives]
    total = 0.0
    for i, r in enumerate(ranks, 1):
        before = (i - 1) / (r - 1) if r > 1 else 1.0
        total += (before + i / r) / 2 / len(positives)
    return total


def test_ap_of_hand_made_rankings():
    P, J = {"a", "b"}, {"j"}
    assert retrieval.compute_ap(["a", "x", "b"], P, J) == pytest.approx(19 / 24)
    for ranked in (["j", "a", "x", "b"], ["a", "j", "x", "b"], ["a", "x", "j", "b"], ["a", "x", "b", "j"]):
        assert retrieval.compute_ap(ranked, P, J) == pytest.approx(19 / 24)  # junk anywhere: no effect
    assert retrieval.compute_ap(["a", "b", "x"], P, J) == pytest.approx(1.0)
    assert retrieval.compute_ap(["x", "a"], P, J) == pytest.approx(0.5 * (0 + 0.5) / 2)  # b never ranked
    assert retrieval.compute_ap(["a", "x"], {"a", "j"}, J) == pytest.approx(0.5)  # junk wins over positive


def test_ap_equals_the_independent_computation_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(3, 40))
        names = [f"i{k}" for k in range(n)]
        rng.shuffle(names)
        kind = rng.choice(3, size=n, p=[0.3, 0.5, 0.2])
        pos = {m for m, k in zip(names, kind) if k == 0} or {names[0]}
        junk = {m for m, k in zip(names, kind) if k == 2} - pos
        ranked = [m for m in names if rng.random() > 0.1]  # some positives never ranked
        assert retrieval.compute_ap(ranked, pos, junk) == pytest.approx(independent_ap(ranked, pos, junk), abs=1e-12)


# --------------------------------------------------------------------------------------------
# R-MAC region grid


def test_rmac_grid_of_a_landscape_map_worked_by_hand():
    # 6 x 9: one extra region along the width; sides 6, 4, 3
    expected = ([(0, 0, 6, 6), (3, 0, 6, 6)]
                + [(x, y, 4, 4) for y in (0, 2) for x in (0, 2, 5)]
                + [(x, y, 3, 3) for y in (0, 1, 3) for x in (0, 2, 4, 6)])
    assert retrieval.rmac_regions(6, 9, 3) == expected
    # the portrait map is its transpose
    transposed = sorted(((y, x, s, s) for x, y, s, _ in expected), key=lambda r: (-r[2], r[1], r[0]))
    assert retrieval.rmac_regions(9, 6, 3) == transposed


def test_rmac_grid_of_a_square_map_has_l_squared_regions_per_level_inside_the_map():
    regions = retrieval.rmac_regions(10, 10, 3)
    assert len(regions) == 1 + 4 + 9
    assert [r[2] for r in regions] == [10] + [6] * 4 + [5] * 9
    assert all(0 <= x and 0 <= y and x + w <= 10 and y + h <= 10 for x, y, w, h in regions)
    assert retrieval.rmac_regions(1, 1, 3) == [(0, 0, 1, 1)]  # deeper levels would be under one cell


def test_region_vectors_are_unit_max_pools():
    import torch

    fmap = torch.rand(4, 6, 9)
    v = retrieval.region_vectors(fmap, 3)
    assert v.shape == (20, 4)
    first = fmap[:, 0:6, 0:6].amax(dim=(1, 2))
    assert torch.allclose(v[0], first / first.norm())


# --------------------------------------------------------------------------------------------
# End to end


def test_end_to_end_writes_a_schema_valid_result(tree, ckpt, tmp_path, capsys, one_thread):
    assert run_cli(main, _argv(ckpt, tree, tmp_path)) == 0
    files = sorted((tmp_path / "res").glob("retrieval__*.json"))
    assert len(files) == 1
    r = read_result(files[0])
    assert set(r["metrics"]) == {"oxford5k_map", "paris6k_map"}
    for name in ("oxford5k", "paris6k"):
        aps = r["details"]["per_query_ap"][name]
        assert len(aps) == 5 and r["metrics"][f"{name}_map"] == pytest.approx(np.mean(list(aps.values())))
        assert r["details"]["whitening"][name]["fitted_on"] != name
    assert r["protocol"]["max_size"] == 160 and r["protocol"]["levels"] == 3
    assert r["data"]["sizes"]["oxford5k_images"] == 28
    outcomes = check_intervals(files[0], r, ["oxford5k_map", "paris6k_map"])  # means: the value inside
    for name in ("oxford5k", "paris6k"):
        assert outcomes[f"{name}_map"].arrays["values"].tolist() == list(r["details"]["per_query_ap"][name].values())


def test_query_outcomes_pair_the_ith_queries_and_each_metric_is_its_own_datasets_mean():
    per_query = {"oxford5k": {"a_1": 10.0, "b_1": 30.0, "c_1": 80.0}, "paris6k": {"x_1": 50.0, "y_1": 0.0, "z_1": 40.0}}
    o = query_outcomes(per_query)
    assert o.ids == ["a_1|x_1", "b_1|y_1", "c_1|z_1"]
    assert o.metrics["oxford5k_map"].statistic(np.ones(3)) == pytest.approx(40.0)
    assert o.metrics["paris6k_map"].statistic(np.array([0.0, 2.0, 1.0])) == pytest.approx(40 / 3)
    # a resample is one of pairs: each metric sees its own queries resampled, never the other's
    assert o.metrics["oxford5k_map"].statistic(np.array([3.0, 0.0, 0.0])) == pytest.approx(10.0)
    assert query_outcomes({**per_query, "paris6k": {"x_1": 50.0}}) is None  # cannot be paired

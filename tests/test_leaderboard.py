"""dc-leaderboard: tables parsed back with markdown-it-py, literature against the thesis, --check."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

from dcbench.results import SCHEMA_NAME, SCHEMA_VERSION, validate_result


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def result(task: str, metrics: dict, *, ckpt: str = "km-test", variant: dict | None = None,
           scale: str = "full", created: str = "2025-01-01T00:00:00+00:00", protocol: dict | None = None,
           git: str = "0123456789abcdef0123456789abcdef01234567", best_epoch: int | None = None,
           details=None) -> dict:
    """A valid schema-v2 result (what :func:`dcbench.results.make_result` builds, minus torch)."""
    has_best = any(k.endswith("_best") for k in metrics)
    r = {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "task": task,
        "variant": variant or {"dataset": "ImageNet"},
        "checkpoint": {"name": ckpt, "sha256": sha(ckpt), "arch": "alexnet", "sobel": True,
                       "origin": "dcbench-train", "epoch": 10},
        "metrics": {k: float(v) for k, v in metrics.items()},
        "selection": {"rule": "last+best", "epochs": 20, "best_epoch": best_epoch or 17} if has_best
        else {"rule": "last", "epochs": 20, "best_epoch": None},
        "protocol": protocol if protocol is not None else {"lr": 0.01, "epochs": 20, "batch_size": 256},
        "data": {"name": "imagenet", "root": "/data", "fingerprint": "f" * 16, "sizes": {"train": 10}},
        "scale": scale,
        "environment": {"git_sha": git, "python": "3.11"},
        "timings": {"total": 1.0},
        "created": created,
        "cost": {"wall_s": 1.0, "device": "cpu: test", "gpu_hours": 0.0, "peak_host_mb": 100.0},
    }
    if details is not None:
        r["details"] = details
    return validate_result(r)


def write(folder: Path, name: str, r: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(json.dumps(r), encoding="utf-8")
    return p


def with_version(r: dict, version: int) -> dict:
    r = copy.deepcopy(r)
    r["schema_version"] = version
    return r


def parse_tables(markdown: str) -> dict[str, dict]:
    """``{"<h2> / <h3>": {"header": [...], "rows": [[(text, bold), ...], ...]}}`` via markdown-it-py."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    tables: dict[str, dict] = {}
    h2 = h3 = ""
    heading = None
    current = row = None
    in_head = False
    for i, t in enumerate(tokens):
        if t.type == "heading_open":
            heading = t.tag
        elif t.type == "inline" and heading:
            if heading == "h2":
                h2, h3 = t.content, ""
            elif heading == "h3":
                h3 = t.content
            heading = None
        elif t.type == "table_open":
            current = {"header": [], "rows": []}
            tables[f"{h2} / {h3}"] = current
        elif t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close":
            if in_head:
                current["header"] = [c for c, _ in row]
            else:
                current["rows"].append(row)
        elif t.type == "inline" and row is not None and tokens[i - 1].type in ("th_open", "td_open"):
            children = t.children or []
            bold = any(c.type == "strong_open" for c in children)
            text = "".join(c.content for c in children if c.type in ("text", "code_inline"))
            row.append((text, bold))
        elif t.type == "table_close":
            current = row = None
    return tables


def row_by_method(table: dict, method: str) -> dict:
    for row in table["rows"]:
        if row[0][0] == method:
            return {h: cell for h, cell in zip(table["header"], row)}
    raise AssertionError(f"no row {method!r} in {[r[0][0] for r in table['rows']]}")


# --------------------------------------------------------------------------- tests

import csv  # noqa: E402

import pytest  # noqa: E402

from dcbench.leaderboard.cli import main  # noqa: E402
from dcbench.leaderboard.literature import load_literature  # noqa: E402

THESIS_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "thesis_tables.csv"
FULL = "Full scale"
SMOKE = "Smoke scale"
T52 = "ImageNet classification, MLP on frozen convolutions (Table 5.2)"
T53 = "ImageNet, linear classifiers on conv1-conv5 (Table 5.3)"
T54 = "Places, linear classifiers on conv1-conv5 (Table 5.4)"
T55 = "PASCAL VOC: classification, detection, segmentation (Table 5.5)"
LOWSHOT = "Low-shot ImageNet classification (Figure 5.1)"
KNN = "k-NN graph diagnostics (§4.1)"


def run(tmp_path, *args, plots: bool = False) -> tuple[int, str, dict]:
    """dc-leaderboard ARGS --out tmp_path/LEADERBOARD.md; plots only when a test looks at them (speed)."""
    out = tmp_path / "LEADERBOARD.md"
    rc = main([*map(str, args), "--out", str(out), *([] if plots else ["--no-plots"])])
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    return rc, text, parse_tables(text)


def all_tasks(folder: Path, scale: str = "full", ckpt: str = "km-test") -> None:
    """One result per task/variant for ``ckpt``."""
    v = {"dataset": "ImageNet"}
    write(folder, f"mlp-{ckpt}.json", result("mlp", {"top1": 46.5}, ckpt=ckpt, scale=scale))
    convs = {f"conv{i}": 10.0 + 6 * i for i in range(1, 6)}
    write(folder, f"lin-{ckpt}.json", result("linear-imagenet", convs, ckpt=ckpt, scale=scale))
    write(folder, f"places-{ckpt}.json", result("linear-places", convs, ckpt=ckpt, scale=scale,
                                               variant={"dataset": "Places205"}))
    for layers, value in (("fc6-8", 72.0), ("all", 74.0)):
        write(folder, f"cls-{layers}-{ckpt}.json", result(
            "voc-classification", {"map": value}, ckpt=ckpt, scale=scale,
            variant={"dataset": "VOC2007", "layers": layers}))
        write(folder, f"det-{layers}-{ckpt}.json", result(
            "voc-detection", {"map": value - 20}, ckpt=ckpt, scale=scale,
            variant={"dataset": "VOC2007", "layers": layers, "method": "fast-rcnn"}))
        write(folder, f"seg-{layers}-{ckpt}.json", result(
            "voc-segmentation", {"miou": value - 30}, ckpt=ckpt, scale=scale,
            variant={"dataset": "VOC2012", "layers": layers}))
    write(folder, f"lowshot-{ckpt}.json", result(
        "lowshot", {"n4_mean": 5.0, "n4_std": 0.1, "n16_mean": 12.0, "n16_std": 0.2,
                    "random_n4_mean": 1.0, "random_n4_std": 0.05, "random_n16_mean": 3.0,
                    "random_n16_std": 0.1}, ckpt=ckpt, scale=scale, variant=v))
    write(folder, f"knn-{ckpt}.json", result("knn-graph", {"ratio_intra": 33.3, "ratio_median": 20.0},
                                              ckpt=ckpt, scale=scale, variant=v))


def test_literature_equals_the_thesis_numbers():
    if not THESIS_CSV.is_file():
        pytest.skip(f"{THESIS_CSV} not present (the shared reference folder sits beside the repo in CI)")
    with open(THESIS_CSV, encoding="utf-8") as f:
        thesis = list(csv.DictReader(line for line in f if not line.startswith("#")))
    thesis = {(r["table"], r["method"], r["column"]): r["value"] for r in thesis if r["table"][:2] in ("4.", "5.")}
    lit = load_literature()
    ours = {(r.table, r.method, r.column): "" if pd.isna(r.value) else r.value for r in lit.itertuples()
            if r.table[:2] in ("4.", "5.")}  # the rest cite other sources
    assert set(ours) == set(thesis)
    for key, value in thesis.items():
        assert (ours[key] == "") if value == "" else ours[key] == float(value), key


def test_literature_pinned_numbers():
    lit = load_literature().set_index(["table", "method", "column"])["value"]
    assert lit[("5.2", "PIC-ImNet-Sob", "mlp_top1")] == 45.9
    assert lit[("5.2", "Bojanowski and Joulin [28]", "mlp_top1")] == 36.0
    assert lit[("5.3", "Zhang et al. [32]", "imagenet_conv3")] == 35.4
    assert lit[("5.4", "Places labels", "places_conv5")] == 44.6
    assert lit[("5.5", "Noroozi and Favaro [39]", "voc07_det_all")] == 53.2
    assert pd.isna(lit[("5.5", "Pathak et al. [30]", "voc07_cls_fc6-8")])
    assert lit[("4.1", "PIC (85 epochs)", "mlp_top1_after_relu")] == 33.2
    assert lit[("4.2", "supervised SGT 256", "top1")] == 54.2
    assert lit[("4.3", "SGT 4096", "ms_per_minibatch")] == 713
    thesis_rows = lit.index.get_level_values("table").str[:2].isin(["4.", "5."])
    assert thesis_rows.sum() == 4 * 2 + 3 + 6 + 13 + 13 * 5 + 14 * 5 + 16 * 4  # rows of Tables 4.1-4.3, 5.2-5.5


def test_full_scale_tables_show_the_literature_without_bold_when_nothing_was_measured(tmp_path):
    write(tmp_path / "res", "smoke.json", result("mlp", {"top1": 3.0}, scale="smoke"))
    rc, text, tables = run(tmp_path, tmp_path / "res")
    assert rc == 0
    t = tables[f"{FULL} / {T53}"]
    assert t["header"][:7] == ["Method", "Source", "conv1", "conv2", "conv3", "conv4", "conv5"]
    row = row_by_method(t, "PIC-ImNet-Sob")
    assert row["conv3"] == ("40.8", False) and row["conv1"] == ("13.5", False)   # reported: never bold
    assert row_by_method(t, "ImageNet labels")["conv5"] == ("50.5", False)
    voc = tables[f"{FULL} / {T55}"]
    assert voc["header"][2:6] == ["Cls. fc6-8", "Cls. all", "Det. all", "Seg. all"]
    assert row_by_method(voc, "Pathak et al. [30]")["Cls. fc6-8"] == ("-", False)
    # one note for the tables that show published numbers only, after the measured ones
    note = "No full-scale result yet for the "
    assert text.count(note) == 1 and text.index(f"### {T52}") < text.index(note) < text.index(f"### {T53}")


def test_an_empty_results_folder_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    from dcbench.leaderboard.cli import cli

    (tmp_path / "results").mkdir()
    rc = cli_run(cli, [str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no result files (*.json) found" in err[0], err
    assert not (tmp_path / "results" / "LEADERBOARD.md").exists()


def cli_run(cli, argv: list[str]) -> int:
    import sys

    old = sys.argv
    sys.argv = ["dc-leaderboard", *argv]
    try:
        return cli()
    finally:
        sys.argv = old


def test_default_output_goes_inside_the_results_folder(tmp_path, monkeypatch):
    res = tmp_path / "results"
    write(res, "a.json", result("mlp", {"top1": 30.0}))
    monkeypatch.chdir(tmp_path)           # a LEADERBOARD.md here (a repository's) must stay untouched
    (tmp_path / "LEADERBOARD.md").write_text("tracked\n", encoding="utf-8")
    assert main([str(res), "--no-plots"]) == 0
    assert (tmp_path / "LEADERBOARD.md").read_text(encoding="utf-8") == "tracked\n"
    assert "km-test" in (res / "LEADERBOARD.md").read_text(encoding="utf-8")
    assert main([str(res / "a.json"), "--no-plots"]) == 0      # files: their folder


def test_results_in_several_folders_need_an_explicit_out(tmp_path, capsys):
    from dcbench.leaderboard.cli import cli

    write(tmp_path / "a", "a.json", result("mlp", {"top1": 30.0}))
    write(tmp_path / "b", "b.json", result("mlp", {"top1": 31.0}, ckpt="b"))
    rc = cli_run(cli, [str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--out" in err[0], err
    rc = cli_run(cli, [str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots", "--out", str(tmp_path / "L.md")])
    assert rc == 0 and (tmp_path / "L.md").is_file()


def test_every_task_lands_in_its_table(tmp_path):
    all_tasks(tmp_path / "res")
    rc, text, tables = run(tmp_path, tmp_path / "res")
    assert rc == 0
    mlp = row_by_method(tables[f"{FULL} / {T52}"], "km-test")
    assert mlp["Top-1"] == ("46.5", False)                      # a lone measured row: nothing to be best of
    assert mlp["Source"][0] == "measured (full)" and mlp["Runs"][0] == "1"
    assert mlp["Provenance"][0].startswith(f"sha256 {sha('km-test')[:8]} · 2025-01-01 · git 0123456")
    assert row_by_method(tables[f"{FULL} / {T52}"], "PIC-ImNet-Sob")["Top-1"] == ("45.9", False)
    lin = row_by_method(tables[f"{FULL} / {T53}"], "km-test")
    assert [lin[f"conv{i}"][0] for i in range(1, 6)] == ["16.0", "22.0", "28.0", "34.0", "40.0"]
    assert row_by_method(tables[f"{FULL} / {T54}"], "km-test")["conv5"] == ("40.0", False)
    voc = tables[f"{FULL} / {T55}"]
    assert voc["header"][2:8] == ["Cls. fc6-8", "Cls. all", "Det. fc6-8", "Det. all", "Seg. fc6-8", "Seg. all"]
    row = row_by_method(voc, "km-test")
    assert row["Cls. all"] == ("74.0", False) and row["Det. all"] == ("54.0", False)
    assert row["Seg. fc6-8"] == ("42.0", False) and row["Seg. all"] == ("44.0", False)
    low = tables[f"{FULL} / {LOWSHOT}"]
    assert low["header"][2:4] == ["n=4", "n=16"]
    assert row_by_method(low, "km-test")["n=4"] == ("5.0 (sd 0.1)", False)
    assert row_by_method(low, "Random init (baseline run with km-test)")["n=16"] == ("3.0 (sd 0.1)", False)
    knn = tables[f"{FULL} / {KNN}"]
    assert knn["header"][2:4] == ["ratio_intra", "ratio_median"]
    assert row_by_method(knn, "km-test")["ratio_intra"] == ("33.3", False)


def test_the_thesis_rule_gives_a_last_epoch_row_and_a_labelled_best_on_test_row(tmp_path):
    metrics = {f"conv{i}": 20.0 for i in range(1, 6)} | {f"conv{i}_best": 21.0 for i in range(1, 6)}
    write(tmp_path / "res", "a.json", result("linear-imagenet", metrics, best_epoch=12))
    rc, text, tables = run(tmp_path, tmp_path / "res")
    t = tables[f"{FULL} / {T53}"]
    assert row_by_method(t, "km-test (last epoch)")["conv1"] == ("20.0", False)
    best = row_by_method(t, "km-test (thesis rule: best epoch on test)")
    assert best["conv1"] == ("21.0", False) and best["Source"][0] == "measured (full)"
    assert best["Provenance"][0].endswith("best epoch 12")


def test_best_epochs_per_layer_are_named(tmp_path):
    metrics = {"conv1": 20.0, "conv2": 20.0, "conv1_best": 21.0, "conv2_best": 22.0}
    r = result("linear-imagenet", metrics, best_epoch=7)
    r["selection"]["best_epochs"] = {"conv1": 3, "conv2": 7}
    write(tmp_path / "res", "a.json", r)
    _, _, tables = run(tmp_path, tmp_path / "res")
    best = row_by_method(tables[f"{FULL} / {T53}"], "km-test (thesis rule: best epoch on test)")
    assert best["Provenance"][0].endswith("best epochs conv1 3, conv2 7")


def test_newest_of_several_runs_is_shown_with_the_count(tmp_path):
    res = tmp_path / "res"
    for i, (day, top1) in enumerate([("03", 30.0), ("01", 10.0), ("02", 20.0)]):
        write(res / f"sub{i}", "mlp.json", result("mlp", {"top1": top1}, created=f"2025-02-{day}T10:00:00+00:00"))
    write(res, "other.json", result("mlp", {"top1": 5.0}, ckpt="other"))
    rc, _, tables = run(tmp_path, res)
    t = tables[f"{FULL} / {T52}"]
    row = row_by_method(t, "km-test")
    assert row["Top-1"][0] == "30.0" and row["Runs"][0] == "3"
    assert "2025-02-03" in row["Provenance"][0]
    assert row_by_method(t, "other")["Runs"][0] == "1"


def test_invalid_file_is_named_and_skipped(tmp_path, capsys):
    res = tmp_path / "res"
    write(res, "good.json", result("mlp", {"top1": 30.0}))
    bad = write(res, "bad.json", {**result("mlp", {"top1": 30.0}), "metrics": {"top1": 130.0}})
    (res / "broken.json").write_text("{not json", encoding="utf-8")
    rc, text, tables = run(tmp_path, res)
    assert rc == 0
    err = capsys.readouterr().err
    assert f"skipped invalid result {bad}" in err and "broken.json" in err
    assert "## Files not included" in text and str(bad) in text
    assert row_by_method(tables[f"{FULL} / {T52}"], "km-test")["Runs"][0] == "1"


def test_dcbenchs_own_files_in_a_results_folder_are_not_reported_as_bad_results(tmp_path, capsys):
    res = tmp_path / "res"
    write(res, "good.json", result("mlp", {"top1": 30.0}))
    write(res / "suite", "suite-manifest.json", {"schema": "dcbench-suite-manifest", "schema_version": 1,
                                                  "runs": [], "tasks": {}})
    write(res / "lowshot-svm" / "ck-01234567", "k1_draw0.json", {"schema": "dcbench-lowshot-draw", "k": 1,
                                                                 "draw": 0, "classes": {}})
    rc, text, tables = run(tmp_path, res)
    assert rc == 0
    assert "suite-manifest" not in capsys.readouterr().err and "## Files not included" not in text
    assert row_by_method(tables[f"{FULL} / {T52}"], "km-test")["Runs"][0] == "1"


def test_other_schema_version_is_reported_not_mixed(tmp_path, capsys):
    res = tmp_path / "res"
    write(res, "v1.json", result("mlp", {"top1": 30.0}, created="2025-01-01T00:00:00+00:00"))
    v2 = write(res, "v3.json", with_version(result("mlp", {"top1": 99.0}, created="2030-01-01T00:00:00+00:00"), 3))
    rc, text, tables = run(tmp_path, res)
    assert rc == 0
    assert f"left out {v2}: result schema version 3" in capsys.readouterr().err
    row = row_by_method(tables[f"{FULL} / {T52}"], "km-test")
    assert row["Top-1"][0] == "30.0" and row["Runs"][0] == "1"
    assert f"`{v2}`: result schema version 3" in text


def test_with_smoke_results_only_the_smoke_section_comes_first(tmp_path):
    write(tmp_path / "res", "smoke.json", result("mlp", {"top1": 3.0}, scale="smoke"))
    _, text, _ = run(tmp_path, tmp_path / "res")
    assert text.index("## Smoke scale") < text.index("## Full scale")


def test_smoke_and_full_never_share_a_table(tmp_path):
    res = tmp_path / "res"
    write(res, "full.json", result("mlp", {"top1": 30.0}, ckpt="full-ckpt"))
    write(res, "smoke.json", result("mlp", {"top1": 3.0}, ckpt="smoke-ckpt", scale="smoke"))
    rc, text, tables = run(tmp_path, res)
    full, smoke = tables[f"{FULL} / {T52}"], tables[f"{SMOKE} / {T52}"]
    assert [r[0][0] for r in smoke["rows"]] == ["smoke-ckpt"]              # no literature either
    assert "smoke-ckpt" not in [r[0][0] for r in full["rows"]]
    assert row_by_method(full, "full-ckpt")["Source"][0] == "measured (full)"
    assert row_by_method(smoke, "smoke-ckpt")["Top-1"] == ("3.0", False)
    assert text.index("## Full scale") < text.index("## Smoke scale")


def test_protocol_values_that_differ_are_in_the_provenance(tmp_path):
    res = tmp_path / "res"
    for name in ("a", "b", "e"):
        write(res, f"{name}.json", result("mlp", {"top1": 30.0}, ckpt=name))
    write(res, "c.json", result("mlp", {"top1": 30.0}, ckpt="c", protocol={"lr": 0.05, "epochs": 20,
                                                                           "batch_size": 256}))
    write(res, "d.json", result("mlp", {"top1": 30.0}, ckpt="d", protocol={"lr": 0.05, "epochs": 20},
                                details={"protocol_defaults": {"lr": 0.05, "epochs": 90}}))
    _, text, tables = run(tmp_path, res)
    t = tables[f"{FULL} / {T52}"]
    assert "protocol" not in row_by_method(t, "a")["Provenance"][0]
    # the table keeps its width: each row points to its note, the note under the table lists the values
    c, d = (row_by_method(t, n)["Provenance"][0] for n in ("c", "d"))
    assert c.endswith("protocol [1]") and d.endswith("protocol [2]")
    section = text[text.index(f"### {T52}"):]
    section = section[:section.index("###", 4)]
    assert "- [1] `c`: lr=0\\.05" in section and "- [2] `d`: epochs=20" in section  # md_text escapes "."


def test_two_variants_in_one_column_get_qualified_rows(tmp_path):
    res = tmp_path / "res"
    for method, value in (("fast-rcnn", 50.0), ("faster-rcnn", 52.0)):
        write(res, f"{method}.json", result("voc-detection", {"map": value}, variant={
            "dataset": "VOC2007", "layers": "all", "method": method}))
    _, _, tables = run(tmp_path, res)
    t = tables[f"{FULL} / {T55}"]
    assert row_by_method(t, "km-test [method=fast-rcnn]")["Det. all"] == ("50.0", False)
    # no per-image outcomes: the two are not ranked, so neither is bold
    assert row_by_method(t, "km-test [method=faster-rcnn]")["Det. all"] == ("52.0", False)


def test_plots_are_written_and_linked_only_for_tables_with_a_measured_row(tmp_path):
    all_tasks(tmp_path / "res", scale="smoke")
    rc, text, _ = run(tmp_path, tmp_path / "res", plots=True)
    plots = tmp_path / "leaderboard_plots"
    for name in ("smoke_linear-imagenet.png", "smoke_linear-places.png", "smoke_lowshot.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(leaderboard_plots/{name})" in text
    # The full-scale tables hold literature rows only: no plot of them.
    assert sorted(p.name for p in plots.iterdir()) == ["smoke_linear-imagenet.png", "smoke_linear-places.png",
                                                       "smoke_lowshot.png"]
    assert "full_" not in text


def test_plots_of_an_earlier_run_that_this_run_does_not_draw_are_removed(tmp_path):
    all_tasks(tmp_path / "res", scale="smoke")
    run(tmp_path, tmp_path / "res", plots=True)
    plots = tmp_path / "leaderboard_plots"
    (plots / "notes.txt").write_text("mine", encoding="utf-8")          # not ours: left alone
    for pattern in ("lin-*.json", "places-*.json", "lowshot-*.json"):    # the plotted tables' results gone
        for f in (tmp_path / "res").glob(pattern):
            f.unlink()
    _, text, _ = run(tmp_path, tmp_path / "res", plots=True)
    assert sorted(p.name for p in plots.iterdir()) == ["notes.txt"]
    assert "leaderboard_plots/" not in text


def test_every_line_of_a_conv_plot_is_distinguishable(tmp_path):
    from dcbench.leaderboard.collect import load_results, newest_runs, to_frame
    from dcbench.leaderboard.plots import line_styles
    from dcbench.leaderboard.tables import build_tables

    metrics = {f"conv{i}": 20.0 + i for i in range(1, 6)} | {f"conv{i}_best": 21.0 + i for i in range(1, 6)}
    files = [write(tmp_path, "a.json", result("linear-imagenet", metrics)),
             write(tmp_path, "b.json", result("linear-imagenet", metrics, ckpt="other"))]
    newest = newest_runs(to_frame(load_results(files).results))
    table = next(t for t in build_tables(newest, load_literature())["full"] if t.spec.key == "linear-imagenet")
    styles = [s for s in line_styles(table) if s is not None]
    assert len(styles) == len(table.rows) > 10
    keys = {(s["color"], s["linestyle"], s["marker"]) for s in styles}
    assert len(keys) == len(styles)
    labels = [s["label"] for s in styles]
    assert len(set(labels)) == len(labels)


def with_outcomes(folder: Path, name: str, r: dict, hits: dict) -> Path:
    """Write ``r`` with per-image top-1 hits for its metrics (its values set from them), as a task does."""
    from dcbench.outcomes import Outcomes
    from dcbench.results import write_result

    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(hits.values())))
    out = Outcomes(ids=[f"val/{i}.jpg" for i in range(n)])
    for metric, h in hits.items():
        out.hits(metric, h)
        r["metrics"][metric] = 100.0 * float(np.mean(h))
    return write_result(r, folder / name, out)


def _hits(n: int, k: int, rng) -> np.ndarray:
    h = np.zeros(n, bool)
    h[rng.choice(n, k, replace=False)] = True
    return h


def test_bold_needs_a_paired_significant_lead_among_comparable_rows_and_never_marks_a_baseline(tmp_path):
    res, rng, n = tmp_path / "res", np.random.default_rng(0), 400
    strong = _hits(n, 240, rng)
    weak = strong & (rng.random(n) < 0.8)  # the same images, a fifth of the hits lost: a real gap
    near = strong.copy()
    near[np.flatnonzero(~strong)[0]] = True  # one image more: within noise
    for ckpt, h in (("a", strong), ("b", weak)):
        with_outcomes(res, f"mlp-{ckpt}.json", result("mlp", {"top1": 0.0}, ckpt=ckpt, details={"classes": 10}),
                      {"top1": h})
    rand = result("mlp", {"top1": 0.0}, ckpt="random-init", details={"classes": 10})
    rand["checkpoint"]["origin"] = "random"
    with_outcomes(res, "mlp-random.json", rand, {"top1": _hits(n, 320, rng)})
    for ckpt, h in (("c", strong), ("d", near)):  # another protocol: ranked on their own
        with_outcomes(res, f"mlp-{ckpt}.json", result("mlp", {"top1": 0.0}, ckpt=ckpt, details={"classes": 10},
                                                      protocol={"lr": 0.1, "epochs": 20, "batch_size": 256}),
                      {"top1": h})
    for ckpt, conv in (("a", 20.0), ("b", 22.0)):  # no per-image outcomes: nothing to rank them by
        write(res, f"lin-{ckpt}.json", result("linear-imagenet", {"conv1": conv}, ckpt=ckpt))
    _, text, tables = run(tmp_path, res)
    mlp = tables[f"{FULL} / {T52}"]
    text_a, bold_a = row_by_method(mlp, "a")["Top-1"]
    value, half = map(float, text_a.split(" ± "))
    assert bold_a and value == 60.0 and abs(half - 1.96 * 100 * (0.6 * 0.4 / n) ** 0.5) < 0.5  # ~ the normal approximation
    assert row_by_method(mlp, "b")["Top-1"][1] is False
    assert row_by_method(mlp, "random-init")["Top-1"][1] is False     # a baseline, however high
    assert row_by_method(mlp, "PIC-ImNet-Sob")["Top-1"] == ("45.9", False)   # reported: never bold
    assert not row_by_method(mlp, "d")["Top-1"][1] and not row_by_method(mlp, "c")["Top-1"][1]
    assert "Top\\-1: `d` 60.2 vs `c` 60.0: difference +0.2 [+0.0, +0.8], not significant" in text
    assert "Top\\-1: `a` 60.0 vs `b`" in text and "significant." in text
    lin = tables[f"{FULL} / {T53}"]
    assert row_by_method(lin, "b")["conv1"] == ("22.0", False)
    assert "conv1: `b` 22.0 vs `a` 20.0: not compared (no per\\-image outcomes for both rows)" in text


def test_a_lead_within_noise_of_chance_is_not_bold(tmp_path):
    res, rng, n = tmp_path / "res", np.random.default_rng(1), 400
    a = _hits(n, 48, rng)                    # 12% with 10 classes: its interval reaches chance (10%)
    b = a & (rng.random(n) < 0.1)
    for ckpt, h in (("a", a), ("b", b)):
        with_outcomes(res, f"mlp-{ckpt}.json", result("mlp", {"top1": 0.0}, ckpt=ckpt, details={"classes": 10}),
                      {"top1": h})
    _, text, tables = run(tmp_path, res)
    assert row_by_method(tables[f"{FULL} / {T52}"], "a")["Top-1"][1] is False
    assert "significant; `a` is within noise of chance (10.0)" in text


def test_an_outcomes_file_that_does_not_match_leaves_the_interval_out_and_says_why(tmp_path):
    res, rng = tmp_path / "res", np.random.default_rng(2)
    path = with_outcomes(res, "mlp-a.json", result("mlp", {"top1": 0.0}, ckpt="a"), {"top1": _hits(100, 50, rng)})
    npz = path.with_name(path.name.removesuffix(".json") + ".outcomes.npz")
    npz.write_bytes(npz.read_bytes()[:-10])
    _, text, tables = run(tmp_path, res)
    assert row_by_method(tables[f"{FULL} / {T52}"], "a")["Top-1"][0] == "50.0 ‡"
    assert "interval left out:" in text and "sha256 differs from the one its result records" in text


def test_provenance_names_each_dataset_once_whatever_its_case(tmp_path):
    res = tmp_path / "res"
    for name, task, metric, layers in (("voc2007", "voc-classification", "map", "fc6-8"),
                                       ("VOC2007", "voc-detection", "map", "all"),
                                       ("VOC2012", "voc-segmentation", "miou", "all")):
        r = result(task, {metric: 10.0}, variant={"dataset": name, "layers": layers})
        r["data"]["name"] = name
        write(res, f"{task}.json", r)
    _, _, tables = run(tmp_path, res)
    prov = row_by_method(tables[f"{FULL} / {T55}"], "km-test")["Provenance"][0]
    assert prov.split(" · ")[3] == "data VOC2007, VOC2012"


def test_class_count_of_the_measured_data_is_stated(tmp_path):
    res = tmp_path / "res"
    r = result("linear-places", {"conv1": 80.0}, scale="smoke", variant={"dataset": "Places205"},
               details={"classes": 8})
    r["data"]["name"] = "places205"
    write(res, "places.json", r)
    _, text, _ = run(tmp_path, res)
    section = text[text.index("## Smoke scale"):]
    section = section[section.index(f"### {T54}"):]
    assert "places205: 8 classes (chance 12.5%)" in section.split("###")[1]
    assert "not on the thesis's scale" in section


def test_knn_pictures_from_details_are_linked(tmp_path):
    res = tmp_path / "res"
    (res / "pics").mkdir(parents=True)
    (res / "pics" / "nn.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write(res, "knn.json", result("knn-graph", {"ratio_intra": 40.0}, scale="smoke",
                                  details={"png_neighbours": "pics/nn.png", "other_png": "pics/nn.png",
                                           "missing_png": "nope.png"}))
    _, text, _ = run(tmp_path, res)
    # alt text in words: what the picture shows, then whose it is
    assert "![query images and their nearest neighbours of km\\-test](res/pics/nn.png)" in text
    assert "![other png of km\\-test](res/pics/nn.png)" in text and "nope.png" not in text


EXPECTED = """\
- task: mlp
  checkpoint: km-test
  metric: top1
  value: 46.4
  tolerance: 0.2
- task: linear-imagenet
  checkpoint: {sha8}
  variant: {{dataset: ImageNet}}
  scale: full
  metric: conv5
  value: 40.0
"""


def test_check_passes_within_tolerance(tmp_path, capsys):
    all_tasks(tmp_path / "res")
    exp = tmp_path / "expected.yaml"
    exp.write_text(EXPECTED.format(sha8=sha("km-test")[:8]), encoding="utf-8")
    rc, _, _ = run(tmp_path, tmp_path / "res", "--check", exp)
    assert rc == 0, capsys.readouterr().err
    assert "2 expected number(s) within tolerance" in capsys.readouterr().out


def test_check_fails_on_drift_and_on_missing_results(tmp_path, capsys):
    all_tasks(tmp_path / "res")
    exp = tmp_path / "expected.yaml"
    exp.write_text(EXPECTED.format(sha8=sha("km-test")[:8]).replace("46.4", "45.0") + """\
- task: voc-segmentation
  checkpoint: nobody
  metric: miou
  value: 40.0
""", encoding="utf-8")
    rc, _, _ = run(tmp_path, tmp_path / "res", "--check", exp)
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    assert any(line.startswith("DRIFT mlp km-test top1 [full]: got 46.5, expected 45") for line in err)
    assert any(line.startswith("MISSING voc-segmentation nobody miou") for line in err)
    assert not any("linear-imagenet" in line for line in err)


@pytest.mark.parametrize("content, fragment", [
    ("- task: mlp\n  metric: top1\n", "missing checkpoint, value"),
    ("- {task: nope, checkpoint: a, metric: m, value: 1}\n", "unknown task 'nope'"),
    ("- {task: mlp, checkpoint: a, metric: m, value: x}\n", "value must be a number"),
    ("[unclosed\n", "not valid YAML"),
])
def test_check_file_errors_are_one_line_exit_2(tmp_path, capsys, content, fragment):
    from dcbench.leaderboard.cli import cli

    exp = tmp_path / "expected.yaml"
    exp.write_text(content, encoding="utf-8")
    import sys

    old = sys.argv
    sys.argv = ["dc-leaderboard", str(tmp_path), "--check", str(exp), "--out", str(tmp_path / "L.md")]
    try:
        rc = cli()
    finally:
        sys.argv = old
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and fragment in err[0], err


def test_missing_results_path_is_a_user_error(tmp_path, capsys):
    import sys

    from dcbench.leaderboard.cli import cli

    old = sys.argv
    sys.argv = ["dc-leaderboard", str(tmp_path / "nowhere"), "--out", str(tmp_path / "L.md")]
    try:
        rc = cli()
    finally:
        sys.argv = old
    assert rc == 2 and "nowhere: no such file or directory" in capsys.readouterr().err


REAL = Path(__file__).parent / "data" / "results"


def test_generated_from_real_smoke_results(tmp_path):
    """tests/data/results: result files written by the transfer tasks' smoke runs (dc-transfer ...
    --scale smoke on dc-convert random checkpoints), kept as they came out."""
    files = sorted(REAL.rglob("*.json"))
    assert files, f"no real result files under {REAL}"
    rc, text, tables = run(tmp_path, REAL, plots=True)
    assert rc == 0 and "No valid result file" not in text
    assert f"{len(files)} valid result file(s) of {len(files)} read" in text
    groups: dict[tuple, list[dict]] = {}
    for f in files:
        r = json.loads(f.read_text(encoding="utf-8"))
        key = (r["task"], r["checkpoint"]["sha256"], json.dumps(r["variant"], sort_keys=True))
        groups.setdefault(key, []).append(r)
    seen = 0
    for runs in groups.values():
        r = max(runs, key=lambda x: x["created"])                        # the newest is shown
        title = {"mlp": T52, "linear-imagenet": T53, "linear-places": T54}.get(r["task"])
        if title is None:
            continue
        table = tables[f"{SMOKE} / {title}"]
        assert all(row[1][0] == "measured (smoke)" for row in table["rows"])   # no literature at smoke scale
        # these v1 results follow the thesis's rule: their last-epoch row says so
        label = r["checkpoint"]["name"] + (" (last epoch)" if r["selection"]["rule"] == "last+best" else "")
        row = row_by_method(table, label)
        assert row["Runs"][0] == str(len(runs))
        for header, metric in (("Top-1", "top1"), *((f"conv{i}", f"conv{i}") for i in range(1, 6))):
            if header in row and metric in r["metrics"]:
                assert row[header][0] == f"{r['metrics'][metric]:.1f}"
                seen += 1
        assert row["Provenance"][0].startswith(f"sha256 {r['checkpoint']['sha256'][:8]} · {r['created'][:10]}")
    assert seen
    for title in (T53, T54):   # the measured rows never reach the full-scale tables
        assert all(not row[1][0].startswith("measured") for row in tables[f"{FULL} / {title}"]["rows"])


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_example_expected_yaml_passes_on_the_example_results(tmp_path, capsys):
    """examples/EXPECTED.yaml (the file dc-leaderboard --help points to) against examples/smoke-results."""
    rc = main([str(EXAMPLES / "smoke-results"), "--out", str(tmp_path / "L.md"), "--no-plots",
               "--check", str(EXAMPLES / "EXPECTED.yaml")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "check: 5 expected number(s) within tolerance" in out.out


def test_the_example_expected_yaml_catches_a_drifted_result(tmp_path, capsys):
    res = tmp_path / "res"
    for f in (EXAMPLES / "smoke-results").glob("*.json"):
        r = json.loads(f.read_text(encoding="utf-8"))
        if r["task"] == "mlp" and r["checkpoint"]["name"] == "smoke-train":
            r["metrics"]["top1"] += 2.0
        write(res, f.name, r)
    rc = main([str(res), "--out", str(tmp_path / "L.md"), "--no-plots", "--check", str(EXAMPLES / "EXPECTED.yaml")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1
    assert [line.split(":")[0] for line in err if line.startswith(("DRIFT", "MISSING"))] == [
        "DRIFT mlp smoke-train top1 [smoke]"]


def test_chapter4_tables_show_the_thesis_rows_at_full_scale_and_nothing_at_smoke_scale(tmp_path):
    write(tmp_path / "res", "smoke.json", result("mlp", {"top1": 3.0}, scale="smoke"))
    rc, text, tables = run(tmp_path, tmp_path / "res")
    assert rc == 0
    t41 = tables[f"{FULL} / Descriptor for clustering: MLP on frozen convolutions after 85 epochs (Table 4.1)"]
    assert t41["header"][2:4] == ["before ReLU", "after ReLU"]
    assert row_by_method(t41, "k-means 10K (85 epochs)")["before ReLU"] == ("31.1", False)
    assert row_by_method(t41, "PIC (85 epochs)")["after ReLU"] == ("33.2", False)
    t42 = tables[f"{FULL} / Supervised training with the SGT approximation (Table 4.2)"]
    assert [r[0][0] for r in t42["rows"]] == ["supervised no approx", "supervised SGT 256", "supervised SGT 512"]
    assert row_by_method(t42, "supervised SGT 512")["Source"] == ("reported, supervised (thesis Table 4.2)", False)
    t43 = tables[f"{FULL} / Time per mini-batch with and without SGT (Table 4.3)"]
    assert [row_by_method(t43, m)["ms per mini-batch"][0] for m in ("no approx", "SGT 4096")] == ["154.0", "713.0"]
    assert not [k for k in tables if k.startswith(SMOKE) and "Table 4." in k]  # no literature at smoke scale


def test_resnet_rows_get_their_own_tables_never_the_alexnet_ones(tmp_path):
    res = tmp_path / "res"
    alex = result("linear-imagenet", {f"conv{i}": 20.0 + i for i in range(1, 6)}, ckpt="alex", scale="smoke")
    r50 = result("linear-imagenet", {"conv1": 11.0, "res2": 12.0, "res3": 13.0, "res4": 14.0, "res5": 15.0,
                                     "res5_gap": 16.0}, ckpt="r50", scale="smoke")
    r50["checkpoint"]["arch"] = "resnet50"
    r50_voc = result("voc-classification", {"map": 30.0}, ckpt="r50", scale="smoke",
                     variant={"dataset": "voc2007", "layers": "res5"})
    r50_voc["checkpoint"]["arch"] = "resnet50"
    for i, r in enumerate((alex, r50, r50_voc)):
        write(res, f"{i}.json", r)
    rc, md, tables = run(tmp_path, res)
    assert rc == 0
    t53 = tables[f"{SMOKE} / {T53}"]
    assert [r[0][0] for r in t53["rows"]] == ["alex"]
    r_lin = tables[f"{SMOKE} / ResNets: ImageNet, linear classifiers on conv1, res2-res5 and pooled res5 "
                   "(Table 5.3's protocol)"]
    assert r_lin["header"][2:8] == ["conv1", "res2", "res3", "res4", "res5", "res5 pooled"]
    assert [r[0][0] for r in r_lin["rows"]] == ["r50"] and row_by_method(r_lin, "r50")["res5 pooled"][0] == "16.0"
    r_voc = tables[f"{SMOKE} / ResNets: PASCAL VOC classification, detection, segmentation (Table 5.5's protocol)"]
    assert row_by_method(r_voc, "r50")["Cls. res5"][0] == "30.0"
    assert f"{SMOKE} / {T55}" not in tables  # the only VOC result is a ResNet's
    # no literature row in a ResNet table, also at full scale: none has a named source in literature.csv
    r50_full = copy.deepcopy(r50)
    r50_full["scale"] = "full"
    write(res, "3.json", r50_full)
    _, _, tables = run(tmp_path, res)
    full = tables[f"{FULL} / ResNets: ImageNet, linear classifiers on conv1, res2-res5 and pooled res5 "
                  "(Table 5.3's protocol)"]
    assert [r[1][0] for r in full["rows"]] == ["measured (full)"]


def test_diff_names_each_protocol_value_that_differs_and_the_paired_metric_difference(tmp_path, capsys):
    from dcbench.leaderboard.diff import main as diff_main

    rng = np.random.default_rng(3)
    hits = _hits(300, 150, rng)
    a = with_outcomes(tmp_path / "a", "a.json", result("mlp", {"top1": 0.0}), {"top1": hits})
    other = result("mlp", {"top1": 0.0}, protocol={"lr": 0.05, "epochs": 30, "batch_size": 128})
    b = with_outcomes(tmp_path / "b", "b.json", other, {"top1": hits & (rng.random(300) < 0.7)})
    assert diff_main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "3 value(s) differ:" in out
    for line in ("protocol.lr: A 0.01 | B 0.05", "protocol.epochs: A 20 | B 30", "protocol.batch_size: A 256 | B 128"):
        assert line in out
    assert "metrics (A - B), paired over the same test images:" in out
    assert re.search(r"top1: A 50\.00 \| B \d+\.\d\d \| A - B \+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\] 95%, significant", out)


def test_diff_of_a_result_and_a_folder_is_a_one_line_error(tmp_path, capsys):
    from dcbench.errors import run_cli

    a = write(tmp_path, "a.json", result("mlp", {"top1": 1.0}))
    assert run_cli(main, ["diff", str(a), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diff two results or two checkpoints" in err[0]

"""dc-figures: chapter-4 figures from dc-train output folders (synthetic folders, one real tiny run)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from PIL import Image

from dcbench.errors import run_cli
from dcbench.leaderboard import figures_cli
from dcbench.leaderboard.runs import load_run, run_labels
from dcbench.text import md_text as md

SHA = "ab" * 32


def make_run(folder: Path, *, config: dict | None = None, records: list[dict] | None = None,
             epochs: int = 3, spectrum: bool = False, **top) -> Path:
    """A folder shaped like dc-train's --out: config.json and log.jsonl (no checkpoint needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"preset": "km-ImNet-Sob", "k": 50, "sampler": "uniform", "lr": 0.02, "out": str(folder), "workers": 0}
    cfg.update(config or {})
    doc = {"config": cfg, "data_root": "/data", "num_images": 600, "data_fingerprint": SHA, "world_size": 1,
           "git_sha": "252dea18c548aaa9e3f5bbefd0cd0d4390881ff4", "started": "2026-11-30T17:44:03+00:00",
           "environment": {"device": "cpu", "torch": "2.14.1"}}
    doc.update(top)
    (folder / "config.json").write_text(json.dumps(doc))
    if records is None:
        records = []
        for e in range(1, epochs + 1):
            r = {"epoch": e, "steps": 10, "loss": 4.0 - 0.1 * e, "log_k": 3.912, "nmi_prev": None if e == 1 else 0.5,
                 "nmi_labels": 0.1 + 0.02 * e, "ratio_edge_intra_class": 0.15 + 0.01 * e}
            if spectrum:
                r["pca_variance"] = [min(1.0, 0.2 * (i + 1) + 0.01 * e) for i in range(8)]
            records.append(r)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def figures(argv: list[str]) -> int:
    return run_cli(figures_cli.main, [str(a) for a in argv])


def test_two_runs_give_one_curve_each_labelled_by_the_option_that_differs(tmp_path):
    a = make_run(tmp_path / "a", config={"sampler": "uniform"})
    b = make_run(tmp_path / "b", config={"sampler": "proportional"})
    out = tmp_path / "page" / "FIGURES.md"
    assert figures([a, b, "--out", out]) == 0
    assert run_labels([load_run(a), load_run(b)]) == ["sampler=uniform", "sampler=proportional"]
    page = out.read_text()
    folder = out.parent / "figures_png"
    for name in ("ratio_edge_intra_class", "nmi_labels", "nmi_prev", "loss"):
        assert f"](figures_png/{name}.png)" in page
        with Image.open(folder / f"{name}.png") as im:
            assert im.size[0] > 300
    assert "pca_variance: no run's log has a PCA spectrum" in page
    assert "Per-class ratio box plots" in page
    assert "| sampler=uniform |" in page and "| sampler=proportional |" in page
    assert "| 252dea18c548 |" in page and "abababababab" in page
    d = make_run(tmp_path / "dirty", git_sha="252dea18c548aaa9e3f5bbefd0cd0d4390881ff4+dirty")
    assert load_run(d).provenance["git"] == "252dea18c548+dirty"


def test_the_curves_are_placed_at_the_updates_of_their_measurement(tmp_path):
    run = load_run(make_run(tmp_path / "a", records=[{"epoch": 1, "steps": 10}, {"epoch": 2, "steps": 30},
                                                     {"epoch": 3, "steps": 5}]))
    assert run.updates_before() == [0, 10, 40]  # clustering of epoch e sees e-1 epochs of training
    assert run.updates_after() == [10, 40, 45]  # a loss is the mean over its epoch, placed at its end


def test_identical_configs_are_labelled_by_folder_and_never_collide(tmp_path):
    runs = [load_run(make_run(tmp_path / "x" / "run")), load_run(make_run(tmp_path / "y" / "run")),
            load_run(make_run(tmp_path / "other"))]
    labels = run_labels(runs)
    assert len(set(labels)) == 3 and labels[2] == "other" and all("run" in lab for lab in labels[:2])


def test_pca_variance_is_drawn_when_the_log_has_a_spectrum(tmp_path):
    a = make_run(tmp_path / "a", spectrum=True)
    out = tmp_path / "F.md"
    assert figures([a, "--out", out]) == 0
    assert "](f_png/pca_variance.png)" in out.read_text()
    assert (tmp_path / "f_png" / "pca_variance.png").is_file()


def test_a_figure_of_an_earlier_page_that_is_not_redrawn_is_removed(tmp_path):
    out = tmp_path / "F.md"
    assert figures([make_run(tmp_path / "a", spectrum=True), "--out", out]) == 0
    assert figures([make_run(tmp_path / "b"), "--out", out]) == 0
    assert not (tmp_path / "f_png" / "pca_variance.png").exists()
    assert (tmp_path / "f_png" / "loss.png").is_file()


def test_same_logs_give_the_same_png_bytes(tmp_path):
    a = make_run(tmp_path / "a")
    assert figures([a, "--out", tmp_path / "1.md"]) == 0
    assert figures([a, "--out", tmp_path / "2.md"]) == 0
    assert (tmp_path / "1_png" / "loss.png").read_bytes() == (tmp_path / "2_png" / "loss.png").read_bytes()


@pytest.mark.parametrize("setup, fragment", [
    (lambda d: d.mkdir(), "config.json is missing"),
    (lambda d: make_run(d) and (d / "log.jsonl").unlink(), "log.jsonl is missing"),
    (lambda d: make_run(d) and (d / "config.json").write_text("[1, 2]"), "not a dc-train config"),
    (lambda d: make_run(d, records=[]), "holds no epoch"),
    (lambda d: make_run(d, records=[{"epoch": 1, "steps": -3}]), "'steps' must be"),
    (lambda d: make_run(d, records=[{"epoch": 1, "steps": 3, "loss": float("nan")}]), "'loss' must be"),
    (lambda d: make_run(d, records=[{"epoch": 1, "steps": 3, "ratio_edge_intra_class": "0.5"}]), "'ratio_edge"),
    (lambda d: make_run(d, records=[{"epoch": 1, "steps": 3, "pca_variance": [0.9, 0.2]}]), "'pca_variance'"),
    (lambda d: make_run(d, records=[{"epoch": 1, "steps": 3, "pca_variance": [0.5] * 5000}]), "'pca_variance'"),
    (lambda d: make_run(d) and (d / "config.json").write_bytes(b"\xff\xfe"), "not UTF-8"),
    (lambda d: make_run(d) and (d / "log.jsonl").write_bytes(b"[" * 200_000), "holds no epoch"),
    (lambda d: make_run(d) and (d / "log.jsonl").write_text('{"epoch": ' + "9" * 5000 + "}"), "holds no epoch"),
])
def test_a_bad_run_folder_is_one_line_exit_2(tmp_path, capsys, setup, fragment):
    d = tmp_path / "run"
    setup(d)
    assert figures([d, "--out", tmp_path / "F.md"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err and str(d) in err
    assert not (tmp_path / "F.md").exists()


def test_an_oversized_log_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    from dcbench.leaderboard import runs

    d = make_run(tmp_path / "run")
    monkeypatch.setattr(runs, "MAX_LOG_BYTES", 100)
    assert figures([d, "--out", tmp_path / "F.md"]) == 2
    assert "larger than" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_the_log_is_refused_not_read(tmp_path, capsys):
    d = make_run(tmp_path / "run")
    (d / "log.jsonl").unlink()
    os.mkfifo(d / "log.jsonl")
    assert figures([d, "--out", tmp_path / "F.md"]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_a_partial_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    d = make_run(tmp_path / "run")
    with open(d / "log.jsonl", "a") as f:
        f.write('{"epoch": 4, "ste')
    assert figures([d, "--out", tmp_path / "F.md"]) == 0
    assert "skipped 1 line" in capsys.readouterr().err
    assert len(load_run(d).records) == 3


def test_log_lines_without_an_epoch_are_left_out(tmp_path):
    d = make_run(tmp_path / "run")
    with open(d / "log.jsonl", "a") as f:
        f.write('{"kind": "diag", "step": 5, "ratio_edge_intra_class": 0.3}\n')
    assert [r["epoch"] for r in load_run(d).records] == [1, 2, 3]


def test_hostile_config_values_are_bounded_and_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>|$\\alpha$_" + "A" * 500 + "\n# heading"
    a = make_run(tmp_path / "a", config={"sampler": evil, "extra": {"deep": [[[[1]]]]}},
                 git_sha="../../etc/passwd", started="<b>now</b>", environment={"device": "`rm -rf`" * 50})
    b = make_run(tmp_path / "b")
    out = tmp_path / "F.md"
    assert figures([a, b, "--out", out]) == 0
    page = out.read_text()
    html = MarkdownIt("commonmark").enable("table").render(page)
    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == 4 and all('src="f_png/' in i for i in imgs)  # only our own figures
    assert "onerror" not in "".join(imgs) and "<b>" not in html and "passwd" not in page
    assert html.count("<h1>") == 1  # the injected "# heading" is text, not a heading
    assert "A" * 60 not in page
    assert sorted(p.name for p in (tmp_path / "f_png").iterdir()) == sorted(
        ["loss.png", "nmi_labels.png", "nmi_prev.png", "ratio_edge_intra_class.png"])
    for line in page.splitlines():
        if line.startswith("| sampler="):  # table rows keep their column count: every | escaped
            assert line.replace("\\|", "").count("|") == 9


def test_markdown_escape_leaves_no_markup():
    assert md("[x](javascript:y) *b* <i>\n# h") == r"\[x\]\(javascript\:y\) \*b\* &lt;i&gt;\\x0a\# h"


def test_too_many_runs_or_a_non_markdown_out_is_a_usage_error(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    assert figures([a, "--out", tmp_path / "F.png"]) == 2
    assert figures([a] * 51 + ["--out", tmp_path / "F.md"]) == 2
    assert "at most 50" in capsys.readouterr().err


@pytest.mark.slow
def test_figures_of_a_real_two_epoch_dc_train_run(tmp_path, one_thread):
    """A real (tiny) dc-train folder is read as written: every diagnostic it logs is drawn."""
    from dcbench.train.config import make_config
    from dcbench.train.loop import train

    run = tmp_path / "run"
    train(make_config(epochs=2, steps_per_epoch=2, batch_size=16, k=10, out=str(run), quiet=True))
    out = tmp_path / "F.md"
    assert figures([run, "--out", out]) == 0
    r = load_run(run)
    assert [x["epoch"] for x in r.records] == [1, 2] and r.updates_after() == [2, 4]
    assert r.provenance["git"] != "?" and r.provenance["data_fingerprint"] != "?"
    page = out.read_text()
    for name in ("ratio_edge_intra_class", "nmi_labels", "nmi_prev", "loss"):
        assert f"](f_png/{name}.png)" in page


def test_dc_figures_help_explains_every_flag_and_names_the_default_out():
    parser = figures_cli.get_args_parser()
    text = parser.format_help()
    assert "(default: dc-figures-out/FIGURES.md)" in text and "(default: None)" not in text
    assert all(a.help for a in parser._actions)


def test_labels_stay_bounded_when_many_options_differ(tmp_path):
    runs = [load_run(make_run(tmp_path / str(i), config={f"opt{j}": i for j in range(500)})) for i in range(2)]
    labels = run_labels(runs)
    assert labels == ["opt0=0, opt1=0, opt10=0, opt100=0, …", "opt0=1, opt1=1, opt10=1, opt100=1, …"]
    out = tmp_path / "F.md"
    assert figures([tmp_path / "0", tmp_path / "1", "--out", out]) == 0
    assert len(out.read_text()) < 20_000

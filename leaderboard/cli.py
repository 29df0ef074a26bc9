"""dc-leaderboard RESULTS... [--out LEADERBOARD.md] [--check EXPECTED.yaml]; dc-leaderboard diff A B

``diff`` (:mod:`dcbench.leaderboard.diff`) says what differs between two results or checkpoints.

Reads every result file (folders are searched recursively for ``*.json``), keeps the newest
run of each (scale, task, checkpoint, variant), and writes the markdown tables with the
literature beside our numbers, plus PNG plots in ``<out stem, lower case>_plots/`` next to the
markdown. Without ``--out`` the markdown goes inside the results folder, never onto a file of
the repository. An invalid file is named on stderr and skipped; a result of another schema
version is reported and left out. ``--check`` then compares numbers with EXPECTED.yaml (format
in :mod:`dcbench.leaderboard.check`) and exits 1 on any drift.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from dcbench.atomic import write_text_atomic
from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.leaderboard import check as checking
from dcbench.leaderboard import plots
from dcbench.leaderboard.collect import find_result_files, load_results, newest_runs, to_frame
from dcbench.leaderboard.literature import load_literature
from dcbench.leaderboard.render import render
from dcbench.leaderboard.tables import Table, build_tables, of_family
from dcbench.text import md_text, printable


def get_args_parser(add_help: bool = True) -> ArgumentParser:
    p = ArgumentParser("dc-leaderboard", add_help=add_help,
                       description="Turn result files into LEADERBOARD.md: the thesis's chapter 5 tables, "
                                   "literature rows beside measured ones, plus PNG plots. "
                                   "'dc-leaderboard diff A B' says why two results differ.")
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS",
                   help="result JSON files or folders (searched recursively for *.json)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown to write; its plots go to <name>_plots/ beside it (default: "
                        "LEADERBOARD.md inside the folder holding RESULTS, e.g. results/LEADERBOARD.md)")
    p.add_argument("--check", type=Path, default=None, metavar="EXPECTED.yaml",
                   help="exit 1 if a measured number drifts beyond its tolerance; EXPECTED.yaml lists "
                        "task, checkpoint (name or sha256 prefix), metric, value and optional tolerance, "
                        "variant, scale per entry (example: examples/EXPECTED.yaml)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def default_out(results: Sequence[Path]) -> Path:
    """LEADERBOARD.md in the one folder that holds ``results`` (a folder argument, or the files' folder).

    Generated output never lands on a tracked file by default: it goes beside the results it was
    made from, and several folders need an explicit ``--out``."""
    folders = sorted({str(p if p.is_dir() else p.parent) for p in results})
    if len(folders) != 1:
        raise UserError(f"RESULTS span several folders ({', '.join(folders)}); "
                        "name the markdown to write with --out FILE")
    return Path(folders[0]) / "LEADERBOARD.md"


def plots_dir(out: Path) -> Path:
    return out.with_name(f"{out.stem.lower()}_plots")


# The names plots.draw gives its PNGs; only these are ever removed from a plots folder.
PLOT_NAME = re.compile(r"(full|smoke)_[a-z0-9-]+\.png")


def remove_stale_plots(folder: Path, keep: set[str]) -> list[Path]:
    """Delete plots of an earlier run that this run did not redraw (nothing would link to them)."""
    stale = [p for p in sorted(folder.glob("*.png"))
             if PLOT_NAME.fullmatch(p.name) and p.name not in keep] if folder.is_dir() else []
    for p in stale:
        p.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return stale


# What each picture of a k-NN-graph result shows, as the alt text says it
PICTURES = {"png_filters": "conv1 filters", "png_neighbours": "query images and their nearest neighbours",
            "png_ratios": "distribution of the intra-class edge ratio"}


def _knn_images(table: Table, newest, out: Path) -> list[str]:
    """Markdown links to the PNGs a k-NN-graph result names in ``details`` (those that exist).

    The names are the result author's: only files under the result file's own folder are linked,
    the link target is percent-encoded and the alt text escaped."""
    links = []
    sub = newest[(newest["task"] == "knn-graph") & (newest["scale"] == table.scale)]
    for _, r in sub.iterrows():
        base = Path(r["path"]).parent.resolve()
        for key, value in sorted(r["details"].items()):
            for v in value if isinstance(value, list) else [value]:
                if not (isinstance(v, str) and v.lower().endswith(".png") and len(v) <= 1000):
                    continue
                p = (base / v).resolve()
                if p.is_relative_to(base) and p.is_file():
                    rel = Path(os.path.relpath(p, out.resolve().parent)).as_posix()
                    what = PICTURES.get(key, key.removeprefix("png_").replace("_", " "))
                    links.append(f"![{md_text(what)} of {md_text(r['ckpt_name'])}]({quote(rel)})")
    return links


def _visualize_pages(table: Table, newest, out: Path) -> list[str]:
    """Markdown links to the page (``details.page``, an ``index.md``) each visualize result names:
    the pictures are many, so the table links their page rather than embedding them; the same rules
    as :func:`_knn_images` (only under the result's own folder, target percent-encoded, text escaped)."""
    links = []
    sub = newest[(newest["task"] == "visualize") & (newest["scale"] == table.scale)]
    for _, r in sub.iterrows():
        v = r["details"].get("page")
        if not (isinstance(v, str) and v.lower().endswith(".md") and len(v) <= 1000):
            continue
        base = Path(r["path"]).parent.resolve()
        p = (base / v).resolve()
        if p.is_relative_to(base) and p.is_file():
            rel = Path(os.path.relpath(p, out.resolve().parent)).as_posix()
            links.append(f"[{md_text(r['ckpt_name'])} feature visualisation page]({quote(rel)})")
    return links


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["diff"]:  # a results folder named "diff" is passed as ./diff
        from dcbench.leaderboard import diff

        return diff.main(argv[1:])
    args = get_args_parser().parse_args(argv)
    expected = checking.load_expected(args.check) if args.check else None
    files = find_result_files(args.results)
    if not files:
        raise UserError(f"{', '.join(map(str, args.results))}: no result files (*.json) found; run "
                        "dc-transfer TASK first (it writes to results/ by default) and pass that folder")
    out = args.out if args.out is not None else default_out(args.results)
    coll = load_results(files)
    for path, reason in coll.skipped:
        print(f"warning: skipped invalid result {printable(path, 1000)}: {printable(reason, 400)}", file=sys.stderr)
    for path, version in coll.other_version:
        print(f"warning: left out {printable(path, 1000)}: result schema version {printable(version, 40)}, not 1 or 2",
              file=sys.stderr)
    newest = newest_runs(to_frame(coll.results))
    tables = build_tables(newest, load_literature())

    plot_links: dict[str, str] = {}
    folder = plots_dir(out)
    for scale, scale_tables in tables.items():
        for table in scale_tables:
            if table.spec.key.endswith("knn-graph"):
                table.images = _knn_images(table, of_family(newest, table.spec.family), out)
            if table.spec.key.endswith("visualize"):
                table.images = _visualize_pages(table, of_family(newest, table.spec.family), out)
            if args.no_plots:
                continue
            png = plots.draw(table, folder)
            if png is not None:
                plot_links[f"{scale}/{table.spec.key}"] = f"{folder.name}/{png.name}"
    remove_stale_plots(folder, {Path(p).name for p in plot_links.values()})

    write_text_atomic(out, render(tables, coll, len(files), plot_links))
    print(f"leaderboard: {printable(out, 1000)} ({len(coll.results)} valid result(s), {len(coll.skipped)} skipped, "
          f"{len(coll.other_version)} of another schema version)")
    if expected is None:
        return 0
    failures = checking.check(newest, expected)
    for line in failures:
        print(line, file=sys.stderr)
    if failures:
        print(f"check: {len(failures)} of {len(expected)} expected number(s) failed", file=sys.stderr)
        return 1
    print(f"check: {len(expected)} expected number(s) within tolerance")
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

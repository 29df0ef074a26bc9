"""dc-figures RUN_DIR... [--out FIGURES.md]

Chapter-4 figures (thesis Figures 4.1-4.10) from any set of dc-train output folders: each folder's
config.json and log.jsonl are read (never its checkpoint), the curves drawn as PNGs in
``<out stem>_png/`` beside the markdown, and the markdown page embeds them with each run's
provenance. A folder that is not a usable dc-train run is one line on stderr and exit 2.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from dcbench.atomic import write_text_atomic
from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.leaderboard.figures import draw_all, figures_dir, render_page
from dcbench.leaderboard.runs import load_run
from dcbench.text import printable

MAX_RUNS = 50  # one legend and one colour cycle stay readable well below this


def get_args_parser(add_help: bool = True) -> ArgumentParser:
    p = ArgumentParser("dc-figures", add_help=add_help,
                       description="Draw the thesis's chapter-4 figures (ratio edge intra-class, NMI, loss, "
                                   "PCA variance against updates) from dc-train output folders, one curve "
                                   "per run, labelled by the options that differ between the runs.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="dc-train --out folders (each holds config.json and log.jsonl)")
    p.add_argument("--out", type=Path, default=Path("dc-figures-out") / "FIGURES.md",
                   help="markdown page to write; its PNGs go to <name>_png/ beside it "
                        "(default: dc-figures-out/FIGURES.md)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if len(args.runs) > MAX_RUNS:
        raise UserError(f"{len(args.runs)} run folders; dc-figures draws at most {MAX_RUNS} in one figure "
                        "(split them into several --out pages)")
    if args.out.suffix.lower() != ".md":
        raise UserError(f"--out {args.out}: give a markdown file name ending in .md (e.g. FIGURES.md)")
    runs = [load_run(folder) for folder in args.runs]
    for run in runs:
        if run.skipped_lines:
            print(f"warning: {printable(run.folder / 'log.jsonl', 1000)}: skipped {run.skipped_lines} line(s) that are not JSON",
                  file=sys.stderr)
    folder = figures_dir(args.out)
    made = draw_all(runs, folder)
    command = "dc-figures " + " ".join(shlex.quote(str(a)) for a in (argv if argv is not None else sys.argv[1:]))
    write_text_atomic(args.out, render_page(runs, made, folder.name, command))
    print(f"figures: {printable(args.out, 1000)} ({len(runs)} run(s), {len(made)} figure(s) in "
          f"{printable(folder, 1000)})")
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

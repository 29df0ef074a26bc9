"""``dc-data``: write the embedded datasets to a folder.

    dc-data make OUT [--seed N] [--scale smoke|demo] [--force]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dcbench import argtypes
from dcbench.atomic import _umask, disk_error
from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.synth import SCALES, make_datasets


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="dc-data", description="Generate dcbench's embedded datasets in the real formats.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    m = sub.add_parser("make", help="generate ImageFolder, Places205-style and VOCdevkit datasets into OUT")
    m.add_argument("out", metavar="OUT", type=Path, help="output folder (must be empty or missing unless --force)")
    m.add_argument("--seed", type=argtypes.seed, default=0, help="random seed (same seed -> byte-identical tree; default 0)")
    m.add_argument("--scale", choices=sorted(SCALES), default="smoke", help="dataset sizes (default smoke)")
    m.add_argument("--force", action="store_true", help="delete a non-empty OUT first")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose an empty OUT or pass --force to overwrite it")
    t0 = time.perf_counter()
    s = _make_atomically(out, args.seed, args.scale)
    print(f"wrote {args.scale} data (seed {args.seed}) to {out} in {time.perf_counter() - t0:.1f}s: "
          f"classification {s['classification']['train']}/{s['classification']['val']}, "
          f"places {s['places']['train']}/{s['places']['val']}, "
          f"VOC2007 {s['voc2007']['images']['trainval']}/{s['voc2007']['images']['test']}, "
          f"VOC2012 seg {s['voc2012']['images']['train']}/{s['voc2012']['images']['val']}", file=sys.stderr)
    return 0


def _make_atomically(out: Path, seed: int, scale: str) -> dict:
    """Generate into a hidden sibling folder and rename it to OUT at the end: a full disk or a kill
    leaves no tree of truncated images that looks complete, and a --force'd OUT stays until then."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise disk_error(e, out) from None
    try:
        summary = make_datasets(tmp, seed=seed, scale=scale, progress=True)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.is_dir():
            aside = out.with_name(f".{out.name}.replaced.tmp")
            os.rename(out, aside)
            os.rename(tmp, out)
            shutil.rmtree(aside)
        else:
            os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(e, out) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()

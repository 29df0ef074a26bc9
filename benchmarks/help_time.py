"""Wall time of each command's --help, interleaved across copies of dcbench.

    python benchmarks/help_time.py [--repo DIR ...] [--other-site DIR] [--repeats 5]

``--repo DIR`` (repeatable) is a checkout with its own ``DIR/.venv`` (dcbench installed there,
editable): each command runs with that venv's python, so ``--repo /work/main --repo .`` compares
two branches. ``--other-site DIR`` holds another dcbench (``pip install --no-deps --target DIR
<checkout>``), run first on sys.path. Without ``--repo``, this interpreter's dcbench is one side.
Each repeat runs every command on every side in turn (A, B, A, B, ...), so that all see the same
load. Prints a table and saves benchmarks/out/help_time.json (median seconds, the ratio of the
first side to the last, the commit of each repo, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

COMMANDS = {
    "dc-train --help": ["dcbench.train.cli", "--help"],
    "dc-transfer --help": ["dcbench.transfer.cli", "--help"],
    "dc-transfer knn --help": ["dcbench.transfer.cli", "knn", "--help"],
    "dc-bench run --help": ["dcbench.suite.cli", "run", "--help"],
    "dc-leaderboard --help": ["dcbench.leaderboard.cli", "--help"],
}


@dataclass(frozen=True)
class Side:
    python: str
    site: str | None = None  # put first on sys.path


def once(argv: list[str], side: Side) -> float:
    env = {**os.environ, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "Haswell")}
    env.pop("PYTHONPATH", None)
    if side.site:
        env["PYTHONPATH"] = side.site
    t0 = time.perf_counter()
    # cwd "/": a checkout in the current folder would shadow the copy under test (-m puts cwd first)
    p = subprocess.run([side.python, "-m", *argv], env=env, capture_output=True, text=True, cwd="/")
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr[-500:]}")
    return seconds


def commit_of(repo: Path) -> str:
    p = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, action="append", default=[],
                    help="a checkout whose .venv has dcbench installed; repeat to compare")
    ap.add_argument("--other-site", default=None, help="another dcbench installed with pip --target")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "help_time.json")
    args = ap.parse_args()
    sides: dict[str, Side] = {}
    for repo in args.repo:
        python = repo.resolve() / ".venv" / "bin" / "python"
        if not python.is_file():
            raise SystemExit(f"--repo {repo}: no {python} (create the venv and pip install -e . there)")
        sides[repo.resolve().name] = Side(str(python))
    if not sides:
        sides["this"] = Side(sys.executable)
    if args.other_site:
        sides["other"] = Side(sys.executable, args.other_site)
    times: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sides} for c in COMMANDS}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            for side_name, side in sides.items():
                times[name][side_name].append(once(argv, side))
    rows = {name: {side: round(statistics.median(v), 3) for side, v in per.items()} for name, per in times.items()}
    first, last = next(iter(sides)), list(sides)[-1]
    ratios = {name: round(row[first] / row[last], 1) for name, row in rows.items()} if first != last else {}
    print(f"{'command':24s}" + "".join(f"{s:>12s}" for s in sides)
          + (f"{first + '/' + last:>20s}" if ratios else "") + "   (median s)")
    for name, row in rows.items():
        print(f"{name:24s}" + "".join(f"{row[s]:12.2f}" for s in sides)
              + (f"{ratios[name]:19.1f}x" if ratios else ""))
    out = {"median_seconds": rows, "ratio_first_to_last": ratios, "repeats": args.repeats,
           "repos": {r.resolve().name: {"path": str(r.resolve()), "commit": commit_of(r)} for r in args.repo},
           "other_site": args.other_site,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

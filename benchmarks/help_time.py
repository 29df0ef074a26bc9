"""Wall time of each command's --help, interleaved with another installed copy of dcbench.

    python benchmarks/help_time.py [--other-site DIR] [--repeats 5]

``--other-site DIR`` holds another dcbench (``pip install --no-deps --target DIR <checkout>``); each
command then runs alternately with that copy first on sys.path and with this one, so that both see
the same load. Prints a table and saves benchmarks/out/help_time.json (median seconds, load average).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "dc-train --help": ["dcbench.train.cli", "--help"],
    "dc-transfer --help": ["dcbench.transfer.cli", "--help"],
    "dc-bench run --help": ["dcbench.suite.cli", "run", "--help"],
    "dc-leaderboard --help": ["dcbench.leaderboard.cli", "--help"],
}


def once(argv: list[str], site: str | None) -> float:
    env = {**os.environ, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "Haswell")}
    env.pop("PYTHONPATH", None)
    if site:
        env["PYTHONPATH"] = site
    t0 = time.perf_counter()
    # cwd "/": a checkout in the current folder would shadow the copy under test (-m puts cwd first)
    p = subprocess.run([sys.executable, "-m", *argv], env=env, capture_output=True, text=True, cwd="/")
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {p.returncode}: {p.stderr[-500:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other-site", default=None, help="another dcbench installed with pip --target")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "help_time.json")
    args = ap.parse_args()
    sides = {"this": None, **({"other": args.other_site} if args.other_site else {})}
    times: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sides} for c in COMMANDS}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            for side, site in sides.items():
                times[name][side].append(once(argv, site))
    rows = {name: {side: round(statistics.median(v), 3) for side, v in per.items()} for name, per in times.items()}
    print(f"{'command':24s}" + "".join(f"{s:>10s}" for s in sides) + "   (median s)")
    for name, row in rows.items():
        print(f"{name:24s}" + "".join(f"{row[s]:10.2f}" for s in sides))
    out = {"median_seconds": rows, "repeats": args.repeats, "other_site": args.other_site,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

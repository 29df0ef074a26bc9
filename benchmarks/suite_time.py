"""Wall time of every task of the smoke suite, as `dc-bench run` measures it.

    python benchmarks/suite_time.py [--checkpoint CKPT] [--work DIR]

Without ``--checkpoint`` a smoke checkpoint is trained first (``dc-train``, embedded data). Then
``dc-bench run CKPT --force`` runs every task once into ``DIR/results`` with a private, empty
feature cache (a cache filled by an earlier run would hide the extraction cost), and the per-task
seconds of the suite's manifest are printed and saved, with the load average before and after, to
benchmarks/out/suite_time.json. Compare two trees by running this in each on the same idle machine,
or another installed copy with ``PYTHONPATH=DIR`` (``pip install --no-deps --target DIR <checkout>``;
the commands run in DIR's scratch folder, so no checkout in the current folder shadows it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: train one at smoke scale")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "suite_time.json")
    args = ap.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="dcbench-suite-time-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DCBENCH_CACHE": str(work / "feature-cache"),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "Haswell")}
    load_before = os.getloadavg()
    ckpt = args.checkpoint.resolve() if args.checkpoint else None
    if ckpt is None:
        subprocess.run([sys.executable, "-m", "dcbench.train.cli", "--out", str(work / "run")], env=env, check=True,
                       cwd=work)
        ckpt = work / "run" / "checkpoint"
    results = work / "results"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "dcbench.suite.cli", "run", str(ckpt), "--results", str(results),
                    "--force", "--no-leaderboard"], env=env, check=True, cwd=work)
    total = time.monotonic() - t0
    manifest = json.loads((results / "suite" / "suite-manifest.json").read_text(encoding="utf-8"))
    tasks = {e["task"]: e["seconds"] for e in manifest["tasks"].values()}
    print(f"{'task':22s} {'seconds':>8s}")
    for task, s in tasks.items():
        print(f"{task:22s} {s:8.1f}")
    print(f"{'total (dc-bench run)':22s} {total:8.1f}")
    import dcbench

    out = {"dcbench": str(Path(dcbench.__file__).parent), "seconds_per_task": tasks, "total_seconds": round(total, 1), "checkpoint": str(ckpt),
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

"""The README's two commands on a fresh clone, timed step by step.

    python benchmarks/readme_commands.py [--repo .] [--work DIR]

Clones the repository's committed HEAD into ``DIR/clone`` and runs there, as a new user would:
command 1 (``python3 -m venv .venv``, ``pip install -e '.[test]'``, ``dc-train``) and command 2
(``tox -e lint,tests``), with an empty home folder and an empty embedded-data cache (pip keeps its
own wheel cache: nothing else is reachable here). Each step's wall time, the load average around it,
the test counts pytest printed, the size of the environment and of the data cache, and the sha256
of the checkpoint are printed and saved to benchmarks/out/readme_commands.json. docs/install.md
quotes that file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = {
    "install": "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'",
    "dc-train": ".venv/bin/dc-train",
    "tox -e lint,tests": ".venv/bin/tox -e lint,tests",
}


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "readme_commands.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dcbench-readme-"))
    clone, home = work / "clone", work / "home"
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                               text=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "DCBENCH"))}
    env.update(HOME=str(home), OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "Haswell"),
               PATH=os.environ["PATH"], **({"PIP_CACHE_DIR": pip_cache} if pip_cache else {}))
    steps = {}
    for name, command in STEPS.items():
        load = os.getloadavg()
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        (work / f"{name.replace(' ', '_')}.log").write_text(p.stdout + p.stderr, encoding="utf-8")
        counts = re.findall(r"^=+ (.*(?:passed|failed).*) in [\d.]+s", p.stdout, re.M)
        steps[name] = {"seconds": round(seconds, 1), "exit": p.returncode, "loadavg_before": load,
                       "loadavg_after": os.getloadavg(), **({"pytest": counts[-1]} if counts else {})}
        print(f"{name:20s} exit {p.returncode}  {seconds:7.1f} s  load {load[0]:.1f}"
              + (f"  ({counts[-1]})" if counts else ""), flush=True)
        if p.returncode != 0:
            print((p.stdout + p.stderr)[-3000:], file=sys.stderr)
            break
    weights = clone / "dc-train-out" / "checkpoint" / "model.safetensors"
    out = {"commit": head, "steps": steps, "cpus": os.cpu_count(),
           "venv_bytes": du(clone / ".venv"), "data_cache_bytes": du(home / ".cache" / "dcbench"),
           "tox_bytes": du(clone / ".tox"),
           "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None}
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {args.out} (logs in {work})")


if __name__ == "__main__":
    main()

"""dc-bench run --dry-run: what each task would cost at full scale, from the ``cost`` blocks of results
already in the results folder. Nothing is run.

The estimate for a task is the median wall time (and GPU-hours) of its earlier full-scale results on
checkpoints of the same architecture family, with the devices they ran on; with no such result it
says so, and shows the throughput (images per second) its smoke runs recorded, which does not scale
to a full-scale run's epochs and crops and is therefore not turned into a time.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from dcbench.choices import family_of
from dcbench.errors import ResultError
from dcbench.results import read_result
from dcbench.text import printable

MAX_FILES = 100_000


def recorded_costs(results: Path) -> dict[tuple[str, str, str], list[dict]]:
    """(task, scale, family) -> the cost blocks of every readable result under ``results``."""
    out: dict[tuple[str, str, str], list[dict]] = {}
    if not results.is_dir():
        return out
    for i, f in enumerate(sorted(results.rglob("*.json"))):
        if i >= MAX_FILES:
            break
        try:
            r = read_result(f)
        except ResultError:
            continue  # the suite's own manifest, or a stranger's file: not a cost record
        if isinstance(r.get("cost"), dict):
            key = (r["task"], r["scale"], family_of(r["checkpoint"]["arch"]))
            out.setdefault(key, []).append(r["cost"])
    return out


def _hours(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def estimate_lines(jobs, results: Path) -> list[str]:
    costs = recorded_costs(results)
    lines = [f"dry run: {len(jobs)} task(s); expected full-scale cost from the results in {printable(str(results), 300)}"]
    total_wall, total_gpu, unknown = 0.0, 0.0, 0
    for job in jobs:
        full = costs.get((job.task, "full", job.checkpoint.family), [])
        smoke = costs.get((job.task, "smoke", job.checkpoint.family), [])
        if full:
            wall = statistics.median(c["wall_s"] for c in full)
            gpu = statistics.median(c["gpu_hours"] for c in full)
            devices = sorted({printable(c["device"], 40) for c in full})
            total_wall += wall
            total_gpu += gpu
            lines.append(f"  {job.label}: about {_hours(wall)}, {gpu:.2f} GPU-h "
                         f"(median of {len(full)} full-scale result(s) on {', '.join(devices)})")
        else:
            unknown += 1
            rates = [c["images_per_s"] for c in smoke if c.get("images_per_s")]
            seen = f"; its smoke runs processed {statistics.median(rates):.0f} images/s" if rates else ""
            lines.append(f"  {job.label}: no full-scale cost recorded{seen}")
    lines.append(f"total of the known: about {_hours(total_wall)}, {total_gpu:.2f} GPU-h"
                 + (f"; {unknown} task(s) without a record" if unknown else ""))
    return lines

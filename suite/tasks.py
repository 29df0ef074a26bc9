"""What the suite needs to know about each transfer task: which dataset folder it reads, and what
a Slurm job for it asks for. Each task declares both (:class:`dcbench.tasks.Task`), so this
module reads the registry and restates nothing; the layout of the data root is the suite's own.
"""

from __future__ import annotations

from pathlib import Path

from dcbench.errors import UserError
from dcbench.tasks import Resources, registry, task_names

# --data-root layout (docs/suite.md, "Suite data layout"): dataset -> folder under the root. The embedded
# data names two of them differently (it predates the suite), so it has its own map.
LAYOUT = {"imagenet": "imagenet", "places205": "places205", "VOCdevkit": "VOCdevkit", "retrieval": "retrieval"}
EMBEDDED_LAYOUT = {"imagenet": "classification", "places205": "places", "VOCdevkit": "VOCdevkit",
                   "retrieval": "retrieval"}

SMOKE = Resources(gpus=0, cpus=1, mem_gb=4, minutes=30)


def resources(task: str, scale: str, gpus: bool) -> Resources:
    r = registry()[task].resources if scale == "full" else SMOKE
    if gpus:
        return Resources(max(r.gpus, 1), r.cpus, r.mem_gb, r.minutes)
    return Resources(0, r.cpus, r.mem_gb, r.minutes)


def parse_tasks(spec: str) -> list[str]:
    """``all`` or a comma list, in the order given; an unknown name is a usage error."""
    known = task_names()
    if spec.strip() == "all":
        return list(known)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise UserError(f"--tasks {spec}: unknown task {', '.join(bad) or '(none)'}; "
                        f"choose 'all' or a comma list of {','.join(known)}")
    return list(dict.fromkeys(names))


def dataset_folders(root: Path, embedded: bool, tasks: list[str]) -> dict[str, Path]:
    """Task -> the folder its ``dc-transfer --data`` gets. Every folder the tasks need must exist:
    all missing ones are named in one line before anything starts."""
    layout = EMBEDDED_LAYOUT if embedded else LAYOUT
    folders, missing = {}, {}
    for t in tasks:
        spec = registry()[t]
        folder = root / layout[spec.dataset]
        for need in spec.needs:
            if not (folder / need).exists():
                missing.setdefault(str(folder / need), []).append(t)
        folders[t] = folder
    if missing:
        what = "; ".join(f"{p} (for {', '.join(ts)})" for p, ts in missing.items())
        raise UserError(f"--data-root {root}: missing {what}; lay the data out as docs/suite.md's "
                        "'Suite data layout' says, or pass --tasks without those tasks")
    return folders

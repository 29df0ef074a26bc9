"""What the suite needs to know about each transfer task, without importing the transfer wing:
which dataset folder it reads, and what a Slurm job for it asks for.

The task names are dcbench's task registry (``dcbench.tasks.TASKS``); a test checks that this
table covers exactly those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dcbench.errors import UserError
from dcbench.tasks import TASKS

# --data-root layout (docs/suite.md, "Suite data layout"): dataset -> folder under the root. The embedded
# data names two of them differently (it predates the suite), so it has its own map.
LAYOUT = {"imagenet": "imagenet", "places205": "places205", "VOCdevkit": "VOCdevkit"}
EMBEDDED_LAYOUT = {"imagenet": "classification", "places205": "places", "VOCdevkit": "VOCdevkit"}


@dataclass(frozen=True)
class Resources:
    """One Slurm job's request. Full-scale values are estimates (not measured: no GPU and no full
    dataset on the machines this was written on); smoke scale asks for one CPU and no GPU."""

    gpus: int
    cpus: int
    mem_gb: int
    minutes: int


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str               # key of LAYOUT
    needs: tuple[str, ...]     # paths under the dataset folder that must exist before anything starts
    full: Resources


SPECS = {s.name: s for s in (
    TaskSpec("mlp", "imagenet", ("train", "val"), Resources(1, 10, 64, 48 * 60)),
    TaskSpec("linear-imagenet", "imagenet", ("train", "val"), Resources(1, 10, 64, 48 * 60)),
    TaskSpec("linear-places", "places205", ("trainvalsplit_places205",), Resources(1, 10, 64, 48 * 60)),
    TaskSpec("voc-classification", "VOCdevkit", ("VOC2007",), Resources(1, 8, 32, 24 * 60)),
    TaskSpec("voc-detection", "VOCdevkit", ("VOC2007",), Resources(1, 8, 32, 24 * 60)),
    TaskSpec("voc-segmentation", "VOCdevkit", ("VOC2012",), Resources(1, 8, 32, 24 * 60)),
    TaskSpec("lowshot", "imagenet", ("train", "val"), Resources(1, 10, 64, 72 * 60)),
    TaskSpec("knn-graph", "imagenet", ("val",), Resources(1, 8, 32, 2 * 60)),
)}
SMOKE = Resources(gpus=0, cpus=1, mem_gb=4, minutes=30)


def resources(task: str, scale: str, gpus: bool) -> Resources:
    r = SPECS[task].full if scale == "full" else SMOKE
    if gpus:
        return Resources(max(r.gpus, 1), r.cpus, r.mem_gb, r.minutes)
    return Resources(0, r.cpus, r.mem_gb, r.minutes)


def parse_tasks(spec: str) -> list[str]:
    """``all`` or a comma list, in the order given; an unknown name is a usage error."""
    if spec.strip() == "all":
        return list(TASKS)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in SPECS]
    if bad or not names:
        raise UserError(f"--tasks {spec}: unknown task {', '.join(bad) or '(none)'}; "
                        f"choose 'all' or a comma list of {','.join(TASKS)}")
    return list(dict.fromkeys(names))


def dataset_folders(root: Path, embedded: bool, tasks: list[str]) -> dict[str, Path]:
    """Task -> the folder its ``dc-transfer --data`` gets. Every folder the tasks need must exist:
    all missing ones are named in one line before anything starts."""
    layout = EMBEDDED_LAYOUT if embedded else LAYOUT
    folders, missing = {}, {}
    for t in tasks:
        spec = SPECS[t]
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

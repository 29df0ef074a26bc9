"""The transfer-task registry: each ``dc-transfer`` task is one :class:`Task`, declared and
registered by its own module under ``transfer/``.

Everything else reads the registry: dc-transfer's subcommands, the result schema's task names and
metric names (:mod:`dcbench.results`), dc-bench's data layout, Slurm requests and task list
(:mod:`dcbench.suite.tasks`), and the leaderboard's task -> table mapping
(:mod:`dcbench.leaderboard.tables`). ``tox.ini`` is written out by hand; ``tests/test_task_registry.py``
checks that its transfer envs are exactly the registered tasks.

The Task type lives in ``dcbench`` because transfer, suite and leaderboard may only share
``dcbench``. Importing this module is free; :func:`registry` imports the task modules (and so
torch) on first use, never at import time: the task modules import :mod:`dcbench.results`,
which reads the registry.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The modules that declare tasks, in the order dc-transfer lists them and ``dc-bench run --tasks all``
# runs them (a task module imported earlier by someone else must not reorder them).
MODULES = (
    "dcbench.transfer.mlp",
    "dcbench.transfer.linear_probe",
    "dcbench.transfer.voc_classification",
    "dcbench.transfer.voc_detection",
    "dcbench.transfer.voc_segmentation",
    "dcbench.transfer.lowshot",
    "dcbench.transfer.knn_graph",
    "dcbench.transfer.knn",
    "dcbench.transfer.semisup",
    "dcbench.transfer.voc07_svm",
    "dcbench.transfer.lowshot_svm",
    "dcbench.transfer.visualize",
    "dcbench.transfer.retrieval",
)


@dataclass(frozen=True)
class Resources:
    """One full-scale Slurm job's request. Estimates, not measured: no GPU and no full dataset were
    reachable on the machines this was written on (the suite's smoke scale asks for its own)."""

    gpus: int
    cpus: int
    mem_gb: int
    minutes: int


@dataclass(frozen=True)
class Task:
    name: str                      # dc-transfer NAME, the tox env, the result files' "task"
    description: str               # one line: dc-transfer's help for it
    add_arguments: Callable[[argparse.ArgumentParser], None]  # its own flags (dc-transfer adds the common ones)
    run: Callable[[argparse.Namespace], Path]                  # -> the result file it wrote
    dataset: str                   # its folder under dc-bench --data-root: imagenet | places205 | VOCdevkit | retrieval
    needs: tuple[str, ...]         # paths in that folder that must exist before dc-bench starts anything
    resources: Resources
    metrics: str                   # full-match pattern: the only metric names its results may carry
    table: str                     # key of the leaderboard table its results fill (one of its own if new)
    needs_fc6_fc7: bool = False    # a ResNet checkpoint cannot run it, and dc-bench leaves it out

    def __post_init__(self):
        # the name becomes a subcommand, a tox env and part of result file names
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.name):
            raise ValueError(f"task name {self.name!r}: lower-case letters, digits and '-' only")
        re.compile(self.metrics)


_REGISTERED: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry (module level in its task module); a second task of the same
    name is a programming error, never a silent override."""
    if task.name in _REGISTERED and _REGISTERED[task.name] != task:
        raise ValueError(f"task {task.name!r} is registered twice")
    _REGISTERED[task.name] = task
    return task


def registry() -> dict[str, Task]:
    """Task name -> Task, every task module imported; a module that cannot be imported is a
    broken install and fails here, loudly. Tasks of :data:`MODULES` come in its order, then any
    registered from elsewhere, in registration order."""
    for module in MODULES:
        importlib.import_module(module)
    rank = {m: i for i, m in enumerate(MODULES)}
    seq = {name: i for i, name in enumerate(_REGISTERED)}
    ordered = sorted(_REGISTERED.values(),
                     key=lambda t: (rank.get(getattr(t.run, "__module__", None), len(rank)), seq[t.name]))
    return {t.name: t for t in ordered}


def task_names() -> tuple[str, ...]:
    return tuple(registry())

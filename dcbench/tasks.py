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
which reads the registry. Whatever runs a task, or needs its flags, metrics or resources, reads
:func:`registry` (or :func:`task`, which imports only the one module that declares it).

:func:`declared` answers the one question that needs none of that, each task's name and
description, by reading the task modules' source rather than importing them: ``dc-transfer
--help`` and a mistyped task name are answered in a fraction of a second, before torch is
loaded. It can, because each task's name and description are written as literals in its
``register(Task(...))`` call (a module that computes them is refused, loudly).
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
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


@functools.cache
def declared() -> dict[str, tuple[str, str]]:
    """Task name -> (description, module) for every task of :data:`MODULES`, in its order, read from
    the modules' source without importing them (nor torch): what ``dc-transfer --help`` lists.
    ``tests/test_task_registry.py`` checks that it is exactly what :func:`registry` holds."""
    found: dict[str, tuple[str, str]] = {}
    for module in MODULES:
        for name, description in _declarations(module):
            if name in found:
                raise ValueError(f"task {name!r} is declared by both {found[name][1]} and {module}")
            found[name] = (description, module)
    return found


def _declarations(module: str) -> list[tuple[str, str]]:
    """(name, description) of each module-level ``register(Task(name=..., description=..., ...))``
    in ``module``'s source. find_spec imports the parent package only (``dcbench.transfer``, whose
    ``__init__`` imports nothing)."""
    spec = importlib.util.find_spec(module)
    source = spec.loader.get_source(module) if spec is not None and spec.loader is not None else None
    if source is None:
        # the same broken install registry() would fail on
        raise ModuleNotFoundError(f"task module {module} has no source to read", name=module)
    found = []
    for node in ast.parse(source, filename=spec.origin or module).body:
        call = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
        if not (_is_call_of(call, "register") and call.args and _is_call_of(call.args[0], "Task")):
            continue
        keywords = {k.arg: k.value for k in call.args[0].keywords}
        try:
            name, description = (ast.literal_eval(keywords[k]) for k in ("name", "description"))
            if not (isinstance(name, str) and isinstance(description, str)):
                raise ValueError("not a string")
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"{module}, line {call.lineno}: write register(Task(name=..., description=...))'s "
                             f"name and description as string literals (dc-transfer --help reads them "
                             f"from the source, without importing the module)") from None
        found.append((name, description))
    return found


def _is_call_of(node, function: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function


def descriptions() -> dict[str, str]:
    """Task name -> description of every task dc-transfer offers, importing no task module: those
    :func:`declared`, then any a caller registered from elsewhere (already imported, so free)."""
    found = {name: description for name, (description, _) in declared().items()}
    return {**found, **{t.name: t.description for t in _REGISTERED.values() if t.name not in found}}


def task(name: str) -> Task:
    """The registered task ``name``, importing only the module that declares it (and what that
    imports), not every task module as :func:`registry` does."""
    if name in declared():
        module = declared()[name][1]
        importlib.import_module(module)
        if name not in _REGISTERED:
            raise ValueError(f"{module} declares task {name!r} in its source but importing it did not "
                             f"register it: call register(Task(...)) at module level, unconditionally")
    if name not in _REGISTERED:
        raise KeyError(f"no task {name!r}; the tasks are: {', '.join(descriptions())}")
    return _REGISTERED[name]

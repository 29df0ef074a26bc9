"""The task registry (dcbench/tasks.py) against the four places a task must appear: its module's
API, a tox env, the result schema, a leaderboard table. Both directions: a task module or tox
transfer env that the registry lacks fails too."""

from __future__ import annotations

import argparse
import configparser
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import dcbench.transfer
from dcbench.leaderboard.tables import tasks_with_a_table
from dcbench.results import RESULT_SCHEMA
from dcbench.tasks import TASKS
from dcbench.transfer.cli import get_args_parser

ROOT = Path(__file__).resolve().parents[1]


def _tox_envs() -> dict[str, dict]:
    """env name -> its section, with tox's ``{a,b}`` factor lists in section names expanded."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tox.ini")
    envs = {}
    for section in cfg.sections():
        m = re.fullmatch(r"testenv:\{?([^}]*)\}?", section)
        if m:
            for name in m.group(1).split(","):
                envs[name.strip()] = dict(cfg[section])
    return envs


@pytest.mark.parametrize("task", list(TASKS))
def test_every_registered_task_has_module_api_tox_env_schema_entry_and_table(task):
    module = importlib.import_module(TASKS[task])
    assert isinstance(module.DESCRIPTION, str) and module.DESCRIPTION, f"{task}: DESCRIPTION"
    assert callable(module.run) and list(inspect.signature(module.run).parameters) == ["args"], f"{task}: run(args)"
    n_args = len(inspect.signature(module.add_arguments).parameters)
    assert n_args in (1, 2), f"{task}: add_arguments(parser[, task])"
    parser = argparse.ArgumentParser()
    module.add_arguments(*([parser, task] if n_args == 2 else [parser]))
    envs = _tox_envs()
    assert task in envs, f"{task}: no [testenv:{task}] in tox.ini"
    assert "{[transfer]commands}" in envs[task].get("commands", ""), f"{task}: its tox env does not run dc-transfer"
    assert task in RESULT_SCHEMA["properties"]["task"]["enum"], f"{task}: not in the result schema"
    assert task in tasks_with_a_table(), f"{task}: no leaderboard table has a column for it"


def test_dc_transfer_offers_exactly_the_registered_tasks():
    sub = next(a for a in get_args_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(TASKS)


def test_no_task_module_or_tox_transfer_env_outside_the_registry():
    # A module with DESCRIPTION + run is a task; a tox env running {[transfer]commands} runs one.
    modules = {f"dcbench.transfer.{m.name}" for m in pkgutil.iter_modules(dcbench.transfer.__path__)}
    task_like = {m for m in modules if all(hasattr(importlib.import_module(m), a) for a in ("DESCRIPTION", "run"))}
    assert task_like == set(TASKS.values())
    transfer_envs = {n for n, s in _tox_envs().items() if "{[transfer]commands}" in s.get("commands", "")}
    assert transfer_envs == set(TASKS)
    assert tasks_with_a_table() <= set(TASKS)

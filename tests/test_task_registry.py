"""The task registry (dcbench/tasks.py): every task is one Task declared in its own module, and
dc-transfer, the result schema, dc-bench and the leaderboard all read it. tox.ini is written out
by hand, so it is checked against the registry here; so are the leaderboard's laid-out tables,
which name tasks in their columns."""

from __future__ import annotations

import argparse
import configparser
import importlib
import inspect
import json
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import dcbench.transfer
from dcbench import tasks as registry_module
from dcbench.errors import ResultError
from dcbench.leaderboard import tables
from dcbench.results import result_schema, validate_result
from dcbench.suite import tasks as suite_tasks
from dcbench.tasks import MODULES, Resources, Task, register, registry, task_names
from dcbench.transfer.cli import get_args_parser

ROOT = Path(__file__).resolve().parents[1]
# the order dc-transfer lists them and dc-bench runs them; a reordering is a visible change
ORDER = ("mlp", "linear-imagenet", "linear-places", "voc-classification", "voc-detection",
         "voc-segmentation", "lowshot", "knn-graph", "knn", "semisup", "voc07-svm", "lowshot-svm",
         "visualize", "retrieval")


def _tox_transfer_sections() -> list[str]:
    """Names in the ``[testenv:...]`` sections that run ``{[transfer]commands}``, in file order,
    with tox's ``{a,b}`` factor lists expanded."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ROOT / "tox.ini")
    names = []
    for section in cfg.sections():
        m = re.fullmatch(r"testenv:\{?([^}]*)\}?", section)
        if m and "{[transfer]commands}" in cfg[section].get("commands", ""):
            names += [n.strip() for n in m.group(1).split(",")]
    return names


def _choices() -> list[str]:
    sub = next(a for a in get_args_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_the_registry_lists_the_tasks_in_their_order():
    assert task_names() == ORDER


@pytest.mark.parametrize("name", ORDER)
def test_every_task_is_one_declaration_its_module_makes(name):
    task = registry()[name]
    assert isinstance(task, Task) and task.name == name
    assert task.description and "\n" not in task.description
    assert task.run.__module__ in MODULES
    assert list(inspect.signature(task.run).parameters) == ["args"]
    parser = argparse.ArgumentParser()
    task.add_arguments(parser)  # the one signature dc-transfer calls
    assert task.dataset in suite_tasks.LAYOUT and task.dataset in suite_tasks.EMBEDDED_LAYOUT
    assert task.needs and isinstance(task.resources, Resources)
    assert task.table in tables.LAID_OUT


def test_dc_transfer_offers_exactly_the_registered_tasks():
    assert _choices() == list(ORDER)


def test_tox_transfer_envs_are_the_registered_tasks():
    assert _tox_transfer_sections() == list(task_names())


def test_no_task_is_registered_outside_the_listed_modules():
    # a module registering a task but missing from MODULES would only show up once someone imported it
    for m in pkgutil.iter_modules(dcbench.transfer.__path__):
        importlib.import_module(f"dcbench.transfer.{m.name}")
    declaring = {t.run.__module__ for t in registry().values()}
    assert declaring == set(MODULES)


def test_laid_out_leaderboard_columns_agree_with_each_tasks_declared_table():
    declared = tables.task_tables()
    laid_out = [*tables.STATIC_TABLES, *tables.RESNET_TABLES, tables.lowshot_spec({"n4_mean"}),
                tables.knn_spec({"ratio_intra"}), tables.knn_classification_spec({"desc_k20_top1"}),
                tables.lowshot_svm_spec({"conv5_k1_mean"}), tables.visualize_spec({"conv1_prob"}),
                *tables.CHAPTER4_TABLES]
    filled: dict[str, set[str]] = {}
    for spec in laid_out:
        for col in spec.columns:
            if col.task is not None:
                assert declared[col.task] == spec.key.removeprefix("resnet-"), (spec.key, col.task)
                filled.setdefault(col.task, set()).add(spec.key)
    assert set(filled) == set(declared)  # every task's results show somewhere


def test_the_declared_tasks_are_the_registry_read_without_importing_it():
    declared = registry_module.declared()
    assert list(declared) == list(registry())
    assert declared == {name: (t.description, t.run.__module__) for name, t in registry().items()}


@pytest.fixture()
def task_module(tmp_path, monkeypatch):
    """Write a task module (source given to the returned function) importable as ``toy_tasks``, and
    make it the only one MODULES lists."""
    def write(source: str) -> str:
        (tmp_path / "toy_tasks.py").write_text(source, encoding="utf-8")
        return "toy_tasks"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "MODULES", ("toy_tasks",))
    monkeypatch.setattr(registry_module, "_REGISTERED", dict(registry_module._REGISTERED))
    monkeypatch.delitem(sys.modules, "toy_tasks", raising=False)
    registry_module.declared.cache_clear()
    yield write
    registry_module.declared.cache_clear()


def test_a_task_description_that_is_not_a_literal_is_refused_naming_its_module(task_module):
    task_module("from dcbench.tasks import Task, register\n"
                "DESCRIPTION = 'computed'\n"
                "register(Task(name='toy', description=DESCRIPTION.upper(), add_arguments=None, run=None,\n"
                "              dataset='imagenet', needs=('val',), resources=None, metrics='acc', table='t'))\n")
    with pytest.raises(ValueError, match=r"toy_tasks, line 3: .*as string literals"):
        registry_module.declared()
    assert "toy_tasks" not in sys.modules  # read, never imported


def test_a_task_declared_in_the_source_but_not_registered_on_import_is_a_clear_error(task_module):
    # register and Task shadowed: the source shows a declaration that importing does not make
    task_module("def register(task):\n    return task\n\n"
                "def Task(**fields):\n    return fields\n\n"
                "register(Task(name='ghost', description='declared, never registered'))\n")
    assert registry_module.declared() == {"ghost": ("declared, never registered", "toy_tasks")}
    with pytest.raises(ValueError, match="toy_tasks declares task 'ghost' .* did not register it"):
        registry_module.task("ghost")
    with pytest.raises(KeyError, match="no task 'nope'"):
        registry_module.task("nope")


def test_a_second_task_of_one_name_is_refused():
    mlp = registry()["mlp"]
    with pytest.raises(ValueError, match="registered twice"):
        register(Task(**{**mlp.__dict__, "description": "another"}))


# ---------------------------------------------------------------------------------------------
# A new task is one declaration: registered here, it is everywhere.


def _toy_run(args):
    return args.out / "toy.json"


def _toy_arguments(p):
    p.add_argument("--toy-knob", type=int, default=3)


TOY = Task(name="toy-task", description="a throw-away task that only this test declares",
           add_arguments=_toy_arguments, run=_toy_run, dataset="imagenet", needs=("val",),
           resources=Resources(1, 2, 8, 15), metrics=r"acc(_best)?", table="toy-table")


@pytest.fixture()
def toy(monkeypatch):
    registry()  # the real modules registered first, so the restored registry keeps them
    monkeypatch.setattr(registry_module, "_REGISTERED", dict(registry_module._REGISTERED))
    register(TOY)
    return TOY


def _toy_result(metrics: dict) -> dict:
    return {
        "schema": "dcbench-result", "schema_version": 1, "task": TOY.name, "variant": {"dataset": "toy"},
        "checkpoint": {"name": "km-toy", "sha256": "ab" * 32, "arch": "alexnet", "sobel": True,
                       "origin": "dcbench-train", "epoch": 1},
        "metrics": metrics, "selection": {"rule": "final"}, "protocol": {}, "scale": "smoke",
        "data": {"name": "toy", "root": "/data", "fingerprint": "f" * 16, "sizes": {"val": 4}},
        "environment": {"git_sha": "0" * 40}, "timings": {"total": 1.0}, "created": "2025-01-01T00:00:00+00:00",
    }


def test_a_task_declared_in_one_place_reaches_every_consumer(toy, tmp_path, capsys):
    from dcbench.checkpoint import save_checkpoint
    from dcbench.leaderboard.cli import main as leaderboard
    from dcbench.models import build_model
    from dcbench.suite.cli import get_args_parser as bench_parser
    from dcbench.suite.cli import make_jobs

    # dc-transfer: a subcommand with its flags, dispatched to its run
    assert _choices()[-1] == "toy-task"
    args = get_args_parser().parse_args(["toy-task", "--checkpoint", "ck", "--toy-knob", "5", "--out", str(tmp_path)])
    assert args.toy_knob == 5 and args._run(args) == tmp_path / "toy.json"
    # dc-bench: in "all", in the plan, with its data folder and Slurm request
    ck = tmp_path / "ck"
    save_checkpoint(ck, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    jobs = make_jobs(bench_parser().parse_args(["run", str(ck), "--results", str(tmp_path / "res")]))
    assert [j.task for j in jobs] == [*ORDER, "toy-task"]
    (tmp_path / "data" / "imagenet" / "val").mkdir(parents=True)
    assert suite_tasks.dataset_folders(tmp_path / "data", False, ["toy-task"]) == {
        "toy-task": tmp_path / "data" / "imagenet"}
    assert suite_tasks.resources("toy-task", "full", gpus=True) == Resources(1, 2, 8, 15)
    # the result schema: its name and only its metric names
    assert result_schema()["properties"]["task"]["enum"][-1] == "toy-task"
    validate_result(_toy_result({"acc": 40.0}))
    with pytest.raises(ResultError, match="is not a metric of toy-task"):
        validate_result(_toy_result({"top1": 40.0}))
    # the leaderboard: its declared table, with a column per metric it reported
    assert tables.task_tables()["toy-task"] == "toy-table"
    res = tmp_path / "results"
    res.mkdir()
    (res / "toy.json").write_text(json.dumps(_toy_result({"acc": 40.0})), encoding="utf-8")
    assert leaderboard([str(res), "--out", str(tmp_path / "L.md"), "--no-plots"]) == 0
    board = (tmp_path / "L.md").read_text(encoding="utf-8")
    assert f"### {TOY.description} (dc-transfer toy-task)" in board
    assert "| Method | Source | acc | Runs | Cost | Provenance |" in board


def test_the_throw_away_task_is_gone_afterwards():
    assert task_names() == ORDER and "toy-task" not in _choices()

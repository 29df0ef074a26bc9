"""--help that helps: every flag explained, defaults shown as values (never "None"), no reference to
files a user does not have, one description per task."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys

import pytest

from dcbench.tasks import MODULES, registry
from dcbench.train import cli as train_cli
from dcbench.train.config import make_config
from dcbench.transfer.cli import get_args_parser as transfer_parser


def help_of(parser: argparse.ArgumentParser) -> str:
    return parser.format_help()


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_dc_train_help_explains_every_flag_and_cites_no_missing_file():
    parser = train_cli.build_parser([])
    text = help_of(parser)
    assert "DESIGN" not in text and "(default: None)" not in text
    missing = [a.option_strings[0] for a in options(parser) if not a.help]
    assert not missing, missing


@pytest.mark.parametrize("argv, scale", [([], "smoke"), (["--scale", "full"], "full"), (["--data", "/x"], "full")])
def test_dc_train_help_shows_the_presets_value_at_the_chosen_scale(argv, scale):
    parser = train_cli.build_parser(argv)
    cfg = make_config("km-ImNet-Sob", scale)
    by_flag = {a.option_strings[0]: a.help for a in options(parser)}
    assert by_flag["--epochs"].endswith(f"(default: {cfg.epochs})")
    assert by_flag["--batch-size"].endswith(f"(default: {cfg.batch_size})")
    assert by_flag["--seed"].endswith(f"(default: {cfg.seed})")
    assert f"preset km-ImNet-Sob at {scale} scale" in help_of(parser)


def test_dc_train_help_follows_the_chosen_preset():
    rgb = {a.option_strings[0]: a.help for a in options(train_cli.build_parser(["--preset", "km-ImNet-RGB",
                                                                               "--scale", "full"]))}
    assert rgb["--wd"].endswith("(default: 1e-06)") and rgb["--k"].endswith("(default: 1000)")
    assert rgb["--sobel"].endswith("(default: off)")


def test_dc_train_help_defaults_are_the_ones_a_run_uses():
    """Parsing no override leaves every override None: the config, not argparse, supplies the value."""
    args = vars(train_cli.build_parser([]).parse_args([]))
    assert all(args[a.dest] is None for a in options(train_cli.build_parser([]))
               if a.dest not in ("data", "out", "preset", "scale", "resume"))


def subparsers() -> dict[str, argparse.ArgumentParser]:
    p = transfer_parser(all_tasks=True)  # every task's flags, not only the one argv would choose
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("task", sorted(subparsers()))
def test_dc_transfer_task_help_explains_every_flag(task):
    parser = subparsers()[task]
    text = help_of(parser)                      # formats every help string (a stray % would raise here)
    assert "(default: None)" not in text
    missing = [a.option_strings[0] for a in options(parser) if not a.help]
    assert not missing, missing
    out = next(a for a in options(parser) if a.dest == "out")
    assert "default: results" in out.help


def test_dc_transfer_help_lists_every_task_with_its_description():
    text = transfer_parser().format_help()
    for name, task in registry().items():
        assert name in text and task.description.split()[0] in text
    # a % in a description is text, not a format directive: argparse would raise or garble it
    assert "1% and 10% of ImageNet's" in " ".join(text.split())


def test_a_task_subcommand_gets_its_flags_when_argv_names_it():
    args = transfer_parser().parse_args(["knn", "--checkpoint", "ck", "--k", "10"])
    assert args.task == "knn" and args.checkpoint is not None and args._run is registry()["knn"].run


def test_dc_transfer_tasks_have_distinct_descriptions():
    descriptions = {task: sp.description for task, sp in subparsers().items()}
    assert len(set(descriptions.values())) == len(descriptions), descriptions
    assert "Table 5.3" in descriptions["linear-imagenet"] and "Table 5.4" in descriptions["linear-places"]


def test_dc_leaderboard_help_names_the_default_output_and_the_example_expected_file():
    from dcbench.leaderboard.cli import get_args_parser

    by_flag = {a.option_strings[0]: a.help for a in options(get_args_parser())}
    assert "inside the folder holding RESULTS" in by_flag["--out"]
    assert "examples/EXPECTED.yaml" in by_flag["--check"]


def test_dc_train_help_and_argument_errors_come_before_torch_is_loaded():
    # help in a fraction of a second: torch, torchvision and faiss are imported only when a run starts
    p = _probe([["--help"], ["--arch", "nope"]], ("torch", "torchvision", "faiss", "numpy"), cli="dcbench.train.cli")
    assert "LOADED []" in p.stderr, p.stderr[-2000:]
    assert "invalid choice: 'nope'" in p.stderr and "--arch" in p.stdout


def _probe(argvs: list[list[str]], modules: tuple[str, ...], cli: str = "dcbench.transfer.cli") -> subprocess.CompletedProcess:
    """Run ``cli``'s main (dc-transfer's by default) on each argv in a fresh interpreter; stderr
    ends with which of ``modules`` got imported."""
    probe = (f"import sys\nfrom dcbench.errors import run_cli\nfrom {cli} import main\n"
             f"for argv in {argvs!r}:\n"
             "    try:\n        run_cli(main, argv)\n    except SystemExit:\n        pass\n"
             f"loaded = sorted(m for m in {modules!r} if m in sys.modules)\n"
             "print('LOADED', loaded, file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)


def test_dc_transfer_help_and_a_wrong_task_name_come_before_torch_is_loaded():
    # the task list is read from the task modules' source: none of them (nor torch) is imported
    p = _probe([["--help"], ["nope"]], ("torch", "torchvision", "faiss", "numpy", *MODULES))
    assert "LOADED []" in p.stderr, p.stderr[-2000:]
    assert "invalid choice: 'nope'" in p.stderr
    assert all(name in p.stdout for name in registry()), p.stdout


def test_dc_transfer_task_help_imports_only_that_tasks_modules():
    # knn's flags live in knn's module (which imports linear_probe's), so that one is imported, and
    # torch with it; the other tasks' modules are not
    p = _probe([["knn", "--help"]], MODULES)
    assert "LOADED" in p.stderr, p.stderr[-2000:]
    loaded = ast.literal_eval(p.stderr.rsplit("LOADED ", 1)[1])  # the list the probe printed
    assert "dcbench.transfer.knn" in loaded, p.stderr[-2000:]
    assert "dcbench.transfer.voc_detection" not in loaded and "dcbench.transfer.retrieval" not in loaded
    assert "--checkpoint" in p.stdout and "--temperature" in p.stdout  # the common flags and knn's


def test_dc_bench_run_help_and_a_wrong_flag_come_before_torch_is_loaded():
    # the checkpoint reader (torch) is imported when a run reads its checkpoints, not for --help;
    # numpy is allowed (the result schema's outcome helpers need it and it loads in ~50 ms)
    p = _probe([["run", "--help"], ["run", "ckpt", "--bogus"]], ("torch", "torchvision", "faiss", *MODULES),
               cli="dcbench.suite.cli")
    assert "LOADED []" in p.stderr, p.stderr[-2000:]
    assert "--engine" in p.stdout and "--slurm-partition" in p.stdout
    assert "unrecognized arguments: --bogus" in p.stderr

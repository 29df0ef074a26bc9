"""dc-transfer TASK: one entry point, one module per protocol.

Each task module registers a :class:`dcbench.tasks.Task` (its flags, its ``run(args) -> Path``);
the subcommands are the registry's tasks, and an unknown name is a usage error, never a silent
fallback.

The subcommands and their one-line help come from :func:`dcbench.tasks.descriptions`, which reads
the task modules' source: ``dc-transfer --help`` and a mistyped task name answer before torch is
loaded. A task's own flags are declared beside its code, so only the task argv names is imported
(and with it torch) to fill its subcommand: ``dc-transfer TASK --help`` costs that one import.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dcbench import cost
from dcbench.atomic import write_json_atomic
from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.tasks import descriptions, task


class _TaskSubcommands(argparse._SubParsersAction):
    """Subcommands whose parsers are filled with their task's flags when argv chooses them: argparse
    has already refused a name that is not a choice by the time it calls this."""

    def __call__(self, parser, namespace, values, option_string=None):
        fill_task_parser(self.choices[values[0]], values[0])
        super().__call__(parser, namespace, values, option_string)


def fill_task_parser(sp: argparse.ArgumentParser, name: str) -> None:
    """Give the subcommand ``name`` the common flags, its task's own and its run; once."""
    if sp.get_default("_run") is not None:
        return
    # here, not at the top: the protocol module and the task module import torch
    from dcbench.transfer.protocol import add_common_arguments

    chosen = task(name)
    add_common_arguments(sp)
    chosen.add_arguments(sp)
    sp.set_defaults(_run=chosen.run)


def get_args_parser(all_tasks: bool = False) -> ArgumentParser:
    """dc-transfer's parser. Each task's subcommand is filled when argv names it; ``all_tasks=True``
    fills every one now (importing every task module), for whoever walks their flags."""
    p = ArgumentParser("dc-transfer", description="Evaluate a checkpoint with one transfer protocol (the "
                                                  "thesis's and today's standard ones); writes a result JSON "
                                                  "(schema v2).")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=ArgumentParser,
                           action=_TaskSubcommands)
    for name, description in descriptions().items():
        # argparse %-formats an action's help ("1% of the labels" must stay text)
        sp = sub.add_parser(name, help=description.replace("%", "%%"), description=description)
        if all_tasks:
            fill_task_parser(sp, name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if os.path.lexists(args.out) and not args.out.is_dir():
        # checked before any work: every task writes its result (and some their pictures) under --out
        raise UserError(f"--out {args.out} is a file; --out is the folder result files go in (choose another)")
    if args.scale is None:
        args.scale = "smoke" if args.data is None else "full"
    cost.begin()
    path = args._run(args)
    if args.seeds > 1:
        repeat_seeds(args, Path(path))
    return 0


def repeat_seeds(args, first: Path) -> None:
    """Run the task again with seeds SEED+1..SEED+N-1 (into a scratch folder under --out, removed
    afterwards, so the leaderboard sees one result) and add their mean and sample standard deviation
    to the first run's result. Features are cached, so the repeats cost the trained part only."""
    from dcbench.results import read_result, validate_result  # numpy and jsonschema: not for --help

    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".seeds-", dir=args.out))
    result = read_result(first)
    runs = {args.seed: result["metrics"]}
    try:
        for i in range(1, args.seeds):
            seed = args.seed + i
            print(f"--seeds {args.seeds}: seed {seed} ({i + 1}/{args.seeds})", flush=True)
            cost.begin()
            again = argparse_copy(args, seed=seed, out=scratch / str(seed))
            runs[seed] = read_result(args._run(again))["metrics"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    names = [m for m in result["metrics"] if all(m in r for r in runs.values())]
    result["seeds"] = {"n": len(runs), "seeds": list(runs),
                       "mean": {m: statistics.fmean(r[m] for r in runs.values()) for m in names},
                       "sd": {m: statistics.stdev([r[m] for r in runs.values()]) for m in names},
                       "values": {m: [r[m] for r in runs.values()] for m in names}}
    write_json_atomic(first, validate_result(result, str(first)))
    print("seeds " + ", ".join(f"{m}={result['seeds']['mean'][m]:.2f}±{result['seeds']['sd'][m]:.2f}"
                               for m in names))


def argparse_copy(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

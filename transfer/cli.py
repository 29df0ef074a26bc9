"""dc-transfer TASK: one entry point, one module per protocol.

Each task module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> Path``
(the result file it wrote). The list of tasks is the registry in :mod:`dcbench.tasks`; an
unknown name is a usage error, never a silent fallback.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.tasks import TASKS
from dcbench.transfer.protocol import add_common_arguments


def task_modules() -> dict:
    """Task name -> imported module, for every task of the registry (:mod:`dcbench.tasks`).
    A module that cannot be imported is a broken install and fails here, loudly."""
    return {task: importlib.import_module(module) for task, module in TASKS.items()}


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser("dc-transfer", description="Evaluate a checkpoint with one of the thesis's "
                                                  "transfer protocols; writes a result JSON (schema v1).")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=ArgumentParser)
    for task, module in task_modules().items():
        desc = getattr(module, "DESCRIPTIONS", {}).get(task, module.DESCRIPTION)
        sp = sub.add_parser(task, help=desc, description=desc)
        add_common_arguments(sp)
        module.add_arguments(sp, task) if _takes_task(module) else module.add_arguments(sp)
        sp.set_defaults(_module=module)
    return p


def _takes_task(module) -> bool:
    return module.add_arguments.__code__.co_argcount >= 2


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if os.path.lexists(args.out) and not args.out.is_dir():
        # checked before any work: every task writes its result (and some their pictures) under --out
        raise UserError(f"--out {args.out} is a file; --out is the folder result files go in (choose another)")
    if args.scale is None:
        args.scale = "smoke" if args.data is None else "full"
    args._module.run(args)
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

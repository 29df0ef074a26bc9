"""dc-transfer TASK: one entry point, one module per protocol.

Each task module registers a :class:`dcbench.tasks.Task` (its flags, its ``run(args) -> Path``);
the subcommands are the registry's tasks, and an unknown name is a usage error, never a silent
fallback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.tasks import registry
from dcbench.transfer.protocol import add_common_arguments


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser("dc-transfer", description="Evaluate a checkpoint with one transfer protocol (the "
                                                  "thesis's and today's standard ones); writes a result JSON "
                                                  "(schema v1).")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=ArgumentParser)
    for task in registry().values():
        # argparse %-formats an action's help ("1% of the labels" must stay text)
        sp = sub.add_parser(task.name, help=task.description.replace("%", "%%"), description=task.description)
        add_common_arguments(sp)
        task.add_arguments(sp)
        sp.set_defaults(_run=task.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if os.path.lexists(args.out) and not args.out.is_dir():
        # checked before any work: every task writes its result (and some their pictures) under --out
        raise UserError(f"--out {args.out} is a file; --out is the folder result files go in (choose another)")
    if args.scale is None:
        args.scale = "smoke" if args.data is None else "full"
    args._run(args)
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

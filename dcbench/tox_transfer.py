"""What ``tox -e TASK`` runs: choose the checkpoint, then ``dc-transfer TASK`` on it.

The checkpoint, the first that applies:

1. ``$DCBENCH_CHECKPOINT``: verified (format, sha256); a bad one is an error, never swapped for
   another;
2. ``dc-train-out/checkpoint`` in the repository root, the one README command 1 makes (``dc-train``
   with no arguments), when it verifies;
3. otherwise ``dc-train --out .tox/smoke-train`` trains one; a finished run there is reused.

Only case 3 trains. ``--scale`` is passed only when ``$DCBENCH_SCALE`` is set, so
``tox -e TASK -- --data DIR`` runs the full protocol, as ``dc-transfer TASK --data DIR`` does.
Results go to ``$DCBENCH_RESULTS`` (default: ``results/`` in the repository root). train/ and
transfer/ are run as commands, not imported (the contract package imports neither).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from dcbench.checkpoint import read_meta
from dcbench.errors import ArgumentParser, CheckpointError, UserError, run_cli

README_CHECKPOINT = Path("dc-train-out") / "checkpoint"


def choose_checkpoint(env: Mapping[str, str], root: Path, work_dir: Path) -> tuple[Path, str, bool]:
    """(checkpoint, why it was chosen, whether it must first be trained)."""
    given = env.get("DCBENCH_CHECKPOINT")
    if given:
        try:
            read_meta(given)
        except CheckpointError as e:
            raise UserError(f"DCBENCH_CHECKPOINT: {e}") from None
        return Path(given), "from $DCBENCH_CHECKPOINT", False
    found = root / README_CHECKPOINT
    if found.exists():
        try:
            meta = read_meta(found)
            return found, f"found, epoch {meta.get('epoch')}, sha256 verified; set DCBENCH_CHECKPOINT for another", False
        except CheckpointError as e:
            print(f"warning: not using {found}: {e}", file=sys.stderr)
    smoke = work_dir / "smoke-train"
    return smoke / "checkpoint", f"trained once by dc-train --out {smoke} (no DCBENCH_CHECKPOINT, no {found})", True


def transfer_argv(task: str, checkpoint: Path, env: Mapping[str, str], root: Path,
                  extra: Sequence[str]) -> list[str]:
    """dc-transfer's arguments; ``extra`` (tox posargs) comes last, so its flags win."""
    argv = [task, "--checkpoint", str(checkpoint), "--out", env.get("DCBENCH_RESULTS") or str(root / "results")]
    if env.get("DCBENCH_SCALE"):
        argv += ["--scale", env["DCBENCH_SCALE"]]
    return argv + list(extra)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser("python -m dcbench.tox_transfer", description=__doc__.splitlines()[0])
    p.add_argument("task")
    p.add_argument("root", type=Path, help="the repository root (tox_root)")
    p.add_argument("work_dir", type=Path, help="tox's work folder (.tox)")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="passed on to dc-transfer")
    args = p.parse_args(argv)
    env = os.environ
    checkpoint, why, train = choose_checkpoint(env, args.root, args.work_dir)
    if train:
        done = subprocess.run([sys.executable, "-m", "dcbench.train.cli", "--out", str(checkpoint.parent)])
        if done.returncode:
            return done.returncode
    print(f"checkpoint: {checkpoint} ({why})", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "dcbench.transfer.cli",
           *transfer_argv(args.task, checkpoint, env, args.root, args.extra)]
    return subprocess.run(cmd).returncode


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

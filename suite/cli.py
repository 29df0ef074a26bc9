"""dc-bench run CHECKPOINT... : every transfer task for each checkpoint, then the leaderboard.

Parse, plan, run on the chosen engine, report. The tasks run as ``dc-transfer`` commands
(processes, containers of the dc-transfer image, or Slurm jobs); nothing of the transfer wing
is imported here.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.provenance import utc_now
from dcbench.tasks import registry
from dcbench.text import printable

from . import manifest as mf
from .estimate import estimate_lines
from .logs import check_folder
from .plan import Job, parse_task_args, read_checkpoint
from .progress import Progress
from .runner import Interrupted, Outcome, Runner
from .tasks import dataset_folders, parse_tasks

DEFAULT_IMAGE = "dc-transfer"   # the tag docker/ builds (docker build --target dc-transfer -t dc-transfer)


def slurm_name(value: str) -> str:
    """A Slurm partition/account name: it is written into each job's sbatch script, so only the
    characters such names use (a newline would start a line of its own in the script)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.,-]{0,127}", value):
        raise argparse.ArgumentTypeError(f"'{printable(value, 60)}' is not a Slurm name (letters, digits, "
                                         "'_', '.', '-', and ',' between partitions; at most 128)")
    return value


def add_run_arguments(p: ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CHECKPOINT", help="checkpoint directories (format v1 or v2)")
    p.add_argument("--tasks", default="all", help="'all' (every task dc-transfer offers) or a comma list, e.g. linear-imagenet,knn-graph")
    p.add_argument("--scale", choices=("smoke", "full"), default=None,
                   help="default: smoke on the embedded data, full with --data-root")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="results folder (default ./results); the suite's manifest and logs go to RESULTS/suite/")
    p.add_argument("--data-root", type=Path, default=None,
                   help="ROOT/imagenet/{train,val}, ROOT/places205/..., ROOT/VOCdevkit/VOC2007|VOC2012 "
                        "(docs/suite.md, 'Suite data layout'); default: the embedded data")
    p.add_argument("--engine", choices=("local", "docker", "slurm"), default="local",
                   help="where each task runs: local = a dc-transfer process here; docker = a container of "
                        "--image through the Docker SDK; slurm = a Slurm job through submitit (default: local)")
    p.add_argument("--jobs", type=int, default=None,
                   help="tasks at once (default: 1 locally and in Docker; with Slurm every job is queued at once)")
    p.add_argument("--gpus", default=None, metavar="IDS",
                   help="GPU ids, e.g. 0,1: each running task gets one (--device cuda); slurm: any value asks "
                        "each job for its table's GPUs. Default: no GPU, tasks run with --device cpu")
    p.add_argument("--force", action="store_true", help="rerun tasks whose result the resume rule would reuse")
    p.add_argument("--task-args", action="append", default=[], metavar="TASK=FLAGS",
                   help="extra dc-transfer flags for one task, e.g. 'knn-graph=--k 5' (repeatable)")
    p.add_argument("--leaderboard", type=Path, default=None,
                   help="where dc-leaderboard writes (default: RESULTS/LEADERBOARD.md, where dc-leaderboard RESULTS "
                        "writes it too)")
    p.add_argument("--no-leaderboard", action="store_true", help="skip dc-leaderboard at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="run nothing: list the tasks and their expected full-scale cost from the cost recorded "
                        "in earlier results under --results (or say there is none)")
    p.add_argument("--run-id", default=None, help="label of this run (default: time + random); docker labels "
                                                  "and the manifest carry it")
    d = p.add_argument_group("docker engine")
    d.add_argument("--image", default=DEFAULT_IMAGE, help=f"dc-transfer image (default {DEFAULT_IMAGE})")
    d.add_argument("--docker-host", default=None, help="Docker engine URL (default: $DOCKER_HOST or the local socket)")
    s = p.add_argument_group("slurm engine")
    s.add_argument("--slurm-partition", type=slurm_name, default=None,
                   help="partition (or comma list) each job is queued in, as sbatch --partition "
                        "(default: the cluster's default partition)")
    s.add_argument("--slurm-account", type=slurm_name, default=None,
                   help="account each job is charged to, as sbatch --account (default: the user's default)")


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser("dc-bench", description="Drive the dcbench suite.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    run = sub.add_parser("run", help="every transfer task for the checkpoints, then the leaderboard",
                         description="Run the transfer tasks for one or more checkpoints (resumable), "
                                     "then dc-leaderboard over the results folder.")
    add_run_arguments(run)
    return p


def make_jobs(args) -> list[Job]:
    tasks = parse_tasks(args.tasks)
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs must be at least 1")
    extra = parse_task_args(args.task_args, tasks)
    checkpoints = list({c.sha256: c for c in map(read_checkpoint, args.checkpoints)}.values())
    if args.data_root is not None:
        if not args.data_root.is_dir():
            raise UserError(f"--data-root {args.data_root} is not a directory; pass the folder laid out as "
                            "docs/suite.md ('Suite data layout') says")
        root = args.data_root.resolve()
        folders: dict[str, Path | None] = dataset_folders(root, embedded=False, tasks=tasks)
        scale = args.scale or "full"
    else:
        # The embedded data: each task (or container) finds it itself, generated once and cached.
        folders = dict.fromkeys(tasks)
        scale = args.scale or "smoke"
    jobs = []
    declared = registry()
    for c in checkpoints:
        for t in tasks:
            if declared[t].needs_fc6_fc7 and c.family != "convfc":
                print(f"note: {t} left out for {c.label}: it retrains fc6-fc8, and a {c.family} has none",
                      file=sys.stderr)
                continue
            jobs.append(Job(t, c, scale, folders[t], "embedded" if folders[t] is None else str(folders[t]),
                            extra.get(t, [])))
    if not jobs:
        raise UserError(f"--tasks {args.tasks}: no task applies to these checkpoints; choose others")
    return jobs


def make_engine(args, run_id: str):
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    if args.gpus is not None and not gpus:
        raise UserError("--gpus: give GPU ids, e.g. --gpus 0 or --gpus 0,1")
    if args.engine == "local":
        from .local import LocalEngine

        return LocalEngine(gpus)
    if args.engine == "docker":
        from .containers import DockerEngine

        return DockerEngine(args.image, run_id, gpus=gpus, base_url=args.docker_host,
                            data_root=None if args.data_root is None else args.data_root.resolve())
    from .slurm import SlurmEngine

    return SlurmEngine(args.results, run_id, gpus=bool(gpus), partition=args.slurm_partition,
                       account=args.slurm_account)


def result_files(results: Path) -> list[Path]:
    """Every result JSON under the results folder, the suite's own files left out."""
    own = mf.folder(results)
    return sorted(p for p in results.rglob("*.json") if p.is_file() and own not in p.parents)


def run_leaderboard(results: Path, out: Path, progress: Progress) -> tuple[bool, str]:
    files = result_files(results)
    if not files:
        return False, "no result files; leaderboard not written"
    cmd = [sys.executable, "-m", "dcbench.leaderboard.cli", *map(str, files), "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no message)"])[-1][:300]
        return False, f"dc-leaderboard failed (exit {p.returncode}): {last}"
    return True, str(out)


def summary(outcomes: list[Outcome], run_id: str, engine: str, seconds: float, stream) -> None:
    print(f"\ndc-bench summary: run {run_id}, engine {engine}, {len(outcomes)} task(s), {seconds:.1f}s",
          file=stream)
    for o in outcomes:
        where = o.result or (f"log {o.log}" if o.log else "")
        t = "-" if o.status == "skipped" else f"{o.seconds:.1f}s"
        print(f"  {o.status:<9} {o.job.task:<19} {o.job.checkpoint.label:<32} {t:>8}  {where}", file=stream)
        if o.status == "failed":
            why = printable(o.message, 300) if o.message else f"exit {o.exit_code}"
            print(f"      {why}; last lines of its log:", file=stream)
            for line in o.tail or []:
                print(f"      | {line}", file=stream)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    t0 = time.monotonic()
    jobs = make_jobs(args)
    results = args.results.resolve()
    if args.dry_run:
        print("\n".join(estimate_lines(jobs, results)))
        return 0
    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    engine = make_engine(args, run_id)
    engine.check(jobs)
    try:
        results.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--results {args.results}: cannot create it ({e.strerror}); choose a writable folder") from None
    check_folder(mf.folder(results) / "logs", results)
    # A background job of a script starts with SIGINT ignored; a suite must still stop on it, and on TERM.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _run(args, argv, jobs, engine, results, run_id, t0)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def _run(args, argv, jobs: list[Job], engine, results: Path, run_id: str, t0: float) -> int:
    progress = Progress()
    progress.note(f"run {run_id}: {len(jobs)} task(s) on engine {args.engine}, results in {results}")
    n = args.jobs or (len(jobs) if args.engine == "slurm" else 1)
    runner = Runner(engine, results, jobs=n, force=args.force, run_id=run_id, progress=progress)
    run = {"run_id": run_id, "engine": args.engine, "argv": list(sys.argv[1:] if argv is None else argv),
           "started": utc_now(), "pid": os.getpid()}
    runner.preflight(jobs)
    runner.manifest.record_run(run)
    try:
        outcomes = runner.run(jobs)
    except Interrupted as e:
        summary(e.outcomes, run_id, args.engine, time.monotonic() - t0, sys.stdout)
        runner.manifest.record_run({**run, "finished": utc_now(), "exit": 130, "interrupted": True})
        print("interrupted: this run's tasks were stopped", file=sys.stderr)
        return 130
    code = 1 if any(o.status != "ok" and o.status != "skipped" for o in outcomes) else 0
    board = None
    if not args.no_leaderboard:
        out = args.leaderboard or results / "LEADERBOARD.md"
        ok, board = run_leaderboard(results, out, progress)
        if not ok and any(o.result for o in outcomes):
            code = 1
    summary(outcomes, run_id, args.engine, time.monotonic() - t0, sys.stdout)
    if board:
        print(f"leaderboard: {board}")
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    runner.manifest.record_run({**run, "finished": utc_now(), "exit": code, "counts": counts,
                                "seconds": round(time.monotonic() - t0, 2), "leaderboard": board})
    print(f"manifest: {runner.manifest.path}")
    return code


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

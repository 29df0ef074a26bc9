"""Run a list of jobs on an engine: skip what the resume rule allows, run the rest ``--jobs`` at
a time, record each end in the manifest, and on Ctrl-C cancel everything the engine started."""

from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dcbench.errors import UserError
from dcbench.provenance import utc_now
from dcbench.text import printable

from . import manifest as mf
from .local import process_start
from .logs import check_folder
from .plan import Job, reusable_result
from .progress import Progress

TAIL_LINES = 15


@dataclass
class Outcome:
    job: Job
    status: str                   # ok | failed | skipped | cancelled
    seconds: float = 0.0
    result: str | None = None     # path relative to the results folder
    log: str | None = None        # path relative to the results folder
    exit_code: int | None = None
    message: str | None = None    # why it failed, when the exit code does not say
    tail: list[str] | None = None


def log_tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last ``n`` lines of a log, each bounded (a task's output is not ours to trust)."""
    try:
        with _read(path) as f:
            lines = deque((printable(line.rstrip("\n"), 300) for line in f), maxlen=n)
    except OSError:
        return []
    return list(lines)


def _read(path: Path):
    """A task's log for reading, never through a link."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8", errors="replace")


def result_from_log(log: Path, out_seen: str, results: Path) -> str | None:
    """The result file the task reported (its last ``result: PATH`` line), as a path relative to
    the results folder; ``out_seen`` is the results folder as the task saw it (``/results`` in a
    container). None if the task reported none or the path leaves the folder."""
    found = None
    try:
        with _read(log) as f:
            for line in f:
                if line.startswith("result: "):
                    found = line[len("result: "):].strip()
    except OSError:
        return None
    if not found:
        return None
    try:
        rel = PurePosixPath(found).relative_to(PurePosixPath(out_seen))
    except ValueError:
        return None
    if ".." in rel.parts or not (results / rel).is_file():
        return None
    return rel.as_posix()


class Runner:
    def __init__(self, engine, results: Path, *, jobs: int, force: bool, run_id: str, progress: Progress):
        self.engine, self.results, self.jobs, self.force = engine, results, jobs, force
        self.run_id, self.progress = run_id, progress
        self.manifest = mf.Manifest(results)
        self.logs = mf.folder(results) / "logs"
        self.cancelled = threading.Event()

    def _check_not_running(self, jobs: list[Job], entries: dict) -> None:
        """Refuse a task that another dc-bench on this host is running now; a 'running' entry whose
        runner is gone (killed) only means the task did not finish: it runs again."""
        host = socket.gethostname()
        for job in jobs:
            e = entries.get(job.id) or {}
            if e.get("status") != "running" or e.get("host") != host:
                continue
            pid, start = e.get("runner_pid"), e.get("runner_start")
            if isinstance(pid, int) and pid != os.getpid() and start is not None and process_start(pid) == start:
                raise UserError(f"{job.label} is being run by another dc-bench (pid {pid}, run "
                                f"{printable(e.get('run_id'), 60)}) on this results folder; wait for it, or stop it")

    def preflight(self, jobs: list[Job]) -> dict:
        """What must hold before anything is recorded or started; returns the manifest's entries."""
        entries = self.manifest.entries()
        self._check_not_running(jobs, entries)
        for job in jobs:  # open_log refuses a link planted later, too
            if (self.logs / job.log_name).is_symlink():
                raise UserError(f"{self.logs / job.log_name} is a link; a task log is never written through one: "
                                "remove it and rerun")
        return entries

    def plan(self, jobs: list[Job]) -> tuple[list[Outcome], list[Job]]:
        """(skipped outcomes, jobs to run)."""
        entries = self.preflight(jobs)
        entries = {} if self.force else entries
        skipped, todo = [], []
        for job in jobs:
            found = None if self.force else reusable_result(job, entries.get(job.id), self.results)
            if found is not None:
                e = entries[job.id]
                skipped.append(Outcome(job, "skipped", result=found.relative_to(self.results).as_posix(),
                                       log=e.get("log"), seconds=0.0))
            else:
                todo.append(job)
        return skipped, todo

    def _run_one(self, job: Job) -> Outcome:
        log = self.logs / job.log_name
        check_folder(log.parent, self.results)
        log.parent.mkdir(parents=True, exist_ok=True)
        rel_log = log.relative_to(self.results).as_posix()
        if self.cancelled.is_set():
            return Outcome(job, "cancelled", log=rel_log, message="not started (interrupted)")
        self.progress.started(job, log)
        self._record_start(job, rel_log)
        t0 = time.monotonic()
        try:
            rc, out_seen, message = self.engine.run(job, log, self.results)
        except Exception as e:  # noqa: BLE001 - one task's engine failure must not stop the others
            rc, out_seen, message = None, str(self.results), f"{type(e).__name__}: {e}"[:300]
        seconds = time.monotonic() - t0
        result = result_from_log(log, out_seen, self.results) if rc == 0 else None
        if self.cancelled.is_set() and rc != 0:
            status = "cancelled"
        elif rc == 0 and result is not None:
            status = "ok"
        else:
            status = "failed"
            if rc == 0:
                message = "exit 0 but no result file reported in the log"
        o = Outcome(job, status, seconds, result, rel_log, rc, message,
                    None if status == "ok" else log_tail(log))
        self._record(o)
        self.progress.finished(o)
        return o

    def _record_start(self, job: Job, rel_log: str) -> None:
        self.manifest.record_task(job.id, {
            "task": job.task, "checkpoint": str(job.checkpoint.path), "checkpoint_sha256": job.checkpoint.sha256,
            "scale": job.scale, "request": job.request(), "request_key": job.request_key(), "status": "running",
            "log": rel_log, "engine": self.engine.name, "run_id": self.run_id, "started": utc_now(),
            "host": socket.gethostname(), "runner_pid": os.getpid(), "runner_start": process_start(os.getpid())})

    def _record(self, o: Outcome) -> None:
        self.manifest.record_task(o.job.id, {
            "task": o.job.task, "checkpoint": str(o.job.checkpoint.path), "checkpoint_sha256": o.job.checkpoint.sha256,
            "scale": o.job.scale, "request": o.job.request(), "request_key": o.job.request_key(),
            "status": o.status, "exit_code": o.exit_code, "message": o.message, "seconds": round(o.seconds, 2),
            "result": o.result, "log": o.log, "log_tail": o.tail, "engine": self.engine.name,
            "run_id": self.run_id, "finished": utc_now()})

    def run(self, jobs: list[Job]) -> list[Outcome]:
        skipped, todo = self.plan(jobs)
        for o in skipped:
            self.progress.finished(o)
        self.progress.planned(len(todo))
        outcomes: dict[str, Outcome] = {o.job.id: o for o in skipped}
        pool = cf.ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="dc-bench")
        futures = {pool.submit(self._run_one, job): job for job in todo}
        try:
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=0.5)
                self.progress.tick()
                for f in done:
                    o = f.result()
                    outcomes[o.job.id] = o
        except KeyboardInterrupt:
            self.cancelled.set()
            self.progress.note("interrupted: cancelling this run's tasks ...")
            self.engine.cancel()
            for f in futures:
                f.cancel()
            pool.shutdown(wait=True)
            for f, job in futures.items():
                if f.cancelled():
                    outcomes[job.id] = Outcome(job, "cancelled", message="not started (interrupted)")
                elif f.done() and f.exception() is None:
                    outcomes[job.id] = f.result()
            self.progress.close()
            raise Interrupted([outcomes[j.id] for j in jobs if j.id in outcomes]) from None
        pool.shutdown(wait=True)
        self.progress.close()
        return [outcomes[j.id] for j in jobs]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, carrying what had finished (and what was cancelled) by then."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__()
        self.outcomes = outcomes

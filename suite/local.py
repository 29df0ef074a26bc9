"""--engine local: each task a ``dc-transfer`` subprocess of this interpreter, in its own process
group (so Ctrl-C can end it and every data-loader worker it started)."""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from .logs import open_log
from .plan import Job, local_command


class LocalEngine:
    name = "local"

    def __init__(self, gpus: list[str] | None = None, grace_s: float = 10.0):
        # --gpus: one id per running task; with fewer ids than --jobs, tasks wait for a free one.
        self.gpus: queue.Queue | None = None
        if gpus:
            self.gpus = queue.Queue()
            for g in gpus:
                self.gpus.put(g)
        self.grace_s = grace_s
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def check(self, jobs: list[Job]) -> None:
        """Nothing to check: the interpreter running dc-bench runs the tasks."""

    def run(self, job: Job, log: Path, results: Path) -> tuple[int | None, str, str | None]:
        gpu = self.gpus.get() if self.gpus is not None else None
        try:
            argv = job.transfer_argv(checkpoint=str(job.checkpoint.path),
                                     data=None if job.data is None else str(job.data),
                                     out=str(results), device="cpu" if gpu is None else "cuda")
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            with open_log(log) as f:
                f.write(f"$ dc-transfer {' '.join(argv)}\n")
                f.flush()
                with self.lock:
                    if self.stopping:
                        return None, str(results), "not started (interrupted)"
                    p = subprocess.Popen(local_command(argv), stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                         preexec_fn=_die_with_parent)
                    self.procs.add(p)
                try:
                    rc = p.wait()
                finally:
                    with self.lock:
                        self.procs.discard(p)
            return rc, str(results), None
        finally:
            if gpu is not None:
                self.gpus.put(gpu)

    def cancel(self) -> None:
        """SIGTERM every task's process group, SIGKILL what is left after the grace period."""
        with self.lock:
            self.stopping = True
            procs = list(self.procs)
        for p in procs:
            _signal_group(p, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(p, signal.SIGKILL)
                p.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the runner dies. The task has its own session (so
    Ctrl-C handling can end its whole group), hence no terminal hang-up reaches it: without this a
    ``kill -9`` of dc-bench would leave it running, unrecorded, beside the next run's copy."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the runner died between fork and prctl
            os._exit(137)


PR_SET_PDEATHSIG = 1


def process_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of process ``pid`` on this host, None if it is gone;
    with the pid it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass

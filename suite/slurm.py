"""--engine slurm: one Slurm job per task through submitit.

Each job runs ``dc-transfer`` with this interpreter (the cluster's nodes are expected to share
the file system and the Python environment, as submitit itself assumes) and writes the task's
log into RESULTS/suite/logs like the other engines; submitit's own files (the pickled call,
sbatch script, job stdout/stderr) go to RESULTS/suite/slurm. Resources come from the table in
:mod:`dcbench.suite.tasks`. Ctrl-C cancels (scancel) every job this run submitted.

A job's outcome is never read from submitit's result pickle: a results folder may be shared, and
unpickling a file planted there runs its code. The job writes its exit code as a small JSON file
whose name and content carry a random token chosen before submission; only that file, with that
token, counts, and the task's own schema-checked result JSON is what the suite records.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

from dcbench.atomic import write_json_atomic
from dcbench.errors import UserError
from dcbench.safepath import safe_slug

from . import manifest as mf
from .logs import open_log
from .plan import Job, local_command
from .tasks import resources

POLL_S = 2.0


MAX_STATUS_BYTES = 4096


class RunTask:
    """The callable a Slurm job runs: dc-transfer into the task's log, then its exit code into
    ``status`` as ``{"token": ..., "exit_code": ...}``; returns the exit code.
    (Module-level, so submitit pickles it by reference, never by value.)"""

    def __init__(self, argv: list[str], log: str, status: str, token: str):
        self.argv, self.log, self.status, self.token = argv, log, status, token

    def __call__(self) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open_log(Path(self.log), append=True) as f:
            f.write(f"$ dc-transfer {' '.join(self.argv)}  (slurm job {env.get('SLURM_JOB_ID', '?')} on "
                    f"{env.get('SLURMD_NODENAME', '?')})\n")
            f.flush()
            rc = subprocess.run(local_command(self.argv), stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env).returncode
        write_json_atomic(self.status, {"token": self.token, "exit_code": rc})
        return rc


def read_status(path: Path, token: str) -> int | None:
    """The exit code a job recorded at ``path`` under ``token``; None if there is no such file yet.
    A file that is not this job's (wrong token, wrong shape, too large, a link) is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"{path}: cannot read this job's status file ({e.strerror}); a link or another "
                        "file was planted there -- remove it and rerun") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_STATUS_BYTES + 1)
    try:
        data = json.loads(raw) if len(raw) <= MAX_STATUS_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        data = None
    rc = data.get("exit_code") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and data.get("token") == token and isinstance(rc, int)
            and not isinstance(rc, bool) and -255 <= rc <= 255):
        raise UserError(f"{path}: not the status file this run's job writes (its token does not match); "
                        "another process wrote it -- the job's outcome is unknown, rerun it")
    return rc


# squeue states of a job that may still produce a result.
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
          "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT",
          "STOPPED"}


def squeue_state(job_id: str) -> str | None:
    """The job's state as squeue reports it; "" once squeue no longer knows it; None if squeue
    could not be asked (then submitit's own checks decide)."""
    try:
        p = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%T", "-j", str(job_id)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return "" if "Invalid job id" in p.stderr else None
    return (p.stdout.split() or [""])[0]


class SlurmEngine:
    name = "slurm"

    def __init__(self, results: Path, run_id: str, *, gpus: bool = False, partition: str | None = None,
                 account: str | None = None):
        self.folder = mf.folder(results.resolve()) / "slurm"
        self.run_id, self.gpus, self.partition, self.account = run_id, gpus, partition, account
        self.jobs: list = []
        self.lock = threading.Lock()
        self.stopping = False

    def check(self, jobs: list[Job]) -> None:
        try:
            import submitit  # noqa: F401
        except ModuleNotFoundError:
            raise UserError("--engine slurm needs submitit: pip install 'dcbench[suite]'") from None
        # srun too: submitit's batch script starts the task with it, and submitit >= 1.5.4 will not
        # even build an executor without it on PATH.
        missing = [c for c in ("sbatch", "srun", "scancel") if shutil.which(c) is None]
        if missing:
            raise UserError(f"--engine slurm: {', '.join(missing)} not found on PATH; run dc-bench on a Slurm "
                            "login node (or install the Slurm client tools)")

    def executor(self, job: Job):
        import submitit

        r = resources(job.task, job.scale, self.gpus)
        ex = submitit.SlurmExecutor(folder=str(self.folder / "%j"))
        params = {"job_name": f"dc-{job.task}", "cpus_per_task": r.cpus, "mem": f"{r.mem_gb}GB",
                  "time": r.minutes, "nodes": 1, "ntasks_per_node": 1,
                  "comment": f"dc-bench run {safe_slug(self.run_id, 40)}"}
        if r.gpus:
            params["gpus_per_node"] = r.gpus
        if self.partition:
            params["partition"] = self.partition
        if self.account:
            params["account"] = self.account
        ex.update_parameters(**params)
        return ex

    def run(self, job: Job, log: Path, results: Path) -> tuple[int | None, str, str | None]:
        import submitit

        argv = job.transfer_argv(checkpoint=str(job.checkpoint.path),
                                 data=None if job.data is None else str(job.data),
                                 out=str(results), device="cuda" if self.gpus else "cpu")
        with open_log(log):
            pass  # truncated here, appended to by the job on its node
        token = secrets.token_hex(16)
        status = self.folder / "status" / f"{safe_slug(job.log_name, 120)}.{token}.json"
        status.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.stopping:
                return None, str(results), "not started (interrupted)"
            try:
                sj = self.executor(job).submit(RunTask(argv, str(log), str(status), token))
            except submitit.core.utils.FailedJobError as e:
                return None, str(results), f"sbatch refused the job: {str(e).strip().splitlines()[-1][:200]}"
            self.jobs.append(sj)
        with open_log(log, append=True) as f:
            f.write(f"submitted slurm job {sj.job_id} (submitit folder {self.folder / str(sj.job_id)})\n")
        # submitit learns a job's end from sacct, which a cluster without accounting lacks (and
        # then warns on every poll); the status file and squeue tell it without sacct.
        while (rc := read_status(status, token)) is None:
            state = squeue_state(sj.job_id)
            if state is None:
                if sj.done():
                    time.sleep(POLL_S)
                    if (rc := read_status(status, token)) is None:
                        return None, str(results), f"slurm job {sj.job_id} ended without a status"
                    break
            elif state not in ACTIVE:
                time.sleep(POLL_S)  # the status file may land a moment after the state changes
                if (rc := read_status(status, token)) is None:
                    return None, str(results), f"slurm job {sj.job_id} ended as {state or 'unknown'} without a result"
                break
            time.sleep(POLL_S)
        return rc, str(results), None

    def cancel(self) -> None:
        with self.lock:
            self.stopping = True
            jobs = list(self.jobs)
        for sj in jobs:
            try:
                sj.cancel(check=False)
            except Exception:  # noqa: BLE001, S110 - already finished
                pass

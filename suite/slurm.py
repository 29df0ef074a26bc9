"""--engine slurm: one Slurm job per task through submitit.

Each job runs ``dc-transfer`` with this interpreter (the cluster's nodes are expected to share
the file system and the Python environment, as submitit itself assumes) and writes the task's
log into RESULTS/suite/logs like the other engines; submitit's own files (the pickled call,
sbatch script, job stdout/stderr) go to RESULTS/suite/slurm. Resources come from the table in
:mod:`dcbench.suite.tasks`. Ctrl-C cancels (scancel) every job this run submitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from dcbench.errors import UserError

from . import manifest as mf
from .plan import Job, local_command, slug
from .tasks import resources

POLL_S = 2.0


class RunTask:
    """The callable a Slurm job runs: dc-transfer into the task's log; returns its exit code.
    (Module-level, so submitit pickles it by reference, never by value.)"""

    def __init__(self, argv: list[str], log: str):
        self.argv, self.log = argv, log

    def __call__(self) -> int:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"$ dc-transfer {' '.join(self.argv)}  (slurm job {env.get('SLURM_JOB_ID', '?')} on "
                    f"{env.get('SLURMD_NODENAME', '?')})\n")
            f.flush()
            return subprocess.run(local_command(self.argv), stdout=f, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env).returncode


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
                  "comment": f"dc-bench run {slug(self.run_id, 40)}"}
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
        log.write_text("")
        with self.lock:
            if self.stopping:
                return None, str(results), "not started (interrupted)"
            try:
                sj = self.executor(job).submit(RunTask(argv, str(log)))
            except submitit.core.utils.FailedJobError as e:
                return None, str(results), f"sbatch refused the job: {str(e).strip().splitlines()[-1][:200]}"
            self.jobs.append(sj)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"submitted slurm job {sj.job_id} (submitit folder {self.folder / str(sj.job_id)})\n")
        # submitit learns a job's end from sacct, which a cluster without accounting lacks (and
        # then warns on every poll); the result file and squeue tell it without sacct.
        while not sj.paths.result_pickle.exists():
            state = squeue_state(sj.job_id)
            if state is None:
                if sj.done():
                    break
            elif state not in ACTIVE:
                time.sleep(POLL_S)  # the result file may land a moment after the state changes
                if not sj.paths.result_pickle.exists():
                    return None, str(results), f"slurm job {sj.job_id} ended as {state or 'unknown'} without a result"
            time.sleep(POLL_S)
        try:
            return int(sj.result()), str(results), None
        except Exception as e:  # noqa: BLE001 - the call itself crashed on the node (submitit re-raises it)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            return None, str(results), f"slurm job {sj.job_id} failed: {first}"

    def cancel(self) -> None:
        with self.lock:
            self.stopping = True
            jobs = list(self.jobs)
        for sj in jobs:
            try:
                sj.cancel(check=False)
            except Exception:  # noqa: BLE001, S110 - already finished
                pass

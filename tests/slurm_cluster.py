"""A throwaway single-node Slurm cluster on localhost, for the suite's Slurm engine test.

``with LocalSlurm(folder) as cluster:`` starts munged (its own key and socket), slurmctld and
slurmd from a generated slurm.conf (free ports, state and logs under ``folder``), waits until
the node is idle, and yields; ``cluster.env`` is the environment in which sbatch, squeue and
scancel talk to it. Every daemon it started is stopped on the way out, failures included.
Needs root and Debian's ``slurm-wlm`` and ``munge`` packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def missing_binaries() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


class LocalSlurm:
    def __init__(self, folder: Path, cpus: int | None = None, start_timeout_s: float = 60.0):
        self.folder = Path(folder)
        self.cpus = cpus or os.cpu_count() or 1
        self.start_timeout_s = start_timeout_s
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.folder / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=self.env, start_new_session=True)
        log.close()
        self.procs.append((name, p))

    def _write_conf(self) -> None:
        f = self.folder
        for d in ("state", "spool", "munge"):
            (f / d).mkdir(parents=True, exist_ok=True)
        os.chmod(f / "munge", 0o700)
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.conf.write_text(f"""\
ClusterName=dcbench-test
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={f / 'munge' / 'munge.socket'}
CredType=cred/munge
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldLogFile={f / 'slurmctld.log'}
SlurmdLogFile={f / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def __enter__(self) -> LocalSlurm:
        try:
            self._write_conf()
            m = self.folder / "munge"
            key = m / "munge.key"
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o600)
            self._start("munged", [_sbin("munged"), "--foreground", "--force", f"--key-file={key}",
                                   f"--socket={m / 'munge.socket'}", f"--pid-file={m / 'munged.pid'}",
                                   f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
            self._wait(lambda: (m / "munge.socket").exists(), "munged to open its socket")
            self._start("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._start("slurmd", [_sbin("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
            self._wait(self._idle, "the node to become idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _idle(self) -> bool:
        p = subprocess.run([_sbin("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return p.returncode == 0 and "idle" in p.stdout

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}: "
                                       f"{self.logs_tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}: {self.logs_tail()}")

    def logs_tail(self, n: int = 5) -> str:
        out = []
        for name in ("munged.out", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            p = self.folder / name
            if p.is_file():
                lines = p.read_text(errors="replace").splitlines()[-n:]
                out.append(f"[{name}] " + " / ".join(lines))
        return " ".join(out)[-3000:]

    def stop(self) -> None:
        """Stop the daemons, newest first: TERM, then KILL after 15 s."""
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _name, p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def __exit__(self, *exc) -> None:
        self.stop()

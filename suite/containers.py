"""--engine docker: each task in its own container of the dc-transfer image, through the Docker
SDK (``docker`` package).

Mounts: the checkpoint read-only at /checkpoints/<folder>, the data root read-only at /data
(without --data-root nothing is mounted: the image carries the embedded data), the results folder
read-write at /results. The container runs as the host user's uid:gid, without network, with
GPUs through device requests when --gpus is given. Its output is streamed to the task's log and,
prefixed with the task's name, to the terminal. Every container carries the run id as a label;
it is removed when its task ends, and Ctrl-C stops and removes this run's containers -- found
by that label, so another run's containers are never touched.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path

from dcbench.errors import UserError
from dcbench.safepath import safe_slug

from .logs import open_log
from .plan import Job

LABEL_RUN = "dcbench.suite.run"
LABEL_TASK = "dcbench.suite.task"
RESULTS_IN = "/results"
DATA_IN = "/data"
CHECKPOINTS_IN = "/checkpoints"


def _docker():
    try:
        import docker
    except ModuleNotFoundError:
        raise UserError("--engine docker needs the Docker SDK: pip install 'dcbench[suite]'") from None
    return docker


def container_spec(job: Job, *, image: str, run_id: str, results: Path, data_root: Path | None,
                   uid: int, gid: int, gpu: str | None) -> dict:
    """Keyword arguments of ``client.containers.create`` for one task (pure: no daemon needed)."""
    ckpt_in = f"{CHECKPOINTS_IN}/{safe_slug(job.checkpoint.path.name, 60, keep='')}"
    # Mount objects, not "src:dst:mode" strings: a ':' or ',' in a host path cannot change them.
    Mount = _docker().types.Mount
    mounts = [Mount(ckpt_in, str(job.checkpoint.path), type="bind", read_only=True),
              Mount(RESULTS_IN, str(results), type="bind", read_only=False)]
    data_in = None
    if job.data is not None:
        if data_root is None:
            raise ValueError("a job with a data folder needs the data root to mount")
        mounts.append(Mount(DATA_IN, str(data_root), type="bind", read_only=True))
        data_in = f"{DATA_IN}/{job.data.relative_to(data_root).as_posix()}"
    spec = {
        "image": image,
        "command": job.transfer_argv(checkpoint=ckpt_in, data=data_in, out=RESULTS_IN,
                                     device="cpu" if gpu is None else "cuda"),
        "mounts": mounts,
        "user": f"{uid}:{gid}",
        "labels": {LABEL_RUN: run_id, LABEL_TASK: job.task, "dcbench.suite.checkpoint": job.checkpoint.sha256},
        "name": f"dc-bench-{safe_slug(run_id, 40, keep='')}-{job.task}-{job.checkpoint.sha256[:8]}",
        "network_mode": "none",
        "environment": {"PYTHONUNBUFFERED": "1"},
        "detach": True,
    }
    if gpu is not None:
        spec["device_requests"] = [_docker().types.DeviceRequest(device_ids=[gpu], capabilities=[["gpu"]])]
    return spec


class DockerEngine:
    name = "docker"

    def __init__(self, image: str, run_id: str, *, gpus: list[str] | None = None, base_url: str | None = None,
                 client=None, data_root: Path | None = None, echo=None):
        self.image, self.run_id, self.base_url = image, run_id, base_url
        self.client = client
        self.data_root = data_root
        self.gpus: queue.Queue | None = None
        if gpus:
            self.gpus = queue.Queue()
            for g in gpus:
                self.gpus.put(g)
        self.echo = echo or (lambda line: print(line, flush=True))
        self.lock = threading.Lock()
        self.stopping = False

    def _connect(self):
        docker = _docker()
        where = self.base_url or os.environ.get("DOCKER_HOST") or "the default socket"
        try:
            client = docker.DockerClient(base_url=self.base_url) if self.base_url else docker.from_env()
            client.ping()
        except docker.errors.DockerException as e:
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise UserError(f"--engine docker: cannot reach the Docker engine at {where} ({reason}); start it "
                            "(e.g. systemctl start docker) or point --docker-host / DOCKER_HOST at it") from None
        return client

    def check(self, jobs: list[Job]) -> None:
        """The engine answers and has the image; otherwise one line saying how to fix it."""
        if self.client is None:
            self.client = self._connect()
        docker = _docker()
        try:
            self.client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise UserError(f"--image {self.image}: no such image in the Docker engine; build it from the "
                            f"repository root: docker build -f docker/Dockerfile --target dc-transfer "
                            f"-t {self.image} .") from None
        except docker.errors.DockerException as e:
            raise UserError(f"--image {self.image}: the Docker engine refused to describe it ({e})"[:300]) from None

    def run(self, job: Job, log: Path, results: Path) -> tuple[int | None, str, str | None]:
        gpu = self.gpus.get() if self.gpus is not None else None
        container = None
        try:
            spec = container_spec(job, image=self.image, run_id=self.run_id, results=results,
                                  data_root=self.data_root, uid=os.getuid(), gid=os.getgid(), gpu=gpu)
            with self.lock:
                if self.stopping:
                    return None, RESULTS_IN, "not started (interrupted)"
                container = self.client.containers.create(**spec)
            with open_log(log) as f:
                f.write(f"$ docker run {self.image} {' '.join(spec['command'])}\n")
                f.flush()
                container.start()
                pending = ""
                for chunk in container.logs(stream=True, follow=True):
                    pending += chunk.decode("utf-8", errors="replace")
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        f.write(line + "\n")
                        self.echo(f"[{job.task}] {line[:500]}")
                    f.flush()
                if pending:
                    f.write(pending + "\n")
                    self.echo(f"[{job.task}] {pending[:500]}")
            rc = int(container.wait().get("StatusCode", 1))
            return rc, RESULTS_IN, None
        finally:
            if container is not None:
                _remove(container)
            if gpu is not None:
                self.gpus.put(gpu)

    def cancel(self) -> None:
        """Stop and remove every container labelled with this run's id, and only those."""
        with self.lock:
            self.stopping = True
        try:
            mine = self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={self.run_id}"})
        except Exception as e:  # noqa: BLE001 - report and go on: nothing else can be done here
            print(f"dc-bench: could not list this run's containers: {e}", file=sys.stderr)
            return
        for c in mine:
            try:
                c.stop(timeout=10)
            except Exception:  # noqa: BLE001, S110 - already gone or stopping
                pass
            _remove(c)


def _remove(container) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already removed (by cancel, or by its own end)
        pass

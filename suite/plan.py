"""The jobs of a suite run and the resume rule.

A job is one ``dc-transfer TASK`` on one checkpoint. Its *request* is everything that decides
the result's checkpoint sha256, task, variant, scale and protocol: the sha256, the task, the
scale, the data folder, and the task's extra flags (``--task-args``); the protocol defaults
themselves live in the code of dc-transfer. A job is skipped when the manifest of the results
folder records a finished job with the same request whose result file is still there, is a
valid result of the current schema (v2) of that sha256, task and scale, and records every flag value that the
request passes (``--k 5`` -> ``protocol.k == 5``). Anything else -- another flag value, a
different data folder, a missing or altered result, ``--force`` -- runs the task again.
A default changed in dc-transfer's code between two runs is not seen by this rule (``--force``).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dcbench.choices import family_of
from dcbench.errors import ResultError, UserError
from dcbench.results import SCHEMA_VERSION, read_result
from dcbench.safepath import checkpoint_label
from dcbench.tasks import task_names
from dcbench.text import printable


@dataclass(frozen=True)
class CheckpointRef:
    """What a job needs to know of a verified checkpoint (where, which weights, which family);
    the weights themselves are loaded by dc-transfer in the job's own process."""

    path: Path
    sha256: str
    family: str = "convfc"  # dcbench.models.family_of: a ResNet has no fc6/fc7 for the tasks that need them
    name: str = ""          # the checkpoint's own name, as its result files carry it

    @property
    def label(self) -> str:
        """``<name>-<sha8>``, the rule result file names follow; names its logs and progress lines."""
        return checkpoint_label(self.name or self.path.name, self.sha256)


def read_checkpoint(path: Path) -> CheckpointRef:
    """Verify a checkpoint (format, sha256 of the weights) before anything starts."""
    from dcbench.checkpoint import read_meta  # torch: imported here so that --help does not wait for it

    meta = read_meta(path)
    path = path.resolve()
    return CheckpointRef(path, meta["model_sha256"], family_of(meta["arch"]), meta.get("name") or path.name)


def parse_task_args(items: list[str], tasks: list[str]) -> dict[str, list[str]]:
    """``--task-args TASK=FLAGS`` (repeatable; FLAGS split like a shell) -> task -> flags."""
    out: dict[str, list[str]] = {}
    for item in items:
        task, sep, flags = item.partition("=")
        task = task.strip()
        if not sep or task not in task_names():
            raise UserError(f"--task-args {item!r}: write TASK=FLAGS with TASK one of {','.join(task_names())}")
        if task not in tasks:
            raise UserError(f"--task-args {item!r}: {task} is not among --tasks")
        try:
            words = shlex.split(flags)
        except ValueError as e:
            raise UserError(f"--task-args {item!r}: {e}") from None
        reserved = [w for w in words if _reaches_reserved(w)]
        if reserved:
            raise UserError(f"--task-args '{printable(item)}': {printable(reserved[0])} is (or abbreviates) a flag "
                            "dc-bench sets itself; use dc-bench's own flag")
        out.setdefault(task, []).extend(words)
    return out


# Flags dc-bench sets for every task; --task-args may not override them.
RESERVED = ("--checkpoint", "--data", "--out", "--scale", "--device")


def _reaches_reserved(word: str) -> bool:
    """Whether ``word`` names a reserved flag, in full or as a prefix argparse could expand to it
    (``--ou``, ``--check=x``): refused whatever the task's parser would make of it."""
    name = word.split("=", 1)[0]
    return name.startswith("--") and len(name) > 2 and any(r.startswith(name) for r in RESERVED)


@dataclass
class Job:
    task: str
    checkpoint: CheckpointRef
    scale: str
    data: Path | None          # the task's dataset folder on this host; None = the embedded data
    data_label: str            # what the request records for the data ("embedded" or the folder)
    args: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.task}@{self.checkpoint.sha256}"

    @property
    def label(self) -> str:
        return f"{self.task} ({self.checkpoint.label})"

    @property
    def log_name(self) -> str:
        return f"{self.task}__{self.checkpoint.label}.log"

    def request(self) -> dict:
        return {"checkpoint_sha256": self.checkpoint.sha256, "task": self.task, "scale": self.scale,
                "data": self.data_label, "args": list(self.args)}

    def request_key(self) -> str:
        return hashlib.sha256(json.dumps(self.request(), sort_keys=True).encode()).hexdigest()

    def transfer_argv(self, *, checkpoint: str, data: str | None, out: str, device: str) -> list[str]:
        """dc-transfer's arguments (after the program), with paths as the task will see them."""
        argv = [self.task, "--checkpoint", checkpoint, "--out", out, "--scale", self.scale, "--device", device]
        if data is not None:
            argv += ["--data", data]
        return argv + list(self.args)


def local_command(argv: list[str]) -> list[str]:
    """dc-transfer run by this very interpreter (the suite never imports the transfer wing)."""
    return [sys.executable, "-m", "dcbench.transfer.cli", *argv]


def flag_values(args: list[str]) -> dict[str, str]:
    """``--name value`` and ``--name=value`` pairs of a flag list; switches are left out."""
    out, i = {}, 0
    while i < len(args):
        a = args[i]
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k.replace("-", "_")] = v
        elif a.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[a[2:].replace("-", "_")] = args[i + 1]
            i += 1
        i += 1
    return out


def _same(asked: str, recorded) -> bool:
    if isinstance(recorded, bool) or recorded is None:
        return asked.lower() == str(recorded).lower()
    if isinstance(recorded, (int, float)):
        try:
            return float(asked) == float(recorded)
        except ValueError:
            return False
    return asked == str(recorded)


def reusable_result(job: Job, entry: dict | None, results: Path) -> Path | None:
    """The result file that lets ``job`` be skipped, or None (the resume rule, module doc)."""
    if not entry or entry.get("status") != "ok" or entry.get("request_key") != job.request_key():
        return None
    rel = entry.get("result")
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        return None
    path = results / rel
    try:
        result = read_result(path)
    except ResultError:
        return None
    if (result["checkpoint"]["sha256"], result["task"], result["scale"]) != (
            job.checkpoint.sha256, job.task, job.scale):
        return None
    if result["schema_version"] < SCHEMA_VERSION:
        return None  # an older schema's result lacks what this one records (intervals, cost): rerun it
    recorded = {**result["protocol"], **result["variant"]}
    for name, value in flag_values(job.args).items():
        if name in recorded and not _same(value, recorded[name]):
            return None
    return path

"""What a dc-train output folder holds between epochs, and the checks that make resuming it safe.

``--out`` holds ``checkpoint/`` (weights, and ``train_state.pt``: the epoch, the trunk's SGD
momentum, the last assignment and the RNG state), ``log.jsonl`` (one line per epoch),
``assignments/epoch_NNNN.npz`` and ``config.json``. Every file is replaced atomically; a run that
resumes first recovers an interrupted checkpoint swap, drops log lines of epochs the checkpoint does
not hold, and refuses a checkpoint made with other settings.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dcbench.atomic import disk_error, write_file_atomic
from dcbench.checkpoint import META, nonfinite_tensors, recover_interrupted_write, train_state_problem
from dcbench.errors import CheckpointError, UserError
from dcbench.train.config import LEGACY_DEFAULTS, RESUME_FREE, TrainConfig

CHECKPOINT = "checkpoint"


class TrainingDiverged(UserError):
    """The loss became NaN/inf: exit 1 (not a usage error), last good checkpoint left intact."""

    exit_code = 1


def write_assignments(path: Path, index: np.ndarray, labels: np.ndarray) -> None:
    def w(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, index=index.astype(np.int64), cluster=labels.astype(np.int32))
    write_file_atomic(path, w)


def load_assignments(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices, cluster ids; -1 = unreadable image) of one epoch's assignments file."""
    with np.load(path, allow_pickle=False) as z:
        return z["index"], z["cluster"]


def append_log(path: Path, record: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise disk_error(e, path) from None


def trim_log(path: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (a run killed between log and checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= last_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            continue
    write_file_atomic(path, lambda p: p.write_text("".join(k + "\n" for k in keep), encoding="utf-8"))


def read_log(out: str | os.PathLike) -> list[dict]:
    p = Path(out) / "log.jsonl"
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def config_json(cfg: TrainConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


def clean_stale(out: Path) -> list[str]:
    """Recover the checkpoint from an interrupted swap and delete the temporaries that killed writes
    of this run left behind (``.NAME.<random>.tmp``, see dcbench.atomic)."""
    notes = []
    note = recover_interrupted_write(out / CHECKPOINT)
    if note:
        notes.append(note)
    # only the names this trainer writes (--out may be a folder shared with other things)
    for folder, pattern in ((out, ".log.jsonl.*.tmp"), (out, ".config.json.*.tmp"),
                            (out / "assignments", ".epoch_*.npz.*.tmp"), (out / "snapshots", ".epoch_*.*.tmp")):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(pattern):
            if tmp.is_symlink():
                continue
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            notes.append(f"removed the unfinished write {tmp.relative_to(out)}")
    return notes


def check_train_state(ts, ckpt: Path) -> None:
    problem = train_state_problem(ts)
    if problem is not None:
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: {problem}; delete {ckpt} (or use another --out) "
                              "to start afresh")


def nonfinite_optimizer_state(opt) -> list[str]:
    """Names (``optimizer.<param>.<buffer>``) of the optimizer's non-finite state tensors (momentum)."""
    return nonfinite_tensors({f"optimizer.{i}.{k}": v for i, st in opt.state_dict()["state"].items()
                              for k, v in st.items() if isinstance(v, torch.Tensor)})


def load_optimizer(opt, state: dict, ckpt: Path) -> None:
    try:
        opt.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: the optimizer state does not fit this model "
                              f"({first}); delete {ckpt} (or use another --out) to start afresh") from None
    bad = nonfinite_optimizer_state(opt)
    if bad:
        raise CheckpointError(f"{ckpt / 'train_state.pt'}: non-finite optimizer state ({bad[0]}); "
                              f"delete {ckpt} (or use another --out) to start afresh")


def last_good(ckpt: Path) -> str:
    """Where the run can be taken up again, read from disk (never a checkpoint of the failing epoch)."""
    try:
        epoch = json.loads((ckpt / META).read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError, RecursionError):
        return "no checkpoint was written"
    return f"the last good checkpoint {ckpt} (epoch {epoch}) is intact"


def check_resumable(saved: dict, cfg: TrainConfig, ckpt: Path) -> None:
    now = config_json(cfg)
    saved = {**LEGACY_DEFAULTS, **saved}
    diffs = [f"{k}: {saved.get(k)!r} there, {now[k]!r} now" for k in now
             if k not in RESUME_FREE and saved.get(k) != now[k]]
    if diffs:
        raise UserError(f"{ckpt} holds a run with other settings ({'; '.join(diffs[:3])}); "
                        "use another --out or the same flags to resume")


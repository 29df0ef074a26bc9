"""Where an output came from: code version, git sha, software and hardware, time."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path

import dcbench


def git_sha() -> str:
    """The source tree's commit (``+dirty`` if modified); ``DCBENCH_GIT_SHA`` wins (set in images)."""
    if os.environ.get("DCBENCH_GIT_SHA"):
        return os.environ["DCBENCH_GIT_SHA"]
    root = Path(dcbench.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def environment() -> dict:
    """Versions and device, as plain JSON values."""
    import numpy
    import torch

    env = {
        "dcbench": dcbench.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    for name in ("torchvision", "faiss", "sklearn"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - an optional library missing is worth recording, not failing
            env[name] = None
    return env

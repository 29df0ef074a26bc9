"""Task logs, opened so that a link planted at a log's path (or in place of the logs folder) is
refused instead of followed: the suite writes only inside the results folder it was given."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from dcbench.errors import UserError


def check_folder(folder: Path, results: Path) -> None:
    """``folder`` (under ``results``) and every folder between them is a real folder, not a link."""
    p = folder
    while p != results and results in p.parents:
        if p.is_symlink():
            raise UserError(f"{p} is a link; the suite writes only inside --results {results}: remove the "
                            "link (or choose another --results)")
        if p.exists() and not p.is_dir():
            raise UserError(f"{p} is a file where the suite keeps a folder; move it away "
                            "(or choose another --results)")
        p = p.parent


def open_log(path: Path, append: bool = False):
    """A text file for writing at ``path``, never through a link (O_NOFOLLOW)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{path} is a link; a task log is never written through one: remove it "
                            "and rerun") from None
        raise UserError(f"cannot write the task log {path}: {e.strerror}; choose a writable --results") from None
    return os.fdopen(fd, "a" if append else "w", encoding="utf-8")

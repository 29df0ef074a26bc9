"""Atomic file and directory writes: a reader sees the old version or the new, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dcbench.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def disk_error(e: OSError, target: Path) -> UserError:
    """An output that cannot be written is the user's to fix (disk, permissions, path): one line."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "a file grew past the file-size limit" if e.errno == errno.EFBIG else "no space left"
        return UserError(f"{why} while writing {target}; free disk space (or raise the limit) and rerun "
                         "(the previous version, if any, is intact)")
    return UserError(f"cannot write {target}: {e.strerror or e}; choose a writable output folder")


def _check_replaceable(path: Path, replaceable: Callable[[Path], bool], kind: str, aside: bool = False) -> None:
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        what = "a link" if path.is_symlink() else "a file"
        raise UserError(f"{path} is {what}, not a {kind} folder; " + (
            "move it away (it is where the previous version is set aside)" if aside else "choose another path"))
    try:
        empty = not any(path.iterdir())
    except OSError as e:
        raise disk_error(e, path) from None
    if not empty and not replaceable(path):
        raise UserError(f"{path} exists and is not a {kind}; " + (
            "move it away (it is where the previous version is set aside); nothing was written" if aside
            else "choose another path (nothing was written or removed)"))


def write_file_atomic(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise disk_error(e, path) from None
    tmp = Path(tmp)
    try:
        writer(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise disk_error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_file_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def replace_dir_atomic(path: str | os.PathLike, writer: Callable[[Path], None], *,
                       replaceable: Callable[[Path], bool], kind: str = "output") -> Path:
    """Fill a fresh sibling directory with ``writer(tmp_dir)``, then swap it in for ``path``.

    The old directory is renamed aside before the new one takes its name and is removed only
    afterwards, so a crash at any point leaves a complete version on disk (``path`` or ``path.old``).
    Only an empty folder or one that ``replaceable`` recognises as this writer's own ``kind`` is
    replaced (and only such a ``path.old`` removed): a folder of anything else is refused in one line
    before anything is written, so a mistyped output flag never deletes what this writer did not write.
    """
    path = Path(os.path.abspath(path))
    cwd = Path.cwd()
    if path == cwd or path in cwd.parents or path.parent == path:
        raise UserError(f"{path} is the current folder or holds it; write the {kind} into a new folder "
                        f"(e.g. {path / kind.replace(' ', '-')})")
    _check_replaceable(path, replaceable, kind)
    _check_replaceable(path.with_name(path.name + ".old"), replaceable, kind, aside=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise disk_error(e, path) from None
    old = path.with_name(path.name + ".old")
    try:
        writer(tmp)
        # mkdtemp (and safetensors) make private files; give them the modes mkdir()/open() would, so
        # another user (a container's uid) can read the result as with any other output.
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.rename(path, old)
        os.rename(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.rename(old, path)
        raise disk_error(e, path) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path

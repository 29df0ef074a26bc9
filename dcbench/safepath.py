"""Output built from untrusted names (a checkpoint's ``meta.json`` name, a result's fields, a
class folder's name): one slug rule for paths, with a check that the path stays under the output
folder, and one rule for text drawn into a plot."""

from __future__ import annotations

import os
import re
from pathlib import Path

from dcbench.errors import UserError

MAX_SLUG = 80


def safe_slug(text, max_len: int = MAX_SLUG, keep: str = "+") -> str:
    """``text`` reduced to runs of ``[A-Za-z0-9.-]`` and the characters in ``keep``, joined by '-',
    without leading dots (no '..', no hidden file), at most ``max_len`` characters; 'x' if nothing
    is left. Docker names do not admit '+': pass ``keep=""`` for them."""
    s = re.sub(f"[^A-Za-z0-9.{re.escape(keep)}-]+", "-", str(text)).strip("-.")
    s = re.sub(r"\.{2,}", ".", s)[:max_len].strip("-.")
    return s or "x"


def checkpoint_label(name: str, sha256: str) -> str:
    """``<name>-<sha8>``: how a checkpoint is named in result file names, the suite's logs and its
    progress lines alike. ``name`` is the checkpoint's own (meta.json's, else its folder's): untrusted,
    hence slugged."""
    return f"{safe_slug(name)}-{sha256[:8]}"


def under(out: str | os.PathLike, *parts: str) -> Path:
    """``out/part/...`` with every part a safe slug, proven (after resolving links) to lie under ``out``."""
    out = Path(out)
    path = out.joinpath(*(safe_slug(p) for p in parts))
    if not path.resolve().is_relative_to(out.resolve()):
        raise UserError(f"{path} would lie outside --out {out} (a link inside it points elsewhere); "
                        "choose another --out")
    return path


def output_dir(out: str | os.PathLike, *parts: str) -> Path:
    """:func:`under`, created; an existing non-folder is one line naming it."""
    path = under(out, *parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot create the folder {path}: a file is in the way; choose another --out") from None
    except OSError as e:
        from dcbench.atomic import disk_error

        raise disk_error(e, path) from None
    return path


def plot_text(text, max_len: int = 60) -> str:
    """Untrusted text for a matplotlib title or label: bounded, and with '$' escaped, since
    matplotlib parses text between two '$' as mathtext and raises on a malformed formula."""
    text = " ".join(str(text).split())
    text = text if len(text) <= max_len else text[:max_len] + "..."
    return text.replace("$", r"\$")

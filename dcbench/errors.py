"""User-facing errors and the one wrapper every ``dc-*`` command runs under.

A benchmark tool must never answer a typo with a torch traceback: anything the user can fix
raises :class:`UserError`, which :func:`run_cli` turns into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from dcbench.text import printable


class UserError(Exception):
    """Bad input the user can fix (a path, a flag, a file). Message: one line, names the fix."""

    exit_code = 2


class DataError(UserError):
    """A dataset file is missing or malformed."""


class CheckpointError(UserError):
    """A checkpoint directory is missing, corrupt, or of an unknown format."""


class ResultError(UserError):
    """A result file does not follow the result schema."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (not usage + message) and exit 2, and takes
    no abbreviations: a prefix such as ``--ou`` would otherwise reach ``--out`` behind the back of
    anything that checks flags by name (the suite reserves some for itself)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


# torch re-raises an error from a DataLoader worker as the same type, its message being
# "Caught X in DataLoader worker process N.\nOriginal Traceback ...\n<module>.X: <message>".
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*\nOriginal Traceback", re.M)


def one_line(message: str, limit: int = 2000) -> str:
    """The user-facing line of an error message: a worker's traceback is reduced to the original
    error's own message (as with ``--workers 0``); any other newline becomes a space."""
    text = str(message)
    if _WORKER.search(text):
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", last.strip(), count=1)
    # messages quote file names and values from untrusted files: no terminal control gets through
    return printable(" ".join(text.split()), limit)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main``; map user errors to exit 2 and Ctrl-C to 130.

    Running out of memory despite the up-front bounds is one line and exit 1, not a traceback."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - only out-of-memory is handled; anything else re-raised
        # MemoryError on the host; torch.cuda.OutOfMemoryError (a RuntimeError) on a GPU.
        if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"):
            raise
        where = "GPU" if type(e).__name__ == "OutOfMemoryError" else "host"
        print(f"error: out of {where} memory; lower --batch-size (or the input size) or use a larger machine",
              file=sys.stderr)
        return 1

"""User-facing errors and the one wrapper every ``dc-*`` command runs under.

A benchmark tool must never answer a typo with a torch traceback: anything the user can fix
raises :class:`UserError`, which :func:`run_cli` turns into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


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
    """argparse that reports usage errors as one line (not usage + message) and exit 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main``; map user errors to exit 2 and Ctrl-C to 130."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

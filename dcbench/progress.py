"""Progress of a long stage: a tqdm bar on a terminal; elsewhere (CI, a pipe, a suite's task log)
one plain line every :data:`EVERY_S` seconds and one at the end of a stage that has printed one, so
that a log never goes silent for minutes, never fills with carriage returns, and a quick stage
prints nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

EVERY_S = 30.0  # a reader of a log (or dc-bench's heartbeat) sees each stage move at least this often


class LineProgress:
    """The part of tqdm's interface the stages use (iterate, update, set_postfix, close), as lines."""

    def __init__(self, iterable: Iterable | None, total: int | None, desc: str, file, every_s: float):
        self.iterable, self.total, self.desc, self.file, self.every_s = iterable, total, desc, file, every_s
        self.n, self.postfix, self.closed, self.spoke = 0, "", False, False
        self.t0 = self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def write(self, s: str) -> None:
        print(s, file=self.file, flush=True)

    def close(self) -> None:
        """The last count, for a stage that has spoken before: a stage shorter than ``every_s`` stays
        silent, so a quick command's output (an error above all) is only what it has to say."""
        if not self.closed:
            self.closed = True
            now = time.monotonic()
            if self.n and (self.spoke or now - self.t0 >= self.every_s):
                self._line(now)

    def _line(self, now: float) -> None:
        self.spoke = True
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} in {now - self.t0:.0f}s{extra}", file=self.file, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             show: bool = True, file=None, every_s: float = EVERY_S, **tqdm_kwargs):
    """``tqdm(iterable, ...)`` on a terminal, :class:`LineProgress` elsewhere; nothing when ``show``
    is false (another rank shows it, or the caller asked for quiet)."""
    file = file or sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not show:
        return tqdm(iterable, total=total, disable=True)
    if file.isatty():
        return tqdm(iterable, total=total, desc=desc, leave=False, file=file, **tqdm_kwargs)
    return LineProgress(iterable, total, desc, file, every_s)

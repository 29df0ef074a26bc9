"""The live display: a tqdm bar on a terminal, plain lines otherwise (CI logs, pipes); off a
terminal, a heartbeat every 30 s names each running task, its time so far and the last line
of its log (the stage it is in, with its done/total)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

from dcbench.progress import EVERY_S
from dcbench.text import printable

TAIL_BYTES = 4096  # enough for a log's last line; a log is never read whole for a heartbeat


def last_log_line(log: Path | None) -> str:
    """The last non-empty line of a task's log (a tqdm line's last update), bounded and inert."""
    if log is None:
        return ""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [x.strip() for x in tail.replace("\r", "\n").splitlines() if x.strip()]
    return printable(lines[-1])[:160] if lines else ""


class Progress:
    def __init__(self, stream=None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.lock = threading.Lock()
        self.bar = None
        self.running: dict[str, tuple[float, Path | None]] = {}  # label -> (start, log)
        self.total = self.done = 0
        self.last_beat = time.monotonic()

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        with self.lock:
            self._line(f"dc-bench: {text}")

    def planned(self, total: int) -> None:
        with self.lock:
            self.total = total
            if self.live and total:
                self.bar = tqdm(total=total, desc="suite", unit="task", file=self.stream, dynamic_ncols=True)

    def started(self, job, log: Path | None = None) -> None:
        with self.lock:
            self.running[job.label] = (time.monotonic(), log)
            self._line(f"dc-bench: start  {job.label}")
            self._refresh()

    def finished(self, o) -> None:
        with self.lock:
            if o.job.label in self.running:
                del self.running[o.job.label]
                self.done += 1
                if self.bar is not None:
                    self.bar.update(1)
            extra = f" in {o.seconds:.1f}s" if o.status != "skipped" else " (same request already done)"
            where = f" -> {o.result}" if o.result else (f", log {o.log}" if o.log else "")
            self._line(f"dc-bench: {o.status:<7} {o.job.label}{extra}{where}"
                       + (f" [{self.done}/{self.total}]" if o.status != "skipped" else ""))
            self._refresh()

    def tick(self, every_s: float = EVERY_S) -> None:
        """Off a terminal, one line per running task every ``every_s`` seconds."""
        with self.lock:
            now = time.monotonic()
            if self.live or not self.running or now - self.last_beat < every_s:
                return
            self.last_beat = now
            for label, (t0, log) in self.running.items():
                stage = last_log_line(log)
                self._line(f"dc-bench: running {label} for {now - t0:.0f}s [{self.done}/{self.total} done]"
                           + (f": {stage}" if stage else ""))

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("running: " + (", ".join(self.running) or "-"), refresh=True)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

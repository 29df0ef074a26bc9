"""The live display: a tqdm bar on a terminal, plain lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import threading

from tqdm import tqdm


class Progress:
    def __init__(self, stream=None, live: bool | None = None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.lock = threading.Lock()
        self.bar = None
        self.running: list[str] = []
        self.total = self.done = 0

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

    def started(self, job) -> None:
        with self.lock:
            self.running.append(job.label)
            self._line(f"dc-bench: start  {job.label}")
            self._refresh()

    def finished(self, o) -> None:
        with self.lock:
            if o.job.label in self.running:
                self.running.remove(o.job.label)
                self.done += 1
                if self.bar is not None:
                    self.bar.update(1)
            extra = f" in {o.seconds:.1f}s" if o.status != "skipped" else " (same request already done)"
            where = f" -> {o.result}" if o.result else (f", log {o.log}" if o.log else "")
            self._line(f"dc-bench: {o.status:<7} {o.job.label}{extra}{where}"
                       + (f" [{self.done}/{self.total}]" if o.status != "skipped" else ""))
            self._refresh()

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str("running: " + (", ".join(self.running) or "-"), refresh=True)

    def close(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

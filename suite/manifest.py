"""The suite manifest: one JSON file in the results folder, rewritten atomically (under a file
lock, so two suite runs on one folder do not lose each other's entries) each time a task ends."""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from dcbench.atomic import write_json_atomic
from dcbench.errors import UserError
from dcbench.provenance import utc_now
from dcbench.text import printable

NAME = "suite-manifest.json"
SCHEMA = "dcbench-suite-manifest"
VERSION = 1
KEEP_RUNS = 50
MAX_BYTES = 64 << 20  # a manifest holds a few KB per task; anything near this is not ours


def folder(results: Path) -> Path:
    """Where the suite keeps its own files (manifest, logs), apart from the result JSONs."""
    return results / "suite"


class Manifest:
    def __init__(self, results: Path):
        self.path = folder(results) / NAME
        self.lock_path = Path(str(self.path) + ".lock")
        self.lock = FileLock(str(self.lock_path))

    def _fail(self, why: str) -> UserError:
        return UserError(f"{self.path}: {why}; move it away (every task then runs again)")

    def read(self) -> dict:
        if self.path.is_symlink():
            raise self._fail("is a link, not the suite's manifest")
        if not self.path.exists():
            return {"schema": SCHEMA, "schema_version": VERSION, "runs": [], "tasks": {}}
        try:
            size = self.path.stat().st_size
            if not self.path.is_file() or size > MAX_BYTES:
                raise self._fail("not a suite manifest" if not self.path.is_file() else
                                 f"{size} bytes, more than a suite manifest may have ({MAX_BYTES})")
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._fail(f"unreadable suite manifest ({e})") from None
        except RecursionError:
            raise self._fail("nested too deeply to be a suite manifest") from None
        if not (isinstance(data, dict) and data.get("schema") == SCHEMA
                and isinstance(data.get("tasks"), dict) and isinstance(data.get("runs"), list)):
            raise self._fail(f"not a {SCHEMA} file")
        if data.get("schema_version") != VERSION:
            raise self._fail(f"manifest version {str(data.get('schema_version'))[:20]!r}, this dc-bench writes {VERSION}")
        bad = [k for k, v in data["tasks"].items() if not isinstance(v, dict)][:1] or \
              [f"runs[{i}]" for i, r in enumerate(data["runs"]) if not isinstance(r, dict)][:1]
        if bad:
            raise self._fail(f"entry '{printable(bad[0], 80)}' is not an object")
        return data

    def _locked(self):
        if self.lock_path.is_symlink():
            # the lock is opened for writing (and truncated): never through a link
            raise UserError(f"{self.lock_path} is a link; remove it (the suite creates its own lock file)")
        return self.lock

    def entries(self) -> dict:
        try:
            with self._locked():
                return self.read()["tasks"]
        except OSError as e:  # the lock file cannot be created (read-only folder)
            raise UserError(f"cannot lock the suite manifest {self.path}: {e.strerror or e}; "
                            "choose a writable --results") from None

    def _update(self, change) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                data = self.read()
                change(data)
                data["updated"] = utc_now()
                write_json_atomic(self.path, data)
        except OSError as e:
            raise UserError(f"cannot write the suite manifest {self.path}: {e.strerror or e}; "
                            "choose a writable --results") from None

    def record_task(self, job_id: str, entry: dict) -> None:
        def change(data):
            data["tasks"][job_id] = entry
        self._update(change)

    def record_run(self, run: dict) -> None:
        def change(data):
            runs = [r for r in data["runs"] if r.get("run_id") != run["run_id"]]
            data["runs"] = (runs + [run])[-KEEP_RUNS:]
        self._update(change)

"""The suite manifest: one JSON file in the results folder, rewritten atomically (under a file
lock, so two suite runs on one folder do not lose each other's entries) each time a task ends."""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock

from dcbench.atomic import write_json_atomic
from dcbench.errors import UserError
from dcbench.provenance import utc_now

NAME = "suite-manifest.json"
SCHEMA = "dcbench-suite-manifest"
VERSION = 1
KEEP_RUNS = 50


def folder(results: Path) -> Path:
    """Where the suite keeps its own files (manifest, logs), apart from the result JSONs."""
    return results / "suite"


class Manifest:
    def __init__(self, results: Path):
        self.path = folder(results) / NAME
        self.lock = FileLock(str(self.path) + ".lock")

    def read(self) -> dict:
        if not self.path.is_file():
            return {"schema": SCHEMA, "schema_version": VERSION, "runs": [], "tasks": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{self.path}: unreadable suite manifest ({e}); move it away "
                            "(every task then runs again)") from None
        if not (isinstance(data, dict) and data.get("schema") == SCHEMA
                and isinstance(data.get("tasks"), dict) and isinstance(data.get("runs"), list)):
            raise UserError(f"{self.path}: not a {SCHEMA} file; move it away (every task then runs again)")
        if data.get("schema_version") != VERSION:
            raise UserError(f"{self.path}: manifest version {data.get('schema_version')!r}, this dc-bench "
                            f"writes {VERSION}; move it away")
        return data

    def entries(self) -> dict:
        with self.lock:
            return self.read()["tasks"]

    def _update(self, change) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            data = self.read()
            change(data)
            data["updated"] = utc_now()
            write_json_atomic(self.path, data)

    def record_task(self, job_id: str, entry: dict) -> None:
        def change(data):
            data["tasks"][job_id] = entry
        self._update(change)

    def record_run(self, run: dict) -> None:
        def change(data):
            runs = [r for r in data["runs"] if r.get("run_id") != run["run_id"]]
            data["runs"] = (runs + [run])[-KEEP_RUNS:]
        self._update(change)

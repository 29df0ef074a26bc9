"""Result schema v1: one JSON file per (checkpoint, task, variant).

The only thing the leaderboard reads. One validator (:func:`validate_result`) is used both
when a task writes a result and when the leaderboard reads one, so a file that was accepted
once is accepted everywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jsonschema

from dcbench.atomic import write_json_atomic
from dcbench.errors import ResultError
from dcbench.provenance import environment, utc_now
from dcbench.safepath import checkpoint_label, safe_slug
from dcbench.tasks import registry
from dcbench.text import printable

SCHEMA_NAME = "dcbench-result"
SCHEMA_VERSION = 1
SCALES = ("full", "smoke")

_scalar = {"type": ["string", "number", "integer", "boolean", "null"]}
_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dcbench result v1",
    "type": "object",
    "required": ["schema", "schema_version", "task", "variant", "checkpoint", "metrics", "selection",
                 "protocol", "data", "scale", "environment", "timings", "created"],
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "schema_version": {"const": SCHEMA_VERSION},
        # the registered tasks, filled in by result_schema(): the task modules that register them
        # import this module, so they are not known yet when it is imported
        "task": {"enum": []},
        # What distinguishes two results of one task on one checkpoint: dataset, layer, fc6-8/all,
        # shots, run. Scalars only, so it can key a table row.
        "variant": {"type": "object", "required": ["dataset"], "additionalProperties": _scalar,
                    "properties": {"dataset": {"type": "string"}}},
        "checkpoint": {"type": "object", "required": ["name", "sha256", "arch", "sobel", "origin"],
                       "properties": {"name": {"type": "string"},
                                      "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                      "arch": {"type": "string"}, "sobel": {"type": "boolean"},
                                      "origin": {"type": "string"}, "epoch": {"type": ["integer", "null"]}}},
        # Named metrics in percent. A name ending in "_best" is a best-over-epochs number.
        "metrics": {"type": "object", "minProperties": 1,
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100}},
        # How the numbers were selected: never silently the maximum over epochs.
        "selection": {"type": "object", "required": ["rule"],
                      "properties": {"rule": {"enum": ["last", "last+best", "final"]},
                                     "epochs": {"type": ["integer", "null"]},
                                     "best_epoch": {"type": ["integer", "null"]}}},
        "protocol": {"type": "object"},
        "data": {"type": "object", "required": ["name", "root", "fingerprint", "sizes"],
                 "properties": {"name": {"type": "string"}, "root": {"type": "string"},
                                "fingerprint": {"type": "string"},
                                "sizes": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "scale": {"enum": list(SCALES)},
        "environment": {"type": "object"},
        "timings": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
        "created": {"type": "string"},
        "details": {},
    },
    "additionalProperties": False,
}
_validator: tuple[tuple[str, ...], jsonschema.Draft202012Validator] | None = None


def result_schema() -> dict:
    """Schema v1 as JSON Schema, ``task`` one of the registered tasks (:mod:`dcbench.tasks`)."""
    names = list(registry())
    return {**_SCHEMA, "properties": {**_SCHEMA["properties"], "task": {"enum": names}}}


def _schema_validator() -> jsonschema.Draft202012Validator:
    global _validator
    names = tuple(registry())
    if _validator is None or _validator[0] != names:
        _validator = (names, jsonschema.Draft202012Validator(result_schema()))
    return _validator[1]


def validate_result(result: dict, source: str = "result") -> dict:
    """Raise :class:`ResultError` (one line, naming ``source``) unless ``result`` follows schema v1."""
    if not isinstance(result, dict):
        raise ResultError(f"{source}: a result must be a JSON object")
    if result.get("schema") == SCHEMA_NAME and result.get("schema_version") != SCHEMA_VERSION:
        raise ResultError(f"{source}: schema version {result.get('schema_version')!r} is not "
                          f"{SCHEMA_VERSION}; regenerate it with this dcbench")
    errors = sorted(_schema_validator().iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ResultError(printable(f"{source}: {where}: {e.message}", 400))
    pattern = registry()[result["task"]].metrics
    for name, value in result["metrics"].items():
        if not re.fullmatch(pattern, name):
            raise ResultError(f"{source}: metrics: '{printable(name, 60)}' is not a metric of {result['task']} "
                              f"(names: {pattern})")
        if not math.isfinite(value):
            raise ResultError(f"{source}: metrics/{name} is not finite")
    if any(k.endswith("_best") for k in result["metrics"]):
        if result["selection"]["rule"] != "last+best" or result["selection"].get("best_epoch") is None:
            raise ResultError(f"{source}: best-over-epochs metrics need selection rule 'last+best' "
                              "and a best_epoch")
    return result


def checkpoint_block(ckpt) -> dict:
    """The result's description of a :class:`dcbench.checkpoint.Checkpoint`."""
    meta = ckpt.meta
    return {"name": ckpt.name, "sha256": meta["model_sha256"], "arch": meta["arch"],
            "sobel": bool(meta["sobel"]), "origin": meta.get("origin") or "unknown",
            "epoch": meta.get("epoch")}


def make_result(*, task: str, variant: dict, checkpoint: dict, metrics: dict, protocol: dict,
                data: dict, scale: str, timings: dict, selection: dict | None = None,
                details=None) -> dict:
    """Assemble (and validate) a schema-v1 result, filling schema, environment and time."""
    result = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "variant": variant,
        "checkpoint": checkpoint,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "selection": selection or {"rule": "final"},
        "protocol": protocol,
        "data": data,
        "scale": scale,
        "environment": environment(),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "created": utc_now(),
    }
    if details is not None:
        result["details"] = details
    return validate_result(result, f"{task} result")


def result_filename(result: dict) -> str:
    """``<task>__<variant>__<checkpoint>-<sha8>__<created>.json``: runs never overwrite each other."""
    slug = safe_slug
    variant = "_".join(f"{slug(v)}" for k, v in sorted(result["variant"].items()) if v is not None)[:120]
    ckpt = result["checkpoint"]
    stamp = slug(result["created"].replace(":", "").replace("+0000", "Z"))
    return f"{result['task']}__{variant}__{checkpoint_label(ckpt['name'], ckpt['sha256'])}__{stamp}.json"


def write_result(result: dict, out: str | os.PathLike) -> Path:
    """Validate and write atomically. ``out`` is a directory (file named by :func:`result_filename`)
    or a path ending in ``.json``."""
    validate_result(result, str(out))
    out = Path(out)
    path = out if out.suffix == ".json" else out / result_filename(result)
    if out.suffix == ".json" and os.path.lexists(path):
        # a named file is replaced only by a newer run of the same task on the same checkpoint
        try:
            old = read_result(path)
        except ResultError:
            old = None
        if old is None or (old["task"], old["checkpoint"]["sha256"]) != (result["task"], result["checkpoint"]["sha256"]):
            raise ResultError(f"--out {path} exists and is not a {result['task']} result of this checkpoint; "
                              "choose another file, or a folder (each run then gets its own file)")
    return write_json_atomic(path, result)


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultError(f"{path}: no such result file") from None
    except OSError as e:
        raise ResultError(f"{path}: cannot read it as a result file ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise ResultError(f"{path}: nested too deeply to be a result file") from None
    return validate_result(data, str(path))

"""Result schema v2: one JSON file per (checkpoint, task, variant), and beside it the per-image
outcomes its metrics were computed from (:mod:`dcbench.outcomes`).

The only thing the leaderboard reads. One validator (:func:`validate_result`) is used both
when a task writes a result and when the leaderboard reads one, so a file that was accepted
once is accepted everywhere.

v2 adds to v1: ``cost`` (wall time, device, GPU-hours, peak memory; required), ``intervals`` (a 95%
bootstrap interval over test images per metric that has outcomes), ``outcomes`` (the npz beside the
result and what identifies its test images), ``seeds`` (mean and standard deviation over ``--seeds``
repeats of the trained part), and the selection rules ``held-out`` and ``cross-validation``. v1 files
still read; they have no intervals.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jsonschema

from dcbench.atomic import write_json_atomic
from dcbench.cost import cost_block
from dcbench.errors import ResultError
from dcbench.outcomes import Outcomes, check_reproduces, intervals_of, outcomes_path, write_outcomes
from dcbench.provenance import environment, utc_now
from dcbench.safepath import checkpoint_label, safe_slug
from dcbench.tasks import registry
from dcbench.text import printable

SCHEMA_NAME = "dcbench-result"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
SCALES = ("full", "smoke")
# How a number was chosen among several a task computed. "final": no choice (one training run
# scored once). "last": the last iterate. "held-out": chosen on a validation split carved from the
# training set, the test set scored once at that choice. "cross-validation": chosen by k-fold
# cross-validation on the training set. "last+best": the thesis's rule, the best epoch on the test
# set itself (its "_best" metrics), kept for comparison with the published tables, never the
# default. "best-on-test": another choice made on the test set as a published protocol does.
SELECTION_RULES = ("final", "last", "held-out", "cross-validation", "last+best", "best-on-test")
TEST_SET_RULES = ("last+best", "best-on-test")

_scalar = {"type": ["string", "number", "integer", "boolean", "null"]}
_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "dcbench result v2",
    "type": "object",
    "required": ["schema", "schema_version", "task", "variant", "checkpoint", "metrics", "selection",
                 "protocol", "data", "scale", "environment", "timings", "created"],
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "schema_version": {"enum": list(READABLE_VERSIONS)},
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
                      "properties": {"rule": {"enum": list(SELECTION_RULES)},
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
        "cost": {"type": "object", "required": ["wall_s", "device", "gpu_hours", "peak_host_mb"],
                 "properties": {"wall_s": {"type": "number", "minimum": 0},
                                "device": {"type": "string", "maxLength": 200},
                                "device_count": {"type": "integer", "minimum": 0},
                                "gpu_hours": {"type": "number", "minimum": 0},
                                "peak_host_mb": {"type": "number", "minimum": 0},
                                "peak_host_children_mb": {"type": "number", "minimum": 0},
                                "peak_device_mb": {"type": ["number", "null"], "minimum": 0},
                                "images": {"type": "integer", "minimum": 0},
                                "images_per_s": {"type": ["number", "null"], "minimum": 0}}},
        "intervals": {"type": "object", "required": ["method", "level", "resamples", "seed", "images", "metrics"],
                      "properties": {"method": {"type": "string"}, "level": {"const": 95},
                                     "resamples": {"type": "integer", "minimum": 1},
                                     "seed": {"type": "integer"}, "images": {"type": "integer", "minimum": 1},
                                     "metrics": {"type": "object", "additionalProperties": {
                                         "type": "array", "items": {"type": "number"},
                                         "minItems": 2, "maxItems": 2}}}},
        "outcomes": {"type": "object", "required": ["file", "sha256", "images", "images_sha256", "metrics"],
                     "properties": {"file": {"type": "string", "pattern": "^[A-Za-z0-9_.+-]{1,200}$"},
                                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "images": {"type": "integer", "minimum": 1},
                                    "images_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                    "metrics": {"type": "object", "additionalProperties": {"type": "object"}}}},
        "seeds": {"type": "object", "required": ["n", "seeds", "mean", "sd"],
                  "properties": {"n": {"type": "integer", "minimum": 2},
                                 "seeds": {"type": "array", "items": {"type": "integer"}},
                                 "mean": {"type": "object", "additionalProperties": {"type": "number"}},
                                 "sd": {"type": "object", "additionalProperties": {"type": "number"}},
                                 "values": {"type": "object"}}},
    },
    "additionalProperties": False,
}
# fields a v1 file never has (it is read as it was written: no intervals, no cost)
_V2_ONLY = ("cost", "intervals", "outcomes", "seeds")
_validator: tuple[tuple[str, ...], jsonschema.Draft202012Validator] | None = None


def result_schema() -> dict:
    """Schema v2 (v1 readable) as JSON Schema, ``task`` one of the registered tasks (:mod:`dcbench.tasks`)."""
    names = list(registry())
    return {**_SCHEMA, "properties": {**_SCHEMA["properties"], "task": {"enum": names}}}


def _schema_validator() -> jsonschema.Draft202012Validator:
    global _validator
    names = tuple(registry())
    if _validator is None or _validator[0] != names:
        _validator = (names, jsonschema.Draft202012Validator(result_schema()))
    return _validator[1]


def validate_result(result: dict, source: str = "result") -> dict:
    """Raise :class:`ResultError` (one line, naming ``source``) unless ``result`` follows schema v2,
    or v1 as it was written."""
    if not isinstance(result, dict):
        raise ResultError(f"{source}: a result must be a JSON object")
    version = result.get("schema_version")
    if result.get("schema") == SCHEMA_NAME and version not in READABLE_VERSIONS:
        raise ResultError(f"{source}: result schema version {printable(repr(version), 40)}; this dcbench "
                          f"reads versions {', '.join(map(str, READABLE_VERSIONS))} (upgrade dcbench, or "
                          "regenerate the result with this one)")
    errors = sorted(_schema_validator().iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ResultError(printable(f"{source}: {where}: {e.message}", 400))
    if version == 1:
        extra = [k for k in _V2_ONLY if k in result]
        if extra:
            raise ResultError(f"{source}: {extra[0]} is a schema v2 field in a v1 result")
        if result["selection"]["rule"] not in ("last", "last+best", "final"):
            raise ResultError(f"{source}: selection rule {result['selection']['rule']} is not one of v1's")
    elif "cost" not in result:
        raise ResultError(f"{source}: a schema v2 result needs its cost block")
    pattern = registry()[result["task"]].metrics
    for name, value in result["metrics"].items():
        if not re.fullmatch(pattern, name):
            raise ResultError(f"{source}: metrics: '{printable(name, 60)}' is not a metric of {result['task']} "
                              f"(names: {pattern})")
        if not math.isfinite(value):
            raise ResultError(f"{source}: metrics/{name} is not finite")
    for block in ("intervals", "seeds"):
        names = result.get(block, {}).get("metrics" if block == "intervals" else "mean", {})
        stray = [n for n in names if n not in result["metrics"]]
        if stray:
            raise ResultError(f"{source}: {block}: '{printable(stray[0], 60)}' is not one of its metrics")
    for name, (lo, hi) in result.get("intervals", {}).get("metrics", {}).items():
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ResultError(f"{source}: intervals/{name} is not a finite interval")
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
    """Assemble (and validate) a schema-v2 result, filling schema, environment, cost and time."""
    metrics = {k: float(v) for k, v in metrics.items()}
    result = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "variant": variant,
        "checkpoint": checkpoint,
        "metrics": metrics,
        "selection": selection or {"rule": "final"},
        "protocol": protocol,
        "data": data,
        "scale": scale,
        "environment": environment(),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "created": utc_now(),
        "cost": cost_block(data.get("sizes", {})),
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


def write_result(result: dict, out: str | os.PathLike, outcomes: Outcomes | None = None) -> Path:
    """Validate and write atomically. ``out`` is a directory (file named by :func:`result_filename`)
    or a path ending in ``.json``.

    ``outcomes``: the per-image outcomes of some (ideally all) of its metrics. They must give the
    metrics' values at weights 1; each such metric gets its bootstrap interval in the result, and
    the outcomes are written first, beside it, so a result on disk always has its file."""
    if outcomes is not None and outcomes.metrics:
        check_reproduces(outcomes, result["metrics"], f"{result.get('task')} result")
        result["intervals"] = intervals_of(outcomes)
        result["outcomes"] = {"file": "pending.outcomes.npz", "sha256": "0" * 64, "images": len(outcomes.ids),
                              "images_sha256": outcomes.digest,
                              "metrics": {n: {"kind": m.kind, "rule": m.rule} for n, m in outcomes.metrics.items()}}
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
    if outcomes is not None and outcomes.metrics:
        npz = outcomes_path(path)
        sha = write_outcomes(npz, outcomes, task=result["task"], checkpoint_sha256=result["checkpoint"]["sha256"])
        result["outcomes"] = {**result["outcomes"], "file": npz.name, "sha256": sha}
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

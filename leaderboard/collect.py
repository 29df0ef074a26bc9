"""Find, read and validate result files; keep the newest run of each (scale, task, checkpoint, variant).

Pure functions over paths and plain dicts, so a test can call them without the CLI. A file that
is not a valid result (schema v2, or v1 as written) is *skipped* (named, with the reason); a file
that is a dcbench result of a schema version this dcbench cannot read is *set aside* and reported,
never mixed into the tables.

A result's intervals are shown only when the per-image outcomes beside it check out
(:func:`dcbench.outcomes.read_outcomes`); otherwise the reason is kept and the table marks the cell.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from dcbench.choices import family_of
from dcbench.errors import ResultError, UserError
from dcbench.outcomes import read_outcomes
from dcbench.results import READABLE_VERSIONS, SCHEMA_NAME, validate_result

# Columns of the frame that :func:`newest_runs` returns (one row per result group).
# The selection rule is part of it: a run under the thesis's rule and one under the held-out rule
# are two rows, never one replacing the other.
GROUP_KEY = ["scale", "task", "ckpt_sha", "ckpt_name", "variant_key", "selection_rule"]


@dataclass
class Collection:
    """What the leaderboard was built from."""

    results: list[dict] = field(default_factory=list)          # valid results, "_path" added
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    other_version: list[tuple[str, object]] = field(default_factory=list)  # (path, schema_version)


def find_result_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; directories searched recursively for ``*.json``. A missing path is a user error."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.json") if q.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p}: no such file or directory; pass result files or folders of them")
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


# dcbench's own documents that share a results folder with the results: dc-bench run keeps its
# manifest there (RESULTS/suite/), lowshot-svm the images of each draw. They are not results, nor a
# problem to report.
NOT_RESULTS = ("dcbench-suite-manifest", "dcbench-lowshot-draw")

MAX_RESULT_BYTES = 64 << 20  # a result is a few KB; k-NN details with per-class lists, a few MB


def load_results(files: Iterable[Path]) -> Collection:
    coll = Collection()
    for f in files:
        try:
            size = Path(f).stat().st_size
            if size > MAX_RESULT_BYTES:
                coll.skipped.append((str(f), f"{size} bytes, more than a result file may have ({MAX_RESULT_BYTES})"))
                continue
            data = json.loads(Path(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            coll.skipped.append((str(f), f"not valid JSON ({e})"))
            continue
        except RecursionError:
            coll.skipped.append((str(f), "nested too deeply to be a result file"))
            continue
        if isinstance(data, dict) and data.get("schema") in NOT_RESULTS:
            continue
        if (isinstance(data, dict) and data.get("schema") == SCHEMA_NAME
                and data.get("schema_version") not in READABLE_VERSIONS):
            version = data.get("schema_version")
            coll.other_version.append((str(f), version if isinstance(version, (int, float)) else repr(version)[:80]))
            continue
        try:
            validate_result(data, str(f))
        except ResultError as e:
            coll.skipped.append((str(f), str(e).removeprefix(f"{f}: ")))
            continue
        data["_path"] = str(f)
        coll.results.append(data)
    return coll


def _created(value: str) -> datetime:
    """Parse ``created``; an unparsable time sorts first (oldest), never crashes the leaderboard."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def variant_key(variant: dict) -> str:
    return json.dumps(variant, sort_keys=True)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become JSON strings so they compare as values."""
    flat = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, name + "."))
        elif isinstance(v, list):
            flat[name] = json.dumps(v)
        else:
            flat[name] = v
    return flat


def checked_outcomes(r: dict) -> tuple[dict, dict, str | None]:
    """(intervals, outcomes by metric, why the intervals are left out) of a result: its intervals
    only when its outcomes file checks out. A v1 result has neither, and nothing to explain."""
    if r["schema_version"] == 1 or ("intervals" not in r and "outcomes" not in r):
        return {}, {}, None
    try:
        metrics = read_outcomes(r, Path(r["_path"]))
    except ResultError as e:
        return {}, {}, str(e).removeprefix(f"{r['_path']}: ")
    intervals = {k: tuple(v) for k, v in r.get("intervals", {}).get("metrics", {}).items() if k in metrics}
    return intervals, metrics, None


def to_frame(results: list[dict]) -> pd.DataFrame:
    """One row per result file."""
    rows = []
    for r in results:
        details = r.get("details") if isinstance(r.get("details"), dict) else {}
        intervals, outcomes, withheld = checked_outcomes(r)
        size = r["protocol"].get("input_size")
        rows.append({
            "scale": r["scale"], "task": r["task"],
            "ckpt_name": r["checkpoint"]["name"], "ckpt_sha": r["checkpoint"]["sha256"],
            "ckpt_origin": str(r["checkpoint"].get("origin") or "unknown"),
            "family": family_of(r["checkpoint"].get("arch")),
            "variant_key": variant_key(r["variant"]), "variant": r["variant"],
            "created": _created(r["created"]), "created_raw": r["created"],
            "metrics": r["metrics"], "selection": r["selection"],
            "protocol": flatten(r["protocol"]),
            "protocol_defaults": flatten(details.get("protocol_defaults") or {})
            if isinstance(details.get("protocol_defaults"), dict) else None,
            "git_sha": str(r["environment"].get("git_sha") or "unknown"),
            "data_name": r["data"]["name"], "details": details, "path": r["_path"],
            "selection_rule": r["selection"]["rule"], "schema_version": r["schema_version"],
            "data_fp": str(r["data"]["fingerprint"]),
            "input_size": size if isinstance(size, int) and not isinstance(size, bool) else None,
            "cost": r.get("cost"), "seeds": r.get("seeds"), "intervals": intervals, "outcomes": outcomes,
            "withheld": withheld, "images_sha": (r.get("outcomes") or {}).get("images_sha256") if outcomes else None,
        })
    cols = ["scale", "task", "ckpt_name", "ckpt_sha", "ckpt_origin", "family", "variant_key", "variant", "created", "created_raw",
            "metrics", "selection", "protocol", "protocol_defaults", "git_sha", "data_name", "details", "path",
            "selection_rule", "schema_version", "data_fp", "input_size", "cost", "seeds", "intervals", "outcomes",
            "withheld", "images_sha"]
    return pd.DataFrame(rows, columns=cols)


def newest_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest result of each group, with ``n_runs`` (how many results the group has)."""
    if frame.empty:
        return frame.assign(n_runs=pd.Series(dtype=int))
    ordered = frame.sort_values(["created", "path"], kind="stable")
    counts = ordered.groupby(GROUP_KEY, sort=False).size().rename("n_runs")
    newest = ordered.groupby(GROUP_KEY, sort=False).tail(1)
    newest = newest.join(counts, on=GROUP_KEY)
    newest["protocol_diff"] = protocol_differences(newest)
    return newest.sort_values(["scale", "task", "ckpt_name", "ckpt_sha", "variant_key"]).reset_index(drop=True)


def protocol_differences(newest: pd.DataFrame) -> list[dict]:
    """Per row: the protocol values that differ from the default of its (task, scale, family).

    The default is the result's own ``details.protocol_defaults`` when it has one (written by a
    task that knows its defaults; keys it does not name are not compared). Otherwise it is the most common value of each key among the
    newest results of the same task and scale; a value is listed when it is not that most common
    value, and on a tie every value is listed (there is no majority to call the default). A
    lone result of its task and scale therefore lists nothing.
    """
    diffs: list[dict] = []
    for _, row in newest.iterrows():
        own_defaults = row["protocol_defaults"]
        if own_defaults:
            diffs.append({k: v for k, v in row["protocol"].items()
                          if k in own_defaults and own_defaults[k] != v})
            continue
        peers = newest[(newest["task"] == row["task"]) & (newest["scale"] == row["scale"])
                       & (newest["family"] == row["family"])]  # a ResNet's protocol differs by design
        diff = {}
        for k, v in row["protocol"].items():
            values = [json.dumps(p.get(k), sort_keys=True) for p in peers["protocol"]]
            counts = pd.Series(values).value_counts()
            top = counts[counts == counts.max()].index
            if len(top) > 1 or top[0] != json.dumps(v, sort_keys=True):
                diff[k] = v
        diffs.append(diff)
    return diffs

"""``dc-leaderboard --check EXPECTED.yaml``: fail when a measured number drifts (regression runs).

As detectron2's ``verify_results``: every expected number is compared with the newest matching
result; each drift, and each expected number with no result at all, is one line on stderr and
the command exits 1.

EXPECTED.yaml is a list of entries (or a mapping with the list under ``expected``)::

    - task: linear-imagenet      # required, a dcbench task
      checkpoint: km-ImNet-Sob   # required: checkpoint name, or a sha256 prefix (>= 6 hex digits)
      metric: conv5              # required: a key of the result's metrics
      value: 36.0                # required: expected number, percent
      tolerance: 0.5             # optional, absolute percentage points (default 0.1)
      variant: {dataset: ImageNet}   # optional: subset of the result's variant that must match
      scale: full                # optional: full | smoke (default: either)

If several newest results match one entry (e.g. two variants and no ``variant`` given), every
one of them must be within tolerance.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import yaml

from dcbench.errors import UserError
from dcbench.results import SCALES
from dcbench.tasks import task_names

DEFAULT_TOLERANCE = 0.1
_REQUIRED = ("task", "checkpoint", "metric", "value")
_ALLOWED = set(_REQUIRED) | {"tolerance", "variant", "scale"}


def load_expected(path: str | Path) -> list[dict]:
    """Read and validate EXPECTED.yaml; any problem is a :class:`UserError` naming the entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--check {path}: no such file") from None
    except yaml.YAMLError as e:
        raise UserError(f"--check {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict) and "expected" in data:
        data = data["expected"]
    if not isinstance(data, list) or not data:
        raise UserError(f"--check {path}: expected a non-empty list of entries (see dc-leaderboard --help)")
    for i, e in enumerate(data):
        where = f"--check {path}: entry {i + 1}"
        if not isinstance(e, dict):
            raise UserError(f"{where}: must be a mapping with {', '.join(_REQUIRED)}")
        missing = [k for k in _REQUIRED if k not in e]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(set(e) - _ALLOWED)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_ALLOWED))}")
        if e["task"] not in task_names():
            raise UserError(f"{where}: unknown task {e['task']!r}; one of {', '.join(task_names())}")
        if "scale" in e and e["scale"] not in SCALES:
            raise UserError(f"{where}: scale must be one of {', '.join(SCALES)}")
        if "variant" in e and not isinstance(e["variant"], dict):
            raise UserError(f"{where}: variant must be a mapping")
        for k in ("value", "tolerance"):
            if k in e and (isinstance(e[k], bool) or not isinstance(e[k], (int, float))
                           or not math.isfinite(e[k])):
                raise UserError(f"{where}: {k} must be a number")
        if e.get("tolerance", 0) < 0:
            raise UserError(f"{where}: tolerance must be >= 0")
        e["checkpoint"] = str(e["checkpoint"])
    return data


def _checkpoint_matches(frame: pd.DataFrame, ident: str) -> pd.Series:
    by_name = frame["ckpt_name"] == ident
    if re.fullmatch(r"[0-9a-f]{6,64}", ident):
        return by_name | frame["ckpt_sha"].str.startswith(ident)
    return by_name


def check(newest: pd.DataFrame, expected: list[dict]) -> list[str]:
    """One line per failure (drift or missing result); empty when everything is within tolerance."""
    failures = []
    for e in expected:
        tol = float(e.get("tolerance", DEFAULT_TOLERANCE))
        name = f"{e['task']} {e['checkpoint']} {e['metric']}"
        if e.get("variant"):
            name += " " + ",".join(f"{k}={v}" for k, v in sorted(e["variant"].items()))
        if newest.empty:
            failures.append(f"MISSING {name}: no result")
            continue
        sel = newest[(newest["task"] == e["task"]) & _checkpoint_matches(newest, e["checkpoint"])]
        if "scale" in e:
            sel = sel[sel["scale"] == e["scale"]]
        want = e.get("variant") or {}
        sel = sel[sel["variant"].map(lambda v, w=want: all(v.get(k) == x for k, x in w.items())).astype(bool)]
        sel = sel[sel["metrics"].map(lambda m, k=e["metric"]: k in m).astype(bool)]
        if sel.empty:
            failures.append(f"MISSING {name}: no result has this metric")
            continue
        for _, r in sel.iterrows():
            got = r["metrics"][e["metric"]]
            if abs(got - e["value"]) > tol + 1e-9:
                failures.append(f"DRIFT {name} [{r['scale']}]: got {got:.4g}, expected {e['value']:.4g} "
                                f"± {tol:g} (off by {got - e['value']:+.4g}) in {r['path']}")
    return failures

"""Read dc-train output folders (config.json + log.jsonl) for the chapter-4 figures.

A run folder may come from anyone, so everything in it is untrusted: files are size-capped and
must be regular files, every known log field is type- and range-checked, and no value read here
ever becomes a path component. A folder that cannot be used is one :class:`UserError` line naming
the file and the fix. Lines that are not JSON are skipped with a warning (a run killed while
appending leaves a partial last line; dc-train itself skips them when it trims the log).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from dcbench.errors import UserError

MAX_CONFIG_BYTES = 1 << 20
MAX_LOG_BYTES = 64 << 20
MAX_RECORDS = 100_000
MAX_STEPS = 10**9  # per epoch; ImageNet's longest preset epoch is ~15k
MAX_SPECTRUM = 4096  # entries of pca_variance (dc-train logs k <= 256)
MAX_DIAG = 10_000  # mid-epoch diagnostics in one epoch record (dc-train --diag-every)
MAX_CLASSES = 100_000  # entries of ratio_per_class (ImageNet: 1,000)
MAX_VALUE_CHARS = 40  # a config value shown in a label or a table cell
MAX_LABEL_OPTIONS = 4  # options named in one curve's label; the page's run table lists them all
MAX_LABEL_CHARS = 160

# Option names that differ between any two runs without changing what was trained.
NOT_AN_OPTION = {"out", "quiet", "workers", "device", "faiss_gpu", "snapshot_every", "extra"}

_NUMBER_FIELDS = {  # field -> (low, high); None values are allowed (e.g. nmi_prev at epoch 1)
    "loss": (0.0, 1e6), "log_k": (0.0, 1e3), "nmi_labels": (0.0, 1.0), "nmi_prev": (0.0, 1.0),
    "ratio_edge_intra_class": (0.0, 1.0), "val_top1": (0.0, 100.0), "ratio_random_graph": (0.0, 1.0),
}
_DIAG_FIELDS = ("ratio_edge_intra_class", "nmi_labels")  # what a mid-epoch diagnostic may hold


@dataclass
class Run:
    folder: Path  # as the user gave it on the command line (theirs, so safe to show escaped)
    config: dict  # the training config (untrusted values; see :func:`show_value`)
    provenance: dict  # checked, display-ready strings
    records: list[dict] = field(default_factory=list)  # per epoch, sorted, fields checked
    skipped_lines: int = 0

    def updates_before(self) -> list[int]:
        """SGD updates done when each record's clustering ran (its diagnostics describe that network)."""
        out, total = [], 0
        for r in self.records:
            out.append(total)
            total += r["steps"]
        return out

    def points(self, key: str, at_end: bool = False) -> list[tuple[int, float]]:
        """(updates, value) of ``key`` in every epoch record, at the epoch's start (a diagnostic) or
        end (``at_end``: a loss, a val score), with the mid-epoch diagnostics (``--diag-every``) between."""
        out = []
        for start, end, r in zip(self.updates_before(), self.updates_after(), self.records):
            if r.get(key) is not None:
                out.append((end if at_end else start, r[key]))
            out += [(start + d["step"], d[key]) for d in r.get("diag", ()) if d.get(key) is not None]
        return sorted(out, key=lambda p: p[0])

    def updates_after(self) -> list[int]:
        """SGD updates at the end of each record's epoch (its loss is the mean over that epoch)."""
        total, out = 0, []
        for r in self.records:
            total += r["steps"]
            out.append(total)
        return out


def _read_capped(path: Path, cap: int, fix: str) -> str:
    if not path.is_file():  # also refuses FIFOs and devices, which would block or never end
        raise UserError(f"{path} is missing or not a regular file; {fix}")
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}; {fix}") from None
    if len(data) > cap:
        raise UserError(f"{path} is larger than {cap >> 20} MiB, more than any dc-train run writes; {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; {fix}") from None


def _loads(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # ValueError: also an integer past Python's digit limit
        return None


def _number(v, lo: float, hi: float) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and lo <= v <= hi
    except OverflowError:
        return False


def _check_record(rec: dict, where: str) -> dict:
    def bad(name: str, want: str):
        return UserError(f"{where}: field {name!r} must be {want}; this is not a dc-train log (pass a "
                         "dc-train --out folder)")

    epoch, steps = rec.get("epoch"), rec.get("steps")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= MAX_RECORDS:
        raise bad("epoch", f"an integer 1..{MAX_RECORDS}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise bad("steps", f"an integer 0..{MAX_STEPS}")
    out = {"epoch": epoch, "steps": steps}
    for name, (lo, hi) in _NUMBER_FIELDS.items():
        v = rec.get(name)
        if v is None:
            continue
        if not _number(v, lo, hi):
            raise bad(name, f"a finite number in [{lo:g}, {hi:g}] or null")
        out[name] = float(v)
    spec = rec.get("pca_variance")
    if spec is not None:
        # The cumulative share of variance of the top-k eigenvalues: fractions, non-decreasing.
        if (not isinstance(spec, list) or not 1 <= len(spec) <= MAX_SPECTRUM
                or not all(_number(v, 0.0, 1.0 + 1e-6) for v in spec)
                or any(b < a - 1e-6 for a, b in zip(spec, spec[1:]))):
            raise bad("pca_variance", f"a list of 1..{MAX_SPECTRUM} non-decreasing fractions in [0, 1]")
        out["pca_variance"] = [float(v) for v in spec]
    per_class = rec.get("ratio_per_class")
    if per_class is not None:
        if (not isinstance(per_class, list) or not 1 <= len(per_class) <= MAX_CLASSES
                or not all(_number(v, 0.0, 1.0) for v in per_class)):
            raise bad("ratio_per_class", f"a list of 1..{MAX_CLASSES} fractions in [0, 1]")
        out["ratio_per_class"] = [float(v) for v in per_class]
    diag = rec.get("diag")
    if diag is not None:
        if not isinstance(diag, list) or len(diag) > MAX_DIAG:
            raise bad("diag", f"a list of at most {MAX_DIAG} mid-epoch diagnostics")
        out["diag"] = []
        for d in diag:
            step = d.get("step") if isinstance(d, dict) else None
            if isinstance(step, bool) or not isinstance(step, int) or not 0 < step <= steps:
                raise bad("diag", f"a list of objects whose 'step' is an integer in 1..{steps} (the epoch's steps)")
            entry = {"step": step}
            for name in _DIAG_FIELDS:
                v = d.get(name)
                if v is not None:
                    if not _number(v, 0.0, 1.0):
                        raise bad(f"diag.{name}", "a finite number in [0, 1] or null")
                    entry[name] = float(v)
            out["diag"].append(entry)
    return out


_SHA = re.compile(r"[0-9a-f]{7,40}(\+dirty)?")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+00:00|Z)?")
_HEX = re.compile(r"[0-9a-f]{64}")


def _provenance(cfg_file: dict) -> dict:
    """Display strings from config.json; a value of an unexpected shape shows as '?', never raw."""
    def pick(key: str, pattern: re.Pattern) -> str:
        v = cfg_file.get(key)
        return v if isinstance(v, str) and pattern.fullmatch(v) else "?"

    env = cfg_file.get("environment") if isinstance(cfg_file.get("environment"), dict) else {}
    n = cfg_file.get("num_images")
    fp = pick("data_fingerprint", _HEX)
    git = pick("git_sha", _SHA)
    return {"git": git[:12] + ("+dirty" if git.endswith("+dirty") else ""), "started": pick("started", _TIME),
            "data_fingerprint": fp[:12] if fp != "?" else "?",
            "num_images": str(n) if isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 10**12 else "?",
            "device": show_value(env.get("device", "?")), "torch": show_value(env.get("torch", "?"))}


def load_run(folder: Path) -> Run:
    """The run in ``folder`` (a dc-train ``--out``); UserError naming the file if it is unusable."""
    folder = Path(folder)
    fix = "pass a dc-train --out folder (it holds config.json and log.jsonl)"
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; {fix}")
    cfg_file = _loads(_read_capped(folder / "config.json", MAX_CONFIG_BYTES, fix))
    if not isinstance(cfg_file, dict) or not isinstance(cfg_file.get("config"), dict):
        raise UserError(f"{folder / 'config.json'} is not a dc-train config (no 'config' object); {fix}")
    log = folder / "log.jsonl"
    recs: dict[int, dict] = {}
    skipped = 0
    for i, line in enumerate(_read_capped(log, MAX_LOG_BYTES, fix).splitlines(), 1):
        if not line.strip():
            continue
        rec = _loads(line)
        if not isinstance(rec, dict):
            skipped += 1
            continue
        if "epoch" not in rec:  # not an epoch line (room for other record kinds in later logs)
            continue
        if len(recs) >= MAX_RECORDS:
            raise UserError(f"{log} has more than {MAX_RECORDS} epochs; {fix}")
        r = _check_record(rec, f"{log}:{i}")
        recs[r["epoch"]] = r  # a resumed run may repeat an epoch: the later line is the one kept
    if not recs:
        raise UserError(f"{log} holds no epoch; train at least one epoch (dc-train --epochs N) or {fix}")
    return Run(folder=folder, config=cfg_file["config"], provenance=_provenance(cfg_file),
               records=[recs[e] for e in sorted(recs)], skipped_lines=skipped)


def show_value(v, limit: int = MAX_VALUE_CHARS) -> str:
    """A config value as bounded plain text (callers escape it for their medium)."""
    if v is None or isinstance(v, (bool, int, float)):
        s = "none" if v is None else str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
    elif isinstance(v, str):
        s = v
    else:
        try:
            s = json.dumps(v, sort_keys=True, default=str)
        except (TypeError, ValueError, RecursionError):
            s = "?"
    s = "".join(c if c.isprintable() else "?" for c in s[: limit * 4])
    return s if len(s) <= limit else s[: limit - 1] + "…"


def differing_options(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (sorted; a missing key counts as a value)."""
    if len(runs) < 2:
        return []
    keys = sorted({k for r in runs for k in r.config if isinstance(k, str)} - NOT_AN_OPTION)
    return [k for k in keys if len({show_value(r.config.get(k)) for r in runs}) > 1]


def run_labels(runs: list[Run]) -> list[str]:
    """One label per run: the options that differ (``sampler=uniform``), else the folder's name.

    Runs whose options do not tell them apart get their folder name added, so no two labels match."""
    keys = differing_options(runs)
    more = ", …" if len(keys) > MAX_LABEL_OPTIONS else ""
    labels = [(", ".join(f"{show_value(k)}={show_value(r.config.get(k))}" for k in keys[:MAX_LABEL_OPTIONS])
               + more)[:MAX_LABEL_CHARS] for r in runs]
    clash = [not lab or labels.count(lab) > 1 for lab in labels]
    for i, r in enumerate(runs):
        if clash[i]:
            name = show_value(r.folder.name or str(r.folder))
            labels[i] = f"{labels[i]} ({name})" if labels[i] else name
    clash = [labels.count(lab) > 1 for lab in labels]  # one folder name twice (a/run, b/run)
    return [f"{lab} #{i + 1}" if c else lab for i, (lab, c) in enumerate(zip(labels, clash))]

"""dc-leaderboard diff A B: why two numbers differ.

A and B are two result files of one task, or two checkpoint folders. For results: every protocol
value, variant, data fingerprint and size, preprocessing, precision, selection rule, code version,
software and seed that differs, then each metric the two share with its difference and, when both
have per-image outcomes on the same test images, the paired 95% bootstrap interval of that
difference. For checkpoints: every metadata value (training config, architecture, data, origin,
code version) that differs.

Both inputs are a stranger's files: every value is shown in printable, bounded form, and nothing in
them is ever used as a path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dcbench.errors import ArgumentParser, ResultError, UserError
from dcbench.outcomes import paired_difference, read_outcomes, same_test_set
from dcbench.results import read_result
from dcbench.text import printable

# Fields that differ between any two runs without saying anything about how they were made.
NOT_COMPARED = ("created", "timings.", "cost.", "details.", "outcomes.", "intervals.", "seeds.", "metrics.",
                "environment.cpu_threads")
MAX_SHOWN = 200  # differing keys listed; more are counted


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser("dc-leaderboard diff",
                       description="Say what differs between two result files (protocol, data, selection, "
                                   "precision, code, seed) and by how much their metrics differ, with a "
                                   "paired 95% interval; or between two checkpoints' metadata.")
    p.add_argument("a", type=Path, metavar="A", help="a result JSON file, or a checkpoint folder")
    p.add_argument("b", type=Path, metavar="B", help="the result (or checkpoint) to compare it with")
    return p


def flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{printable(str(k), 60)}."))
    elif isinstance(d, list) and len(d) <= 50 and all(not isinstance(x, (dict, list)) for x in d):
        out[prefix[:-1]] = json.dumps(d)[:300]
    elif isinstance(d, (dict, list)):
        out[prefix[:-1]] = f"<{type(d).__name__} of {len(d)}>"
    else:
        out[prefix[:-1]] = d
    return out


def differing(a: dict, b: dict, skip: Sequence[str] = ()) -> list[tuple[str, object, object]]:
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    missing = object()
    out = []
    for k in keys:
        if any(k == s or k.startswith(s) for s in skip):
            continue
        va, vb = fa.get(k, missing), fb.get(k, missing)
        if va != vb:
            out.append((k, "(absent)" if va is missing else va, "(absent)" if vb is missing else vb))
    return out


def _show(v) -> str:
    return printable(v if isinstance(v, str) else json.dumps(v), 120)


def diff_results(pa: Path, pb: Path) -> list[str]:
    ra, rb = read_result(pa), read_result(pb)
    if ra["task"] != rb["task"]:
        raise UserError(f"{pa} is a {ra['task']} result and {pb} a {rb['task']} one; diff two results of one task")
    lines = [f"A: {printable(str(pa), 300)}", f"B: {printable(str(pb), 300)}",
             f"task {ra['task']}; checkpoints A {printable(ra['checkpoint']['name'], 80)} "
             f"{ra['checkpoint']['sha256'][:8]}, B {printable(rb['checkpoint']['name'], 80)} {rb['checkpoint']['sha256'][:8]}"]
    diffs = differing(ra, rb, NOT_COMPARED)
    lines.append(f"{len(diffs)} value(s) differ" + (":" if diffs else " (protocol, data, selection, code and seed agree)"))
    for k, va, vb in diffs[:MAX_SHOWN]:
        lines.append(f"  {k}: A {_show(va)} | B {_show(vb)}")
    if len(diffs) > MAX_SHOWN:
        lines.append(f"  ... and {len(diffs) - MAX_SHOWN} more")
    ca, cb = ra.get("cost"), rb.get("cost")
    if ca and cb:
        lines.append(f"cost: A {ca['wall_s']:.1f} s on {printable(ca['device'], 60)} | "
                     f"B {cb['wall_s']:.1f} s on {printable(cb['device'], 60)}")
    lines += _metric_lines(ra, pa, rb, pb)
    return lines


def _metric_lines(ra: dict, pa: Path, rb: dict, pb: Path) -> list[str]:
    shared = [m for m in ra["metrics"] if m in rb["metrics"]]
    only = sorted(set(ra["metrics"]) ^ set(rb["metrics"]))
    lines = [f"metrics (A - B){', paired over the same test images' if same_test_set(ra, rb) else ''}:"]
    why = None
    outs = None
    try:
        outs = read_outcomes(ra, pa), read_outcomes(rb, pb)
    except ResultError as e:
        why = str(e)
    if outs is not None and not same_test_set(ra, rb):
        why = "their test images differ"
    for m in shared:
        a, b = ra["metrics"][m], rb["metrics"][m]
        line = f"  {m}: A {a:.2f} | B {b:.2f} | A - B {a - b:+.2f}"
        if why is None and m in outs[0] and m in outs[1]:
            d = paired_difference(outs[0][m], outs[1][m])
            verdict = "significant" if d["significant"] else "not significant"
            line += f" [{d['low']:+.2f}, {d['high']:+.2f}] 95%, {verdict}"
        elif why is None:
            line += " (no per-image outcomes for this metric)"
        lines.append(line)
    if why is not None:
        lines.append(f"  no paired intervals: {printable(why, 300)}")
    if only:
        lines.append("  in one result only: " + ", ".join(printable(m, 60) for m in only[:50]))
    return lines


def diff_checkpoints(pa: Path, pb: Path) -> list[str]:
    from dcbench.checkpoint import read_meta  # torch: only for checkpoints

    ma, mb = read_meta(pa), read_meta(pb)
    diffs = differing(ma, mb, ("created", "saved_at"))
    lines = [f"A: {printable(str(pa), 300)}", f"B: {printable(str(pb), 300)}",
             f"{len(diffs)} metadata value(s) differ" + (":" if diffs else "")]
    lines += [f"  {k}: A {_show(va)} | B {_show(vb)}" for k, va, vb in diffs[:MAX_SHOWN]]
    if len(diffs) > MAX_SHOWN:
        lines.append(f"  ... and {len(diffs) - MAX_SHOWN} more")
    return lines


def main(argv: Sequence[str]) -> int:
    args = get_args_parser().parse_args(argv)
    kinds = ["checkpoint" if p.is_dir() else "result" for p in (args.a, args.b)]
    if kinds[0] != kinds[1]:
        raise UserError(f"{args.a} is a {kinds[0]} and {args.b} a {kinds[1]}; diff two results or two checkpoints")
    lines = diff_checkpoints(args.a, args.b) if kinds[0] == "checkpoint" else diff_results(args.a, args.b)
    print("\n".join(lines))
    return 0

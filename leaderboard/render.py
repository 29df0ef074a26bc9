"""Markdown for the leaderboard: full-scale tables (literature beside ours) and smoke-scale ones,
measured ones first.

Every text that comes from a result file (names, data names, git shas, versions, reasons, paths)
is data from whoever wrote the file: :func:`md_text` and :func:`code_span` make it inert, so it
renders as the same characters and never as HTML, a link or a broken table.
"""

from __future__ import annotations

import re

from dcbench.leaderboard.collect import Collection
from dcbench.leaderboard.tables import Table
from dcbench.text import code_span, md_text

SCALE_TITLES = {
    "full": ("Full scale",
             "The thesis protocol on the real datasets; reported rows are the thesis's published numbers "
             "(Tables 4.1-4.3 and 5.2-5.5), measured rows are results files read by dc-leaderboard."),
    "smoke": ("Smoke scale",
              "Small budgets on the embedded data. These numbers check that the pipeline runs; they "
              "are not comparable with the literature and never share a table with full-scale results."),
}


def _cell(text: str) -> str:
    """A cell's pipes that are not yet escaped (a code span's) escaped: GitHub splits on them even in code."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


WITHHELD = "‡"  # marks a measured value whose interval is left out (the reason is listed under the table)


def format_value(table: Table, row, header: str) -> str:
    """``41.2 ± 0.3``: the value and half the width of its 95% bootstrap interval; ``(sd 1.2)`` a
    standard deviation over draws; ``3 seeds: 41.0 ± 0.4 sd`` the ``--seeds`` repeats."""
    if header not in row.values:
        return "-"
    value = row.values[header]
    text = f"{value:.1f}"
    if header in row.intervals:
        lo, hi = row.intervals[header]
        # an interval that does not hold its value (AP resamples sit above it: a positive drawn twice
        # ranks next to itself) is shown as it is, never folded into a symmetric ±
        text += f" ± {(hi - lo) / 2:.1f}" if lo <= value <= hi else f" [{lo:.1f}, {hi:.1f}]"
    if header in row.stds:
        text += f" (sd {row.stds[header]:.1f})"
    if table.bold(header, row):
        text = f"**{text}**"
    if header in row.withheld:
        text += f" {WITHHELD}"
    if header in row.seeds:
        mean, sd, n = row.seeds[header]
        text += f" ({n} seeds: {mean:.1f} ± {sd:.1f} sd)"
    return text


def render_table(table: Table) -> str:
    """The table; a measured row whose protocol differs from the default points (``[n]``) to a
    note under it, so that long protocol values never widen the table."""
    # column headers come from metric names for the data-driven tables: escaped like any data
    head = ["Method", "Source", *(md_text(c) for c in table.columns), "Runs", "Cost", "Provenance"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + [":---:"] * len(table.columns)
                                                           + [":---:", "---", "---"]) + "|"]
    notes, withheld = [], []
    for row in table.rows:
        label = code_span(row.label) if row.measured else md_text(row.label)
        provenance = md_text(row.provenance)
        if row.protocol:
            notes.append(f"[{len(notes) + 1}] {label}: {md_text(row.protocol)}")
            provenance += f" · protocol [{len(notes)}]"
        for reason in sorted(set(row.withheld.values())):
            withheld.append(f"{WITHHELD} {label}: interval left out: {md_text(reason)}")
        cells = [label, md_text(row.source), *(format_value(table, row, h) for h in table.columns),
                 md_text(row.runs), md_text(row.cost), provenance]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if notes:
        lines += ["", "Protocol values that differ from the default:", "", *(f"- {n}" for n in notes)]
    if withheld:
        lines += ["", *(f"- {w}" for w in withheld)]
    said = comparison_lines(table)
    if said:
        lines += ["", "Paired comparisons (the same test images resampled for both rows, 95% percentile "
                      "bootstrap of the difference):", "", *(f"- {c}" for c in said)]
    return "\n".join(lines)


def comparison_lines(table: Table) -> list[str]:
    """Each adjacent pair of comparable measured rows in each column, said plainly."""
    out = []
    for c in table.comparisons:
        a, b = code_span(c.better.label), code_span(c.worse.label)
        head = f"{md_text(c.header)}: {a} {c.better.values[c.header]:.1f} vs {b} {c.worse.values[c.header]:.1f}"
        if c.difference is None:
            out.append(f"{head}: not compared ({md_text(c.why_not)}).")
            continue
        verdict = "significant" if c.significant else "not significant (the interval includes 0)"
        chance = table.chance.get(c.header)
        near = (chance is not None and c.header in c.better.intervals and c.better.intervals[c.header][0] <= chance)
        tail = f"; {a} is within noise of chance ({chance:.1f})" if near else ""
        out.append(f"{head}: difference {c.difference:+.1f} [{c.low:+.1f}, {c.high:+.1f}], {verdict}{tail}.")
    return out


def render(tables: dict[str, list[Table]], coll: Collection, n_files: int, plots: dict[str, str]) -> str:
    """The whole LEADERBOARD.md. ``plots``: ``"<scale>/<table key>"`` -> relative PNG path."""
    out = ["# dcbench leaderboard", "",
           "Generated by `dc-leaderboard` from result files (schema v2, and v1); do not edit by hand.", ""]
    n_valid = len(coll.results)
    if n_valid == 0:
        out += [f"**No valid result file was found** ({n_files} file(s) read): the tables below show the "
                "literature only.", ""]
    else:
        out += [f"{n_valid} valid result file(s) of {n_files} read.", ""]
    out += [
        "How to read it:",
        "- *Reported* rows are published numbers as printed in the thesis (method names and reference "
        "numbers kept), or, where the Source names another file, as printed there; *measured* rows (method in `code font`) are our results, one row per checkpoint.",
        "- Several runs of one (checkpoint, task, variant): the newest is shown; **Runs** says how many exist.",
        "- `41.2 ± 0.3`: the value and half the width of its 95% percentile bootstrap interval over the "
        "test images (1,000 resamples); `16.6 [17.0, 20.4]` an interval that does not hold its value (mAP "
        "resamples run high on small test sets: a positive drawn twice ranks next to itself); a value without ± has no per-image outcomes (a schema-v1 result, "
        f"or a statistic over draws); {WITHHELD} marks an interval left out because the outcomes file did "
        "not match its result (the reason is under the table). `(sd x)`: standard deviation over draws.",
        "- Rows are compared only when comparable: same selection rule, data, input size and protocol. "
        "Bold: the best of at least two comparable measured rows, only when a paired bootstrap over the "
        "same test images puts its lead over the next row away from 0 (95%) and its interval clear of "
        "chance. Reported rows, random-init baselines and baseline columns (`random_*`) are never bold.",
        "- Selection: by default every choice (epoch, SVM cost) is made on a held-out split of the training "
        "set and the test set is scored once. Rows marked \"thesis rule: best epoch on test\" use the "
        "thesis's best-over-epochs-on-the-test-set rule (beside their \"last epoch\" row), kept to compare "
        "with the published tables.",
        "- Cost: wall time (CPU) or GPU-hours, and the device, of the row's newest results.",
        "- Provenance: checkpoint sha256 prefix, date of the newest run, git sha and data; `protocol [n]` "
        "points to the note under the table that lists every protocol value that differs from the "
        "default (the result's `details.protocol_defaults` when present, otherwise the most common "
        "value among the newest results of the same task and scale).",
        "",
    ]
    # what was measured where a reader looks first: a scale with measured rows before one without,
    # and in each scale the tables with measured rows before those that show published numbers only
    measured = {scale: [t for t in tables[scale] if _has_measured(t)] for scale in ("full", "smoke")}
    for scale in sorted(("full", "smoke"), key=lambda sc: not measured[sc]):
        title, intro = SCALE_TITLES[scale]
        out += [f"## {title}", "", intro, ""]
        if not tables[scale]:
            out += [f"No {scale}-scale results.", ""]
        published_only = [t for t in tables[scale] if not _has_measured(t)]
        for table in measured[scale]:
            out += _table_section(table, scale, plots)
        if published_only:
            out += [f"No {scale}-scale result yet for the {len(published_only)} table(s) below: they show "
                    "the published numbers only.", ""]
        for table in published_only:
            out += _table_section(table, scale, plots)
    out += _excluded(coll)
    return "\n".join(out).rstrip() + "\n"


def _has_measured(table: Table) -> bool:
    return any(r.measured for r in table.rows)


def _table_section(table: Table, scale: str, plots: dict[str, str]) -> list[str]:
    spec = table.spec
    out = [f"### {spec.title} ({spec.thesis})", "", spec.caption, "", render_table(table), ""]
    for note in table.notes:
        out += [note, ""]
    if table.chance:
        by_level: dict[float, list[str]] = {}
        for h, v in table.chance.items():
            by_level.setdefault(round(v, 1), []).append(md_text(h))
        out += ["Chance level: " + "; ".join(f"{v:.1f}% ({', '.join(hs)})" for v, hs in sorted(by_level.items()))
                + ". A value whose interval reaches chance is never bold.", ""]
    plot = plots.get(f"{scale}/{spec.key}")
    if plot:
        out += [f"![{spec.title}, {scale} scale]({plot})", ""]
    for link in table.images:
        out += [link, ""]
    return out


def _excluded(coll: Collection) -> list[str]:
    if not coll.skipped and not coll.other_version:
        return []
    out = ["## Files not included", ""]
    for path, version in coll.other_version:
        out.append(f"- {code_span(path)}: result schema version {md_text(version)}, this leaderboard "
                   "reads versions 1 and 2 (regenerate it with this dcbench)")
    for path, reason in coll.skipped:
        out.append(f"- {code_span(path)}: invalid, skipped: {md_text(reason)}")
    return out + [""]

"""PNG plots for the leaderboard: conv1-conv5 curves (literature beside ours) and low-shot curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from dcbench.atomic import write_file_atomic  # noqa: E402
from dcbench.leaderboard.tables import Table  # noqa: E402
from dcbench.safepath import plot_text


def _save(fig, path: Path) -> Path:
    # No timestamp in the PNG metadata: the same results give the same bytes.
    write_file_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return path


# Reported rows: one colour of tab20 and one marker each; 11 markers against 20 colours repeat a
# (colour, marker) pair only after 220 rows, so every line of a thesis table is distinguishable.
_MARKERS = ("s", "^", "v", "D", "P", "X", "<", ">", "h", "*", "p")
_KIND_STYLE = {"supervised": "-", "baseline": ":", "cited": "--", "thesis": "-."}


def line_styles(table: Table) -> list[dict | None]:
    """matplotlib keywords per row of ``table`` (None for a row with no value in the plot).

    Measured rows: thick, tab10 colours, circles (dashed when best over epochs). Reported rows: thin,
    tab20 colours with a marker each, the line style saying the kind (supervised solid, baseline
    dotted, cited dashed, the thesis's own models dash-dot)."""
    measured, reported = plt.get_cmap("tab10"), plt.get_cmap("tab20")
    styles: list[dict | None] = []
    n_measured = n_reported = 0
    for row in table.rows:
        if not any(h in row.values for h in table.columns):
            styles.append(None)
        elif row.measured:
            styles.append(dict(color=measured(n_measured % 10), marker="o", linewidth=2.2, zorder=3,
                               linestyle="--" if row.selection == "best" else "-", label=plot_text(row.label)))
            n_measured += 1
        else:
            styles.append(dict(color=reported(n_reported % 20), marker=_MARKERS[n_reported % len(_MARKERS)],
                               markersize=4, linewidth=1, alpha=0.85, zorder=2,
                               linestyle=_KIND_STYLE.get(row.kind, "--"), label=f"{plot_text(row.label)} (reported)"))
            n_reported += 1
    return styles


def conv_curves(table: Table, path: Path) -> Path:
    """One line per row over conv1..conv5 (styles: :func:`line_styles`)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(table.columns)))
    for row, style in zip(table.rows, line_styles(table)):
        if style is None:
            continue
        xs, ys = zip(*[(i, row.values[h]) for i, h in enumerate(table.columns) if h in row.values])
        ax.plot(xs, ys, **style)
    ax.set_xticks(x, table.columns)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{table.spec.title} ({table.scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def lowshot_curves(table: Table, path: Path) -> Path:
    """Top-1 against images per class (log scale), mean with std error bars; random init dashed."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ns = [int(h.split("=")[1]) for h in table.columns]
    for row in table.rows:
        pts = [(n, row.values[h], row.stds.get(h, 0.0)) for n, h in zip(ns, table.columns) if h in row.values]
        if not pts:
            continue
        xs, ys, es = zip(*pts)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=plot_text(row.label),
                    linestyle="--" if row.label.startswith("Random init") else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("training images per class (n)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{table.spec.title} ({table.scale} scale)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def draw(table: Table, folder: Path) -> Path | None:
    """Draw ``table``'s plot into ``folder`` and return the PNG path; None when the table has no
    plot or no measured row (a plot of literature lines alone says nothing the table does not)."""
    if not any(r.measured for r in table.rows):
        return None
    if table.spec.plot == "conv":
        return conv_curves(table, folder / f"{table.scale}_{table.spec.key}.png")
    if table.spec.plot == "lowshot":
        return lowshot_curves(table, folder / f"{table.scale}_{table.spec.key}.png")
    return None

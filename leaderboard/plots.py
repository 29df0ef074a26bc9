"""PNG plots for the leaderboard: conv1-conv5 curves (literature beside ours) and low-shot curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from dcbench.atomic import write_file_atomic  # noqa: E402
from dcbench.leaderboard.tables import Table  # noqa: E402


def _save(fig, path: Path) -> Path:
    # No timestamp in the PNG metadata: the same results give the same bytes.
    write_file_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, metadata={"Software": None}))
    plt.close(fig)
    return path


def conv_curves(table: Table, path: Path) -> Path:
    """One line per row over conv1..conv5: reported rows thin and grey, measured rows in colour."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = list(range(len(table.columns)))
    for row in table.rows:
        pts = [(i, row.values[h]) for i, h in enumerate(table.columns) if h in row.values]
        if not pts:
            continue
        xs, ys = zip(*pts)
        if row.measured:
            ax.plot(xs, ys, "--" if "(best over epochs)" in row.label else "-", marker="o",
                    linewidth=2.2, label=row.label, zorder=3)
        else:
            style = "-" if row.kind == "supervised" else ":" if row.kind == "baseline" else "--"
            ax.plot(xs, ys, style, color="0.35" if row.kind == "thesis" else "0.7", linewidth=1,
                    label=f"{row.label} (reported)", zorder=2)
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
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=row.label,
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
    """Draw ``table``'s plot (if it has one) into ``folder``; return the PNG path."""
    if table.spec.plot == "conv":
        return conv_curves(table, folder / f"{table.scale}_{table.spec.key}.png")
    if table.spec.plot == "lowshot" and any(r.measured for r in table.rows):
        return lowshot_curves(table, folder / f"{table.scale}_{table.spec.key}.png")
    return None

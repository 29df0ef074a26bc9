"""Chapter-4 figures from dc-train logs: PNGs and a markdown page with each run's provenance.

What is drawn (thesis chapter 4), each only when some run's log holds the field:
- ratio edge intra-class of the 10-NN graph (§4.1) and NMI with the labels, against updates
  (Figures 4.2, 4.4-4.7, 4.9, 4.10), one curve per run;
- NMI between consecutive assignments (the stability curve of the original paper);
- the training loss against updates, with each run's chance level ln k (Figure 4.8);
- the cumulative share of PCA variance against the number of components (Figure 4.3), from the
  ``pca_variance`` field, first and last logged epoch per run;
- the per-class ratios of each run's last logged epoch as box plots, with a random graph's score
  (Figure 4.1), from the ``ratio_per_class`` and ``ratio_random_graph`` fields.
A diagnostic of epoch e is computed before that epoch's training, so it is placed at the updates
done by then; the loss of epoch e is a mean over the epoch and placed at its end. Diagnostics logged
within an epoch (``dc-train --diag-every N``, the record's ``diag`` list) sit at their own update.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

from dcbench.leaderboard.plots import _save  # noqa: E402
from dcbench.leaderboard.runs import NOT_AN_OPTION, Run, differing_options, run_labels, show_value  # noqa: E402
from dcbench.text import code_span, md_text  # noqa: E402


@dataclass(frozen=True)
class Curve:
    key: str  # log field, also the PNG's name
    ylabel: str
    title: str
    thesis: str  # the thesis figures this one corresponds to
    percent: bool
    at_end: bool = False  # measured after the epoch's training (val top-1), not before it


CURVES = (
    Curve("ratio_edge_intra_class", "ratio edge intra-class (%)", "10-NN graph: edges within a class",
          "Figures 4.2, 4.4-4.7, 4.9, 4.10", True),
    Curve("nmi_labels", "NMI(clusters, labels)", "NMI of the clusters with the labels",
          "Figures 4.2, 4.4-4.7 (second measure)", False),
    Curve("nmi_prev", "NMI(epoch t-1, epoch t)", "Stability of the assignments", "-", False),
    Curve("val_top1", "top-1 on val, centre crop (%)", "Supervised reference: accuracy on the val set",
          "Table 4.2", False, at_end=True),
)
# Every PNG name this module writes; only these are ever removed from a figures folder.
FIGURE_NAMES = {f"{c.key}.png" for c in CURVES} | {"loss.png", "pca_variance.png", "ratio_per_class.png"}

def mpl(text: str) -> str:
    """Untrusted text as a literal matplotlib label: no mathtext, not hidden by a leading underscore."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _axes(title: str, xlabel: str, ylabel: str):
    fig, ax = plt.subplots(figsize=(7, 4.3))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _legend(ax) -> None:
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _colour(i: int):
    return plt.get_cmap("tab10")(i % 10)


def curve_figure(runs: list[Run], labels: list[str], curve: Curve, path: Path) -> Path | None:
    """``curve.key`` against updates, one line per run that logged it; None if none did."""
    fig, ax = _axes(curve.title, "SGD updates", curve.ylabel)
    drawn = False
    for i, (run, label) in enumerate(zip(runs, labels)):
        pts = [(u, v * (100 if curve.percent else 1)) for u, v in run.points(curve.key, curve.at_end)]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, color=_colour(i), label=mpl(label))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def loss_figure(runs: list[Run], labels: list[str], path: Path) -> Path | None:
    fig, ax = _axes("Training loss (mean over each epoch)", "SGD updates", "cross-entropy")
    drawn = False
    for i, (run, label) in enumerate(zip(runs, labels)):
        pts = [(u, r["loss"], r.get("log_k")) for u, r in zip(run.updates_after(), run.records) if "loss" in r]
        if not pts:
            continue
        xs, ys, chance = zip(*pts)
        ax.plot(xs, ys, marker="o", markersize=3, color=_colour(i), label=mpl(label))
        if all(c is not None for c in chance):  # ln k: what a classifier that learnt nothing scores
            ax.plot(xs, chance, linestyle=":", color=_colour(i), linewidth=1)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.plot([], [], linestyle=":", color="grey", label="chance: ln k (dotted, per run)")
    _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def pca_figure(runs: list[Run], labels: list[str], path: Path) -> Path | None:
    """Cumulative variance share against components: the first logged epoch dashed, the last solid."""
    fig, ax = _axes("PCA: variance retained by the top components", "number of components",
                    "cumulative share of variance (%)")
    drawn = False
    for i, (run, label) in enumerate(zip(runs, labels)):
        have = [r for r in run.records if "pca_variance" in r]
        if not have:
            continue
        for rec, style in ((have[0], "--"), (have[-1], "-")) if len(have) > 1 else ((have[0], "-"),):
            spec = rec["pca_variance"]
            ax.plot(range(1, len(spec) + 1), [100 * v for v in spec], linestyle=style, color=_colour(i),
                    label=mpl(f"{label}, epoch {rec['epoch']}"))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_ylim(0, 101)
    _legend(ax)
    fig.tight_layout()
    return _save(fig, path)


def per_class_figure(runs: list[Run], labels: list[str], path: Path) -> Path | None:
    """Figure 4.1: each run's per-class ratios at its last logged epoch as a box plot (median, quartiles,
    whiskers at 1.5 IQR, outliers), and the score of a random graph on the same classes (dashed)."""
    have = [(run, label, [r for r in run.records if "ratio_per_class" in r][-1])
            for run, label in zip(runs, labels) if any("ratio_per_class" in r for r in run.records)]
    if not have:
        return None
    fig, ax = _axes("10-NN graph: ratio edge intra-class per class (last logged epoch)", "",
                    "ratio edge intra-class (%)")
    ax.boxplot([[100 * v for v in rec["ratio_per_class"]] for _, _, rec in have], whis=1.5)
    ax.set_xticks(range(1, len(have) + 1), [mpl(f"{label}\nepoch {rec['epoch']}") for _, label, rec in have],
                  fontsize=7, rotation=10)
    for i, (_, _, rec) in enumerate(have, 1):
        if rec.get("ratio_random_graph") is not None:
            ax.hlines(100 * rec["ratio_random_graph"], i - 0.4, i + 0.4, colors="grey", linestyles="--",
                      label="random graph" if i == 1 else None)
    if any(rec.get("ratio_random_graph") is not None for _, _, rec in have):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def figures_dir(out: Path) -> Path:
    return out.with_name(f"{out.stem.lower()}_png")


def draw_all(runs: list[Run], folder: Path) -> dict[str, Path]:
    """Every figure the logs allow, into ``folder``; stale figures of ours not redrawn are removed."""
    labels = run_labels(runs)
    drawn: dict[str, Path | None] = {c.key: curve_figure(runs, labels, c, folder / f"{c.key}.png")
                                     for c in CURVES}
    drawn["loss"] = loss_figure(runs, labels, folder / "loss.png")
    drawn["pca_variance"] = pca_figure(runs, labels, folder / "pca_variance.png")
    drawn["ratio_per_class"] = per_class_figure(runs, labels, folder / "ratio_per_class.png")
    made = {k: p for k, p in drawn.items() if p is not None}
    if folder.is_dir():
        for p in folder.glob("*.png"):
            if p.name in FIGURE_NAMES and p not in made.values():
                p.unlink()
    return made


_CAPTIONS = {
    "ratio_edge_intra_class": "Ratio edge intra-class (thesis §4.1): the share of the 10-NN graph's edges, on the "
                              "PCA-whitened descriptors of the clustered images, that join two images of the same "
                              "class, averaged over classes. Thesis {thesis}.",
    "nmi_labels": "NMI between the epoch's clusters and the true labels (points within an epoch, from "
                  "--diag-every: a fresh clustering of the diagnostic sample). Thesis {thesis}.",
    "nmi_prev": "NMI between the assignments of two consecutive epochs (how much the clusters still move).",
    "val_top1": "Top-1 accuracy of the network's own classifier on the val set, centre crops, after each epoch "
                "(dc-train --targets labels; thesis {thesis}).",
    "loss": "Training loss against updates (thesis Figure 4.8); dotted: ln k, the loss of a uniform guess.",
    "pca_variance": "Cumulative share of the PCA spectrum's variance kept by the top components (thesis Figure "
                    "4.3); dashed: first logged epoch, solid: last.",
    "ratio_per_class": "Ratio edge intra-class of each class at each run's last logged epoch (thesis Figure 4.1): "
                       "box = quartiles, line = median, whiskers to 1.5 IQR, dots = outliers; dashed: what a "
                       "uniformly random graph scores on the same classes.",
}


def render_page(runs: list[Run], made: dict[str, Path], folder_name: str, command: str) -> str:
    labels = run_labels(runs)
    diff = differing_options(runs)
    lines = ["# Chapter-4 figures from training logs", "",
             f"Drawn by `dc-figures` from {len(runs)} dc-train run folder(s). Curves are labelled by the "
             "training options that differ between the runs" + (f" ({', '.join(md_text(show_value(k)) for k in diff[:40])}{', …' if len(diff) > 40 else ''})"
                                                                if diff else " (none differ: labelled by folder)") + ".",
             "", f"Command: {code_span(command, 1000)}", "", "## Runs", "",
             "| Label | Folder | Epochs logged | Updates | Git | Started (UTC) | Data: images, fingerprint | Device, torch |",
             "|---|---|:---:|:---:|---|---|---|---|"]
    for run, label in zip(runs, labels):
        p = run.provenance
        lines.append(f"| {md_text(label)} | {md_text(show_value(str(run.folder), 200))} | {len(run.records)} | "
                     f"{run.updates_after()[-1]:,} | {md_text(p['git'])} | {md_text(p['started'])} | "
                     f"{md_text(p['num_images'])}, {md_text(p['data_fingerprint'])} | {md_text(p['device'])}, {md_text(p['torch'])} |")
    shared = sorted(k for k in runs[0].config if isinstance(k, str) and k not in diff and k not in NOT_AN_OPTION)[:80]
    if shared:
        lines += ["", "Settings common to every run: " + ", ".join(
            f"{md_text(show_value(k))}={md_text(show_value(runs[0].config[k]))}" for k in shared) + "."]
    skipped = [(run, label) for run, label in zip(runs, labels) if run.skipped_lines]
    for run, label in skipped:
        lines += ["", f"{md_text(label)}: {run.skipped_lines} log line(s) that are not JSON were skipped."]
    lines += ["", "## Figures", ""]
    captions = {c.key: _CAPTIONS[c.key].format(thesis=c.thesis) for c in CURVES}
    for key in [c.key for c in CURVES] + ["loss", "pca_variance", "ratio_per_class"]:
        if key in made:
            lines += [f"![{key}]({folder_name}/{made[key].name})", "", captions.get(key, _CAPTIONS[key]), ""]
    missing = [key for key in [c.key for c in CURVES] + ["loss", "pca_variance", "ratio_per_class"] if key not in made]
    lines += ["## Not drawn", ""]
    for key in missing:
        why = ("no run's log has a PCA spectrum (field `pca_variance`)" if key == "pca_variance"
               else "Per-class ratio box plots (thesis Figure 4.1): no run's log has the per-class ratios (field "
                    "`ratio_per_class`; logs of older dc-train versions lack it)" if key == "ratio_per_class"
               else f"no run's log has the field `{key}`")
        lines.append(f"- {key}: {why}.")
    return "\n".join(lines) + "\n"

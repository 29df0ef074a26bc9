"""knn-graph: the k-NN-graph diagnostics of thesis §4.1, and the pictures of Figures 5.2-5.3.

Descriptors: by default the features dc-train clusters — fc7 before its ReLU (ResNets:
res5 globally average-pooled, the descriptor dc-train clusters them on), centre crop, PCA-whitened to 256 dims, L2-normalised (``--features pool5`` uses the flattened trunk
output instead). A 10-NN graph (exact L2 search, faiss) is built over one labelled split. For
each class C, "ratio edge intra-class" = #edges (i, j) with i and j in C / #edges leaving C,
in percent. A random graph's expected ratio for C is (|C| - 1) / (N - 1).

Result: metrics ``ratio_intra`` (mean over classes), ``ratio_median``, ``ratio_q1``, ``ratio_q3``, ``ratio_min``,
``ratio_max`` (over classes, %), and ``random_graph_mean`` (the random-graph baseline, %);
per-class ratios in ``details.per_class``; selection ``final``. Pictures (PNG) beside the
result under ``OUT/knn-graph/<checkpoint>-<sha8>/``: ``neighbours.png`` (query images and their
3 nearest neighbours, Fig. 5.3), ``filters.png`` (conv1 filters, composed with the Sobel
filters when the network has them, Fig. 5.2), ``ratios.png`` (distribution, Fig. 4.1); their
paths are in ``details.png_neighbours``, ``details.png_filters``, ``details.png_ratios``, relative to
the result file's folder (``--out``), so a results folder can be moved as a whole.

Outcomes (:func:`node_outcomes`): ``ratio_intra`` only, as each node's share of intra-class edges,
when every class has the same number of images (then the mean over classes is the mean over nodes);
the other metrics are statistics over classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from dcbench import argtypes
from dcbench.atomic import write_file_atomic
from dcbench.checkpoint import descriptor_block, load_checkpoint
from dcbench.datasets import ImageFolder, fingerprint, pil_loader
from dcbench.errors import UserError
from dcbench.knn_graph import knn, random_graph_ratio, ratio_edge_intra_class
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.safepath import output_dir, plot_text
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    dataset_dir,
    default_help,
    eval_crops_transform,
    input_size,
    loader_of,
    precision_of,
    resolve_protocol,
    sample_ids,
    save_and_report,
)
from dcbench.whitening import pca_whiten

DEFAULTS = {
    "k": (10, 10),            # thesis §4.1: "10-NN graph"
    # thesis §4.2: PCA-whitening to 256 dims, then L2 (as dc-train). Smoke: 32, as dc-train's smoke
    # scale -- whitening the ~200 embedded val images to ~n dims makes them all equidistant.
    "pca_dim": (256, 32),
    "neighbours": (3, 3),     # thesis §5.3: "its 3 nearest neighbors according to the l2 distance"
    "queries": (8, 8),        # rows of neighbours.png (one query per class, drawn with --seed)
    "batch_size": (256, 128),
}


# --------------------------------------------------------------------------------------------
# Pure core


def first_layer_filters(model) -> tuple[np.ndarray, bool]:
    """conv1 filters in input space: (F, h, w, 3) RGB, or (F, h, w) grey when composed with Sobel.

    With Sobel, conv1 sees the two gradient maps of the grey image; the filter on the grey image
    is the sum over the two Sobel channels of (conv1 filter) full-convolved with (Sobel kernel)."""
    conv1 = model.conv1 if model.arch.family == "resnet" else next(
        m for m in model.features if isinstance(m, torch.nn.Conv2d))
    w = conv1.weight.detach().float().cpu()
    if model.sobel is None:
        return w.permute(0, 2, 3, 1).numpy(), False
    sob = model.sobel[1].weight.detach().float().cpu()  # (2, 1, 3, 3)
    eff = sum(F.conv_transpose2d(w[:, c:c + 1], sob[c:c + 1]) for c in range(sob.shape[0]))
    return eff[:, 0].numpy(), True


# --------------------------------------------------------------------------------------------
# Pictures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path: Path) -> None:
    """Atomically: a full disk leaves the previous picture or none, never a truncated PNG."""
    plt = _plt()
    try:
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def save_filters(filters: np.ndarray, grey: bool, path: Path, title: str) -> Path:
    plt = _plt()
    n = len(filters)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.6, rows * 0.6 + 0.4))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            f = filters[i]
            f = (f - f.min()) / (f.max() - f.min() + 1e-12)
            ax.imshow(f, cmap="gray" if grey else None, interpolation="nearest")
    fig.suptitle(title, fontsize=8)
    _save_png(fig, path)
    return path


def save_neighbours(paths: list[str], queries: list[int], nn: np.ndarray, labels: np.ndarray, classes,
                    path: Path, title: str) -> Path:
    plt = _plt()
    k = nn.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=((k + 1) * 1.3, len(queries) * 1.3 + 0.4), squeeze=False)
    for r, q in enumerate(queries):
        for c, idx in enumerate([q, *nn[q]]):
            ax = axes[r, c]
            ax.imshow(pil_loader(paths[idx]))
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if c == 0 else ("green" if labels[idx] == labels[q] else "red")
            ax.set_title(plot_text(classes[labels[idx]], 12), fontsize=6, color=colour)
            for s in ax.spines.values():
                s.set_edgecolor(colour)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    return path


def save_ratios(ratios: dict, classes, random_mean: float, path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.boxplot(list(ratios.values()))
    ax.axhline(random_mean, color="grey", ls="--", lw=0.8, label="random graph")
    ax.set_ylabel("ratio edge intra-class (%)")
    ax.set_xticks([])
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    return path


# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_size_argument(p)
    p.add_argument("--split", choices=("train", "val"), default="val", help="labelled split to build the graph on")
    p.add_argument("--features", choices=("penultimate", "pool5"), default="penultimate",
                   help="penultimate: the clustering features (fc7 before ReLU; ResNets: pooled res5); "
                        "pool5: the flattened trunk output (ResNets: the res5 map)")
    p.add_argument("--k", type=argtypes.positive_int, default=None, help="neighbours per node (default: 10)")
    p.add_argument("--pca-dim", type=argtypes.nonneg_int, default=None, help="PCA-whitening dims, 0 = none; " + default_help(*DEFAULTS["pca_dim"]))
    p.add_argument("--neighbours", type=argtypes.positive_int, default=None, help="neighbours shown per query (default: 3)")
    p.add_argument("--queries", type=argtypes.positive_int, default=None, help="query rows in neighbours.png (default: 8)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help=f"images per forward pass (default: {DEFAULTS['batch_size'][0]}; "
                        f"smoke {DEFAULTS['batch_size'][1]})")


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = input_size(args, ckpt.meta)
        root = dataset_dir(args, "classification", (args.split,))
        ds = ImageFolder(root / args.split, eval_crops_transform(ckpt.meta, size, 1, loader_of(args)))
        data_fp = fingerprint(root / args.split)
    if proto["k"] >= len(ds):
        # a node has len(ds) - 1 possible neighbours: asking for more would measure a smaller graph
        # than the one the result records
        raise UserError(f"--k {proto['k']}: {root / args.split} has {len(ds)} images, so a node has at most "
                        f"{len(ds) - 1} neighbours; lower --k (the thesis uses 10) or use a larger split")
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))

    def forward(x):
        return [model.penultimate(x) if args.features == "penultimate" else model.trunk(x).flatten(1)]

    key = {"kind": f"knn-{args.features}", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp, "split": args.split,
           "transform": "center-crop", "input_size": size, "dtype": "float32"}
    with timer("features"):
        feats, labels, hit = training.extract_cached(
            args, key, [args.features], lambda: training.loader(ds, proto["batch_size"], shuffle=False,
                                                              workers=args.workers),
            forward, device=args.device, desc="features", dtype=np.float32, precision=precision_of(args))
    x = feats[args.features][:, 0]
    with timer("graph"):
        if proto["pca_dim"]:
            x = pca_whiten(x, proto["pca_dim"])  # the trainer's whitening (dcbench.whitening)
            used_dim = x.shape[1]
        else:
            used_dim = x.shape[1]
        k = proto["k"]
        _, nn = knn(x, k)
        ratios = {c: 100 * r for c, r in ratio_edge_intra_class(nn, labels).items()}
        rand = {c: 100 * r for c, r in random_graph_ratio(labels).items()}
    vals = np.array(list(ratios.values()))
    metrics = {"ratio_intra": vals.mean(), "ratio_median": np.median(vals), "ratio_q1": np.percentile(vals, 25),
               "ratio_q3": np.percentile(vals, 75), "ratio_min": vals.min(), "ratio_max": vals.max(),
               "random_graph_mean": float(np.mean(list(rand.values())))}
    outcomes, outcome_note = node_outcomes(ds, nn, labels)
    with timer("pictures"):
        # the name is meta.json's, i.e. the checkpoint author's: a slug, kept under --out
        pic_dir = output_dir(args.out, "knn-graph", f"{ckpt.name}-{ckpt.sha256[:8]}")
        rng = np.random.default_rng(args.seed)
        classes = ds.classes
        per_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        queries = [int(rng.choice(ix)) for ix in per_class[:proto["queries"]]]
        shown = nn[:, :min(proto["neighbours"], k)]
        paths = [p for p, _ in ds.samples]
        title = f"{plot_text(ckpt.name)} ({plot_text(ckpt.meta.get('origin'))}, {args.features})"
        filters, grey = first_layer_filters(model)
        pictures = {
            "neighbours": save_neighbours(paths, queries, shown, labels, classes, pic_dir / "neighbours.png", title),
            "filters": save_filters(filters, grey, pic_dir / "filters.png",
                                    f"{title}: conv1{' composed with Sobel' if grey else ''}"),
            "ratios": save_ratios(ratios, classes, metrics["random_graph_mean"], pic_dir / "ratios.png", title),
        }
    result = make_result(
        task="knn-graph", variant={"dataset": "imagenet", "split": args.split, "features": args.features},
        checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "k_used": k, "pca_dim_used": used_dim, "features": args.features,
                  "descriptor": (descriptor_block(ckpt.meta["arch"])["what"] if args.features == "penultimate"
                                 else "flattened trunk output")
                  + (", PCA-whitened, L2-normalised" if proto["pca_dim"] else ""),
                  "whitening": "dcbench.whitening.pca_whiten, the one dc-train clusters with (eigenvalues^-0.5, then L2)",
                  "search": "exact L2 (faiss IndexFlatL2), self excluded", "transform": "centre crop",
                  "input_size": size, "split": args.split, "seed": args.seed},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp, "sizes": {args.split: len(labels)}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"per_class": {str(classes[c]): round(v, 3) for c, v in ratios.items()},
                 "random_graph_per_class": {str(classes[c]): round(v, 3) for c, v in rand.items()},
                 "queries": [paths[q] for q in queries], **{f"png_{n}": str(p.relative_to(args.out)) for n, p in pictures.items()},
                 "filters_composed_with_sobel": grey, "feature_cache_hit": hit, "outcomes": outcome_note})
    return save_and_report(args, result, outcomes)


def node_outcomes(ds, neighbours: np.ndarray, labels: np.ndarray) -> tuple[Outcomes | None, str]:
    """Per-node outcomes of ``ratio_intra`` where it is a mean over nodes, and why (not) in words.

    ``ratio_intra`` is the mean over classes of the mean over a class's nodes of the share of their k
    edges that stay in the class: with every class the same size, that is the mean over nodes of each
    node's share, and those shares are its outcomes. The bootstrap then resamples the nodes whose
    shares are averaged, on the graph built over the whole split (an interval given that graph).
    With unequal classes it is a class-weighted mean, which no per-node mean reproduces under
    resampling, and the median, quartiles, extremes and the random-graph baseline are statistics over
    classes: they get no outcomes."""
    counts = np.unique(labels, return_counts=True)[1]
    if len(labels) != len(ds):
        return None, "none: some images could not be decoded, so the nodes do not match the split's images"
    if counts.min() != counts.max():
        return None, "none: classes of unequal size make ratio_intra a class-weighted mean, not a mean over nodes"
    share = 100.0 * (labels[neighbours] == labels[:, None]).mean(1)
    outcomes = Outcomes(ids=sample_ids(ds))
    outcomes.mean("ratio_intra", share)
    return outcomes, ("ratio_intra: each node's share of its k edges that stay in its class (classes of equal "
                      "size); the graph is that of the whole split")


register(Task(
    name="knn-graph",
    description="10-NN graph ratio edge intra-class, nearest-neighbour and conv1-filter pictures (§4.1, Figs 5.2-5.3)",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("val",), resources=Resources(1, 8, 32, 2 * 60),
    metrics=r"ratio_(intra|median|q1|q3|min|max)|random_graph_mean",
    table="knn-graph",
))

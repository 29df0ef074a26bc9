"""The leaderboard's tables: which results go in which column, shaped like the thesis's chapter 5.

:func:`build_tables` turns the newest result of every group (see :mod:`collect`) and the
literature into plain :class:`Table` objects; :mod:`render` writes them as markdown and
:mod:`plots` draws them. Rules, stated once:

- One row per checkpoint (name + sha256) and selection rule. A result under the thesis's rule
  (best epoch on the test set, ``conv5_best``) gives a "(last epoch)" row and a "(thesis rule: best
  epoch on test)" row; the default rule (the epoch chosen on a held-out split of the training set)
  gives one row. A low-shot result's random-init baseline (``random_n4_mean``) is its own row too.
- If one checkpoint has several variants that fit one column (two detection methods, two
  datasets), each goes to a row qualified by the variant values that differ.
- Comparable rows: same selection rule, data fingerprint, input size and protocol (the values
  that differ from the default, less those derived from the architecture, such as pooling sizes).
  Rows that are not comparable are never ranked against each other.
- Bold: the best value of a column among at least two comparable measured rows, and only when a
  paired bootstrap over the same test images puts its difference from the next row's value away
  from 0 at 95%, and its own interval clear of chance. Without per-image outcomes (schema-v1
  results) nothing is bold. Never bold: reported rows (transcribed, not re-measured), baselines
  (random-init rows, checkpoints of origin ``random``) and baseline columns (the k-NN graph's
  ``random_*`` metrics).
- Architecture families have separate tables: AlexNet/VGG16 results fill the thesis's tables, ResNet
  results (``dcbench.models.family_of``) their own "ResNets:" tables, which have no reported rows (no
  published ResNet number with a named source is in literature.csv).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from dcbench.outcomes import paired_difference
from dcbench.results import TEST_SET_RULES
from dcbench.tasks import Task, registry
from dcbench.text import md_text

# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Column:
    header: str
    task: str | None               # None: no result task fills it yet (reported rows only)
    metric: str
    where: tuple = ()              # variant subset as ((key, value), ...)
    literature: str | None = None  # ``column`` in literature.csv
    std_metric: str | None = None  # shown as "mean ± std"
    optional: bool = False         # shown only when a measured result fills it
    baseline: bool = False         # a reference value (e.g. a random graph's), never bold

    def matches(self, variant: dict) -> bool:
        return all(variant.get(k) == v for k, v in self.where)


@dataclass(frozen=True)
class RowKind:
    name: str                              # "", "best", "random"
    metric: Callable[[str], str]           # column metric -> metric name for this kind


LAST = RowKind("", lambda m: m)
BEST = RowKind("best", lambda m: f"{m}_best")
RANDOM = RowKind("random", lambda m: f"random_{m}")


@dataclass(frozen=True)
class TableSpec:
    key: str           # file-name friendly id
    title: str
    thesis: str        # "Table 5.3" / "Figure 5.1" / "§4.1"
    literature_table: str | None
    columns: tuple[Column, ...]
    kinds: tuple[RowKind, ...] = (LAST, BEST)
    plot: str | None = None   # "conv" or "lowshot"
    caption: str = ""
    family: str = "convfc"    # which results fill it (dcbench.models.family_of)


def _conv(task: str, prefix: str) -> tuple[Column, ...]:
    return tuple(Column(f"conv{i}", task, f"conv{i}", literature=f"{prefix}_conv{i}") for i in range(1, 6))


def _semisup(literature: str | None = None) -> tuple[Column, ...]:
    return tuple(Column(f"{f}% top-{k}", "semisup", f"top{k}_{f}pct",
                        literature=None if literature is None else f"{literature}_top{k}_{f}pct")
                 for f in (1, 10) for k in (1, 5))


RETRIEVAL_CAPTION = ("Instance retrieval, mAP % (Oxford protocol: good+ok positive, junk ignored): R-MAC of the "
                     "frozen last conv layer (regions on 3 scales, max-pooled), PCA-whitening learned on the other "
                     "dataset, queries cropped to their box (DeepCluster's eval_retrieval.py).")

SEMISUP_CAPTION = ("Whole network fine-tuned on 1% / 10% of ImageNet's labelled train images (SimCLR's subsets, "
                   "or a class-balanced draw); top-1 and top-5 % on val, one centre crop.")

STATIC_TABLES = (
    TableSpec("mlp", "ImageNet classification, MLP on frozen convolutions", "Table 5.2", "5.2",
              (Column("Top-1", "mlp", "top1", literature="mlp_top1"),),
              caption="fc6-fc8 trained from scratch on frozen conv layers; top-1 %, 10 crops."),
    TableSpec("linear-imagenet", "ImageNet, linear classifiers on conv1-conv5", "Table 5.3", "5.3",
              _conv("linear-imagenet", "imagenet"), plot="conv",
              caption="Logistic regression on each frozen, average-pooled conv layer; top-1 %."),
    TableSpec("linear-places", "Places, linear classifiers on conv1-conv5", "Table 5.4", "5.4",
              _conv("linear-places", "places"), plot="conv",
              caption="Logistic regression on each frozen, average-pooled conv layer; top-1 %."),
    TableSpec("voc", "PASCAL VOC: classification, detection, segmentation", "Table 5.5", "5.5", (
        Column("Cls. fc6-8", "voc-classification", "map", (("layers", "fc6-8"),), "voc07_cls_fc6-8"),
        Column("Cls. all", "voc-classification", "map", (("layers", "all"),), "voc07_cls_all"),
        Column("Det. fc6-8", "voc-detection", "map", (("layers", "fc6-8"),), optional=True),
        Column("Det. all", "voc-detection", "map", (("layers", "all"),), "voc07_det_all"),
        Column("Seg. fc6-8", "voc-segmentation", "miou", (("layers", "fc6-8"),), optional=True),
        Column("Seg. all", "voc-segmentation", "miou", (("layers", "all"),), "voc12_seg_all"),
    ), caption="VOC2007 classification (mAP), VOC2007 detection (mAP@0.5), VOC2012 segmentation "
               "(mIoU); fc6-8 = only fc6-fc8 trained, all = every layer fine-tuned."),
    TableSpec("semisup", "ImageNet semi-supervised: 1% and 10% of the labels", "SimCLR B.5's protocol", None,
              _semisup(), caption=SEMISUP_CAPTION),
    TableSpec("voc07-svm", "VOC07 linear SVMs on conv1-conv5", "Goyal et al. 2019", None,
              tuple(Column(f"conv{i}", "voc07-svm", f"conv{i}_map") for i in range(1, 6)), kinds=(LAST,),
              caption="One linear SVM per VOC07 class on each frozen, average-pooled conv layer, C by 3-fold "
                      "cross-validation on trainval; test mAP %."),    TableSpec("retrieval", "Instance retrieval: Oxford5k and Paris6k", "DeepCluster's eval_retrieval.py", None,
              (Column("Oxford5k", "retrieval", "oxford5k_map"), Column("Paris6k", "retrieval", "paris6k_map")),
              kinds=(LAST,), caption=RETRIEVAL_CAPTION),
)

# Chapter 4 (the method itself): the thesis's rows. No result file carries these measurements, so
# their columns have no task: dc-train --descriptor / --targets labels make the checkpoints
# and logs, the MLP task scores them into Table 5.2's rows, and Table 4.3 is a benchmark script.
CHAPTER4_TABLES = (
    TableSpec("descriptor", "Descriptor for clustering: MLP on frozen convolutions after 85 epochs", "Table 4.1",
              "4.1", (Column("before ReLU", None, "top1", literature="mlp_top1_before_relu"),
                      Column("after ReLU", None, "top1", literature="mlp_top1_after_relu")),
              caption="Clustering on the penultimate layer's features taken before or after its ReLU; "
                      "ImageNet top-1 % of fc6-fc8 retrained on the frozen convolutions (Table 5.2's "
                      "protocol), after 85 epochs of DeepCluster. To measure them: dc-train --descriptor "
                      "pre-relu|post-relu, then dc-transfer mlp on each checkpoint (experiments/chapter4/"
                      "descriptor); those results are listed under Table 5.2, not here."),
    TableSpec("supervised-sgt", "Supervised training with the SGT approximation", "Table 4.2", "4.2",
              (Column("Top-1", None, "top1", literature="top1"),),
              caption="The same network trained 90 epochs on ImageNet's labels (Sobel input), updating all "
                      "rows of the last layer or only 256/512 of them per batch (SGT); top-1 % on the centre "
                      "crop of val. dc-train --preset sup-ImNet-Sob [--sgt N] logs this top-1 each epoch (val_top1 "
                      "in log.jsonl, drawn by dc-figures); it writes no result file, so no row here."),
    TableSpec("sgt-speed", "Time per mini-batch with and without SGT", "Table 4.3", "4.3",
              (Column("ms per mini-batch", None, "ms_per_minibatch", literature="ms_per_minibatch"),),
              caption="Average time of one DeepCluster mini-batch as the thesis measured it, in milliseconds "
                      "(not a percentage). benchmarks/sgt_timing.py measures it (benchmarks/out/sgt_timing_*.json), "
                      "which the leaderboard does not read."),
)

def _resnet_taps(task: str) -> tuple[Column, ...]:
    taps = ("conv1", "res2", "res3", "res4", "res5")
    return (*(Column(t, task, t) for t in taps), Column("res5 pooled", task, "res5_gap"))


RESNET_TABLES = (
    TableSpec("resnet-linear-imagenet", "ResNets: ImageNet, linear classifiers on conv1, res2-res5 and pooled res5",
              "Table 5.3's protocol", None, _resnet_taps("linear-imagenet"), family="resnet",
              caption="Logistic regression on each frozen tap, average-pooled to at most 10k dims, and on res5 "
                      "globally average-pooled (2,048-d); top-1 %."),
    TableSpec("resnet-linear-places", "ResNets: Places, linear classifiers on conv1, res2-res5 and pooled res5",
              "Table 5.4's protocol", None, _resnet_taps("linear-places"), family="resnet",
              caption="Logistic regression on each frozen tap, average-pooled to at most 10k dims, and on res5 "
                      "globally average-pooled (2,048-d); top-1 %."),
    TableSpec("resnet-voc", "ResNets: PASCAL VOC classification, detection, segmentation", "Table 5.5's protocol",
              None, (
                  Column("Cls. res5", "voc-classification", "map", (("layers", "res5"),)),
                  Column("Cls. all", "voc-classification", "map", (("layers", "all"),)),
                  Column("Det. all", "voc-detection", "map", (("layers", "all"),)),
                  Column("Seg. all", "voc-segmentation", "miou", (("layers", "all"),)),
              ), family="resnet",
              caption="VOC2007 classification (mAP; res5 = linear on the frozen, pooled res5), detection with "
                      "a ResNet-FPN Faster R-CNN (mAP@0.5), VOC2012 segmentation with an FCN head on dilated "
                      "res5 (mIoU); all = every layer fine-tuned."),
    TableSpec("resnet-semisup", "ResNets: ImageNet semi-supervised: 1% and 10% of the labels", "SimCLR B.5's protocol",
              "semisup-r50", _semisup("semisup"), family="resnet",
              caption=SEMISUP_CAPTION + " Reported rows: mmselfsup's ResNet-50s under its own fine-tuning settings."),
    TableSpec("resnet-voc07-svm", "ResNets: VOC07 linear SVMs on conv1, res2-res5 and pooled res5",
              "Goyal et al. 2019", None,
              tuple(Column(h, "voc07-svm", f"{t}_map") for h, t in (("conv1", "conv1"), ("res2", "res2"),
                    ("res3", "res3"), ("res4", "res4"), ("res5", "res5"), ("res5 pooled", "res5_gap"))),
              kinds=(LAST,), family="resnet",
              caption="One linear SVM per VOC07 class on each frozen tap, C by 3-fold cross-validation on "
                      "trainval; test mAP %."),    TableSpec("resnet-retrieval", "ResNets: instance retrieval: Oxford5k and Paris6k", "DeepCluster's eval_retrieval.py",
              None, (Column("Oxford5k", "retrieval", "oxford5k_map"), Column("Paris6k", "retrieval", "paris6k_map")),
              kinds=(LAST,), family="resnet", caption=RETRIEVAL_CAPTION.replace("last conv layer", "res5")),
)

LOWSHOT_METRIC = re.compile(r"^(random_)?n(\d+)_(mean|std)$")


def _family_prefix(family: str) -> tuple[str, str]:
    return ("resnet-", "ResNets: ") if family == "resnet" else ("", "")


def lowshot_spec(metric_names: set[str], family: str = "convfc") -> TableSpec:
    ns = sorted({int(m.group(2)) for m in map(LOWSHOT_METRIC.match, metric_names) if m})
    cols = tuple(Column(f"n={n}", "lowshot", f"n{n}_mean", std_metric=f"n{n}_std") for n in ns)
    key, title = _family_prefix(family)
    return TableSpec(f"{key}lowshot", f"{title}Low-shot ImageNet classification", "Figure 5.1", None, cols,
                     kinds=(LAST, RANDOM), plot="lowshot", family=family,
                     caption="Whole network fine-tuned with n images per class; top-1 %, mean ± std "
                             "over the draws. Random init rows: the same protocol from random weights.")


def knn_spec(metric_names: set[str], family: str = "convfc") -> TableSpec:
    names = sorted((m for m in metric_names if not m.endswith("_best")),
                   key=lambda m: (m != "ratio_intra", m))
    cols = tuple(Column(m, "knn-graph", m, baseline=m.startswith("random_")) for m in names)
    key, title = _family_prefix(family)
    return TableSpec(f"{key}knn-graph", f"{title}k-NN graph diagnostics", "§4.1", None, cols, family=family,
                     caption="ratio_intra: mean share of a node's k-NN edges that stay within its class, %.")


VISUALIZE_LAYERS = ("conv1", "conv3", "conv5", "res3", "res5")


def visualize_spec(metric_names: set[str], family: str = "convfc") -> TableSpec:
    """dc-transfer visualize: one column per visualised layer, shallow first; the pictures are on
    the page each result links below the table."""
    found = sorted((m.removesuffix("_prob") for m in metric_names if m.endswith("_prob")),
                   key=lambda n: (VISUALIZE_LAYERS.index(n) if n in VISUALIZE_LAYERS else len(VISUALIZE_LAYERS), n))
    cols = tuple(Column(n, "visualize", f"{n}_prob") for n in found)
    key, title = _family_prefix(family)
    return TableSpec(f"{key}visualize", f"{title}Feature visualisation", "§5.3, Figure 5.4", None, cols,
                     kinds=(LAST,), family=family,
                     caption="Mean softmax share (%) of the target channel among its layer's channels, for the "
                             "inputs optimised by gradient ascent (what the ascent maximises). The pictures are "
                             "on each checkpoint's page, linked below.")


KNN_METRIC = re.compile(r"^(desc|conv5|res5)_k(\d+)_top([15])$")


def knn_classification_spec(metric_names: set[str], family: str = "convfc") -> TableSpec:
    """dc-transfer knn's table, laid out by its metric names: the descriptor's columns, then the pooled
    last conv's; each by k, top-1 before top-5."""
    found = sorted((m.group(1) != "desc", int(m.group(2)), m.group(3), m.group(1))
                    for m in map(KNN_METRIC.match, metric_names) if m)
    cols = tuple(Column(f"{feat} k={k} top-{top}", "knn", f"{feat}_k{k}_top{top}") for _, k, top, feat in found)
    key, title = _family_prefix(family)
    return TableSpec(f"{key}knn", f"{title}Weighted k-NN classification on frozen features", "DINO's k-NN protocol",
                     None, cols, kinds=(LAST,), family=family,
                     caption="Train images as the bank, val images as queries; cosine similarity, the k nearest vote "
                             "with weight exp(s/0.07); top-1 / top-5 %. desc: the descriptor (fc7 before ReLU; "
                             "ResNets: pooled res5); conv5 / res5: the last conv, average-pooled as for the linear "
                             "probes.")


LOWSHOT_SVM_METRIC = re.compile(r"^(.+)_k(\d+)_mean$")
_TAP_ORDER = ("conv1", "conv2", "conv3", "conv4", "conv5", "res2", "res3", "res4", "res5", "res5_gap")


def lowshot_svm_spec(metric_names: set[str], family: str = "convfc") -> TableSpec:
    """lowshot-svm: one column per (tap, k), mean ± std over the draws (min and max stay in the result)."""
    found = {(m.group(1), int(m.group(2))) for m in map(LOWSHOT_SVM_METRIC.match, metric_names) if m}
    order = sorted(found, key=lambda tk: (_TAP_ORDER.index(tk[0]) if tk[0] in _TAP_ORDER else len(_TAP_ORDER),
                                          tk[0], tk[1]))
    cols = tuple(Column(f"{t} k={k}", "lowshot-svm", f"{t}_k{k}_mean", std_metric=f"{t}_k{k}_std") for t, k in order)
    key, title = _family_prefix(family)
    return TableSpec(f"{key}lowshot-svm", f"{title}VOC07 low-shot linear SVMs", "Goyal et al. 2019", None, cols,
                     kinds=(LAST,), family=family,
                     caption="Linear SVMs on each frozen tap trained with k positive images per class (and 19k "
                             "negatives); test mAP %, mean ± std over the draws.")


def task_tables() -> dict[str, str]:
    """Task -> the key of the table its results fill, as each task declares it (:mod:`dcbench.tasks`)."""
    return {name: task.table for name, task in registry().items()}


LAID_OUT = {s.key for s in STATIC_TABLES} | {"lowshot", "knn-graph", "knn", "lowshot-svm", "visualize"}  # tables with a layout above


def own_spec(task: Task, metric_names: set[str], family: str = "convfc") -> TableSpec:
    """The table of a task whose declared table has no layout here: one column per metric name its
    results carry, so a new task is on the leaderboard before anyone lays its table out."""
    cols = tuple(Column(m, task.name, m) for m in sorted(metric_names) if not m.endswith("_best"))
    key, title = _family_prefix(family)
    return TableSpec(f"{key}{task.table}", f"{title}{task.description}", f"dc-transfer {task.name}", None,
                     cols, family=family)


# --------------------------------------------------------------------------- tables


@dataclass
class Row:
    label: str
    source: str          # what the Source column says
    kind: str            # supervised | baseline | cited | thesis | measured
    values: dict = field(default_factory=dict)   # header -> float
    stds: dict = field(default_factory=dict)     # header -> float
    runs: str = ""
    provenance: str = ""  # short: sha256 prefix, date, git, data
    protocol: str = ""    # the protocol values that differ from the default (long: a note under the table)
    checkpoint: str = ""  # "name sha8", measured rows only
    selection: str = ""   # measured rows: the RowKind name ("" last epoch, "best", "random")
    baseline: bool = False  # measured random-init numbers: shown, never bold
    rule: str = ""        # measured rows: the results' selection rule
    compare: tuple = ()   # measured rows: what must agree for two rows to be ranked (module docstring)
    intervals: dict = field(default_factory=dict)  # header -> (low, high), 95% bootstrap
    withheld: dict = field(default_factory=dict)   # header -> why its interval is left out
    outcomes: dict = field(default_factory=dict)   # header -> (dcbench.outcomes.Metric, images sha256)
    seeds: dict = field(default_factory=dict)      # header -> (mean, sd, n) over --seeds runs
    cost: str = ""        # measured rows: wall time (or GPU-hours) and device

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    @property
    def contends(self) -> bool:
        """Whether this row's values may be bold (see the module docstring)."""
        return self.measured and not self.baseline


@dataclass
class Comparison:
    """A paired comparison of two comparable measured rows in one column: ``better`` minus ``worse``."""

    header: str
    better: Row
    worse: Row
    difference: float | None = None   # None: no paired interval (outcomes missing or test sets differ)
    low: float | None = None
    high: float | None = None
    why_not: str = ""

    @property
    def significant(self) -> bool:
        return self.low is not None and (self.low > 0 or self.high < 0)


@dataclass
class Table:
    spec: TableSpec
    scale: str
    columns: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)   # markdown image links (k-NN pictures)
    chance: dict = field(default_factory=dict)        # header -> chance level (%), where one is known
    comparisons: list[Comparison] = field(default_factory=list)

    def bold(self, header: str, row: Row) -> bool:
        """Whether ``row``'s value in ``header`` is bold (the module docstring's rule)."""
        col = next((c for c in self.spec.columns if c.header == header), None)
        if col is None or col.baseline or not row.contends:
            return False
        for c in self.comparisons:
            if c.header == header and c.better is row and c.worse.contends:
                chance = self.chance.get(header)
                clear = chance is None or (header in row.intervals and row.intervals[header][0] > chance)
                return c.significant and clear and _top_contender(self, header, row)
        return False


def _top_contender(table: Table, header: str, row: Row) -> bool:
    peers = [r for r in table.rows if r.contends and r.compare == row.compare and header in r.values]
    return len(peers) >= 2 and max(peers, key=lambda r: r.values[header]) is row


def compare_rows(table: Table) -> list[Comparison]:
    """For each column, the measured rows of each comparable group ranked by value, and each adjacent
    pair compared by a paired bootstrap over the same test images (:func:`dcbench.outcomes.paired_difference`)."""
    out = []
    for header in table.columns:
        groups: dict[tuple, list[Row]] = {}
        for r in table.rows:
            if r.measured and header in r.values:
                groups.setdefault(r.compare, []).append(r)
        for rows in groups.values():
            rows = sorted(rows, key=lambda r: -r.values[header])
            for better, worse in zip(rows, rows[1:]):
                c = Comparison(header, better, worse)
                a, b = better.outcomes.get(header), worse.outcomes.get(header)
                if a is None or b is None:
                    c.why_not = "no per-image outcomes for both rows"
                elif a[1] != b[1]:
                    c.why_not = "their test images differ"
                else:
                    d = paired_difference(a[0], b[0])
                    c.difference, c.low, c.high = d["difference"], d["low"], d["high"]
                out.append(c)
    return out


def literature_rows(spec: TableSpec, literature: pd.DataFrame) -> list[Row]:
    if spec.literature_table is None:
        return []
    lit = literature[literature["table"] == spec.literature_table]
    rows: dict[str, Row] = {}
    for _, r in lit.iterrows():
        col = next((c for c in spec.columns if c.literature == r["column"]), None)
        if col is None:
            continue
        row = rows.setdefault(r["method"], Row(r["method"], _lit_source(r), r["kind"]))
        if pd.notna(r["value"]):
            row.values[col.header] = float(r["value"])
    return list(rows.values())


def _lit_source(r) -> str:
    kind = {"supervised": "reported, supervised", "baseline": "reported",
            "cited": "reported", "thesis": "reported, thesis's model"}[r["kind"]]
    # thesis tables are numbered ("5.3"); any other table's rows name their source file
    return kind + (f" (thesis Table {r['table']})" if r["table"][:1].isdigit() else f" ({r['citation']})")


RULE_LABELS = {  # how a row names the rule its numbers were chosen by (the default, held-out, says nothing)
    "last+best": {"": "last epoch", "best": "thesis rule: best epoch on test"},
    "best-on-test": {"": "published rule: chosen on test"},
}
# protocol values fixed by the architecture and input size (both compared on their own)
_DERIVED = re.compile(r"(pooling|feature_dims|features|layers)(\.|$)")


def measured_rows(spec: TableSpec, newest: pd.DataFrame, scale: str) -> list[Row]:
    """Rows for the newest results of ``scale`` that fill a column of ``spec``."""
    # (name, sha, kind, rule, qualifier) -> header -> (value, std, result row, metric)
    cells: dict[tuple, dict[str, tuple]] = {}
    sub = newest[newest["scale"] == scale] if not newest.empty else newest
    if sub.empty:
        return []
    # rules that choose on the test set get rows of their own; every other rule (final, last, held-out,
    # cross-validation) shares the checkpoint's row across the tasks of a table
    sub = sub.assign(row_rule=sub["selection_rule"].map(lambda r: r if r in TEST_SET_RULES else ""))
    for col in spec.columns:
        fits = sub[(sub["task"] == col.task) & sub["variant"].map(col.matches).astype(bool)]
        for kind in spec.kinds:
            metric = kind.metric(col.metric)
            has = fits[fits["metrics"].map(lambda m, k=metric: k in m).astype(bool)]
            for (name, sha, rule), group in has.groupby(["ckpt_name", "ckpt_sha", "row_rule"], sort=True):
                group_rows = [g for _, g in group.iterrows()]
                differing = _differing_keys([g["variant"] for g in group_rows])
                for g in group_rows:
                    qual = ", ".join(f"{k}={g['variant'].get(k)}" for k in differing)
                    std = g["metrics"].get(kind.metric(col.std_metric)) if col.std_metric else None
                    cells.setdefault((name, sha, kind.name, rule, qual), {})[col.header] = (
                        g["metrics"][metric], std, g, metric)
    rows = []
    kind_order = {k.name: i for i, k in enumerate(spec.kinds)}
    for (name, sha, kind, rule, qual), by_col in sorted(cells.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][3], kind_order[kv[0][2]], kv[0][4])):
        results = [c[2] for c in by_col.values()]
        label = name
        baseline = kind == "random" or any(g["ckpt_origin"] == "random" for g in results)
        provenance, protocol = _provenance(sha, results)
        if kind == "best":
            provenance += " · " + _best_epochs(spec, by_col)
        if any(g["selection_rule"] == "held-out" for g in results):
            provenance += " · " + _held_out(results)
        if kind == "random":
            label = f"Random init (baseline run with {name})"
        said = RULE_LABELS.get(rule, {}).get(kind)
        if said:
            label += f" ({said})"
        if qual:
            label += f" [{qual}]"
        runs = {h: int(c[2]["n_runs"]) for h, c in by_col.items()}
        row = Row(
            label=label, source=f"measured ({scale})", kind="measured",
            values={h: float(c[0]) for h, c in by_col.items()},
            stds={h: float(c[1]) for h, c in by_col.items() if c[1] is not None},
            runs=_runs_text(runs), provenance=provenance, protocol=protocol, checkpoint=f"{name} {sha[:8]}",
            selection=kind, baseline=baseline, rule=rule, cost=_cost_text(results))
        for h, (_, _, g, metric) in by_col.items():
            if metric in g["intervals"]:
                row.intervals[h] = g["intervals"][metric]
                row.outcomes[h] = (g["outcomes"][metric], g["images_sha"])
            elif g["withheld"]:
                row.withheld[h] = g["withheld"]
            seeds = g["seeds"] if isinstance(g["seeds"], dict) else {}
            if metric in seeds.get("mean", {}):
                row.seeds[h] = (seeds["mean"][metric], seeds["sd"][metric], seeds["n"])
        row.compare = _comparable(rule, kind, results)
        rows.append(row)
    return rows


def _comparable(rule: str, kind: str, results: list) -> tuple:
    protocol = sorted({(k, _fmt_value(v)) for g in results for k, v in g["protocol_diff"].items()
                       if not _DERIVED.match(k) and k not in ("seed", "input_size")})
    return (rule, kind, tuple(sorted({g["data_fp"] for g in results})),
            tuple(sorted({str(g["input_size"]) for g in results})), tuple(protocol))


def _cost_text(results: list) -> str:
    """Wall time (or GPU-hours) and device of a row's newest results, from their ``cost`` blocks."""
    # one result fills several columns of a row: count each result file once
    unique = list({g["path"]: g["cost"] for g in results if isinstance(g["cost"], dict)}.values())
    if not unique:
        return "-"
    wall = sum(float(c.get("wall_s", 0.0)) for c in unique)
    gpu_h = sum(float(c.get("gpu_hours", 0.0)) for c in unique)
    devices = sorted({str(c.get("device", "?")).removeprefix("cpu: ")[:40] for c in unique})
    gpu = any(c.get("device_count") for c in unique)
    amount = f"{gpu_h:.2f} GPU-h" if gpu else (f"{wall:.0f} s" if wall < 3600 else f"{wall / 3600:.1f} h")
    return f"{amount}, {' / '.join(devices)}" if gpu else f"{amount} CPU"


def _best_epochs(spec: TableSpec, by_col: dict) -> str:
    """"best epoch 12", or per column when they differ ("best epochs conv1 3, conv2 7, ...").

    A result may give per-metric epochs in ``selection.best_epochs`` (linear probes train five
    heads at once); otherwise ``selection.best_epoch`` applies to all its metrics."""
    metric_of = {c.header: c.metric for c in spec.columns}
    epochs = {}
    for header, (_, _, g, _) in by_col.items():
        per = g["selection"].get("best_epochs")
        per = per if isinstance(per, dict) else {}
        epochs[header] = per.get(metric_of[header], g["selection"].get("best_epoch"))
    if len(set(epochs.values())) == 1:
        return f"best epoch {next(iter(epochs.values()))}"
    return "best epochs " + ", ".join(f"{h} {e}" for h, e in epochs.items())


def _held_out(results: list) -> str:
    """"chosen on 120 held-out train images": the size of the split a held-out choice was made on."""
    splits = [g["selection"].get("split") for g in results if g["selection_rule"] == "held-out"]
    sizes = sorted({sp["size"] for sp in splits if isinstance(sp, dict) and isinstance(sp.get("size"), int)
                    and not isinstance(sp["size"], bool) and 0 < sp["size"] < 10**9})
    shown = ", ".join(map(str, sizes))
    return f"chosen on {shown + ' ' if shown else ''}held-out train images"


def _differing_keys(variants: list[dict]) -> list[str]:
    if len(variants) < 2:
        return []
    keys = sorted(set().union(*variants))
    return [k for k in keys if len({repr(v.get(k)) for v in variants}) > 1]


def _runs_text(runs: dict[str, int]) -> str:
    if len(set(runs.values())) == 1:
        return str(next(iter(runs.values())))
    return "; ".join(f"{h}: {n}" for h, n in runs.items())


def _provenance(sha: str, results: list) -> tuple[str, str]:
    """(sha256 prefix · date · git · data, the protocol values that differ from the default)."""
    newest = max(results, key=lambda g: g["created"])
    gits = sorted({g["git_sha"][:7] + ("+dirty" if g["git_sha"].endswith("+dirty") else "") for g in results})
    data = _unique_casefold(sorted({g["data_name"] for g in results}))
    diffs = {}
    for g in results:
        for k, v in g["protocol_diff"].items():
            diffs.setdefault(k, set()).add(_fmt_value(v))
    parts = [f"sha256 {sha[:8]}", newest["created_raw"][:10], "git " + ", ".join(gits),
             "data " + ", ".join(data)]
    protocol = " ".join(f"{k}={'/'.join(sorted(v))}" for k, v in sorted(diffs.items()))
    return " · ".join(parts), protocol


def _unique_casefold(names: list[str]) -> list[str]:
    """Drop names that differ from an earlier one only in case ("VOC2007", "voc2007")."""
    seen: set[str] = set()
    return [n for n in names if not (n.casefold() in seen or seen.add(n.casefold()))]


def class_notes(spec: TableSpec, newest: pd.DataFrame, scale: str) -> list[str]:
    """One markdown line naming the class count (and chance level) of the data the measured rows used.

    The embedded sets have 8-10 classes, so their accuracies sit far above the thesis's
    1000-class (ImageNet) and 205-class (Places) numbers; the note says so where they appear."""
    if newest.empty:
        return []
    tasks = {c.task for c in spec.columns}
    sub = newest[(newest["scale"] == scale) & newest["task"].isin(tasks)]
    counts: dict[str, set[int]] = {}
    for _, g in sub.iterrows():
        n = g["details"].get("classes")
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1_000_000:
            counts.setdefault(str(g["data_name"]), set()).add(n)
    if not counts:
        return []
    # the note is markdown: the data names are the result files' (untrusted), the rest is ours
    parts = [f"{md_text(name)}: {n:,} classes (chance {100 / n:.1f}%)"
             for name in sorted(counts) for n in sorted(counts[name])]
    note = "Data of the measured rows: " + "; ".join(parts) + "."
    if scale == "smoke":
        note += (" These are the embedded sets, not ImageNet's 1,000 or Places205's 205 classes, so their "
                 "accuracies are not on the thesis's scale.")
    return [note]


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


CHANCE_TASKS = {"mlp", "linear-imagenet", "linear-places", "knn", "semisup", "lowshot"}  # top-k accuracy metrics


def chance_levels(spec: TableSpec, newest: pd.DataFrame, scale: str, columns: list[str]) -> dict[str, float]:
    """Header -> chance accuracy (%) for the top-1 / top-5 columns, when every measured result of the
    column's task at this scale has the same class count (otherwise no single chance level exists)."""
    out = {}
    if newest.empty:
        return out
    for col in spec.columns:
        if col.header not in columns or col.task not in CHANCE_TASKS:
            continue
        sub = newest[(newest["scale"] == scale) & (newest["task"] == col.task)]
        counts = {g.get("classes") for g in sub["details"]}
        if len(counts) != 1:
            continue
        n = next(iter(counts))
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1_000_000:
            top = 5 if "top5" in col.metric or "top-5" in col.header else 1
            out[col.header] = min(100.0, 100.0 * top / n)
    return out


def build_table(spec: TableSpec, newest: pd.DataFrame, literature: pd.DataFrame, scale: str) -> Table:
    lit = literature_rows(spec, literature) if scale == "full" else []
    measured = measured_rows(spec, newest, scale)
    filled = {h for r in measured for h in r.values}
    columns = [c.header for c in spec.columns if not c.optional or c.header in filled]
    table = Table(spec, scale, columns, lit + measured, notes=class_notes(spec, newest, scale),
                  chance=chance_levels(spec, newest, scale, columns))
    table.comparisons = compare_rows(table)
    return table


def specs_for(newest: pd.DataFrame, family: str = "convfc") -> list[TableSpec]:
    """The static thesis tables, the data-driven low-shot, k-NN-graph and k-NN ones (and one per task
    without a laid-out table), then chapter 4's; for ResNets, their own tables (``newest``: that
    family's results)."""
    def names(task: str) -> set[str]:
        sub = newest[newest["task"] == task] if not newest.empty else newest
        return set().union(*sub["metrics"].map(set)) if len(sub) else set()

    dynamic = [lowshot_spec(names("lowshot"), family), knn_spec(names("knn-graph"), family),
               knn_classification_spec(names("knn"), family),
               lowshot_svm_spec(names("lowshot-svm"), family),
               visualize_spec(names("visualize"), family),
               *(own_spec(t, names(t.name), family) for t in registry().values() if t.table not in LAID_OUT)]
    if family == "resnet":
        return [*RESNET_TABLES, *dynamic]
    return [*STATIC_TABLES, *dynamic, *CHAPTER4_TABLES]


def of_family(newest: pd.DataFrame, family: str) -> pd.DataFrame:
    if newest.empty or "family" not in newest:
        return newest if family == "convfc" else newest.iloc[0:0]
    return newest[newest["family"] == family]


def build_tables(newest: pd.DataFrame, literature: pd.DataFrame) -> dict[str, list[Table]]:
    """``{"full": [...], "smoke": [...]}``. Full tables with literature are always present; a table
    with neither literature nor measured rows is left out. AlexNet/VGG16 tables first, then the
    ResNet ones: a result fills only the tables of its checkpoint's family."""
    out: dict[str, list[Table]] = {"full": [], "smoke": []}
    for scale in out:
        for family in ("convfc", "resnet"):
            sub = of_family(newest, family)
            for spec in specs_for(sub, family):
                table = build_table(spec, sub, literature, scale)
                if table.rows and table.columns:
                    out[scale].append(table)
    return out

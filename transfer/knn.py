"""knn: weighted k-nearest-neighbour classification on frozen features (DINO's eval_knn.py rule).

Every training image is a point of the bank, every val image a query. Features are taken once per
split, from one trunk forward that gives both feature sets:

- ``desc``: the descriptor (:func:`dcbench.checkpoint.descriptor_block`): fc7 before its ReLU for
  AlexNet/VGG16, res5 globally average-pooled (2,048-d) for a ResNet;
- the last probed conv tap (``conv5``; ResNets: ``res5``), average-pooled to at most 10,000 dims by
  the linear probes' rule (:func:`dcbench.transfer.linear_probe.pooling_for`; AlexNet at 224 px:
  9,216 dims).

Rule: bank and queries L2-normalised, similarity = cosine (a dot product); the k most similar bank
points of a query vote for their class with weight exp(s / T); a class's score is the sum of its
voters' weights; top-1 = the best-scoring class is the label, top-5 = the label is among the five
best (among min(5, k) as DINO counts it). Every k of ``--k`` comes from ONE search for the
max(k) nearest neighbours: the neighbours of a smaller k are the first k of that sorted list.

Ties are broken by index, so a result never depends on the device's topk: of equally similar bank
points the lower index ranks first (and is kept when only some fit in the k), and of equally scored
classes the lower class index ranks first.

Memory: the bank (N x D, ``--bank-dtype``) stays on ``--device``; queries go through in chunks of
``--chunk`` rows, each giving one chunk x N float32 similarity block. The votes are counted on the CPU in float64 (chunk x max(k) neighbours each).

Result (one per checkpoint): metrics ``<features>_k<k>_top1`` / ``_top5`` (percent), features
``desc`` and ``conv5`` (ResNets: ``res5``); selection ``final``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dcbench import argtypes
from dcbench.checkpoint import descriptor_block, load_checkpoint
from dcbench.datasets import ImageFolder, fingerprint
from dcbench.errors import UserError
from dcbench.outcomes import Outcomes
from dcbench.results import checkpoint_block, make_result
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.linear_probe import layer_names, pooling_for
from dcbench.transfer.protocol import (
    Timer,
    add_input_size_argument,
    align_classes,
    dataset_dir,
    default_help,
    eval_crops_transform,
    input_size,
    loader_of,
    positive_ints,
    precision_of,
    remap_targets,
    resolve_protocol,
    sample_ids,
    save_and_report,
)

DEFAULTS = {
    "k": ("10,20,100,200", "10,20,100,200"),  # DINO eval_knn.py --nb_knn [10, 20, 100, 200]
    "temperature": (0.07, 0.07),              # DINO eval_knn.py --temperature 0.07
    "chunk": (500, 64),                       # DINO: 50k val queries in 100 chunks; smoke: 200 queries in 4
    "batch_size": (256, 128),                 # images per trunk forward (no effect on the numbers)
}
DESC = "desc"


# --------------------------------------------------------------------------------------------
# Pure core: search and vote


def normalised(x: np.ndarray | torch.Tensor, dtype: torch.dtype, device, rows: int = 8192) -> torch.Tensor:
    """Rows of ``x`` L2-normalised (in float32, ``rows`` at a time), stored as ``dtype`` on ``device``:
    never a float32 copy of the whole array."""
    out = torch.empty(tuple(x.shape), dtype=dtype, device=device)
    for s in range(0, len(x), rows):
        part = torch.as_tensor(x[s:s + rows]).to(device=device, dtype=torch.float32)
        out[s:s + rows] = F.normalize(part, dim=1).to(dtype)
    return out


def similarity_block(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """queries @ bank.T as float32. A half bank on CUDA is multiplied straight into float32 (no
    half-precision block, whose rounding would tie neighbours that float32 tells apart)."""
    if bank.dtype != torch.float32 and bank.is_cuda:
        return torch.mm(queries, bank.T, out_dtype=torch.float32)
    return (queries @ bank.T).float()


def _topk_by_index(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row, ordered by (value descending, index ascending), and of values tied
    at the k-th place the lowest indices: the same answer as a stable sort, whatever topk does."""
    # one more than asked: a row whose (k+1)-th value equals its k-th has more points tied at the k-th
    # place than fit, and topk picked some of them arbitrarily (no chunk x N mask needed to tell)
    extra = int(k < block.shape[1])
    vals, idx = block.topk(k + extra, dim=1, largest=True, sorted=True)
    ambiguous = torch.nonzero(vals[:, k - 1] == vals[:, -1]).flatten() if extra else idx[:0, 0]
    vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    for r in ambiguous.tolist():
        v, i = torch.sort(block[r], descending=True, stable=True)
        vals[r], idx[r] = v[:k], i[:k]
    # equal values in index order: sort by index, then stably by value
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def nearest(bank: torch.Tensor, queries, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """For each query row (normalised here, ``chunk`` rows at a time, on the bank's device): its k
    most similar bank rows. (similarities float32 (Q, k), bank indices int64 (Q, k)), best first."""
    if k > len(bank):
        raise ValueError(f"k = {k} exceeds the bank's {len(bank)} rows")
    sims, idx = [], []
    for s in range(0, len(queries), chunk):
        q = normalised(queries[s:s + chunk], bank.dtype, bank.device)
        v, i = _topk_by_index(similarity_block(q, bank), k)
        sims.append(v.cpu().numpy())
        idx.append(i.cpu().numpy())
    return np.concatenate(sims), np.concatenate(idx)


def class_scores(sims: np.ndarray, neighbours: np.ndarray, bank_labels: np.ndarray, k: int,
                 temperature: float, n_classes: int) -> np.ndarray:
    """(Q, n_classes) float64: each class's sum of exp(s / T) over the first k neighbours, added in
    neighbour order (a fixed order: the same float sum on every run)."""
    w = np.exp(sims[:, :k].astype(np.float64) / temperature)
    labels = bank_labels[neighbours[:, :k]]
    scores = np.zeros((len(sims), n_classes))
    rows = np.arange(len(sims))
    for j in range(k):
        scores[rows, labels[:, j]] += w[:, j]
    return scores


def ranked_classes(scores: np.ndarray) -> np.ndarray:
    """Classes by score, best first; equal scores in class-index order."""
    return np.argsort(-scores, axis=1, kind="stable")


def knn_hits(sims: np.ndarray, neighbours: np.ndarray, bank_labels: np.ndarray, query_labels: np.ndarray,
             ks: list[int], temperature: float, n_classes: int, chunk: int = 4096) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """k -> (top-1 hit, top-5 hit) per query (bool arrays), from the sorted neighbour lists (each k:
    their first k columns)."""
    n = len(sims)
    hits = {k: (np.zeros(n, bool), np.zeros(n, bool)) for k in ks}
    for s in range(0, n, chunk):
        y = query_labels[s:s + chunk]
        for k in ks:
            ranked = ranked_classes(class_scores(sims[s:s + chunk], neighbours[s:s + chunk], bank_labels, k,
                                                 temperature, n_classes))
            hits[k][0][s:s + chunk] = ranked[:, 0] == y
            hits[k][1][s:s + chunk] = (ranked[:, :min(5, k)] == y[:, None]).any(1)
    return hits


def knn_accuracy(sims: np.ndarray, neighbours: np.ndarray, bank_labels: np.ndarray, query_labels: np.ndarray,
                 ks: list[int], temperature: float, n_classes: int, chunk: int = 4096) -> dict[int, tuple[float, float]]:
    """k -> (top-1 %, top-5 %)."""
    hits = knn_hits(sims, neighbours, bank_labels, query_labels, ks, temperature, n_classes, chunk)
    n = len(sims)
    return {k: (100.0 * int(t1.sum()) / n, 100.0 * int(t5.sum()) / n) for k, (t1, t5) in hits.items()}


# --------------------------------------------------------------------------------------------
# Features: the descriptor and the pooled last conv tap from one forward


def make_forward(model, pool):
    """x -> [descriptor, last tap average-pooled by ``pool`` and flattened], one trunk forward."""
    avg = nn.AvgPool2d(pool.kernel, stride=pool.stride, padding=pool.padding)
    if model.arch.family == "resnet":
        def forward(x):
            res5 = model.tap_outputs(x)[-1]
            return [torch.flatten(model.avgpool(res5), 1), avg(res5).flatten(1)]
        return forward
    tap = model.conv_relu_indices[model.arch.probe_taps[-1]]

    def forward(x):
        if model.sobel is not None:
            x = model.sobel(x)
        for i, m in enumerate(model.features):
            x = m(x)
            if i == tap:
                conv = avg(x).flatten(1)
        return [model.classifier[:-1](torch.flatten(x, 1)), conv]  # fc7 before its ReLU, as penultimate()

    return forward


# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_input_size_argument(p)
    d = DEFAULTS
    p.add_argument("--k", default=None, help="neighbour counts, comma-separated; one search for the largest "
                                             f"({default_help(*d['k'])})")
    p.add_argument("--temperature", type=argtypes.positive_float, default=None,
                   help=f"vote weight exp(similarity / T) ({default_help(*d['temperature'])})")
    p.add_argument("--chunk", type=argtypes.positive_int, default=None,
                   help=f"queries per similarity block: memory = bank + chunk x bank size x 4 bytes "
                        f"({default_help(*d['chunk'])})")
    p.add_argument("--bank-dtype", choices=("auto", "float32", "float16"), default="auto",
                   help="storage of the normalised bank on --device; similarities are float32 either way "
                        "(default: auto = float16 on CUDA, float32 on the CPU)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help=f"images per trunk forward ({default_help(*d['batch_size'])})")


def bank_dtype(args: argparse.Namespace) -> torch.dtype:
    choice = getattr(args, "bank_dtype", "auto")
    if choice == "auto":
        choice = "float16" if torch.device(args.device).type == "cuda" else "float32"
    return {"float16": torch.float16, "float32": torch.float32}[choice]


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    ks = positive_ints(proto["k"], "--k", "10,20,100,200")
    proto["k"] = ",".join(map(str, ks))
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = input_size(args, ckpt.meta)
        arch = ckpt.meta["arch"]
        root = dataset_dir(args, "classification", ("train", "val"))
        tf = eval_crops_transform(ckpt.meta, size, 1, loader_of(args))
        train = ImageFolder(root / "train", tf)
        val = ImageFolder(root / "val", tf)
        remap_targets(val, align_classes(train.classes, val.classes, str(root / "val")))
        data_fp = fingerprint(root)
    if ks[-1] > len(train):
        # before any forward: nothing is computed or cached for a run that cannot finish
        raise UserError(f"--k {proto['k']}: k = {ks[-1]} exceeds the bank, {root / 'train'} has {len(train)} images; "
                        f"give k <= {len(train)} or a larger train split")
    tap = layer_names(arch)[4]  # conv5; a ResNet's res5
    pool = next(p for p in pooling_for(arch, size) if p.layer == tap)
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    forward = make_forward(model, pool)
    names = (DESC, tap)
    base = {"kind": "knn", "checkpoint": training.checkpoint_identity(ckpt), "data": data_fp, "input_size": size,
            "pool": {"layer": pool.layer, "kernel": pool.kernel, "padding": pool.padding}, "transform": "center-crop",
            "dtype": "float16"}
    feats = {}
    with timer("features"):
        for split, ds in (("train", train), ("val", val)):
            x, y, hit = training.extract_cached(
                args, {**base, "split": split}, names,
                lambda ds=ds: training.loader(ds, proto["batch_size"], shuffle=False, workers=args.workers),
                forward, device=args.device, desc=f"features {split}", precision=precision_of(args))
            feats[split] = ({n: x[n].reshape(len(y), -1) for n in names}, y, hit)
    (tr, ytr, hit_tr), (va, yva, hit_va) = feats["train"], feats["val"]
    for n in names:
        for split, x in (("train", tr[n]), ("val", va[n])):
            if not np.isfinite(x).all():
                raise UserError(f"{args.checkpoint}: its {n} features of {root / split} are not finite "
                                "(NaN/inf weights, or overflow in float16); check the checkpoint")
    n_classes = len(train.classes)
    dtype = bank_dtype(args)
    metrics, dims = {}, {}
    outcomes = Outcomes(ids=sample_ids(val))
    for n in names:
        with timer(f"knn_{n}"):
            bank = normalised(tr[n], dtype, args.device)
            sims, nn_idx = nearest(bank, va[n], ks[-1], proto["chunk"])
            del bank
            hits = knn_hits(sims, nn_idx, ytr, yva, ks, proto["temperature"], n_classes)
        for k, (t1, t5) in hits.items():
            for name, hit in ((f"{n}_k{k}_top1", t1), (f"{n}_k{k}_top5", t5)):
                metrics[name] = 100.0 * int(hit.sum()) / len(hit)
                outcomes.hits(name, hit)
        dims[n] = int(tr[n].shape[1])
    desc = descriptor_block(arch)
    result = make_result(
        task="knn", variant={"dataset": "imagenet"}, checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "rule": "cosine similarity of L2-normalised features; k nearest vote exp(s/T); "
                                   "class score = sum of its voters' weights (DINO eval_knn.py)",
                  "bank": "train split", "queries": "val split", "one_search": f"top-{ks[-1]}, smaller k are its prefixes",
                  "ties": "equal similarity: lower bank index first; equal score: lower class index first",
                  "top5": "label among the min(5, k) best classes",
                  "features": {DESC: f"{desc['what']} ({desc['dim']}-d)",
                               tap: f"{tap} after its ReLU, AvgPool2d(kernel {pool.kernel}, stride {pool.stride}, "
                                    f"padding {pool.padding}) -> {pool.dim}-d (the linear probes' pooling)"},
                  "feature_dims": dims,
                  "feature_storage": "float16 (the feature cache), normalised in float32",
                  "bank_dtype": str(dtype).removeprefix("torch."), "similarity_dtype": "float32",
                  "vote_dtype": "float64", "transform": "centre crop", "input_size": size, "seed": args.seed},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp,
              "sizes": {"train": int(len(ytr)), "val": int(len(yva))}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"classes": n_classes, "feature_cache_hit": bool(hit_tr and hit_va)})
    return save_and_report(args, result, outcomes)


register(Task(
    name="knn",
    description="weighted k-NN (DINO: cosine, exp(s/0.07) votes, k = 10/20/100/200) on the frozen descriptor "
                "and the pooled last conv, train as the bank, val as queries",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("train", "val"), resources=Resources(1, 10, 96, 4 * 60),
    metrics=r"(desc|conv5|res5)_k[1-9][0-9]{0,8}_top[15]",
    table="knn",
))

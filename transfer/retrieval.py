"""dc-transfer retrieval: instance-level image retrieval on Oxford5k and Paris6k with R-MAC
descriptors of the last conv layer, as the original DeepCluster release's eval_retrieval.py scores it
(itself after Gordo et al.'s deep_retrieval package and Tolias et al.'s R-MAC).

Protocol, in order:

1. Each image is resized so that its longer side is ``--max-size`` pixels (bilinear), normalised
   with the checkpoint's mean/std, and run through the frozen trunk up to its last conv layer
   after the ReLU (AlexNet / VGG16: ``features`` without the final max-pool, Sobel first when the
   checkpoint has it; ResNets: res5). One scale: the release's ``--multires`` flag is parsed but
   never used, so its numbers are single-scale.
2. A query is its image resized the same way, then cropped to its box (scaled by the same ratio
   and rounded): the crop is taken after the resize, not resized again.
3. R-MAC: the feature map's regions on ``--levels`` scales (Tolias et al.'s grid:
   :func:`rmac_regions`), each max-pooled to a C-vector and L2-normalised; PCA-whitening
   (``--pca-dim`` dims, eigenvalues floored at 1e-5 of the largest) then L2 per region; the
   regions summed and L2-normalised.
4. The whitening is learned on the region vectors of the OTHER dataset's database images (Oxford's
   is fitted on Paris, Paris's on Oxford), as the release does.
5. Similarity = dot product of the descriptors; each query ranks every database image (its own
   photograph included). AP by the Oxford protocol's ``compute_ap``: good + ok are the positives,
   junk images are removed from the ranking, and the area under precision-recall is summed by the
   trapezoidal rule (:func:`compute_ap`). mAP = the mean over the queries, in percent.

Result: metrics ``oxford5k_map`` and ``paris6k_map``, each with its 95% bootstrap interval over its
queries; the per-query APs in details; selection ``final`` (nothing is chosen from data). Per-image
outcomes beside the result (:mod:`dcbench.outcomes`, kind ``mean``): each query's AP, item i being the
i-th query of each dataset (:func:`query_outcomes`; datasets with different numbers of queries get no
outcomes and no intervals, as ``details.outcomes`` says).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from dcbench import argtypes
from dcbench.buildings import RetrievalDataset, read_dataset
from dcbench.checkpoint import load_checkpoint, preprocessing
from dcbench.datasets import fingerprint, pil_loader
from dcbench.errors import DataError, UserError
from dcbench.outcomes import Outcomes
from dcbench.progress import progress
from dcbench.results import checkpoint_block, make_result
from dcbench.tasks import Resources, Task, register
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    dataset_dir,
    default_help,
    precision_of,
    resolve_protocol,
    save_and_report,
)
from dcbench.whitening import pca_fit

DEFAULTS = {
    "max_size": (1024, 160),  # eval_retrieval.py --S 1024; smoke: the embedded images' own longer side
    "levels": (3, 3),         # eval_retrieval.py --L 3
    "pca_dim": (512, 512),    # eval_retrieval.py --n_pca 512 (at most the conv width: AlexNet's conv5 is 256)
}
DATASETS = ("oxford5k", "paris6k")
EIGEN_FLOOR = 1e-5  # eval_retrieval.py PCA.fit: eigenvalues below 1e-5 of the largest are raised to it


# --------------------------------------------------------------------------------------------
# R-MAC


def rmac_regions(h: int, w: int, levels: int, overlap: float = 0.4) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of the R-MAC regions of an h x w feature map (Tolias et al. 2016).

    Level l has square regions of side floor(2 min(h, w) / (l + 1)), l per side of the shorter
    dimension and l + extra along the longer, their centres evenly spread from border to border;
    ``extra`` (1..6, 0 for a square map) is the count whose spacing makes neighbours overlap closest
    to ``overlap``. Positions are rounded and a region reaching past the border is moved back inside.
    A level whose side would be under one cell (maps smaller than its level) has no region."""
    short, long_ = min(h, w), max(h, w)
    steps = np.arange(2, 8, dtype=np.float64)
    spacing = (long_ - short) / (steps - 1)
    extra = int(np.argmin(np.abs((short * short - short * spacing) / (short * short) - overlap))) + 1
    extra_w = extra if w > h else 0
    extra_h = extra if h > w else 0
    out = []
    for level in range(1, levels + 1):
        side = np.floor(2 * short / (level + 1))
        if side < 1:
            continue
        half = np.floor(side / 2 - 1)

        def starts(length: int, n_extra: int, level: int = level, side: float = side, half: float = half) -> np.ndarray:
            n = level + n_extra
            step = (length - side) / (n - 1) if n > 1 else 0.0
            return np.floor(half + step * np.arange(n)) - half

        for y in starts(h, extra_h):
            for x in starts(w, extra_w):
                xi, yi, s = int(round(x)), int(round(y)), int(round(side))
                xi -= max(0, xi + s - w)
                yi -= max(0, yi + s - h)
                out.append((xi, yi, s, s))
    return out


def l2n(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def region_vectors(fmap: torch.Tensor, levels: int) -> torch.Tensor:
    """(regions, C) float32: each R-MAC region of a (C, H, W) map max-pooled, then L2-normalised."""
    _, h, w = fmap.shape
    regions = rmac_regions(h, w, levels)
    return l2n(torch.stack([fmap[:, y:y + s, x:x + t].amax(dim=(1, 2)) for x, y, t, s in regions]).float())


def fit_whitening(regions: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (C, dim) projection: PCA of the region vectors, each axis scaled by eigenvalue^-1/2,
    eigenvalues floored at EIGEN_FLOOR of the largest (the release's PCA)."""
    dim = max(1, min(dim, regions.shape[1], len(regions) - 1))
    mean, vecs, eig = pca_fit(regions, dim, eigen_power=0.0)  # unit eigenvectors; the scaling is ours
    eig = np.maximum(eig, eig[0] * EIGEN_FLOOR)
    return mean, (vecs * (eig ** -0.5)[None, :]).astype(np.float32)


def rmac_descriptors(per_image: list[np.ndarray], mean: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """(N, dim): each image's regions whitened, L2-normalised, summed, L2-normalised."""
    m, p = torch.from_numpy(mean), torch.from_numpy(proj)
    return np.stack([l2n(l2n((torch.from_numpy(r) - m) @ p).sum(0)).numpy() for r in per_image])


# --------------------------------------------------------------------------------------------
# The Oxford protocol's AP


def compute_ap(ranked: list[str], positives: frozenset[str] | set[str], junk: frozenset[str] | set[str]) -> float:
    """AP of one ranked list as compute_ap.cpp sums it: junk names skipped (junk wins over positive),
    then at every remaining rank the trapezoid between the previous and the current (recall,
    precision) point; recall counts all of ``positives``, ranked or not."""
    found = seen = 0
    ap, old_recall, old_precision = 0.0, 0.0, 1.0
    for name in ranked:
        if name in junk:
            continue
        found += name in positives
        seen += 1
        recall, precision = found / len(positives), found / seen
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
    return ap


def mean_ap(sim: np.ndarray, ds: RetrievalDataset) -> tuple[float, dict[str, float]]:
    """(mAP %, AP % per query) of the (queries, database) similarities; equal scores keep name order."""
    aps = {}
    for q, row in zip(ds.queries, sim):
        order = np.argsort(-row, kind="stable")
        aps[q.name] = 100.0 * compute_ap([ds.names[i] for i in order], q.positives, q.junk)
    return float(np.mean(list(aps.values()))), aps


OUTCOMES_NOTE = ("outcome i = (the i-th Oxford5k query, the i-th Paris6k query): one list of test items for "
                 "both metrics, each metric the mean AP of its own dataset's queries")


def query_outcomes(per_query: dict[str, dict[str, float]]) -> Outcomes | None:
    """Each query's AP (percent) as ``mean`` outcomes of its dataset's mAP.

    One outcomes file has one list of test items for every metric, and the two metrics rank two query
    sets; so item i is the pair of the i-th query of each dataset (both published sets have 55). A
    resample of the pairs is a resample of each dataset's queries, so each metric's interval is its own
    queries' bootstrap; two results on the same datasets resample the same pairs, so they compare
    pairwise. Datasets with different numbers of queries cannot be paired: no outcomes (None)."""
    lists = [list(per_query[name].items()) for name in DATASETS]
    if len({len(q) for q in lists}) != 1:
        return None
    outcomes = Outcomes(ids=["|".join(q for q, _ in pair) for pair in zip(*lists)])
    for name, queries in zip(DATASETS, lists):
        outcomes.mean(f"{name}_map", [ap for _, ap in queries])
    return outcomes


# --------------------------------------------------------------------------------------------
# Features


def conv_map_forward(model):
    """x -> the last conv layer's map after its ReLU (AlexNet/VGG16: before the last max-pool;
    ResNets: res5)."""
    if model.arch.family == "resnet":
        return model.trunk
    layers = model.features[:model.conv_relu_indices[-1] + 1]

    def forward(x):
        if model.sobel is not None:
            x = model.sobel(x)
        return layers(x)

    return forward


class Images(torch.utils.data.Dataset):
    """Database images (box None) or query crops, resized so the longer side is ``max_size``."""

    def __init__(self, paths: list[str], boxes: list | None, max_size: int, meta: dict):
        self.paths, self.boxes, self.max_size = paths, boxes, max_size
        pre = preprocessing(meta)
        self.mean, self.std = list(pre.mean), list(pre.std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            im = pil_loader(self.paths[i])
        except Exception:  # noqa: BLE001 - the header parsed at reading time; the pixels do not decode
            raise DataError(f"image {self.paths[i]} does not decode; replace it or remove it (and its "
                            "mentions in the ground-truth lists)") from None
        ratio = self.max_size / max(im.size)
        w, h = (max(1, int(round(v * ratio))) for v in im.size)
        x = TF.normalize(TF.to_tensor(im.resize((w, h), Image.BILINEAR)), self.mean, self.std)
        if self.boxes is not None:
            x1, y1, x2, y2 = (int(round(v * ratio)) for v in self.boxes[i])
            x = x[:, y1:y2, x1:x2]
        return x, i


def region_sets(model, forward, images: Images, args, desc: str, what: list[str]) -> list[np.ndarray]:
    """Per image, its (regions, C) float32 R-MAC region vectors (before whitening)."""
    out = []
    loader = torch.utils.data.DataLoader(images, batch_size=1, shuffle=False, num_workers=args.workers,
                                         collate_fn=lambda b: b[0])
    with torch.no_grad():
        for x, i in progress(loader, desc=desc):
            try:
                if min(x.shape[1:]) < 1:
                    raise RuntimeError("empty crop")
                with training.amp(precision_of(args), args.device):
                    fmap = forward(x[None].to(args.device))[0]
                if min(fmap.shape[1:]) < 1:
                    raise RuntimeError("empty map")
            except RuntimeError as e:
                if "memory" in str(e).lower():
                    raise
                raise UserError(f"{what[i]}: at --max-size {images.max_size} its {tuple(x.shape[1:])} input is too "
                                f"small for the {model.arch.name} trunk; raise --max-size") from None
            out.append(region_vectors(fmap.float().cpu(), args.levels_).numpy())
    return out


# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    p.add_argument("--max-size", type=argtypes.positive_int, default=None,
                   help=f"longer image side in pixels before the trunk ({default_help(*d['max_size'])})")
    p.add_argument("--levels", type=argtypes.positive_int, default=None,
                   help=f"R-MAC region scales ({default_help(*d['levels'])})")
    p.add_argument("--pca-dim", type=argtypes.positive_int, default=None,
                   help="PCA-whitening dimensions, at most the conv width and the region count minus one "
                        f"({default_help(*d['pca_dim'])})")


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    if proto["levels"] > 10:
        raise UserError(f"--levels {proto['levels']}: R-MAC uses a few scales (3 in the release); give at most 10")
    args.levels_ = proto["levels"]
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        root = dataset_dir(args, "retrieval", DATASETS)
        data = {name: read_dataset(root / name, name) for name in DATASETS}  # every file checked before any forward
        data_fp = fingerprint(root)
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    forward = conv_map_forward(model)
    db, queries = {}, {}
    with timer("features"):
        for name, ds in data.items():
            db[name] = region_sets(model, forward, Images(ds.paths, None, proto["max_size"], ckpt.meta), args,
                                   f"{name} database", ds.paths)
            qfiles = [str(ds.root / f"{q.name}_query.txt") for q in ds.queries]
            queries[name] = region_sets(
                model, forward, Images([ds.paths[q.image] for q in ds.queries], [q.box for q in ds.queries],
                                       proto["max_size"], ckpt.meta), args, f"{name} queries", qfiles)
    for name in DATASETS:
        if not all(np.isfinite(r).all() for r in db[name] + queries[name]):
            raise UserError(f"{args.checkpoint}: its conv features of {root / name} are not finite "
                            "(NaN/inf weights, or overflow in bf16); check the checkpoint")
    metrics, per_query, whitening = {}, {}, {}
    with timer("search"):
        for name in DATASETS:
            other = DATASETS[1 - DATASETS.index(name)]
            mean, proj = fit_whitening(np.concatenate(db[other]), proto["pca_dim"])
            d = rmac_descriptors(db[name], mean, proj)
            q = rmac_descriptors(queries[name], mean, proj)
            metrics[f"{name}_map"], per_query[name] = mean_ap(q @ d.T, data[name])
            whitening[name] = {"fitted_on": other, "regions": int(sum(len(r) for r in db[other])),
                               "dims": int(proj.shape[1])}
    outcomes = query_outcomes(per_query)
    result = make_result(
        task="retrieval", variant={"dataset": "oxford5k+paris6k"}, checkpoint=checkpoint_block(ckpt),
        metrics=metrics,
        protocol={**proto, "descriptor": "R-MAC of the last conv layer after its ReLU (res5 for ResNets): regions "
                                         "max-pooled, L2, PCA-whitening, L2, summed, L2 (eval_retrieval.py)",
                  "scales": [proto["max_size"]], "query": "resized with its image, then cropped to its box",
                  "whitening": "PCA fitted on the other dataset's database regions, eigenvalues^-1/2, "
                               f"floored at {EIGEN_FLOOR:g} of the largest",
                  "ap": "compute_ap.cpp: good+ok positive, junk removed from the ranking, trapezoidal rule",
                  "ties": "equal similarity: database images in name order", "seed": args.seed},
        data={"name": "oxford5k+paris6k", "root": str(root), "fingerprint": data_fp,
              "sizes": {**{f"{n}_images": len(ds.names) for n, ds in data.items()},
                        **{f"{n}_queries": len(ds.queries) for n, ds in data.items()}}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"per_query_ap": per_query, "whitening": whitening,
                 "left_out_images": {n: len(ds.skipped) for n, ds in data.items()},
                 "outcomes": OUTCOMES_NOTE if outcomes is not None else
                 "none: the datasets have different numbers of queries, which one outcomes file cannot pair"})
    return save_and_report(args, result, outcomes)


register(Task(
    name="retrieval",
    description="instance retrieval on Oxford5k and Paris6k (mAP): R-MAC of the frozen last conv layer, "
                "PCA-whitening learned on the other dataset (DeepCluster's eval_retrieval.py)",
    add_arguments=add_arguments, run=run,
    dataset="retrieval", needs=DATASETS, resources=Resources(1, 8, 32, 2 * 60),
    metrics=r"(oxford5k|paris6k)_map",
    table="retrieval",
))

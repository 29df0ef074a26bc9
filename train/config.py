"""Training configuration: one dataclass, the five presets of thesis Table 5.1, two scales.

Every default names its source. ``full`` is the thesis's setting; ``smoke`` is sized for the
embedded data (96-pixel images, ~10 classes) so that a run ends in minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from dcbench.errors import UserError
from dcbench.imageload import CROPS, FLIPS, LOADERS
from dcbench.precision import PRECISIONS
from dcbench.resources import MAX_INPUT_SIZE, MAX_SEED

FLOAT32_MAX = 3.4e38  # torch applies hyperparameters in float32: a larger value overflows there
IMAGENET_SIZE = 1_281_167  # images in ImageNet-1k train (thesis §3.3)


@dataclass
class TrainConfig:
    # --- what and where
    data: str | None = None  # ImageFolder root; None = the embedded data (DESIGN §8)
    out: str = "dc-train-out"  # output directory (checkpoint/, snapshots/, log.jsonl, ...)
    preset: str = "km-ImNet-Sob"  # thesis Table 5.1 model name
    scale: str = "smoke"  # smoke = embedded-data sizes, full = thesis sizes
    # --- network (thesis §3.3)
    arch: str = "alexnet"  # AlexNet with batch norm, LRN removed (thesis §3.3)
    sobel: bool = True  # Sobel input (thesis §3.3, Table 5.1)
    input_size: int = 224  # RandomResizedCrop / centre-crop size (thesis §3.3: 224*224 crops)
    crop_min_scale: float = 0.08  # RandomResizedCrop's smallest area fraction (torchvision default, original code)
    # --- clustering (thesis §3.3, §4.6; original DeepCluster code)
    clustering: str = "kmeans"  # kmeans | pic (Table 5.1)
    k: int = 10_000  # k-means clusters (Table 5.1: 10K-means)
    pca_dim: int = 256  # PCA-whitening output dims (original code: faiss.PCAMatrix(d, 256, -0.5))
    kmeans_iters: int = 20  # original code: clus.niter = 20
    max_points_per_centroid: int = 10_000_000  # original code: no subsampling in k-means training
    pic_knn: int = 5  # 5-NN graph (thesis §4.6, eq. 4.1)
    pic_sigma: float = 0.2  # Gaussian kernel bandwidth (original code's PIC default)
    pic_alpha: float = 0.001  # power-iteration damping (original code's PIC default)
    pic_iters: int = 200  # power iterations (original code's PIC)
    pic_singletons: bool = True  # redistribute singletons to the nearest non-singleton's cluster (thesis §4.6)
    # --- optimisation (thesis §3.3, Table 5.1)
    epochs: int = 500  # 500 on ImageNet, 167 on YFCC100m (thesis §5)
    lr: float = 0.02  # Table 5.1
    weight_decay: float = 1e-5  # Table 5.1
    momentum: float = 0.9  # thesis §3.3
    top_momentum: float = 0.9  # thesis §3.3 (momentum 0.9 throughout); the original code's top layer used 0
    batch_size: int = 256  # thesis §3.3
    steps_per_epoch: int | None = None  # None = epoch_multiplier * |X~| // batch (thesis §3.3)
    epoch_multiplier: int = 1  # epoch length in passes over X~ (the YFCC presets set steps_per_epoch instead)
    sampler: str = "uniform"  # uniform over clusters (thesis §3.3) | proportional (to cluster size)
    sgt: int = 0  # >0: update only N rows of the last layer per batch (thesis §4.7, SGT 256/512)
    # --- Algorithm 2 (thesis §4.8)
    pool_size: int | None = None  # |X|: None = the whole dataset
    subset_size: int | None = None  # |X~| drawn from the pool each epoch; None = the whole pool
    # --- run
    seed: int = 31  # original code's default seed
    workers: int = 4  # DataLoader workers (original code: 4)
    snapshot_every: int = 50  # keep a snapshot every N epochs (0 = never)
    device: str = "auto"  # auto | cpu | cuda
    # rank 0 alone runs PCA, clustering and the checkpoint while the others wait: can pass NCCL's 10-min default
    dist_timeout_min: int = 120
    faiss_gpu: bool = True  # use a faiss GPU index when CUDA and faiss-gpu are present (DESIGN §9)
    # --- GPU scale (issue 11). "auto" is resolved when the run starts and recorded resolved.
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 (autocast + channels_last)
    cluster_engine: str = "auto"  # auto (torch on CUDA unless faiss-gpu is installed; faiss on CPU) | faiss | torch
    # points per block in the torch engine's PCA, k-means and k-NN graph (lower it on GPU OOM); None =
    # BLOCK_ROWS for PCA and k-means, and for the k-NN graph as many as the free memory allows
    cluster_chunk: int | None = None
    loader: str = "draft"  # draft (PIL reduced-size decode) | torchvision (the original path) | nvjpeg (GPU decode)
    # deterministic cuDNN/CUDA kernels (bit-identical GPU resumes); off as in the original code, which is faster
    deterministic: bool = False
    prefetch: int = 4  # batches each DataLoader worker keeps ready
    diag_sample: int = 20_000  # diagnostics (NMI with labels, 10-NN ratio) on this many images (0 = all)
    # --- chapter-4 ablations (issue 15). Each default is the thesis's final choice (today's behaviour).
    descriptor: str = "pre-relu"  # cluster the penultimate FC before its ReLU (thesis §3.3, §4.2, Table 4.1) | post-relu
    head: str = "full"  # full = FC-ReLU-FC-ReLU-FC (thesis §4.2) | 2fc = FC-ReLU-FC | no-relu = FC-ReLU-FC-FC (Fig 4.2)
    crop: str = "random-sized"  # RandomResizedCrop (thesis §3.3, §4.3) | random (fixed size, random place) | central
    flip: str = "horizontal"  # flip with p = 0.5 (thesis §3.3, §4.3) | vertical | none (Figure 4.4)
    diag_every: int = 0  # also log the 10-NN ratio every N updates within an epoch (thesis §4.4, Fig 4.5); 0 = never
    targets: str = "clusters"  # clusters (DeepCluster) | labels (supervised, thesis §4.7) | fixed-clusters (Fig 4.8b)
    val_data: str | None = None  # --targets labels: val ImageFolder for centre-crop top-1; None = the train root's sibling val/
    quiet: bool = False  # no progress bars
    extra: dict = field(default_factory=dict)  # free-form notes recorded with the run

    @property
    def block_rows(self) -> int:
        """Rows per block of PCA and k-means, whose blocks are chunk x (features or k) wide."""
        return self.cluster_chunk or BLOCK_ROWS

    def validate(self) -> None:
        if self.preset not in PRESETS and self.preset not in SUPERVISED_PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose one of "
                            f"{', '.join([*PRESETS, *SUPERVISED_PRESETS])} (--preset)")
        if self.scale not in ("smoke", "full"):
            raise UserError(f"--scale must be smoke or full, not {self.scale!r}")
        if self.clustering not in ("kmeans", "pic"):
            raise UserError(f"--clustering must be kmeans or pic, not {self.clustering!r}")
        if self.sampler not in ("uniform", "proportional"):
            raise UserError(f"--sampler must be uniform or proportional, not {self.sampler!r}")
        for f in dataclasses.fields(self):  # NaN passes every "<" check; inf passes "> 0"
            v = getattr(self, f.name)
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                raise UserError(f"--{f.name.replace('_', '-')} must be a finite number of float32 range, got {v}"
                                .replace("--weight-decay", "--wd"))
        if not (0 <= self.seed <= MAX_SEED):
            raise UserError(f"--seed must be in [0, {MAX_SEED}], got {self.seed}")
        if not (32 <= self.input_size <= MAX_INPUT_SIZE):
            raise UserError(f"--input-size must be in [32, {MAX_INPUT_SIZE}] pixels (the thesis: 224), "
                            f"got {self.input_size}")
        checks = [("--epochs", self.epochs, 1), ("--batch-size", self.batch_size, 1), ("--k", self.k, 2),
                  ("--pca-dim", self.pca_dim, 1), ("--kmeans-iters", self.kmeans_iters, 1),
                  ("--epoch-multiplier", self.epoch_multiplier, 1), ("--workers", self.workers, 0),
                  ("--sgt", self.sgt, 0), ("--snapshot-every", self.snapshot_every, 0),
                  ("--pic-knn", self.pic_knn, 1), ("--pic-iters", self.pic_iters, 1),
                  ("--dist-timeout-min", self.dist_timeout_min, 1)]
        for flag, v, lo in checks:
            if v < lo:
                raise UserError(f"{flag} must be at least {lo}, got {v}")
        for flag, v in (("--steps-per-epoch", self.steps_per_epoch), ("--pool-size", self.pool_size),
                        ("--subset-size", self.subset_size)):
            if v is not None and v < 1:
                raise UserError(f"{flag} must be positive, got {v}")
        if self.pool_size and self.subset_size and self.subset_size > self.pool_size:
            raise UserError(f"--subset-size {self.subset_size} is larger than --pool-size {self.pool_size}")
        if not (self.lr > 0):
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not (0 < self.crop_min_scale <= 1):
            raise UserError(f"--crop-min-scale must be in (0, 1], got {self.crop_min_scale}")
        if self.weight_decay < 0 or not (0 <= self.momentum < 1) or not (0 <= self.top_momentum < 1):
            raise UserError("--wd must be >= 0 and --momentum in [0, 1)")
        if self.pic_sigma <= 0 or not (0 < self.pic_alpha <= 1):
            raise UserError("--pic-sigma must be > 0 and --pic-alpha in (0, 1]")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda, not {self.device!r}")
        for flag, v, allowed in (("--precision", self.precision, PRECISIONS),
                                 ("--cluster-engine", self.cluster_engine, CLUSTER_ENGINES),
                                 ("--loader", self.loader, LOADERS)):
            if v not in allowed:
                raise UserError(f"{flag} must be one of {', '.join(allowed)}, not {v!r}")
        for flag, v, allowed in (("--descriptor", self.descriptor, DESCRIPTORS), ("--head", self.head, HEADS),
                                 ("--crop", self.crop, CROPS), ("--flip", self.flip, FLIPS),
                                 ("--targets", self.targets, TARGETS)):
            if v not in allowed:
                raise UserError(f"{flag} must be one of {', '.join(allowed)}, not {v!r}")
        if (self.head, self.descriptor) != ("full", "pre-relu"):
            from dcbench.models import get_architecture

            if get_architecture(self.arch).family != "convfc":
                raise UserError(f"--head {self.head} --descriptor {self.descriptor}: these choose among fc6/fc7 "
                                f"variants, and {self.arch} has no fc6/fc7 (it clusters its pooled res5); "
                                "drop --head/--descriptor, or use --arch alexnet or vgg16")
        for flag, v, lo in (("--cluster-chunk", self.cluster_chunk, 1), ("--prefetch", self.prefetch, 1),
                            ("--diag-sample", self.diag_sample, 0), ("--diag-every", self.diag_every, 0)):
            if v is not None and v < lo:
                raise UserError(f"{flag} must be at least {lo}, got {v}")


CLUSTER_ENGINES = ("auto", "faiss", "torch")
BLOCK_ROWS = 16384
DESCRIPTORS = ("pre-relu", "post-relu")
HEADS = ("full", "2fc", "no-relu")
TARGETS = ("clusters", "labels", "fixed-clusters")


# YFCC100m models train 167 epochs, each 3x as long, to get as many updates as ImageNet's 500 (thesis
# §5): 500 epochs x 5,004 steps (1,281,167 images / batch 256) = 2,502,000. 3 x |X~| / 256 gives that
# for neither YFCC set (1M: 167 x 11,718 = 1.96M, -22%; 1.2M subsets: 167 x 14,062 = 2.35M, -6%), so
# the step count is set directly: 167 x 14,982 = 2,501,994 updates.
IMAGENET_STEPS_PER_EPOCH = 1_281_167 // 256  # 5,004
IMAGENET_UPDATES = 500 * IMAGENET_STEPS_PER_EPOCH
YFCC_EPOCHS = 167
YFCC_STEPS_PER_EPOCH = round(IMAGENET_UPDATES / YFCC_EPOCHS)  # 14,982

# Thesis Table 5.1 (reference/thesis_presets.csv) and §3.3/§4.8 at full scale.
PRESETS: dict[str, dict] = {
    "PIC-ImNet-Sob": dict(clustering="pic", sobel=True, lr=0.05, weight_decay=1e-5, epochs=500),
    "km-ImNet-Sob": dict(clustering="kmeans", k=10_000, sobel=True, lr=0.02, weight_decay=1e-5, epochs=500),
    "km-ImNet-RGB": dict(clustering="kmeans", k=1_000, sobel=False, lr=0.02, weight_decay=1e-6, epochs=500),
    # YFCC100m: 167 epochs with ImageNet's 500 epochs' worth of updates (above); |X~| = 1M / 1.2M.
    "km-fl1M-Sob": dict(clustering="kmeans", k=10_000, sobel=True, lr=0.02, weight_decay=1e-5, epochs=YFCC_EPOCHS,
                        steps_per_epoch=YFCC_STEPS_PER_EPOCH, pool_size=1_000_000, subset_size=None),
    "km-fl2M-Sob": dict(clustering="kmeans", k=10_000, sobel=True, lr=0.02, weight_decay=1e-5, epochs=YFCC_EPOCHS,
                        steps_per_epoch=YFCC_STEPS_PER_EPOCH, pool_size=2_000_000, subset_size=1_200_000),
    # Thesis §4.5, Figure 4.6 (a) Sobel / (b) RGB: ResNet-101, PIC, ImageNet, 50 epochs. The thesis gives
    # no lr / weight decay for these runs: PIC-ImNet-Sob's (our choice).
    "PIC-ImNet-Sob-R101": dict(arch="resnet101", clustering="pic", sobel=True, lr=0.05, weight_decay=1e-5, epochs=50),
    "PIC-ImNet-RGB-R101": dict(arch="resnet101", clustering="pic", sobel=False, lr=0.05, weight_decay=1e-5,
                               epochs=50),
}
# The supervised reference (thesis §4.7, Table 4.2, Figure 4.8a): the same Sobel AlexNet on the
# ImageNet labels for 90 epochs, centre-crop top-1 on val. The thesis gives no learning rate for
# it: lr and weight decay are km-ImNet-Sob's (our choice), held constant like every dc-train run.
SUPERVISED_PRESETS: dict[str, dict] = {
    "sup-ImNet-Sob": dict(targets="labels", clustering="kmeans", k=1_000, sobel=True, lr=0.02, weight_decay=1e-5,
                          epochs=90),
}

# Smoke scale: the embedded classification set (~600 images of 96 px, 10 classes at `smoke`).
# Same algorithm, sizes shrunk: k ~ 5x the classes for the 10K presets (ImageNet: 10x), 1x for 1K;
# 64-px crops of the 96-px images; batch 64; enough steps per epoch for the fresh top layer to
# move the trunk; no pool (the embedded set is small). PCA to 32 dims, not 256: whitening n points
# to nearly n-1 dims makes them all equidistant (a regular simplex), and k-means on that is random;
# the thesis's 256 dims are for 1.2M images.
SMOKE: dict = dict(input_size=64, batch_size=64, epochs=5, steps_per_epoch=30, workers=0, pca_dim=32,
                   snapshot_every=0, pool_size=None, subset_size=None, epoch_multiplier=1)
SMOKE_K = {10_000: 50, 1_000: 10}


def preset_values(preset: str, scale: str) -> dict:
    presets = {**PRESETS, **SUPERVISED_PRESETS}
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(presets)} (--preset)")
    values = dict(presets[preset])
    if scale == "smoke":
        values.update(SMOKE)
        if "k" in values:
            values["k"] = SMOKE_K[values["k"]]
    return values


def make_config(preset: str = "km-ImNet-Sob", scale: str = "smoke", **overrides) -> TrainConfig:
    """Preset + scale defaults, then explicit overrides (None values are ignored)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise UserError(f"unknown config field(s): {', '.join(bad)}")
    values = preset_values(preset, scale)
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(preset=preset, scale=scale, **values)
    cfg.validate()
    return cfg


# Fields that may change between a run and its resumption without changing the result.
# The engine, loader and diagnostic knobs change how (and how fast), not what, is computed; like
# --device they may differ in the last bits. --precision changes the training itself, so it may not.
RESUME_FREE = {"out", "epochs", "workers", "quiet", "snapshot_every", "device", "faiss_gpu", "data", "extra",
               "dist_timeout_min", "deterministic",
               "cluster_engine", "cluster_chunk", "loader", "prefetch", "diag_sample", "diag_every", "val_data"}
# What a run saved before a field existed did, for resuming it (issue 11 added --precision, issue 15
# the chapter-4 options).
LEGACY_DEFAULTS = {"precision": "fp32", "descriptor": "pre-relu", "head": "full", "crop": "random-sized",
                   "flip": "horizontal", "targets": "clusters"}

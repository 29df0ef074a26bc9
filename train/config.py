"""Training configuration: one dataclass, the five presets of thesis Table 5.1, two scales.

Every default names its source. ``full`` is the thesis's setting; ``smoke`` is sized for the
embedded data (96-pixel images, ~10 classes) so that a run ends in minutes on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from dcbench.choices import ARCHS, CROPS, FLIPS, LOADERS, MAX_INPUT_SIZE, MAX_SEED, PRECISIONS
from dcbench.errors import UserError

FLOAT32_MAX = 3.4e38  # torch applies hyperparameters in float32: a larger value overflows there
IMAGENET_SIZE = 1_281_167  # images in ImageNet-1k train (thesis §3.3)


CHAPTER4 = "chapter-4 comparisons (thesis §4.2-4.7; each default is the thesis's choice)"


def option(default=None, help: str | None = None, *, kind: str | None = None, flag: str | None = None,  # noqa: A002
           choices: tuple | None = None, minimum: float | None = None, positive: bool = False,
           group: str | None = None, metavar: str | None = None, shown: str | None = None):
    """A :class:`TrainConfig` field with its ``dc-train`` flag, declared once.

    ``help`` makes it a flag (``flag``, default ``--field-name``); ``kind`` is int/float/str for a
    None default, or for a bool: ``switch`` (``--x`` turns it on), ``negated`` (``--no-x`` turns
    it off), ``either`` (``--x``/``--no-x``). ``choices``, ``minimum`` and ``positive`` are checked
    by :meth:`TrainConfig.validate`, for the flag and for a config built in Python alike."""
    meta = {"help": help, "kind": kind or type(default).__name__, "flag": flag, "choices": choices,
            "minimum": minimum, "positive": positive, "group": group, "metavar": metavar, "shown": shown}
    return field(default=default, metadata={"dc_train": meta})


CLUSTER_ENGINES = ("auto", "faiss", "torch")
BLOCK_ROWS = 16384
DESCRIPTORS = ("pre-relu", "post-relu")
HEADS = ("full", "2fc", "no-relu")
TARGETS = ("clusters", "labels", "fixed-clusters")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    # --- what and where (their flags are dc-train's own, not preset overrides)
    data: str | None = None  # ImageFolder root; None = the embedded data, made once and cached
    out: str = "dc-train-out"  # output directory (checkpoint/, snapshots/, log.jsonl, ...)
    preset: str = "km-ImNet-Sob"  # thesis Table 5.1 model name
    scale: str = "smoke"  # smoke = embedded-data sizes, full = thesis sizes
    # --- network (thesis §3.3)
    arch: str = option("alexnet", "network architecture (dcbench.models registry)",
                       choices=ARCHS)  # AlexNet with batch norm, LRN removed (thesis §3.3)
    sobel: bool = option(True, "Sobel input layer", kind="either")  # thesis §3.3, Table 5.1
    input_size: int = option(224, "training crop and centre-crop size in pixels")  # thesis §3.3: 224*224 crops
    # torchvision default, original code
    crop_min_scale: float = option(0.08, "RandomResizedCrop's smallest area fraction")
    # --- clustering (thesis §3.3, §4.6; original DeepCluster code)
    clustering: str = option("kmeans", "k-means (faiss) or Power Iteration Clustering",
                             choices=("kmeans", "pic"))  # Table 5.1
    k: int = option(10_000, "number of k-means clusters", minimum=2)  # Table 5.1: 10K-means
    # original code: faiss.PCAMatrix(d, 256, -0.5)
    pca_dim: int = option(256, "PCA-whitening dimensions before clustering", minimum=1)
    kmeans_iters: int = option(20, "k-means iterations", minimum=1)  # original code: clus.niter = 20
    max_points_per_centroid: int = 10_000_000  # original code: no subsampling in k-means training
    pic_knn: int = option(5, "PIC: neighbours per node of the k-NN graph", minimum=1)  # thesis §4.6, eq. 4.1
    pic_sigma: float = option(0.2, "PIC: Gaussian kernel bandwidth")  # original code's PIC default
    pic_alpha: float = option(0.001, "PIC: power-iteration damping")  # original code's PIC default
    pic_iters: int = option(200, "PIC: power iterations", minimum=1)  # original code's PIC
    pic_singletons: bool = True  # redistribute singletons to the nearest non-singleton's cluster (thesis §4.6)
    # --- optimisation (thesis §3.3, Table 5.1)
    epochs: int = option(500, "epochs, one clustering each", minimum=1)  # 500 on ImageNet, 167 on YFCC100m (thesis §5)
    lr: float = option(0.02, "SGD learning rate (constant)")  # Table 5.1
    weight_decay: float = option(1e-5, "weight decay", flag="--wd")  # Table 5.1
    momentum: float = option(0.9, "SGD momentum")  # thesis §3.3
    # thesis §3.3 (momentum 0.9 throughout); the original code's top layer used 0
    top_momentum: float = option(0.9, "momentum of the per-epoch top layer (original code: 0)")
    batch_size: int = option(256, "images per SGD step", minimum=1)  # thesis §3.3
    # None = epoch_multiplier * |X~| // batch (thesis §3.3)
    steps_per_epoch: int | None = option(None, "updates between two clusterings", kind="int", positive=True)
    # epoch length in passes over X~ (the YFCC presets set steps_per_epoch instead)
    epoch_multiplier: int = option(1, "epoch length in |X~|/batch units (YFCC: 3)", minimum=1)
    sampler: str = option("uniform", "batches uniform over clusters (thesis) or proportional to cluster size",
                          choices=("uniform", "proportional"))  # uniform over clusters (thesis §3.3)
    # >0: update only N rows of the last layer per batch (thesis §4.7, SGT 256/512)
    sgt: int = option(0, "SGT: update only N last-layer rows per batch (0 = all)", minimum=0)
    # --- Algorithm 2 (thesis §4.8)
    pool_size: int | None = option(None, "Algorithm 2: size of the fixed pool X", kind="int",
                                   positive=True)  # |X|: None = the whole dataset
    subset_size: int | None = option(None, "Algorithm 2: |X~| drawn from the pool each epoch", kind="int",
                                     positive=True)  # None = the whole pool
    # --- run
    seed: int = option(31, "random seed (a fixed seed gives the same weights on the CPU)")  # original code's default
    workers: int = option(4, "DataLoader worker processes", minimum=0)  # original code: 4
    snapshot_every: int = option(50, "keep snapshots/epoch_NNNN every N epochs (0 = never)", minimum=0)
    device: str = option("auto", "auto = cuda when available, else cpu", choices=DEVICES)
    # rank 0 alone runs PCA, clustering and the checkpoint while the others wait: can pass NCCL's 10-min default
    dist_timeout_min: int = option(120, "under torchrun: minutes a rank waits for the others (rank 0 clusters "
                                        "alone) before failing", minimum=1, metavar="MIN")
    # faiss's GPU index when CUDA and faiss-gpu are both present: the original code clusters on the GPU
    faiss_gpu: bool = option(True, "keep faiss on the CPU even when CUDA and faiss-gpu are present", kind="negated",
                             flag="--no-faiss-gpu", shown="faiss on the GPU when both are present")
    # --- GPU scale. "auto" is resolved when the run starts and recorded resolved.
    precision: str = option("auto", "fp32, or bf16 autocast + channels_last; auto = bf16 on CUDA, fp32 on the CPU",
                            choices=PRECISIONS)  # the thesis trained in fp32; bf16 is this project's GPU default
    cluster_engine: str = option("auto", "PCA + k-means engine: faiss (CPU, or faiss-gpu), torch (either device); "
                                         "auto = torch on CUDA unless faiss-gpu is installed, faiss on the CPU",
                                 choices=CLUSTER_ENGINES)  # the original code: faiss
    # points per block in the torch engine's PCA, k-means and k-NN graph (lower it on GPU OOM); None =
    # BLOCK_ROWS for PCA and k-means, and for the k-NN graph as many as the free memory allows
    cluster_chunk: int | None = option(
        None, "points per block in the torch engine's PCA, k-means and k-NN graph; lower it if the GPU runs out "
              "of memory", kind="int", minimum=1,
        shown=f"{BLOCK_ROWS:,} for PCA and k-means, the k-NN graph's from the free memory")
    loader: str = option("draft", "draft = PIL decoding at reduced size when the crop allows (same crops as "
                                  "torchvision), torchvision = full decode, nvjpeg = batched decode + crop on the "
                                  "GPU (CUDA only)", choices=LOADERS)  # draft: the same crops as the original's
    # deterministic cuDNN/CUDA kernels (bit-identical GPU resumes); off as in the original code, which is faster
    deterministic: bool = option(False, "deterministic cuDNN and CUDA kernels, so a resumed GPU run repeats the "
                                        "same numbers (slower; the CPU is deterministic without it)", kind="switch")
    prefetch: int = option(4, "batches each DataLoader worker prepares ahead", minimum=1)  # torch's default is 2
    # diagnostics (NMI with labels, 10-NN ratio) on this many images (0 = all)
    diag_sample: int = option(20_000, "NMI-with-labels and 10-NN ratio on a fixed random sample of this many "
                                      "images (0 = all)", minimum=0)
    # --- chapter-4 ablations. Each default is the thesis's final choice.
    # cluster the penultimate FC before its ReLU (thesis §3.3, §4.2, Table 4.1)
    descriptor: str = option("pre-relu", "cluster the penultimate FC's output before or after its ReLU",
                             choices=DESCRIPTORS, group=CHAPTER4)
    # full = FC-ReLU-FC-ReLU-FC (thesis §4.2) | 2fc = FC-ReLU-FC | no-relu = FC-ReLU-FC-FC (Fig 4.2)
    head: str = option("full", "full = FC-ReLU-FC-ReLU-FC, 2fc = FC-ReLU-FC (fc7 unused, left at its "
                               "initialisation), no-relu = FC-ReLU-FC-FC (fc7 feeds the top layer without a ReLU)",
                       choices=HEADS, group=CHAPTER4)
    # RandomResizedCrop (thesis §3.3, §4.3) | random (fixed size, random place) | central
    crop: str = option("random-sized", "training crop: random-sized (RandomResizedCrop), random (fixed size, "
                                       "random place), central", choices=CROPS, group=CHAPTER4)
    # flip with p = 0.5 (thesis §3.3, §4.3) | vertical | none (Figure 4.4)
    flip: str = option("horizontal", "training flip, with probability 0.5", choices=FLIPS, group=CHAPTER4)
    # also log the 10-NN ratio every N updates within an epoch (thesis §4.4, Fig 4.5); 0 = never
    diag_every: int = option(0, "also log the 10-NN ratio every N updates within an epoch (0 = per epoch)",
                             minimum=0, metavar="N", group=CHAPTER4)
    # clusters (DeepCluster) | labels (supervised, thesis §4.7) | fixed-clusters (Fig 4.8b)
    targets: str = option("clusters", "clusters (DeepCluster), labels (the folder's classes: supervised), "
                                      "fixed-clusters (clustered once, then held)", choices=TARGETS, group=CHAPTER4)
    # --targets labels: val ImageFolder for centre-crop top-1; None = the train root's sibling val/
    val_data: str | None = option(None, "--targets labels: ImageFolder scored each epoch, centre-crop top-1",
                                  kind="str", metavar="DIR", group=CHAPTER4)
    quiet: bool = option(False, "no progress bars or epoch lines", kind="switch")
    extra: dict = field(default_factory=dict)  # free-form notes recorded with the run

    @property
    def block_rows(self) -> int:
        """Rows per block of PCA and k-means, whose blocks are chunk x (features or k) wide."""
        return self.cluster_chunk or BLOCK_ROWS

    def validate(self) -> None:
        """Every value checked once, for the command line and for a config built in Python alike."""
        if self.preset not in PRESETS and self.preset not in SUPERVISED_PRESETS:
            raise UserError(f"unknown preset {self.preset!r}; choose one of "
                            f"{', '.join([*PRESETS, *SUPERVISED_PRESETS])} (--preset)")
        if self.scale not in ("smoke", "full"):
            raise UserError(f"--scale must be smoke or full, not {self.scale!r}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):  # NaN passes "<" checks
                raise UserError(f"{flag_of(f)} must be a finite number of float32 range, got {v}")
            meta = f.metadata.get("dc_train")
            if meta is None or v is None:
                continue
            if meta["choices"] is not None and v not in meta["choices"]:
                raise UserError(f"{flag_of(f)} must be one of {', '.join(meta['choices'])}, not {v!r}")
            if meta["minimum"] is not None and v < meta["minimum"]:
                raise UserError(f"{flag_of(f)} must be at least {meta['minimum']}, got {v}")
            if meta["positive"] and v < 1:
                raise UserError(f"{flag_of(f)} must be positive, got {v}")
        if not (0 <= self.seed <= MAX_SEED):
            raise UserError(f"--seed must be in [0, {MAX_SEED}], got {self.seed}")
        if not (32 <= self.input_size <= MAX_INPUT_SIZE):
            raise UserError(f"--input-size must be in [32, {MAX_INPUT_SIZE}] pixels (the thesis: 224), "
                            f"got {self.input_size}")
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
        if (self.head, self.descriptor) != ("full", "pre-relu"):
            from dcbench.models import get_architecture

            if get_architecture(self.arch).family != "convfc":
                raise UserError(f"--head {self.head} --descriptor {self.descriptor}: these choose among fc6/fc7 "
                                f"variants, and {self.arch} has no fc6/fc7 (it clusters its pooled res5); "
                                "drop --head/--descriptor, or use --arch alexnet or vgg16")


def flag_of(f: dataclasses.Field) -> str:
    """The dc-train flag of a TrainConfig field (``--field-name`` unless its option names another)."""
    meta = f.metadata.get("dc_train") or {}
    if meta.get("kind") == "negated":
        return f"--{f.name.replace('_', '-')}"  # the value's name, not the flag that turns it off
    return meta.get("flag") or f"--{f.name.replace('_', '-')}"


def command_line_options() -> list[dataclasses.Field]:
    """The TrainConfig fields that are dc-train flags, in declaration order."""
    return [f for f in dataclasses.fields(TrainConfig) if (f.metadata.get("dc_train") or {}).get("help")]



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
# What a run saved before a field existed did, for resuming it (--precision came with the GPU work,
# then the chapter-4 options).
LEGACY_DEFAULTS = {"precision": "fp32", "descriptor": "pre-relu", "head": "full", "crop": "random-sized",
                   "flip": "horizontal", "targets": "clusters"}

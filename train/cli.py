"""``dc-train``: DeepCluster training (thesis ch. 3-4). With no arguments: a smoke run on the
embedded data, written to ``dc-train-out/``.

``--help`` shows each override's value for the chosen preset and scale: ``dc-train --help`` the
smoke values of km-ImNet-Sob, ``dc-train --preset km-ImNet-RGB --scale full --help`` the thesis's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.imageload import CROPS, FLIPS, LOADERS
from dcbench.models import ARCHS
from dcbench.precision import PRECISIONS
from dcbench.train.config import (
    BLOCK_ROWS,
    CLUSTER_ENGINES,
    DESCRIPTORS,
    HEADS,
    PRESETS,
    SUPERVISED_PRESETS,
    TARGETS,
    make_config,
)

DEFAULT_PRESET = "km-ImNet-Sob"

# What a None in the config means, for the help text.
_NONE_MEANS = {"steps_per_epoch": "epoch multiplier x |X~| / batch size", "pool_size": "the whole dataset",
               "subset_size": "the whole pool", "data": "the embedded data",
               "val_data": "the training folder's sibling val/, if there is one"}


def chosen_preset_and_scale(argv: Sequence[str] | None) -> tuple[str, str]:
    """The preset and scale ``argv`` asks for (invalid values fall back; the real parse reports them)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--preset", default=DEFAULT_PRESET)
    pre.add_argument("--scale", default=None)
    pre.add_argument("--data", default=None)
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    preset = known.preset if known.preset in PRESETS or known.preset in SUPERVISED_PRESETS else DEFAULT_PRESET
    scale = known.scale if known.scale in ("smoke", "full") else ("smoke" if known.data is None else "full")
    return preset, scale


def _shown(value, dest: str) -> str:
    if value is None:
        return _NONE_MEANS.get(dest, "none")
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def build_parser(argv: Sequence[str] | None = None) -> ArgumentParser:
    preset, scale = chosen_preset_and_scale(argv)
    cfg = make_config(preset, scale)
    p = ArgumentParser(prog="dc-train", description=__doc__.split("\n\n")[0].replace("``", ""))
    a = p.add_argument
    a("--data", help="ImageFolder root (ROOT/<class>/<img>) (default: the embedded data, made once and cached)")
    a("--out", default="dc-train-out",
      help="output directory: checkpoint/, log.jsonl, ...; an existing run there is resumed (default: dc-train-out)")
    a("--preset", default=DEFAULT_PRESET, choices=[*PRESETS, *SUPERVISED_PRESETS],
      help=f"a model of thesis Table 5.1, or sup-ImNet-Sob: the supervised reference of §4.7 "
           f"(default: {DEFAULT_PRESET})")
    a("--scale", choices=("smoke", "full"), default=None,
      help="smoke = sizes for the embedded data, full = the thesis's (default: smoke without --data, full with it)")
    a("--resume", action="store_true", help="require an existing checkpoint in --out and continue it")
    g = p.add_argument_group(
        f"overrides (default: preset {preset} at {scale} scale)",
        "Each default below is that preset's value at that scale; give --preset/--scale/--data with "
        "--help to see another's.")

    def o(*flags, dest=None, help, shown=None, group=g, **kw):   # noqa: A002 - argparse's name
        dest = dest or flags[0].lstrip("-").replace("-", "_")
        shown = shown or _shown(getattr(cfg, dest), dest)
        group.add_argument(*flags, dest=dest, help=f"{help} (default: {shown})", **kw)

    o("--epochs", type=int, help="epochs, one clustering each")
    o("--lr", type=float, help="SGD learning rate (constant)")
    o("--wd", dest="weight_decay", type=float, help="weight decay")
    o("--momentum", type=float, help="SGD momentum")
    o("--top-momentum", type=float, help="momentum of the per-epoch top layer (original code: 0)")
    o("--k", type=int, help="number of k-means clusters")
    o("--clustering", choices=("kmeans", "pic"), help="k-means (faiss) or Power Iteration Clustering")
    o("--sobel", action=argparse.BooleanOptionalAction, default=None, help="Sobel input layer")
    o("--arch", choices=ARCHS, help="network architecture (dcbench.models registry)")
    o("--input-size", type=int, help="training crop and centre-crop size in pixels")
    o("--crop-min-scale", type=float, help="RandomResizedCrop's smallest area fraction")
    o("--batch-size", type=int, help="images per SGD step")
    o("--steps-per-epoch", type=int, help="updates between two clusterings")
    o("--epoch-multiplier", type=int, help="epoch length in |X~|/batch units (YFCC: 3)")
    o("--pool-size", type=int, help="Algorithm 2: size of the fixed pool X")
    o("--subset-size", type=int, help="Algorithm 2: |X~| drawn from the pool each epoch")
    o("--sgt", type=int, help="SGT: update only N last-layer rows per batch (0 = all)")
    o("--sampler", choices=("uniform", "proportional"),
      help="batches uniform over clusters (thesis) or proportional to cluster size")
    o("--pca-dim", type=int, help="PCA-whitening dimensions before clustering")
    o("--kmeans-iters", type=int, help="k-means iterations")
    o("--pic-knn", type=int, help="PIC: neighbours per node of the k-NN graph")
    o("--pic-sigma", type=float, help="PIC: Gaussian kernel bandwidth")
    o("--pic-alpha", type=float, help="PIC: power-iteration damping")
    o("--pic-iters", type=int, help="PIC: power iterations")
    o("--snapshot-every", type=int, help="keep snapshots/epoch_NNNN every N epochs (0 = never)")
    o("--workers", type=int, help="DataLoader worker processes")
    o("--seed", type=int, help="random seed (a fixed seed gives the same weights on the CPU)")
    o("--device", choices=("auto", "cpu", "cuda"), help="auto = cuda when available, else cpu")
    o("--dist-timeout-min", type=int, metavar="MIN",
      help="under torchrun: minutes a rank waits for the others (rank 0 clusters alone) before failing")
    o("--no-faiss-gpu", dest="faiss_gpu", action="store_false", default=None,
      help="keep faiss on the CPU even when CUDA and faiss-gpu are present",
      shown="faiss on the GPU when both are present" if cfg.faiss_gpu else "CPU")
    o("--precision", choices=PRECISIONS,
      help="fp32, or bf16 autocast + channels_last; auto = bf16 on CUDA, fp32 on the CPU")
    o("--cluster-engine", choices=CLUSTER_ENGINES,
      help="PCA + k-means engine: faiss (CPU, or faiss-gpu), torch (either device); "
           "auto = torch on CUDA unless faiss-gpu is installed, faiss on the CPU")
    o("--cluster-chunk", type=int,
      help="points per block in the torch engine's PCA, k-means and k-NN graph; lower it if the GPU runs out "
           "of memory", shown=f"{BLOCK_ROWS:,} for PCA and k-means, the k-NN graph's from the free memory")
    o("--loader", choices=LOADERS,
      help="draft = PIL decoding at reduced size when the crop allows (same crops as torchvision), "
           "torchvision = full decode, nvjpeg = batched decode + crop on the GPU (CUDA only)")
    o("--deterministic", action="store_true", default=None,
      help="deterministic cuDNN and CUDA kernels, so a resumed GPU run repeats the same numbers (slower; "
           "the CPU is deterministic without it)")
    o("--prefetch", type=int, help="batches each DataLoader worker prepares ahead")
    o("--diag-sample", type=int,
      help="NMI-with-labels and 10-NN ratio on a fixed random sample of this many images (0 = all)")
    c = p.add_argument_group("chapter-4 comparisons (thesis §4.2-4.7; each default is the thesis's choice)")

    def o4(*flags, **kw):
        o(*flags, group=c, **kw)

    o4("--descriptor", choices=DESCRIPTORS, help="cluster the penultimate FC's output before or after its ReLU")
    o4("--head", choices=HEADS,
       help="full = FC-ReLU-FC-ReLU-FC, 2fc = FC-ReLU-FC (fc7 unused, left at its initialisation), "
            "no-relu = FC-ReLU-FC-FC (fc7 feeds the top layer without a ReLU)")
    o4("--crop", choices=CROPS, help="training crop: random-sized (RandomResizedCrop), random (fixed size, "
                                     "random place), central")
    o4("--flip", choices=FLIPS, help="training flip, with probability 0.5")
    o4("--diag-every", type=int, metavar="N", help="also log the 10-NN ratio every N updates within an epoch (0 = per epoch)")
    o4("--targets", choices=TARGETS,
       help="clusters (DeepCluster), labels (the folder's classes: supervised), fixed-clusters (clustered "
            "once, then held)")
    o4("--val-data", metavar="DIR", help="--targets labels: ImageFolder scored each epoch, centre-crop top-1")
    o("--quiet", action="store_true", default=None, help="no progress bars or epoch lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser(argv).parse_args(argv))
    preset, resume = args.pop("preset"), args.pop("resume")
    scale = args.pop("scale") or ("smoke" if args.get("data") is None else "full")
    cfg = make_config(preset, scale, **args)
    if cfg.targets == "labels" and args.get("k") is not None:
        # the classes of the folder are the targets: a --k would be recorded but change nothing
        raise UserError(f"--k {args['k']} sets the number of clusters, and --targets labels trains on the "
                        "folder's classes instead; drop --k")
    from dcbench.train.loop import train

    summary = train(cfg, resume=resume)
    last = summary.get("last") or {}
    if last and not cfg.quiet:
        print(f"done: {summary['out']}/checkpoint (epoch {last.get('epoch')}, loss {last.get('loss', float('nan')):.4f})",
              file=sys.stderr)
    return 0


def cli() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()

"""``dc-train``: DeepCluster training (DESIGN §5, §8). With no arguments: a smoke run on the embedded data."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dcbench.errors import ArgumentParser, run_cli
from dcbench.models import ARCHS
from dcbench.train.config import PRESETS, make_config


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="dc-train", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--data", help="ImageFolder root (ROOT/<class>/<img>); default: the embedded data (made once, cached)")
    a("--out", default="dc-train-out", help="output directory; an existing run there is resumed")
    a("--preset", default="km-ImNet-Sob", choices=list(PRESETS), help="a model of thesis Table 5.1")
    a("--scale", choices=("smoke", "full"), default=None,
      help="smoke = sizes for the embedded data, full = the thesis's; default: smoke without --data, full with it")
    a("--resume", action="store_true", help="require an existing checkpoint in --out and continue it")
    g = p.add_argument_group("overrides (default: the preset at the chosen scale)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--wd", dest="weight_decay", type=float, help="weight decay")
    g.add_argument("--momentum", type=float)
    g.add_argument("--top-momentum", type=float, help="momentum of the per-epoch top layer (original code: 0)")
    g.add_argument("--k", type=int, help="number of k-means clusters")
    g.add_argument("--clustering", choices=("kmeans", "pic"))
    g.add_argument("--sobel", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--arch", choices=ARCHS)
    g.add_argument("--input-size", type=int, help="training crop and centre-crop size in pixels")
    g.add_argument("--crop-min-scale", type=float, help="RandomResizedCrop's smallest area fraction")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--steps-per-epoch", type=int, help="updates between two clusterings")
    g.add_argument("--epoch-multiplier", type=int, help="epoch length in |X~|/batch units (YFCC: 3)")
    g.add_argument("--pool-size", type=int, help="Algorithm 2: size of the fixed pool X")
    g.add_argument("--subset-size", type=int, help="Algorithm 2: |X~| drawn from the pool each epoch")
    g.add_argument("--sgt", type=int, help="SGT: update only N last-layer rows per batch (0 = all)")
    g.add_argument("--sampler", choices=("uniform", "proportional"),
                   help="uniform over clusters (thesis) or proportional to cluster size")
    g.add_argument("--pca-dim", type=int)
    g.add_argument("--kmeans-iters", type=int)
    g.add_argument("--pic-knn", type=int)
    g.add_argument("--pic-sigma", type=float)
    g.add_argument("--pic-alpha", type=float)
    g.add_argument("--pic-iters", type=int)
    g.add_argument("--snapshot-every", type=int, help="keep snapshots/epoch_NNNN every N epochs (0 = never)")
    g.add_argument("--workers", type=int, help="DataLoader workers")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"))
    g.add_argument("--no-faiss-gpu", dest="faiss_gpu", action="store_false", default=None)
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bars or epoch lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    preset, resume = args.pop("preset"), args.pop("resume")
    scale = args.pop("scale") or ("smoke" if args.get("data") is None else "full")
    cfg = make_config(preset, scale, **args)
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

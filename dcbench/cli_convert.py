"""dc-convert: turn foreign weights into a checkpoint (format v1; v2 for ResNets) (and export to other formats)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from dcbench import argtypes, convert
from dcbench.atomic import write_file_atomic
from dcbench.checkpoint import is_checkpoint_dir, load_checkpoint, save_checkpoint
from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.models import ARCHS
from dcbench.text import printable

EXPORTS = ("detectron2",)
ORIGIN = {"deepcluster-release": "deepcluster-release", "torchvision-vgg16bn": "torchvision",
          "torchvision-resnet50": "torchvision", "torchvision-resnet101": "torchvision", "random": "random"}


def get_args_parser(add_help: bool = True) -> ArgumentParser:
    p = ArgumentParser("dc-convert", add_help=add_help,
                       description="Import DeepCluster-release / torchvision vgg16_bn weights, ResNet-50/101 "
                                   "trunks as torchvision, VISSL, DINO, MoCo v1-v3, SwAV, DeepCluster-v2 and ReSSL "
                                   "save them (--layout; any other with --key/--strip-prefix), or a random "
                                   "initialisation as a dcbench checkpoint. .pth files are read with "
                                   "weights_only=True, .safetensors as safetensors; every kept, renamed and "
                                   "dropped key is reported.")
    p.add_argument("--from", dest="source", choices=convert.SOURCES, default=None,
                   help="what SRC is (random needs no SRC); one of --from / --to is required")
    p.add_argument("--to", dest="target", choices=EXPORTS, default=None,
                   help="export: dc-convert --to detectron2 CKPT OUT.pth writes a detectron2 checkpoint "
                        "(key mapping: dcbench/convert.py, detectron2_key_map)")
    p.add_argument("src", nargs="?", type=Path, help="file to import (checkpoint.pth.tar, vgg16_bn .pth, "
                   "resnet50 .pth/.safetensors); "
                   "with --to: the checkpoint directory to export")
    p.add_argument("dst", nargs="?", type=Path, help="with --to: the file to write (or pass --out)")
    p.add_argument("--out", type=Path, default=None, help="checkpoint directory to write (with --to: the file)")
    p.add_argument("--arch", choices=ARCHS, help="architecture (default: from the file; "
                   "alexnet for random)")
    p.add_argument("--sobel", action=__import__("argparse").BooleanOptionalAction, default=None,
                   help="Sobel input layer (default: from the file; on for random, as the thesis's models)")
    p.add_argument("--input-size", type=argtypes.input_size, default=224,
                   help="input size for random init and ResNet imports (224: thesis)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="seed for random init")
    p.add_argument("--name", help="checkpoint name shown in results (default: the --out folder name)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing checkpoint at --out (with --to: an existing file); a folder that "
                        "holds anything else is never replaced")
    lay = p.add_argument_group("ResNet layouts (--from torchvision-resnet50/101)",
                               "where a release puts the trunk in its file; docs/checkpoint-format.md has each "
                               "layout's nesting and an example")
    lay.add_argument("--layout", choices=convert.LAYOUT_CHOICES, default="auto",
                     help="auto (default): try every layout and print which was found and why; "
                          + "; ".join(f"{n}: {lo.saved_by}" for n, lo in convert.LAYOUTS.items() if n != "deepclusterv2")
                          + "; deepclusterv2: the same as swav; generic: --key and --strip-prefix (implied by either)")
    lay.add_argument("--part", choices=("teacher", "student"), default=None,
                     help="DINO: which network to take (default teacher, the one DINO's eval_linear.py evaluates)")
    lay.add_argument("--key", default=None, metavar="PATH",
                     help="generic: where the state dict sits in a nested file, entries joined by / (or by . "
                          "when there is no /), e.g. model/state_dict; '' is the top level")
    lay.add_argument("--strip-prefix", action="append", default=[], metavar="P",
                     help="generic: remove P from the start of every key that has it (repeatable, applied in "
                          "order, e.g. --strip-prefix module. --strip-prefix backbone.)")
    p.add_argument("--quiet", action="store_true",
                   help="do not list renamed and kept keys (dropped ones and every count are still printed)")
    return p


LIST_KEYS = 20  # keys listed per kind (a stranger's file may hold millions); the counts are complete


def dropped_lines(dropped: list[str], prefix: str = "") -> list[str]:
    """Dropped keys, a module's many keys as one line: ``module.momentum_encoder.* (320 keys)``. The
    module is the first name after the stripped ``prefix`` (a head beside the trunk: ``fc``) or, for
    a key outside it, its first two names (``module.predictor``); file entries stay one per line."""
    groups: dict[str, list[str]] = {}
    for k in dropped:
        inside = bool(prefix) and k.startswith(prefix)
        parts = (k[len(prefix):] if inside else k).split(".")
        depth = 1 if inside else 2
        stem = (prefix if inside else "") + ".".join(parts[:depth])
        groups.setdefault(stem if len(parts) > depth and not k.startswith("(") else k, []).append(k)
    lines = []
    for stem, keys in groups.items():
        lines += [printable(k) for k in keys] if len(keys) <= 2 else [f"{printable(stem)}.* ({len(keys)} keys)"]
    return lines


def report(conv: convert.Conversion, quiet: bool) -> None:
    """What the import did to the file's keys: each kept weight once, as renamed or kept as it was,
    each dropped key and each filled counter; every key shown inert (dcbench.text) and bounded."""
    if conv.layout_line:
        print(f"layout   {printable(conv.layout_line, 600)}")
    new_names = {new for _, new in conv.renamed} | set(conv.filled)
    sections = (
        ("renamed", [f"{printable(old)} -> {printable(new)}" for old, new in conv.renamed], quiet),
        ("kept", [printable(k) for k in conv.state_dict if k not in new_names], quiet),
        ("dropped", dropped_lines(conv.dropped, conv.source_info.get("prefix") or ""), False),
        ("filled", [f"{printable(k)} (absent in old PyTorch files; set to 0)" for k in conv.filled], False),
    )
    for word, lines, hide in sections:
        if hide:
            continue
        for line in lines[:LIST_KEYS]:
            print(f"{word:8} {line}")
        if len(lines) > LIST_KEYS:
            print(f"{word:8} ... and {len(lines) - LIST_KEYS} more")


def export(args) -> int:
    if args.source is not None:
        raise UserError("dc-convert: pass either --from (import) or --to (export), not both")
    out = args.dst or args.out
    if args.src is None or out is None or (args.dst is not None and args.out is not None):
        raise UserError(f"dc-convert --to {args.target} needs CKPT and OUT: dc-convert --to {args.target} CKPT OUT.pth")
    if out.is_dir():
        raise UserError(f"{out} is a folder; name the .pth file to write (e.g. {out / 'model_final.pth'})")
    if os.path.lexists(out) and not args.force:
        raise UserError(f"{out} exists; pass --force to replace it, or choose another file name")
    ckpt = load_checkpoint(args.src)
    obj, conv = convert.to_detectron2(ckpt.model, ckpt.meta)
    if not args.quiet:
        for old, new in conv.renamed:
            print(f"renamed  {old} -> {new}")
    for k in conv.dropped:
        print(f"dropped  {printable(k)}")
    write_file_atomic(out, lambda p: torch.save(obj, p))
    print(f"wrote {printable(out, 1000)} (detectron2 checkpoint from {printable(ckpt.name)}: {len(conv.renamed)} renamed, "
          f"{len(conv.dropped)} dropped)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    layout_flags = [f for f, given in (("--layout", args.layout != "auto"), ("--part", args.part is not None),
                                        ("--key", args.key is not None), ("--strip-prefix", bool(args.strip_prefix)))
                    if given]
    if layout_flags and not (args.source or "").startswith("torchvision-resnet"):
        raise UserError(f"{'/'.join(layout_flags)} describe a ResNet release file; they go with --from "
                        f"torchvision-resnet50 or torchvision-resnet101, not {args.source and '--from ' + args.source or '--to'}")
    if args.target is not None:
        return export(args)
    if args.source is None:
        raise UserError("dc-convert: pass --from SOURCE to import (or --to FORMAT to export); see --help")
    if args.dst is not None:
        raise UserError(f"dc-convert: unexpected second path {args.dst}; the output goes in --out")
    if args.out is None:
        raise UserError("dc-convert: --out is required (the checkpoint directory to write)")
    if is_checkpoint_dir(args.out) and not args.force:
        raise UserError(f"--out {args.out} already holds a checkpoint; pass --force to replace it, "
                        "or choose another --out")
    if args.source == "random":
        if args.src is not None:
            raise UserError("dc-convert --from random takes no SRC file")
        sobel = True if args.sobel is None else args.sobel
        conv = convert.random_init(args.arch or "alexnet", sobel, args.input_size, args.seed)
    else:
        if args.src is None:
            raise UserError(f"dc-convert --from {args.source} needs a SRC file")
        if args.source == "deepcluster-release":
            conv = convert.from_deepcluster_release(args.src, args.arch, args.sobel)
        elif args.source.startswith("torchvision-resnet"):
            arch = args.source[len("torchvision-"):]
            if args.arch not in (None, arch):
                raise UserError(f"--from {args.source} imports a {arch}; drop --arch {args.arch}")
            layout = "generic" if args.layout == "auto" and (args.key is not None or args.strip_prefix) \
                else args.layout
            conv = convert.from_torchvision_resnet(args.src, arch, args.input_size, layout=layout, part=args.part,
                                                   key=args.key, strip=tuple(args.strip_prefix))
            if args.sobel is not None and args.sobel != conv.spec.sobel:
                raise UserError(f"{args.src} is {'a Sobel' if conv.spec.sobel else 'an RGB'} {arch} (conv1 reads "
                                f"{2 if conv.spec.sobel else 3} channels); drop --{'' if args.sobel else 'no-'}sobel")
        else:
            if args.arch not in (None, "vgg16") or args.sobel:
                raise UserError("torchvision vgg16_bn is vgg16 without Sobel; drop --arch/--sobel")
            conv = convert.from_torchvision_vgg16bn(args.src)
    report(conv, args.quiet)
    model = convert.build(conv)
    source = str(args.src.resolve()) if args.src else f"seed {args.seed}"
    path = save_checkpoint(args.out, model, origin=ORIGIN[args.source], name=args.name,
                           epoch=conv.source_info.get("epoch"), source=source,
                           train_config={"converted_from": args.source, **conv.source_info})
    print(f"wrote {printable(path, 1000)} ({conv.spec.arch}, sobel={conv.spec.sobel}, {len(conv.state_dict)} weights "
          f"kept, {len(conv.renamed)} renamed, {len(conv.dropped)} dropped, {len(conv.filled)} filled)")
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

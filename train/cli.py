"""``dc-train``: DeepCluster training (thesis ch. 3-4). With no arguments: a smoke run on the
embedded data, written to ``dc-train-out/``.

``--help`` shows each override's value for the chosen preset and scale: ``dc-train --help`` the
smoke values of km-ImNet-Sob, ``dc-train --preset km-ImNet-RGB --scale full --help`` the thesis's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dcbench.errors import ArgumentParser, UserError, run_cli
from dcbench.train.config import PRESETS, SUPERVISED_PRESETS, command_line_options, flag_of, make_config

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


# How each kind of TrainConfig option becomes an argparse argument (None = "not given": the preset's value).
_ARGPARSE = {"int": {"type": int}, "float": {"type": float}, "str": {}, "either": {
    "action": argparse.BooleanOptionalAction, "default": None}, "switch": {"action": "store_true", "default": None},
    "negated": {"action": "store_false", "default": None}}


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
    groups = {None: p.add_argument_group(
        f"overrides (default: preset {preset} at {scale} scale)",
        "Each default below is that preset's value at that scale; give --preset/--scale/--data with "
        "--help to see another's.")}
    for f in command_line_options():
        meta = f.metadata["dc_train"]
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(meta["group"])
        shown = meta["shown"] or _shown(getattr(cfg, f.name), f.name)
        kw = _ARGPARSE[meta["kind"]]
        if meta["choices"] is not None:
            kw = {**kw, "choices": meta["choices"]}
        if meta["metavar"] is not None:
            kw = {**kw, "metavar": meta["metavar"]}
        groups[meta["group"]].add_argument(meta["flag"] or flag_of(f), dest=f.name,
                                           help=f"{meta['help']} (default: {shown})", **kw)
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

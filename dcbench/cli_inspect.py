"""dc-inspect CKPT: verify a checkpoint (sha256, format version, weights fit the architecture)."""

from __future__ import annotations

from collections.abc import Sequence

from dcbench.checkpoint import describe, load_checkpoint
from dcbench.errors import ArgumentParser, run_cli


def get_args_parser(add_help: bool = True) -> ArgumentParser:
    p = ArgumentParser("dc-inspect", add_help=add_help,
                       description="Verify a dcbench checkpoint directory and print what it is.")
    p.add_argument("checkpoint", help="checkpoint directory (model.safetensors + meta.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint, with_train_state=True)
    n_params = sum(p.numel() for p in ckpt.model.parameters())
    print(describe(ckpt.meta, ckpt.path, ckpt.train_state))
    print(f"parameters   {n_params:,}")
    print("status       OK (sha256 verified, weights load into the architecture)")
    return 0


def cli() -> int:
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())

"""``--precision``: fp32, or bf16 autocast with channels_last activations.

"auto" means bf16 on CUDA (tensor cores) and fp32 on the CPU, where bf16 autocast is slower on
most CPUs and would change the numbers the CPU tests pin. Runs record the resolved value.
"""

from __future__ import annotations

import contextlib

import torch

from dcbench.choices import PRECISIONS
from dcbench.errors import UserError


def resolve_precision(name: str, device: torch.device) -> str:
    if name not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return name


def autocast(precision: str, device: torch.device):
    """The forward-pass context: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(precision: str) -> torch.memory_format:
    """channels_last with bf16 (what the GPU's convolution kernels want); the default layout otherwise."""
    return torch.channels_last if precision == "bf16" else torch.contiguous_format

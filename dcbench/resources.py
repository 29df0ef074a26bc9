"""Up-front resource bounds: a request that cannot fit is one line and exit 2, not the OOM killer.

Sizes are worked out on PyTorch's ``meta`` device (shapes only, no memory), so asking about a
100,000-pixel input costs nothing. The estimates are deliberately low (weights, gradients and
momentum; each layer's output and its gradient), so only requests that certainly cannot fit are
refused; a request that passes can still run out of memory, which ``run_cli`` reports in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dcbench.errors import UserError


@dataclass(frozen=True)
class Footprint:
    params: int  # parameters and buffers, elements
    activations: int  # outputs of every leaf module for one image, elements


def footprint(spec) -> Footprint:
    """Parameter count and per-image activation count of the network ``spec`` describes, without memory."""
    from dcbench.models import make_network

    with torch.device("meta"):
        model = make_network(spec).eval()  # eval: BatchNorm on a 1-image batch of 1x1 maps is fine then
        counts: list[int] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: counts.append(o.numel()))
                 for m in model.modules() if not list(m.children())]
        with torch.no_grad():
            model(torch.empty(1, 3, spec.input_size, spec.input_size))
    for h in hooks:
        h.remove()
    return Footprint(params=sum(t.numel() for t in model.state_dict().values()), activations=sum(counts))


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory a new allocation can get: MemAvailable on the host, free memory on a CUDA device.
    None when it cannot be told (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no driver / no device: nothing to compare with
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def require_memory(need: int, what: str, fix: str, device: torch.device | str = "cpu") -> None:
    """Refuse (UserError) when ``need`` bytes certainly exceed what ``device`` has available."""
    have = available_bytes(device)
    if have is not None and need > have:
        raise UserError(f"{what} needs at least {gib(need)}, {torch.device(device).type} has {gib(have)} "
                        f"available; {fix}")


def training_bytes(spec, batch_size: int) -> int:
    """Lower bound of one SGD step's memory: fp32 weights, gradients and momentum, plus each
    layer's output and its gradient for ``batch_size`` images."""
    fp = footprint(spec)
    return 4 * (3 * fp.params + 2 * batch_size * fp.activations)

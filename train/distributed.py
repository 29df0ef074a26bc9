"""torchrun / DDP plumbing. Without WORLD_SIZE > 1 everything degrades to a single process.

Features are extracted on every rank for a strided shard and gathered; clustering runs on rank 0;
assignments are broadcast; training uses DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> tuple[int, int, torch.device | None]:
    """Initialise the process group if launched by torchrun; returns (rank, world, cuda device or None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size(), None) if dist.is_initialized() else (0, 1, None)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = None
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world() -> int:
    return dist.get_world_size() if is_dist() else 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def gather_rows(local: torch.Tensor, local_pos: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather (features, positions) of every rank onto all ranks; rows are placed by position.

    Returns (features (total, d), valid mask (total,)). Positions missing everywhere (unreadable
    images) stay invalid.
    """
    d = local.shape[1]
    if not is_dist():
        out = torch.zeros(total, d, dtype=local.dtype)
        valid = torch.zeros(total, dtype=torch.bool)
        out[local_pos] = local
        valid[local_pos] = True
        return out, valid
    backend_dev = local.device
    n = torch.tensor([local.shape[0]], device=backend_dev)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    pad = torch.zeros(m, d, dtype=local.dtype, device=backend_dev)
    pad[: local.shape[0]] = local
    ppad = torch.full((m,), -1, dtype=torch.int64, device=backend_dev)
    ppad[: local.shape[0]] = local_pos.to(backend_dev)
    feats = [torch.zeros_like(pad) for _ in range(world())]
    poss = [torch.zeros_like(ppad) for _ in range(world())]
    dist.all_gather(feats, pad)
    dist.all_gather(poss, ppad)
    out = torch.zeros(total, d, dtype=local.dtype)
    valid = torch.zeros(total, dtype=torch.bool)
    for f, p in zip(feats, poss):
        keep = p >= 0
        out[p[keep].cpu()] = f[keep].cpu()
        valid[p[keep].cpu()] = True
    return out, valid


def broadcast_array(t: torch.Tensor | None, src: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Broadcast a 1-D int64 tensor from ``src`` (other ranks pass None)."""
    if not is_dist():
        return t
    dev = device or torch.device("cpu")
    n = torch.tensor([t.numel() if rank() == src else 0], device=dev)
    dist.broadcast(n, src)
    buf = t.to(dev) if rank() == src else torch.empty(int(n.item()), dtype=torch.int64, device=dev)
    dist.broadcast(buf, src)
    return buf.cpu()


def broadcast_flag(value: int, src: int = 0) -> int:
    if not is_dist():
        return value
    t = torch.tensor([value])
    dist.broadcast(t, src)
    return int(t.item())


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()

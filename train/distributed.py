"""torchrun / DDP plumbing. Without WORLD_SIZE > 1 everything degrades to a single process.

Features are extracted on every rank for a strided shard and gathered to rank 0, which clusters them;
assignments are broadcast; training uses DistributedDataParallel (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def init(timeout_min: int = 120) -> tuple[int, int, torch.device | None]:
    """Initialise the process group if launched by torchrun; returns (rank, world, cuda device or None).

    ``timeout_min``: how long a collective waits for every rank before failing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size(), None) if dist.is_initialized() else (0, 1, None)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = datetime.timedelta(minutes=timeout_min)
    device = None
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
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


# Bytes of feature rows each rank sends per collective: bounds rank 0's receive buffers.
GATHER_CHUNK_BYTES = 64 * 2**20


def gather_rows(local: torch.Tensor, local_pos: torch.Tensor, total: int,
                chunk_bytes: int = GATHER_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Gather the (features, positions) of every rank onto rank 0, which alone clusters them.

    Rank 0 gets (the readable rows ordered by position (n_valid, d), on the host; valid mask
    (total,)); positions no rank has (unreadable images) are invalid. The other ranks get None.
    Rows travel ``chunk_bytes`` per rank at a time and land straight in the one host buffer.
    """
    d = local.shape[1]
    local_pos = local_pos.to(torch.int64)
    if not is_dist():
        valid = torch.zeros(total, dtype=torch.bool)
        valid[local_pos] = True
        slot = torch.cumsum(valid, 0) - 1
        out = torch.empty(int(valid.sum()), d, dtype=local.dtype)
        out[slot[local_pos]] = local.cpu()
        return out, valid
    main, dev, w = rank() == 0, local.device, world()
    n = torch.tensor([local.shape[0]], device=dev)
    sizes = [torch.zeros_like(n) for _ in range(w)]
    dist.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    ppad = torch.full((m,), -1, dtype=torch.int64, device=dev)
    ppad[: local.shape[0]] = local_pos.to(dev)
    poss = [torch.empty_like(ppad) for _ in range(w)] if main else None
    dist.gather(ppad, poss, dst=0)
    if main:
        poss = [p.cpu() for p in poss]
        valid = torch.zeros(total, dtype=torch.bool)
        for p in poss:
            valid[p[p >= 0]] = True
        slot = torch.cumsum(valid, 0) - 1
        out = torch.empty(int(valid.sum()), d, dtype=local.dtype)
    step = max(1, chunk_bytes // max(1, d * local.element_size()))
    for s in range(0, m, step):
        e = min(m, s + step)
        block = torch.zeros(e - s, d, dtype=local.dtype, device=dev)
        mine = local[s:e]
        block[: mine.shape[0]] = mine
        got = [torch.empty_like(block) for _ in range(w)] if main else None
        dist.gather(block, got, dst=0)
        if main:
            for p, f in zip(poss, got):
                p = p[s:e]
                keep = p >= 0
                out[slot[p[keep]]] = f[keep].cpu()
    return (out, valid) if main else None


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

"""What a result cost to compute: wall time since the task began, the device, GPU-hours, peak host
and device memory, and images per second (the throughput ``dc-bench run --dry-run`` scales from)."""

from __future__ import annotations

import platform
import resource
import sys
import time

_START = time.monotonic()


def begin() -> None:
    """Start the clock of one task run (dc-transfer calls it before the task; otherwise it runs from
    import). Peak memory cannot be reset: it is the process's peak, a bound on the task's."""
    global _START
    _START = time.monotonic()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:120]
    except OSError:
        pass
    return (platform.processor() or platform.machine() or "cpu")[:120]


def cost_block(sizes: dict) -> dict:
    """The result's ``cost``: GPU-hours count every visible GPU this process initialised (the tasks
    use one device each), 0 on the CPU; ``images`` sums the data sizes the result records."""
    wall = max(0.0, time.monotonic() - _START)
    torch = sys.modules.get("torch")
    gpus = 0
    device = f"cpu: {cpu_name()}"
    peak_device = None
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        gpus = 1
        device = torch.cuda.get_device_name(torch.cuda.current_device())[:120]
        peak_device = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # ru_maxrss is in KiB on Linux
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    images = int(sum(v for v in sizes.values() if isinstance(v, int) and v > 0))
    return {"wall_s": round(wall, 3), "device": device, "device_count": gpus,
            "gpu_hours": round(gpus * wall / 3600, 6), "peak_host_mb": round(host, 1),
            "peak_host_children_mb": round(children, 1), "peak_device_mb": peak_device,
            "images": images, "images_per_s": round(images / wall, 3) if wall > 0 and images else None}

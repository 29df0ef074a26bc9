"""``dc-train --deterministic``: the kernel choices that make a GPU run repeat itself bit for bit.

On the CPU a fixed seed already gives the same weights, and a resumed run the same numbers as an
uninterrupted one. On CUDA three things vary from run to run: cuDNN's autotuned convolution
algorithms, the atomics of scatter-style reductions (``index_add_`` in k-means's centroid sums, the
backward of indexing), and cuBLAS's split reductions. ``torch.use_deterministic_algorithms`` swaps in
deterministic kernels for the first two (``index_add_`` among them) and makes cuBLAS honour
``CUBLAS_WORKSPACE_CONFIG``. A few ops have no deterministic CUDA kernel at all (the backward of
``AdaptiveAvgPool2d``, in the ResNets); torch warns naming each one instead of failing the run, and
those stay non-deterministic.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

# cuBLAS's fixed-workspace setting that makes its reductions run in one order (CUDA's documentation
# gives ":4096:8" and ":16:8"; the first costs 24 MiB and no speed).
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_kernels(on: bool) -> Iterator[None]:
    """Within the block, deterministic kernels when ``on``; the previous settings come back after."""
    if not on:
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    # cuBLAS reads it when its first handle is made: set before any CUDA work of the run
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)

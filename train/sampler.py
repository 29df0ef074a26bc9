"""Which images a training epoch sees: the thesis's uniform-over-clusters rule, or proportional.

Both are pure functions of (labels, count, rng), so an epoch's draw is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np


def uniform_over_clusters(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions into ``labels``: draw a non-empty cluster uniformly, then an image in it uniformly
    (thesis §3.3). Negative labels (images to skip) are never drawn."""
    labels = np.asarray(labels)
    valid = np.flatnonzero(labels >= 0)
    if valid.size == 0:
        raise ValueError("no labelled image to sample from")
    order = valid[np.argsort(labels[valid], kind="stable")]
    clusters, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    c = rng.integers(0, clusters.size, size=count)
    offs = np.floor(rng.random(count) * counts[c]).astype(np.int64)
    return order[starts[c] + offs]


def proportional_to_size(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Images drawn uniformly with replacement, so clusters are seen in proportion to their size."""
    valid = np.flatnonzero(np.asarray(labels) >= 0)
    if valid.size == 0:
        raise ValueError("no labelled image to sample from")
    return valid[rng.integers(0, valid.size, size=count)]


def draw(kind: str, labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return uniform_over_clusters(labels, count, rng)
    if kind == "proportional":
        return proportional_to_size(labels, count, rng)
    raise ValueError(f"unknown sampler {kind!r}")

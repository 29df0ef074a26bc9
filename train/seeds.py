"""Where every random choice of an epoch comes from: a generator seeded by (seed, epoch, stage).

A resumed run draws exactly what the uninterrupted run drew, because no choice depends on a
generator's history across epochs. The stage numbers are part of the result: changing one
changes every run's clusters and weights.
"""

from __future__ import annotations

import numpy as np

SUBSET = 1  # Algorithm 2: this epoch's subset of the pool
FEATURES = 2  # the global RNGs while the features are computed
CLUSTERING = 3  # k-means initialisation / PIC
TRAINING = 4  # the global RNGs of the training pass (the new top layer's initial weights first)
SAMPLER = 5  # the batches drawn uniformly over clusters
SGT_ROWS = 6  # SGT: the extra rows of each batch
CROPS = 7  # the training pass's crops and flips
DIAGNOSTICS = 8  # the clusterings of --diag-every


def stage_seed(seed: int, epoch: int, stage: int) -> int:
    """The 32-bit seed of ``stage`` in ``epoch`` (0-based) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, stage]).generate_state(1, dtype=np.uint32)[0])

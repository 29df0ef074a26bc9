"""The typed state the stages of a dc-train run share: one :class:`Run`, one :class:`Epoch` per epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dcbench.train.config import TrainConfig
from dcbench.train.feed import Feed, ValSet
from dcbench.train.run_state import CHECKPOINT


@dataclass
class Run:
    """What stays the same from one epoch to the next (the model and optimizer change in place)."""

    cfg: TrainConfig  # with "auto" resolved for this machine
    rank: int
    world: int
    device: torch.device
    ddp_device: torch.device | None  # this rank's GPU under torchrun, else None
    out: Path
    root: Path  # the training ImageFolder
    ds: object  # dcbench.datasets.ImageFolder over root
    classes: np.ndarray | None  # the class folder of every image (None: a single folder, no labels)
    pool: np.ndarray  # Algorithm 2's pool X (all images without --pool-size), sorted dataset indices
    subset_size: int  # |X~|: images clustered per epoch
    diag_priority: np.ndarray  # a fixed random order of the images: the diagnostics' sample
    train_feed: Feed  # training crops
    centre_feed: Feed  # centre crops: the clustering features
    val: ValSet | None
    faiss_on_gpu: bool
    feature_device: torch.device  # where the epoch's feature buffer lives, and its dtype
    feature_dtype: torch.dtype
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    start_epoch: int = 0
    # the last epoch's (subset, cluster of each, -1 = unreadable): its NMI with the next one, the held targets
    previous: tuple[np.ndarray, np.ndarray] | None = None
    data_fingerprint: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def show(self) -> bool:
        return self.main and not self.cfg.quiet

    @property
    def torch_engine(self) -> bool:
        return self.cfg.cluster_engine == "torch"

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT

    @property
    def log_path(self) -> Path:
        return self.out / "log.jsonl"


@dataclass
class Epoch:
    """One epoch in progress: its images, its log record and stage times, the stage now running."""

    index: int  # 0-based
    subset: np.ndarray  # X~: the dataset indices clustered and trained on
    # targets that do not change this epoch (the labels, or --targets fixed-clusters after the first):
    # nothing is clustered and the top layer is kept
    held: bool
    started: float
    # this epoch's feature buffer (rank 0, or every rank before the gather) and which subset images it
    # holds: the whitening takes the buffer, so no other name keeps 10.5 GB alive through the training
    features: torch.Tensor | None = None
    readable: np.ndarray | None = None
    record: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)
    stage: str = "features"

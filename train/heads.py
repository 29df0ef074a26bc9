"""The MLP heads and clustering descriptors compared in thesis §4.2 (Figure 4.2, Table 4.1).

The network's modules never change (fc6 and fc7 stay in ``classifier``, so every head writes a
format-v1 checkpoint of the same shapes); a head only decides which of them the training forward
runs before the top layer, and a descriptor which activation is clustered:

- ``full``: FC-ReLU-FC-ReLU-FC, DeepCluster's head; the top layer reads fc7 after its ReLU.
- ``no-relu``: FC-ReLU-FC-FC; the top layer reads fc7 before its ReLU.
- ``2fc``: FC-ReLU-FC; the top layer reads fc6 after its ReLU (and the dropout that precedes fc7
  in AlexNet). fc7 is never used, so it keeps its initial weights: in such a checkpoint fc7 is
  random, which matters to the tasks that read it (the fc6-8 protocols re-initialise it).

The descriptor is the last FC the head uses (fc7, or fc6 for ``2fc``) before its ReLU (``pre-relu``,
the thesis's choice) or after it (``post-relu``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def top_input(model, x: torch.Tensor, head: str) -> torch.Tensor:
    """What the top layer reads, for input batch ``x``."""
    if head == "full":
        return model.head_input(x)  # the landed path (a ResNet: its pooled res5)
    c = model.classifier
    fc6, fc7 = model.fc_indices
    h = torch.flatten(model.trunk(x), 1)
    if head == "no-relu":
        return c[:fc7 + 1](h)
    if head == "2fc":
        return c[:fc7](h)
    raise ValueError(f"unknown head {head!r}")


def descriptor(model, x: torch.Tensor, head: str, which: str) -> torch.Tensor:
    """The clustering features of input batch ``x``."""
    if head == "full" and which == "pre-relu":
        return model.penultimate(x)  # the landed path, bit for bit
    fc6, fc7 = model.fc_indices
    last = fc6 if head == "2fc" else fc7
    y = model.classifier[:last + 1](torch.flatten(model.trunk(x), 1))
    return F.relu(y) if which == "post-relu" else y

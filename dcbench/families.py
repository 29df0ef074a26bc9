"""Architecture -> family, without importing torch (the leaderboard reads it and stays torch-free).

``convfc``: a conv trunk then fc6/fc7 (AlexNet, VGG16); ``resnet``: torchvision's Bottleneck ResNets.
The registry in :mod:`dcbench.models` is the source; ``tests/test_resnet.py`` checks that this map
names every entry with its registry family.
"""

from __future__ import annotations

FAMILIES: dict[str, str] = {"alexnet": "convfc", "vgg16": "convfc", "resnet50": "resnet", "resnet101": "resnet"}


def family_of(arch) -> str:
    """The family of ``arch``; one this dcbench does not know counts as ``convfc`` (where every
    result went before families existed)."""
    return FAMILIES.get(arch, "convfc") if isinstance(arch, str) else "convfc"

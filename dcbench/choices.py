"""The names and bounds dc-train's flags choose among, in a module that imports nothing heavy:
``dc-train --help`` and an argument error answer before torch is loaded. The modules that
implement them (models, imageload, precision, resources) take these names from here."""

from __future__ import annotations

ARCHS = ("alexnet", "vgg16", "resnet50", "resnet101")  # dcbench.models.ARCHITECTURES builds each
# conv trunk + fc6/fc7 classifier, or a ResNet (no fc6/fc7); dcbench.models checks it agrees
FAMILIES = {"alexnet": "convfc", "vgg16": "convfc", "resnet50": "resnet", "resnet101": "resnet"}
LOADERS = ("draft", "torchvision", "nvjpeg")
# Training-crop choices of thesis §4.3 (Figure 4.4): RandomResizedCrop, a fixed-size crop at a random
# place of the resized image, or its centre; flips with probability 0.5. Flip codes in crop params:
# 0 = none, 1 = left-right, 2 = top-bottom.
CROPS = ("random-sized", "random", "central")
FLIPS = ("horizontal", "vertical", "none")
PRECISIONS = ("auto", "fp32", "bf16")
MAX_INPUT_SIZE = 1024  # pixels; the thesis uses 224, the embedded data 64-96
MAX_SEED = 2**32 - 1  # every RNG the project seeds (numpy, torch, random) takes a 32-bit seed


def family_of(arch) -> str:
    """The family of ``arch`` (a result file's, so any JSON value); one this dcbench does not know
    counts as ``convfc``, where every result went before families existed. Here rather than in
    :mod:`dcbench.models` so that the leaderboard and the suite answer ``--help`` without torch."""
    return FAMILIES.get(arch, "convfc") if isinstance(arch, str) else "convfc"

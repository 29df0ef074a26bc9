"""AlexNet-BN and VGG16-BN in the module layout of the original DeepCluster code, and
torchvision's Bottleneck ResNet-50/101 in torchvision's own layout.

Keeping that layout (``sobel.0/1``, ``features.<i>``, ``classifier.<i>``, ``top_layer``) means
the released DeepCluster checkpoints load by renaming keys alone, with no surgery on shapes.
Only the input size is new: the fc6 input width is derived from it instead of the fixed
256*6*6 / 512*7*7 of the 224-pixel originals, so the embedded small images can be used too.

The ResNets (:class:`ResNetNet`) are torchvision's modules themselves, so a torchvision-layout
state dict (``conv1``, ``bn1``, ``layer1``..``layer4``) loads once its release's prefix is
stripped; they have no fc6/fc7: the clustering descriptor is the global-average-pooled res5
(``layer4``) output, 2,048-d, and the probes tap conv1 and res2..res5.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from dcbench.choices import ARCHS, FAMILIES, family_of  # noqa: F401 - family_of: its old home
from dcbench.errors import UserError

# (out_channels, kernel, stride, padding) or "M"; AlexNet as in Krizhevsky et al. 2012 / DeepCluster.
ALEXNET_CFG = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# ImageNet statistics, RGB order: what DeepCluster normalises with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network; stored in a checkpoint's meta.json."""

    arch: str = "alexnet"
    sobel: bool = False
    batchnorm: bool = True
    input_size: int = 224
    num_classes: int = 0  # size of top_layer; 0 = no top layer (a trunk plus fc6/fc7)

    def __post_init__(self) -> None:
        get_architecture(self.arch)  # an unknown name is one clear line
        if self.input_size < 32:
            raise UserError(f"input size {self.input_size} is too small (minimum 32)")


def _alexnet_features(in_channels: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in ALEXNET_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            continue
        out, k, s, p = v
        layers.append(nn.Conv2d(in_channels, out, kernel_size=k, stride=s, padding=p))
        if bn:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out
    return nn.Sequential(*layers)


def _vgg16_features(in_channels: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


def _sobel() -> nn.Sequential:
    """Frozen grayscale + Sobel (x, y) filters, exactly as DeepCluster's ``sobel`` module."""
    grayscale = nn.Conv2d(3, 1, kernel_size=1, stride=1, padding=0)
    grayscale.weight.data.fill_(1.0 / 3.0)
    grayscale.bias.data.zero_()
    sobel_filter = nn.Conv2d(1, 2, kernel_size=3, stride=1, padding=1)
    sobel_filter.weight.data[0, 0].copy_(torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]))
    sobel_filter.weight.data[1, 0].copy_(torch.tensor([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]]))
    sobel_filter.bias.data.zero_()
    module = nn.Sequential(grayscale, sobel_filter)
    for p in module.parameters():
        p.requires_grad = False
    return module


def _alexnet_classifier(fc6_in: int, width: int) -> nn.Sequential:
    # Dropout before each fc, as in DeepCluster's AlexNet: fc6 = classifier.1, fc7 = classifier.4
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(fc6_in, width), nn.ReLU(inplace=True),
                         nn.Dropout(0.5), nn.Linear(width, width), nn.ReLU(inplace=True))


def _vgg16_classifier(fc6_in: int, width: int) -> nn.Sequential:
    # Dropout after fc6 only, as in DeepCluster's VGG16: fc6 = classifier.0, fc7 = classifier.3
    return nn.Sequential(nn.Linear(fc6_in, width), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(width, width), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------------------------
# The architecture registry


@dataclass(frozen=True)
class Architecture:
    """What the trainer, the transfer tasks and the converters need to know about a trunk.

    Contract (``tests/test_models.py`` checks it for every entry): ``features(in_channels,
    batchnorm)`` builds the conv trunk as an ``nn.Sequential`` of Conv2d [BatchNorm2d] ReLU and
    pooling layers; ``classifier(fc6_in, fc_width)`` builds fc6/fc7 with their ReLUs (and
    dropouts), fc6 and fc7 being ``classifier[fc_indices[0]]`` / ``[fc_indices[1]]``;
    ``probe_taps`` picks the five convs the linear probes call conv1..conv5, as indices into
    :meth:`DeepClusterNet.conv_outputs`; ``conv_naming`` is ``flat`` (conv1, conv2, ...) or
    ``block`` (conv1_1, conv1_2, ..., a new block after each max-pool) for exported key names.
    Shapes are never written down: :func:`conv_shapes` gets them from a dry run.

    ``family`` is ``convfc`` (the above: a conv Sequential, then fc6/fc7; checkpoint format v1)
    or ``resnet`` (``resnet`` is torchvision's builder; no ``features``/``classifier``; checkpoint
    format v2). ``taps`` names the probe points in order (their shapes: :func:`conv_shapes`),
    ``descriptor`` the clustering features and ``descriptor_dim`` their width, which is the top
    layer's input width.
    """

    name: str
    features: Callable[[int, bool], nn.Sequential] | None = None
    classifier: Callable[[int, int], nn.Sequential] | None = None
    fc_indices: tuple[int, int] | None = None
    probe_taps: tuple[int, int, int, int, int] = (0, 1, 2, 3, 4)
    conv_naming: str = "flat"
    fc_width: int = 4096
    family: str = "convfc"
    taps: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5")
    descriptor: str = "fc7-prerelu"
    descriptor_dim: int = 4096
    resnet: Callable[..., nn.Module] | None = None


RESNET_TAPS = ("conv1", "res2", "res3", "res4", "res5")  # after bn1+ReLU (before the max-pool), layer1..layer4


def _resnet_entry(name: str, builder: Callable[..., nn.Module]) -> Architecture:
    return Architecture(name, family="resnet", taps=RESNET_TAPS, descriptor="gap-res5", descriptor_dim=2048,
                        fc_width=0, resnet=builder)


ARCHITECTURES: dict[str, Architecture] = {
    "alexnet": Architecture("alexnet", _alexnet_features, _alexnet_classifier, fc_indices=(1, 4),
                            probe_taps=(0, 1, 2, 3, 4)),
    # conv1..conv5 of VGG16 = the last conv of each block (conv1_2, conv2_2, conv3_3, conv4_3, conv5_3)
    "vgg16": Architecture("vgg16", _vgg16_features, _vgg16_classifier, fc_indices=(0, 3),
                          probe_taps=(1, 3, 6, 9, 12), conv_naming="block"),
    # torchvision's Bottleneck ResNets (He et al. 2016); the thesis's §4.5 trains ResNet-101
    "resnet50": _resnet_entry("resnet50", torchvision.models.resnet50),
    "resnet101": _resnet_entry("resnet101", torchvision.models.resnet101),
}
if tuple(ARCHITECTURES) != ARCHS:  # the torch-free list that dc-train's flags offer must be these
    raise ImportError(f"dcbench.choices.ARCHS {ARCHS} differs from the architectures built here")


if {n: a.family for n, a in ARCHITECTURES.items()} != FAMILIES:  # one table of families, two readers
    raise ImportError("dcbench.choices.FAMILIES disagrees with dcbench.models.ARCHITECTURES")


def get_architecture(name: str) -> Architecture:
    """The registry entry of ``name``; an unknown name is a one-line user error."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}") from None


def conv_shapes(arch: str, input_size: int, batchnorm: bool = True) -> list[tuple[int, int, int]]:
    """(channels, height, width) after the ReLU of every conv of ``arch`` at ``input_size``, and
    the trunk output last: a dry run on the meta device (shapes only, no arithmetic, no RNG).
    For a ResNet: its five taps (conv1, res2..res5), then the trunk output (res5 again)."""
    if get_architecture(arch).family == "resnet":
        return _resnet_shapes(arch, input_size)
    with torch.device("meta"):
        features = get_architecture(arch).features(3, batchnorm).eval()
        x = torch.zeros(1, 3, input_size, input_size)
    shapes = []
    try:
        for i, m in enumerate(features):
            x = m(x)
            if isinstance(m, nn.ReLU) or i == len(features) - 1:
                shapes.append(tuple(int(v) for v in x.shape[1:]))
    except RuntimeError:
        raise UserError(f"input size {input_size} is too small for {arch}") from None
    if min(shapes[-1][1:]) < 1:
        raise UserError(f"input size {input_size} is too small for {arch}")
    return shapes


def _resnet_shapes(arch: str, input_size: int) -> list[tuple[int, int, int]]:
    return list(_resnet_shapes_once(arch, input_size))


# Every ResNetNet and every checkpoint write asks; the meta dry run costs ~0.5 s of dispatch each time
@functools.lru_cache(maxsize=32)
def _resnet_shapes_once(arch: str, input_size: int) -> tuple[tuple[int, int, int], ...]:
    with torch.device("meta"):
        tv = get_architecture(arch).resnet(weights=None).eval()
        x = torch.zeros(1, 3, input_size, input_size)
    shapes = []
    try:
        x = tv.relu(tv.bn1(tv.conv1(x)))
        shapes.append(tuple(int(v) for v in x.shape[1:]))
        x = tv.maxpool(x)
        for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
            x = layer(x)
            shapes.append(tuple(int(v) for v in x.shape[1:]))
    except RuntimeError:
        raise UserError(f"input size {input_size} is too small for {arch}") from None
    if min(shapes[-1][1:]) < 1:
        raise UserError(f"input size {input_size} is too small for {arch}")
    return (*shapes, shapes[-1])


class DeepClusterNet(nn.Module):
    """Sobel (optional) -> conv trunk ``features`` -> ``classifier`` (fc6, fc7) -> ``top_layer``.

    ``forward`` returns the top layer's logits, or fc7 activations when there is no top layer.
    ``penultimate`` returns fc7 *before* its ReLU: the features DeepCluster clusters.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        in_channels = 2 if spec.sobel else 3
        self.sobel = _sobel() if spec.sobel else None
        self.arch = get_architecture(spec.arch)
        self.features = self.arch.features(in_channels, spec.batchnorm)
        self.feature_shape = tuple(conv_shapes(spec.arch, spec.input_size, spec.batchnorm)[-1])
        self.classifier = self.arch.classifier(math.prod(self.feature_shape), self.arch.fc_width)
        self.top_layer = nn.Linear(self.arch.fc_width, spec.num_classes) if spec.num_classes else None
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        # DeepCluster's init: He-normal over fan-out for convs, N(0, 0.01) for linear layers.
        for name, m in self.named_modules():
            if name.startswith("sobel"):
                continue
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    @property
    def fc_indices(self) -> tuple[int, int]:
        """Indices of fc6 and fc7 inside ``classifier``."""
        return self.arch.fc_indices

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the top layer reads: fc7 after its ReLU (and dropout, in train mode)."""
        return self.classifier(torch.flatten(self.trunk(x), 1))

    @property
    def conv_relu_indices(self) -> list[int]:
        """Indices in ``features`` of the ReLU following each conv (conv1.. for probes)."""
        return [i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU)]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.sobel is not None:
            x = self.sobel(x)
        return self.features(x)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 output before its ReLU (the clustering features)."""
        x = torch.flatten(self.trunk(x), 1)
        return self.classifier[:-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.trunk(x), 1)
        x = self.classifier(x)
        if self.top_layer is not None:
            x = self.top_layer(x)
        return x

    def conv_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations after the ReLU of every conv layer, in order (conv1..conv5 for AlexNet)."""
        if self.sobel is not None:
            x = self.sobel(x)
        taps = set(self.conv_relu_indices)
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                outs.append(x)
        return outs


class ResNetNet(nn.Module):
    """Sobel (optional) -> torchvision's ResNet stem and ``layer1``..``layer4`` -> global average
    pool -> ``top_layer``: the modules are torchvision's own (built with ``weights=None``, i.e. its
    initialisation), so the state dict keys are torchvision's minus ``fc``, plus ``sobel.*`` and
    ``top_layer.*``, and the res5 output is bit-identical to torchvision's forward on the same
    weights. With Sobel, conv1 reads the two gradient maps (2 input channels) instead of RGB.

    ``penultimate`` is the clustering descriptor: res5 globally average-pooled (2,048-d; res5 ends
    in a ReLU, so unlike AlexNet's fc7 it is non-negative). ``dilate_res5`` builds res5 with
    dilation 2 instead of stride 2 (the same weights; output stride 16), for segmentation.
    """

    classifier = None  # no fc6/fc7: the tasks that need them refuse this network in one line

    def __init__(self, spec: ModelSpec, *, dilate_res5: bool = False):
        super().__init__()
        self.spec = spec
        self.arch = get_architecture(spec.arch)
        if not spec.batchnorm:
            raise UserError(f"{spec.arch} has BatchNorm in every block; it cannot be built without it")
        tv = self.arch.resnet(weights=None, replace_stride_with_dilation=[False, False, dilate_res5])
        self.sobel = _sobel() if spec.sobel else None
        if spec.sobel:
            tv.conv1 = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(tv.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
        self.conv1, self.bn1, self.relu, self.maxpool = tv.conv1, tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.avgpool = tv.avgpool
        self.feature_shape = tuple(conv_shapes(spec.arch, spec.input_size)[-1])
        self.top_layer = None
        if spec.num_classes:
            self.top_layer = nn.Linear(self.arch.descriptor_dim, spec.num_classes)
            self.top_layer.weight.data.normal_(0, 0.01)  # DeepCluster's linear init
            self.top_layer.bias.data.zero_()

    @property
    def stages(self) -> list[nn.Module]:
        """res2..res5 (torchvision's layer1..layer4)."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def tap_outputs(self, x: torch.Tensor, upto: int = 4) -> list[torch.Tensor]:
        """conv1 (after bn1 and ReLU), res2, ..., the tap of index ``upto``; nothing deeper is run."""
        if self.sobel is not None:
            x = self.sobel(x)
        x = self.relu(self.bn1(self.conv1(x)))
        outs = [x]
        x = self.maxpool(x)
        for stage in self.stages[:upto]:
            x = stage(x)
            outs.append(x)
        return outs

    def conv_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.tap_outputs(x)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The res5 feature map."""
        return self.tap_outputs(x)[-1]

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The clustering descriptor: res5, globally average-pooled (torchvision's ``avgpool``)."""
        return torch.flatten(self.avgpool(self.trunk(x)), 1)

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.penultimate(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.penultimate(x)
        if self.top_layer is not None:
            x = self.top_layer(x)
        return x


def make_network(spec: ModelSpec, **kwargs) -> nn.Module:
    """The network ``spec`` describes: :class:`DeepClusterNet` or :class:`ResNetNet` by its family."""
    if get_architecture(spec.arch).family == "resnet":
        return ResNetNet(spec, **kwargs)
    return DeepClusterNet(spec)


def build_model(arch: str = "alexnet", sobel: bool = False, batchnorm: bool = True,
                input_size: int = 224, num_classes: int = 0, seed: int | None = None) -> nn.Module:
    """Build a network; with ``seed`` the initialisation is reproducible on CPU."""
    spec = ModelSpec(arch=arch, sobel=sobel, batchnorm=batchnorm, input_size=input_size,
                     num_classes=num_classes)
    if seed is None:
        return make_network(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_network(spec)

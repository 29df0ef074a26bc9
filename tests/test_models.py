import math

import pytest
import torch
from torch import nn

from dcbench.errors import UserError
from dcbench.models import ARCHITECTURES, ARCHS, build_model, conv_shapes, get_architecture

# Key layout of the original DeepCluster modules (features / classifier / top_layer / sobel).
ALEXNET_CONVS = [0, 4, 8, 11, 14]
VGG16_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


@pytest.mark.parametrize("arch,convs,fcs", [("alexnet", ALEXNET_CONVS, (1, 4)),
                                            pytest.param("vgg16", VGG16_CONVS, (0, 3), marks=pytest.mark.slow)])
def test_state_dict_keys_follow_deepcluster_layout(arch, convs, fcs):
    sd = build_model(arch, sobel=True, input_size=224, num_classes=10).state_dict()
    for i in convs:
        assert f"features.{i}.weight" in sd and f"features.{i + 1}.running_mean" in sd
    for i in fcs:
        assert sd[f"classifier.{i}.weight"].shape[0] == 4096
    assert sd["top_layer.weight"].shape == (10, 4096)
    assert {"sobel.0.weight", "sobel.1.weight"} <= set(sd)
    assert sd["features.0.weight"].shape[1] == 2  # Sobel feeds two gradient channels


@pytest.mark.parametrize("arch,size,fc6_in", [("alexnet", 224, 256 * 6 * 6), pytest.param("vgg16", 224, 512 * 7 * 7, marks=pytest.mark.slow),
                                               ("alexnet", 64, 256), ("alexnet", 96, 256 * 4),
                                               ("vgg16", 64, 512 * 4)])
def test_fc6_input_is_derived_from_the_input_size(arch, size, fc6_in):
    model = build_model(arch, input_size=size).eval()
    fc6 = model.classifier[model.fc_indices[0]]
    assert fc6.in_features == fc6_in
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 4096)


def test_sobel_filters_are_frozen_and_exact():
    model = build_model("alexnet", sobel=True, input_size=64)
    assert not any(p.requires_grad for p in model.sobel.parameters())
    gx = model.sobel[1].weight[0, 0]
    assert torch.equal(gx, torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]))


def test_same_seed_gives_identical_weights():
    a = build_model("alexnet", input_size=64, seed=3).state_dict()
    b = build_model("alexnet", input_size=64, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_penultimate_is_fc7_before_relu():
    model = build_model("alexnet", input_size=64, seed=0).eval()
    x = torch.randn(4, 3, 64, 64)
    pre = model.penultimate(x)
    assert (pre < 0).any()
    assert torch.allclose(torch.relu(pre), model(x))


def test_conv_outputs_are_the_five_alexnet_relus():
    model = build_model("alexnet", input_size=224).eval()
    outs = model.conv_outputs(torch.zeros(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [96, 256, 384, 384, 256]
    assert [o.shape[-1] for o in outs] == [55, 27, 13, 13, 13]


def test_too_small_input_is_a_user_error():
    with pytest.raises(UserError):
        build_model("alexnet", input_size=16)


# ---------------------------------------------------------------------------- architecture registry


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet101" else n
                                  for n in ARCHITECTURES])  # ResNet-101 is ResNet-50 with a longer res4
@pytest.mark.parametrize("size", [64, 96])
def test_every_architecture_meets_the_registry_contract(name, size):
    arch = ARCHITECTURES[name]
    model = build_model(name, sobel=False, input_size=size, num_classes=5, seed=0).eval()
    assert model.arch is arch and arch.name == name and arch.conv_naming in ("flat", "block")
    assert model.top_layer.in_features == arch.descriptor_dim
    x = torch.randn(1, 3, size, size)
    assert model.penultimate(x).shape == (1, arch.descriptor_dim)
    if arch.family == "resnet":  # no fc6/fc7: five named taps, the descriptor is the pooled res5
        assert model.classifier is None and arch.fc_indices is None and len(arch.taps) == 5
        shapes = conv_shapes(name, size)
        assert shapes[:-1] == [tuple(o.shape[1:]) for o in model.conv_outputs(x)]
        assert shapes[-1] == tuple(model.trunk(x).shape[1:]) == model.feature_shape
        assert shapes[-1][0] == arch.descriptor_dim
        return
    assert arch.family == "convfc" and arch.descriptor_dim == arch.fc_width
    fc6, fc7 = (model.classifier[i] for i in arch.fc_indices)
    assert isinstance(fc6, nn.Linear) and isinstance(fc7, nn.Linear)
    assert fc6.out_features == fc7.in_features == fc7.out_features == arch.fc_width
    assert model.top_layer.in_features == arch.fc_width
    # the dry-run shapes are what a real forward gives
    x = torch.randn(1, 3, size, size)
    real = [tuple(o.shape[1:]) for o in model.conv_outputs(x)]
    shapes = conv_shapes(name, size)
    assert shapes[:-1] == real and shapes[-1] == tuple(model.trunk(x).shape[1:]) == model.feature_shape
    assert fc6.in_features == math.prod(model.feature_shape)
    taps = arch.probe_taps
    assert len(taps) == 5 and list(taps) == sorted(set(taps)) and taps[-1] < len(real)
    assert model.penultimate(x).shape == (1, arch.fc_width)


def test_both_clis_and_the_converter_offer_exactly_the_registered_architectures():
    from dcbench.cli_convert import get_args_parser as convert_parser
    from dcbench.train.cli import build_parser as train_parser

    for parser in (train_parser(), convert_parser()):
        arch_flag = next(a for a in parser._actions if "--arch" in a.option_strings)
        assert tuple(arch_flag.choices) == ARCHS == tuple(ARCHITECTURES)


def test_unknown_architecture_is_one_user_error_naming_the_choices():
    with pytest.raises(UserError, match="resnet18.*alexnet, vgg16, resnet50, resnet101"):
        get_architecture("resnet18")
    with pytest.raises(UserError, match="resnet18"):
        build_model("resnet18")

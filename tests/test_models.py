import pytest
import torch

from dcbench.errors import UserError
from dcbench.models import build_model

# Key layout of the original DeepCluster modules (features / classifier / top_layer / sobel).
ALEXNET_CONVS = [0, 4, 8, 11, 14]
VGG16_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


@pytest.mark.parametrize("arch,convs,fcs", [("alexnet", ALEXNET_CONVS, (1, 4)), ("vgg16", VGG16_CONVS, (0, 3))])
def test_state_dict_keys_follow_deepcluster_layout(arch, convs, fcs):
    sd = build_model(arch, sobel=True, input_size=224, num_classes=10).state_dict()
    for i in convs:
        assert f"features.{i}.weight" in sd and f"features.{i + 1}.running_mean" in sd
    for i in fcs:
        assert sd[f"classifier.{i}.weight"].shape[0] == 4096
    assert sd["top_layer.weight"].shape == (10, 4096)
    assert {"sobel.0.weight", "sobel.1.weight"} <= set(sd)
    assert sd["features.0.weight"].shape[1] == 2  # Sobel feeds two gradient channels


@pytest.mark.parametrize("arch,size,fc6_in", [("alexnet", 224, 256 * 6 * 6), ("vgg16", 224, 512 * 7 * 7),
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

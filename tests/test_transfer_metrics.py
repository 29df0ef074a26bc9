"""Pure pieces of the classification transfer tasks: AP / mAP, crop averaging, pooling rule,
the one-pass five-head probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch import nn

from dcbench.models import build_model
from dcbench.transfer import protocol, training
from dcbench.transfer.linear_probe import LAYERS, make_forward, pooling_for
from dcbench.transfer.voc_classification import masked_bce

# --------------------------------------------------------------------------------------------
# AP / mAP


@pytest.mark.parametrize("scores,labels", [
    ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]),                  # all tied
    ([0.9, 0.5, 0.5, 0.1, 0.5, 0.9], [0, 1, 0, 1, 1, 1]),  # partial ties across labels
    ([1.0, 2.0, 3.0], [0, 0, 1]),
])
def test_average_precision_matches_sklearn(scores, labels):
    assert training.average_precision(np.array(scores), np.array(labels)) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12)


def test_average_precision_random_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        assert training.average_precision(scores, labels) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12)


def test_voc_map_masks_difficult_and_matches_sklearn_per_class():
    # 6 images x 3 classes; 1 = present, 0 = difficult only, -1 = absent.
    targets = np.array([[1, -1, 0],
                        [0, 1, -1],
                        [-1, 1, 1],
                        [1, 0, -1],
                        [-1, -1, 1],
                        [0, -1, -1]], dtype=np.float32)
    scores = np.array([[0.9, 0.1, 0.8],
                       [0.95, 0.7, 0.2],     # a difficult image scored highest for class 0: ignored
                       [0.3, 0.7, 0.6],      # tie with image 1 for class 1
                       [0.3, 0.9, 0.1],
                       [0.3, 0.2, 0.6],      # tie with image 2 for class 2
                       [0.99, 0.3, 0.0]])
    aps = training.voc_class_aps(scores, targets)
    for c in range(3):
        keep = targets[:, c] != 0
        expected = average_precision_score(targets[keep, c] > 0, scores[keep, c])
        assert aps[c] == pytest.approx(expected, abs=1e-12)
    # Counting the difficult images as negatives would lower class 0's AP: masking matters.
    assert aps[0] > average_precision_score(targets[:, 0] > 0, scores[:, 0])


def test_ap_without_positive_is_nan_and_left_out():
    targets = np.array([[1, -1], [-1, 0], [-1, -1]], dtype=np.float32)
    aps = training.voc_class_aps(np.random.default_rng(0).random((3, 2)), targets)
    assert 0 < aps[0] <= 1
    assert np.isnan(aps[1])


def test_masked_bce_ignores_difficult():
    logits = torch.tensor([[2.0, -1.0, 5.0]])
    t = torch.tensor([[1.0, -1.0, 0.0]])
    expected = (nn.functional.binary_cross_entropy_with_logits(logits[0, :2], torch.tensor([1.0, 0.0]),
                                                                reduction="sum"))
    assert masked_bce(logits, t).item() == pytest.approx(expected.item())


# --------------------------------------------------------------------------------------------
# Crop averaging


def test_average_crops_softmax_mean_per_image():
    torch.manual_seed(0)
    scores = torch.randn(3 * 10, 5)  # 3 images x 10 crops, crops of an image adjacent
    avg = training.average_crops(scores, 10)
    for i in range(3):
        expected = torch.softmax(scores[i * 10:(i + 1) * 10], 1).mean(0)
        assert torch.allclose(avg[i], expected)
    raw = training.average_crops(scores, 10, softmax=False)
    assert torch.allclose(raw[1], scores[10:20].mean(0))
    with pytest.raises(ValueError):
        training.average_crops(torch.randn(7, 5), 10)


def test_ten_crop_changes_the_decision():
    # One crop confidently wrong, nine mildly right: the 10-crop average picks the right class.
    scores = torch.tensor([[10.0, 0.0]] + [[0.0, 1.0]] * 9)
    assert training.top1(training.average_crops(scores, 10), torch.tensor([1])) == 100.0
    assert training.top1(scores[:1], torch.tensor([1])) == 0.0


def test_ten_crop_transform_shape():
    from PIL import Image

    meta = {"input_size": 64, "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "colour_order": "RGB"}}
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8))
    x = protocol.ten_crop_transform(meta, 64)(img)
    assert x.shape == (10, 3, 64, 64)
    assert torch.allclose(x[1], x[5].flip(-1))  # top-right crop == mirror of the mirrored image's top-left
    assert not torch.allclose(x[0], x[1])


# --------------------------------------------------------------------------------------------
# Pooling rule


def test_pooling_alexnet_224_is_the_original():
    pools = pooling_for("alexnet", 224)
    assert [(p.kernel, p.stride, p.padding) for p in pools] == [(6, 6, 3), (4, 4, 0), (3, 3, 1), (3, 3, 1), (2, 2, 0)]
    assert [p.dim for p in pools] == [9600, 9216, 9600, 9600, 9216]


def test_pooling_vgg16_224_table():
    pools = pooling_for("vgg16", 224)
    assert [(p.channels, p.spatial) for p in pools] == [(64, 224), (128, 112), (256, 56), (512, 28), (512, 14)]
    assert [(p.kernel, p.padding, p.out) for p in pools] == [(18, 0, 12), (13, 0, 8), (9, 0, 6), (6, 0, 4), (3, 0, 4)]
    assert [p.dim for p in pools] == [9216, 8192, 9216, 8192, 8192]


@pytest.mark.parametrize("arch,size", [("alexnet", 224), ("alexnet", 64), ("alexnet", 96), ("vgg16", 64)])
def test_pooled_dims_match_the_network(arch, size):
    model = build_model(arch, input_size=size, seed=0).eval()
    pools = pooling_for(arch, size)
    feats = make_forward(model, pools, LAYERS)(torch.randn(2, 3, size, size))
    assert [f.shape[1] for f in feats] == [p.dim for p in pools]
    assert all(p.dim <= 10_000 for p in pools)


def test_one_forward_equals_conv_outputs_pooled():
    model = build_model("alexnet", input_size=64, seed=0).eval()
    pools = pooling_for("alexnet", 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = make_forward(model, pools, LAYERS)(x)
        ref = model.conv_outputs(x)
        only2 = make_forward(model, pools, ("conv2",))(x)
    for f, r, p in zip(feats, ref, pools):
        pooled = nn.AvgPool2d(p.kernel, p.stride, p.padding)(r).flatten(1)
        assert torch.allclose(f, pooled, atol=1e-6)
    assert len(only2) == 1 and torch.allclose(only2[0], feats[1], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Five heads, one pass


def test_five_heads_one_trunk_forward_per_batch():
    calls = {"n": 0}
    dims = [6, 5, 4, 4, 3]

    def trunk(x):  # a mock trunk: counts its forwards, returns five "layers"
        calls["n"] += 1
        return [x[:, :d] * (i + 1) for i, d in enumerate(dims)]

    g = torch.Generator().manual_seed(0)
    train = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
    val = [(torch.randn(4, 2, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    heads = nn.ModuleList([nn.Linear(d, 3) for d in dims])
    before = [h.weight.detach().clone() for h in heads]
    hist = training.train_heads(heads, training.stream_batches(lambda e: train, trunk, "cpu"),
                              training.stream_val_batches(lambda: val, trunk, "cpu"), epochs=3, lr=0.1,
                              momentum=0.9, weight_decay=0.0, device="cpu")
    assert calls["n"] == 3 * (len(train) + len(val))  # not 5x that
    assert len(hist) == 5 and all(len(h) == 3 for h in hist)
    assert all(not torch.equal(b, h.weight) for b, h in zip(before, heads))


def test_inverse_sqrt_lr():
    assert training.inverse_sqrt_lr(0.01, 1e-4, 0) == 0.01
    assert training.inverse_sqrt_lr(0.01, 1e-4, 10**6) == pytest.approx(0.01 / np.sqrt(2))


def test_align_classes_rejects_unknown_val_class():
    assert protocol.align_classes(["a", "b", "c"], ["a", "c"], "x") == [0, 2]
    from dcbench.errors import UserError

    with pytest.raises(UserError, match="missing from train: d"):
        protocol.align_classes(["a", "b"], ["a", "d"], "x")


# --------------------------------------------------------------------------------------------
# k-NN graph


def test_ratio_edge_intra_class_by_hand():
    from dcbench.knn_graph import random_graph_ratio, ratio_edge_intra_class

    labels = np.array([0, 0, 0, 1, 1])
    nn_ = np.array([[1, 3], [0, 2], [3, 4], [4, 0], [3, 2]])
    r = ratio_edge_intra_class(nn_, labels)
    assert r == {0: pytest.approx(3 / 6), 1: pytest.approx(2 / 4)}
    assert random_graph_ratio(labels) == {0: pytest.approx(0.5), 1: pytest.approx(0.25)}


def test_knn_excludes_self_and_is_exact():
    from dcbench.knn_graph import knn

    x = np.array([[0.0], [1.0], [3.0], [7.0]], dtype=np.float32)
    assert knn(x, 2)[1].tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]


def test_filters_composed_with_sobel_act_like_the_network():
    from torch.nn import functional as F

    from dcbench.transfer.knn_graph import first_layer_filters

    model = build_model("alexnet", sobel=True, input_size=64, seed=0).eval()
    eff, grey = first_layer_filters(model)
    assert grey and eff.shape == (96, 13, 13)
    # conv1(sobel(gray(x))) without biases == conv(gray(x), composed filter) away from the borders.
    x = torch.randn(1, 3, 40, 40)
    conv1 = model.features[0]
    g = model.sobel[0](x)
    ref = F.conv2d(F.conv2d(g, model.sobel[1].weight), conv1.weight, stride=4)
    got = F.conv2d(g, torch.from_numpy(eff).unsqueeze(1), stride=4)
    assert torch.allclose(ref, got, atol=1e-4)
    rgb, grey2 = first_layer_filters(build_model("alexnet", sobel=False, input_size=64, seed=0))
    assert not grey2 and rgb.shape == (96, 11, 11, 3)


def test_lowshot_draws_are_deterministic_and_per_class():
    from dcbench.transfer.lowshot import draw_subset

    targets = [0] * 5 + [1] * 7
    a = draw_subset(targets, 3, seed=0, shots=3, draw=0)
    assert a == draw_subset(targets, 3, seed=0, shots=3, draw=0)
    assert a != draw_subset(targets, 3, seed=0, shots=3, draw=1)
    assert sum(targets[i] == 0 for i in a) == 3 and sum(targets[i] == 1 for i in a) == 3


def test_steps_restarts_the_loader_and_skips_unreadable_batches():
    loader = [1, None, [], 2]  # None / [] = every image of the batch unreadable
    assert list(training.steps(loader, 5)) == [1, 2, 1, 2, 1]
    assert list(training.steps(loader, 0)) == []


def test_assert_unchanged_catches_a_moved_batchnorm_buffer():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    snap = training.parameter_snapshot(net)
    training.assert_unchanged(net, snap, "trunk")
    net.train()(torch.randn(2, 3, 8, 8))  # updates running_mean/var only
    with pytest.raises(RuntimeError, match="running_mean"):
        training.assert_unchanged(net, snap, "trunk")


def test_device_losses_read_back_in_blocks_and_raise_on_a_non_finite_one(monkeypatch):
    import torch

    from dcbench.errors import UserError
    from dcbench.transfer.training import DeviceLosses

    reads = []
    real_stack = torch.stack
    monkeypatch.setattr(torch, "stack", lambda xs, *a, **k: reads.append(len(xs)) or real_stack(xs, *a, **k))
    log = DeviceLosses(every=4)
    for v in range(10):
        log.append(torch.tensor(float(v), requires_grad=True) * 1)
    assert reads == [4, 4]  # one host read per 4 steps, not one per step
    assert log.flush() == [float(v) for v in range(10)] and reads == [4, 4, 2]
    bad = DeviceLosses(every=3, diverged="training diverged; pass a lower --lr")
    bad.append(torch.tensor(1.0))
    bad.append(torch.tensor(float("nan")))
    with pytest.raises(UserError, match="lower --lr"):
        bad.flush()


def test_place_puts_conv_weights_channels_last_under_bf16_only():
    net = build_model("alexnet", sobel=False, input_size=64, seed=0)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    training.place(net, "cpu", "fp32")
    assert conv.weight.is_contiguous()
    training.place(net, "cpu", "bf16")
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()

"""voc-segmentation: mIoU by hand, FCN built from fc6/fc7, the frozen trunk, bad input, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from outcome_checks import check_intervals  # tests/outcome_checks.py

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.transfer import cli
from dcbench.transfer.training import assert_unchanged, parameter_snapshot
from dcbench.transfer.voc_eval import confusion_matrix, segmentation_scores
from dcbench.transfer.voc_segmentation import (
    FCN32s,
    PairTransform,
    train_fcn,
)


def test_miou_by_hand_with_void_border():
    # 4x4 images, a void (255) border of width 1 around a 2x2 centre; classes 0, 1, 2 used.
    t1 = np.full((4, 4), 255)
    t1[1:3, 1:3] = [[0, 1], [1, 1]]
    p1 = np.array([[2, 2, 2, 2], [2, 0, 1, 2], [2, 0, 1, 2], [2, 2, 2, 2]])  # border ignored
    t2 = np.full((4, 4), 255)
    t2[1:3, 1:3] = [[2, 2], [0, 0]]
    p2 = np.array([[1, 1, 1, 1], [1, 2, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    hist = confusion_matrix(t1, p1, 21) + confusion_matrix(t2, p2, 21)
    assert hist.sum() == 8  # only the 8 non-void pixels count
    # by hand: class 0: gt {t1(1,1), t2(2,1), t2(2,2)}, pred {p1(1,1), p1(2,1), p2(2,1), p2(2,2)}
    #   TP 3 (t1(1,1), t2(2,1), t2(2,2)); FP 1 (p1(2,1) where gt is 1); FN 0 -> IoU 3/4
    # class 1: gt {t1(1,2), t1(2,1), t1(2,2)}, pred {p1(1,2), p1(2,2), p2(1,2)}
    #   TP 2; FN 1 (t1(2,1) predicted 0); FP 1 (p2(1,2) where gt is 2) -> IoU 2/4
    # class 2: gt {t2(1,1), t2(1,2)}, pred {p2(1,1)} -> TP 1, FN 1 -> IoU 1/2
    # other 18 classes: in neither ground truth nor prediction -> left out of the mean.
    s = segmentation_scores(hist)
    assert s["iou"][:3] == pytest.approx([75.0, 50.0, 50.0])
    assert all(v is None for v in s["iou"][3:])
    assert s["miou"] == pytest.approx((75 + 50 + 50) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 6 / 8)


def test_miou_counts_a_class_that_is_only_predicted():
    t = np.array([[0, 0], [255, 255]])
    p = np.array([[0, 5], [5, 5]])  # class 5 predicted on a gt-0 pixel: IoU 0, and it counts
    s = segmentation_scores(confusion_matrix(t, p, 21))
    assert s["iou"][0] == pytest.approx(50.0) and s["iou"][5] == 0.0
    assert s["miou"] == pytest.approx(25.0)


def _tiny_model(input_size=64, seed=0):
    return build_model("alexnet", sobel=True, batchnorm=True, input_size=input_size, seed=seed)


def test_fcn_fc_layers_reproduce_the_checkpoint_classifier():
    model = _tiny_model(64).eval()
    net = FCN32s(model, Path("ckpt"), frozen_trunk=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = net.trunk(x)  # 1x1 at 64 px: fc6 as a conv with a 1x1 kernel = fc6 itself
        fc7 = torch.relu(net.fc7(torch.relu(net.fc6(y.flatten(1)))))
        assert torch.allclose(fc7, model(x), atol=1e-5)
        assert net(torch.randn(1, 3, 97, 131)).shape == (1, 21, 97, 131)
    model96 = _tiny_model(160).eval()  # conv5 output 4x4: fc6 becomes a 4x4 conv
    assert model96.feature_shape[1:] == (4, 4)
    net96 = FCN32s(model96, Path("ckpt"), frozen_trunk=True).eval()
    assert net96(torch.randn(1, 3, 150, 170)).shape == (1, 21, 150, 170)


@pytest.mark.parametrize("layers", ["fc6-8", "all"])
def test_frozen_trunk_is_untouched(layers, one_thread):
    torch.manual_seed(0)
    model = _tiny_model(64)
    net = FCN32s(model, Path("ckpt"), frozen_trunk=layers == "fc6-8")
    before = parameter_snapshot(net.trunk)
    head_before = parameter_snapshot(net)
    assert any(k.endswith("running_mean") for k in before)
    tf = PairTransform((0.5,) * 3, (0.25,) * 3, 64)
    rng = np.random.default_rng(0)
    from PIL import Image

    data = []
    for _ in range(3):
        img = Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8))
        mask = Image.fromarray(rng.choice([0, 1, 2, 255], (72, 80)).astype(np.uint8))
        data.append(tf(img, mask))
    proto = dict(iterations=4, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_steps=[], loss_reduction="mean")
    losses = train_fcn(net, data, proto, torch.device("cpu"), 0)
    assert len(losses) == 4
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, head_before[k])}
    assert "score.weight" in changed and "fc6.weight" in changed
    if layers == "fc6-8":
        assert_unchanged(net.trunk, before, "test")
        assert not any(k.startswith("trunk.") for k in changed)
    else:
        trunk_changed = {k for k in changed if k.startswith("trunk.")}
        assert "trunk.features.0.weight" in trunk_changed
        # BatchNorm statistics stay frozen in both variants (one image per batch); Sobel never trains
        assert not any(k.endswith(("running_mean", "running_var")) for k in trunk_changed)
        assert not any(k.startswith("trunk.sobel") for k in trunk_changed)
        with pytest.raises(RuntimeError, match="changed during training"):
            assert_unchanged(net.trunk, before, "test")


# ----------------------------------------------------------------------------------------------
# Bad input and end to end
@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "rand64", _tiny_model(64), origin="random")


def _run(argv, capsys):
    code = run_cli(cli.main, argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_checkpoint_without_fc_is_exit_2(ckpt64, tmp_path, embedded_root, capsys, strip_fc):
    bad = strip_fc(ckpt64, tmp_path / "nofc")
    code, err = _run(["voc-segmentation", "--checkpoint", str(bad), "--data", str(embedded_root),
                      "--scale", "smoke", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert str(bad) in err and "classifier" in err


def test_missing_segmentation_split_is_exit_2(ckpt64, tmp_path, capsys):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "JPEGImages").mkdir()
    code, err = _run(["voc-segmentation", "--checkpoint", str(ckpt64), "--data", str(tmp_path),
                      "--scale", "smoke", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "ImageSets/Segmentation/train.txt" in err


def test_train_split_overlapping_val_is_exit_2(ckpt64, tmp_path, embedded_root, capsys):
    code, err = _run(["voc-segmentation", "--checkpoint", str(ckpt64), "--data", str(embedded_root),
                      "--scale", "smoke", "--train-split", "trainval", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "also in val" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_voc_segmentation_end_to_end(ckpt64, tmp_path, embedded_root, one_thread):
    out = tmp_path / "results"
    code = run_cli(cli.main, ["voc-segmentation", "--checkpoint", str(ckpt64), "--data", str(embedded_root),
                              "--scale", "smoke", "--iterations", "15", "--layers", "fc6-8",
                              "--workers", "0", "--out", str(out)])
    assert code == 0
    (path,) = out.glob("voc-segmentation__*.json")
    r = json.loads(path.read_text())
    assert r["variant"] == {"dataset": "VOC2012", "layers": "fc6-8"}
    assert set(r["metrics"]) == {"miou", "pixel_acc"} and 0 <= r["metrics"]["miou"] <= 100
    assert r["scale"] == "smoke" and r["protocol"]["iterations"] == 15 and r["protocol"]["model"] == "FCN-32s"
    assert r["data"]["sizes"]["train"] > 0 and r["data"]["sizes"]["val"] > 0
    assert len(r["details"]["confusion_matrix"]) == 21
    # mIoU averages the classes a resample happens to contain: its interval need not hold the value
    outcomes = check_intervals(path, r, ["miou", "pixel_acc"], contains=False)
    lo, hi = r["intervals"]["metrics"]["pixel_acc"]
    assert lo <= r["metrics"]["pixel_acc"] <= hi
    conf = outcomes["miou"].arrays["confusion"]
    assert conf.shape == (r["data"]["sizes"]["val"], 21, 21) and outcomes["pixel_acc"].rule == "pixel_acc"
    assert conf.sum(0).tolist() == r["details"]["confusion_matrix"]  # the per-image matrices sum to the split's


def test_diverging_fcn_training_is_one_line_exit_2_and_writes_nothing(ckpt64, tmp_path, embedded_root, capsys,
                                                                     one_thread):
    out = tmp_path / "r"
    code, err = _run(["voc-segmentation", "--checkpoint", str(ckpt64), "--data", str(embedded_root),
                      "--scale", "smoke", "--iterations", "4", "--lr", "1e30", "--layers", "fc6-8",
                      "--workers", "0", "--out", str(out)], capsys)
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error")]  # not the bar
    assert code == 2 and len(errors) == 1 and "diverged" in errors[0] and "--lr" in errors[0]
    assert not list(out.rglob("*.json"))

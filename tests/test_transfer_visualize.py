"""dc-transfer visualize: the gradient-ascent loss, the top-k retrieval, bad input, the pictures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dcbench.checkpoint import save_checkpoint
from dcbench.errors import run_cli
from dcbench.models import build_model
from dcbench.results import read_result
from dcbench.transfer import visualize as V
from dcbench.transfer.cli import main


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "rand64"
    save_checkpoint(path, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    return path


@pytest.fixture(scope="module")
def val_tree(tmp_path_factory, tiny_class_tree) -> Path:
    root = tmp_path_factory.mktemp("vis-data")
    tiny_class_tree(root / "val", per_class=3)   # 12 images
    return root


def _argv(ckpt, data, out, *extra):
    return [str(a) for a in ("visualize", "--checkpoint", ckpt, "--data", data, "--out", out, "--scale", "smoke",
                             "--device", "cpu", "--workers", "0", "--iterations", "4", "--num-channels", "2",
                             "--image-size", "64", *extra)]


def test_gradient_ascent_raises_the_target_channels_share(one_thread):
    model = build_model("alexnet", sobel=False, batchnorm=True, input_size=64, seed=0).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    channels = [0, 3, 7]
    noise = torch.stack([V.initial_noise(0, 0, c, 64) for c in channels])
    target = torch.tensor(channels)

    def log_share(x):  # -CE: the release's objective without the small L2 term (the softmax itself underflows)
        with torch.no_grad():
            return torch.log_softmax(V.target_logits(model, x, 0, target), 1)[torch.arange(3), target]

    x = V.gradient_ascent(model, 0, channels, 64, iterations=20, lr=3.0, weight_decay=1e-5, sigma=0.3,
                          blur_every=5, seed=0)
    before, after = log_share(noise), log_share(x)
    assert (after > before).all(), (before, after)
    # the loss is relative (a softmax share): the target's absolute mean activation need not rise,
    # and on this net channel 3's falls slightly while its share rises


def test_a_channels_picture_does_not_depend_on_its_batch(one_thread):
    model = build_model("alexnet", sobel=True, input_size=64, seed=0).eval()
    kw = dict(iterations=3, lr=3.0, weight_decay=1e-5, sigma=0.3, blur_every=5, seed=0)
    alone = V.gradient_ascent(model, 2, [5], 64, **kw)
    together = V.gradient_ascent(model, 2, [1, 5], 64, **kw)
    assert torch.allclose(alone[0], together[1], atol=1e-4)


def test_top_k_are_the_highest_scores_by_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 5)).astype(np.float64)  # many ties
    top = V.top_k(scores, 9)
    for c in range(scores.shape[1]):
        brute = sorted(range(40), key=lambda i: (-scores[i, c], i))[:9]
        assert list(top[c]) == brute


def test_channel_scores_rank_by_the_spatial_mean_of_the_post_relu_map(one_thread):
    model = build_model("alexnet", sobel=True, input_size=64, seed=0).eval()
    x = torch.randn(10, 1, 3, 64, 64)
    loader = [(x[:6], None), (x[6:], None)]
    got = V.channel_scores(model, loader, [0, 4], [[0, 2], [1]], "mean", "cpu")
    with torch.no_grad():
        outs = model.conv_outputs(x[:, 0])
    assert np.allclose(got[0], outs[0][:, [0, 2]].mean((2, 3)).numpy(), atol=1e-6)
    assert np.allclose(got[1], outs[4][:, [1]].mean((2, 3)).numpy(), atol=1e-6)
    peak = V.channel_scores(model, loader, [0], [[0]], "max", "cpu")[0]
    assert np.allclose(peak[:, 0], outs[0][:, 0].amax((1, 2)).numpy(), atol=1e-6)


def test_resnet_layers_are_conv1_res3_res5():
    model = build_model("resnet50", sobel=True, input_size=64, seed=0).eval()
    assert V.layer_channels(model, 32) == [64, 512, 2048]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        taps = model.tap_outputs(x)
        assert torch.equal(V.layer_maps(model, x, 4)[0], taps[4])
        assert torch.equal(V.layer_maps(model, x, 0)[0], taps[0])


def test_channel_beyond_the_layer_is_one_line_and_writes_nothing(ckpt64, val_tree, tmp_path, capsys):
    code = run_cli(main, _argv(ckpt64, val_tree, tmp_path / "res", "--channels", "0,96"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--channels 0,96" in err and "conv1 has 96 channels" in err
    assert not (tmp_path / "res").exists()


def test_fewer_than_nine_images_is_one_line_naming_the_folder(ckpt64, tmp_path, tiny_class_tree, capsys):
    tiny_class_tree(tmp_path / "small" / "val", per_class=2)   # 8 images
    code = run_cli(main, _argv(ckpt64, tmp_path / "small", tmp_path / "res"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(tmp_path / "small" / "val") in err and "8 images" in err
    assert not (tmp_path / "res").exists()


def _pictures(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("visualize/*/*"))}


def test_end_to_end_writes_pictures_page_and_result_and_repeats_byte_for_byte(ckpt64, val_tree, tmp_path,
                                                                              capsys, one_thread):
    assert run_cli(main, _argv(ckpt64, val_tree, tmp_path / "a")) == 0
    files = sorted((tmp_path / "a").glob("visualize__*.json"))
    assert len(files) == 1
    result = read_result(files[0])  # the schema and the task's metric pattern
    assert set(result["metrics"]) == {"conv1_prob", "conv3_prob", "conv5_prob"}
    d = result["details"]
    assert d["channels"] == {"conv1": [0, 1], "conv3": [0, 1], "conv5": [0, 1]}
    folder = tmp_path / "a" / Path(d["page"]).parent
    names = {p.name for p in folder.iterdir()}
    assert names == {"index.md", *(f"{k}_{n}.png" for k in ("ascent", "top9") for n in ("conv1", "conv3", "conv5"))}
    page = (folder / "index.md").read_text()
    for n in ("conv1", "conv3", "conv5"):
        assert f"](ascent_{n}.png)" in page and f"](top9_{n}.png)" in page
        assert (tmp_path / "a" / d[f"png_ascent_{n}"]).is_file()
        assert all(len(row) == 9 for row in d["top"][n].values())
    # seeded: another run gives the same PNG bytes and the same numbers
    assert run_cli(main, _argv(ckpt64, val_tree, tmp_path / "b")) == 0
    assert _pictures(tmp_path / "a") == _pictures(tmp_path / "b")
    again = read_result(sorted((tmp_path / "b").glob("visualize__*.json"))[0])
    assert again["metrics"] == result["metrics"]


def test_leaderboard_links_the_page(ckpt64, val_tree, tmp_path, one_thread):
    from dcbench.leaderboard.cli import main as lb_main

    assert run_cli(main, _argv(ckpt64, val_tree, tmp_path / "res", "--iterations", "1", "--num-channels", "1")) == 0
    assert lb_main([str(tmp_path / "res"), "--out", str(tmp_path / "LB.md"), "--no-plots"]) == 0
    md = (tmp_path / "LB.md").read_text()
    assert "[rand64 feature visualisation page](res/visualize/rand64-" in md and "/index.md)" in md

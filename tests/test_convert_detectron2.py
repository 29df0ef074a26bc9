"""dc-convert --to detectron2: key mapping, provenance note, loadable with weights_only=True."""

from __future__ import annotations

import pytest
import torch

from dcbench import cli_convert
from dcbench.checkpoint import save_checkpoint
from dcbench.convert import detectron2_key_map
from dcbench.errors import run_cli
from dcbench.models import build_model


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_export_keys_and_safe_loading(arch, tmp_path, capsys):
    model = build_model(arch, sobel=arch == "alexnet", batchnorm=True, input_size=64, num_classes=7, seed=0)
    ckpt = save_checkpoint(tmp_path / "ck", model, origin="random")
    out = tmp_path / "d2" / "model_final.pth"
    assert run_cli(cli_convert.main, ["--to", "detectron2", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert set(obj) == {"model", "__author__", "matching_heuristics", "dcbench"}
    assert obj["matching_heuristics"] is False and obj["__author__"] == "dcbench"
    weights = obj["model"]
    sd = model.state_dict()
    fc6, fc7 = model.fc_indices
    assert torch.equal(weights["roi_heads.box_head.fc1.weight"], sd[f"classifier.{fc6}.weight"])
    assert torch.equal(weights["roi_heads.box_head.fc2.bias"], sd[f"classifier.{fc7}.bias"])
    if arch == "alexnet":
        assert torch.equal(weights["backbone.conv1.weight"], sd["features.0.weight"])
        assert torch.equal(weights["backbone.conv1.norm.running_var"], sd["features.1.running_var"])
        assert torch.equal(weights["backbone.conv5.weight"], sd["features.14.weight"])
        assert "backbone.sobel.filter.weight" in weights
        assert sum(k.endswith(".weight") and ".norm." not in k for k in weights if k.startswith("backbone.conv")) == 5
    else:
        assert torch.equal(weights["backbone.conv1_1.weight"], sd["features.0.weight"])
        assert torch.equal(weights["backbone.conv5_3.norm.weight"], sd["features.41.weight"])
        assert not any("sobel" in k for k in weights)
    # every weight but the clustering head is exported, each exactly once; the rest is reported
    assert len(weights) == len([k for k in sd if not k.startswith("top_layer.")])
    assert "dropped  top_layer.weight" in printed and "renamed  classifier." in printed
    note = obj["dcbench"]
    assert note["model_sha256"] == model_sha(ckpt) and note["arch"] == arch
    assert note["suggested_config"]["INPUT.FORMAT"] == "RGB"
    assert note["left_out"] == ["top_layer.weight", "top_layer.bias"]
    assert set(note["key_map"].values()) >= {"roi_heads.box_head.fc1.", "roi_heads.box_head.fc2."}


def model_sha(ckpt):
    import json

    return json.loads((ckpt / "meta.json").read_text())["model_sha256"]


def test_key_map_is_injective():
    m = detectron2_key_map(build_model("vgg16", input_size=64))
    assert len(set(m.values())) == len(m)


@pytest.mark.parametrize("argv, needle", [
    (["--to", "detectron2"], "needs CKPT and OUT"),
    (["--to", "detectron2", "--from", "random", "x", "y"], "not both"),
    (["--to", "detectron2", "/nonexistent/ck", "out.pth"], "/nonexistent/ck"),
    (["--from", "random"], "--out is required"),
])
def test_bad_export_usage_is_exit_2(argv, needle, capsys):
    assert run_cli(cli_convert.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err

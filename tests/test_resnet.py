"""ResNet trunks: the registry entries against torchvision's own forward, checkpoint
format v2 (and v1 unchanged), dc-convert from the prefixes real releases use, and the transfer
tasks' ResNet paths (detector and FCN heads, probes, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from dcbench.checkpoint import load_checkpoint, read_meta, save_checkpoint
from dcbench.cli_convert import main as convert_main
from dcbench.cli_inspect import main as inspect_main
from dcbench.errors import run_cli
from dcbench.models import RESNET_TAPS, build_model

PREFIXES = ("module.", "module.encoder_q.", "backbone.", "model.")


@pytest.fixture(scope="module")
def tv50() -> nn.Module:
    """A randomly initialised torchvision resnet50 with non-trivial BatchNorm statistics and affine
    parameters (at init they are 0/1, under which a mis-mapped BN key could go unnoticed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tv = torchvision.models.resnet50(weights=None).eval()
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.1)
    return tv


def torchvision_features(tv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(res5 map, pooled res5) as torchvision's own ``forward`` computes them (hooks, no re-implementation)."""
    got = {}
    hooks = [tv.layer4.register_forward_hook(lambda _m, _i, o: got.__setitem__("res5", o)),
             tv.avgpool.register_forward_hook(lambda _m, _i, o: got.__setitem__("gap", o))]
    with torch.no_grad():
        tv(x)
    for h in hooks:
        h.remove()
    return got["res5"], torch.flatten(got["gap"], 1)


def trunk_state(tv: nn.Module) -> dict:
    return {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}


def image_batch(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))


# ---------------------------------------------------------------------------------- the registry


def test_resnet50_res5_and_descriptor_are_bit_identical_to_torchvisions_forward(tv50, one_thread):
    net = build_model("resnet50", input_size=64).eval()
    net.load_state_dict(trunk_state(tv50), strict=True)
    x = image_batch()
    res5, gap = torchvision_features(tv50, x)
    with torch.no_grad():
        assert torch.equal(net.trunk(x), res5)
        assert torch.equal(net.penultimate(x), gap) and gap.shape == (2, 2048)
        taps = net.tap_outputs(x)
    assert [t.shape[1] for t in taps] == [64, 256, 512, 1024, 2048]
    assert torch.equal(taps[-1], res5)


@pytest.mark.parametrize("arch,builder", [("resnet50", torchvision.models.resnet50),
                                          ("resnet101", torchvision.models.resnet101)])
def test_resnet_keys_are_torchvisions_without_fc_plus_sobel_and_top_layer(arch, builder):
    with torch.device("meta"):  # names and shapes only
        ours = build_model(arch, sobel=True, input_size=64, num_classes=7).state_dict()
        plain = build_model(arch, sobel=False, input_size=64).state_dict()
        tv = builder(weights=None).state_dict()
    assert set(plain) == set(tv) - {"fc.weight", "fc.bias"}
    assert set(ours) == set(plain) | {"sobel.0.weight", "sobel.0.bias", "sobel.1.weight", "sobel.1.bias",
                                      "top_layer.weight", "top_layer.bias"}
    assert ours["conv1.weight"].shape == (64, 2, 7, 7) and ours["top_layer.weight"].shape == (7, 2048)
    assert all(plain[k].shape == tv[k].shape for k in plain)


def test_a_resnet_cannot_be_built_without_batchnorm():
    from dcbench.errors import UserError

    with pytest.raises(UserError, match="BatchNorm"):
        build_model("resnet50", batchnorm=False, input_size=64)


# ---------------------------------------------------------------------------------- format v2


@pytest.fixture(scope="module")
def r50_ckpt(tmp_path_factory) -> Path:
    model = build_model("resnet50", sobel=True, input_size=64, num_classes=5, seed=0)
    return save_checkpoint(tmp_path_factory.mktemp("r50") / "r50", model, origin="random")


def test_resnet_checkpoints_are_v2_naming_taps_and_descriptor(r50_ckpt, capsys):
    meta = read_meta(r50_ckpt)
    assert meta["format_version"] == 2 and meta["family"] == "resnet" and meta["arch"] == "resnet50"
    assert meta["taps"] == {"conv1": [64, 32, 32], "res2": [256, 16, 16], "res3": [512, 8, 8],
                            "res4": [1024, 4, 4], "res5": [2048, 2, 2]}
    assert list(meta["taps"]) == list(RESNET_TAPS)
    assert meta["descriptor"]["name"] == "gap-res5" and meta["descriptor"]["dim"] == 2048
    ck = load_checkpoint(r50_ckpt)
    assert ck.model.top_layer.weight.shape == (5, 2048) and ck.model.sobel is not None
    assert run_cli(inspect_main, [str(r50_ckpt)]) == 0
    out = capsys.readouterr().out
    assert "v2" in out and "res5 2048x2x2" in out and "gap-res5" in out


def test_alexnet_checkpoints_stay_v1_and_load_unchanged(tmp_path):
    # examples/ holds result files only (no checkpoint folder), so the v1 files are written here by
    # the v1 writer and read back: format_version 1, none of v2's keys, the same weights.
    model = build_model("alexnet", sobel=True, input_size=64, num_classes=5, seed=0)
    path = save_checkpoint(tmp_path / "a", model, origin="random")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 1 and not {"taps", "descriptor", "family"} & set(meta)
    ck = load_checkpoint(path)
    assert all(torch.equal(v, ck.model.state_dict()[k]) for k, v in model.state_dict().items())


def _meta_only(src: Path, dst: Path, change) -> Path:
    """A folder with ``src``'s meta.json changed by ``change``: meta.json is checked before the
    weights are opened, so no weights file is needed to be refused."""
    dst.mkdir()
    meta = json.loads((src / "meta.json").read_text())
    change(meta)
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def _set(key, value):
    def change(meta):
        keys = key.split(".")
        d = meta
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return change


@pytest.mark.parametrize("change,expect", [
    (_set("format_version", 3), "format version 3"),
    (_set("format_version", "2"), "format version '2'"),
    (_set("format_version", 1), "format v1 holds AlexNet/VGG16 only"),
    (_set("taps", {"../../etc/passwd": [1], "res2": [256, 16, 16]}), "taps"),
    (_set("taps", {f"t{i:05d}" * 8: [1] for i in range(2000)}), "taps"),
    (_set("taps.res5", [2048, 10**9, 1]), "taps.res5"),
    (_set("taps", "conv1"), "taps"),
    (_set("descriptor.dim", 10**12), "descriptor"),
    (_set("family", "convfc"), "family"),
    (lambda m: m.pop("descriptor"), "lacks descriptor"),
])
def test_hostile_v2_meta_is_one_line_exit_2(r50_ckpt, tmp_path, capsys, change, expect):
    bad = _meta_only(r50_ckpt, tmp_path / "bad", change)
    assert run_cli(inspect_main, [str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err
    assert len(err) < 600  # a hostile value is shown truncated, never whole


# ---------------------------------------------------------------------------------- dc-convert


def convert(argv, capsys) -> tuple[int, str, str]:
    code = run_cli(convert_main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.parametrize("prefix", PREFIXES)
def test_each_release_prefix_converts_by_renaming_alone(tv50, tmp_path, capsys, prefix, one_thread):
    torch.save({prefix + k: v for k, v in trunk_state(tv50).items()}, tmp_path / "w.pth")
    code, out, err = convert(["--from", "torchvision-resnet50", tmp_path / "w.pth", "--out", tmp_path / "ck",
                              "--input-size", "64"], capsys)
    assert code == 0, err
    assert f"renamed  {prefix}layer1.0.conv1.weight -> layer1.0.conv1.weight" in out  # the list is bounded
    assert "dropped  " not in out and ", 318 renamed, 0 dropped" in out
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.meta["format_version"] == 2 and ck.meta["origin"] == "torchvision"
    assert ck.meta["train_config"]["prefix"] == prefix and not ck.meta["sobel"]
    x = image_batch()
    res5, gap = torchvision_features(tv50, x)
    with torch.no_grad():
        assert torch.equal(ck.model.eval().trunk(x), res5) and torch.equal(ck.model.penultimate(x), gap)


@pytest.mark.slow
def test_moco_query_encoder_is_kept_and_its_heads_key_encoder_and_queue_dropped(tv50, tmp_path, capsys):
    sd = {"module.encoder_q." + k: v for k, v in trunk_state(tv50).items()}
    heads = {"module.encoder_q.fc.0.weight": torch.zeros(16, 2048), "module.encoder_q.fc.0.bias": torch.zeros(16),
             "module.encoder_q.fc.2.weight": torch.zeros(8, 16), "module.encoder_q.fc.2.bias": torch.zeros(8),
             "module.encoder_k.conv1.weight": torch.zeros(64, 3, 7, 7), "module.queue": torch.zeros(8, 4)}
    torch.save({"state_dict": {**sd, **heads}, "epoch": 200, "arch": "resnet50"}, tmp_path / "moco.pth.tar")
    code, out, err = convert(["--from", "torchvision-resnet50", tmp_path / "moco.pth.tar", "--out", tmp_path / "ck",
                              "--input-size", "64", "--quiet"], capsys)
    assert code == 0, err
    dropped = {line.split(None, 1)[1] for line in out.splitlines() if line.startswith("dropped")}
    assert dropped == {"(file entry) epoch", "(file entry) arch", "module.encoder_k.conv1.weight", "module.queue",
                       "module.encoder_q.fc.* (4 keys)"}
    assert "layout   moco (" in out
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.meta["num_classes"] == 0 and ck.model.top_layer is None


@pytest.mark.slow
def test_swav_heads_are_dropped_and_a_resnet_fc_becomes_the_top_layer_from_safetensors(tv50, tmp_path, capsys):
    swav = {"module." + k: v.contiguous() for k, v in trunk_state(tv50).items()}
    swav.update({"module.projection_head.0.weight": torch.zeros(32, 2048), "module.prototypes.weight": torch.zeros(30, 8)})
    save_file(swav, str(tmp_path / "swav.safetensors"))
    code, out, _ = convert(["--from", "torchvision-resnet50", tmp_path / "swav.safetensors", "--out",
                            tmp_path / "swav", "--input-size", "64", "--quiet"], capsys)
    assert code == 0
    assert "dropped  module.projection_head.0.weight" in out and "dropped  module.prototypes.weight" in out
    # a supervised torchvision file: fc (1000 x 2048) is a ResNet fc, kept as the top layer
    torch.save(tv50.state_dict(), tmp_path / "sup.pth")
    code, out, _ = convert(["--from", "torchvision-resnet50", tmp_path / "sup.pth", "--out", tmp_path / "sup",
                            "--input-size", "64", "--quiet"], capsys)
    assert code == 0 and "dropped  " not in out
    ck = load_checkpoint(tmp_path / "sup")
    assert torch.equal(ck.model.top_layer.weight, tv50.fc.weight) and ck.meta["num_classes"] == 1000


def test_convert_refuses_a_non_resnet_file_and_a_wrong_arch_in_one_line(tmp_path, capsys):
    torch.save({"features.0.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "alex.pth")
    code, _, err = convert(["--from", "torchvision-resnet50", tmp_path / "alex.pth", "--out", tmp_path / "x"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no resnet50 trunk key" in err
    code, _, err = convert(["--from", "torchvision-resnet50", tmp_path / "alex.pth", "--out", tmp_path / "x",
                            "--arch", "alexnet"], capsys)
    assert code == 2 and "drop --arch alexnet" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_random_resnet_and_its_detectron2_export_refusal(tmp_path, capsys):
    code, out, err = convert(["--from", "random", "--arch", "resnet50", "--no-sobel", "--input-size", "64",
                              "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert read_meta(tmp_path / "r")["format_version"] == 2
    code, _, err = convert(["--to", "detectron2", tmp_path / "r", tmp_path / "r.pth"], capsys)
    assert code == 2 and "convert-torchvision-to-d2" in err and not (tmp_path / "r.pth").exists()


# ---------------------------------------------------------------------------------- transfer tasks


def test_linear_probe_pools_each_resnet_tap_to_at_most_10k_dims_plus_global_pool():
    from dcbench.transfer.linear_probe import layer_names, pooling_for

    pools = pooling_for("resnet50", 224)
    assert [p.layer for p in pools] == list(layer_names("resnet50")) == [*RESNET_TAPS, "res5_gap"]
    assert [p.dim for p in pools] == [9216, 9216, 8192, 9216, 8192, 2048]  # 64x12², 256x6², 512x4², 1024x3², 2048x2², GAP
    assert pools[-1].kernel == pools[-1].spatial == 7


def test_linear_probe_forward_is_the_pooled_taps_and_gap_is_the_descriptor(one_thread):
    from dcbench.transfer.linear_probe import layer_names, make_forward, pooling_for

    model = build_model("resnet50", input_size=64, seed=0).eval()
    names = layer_names("resnet50")
    pools = pooling_for("resnet50", 64)
    x = image_batch()
    with torch.no_grad():
        feats = make_forward(model, pools, names)(x)
        taps = model.tap_outputs(x)
        assert [f.shape[1] for f in feats] == [p.dim for p in pools]
        assert torch.allclose(feats[-1], model.penultimate(x), atol=1e-5)
        only = make_forward(model, pools, ("res3",))(x)
        pool = pools[2]
        assert torch.equal(only[0], nn.AvgPool2d(pool.kernel, pool.kernel, pool.padding)(taps[2]).flatten(1))


@pytest.mark.parametrize("task,extra,expect", [
    ("mlp", [], "needs fc6/fc7"),
    pytest.param("voc-classification", ["--layers", "fc6-8"], "--layers res5", marks=pytest.mark.slow),
    pytest.param("voc-detection", ["--layers", "fc6-8"], "use --layers all", marks=pytest.mark.slow),
    pytest.param("voc-segmentation", ["--layers", "fc6-8"], "use --layers all", marks=pytest.mark.slow),
])
def test_a_task_that_cannot_use_a_resnet_says_so_in_one_line(r50_ckpt, tmp_path, capsys, task, extra, expect,
                                                              embedded_root):
    from dcbench.transfer.cli import main as transfer_main

    code = run_cli(transfer_main, [task, "--checkpoint", str(r50_ckpt), "--data", str(embedded_root),
                                   "--out", str(tmp_path / "res"), "--workers", "0", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expect in err
    assert not list((tmp_path / "res").glob("*.json"))


@pytest.mark.slow
def test_resnet_fpn_detector_trains_a_step_and_detects_with_the_checkpoints_trunk(r50_ckpt, one_thread):
    from dcbench.transfer.voc_detection import build_detector, protocol_defaults

    ck = load_checkpoint(r50_ckpt)
    proto = {**protocol_defaults("smoke", "faster-rcnn"), "anchor_sizes": [16, 32, 64, 128, 256]}
    det = build_detector(ck.model, r50_ckpt, proto, frozen_trunk=False, mean=[0.5] * 3, std=[0.25] * 3)
    body = det.backbone.body
    assert all(torch.equal(v, ck.model.state_dict()[k]) for k, v in body.state_dict().items())
    det.train()
    assert not any(m.training for m in body.modules() if isinstance(m, nn.BatchNorm2d))
    img = torch.rand(3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([3])}
    losses = det([img], [target])
    sum(losses.values()).backward()
    assert body.layer1[0].conv1.weight.grad is not None and body.sobel[0].weight.grad is None
    det.eval()
    with torch.no_grad():
        out = det([img])[0]
    assert set(out) == {"boxes", "scores", "labels"}


@pytest.mark.slow
def test_resnet_fcn_runs_on_dilated_res5_at_stride_16_with_the_checkpoints_weights(r50_ckpt, one_thread):
    from dcbench.transfer.voc_segmentation import ResNetFCN, build_fcn

    ck = load_checkpoint(r50_ckpt)
    net = build_fcn(ck.model, r50_ckpt, frozen_trunk=False)
    assert isinstance(net, ResNetFCN)
    x = torch.rand(1, 3, 96, 80)
    net.eval()
    with torch.no_grad():
        assert net.trunk(x).shape == (1, 2048, 6, 5)  # stride 16: res5 dilated, not strided
        assert net(x).shape == (1, 21, 96, 80)
    trunk_sd = net.trunk.net.state_dict()
    assert all(torch.equal(v, trunk_sd[k]) for k, v in ck.model.state_dict().items() if not k.startswith("top_layer"))


def test_suite_can_read_a_v2_checkpoint(r50_ckpt):
    from dcbench.suite.plan import read_checkpoint

    assert read_checkpoint(r50_ckpt).sha256 == read_meta(r50_ckpt)["model_sha256"]


def test_family_of_reads_the_registry_and_counts_unknown_archs_as_convfc():
    from dcbench.models import ARCHITECTURES, family_of

    assert {name: family_of(name) for name in ARCHITECTURES} == {
        "alexnet": "convfc", "vgg16": "convfc", "resnet50": "resnet", "resnet101": "resnet"}
    assert family_of("lenet") == family_of(None) == family_of(["resnet50"]) == "convfc"


# ---------------------------------------------------------------------------------- dc-train, dc-bench


def test_dc_bench_leaves_mlp_out_for_a_resnet_and_says_so(r50_ckpt, tmp_path, capsys):
    from dcbench.suite.cli import get_args_parser, make_jobs

    args = get_args_parser().parse_args(["run", str(r50_ckpt), "--tasks", "mlp,knn-graph",
                                         "--results", str(tmp_path / "res")])
    jobs = make_jobs(args)
    assert [j.task for j in jobs] == ["knn-graph"]
    assert "note: mlp left out" in capsys.readouterr().err


@pytest.mark.slow
def test_dc_train_resnet50_checkpoint_runs_through_dc_bench(tiny_data, tmp_path, capsys, monkeypatch):
    import math

    from dcbench.suite.cli import main as bench_main
    from dcbench.train.config import make_config
    from dcbench.train.loop import train
    from dcbench.train.run_state import read_log

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DCBENCH_CACHE", str(tmp_path / "features"))
    out = tmp_path / "run"
    train(make_config("km-ImNet-Sob", "smoke", data=str(tiny_data), out=str(out), arch="resnet50", k=4, pca_dim=8,
                      batch_size=16, steps_per_epoch=3, epochs=2, quiet=True, workers=0, seed=1, lr=0.002))
    ck = load_checkpoint(out / "checkpoint")
    assert ck.meta["arch"] == "resnet50" and ck.meta["format_version"] == 2 and ck.meta["sobel"]
    assert ck.model.top_layer.weight.shape == (4, 2048)
    for r in read_log(out):
        assert r["num_clusters"] == 4 and r["empty"] == 0 and r["size_min"] >= 1 and math.isfinite(r["loss"])
    res = tmp_path / "results"
    code = run_cli(bench_main, ["run", str(out / "checkpoint"), "--tasks", "linear-imagenet,knn-graph,mlp",
                                "--results", str(res), "--task-args", "linear-imagenet=--epochs 2"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "note: mlp left out" in captured.err
    tasks = sorted(json.loads(p.read_text())["task"] for p in res.glob("*.json"))
    assert tasks == ["knn-graph", "linear-imagenet"]
    board = (res / "LEADERBOARD.md").read_text()
    assert "ResNets: ImageNet, linear classifiers on conv1, res2-res5 and pooled res5" in board
    smoke = board.split("## Smoke scale")[1].split("## Full scale")[0]  # measured scale first
    assert "ImageNet, linear classifiers on conv1-conv5 (Table 5.3)" not in smoke


def test_smoke_scale_runs_a_224px_resnet_at_the_embedded_64px_and_keeps_an_alexnet_at_its_own(capsys):
    from argparse import Namespace

    from dcbench.transfer.protocol import input_size

    def args(**over):
        return Namespace(**{"input_size": None, "scale": "smoke", "data": None, "checkpoint": "ck", **over})

    resnet, alexnet = {"input_size": 224, "arch": "resnet50"}, {"input_size": 224, "arch": "alexnet"}
    a = args()
    assert input_size(a, resnet) == 64 and a.adapted_input_size["checkpoint"] == 224
    assert "runs at the embedded data's 64px" in capsys.readouterr().err
    assert input_size(args(input_size=224), resnet) == 224            # asked for its own size: kept
    assert input_size(args(scale="full"), resnet) == 224              # the protocol's size is never changed
    assert input_size(args(data="/imagenet"), resnet) == 224          # nor on real data
    b = args()
    assert input_size(b, alexnet) == 224 and not hasattr(b, "adapted_input_size")  # fc6 is tied to the size
    assert "dc-convert --from random --input-size 64" in capsys.readouterr().err

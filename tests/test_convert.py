import pytest
import torch
import torchvision

from dcbench.checkpoint import load_checkpoint
from dcbench.cli_convert import main as convert_main
from dcbench.errors import run_cli
from dcbench.models import build_model


def _release_file(tmp_path, arch="alexnet", sobel=True, legacy=False, old_bn=False, module_prefix=False):
    """A checkpoint.pth.tar as the original DeepCluster code saved it (features in DataParallel)."""
    model = build_model(arch, sobel=sobel, input_size=224, num_classes=10, seed=1)
    for m in model.modules():  # non-trivial BN statistics, so a lost buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    sd = {}
    for k, v in model.state_dict().items():
        if old_bn and k.endswith("num_batches_tracked"):
            continue
        k = k.replace("features.", "features.module.", 1) if k.startswith("features.") else k
        sd[("module." + k) if module_prefix else k] = v
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 424, "arch": arch, "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
               path, _use_new_zipfile_serialization=not legacy)
    return path, model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("legacy,old_bn,module_prefix", [(False, False, False), (True, True, True)])
def test_release_checkpoint_converts_with_bit_identical_conv5_and_fc7(tmp_path, capsys, legacy, old_bn,
                                                                      module_prefix):
    src, ref = _release_file(tmp_path, legacy=legacy, old_bn=old_bn, module_prefix=module_prefix)
    out = tmp_path / "converted"
    assert run_cli(convert_main, ["--from", "deepcluster-release", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "renamed  " in printed and "features.module.0.weight -> features.0.weight" in printed
    assert "dropped  (file entry) optimizer" in printed
    ckpt = load_checkpoint(out)
    assert ckpt.meta["origin"] == "deepcluster-release" and ckpt.meta["epoch"] == 424
    assert ckpt.meta["sobel"] is True and ckpt.meta["num_classes"] == 10
    model = ckpt.model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.trunk(x), ref.trunk(x))  # conv5 (after its pool)
        fc7 = model.classifier(torch.flatten(model.trunk(x), 1))
        assert torch.equal(fc7, ref.classifier(torch.flatten(ref.trunk(x), 1)))


@pytest.mark.slow
def test_torchvision_vgg16bn_maps_classifier6_to_top_layer(tmp_path, capsys):
    tv = torchvision.models.vgg16_bn(weights=None)
    src = tmp_path / "vgg16_bn.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "vgg"
    assert run_cli(convert_main, ["--from", "torchvision-vgg16bn", str(src), "--out", str(out)]) == 0
    assert "classifier.6.weight -> top_layer.weight" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert torch.equal(ckpt.model.features[0].weight, tv.features[0].weight)
    assert torch.equal(ckpt.model.top_layer.weight, tv.classifier[6].weight)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ckpt.model.eval()(x), tv.eval()(x))


@pytest.mark.slow
def test_random_init_is_seeded(tmp_path):
    for name in ("a", "b"):
        assert run_cli(convert_main, ["--from", "random", "--out", str(tmp_path / name), "--input-size", "64",
                                      "--seed", "7", "--quiet"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.meta["origin"] == "random" and a.meta["sobel"] is True
    assert a.sha256 == b.sha256


def test_pickled_object_in_release_file_is_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "UNPICKLED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = tmp_path / "checkpoint.pth.tar"
    torch.save({"arch": "alexnet", "state_dict": {}, "evil": Evil()}, src)
    code = run_cli(convert_main, ["--from", "deepcluster-release", str(src), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(src) in err
    assert not marker.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--from", "random", "x.pth", "--out", "o"], "takes no SRC"),
    (["--from", "deepcluster-release", "--out", "o"], "needs a SRC"),
    (["--from", "deepcluster-release", "missing.pth", "--out", "o"], "missing.pth"),
    (["--from", "nope", "--out", "o"], "--from"),
    (["--frm", "random"], "dc-convert"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert run_cli(convert_main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err

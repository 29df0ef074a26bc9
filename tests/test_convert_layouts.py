"""dc-convert --layout: a ResNet-50 trunk out of each release's own file layout (VISSL, DINO, MoCo
v1/v2 and v3, SwAV, DeepCluster-v2, ReSSL, and --key/--strip-prefix for any other), bit-identical to
the torchvision weights it was made from; and the one-line refusals for files that do not fit."""

from __future__ import annotations

import argparse

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from dcbench import convert
from dcbench.checkpoint import load_checkpoint
from dcbench.cli_convert import LIST_KEYS
from dcbench.cli_convert import main as convert_main
from dcbench.errors import run_cli

ESC = "\x1b"


@pytest.fixture(scope="module")
def trunk() -> dict[str, torch.Tensor]:
    """A random torchvision resnet50's state dict minus fc, with BatchNorm statistics and affine
    parameters moved off their 0/1 init (a mis-mapped BN key would go unnoticed at 0/1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tv = torchvision.models.resnet50(weights=None)
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.1)
                m.num_batches_tracked.fill_(7)
    return {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}


def _student(trunk: dict) -> dict:
    """Other weights of the same shapes, so the teacher and the student cannot be confused."""
    return {k: v + 1 for k, v in trunk.items()}


def _bn1d(prefix: str, n: int, affine: bool = True) -> dict:
    out = {f"{prefix}.running_mean": torch.zeros(n), f"{prefix}.running_var": torch.ones(n),
           f"{prefix}.num_batches_tracked": torch.tensor(3)}
    if affine:
        out.update({f"{prefix}.weight": torch.ones(n), f"{prefix}.bias": torch.zeros(n)})
    return out


def _prefixed(prefix: str, sd: dict) -> dict:
    return {prefix + k: v for k, v in sd.items()}


OPTIMIZER = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}


# Each layout: the object its code saves, with the trunk under that code's names and nesting, the
# heads and momentum networks beside it (small widths: only their names matter), and file entries.
def vissl_file(trunk):
    heads = {"0.clf.0.weight": torch.zeros(10, 2048), "0.clf.0.bias": torch.zeros(10)}
    return {"phase_idx": 104, "iteration": 5000, "loss": {}, "iteration_num": 5000, "train_phase_idx": 104,
            "classy_state_dict": {"base_model": {"model": {"trunk": _prefixed("_feature_blocks.", trunk),
                                                           "heads": heads}},
                                  "optimizer": OPTIMIZER, "phase_idx": 104}}


def dino_file(trunk):
    head = {"head.mlp.0.weight": torch.zeros(16, 2048), "head.mlp.0.bias": torch.zeros(16),
            "head.last_layer.weight_g": torch.ones(60, 1), "head.last_layer.weight_v": torch.zeros(60, 16)}
    net = lambda sd: {**_prefixed("module.backbone.", sd), **_prefixed("module.", head)}  # noqa: E731
    return {"student": net(_student(trunk)), "teacher": net(trunk), "optimizer": OPTIMIZER, "epoch": 100,
            # main_dino.py saves its argparse namespace beside the weights
            "args": argparse.Namespace(arch="resnet50", out_dim=60000, lr=0.03, global_crops_scale=(0.14, 1.0)),
            "dino_loss": {"center": torch.zeros(1, 60)}, "fp16_scaler": {"scale": 65536.0, "_growth_tracker": 3}}


def moco_file(trunk):
    sd = {**_prefixed("module.encoder_q.", trunk),
          "module.encoder_q.fc.0.weight": torch.zeros(16, 2048), "module.encoder_q.fc.0.bias": torch.zeros(16),
          "module.encoder_q.fc.2.weight": torch.zeros(8, 16), "module.encoder_q.fc.2.bias": torch.zeros(8),
          "module.encoder_k.conv1.weight": torch.zeros(64, 3, 7, 7), "module.encoder_k.fc.0.weight": torch.zeros(16, 2048),
          "module.queue": torch.zeros(8, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": OPTIMIZER}


def mocov1_file(trunk):
    """MoCo v1: fc is one Linear(2048, 128), an embedding that MoCo's main_lincls.py drops too
    (shaped like a ResNet classifier, so only the layout can tell it is a head)."""
    sd = {**_prefixed("module.encoder_q.", trunk), "module.encoder_q.fc.weight": torch.zeros(128, 2048),
          "module.encoder_q.fc.bias": torch.zeros(128), "module.encoder_k.fc.bias": torch.zeros(128),
          "module.queue": torch.zeros(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": OPTIMIZER}


def mocov3_file(trunk):
    mlp = {"fc.0.weight": torch.zeros(16, 2048), **_bn1d("fc.1", 16), "fc.3.weight": torch.zeros(8, 16),
           **_bn1d("fc.4", 8, affine=False)}
    pred = {"0.weight": torch.zeros(16, 8), **_bn1d("1", 16), "3.weight": torch.zeros(8, 16)}
    sd = {**_prefixed("module.base_encoder.", {**trunk, **mlp}),
          **_prefixed("module.momentum_encoder.", {"conv1.weight": torch.zeros(64, 3, 7, 7), **mlp}),
          **_prefixed("module.predictor.", pred)}
    return {"epoch": 100, "arch": "resnet50", "state_dict": sd, "optimizer": OPTIMIZER,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 10}}


def _swav_heads(prototypes: dict) -> dict:
    return {"module.projection_head.0.weight": torch.zeros(16, 2048), "module.projection_head.0.bias": torch.zeros(16),
            **_bn1d("module.projection_head.1", 16), "module.projection_head.3.weight": torch.zeros(8, 16),
            "module.projection_head.3.bias": torch.zeros(8), **prototypes}


def swav_file(trunk):
    """The release file (swav_800ep_pretrain.pth.tar): the DDP state dict itself, flat; one head key
    carries a terminal escape, which must reach the screen inert."""
    return {**_prefixed("module.", trunk),
            **_swav_heads({"module.prototypes.weight": torch.zeros(30, 8),
                           f"module.prototypes{ESC}[2J.weight": torch.zeros(1)})}


def deepclusterv2_file(trunk):
    """A training checkpoint (checkpoint.pth.tar): three prototype sets, under state_dict."""
    protos = {f"module.prototypes.prototypes{i}.weight": torch.zeros(30, 8) for i in range(3)}
    return {"epoch": 400, "state_dict": {**_prefixed("module.", trunk), **_swav_heads(protos)},
            "optimizer": OPTIMIZER}


def ressl_file(trunk):
    sd = {**_prefixed("module.encoder_q.net.", trunk),
          "module.encoder_q.head.linear1.weight": torch.zeros(16, 2048), **_bn1d("module.encoder_q.head.bn1", 16),
          "module.encoder_q.head.linear2.weight": torch.zeros(8, 16),
          "module.encoder_k.net.conv1.weight": torch.zeros(64, 3, 7, 7),
          "module.queue": torch.zeros(8, 32), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"model": sd, "optimizer": OPTIMIZER, "epoch": 200}


def generic_file(trunk):
    """A layout of nobody's: the trunk two levels down, behind two prefixes, a head beside it."""
    sd = {**_prefixed("net.encoder.", trunk), "net.head.weight": torch.zeros(10, 16)}
    return {"epoch": 9, "model": {"state_dict": sd, "ema": {"decay": 0.999}}}


# (case, file builder, dc-convert flags (none: auto-detection), the layout auto-detection finds (None:
# not for auto), keys that must be dropped, which network's weights must come out)
CASES = [
    ("vissl", vissl_file, ["--layout", "vissl"], "vissl",
     ["(file entry) classy_state_dict/base_model/model/heads", "(file entry) phase_idx",
      "(file entry) classy_state_dict/optimizer"], "teacher"),
    ("dino-teacher", dino_file, ["--layout", "dino"], "dino",
     ["module.head.mlp.0.weight", "module.head.last_layer.weight_v", "(file entry) student", "(file entry) args"],
     "teacher"),
    ("dino-student", dino_file, ["--layout", "dino", "--part", "student"], None,
     ["module.head.mlp.0.weight", "(file entry) teacher"], "student"),
    ("moco", moco_file, ["--layout", "moco"], "moco",
     ["module.encoder_q.fc.0.weight", "module.encoder_q.fc.2.bias", "module.encoder_k.conv1.weight", "module.queue",
      "(file entry) optimizer"], "teacher"),
    ("mocov1", mocov1_file, [], "moco",
     ["module.encoder_q.fc.weight", "module.encoder_q.fc.bias", "module.queue_ptr"], "teacher"),
    ("mocov3", mocov3_file, ["--layout", "mocov3"], "mocov3",
     ["module.base_encoder.fc.0.weight", "module.base_encoder.fc.1.running_var", "module.base_encoder.fc.4.running_mean",
      "module.momentum_encoder.conv1.weight", "module.predictor.0.weight", "(file entry) scaler"], "teacher"),
    ("swav", swav_file, [], "swav",
     ["module.projection_head.0.weight", "module.projection_head.1.running_mean", "module.prototypes.weight",
      "module.prototypes\\x1b[2J.weight"], "teacher"),
    ("deepclusterv2", deepclusterv2_file, ["--layout", "deepclusterv2"], "swav",
     ["module.prototypes.prototypes0.weight", "module.prototypes.prototypes2.weight", "module.projection_head.3.bias"],
     "teacher"),
    ("ressl", ressl_file, [], "ressl",
     ["module.encoder_q.head.linear1.weight", "module.encoder_q.head.bn1.running_var",
      "module.encoder_k.net.conv1.weight", "module.queue"], "teacher"),
    ("generic", generic_file, ["--key", "model/state_dict", "--strip-prefix", "net.", "--strip-prefix", "encoder."],
     None, ["net.head.weight", "(file entry) model/ema", "(file entry) epoch"], "teacher"),
]


def _convert(argv, capsys):
    code = run_cli(convert_main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _listed(out: str, word: str) -> list[str]:
    return [line[9:] for line in out.splitlines() if line.startswith(f"{word:8} ")]


def _shown(key: str, dropped: list[str]) -> bool:
    """``key`` is listed as dropped, on its own or in its module's line (``module.predictor.* (7 keys)``)."""
    return key in dropped or any(line.endswith(" keys)") and key.startswith(line.split(".* (")[0] + ".")
                                 for line in dropped)


QUICK = ("moco", "vissl")  # the rest (a ResNet-50 file written, converted and loaded each) in the slow tier


@pytest.mark.parametrize("case,build,flags,detected,heads,part",
                         [pytest.param(*c, marks=() if c[0] in QUICK else pytest.mark.slow) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_layout_converts_to_the_torchvision_weights_bit_identically(trunk, tmp_path, capsys, one_thread,
                                                                          case, build, flags, detected, heads, part):
    src = tmp_path / f"{case}.pth"
    torch.save(build(trunk), src)
    out = tmp_path / "ck"
    code, printed, err = _convert(["--from", "torchvision-resnet50", src, "--out", out, "--input-size", "64",
                                   *flags], capsys)
    assert code == 0, err
    want = trunk if part == "teacher" else _student(trunk)
    sd = load_checkpoint(out).model.state_dict()
    assert set(sd) == set(want)  # no head became a top layer, nothing is missing
    assert all(torch.equal(sd[k], v) for k, v in want.items())
    dropped = _listed(printed, "dropped")
    assert all(_shown(h, dropped) for h in heads), (heads, dropped)
    assert ESC not in printed
    layout_line = _listed(printed, "layout")
    named = flags[1] if flags[:1] == ["--layout"] else detected or "generic"
    assert len(layout_line) == 1 and layout_line[0].startswith(f"{named} ")
    assert ("as given" if flags[:1] == ["--layout"] else "detected" if not flags else "--key") in layout_line[0]
    # the lists are bounded, the counts complete: every trunk key is renamed (or kept), once
    renamed = _listed(printed, "renamed")
    assert len(renamed) == LIST_KEYS + 1 and renamed[-1] == f"... and {len(want) - LIST_KEYS} more"
    assert f", {len(want)} weights kept, {len(want)} renamed, " in printed.splitlines()[-1]


@pytest.mark.parametrize("case,build,detected", [(c[0], c[1], c[3]) for c in CASES if c[3]],
                         ids=[c[0] for c in CASES if c[3]])
def test_auto_detection_names_each_layout_and_why(trunk, case, build, detected, tmp_path):
    """What ``--layout auto`` (the default) finds in each file, and the line it prints about it."""
    keys = set(trunk)
    found, line = convert.locate_trunk(build(trunk), tmp_path / "f.pth", "resnet50", keys)
    assert found.layout.name == detected and found.count == len(keys)
    assert line.startswith(f"{detected} (") and "detected: " in line and "--layout NAME" in line
    explicit, given = convert.locate_trunk(build(trunk), tmp_path / "f.pth", "resnet50", keys,
                                           layout=case if case in convert.LAYOUTS else detected)
    assert explicit.path == found.path and explicit.prefix == found.prefix and "as given" in given


def test_dino_auto_detection_says_which_part_it_took(trunk, tmp_path):
    _, line = convert.locate_trunk(dino_file(trunk), tmp_path / "f.pth", "resnet50", set(trunk))
    assert "teacher taken (--part student for the other)" in line
    found, _ = convert.locate_trunk(dino_file(trunk), tmp_path / "f.pth", "resnet50", set(trunk), part="student")
    assert found.path == ("student",)


@pytest.mark.slow
def test_a_flat_safetensors_release_is_read_as_safetensors(trunk, tmp_path, capsys, one_thread):
    save_file({k: v.contiguous() for k, v in swav_file(trunk).items() if ESC not in k}, str(tmp_path / "swav.safetensors"))
    code, printed, err = _convert(["--from", "torchvision-resnet50", tmp_path / "swav.safetensors", "--out",
                                   tmp_path / "ck", "--input-size", "64", "--quiet"], capsys)
    assert code == 0, err
    assert _listed(printed, "layout")[0].startswith("swav (") and not _listed(printed, "renamed")
    sd = load_checkpoint(tmp_path / "ck").model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in trunk.items())


# ---------------------------------------------------------------------------------- refusals


def _refused(argv, capsys, out, *needles):
    code, _, err = _convert(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), (needles, lines[0])
    assert not out.exists()  # nothing half-written
    return lines[0]


def test_a_key_path_that_does_not_exist_names_the_file_the_path_and_what_is_there(tmp_path, capsys):
    src = tmp_path / "nested.pth"
    torch.save({"model": {"state_dict": {"conv1.weight": torch.zeros(1)}, "step": 3}, "epoch": 1}, src)
    line = _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--key", "model/weights"],
                    capsys, tmp_path / "ck", str(src), "--key model/weights does not exist", "model has no entry 'weights'",
                    "entries state_dict, step", "tensors are under --key model/state_dict")
    assert len(line) < 600
    # dotted works too, and names the first missing step
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--key", "net.state_dict"],
             capsys, tmp_path / "ck", "the top level has no entry 'net'", "entries model, epoch")


def test_a_key_path_holding_no_tensors_lists_its_entries_bounded(tmp_path, capsys):
    src = tmp_path / "nested.pth"
    many = {f"entry{i}": i for i in range(40)}
    torch.save({"classy_state_dict": {"base_model": {"model": {"trunk": {"_feature_blocks.conv1.weight": torch.zeros(1)},
                                                               "heads": {}}}}, "meta": many}, src)
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--key", "classy_state_dict/base_model"],
             capsys, tmp_path / "ck", str(src), "--key classy_state_dict/base_model holds no tensors",
             "entries model", "tensors are under --key classy_state_dict/base_model/model/trunk")
    line = _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--key", "meta"],
                    capsys, tmp_path / "ck", "holds no tensors", "entry0, entry1", "(+28 more)")
    assert "entry39" not in line
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--key", "meta/entry3"],
             capsys, tmp_path / "ck", "holds no tensors (a int, not a dict)")


def test_a_layout_whose_nesting_is_absent_says_what_the_file_has(tmp_path, capsys):
    src = tmp_path / "moco.pth"
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}, "epoch": 3}, src)
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--layout", "dino"], capsys,
             tmp_path / "ck", str(src), "the dino layout's state dict teacher does not exist",
             "the top level has no entry 'teacher' (entries state_dict, epoch)",
             "tensors are under --key state_dict")
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--layout", "vissl"], capsys,
             tmp_path / "ck", str(src), "no resnet50 trunk key under '_feature_blocks.' in "
             "classy_state_dict/base_model/model/trunk, model_state_dict, the top level (entries state_dict, epoch)")
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--layout", "mocov3"], capsys,
             tmp_path / "ck", str(src), "no resnet50 trunk key under 'module.base_encoder.'")


@pytest.mark.parametrize("damage,needle", [
    pytest.param("missing", "weights of resnet50 are missing (first: layer4.2.conv3.weight)", marks=pytest.mark.slow),
    pytest.param("shape", "conv1.weight has shape (64, 3, 3, 3)", marks=pytest.mark.slow),
    ("deeper", "module.encoder_q.layer3.6.conv1.weight is a trunk weight resnet50 does not have"),
], ids=["missing", "shape", "deeper"])
def test_a_missing_misshapen_or_extra_trunk_weight_is_refused_and_nothing_written(trunk, tmp_path, capsys,
                                                                                  damage, needle):
    sd = dict(trunk)
    if damage == "missing":
        del sd["layer4.2.conv3.weight"]
    elif damage == "shape":
        sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    else:  # a ResNet-101's layer3 has 23 blocks: read as a ResNet-50 it must not lose 17 of them quietly
        sd["layer3.6.conv1.weight"] = torch.zeros(256, 1024, 1, 1)
    src = tmp_path / "moco.pth"
    torch.save(moco_file(sd), src)
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck", "--layout", "moco"], capsys,
             tmp_path / "ck", str(src), needle)


def test_a_file_needing_full_unpickling_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "UNPICKLED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    src = tmp_path / "dino.pth"
    torch.save({"teacher": {"module.backbone.conv1.weight": torch.zeros(1)}, "args": Evil()}, src)
    _refused(["--from", "torchvision-resnet50", src, "--out", tmp_path / "ck"], capsys, tmp_path / "ck",
             str(src), "needs full unpickling to read (it refers to io.open)")
    assert not marker.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--from", "random", "--layout", "moco"], "--layout describe a ResNet release file"),
    (["--from", "torchvision-vgg16bn", "x.pth", "--key", "model"], "--key describe a ResNet release file"),
    (["--from", "torchvision-resnet50", "{src}", "--layout", "moco", "--part", "student"], "--part student picks DINO"),
    (["--from", "torchvision-resnet50", "{src}", "--layout", "moco", "--key", "state_dict"],
     "use them with --layout generic"),
    (["--from", "torchvision-resnet50", "{src}", "--part", "student"], "is not a DINO checkpoint (detected: moco)"),
    (["--from", "torchvision-resnet50", "{src}", "--layout", "mocov4"], "argument --layout: invalid choice"),
], ids=["random", "vgg", "part-moco", "key-moco", "part-auto", "unknown"])
def test_layout_flags_out_of_place_are_one_line(tmp_path, capsys, argv, needle):
    src = tmp_path / "moco.pth"
    torch.save({"state_dict": {"module.encoder_q.conv1.weight": torch.zeros(64, 3, 7, 7)}}, src)
    argv = [a.replace("{src}", str(src)) for a in argv] + ["--out", str(tmp_path / "ck")]
    _refused(argv, capsys, tmp_path / "ck", needle)

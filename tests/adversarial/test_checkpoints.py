"""Hostile checkpoints: meta.json values (class 8), non-finite weights (class 2), oversized
descriptions (class 4), train_state.pt contents (class 8), interrupted writes (class 3)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dcbench.checkpoint import save_checkpoint, sha256_file
from dcbench.cli_inspect import main as inspect_main
from dcbench.errors import CheckpointError
from dcbench.models import build_model

from .conftest import copy_ckpt, edit_meta, expect

# (case id, meta.json changes, what the error must name)
BAD_META = [
    ("input-size-inf", {"input_size": float("inf")}, "input_size"),
    ("input-size-nan", {"input_size": float("nan")}, "input_size"),
    ("input-size-huge", {"input_size": 100000}, "input_size"),
    ("input-size-2e9", {"input_size": 2**31}, "input_size"),
    ("input-size-negative", {"input_size": -64}, "input_size"),
    ("input-size-string", {"input_size": "64"}, "input_size"),
    ("input-size-float", {"input_size": 64.5}, "input_size"),
    ("input-size-bool", {"input_size": True}, "input_size"),
    ("input-size-list", {"input_size": [64]}, "input_size"),
    ("num-classes-negative", {"num_classes": -1}, "num_classes"),
    ("num-classes-huge", {"num_classes": 10**12}, "num_classes"),
    ("arch-unknown", {"arch": "resnet9000"}, "arch"),
    ("arch-not-string", {"arch": {"x": 1}}, "arch"),
    ("sobel-string", {"sobel": "yes"}, "sobel"),
    ("sha-not-hex", {"model_sha256": "../../etc/passwd"}, "model_sha256"),
    ("name-too-long", {"name": "n" * 5000}, "name"),
    ("name-not-string", {"name": ["a", "b"]}, "name"),
    ("name-control-chars", {"name": "x\n\x1b[31mred"}, "name"),
    ("epoch-negative", {"epoch": -3}, "epoch"),
    ("epoch-inf", {"epoch": float("inf")}, "epoch"),
    ("mean-nan", {"preprocessing": {"mean": [float("nan"), 0, 0], "std": [1, 1, 1]}}, "preprocessing.mean"),
    ("std-zero", {"preprocessing": {"mean": [0, 0, 0], "std": [0, 1, 1]}}, "preprocessing.std"),
    ("std-wrong-length", {"preprocessing": {"mean": [0, 0, 0], "std": [1] * 1000}}, "preprocessing.std"),
    ("preprocessing-string", {"preprocessing": "imagenet"}, "preprocessing"),
    ("train-config-list", {"train_config": [1, 2]}, "train_config"),
    ("feature-shape-huge", {"feature_shape": [256, 10**9, 1]}, "feature_shape"),
    ("origin-huge", {"origin": "o" * 100000}, "origin"),
]


@pytest.mark.hostile(8)
@pytest.mark.parametrize("changes,names", [c[1:] for c in BAD_META], ids=[c[0] for c in BAD_META])
def test_bad_meta_value_is_one_line_exit_2(base, tmp_path, capfd, changes, names):
    ck = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck"), **changes)
    res = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=2)
    assert names in res.error and "meta.json" in res.error


@pytest.mark.hostile(8)
def test_meta_nested_200k_deep_is_one_line(base, tmp_path, capfd):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    meta = json.loads((ck / "meta.json").read_text())
    text = json.dumps(meta)[:-1] + ', "deep": ' + "[" * 200_000 + "]" * 200_000 + "}"
    (ck / "meta.json").write_text(text)
    res = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=2)
    assert "nested too deeply" in res.error


@pytest.mark.hostile(4)
def test_oversized_meta_is_refused_unread(base, tmp_path, capfd):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    with open(ck / "meta.json", "ab") as f:  # 2 MiB: past the 1 MiB bound (the suite hashes every file)
        f.truncate(2 << 20)
    res = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=2)
    assert "bytes, more than" in res.error


@pytest.mark.hostile(4)
def test_meta_describing_a_bigger_model_than_the_weights_is_refused(base, tmp_path, capfd):
    # a 1024-px AlexNet with 10^6 classes would need gigabytes: refused from the file header, unallocated
    ck = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck"), input_size=1024)
    res = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=2)
    assert "does not fit alexnet at input 1024: classifier.1.weight is [4096, 256]" in res.error
    ck2 = edit_meta(copy_ckpt(base.ckpt, tmp_path / "ck2"), num_classes=1_000_000)
    res = expect(capfd, inspect_main, [ck2], root=tmp_path, out=None, code=2)
    assert "missing ['top_layer.bias', 'top_layer.weight']" in res.error


def _poison(ck, value):
    t = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()  # break the hard link to the shared original
    t["classifier.4.weight"][0, 0] = value
    save_file(t, str(ck / "model.safetensors"))
    edit_meta(ck, model_sha256=sha256_file(ck / "model.safetensors"))


@pytest.mark.hostile(8)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_checkpoint_with_nonfinite_weights_is_named_as_such(base, tmp_path, capfd, value):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    _poison(ck, value)
    res = expect(capfd, inspect_main, [ck], root=tmp_path, out=None, code=2)
    assert res.error.startswith("non-finite weights in") and "classifier.4.weight" in res.error


@pytest.mark.hostile(2)
def test_save_checkpoint_refuses_nonfinite_weights_and_keeps_the_previous(base, tmp_path):
    ck = copy_ckpt(base.ckpt, tmp_path / "ck")
    before = (ck / "meta.json").read_bytes()
    model = build_model("alexnet", sobel=True, input_size=64, seed=0)
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save_checkpoint(ck, model, origin="random")
    assert (ck / "meta.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def _set(key, value):
    def f(ts):
        ts[key] = value(ts[key]) if callable(value) else value
        return ts
    return f


def _nan_momentum(ts):
    for st in ts["optimizer"]["state"].values():
        st["momentum_buffer"].fill_(float("nan"))
    return ts


# train_state.pt that torch.load(weights_only=True) accepts, but that is not the trainer's state
BAD_STATE = [
    ("empty-dict", lambda ts: {}),
    ("a-list", lambda ts: [1, 2, 3]),
    ("epoch-string", _set("epoch", "one")),
    ("epoch-negative", _set("epoch", -1)),
    ("optimizer-garbage", _set("optimizer", {"state": {}, "param_groups": [{"params": [0]}]})),
    ("optimizer-nan", _nan_momentum),
    ("assignment-float", _set("assignment", lambda a: a.float())),
]


@pytest.mark.hostile(8)
@pytest.mark.parametrize("make", [c[1] for c in BAD_STATE], ids=[c[0] for c in BAD_STATE])
def test_hostile_train_state_is_one_line_and_the_run_untouched(base, tmp_path, capfd, make):
    from dcbench.train.cli import main as train_main

    from .conftest import TRAIN_FLAGS

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    for f in (base.run / "checkpoint").iterdir():
        (run / "checkpoint" / f.name).write_bytes(f.read_bytes())
    state = make(torch.load(run / "checkpoint" / "train_state.pt", weights_only=True))
    torch.save(state, run / "checkpoint" / "train_state.pt")
    edit_meta(run / "checkpoint", train_state_sha256=sha256_file(run / "checkpoint" / "train_state.pt"))
    argv = ["--data", base.tree, "--out", run, *TRAIN_FLAGS, "--epochs", "2"]
    res = expect(capfd, train_main, argv, root=tmp_path, out=run, code=2)
    assert "train_state.pt" in res.error


@pytest.mark.hostile(3)
def test_a_missing_checkpoint_with_a_complete_old_one_names_it(base, tmp_path, capfd):
    copy_ckpt(base.ckpt, tmp_path / "ck.old")
    res = expect(capfd, inspect_main, [tmp_path / "ck"], root=tmp_path, out=None, code=2)
    assert "ck.old holds the last complete version" in res.error

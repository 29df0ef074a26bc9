import json
import pickle
import subprocess
import sys

import pytest
import torch

from dcbench.checkpoint import FORMAT_VERSION, READ_VERSIONS, load_checkpoint, read_meta, save_checkpoint
from dcbench.cli_inspect import main as inspect_main
from dcbench.errors import CheckpointError, run_cli
from dcbench.models import build_model


@pytest.fixture
def ckpt(tmp_path):
    model = build_model("alexnet", sobel=True, input_size=64, num_classes=5, seed=0)
    path = save_checkpoint(tmp_path / "ck", model, origin="random", epoch=3, num_clusters=5,
                           train_state={"epoch": 3, "rng": torch.get_rng_state()})
    return path, model


def test_round_trip_preserves_weights_and_meta(ckpt):
    path, model = ckpt
    loaded = load_checkpoint(path, with_train_state=True)
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.meta["format_version"] == FORMAT_VERSION
    assert loaded.meta["epoch"] == 3 and loaded.meta["sobel"] is True
    assert loaded.train_state["epoch"] == 3


def test_save_replaces_atomically_and_leaves_no_temp_dirs(ckpt, tmp_path):
    path, model = ckpt
    save_checkpoint(path, model, origin="random", epoch=4)
    assert read_meta(path)["epoch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


class _Boom:
    """Unpickling this would create a marker file: it must never happen."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _inspect(path, capsys):
    code = run_cli(inspect_main, [str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


def _flip_byte(path):
    f = path / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(path):
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


def _pickle_as_safetensors(path):
    _Boom.marker = path.parent / "UNPICKLED"
    (path / "model.safetensors").write_bytes(pickle.dumps(_Boom()))
    # Even a meta.json that vouches for the pickle's hash must not lead to unpickling.
    meta = json.loads((path / "meta.json").read_text())
    from dcbench.checkpoint import sha256_file

    meta["model_sha256"] = sha256_file(path / "model.safetensors")
    (path / "meta.json").write_text(json.dumps(meta))


def _pickle_train_state(path):
    _Boom.marker = path.parent / "UNPICKLED"
    torch.save({"x": _Boom()}, path / "train_state.pt")
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("train_state_sha256")
    (path / "meta.json").write_text(json.dumps(meta))


def _drop_meta(path):
    (path / "meta.json").unlink()


def _future_version(path):
    meta = json.loads((path / "meta.json").read_text())
    meta["format_version"] = max(READ_VERSIONS) + 1
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("damage,expect", [
    (_flip_byte, "sha256"), (_truncate, "sha256"), (_pickle_as_safetensors, "safetensors"),
    (_pickle_train_state, "train_state.pt"), (_drop_meta, "meta.json"), (_future_version, "format version"),
])
def test_damaged_checkpoint_is_one_line_exit_2_and_nothing_unpickled(ckpt, capsys, damage, expect):
    path, _ = ckpt
    damage(path)
    code, err = _inspect(path, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and expect in err and "Traceback" not in err
    assert not (path.parent / "UNPICKLED").exists()


def test_load_rejects_a_file_instead_of_a_directory(tmp_path):
    f = tmp_path / "checkpoint.pth.tar"
    f.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="dc-convert"):
        load_checkpoint(f)


def test_a_training_run_folder_points_to_its_checkpoint(tmp_path, capsys):
    model = build_model("alexnet", sobel=True, input_size=64, num_classes=5, seed=0)
    save_checkpoint(tmp_path / "dc-train-out" / "checkpoint", model, origin="dcbench-train")
    assert run_cli(inspect_main, [str(tmp_path / "dc-train-out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"did you mean {tmp_path / 'dc-train-out' / 'checkpoint'}?"), err


@pytest.mark.slow
def test_dc_inspect_console_script_reports_ok_and_errors(ckpt, tmp_path):
    path, _ = ckpt
    ok = subprocess.run([sys.executable, "-m", "dcbench.cli_inspect", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "dcbench.cli_inspect", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_checkpoint_files_get_ordinary_permissions(ckpt):
    import os
    import stat

    path, _ = ckpt
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask
    for f in path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name


# ---------------------------------------------------------------------------- preprocessing(meta)


def test_preprocessing_reads_what_save_checkpoint_wrote(tmp_path):
    from dcbench.checkpoint import preprocessing

    path = save_checkpoint(tmp_path / "c", build_model("alexnet", input_size=64, seed=0), origin="random",
                           mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    pre = preprocessing(load_checkpoint(path).meta)
    assert (pre.mean, pre.std, pre.colour_order) == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), "RGB")


@pytest.mark.parametrize("pre,needle", [
    (None, "no 'preprocessing' block"),
    ({"std": [0.2] * 3, "colour_order": "RGB"}, "preprocessing.mean"),
    ({"mean": [0.5] * 2, "std": [0.2] * 3, "colour_order": "RGB"}, "preprocessing.mean"),
    ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2], "colour_order": "RGB"}, "preprocessing.std"),
    ({"mean": [0.5] * 3, "std": ["x"] * 3, "colour_order": "RGB"}, "preprocessing.std"),
    ({"mean": [0.5, float("nan"), 0.5], "std": [0.2] * 3, "colour_order": "RGB"}, "preprocessing.mean"),
    ({"mean": [0.5] * 3, "std": [0.2] * 3}, "colour_order"),
    ({"mean": [0.5] * 3, "std": [0.2] * 3, "colour_order": "BGR"}, "colour_order"),
])
def test_preprocessing_never_falls_back_to_imagenet_constants(pre, needle):
    from dcbench.checkpoint import preprocessing
    from dcbench.transfer.protocol import normalize

    meta = {"input_size": 64} if pre is None else {"input_size": 64, "preprocessing": pre}
    with pytest.raises(CheckpointError, match=needle):
        preprocessing(meta, "ckpt/meta.json")
    with pytest.raises(CheckpointError, match=needle):
        normalize(meta)

"""Units behind the untrusted-input promises (the end-to-end cases are in tests/adversarial)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
import torch

from dcbench import argtypes
from dcbench.checkpoint import recover_interrupted_write, save_checkpoint
from dcbench.errors import UserError, one_line
from dcbench.models import build_model
from dcbench.safepath import output_dir, safe_slug, under

# Run as its own process, as a user meets it: in-process, collecting the failed loader's iterator
# later joins its workers with torch's 5 s timeout each, 10 s of idle test time.
_WORKER_ERROR = """
import sys
from torch.utils.data import DataLoader, Dataset
from dcbench.errors import DataError, run_cli

class Bad(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise DataError(f"mask m{i}.png is 3x3, its image 4x4; a mask must match its image")

def main(argv):
    for _ in DataLoader(Bad(), batch_size=2, num_workers=int(argv[0])):
        pass

sys.exit(run_cli(main, sys.argv[1:]))
"""


def test_error_from_a_dataloader_worker_is_the_same_one_line_as_without_workers():
    runs = [subprocess.run([sys.executable, "-c", _WORKER_ERROR, workers], capture_output=True, text=True,
                           timeout=120) for workers in ("0", "2")]
    assert [r.returncode for r in runs] == [2, 2]
    assert runs[0].stderr == runs[1].stderr == "error: mask m0.png is 3x3, its image 4x4; a mask must match its image\n"


def test_one_line_folds_newlines_and_bounds_length():
    assert one_line("a\nb\r\n  c") == "a b c"
    assert len(one_line("x" * 10_000)) < 2100


@pytest.mark.parametrize("name,slug", [("../../x", "x"), ("/abs/path", "abs-path"), ("..", "x"), (".hidden", "hidden"),
                                       ("a/b\\c", "a-b-c"), ("", "x"), ("km-ImNet-Sob", "km-ImNet-Sob"),
                                       ("a..b", "a.b"), ("x" * 500, "x" * 80)])
def test_safe_slug_never_leaves_its_folder(name, slug):
    assert safe_slug(name) == slug


def test_safe_slug_with_keep_empty_gives_a_name_docker_accepts():
    # Docker container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*: no '+', however the run was named.
    name = safe_slug("+run a+b/../c", 40, keep="")
    assert name == "run-a-b-.-c" and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)
    assert safe_slug("conv5+sobel") == "conv5+sobel"  # file names keep '+'


def test_output_dir_refuses_a_link_that_leads_out_and_a_file_in_the_way(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "knn-graph").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside --out"):
        under(out, "knn-graph", "ck")
    (out / "lowshot").write_text("a file")
    with pytest.raises(UserError, match="a file is in the way"):
        output_dir(out, "lowshot", "ck")


@pytest.mark.parametrize("conv,text", [(argtypes.positive_int, "0"), (argtypes.positive_int, "-5"),
                                       (argtypes.nonneg_int, "-1"), (argtypes.seed, "-1"),
                                       (argtypes.seed, str(2**70)), (argtypes.positive_float, "nan"),
                                       (argtypes.positive_float, "inf"), (argtypes.positive_float, "0"),
                                       (argtypes.finite_float, "1e300"), (argtypes.nonneg_float, "-0.1"),
                                       (argtypes.fraction, "1"), (argtypes.unit_interval, "0")])
def test_argtypes_refuse(conv, text):
    with pytest.raises(argparse.ArgumentTypeError):
        conv(text)


def test_recover_interrupted_write_restores_old_and_removes_temporaries(tmp_path):
    ck = save_checkpoint(tmp_path / "ck", build_model("alexnet", input_size=64, seed=0), origin="random", epoch=1)
    (tmp_path / "ck").rename(tmp_path / "ck.old")
    (tmp_path / ".ck.abc.tmp").mkdir()
    note = recover_interrupted_write(ck)
    assert "restored" in note and "removed" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert recover_interrupted_write(ck) is None


def test_a_float_that_overflows_float32_is_refused_up_front():
    # what SGD does with lr=1e300 on a float32 parameter: a RuntimeError deep in torch
    with pytest.raises(RuntimeError, match="overflow"):
        torch.ones(1).add_(torch.ones(1), alpha=-1e300)
    with pytest.raises(argparse.ArgumentTypeError, match="float32"):
        argtypes.positive_float("1e300")

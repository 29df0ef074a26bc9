"""dc-convert and dc-data against hostile flags (classes 4, 8)."""

from __future__ import annotations

import pytest

from dcbench.cli_convert import main as convert_main
from dcbench.cli_data import main as data_main

from .conftest import case, expect

CASES = [
    ("convert-input-size-100000", convert_main, ["--from", "random", "--input-size", "100000", "--out", "{out}"],
     "argument --input-size: must be in \\[32, 1024\\]"),
    ("convert-input-size-8", convert_main, ["--from", "random", "--input-size", "8", "--out", "{out}"],
     "argument --input-size"),
    ("convert-seed-negative", convert_main, ["--from", "random", "--seed=-1", "--out", "{out}"], "argument --seed"),
    ("data-seed-negative", data_main, ["make", "{out}", "--seed=-1"], "argument --seed: must be in"),
    ("data-seed-2-to-70", data_main, ["make", "{out}", "--seed", str(2**70)], "argument --seed: must be in"),
]


@pytest.mark.parametrize("main,argv,message", [case(4 if "100000" in c[0] else 8, *c[1:], id=c[0]) for c in CASES])
def test_bad_flag_is_one_line_exit_2(tmp_path, capfd, main, argv, message):
    out = tmp_path / "out"
    expect(capfd, main, [a.replace("{out}", str(out)) for a in argv], root=tmp_path, out=out, code=2, match=message)
    assert not out.exists()


@pytest.mark.hostile(8)
def test_dc_data_out_that_is_a_file_is_one_line(tmp_path, capfd):
    (tmp_path / "out").write_text("precious")
    expect(capfd, data_main, ["make", tmp_path / "out"], root=tmp_path, out=None, code=2, match="not a folder")

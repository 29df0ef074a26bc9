"""Long stages off a terminal: plain periodic lines, never a silent log nor carriage returns."""

import io

from dcbench.progress import LineProgress, progress


def test_off_a_terminal_a_stage_prints_plain_lines_and_a_last_one_at_the_end():
    out = io.StringIO()
    bar = progress(range(5), desc="features", file=out, every_s=0)
    assert isinstance(bar, LineProgress)
    assert list(bar) == [0, 1, 2, 3, 4]
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" in ")[0] for line in lines] == [f"features: {i}/5" for i in range(1, 6)] + ["features: 5/5"]


def test_a_stage_shorter_than_the_interval_prints_nothing():
    out = io.StringIO()
    bar = progress(total=1000, desc="train", file=out, every_s=3600)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_the_last_line_carries_the_postfix_once():
    out = io.StringIO()
    bar = progress(total=3, desc="train", file=out, every_s=0)
    bar.set_postfix(loss="0.25")
    bar.update(3)
    bar.close()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(x.startswith("train: 3/3 in ") and x.endswith("loss=0.25") for x in lines)


def test_quiet_stage_prints_nothing():
    out = io.StringIO()
    assert list(progress(range(3), desc="x", show=False, file=out)) == [0, 1, 2]
    assert out.getvalue() == ""

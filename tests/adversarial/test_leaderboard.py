"""dc-leaderboard against hostile result files: markup injection (class 5), deep nesting and
oversized files (class 8), picture paths outside the results (class 1), a full disk (class 7)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from markdown_it import MarkdownIt

from dcbench.leaderboard.cli import main as leaderboard_main
from dcbench.results import SCHEMA_NAME, SCHEMA_VERSION, validate_result
from dcbench.text import printable

from .conftest import bin_of, expect, expect_process, limited

XSS = "<img src=x onerror=alert(1)>"


def good(name: str = "km-test", **over) -> dict:
    r = {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "task": "knn-graph",
        "variant": {"dataset": "imagenet", "split": "val", "features": "penultimate"},
        "checkpoint": {"name": name, "sha256": hashlib.sha256(name.encode()).hexdigest(), "arch": "alexnet",
                       "sobel": True, "origin": "random", "epoch": None},
        "metrics": {"ratio_intra": 40.0, "random_graph_mean": 10.0},
        "selection": {"rule": "final"},
        "protocol": {"k": 10},
        "data": {"name": "imagenet", "root": "/data", "fingerprint": "f" * 16, "sizes": {"val": 10}},
        "scale": "smoke", "environment": {"git_sha": "0123456789abcdef"}, "timings": {"total": 1.0},
        "created": "2025-01-01T00:00:00+00:00",
        "cost": {"wall_s": 1.0, "device": "cpu: test", "gpu_hours": 0.0, "peak_host_mb": 100.0},
    }
    for path, value in over.items():
        node = r
        *head, last = path.split("__")
        for k in head:
            node = node[k]
        node[last] = value
    return r


def _walk(tokens):
    for t in tokens:
        yield t
        if t.children:
            yield from _walk(t.children)


def inert(markdown: str) -> list:
    """Tokens that a hostile string could have produced: raw HTML, links, and images that do not
    point at a PNG file beside the results. Empty when the markdown is safe."""
    bad = []
    for t in _walk(MarkdownIt("commonmark").enable("table").parse(markdown)):
        if t.type.startswith("html"):
            bad.append((t.type, t.content))
        elif t.type == "link_open":
            bad.append((t.type, t.attrs.get("href")))
        elif t.type == "image" and (":" in t.attrs.get("src", "") or ".." in t.attrs.get("src", "")):
            bad.append((t.type, t.attrs.get("src")))
    return bad


def board(capfd, tmp_path, results: dict, code: int = 0, *, valid_only: bool = True):
    res = tmp_path / "res"
    res.mkdir(exist_ok=True)
    for name, r in results.items():
        data = r if isinstance(r, (str, bytes)) else json.dumps(r if not valid_only else validate_result(r))
        (res / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))
    out = tmp_path / "board" / "LEADERBOARD.md"
    outcome = expect(capfd, leaderboard_main, [res, "--out", out, "--no-plots"], root=tmp_path, out=out.parent,
                     code=code)
    return outcome, (out.read_text(encoding="utf-8") if out.exists() else "")


HOSTILE_FIELDS = [
    ("name-backtick-img", {"checkpoint__name": f"evil`{XSS}`"}),
    ("name-script", {"checkpoint__name": "<script>alert(1)</script>"}),
    ("name-double-backticks", {"checkpoint__name": f"``{XSS}``"}),
    ("name-markdown-link", {"checkpoint__name": "[click](javascript:alert(1))"}),
    ("name-markdown-image", {"checkpoint__name": "![beacon](http://evil.example/b.png)"}),
    ("name-pipe-newline", {"checkpoint__name": "a|b\n| x | y |\n<b>"}),
    ("name-autolink", {"checkpoint__name": "<http://evil.example>"}),
    ("data-name-html", {"data__name": "<b>data</b><iframe src=//evil>"}),
    ("git-sha-script", {"environment__git_sha": "<script>alert(1)</script>"}),
    ("variant-html", {"variant__split": f"val{XSS}"}),
    ("protocol-html", {"protocol__k": f"10{XSS}"}),
    ("created-html", {"created": f"2025-01-01{XSS}"}),
    ("origin-html", {"checkpoint__origin": XSS}),
]


@pytest.mark.hostile(5)
@pytest.mark.parametrize("over", [c[1] for c in HOSTILE_FIELDS], ids=[c[0] for c in HOSTILE_FIELDS])
def test_hostile_text_in_a_result_is_inert_in_the_markdown(tmp_path, capfd, over):
    # a second result with a different protocol makes the protocol and variant values show up
    _, md = board(capfd, tmp_path, {"evil.json": good(**over), "other.json": good("other", protocol={"k": 5})})
    assert inert(md) == []
    name = over.get("checkpoint__name")
    if name:  # the name is shown in code font, its line breaks and controls as escapes
        codes = [t.content for t in _walk(MarkdownIt("commonmark").enable("table").parse(md))
                 if t.type == "code_inline"]
        assert printable(name) in codes


@pytest.mark.hostile(5)
def test_hostile_schema_version_and_file_name_are_inert(tmp_path, capfd):
    other = copy.deepcopy(good())
    other["schema_version"] = f"<script>alert(2)</script>{XSS}"
    _, md = board(capfd, tmp_path, {"other.json": json.dumps(other), f"{XSS}.json": "{", "`x`<b>.json": "[1"},
                  valid_only=False)
    assert "Files not included" in md and inert(md) == []


@pytest.mark.hostile(5)
def test_hostile_task_name_is_skipped_and_its_reason_inert(tmp_path, capfd):
    r = good()
    r["task"] = f"knn-graph{XSS}"
    _, md = board(capfd, tmp_path, {"evil.json": json.dumps(r)}, valid_only=False)
    assert "invalid, skipped" in md and inert(md) == []


@pytest.mark.hostile(8)
def test_result_nested_100k_deep_is_skipped_with_one_warning(tmp_path, capfd):
    outcome, md = board(capfd, tmp_path, {"deep.json": "[" * 100_000 + "]" * 100_000, "ok.json": good()},
                        valid_only=False)
    assert "nested too deeply" in outcome.stderr and "1 valid result file(s) of 2 read" in md


@pytest.mark.hostile(4)
def test_oversized_result_file_is_skipped_unread(tmp_path, capfd):
    res = tmp_path / "res"
    res.mkdir()
    with open(res / "huge.json", "wb") as f:  # sparse: 65 MiB that cost no disk
        f.truncate(65 << 20)
    out = tmp_path / "board" / "LEADERBOARD.md"
    o = expect(capfd, leaderboard_main, [res, "--out", out, "--no-plots"], root=tmp_path, out=out.parent, code=0)
    assert "more than a result file may have" in o.stderr


@pytest.mark.hostile(1)
@pytest.mark.parametrize("where", ["parent", "absolute", "sibling-folder-link"])
def test_picture_paths_outside_the_results_folder_are_not_linked(tmp_path, capfd, where):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\n")
    res = tmp_path / "res"
    res.mkdir()
    if where == "sibling-folder-link":
        (res / "pics").symlink_to(tmp_path)
        value = "pics/secret.png"
    else:
        value = "../secret.png" if where == "parent" else str(outside)
    r = good(details={"png_neighbours": value})
    _, md = board(capfd, tmp_path, {"knn.json": r})
    assert "secret.png" not in md


@pytest.mark.hostile(2)
def test_result_with_non_finite_metric_is_skipped(tmp_path, capfd):
    text = json.dumps(good()).replace("40.0", "NaN")
    outcome, md = board(capfd, tmp_path, {"nan.json": text, "ok.json": good("ok")}, valid_only=False)
    assert "skipped invalid result" in outcome.stderr and "1 valid result file(s) of 2 read" in md


@pytest.mark.hostile(8)
def test_output_that_is_a_folder_is_one_line(tmp_path, capfd):
    res = tmp_path / "res"
    res.mkdir()
    (res / "ok.json").write_text(json.dumps(good()))
    (tmp_path / "LEADERBOARD.md").mkdir()
    expect(capfd, leaderboard_main, [res, "--out", tmp_path / "LEADERBOARD.md", "--no-plots"], root=tmp_path,
           out=None, code=2, match="LEADERBOARD.md")


@pytest.mark.hostile(7)
def test_full_disk_keeps_the_previous_leaderboard_byte_identical(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    for i in range(3):
        (res / f"r{i}.json").write_text(json.dumps(good(f"ckpt-{i}")))
    out = tmp_path / "LEADERBOARD.md"
    out.write_text("previous leaderboard\n")
    expect_process(limited(2000, bin_of("dc-leaderboard"), res, "--out", out, "--no-plots"), root=tmp_path,
                   out=None, code=2, match="while writing .*LEADERBOARD.md")
    assert out.read_text() == "previous leaderboard\n"


@pytest.mark.hostile(8)
def test_mathtext_in_names_does_not_break_the_plots(tmp_path, capfd):
    # matplotlib parses text between two '$' as a formula and raises on a malformed one
    res = tmp_path / "res"
    res.mkdir()
    r = good("x$\\frac{$_^")
    r.update(task="linear-imagenet", metrics={f"conv{i}": 10.0 * i for i in range(1, 6)},
             variant={"dataset": "ImageNet"})  # the conv1-conv5 table is plotted
    (res / "a.json").write_text(json.dumps(validate_result(r)))
    out = tmp_path / "board" / "LEADERBOARD.md"
    expect(capfd, leaderboard_main, [res, "--out", out], root=tmp_path, out=out.parent, code=0)
    assert list((tmp_path / "board").glob("*_plots/*.png"))

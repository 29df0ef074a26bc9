"""Property: whatever strings the input files hold -- any Unicode, markup, control characters --
the generated markdown has exactly the constructs of the same page made from plain strings, and a
terminal line stays one inert line.

Strings are drawn by hypothesis from the whole Unicode range (surrogates excepted: they cannot be
stored in a UTF-8 file) mixed with fragments of markdown, HTML and terminal control, and placed in
every free-text field the generators read: checkpoint names and origins, data and dataset names,
git shas, protocol values (leaderboard); run folder names and training options (dc-figures page);
meta.json values (dc-inspect) and result-file reasons (dc-leaderboard's warnings)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from dcbench.cli_inspect import main as inspect_main
from dcbench.errors import run_cli
from dcbench.leaderboard.cli import main as leaderboard_main
from dcbench.leaderboard.figures import render_page
from dcbench.leaderboard.runs import load_run

from .conftest import copy_ckpt, edit_meta
from .test_leaderboard import good

pytestmark = pytest.mark.hostile("text")

MARKUP = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "![i](https://evil.example/x.png)",
          "[l](javascript:alert(1))", "<https://evil.example>", "www.evil.example", "\n# H\n", "\n\n---\n",
          "| a | b |\n|---|---|\n", "`", "``", "*", "_", "~~", "\\", "&amp;", "&#x3C;", "<!--", "-->", "$x$",
          "[^1]", "\r\n", "\x1b[2J", "\x1b]0;t\x07", "\x9b31m", "\u202e", "\u2028", "\x00", "\x0c", "    code",
          "> quote", "1. item", "- item", "+ item", "===", "<div>", "</td>", "{", "}", "|", "\t"]
TEXT = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(st.characters(exclude_categories=["Cs"]), max_size=8)),
                max_size=6).map("".join)
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def structure(markdown: str) -> list:
    """Every block and inline construct of a page (type, tag, nesting, and where a link or image
    points), without the characters of its text."""
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    out = []

    def walk(tokens):
        for t in tokens:
            if t.type in ("text", "text_special"):
                continue
            out.append((t.type, t.tag, t.level, t.attrs.get("src") if t.type == "image" else None))
            if t.children:
                walk(t.children)
    walk(md.parse(markdown))
    return out


def _no_markup(markdown: str) -> None:
    kinds = {t[0] for t in structure(markdown)}
    assert not kinds & {"html_inline", "html_block", "link_open"}, kinds


# --------------------------------------------------------------------------- leaderboard


def _results(folder: Path, texts: list[str]) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, t in enumerate(texts):
        # distinct names keep one row per result, whatever the strings
        r = good(f"{i}{t}", data__name=t, variant__dataset=t, checkpoint__origin=t, environment__git_sha=t,
                 protocol__k=t)
        r["details"] = {"classes": 10}
        r["protocol"]["note"] = t
        (folder / f"r{i}.json").write_text(json.dumps(r), encoding="utf-8")
    # a file with an unknown metric: its reason (quoting the name) goes into "Files not included"
    bad = good("z")
    bad["metrics"][texts[0] or "x"] = 1.0
    (folder / "bad.json").write_text(json.dumps(bad), encoding="utf-8")


def _board(tmp: Path, texts: list[str], capfd) -> tuple[str, str]:
    res, page = tmp / "res", tmp / "board" / "LEADERBOARD.md"
    _results(res, texts)
    capfd.readouterr()
    assert run_cli(leaderboard_main, [str(res), "--out", str(page), "--no-plots"]) == 0
    return page.read_text(encoding="utf-8"), capfd.readouterr().err


@SETTINGS
@given(texts=st.lists(TEXT, min_size=2, max_size=3))
def test_leaderboard_from_any_strings_has_only_its_own_constructs(tmp_path_factory, capfd, texts):
    tmp = tmp_path_factory.mktemp("board")
    hostile, err = _board(tmp, texts, capfd)
    # plain strings equal where the hostile ones are equal: a protocol value every result shares is
    # no difference and gets no note under its table, whatever its characters
    plain_of = {t: f"plain{j}" for j, t in enumerate(dict.fromkeys(texts))}
    plain, _ = _board(tmp, [plain_of[t] for t in texts], capfd)
    _no_markup(hostile)
    assert structure(hostile) == structure(plain)
    for line in err.splitlines():  # the warnings quote names and reasons from the files
        assert line.isprintable(), repr(line)


# --------------------------------------------------------------------------- dc-figures page


def _run(folder: Path, option: str, value: str) -> Path:
    folder.mkdir(parents=True)
    cfg = {"preset": "km-ImNet-Sob", "k": 50, option: value, "sampler": value}
    doc = {"config": cfg, "data_root": "/data", "num_images": 600, "data_fingerprint": value, "world_size": 1,
           "git_sha": value, "started": value, "environment": {"device": value, "torch": value}}
    (folder / "config.json").write_text(json.dumps(doc), encoding="utf-8")
    (folder / "log.jsonl").write_text("".join(json.dumps({"epoch": e, "steps": 10, "loss": 4.0 - e, "log_k": 3.9})
                                              + "\n" for e in (1, 2)) + "not json\n", encoding="utf-8")
    return folder


def _folder_name(text: str, i: int) -> str:
    """``text`` as a file name: no '/', no NUL, within 255 bytes."""
    name = f"{i}" + text.replace("/", "").replace("\x00", "")
    while len(name.encode("utf-8", "surrogateescape")) > 200:
        name = name[:-1]
    return name


@SETTINGS
@given(texts=st.lists(TEXT, min_size=2, max_size=2), option=TEXT)
def test_figures_page_from_any_strings_has_only_its_own_constructs(tmp_path_factory, texts, option):
    def page(names, option, values):
        tmp = tmp_path_factory.mktemp("runs")
        runs = [load_run(_run(tmp / _folder_name(n, i), option or "x", v))
                for i, (n, v) in enumerate(zip(names, values))]
        return render_page(runs, {}, "figures_png", "dc-figures " + " ".join(names))

    hostile = page(texts, option, texts)
    plain = page(["a", "b"], "opt", ["v0", "v1"])
    _no_markup(hostile)
    assert structure(hostile) == structure(plain)


# --------------------------------------------------------------------------- terminal


@SETTINGS
@given(text=TEXT)
def test_inspect_prints_any_meta_string_as_inert_lines(base, tmp_path_factory, capfd, text):
    tmp = tmp_path_factory.mktemp("inspect")
    plain = copy_ckpt(base.ckpt, tmp / "plain")
    ck = edit_meta(copy_ckpt(base.ckpt, tmp / "ck"), origin=text[:4096], source=text[:4096],
                   git_sha=text[:4096], created=text[:4096], code_version=text[:4096], data_fingerprint=text[:4096])
    capfd.readouterr()
    assert run_cli(inspect_main, [str(plain)]) == 0
    want = capfd.readouterr().out.splitlines()
    assert run_cli(inspect_main, [str(ck)]) == 0
    got = capfd.readouterr().out.splitlines()
    assert len(got) == len(want)
    assert all(line.isprintable() for line in got), got

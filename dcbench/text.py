"""Untrusted strings (names, origins, key names, dataset names read from files) on their way to a
person: a terminal must not receive an escape sequence or a forged line, markdown must not
receive markup. Every such string goes out through one of the functions here; only a generator's
own fixed text is emitted raw."""

from __future__ import annotations

import html
import re

MAX_PRINT = 200  # characters of one untrusted value shown on a terminal
MAX_MARKDOWN = 300  # characters of one untrusted value shown in generated markdown

# The ASCII punctuation that can open a construct somewhere in a line (emphasis, code, links,
# images, autolinks, headings, lists, tables, strikethrough, math); CommonMark lets a backslash make
# each literal. ``<``, ``>`` and ``&`` become entities instead.
_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!|$~:])")


def printable(text, limit: int = MAX_PRINT) -> str:
    """``text`` as one inert terminal line: every character that is not printable (ESC and the other
    C0/C1 controls, newlines, Unicode format characters such as bidi overrides, separators) shown as
    its ``\\x..``/``\\u....`` escape, and at most ``limit`` characters ('...' marks a cut)."""
    out = []
    for c in str(text)[: limit * 2]:
        if c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    s = "".join(out)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def md_text(text, limit: int = MAX_MARKDOWN) -> str:
    """Untrusted text as inert inline markdown: one line (controls and line breaks shown as escapes,
    as on a terminal), bounded, ``<``/``>``/``&`` as entities, and every ASCII punctuation character
    backslash-escaped, so it renders as the same characters and never as HTML, a link, an image,
    emphasis, a heading or a table cell boundary, wherever in a line it is placed."""
    line = printable(text, limit)
    out = html.escape(_MD_PUNCT.sub(r"\\\1", line), quote=False)
    # leading spaces would indent a line that starts with this text into a code block
    return "&#32;" + out[1:] if out.startswith(" ") else out


def code_span(text, limit: int = MAX_MARKDOWN) -> str:
    """Untrusted text in code font: one line, bounded, fenced by more backticks than any run inside,
    so it cannot close early (inside a code span nothing else is interpreted). In a table cell the
    caller still escapes ``|``, which GitHub's tables split on even inside code."""
    text = printable(text, limit)
    fence = "`" * (1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"

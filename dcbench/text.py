"""Untrusted strings (names, origins, key names, dataset names read from files) on their way to a
person: a terminal must not receive an escape sequence or a forged line, markdown must not
receive markup. Every such string goes out through one of the functions here."""

from __future__ import annotations

MAX_PRINT = 200  # characters of one untrusted value shown on a terminal


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

"""Which files of two embedded-data trees differ: a generator change must touch only what it means to.

    git stash; python -c "from dcbench.synth import make_datasets; make_datasets('/tmp/old')"; git stash pop
    python -c "from dcbench.synth import make_datasets; make_datasets('/tmp/new')"
    python benchmarks/embedded_trees_compare.py /tmp/old /tmp/new

Prints and writes benchmarks/out/embedded_trees_compare.json: per top-level part (classification,
places, retrieval, VOCdevkit, the summary) the number of files in each tree, of files only in
one, and of files whose sha256 differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/embedded_trees_compare.json"))
    args = ap.parse_args()
    a, b = hashes(args.old), hashes(args.new)
    parts: dict[str, dict] = {}
    for name in sorted(set(a) | set(b)):
        part = parts.setdefault(name.split("/")[0], dict(old=0, new=0, only_one=0, differ=0))
        part["old"] += name in a
        part["new"] += name in b
        if (name in a) != (name in b):
            part["only_one"] += 1
        elif a[name] != b[name]:
            part["differ"] += 1
    for name, p in parts.items():
        print(f"{name:<20} files {p['old']} / {p['new']}, only in one {p['only_one']}, differing {p['differ']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"old": str(args.old), "new": str(args.new), "parts": parts}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

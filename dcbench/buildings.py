"""Readers for the Oxford5k and Paris6k instance-retrieval datasets, in their published layouts.

    oxford5k/oxbuild_images/<name>.jpg                    (oxbuild_images.tgz, flat)
    oxford5k/gt_files_170407/<q>_<n>_{query,good,ok,junk}.txt
    paris6k/paris/<landmark>/<name>.jpg                  (paris_1.tgz + paris_2.tgz)
    paris6k/paris_120310/<q>_<n>_{query,good,ok,junk}.txt

A query file holds one line ``<image> x1 y1 x2 y2``: the image is ``oxc1_<name>`` in Oxford and the
plain ``paris_<landmark>_NNNNNN`` name in Paris; the box is in pixels of the original image. The
list files hold one image name per line. good + ok are the positives of a query, junk is left out
of its ranking (the Oxford protocol, ``compute_ap.cpp``).

Strict: a missing folder or list file, a malformed line, a list naming no image of the dataset, a
box outside its image are one line (:class:`~dcbench.errors.DataError`) naming the file and the fix.
An image whose header does not parse is left out of the database (one warning), as are the twenty
Paris images known to be corrupt (the original evaluation's list); a list may still name those, and
they still count among the positives, as ``compute_ap`` reads the lists whole.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dcbench.datasets import _header_ok, open_image, walk_files
from dcbench.errors import DataError
from dcbench.text import printable

LAYOUTS = {
    # dataset: (images folder, ground-truth folder (named after its archive), query-name prefix)
    "oxford5k": ("oxbuild_images", "gt_files_170407", "oxc1_"),
    "paris6k": ("paris", "paris_120310", ""),
}

# Corrupt files of the Paris release; the original evaluation leaves them out of the database.
PARIS_CORRUPT = frozenset(
    ["paris_louvre_000136", "paris_louvre_000146", "paris_moulinrouge_000422", "paris_museedorsay_001059",
     "paris_notredame_000188", "paris_pantheon_000284", "paris_pantheon_000960", "paris_pantheon_000974",
     "paris_pompidou_000195", "paris_pompidou_000196", "paris_pompidou_000201", "paris_pompidou_000467",
     "paris_pompidou_000640", "paris_sacrecoeur_000299", "paris_sacrecoeur_000330", "paris_sacrecoeur_000353",
     "paris_triomphe_000662", "paris_triomphe_000833", "paris_triomphe_000863", "paris_triomphe_000867"])

MAX_LIST_BYTES = 4 << 20     # the largest real list (Paris junk) is a few kB
MAX_QUERIES = 10_000         # 55 in either real dataset
MAX_SIDE = 100_000           # pixels; a box coordinate beyond it is no pixel coordinate


@dataclass
class Query:
    name: str                               # <q>_<n>, e.g. all_souls_1
    image: int                              # index into RetrievalDataset.names
    box: tuple[float, float, float, float]  # x1 y1 x2 y2 in the original image's pixels
    positives: frozenset[str]               # good + ok
    junk: frozenset[str]                    # may overlap positives: junk wins, as in compute_ap


@dataclass
class RetrievalDataset:
    name: str
    root: Path
    names: list[str]          # database images, sorted by name
    paths: list[str]
    queries: list[Query]
    skipped: list[str] = field(default_factory=list)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"ground-truth file {path} does not exist; every <query>_<n>_query.txt needs its "
                        "_good.txt, _ok.txt and _junk.txt beside it (the published gt files)")
    if path.stat().st_size > MAX_LIST_BYTES:
        raise DataError(f"ground-truth file {path} is over {MAX_LIST_BYTES >> 20} MiB; it is not a list of image names")
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise DataError(f"ground-truth file {path} is not readable UTF-8 text ({type(e).__name__}); "
                        "replace it with the published file") from None


def _read_list(path: Path, known: set[str], tolerated: frozenset[str]) -> frozenset[str]:
    names = set()
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 1:
            raise DataError(f"{path}:{lineno}: malformed line {printable(line.strip(), 80)!r} "
                            "(expected one image name, without .jpg)")
        if parts[0] not in known and parts[0] not in tolerated:
            raise DataError(f"{path}:{lineno}: {printable(parts[0], 80)!r} is no image of the dataset; "
                            "fix the list or restore the image")
        names.add(parts[0])
    return frozenset(names)


def _parse_query(path: Path, prefix: str) -> tuple[str, tuple[float, float, float, float]]:
    lines = [ln for ln in _read_text(path).splitlines() if ln.strip()]
    expect = f"one line '{prefix}<image> x1 y1 x2 y2'"
    if len(lines) != 1:
        raise DataError(f"query file {path}: {len(lines)} lines, expected {expect}")
    parts = lines[0].split()
    if len(parts) != 5 or not parts[0].startswith(prefix) or len(parts[0]) == len(prefix):
        raise DataError(f"query file {path}: malformed line {printable(lines[0].strip(), 80)!r}, expected {expect}")
    try:
        box = tuple(float(v) for v in parts[1:])
    except ValueError:
        raise DataError(f"query file {path}: box {printable(' '.join(parts[1:]), 80)!r} is not four numbers") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_SIDE for v in box):
        raise DataError(f"query file {path}: box {printable(' '.join(parts[1:]), 80)} is not pixel coordinates")
    return parts[0][len(prefix):], box  # type: ignore[return-value]


def _images(folder: Path) -> dict[str, str]:
    """name (file stem) -> path of every .jpg under ``folder`` (Paris: one level of landmark folders)."""
    found: dict[str, str] = {}
    for dirpath, filenames in walk_files(folder):
        for fn in filenames:
            if not fn.lower().endswith(".jpg"):
                continue
            stem = fn[:-4]
            if stem in found:
                raise DataError(f"image {stem}.jpg is in {found[stem]} and in {dirpath}; image names must be "
                                "unique across the dataset (remove one)")
            found[stem] = f"{dirpath}/{fn}"
    return found


def read_dataset(root: str | Path, name: str) -> RetrievalDataset:
    """``root`` is oxford5k/ or paris6k/ (``name`` says which layout)."""
    if name not in LAYOUTS:
        raise ValueError(name)
    root = Path(root)
    images_dir, gt_dir, prefix = LAYOUTS[name]
    for sub in (images_dir, gt_dir):
        if not (root / sub).is_dir():
            raise DataError(f"{name}: {root / sub} does not exist; lay the dataset out as "
                            f"{root}/{images_dir}/ (images) and {root}/{gt_dir}/ (ground truth)")
    all_images = _images(root / images_dir)
    corrupt = PARIS_CORRUPT if name == "paris6k" else frozenset()
    skipped = [p for n, p in sorted(all_images.items()) if n in corrupt]
    usable = {}
    for n, p in sorted(all_images.items()):
        if n in corrupt:
            continue
        if _header_ok(p):
            usable[n] = p
        else:
            skipped.append(p)
    if not usable:
        raise DataError(f"{name}: no readable .jpg image under {root / images_dir}")
    unread = [p for p in skipped if Path(p).name[:-4] not in corrupt]
    if unread:
        print(f"warning: {name}: left {len(unread)} unreadable image(s) out of the database (first: "
              f"{printable(unread[0])})", file=sys.stderr)
    names = sorted(usable)
    index = {n: i for i, n in enumerate(names)}
    tolerated = frozenset(Path(p).name[:-4] for p in skipped) | corrupt
    query_files = sorted((root / gt_dir).glob("*_query.txt"))
    if not query_files:
        raise DataError(f"{name}: no <query>_<n>_query.txt in {root / gt_dir}; extract the ground-truth archive there")
    if len(query_files) > MAX_QUERIES:
        raise DataError(f"{name}: {len(query_files)} query files in {root / gt_dir}, more than {MAX_QUERIES}")
    queries = []
    for qf in query_files:
        qname = qf.name[:-len("_query.txt")]
        image, box = _parse_query(qf, prefix)
        if image not in index:
            raise DataError(f"query file {qf}: its image {printable(image, 80)!r} is not a readable image of "
                            f"{root / images_dir}; restore the image or fix the file")
        with open_image(usable[image]) as im:
            w, h = im.size
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise DataError(f"query file {qf}: box {x1:g} {y1:g} {x2:g} {y2:g} is not inside its image {image} "
                            f"({w}x{h}); expected 0 <= x1 < x2 <= {w} and 0 <= y1 < y2 <= {h}")
        lists = {k: _read_list(root / gt_dir / f"{qname}_{k}.txt", set(index), tolerated) for k in ("good", "ok", "junk")}
        positives = lists["good"] | lists["ok"]
        if not positives:
            raise DataError(f"{root / gt_dir / (qname + '_good.txt')} and _ok.txt list no image: query {qname} has no "
                            "positive, its AP is undefined; fix the lists")
        queries.append(Query(qname, index[image], box, positives, lists["junk"]))
    return RetrievalDataset(name, root, names, [usable[n] for n in names], queries, skipped)

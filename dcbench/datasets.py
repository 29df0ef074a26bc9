"""Dataset readers for the real on-disk formats, used by the trainer and every transfer task.

- :class:`ImageFolder` — ImageNet-style ``root/<class>/<image>`` trees.
- :class:`ListFileDataset` — Places205-style list files (``relative/path.jpg <int label>``).
- :class:`VOCDetection`, :class:`VOCClassification`, :class:`VOCSegmentation` — PASCAL VOCdevkit.
- :func:`fingerprint` — a cheap identity of a data tree for results and checkpoints.

Bad data never crashes a run with a traceback: a missing folder, split or list file, or a
malformed line or XML raises :class:`~dcbench.errors.DataError` naming the file. An unreadable
image is skipped: images whose header does not parse are dropped at construction, images that
fail to decode later make ``__getitem__`` return ``None`` (use :func:`collate_skip_none` in the
DataLoader). Either way the path lands in ``.skipped`` and one line goes to stderr, once per
dataset root per process. (With DataLoader workers, load-time skips are recorded in the worker.)
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dcbench.errors import DataError
from dcbench.text import printable

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_reported_roots: set[str] = set()


def _report_skips(root: Path | str, paths: Sequence[str], when: str) -> None:
    """One stderr line per (root, when) per process."""
    key = f"{root}\0{when}"
    if not paths or key in _reported_roots:
        return
    _reported_roots.add(key)
    if when == "load":
        print(f"warning: skipped unreadable image under {root} (first: {printable(paths[0])}); further ones are skipped "
              "silently", file=sys.stderr)
    else:
        print(f"warning: skipped {len(paths)} unreadable image(s) under {root} (first: {printable(paths[0])})",
              file=sys.stderr)


def open_image(f) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb *warning* (more than MAX_IMAGE_PIXELS, about
    89 megapixels) raised as an error: a tiny file that decodes to gigabytes is unreadable data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(f)


def _header_ok(path: str) -> bool:
    """Cheap check: PIL parses the header (no pixel decode) and the size is not a bomb."""
    try:
        with open_image(path) as im:
            im.size  # noqa: B018 - touch the parsed header
        return True
    except Exception:
        return False


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        im = open_image(f)
        return im.convert("RGB")


def _utf8(name: str) -> bool:
    """os.walk returns undecodable bytes of a file name as surrogates: such a name cannot be
    written to a result or a log, so its file is treated as unreadable."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def walk_files(top: Path):
    """(dirpath, sorted file names) under ``top``, following directory links once each: a link
    back up the tree (a loop) is not descended again."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        yield dirpath, sorted(filenames)


def load_or_skip(dataset, path, loader: Callable = pil_loader):
    """``loader(path)`` (default: decode to RGB); an unreadable image is recorded in
    ``dataset.skipped``, reported once, and None."""
    try:
        return loader(str(path))
    except Exception:  # noqa: BLE001 - any decode failure means "skip this image"
        dataset.skipped.append(str(path))
        _report_skips(dataset.root, [str(path)], "load")
        return None


def collate_skip_none(batch: list):
    """``default_collate`` over the items that are not ``None`` (unreadable images)."""
    from torch.utils.data import default_collate

    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return default_collate(batch)


class _SkippingDataset(torch.utils.data.Dataset):
    """Shared load-time behaviour: a failed decode returns None and is recorded once."""

    root: Path
    samples: list[tuple[str, int]]
    skipped: list[str]
    transform: Callable | None

    def _filter_readable(self, samples: list[tuple[str, int]], verify: bool) -> list[tuple[str, int]]:
        if not verify:
            return samples
        good = []
        for path, label in samples:
            if _header_ok(path):
                good.append((path, label))
            else:
                self.skipped.append(path)
        if good:  # with none left the caller's error says it all: one line, not a warning then the error
            _report_skips(self.root, self.skipped, "header")
        return good

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        if getattr(self.transform, "reads_path", False):
            # The transform decodes itself (dcbench.imageload: at reduced size when its crop allows).
            img = load_or_skip(self, path, self.transform)
            return None if img is None else (img, label)
        img = load_or_skip(self, path)
        if img is None:
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    @property
    def targets(self) -> list[int]:
        return [s[1] for s in self.samples]


class ImageFolder(_SkippingDataset):
    """``root/<class>/**/<image>``, classes sorted by name (torchvision's convention).

    ``verify=False`` skips the per-image header check at construction (large trees).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, *, verify: bool = True):
        self.root = Path(root)
        self.transform = transform
        self.skipped = []
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist (expected ROOT/<class>/<image>.jpg)")
        self.classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        bad = [c for c in self.classes if not _utf8(c)]
        if bad:
            raise DataError(f"image folder {self.root}: class folder {ascii(bad[0])} has a name that is not "
                            "UTF-8; rename it")
        if not self.classes:
            raise DataError(f"image folder {self.root} has no class subfolders (expected ROOT/<class>/<image>.jpg)")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        samples = []
        for c in self.classes:
            for dirpath, filenames in walk_files(self.root / c):
                for fn in filenames:
                    if not fn.lower().endswith(IMG_EXTENSIONS):
                        continue
                    if _utf8(dirpath) and _utf8(fn):
                        samples.append((os.path.join(dirpath, fn), self.class_to_idx[c]))
                    else:
                        self.skipped.append(ascii(os.path.join(dirpath, fn)))
        if not samples and not self.skipped:
            raise DataError(f"image folder {self.root} contains no images ({', '.join(IMG_EXTENSIONS)})")
        self.samples = self._filter_readable(samples, verify)
        if not self.samples:
            raise DataError(f"image folder {self.root}: none of its {len(self.skipped)} images is readable "
                            f"(first: {printable(self.skipped[0])}); check the files (or the path)")

    @property
    def imgs(self) -> list[tuple[str, int]]:
        return self.samples


def _find_categories(images_root: Path, list_file: Path) -> list[str] | None:
    for d in (list_file.parent, list_file.parent.parent, images_root.parent):
        f = d / "categories_places205.txt"
        if f.is_file():
            names = {}
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    names[int(parts[1])] = parts[0]
            if names:
                return [names.get(i, str(i)) for i in range(max(names) + 1)]
    return None


class ListFileDataset(_SkippingDataset):
    """Places205-style list file: one ``relative/path.jpg <int label>`` per line, paths under images_root."""

    def __init__(self, images_root: str | os.PathLike, list_file: str | os.PathLike,
                 transform: Callable | None = None, *, verify: bool = True):
        self.root = Path(images_root)
        self.list_file = Path(list_file)
        self.transform = transform
        self.skipped = []
        if not self.list_file.is_file():
            raise DataError(f"list file {self.list_file} does not exist")
        if not self.root.is_dir():
            raise DataError(f"image root {self.root} (for list file {self.list_file}) does not exist")
        samples = []
        with open(self.list_file) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                    raise DataError(f"{self.list_file}:{lineno}: malformed line {line.strip()!r} "
                                    "(expected 'relative/path.jpg <non-negative int label>')")
                samples.append((str(self.root / parts[0]), int(parts[1])))
        if not samples:
            raise DataError(f"list file {self.list_file} is empty")
        self.samples = self._filter_readable(samples, verify)
        n = max(s[1] for s in samples) + 1
        self.classes = _find_categories(self.root, self.list_file) or [str(i) for i in range(n)]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


# ---------------------------------------------------------------------------------------------
# PASCAL VOC
def _voc_base(devkit_root: str | os.PathLike, year: str) -> Path:
    """Accept VOCdevkit, its parent, or VOC<year> itself."""
    root = Path(devkit_root)
    for cand in (root / f"VOC{year}", root / "VOCdevkit" / f"VOC{year}", root):
        if (cand / "ImageSets").is_dir():
            return cand
    raise DataError(f"no VOC{year} devkit under {root} (expected {root}/VOC{year}/ImageSets)")


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"VOC split file {path} does not exist")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"VOC split file {path} is empty")
    return ids


MAX_VOC_SIDE = 100_000  # pixels; VOC images are about 500


def _xml_int(node: ET.Element, tag: str, path: Path) -> int:
    el = node.find(tag)
    if el is None or el.text is None:
        raise DataError(f"malformed VOC annotation {path}: missing <{tag}>")
    text = el.text.strip()[:40]
    try:
        v = float(text)
    except ValueError:
        raise DataError(f"malformed VOC annotation {path}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(v) or abs(v) > MAX_VOC_SIDE:
        raise DataError(f"malformed VOC annotation {path}: <{tag}> is {text!r}, not a pixel coordinate "
                        f"(at most {MAX_VOC_SIDE})")
    return int(v)


def parse_voc_xml(path: Path) -> dict:
    """Objects of one Annotations XML file, boxes still 1-based inclusive as in the devkit."""
    if not path.is_file():
        raise DataError(f"VOC annotation {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"malformed VOC annotation {path}: {e}") from None
    size = root.find("size")
    if root.tag != "annotation" or size is None:
        raise DataError(f"malformed VOC annotation {path}: expected <annotation> with <size>")
    w, h = _xml_int(size, "width", path), _xml_int(size, "height", path)
    if w < 1 or h < 1:
        raise DataError(f"malformed VOC annotation {path}: image size {w}x{h}, expected positive width and height")
    objs = []
    for o in root.iter("object"):
        name_el = o.find("name")
        name = (name_el.text or "").strip() if name_el is not None else ""
        if name not in VOC_CLASSES:
            raise DataError(f"malformed VOC annotation {path}: unknown object name {name!r}")
        bb = o.find("bndbox")
        if bb is None:
            raise DataError(f"malformed VOC annotation {path}: <object> without <bndbox>")
        box = [_xml_int(bb, t, path) for t in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] < box[0] or box[3] < box[1]:
            raise DataError(f"malformed VOC annotation {path}: inverted box {box} of a {name} "
                            "(expected xmin <= xmax and ymin <= ymax)")
        flags = {}
        for t in ("difficult", "truncated"):
            el = o.find(t)
            flags[t] = bool(int(el.text)) if el is not None and el.text and el.text.strip().isdigit() else False
        # Devkit boxes are 1-based inclusive pixels in [1, width] x [1, height]; the devkit clips
        # one that reaches outside, so do we (and count it); one wholly outside the image is dropped.
        clipped = [min(max(box[0], 1), w), min(max(box[1], 1), h), min(max(box[2], 1), w), min(max(box[3], 1), h)]
        outside = box[0] > w or box[1] > h or box[2] < 1 or box[3] < 1
        objs.append(dict(name=name, bndbox=clipped, clipped=clipped != box, outside=outside, **flags))
    return dict(width=w, height=h, objects=[o for o in objs if not o["outside"]],
                clipped=sum(o["clipped"] and not o["outside"] for o in objs),
                dropped=sum(o["outside"] for o in objs))


def _report_boxes(base: Path, split: str, annotations: list[dict]) -> tuple[int, int]:
    clipped = sum(a.get("clipped", 0) for a in annotations)
    dropped = sum(a.get("dropped", 0) for a in annotations)
    if clipped or dropped:
        print(f"warning: {base} {split}: {clipped} box(es) reaching outside their image clipped to it, "
              f"{dropped} box(es) wholly outside dropped (as the VOC devkit does)", file=sys.stderr)
    return clipped, dropped


class VOCDetection(torch.utils.data.Dataset):
    """(PIL image, target) with target: boxes (N,4 float, 0-based continuous x1,y1,x2,y2), labels (1..20),
    difficult, truncated (bool), image_id (str), size (h, w).

    ``transform`` is applied to the image only; ``transforms(img, target)`` (keyword) to both.
    An unreadable image makes ``__getitem__`` return None, as in :class:`ImageFolder`.
    """

    def __init__(self, devkit_root: str | os.PathLike, year: str = "2007", split: str = "trainval",
                 transform: Callable | None = None, *, transforms: Callable | None = None):
        self.base = _voc_base(devkit_root, str(year))
        self.root = self.base / "JPEGImages"
        self.year, self.split = str(year), split
        self.transform, self.transforms = transform, transforms
        self.classes = VOC_CLASSES
        self.skipped: list[str] = []
        self.ids = _read_ids(self.base / "ImageSets" / "Main" / f"{split}.txt")
        self.annotations = [parse_voc_xml(self.base / "Annotations" / f"{i}.xml") for i in self.ids]
        self.clipped_boxes, self.dropped_boxes = _report_boxes(self.base, split, self.annotations)

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, index: int) -> dict:
        ann = self.annotations[index]
        objs = ann["objects"]
        boxes = torch.tensor([o["bndbox"] for o in objs], dtype=torch.float32).reshape(-1, 4)
        # Devkit boxes are 1-based inclusive pixel indices. In 0-based continuous coordinates the box
        # covers [xmin - 1, xmax] (detectron2's / torchvision's convention): shift only the top-left.
        boxes[:, :2] -= 1
        return dict(
            boxes=boxes,
            labels=torch.tensor([VOC_CLASSES.index(o["name"]) + 1 for o in objs], dtype=torch.int64),
            difficult=torch.tensor([o["difficult"] for o in objs], dtype=torch.bool),
            truncated=torch.tensor([o["truncated"] for o in objs], dtype=torch.bool),
            image_id=self.ids[index],
            size=(ann["height"], ann["width"]),
        )

    def __getitem__(self, index: int):
        img = load_or_skip(self, self.root / f"{self.ids[index]}.jpg")
        if img is None:
            return None
        target = self.target(index)
        if self.transform is not None:
            img = self.transform(img)
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


class VOCClassification(torch.utils.data.Dataset):
    """(image, float tensor of 20 in {1, 0 (difficult only), -1}) from ImageSets/Main/<class>_<split>.txt."""

    def __init__(self, devkit_root: str | os.PathLike, year: str = "2007", split: str = "trainval",
                 transform: Callable | None = None):
        self.base = _voc_base(devkit_root, str(year))
        self.root = self.base / "JPEGImages"
        self.transform = transform
        self.classes = VOC_CLASSES
        self.skipped: list[str] = []
        self.ids = _read_ids(self.base / "ImageSets" / "Main" / f"{split}.txt")
        index = {i: k for k, i in enumerate(self.ids)}
        labels = np.zeros((len(self.ids), len(VOC_CLASSES)), dtype=np.float32)
        for c, cls in enumerate(VOC_CLASSES):
            f = self.base / "ImageSets" / "Main" / f"{cls}_{split}.txt"
            if not f.is_file():
                raise DataError(f"VOC class file {f} does not exist")
            seen = 0
            for lineno, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2 or parts[1] not in ("1", "0", "-1") or parts[0] not in index:
                    raise DataError(f"{f}:{lineno}: malformed line {line!r} (expected '<image id in {split}.txt> "
                                    "1|0|-1')")
                labels[index[parts[0]], c] = int(parts[1])
                seen += 1
            if seen != len(self.ids):
                raise DataError(f"VOC class file {f} lists {seen} images, {split}.txt lists {len(self.ids)}")
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        img = load_or_skip(self, self.root / f"{self.ids[index]}.jpg")
        if img is None:
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, torch.from_numpy(self.labels[index].copy())


class VOCSegmentation(torch.utils.data.Dataset):
    """(PIL RGB image, PIL 'P' mask with 0..20 and 255 = void); ``transforms(img, mask)`` applied to both."""

    def __init__(self, devkit_root: str | os.PathLike, year: str = "2012", split: str = "train",
                 transforms: Callable | None = None):
        self.base = _voc_base(devkit_root, str(year))
        self.root = self.base / "JPEGImages"
        self.transforms = transforms
        self.classes = ("background",) + VOC_CLASSES
        self.skipped: list[str] = []
        self.ids = _read_ids(self.base / "ImageSets" / "Segmentation" / f"{split}.txt")
        for i in self.ids:
            m = self.base / "SegmentationClass" / f"{i}.png"
            if not m.is_file():
                raise DataError(f"VOC segmentation mask {m} does not exist (listed in {split}.txt)")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        path = self.root / f"{self.ids[index]}.jpg"
        mpath = self.base / "SegmentationClass" / f"{self.ids[index]}.png"
        try:
            img = pil_loader(str(path))
            mask = Image.open(mpath)
            mask.load()
        except Exception:
            self.skipped.append(str(path))
            _report_skips(self.root, [str(path)], "load")
            return None
        if mask.mode not in ("P", "L"):
            raise DataError(f"VOC segmentation mask {mpath} has mode {mask.mode}, expected a palette ('P') PNG")
        if mask.size != img.size:
            raise DataError(f"VOC segmentation mask {mpath} is {mask.size[0]}x{mask.size[1]}, its image "
                            f"{img.size[0]}x{img.size[1]}; a mask must match its image")
        values = np.unique(np.asarray(mask))
        bad = values[(values > len(VOC_CLASSES)) & (values != 255)]
        if bad.size:
            raise DataError(f"VOC segmentation mask {mpath} holds class value {int(bad[0])}; expected 0-"
                            f"{len(VOC_CLASSES)} or 255 (void)")
        if self.transforms is not None:
            img, mask = self.transforms(img, mask)
        return img, mask


def fingerprint(root: str | os.PathLike) -> str:
    """sha256 over the sorted relative paths and sizes of all files under ``root`` (no content read)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data root {root} does not exist")
    entries = []
    for dirpath, filenames in walk_files(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            try:
                size = os.path.getsize(p)
            except OSError:  # a dangling or looping link: part of the tree's identity, as -1
                size = -1
            entries.append((Path(p).relative_to(root).as_posix(), size))
    h = hashlib.sha256()
    for rel, size in sorted(entries):
        h.update(os.fsencode(rel) + f"\t{size}\n".encode())
    return h.hexdigest()

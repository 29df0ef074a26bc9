"""The embedded-data generator: small, seeded datasets in the real on-disk formats.

Nothing can be downloaded on the machines this project runs on, so every task needs data that
exists without a network. This module draws it: procedural shape families (star, ring, house,
stick-figure "person", wheeled "car", ...) at varied scale, position, rotation, shear, colour and
texture, on cluttered textured backgrounds with distractors and partial occlusion. Class
information lives in shape and structure; colour and texture are drawn independently of the
class, so they carry none. The one exception is the VOC scenes: a VOC class is a classification
glyph crossed with a flat or striped fill (see :data:`VOC_GLYPHS`), so the fill carries half of it.

Four datasets, in the on-disk layouts of the real ones, so every loader runs on them unchanged::

    OUT/classification/{train,val}/<class>/<class>_NNNNN.jpg          ImageNet-style ImageFolder
    OUT/places/images/<l>/<scene>/NNNNNNNN.jpg                          Places205-style images
    OUT/places/trainvalsplit_places205/{train,val}_places205.csv        "l/scene/NNNNNNNN.jpg <label>"
    OUT/places/categories_places205.txt                                 "/l/scene <label>"
    OUT/VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}       detection / classification
    OUT/VOCdevkit/VOC2012/{JPEGImages,Annotations,SegmentationClass,ImageSets/{Main,Segmentation}}
    OUT/retrieval/oxford5k/{oxbuild_images,gt_files_170407}             Oxford buildings-style retrieval
    OUT/retrieval/paris6k/{paris/<landmark>,paris_120310}               Paris buildings-style retrieval
    OUT/dcbench_data.json                                               summary (counts, sizes, seed)

Sizes per scale are in :data:`SCALES`. Determinism: every image has its own numpy Generator
seeded from (seed, subset, index), JPEGs are written at a fixed quality without metadata, PNGs
without timestamps, and text files in sorted order, so the same seed gives a byte-identical tree
whatever the generation order.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from dcbench.datasets import VOC_CLASSES  # one list: the generator draws the classes the readers accept

GENERATOR_VERSION = 4  # 3: adds retrieval/; 4: new VOC scenes (every non-VOC file of 3 unchanged, byte for byte)
JPEG_QUALITY = 90

SCALES: dict[str, dict[str, int]] = {
    # CI scale: everything in a few seconds on one core.
    "smoke": dict(
        cls_train=60, cls_val=20, cls_size=96,
        places_train=50, places_val=20, places_size=96,
        voc07_trainval=120, voc07_test=120, voc12_train=80, voc12_val=60,
        voc_min=128, voc_max=160,
        ret_good=4, ret_ok=2, ret_junk=2, ret_distractors=25, ret_side=160,
    ),
    # Large enough for a meaningful DeepCluster run and a stable linear probe.
    "demo": dict(
        cls_train=500, cls_val=100, cls_size=96,
        places_train=300, places_val=60, places_size=96,
        voc07_trainval=500, voc07_test=500, voc12_train=400, voc12_val=300,
        voc_min=128, voc_max=160,
        ret_good=8, ret_ok=3, ret_junk=3, ret_distractors=150, ret_side=160,
    ),
}

# Difficulty knobs (calibrated with benchmarks/probe_calibration.py; see its JSON).
DIFFICULTY = dict(
    bg_noise_amp=0.35,      # amplitude of the low-frequency colour field of the background
    bg_tex_alpha=(0.1, 0.45),  # opacity range of the background's texture pattern
    clutter=(1, 4),         # distractors drawn under the objects
    occluders=(0, 1),       # distractors drawn over the objects
    contrast=(0.15, 0.5),  # object-vs-background luminance offset range
    cls_scale=(0.26, 0.42),  # classification object half-size, as a fraction of the image side
    jitter=0.03,            # per-vertex jitter in unit coordinates
    pixel_noise=0.03,
)

# The standard PASCAL VOC colour map (bit-interleaved), 256 entries.
def voc_palette() -> list[int]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


# --------------------------------------------------------------------------------------------
# Geometry primitives, in unit coordinates (object roughly inside [-1, 1]^2, y pointing down).
# A shape is a list of (polygon Nx2, solid) drawn in order; solid=False cuts a hole.
Prim = tuple[np.ndarray, bool]


def _ellipse(cx: float, cy: float, rx: float, ry: float | None = None, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + (rx if ry is None else ry) * np.sin(t)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def _bar(x0: float, y0: float, x1: float, y1: float, w: float) -> np.ndarray:
    d = np.array([x1 - x0, y1 - y0], dtype=float)
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * w / 2
    return np.array([[x0, y0] + n, [x1, y1] + n, [x1, y1] - n, [x0, y0] - n])


def _star(n: int, ro: float, ri: float, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(2 * n) * math.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, ro, ri)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _poly(*pts: float) -> np.ndarray:
    return np.array(pts, dtype=float).reshape(-1, 2)


# Classification families: glyph-like shapes. Each takes a Generator and returns primitives.
def _f_star(r):
    return [(_star(5, 1.0, r.uniform(0.35, 0.5)), True)]


def _f_ring(r):
    return [(_ellipse(0, 0, 1.0), True), (_ellipse(0, 0, r.uniform(0.5, 0.68)), False)]


def _f_cross(r):
    w = r.uniform(0.28, 0.42)
    return [(_rect(-w, -1, w, 1), True), (_rect(-1, -w, 1, w), True)]


def _f_arrow(r):
    w = r.uniform(0.18, 0.3)
    return [(_rect(-1, -w, 0.1, w), True), (_poly(0.1, -0.75, 1.0, 0, 0.1, 0.75), True)]


def _f_grid(r):
    w = r.uniform(0.14, 0.22)
    out = []
    for o in (-0.38, 0.38):
        out += [(_rect(o - w / 2, -1, o + w / 2, 1), True), (_rect(-1, o - w / 2, 1, o + w / 2), True)]
    return out


def _f_house(r):
    return [(_rect(-0.75, -0.1, 0.75, 1.0), True), (_poly(-1.0, -0.05, 0, -1.0, 1.0, -0.05), True),
            (_rect(-0.2, 0.4, 0.2, 1.0), False)]


def _f_crescent(r):
    return [(_ellipse(0, 0, 1.0), True), (_ellipse(r.uniform(0.35, 0.55), -0.1, 0.85), False)]


def _f_triangle(r):
    return [(_poly(0, -1.0, 0.95, 0.8, -0.95, 0.8), True)]


def _f_stripes(r):
    out = [(_ellipse(0, 0, 1.0, 0.8), True)]
    for y in (-0.4, 0.0, 0.4):
        out.append((_rect(-1.1, y - 0.08, 1.1, y + 0.08), False))
    return out


def _f_bowtie(r):
    return [(_poly(-1, -0.9, 0, 0, -1, 0.9), True), (_poly(1, -0.9, 0, 0, 1, 0.9), True)]


CLASSIFICATION_FAMILIES: dict[str, Callable] = {
    "arrow": _f_arrow, "bowtie": _f_bowtie, "crescent": _f_crescent, "cross": _f_cross,
    "grid": _f_grid, "house": _f_house, "ring": _f_ring, "star": _f_star, "stripes": _f_stripes,
    "triangle": _f_triangle,
}


# VOC families: composite "objects", one distinct family per VOC class.
def _v_aeroplane(r):
    return [(_ellipse(0, 0, 1.0, 0.14), True), (_poly(-0.2, 0, 0.15, -0.95, 0.3, -0.95, 0.2, 0), True),
            (_poly(-0.2, 0, 0.15, 0.95, 0.3, 0.95, 0.2, 0), True), (_poly(-0.95, 0, -0.8, -0.4, -0.7, 0), True)]


def _v_bicycle(r):
    out = []
    for cx in (-0.55, 0.55):
        out += [(_ellipse(cx, 0.3, 0.42), True), (_ellipse(cx, 0.3, 0.33), False)]
    out += [(_bar(-0.55, 0.3, 0.0, -0.35, 0.09), True), (_bar(0.0, -0.35, 0.55, 0.3, 0.09), True),
            (_bar(-0.2, -0.35, 0.35, -0.35, 0.09), True)]
    return out


def _v_bird(r):
    return [(_poly(-1, -0.5, -0.7, -0.6, 0, 0.05, 0.7, -0.6, 1, -0.5, 0, 0.45), True)]


def _v_boat(r):
    return [(_poly(-1, 0.3, 1, 0.3, 0.65, 0.75, -0.65, 0.75), True), (_rect(-0.04, -1, 0.04, 0.3), True),
            (_poly(0.08, -0.95, 0.08, 0.2, 0.75, 0.2), True)]


def _v_bottle(r):
    return [(_rect(-0.38, -0.2, 0.38, 1.0), True), (_poly(-0.38, -0.2, -0.14, -0.55, 0.14, -0.55, 0.38, -0.2), True),
            (_rect(-0.14, -1.0, 0.14, -0.5), True)]


def _v_bus(r):
    out = [(_rect(-1, -0.5, 1, 0.45), True)]
    for x in np.linspace(-0.8, 0.55, 5):
        out.append((_rect(x, -0.35, x + 0.2, -0.05), False))
    out += [(_ellipse(-0.6, 0.5, 0.17), True), (_ellipse(0.6, 0.5, 0.17), True)]
    return out


def _v_car(r):
    return [(_rect(-1, -0.1, 1, 0.35), True), (_poly(-0.55, -0.1, -0.3, -0.55, 0.35, -0.55, 0.6, -0.1), True),
            (_ellipse(-0.55, 0.4, 0.25), True), (_ellipse(0.55, 0.4, 0.25), True),
            (_ellipse(-0.55, 0.4, 0.1), False), (_ellipse(0.55, 0.4, 0.1), False)]


def _v_cat(r):
    return [(_ellipse(0, 0.15, 0.8, 0.75), True), (_poly(-0.75, -0.1, -0.7, -1.0, -0.15, -0.55), True),
            (_poly(0.75, -0.1, 0.7, -1.0, 0.15, -0.55), True), (_ellipse(-0.3, 0.05, 0.12), False),
            (_ellipse(0.3, 0.05, 0.12), False)]


def _v_chair(r):
    return [(_rect(-0.6, -1, -0.4, 1), True), (_rect(-0.6, 0.0, 0.6, 0.2), True), (_rect(0.4, 0.0, 0.6, 1), True)]


def _v_cow(r):
    out = [(_rect(-0.8, -0.4, 0.6, 0.3), True), (_rect(0.5, -0.65, 1.0, -0.2), True)]
    for x in (-0.75, -0.45, 0.25, 0.5):
        out.append((_rect(x, 0.3, x + 0.13, 1.0), True))
    return out


def _v_diningtable(r):
    return [(_rect(-1, -0.45, 1, -0.25), True), (_rect(-0.9, -0.25, -0.75, 0.8), True),
            (_rect(0.75, -0.25, 0.9, 0.8), True), (_rect(-0.15, -0.25, 0.15, 0.1), True)]


def _v_dog(r):  # bone-like: a bar with knobbed ends
    out = [(_rect(-0.7, -0.15, 0.7, 0.15), True)]
    for x in (-0.75, 0.75):
        for y in (-0.22, 0.22):
            out.append((_ellipse(x, y, 0.25), True))
    return out


def _v_horse(r):  # horseshoe
    out = [(_ellipse(0, -0.1, 0.9), True), (_ellipse(0, -0.1, 0.55), False), (_rect(-0.55, -0.1, 0.55, 1.0), False)]
    out += [(_rect(-0.9, -0.1, -0.55, 0.85), True), (_rect(0.55, -0.1, 0.9, 0.85), True)]
    return out


def _v_motorbike(r):
    return [(_ellipse(-0.6, 0.4, 0.35), True), (_ellipse(0.6, 0.4, 0.35), True),
            (_poly(-0.6, 0.4, -0.1, -0.3, 0.6, -0.1, 0.6, 0.4), True), (_bar(0.45, -0.2, 0.7, -0.7, 0.12), True)]


def _v_person(r):
    return [(_ellipse(0, -0.8, 0.2), True), (_bar(0, -0.6, 0, 0.25, 0.22), True),
            (_bar(0, -0.4, -0.55, 0.05, 0.12), True), (_bar(0, -0.4, 0.55, 0.05, 0.12), True),
            (_bar(0, 0.2, -0.35, 1.0, 0.14), True), (_bar(0, 0.2, 0.35, 1.0, 0.14), True)]


def _v_pottedplant(r):
    return [(_poly(-0.4, 0.35, 0.4, 0.35, 0.3, 1.0, -0.3, 1.0), True), (_star(7, 0.75, 0.3) + [0, -0.3], True)]


def _v_sheep(r):  # cloud of circles
    out = []
    for cx, cy, rr in ((-0.5, 0, 0.45), (0, -0.25, 0.5), (0.5, 0, 0.45), (0, 0.2, 0.45)):
        out.append((_ellipse(cx, cy, rr), True))
    out += [(_rect(-0.5, 0.4, -0.35, 0.95), True), (_rect(0.35, 0.4, 0.5, 0.95), True)]
    return out


def _v_sofa(r):
    return [(_rect(-1, -0.6, -0.7, 0.6), True), (_rect(0.7, -0.6, 1, 0.6), True), (_rect(-0.7, -0.3, 0.7, -0.1), True),
            (_rect(-0.7, 0.1, 0.7, 0.6), True)]


def _v_train(r):
    out = []
    for x in (-1.0, -0.3, 0.4):
        out.append((_rect(x, -0.35, x + 0.6, 0.3), True))
        out.append((_rect(x + 0.15, -0.25, x + 0.45, -0.05), False))
    out.append((_rect(-1.0, 0.35, 1.0, 0.45), True))
    return out


def _v_tvmonitor(r):
    return [(_rect(-1, -0.8, 1, 0.55), True), (_rect(-0.8, -0.6, 0.8, 0.35), False), (_rect(-0.1, 0.55, 0.1, 0.8), True),
            (_rect(-0.45, 0.8, 0.45, 0.92), True)]


VOC_FAMILIES: dict[str, Callable] = {
    "aeroplane": _v_aeroplane, "bicycle": _v_bicycle, "bird": _v_bird, "boat": _v_boat, "bottle": _v_bottle,
    "bus": _v_bus, "car": _v_car, "cat": _v_cat, "chair": _v_chair, "cow": _v_cow, "diningtable": _v_diningtable,
    "dog": _v_dog, "horse": _v_horse, "motorbike": _v_motorbike, "person": _v_person,
    "pottedplant": _v_pottedplant, "sheep": _v_sheep, "sofa": _v_sofa, "train": _v_train, "tvmonitor": _v_tvmonitor,
}
assert tuple(VOC_FAMILIES) == VOC_CLASSES

ALL_FAMILIES = {**CLASSIFICATION_FAMILIES, **VOC_FAMILIES}

PLACES_CLASSES: tuple[str, ...] = (
    "/c/coast", "/c/corridor", "/f/field", "/f/forest_path", "/m/market", "/p/parking_lot", "/r/rotunda",
    "/s/skyscraper",
)


# --------------------------------------------------------------------------------------------
# Rendering.
def _rng(seed: int, subset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(subset.encode()), index])


def _lum(c: np.ndarray) -> float:
    return float(c @ np.array([0.299, 0.587, 0.114]))


def _colour_near(r: np.random.Generator, lum: float) -> np.ndarray:
    """A random colour whose luminance is about ``lum`` (hue and saturation carry nothing)."""
    c = r.random(3)
    c = c + (lum - _lum(c))
    return np.clip(c, 0, 1)


def _texture(r: np.random.Generator, h: int, w: int, c0: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A fill of base colour c0: flat+noise, stripes, low-frequency blotches or checks."""
    kind = r.integers(4)
    c1 = np.clip(c0 + r.normal(0, 0.12, 3), 0, 1)
    if kind == 0:
        t = np.zeros((h, w, 1))
    elif kind == 1:
        a = r.uniform(0, math.pi)
        f = r.uniform(0.25, 0.8)
        t = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * f) > 0)[..., None].astype(float)
    elif kind == 2:
        small = r.random((4, 4))
        t = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                       dtype=float)[..., None] / 255
    else:
        p = r.integers(4, 10)
        t = (((xx // p) + (yy // p)) % 2)[..., None].astype(float)
    return c0 * (1 - t) + c1 * t


def _transform(prims: list[Prim], cx: float, cy: float, scale: float, angle: float, aspect: float,
               shear: float, mirror: bool, r: np.random.Generator, jitter: float) -> list[Prim]:
    ca, sa = math.cos(angle), math.sin(angle)
    m = np.array([[ca, -sa], [sa, ca]]) @ np.array([[aspect, shear], [0.0, 1.0]])
    out = []
    for pts, solid in prims:
        p = pts.copy()
        if mirror:
            p[:, 0] = -p[:, 0]
        p = p + r.normal(0, jitter, p.shape)
        out.append(((p @ m.T) * scale + [cx, cy], solid))
    return out


def _mask(prims: list[Prim], h: int, w: int, ss: int = 2) -> np.ndarray:
    """Antialiased coverage in [0, 1] of transformed primitives (2x supersampled)."""
    im = Image.new("L", (w * ss, h * ss), 0)
    d = ImageDraw.Draw(im)
    for pts, solid in prims:
        d.polygon([(float(x), float(y)) for x, y in pts * ss], fill=255 if solid else 0)
    return np.asarray(im.resize((w, h), Image.BOX), dtype=np.float32) / 255


class _Canvas:
    def __init__(self, r: np.random.Generator, h: int, w: int):
        self.r, self.h, self.w = r, h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.bg_lum = r.uniform(0.2, 0.8)
        self.img = self._background()
        self.labels = np.zeros((h, w), np.int32)  # 0 = background, k = object k (1-based draw order)

    def _background(self) -> np.ndarray:
        r, h, w = self.r, self.h, self.w
        amp = DIFFICULTY["bg_noise_amp"]
        small = r.random((3, 3, 3)) * amp + (self.bg_lum - amp / 2)
        base = np.asarray(Image.fromarray((np.clip(small, 0, 1) * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                          dtype=float) / 255
        tex = _texture(r, h, w, _colour_near(r, self.bg_lum), self.yy, self.xx)
        a = r.uniform(*DIFFICULTY["bg_tex_alpha"])
        return base * (1 - a) + tex * a

    def paint(self, alpha: np.ndarray, lum: float | None = None, label: int | None = None) -> None:
        r = self.r
        if lum is None:
            lum = r.uniform(0.1, 0.9)
        c0 = _colour_near(r, lum)
        rows, cols = np.nonzero(alpha.any(1))[0], np.nonzero(alpha.any(0))[0]
        if len(rows) == 0:
            _texture(r, 1, 1, c0, self.yy[:1, :1], self.xx[:1, :1])  # keep the random stream aligned
            return
        sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        a = alpha[sl][..., None]
        fill = _texture(r, a.shape[0], a.shape[1], c0, self.yy[sl], self.xx[sl])
        self.img[sl] = self.img[sl] * (1 - a) + fill * a
        if label is not None:
            self.labels[sl][alpha[sl] >= 0.5] = label

    def object_lum(self) -> float:
        lo, hi = DIFFICULTY["contrast"]
        d = self.r.uniform(lo, hi) * self.r.choice([-1, 1])
        v = self.bg_lum + d
        if not 0.05 <= v <= 0.95:
            v = self.bg_lum - d
        return float(np.clip(v, 0.02, 0.98))

    def distractor(self, size_frac: tuple[float, float] = (0.08, 0.3), label: int | None = None) -> None:
        """An irregular polygon, ellipse or thick line: clutter without class meaning."""
        r, h, w = self.r, self.h, self.w
        s = r.uniform(*size_frac) * min(h, w)
        cx, cy = r.uniform(0, w), r.uniform(0, h)
        kind = r.integers(3)
        if kind == 0:
            n = r.integers(3, 7)
            t = np.sort(r.uniform(0, 2 * math.pi, n))
            rad = r.uniform(0.4, 1.0, n)
            pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
        elif kind == 1:
            pts = _ellipse(0, 0, 1.0, r.uniform(0.3, 1.0))
        else:
            pts = _bar(-1, 0, 1, 0, r.uniform(0.08, 0.25))
        prims = _transform([(pts, True)], cx, cy, s, r.uniform(0, 2 * math.pi), 1.0, 0.0, False, r, 0.0)
        self.paint(_mask(prims, h, w), label=label)

    def finish(self) -> Image.Image:
        img = self.img + self.r.normal(0, DIFFICULTY["pixel_noise"], self.img.shape)
        return Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _random_pose(r: np.random.Generator, upright: bool) -> dict:
    return dict(angle=r.uniform(-0.35, 0.35) if upright else r.uniform(0, 2 * math.pi),
                aspect=math.exp(r.uniform(-0.2, 0.2)), shear=r.uniform(-0.2, 0.2), mirror=bool(r.integers(2)))


def render_classification(r: np.random.Generator, family: str, size: int) -> Image.Image:
    c = _Canvas(r, size, size)
    for _ in range(r.integers(DIFFICULTY["clutter"][0], DIFFICULTY["clutter"][1] + 1)):
        c.distractor()
    s = r.uniform(*DIFFICULTY["cls_scale"]) * size
    cx, cy = r.uniform(s * 0.8, size - s * 0.8, 2)
    prims = _transform(CLASSIFICATION_FAMILIES[family](r), cx, cy, s, **_random_pose(r, upright=False), r=r,
                       jitter=DIFFICULTY["jitter"])
    c.paint(_mask(prims, size, size), lum=c.object_lum())
    for _ in range(r.integers(DIFFICULTY["occluders"][0], DIFFICULTY["occluders"][1] + 1)):
        c.distractor((0.05, 0.15))
    return c.finish()


def _place_object(c: _Canvas, family: str, cx: float, cy: float, s: float, upright: bool = True) -> None:
    prims = _transform(ALL_FAMILIES[family](c.r), cx, cy, s, **_random_pose(c.r, upright), r=c.r,
                       jitter=DIFFICULTY["jitter"])
    c.paint(_mask(prims, c.h, c.w), lum=c.object_lum())


def render_scene(r: np.random.Generator, scene: str, size: int) -> Image.Image:
    """A Places-like scene: the class is the layout (horizon, bars, rows, ring, ...), not the objects."""
    h = w = size
    c = _Canvas(r, h, w)
    fams = list(ALL_FAMILIES)

    def fam() -> str:
        return fams[r.integers(len(fams))]

    for _ in range(r.integers(0, 3)):
        c.distractor((0.05, 0.2))
    if scene == "/c/coast":
        hy = r.uniform(0.35, 0.6) * h
        sea = (c.yy > hy + 2 * np.sin(c.xx * r.uniform(0.1, 0.3))).astype(np.float32)
        c.paint(sea, lum=c.object_lum())
        for k in range(r.integers(3, 7)):
            y = hy + (k + 1) * (h - hy) / 7 + r.uniform(-2, 2)
            band = (np.abs(c.yy - y - 1.5 * np.sin(c.xx * 0.4 + k)) < 1.0).astype(np.float32)
            c.paint(band, lum=c.object_lum())
        for _ in range(r.integers(1, 3)):
            _place_object(c, fam(), r.uniform(0.1, 0.9) * w, hy - r.uniform(0.05, 0.2) * h, r.uniform(0.05, 0.1) * w)
    elif scene == "/c/corridor":
        vx, vy = r.uniform(0.35, 0.65) * w, r.uniform(0.35, 0.65) * h
        for t in np.linspace(0.15, 0.95, r.integers(4, 7)):
            frame = [(_rect(-1, -1, 1, 1), True), (_rect(-0.9, -0.9, 0.9, 0.9), False)]
            prims = [(p * [t * w / 2, t * h / 2] + [vx + (w / 2 - vx) * t, vy + (h / 2 - vy) * t], s) for p, s in frame]
            c.paint(_mask(prims, h, w), lum=c.object_lum())
        for corner in ((0, 0), (w, 0), (0, h), (w, h)):
            c.paint(_mask([(_bar(vx, vy, *corner, 2.0), True)], h, w), lum=c.object_lum())
    elif scene == "/f/field":
        hy = r.uniform(0.6, 0.8) * h
        c.paint((c.yy > hy).astype(np.float32), lum=c.object_lum())
        _place_object(c, fam(), r.uniform(0.35, 0.65) * w, r.uniform(0.35, 0.55) * h, r.uniform(0.22, 0.32) * w)
    elif scene == "/f/forest_path":
        for _ in range(r.integers(5, 10)):
            x, bw = r.uniform(0, w), r.uniform(0.03, 0.09) * w
            c.paint(_mask([(_rect(x - bw, -1, x + bw, h + 1), True)], h, w), lum=c.object_lum())
        c.paint(_mask([(_poly(w * 0.45, h * 0.6, w * 0.55, h * 0.6, w * 0.9, h, w * 0.1, h), True)], h, w),
                lum=c.object_lum())
    elif scene == "/m/market":
        for _ in range(r.integers(9, 16)):
            _place_object(c, fam(), r.uniform(0, w), r.uniform(0, h), r.uniform(0.05, 0.1) * w, upright=False)
    elif scene == "/p/parking_lot":
        rows, cols = r.integers(2, 4), r.integers(3, 5)
        f = fam()
        s = min(w / cols, h / rows) * 0.3
        ox, oy = r.uniform(-3, 3, 2)
        for i in range(rows):
            for j in range(cols):
                _place_object(c, f, (j + 0.5) * w / cols + ox, (i + 0.5) * h / rows + oy, s)
    elif scene == "/r/rotunda":
        n = r.integers(5, 9)
        rad = r.uniform(0.25, 0.35) * w
        ph = r.uniform(0, 2 * math.pi)
        f = fam()
        for k in range(n):
            t = ph + 2 * math.pi * k / n
            _place_object(c, f, w / 2 + rad * math.cos(t), h / 2 + rad * math.sin(t), r.uniform(0.06, 0.09) * w)
    elif scene == "/s/skyscraper":
        for _ in range(r.integers(2, 5)):
            x0 = r.uniform(0, 0.8) * w
            bw, top = r.uniform(0.12, 0.25) * w, r.uniform(0.05, 0.5) * h
            prims = [(_rect(x0, top, x0 + bw, h + 1), True)]
            for wy in np.arange(top + 4, h, 7):
                for wx in np.arange(x0 + 3, x0 + bw - 4, 6):
                    prims.append((_rect(wx, wy, wx + 3, wy + 3), False))
            c.paint(_mask(prims, h, w), lum=c.object_lum())
    else:  # pragma: no cover - PLACES_CLASSES is closed
        raise ValueError(scene)
    for _ in range(r.integers(0, 2)):
        c.distractor((0.05, 0.12))
    return c.finish()


# VOC scenes. Each VOC class is one of the classification glyphs (so what a network learned on the
# ImageNet-like set transfers) crossed with one of two fills: classes 0-9 get glyphs 0-9 in a flat
# fill, classes 10-19 the same glyphs in stripes of a 5-7 px period (a cue that survives the Sobel
# input). Objects are large (the main one's half-size is 38-48% of the shorter side; objects cover
# about a third of the pixels): at FCN-32s's output stride of 32, a 128-160 px scene is a 3x3 to
# 4x4 score map, and the objects of the scenes before generator version 4 (about 5% of the pixels)
# left nothing but background to learn. VOC_FAMILIES still draw Places scenes and facades.
VOC_GLYPHS: tuple[str, ...] = tuple(CLASSIFICATION_FAMILIES)
VOC_SCENE = dict(
    main_half_size=(0.38, 0.48),  # the first object, near the centre: half-size, fraction of the shorter side
    others=(1, 2),           # further objects per scene (uniform), anywhere; one small one with p_small
    half_size=(0.2, 0.35),   # their half-size (log-uniform)
    p_small=0.35,
    small_half_size=(0.05, 0.08),
    stripe_period=(5.0, 7.0),  # px; classes 10-19
    clutter=(0, 2),          # distractors under the objects
    occluders=(0, 1),        # small distractors over them (labelled background)
)


def voc_glyph(cls: int) -> str:
    """The classification glyph that draws VOC class ``cls`` (0-based, background excluded)."""
    return VOC_GLYPHS[cls % len(VOC_GLYPHS)]


def voc_striped(cls: int) -> bool:
    """Whether VOC class ``cls`` is filled with stripes (True) or flat (False)."""
    return cls >= len(VOC_GLYPHS)


def _voc_fill(r: np.random.Generator, striped: bool, h: int, w: int, c0: np.ndarray, yy: np.ndarray,
              xx: np.ndarray) -> np.ndarray:
    """A class-coded fill: flat with mild noise, or stripes (random angle) of contrast 0.35-0.55."""
    if not striped:
        return np.clip(c0 + r.normal(0, 0.03, (h, w, 3)), 0, 1)
    a = r.uniform(0, math.pi)
    f = 2 * math.pi / r.uniform(*VOC_SCENE["stripe_period"])
    t = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * f) > 0)[..., None].astype(float)
    d = r.uniform(0.35, 0.55) * (1 if _lum(c0) < 0.5 else -1)
    c1 = np.clip(c0 + d, 0, 1)
    return c0 * (1 - t) + c1 * t


def _paint_voc_object(c: _Canvas, alpha: np.ndarray, striped: bool, label: int) -> None:
    rows, cols = np.nonzero(alpha.any(1))[0], np.nonzero(alpha.any(0))[0]
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    a = alpha[sl][..., None]
    fill = _voc_fill(c.r, striped, a.shape[0], a.shape[1], _colour_near(c.r, c.object_lum()), c.yy[sl], c.xx[sl])
    c.img[sl] = c.img[sl] * (1 - a) + fill * a
    c.labels[sl][alpha[sl] >= 0.5] = label


def _void_band(seg: np.ndarray) -> np.ndarray:
    """The 255 ("void") band around every boundary between labels, as in the real annotations."""
    edge = np.zeros_like(seg, bool)
    edge[:, 1:] |= seg[:, 1:] != seg[:, :-1]
    edge[:, :-1] |= seg[:, 1:] != seg[:, :-1]
    edge[1:, :] |= seg[1:, :] != seg[:-1, :]
    edge[:-1, :] |= seg[1:, :] != seg[:-1, :]
    band = edge.copy()
    band[1:, :] |= edge[:-1, :]
    band[:-1, :] |= edge[1:, :]
    band[:, 1:] |= edge[:, :-1]
    band[:, :-1] |= edge[:, 1:]
    return band


def render_voc(r: np.random.Generator, h: int, w: int) -> tuple[Image.Image, np.ndarray, list[dict]]:
    """A VOC-like scene: one large object near the centre, drawn last, over 1-2 more (and
    sometimes a small one) anywhere, of random VOC classes; some truncated by the frame or
    occluded by each other.

    Returns the image, a label map (class index 0..20, 255 on object borders) and the objects
    (name, 1-based inclusive bndbox of the object's drawn extent, truncated, difficult). An object
    left with no visible pixel is not annotated.
    """
    cfg = VOC_SCENE
    c = _Canvas(r, h, w)
    for _ in range(r.integers(cfg["clutter"][0], cfg["clutter"][1] + 1)):
        c.distractor((0.05, 0.2))
    side = min(h, w)
    # the main object is drawn last, so it is never occluded: every scene has one clear object
    sizes = [math.exp(r.uniform(*np.log(cfg["half_size"]))) * side
             for _ in range(r.integers(cfg["others"][0], cfg["others"][1] + 1))]
    if r.random() < cfg["p_small"]:
        sizes.append(r.uniform(*cfg["small_half_size"]) * side)
    sizes.append(r.uniform(*cfg["main_half_size"]) * side)
    objs = []
    for i, s in enumerate(sizes):
        main = i == len(sizes) - 1
        cx, cy = r.uniform(*((0.42, 0.58) if main else (0.1, 0.9)), 2) * (w, h)
        cls = int(r.integers(len(VOC_CLASSES)))
        prims = _transform(CLASSIFICATION_FAMILIES[voc_glyph(cls)](r), cx, cy, s, **_random_pose(r, upright=False),
                           r=r, jitter=DIFFICULTY["jitter"] * 0.5)
        alpha = _mask(prims, h, w)
        full = alpha >= 0.5
        if full.sum() < 24:
            continue
        allpts = np.concatenate([p for p, solid in prims if solid])
        truncated = bool(allpts[:, 0].min() < -1 or allpts[:, 1].min() < -1 or allpts[:, 0].max() > w
                         or allpts[:, 1].max() > h)
        ys, xs = np.nonzero(full)
        objs.append(dict(cls=cls, area=int(full.sum()), truncated=truncated,
                         box=(int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1)))
        _paint_voc_object(c, alpha, voc_striped(cls), len(objs))
    for _ in range(r.integers(cfg["occluders"][0], cfg["occluders"][1] + 1)):
        c.distractor((0.04, 0.1), label=0)
    img = c.finish()
    seg = np.zeros((h, w), np.uint8)
    for k, o in enumerate(objs, 1):
        seg[c.labels == k] = o["cls"] + 1
    band = _void_band(seg)
    out = []
    for k, o in enumerate(objs, 1):
        vis = c.labels == k
        if not (vis & ~band).any():
            # a sliver that the void band swallows whole: left unannotated, so void, not labelled
            band |= vis
            continue
        x0, y0, x1, y1 = o["box"]
        small = max(x1 - x0 + 1, y1 - y0 + 1) < 20
        occluded = vis.sum() < 0.3 * o["area"]
        out.append(dict(name=VOC_CLASSES[o["cls"]], bndbox=o["box"], truncated=o["truncated"],
                        difficult=bool(small or occluded)))
    seg[band] = 255
    return img, seg, out


# --------------------------------------------------------------------------------------------
# Writers.
def _save_jpeg(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=2)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def voc_xml(folder: str, image_id: str, w: int, h: int, objects: list[dict], segmented: bool) -> str:
    parts = [
        "<annotation>",
        f"\t<folder>{folder}</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>The dcbench synthetic VOC database</database>",
        "\t\t<annotation>dcbench synth</annotation>",
        "\t\t<image>procedural</image>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{w}</width>",
        f"\t\t<height>{h}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        f"\t<segmented>{int(segmented)}</segmented>",
    ]
    for o in objects:
        x0, y0, x1, y1 = o["bndbox"]
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(o['name'])}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(o['truncated'])}</truncated>",
            f"\t\t<difficult>{int(o['difficult'])}</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x0}</xmin>",
            f"\t\t\t<ymin>{y0}</ymin>",
            f"\t\t\t<xmax>{x1}</xmax>",
            f"\t\t\t<ymax>{y1}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


def _make_classification(out: Path, seed: int, cfg: dict, bar) -> dict:
    size = cfg["cls_size"]
    counts = {}
    for split, n in (("train", cfg["cls_train"]), ("val", cfg["cls_val"])):
        for cname in CLASSIFICATION_FAMILIES:
            for i in range(n):
                r = _rng(seed, f"classification/{split}/{cname}", i)
                _save_jpeg(render_classification(r, cname, size), out / "classification" / split / cname / f"{cname}_{i:05d}.jpg")
                if bar:
                    bar.update()
        counts[split] = n * len(CLASSIFICATION_FAMILIES)
    return dict(classes=list(CLASSIFICATION_FAMILIES), image_size=size, **counts)


def _make_places(out: Path, seed: int, cfg: dict, bar) -> dict:
    size = cfg["places_size"]
    root = out / "places"
    counts = {}
    for split, n in (("train", cfg["places_train"]), ("val", cfg["places_val"])):
        lines = []
        for label, scene in enumerate(PLACES_CLASSES):
            rel_dir = scene.lstrip("/")
            for i in range(n):
                r = _rng(seed, f"places/{split}/{scene}", i)
                rel = f"{rel_dir}/{split}_{i:08d}.jpg"
                _save_jpeg(render_scene(r, scene, size), root / "images" / rel)
                lines.append(f"{rel} {label}")
                if bar:
                    bar.update()
        _write_lines(root / "trainvalsplit_places205" / f"{split}_places205.csv", sorted(lines))
        counts[split] = len(lines)
    _write_lines(root / "categories_places205.txt", [f"{s} {i}" for i, s in enumerate(PLACES_CLASSES)])
    return dict(classes=list(PLACES_CLASSES), image_size=size, **counts)


def _make_voc(out: Path, seed: int, cfg: dict, year: str, splits: dict[str, int], bar, segmentation: bool) -> dict:
    base = out / "VOCdevkit" / f"VOC{year}"
    ids: dict[str, list[str]] = {}
    annots: dict[str, list[dict]] = {}
    k = 0
    n_obj = n_diff = n_trunc = 0
    for split, n in splits.items():
        ids[split] = []
        for _ in range(n):
            k += 1
            image_id = f"{k:06d}" if year == "2007" else f"{year}_{k:06d}"
            r = _rng(seed, f"VOC{year}", k)
            h, w = (int(v) for v in r.integers(cfg["voc_min"], cfg["voc_max"] + 1, 2))
            img, seg, objs = render_voc(r, h, w)
            _save_jpeg(img, base / "JPEGImages" / f"{image_id}.jpg")
            ann = base / "Annotations" / f"{image_id}.xml"
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(voc_xml(f"VOC{year}", image_id, w, h, objs, segmentation))
            if segmentation:
                m = Image.fromarray(seg, "P")
                m.putpalette(voc_palette())
                p = base / "SegmentationClass" / f"{image_id}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                m.save(p, "PNG", optimize=False)
            ids[split].append(image_id)
            annots[image_id] = objs
            n_obj += len(objs)
            n_diff += sum(o["difficult"] for o in objs)
            n_trunc += sum(o["truncated"] for o in objs)
            if bar:
                bar.update()
    main = base / "ImageSets" / "Main"
    all_splits = dict(ids)
    if "train" in ids and "val" in ids:
        all_splits["trainval"] = sorted(ids["train"] + ids["val"])
    for split, split_ids in all_splits.items():
        _write_lines(main / f"{split}.txt", split_ids)
        for cls in VOC_CLASSES:
            lines = []
            for image_id in split_ids:
                objs = [o for o in annots[image_id] if o["name"] == cls]
                if not objs:
                    v = -1
                elif all(o["difficult"] for o in objs):
                    v = 0
                else:
                    v = 1
                lines.append(f"{image_id} {v:2d}")
            _write_lines(main / f"{cls}_{split}.txt", lines)
        if segmentation and split != "test":
            _write_lines(base / "ImageSets" / "Segmentation" / f"{split}.txt", split_ids)
    return dict(images={s: len(v) for s, v in all_splits.items()}, objects=n_obj, difficult=n_diff,
                truncated=n_trunc, image_size=[cfg["voc_min"], cfg["voc_max"]], segmentation=segmentation)


# --------------------------------------------------------------------------------------------
# Instance retrieval: Oxford / Paris buildings-like trees. A "building" is one fixed facade (a
# textured patch holding three shapes, drawn once from its own seed); each photograph of it puts
# that facade at another scale, tilt, brightness and framing on a new cluttered background. Views
# are good (the facade wholly in frame), ok (about half of it in frame) or junk (a sliver, 10-20%),
# as the Oxford annotators' classes; distractors hold no building.

RETRIEVAL_LANDMARKS = {
    "oxford5k": ("all_souls", "ashmolean", "balliol", "bodleian", "christ_church"),
    "paris6k": ("defense", "eiffel", "invalides", "louvre", "moulinrouge"),
}
RETRIEVAL_VIEW_KINDS = ("query", "good", "ok", "junk")


def render_facade(r: np.random.Generator, side: int = 64) -> Image.Image:
    c = _Canvas(r, side, side)
    fams = list(ALL_FAMILIES)
    for _ in range(3):
        _place_object(c, fams[r.integers(len(fams))], r.uniform(0.25, 0.75) * side, r.uniform(0.25, 0.75) * side,
                      r.uniform(0.18, 0.3) * side)
    return c.finish()


def render_view(r: np.random.Generator, facade: Image.Image | None, long_side: int,
                kind: str = "good") -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """One photograph: (image, the facade's box x1 y1 x2 y2 clipped to the image, None without one)."""
    short = int(r.integers(int(long_side * 0.7), int(long_side * 0.8) + 1))
    w, h = (long_side, short) if r.integers(2) else (short, long_side)
    c = _Canvas(r, h, w)
    for _ in range(r.integers(1, 4)):
        c.distractor((0.05, 0.25))
    img = c.finish()
    if facade is None:
        return img, None
    side = r.uniform(0.5, 0.75) * min(h, w)
    pw, ph = max(8, round(side * math.exp(r.uniform(-0.12, 0.12)))), max(8, round(side))
    a = np.asarray(facade.resize((pw, ph), Image.BILINEAR), dtype=np.float32) * r.uniform(0.75, 1.2)
    patch = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    angle = math.degrees(r.uniform(-0.2, 0.2))
    mask = Image.new("L", patch.size, 255).rotate(angle, resample=Image.BILINEAR, expand=True)
    patch = patch.rotate(angle, resample=Image.BILINEAR, expand=True)
    pw, ph = patch.size
    if kind in ("query", "good"):
        x, y = int(r.integers(0, max(0, w - pw) + 1)), int(r.integers(0, max(0, h - ph) + 1))
    else:
        seen = r.uniform(0.4, 0.6) if kind == "ok" else r.uniform(0.1, 0.2)  # share of the width in frame
        x = round(-pw * (1 - seen)) if r.integers(2) else round(w - pw * seen)
        y = int(r.integers(0, max(0, h - ph) + 1))
    img.paste(patch, (x, y), mask)
    box = (float(max(x, 0)), float(max(y, 0)), float(min(x + pw, w)), float(min(y + ph, h)))
    return img, box


def _make_retrieval(out: Path, seed: int, cfg: dict, bar) -> dict:
    """oxford5k/ and paris6k/ in the published layouts: Oxford's flat ``oxbuild_images/<name>.jpg``
    and ``gt_files_170407/``; Paris's ``paris/<landmark>/paris_<landmark>_NNNNNN.jpg`` and
    ``paris_120310/``; ground truth ``<landmark>_1_{query,good,ok,junk}.txt`` (one query per
    building), the query line ``oxc1_<name> x1 y1 x2 y2`` (Oxford) or ``<name> x1 y1 x2 y2`` (Paris)."""
    root = out / "retrieval"
    summary = {}
    counts = {"good": cfg["ret_good"], "ok": cfg["ret_ok"], "junk": cfg["ret_junk"]}
    for ds, landmarks in RETRIEVAL_LANDMARKS.items():
        oxford = ds == "oxford5k"
        base = root / ds
        gt = base / ("gt_files_170407" if oxford else "paris_120310")

        def place(group: str, i: int, oxford: bool = oxford, base: Path = base) -> tuple[Path, str]:
            name = f"{group}_{i:06d}" if oxford else f"paris_{group}_{i:06d}"
            folder = base / "oxbuild_images" if oxford else base / "paris" / group
            return folder / f"{name}.jpg", name

        n_images = 0
        for b, landmark in enumerate(landmarks):
            facade = render_facade(_rng(seed, f"retrieval/{ds}/facade", b))
            lists: dict[str, list[str]] = {"good": [], "ok": [], "junk": []}
            k = 0
            for kind in RETRIEVAL_VIEW_KINDS:
                for _ in range(1 if kind == "query" else counts[kind]):
                    k += 1
                    img, box = render_view(_rng(seed, f"retrieval/{ds}/{landmark}", k), facade, cfg["ret_side"], kind)
                    path, name = place(landmark, k)
                    _save_jpeg(img, path)
                    n_images += 1
                    if kind == "query":  # the query photograph is in the database and among its good images
                        q = ("oxc1_" if oxford else "") + name
                        _write_lines(gt / f"{landmark}_1_query.txt", [f"{q} " + " ".join(f"{v:.1f}" for v in box)])
                        lists["good"].append(name)
                    else:
                        lists[kind].append(name)
                    if bar:
                        bar.update()
            for kind, names in lists.items():
                _write_lines(gt / f"{landmark}_1_{kind}.txt", sorted(names))
        group = "oxford" if oxford else "general"
        for i in range(1, cfg["ret_distractors"] + 1):
            img, _ = render_view(_rng(seed, f"retrieval/{ds}/distractor", i), None, cfg["ret_side"])
            _save_jpeg(img, place(group, i)[0])
            n_images += 1
            if bar:
                bar.update()
        summary[ds] = dict(images=n_images, queries=len(landmarks), landmarks=list(landmarks))
    return summary


def make_datasets(out: Path, seed: int = 0, scale: str = "smoke", *, progress: bool = False) -> dict:
    """Generate all embedded datasets under ``out`` (created if needed); return the summary.

    The summary is also written to ``out/dcbench_data.json``. Same (seed, scale) → the same bytes.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    cfg = SCALES[scale]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = ((cfg["cls_train"] + cfg["cls_val"]) * len(CLASSIFICATION_FAMILIES)
             + (cfg["places_train"] + cfg["places_val"]) * len(PLACES_CLASSES)
             + cfg["voc07_trainval"] + cfg["voc07_test"] + cfg["voc12_train"] + cfg["voc12_val"]
             + len(RETRIEVAL_LANDMARKS) * (5 * (1 + cfg["ret_good"] + cfg["ret_ok"] + cfg["ret_junk"])
                                           + cfg["ret_distractors"]))
    bar = _progress(total, progress, f"dc-data {scale}")
    try:
        n07 = cfg["voc07_trainval"]
        summary = dict(
            generator="dcbench.synth", generator_version=GENERATOR_VERSION, seed=seed, scale=scale,
            classification=_make_classification(out, seed, cfg, bar),
            places=_make_places(out, seed, cfg, bar),
            voc2007=_make_voc(out, seed, cfg, "2007",
                              {"train": n07 // 2, "val": n07 - n07 // 2, "test": cfg["voc07_test"]}, bar, False),
            voc2012=_make_voc(out, seed, cfg, "2012", {"train": cfg["voc12_train"], "val": cfg["voc12_val"]},
                              bar, True),
            retrieval=_make_retrieval(out, seed, cfg, bar),
            difficulty=DIFFICULTY,
        )
    finally:
        if bar:
            bar.close()
    (out / "dcbench_data.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary

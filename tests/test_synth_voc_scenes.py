"""The embedded VOC scenes: large objects, class-coded glyph and fill, masks that agree with the XML."""

from __future__ import annotations

import numpy as np
import pytest

from dcbench import synth


def scenes(n=24, year="2012"):
    for k in range(1, n + 1):
        r = synth._rng(0, f"VOC{year}", k)
        h, w = (int(v) for v in r.integers(128, 161, 2))
        yield synth.render_voc(r, h, w)


def test_objects_cover_a_large_share_of_the_pixels():
    # FCN-32s scores a ~150 px scene on a 5x5 grid: objects must span cells, not specks.
    fracs = [((seg > 0) & (seg < 255)).mean() for _, seg, _ in scenes()]
    assert np.mean(fracs) > 0.2
    assert min(fracs) > 0.03  # every scene holds at least its main object


def test_mask_classes_and_annotations_agree():
    for _, seg, objs in scenes():
        names = [o["name"] for o in objs]
        in_mask = {synth.VOC_CLASSES[v - 1] for v in np.unique(seg) if 0 < v < 255}
        assert in_mask == set(names)  # no unannotated region, no annotated object without pixels
        for cls in in_mask:
            ys, xs = np.nonzero(seg == synth.VOC_CLASSES.index(cls) + 1)
            boxes = [o["bndbox"] for o in objs if o["name"] == cls]
            # every labelled pixel lies inside one of its class's (1-based, inclusive) boxes
            inside = np.zeros(len(xs), bool)
            for x0, y0, x1, y1 in boxes:
                inside |= (xs + 1 >= x0) & (xs + 1 <= x1) & (ys + 1 >= y0) & (ys + 1 <= y1)
            assert inside.all()


def test_class_code_is_glyph_times_fill():
    codes = {(synth.voc_glyph(c), synth.voc_striped(c)) for c in range(len(synth.VOC_CLASSES))}
    assert len(codes) == len(synth.VOC_CLASSES)  # 20 distinct classes
    assert set(synth.VOC_GLYPHS) == set(synth.CLASSIFICATION_FAMILIES)  # the ImageNet-like set's shapes


@pytest.mark.parametrize("striped", [False, True])
def test_striped_classes_carry_luminance_texture_flat_ones_do_not(striped):
    # The fill is a cue a Sobel network sees: stripes give strong luminance gradients inside the
    # object, a flat fill almost none. Measured on the rendered fill, before any background.
    r = np.random.default_rng(3)
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    grads = []
    for _ in range(20):
        fill = synth._voc_fill(r, striped, 40, 40, synth._colour_near(r, r.uniform(0.2, 0.8)), yy, xx)
        lum = fill @ np.array([0.299, 0.587, 0.114])
        grads.append(np.abs(np.diff(lum, axis=1)).mean() + np.abs(np.diff(lum, axis=0)).mean())
    if striped:
        assert min(grads) > 0.1
    else:
        assert max(grads) < 0.06

"""Hostile VOC trees through dc-transfer: annotation values (class 8), boxes outside the image
(class 9), segmentation masks (class 8), errors inside DataLoader workers (class 8)."""

from __future__ import annotations

import pytest

from dcbench.datasets import VOCDetection
from dcbench.transfer.cli import main as transfer_main

from .conftest import copy_tree, expect, set_box

FAST = ["--iterations", "1", "--workers", "0"]

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<annotation><size><width>80</width><height>64</height></size>
<object><name>&lol9;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><size><width>80</width><height>64</height></size>
<object><name>&xxe;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>
</annotation>"""

# (id, annotation change for trainval000, what the error says)
BAD_ANNOTATIONS = [
    ("width-1e400", dict(size=("1e400", 64)), "<width> is '1e400'"),
    ("width-zero", dict(size=(0, 64)), "image size 0x64"),
    ("height-negative", dict(size=(80, -5)), "image size 80x-5"),
    ("width-nan", dict(size=("nan", 64)), "<width> is 'nan'"),
    ("xmin-text", dict(box=("left", 6, 70, 56)), "<xmin> is 'left'"),
    ("xmax-huge", dict(box=(5, 6, "1e30", 56)), "<xmax> is '1e30'"),
    ("inverted-x", dict(box=(60, 6, 10, 56)), "inverted box"),
    ("inverted-y", dict(box=(5, 50, 70, 6)), "inverted box"),
    ("billion-laughs", dict(text=BILLION_LAUGHS), "malformed VOC annotation"),
    ("external-entity", dict(text=EXTERNAL_ENTITY), "malformed VOC annotation"),
    ("unknown-class-markup", dict(text="<annotation><size><width>8</width><height>8</height></size><object>"
                                       "<name>&lt;script&gt;</name></object></annotation>"), "unknown object name"),
]


@pytest.mark.hostile(8)
@pytest.mark.parametrize("change,message", [c[1:] for c in BAD_ANNOTATIONS], ids=[c[0] for c in BAD_ANNOTATIONS])
def test_bad_voc_annotation_is_one_line_exit_2(base, voc, tmp_path, capfd, change, message):
    root = copy_tree(voc, tmp_path / "VOCdevkit")
    set_box(root, "trainval000", **change)
    out = tmp_path / "out"
    expect(capfd, transfer_main, ["voc-detection", "--checkpoint", base.run / "checkpoint", "--data", root,
                                  "--out", out, *FAST], root=tmp_path, out=out, code=2, match=message)


@pytest.mark.hostile(9)
def test_boxes_outside_the_image_are_clipped_and_counted(voc, tmp_path, capfd):
    root = copy_tree(voc, tmp_path / "VOCdevkit")
    set_box(root, "trainval000", box=(-20, 6, 500, 56))  # reaches out on both sides: clipped
    set_box(root, "trainval001", box=(200, 100, 300, 200))  # wholly outside the 80x64 image: dropped
    ds = VOCDetection(root, "2007", "trainval")
    assert (ds.clipped_boxes, ds.dropped_boxes) == (1, 1)
    assert ds.target(0)["boxes"].tolist() == [[0.0, 5.0, 80.0, 56.0]]
    assert ds.target(1)["boxes"].shape == (0, 4)
    assert "1 box(es) reaching outside their image clipped" in capfd.readouterr().err


@pytest.mark.hostile(9)
def test_detection_trains_on_clipped_boxes_without_torchvision_assertions(base, voc, tmp_path, capfd):
    root = copy_tree(voc, tmp_path / "VOCdevkit")
    set_box(root, "trainval000", box=(-20, 6, 500, 56))
    set_box(root, "trainval001", box=(79, 60, 300, 200))  # 1-2 pixels left after clipping
    out = tmp_path / "out"
    res = expect(capfd, transfer_main, ["voc-detection", "--checkpoint", base.run / "checkpoint", "--data", root,
                                        "--out", out, *FAST], root=tmp_path, out=out, code=0)
    assert "clipped" in res.stderr and list(out.glob("voc-detection__*.json"))


def _mask(root, change):
    import numpy as np
    from PIL import Image

    for f in (root / "VOC2012" / "SegmentationClass").glob("train*.png"):  # whichever the batch draws
        m = np.asarray(Image.open(f))
        if change == "wrong-size":
            Image.fromarray(m[:-7, :-3]).convert("P").save(f)
        elif change == "value-77":
            m = m.copy()
            m[0, 0] = 77
            Image.fromarray(m).convert("P").save(f)
        elif change == "rgb":
            Image.fromarray(m).convert("RGB").save(f)


@pytest.mark.hostile(8)
@pytest.mark.parametrize("change,message,workers", [("wrong-size", "a mask must match its image", "0"),
                                                    ("value-77", "holds class value 77", "0"),
                                                    ("rgb", "expected a palette", "0"),
                                                    # the same line from a DataLoader worker process
                                                    ("value-77", "holds class value 77", "2")])
def test_bad_segmentation_mask_is_one_line_with_or_without_workers(base, voc, tmp_path, capfd, change, message,
                                                                   workers):
    root = copy_tree(voc, tmp_path / "VOCdevkit")
    _mask(root, change)
    out = tmp_path / "out"
    res = expect(capfd, transfer_main, ["voc-segmentation", "--checkpoint", base.run / "checkpoint", "--data", root,
                                        "--out", out, "--iterations", "1", "--workers", workers],
                 root=tmp_path, out=out, code=2, match=message)
    assert "worker" not in res.error and "Original Traceback" not in res.stderr

"""Put two checkpoints' dc-transfer visualize pictures side by side (left: the first folder) into
small palette PNGs for this folder. Usage: python compose.py RANDOM_DIR TRAINED_DIR OUT_DIR
(each *_DIR an OUT/visualize/<checkpoint>-<sha8>/ folder)."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

LAYERS = ("conv1", "conv3", "conv5")
GAP = 12  # white pixels between the two checkpoints' pictures


def side_by_side(left: Image.Image, right: Image.Image) -> np.ndarray:
    h = max(left.height, right.height)
    out = np.full((h, left.width + GAP + right.width, 3), 255, np.uint8)
    out[:left.height, :left.width] = np.asarray(left.convert("RGB"))
    out[:right.height, left.width + GAP:] = np.asarray(right.convert("RGB"))
    return out


def stack(rows: list[np.ndarray]) -> Image.Image:
    w = max(r.shape[1] for r in rows)
    pad = [np.pad(r, ((0, GAP), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return Image.fromarray(np.concatenate(pad)[:-GAP])


def save(img: Image.Image, path: Path, colours: int) -> None:
    img.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size} bytes")


def main(random_dir: str, trained_dir: str, out: str) -> None:
    a, b, out = Path(random_dir), Path(trained_dir), Path(out)
    ascent = [side_by_side(Image.open(a / f"ascent_{n}.png"), Image.open(b / f"ascent_{n}.png")) for n in LAYERS]
    save(stack(ascent), out / "ascent.png", 128)
    for n in ("conv1", "conv5"):
        top = side_by_side(Image.open(a / f"top9_{n}.png"), Image.open(b / f"top9_{n}.png"))
        save(Image.fromarray(top), out / f"top9_{n}.png", 64)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Seeded ImageNet-size JPEGs for the speed benchmarks (no dataset can be downloaded here).

Each image is a smooth random colour field (a coarse random grid, bicubically upsampled) plus
per-pixel grey noise, saved at quality 90: at 400 x 350 that is ~60 KiB a file, the size of an
average ImageNet JPEG, so decoding costs what it costs on ImageNet. The content is not natural;
speed, not learning, is what these files are for.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def render(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    base = Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    a = np.asarray(base, dtype=np.int16) + rng.integers(-6, 7, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _write(job: tuple) -> None:
    root, i, classes, width, height, seed = job
    path = Path(root) / f"c{i % classes:04d}" / f"{i:07d}.jpg"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        render(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), width, height).save(
            tmp, "JPEG", quality=90)
        os.replace(tmp, path)


def make_jpegs(root: str | os.PathLike, n: int, width: int = 400, height: int = 350, classes: int = 100,
               seed: int = 0, workers: int | None = None) -> Path:
    """``root/c<class>/<i>.jpg`` for i < n (an ImageFolder tree); files already there are kept."""
    root = Path(root)
    for c in range(min(classes, n)):
        (root / f"c{c:04d}").mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), i, classes, width, height, seed) for i in range(n)]
    with ProcessPoolExecutor(workers or os.cpu_count()) as ex:
        list(ex.map(_write, jobs, chunksize=256))
    return root

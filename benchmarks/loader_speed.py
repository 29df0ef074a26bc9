"""Image loaders side by side: the landed torchvision path against the draft and batched-decode loaders.

Measures images per second through a DataLoader (batches of 64, ``--workers`` processes) for the
training crop (RandomResizedCrop 224 + flip) and the feature crop (resize 256 + centre 224), on
seeded JPEGs of ImageNet's mean size (400 x 350) and on large ones (1600 x 1200, the slow tail of a
real dataset). Every loader delivers the same thing: normalised float32 batches.

- ``torchvision``: dc-train's original loader (PIL decode, torchvision transforms, ToTensor
  and Normalize per image in the worker);
- ``draft``: dcbench.imageload.RandomCrop / CentreCrop (reduced-size decode when the box allows),
  uint8 from the worker, one normalise per batch;
- ``batched-decode``: workers read bytes and draw the box; decode_jpeg + crop + resize per batch in
  the main process, here on the CPU (on a GPU it is ``--loader nvjpeg``; not measured here).

Rounds alternate the loaders so that load from other jobs on the machine hits them alike; the
median round is reported.

    python benchmarks/loader_speed.py --n 512 --rounds 3 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))


def loaders(size: int, resize: int):
    import torchvision.transforms as T

    from dcbench import imageload as IL
    from dcbench.models import IMAGENET_MEAN, IMAGENET_STD

    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    old_train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    old_centre = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), norm])
    return {
        "torchvision": {"train": ("pil", old_train), "centre": ("pil", old_centre)},
        "draft": {"train": ("uint8", IL.RandomCrop(size)), "centre": ("uint8", IL.CentreCrop(resize, size))},
        "batched-decode": {"train": ("bytes", IL.JpegBytes(size)), "centre": ("bytes", IL.JpegBytes(size, None, resize))},
    }


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, kind, fn):
        self.paths, self.kind, self.fn = paths, kind, fn

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        if self.kind == "pil":
            from dcbench.datasets import pil_loader

            return self.fn(pil_loader(self.paths[i])), 0
        return self.fn(self.paths[i]), 0


def run_once(paths, kind, fn, size, workers, centre) -> float:
    from torch.utils.data import DataLoader, default_collate

    from dcbench import imageload as IL
    from dcbench.models import IMAGENET_MEAN, IMAGENET_STD

    collate = IL.collate_bytes if kind == "bytes" else default_collate
    dl = DataLoader(_Files(paths, kind, fn), batch_size=64, num_workers=workers, collate_fn=collate,
                    prefetch_factor=4 if workers else None)
    t = time.perf_counter()
    n = 0
    for batch in dl:
        if kind == "bytes":
            x, _ = IL.decode_batch(batch[0], batch[1], size, torch.device("cpu"), centre=centre)
            x = IL.normalise(x, IMAGENET_MEAN, IMAGENET_STD)
        elif kind == "uint8":
            x = IL.normalise(batch[0], IMAGENET_MEAN, IMAGENET_STD)
        else:
            x = batch[0]
        assert x.dtype == torch.float32 and x.shape[-1] == size
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="images of 400 x 350 (and a quarter as many of 1600 x 1200)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workdir", default=None, help="where the JPEGs go (default: a temporary folder)")
    ap.add_argument("--out", default="benchmarks/out/loader_speed.json")
    args = ap.parse_args()

    from jpeg_data import make_jpegs

    from dcbench.provenance import environment, git_sha, utc_now

    torch.set_num_threads(1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dcbench-loader-"))
    from dcbench import imageload as IL

    resize = IL.resize_for(args.size)
    result = {"benchmark": "loader_speed", "device": "cpu", "args": vars(args), "git_sha": git_sha(),
              "environment": environment(), "created": utc_now(), "cpu_count": os.cpu_count(), "sizes": {}}
    for w, h, n in ((400, 350, args.n), (1600, 1200, max(16, args.n // 4))):
        root = make_jpegs(work / f"{w}x{h}", n, w, h, classes=10, seed=0, workers=2)
        paths = sorted(str(p) for p in root.rglob("*.jpg"))
        kib = float(np.mean([Path(p).stat().st_size for p in paths]) / 1024)
        per = {}
        for stage in ("train", "centre"):
            runs: dict[str, list[float]] = {name: [] for name in loaders(args.size, resize)}
            for _ in range(args.rounds):
                for name, fns in loaders(args.size, resize).items():
                    kind, fn = fns[stage]
                    torch.manual_seed(0)
                    runs[name].append(run_once(paths, kind, fn, args.size, args.workers, stage == "centre"))
            med = {k: statistics.median(v) for k, v in runs.items()}
            per[stage] = {"img_per_s": {k: round(v, 1) for k, v in med.items()},
                          "rounds": {k: [round(x, 1) for x in v] for k, v in runs.items()},
                          "speedup_vs_torchvision": {k: round(v / med["torchvision"], 3) for k, v in med.items()}}
            print(f"{w}x{h} ({kib:.0f} KiB) {stage:6s} " + "  ".join(f"{k} {v:.0f} img/s" for k, v in med.items()),
                  flush=True)
        result["sizes"][f"{w}x{h}"] = {"mean_kib": round(kib, 1), "images": len(paths), **per}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Where the time of ``--loader nvjpeg`` goes, in the main process, on batches already in memory.

For batches of 256 ImageNet-size JPEGs (file bytes read beforehand, boxes drawn as the workers
draw them): (a) torchvision's batched ``decode_jpeg`` alone, (b) ``decode_batch`` (decode + crop/
resize/flip, what dc-train runs: packed on CUDA), (c) the crop/resize alone on already decoded
images, per image (``F.interpolate``, the path before the packed one) and (d) packed
(``crop_packed``), with the largest difference between (c) and (d) in grey levels. Rounds
alternate (a)-(d); medians are reported, in images per second.

    python benchmarks/nvjpeg_breakdown.py --root JPEG_TREE            # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="an ImageFolder tree of JPEGs (benchmarks/jpeg_data.py)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="benchmarks/out/nvjpeg_breakdown.json")
    args = ap.parse_args()

    from dcbench.imageload import JpegBytes, _decode_all, crop_batch, decode_batch
    from dcbench.provenance import git_sha

    device = torch.device(args.device)
    files = sorted(Path(args.root).rglob("*.jpg"))[: args.batches * args.batch_size]
    torch.manual_seed(0)
    fn = JpegBytes(args.size, (0.08, 1.0))
    items = [fn(str(p)) for p in files]
    batches = [items[s:s + args.batch_size] for s in range(0, len(items), args.batch_size)]
    batches = [([d for d, _ in b], torch.stack([p for _, p in b])) for b in batches]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def decode_only() -> None:
        for datas, _ in batches:
            _decode_all(datas, device)

    def full() -> None:
        for datas, params in batches:
            decode_batch(datas, params, args.size, device)

    decoded = [(_decode_all(datas, device), params) for datas, params in batches]

    def crop_per_image() -> None:
        for imgs, params in decoded:
            crop_batch(imgs, params, args.size, device, packed=False)

    def crop_packed() -> None:
        for imgs, params in decoded:
            crop_batch(imgs, params, args.size, device, packed=True)

    runs = {"decode_jpeg_batched": decode_only, "decode_batch_full": full,
            "crop_resize_per_image": crop_per_image, "crop_resize_packed": crop_packed}
    full()  # warm-up: nvJPEG handles, kernels
    sync()
    times: dict = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, f in runs.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            times[name].append(time.perf_counter() - t)
    n = len(items)
    imgs, params = decoded[0]
    a, _ = crop_batch(imgs, params, args.size, device, packed=False)
    b, _ = crop_batch(imgs, params, args.size, device, packed=True)
    diff = (a.int() - b.int()).abs()
    res = {"benchmark": "nvjpeg_breakdown",
           "label": "CUDA run" if device.type == "cuda" else (
               "CPU run: checks the script, NOT the GPU measurement. On the CPU the packed crop's matrix "
               "products cost more than the separable filter, so dc-train packs on CUDA only, where "
               "the per-image path launches ~8 kernels an image (which path is faster there: the CUDA run)"),
           "git_sha": git_sha(), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else "cpu", "images": n, "batch_size": args.batch_size,
           "img_per_s": {k: round(n / statistics.median(v), 1) for k, v in times.items()},
           "packed_vs_per_image": {"max_abs_diff": int(diff.max()), "share_differing": float((diff > 0).float().mean())}}
    print(json.dumps(res))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()

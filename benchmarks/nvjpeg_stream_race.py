"""Does a batched nvJPEG decode land in memory that queued kernels still use?

torchvision's ``decode_jpeg(device="cuda")`` allocates its outputs on the caller's stream and
decodes on a private stream that does not wait for it; a training loop runs ahead of the GPU, so a
decode issued while the previous step's backward is still queued can write into blocks that the
backward reads (or vice versa): wrong numbers, not a crash. dcbench synchronises the current stream
before decoding (``dcbench.imageload._decode_all``). This script decodes the same batch, each round
right after queueing a forward and backward of AlexNet, once through torchvision directly and once
through dcbench's path, and compares every decode with the CPU's (libjpeg) decode of the same bytes.

    python benchmarks/nvjpeg_stream_race.py --rounds 50 --out benchmarks/out/nvjpeg_stream_race.json

Reports, per path: rounds whose decode differs from the CPU's by more than the decoders' own
rounding (``--tolerance`` grey levels), and the largest difference seen. Needs CUDA; on a machine
without it, it says so and exits 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np


def jpegs(n: int, size: int, seed: int) -> list:
    import torch
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # smooth images (JPEG-friendly), so nvJPEG and libjpeg agree to a grey level or two
        base = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=256, help="JPEG side in pixels")
    ap.add_argument("--tolerance", type=int, default=8, help="grey levels two correct decoders may differ by")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/nvjpeg_stream_race.json"))
    args = ap.parse_args()

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not torch.cuda.is_available():
        print("nvjpeg_stream_race: needs CUDA (nvJPEG); nothing to measure on this machine", file=sys.stderr)
        return 2
    from dcbench.imageload import _decode_all
    from dcbench.models import build_model

    dev = torch.device("cuda")
    datas = jpegs(args.batch_size, args.size, seed=0)
    ref = [d.to(torch.int16) for d in decode_jpeg(datas, mode=ImageReadMode.RGB, device="cpu")]
    model = build_model("alexnet", sobel=True, input_size=224, num_classes=1000, seed=0).to(dev)
    x = torch.randn(256, 3, 224, 224, device=dev)

    def queue_step():
        model.zero_grad(set_to_none=True)
        model(x).logsumexp(1).mean().backward()  # queued; nothing here waits for it

    paths = {"torchvision_direct": lambda: list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)),
             "dcbench_synchronised": lambda: _decode_all(datas, dev)}
    report = {}
    for name, decode in paths.items():
        bad, worst, t0 = 0, 0, time.perf_counter()
        for _ in range(args.rounds):
            queue_step()
            imgs = decode()
            queue_step()  # more work queued behind the decode, reading and writing its own blocks
            torch.cuda.synchronize()
            diff = max(int((img.cpu().to(torch.int16) - r).abs().max()) for img, r in zip(imgs, ref))
            worst = max(worst, diff)
            bad += diff > args.tolerance
        report[name] = {"rounds": args.rounds, "rounds_off": bad, "max_abs_diff": worst,
                        "seconds": round(time.perf_counter() - t0, 3)}
        print(name, report[name], flush=True)
    out = {"benchmark": "nvjpeg_stream_race", "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "batch_size": args.batch_size, "size": args.size, "tolerance": args.tolerance, "paths": report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

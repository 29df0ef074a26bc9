"""One DeepCluster epoch at ImageNet scale, stage by stage, with the hardware's ceilings.

1. Generates N seeded JPEGs of ImageNet's mean size (400 x 350, ~60 KiB; benchmarks/jpeg_data.py),
   in 1000 classes (so the label diagnostics run too).
2. Measures, in the same process and on the same device: the model alone (features: eval forward
   to fc7; training: forward + backward + SGD step with a k-way top layer) on random input, and
   the training loader alone (decode + crop + flip + normalise, on the device), timed for at least
   5 s after a warm-up pass that starts its workers.
3. Runs dc-train (``--scale full``, ``--epochs 2``) on the JPEGs and reads the per-stage times of
   its log; the second epoch is the measured one (the first pays warm-up).
4. Extrapolates the epoch to ImageNet-1k's 1,281,167 images, every stage linearly in N (an upper
   bound for the diagnostics, which run on a fixed sample), and 500 epochs.

    python benchmarks/gpu_epoch.py --n 100000 --workers 15            # one H200: the full-scale measurement
    python benchmarks/gpu_epoch.py --n 512 --k 50 --batch-size 64 --workers 2 --device cpu   # CPU check
    python benchmarks/gpu_epoch.py --n 100000 --workers 15 --arch resnet50                 # a ResNet-50 line
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

IMAGENET = 1_281_167
GOAL_S = 180.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_ceiling(cfg, device: torch.device, iters: int) -> dict:
    """img/s of the network alone on random input: feature pass and training step, cfg's precision."""
    import torch.nn.functional as F

    from dcbench.models import build_model
    from dcbench.precision import autocast, memory_format
    from dcbench.train.update import TopNet, reset_top_layer, trunk_parameters

    model = build_model(cfg.arch, sobel=cfg.sobel, batchnorm=True, input_size=cfg.input_size, num_classes=cfg.k,
                        seed=0).to(device, memory_format=memory_format(cfg.precision))
    reset_top_layer(model, cfg.k, device)
    x = torch.randn(cfg.batch_size, 3, cfg.input_size, cfg.input_size, device=device).contiguous(
        memory_format=memory_format(cfg.precision))
    y = torch.randint(0, cfg.k, (cfg.batch_size,), device=device)
    out = {}
    model.eval()
    with torch.no_grad():
        for i in range(iters + 2):
            if i == 2:
                _sync(device)
                t = time.perf_counter()
            with autocast(cfg.precision, device):
                model.penultimate(x)
        _sync(device)
    out["features_img_per_s"] = iters * cfg.batch_size / (time.perf_counter() - t)
    net = TopNet(model)
    opt = torch.optim.SGD(trunk_parameters(model) + list(model.top_layer.parameters()), lr=0.001, momentum=0.9)
    model.train()
    for i in range(iters + 2):
        if i == 2:
            _sync(device)
            t = time.perf_counter()
        with autocast(cfg.precision, device):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    out["train_img_per_s"] = iters * cfg.batch_size / (time.perf_counter() - t)
    return out


def loader_ceiling(cfg, root: Path, device: torch.device, images: int, min_seconds: float = 5.0,
                   warmup_batches: int | None = None) -> dict:
    """img/s of dc-train's training loader alone (decode, crop, flip, normalise on the device), in steady state.

    The workers start (and fill their prefetch queues) during a warm-up pass that is not timed:
    ``warmup_batches``, by default two per worker. Then passes over ``images`` images run until at
    least ``min_seconds`` have been timed, so a figure is not a loader's start-up cost."""
    from dcbench.datasets import ImageFolder
    from dcbench.train.feed import Feed, crop_loaders, to_inputs

    ds = ImageFolder(root, verify=False)
    rng = np.random.default_rng(0)
    items = rng.choice(len(ds), min(images, len(ds)), replace=False)
    train_fn, _ = crop_loaders(cfg, cfg.loader)
    feed = Feed(ds, train_fn, cfg, device)  # one persistent loader: its workers serve every pass below

    def one_pass(chosen: np.ndarray, seed: int) -> int:
        n = 0
        for batch in feed(chosen, np.zeros(len(chosen), dtype=np.int64), cfg.batch_size, seed):
            x, _ = to_inputs(batch, cfg, device, centre=False)
            n += x.shape[0]
        _sync(device)
        return n

    warm = warmup_batches if warmup_batches is not None else 2 * max(1, cfg.workers)
    warm_images = one_pass(rng.choice(len(ds), min(len(ds), warm * cfg.batch_size), replace=False), 1)
    n, passes = 0, 0
    t = time.perf_counter()
    while passes == 0 or time.perf_counter() - t < min_seconds:
        passes += 1
        n += one_pass(items, 1 + passes)
    elapsed = time.perf_counter() - t
    return {"img_per_s": n / elapsed, "timed_images": n, "timed_s": elapsed, "passes": passes,
            "warmup_images": warm_images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="generated images")
    ap.add_argument("--arch", default="alexnet", choices=("alexnet", "vgg16", "resnet50", "resnet101"),
                    help="network (default alexnet, km-ImNet-Sob's)")
    ap.add_argument("--k", type=int, default=10_000, help="k-means clusters (km-ImNet-Sob: 10,000)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--loader", default=None, choices=("draft", "torchvision", "nvjpeg"),
                    help="default: nvjpeg on CUDA, draft on the CPU")
    ap.add_argument("--cluster-engine", default="auto", choices=("auto", "faiss", "torch"))
    ap.add_argument("--diag-sample", type=int, default=None, help="dc-train's --diag-sample (default: its own; 0 = all)")
    ap.add_argument("--compare-loaders", action="store_true",
                    help="also time every loader alone, side by side (alternating rounds, median of 3)")
    ap.add_argument("--loader-seconds", type=float, default=5.0,
                    help="seconds of steady-state loading timed for the loader ceiling, after a warm-up pass")
    ap.add_argument("--ceiling-iters", type=int, default=None, help="model-only iterations (default 30 GPU, 2 CPU)")
    ap.add_argument("--workdir", default=None, help="JPEGs and the run (default: a temporary folder, removed)")
    ap.add_argument("--out", default=None, help="default: benchmarks/out/gpu_epoch_<device>_<n>.json")
    args = ap.parse_args()

    from jpeg_data import make_jpegs

    from dcbench.precision import resolve_precision
    from dcbench.provenance import environment, git_sha, utc_now
    from dcbench.train.clustering import faiss_gpu_available
    from dcbench.train.config import make_config
    from dcbench.train.loop import train
    from dcbench.train.run_state import read_log

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    loader = args.loader or ("nvjpeg" if device.type == "cuda" else "draft")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dcbench-gpu-epoch-"))
    timings: dict = {}
    t = time.perf_counter()
    root = make_jpegs(work / "data", args.n, 400, 350, classes=1000, seed=0)
    timings["generate_s"] = round(time.perf_counter() - t, 2)
    kib = float(np.mean([p.stat().st_size for p in list(root.rglob("*.jpg"))[:2000]]) / 1024)
    print(f"{args.n} JPEGs 400x350 ({kib:.0f} KiB mean) in {timings['generate_s']} s", flush=True)

    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    extra = {} if args.diag_sample is None else {"diag_sample": args.diag_sample}
    # faiss on CUDA without faiss-gpu: the CPU index, as dc-train's --no-faiss-gpu (the landed path).
    faiss_gpu = not (args.cluster_engine == "faiss" and not faiss_gpu_available())
    cfg = make_config("km-ImNet-Sob", "full", data=str(root), out=str(run_dir), epochs=2, k=args.k, arch=args.arch,
                      batch_size=args.batch_size, workers=args.workers, device=device.type, loader=loader,
                      precision=resolve_precision(args.precision, device), cluster_engine=args.cluster_engine,
                      faiss_gpu=faiss_gpu, snapshot_every=0, quiet=True, **extra)
    iters = args.ceiling_iters or (30 if device.type == "cuda" else 2)
    ceiling = model_ceiling(cfg, device, iters)
    print(f"model alone ({cfg.precision}): features {ceiling['features_img_per_s']:.0f} img/s, "
          f"training {ceiling['train_img_per_s']:.0f} img/s", flush=True)
    steady = loader_ceiling(cfg, root, device, min(args.n, 20 * args.batch_size), args.loader_seconds)
    ceiling["loader_train_img_per_s"] = steady["img_per_s"]
    timings["loader_ceiling"] = {k: round(v, 2) for k, v in steady.items()}
    print(f"training loader alone ({loader}): {steady['img_per_s']:.0f} img/s over {steady['timed_s']:.1f} s "
          f"after {steady['warmup_images']} warm-up images", flush=True)
    if args.compare_loaders:
        names = ["torchvision", "draft"] + (["nvjpeg"] if device.type == "cuda" else [])
        rounds: dict = {name: [] for name in names}
        for _ in range(3):
            for name in names:
                rounds[name].append(loader_ceiling(dataclasses.replace(cfg, loader=name), root, device,
                                                   min(args.n, 20 * args.batch_size), args.loader_seconds)["img_per_s"])
        ceiling["loaders_train_img_per_s"] = {name: float(np.median(v)) for name, v in rounds.items()}
        print("loaders alone, side by side (median of 3 rounds): " + ", ".join(
            f"{name} {v:.0f} img/s" for name, v in ceiling["loaders_train_img_per_s"].items()), flush=True)

    t = time.perf_counter()
    train(cfg)
    timings["dc_train_s"] = round(time.perf_counter() - t, 2)
    log = read_log(run_dir)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    epoch = log[-1]
    times = epoch["time"]
    images = epoch["images"]
    stage = {
        "features": {"s": times["features"], "img_per_s": images / times["features"],
                     "ceiling_img_per_s": ceiling["features_img_per_s"]},
        "train": {"s": times["train"], "img_per_s": epoch["steps"] * cfg.batch_size / times["train"],
                  "ceiling_img_per_s": min(ceiling["train_img_per_s"], ceiling["loader_train_img_per_s"])},
        "pca": {"s": times["pca"]},
        "clustering": {"s": times["clustering"]},
        "metrics": {"s": times["metrics"], "diag_sample": epoch.get("diag_sample")},
        "save": {"s": times.get("save", 0.0)},
    }
    scale = IMAGENET / images
    extra = {k: round(v["s"] * scale, 1) for k, v in stage.items()}
    total = sum(extra.values())
    result = {
        "benchmark": "gpu_epoch",
        "label": ("CUDA run" if device.type == "cuda" else
                  "CPU run (no GPU in this session): checks the script and the CPU path; on a shared 2-core "
                  f"machine its timings and the {iters}-iteration model-only ceiling are noisy. NOT the GPU "
                  "measurement (run it on a GPU)"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_count": os.cpu_count(),
        "args": vars(args), "images": images, "mean_jpeg_kib": round(kib, 1),
        "resolved": {k: config[k] for k in ("arch", "precision", "cluster_engine", "loader", "workers", "k", "batch_size",
                                            "diag_sample", "input_size")},
        "timings": timings, "epochs": [r["time"] for r in log], "measured_epoch": epoch["epoch"],
        "stages": {k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                   for k, v in stage.items()},
        "ceiling": {k: (round(v, 1) if isinstance(v, float) else {kk: round(vv, 1) for kk, vv in v.items()})
                    for k, v in ceiling.items()},
        "extrapolated_imagenet": {"images": IMAGENET, "rule": "every stage linear in N (upper bound for metrics)",
                                  "stages_s": extra, "epoch_s": round(total, 1), "goal_epoch_s": GOAL_S,
                                  "meets_goal": total <= GOAL_S, "500_epochs_days": round(total * 500 / 86400, 2)},
        "git_sha": git_sha(), "environment": environment(), "created": utc_now(),
    }
    for k, v in result["stages"].items():
        rate = f", {v['img_per_s']:.0f} img/s (ceiling {v['ceiling_img_per_s']:.0f})" if "img_per_s" in v else ""
        print(f"  {k:10s} {v['s']:8.2f} s{rate}  -> {extra[k]:.1f} s at 1.28M")
    print(f"epoch at 1.28M images: {total:.0f} s (goal {GOAL_S:.0f}); 500 epochs: "
          f"{result['extrapolated_imagenet']['500_epochs_days']} days", flush=True)
    arch = "" if args.arch == "alexnet" else f"_{args.arch}"
    out = Path(args.out or f"benchmarks/out/gpu_epoch_{device.type}_{args.n}{arch}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""visualize: feature visualisation of thesis §5.3 (Figure 5.4), as the original DeepCluster
release's ``visu/gradient_ascent.py`` and ``visu/activ-retrieval.py`` make it.

For chosen channels of three layers — conv1, conv3, conv5 (ResNets: conv1, res3, res5, the taps
of :meth:`dcbench.models.ResNetNet.tap_outputs`) — two pictures:

(a) an input image optimised by gradient ascent to fire the channel. As the release: start from
    Gaussian noise (pixel values 128 ± 20, fed to the network unnormalised, as the release feeds
    them); each update maximises ``-CE(spatial mean of the layer's maps, channel) - wd * ||x||^2``,
    i.e. the channel's softmax share among all channels of its layer, with the gradient scaled to
    unit L2 norm, then steps ``lr`` along it; every ``blur_every`` updates (from update 0) the image
    is blurred with a Gaussian of ``sigma`` pixels. The layer's maps are taken after its ReLU; a
    channel whose post-ReLU mean is zero uses the layer's conv outputs instead (the release's own
    fall-back, so a dead channel still gets a gradient; for res3 / res5, whose last ReLU sits inside
    a torchvision block, there is no such fall-back). The picture: the release's deprocessing
    (centred, std scaled to 0.1, shifted to 0.5, clipped, 8-bit).
(b) the 9 images of a dataset (the val split) that activate the channel most: the release's
    activ-retrieval ranks by the channel's post-ReLU map *averaged* over space (``x.mean(3).mean(2)``),
    so that is the default; ``--pool max`` ranks by the spatial maximum instead.

Output under ``OUT/visualize/<checkpoint>-<sha8>/``: ``ascent_<layer>.png`` (one cell per channel,
row-major in the order of ``details.channels``), ``top9_<layer>.png`` (one row per channel, its 9
images best first, centre crops as the network sees them), and ``index.md`` linking them. The result's
metrics: ``<layer>_prob``, the optimised images' mean softmax share of their target channel (%,
what the loss maximises); ``details`` keeps the noise images' share for comparison, each channel's
top-9 activations and file names, and the paths of the PNGs and the page relative to ``--out``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.nn import functional as F

from dcbench import argtypes
from dcbench import imageload as IL
from dcbench.atomic import write_file_atomic, write_text_atomic
from dcbench.checkpoint import load_checkpoint
from dcbench.datasets import ImageFolder, fingerprint, pil_loader
from dcbench.errors import UserError
from dcbench.progress import progress
from dcbench.results import checkpoint_block, make_result
from dcbench.safepath import output_dir
from dcbench.tasks import Resources, Task, register
from dcbench.text import md_text
from dcbench.transfer import training
from dcbench.transfer.protocol import (
    Timer,
    dataset_dir,
    default_help,
    eval_crops_transform,
    loader_of,
    precision_of,
    resolve_protocol,
    save_and_report,
)

DEFAULTS = {
    # visu/gradient_ascent.py's argparse defaults: --lr 3, --wd 1e-5, --sig 0.3, --step 5,
    # --niter 1000, --idim 224; smoke: the embedded data's 64 px and a budget of seconds
    "lr": (3.0, 3.0),
    "weight_decay": (1e-5, 1e-5),
    "sigma": (0.3, 0.3),
    "blur_every": (5, 5),
    "iterations": (1000, 30),
    "image_size": (224, 64),
    # the release optimises every channel of the layer (map over range(CONV[arch][conv-1]));
    # 0 = all. Smoke: the first 4 of each layer.
    "num_channels": (0, 4),
    "top": (9, 9),            # activ-retrieval.py --count 9; Figure 5.4 shows 9 images per filter
    "batch_size": (64, 16),   # images optimised / retrieved per forward pass (no effect on the numbers)
}
LAYER_INDEX = {"convfc": (0, 2, 4), "resnet": (0, 2, 4)}   # conv1, conv3, conv5 | conv1, res3, res5
LAYER_NAMES = {"convfc": ("conv1", "conv3", "conv5"), "resnet": ("conv1", "res3", "res5")}
NOISE_MEAN, NOISE_STD = 128.0, 20.0  # gradient_ascent.py: np.random.normal(...) * 20 + 128


# --------------------------------------------------------------------------------------------
# Layers


def family(model) -> str:
    return "resnet" if model.arch.family == "resnet" else "convfc"


def layer_maps(model, x: torch.Tensor, tap: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Layer ``tap``'s maps after its ReLU, and its conv outputs (the release's fall-back for a
    channel whose post-ReLU mean is 0; None where there is none). Nothing deeper is run."""
    if model.sobel is not None:
        x = model.sobel(x)
    if family(model) == "resnet":
        conv = model.conv1(x)
        out = model.relu(model.bn1(conv))
        if tap == 0:
            return out, conv
        return _resnet_stage(model, out, tap), None
    relu_seen, conv = -1, None
    for m in model.features:
        x = m(x)
        if isinstance(m, nn.Conv2d):
            conv = x
        if isinstance(m, nn.ReLU):
            relu_seen += 1
            if relu_seen == tap:
                return x, conv
    raise ValueError(f"the network has no conv layer {tap + 1}")


def _resnet_stage(model, stem_out: torch.Tensor, tap: int) -> torch.Tensor:
    x = model.maxpool(stem_out)
    for stage in model.stages[:tap]:
        x = stage(x)
    return x


def layer_channels(model, size: int) -> list[int]:
    """Channel count of each of the three visualised layers at ``size`` px."""
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, size, size)
            return [layer_maps(model, x, t)[0].shape[1] for t in LAYER_INDEX[family(model)]]
    except RuntimeError:
        raise UserError(f"--image-size {size}: too small for {model.arch.name}'s conv5; "
                        f"use at least the checkpoint's input size ({model.spec.input_size})") from None


# --------------------------------------------------------------------------------------------
# (a) gradient ascent


def target_logits(model, x: torch.Tensor, tap: int, channels: torch.Tensor) -> torch.Tensor:
    """The release's loss input: each image's layer maps averaged over space, (B, C); an image
    whose target channel is silent after the ReLU reads the conv outputs instead."""
    after, conv = layer_maps(model, x, tap)
    logits = after.mean((2, 3))
    if conv is not None:
        silent = logits.gather(1, channels[:, None])[:, 0] == 0
        logits = torch.where(silent[:, None], conv.mean((2, 3)), logits)
    return logits


def initial_noise(seed: int, tap: int, channel: int, size: int) -> torch.Tensor:
    """(3, size, size) float32 noise of mean 128, std 20: one draw per (seed, layer, channel), so a
    channel's picture does not depend on which other channels are optimised."""
    rng = np.random.default_rng([seed, tap, channel])
    img = rng.standard_normal((size, size, 3)) * NOISE_STD + NOISE_MEAN
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).contiguous()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each image's spatial axes (scipy's, as the release; channels not mixed)."""
    arr = gaussian_filter(x.detach().cpu().numpy(), sigma=(0, 0, sigma, sigma))
    return torch.from_numpy(arr).to(x.device)


def gradient_ascent(model, tap: int, channels: list[int], size: int, *, iterations: int, lr: float,
                    weight_decay: float, sigma: float, blur_every: int, seed: int, device="cpu",
                    bar=None) -> torch.Tensor:
    """One optimised image per channel, (B, 3, size, size), in the release's unnormalised pixel
    scale. Images are independent (eval mode, per-image gradient norm), so they run as one batch."""
    x = torch.stack([initial_noise(seed, tap, c, size) for c in channels]).to(device)
    target = torch.tensor(channels, device=device)
    for it in range(iterations):
        x = x.detach().requires_grad_(True)
        logits = target_logits(model, x, tap, target)
        # gradient_ascent.py: loss = -CrossEntropyLoss(out.mean(3).mean(2), f) - wd * ||x||^2 per image
        ce = F.cross_entropy(logits.float(), target, reduction="sum")
        objective = -ce - weight_decay * (x ** 2).sum()
        (grad,) = torch.autograd.grad(objective, x)
        norm = grad.flatten(1).norm(dim=1)[:, None, None, None]
        x = x.detach() + lr * grad / (norm + 1e-8)
        if it % blur_every == 0:
            x = blur(x, sigma)
        if bar is not None:
            bar.update(1)
    return x.detach()


def target_prob(model, x: torch.Tensor, tap: int, channels: list[int]) -> np.ndarray:
    """Softmax share (%) of each image's target channel: exp(-CE), what the ascent maximises."""
    target = torch.tensor(channels, device=x.device)
    with torch.no_grad():
        p = F.softmax(target_logits(model, x, tap, target).float(), dim=1)
    return 100 * p.gather(1, target[:, None])[:, 0].cpu().numpy().astype(np.float64)


def deprocess(x: torch.Tensor) -> np.ndarray:
    """The release's deprocess_image: centre, std to 0.1, +0.5, clip to [0, 1], 8-bit (H, W, 3)."""
    a = x.detach().cpu().numpy().astype(np.float32)
    a = (a - a.mean()) / (a.std() + 1e-5) * 0.1 + 0.5
    return (np.clip(a, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


# --------------------------------------------------------------------------------------------
# (b) top activations


def channel_scores(model, loader, taps: list[int], channels: list[list[int]], pool: str, device,
                   precision: str = "fp32") -> list[np.ndarray]:
    """Per tap, (N, len(channels)) scores of every image: its post-ReLU map pooled over space."""
    out: list[list[np.ndarray]] = [[] for _ in taps]
    with torch.no_grad():
        for x, _ in progress(loader, desc="activations"):
            x = x.to(device)[:, 0]   # eval_crops_transform's one-crop axis
            with training.amp(precision, device):
                for i, (t, ch) in enumerate(zip(taps, channels)):
                    maps = layer_maps(model, x, t)[0][:, ch].float()
                    s = maps.mean((2, 3)) if pool == "mean" else maps.amax((2, 3))
                    out[i].append(s.cpu().numpy().astype(np.float64))
    return [np.concatenate(o) for o in out]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(C, k) image indices, highest score first, ties by the lower index."""
    return np.argsort(-scores.T, axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------------------------------
# Pictures: PIL only, no text, no metadata, so the same arrays give the same PNG bytes


def grid(cells: list[np.ndarray], cols: int, pad: int = 2) -> Image.Image:
    h, w = cells[0].shape[:2]
    rows = -(-len(cells) // cols)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, c in enumerate(cells):
        r, q = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = c
    return Image.fromarray(canvas)


def save_png(img: Image.Image, path: Path) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    write_file_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    return path


def display_crop(path: str, size: int) -> np.ndarray:
    """The centre crop the network read, as 8-bit RGB."""
    img = pil_loader(path)
    big = IL.resize_for(size)
    w, h = img.size
    scale = big / min(w, h)
    img = img.resize((max(big, round(w * scale)), max(big, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)).convert("RGB"))


# --------------------------------------------------------------------------------------------


def parse_channels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        chans = [int(c) for c in text.split(",")]
    except ValueError:
        raise UserError(f"--channels {text}: expected comma-separated channel indices, e.g. 0,5,17") from None
    if not chans or any(c < 0 for c in chans) or len(set(chans)) != len(chans):
        raise UserError(f"--channels {text}: expected distinct non-negative channel indices, e.g. 0,5,17")
    return chans


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=("train", "val"), default="val", help="split the top images are drawn from")
    p.add_argument("--channels", default=None,
                   help="comma-separated channel indices, the same for each layer (default: the first "
                        "--num-channels of each)")
    p.add_argument("--num-channels", type=argtypes.nonneg_int, default=None,
                   help="the first N channels of each layer, 0 = all; " + default_help("all", DEFAULTS["num_channels"][1]))
    p.add_argument("--iterations", type=argtypes.positive_int, default=None, help=default_help(*DEFAULTS["iterations"]))
    p.add_argument("--lr", type=argtypes.positive_float, default=None, help=default_help(*DEFAULTS["lr"]))
    p.add_argument("--weight-decay", type=argtypes.nonneg_float, default=None,
                   help="L2 penalty on the input; " + default_help(*DEFAULTS["weight_decay"]))
    p.add_argument("--sigma", type=argtypes.nonneg_float, default=None,
                   help="Gaussian blur (pixels); " + default_help(*DEFAULTS["sigma"]))
    p.add_argument("--blur-every", type=argtypes.positive_int, default=None,
                   help="updates between blurs; " + default_help(*DEFAULTS["blur_every"]))
    p.add_argument("--image-size", type=argtypes.positive_int, default=None,
                   help="optimised image size; " + default_help(*DEFAULTS["image_size"]))
    p.add_argument("--top", type=argtypes.positive_int, default=None, help="images retrieved per channel (default: 9)")
    p.add_argument("--pool", choices=("mean", "max"), default="mean",
                   help="how a map is reduced over space to rank images (default: mean, as the release)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None, help=default_help(*DEFAULTS["batch_size"]))


def chosen_channels(args, proto: dict, counts: list[int], names: tuple[str, ...]) -> list[list[int]]:
    asked = parse_channels(args.channels)
    if asked is not None:
        for name, n in zip(names, counts):
            bad = [c for c in asked if c >= n]
            if bad:
                raise UserError(f"--channels {args.channels}: {name} has {n} channels (0-{n - 1}), so "
                                f"{bad[0]} is beyond it; choose indices below {min(counts)}")
        return [list(asked) for _ in counts]
    k = proto["num_channels"]
    return [list(range(n if k == 0 else min(k, n))) for n in counts]


def run(args: argparse.Namespace) -> Path:
    timer = Timer()
    proto = resolve_protocol(args, DEFAULTS)
    with timer("load"):
        ckpt = load_checkpoint(args.checkpoint)
        size = int(ckpt.meta["input_size"])
        root = dataset_dir(args, "classification", (args.split,))
        ds = ImageFolder(root / args.split, eval_crops_transform(ckpt.meta, size, 1, loader_of(args)))
        data_fp = fingerprint(root / args.split)
    if len(ds) < proto["top"]:
        raise UserError(f"{root / args.split} has {len(ds)} images, fewer than the {proto['top']} shown per "
                        "channel; pass --data with a larger split (or lower --top)")
    model = training.frozen(training.place(ckpt.model, args.device, precision_of(args)))
    fam = family(model)
    taps, names = list(LAYER_INDEX[fam]), LAYER_NAMES[fam]
    counts = layer_channels(model.cpu(), proto["image_size"])
    model = model.to(args.device)
    channels = chosen_channels(args, proto, counts, names)

    images, probs, probs0 = [], [], []
    with timer("ascent"):
        total = sum(-(-len(ch) // proto["batch_size"]) for ch in channels) * proto["iterations"]
        bar = progress(total=total, desc="gradient ascent")
        try:
            for t, ch in zip(taps, channels):
                got, p, p0 = [], [], []
                for i in range(0, len(ch), proto["batch_size"]):
                    part = ch[i:i + proto["batch_size"]]
                    x = gradient_ascent(model, t, part, proto["image_size"], iterations=proto["iterations"],
                                        lr=proto["lr"], weight_decay=proto["weight_decay"], sigma=proto["sigma"],
                                        blur_every=proto["blur_every"], seed=args.seed, device=args.device, bar=bar)
                    got.append(x.cpu())
                    p.append(target_prob(model, x, t, part))
                    noise = torch.stack([initial_noise(args.seed, t, c, proto["image_size"]) for c in part])
                    p0.append(target_prob(model, noise.to(args.device), t, part))
                images.append(torch.cat(got))
                probs.append(np.concatenate(p))
                probs0.append(np.concatenate(p0))
        finally:
            bar.close()
    with timer("retrieval"):
        loader = training.loader(ds, proto["batch_size"], shuffle=False, workers=args.workers)
        scores = channel_scores(model, loader, taps, channels, args.pool, args.device, precision_of(args))
        tops = [top_k(s, proto["top"]) for s in scores]

    with timer("pictures"):
        # the name is meta.json's, i.e. the checkpoint author's: a slug, kept under --out
        pic_dir = output_dir(args.out, "visualize", f"{ckpt.name}-{ckpt.sha256[:8]}")
        paths = [p for p, _ in ds.samples]
        crops: dict[int, np.ndarray] = {}
        pngs = {}
        for name, imgs, top in zip(names, images, tops):
            cols = int(np.ceil(np.sqrt(len(imgs))))
            pngs[f"ascent_{name}"] = save_png(grid([deprocess(x) for x in imgs], cols), pic_dir / f"ascent_{name}.png")
            cells = [crops.setdefault(int(j), display_crop(paths[int(j)], size)) for row in top for j in row]
            pngs[f"top_{name}"] = save_png(grid(cells, proto["top"]), pic_dir / f"top{proto['top']}_{name}.png")
        page = write_text_atomic(pic_dir / "index.md", page_text(ckpt, names, channels, probs, probs0, tops, scores,
                                                                 paths, root / args.split, proto, args.pool))
    rel = {k: str(p.relative_to(args.out)) for k, p in pngs.items()}
    metrics = {f"{n}_prob": float(p.mean()) for n, p in zip(names, probs)}
    result = make_result(
        task="visualize", variant={"dataset": "imagenet", "split": args.split},
        checkpoint=checkpoint_block(ckpt), metrics=metrics,
        protocol={**proto, "layers": list(names), "pool": args.pool, "seed": args.seed, "input_size": size,
                  "loss": "-CE(spatial mean of the layer's maps, target channel) - wd * ||x||^2 "
                          "(visu/gradient_ascent.py), unit-norm gradient step",
                  "noise": "N(128, 20^2) per pixel, fed unnormalised", "transform": "centre crop"},
        data={"name": "imagenet", "root": str(root), "fingerprint": data_fp, "sizes": {args.split: len(ds)}},
        scale=args.scale, timings=timer.timings, selection={"rule": "final", "epochs": None},
        details={"page": str(page.relative_to(args.out)), **{f"png_{k}": v for k, v in rel.items()},
                 "channels": {n: ch for n, ch in zip(names, channels)},
                 "layer_channels": {n: c for n, c in zip(names, counts)},
                 "prob_final": {n: [round(float(v), 4) for v in p] for n, p in zip(names, probs)},
                 "prob_noise": {n: [round(float(v), 4) for v in p] for n, p in zip(names, probs0)},
                 "top": {n: {str(c): [[Path(paths[int(j)]).name, round(float(s[int(j), i]), 6)] for j in top[i]]
                             for i, c in enumerate(ch)}
                         for n, ch, top, s in zip(names, channels, tops, scores)}})
    return save_and_report(args, result)


def page_text(ckpt, names, channels, probs, probs0, tops, scores, paths, split_dir, proto, pool) -> str:
    lines = [f"# Feature visualisation: {md_text(ckpt.name)} ({md_text(ckpt.meta.get('origin'))})", "",
             f"Checkpoint sha256 `{ckpt.sha256[:16]}`; thesis §5.3, Figure 5.4. Gradient ascent: "
             f"{proto['iterations']} updates of lr {proto['lr']:g}, weight decay {proto['weight_decay']:g}, "
             f"blur sigma {proto['sigma']:g} every {proto['blur_every']}, {proto['image_size']} px. "
             f"Top images: the {proto['top']} images of {md_text(split_dir, 200)} with the highest "
             f"spatial-{pool} activation.", ""]
    for n, ch, p, p0, top, s in zip(names, channels, probs, probs0, tops, scores):
        lines += [f"## {n}", "",
                  f"Optimised inputs, one per channel, row-major: channels {', '.join(map(str, ch))}. Mean softmax "
                  f"share of the target channel: {p.mean():.2f}% (from noise: {p0.mean():.2f}%).", "",
                  f"![{n}: an input optimised for each of channels {', '.join(map(str, ch))}](ascent_{n}.png)", "",
                  f"Top {proto['top']} images per channel, one row per channel, best first.", "",
                  f"![{n}: for each channel, the {proto['top']} images that activate it most](top{proto['top']}_{n}.png)",
                  "", "| channel | share after ascent (%) | share of noise (%) | top activation | top image |",
                  "|---|---|---|---|---|"]
        for i, c in enumerate(ch):
            lines.append(f"| {c} | {p[i]:.2f} | {p0[i]:.2f} | {s[top[i][0], i]:.4g} | "
                         f"{md_text(Path(paths[int(top[i][0])]).name, 80)} |")
        lines.append("")
    return "\n".join(lines)


register(Task(
    name="visualize",
    description="feature visualisation: gradient-ascent inputs and top-9 images of conv1/3/5 channels (§5.3, Fig. 5.4)",
    add_arguments=add_arguments, run=run,
    dataset="imagenet", needs=("val",), resources=Resources(1, 8, 32, 3 * 60),
    metrics=r"(conv[135]|res[35])_prob",
    table="visualize",
))

"""Fast image loading for training and full-scale evaluation: path in, uint8 crop out.

Every loader returns ``uint8`` CHW tensors; :func:`normalise` turns a batch into the network's
input on the device (the same float operations as ``ToTensor`` + ``Normalize``, so the values are
bit-identical to torchvision's path, and a worker ships 4x fewer bytes).

- ``torchvision``: full decode, then torchvision's ``RandomResizedCrop`` + flip (or resize + centre crop).
- ``draft``: the same random draws in the same order (torchvision's own ``get_params`` on the
  image's header size, then the flip's ``torch.rand``), so for one RNG state the crop box is
  the same; the JPEG is then decoded at the smallest DCT scale (1/2, 1/4, 1/8, PIL ``draft``)
  that still leaves the box at least as large as the output, and the box is mapped onto the
  reduced image with sub-pixel precision. When no reduction is possible (the box is less than
  twice the output size) the result is bit-identical to ``torchvision``.
- ``nvjpeg``: workers only read the file and draw the same box; :func:`decode_batch` decodes the
  whole batch at once with ``torchvision.io.decode_jpeg(device=...)`` (nvJPEG on CUDA, libjpeg on
  the CPU, which is how the tests exercise it) and crops, resizes (bilinear, antialiased) and
  flips on that device. On CUDA the crops are resized together (:func:`crop_packed`): the
  per-image ``F.interpolate`` costs ~8 kernel launches an image from the main process, which may
  alone cap the loader near the 15,000 img/s it must reach (``benchmarks/nvjpeg_breakdown.py``
  times both on a GPU).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dcbench.choices import CROPS, FLIPS
from dcbench.datasets import open_image, pil_loader


def resize_for(size: int) -> int:
    """The side an image is resized to before a centre (or fixed-size) crop of ``size``: ImageNet's
    256 -> 224 convention, scaled to other input sizes."""
    return int(round(size * 256 / 224))


RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range (torchvision default, original code)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``, in ToTensor's and Normalize's op order."""
    y = x.to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=y.dtype, device=y.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=y.dtype, device=y.device).view(-1, 1, 1)
    return y.sub_(m).div_(s)


def _to_uint8(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous()


def draw_flip(flip: str) -> int:
    """The flip code for one image: torchvision's Random{Horizontal,Vertical}Flip draw (one
    ``torch.rand``), none drawn for ``none``."""
    if flip == "none":
        return 0
    return (1 if flip == "horizontal" else 2) if bool(torch.rand(1) < 0.5) else 0


def _draw_box(img: Image.Image, scale: tuple[float, float], ratio=RATIO,
              flip: str = "horizontal") -> tuple[int, int, int, int, int]:
    """(top, left, height, width, flip code) with torchvision's draws: RandomResizedCrop, then the flip."""
    import torchvision.transforms as T

    i, j, h, w = T.RandomResizedCrop.get_params(img, list(scale), list(ratio))
    return i, j, h, w, draw_flip(flip)


def _draw_offset(nh: int, nw: int, size: int) -> tuple[int, int]:
    """(top, left) of a size x size crop of an (nh, nw) image with RandomCrop's own draws."""
    import torchvision.transforms as T

    i, j, _, _ = T.RandomCrop.get_params(torch.empty((1, nh, nw), device="meta"), (size, size))
    return i, j


def _apply_flip(img: Image.Image, code: int) -> Image.Image:
    if code == 1:
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    if code == 2:
        return img.transpose(Image.FLIP_TOP_BOTTOM)
    return img


def _draft_factor(img: Image.Image, need_w: float, need_h: float) -> int:
    """Decode ``img`` (opened, not loaded) at 1/r of its size, r in {8, 4, 2, 1}, the largest with
    ``size / r >= need`` in both directions; returns the r PIL actually applied."""
    w0, h0 = img.size
    r = 1
    for cand in (8, 4, 2):
        if w0 / cand >= need_w and h0 / cand >= need_h:
            r = cand
            break
    if r == 1 or getattr(img, "format", None) != "JPEG":
        return 1
    # PIL picks min(W // req_w, H // req_h) rounded down to a power of two; W // (W // r) is in [r, 2r).
    img.draft(None, (w0 // r, h0 // r))
    if img.size == ((w0 + r - 1) // r, (h0 + r - 1) // r):
        return r
    if img.size == (w0, h0):
        return 1
    raise OSError(f"unexpected reduced JPEG size {img.size} for {(w0, h0)} at 1/{r}")


class RandomCrop:
    """``path -> uint8 (3, size, size)``: the training crop, by default RandomResizedCrop(size, scale)
    + horizontal flip (thesis §3.3).

    ``crop="random"``: Resize(``resize``) then a size x size crop at a random place (RandomCrop);
    ``crop="central"``: Resize(``resize``) then CenterCrop(size). ``flip``: horizontal, vertical or
    none. The random draws are torchvision's, in its order (crop, then flip)."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0), draft: bool = True,
                 crop: str = "random-sized", flip: str = "horizontal", resize: int | None = None):
        self.size, self.scale, self.draft = int(size), (float(scale[0]), float(scale[1])), draft
        if crop not in CROPS or flip not in FLIPS:
            raise ValueError(f"crop must be one of {CROPS} and flip one of {FLIPS}")
        self.crop, self.flip = crop, flip
        self.resize = int(resize if resize is not None else resize_for(self.size))

    def __call__(self, path: str) -> torch.Tensor:
        if self.crop != "random-sized":
            return self._resized(path)
        with open_image(path) as img:
            i, j, h, w, flip = _draw_box(img, self.scale, flip=self.flip)
            r = 1
            if self.draft:
                # The box must stay at least output-sized: w / r >= size and h / r >= size.
                r = _draft_factor(img, self.size * img.size[0] / w, self.size * img.size[1] / h)
            img.load()
            im = img if img.mode in ("RGB", "L") else img.convert("RGB")
            if r == 1:  # torchvision's exact operations: crop, then resize
                out = im.crop((j, i, j + w, i + h)).resize((self.size, self.size), Image.BILINEAR)
            else:
                out = im.resize((self.size, self.size), Image.BILINEAR,
                                box=(j / r, i / r, (j + w) / r, (i + h) / r))
            return _to_uint8(_apply_flip(out, flip))

    def _resized(self, path: str) -> torch.Tensor:
        """Resize (shorter side to ``resize``), then a central or random size x size crop, then the flip."""
        import torchvision.transforms.functional as TF

        with open_image(path) as img:
            w0, h0 = img.size
            nh, nw, top, left = centre_geometry(w0, h0, self.resize, self.size)
            if nh < self.size or nw < self.size:
                raise OSError(f"{path}: resized to {nw}x{nh}, smaller than the {self.size}-px crop")
            if self.crop == "random":
                top, left = _draw_offset(nh, nw, self.size)
            flip = draw_flip(self.flip)
            if self.draft:
                _draft_factor(img, nw, nh)
            img.load()
            im = img if img.mode in ("RGB", "L") else img.convert("RGB")
            out = TF.resize(im, [nh, nw]).crop((left, top, left + self.size, top + self.size))
            return _to_uint8(_apply_flip(out, flip))


def centre_geometry(w0: int, h0: int, resize: int, crop: int) -> tuple[int, int, int, int]:
    """torchvision's Resize(resize) output size and CenterCrop(crop)'s offset: (new_h, new_w, top, left)."""
    if w0 <= h0:
        nw, nh = resize, int(resize * h0 / w0)
    else:
        nh, nw = resize, int(resize * w0 / h0)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return nh, nw, top, left


class CentreCrop:
    """``path -> uint8 (3, crop, crop)``: Resize(resize) (shorter side) + CenterCrop(crop)."""

    def __init__(self, resize: int, crop: int, draft: bool = True):
        self.resize, self.crop, self.draft = int(resize), int(crop), draft

    def __call__(self, path: str) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        with open_image(path) as img:
            w0, h0 = img.size
            nh, nw, top, left = centre_geometry(w0, h0, self.resize, self.crop)
            if self.draft:
                _draft_factor(img, nw, nh)
            img.load()
            im = img if img.mode in ("RGB", "L") else img.convert("RGB")
            if nh < self.crop or nw < self.crop:  # torchvision pads; rare enough to take its path
                return _to_uint8(TF.center_crop(TF.resize(im, self.resize), self.crop))
            out = TF.resize(im, [nh, nw])
            return _to_uint8(out.crop((left, top, left + self.crop, top + self.crop)))


class TorchvisionCrop:
    """The reference path: full decode, torchvision transforms (``train`` or centre)."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, path: str) -> torch.Tensor:
        return _to_uint8(self.transform(pil_loader(path)))


class JpegBytes:
    """For :func:`decode_batch`: ``path -> (file bytes, params)``; the box is drawn here, in the worker.

    ``params`` = (top, left, height, width, flip) for a random-sized crop (``resize`` None), in
    original-image pixels, or (new_h, new_w, top, left, flip) for a crop of the image resized to
    (new_h, new_w): central by default, at a random place with ``crop="random"`` (decode with
    ``centre=True``). ``flip`` defaults to horizontal for the random-sized crop, none otherwise.
    """

    def __init__(self, size: int, scale: tuple[float, float] | None = (0.08, 1.0), resize: int | None = None,
                 crop: str | None = None, flip: str | None = None):
        self.size, self.scale, self.resize = int(size), scale, resize
        self.crop = crop or ("random-sized" if resize is None else "central")
        self.flip = flip or ("horizontal" if resize is None else "none")
        if self.crop not in CROPS or self.flip not in FLIPS or (self.crop == "random-sized") != (resize is None):
            raise ValueError("JpegBytes: a random-sized crop takes no resize, the other crops need one")

    def __call__(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        with open_image(path) as img:
            if self.resize is None:
                p = _draw_box(img, self.scale, flip=self.flip)
            else:
                nh, nw, top, left = centre_geometry(*img.size, self.resize, self.size)
                if self.crop == "random":
                    top, left = _draw_offset(nh, nw, self.size)
                p = (nh, nw, top, left, draw_flip(self.flip))
        with open(path, "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        return data, torch.tensor([int(v) for v in p], dtype=torch.int64)


def collate_bytes(batch: list):
    """Collate ``((bytes, params), tag)`` items (``None`` = unreadable) into (list, (B, 5), (B,))."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return ([b[0][0] for b in batch], torch.stack([b[0][1] for b in batch]),
            torch.tensor([b[1] for b in batch], dtype=torch.int64))


def _wait_for_queued_work(device: torch.device) -> None:
    """Block until the kernels already queued on ``device``'s current stream have run.

    torchvision allocates the decoded images on the caller's stream but decodes on a stream of its
    own that does not wait for it, and the training loop runs ahead of the GPU: without this wait a
    decode can write into memory the previous step's backward still reads (wrong numbers, no error).
    The decode blocks the host anyway, so the wait costs only the overlap it removes."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def _decode_all(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        _wait_for_queued_work(device)
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad or non-JPEG file fails the batch: decode one by one
        out: list[torch.Tensor | None] = []
        for d in datas:
            try:
                _wait_for_queued_work(device)
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                try:
                    out.append(decode_image(d, mode=ImageReadMode.RGB).to(device))
                except RuntimeError:
                    out.append(None)
        return out


def decode_batch(datas: list[torch.Tensor], params: torch.Tensor, size: int, device: torch.device,
                 centre: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode, crop, resize and flip a batch on ``device``: (uint8 (B', 3, size, size), kept mask (B,)).

    ``centre``: the params are :class:`JpegBytes`'s resize geometry (central or random crops of the
    resized image), not a random-sized box."""
    return crop_batch(_decode_all(datas, device), params, size, device, centre)


def crop_batch(imgs: list[torch.Tensor | None], params: torch.Tensor, size: int, device: torch.device,
               centre: bool = False, packed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`decode_batch` after the decode: crop, resize and flip decoded images (None = unreadable).

    ``packed`` (default: on CUDA) resizes the whole batch at once with :func:`crop_packed`; otherwise
    each image goes through ``F.interpolate`` (antialiased bilinear), the reference the packed path
    is tested against."""
    keep = torch.tensor([im is not None for im in imgs], dtype=torch.bool)
    if packed if packed is not None else device.type == "cuda":
        kept = [(im, p) for im, p in zip(imgs, params.tolist()) if im is not None]
        return crop_packed([im for im, _ in kept], [p for _, p in kept], size, device, centre), keep
    out = torch.empty((int(keep.sum()), 3, size, size), dtype=torch.uint8, device=device)
    p = params.tolist()
    b = 0
    for im, (a0, a1, a2, a3, flip) in zip(imgs, p):
        if im is None:
            continue
        if centre:
            nh, nw, top, left = a0, a1, a2, a3
            y = F.interpolate(im[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
            y = y[:, :, top:top + size, left:left + size]
        else:
            i, j, h, w = a0, a1, a2, a3
            y = F.interpolate(im[None, :, i:i + h, j:j + w].float(), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False)
        if flip:  # 1: left-right, 2: top-bottom (see FLIPS)
            y = y.flip(-1 if flip == 1 else -2)
        out[b] = y[0].round_().clamp_(0, 255).to(torch.uint8)
        b += 1
    return out, keep


# Padded pixels of one packed group (32M: ~380 MB as fp32 for three channels). A batch of 256
# ImageNet-size crops (~500 x 375 at most) is one or two groups; a few huge images get groups of their own.
PACK_PIXELS = 1 << 25


def aa_weights(in_size: torch.Tensor, out_size: torch.Tensor, first: torch.Tensor, size: int,
               width: int) -> torch.Tensor:
    """Rows ``first .. first + size`` of the (out x in) matrix of ``F.interpolate``'s antialiased
    bilinear resize (align_corners=False), one matrix per image: (G, size, width) float32, columns
    past ``in_size`` zero.

    The filter is torch's (and PIL's): a triangle of half-width max(scale, 1) input pixels centred
    on ``scale * (o + 0.5)``, scale = in / out, each row normalised to sum 1."""
    dev = in_size.device
    n_in = in_size.to(torch.float32)[:, None, None]
    scale = n_in / out_size.to(torch.float32)[:, None, None]
    o = first.to(torch.float32)[:, None, None] + torch.arange(size, device=dev, dtype=torch.float32)[None, :, None]
    j = torch.arange(width, device=dev, dtype=torch.float32)[None, None, :]
    t = (j + 0.5 - scale * (o + 0.5)) / scale.clamp(min=1.0)
    w = (1 - t.abs()).clamp_(min=0) * (j < n_in)
    return w / w.sum(-1, keepdim=True)


def _pack_groups(hs: list[int], ws: list[int], budget: int = PACK_PIXELS) -> list[list[int]]:
    """Indices of regions (heights ``hs``, widths ``ws``) in groups whose padded size (count x max h
    x max w) stays within ``budget`` pixels (a single image always makes a group), smallest areas
    first so that sizes pad against their like."""
    groups: list[list[int]] = []
    cur: list[int] = []
    mh = mw = 0
    for b in sorted(range(len(hs)), key=lambda i: hs[i] * ws[i]):
        nh, nw = max(mh, hs[b]), max(mw, ws[b])
        if cur and (len(cur) + 1) * nh * nw > budget:
            groups.append(cur)
            cur, nh, nw = [], hs[b], ws[b]
        cur.append(b)
        mh, mw = nh, nw
    if cur:
        groups.append(cur)
    return groups


def crop_packed(imgs: list[torch.Tensor], params: list, size: int, device: torch.device,
                centre: bool = False, budget: int = PACK_PIXELS) -> torch.Tensor:
    """Crop, resize and flip decoded images together: uint8 (B, 3, size, size) on ``device``.

    Each image's source region (the random-sized box, or the whole image for the resize geometry
    of ``centre``) is copied into one padded uint8 batch; the resize is then two batched matrix
    products with :func:`aa_weights`' per-image matrices (a flip reverses a matrix's rows), so a
    group costs one copy per image and ~20 kernels in all instead of ~8 kernels an image. Values
    equal the per-image ``F.interpolate`` path's up to float rounding: about 1 pixel in 10^5 differs
    by 1 grey level (tested: at most 1, on under 1 in 1,000). Padding is never read: its weights
    are exactly 0. ``budget``: padded pixels per group (:data:`PACK_PIXELS`)."""
    n = len(imgs)
    out = torch.empty((n, 3, size, size), dtype=torch.uint8, device=device)
    if n == 0:
        return out
    # per image: source region (top, left, h, w), resize geometry (out h, out w, first row, first col), flip
    regions, geom = [], []
    for im, (a0, a1, a2, a3, flip) in zip(imgs, params):
        if centre:  # resize the whole image to (a0, a1), keep the window at (a2, a3)
            regions.append((0, 0, im.shape[-2], im.shape[-1]))
            geom.append((a0, a1, a2, a3, flip))
        else:  # the box (a0, a1, a2, a3) resized to size x size
            regions.append((a0, a1, a2, a3))
            geom.append((size, size, 0, 0, flip))
    hs, ws = [r[2] for r in regions], [r[3] for r in regions]
    for group in _pack_groups(hs, ws, budget):
        hp, wp = max(hs[b] for b in group), max(ws[b] for b in group)
        x = torch.empty((len(group), 3, hp, wp), dtype=torch.uint8, device=device)
        for slot, b in enumerate(group):
            top, left, h, w = regions[b]
            x[slot, :, :h, :w] = imgs[b][:, top:top + h, left:left + w]
        # one host-to-device copy per group: region size, resize geometry, flip, place in the output
        q = torch.tensor([[hs[b], ws[b], *geom[b], b] for b in group], dtype=torch.int64).to(device, non_blocking=True)
        wy = aa_weights(q[:, 0], q[:, 2], q[:, 4], size, hp)
        wx = aa_weights(q[:, 1], q[:, 3], q[:, 5], size, wp)
        flip = q[:, 6, None, None]
        wy = torch.where(flip == 2, wy.flip(1), wy)
        wx = torch.where(flip == 1, wx.flip(1), wx)
        # fp32 products (uint8 values need 8+ exact bits), not autocast's bf16; TF32, if a caller turned
        # it on for matmuls, would round more pixels by one grey level
        with torch.autocast(device.type, enabled=False):
            y = wy[:, None] @ (x.to(torch.float32) @ wx[:, None].transpose(-1, -2))
        out.index_copy_(0, q[:, 7], y.round_().clamp_(0, 255).to(torch.uint8))
    return out


def resolve_loader(name: str, device: torch.device, quiet: bool = False) -> str:
    """``nvjpeg`` needs CUDA: on the CPU it falls back to ``draft`` with one line on stderr."""
    if name == "nvjpeg" and device.type != "cuda":
        if not quiet:
            print("note: --loader nvjpeg needs CUDA; using --loader draft", file=sys.stderr)
        return "draft"
    return name

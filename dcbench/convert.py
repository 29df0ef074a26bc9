"""Import foreign weights as checkpoints (format v1; v2 for ResNets) by renaming keys alone.

Sources: the original DeepCluster release (``checkpoint.pth.tar``), a torchvision ``vgg16_bn``
state dict, torchvision-layout ResNet-50/101 state dicts as today's self-supervised releases ship
them (behind ``module.``, ``module.encoder_q.``, ``backbone.`` or ``model.``), and random
initialisation (the "Random" baselines). Every renamed key and every key left out is reported,
as detectron2's converters do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dcbench.checkpoint import MAX_CLASSES, preprocessing
from dcbench.errors import CheckpointError, UserError
from dcbench.models import ARCHS, DeepClusterNet, ModelSpec, get_architecture, make_network
from dcbench.text import printable

SOURCES = ("deepcluster-release", "torchvision-vgg16bn", "torchvision-resnet50", "torchvision-resnet101", "random")
# Where real releases put a torchvision ResNet's keys: DDP (``module.``), MoCo v1-v3's query encoder
# (``module.encoder_q.``), SwAV/DINO/solo-learn style wrappers (``backbone.``), and ``model.``.
# The one under which most of the trunk's keys are found is stripped; the rest is dropped and listed.
RESNET_PREFIXES = ("module.encoder_q.", "module.", "backbone.", "model.")


@dataclass
class Conversion:
    state_dict: dict
    spec: ModelSpec
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    source_info: dict = field(default_factory=dict)


def load_torch_file(path: Path) -> dict:
    """Read a torch file (zip or legacy) without unpickling arbitrary objects."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file; pass the .pth/.pth.tar to convert")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a foreign file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as plain tensors ({msg[:160]}); "
                              "only weights files are accepted, never pickled objects") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def load_weights_file(path: Path) -> dict:
    """A ``.safetensors`` file (tensors only by construction) or a torch file (:func:`load_torch_file`)."""
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist or is not a file; pass the weights file to convert")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({str(e)[:160]})") from None
    return load_torch_file(path)


def _finish(sd: dict, spec: ModelSpec, conv: Conversion, src: Path) -> Conversion:
    """Check the renamed dict against the architecture; fill BN counters old PyTorch lacked."""
    expected = make_network(spec).state_dict()
    for k in sorted(set(expected) - set(sd)):
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros((), dtype=torch.long)
            conv.filled.append(k)
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise CheckpointError(f"{src}: after renaming, {len(missing)} weights of {spec.arch} are missing "
                              f"(first: {missing[0]}); is --arch/--sobel right?")
    for k in sorted(set(sd) - set(expected)):
        conv.dropped.append(k)
        del sd[k]
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{src}: {k} has shape {tuple(sd[k].shape)}, {spec.arch} at input "
                                  f"{spec.input_size} needs {tuple(v.shape)}; pass the right --input-size")
    conv.state_dict = {k: sd[k] for k in expected}
    return conv


def _num_classes(top, key: str, src: Path) -> int:
    """The class count a top layer's weight implies (0 without one), checked before a network of
    that width is built from it."""
    if top is None:
        return 0
    if top.dim() != 2 or not 0 < top.shape[0] <= MAX_CLASSES:
        raise CheckpointError(f"{src}: {key} has shape {tuple(top.shape)[:4]}, not (classes <= {MAX_CLASSES}, "
                              "features); the file is damaged or not of this layout")
    return int(top.shape[0])


def _tensor_dict(sd, src: Path, hint: str) -> dict:
    """``sd`` if it is a dict of name -> tensor; otherwise one line naming the first bad entry."""
    if not isinstance(sd, dict):
        raise CheckpointError(f"{src}: the state dict is a {type(sd).__name__}, not a dict of tensors; {hint}")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{src}: state-dict entry {printable(repr(k), 80)} holds a {type(v).__name__}, "
                                  f"not a tensor; {hint}")
    return sd


def from_deepcluster_release(src: Path, arch: str | None = None, sobel: bool | None = None) -> Conversion:
    obj = load_torch_file(src)
    sd = _tensor_dict(obj.get("state_dict", obj), src, "is it a DeepCluster checkpoint.pth.tar?")
    epoch = obj.get("epoch")
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch <= 10**9 else None
    file_arch = obj.get("arch")
    conv = Conversion(state_dict={}, spec=ModelSpec(), source_info={
        "epoch": epoch, "arch": printable(file_arch, 40) if file_arch is not None else None})
    for k in obj:
        if k != "state_dict":
            conv.dropped.append(f"(file entry) {printable(k, 80)}")
    renamed: dict = {}
    for old, t in sd.items():
        new = old[len("module."):] if old.startswith("module.") else old
        new = re.sub(r"^features\.module\.", "features.", new)
        if new != old:
            conv.renamed.append((old, new))
        renamed[new] = t
    arch = arch or str(obj.get("arch") or "").lower().replace("_bn", "") or None
    if arch not in ARCHS:
        raise CheckpointError(f"{src}: cannot tell the architecture (file says {printable(repr(file_arch), 60)}); "
                              f"pass --arch ({' or '.join(ARCHS)})")
    has_sobel = any(k.startswith("sobel.") for k in renamed)
    sobel = has_sobel if sobel is None else sobel
    if sobel and not has_sobel:
        raise CheckpointError(f"{src} has no sobel.* weights; drop --sobel")
    top = renamed.get("top_layer.weight")
    spec = ModelSpec(arch=arch, sobel=sobel, batchnorm=True, input_size=224,
                     num_classes=_num_classes(top, "top_layer.weight", src))
    conv.spec = spec
    return _finish(renamed, spec, conv, src)


def from_torchvision_vgg16bn(src: Path) -> Conversion:
    obj = load_torch_file(src)
    sd = _tensor_dict(obj.get("state_dict", obj), src, "is it torchvision's vgg16_bn .pth?")
    spec = ModelSpec(arch="vgg16", sobel=False, batchnorm=True, input_size=224,
                     num_classes=_num_classes(sd.get("classifier.6.weight"), "classifier.6.weight", src))
    conv = Conversion(state_dict={}, spec=spec)
    renamed = {}
    for old, t in sd.items():
        new = re.sub(r"^classifier\.6\.", "top_layer.", old)
        if new != old:
            conv.renamed.append((old, new))
        renamed[new] = t
    return _finish(renamed, spec, conv, src)


def from_torchvision_resnet(src: Path, arch: str, input_size: int = 224) -> Conversion:
    """A torchvision-layout ResNet state dict, optionally wrapped (``{"state_dict": ...}`` or
    ``{"model": ...}``) and prefixed (:data:`RESNET_PREFIXES`). A ResNet ``fc`` (one Linear on the
    2,048-d pooled res5) becomes ``top_layer``; any other head (projection MLPs, prototypes, a
    momentum encoder, queues) is dropped and listed."""
    if get_architecture(arch).family != "resnet":
        raise CheckpointError(f"--arch {arch} is not a ResNet; --from torchvision-resnet* imports resnet50/resnet101")
    obj = load_weights_file(src)
    conv = Conversion(state_dict={}, spec=ModelSpec(arch=arch, input_size=input_size))
    sd = obj
    for wrapper in ("state_dict", "model"):
        if isinstance(obj.get(wrapper), dict):
            sd = obj[wrapper]
            conv.dropped.extend(f"(file entry) {printable(k, 80)}" for k in obj if k != wrapper)
            break
    tensors = {}
    for k, v in sd.items():
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            tensors[k] = v
        else:
            conv.dropped.append(f"(not a tensor) {printable(k, 80)}")
    trunk = {k for k in make_network(ModelSpec(arch=arch, input_size=input_size)).state_dict()}
    counts = {p: sum(1 for k in tensors if k.startswith(p) and k[len(p):] in trunk) for p in ("", *RESNET_PREFIXES)}
    prefix = max(counts, key=counts.get)  # ties: the order above (no prefix first)
    if counts[prefix] == 0:
        raise CheckpointError(f"{src}: no {arch} trunk key (conv1.weight, layer1.0.conv1.weight, ...) found, with "
                              f"or without a prefix {', '.join(RESNET_PREFIXES)}; is it a torchvision-layout {arch}?")
    renamed: dict = {}
    for old, t in tensors.items():
        if not old.startswith(prefix):
            conv.dropped.append(old)
            continue
        new = old[len(prefix):]
        if new in ("fc.weight", "fc.bias"):
            new = "top_layer." + new[len("fc."):]
        if new != old:
            conv.renamed.append((old, new))
        renamed[new] = t
    top = renamed.get("top_layer.weight")
    if top is not None and not (top.dim() == 2 and top.shape[1] == get_architecture(arch).descriptor_dim
                                and "top_layer.bias" in renamed):
        top = None
    if top is None:  # not a ResNet fc: left out, like any other head
        for k in ("top_layer.weight", "top_layer.bias"):
            if k in renamed:
                renamed.pop(k)
                conv.renamed = [(o, n) for o, n in conv.renamed if n != k]
                conv.dropped.append(prefix + "fc." + k.split(".")[-1])
    conv1 = renamed.get("conv1.weight")
    sobel = "sobel.0.weight" in renamed and conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 2
    conv.spec = ModelSpec(arch=arch, sobel=sobel, batchnorm=True, input_size=input_size,
                          num_classes=_num_classes(top, "fc.weight", src))
    conv.source_info = {"prefix": prefix or None, "layout": "torchvision"}
    return _finish(renamed, conv.spec, conv, src)


def random_init(arch: str, sobel: bool, input_size: int, seed: int) -> Conversion:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_network(ModelSpec(arch=arch, sobel=sobel, input_size=input_size))
    return Conversion(state_dict=model.state_dict(), spec=model.spec, source_info={"seed": seed})


def build(conv: Conversion) -> DeepClusterNet:
    model = make_network(conv.spec)
    model.load_state_dict(conv.state_dict, strict=True)
    return model


# ------------------------------------------------------------------------------------------------
# Export: detectron2
# Key mapping (documented for users who run detectron2 themselves; detectron2 has no AlexNet/VGG
# backbone, so these names are what a user's backbone and box head should call their modules):
#   sobel.0.*                    -> backbone.sobel.grayscale.*      (frozen, 3 -> 1)
#   sobel.1.*                    -> backbone.sobel.filter.*         (frozen, 1 -> 2)
#   features.<i> (k-th conv)     -> backbone.conv<k>.{weight,bias}  (AlexNet: conv1..conv5;
#                                   VGG16: conv<block>_<j>, e.g. conv3_2, as in the VGG paper)
#   features.<i+1> (its BN)      -> backbone.conv<k>.norm.{weight,bias,running_mean,running_var,...}
#                                   (detectron2's layers.Conv2d(norm=...) naming)
#   classifier.<fc6>             -> roi_heads.box_head.fc1.*        (FastRCNNConvFCHead's names)
#   classifier.<fc7>             -> roi_heads.box_head.fc2.*
#   top_layer.*                  -> left out (the clustering head is not a detector layer)
def detectron2_key_map(model: DeepClusterNet) -> dict[str, str]:
    """Our module prefixes -> detectron2 names (see the table above)."""
    if model.arch.family != "convfc":
        raise UserError(f"dc-convert --to detectron2 exports AlexNet/VGG16 checkpoints; a {model.spec.arch} is "
                        "in torchvision's layout already: use detectron2's tools/convert-torchvision-to-d2.py")
    mapping = {}
    if model.sobel is not None:
        mapping["sobel.0."] = "backbone.sobel.grayscale."
        mapping["sobel.1."] = "backbone.sobel.filter."
    block, j, k = 1, 0, 0
    layers = list(model.features)
    for i, m in enumerate(layers):
        if isinstance(m, torch.nn.MaxPool2d):
            block, j = block + 1, 0
        if not isinstance(m, torch.nn.Conv2d):
            continue
        k, j = k + 1, j + 1
        name = f"conv{k}" if model.arch.conv_naming == "flat" else f"conv{block}_{j}"
        mapping[f"features.{i}."] = f"backbone.{name}."
        if i + 1 < len(layers) and isinstance(layers[i + 1], torch.nn.BatchNorm2d):
            mapping[f"features.{i + 1}."] = f"backbone.{name}.norm."
    fc6, fc7 = model.fc_indices
    mapping[f"classifier.{fc6}."] = "roi_heads.box_head.fc1."
    mapping[f"classifier.{fc7}."] = "roi_heads.box_head.fc2."
    return mapping


def to_detectron2(model: DeepClusterNet, meta: dict) -> tuple[dict, Conversion]:
    """A detectron2 checkpoint dict: ``{"model": {name: tensor}, "__author__", "matching_heuristics",
    "dcbench": provenance}``. Tensors (not numpy arrays) so ``torch.load(weights_only=True)`` reads it;
    detectron2's ``DetectionCheckpointer`` accepts tensors in ``.pth`` files."""
    mapping = detectron2_key_map(model)
    conv = Conversion(state_dict={}, spec=model.spec)
    out = {}
    for key, t in model.state_dict().items():
        prefix = next((p for p in mapping if key.startswith(p)), None)
        if prefix is None:
            conv.dropped.append(key)
            continue
        new = mapping[prefix] + key[len(prefix):]
        conv.renamed.append((key, new))
        out[new] = t.detach().cpu().clone()
    conv.state_dict = out
    pre = preprocessing(meta)
    mean, std = list(pre.mean), list(pre.std)
    note = {
        "exported_by": "dcbench dc-convert --to detectron2",
        "checkpoint": meta.get("name"), "model_sha256": meta.get("model_sha256"), "origin": meta.get("origin"),
        "arch": model.spec.arch, "sobel": model.spec.sobel, "batchnorm": model.spec.batchnorm,
        "input_size": model.spec.input_size, "feature_shape": list(model.feature_shape),
        "conv5_stride": 16, "box_head_pooler_resolution": list(model.feature_shape[1:]),
        # detectron2 feeds 0-255 pixels: our [0, 1]-then-normalised RGB input becomes
        "suggested_config": {"INPUT.FORMAT": "RGB", "MODEL.PIXEL_MEAN": [255.0 * m for m in mean],
                             "MODEL.PIXEL_STD": [255.0 * s for s in std]},
        "key_map": dict(mapping), "left_out": list(conv.dropped),
    }
    return {"model": out, "__author__": "dcbench", "matching_heuristics": False, "dcbench": note}, conv

"""Import foreign weights as checkpoints (format v1; v2 for ResNets) by renaming keys alone.

Sources: the original DeepCluster release (``checkpoint.pth.tar``), a torchvision ``vgg16_bn``
state dict, torchvision ResNet-50/101 trunks in the files today's self-supervised releases save
(:data:`LAYOUTS`: VISSL, DINO, MoCo v1-v3, SwAV/DeepCluster-v2, ReSSL; or a ``--key`` and
``--strip-prefix`` of the user's), and random initialisation (the "Random" baselines). Every
renamed key and every key left out is reported, as detectron2's converters do.
"""

from __future__ import annotations

import argparse
import functools
import re
from dataclasses import dataclass, field, replace
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
    layout_line: str = ""  # ResNet imports: which layout was read, and why (detected or given)


def load_torch_file(path: Path) -> dict:
    """Read a torch file (zip or legacy) without unpickling arbitrary objects."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file; pass the .pth/.pth.tar to convert")
    try:
        # argparse.Namespace is a bag of attributes (constructing one runs no code of the file's):
        # DINO stores its command line as one beside the weights
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a foreign file
        text = str(e).strip()
        needs = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if needs:
            raise CheckpointError(f"{path} needs full unpickling to read (it refers to "
                                  f"{printable(needs.group(1), 80)}), which can run code: dc-convert reads "
                                  "only tensors and plain containers; where you trust the file, re-save just its "
                                  "state dict (torch.save(ckpt['state_dict'], 'weights.pth')) and convert that") from None
        msg = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as plain tensors ({printable(msg, 160)}); "
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


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """The architecture's state dict as names and shapes, in order (built on the meta device:
    nothing is initialised)."""
    return dict(_shapes_once(spec))


@functools.lru_cache(maxsize=16)
def _shapes_once(spec: ModelSpec) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        return tuple((k, tuple(v.shape)) for k, v in make_network(spec).state_dict().items())


def _finish(sd: dict, spec: ModelSpec, conv: Conversion, src: Path, hint: str | None = None) -> Conversion:
    """Check the renamed dict against the architecture; fill BN counters old PyTorch lacked."""
    expected = _expected_shapes(spec)
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
        if tuple(sd[k].shape) != v:
            raise CheckpointError(f"{src}: {k} has shape {tuple(sd[k].shape)}, {spec.arch} at input "
                                  f"{spec.input_size} needs {v}; "
                                  f"{hint or 'pass the right --input-size'}")
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


# ------------------------------------------------------------------------------------------------
# ResNet-50/101 trunks as today's self-supervised releases save them. A layout says where in the
# file the state dict sits and what stands before torchvision's key names; the trunk is then taken
# by renaming alone (each release below builds torchvision's ResNet, or one with its module names).

PART = "<part>"  # in a layout's path: DINO's --part (teacher or student)
TRUNK_KEY = re.compile(r"^(conv1|bn1|layer\d+)\.")  # torchvision's names for the trunk's own modules
LIST_ENTRIES = 12  # entries of a nested dict named in a refusal


@dataclass(frozen=True)
class Layout:
    name: str
    saved_by: str
    paths: tuple[tuple[str, ...], ...]  # where the state dict sits, tried in order; () is the top level
    prefixes: tuple[str, ...]  # what stands before torchvision's names; the one with most trunk keys is stripped
    fc_is_head: bool = True  # there ``fc.*`` is a projection head, dropped; else a ResNet fc -> top_layer
    marker: tuple[str, ...] = ()  # auto-detection also needs a key (prefix stripped) starting with one of these
    sequential: bool = False  # --strip-prefix: each prefix removed in turn where present, nothing else dropped


# SwAV and DeepCluster-v2 share facebookresearch/swav's ResNet: a DDP state dict, flat in the
# releases, under state_dict in training checkpoints, with projection_head and prototypes beside
_SWAV = Layout("swav", "SwAV and DeepCluster-v2, releases and checkpoint.pth.tar",
               (("state_dict",), ()), ("module.", ""), marker=("projection_head.", "prototypes."))
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout("torchvision", "torchvision state dicts, and releases behind module., backbone. or model.",
           (("state_dict",), ("model",), ()), ("", *RESNET_PREFIXES), fc_is_head=False),
    # VISSL's trainer saves the trunk at classy_state_dict/base_model/model/trunk, its modules in a
    # ModuleDict _feature_blocks with torchvision's names; its extra_scripts/convert_vissl_to_torchvision.py
    # also reads a model_state_dict entry, or the file itself, as the trunk
    Layout("vissl", "VISSL, model_final_checkpoint_phase*.torch",
           (("classy_state_dict", "base_model", "model", "trunk"), ("model_state_dict",), ()), ("_feature_blocks.",)),
    # DINO's main_dino.py saves student and teacher, each a MultiCropWrapper (backbone + head) that
    # DDP wraps when the network has BatchNorm, as a ResNet does; its eval_linear.py reads the teacher
    Layout("dino", "DINO, checkpoint.pth with teacher and student", ((PART,),), ("module.backbone.", "backbone.")),
    # MoCo's main_lincls.py keeps module.encoder_q.* (v1/v2) or module.base_encoder.* (v3) minus fc,
    # the embedding (v1) or projection MLP (v2, v3); v3's predictor and momentum encoder lie beside it
    Layout("moco", "MoCo v1/v2, checkpoint_*.pth.tar", (("state_dict",), ()), ("module.encoder_q.", "encoder_q.")),
    Layout("mocov3", "MoCo v3, checkpoint_*.pth.tar", (("state_dict",), ()),
           ("module.base_encoder.", "base_encoder.")),
    _SWAV, replace(_SWAV, name="deepclusterv2"),  # DeepCluster-v2: the same layout under its own name
    # ReSSL's ressl.py saves {"model": DDP state dict}; the trunk is encoder_q.net (torchvision names, no fc)
    Layout("ressl", "ReSSL, checkpoints/ressl-*.pth", (("model",), ()), ("module.encoder_q.net.", "encoder_q.net.")),
)}
# auto-detection: the layout finding the most trunk keys; on a tie the more specific, in this order
DETECT_ORDER = ("vissl", "dino", "ressl", "mocov3", "moco", "swav", "torchvision")
LAYOUT_CHOICES = ("auto", *LAYOUTS, "generic")


def key_path(text: str) -> tuple[str, ...]:
    """``--key``: entries separated by ``/`` (or by ``.`` when there is no ``/``); empty: the top level."""
    text = text.strip()
    if not text:
        return ()
    return tuple(p for p in text.split("/" if "/" in text else ".") if p)


def _show_path(path: tuple[str, ...]) -> str:
    return "/".join(printable(p, 60) for p in path) if path else "the top level"


def _show_key(path: tuple[str, ...]) -> str:
    return "--key " + "/".join(printable(p, 60) for p in path) if path else "the top level (no --key)"


def _entries(obj) -> str:
    """What a nested entry holds, bounded: its first keys, or its type."""
    if not isinstance(obj, dict):
        return f"a {type(obj).__name__}, not a dict"
    if not obj:
        return "an empty dict"
    names = [printable(k if isinstance(k, str) else repr(k), 60) for k in list(obj)[:LIST_ENTRIES]]
    more = f" (+{len(obj) - LIST_ENTRIES} more)" if len(obj) > LIST_ENTRIES else ""
    return "entries " + ", ".join(names) + more


def _tensor_dicts(obj, path=(), depth: int = 5, budget: list | None = None):
    """Paths of nested dicts that hold tensors (a bounded search, to suggest a --key)."""
    budget = [400] if budget is None else budget
    if not isinstance(obj, dict) or depth < 0 or budget[0] <= 0:
        return
    budget[0] -= len(obj)
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        yield path
        return
    for k, v in list(obj.items())[:LIST_ENTRIES * 4]:
        if isinstance(k, str) and isinstance(v, dict):
            yield from _tensor_dicts(v, (*path, k), depth - 1, budget)


def _lookup(obj, path: tuple[str, ...]):
    """(the entry at ``path``, None) or (None, index of the first step that is missing)."""
    here = obj
    for i, step in enumerate(path):
        if not isinstance(here, dict) or step not in here:
            return None, i
        here = here[step]
    return here, None


def _missing_step(src: Path, obj, path: tuple[str, ...], i: int, what: str) -> CheckpointError:
    at, _ = _lookup(obj, path[:i])
    found = [p for p, _ in zip(_tensor_dicts(obj), range(3))]
    hint = ("; tensors are under " + ", ".join(_show_key(p) for p in found)) if found else ""
    return CheckpointError(f"{src}: {what} {_show_path(path)} does not exist: {_show_path(path[:i])} has no "
                           f"entry {printable(path[i], 60)!r} ({_entries(at)}){hint}")


def _no_tensors(src: Path, obj, path: tuple[str, ...], at, what: str) -> CheckpointError:
    found = [p for p, _ in zip(_tensor_dicts(at, path), range(3))]
    hint = ("; tensors are under " + ", ".join(_show_key(p) for p in found)) if found else ""
    return CheckpointError(f"{src}: {what} {_show_path(path)} holds no tensors ({_entries(at)}){hint}")


@dataclass
class _Found:
    layout: Layout
    path: tuple[str, ...]
    sd: dict
    prefix: str | None  # the stripped prefix (None: --strip-prefix, applied in turn)
    count: int  # trunk keys found


def _resolve(layout: Layout, part: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(part if s == PART else s for s in p) for p in layout.paths)


def _rename(found: _Found, key: str) -> str | None:
    if found.layout.sequential:
        for p in found.layout.prefixes:
            key = key[len(p):] if key.startswith(p) else key
        return key
    return key[len(found.prefix):] if key.startswith(found.prefix) else None


def _find(obj, layout: Layout, part: str, trunk: set, detecting: bool = False) -> _Found | None:
    """Where ``layout`` puts the trunk in ``obj``: the first of its paths holding a dict, and the prefix
    under which most trunk keys are found; None when the path is absent or no trunk key is there."""
    for path in _resolve(layout, part):
        sd, missing = _lookup(obj, path)
        if missing is None and isinstance(sd, dict):
            break
    else:
        return None
    keys = [k for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)]
    if layout.sequential:
        found = _Found(layout, path, sd, None, 0)
        found.count = sum(1 for k in keys if _rename(found, k) in trunk)
        return found
    counts = {p: sum(1 for k in keys if k.startswith(p) and k[len(p):] in trunk) for p in layout.prefixes}
    prefix = max(counts, key=counts.get)  # ties: the layout's order
    if detecting and layout.marker and not any(k.startswith(prefix + m) for k in keys for m in layout.marker):
        return None
    return _Found(layout, path, sd, prefix, counts[prefix])


def _describe(found: _Found, arch: str) -> str:
    where = "the top level" if not found.path else _show_path(found.path)
    under = (f"under {printable(found.prefix, 60)!r}" if found.prefix else "with no prefix") \
        if found.prefix is not None else "after --strip-prefix"
    return f"{found.count} {arch} trunk keys {under} in {where}"


def locate_trunk(obj, src: Path, arch: str, trunk: set, layout: str = "auto", part: str | None = None,
                 key: str | None = None, strip: tuple[str, ...] = ()) -> tuple[_Found, str]:
    """The state dict holding the trunk and how to rename it, with the line that says so.

    ``layout`` is one of :data:`LAYOUT_CHOICES`; ``generic`` reads ``key`` (a :func:`key_path`) and
    strips ``strip``; ``auto`` tries every layout (:data:`DETECT_ORDER`) and takes the one that finds
    the most trunk keys."""
    if part is not None and layout not in ("auto", "dino"):
        raise UserError(f"--part {part} picks DINO's teacher or student; it needs --layout dino (or auto)")
    if layout != "generic" and (key is not None or strip):
        raise UserError(f"--key/--strip-prefix describe a layout of your own: use them with --layout generic "
                        f"(or leave --layout out), not with --layout {layout}")
    if layout == "generic":
        path = key_path(key or "")
        sd, missing = _lookup(obj, path)
        if missing is not None:
            raise _missing_step(src, obj, path, missing, "--key")
        if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
            raise _no_tensors(src, obj, path, sd, "--key")
        found = _find(obj, Layout("generic", "--key/--strip-prefix", (path,), tuple(strip), fc_is_head=False,
                                  sequential=True), "teacher", trunk)
        if found.count == 0:
            raise CheckpointError(f"{src}: no {arch} trunk key (conv1.weight, layer1.0.conv1.weight, ...) at "
                                  f"{_show_path(path)} after stripping {list(strip)} (keys there begin: "
                                  f"{_entries(sd)}); pass --strip-prefix for what stands before them")
        return found, f"generic (--key/--strip-prefix): {_describe(found, arch)}"
    if layout != "auto":
        lay = LAYOUTS[layout]
        found = _find(obj, lay, part or "teacher", trunk)
        if found is None or found.count == 0:
            paths = _resolve(lay, part or "teacher")
            for path in paths:
                at, missing = _lookup(obj, path)
                if missing is None:
                    break
            if missing is not None and len(paths) == 1:
                raise _missing_step(src, obj, paths[0], missing, f"the {layout} layout's state dict")
            where = ", ".join(_show_path(p) for p in paths)
            raise CheckpointError(f"{src}: no {arch} trunk key under {', '.join(repr(p) for p in lay.prefixes)} in "
                                  f"{where} ({_entries(at if missing is None else obj)}); is it a {lay.saved_by} "
                                  "file? --layout auto detects, --layout generic --key/--strip-prefix reads any")
        return found, f"{layout} ({lay.saved_by}), as given: {_describe(found, arch)}"
    found = [f for f in (_find(obj, LAYOUTS[n], part or "teacher", trunk, True) for n in DETECT_ORDER) if f]
    best = max(found, key=lambda f: f.count, default=None)  # max keeps the first of equals: DETECT_ORDER
    if best is None or best.count == 0:
        tops = [p for p, _ in zip(_tensor_dicts(obj), range(3))]
        where = ", ".join(_show_path(p) for p in tops) or "nowhere"
        raise CheckpointError(f"{src}: no {arch} trunk key (conv1.weight, layer1.0.conv1.weight, ...) found in "
                              f"any known layout ({', '.join(DETECT_ORDER)}; tensors are in {where}); is it a "
                              f"torchvision-layout {arch}? --layout generic --key PATH --strip-prefix P reads others")
    if part is not None and best.layout.name != "dino":
        raise UserError(f"--part {part} picks DINO's teacher or student, but {src} is not a DINO checkpoint "
                        f"(detected: {best.layout.name})")
    other = ""
    if best.layout.name == "dino":
        sibling = "student" if (part or "teacher") == "teacher" else "teacher"
        other = f"; {part or 'teacher'} taken (--part {sibling} for the other)" if sibling in obj else ""
    return best, (f"{best.layout.name} ({best.layout.saved_by}), detected: {_describe(best, arch)}{other}; "
                  "--layout NAME to choose another")


def _file_entries(obj, path: tuple[str, ...]) -> list[str]:
    """Everything beside the path to the state dict (optimizer, epoch, heads, args, ...), as dropped."""
    out, here = [], obj
    for i, step in enumerate(path):
        out += [f"(file entry) {_show_path((*path[:i], k if isinstance(k, str) else repr(k)))}"
                for k in here if k != step]
        here = here[step]
    return out


def from_torchvision_resnet(src: Path, arch: str, input_size: int = 224, *, layout: str = "auto",
                            part: str | None = None, key: str | None = None,
                            strip: tuple[str, ...] = ()) -> Conversion:
    """A torchvision-layout ResNet trunk from a release file of one of :data:`LAYOUTS` (or ``generic``:
    ``key`` and ``strip``; or ``auto``). In the torchvision and generic layouts a ResNet ``fc`` (one
    Linear on the 2,048-d pooled res5) becomes ``top_layer``; in the others ``fc`` is a projection
    head. Every other key (heads, a momentum encoder, queues, file entries) is dropped and listed;
    a trunk weight the architecture lacks, or one of the wrong shape, is refused."""
    if get_architecture(arch).family != "resnet":
        raise CheckpointError(f"--arch {arch} is not a ResNet; --from torchvision-resnet* imports resnet50/resnet101")
    obj = load_weights_file(src)
    trunk = set(_expected_shapes(ModelSpec(arch=arch, input_size=input_size)))
    found, line = locate_trunk(obj, src, arch, trunk, layout, part, key, tuple(strip))
    conv = Conversion(state_dict={}, spec=ModelSpec(arch=arch, input_size=input_size), layout_line=line)
    conv.dropped.extend(_file_entries(obj, found.path))
    origin: dict[str, str] = {}  # new name -> the file's
    renamed: dict = {}
    for old, t in found.sd.items():
        if not (isinstance(old, str) and isinstance(t, torch.Tensor)):
            conv.dropped.append(f"(not a tensor) {printable(old if isinstance(old, str) else repr(old), 80)}")
            continue
        new = _rename(found, old)
        if new is None or (found.layout.fc_is_head and new.startswith("fc.")):
            conv.dropped.append(old)
            continue
        if new in ("fc.weight", "fc.bias"):
            new = "top_layer." + new[len("fc."):]
        if new in renamed:  # two file keys strip to one name (--strip-prefix): refuse, never pick one
            raise CheckpointError(f"{src}: {printable(old, 80)} and {printable(origin[new], 80)} both become "
                                  f"{printable(new, 80)}; strip fewer prefixes")
        origin[new] = old
        renamed[new] = t
    top = renamed.get("top_layer.weight")
    if top is not None and not (top.dim() == 2 and top.shape[1] == get_architecture(arch).descriptor_dim
                                and "top_layer.bias" in renamed):
        top = None
    if top is None:  # not a ResNet fc: left out, like any other head
        for k in ("top_layer.weight", "top_layer.bias"):
            if k in renamed:
                renamed.pop(k)
                conv.dropped.append(origin.pop(k))
    conv1 = renamed.get("conv1.weight")
    sobel = "sobel.0.weight" in renamed and conv1 is not None and conv1.dim() == 4 and conv1.shape[1] == 2
    conv.spec = ModelSpec(arch=arch, sobel=sobel, batchnorm=True, input_size=input_size,
                          num_classes=_num_classes(top, "fc.weight", src))
    expected = _expected_shapes(conv.spec)
    for new in list(renamed):
        if new in expected:
            continue
        if TRUNK_KEY.match(new):  # e.g. layer3.6.* of a ResNet-101 read as a ResNet-50
            raise CheckpointError(f"{src}: {printable(origin[new], 80)} is a trunk weight {arch} does not have; "
                                  f"is it another depth (--from torchvision-resnet50 / torchvision-resnet101)?")
        conv.dropped.append(origin.pop(new))
        del renamed[new]
    conv.renamed = [(old, new) for new, old in origin.items() if new != old]
    conv.source_info = {"layout": found.layout.name, "prefix": found.prefix or None,
                        **({"key": _show_path(found.path)} if found.path else {}),
                        **({"strip_prefix": [printable(p, 80) for p in strip]} if strip else {})}
    return _finish(renamed, conv.spec, conv, src, hint=f"is it a {arch}?")


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

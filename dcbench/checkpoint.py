"""Checkpoint formats v1 and v2: the one contract between dc-train, converters and every transfer task.

A checkpoint is a directory::

    model.safetensors   weights only (no pickle), DeepCluster key layout (ResNets: torchvision's)
    meta.json           architecture, preprocessing, provenance, sha256 of model.safetensors
    train_state.pt      optional, trainer only: optimizer / RNG / assignments for an exact resume

Checkpoints from strangers are untrusted: weights are parsed by safetensors, and
``train_state.pt`` is only ever read with ``torch.load(weights_only=True)``. ``meta.json`` is the
author's data: every value is type- and range-checked before use (:func:`validate_meta`), and the
model it describes must fit in the (sha256-verified) weights file before any memory is allocated.
No checkpoint with a non-finite weight is ever written, and none is loaded.

Version 2 (written for ResNets) adds what version 1 assumed from the AlexNet/VGG shape: ``family``,
``taps`` (each probe point's name and output shape at the input size) and ``descriptor`` (what
dc-train clusters, and its width). AlexNet and VGG16 checkpoints are still written as version 1,
which every reader accepts unchanged. A version-2 ``taps``/``descriptor`` block is the author's
data: it must equal, name for name and shape for shape, what the architecture registry derives
for the checkpoint's arch and input size, or the checkpoint is refused; so none of its values
reaches a path, a table or an allocation.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

import dcbench
from dcbench.atomic import replace_dir_atomic
from dcbench.choices import MAX_INPUT_SIZE
from dcbench.errors import CheckpointError
from dcbench.models import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeepClusterNet,
    ModelSpec,
    conv_shapes,
    get_architecture,
    make_network,
)
from dcbench.provenance import git_sha, utc_now
from dcbench.text import printable

FORMAT_NAME = "dcbench-checkpoint"
FORMAT_VERSION = 1  # what AlexNet/VGG16 checkpoints are written as (minimal churn; examples stay valid)
FORMAT_VERSION_RESNET = 2  # ResNets: the meta names taps and descriptor (no fc6/fc7 to assume)
READ_VERSIONS = (1, 2)
WEIGHTS = "model.safetensors"
META = "meta.json"
TRAIN_STATE = "train_state.pt"
ORIGINS = ("dcbench-train", "deepcluster-release", "torchvision", "random")
MAX_META_BYTES = 1 << 20  # a real meta.json is a few KB
MAX_NAME = 200  # characters of a checkpoint name
MAX_CLASSES = 1_000_000  # top-layer rows (the thesis: 10,000 clusters)


def format_version_for(arch: str) -> int:
    return FORMAT_VERSION_RESNET if get_architecture(arch).family == "resnet" else FORMAT_VERSION


def tap_points(arch: str, input_size: int) -> dict[str, list[int]]:
    """The probe points of ``arch`` at ``input_size`` and their output shapes, from the registry
    (a dry run): conv1..conv5, fc6, fc7 for AlexNet/VGG16; conv1, res2..res5 for ResNets."""
    a = get_architecture(arch)
    shapes = conv_shapes(arch, input_size)
    taps = {name: list(shapes[i]) for name, i in zip(a.taps, a.probe_taps)}
    if a.family == "convfc":
        taps.update(fc6=[a.fc_width], fc7=[a.fc_width])
    return taps


def descriptor_block(arch: str) -> dict:
    a = get_architecture(arch)
    how = {"fc7-prerelu": "fc7 output before its ReLU",
           "gap-res5": "res5 (layer4) output, global average pooled"}[a.descriptor]
    return {"name": a.descriptor, "dim": a.descriptor_dim, "what": how}


@dataclass
class Checkpoint:
    model: DeepClusterNet
    meta: dict
    path: Path
    train_state: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name

    @property
    def sha256(self) -> str:
        return self.meta["model_sha256"]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: DeepClusterNet, *, origin: str, name: str | None = None,
                    epoch: int | None = None, num_clusters: int | None = None,
                    train_config: dict | None = None, data_fingerprint: str | None = None,
                    train_state: dict | None = None, source: str | None = None,
                    mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD) -> Path:
    """Write ``model`` (and optionally ``train_state``) as a checkpoint, atomically: format v1 for
    AlexNet/VGG16, v2 for ResNets (:func:`format_version_for`)."""
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    path = Path(os.path.abspath(path))  # "." has no name to default to, nor a sibling to write beside
    spec = model.spec
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"refusing to write {path}: non-finite weights in {len(bad)} tensor(s) "
                              f"(first: {bad[0]}); the previous checkpoint, if any, is kept")

    # Serialised in memory, written by Python: a full disk is then an OSError (one line), where
    # safetensors' and torch's own writers raise their own exception types.
    weights = safetensors_bytes(tensors, metadata={"format": FORMAT_NAME})
    version = format_version_for(spec.arch)
    meta = {
        "format": FORMAT_NAME,
        "format_version": version,
        "name": name or path.name,
        **asdict(spec),
        "feature_shape": list(model.feature_shape),
        **({"family": get_architecture(spec.arch).family, "taps": tap_points(spec.arch, spec.input_size),
            "descriptor": descriptor_block(spec.arch)} if version >= 2 else {}),
        "preprocessing": {"mean": list(mean), "std": list(std), "colour_order": "RGB",
                          "value_range": "[0, 1] then normalised", "input_size": spec.input_size},
        "num_clusters": num_clusters,
        "epoch": epoch,
        "train_config": train_config or {},
        "data_fingerprint": data_fingerprint,
        "origin": origin,
        "source": source,
        "model_sha256": hashlib.sha256(weights).hexdigest(),
        "code_version": dcbench.__version__,
        "git_sha": git_sha(),
        "created": utc_now(),
    }
    # The rules every reader applies, applied before writing: a file this writes is one its readers take.
    try:
        validate_meta(meta, Path(META))
    except CheckpointError as e:
        raise CheckpointError(f"refusing to write {path}: {str(e).removesuffix(_UNTRUSTED)}") from None
    train_state_bytes = None
    if train_state is not None:
        buf = io.BytesIO()
        torch.save(train_state, buf)
        train_state_bytes = buf.getbuffer()
        meta["train_state_sha256"] = hashlib.sha256(train_state_bytes).hexdigest()

    def write(tmp: Path) -> None:
        (tmp / WEIGHTS).write_bytes(weights)
        if train_state_bytes is not None:
            (tmp / TRAIN_STATE).write_bytes(train_state_bytes)
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return replace_dir_atomic(path, write, replaceable=is_checkpoint_dir, kind="checkpoint")


def is_checkpoint_dir(path: Path) -> bool:
    """A folder holding a checkpoint's files and nothing else: the only kind a checkpoint write may
    replace (anything more in it is someone else's, and replacing the folder would delete it)."""
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return False
    return META in names and names <= {WEIGHTS, META, TRAIN_STATE}


def read_meta(path: str | os.PathLike) -> dict:
    """Read and check ``meta.json`` and the weights' sha256, without building a model."""
    path = Path(path)
    if not path.exists():
        old = path.with_name(path.name + ".old")
        if (old / META).is_file():
            raise CheckpointError(f"checkpoint {path} does not exist, but {old} holds the last complete "
                                  f"version (a write was interrupted); rename it to {path.name}")
        raise CheckpointError(f"checkpoint {path} does not exist; pass a checkpoint directory "
                              "written by dc-train or dc-convert")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory; a checkpoint is a folder with "
                              f"{WEIGHTS} and {META} (import other files with dc-convert)")
    meta_path, weights = path / META, path / WEIGHTS
    if not meta_path.is_file():
        if (path / "checkpoint" / META).is_file():   # a dc-train output folder, not its checkpoint
            raise CheckpointError(f"{path} is a training run's folder, not a checkpoint; did you mean "
                                  f"{path / 'checkpoint'}?")
        raise CheckpointError(f"{meta_path} is missing; this folder is not a dcbench checkpoint "
                              "(import foreign weights with dc-convert)")
    size = meta_path.stat().st_size
    if size > MAX_META_BYTES:
        raise CheckpointError(f"{meta_path} is {size} bytes, more than the {MAX_META_BYTES} a checkpoint's "
                              "meta.json may have; the checkpoint is corrupt")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is not valid JSON ({e}); the checkpoint is corrupt") from None
    except RecursionError:
        raise CheckpointError(f"{meta_path} is nested too deeply to be a checkpoint's meta.json; "
                              "the checkpoint is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{meta_path} does not describe a {FORMAT_NAME}; "
                              "import foreign weights with dc-convert")
    version = meta.get("format_version")
    if not _is_int(version) or version not in READ_VERSIONS:
        shown = repr(version) if len(repr(version)) <= 20 else repr(version)[:20] + "..."
        raise CheckpointError(f"{meta_path} has format version {shown}, this dcbench "
                              f"({dcbench.__version__}) reads versions {', '.join(map(str, READ_VERSIONS))}; "
                              "use a matching dcbench")
    missing = [k for k in ("arch", "sobel", "batchnorm", "input_size", "num_classes", "model_sha256")
               if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_path} lacks {', '.join(missing)}; the checkpoint is corrupt")
    validate_meta(meta, meta_path)
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; the checkpoint is incomplete")
    if sha256_file(weights) != meta["model_sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 in {META}; the file is corrupt or "
                              "was modified; re-copy or re-create the checkpoint")
    return meta


def load_checkpoint(path: str | os.PathLike, *, with_train_state: bool = False,
                    map_location: str = "cpu") -> Checkpoint:
    """Verify and load a checkpoint. Every failure is one :class:`CheckpointError` line."""
    path = Path(path)
    meta = read_meta(path)
    try:
        spec = ModelSpec(arch=meta["arch"], sobel=bool(meta["sobel"]), batchnorm=bool(meta["batchnorm"]),
                         input_size=int(meta["input_size"]), num_classes=int(meta["num_classes"] or 0))
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{path / META} has an invalid model description ({e})") from None
    _check_against_header(spec, path / WEIGHTS)
    try:
        tensors = load_file(str(path / WEIGHTS), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path / WEIGHTS} is not a readable safetensors file ({e})") from None
    bad = nonfinite_tensors(tensors)
    if bad:
        raise CheckpointError(f"non-finite weights in {path / WEIGHTS}: {len(bad)} tensor(s) hold NaN or inf "
                              f"(first: {bad[0]}); the training diverged or the file was made so; "
                              "use an earlier checkpoint")
    model = make_network(spec)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path / WEIGHTS} does not fit {spec.arch} at input "
                              f"{spec.input_size}: {first}") from None
    train_state = None
    if with_train_state and (path / TRAIN_STATE).is_file():
        train_state = load_train_state(path, meta)
    return Checkpoint(model=model, meta=meta, path=path, train_state=train_state)


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _check_against_header(spec: ModelSpec, weights: Path) -> None:
    """The model meta.json describes must have exactly the tensors (names and shapes) the weights
    file's header lists, checked before either is allocated: a stranger's meta.json cannot make
    us build a model larger than the (sha256-verified) file."""
    with torch.device("meta"):  # shapes only, no memory
        expected = {k: tuple(v.shape) for k, v in make_network(spec).state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({e})") from None
    if set(expected) != set(found):
        extra, lacking = sorted(set(found) - set(expected))[:3], sorted(set(expected) - set(found))[:3]
        raise CheckpointError(f"{weights} does not fit {spec.arch} (sobel={spec.sobel}, "
                              f"input {spec.input_size}): missing {lacking}, unexpected {extra}")
    wrong = [k for k in expected if expected[k] != found[k]]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{weights} does not fit {spec.arch} at input {spec.input_size}: {k} is "
                              f"{list(found[k])} in the file, {list(expected[k])} in the model {META} describes")


_UNTRUSTED = "; the checkpoint is corrupt or not from a trusted source"


def _bad(meta_path: Path, key: str, value, want: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:60] + "..."
    return CheckpointError(f"{meta_path}: {key} is {printable(shown, 80)}, expected {want}{_UNTRUSTED}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_meta(meta: dict, meta_path: Path) -> None:
    """Type and range of every meta.json value the code uses (the file is not covered by a hash)."""
    def check(key, ok: bool, want: str) -> None:
        if not ok:
            raise _bad(meta_path, key, meta.get(key), want)

    check("arch", meta.get("arch") in ARCHS, f"one of {', '.join(ARCHS)}")
    check("sobel", isinstance(meta.get("sobel"), bool), "true or false")
    check("batchnorm", isinstance(meta.get("batchnorm"), bool), "true or false")
    size = meta.get("input_size")
    check("input_size", _is_int(size) and 32 <= size <= MAX_INPUT_SIZE, f"an integer in [32, {MAX_INPUT_SIZE}]")
    n = meta.get("num_classes")
    check("num_classes", n is None or (_is_int(n) and 0 <= n <= MAX_CLASSES), f"an integer in [0, {MAX_CLASSES}]")
    sha = meta.get("model_sha256")
    check("model_sha256", isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None,
          "64 lower-case hex digits")
    name = meta.get("name")
    check("name", name is None or (isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable()),
          f"a printable string of at most {MAX_NAME} characters")
    for key in ("epoch", "num_clusters"):
        v = meta.get(key)
        check(key, v is None or (_is_int(v) and 0 <= v <= 10**9), "an integer in [0, 1e9] or null")
    for key in ("origin", "source", "code_version", "git_sha", "created", "data_fingerprint", "format"):
        v = meta.get(key)
        check(key, v is None or (isinstance(v, str) and len(v) <= 4096), "a string of at most 4096 characters")
    check("train_config", isinstance(meta.get("train_config", {}), dict), "an object")
    fs = meta.get("feature_shape")
    check("feature_shape", fs is None or (isinstance(fs, list) and len(fs) == 3
                                          and all(_is_int(d) and 0 < d <= 10**6 for d in fs)),
          "three positive integers")
    _validate_v2(meta, meta_path)
    pre = meta.get("preprocessing")
    check("preprocessing", pre is None or isinstance(pre, dict), "an object")
    for key in ("mean", "std"):
        v = (pre or {}).get(key)
        ok = v is None or (isinstance(v, list) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) <= 1000
            and (key == "mean" or x > 0) for x in v))
        if not ok:
            raise _bad(meta_path, f"preprocessing.{key}", v,
                       "three finite numbers" + (" above 0" if key == "std" else ""))


def _validate_v2(meta: dict, meta_path: Path) -> None:
    """Version 2's ``family``/``taps``/``descriptor`` must be exactly the registry's for the arch and
    input size (checked after those two are); version 1 cannot describe a trunk without fc6/fc7."""
    arch, version = meta["arch"], meta["format_version"]
    family = get_architecture(arch).family
    if version == 1:
        if family != "convfc":
            raise _bad(meta_path, "format_version", 1, f"2 for a {arch} (format v1 holds AlexNet/VGG16 only)")
        return
    for key in ("family", "taps", "descriptor"):
        if key not in meta:
            raise CheckpointError(f"{meta_path} lacks {key} (required by format version 2); the checkpoint is corrupt")
    if meta["family"] != family:
        raise _bad(meta_path, "family", meta["family"], f"{family!r} for {arch}")
    taps = meta["taps"]
    expected = tap_points(arch, meta["input_size"])
    if not isinstance(taps, dict) or list(taps) != list(expected):
        shown = list(taps)[:8] if isinstance(taps, dict) else taps
        raise _bad(meta_path, "taps", shown, f"the tap points of {arch}: {', '.join(expected)}")
    wrong = [k for k in expected if taps[k] != expected[k]]
    if wrong:
        raise _bad(meta_path, f"taps.{wrong[0]}", taps[wrong[0]],
                   f"{expected[wrong[0]]} ({arch} at input {meta['input_size']})")
    want = descriptor_block(arch)
    if meta["descriptor"] != want:
        raise _bad(meta_path, "descriptor", meta["descriptor"], f"{want} for {arch}")


def recover_interrupted_write(path: str | os.PathLike) -> str | None:
    """Bring back ``path`` from ``path.old`` when a replacement was interrupted between its two
    renames, and delete this path's temporaries left by a killed write. Returns what was done."""
    path = Path(path)
    done = []
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / META).is_file():
        os.rename(old, path)
        done.append(f"restored {path} from {old.name} (an earlier write was interrupted)")
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
                done.append(f"removed the unfinished write {tmp.name}")
    return "; ".join(done) or None


def train_state_problem(ts) -> str | None:
    """Why ``dc-train --resume`` cannot take up this train state (loaded with weights_only, it can
    still hold anything plain), or None: the one rule for the trainer and for dc-inspect."""
    if not isinstance(ts, dict):
        return f"it holds a {type(ts).__name__}, not the trainer's state"
    missing = [k for k in ("epoch", "optimizer", "assignment_index", "assignment") if k not in ts]
    if missing:
        return f"it lacks {', '.join(missing)}"
    epoch = ts["epoch"]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and 0 <= epoch <= 10**9):
        return f"epoch is {printable(repr(epoch), 40)}, not an epoch number"
    if not isinstance(ts["optimizer"], dict):
        return "optimizer is not an optimizer state"
    idx, lab = ts["assignment_index"], ts["assignment"]
    if not (isinstance(idx, torch.Tensor) and isinstance(lab, torch.Tensor) and idx.dim() == lab.dim() == 1
            and idx.shape == lab.shape and not idx.is_floating_point() and not lab.is_floating_point()):
        return "assignment_index / assignment are not two integer vectors of one length"
    return None


def load_train_state(path: Path, meta: dict) -> dict:
    state_path = path / TRAIN_STATE
    if meta.get("train_state_sha256") and sha256_file(state_path) != meta["train_state_sha256"]:
        raise CheckpointError(f"{state_path} does not match the sha256 in {META}; delete it to start "
                              "training from the weights alone, or restore it")
    try:
        # weights_only: tensors and plain containers only, so a hostile file cannot run code.
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{state_path} cannot be read safely ({first[:200]})") from None


@dataclass(frozen=True)
class Preprocessing:
    """How the checkpoint's inputs were normalised: RGB in [0, 1], minus ``mean``, over ``std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    colour_order: str


COLOUR_ORDERS = ("RGB",)  # every writer (dc-train, dc-convert) stores RGB; anything else is refused


def preprocessing(meta: dict, where: str = META) -> Preprocessing:
    """The one reader of meta.json's ``preprocessing`` block. Nothing falls back to ImageNet
    constants: a checkpoint that does not say how it was normalised is refused in one line
    (evaluating it with a guessed normalisation would give a plausible, wrong number)."""
    pre = meta.get("preprocessing") if isinstance(meta, dict) else None
    fix = "re-create the checkpoint with dc-train or dc-convert, which record it"
    if not isinstance(pre, dict):
        raise CheckpointError(f"{where}: no 'preprocessing' block (mean, std, colour_order); {fix}")
    values = {}
    for key in ("mean", "std"):
        try:
            v = tuple(float(x) for x in pre[key])
        except (KeyError, TypeError, ValueError):
            v = ()
        if len(v) != 3 or not all(math.isfinite(x) for x in v) or (key == "std" and min(v) <= 0):
            raise CheckpointError(f"{where}: preprocessing.{key} must be 3 finite numbers"
                                  f"{' > 0' if key == 'std' else ''}; {fix}")
        values[key] = v
    order = pre.get("colour_order")
    if order not in COLOUR_ORDERS:
        raise CheckpointError(f"{where}: preprocessing.colour_order must be one of {', '.join(COLOUR_ORDERS)}, "
                              f"not {str(order)[:20]!r}; {fix}")
    return Preprocessing(values["mean"], values["std"], order)


def describe(meta: dict, path: Path, train_state=None) -> str:
    """A human summary, as ``dc-inspect`` prints it: every value read from the file in printable
    form (a name or an origin can hold terminal escapes or a newline that forges a line).
    ``train_state``: the loaded train_state.pt, if any, judged as ``dc-train --resume`` judges it."""
    p = printable
    lines = [
        f"checkpoint   {p(path, 1000)}",
        f"format       {p(meta['format'])} v{meta['format_version']}",
        f"name         {p(meta.get('name'))}",
        f"arch         {meta['arch']}  batchnorm={meta['batchnorm']}  sobel={meta['sobel']}",
        f"input        {meta['input_size']}px  {'res5' if meta.get('family') == 'resnet' else 'conv5'} output "
        f"{meta.get('feature_shape')}",
        f"top layer    {meta['num_classes'] or 'none'}  clusters={meta.get('num_clusters')}",
        f"origin       {p(meta.get('origin'))}  {p(meta.get('source') or '', 1000)}".rstrip(),
        f"epoch        {meta.get('epoch')}",
        f"data         {p(meta.get('data_fingerprint'))}",
        f"sha256       {meta['model_sha256']}",
        f"code         dcbench {p(meta.get('code_version'))}  git {p(meta.get('git_sha'))}",
        f"created      {p(meta.get('created'))}",
    ]
    if meta.get("taps"):
        lines.append("taps         " + "  ".join(f"{k} {'x'.join(map(str, v))}" for k, v in meta["taps"].items()))
        lines.append(f"descriptor   {meta['descriptor']['name']} ({meta['descriptor']['dim']}-d: "
                     f"{meta['descriptor']['what']})")
    pre = meta.get("preprocessing") or {}
    if pre:
        lines.append(f"preprocess   mean={pre.get('mean')} std={pre.get('std')} {p(pre.get('colour_order'))}")
    if (path / TRAIN_STATE).is_file():
        problem = "not loaded" if train_state is None else train_state_problem(train_state)
        if problem is None and meta.get("origin") != "dcbench-train":
            problem = f"origin is {p(meta.get('origin'))}, not dcbench-train"
        lines.append(f"train state  {TRAIN_STATE} present, " + (
            "resumable (dc-train --resume, with the settings of its train_config)" if problem is None
            else f"not resumable: {problem}"))
    return "\n".join(lines)

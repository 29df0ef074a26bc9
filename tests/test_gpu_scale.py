"""The GPU-scale paths on the CPU: the torch clustering engine against faiss / pca_whiten, the fast loaders'
crop geometry against torchvision's, --precision, the diagnostic sample, and their bad input.

The CUDA paths use this same code on another device; they are not run here (no GPU).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tiny_runs  # tests/tiny_runs.py
import torch
import torchvision.transforms as T
from PIL import Image

from dcbench import imageload as IL
from dcbench.checkpoint import load_checkpoint
from dcbench.errors import UserError, run_cli
from dcbench.knn_graph import knn, knn_torch
from dcbench.train import cli as train_cli
from dcbench.train import clustering as C
from dcbench.train.config import make_config
from dcbench.train.diagnostics import diag_rows
from dcbench.train.loop import train
from dcbench.train.run_state import read_log

faiss = pytest.importorskip("faiss")


def _spectrum_data(n, d=256, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.05, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return ((rng.standard_normal((n, d)) * scales) @ q.T + 3.0).astype(np.float32)


def _blobs(n=3000, d=16, centres=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)) * 3
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# clustering engine
@pytest.mark.parametrize("n", [2000, 120])  # covariance path (n >= d) and Gram path (n < d)
def test_torch_pca_equals_pca_whiten_up_to_sign(n, one_thread):
    x = _spectrum_data(n)
    ref = C.pca_whiten(x, 32)
    ours = C.pca_whiten_torch(torch.from_numpy(x), 32, chunk=500).numpy()
    assert ours.shape == ref.shape
    sign = np.sign((ours * ref).sum(axis=0))
    assert np.abs(ours * sign - ref).max() <= 1e-3


def test_torch_pca_reads_an_fp16_buffer(one_thread):
    # The GPU keeps features in fp16; the only extra error is that rounding of the input.
    x = _spectrum_data(2000)
    ref = C.pca_whiten(x.astype(np.float16).astype(np.float32), 32)
    ours = C.pca_whiten_torch(torch.from_numpy(x).half(), 32, chunk=700).numpy()
    sign = np.sign((ours * ref).sum(axis=0))
    assert np.abs(ours * sign - ref).max() <= 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_kmeans_objective_within_1pct_of_faiss(seed, one_thread):
    # What DeepCluster clusters: PCA-whitened, L2-normalised features with more structure than k.
    # (On a few well-separated blobs Lloyd's local minima differ by tens of % between any two
    # seeds, faiss against faiss included, so 1% would compare initialisations, not engines.)
    x = C.pca_whiten(_blobs(n=4000, d=64, centres=400, seed=seed), 32)
    lf, _ = C.kmeans(x, 50, niter=20, seed=seed)
    lt, obj = C.kmeans_torch(torch.from_numpy(x), 50, niter=20, seed=seed, chunk=1000)
    of, ot = C.kmeans_objective(x, lf), C.kmeans_objective(x, lt)
    assert abs(ot - of) / of <= 0.01
    assert np.bincount(lt, minlength=50).min() >= 1
    # The reported objective is the final assignment's (to the last centroids): at least the partition's.
    assert obj >= ot * (1 - 1e-5)


def test_torch_kmeans_is_deterministic_and_never_leaves_a_cluster_empty(one_thread):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.01, (40, 8)) for c in (0, 5, 10)]).astype(np.float32)
    x[:30] = x[0]  # duplicates: Lloyd alone leaves centroids empty
    a, _ = C.kmeans_torch(torch.from_numpy(x), 12, seed=3)
    b, _ = C.kmeans_torch(torch.from_numpy(x), 12, seed=3)
    assert np.array_equal(a, b)
    assert (np.bincount(a, minlength=12) > 0).all()
    with pytest.raises(UserError, match="at least as many images"):
        C.kmeans_torch(torch.from_numpy(x[:5]), 12)


def test_knn_torch_matches_faiss_knn(one_thread):
    x = _blobs(n=800)
    d1, i1 = knn(x, 10)
    d2, i2 = knn_torch(torch.from_numpy(x), 10, chunk=300)
    assert (i1 == i2).mean() > 0.99 and np.abs(d1 - d2).max() < 1e-4
    assert not (i2 == np.arange(800)[:, None]).any()


def test_cluster_engine_resolution_and_faiss_gpu_refusal(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(C, "faiss_gpu_available", lambda: False)
    assert C.resolve_engine("auto", cpu) == "faiss"
    assert C.resolve_engine("auto", cuda) == "torch"
    assert C.resolve_engine("faiss", cuda, faiss_gpu=False) == "faiss"  # --no-faiss-gpu: faiss on the CPU
    with pytest.raises(UserError) as e:
        C.resolve_engine("faiss", cuda)
    msg = str(e.value)
    assert "\n" not in msg and "--cluster-engine torch" in msg and "--no-faiss-gpu" in msg
    monkeypatch.setattr(C, "faiss_gpu_available", lambda: True)
    assert C.resolve_engine("auto", cuda) == "faiss"


# ---------------------------------------------------------------------------------------------
# loaders
def _jpeg(path: Path, w: int, h: int, seed: int = 0) -> str:
    """A textured JPEG: a wrong crop box shows up as a large pixel difference."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8))
    a = np.asarray(base.resize((w, h), Image.BICUBIC)).astype(int) + rng.integers(-8, 9, (h, w, 3))
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


TV_TRAIN = T.Compose([T.RandomResizedCrop(64, scale=(0.08, 1.0)), T.RandomHorizontalFlip(), T.PILToTensor()])


def _tv(path, seed):
    torch.manual_seed(seed)
    return TV_TRAIN(Image.open(path).convert("RGB"))


def _ours(fn, path, seed):
    torch.manual_seed(seed)
    return fn(path)


def test_draft_crop_is_torchvision_exactly_when_no_reduction_applies(tmp_path):
    path = _jpeg(tmp_path / "a.jpg", 100, 90)  # boxes < 2x the 64-px output: full decode
    for seed in range(30):
        assert torch.equal(_ours(IL.RandomCrop(64), path, seed), _tv(path, seed))
    centre_tv = T.Compose([T.Resize(73), T.CenterCrop(64), T.PILToTensor()])(Image.open(path).convert("RGB"))
    assert torch.equal(IL.CentreCrop(73, 64)(path), centre_tv)


def test_draft_crop_keeps_torchvisions_box_on_reduced_decodes(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "big.jpg", 800, 600)
    factors = []
    real = IL._draft_factor
    monkeypatch.setattr(IL, "_draft_factor", lambda *a: factors.append(real(*a)) or factors[-1])
    same, other = [], []
    for seed in range(40):
        ours = _ours(IL.RandomCrop(64), path, seed).float()
        same.append((ours - _tv(path, seed).float()).abs().mean().item())
        other.append((ours - _tv(path, seed + 1000).float()).abs().mean().item())
    assert max(factors) >= 4 and sum(f > 1 for f in factors) >= 20  # the reduced decode was used
    # Same RNG draw -> same box: within a few grey levels of torchvision; another draw is far off.
    assert np.mean(same) < 3 and max(same) < 6
    assert np.mean(other) > 5 * np.mean(same)
    # Centre crop decoded at 1/8 (600 / 8 >= 73): DCT scaling filters differently from an antialiased
    # resize, a few grey levels on this noisy texture; a one-pixel shift of the crop costs more.
    tv = T.Compose([T.Resize(73), T.CenterCrop(64), T.PILToTensor()])(Image.open(path).convert("RGB")).float()
    ours = IL.CentreCrop(73, 64)(path).float()
    assert (ours - tv).abs().mean() < 5
    assert (ours[:, :, 1:] - tv[:, :, :-1]).abs().mean() > (ours - tv).abs().mean()


def test_batched_decode_path_on_cpu_draws_torchvisions_boxes(tmp_path):
    paths = [_jpeg(tmp_path / f"{i}.jpg", 200 + 40 * i, 150 + 30 * i, seed=i) for i in range(4)]
    # A header that parses (the worker draws its box) over truncated data (the decoder fails).
    (tmp_path / "bad.jpg").write_bytes(Path(paths[0]).read_bytes()[:700])
    fn = IL.JpegBytes(64, (0.08, 1.0))
    diffs = []
    for seed in range(8):
        items, refs = [], []
        for k, p in enumerate(paths):
            items.append((_ours(fn, p, seed * 10 + k), k))
            refs.append(_tv(p, seed * 10 + k))
        items.insert(2, (fn(str(tmp_path / "bad.jpg")), 9))
        datas, params, tags = IL.collate_bytes(items + [None])
        x, keep = IL.decode_batch(datas, params, 64, torch.device("cpu"))
        assert keep.tolist() == [True, True, False, True, True] and tags[keep].tolist() == [0, 1, 2, 3]
        diffs += [(x[i].float() - r.float()).abs().mean().item() for i, r in enumerate(refs)]
    assert np.mean(diffs) < 3 and max(diffs) < 6
    cfn = IL.JpegBytes(64, None, resize=73)
    datas, params, _ = IL.collate_bytes([(cfn(paths[3]), 0)])
    x, _ = IL.decode_batch(datas, params, 64, torch.device("cpu"), centre=True)
    tv = T.Compose([T.Resize(73), T.CenterCrop(64), T.PILToTensor()])(Image.open(paths[3]).convert("RGB"))
    assert (x[0].float() - tv.float()).abs().mean() < 3


def _decoded_batch(n=40, seed=0):
    """Decoded-image stand-ins of many sizes (60-400 px, so boxes are up- and downscaled), with a
    random-sized box and a centre-crop geometry each, every flip code in turn."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    imgs, boxes, centres = [], [], []
    for b in range(n):
        h, w = (int(v) for v in rng.integers(60, 400, 2))
        noise = torch.from_numpy(rng.integers(0, 256, (1, 3, h, w))).float()
        imgs.append(torch.nn.functional.avg_pool2d(noise, 3, 1, 1)[0].to(torch.uint8))
        boxes.append([*T.RandomResizedCrop.get_params(imgs[-1], [0.08, 1.0], [3 / 4, 4 / 3]), b % 3])
        centres.append([*IL.centre_geometry(w, h, 73, 64), b % 3])
    return imgs, boxes, centres


@pytest.mark.parametrize("centre", [False, True], ids=["random-sized", "resize-geometry"])
def test_packed_crop_equals_the_per_image_interpolate_up_to_rounding(centre):
    imgs, boxes, centres = _decoded_batch()
    params = centres if centre else boxes
    ref, _ = IL.crop_batch(imgs, torch.tensor(params), 64, torch.device("cpu"), centre=centre, packed=False)
    for budget in (IL.PACK_PIXELS, 1):  # one group; one group per image
        out = IL.crop_packed(imgs, params, 64, torch.device("cpu"), centre=centre, budget=budget)
        diff = (out.int() - ref.int()).abs()
        assert out.shape == ref.shape and out.dtype == torch.uint8
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3  # float rounding only (measured: 1.5e-5)


def test_packed_crop_keeps_the_order_and_skips_unreadable_images():
    imgs, boxes, _ = _decoded_batch(6)
    with_bad = imgs[:2] + [None] + imgs[2:]
    params = torch.tensor(boxes[:2] + [[0, 0, 1, 1, 0]] + boxes[2:])
    x, keep = IL.crop_batch(with_bad, params, 64, torch.device("cpu"), packed=True)
    ref, _ = IL.crop_batch(imgs, torch.tensor(boxes), 64, torch.device("cpu"), packed=False)
    assert keep.tolist() == [True, True, False, True, True, True, True]
    assert (x.int() - ref.int()).abs().max() <= 1
    assert IL.crop_packed([], [], 64, torch.device("cpu")).shape == (0, 3, 64, 64)


def test_pack_groups_stay_within_the_budget_and_cover_every_image_once():
    rng = np.random.default_rng(1)
    hs, ws = rng.integers(50, 2000, 300).tolist(), rng.integers(50, 2000, 300).tolist()
    budget = 20 * 500 * 500
    groups = IL._pack_groups(hs, ws, budget)
    assert sorted(b for g in groups for b in g) == list(range(300))
    for g in groups:
        padded = len(g) * max(hs[b] for b in g) * max(ws[b] for b in g)
        assert padded <= budget or len(g) == 1


def test_flip_codes_of_the_packed_crop_mirror_the_unflipped_crop():
    imgs, boxes, _ = _decoded_batch(3)
    box = [b[:4] for b in boxes]
    plain, lr, tb = (IL.crop_packed(imgs, [b + [code] for b in box], 64, torch.device("cpu")) for code in (0, 1, 2))
    assert torch.equal(lr, plain.flip(-1)) and torch.equal(tb, plain.flip(-2))


def test_normalise_is_totensor_then_normalize_bit_for_bit():
    x = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8)
    ref = torch.stack([T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(
        T.ToTensor()(Image.fromarray(im.permute(1, 2, 0).numpy()))) for im in x])
    assert torch.equal(IL.normalise(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ref)


def test_nvjpeg_without_cuda_falls_back_with_one_line(capsys):
    assert IL.resolve_loader("nvjpeg", torch.device("cpu")) == "draft"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--loader nvjpeg needs CUDA" in err[0]
    assert IL.resolve_loader("nvjpeg", torch.device("cuda")) == "nvjpeg"


# ---------------------------------------------------------------------------------------------
# dc-train: --precision, engines, loaders, diagnostics, bad input
tiny, _weights = tiny_runs.tiny, tiny_runs.weights


@pytest.mark.slow
def test_draft_and_torchvision_loaders_train_identically_and_precision_is_recorded(tiny_data, tmp_path):
    train(tiny(tiny_data, tmp_path / "tv", loader="torchvision"))
    train(tiny(tiny_data, tmp_path / "draft"))
    a, b = _weights(tmp_path / "tv"), _weights(tmp_path / "draft")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((tmp_path / "draft" / "config.json").read_text())["config"]
    assert cfg["precision"] == "fp32" and cfg["cluster_engine"] == "faiss" and cfg["loader"] == "draft"
    train(tiny(tiny_data, tmp_path / "bf16", precision="bf16"))
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["config"]["precision"] == "bf16"
    meta = load_checkpoint(tmp_path / "bf16" / "checkpoint").meta
    assert meta["train_config"]["precision"] == "bf16"
    assert all(np.isfinite(r["loss"]) for r in read_log(tmp_path / "bf16"))
    # Precision changes the training: resuming with another one is refused.
    with pytest.raises(UserError, match="precision"):
        train(tiny(tiny_data, tmp_path / "bf16", precision="fp32", epochs=2))


@pytest.mark.slow
def test_torch_engine_trains_kmeans_and_pic(tiny_data, tmp_path):
    for clustering in ("kmeans", "pic"):
        out = tmp_path / clustering
        train(tiny(tiny_data, out, cluster_engine="torch", clustering=clustering, epochs=2))
        log = read_log(out)
        assert [r["epoch"] for r in log] == [1, 2] and all(r["empty"] == 0 for r in log)
        assert json.loads((out / "config.json").read_text())["config"]["cluster_engine"] == "torch"


def test_batched_decode_path_in_the_feature_stage_on_cpu(tiny_data, one_thread):
    from dcbench.datasets import ImageFolder
    from dcbench.models import build_model
    from dcbench.train.features import compute_features
    from dcbench.train.feed import crop_loaders

    cfg = tiny(tiny_data, "unused", input_size=64)
    ds = ImageFolder(tiny_data)
    model = build_model("alexnet", sobel=True, input_size=64, num_classes=4, seed=0)
    items = np.arange(0, 48, 3)
    feats = {}
    for loader in ("draft", "nvjpeg"):  # nvjpeg's batched decode_jpeg, here on the CPU
        c = dataclasses.replace(cfg, loader=loader)
        _, centre = crop_loaders(c, loader)
        f, pos = compute_features(model, ds, items, np.arange(len(items)), centre, c, torch.device("cpu"), 0, False)
        assert pos.tolist() == list(range(len(items)))
        feats[loader] = f
    cos = torch.nn.functional.cosine_similarity(feats["draft"], feats["nvjpeg"], dim=1)
    assert cos.min() > 0.99


@pytest.mark.slow
def test_diagnostic_sample_is_fixed_deterministic_and_logged(tiny_data, tmp_path):
    prio = np.random.default_rng([1, 10**6 + 1]).permutation(100)
    subset = np.arange(0, 100, 2)
    a = diag_rows(prio, subset, 10)
    assert np.array_equal(a, diag_rows(prio, subset, 10)) and len(a) == 10 and np.all(np.diff(a) > 0)
    assert len(diag_rows(prio, subset, 0)) == 50 and len(diag_rows(prio, subset, 80)) == 50
    # Algorithm 2: another subset keeps the sampled images it still contains.
    other = np.arange(0, 100, 1)
    assert set(subset[a]) <= set(other[diag_rows(prio, other, 20)])
    runs = []
    for name in ("a", "b"):
        train(tiny(tiny_data, tmp_path / name, diag_sample=20, epochs=2))
        runs.append(read_log(tmp_path / name))
    for r1, r2 in zip(*runs):
        assert r1["diag_sample"] == 20
        assert (r1["nmi_labels"], r1["ratio_edge_intra_class"]) == (r2["nmi_labels"], r2["ratio_edge_intra_class"])


def _cli(args, capsys):
    rc = run_cli(train_cli.main, args)
    return rc, capsys.readouterr().err.strip().splitlines()


def test_unknown_precision_engine_or_loader_one_line_exit_2(capsys):
    for flag, value in (("--precision", "fp16"), ("--cluster-engine", "cuml"), ("--loader", "dali")):
        rc, err = _cli([flag, value], capsys)
        assert rc == 2 and len(err) == 1 and flag in err[0]
    with pytest.raises(UserError, match="--precision"):
        make_config(precision="fp8")
    rc, err = _cli(["--cluster-chunk", "0"], capsys)
    assert rc == 2 and len(err) == 1 and "--cluster-chunk" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage,target", [("k-means", "cluster"), ("PCA-whitening", "pca_whiten_torch")])
def test_gpu_oom_in_clustering_names_stage_and_flag_keeps_checkpoint(tiny_data, tmp_path, capsys, monkeypatch,
                                                                     stage, target):
    import dcbench.train.loop as L

    out = tmp_path / "oom"
    args = ["--data", str(tiny_data), "--out", str(out), "--scale", "smoke", "--k", "4", "--pca-dim", "8",
            "--batch-size", "16", "--steps-per-epoch", "2", "--seed", "1", "--quiet", "--cluster-engine", "torch"]
    assert _cli(args + ["--epochs", "1"], capsys)[0] == 0
    good = _weights(out)

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(L, target, oom)
    rc, err = _cli(args + ["--epochs", "2"], capsys)
    assert rc == 2 and len(err) == 1
    assert stage in err[0] and "--cluster-chunk" in err[0] and "intact" in err[0]
    assert load_checkpoint(out / "checkpoint").meta["epoch"] == 1
    assert all(torch.equal(good[k], v) for k, v in _weights(out).items())


@pytest.mark.slow
def test_run_from_before_the_new_flags_resumes_on_cpu(tiny_data, tmp_path):
    # A checkpoint written before --precision, --cluster-engine and --loader existed lacks those fields: it was fp32.
    out = tmp_path / "legacy"
    train(tiny(tiny_data, out))
    meta_path = out / "checkpoint" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("precision", "cluster_engine", "cluster_chunk", "loader", "prefetch", "diag_sample"):
        del meta["train_config"][key]
    meta_path.write_text(json.dumps(meta))
    train(tiny(tiny_data, out, epochs=2))
    assert [r["epoch"] for r in read_log(out)] == [1, 2]


@pytest.mark.slow
def test_persistent_workers_crops_depend_on_the_seed_not_the_workers(tiny_data, tmp_path):
    # Workers start once per run; each item re-seeds from (seed, epoch, stage, position).
    train(tiny(tiny_data, tmp_path / "w1", workers=1, epochs=2))
    train(tiny(tiny_data, tmp_path / "w2", workers=2, epochs=1))
    train(tiny(tiny_data, tmp_path / "w2", workers=2, epochs=2), resume=True)
    a, b = _weights(tmp_path / "w1"), _weights(tmp_path / "w2")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_log(tmp_path / "w1")] == [r["loss"] for r in read_log(tmp_path / "w2")]


# ---------------------------------------------------------------------------------------------
# dc-transfer --precision
@pytest.mark.slow
@pytest.mark.parametrize("task,extra", [("knn-graph", []), ("voc-classification", ["--iterations", "2"])])
def test_transfer_precision_is_applied_and_recorded(task, extra, embedded_root, tmp_path, capsys, monkeypatch):
    from dcbench.checkpoint import save_checkpoint
    from dcbench.models import build_model
    from dcbench.transfer import training
    from dcbench.transfer.cli import main as transfer_main

    ckpt = tmp_path / "rand64"
    save_checkpoint(ckpt, build_model("alexnet", sobel=True, input_size=64, seed=0), origin="random")
    seen = []
    real = training.amp

    def spy(precision, device):
        seen.append(precision)
        return real(precision, device)

    monkeypatch.setattr(training, "amp", spy)
    for precision, out in (("bf16", "bf16"), (None, "fp32")):  # on the CPU the default is fp32
        res = tmp_path / f"res-{out}"
        argv = [task, "--checkpoint", ckpt, "--data", embedded_root, "--out", res, "--scale", "smoke",
                "--device", "cpu", "--workers", "0", "--cache-dir", tmp_path / "cache", *extra]
        argv += ["--precision", precision] if precision else []
        seen.clear()
        assert run_cli(transfer_main, [str(a) for a in argv]) == 0
        (path,) = res.rglob("*.json")
        protocol = json.loads(path.read_text())["protocol"]
        assert protocol["precision"] == out and protocol["loader"] == "draft"  # dc-transfer's default loader
        assert seen and set(seen) == {out}  # the network forwards ran under it
    rc = run_cli(transfer_main, [task, "--checkpoint", str(ckpt), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--precision" in err[0]


@pytest.mark.parametrize("make", [lambda: IL.RandomCrop(32, (0.5, 1.0)), lambda: IL.CentreCrop(37, 32),
                                  lambda: IL.JpegBytes(32, (0.5, 1.0))])
def test_every_crop_loader_refuses_a_decompression_bomb(tmp_path, make):
    # a few KB that decode to 169 megapixels: the loaders must treat it as unreadable, as pil_loader does
    path = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(path, optimize=True)
    with pytest.raises(Image.DecompressionBombWarning):
        make()(str(path))


# ---------------------------------------------------------------------------------------------
# dc-transfer's loader (--loader draft): the torchvision transforms' pixels, read from the path
META = {"preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "colour_order": "RGB"}}


@pytest.mark.parametrize("kind", ["rrc-flip", "crop-flip", "none"])
def test_transfer_draft_transform_equals_torchvision_transform_bit_for_bit(tmp_path, kind):
    from dcbench.datasets import ImageFolder
    from dcbench.transfer.protocol import train_transform

    (tmp_path / "c0").mkdir()
    for i in range(3):
        _jpeg(tmp_path / "c0" / f"{i}.jpg", 90 + 10 * i, 80, seed=i)  # no reduced decode at 64 px
    ours = ImageFolder(tmp_path, train_transform(META, 64, kind, "draft"))
    theirs = ImageFolder(tmp_path, train_transform(META, 64, kind, "torchvision"))
    for seed in range(8):
        for i in range(len(ours)):
            torch.manual_seed(seed)
            a, ya = ours[i]
            torch.manual_seed(seed)
            b, yb = theirs[i]
            assert a.dtype == torch.float32 and a.shape == (3, 64, 64) and ya == yb
            assert torch.equal(a, b), (kind, seed, i)


def test_transfer_eval_crop_reads_large_jpegs_at_reduced_size(tmp_path, monkeypatch):
    from dcbench.datasets import ImageFolder
    from dcbench.transfer.protocol import eval_crops_transform

    (tmp_path / "c0").mkdir()
    _jpeg(tmp_path / "c0" / "big.jpg", 800, 600)
    factors = []
    real = IL._draft_factor
    monkeypatch.setattr(IL, "_draft_factor", lambda *a: factors.append(real(*a)) or factors[-1])
    (a, _), (b, _) = (ImageFolder(tmp_path, eval_crops_transform(META, 64, 1, loader))[0]
                      for loader in ("draft", "torchvision"))
    assert factors == [8] and a.shape == b.shape == (1, 3, 64, 64)
    assert (a - b).abs().mean() < 0.1  # a few grey levels, normalised (see the centre-crop test above)


def test_unknown_transfer_loader_is_one_line_exit_2(capsys):
    from dcbench.transfer.cli import main as transfer_main

    rc = run_cli(transfer_main, ["knn-graph", "--checkpoint", "ckpt", "--loader", "nvjpeg"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--loader" in err[0]

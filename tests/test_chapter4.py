"""The chapter-4 options of dc-train each change exactly what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_runs  # tests/tiny_runs.py
import torch
from PIL import Image

from dcbench import imageload as IL
from dcbench.models import build_model
from dcbench.train import diagnostics as DG
from dcbench.train import feed as FD
from dcbench.train import heads as H
from dcbench.train import loop as L
from dcbench.train import run_state as RS
from dcbench.train.clustering import pca_whiten, pca_whiten_torch
from dcbench.train.config import make_config

SIZE, RESIZE = 32, 37


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A 60x48 JPEG whose rows and columns all differ (a flip of either is visible)."""
    y, x = np.mgrid[0:48, 0:60]
    a = np.stack([(x * 4) % 256, (y * 5) % 256, (x * y) % 256], -1).astype(np.uint8)
    p = tmp_path_factory.mktemp("photo") / "a.jpg"
    Image.fromarray(a).save(p, quality=95)
    return str(p)


def _draft(crop, flip):
    return IL.RandomCrop(SIZE, (0.08, 1.0), crop=crop, flip=flip, resize=RESIZE)


def _torchvision(crop, flip):
    cfg = make_config("km-ImNet-Sob", "smoke", input_size=SIZE, crop=crop, flip=flip)
    cfg.input_size = SIZE  # RESIZE = round(32 * 256 / 224)
    return IL.TorchvisionCrop(FD.transforms(cfg)[0])


class _Nvjpeg:
    """The nvjpeg loader's two halves (worker: bytes + params; batch decode), run on the CPU."""

    def __init__(self, crop, flip):
        sized = crop == "random-sized"
        self.crop = crop
        self.fn = IL.JpegBytes(SIZE, (0.08, 1.0) if sized else None, resize=None if sized else RESIZE,
                               crop=crop, flip=flip)

    def __call__(self, path):
        data, params = self.fn(path)
        x, _ = IL.decode_batch([data], params[None], SIZE, torch.device("cpu"), centre=self.crop != "random-sized")
        return x[0]


LOADERS = {"draft": _draft, "torchvision": _torchvision, "nvjpeg": _Nvjpeg}


def _run(fn, path, seed):
    torch.manual_seed(seed)
    return fn(path)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_central_crop_is_deterministic_and_vertical_flip_flips_rows(loader, photo):
    make = LOADERS[loader]
    plain = [_run(make("central", "none"), photo, s) for s in range(6)]
    assert all(torch.equal(plain[0], p) for p in plain)  # no randomness at all
    vert = [_run(make("central", "vertical"), photo, s) for s in range(12)]
    horiz = [_run(make("central", "horizontal"), photo, s) for s in range(12)]
    assert all(torch.equal(v, plain[0]) or torch.equal(v, plain[0].flip(-2)) for v in vert)
    assert all(torch.equal(h, plain[0]) or torch.equal(h, plain[0].flip(-1)) for h in horiz)
    # both outcomes occur, and a flipped crop really differs (rows reversed, columns kept)
    assert any(torch.equal(v, plain[0].flip(-2)) for v in vert) and any(torch.equal(v, plain[0]) for v in vert)
    assert not torch.equal(plain[0], plain[0].flip(-2))


@pytest.mark.parametrize("loader", ["draft", "torchvision"])
def test_central_training_crop_is_the_feature_crop(loader, photo):
    """--crop central trains on the very crop the features are computed on."""
    centre = IL.CentreCrop(RESIZE, SIZE)(photo)
    assert torch.equal(_run(LOADERS[loader]("central", "none"), photo, 0), centre)


@pytest.mark.parametrize("crop", ["random", "random-sized"])
@pytest.mark.parametrize("flip", ["none", "vertical"])
def test_draft_loader_draws_torchvisions_crops(crop, flip, photo):
    """Same seed, same crop and flip as the torchvision reference (no reduced decode at this size)."""
    for seed in range(5):
        assert torch.equal(_run(_draft(crop, flip), photo, seed), _run(_torchvision(crop, flip), photo, seed))


def test_random_crop_is_a_fixed_size_window_of_the_resized_image(photo):
    import torchvision.transforms.functional as TF

    resized = IL._to_uint8(TF.resize(Image.open(photo).convert("RGB"), RESIZE))
    seen = set()
    for seed in range(8):
        out = _run(_draft("random", "none"), photo, seed)
        hits = [(i, j) for i in range(resized.shape[1] - SIZE + 1) for j in range(resized.shape[2] - SIZE + 1)
                if torch.equal(resized[:, i:i + SIZE, j:j + SIZE], out)]
        assert hits
        seen.add(hits[0])
    assert len(seen) > 1  # the place is random


def test_nvjpeg_random_crop_params_lie_inside_the_resized_image(photo):
    fn = IL.JpegBytes(SIZE, None, resize=RESIZE, crop="random", flip="vertical")
    for seed in range(10):
        torch.manual_seed(seed)
        nh, nw, top, left, flip = fn(photo)[1].tolist()
        assert min(nh, nw) == RESIZE and 0 <= top <= nh - SIZE and 0 <= left <= nw - SIZE and flip in (0, 2)


@pytest.mark.parametrize("head", ["full", "2fc", "no-relu"])
def test_descriptors_pre_and_post_relu(head):
    torch.manual_seed(0)
    model = build_model("alexnet", input_size=64, num_classes=5, seed=0).eval()
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        pre = H.descriptor(model, x, head, "pre-relu")
        post = H.descriptor(model, x, head, "post-relu")
        h = torch.flatten(model.trunk(x), 1)
        fc6 = model.classifier[model.fc_indices[0]](h)
    assert (post >= 0).all() and (pre < 0).any()  # post-ReLU descriptors are non-negative
    assert torch.equal(post, pre.clamp_min(0))
    if head == "2fc":
        assert torch.allclose(pre, fc6)  # the last FC that head uses is fc6
    else:
        assert pre.shape == (8, model.arch.fc_width) and not torch.allclose(pre, fc6)
    if head == "full":
        assert torch.equal(pre, model.penultimate(x))


def test_heads_feed_the_top_layer_what_they_say():
    model = build_model("alexnet", input_size=64, num_classes=5, seed=0).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        h = torch.flatten(model.trunk(x), 1)
        full, no_relu, two = (H.top_input(model, x, k) for k in ("full", "no-relu", "2fc"))
    assert torch.equal(full, no_relu.clamp_min(0)) and (no_relu < 0).any()
    assert torch.allclose(two, model.classifier[:3](h))  # fc6 + ReLU: fc7 is not used


@pytest.mark.parametrize("n", [40, 300])  # fewer points than dimensions (Gram path), and more
def test_pca_spectrum_is_monotone_at_most_one_and_engine_independent(n):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((n, 64)) * np.linspace(5, 0.1, 64)).astype(np.float32)
    a, b = {}, {}
    pca_whiten(x, 16, stats=a)
    pca_whiten_torch(torch.from_numpy(x), 16, stats=b)
    sa = np.array(a["pca_variance"])
    assert len(sa) == 16 and np.all(np.diff(sa) >= 0) and 0 < sa[0] and sa[-1] <= 1
    assert np.allclose(sa, b["pca_variance"], atol=1e-5)
    # the share is of the whole variance: all components of full-rank data sum to one
    full = {}
    pca_whiten(x, 63, stats=full)
    cov = np.cov(x.T.astype(np.float64), bias=True)
    top = np.sort(np.linalg.eigvalsh(cov))[::-1]
    assert np.isclose(full["pca_variance"][0], top[0] / top.sum(), atol=1e-5)


def test_diag_hook_runs_at_multiples_of_n_inside_the_epoch():
    diags = []
    hook = DG.diag_hook(diags, 3, 10, lambda: {"ratio_edge_intra_class": 0.5})
    for n in range(1, 11):
        hook(n)
    assert [d["step"] for d in diags] == [3, 6, 9]
    diags.clear()
    hook = DG.diag_hook(diags, 5, 10, dict)
    for n in range(1, 11):
        hook(n)
    assert [d["step"] for d in diags] == [5]  # the 10th is the next epoch's first diagnostic


@pytest.mark.parametrize("flag,value", [("--flip", "diagonal"), ("--crop", "five"), ("--descriptor", "relu"),
                                        ("--head", "3fc"), ("--targets", "pseudo")])
def test_unknown_choice_is_a_usage_error(flag, value, capsys):
    from dcbench.errors import run_cli
    from dcbench.train import cli

    assert run_cli(cli.main, [flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "Traceback" not in err[0]


def test_negative_diag_every_is_one_line(capsys):
    from dcbench.errors import run_cli
    from dcbench.train import cli

    assert run_cli(cli.main, ["--diag-every", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--diag-every" in err[0]


def test_figures_read_mid_epoch_diagnostics(tmp_path):
    from dcbench.leaderboard.runs import load_run

    (tmp_path / "config.json").write_text(json.dumps({"config": {"diag_every": 2}}))
    recs = [{"epoch": 1, "steps": 6, "ratio_edge_intra_class": 0.1,
             "diag": [{"step": 2, "ratio_edge_intra_class": 0.2}, {"step": 4, "ratio_edge_intra_class": 0.3}]},
            {"epoch": 2, "steps": 6, "ratio_edge_intra_class": 0.4, "val_top1": 50.0}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    run = load_run(tmp_path)
    assert run.points("ratio_edge_intra_class") == [(0, 0.1), (2, 0.2), (4, 0.3), (6, 0.4)]
    assert run.points("val_top1", at_end=True) == [(12, 50.0)]
    bad = dict(recs[0], diag=[{"step": 7}])  # beyond the epoch's steps
    (tmp_path / "log.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(Exception, match="diag"):
        load_run(tmp_path)
    bad = dict(recs[0], ratio_per_class=[0.5, 2.0])  # a ratio is a fraction
    (tmp_path / "log.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(Exception, match="ratio_per_class"):
        load_run(tmp_path)


def test_figure_4_1_box_plots_from_per_class_ratios(tmp_path):
    from dcbench.errors import run_cli
    from dcbench.leaderboard import figures_cli

    for name, base in (("a", 0.1), ("b", 0.3)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"config": {"seed": base}}))
        rec = {"epoch": 1, "steps": 3, "ratio_per_class": [base + 0.01 * i for i in range(10)],
               "ratio_random_graph": 0.0985}
        (tmp_path / name / "log.jsonl").write_text(json.dumps(rec) + "\n")
    assert run_cli(figures_cli.main, [str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "f.md")]) == 0
    page = (tmp_path / "f.md").read_text()
    assert "](f_png/ratio_per_class.png)" in page and "Figure 4.1" in page
    assert (tmp_path / "f_png" / "ratio_per_class.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------
# end to end (slow): tiny runs on the shared labelled tree
def tiny(data, out, **kw):
    return tiny_runs.tiny(data, out, **{"steps_per_epoch": 4, "epochs": 2, **kw})


_weights = tiny_runs.weights


@pytest.mark.slow
def test_diag_every_logs_at_its_steps_and_changes_nothing_else(tiny_data, tmp_path):
    L.train(tiny(tiny_data, tmp_path / "plain"))
    L.train(tiny(tiny_data, tmp_path / "diag", diag_every=2))
    log = RS.read_log(tmp_path / "diag")
    for r in log:
        assert [d["step"] for d in r["diag"]] == [2]  # 4 steps: after update 2 (update 4 is the next epoch's)
        assert 0 <= r["diag"][0]["ratio_edge_intra_class"] <= 1 and 0 <= r["diag"][0]["nmi_labels"] <= 1
    assert all("diag" not in r for r in RS.read_log(tmp_path / "plain"))
    a, b = _weights(tmp_path / "plain"), _weights(tmp_path / "diag")
    assert all(torch.equal(a[k], b[k]) for k in a)  # only the log differs
    assert all(len(r["pca_variance"]) == 8 for r in log)
    # dc-figures reads the real log: the spectrum and the mid-epoch points are drawn
    from dcbench.errors import run_cli
    from dcbench.leaderboard import figures_cli
    from dcbench.leaderboard.runs import load_run

    assert run_cli(figures_cli.main, [str(tmp_path / "plain"), str(tmp_path / "diag"),
                                      "--out", str(tmp_path / "f.md")]) == 0
    assert {"pca_variance.png", "ratio_edge_intra_class.png", "ratio_per_class.png"} <= {
        p.name for p in (tmp_path / "f_png").iterdir()}
    assert all(len(r["ratio_per_class"]) == 4 and 0 < r["ratio_random_graph"] < 1 for r in log)
    assert all(abs(np.mean(r["ratio_per_class"]) - r["ratio_edge_intra_class"]) < 1e-4 for r in log)
    assert [u for u, _ in load_run(tmp_path / "diag").points("ratio_edge_intra_class")] == [0, 2, 4, 6]


@pytest.mark.slow
def test_fixed_clusters_never_recluster(tiny_data, tmp_path, monkeypatch):
    calls = []
    real = L.cluster
    monkeypatch.setattr(L, "cluster", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "fixed"
    L.train(tiny(tiny_data, out, targets="fixed-clusters", epochs=3))
    assert len(calls) == 1
    first = RS.load_assignments(out / "assignments" / "epoch_0001.npz")
    for e in (2, 3):
        again = RS.load_assignments(out / "assignments" / f"epoch_{e:04d}.npz")
        assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    # and a resumed run holds the same clusters
    L.train(tiny(tiny_data, out, targets="fixed-clusters", epochs=4))
    assert len(calls) == 1


@pytest.mark.slow
def test_labels_without_labels_is_one_line(tiny_data, tmp_path, capsys):
    import shutil

    from dcbench.train import cli

    one = tmp_path / "one"
    shutil.copytree(sorted(Path(tiny_data).iterdir())[0], one / "only")
    from dcbench.errors import run_cli

    code = run_cli(cli.main, ["--data", str(one), "--targets", "labels", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--targets labels" in err[0]


@pytest.mark.slow
def test_two_fc_head_leaves_fc7_at_init_and_writes_a_loadable_checkpoint(tiny_data, tmp_path):
    from dcbench.checkpoint import load_checkpoint

    out = tmp_path / "2fc"
    L.train(tiny(tiny_data, out, head="2fc", descriptor="post-relu", epochs=1))
    ck = load_checkpoint(out / "checkpoint")
    init = build_model("alexnet", sobel=True, input_size=64, num_classes=4, seed=1)
    i7 = init.fc_indices[1]
    assert torch.equal(ck.model.classifier[i7].weight, init.classifier[i7].weight)
    assert not torch.equal(ck.model.classifier[init.fc_indices[0]].weight, init.classifier[init.fc_indices[0]].weight)
    assert ck.meta["train_config"]["head"] == "2fc" and ck.meta["train_config"]["descriptor"] == "post-relu"


@pytest.mark.slow
def test_targets_labels_beats_chance_on_embedded_val(embedded_root, tmp_path):
    """The supervised reference (sup-ImNet-Sob at smoke scale) on the embedded classification set."""
    out = tmp_path / "sup"
    cfg = make_config("sup-ImNet-Sob", "smoke", data=str(embedded_root / "classification" / "train"),
                      out=str(out), quiet=True)
    L.train(cfg)
    log = RS.read_log(out)
    chance = 10.0  # 10 balanced classes, 200 val images
    assert json.loads((out / "config.json").read_text())["val_root"].endswith("val")
    # 200 val images: one standard error at chance is 2.1 points; ask for more than two
    assert log[-1]["val_top1"] > chance + 5, [r["val_top1"] for r in log]


def test_a_run_saved_before_these_options_resumes_and_another_choice_is_refused(tmp_path):
    from dcbench.errors import UserError

    cfg = make_config("km-ImNet-Sob", "smoke")
    saved = RS.config_json(cfg)
    for k in ("descriptor", "head", "crop", "flip", "diag_every", "targets", "val_data"):
        saved.pop(k)
    RS.check_resumable(saved, cfg, tmp_path)  # the defaults are what older runs did
    RS.check_resumable(saved, make_config("km-ImNet-Sob", "smoke", diag_every=5), tmp_path)  # logging only
    with pytest.raises(UserError, match="head"):
        RS.check_resumable(saved, make_config("km-ImNet-Sob", "smoke", head="2fc"), tmp_path)


def test_nvjpeg_training_crops_go_through_the_loop_like_drafts(tiny_data):
    """The loop's nvjpeg path on the CPU: a central training crop is decoded with the resize
    geometry (not read as a random-sized box), and matches the draft loader's up to resampling."""
    import dataclasses

    from dcbench.datasets import ImageFolder

    cfg = make_config("km-ImNet-Sob", "smoke", data=str(tiny_data), workers=0, crop="central", flip="none")
    ds = ImageFolder(tiny_data)
    items = np.arange(0, 48, 4)
    xs = {}
    for loader in ("draft", "nvjpeg"):
        c = dataclasses.replace(cfg, loader=loader)
        train_fn, _ = FD.crop_loaders(c, loader)
        batch = next(iter(FD.Feed(ds, train_fn, c, torch.device("cpu"))(items, np.zeros(len(items), np.int64), 12, 0)))
        xs[loader], _ = FD.to_inputs(batch, c, torch.device("cpu"), centre=False)
    a, b = xs["draft"].flatten(1), xs["nvjpeg"].flatten(1)
    assert torch.nn.functional.cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)).min() > 0.95


@pytest.mark.parametrize("flags", [["--head", "2fc"], ["--descriptor", "post-relu"]])
def test_fc_head_options_on_a_resnet_are_one_line(flags, capsys):
    from dcbench.errors import run_cli
    from dcbench.train import cli

    assert run_cli(cli.main, ["--arch", "resnet50", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fc6/fc7" in err[0] and flags[0] in err[0]

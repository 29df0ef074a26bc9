"""Per-image outcomes and their bootstrap: every kind reproduces the task's own metric at weights 1,
a resample equals the metric recomputed on the resampled images by the task's own function, and the
intervals equal a plain NumPy resampling loop's with the same seed."""

from pathlib import Path

import numpy as np
import pytest

from dcbench import outcomes as O
from dcbench.errors import ResultError
from dcbench.transfer import linear_svm, training, voc_eval

N = 60


def _resample_loop(n, resamples, seed):
    """The resampling rule written out plainly: one generator, one index draw per resample."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(resamples)]


def _voc_labels(rng, n, c):
    labels = rng.choice([-1, 1, 0], size=(n, c), p=[0.6, 0.3, 0.1]).astype(np.int8)
    labels[0] = 1  # every class has a positive
    return labels


def test_mean_interval_equals_a_plain_numpy_resampling_loop():
    rng = np.random.default_rng(3)
    hits = rng.random(N) < 0.4
    m = O.Metric("mean", {"values": 100.0 * hits})
    stats = [100.0 * hits[idx].mean() for idx in _resample_loop(N, 1000, 7)]
    assert O.percentile_interval(O.bootstrap(m, 1000, 7)) == pytest.approx(tuple(np.percentile(stats, [2.5, 97.5])))
    lo, hi = O.percentile_interval(O.bootstrap(m, 1000, 7))
    assert lo < 100.0 * hits.mean() < hi


@pytest.mark.parametrize("rule", ["sklearn", "interpolated", "11point"])
def test_ap_resamples_equal_the_tasks_ap_on_resampled_images(rule):
    rng = np.random.default_rng(5)
    scores, labels = rng.normal(size=(N, 4)), _voc_labels(rng, N, 4)

    def task_map(s, y):
        if rule == "sklearn":
            aps = training.voc_class_aps(s, y)
        else:
            aps = np.array([linear_svm.test_ap(s[:, c], y[:, c], rule) for c in range(y.shape[1])])
        return 100.0 * np.nanmean(aps)

    m = O.Metric("ap", {"scores": scores, "labels": labels}, rule)
    assert m.statistic(np.ones(N)) == pytest.approx(task_map(scores, labels), abs=1e-9)
    idxs = _resample_loop(N, 30, 11)
    want = [task_map(scores[i], labels[i]) for i in idxs]
    assert O.bootstrap(m, 30, 11) == pytest.approx(want, abs=1e-9)


def test_ap_over_draws_is_the_mean_of_each_draws_map():
    rng = np.random.default_rng(8)
    scores, labels = rng.normal(size=(3, N, 4)), np.stack([_voc_labels(rng, N, 4)] * 3)
    m = O.Metric("ap", {"scores": scores, "labels": labels}, "interpolated")
    per_draw = [O.Metric("ap", {"scores": s, "labels": y}, "interpolated").statistic(np.ones(N))
                for s, y in zip(scores, labels)]
    assert m.statistic(np.ones(N)) == pytest.approx(np.mean(per_draw))


@pytest.mark.parametrize("score", ["miou", "pixel_acc"])
def test_miou_resamples_equal_segmentation_scores_of_summed_confusions(score):
    rng = np.random.default_rng(2)
    conf = rng.integers(0, 30, size=(N, 5, 5))
    conf[:, 4] = 0  # a class absent from the ground truth
    m = O.Metric("miou", {"confusion": conf}, score)
    assert m.statistic(np.ones(N)) == pytest.approx(voc_eval.segmentation_scores(conf.sum(0))[score])
    idxs = _resample_loop(N, 20, 4)
    want = [voc_eval.segmentation_scores(conf[i].sum(0))[score] for i in idxs]
    assert O.bootstrap(m, 20, 4) == pytest.approx(want)


def _detection_case(rng, n_images=25, n_classes=3):
    """Random boxes and ground truth, matched by the devkit rule (voc_eval.eval_class)."""
    gts, dets = {}, []
    for i in range(n_images):
        for c in range(n_classes):
            k = rng.integers(0, 3)
            xy = rng.integers(1, 40, size=(k, 2))
            boxes = np.c_[xy, xy + rng.integers(5, 20, size=(k, 2))].astype(float)
            gts[(i, c)] = (boxes, rng.random(k) < 0.2)
            for b in boxes:
                if rng.random() < 0.7:
                    dets.append((i, c, float(rng.random()), b + rng.integers(-3, 4, 4)))
            for _ in range(rng.integers(0, 2)):
                x, y = rng.integers(1, 40, 2)
                dets.append((i, c, float(rng.random()), np.array([x, y, x + 10, y + 10], float)))
    return gts, dets


def _devkit_map(gts, dets, images, n_classes):
    """Mean AP over classes by voc_eval.eval_class on the images ``images`` (repeats = new images)."""
    aps = []
    for c in range(n_classes):
        gt = {f"{j}": gts[(i, c)] for j, i in enumerate(images)}
        d = [(f"{j}", s, b) for j, i in enumerate(images) for (di, dc, s, b) in dets if di == i and dc == c]
        r = voc_eval.eval_class(d, gt)
        if r["ap"] is not None:
            aps.append(r["ap"])
    return 100.0 * np.mean(aps)


def _detection_outcomes(gts, dets, n_images, n_classes):
    """Each detection's match as eval_class makes it on the full test set."""
    match = np.zeros(len(dets), np.int8)
    for c in range(n_classes):
        own = [k for k, d in enumerate(dets) if d[1] == c]
        order = sorted(own, key=lambda k: -dets[k][2])
        used = {i: np.zeros(len(gts[(i, c)][0]), bool) for i in range(n_images)}
        for k in order:
            i, _, _, box = dets[k]
            boxes, difficult = gts[(i, c)]
            if len(boxes) == 0:
                continue
            ov = voc_eval.iou_inclusive(box, boxes)
            j = int(np.argmax(ov))
            if ov[j] > 0.5:
                if difficult[j]:
                    match[k] = -1
                elif not used[i][j]:
                    used[i][j] = True
                    match[k] = 1
    npos = np.array([[int((~gts[(i, c)][1]).sum()) for c in range(n_classes)] for i in range(n_images)])
    return {"image": [d[0] for d in dets], "cls": [d[1] for d in dets], "score": [d[2] for d in dets],
            "match": match, "npos": npos}


def test_detection_resamples_equal_the_devkit_on_duplicated_images():
    rng = np.random.default_rng(1)
    gts, dets = _detection_case(rng)
    out = O.Outcomes(ids=[str(i) for i in range(25)])
    out.detection("map", **_detection_outcomes(gts, dets, 25, 3))
    m = out.metrics["map"]
    assert m.statistic(np.ones(25)) == pytest.approx(_devkit_map(gts, dets, range(25), 3))
    idxs = _resample_loop(25, 8, 9)
    want = [_devkit_map(gts, dets, i, 3) for i in idxs]
    assert O.bootstrap(m, 8, 9) == pytest.approx(want)


def test_paired_difference_uses_the_same_images_for_both_and_flags_a_real_gap():
    rng = np.random.default_rng(0)
    n = 400
    a = rng.random(n) < 0.6
    b = a & (rng.random(n) < 0.8)  # b loses some of a's hits: a is better on the same images
    ma, mb = (O.Metric("mean", {"values": 100.0 * x}) for x in (a, b))
    got = O.paired_difference(ma, mb, 1000, 0)
    diffs = [100.0 * (a[i].mean() - b[i].mean()) for i in _resample_loop(n, 1000, 0)]
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])))
    assert got["significant"] and got["difference"] == pytest.approx(100.0 * (a.mean() - b.mean()))
    same = O.paired_difference(ma, O.Metric("mean", {"values": 100.0 * a}), 200, 0)
    assert not same["significant"] and same["difference"] == 0


def test_outcomes_that_do_not_give_the_metric_are_refused():
    out = O.Outcomes(ids=["a", "b"])
    out.hits("top1", [True, False])
    O.check_reproduces(out, {"top1": 50.0}, "r")
    with pytest.raises(ValueError, match="give 50.0"):
        O.check_reproduces(out, {"top1": 60.0}, "r")
    with pytest.raises(ValueError, match="outcomes of 3 images"):
        out.hits("top5", [True, True, False])


# --------------------------------------------------------------------------------------------
# The file beside the result


def _written(tmp_path: Path, sha="a" * 64):
    out = O.Outcomes(ids=[f"img{i}" for i in range(N)])
    hits = np.arange(N) % 3 == 0
    out.hits("top1", hits)
    npz = tmp_path / "r.outcomes.npz"
    file_sha = O.write_outcomes(npz, out, task="knn", checkpoint_sha256=sha)
    result = {"task": "knn", "checkpoint": {"sha256": sha}, "metrics": {"top1": 100.0 * hits.mean()},
              "outcomes": {"file": npz.name, "sha256": file_sha, "images": N, "images_sha256": out.digest,
                           "metrics": {"top1": {"kind": "mean", "rule": None}}}}
    return result, tmp_path / "r.json"


def test_outcomes_file_round_trips_and_reproduces_its_metric(tmp_path):
    result, path = _written(tmp_path)
    m = O.read_outcomes(result, path)["top1"]
    assert m.statistic(np.ones(N)) == pytest.approx(result["metrics"]["top1"])


@pytest.mark.parametrize("spoil, says", [
    (lambda r, p: (p.parent / r["outcomes"]["file"]).unlink(), "missing"),
    (lambda r, p: (p.parent / r["outcomes"]["file"]).write_bytes(b"PK\x03\x04junk"), "sha256 differs"),
    (lambda r, p: r["outcomes"].update(file="../r.outcomes.npz"), "plain file name"),
    (lambda r, p: r["checkpoint"].update(sha256="b" * 64), "another task or checkpoint"),
    (lambda r, p: r["outcomes"].update(images=N + 1), "image count"),
    (lambda r, p: r["outcomes"].update(images_sha256="0" * 64), "test image ids"),
    (lambda r, p: r["metrics"].update(top1=99.0), "do not reproduce"),
])
def test_outcomes_that_do_not_match_their_result_are_one_line_errors(tmp_path, spoil, says):
    result, path = _written(tmp_path)
    spoil(result, path)
    with pytest.raises(ResultError, match=says) as e:
        O.read_outcomes(result, path)
    assert "\n" not in str(e.value)


def test_an_outcomes_file_holding_a_pickle_is_refused_without_unpickling(tmp_path):
    import hashlib
    import io
    import pickle

    result, path = _written(tmp_path)
    with np.load(path.parent / result["outcomes"]["file"]) as z:
        meta = z["__meta__"]  # the genuine header, so the reader gets as far as the arrays
    buf = io.BytesIO()
    np.savez(buf, __meta__=meta, top1__values=np.array([pickle.dumps(object)] * N, dtype=object))
    data = buf.getvalue()
    (path.parent / result["outcomes"]["file"]).write_bytes(data)
    result["outcomes"]["sha256"] = hashlib.sha256(data).hexdigest()
    with pytest.raises(ResultError, match="allow_pickle"):
        O.read_outcomes(result, path)


def test_an_outcomes_file_that_would_unpack_into_gigabytes_is_refused_before_unpacking(tmp_path, monkeypatch):
    import hashlib

    result, path = _written(tmp_path)
    monkeypatch.setattr(O, "MAX_UNPACKED", 100)  # the real bound is 4 GB; this file unpacks to about 1 KB
    with pytest.raises(ResultError, match="unpacks to more than"):
        O.read_outcomes(result, path)
    data = (path.parent / result["outcomes"]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == result["outcomes"]["sha256"]  # the file itself was genuine

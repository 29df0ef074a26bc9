import json

import pytest

from dcbench.errors import ResultError
from dcbench.results import SCHEMA_VERSION, make_result, read_result, result_filename, write_result

SHA = "ab" * 32


def _result(**over):
    kw = dict(task="linear-imagenet", variant={"dataset": "classification"},
              checkpoint={"name": "rnd", "sha256": SHA, "arch": "alexnet", "sobel": True, "origin": "random"},
              metrics={"conv1": 12.5, "conv5": 20.0}, protocol={"lr": 0.01}, scale="smoke", timings={"train": 1.5},
              data={"name": "embedded", "root": "/d", "fingerprint": "f", "sizes": {"train": 10}})
    kw.update(over)
    return make_result(**kw)


def test_written_result_reads_back_identically(tmp_path):
    r = _result()
    path = write_result(r, tmp_path)
    assert path.name == result_filename(r) and path.name.startswith("linear-imagenet__classification__rnd-abababab")
    assert read_result(path) == r


@pytest.mark.parametrize("over,needle", [
    (dict(metrics={"top1": 130.0}), "metrics/top1"),
    (dict(metrics={}), "metrics"),
    (dict(task="nonsense"), "task"),
    (dict(scale="tiny"), "scale"),
    (dict(metrics={"conv1_best": 50.0}), "best_epoch"),
    (dict(metrics={"top1": 50.0}), "'top1' is not a metric of linear-imagenet"),
    (dict(metrics={"conv1<img src=x onerror=alert(1)>": 50.0}), "is not a metric of linear-imagenet"),
    (dict(metrics={"conv1\n# heading": 50.0}), "is not a metric of linear-imagenet"),
])
def test_invalid_results_are_rejected_on_write(over, needle):
    with pytest.raises(ResultError, match=needle):
        _result(**over)


def test_best_over_epochs_needs_its_epoch_declared():
    r = _result(metrics={"conv1": 10.0, "conv1_best": 11.0},
                selection={"rule": "last+best", "epochs": 5, "best_epoch": 3})
    assert r["selection"]["best_epoch"] == 3


def test_reader_names_the_file_and_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ResultError, match="bad.json"):
        read_result(bad)
    other = _result()
    other["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "v2.json").write_text(json.dumps(other))
    with pytest.raises(ResultError, match="schema version"):
        read_result(tmp_path / "v2.json")

"""dc-transfer --seeds N: the trained part repeated with N seeds, one result that carries their mean
and standard deviation, nothing else left in --out."""

import statistics

import pytest

from dcbench import tasks as registry_module
from dcbench.results import make_result, read_result, write_result
from dcbench.tasks import Resources, Task, register, registry
from dcbench.transfer.cli import main


def _run(args):
    # a protocol whose number depends on its seed, as a probe's does
    result = make_result(task="seeded-toy", variant={"dataset": "toy"},
                         checkpoint={"name": "toy", "sha256": "ab" * 32, "arch": "alexnet", "sobel": True,
                                     "origin": "random"},
                         metrics={"acc": 40.0 + 1.5 * args.seed, "acc_other": 10.0}, protocol={"seed": args.seed},
                         data={"name": "toy", "root": "/d", "fingerprint": "f", "sizes": {"val": 4}},
                         scale=args.scale, timings={})
    return write_result(result, args.out)


TOY = Task(name="seeded-toy", description="a task whose metric moves with --seed (tests only)",
           add_arguments=lambda p: None, run=_run, dataset="imagenet", needs=(), resources=Resources(1, 1, 1, 1),
           metrics=r"acc(_other)?", table="seeded-toy")


@pytest.fixture()
def toy(monkeypatch):
    registry()
    monkeypatch.setattr(registry_module, "_REGISTERED", dict(registry_module._REGISTERED))
    register(TOY)


def test_seeds_repeat_the_run_and_record_mean_and_sd_in_the_first_seeds_result(toy, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["seeded-toy", "--checkpoint", str(tmp_path), "--out", str(out), "--seed", "2", "--seeds", "3"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 1 and files[0].endswith(".json")  # the repeats' scratch folder is gone
    r = read_result(out / files[0])
    assert r["metrics"]["acc"] == 43.0 and r["protocol"]["seed"] == 2  # the first seed's own result
    seeds = r["seeds"]
    assert seeds["n"] == 3 and seeds["seeds"] == [2, 3, 4]
    assert seeds["values"]["acc"] == [43.0, 44.5, 46.0]
    assert seeds["mean"]["acc"] == pytest.approx(44.5)
    assert seeds["sd"]["acc"] == pytest.approx(statistics.stdev([43.0, 44.5, 46.0]))  # sample sd (n - 1)
    assert seeds["sd"]["acc_other"] == 0.0
    assert "seeds acc=44.50±1.50" in capsys.readouterr().out

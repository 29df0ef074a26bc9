"""Shared pytest fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory):
    """The embedded datasets at smoke scale, seed 0, generated once per test session."""
    from dcbench.synth import make_datasets

    root = tmp_path_factory.mktemp("embedded") / "data"
    make_datasets(root, seed=0, scale="smoke")
    return root


def _tiny_class_tree(root: Path, per_class: int = 12) -> Path:
    """An ImageFolder of 4 classes x ``per_class`` 96-px images drawn by the embedded-data generator."""
    import numpy as np

    from dcbench.synth import CLASSIFICATION_FAMILIES, render_classification

    for ci, fam in enumerate(sorted(CLASSIFICATION_FAMILIES)[:4]):
        (root / fam).mkdir(parents=True)
        for i in range(per_class):
            render_classification(np.random.default_rng([ci, i]), fam, 96).save(root / fam / f"{i:03d}.jpg",
                                                                                quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The dc-train tests' small labelled tree (read only: tests copy it before changing it)."""
    return _tiny_class_tree(tmp_path_factory.mktemp("dctrain") / "data")


@pytest.fixture(scope="session")
def tiny_class_tree():
    """``tiny_class_tree(root, per_class=12)``: write another such tree."""
    return _tiny_class_tree


@pytest.fixture()
def one_thread():
    """The test machines are shared: one intra-op thread is faster than two fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def strip_fc():
    """``strip_fc(src, dst)``: copy a checkpoint without its fc6/fc7 weights (sha256 kept valid)."""
    from safetensors.torch import load_file, save_file

    from dcbench.checkpoint import sha256_file

    def make(src, dst):
        shutil.copytree(src, dst)
        tensors = {k: v for k, v in load_file(str(dst / "model.safetensors")).items()
                   if not k.startswith("classifier.")}
        save_file(tensors, str(dst / "model.safetensors"))
        meta = json.loads((dst / "meta.json").read_text())
        meta["model_sha256"] = sha256_file(dst / "model.safetensors")
        (dst / "meta.json").write_text(json.dumps(meta))
        return dst

    return make


def pytest_ignore_collect(collection_path, config):
    """tests/adversarial is its own tier (tox -e adversarial): collected only when named explicitly."""
    adversarial = Path(__file__).parent / "adversarial"
    if collection_path != adversarial:
        return None
    named = [Path(a.split("::")[0]).resolve() for a in config.args]
    return not any(p == adversarial or adversarial in p.parents for p in named)

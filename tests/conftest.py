"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory):
    """The embedded datasets at smoke scale, seed 0, generated once per test session."""
    from dcbench.synth import make_datasets

    root = tmp_path_factory.mktemp("embedded") / "data"
    make_datasets(root, seed=0, scale="smoke")
    return root

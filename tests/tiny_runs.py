"""The smallest dc-train runs the dc-train tests share (a module, so test files import the same one)."""

from __future__ import annotations

from pathlib import Path

from dcbench.train.config import make_config


def tiny(data, out, **kw):
    """km-ImNet-Sob at smoke scale cut to seconds: 4 clusters, 8 PCA dims, one epoch of 2 steps."""
    base = dict(data=str(data), out=str(out), k=4, pca_dim=8, batch_size=16, steps_per_epoch=2, epochs=1,
                quiet=True, workers=0, seed=1)
    base.update(kw)
    return make_config("km-ImNet-Sob", "smoke", **base)


def weights(out) -> dict:
    """The tensors of ``out``'s checkpoint."""
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "checkpoint" / "model.safetensors"))

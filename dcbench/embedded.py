"""The embedded default data: generated once per (scale, seed, generator version), then cached.

Every ``dc-*`` command run without ``--data`` calls :func:`embedded_data`. The cache lives in
``$DCBENCH_DATA_CACHE`` (if set) or ``~/.cache/dcbench/data``; a generation writes into a
temporary folder beside the final one and renames it into place, under a file lock, so that
concurrent processes neither generate twice nor see a half-written tree.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from filelock import FileLock

from dcbench.synth import GENERATOR_VERSION, SCALES, make_datasets

SUMMARY = "dcbench_data.json"


def cache_dir() -> Path:
    env = os.environ.get("DCBENCH_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dcbench" / "data"


def embedded_data(scale: str = "smoke", seed: int = 0) -> Path:
    """Root of the embedded datasets for (scale, seed), generating them on first use."""
    if scale not in SCALES:
        from dcbench.errors import UserError

        raise UserError(f"unknown data scale {scale!r}; choose from {', '.join(SCALES)}")
    base = cache_dir()
    name = f"{scale}-seed{int(seed)}-v{GENERATOR_VERSION}"
    final = base / name
    if (final / SUMMARY).is_file():
        return final
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{name}.lock")):
        if (final / SUMMARY).is_file():  # another process made it while we waited
            return final
        if final.exists():  # a leftover without its summary: incomplete, replace it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=base))
        print(f"dcbench: generating embedded data ({scale}, seed {seed}) into {final} ...", file=sys.stderr)
        try:
            make_datasets(tmp, seed=seed, scale=scale)
            os.replace(tmp, final)
        except OSError as e:
            from dcbench.atomic import disk_error

            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_error(e, final) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final

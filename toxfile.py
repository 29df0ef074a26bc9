"""Inline tox plugin: every dcbench env runs in ONE shared virtualenv, the README's ``.venv``.

tox 4 recreates an environment whose recorded env name differs from the one being run, so
pointing several envs at one ``env_dir`` would reinstall torch (several GB) on every switch.
The ``shared-virtualenv`` runner records a fixed name instead; everything else (deps, package
install, python version) is still compared and reinstalled when it really changes.

The shared ``env_dir`` is ``.venv``, which README command 1 makes with ``python3 -m venv`` and
``pip install -e '.[test]'``: the runner adopts that environment as it is (virtualenv would
otherwise rewrite its scripts and seed packages over it), so one checkout holds one torch.
It refuses to delete the environment tox itself runs from (``tox -r`` from ``.venv/bin/tox``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tox.plugin import impl
from tox.report import HandledError
from tox.tox_env.info import Info
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner

SHARED_NAME = "dcbench-shared"


class _SharedInfo(Info):
    def compare(self, value, section, sub_section=None):
        if section == "ToxEnv" and isinstance(value, dict) and "name" in value:
            value = {**value, "name": SHARED_NAME}
        return super().compare(value, section, sub_section)


def venv_python_version(env_dir: Path) -> tuple[int, int] | None:
    """(major, minor) from a virtual environment's ``pyvenv.cfg``; None if it is not one."""
    cfg = env_dir / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return int(parts[0]), int(parts[1])
    return None


class SharedVirtualEnvRunner(VirtualEnvRunner):
    @staticmethod
    def id() -> str:
        return "shared-virtualenv"

    @property
    def cache(self) -> Info:
        return _SharedInfo(self.env_dir)

    def create_python_env(self) -> None:
        have = venv_python_version(self.env_dir)
        if have is None:
            super().create_python_env()
            return
        want = tuple(self.base_python.version_info[:2])
        if have != want:
            raise HandledError(f"{self.env_dir} is a Python {have[0]}.{have[1]} environment, this tox runs "
                               f"Python {want[0]}.{want[1]}; run tox from it ({self.env_dir}/bin/tox) or "
                               "delete it and redo README command 1")
        # An existing environment (README command 1): adopt it; tox installs what is missing.

    def _clean(self, transitive: bool = False) -> None:
        if self.env_dir.exists() and Path(sys.prefix).resolve() == self.env_dir.resolve():
            raise HandledError(f"tox would delete {self.env_dir}, the environment it runs from; to rebuild it, "
                               "delete the folder and redo README command 1")
        super()._clean(transitive)


@impl
def tox_register_tox_env(register) -> None:
    register.add_run_env(SharedVirtualEnvRunner)

"""Inline tox plugin: every dcbench env runs in ONE shared virtualenv.

tox 4 recreates an environment whose recorded env name differs from the one being run, so
pointing several envs at one ``env_dir`` would reinstall torch (several GB) on every switch.
The ``shared-virtualenv`` runner records a fixed name instead; everything else (deps, package
install, python version) is still compared and reinstalled when it really changes.
"""

from __future__ import annotations

from tox.plugin import impl
from tox.tox_env.info import Info
from tox.tox_env.python.virtual_env.runner import VirtualEnvRunner

SHARED_NAME = "dcbench-shared"


class _SharedInfo(Info):
    def compare(self, value, section, sub_section=None):
        if section == "ToxEnv" and isinstance(value, dict) and "name" in value:
            value = {**value, "name": SHARED_NAME}
        return super().compare(value, section, sub_section)


class SharedVirtualEnvRunner(VirtualEnvRunner):
    @staticmethod
    def id() -> str:
        return "shared-virtualenv"

    @property
    def cache(self) -> Info:
        return _SharedInfo(self.env_dir)


@impl
def tox_register_tox_env(register) -> None:
    register.add_run_env(SharedVirtualEnvRunner)

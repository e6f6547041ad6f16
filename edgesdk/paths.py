"""Where edgesdk keeps its state on the host: caches, emulated boards, toolchain venvs."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of edgesdk's host state: $EDGESDK_HOME, else ~/.cache/edgesdk."""
    env = os.environ.get("EDGESDK_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "edgesdk"


def toolchain_venv(toolchain_id: str) -> Path:
    return home() / "toolchains" / toolchain_id / "venv"


def emulator_dir() -> Path:
    return home() / "emulators"


def rootfs_cache() -> Path:
    return home() / "rootfs"

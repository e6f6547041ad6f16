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


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write data to path all at once: a temp file beside it (created with `mode`), fsync, then rename over path.
    A crash leaves either the old file or the new one, never a half-written file. When path is a symlink, the
    file it points to is replaced (the link stays)."""
    import tempfile

    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(p.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)

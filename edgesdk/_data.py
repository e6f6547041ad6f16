"""Where the shipped data (boards/, toolchains/) lives: inside the wheel, or at the top of a checkout."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory of shipped data `name` ("boards" or "toolchains").

    In a wheel the data sits in ``edgesdk/_data/<name>``; in a source checkout
    (editable install, tests) it is the top-level ``<name>/`` folder.
    """
    packaged = _PKG / "_data" / name
    if packaged.is_dir():
        return packaged
    return _PKG.parent / name

"""edgesdk: take a vision model to ARM and NPU edge boards with one tool.

`import edgesdk` is light: the errors are stdlib-only, and everything else (pydantic board
profiles, onnx, numpy) loads on first use. That keeps `import edgesdk.runtime` working on a
board that has numpy and nothing else.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from edgesdk.errors import (
    BundleError,
    EdgeSDKError,
    EmulatorError,
    EngineFailure,
    EngineUnavailable,
    EnvironmentProblem,
    InputError,
    InputMismatch,
    ModelError,
    ProfileError,
    RemoteError,
    ToolchainError,
    UnknownBoardError,
    UnknownToolchainError,
)

__version__ = "0.1.0"

_LAZY = {
    "BoardProfile": "edgesdk.boards",
    "get_board": "edgesdk.boards",
    "list_boards": "edgesdk.boards",
    "convert": "edgesdk.conversion",
}

if _typing.TYPE_CHECKING:  # pragma: no cover
    from edgesdk.boards import BoardProfile, get_board, list_boards  # noqa: F401
    from edgesdk.conversion import convert  # noqa: F401


def __getattr__(name: str) -> object:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(mod), name)
    globals()[name] = value
    return value


__all__ = [
    "BoardProfile",
    "BundleError",
    "EdgeSDKError",
    "EmulatorError",
    "EngineFailure",
    "EngineUnavailable",
    "EnvironmentProblem",
    "InputError",
    "InputMismatch",
    "ModelError",
    "ProfileError",
    "RemoteError",
    "ToolchainError",
    "UnknownBoardError",
    "UnknownToolchainError",
    "__version__",
    "convert",
    "get_board",
    "list_boards",
]

"""edgesdk: take a vision model to ARM and NPU edge boards with one tool."""

from __future__ import annotations

from edgesdk.boards import BoardProfile, get_board, list_boards
from edgesdk.errors import (
    EdgeSDKError,
    EmulatorError,
    EnvironmentProblem,
    InputError,
    ModelError,
    ProfileError,
    RemoteError,
    ToolchainError,
    UnknownBoardError,
    UnknownToolchainError,
)

__version__ = "0.1.0"

__all__ = [
    "BoardProfile",
    "EdgeSDKError",
    "EmulatorError",
    "EnvironmentProblem",
    "InputError",
    "ModelError",
    "ProfileError",
    "RemoteError",
    "ToolchainError",
    "UnknownBoardError",
    "UnknownToolchainError",
    "__version__",
    "get_board",
    "list_boards",
]

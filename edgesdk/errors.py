"""The one exception tree of edgesdk; foreign errors are translated into it at the boundary.

    EdgeSDKError                   (defined in edgesdk.runtime.errors: the runtime shares the tree)
    ├── InputError                 bad input from the user: exit code 2
    │   ├── BundleError            a bundle or manifest that cannot be used          (runtime)
    │   ├── InputMismatch          a feed with the wrong input name, shape or dtype   (runtime)
    │   ├── ProfileError           a board profile or toolchain spec file is invalid
    │   ├── UnknownBoardError      a board id that does not exist (carries did-you-mean)
    │   ├── UnknownToolchainError  a toolchain id that does not exist
    │   └── ModelError             a model file that cannot be loaded safely
    ├── EnvironmentProblem         something on this machine is missing or broken (exit 1)
    │   └── EmulatorError          the emulated board cannot be built or started
    ├── ToolchainError             an external converter/compiler failed (names tool, command, stderr)
    ├── EngineUnavailable          an engine is not installed; names the fix          (runtime)
    ├── EngineFailure              an engine failed to load or run a model            (runtime)
    └── RemoteError                an SSH / board-side failure
"""

from __future__ import annotations

from collections.abc import Sequence

from edgesdk.runtime.errors import (
    BundleError,
    EdgeSDKError,
    EngineFailure,
    EngineUnavailable,
    InputError,
    InputMismatch,
)


class ProfileError(InputError):
    """A board profile or toolchain spec file failed validation.

    The message always names the file and the field.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path}: invalid\n{lines}")


class UnknownBoardError(InputError):
    """A board id that no profile defines."""

    def __init__(self, board_id: str, known: Sequence[str], suggestions: Sequence[str]) -> None:
        self.board_id = board_id
        self.known = list(known)
        self.suggestions = list(suggestions)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown board {board_id!r}.{hint} Known boards: {', '.join(known)}")


class UnknownToolchainError(InputError):
    """A toolchain id that no spec defines."""

    def __init__(self, toolchain_id: str, known: Sequence[str], suggestions: Sequence[str]) -> None:
        self.toolchain_id = toolchain_id
        self.known = list(known)
        self.suggestions = list(suggestions)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown toolchain {toolchain_id!r}.{hint} Known toolchains: {', '.join(known)}"
        )


class ModelError(InputError):
    """A model file that is not a valid, safe model."""


class EnvironmentProblem(EdgeSDKError):
    """A tool or package on this machine is missing or broken; the message has the fix."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class EmulatorError(EnvironmentProblem):
    """The emulated board could not be built, started or reached."""


class ToolchainError(EdgeSDKError):
    """An external tool failed. Names the tool, the command and the end of its output."""

    def __init__(self, tool: str, command: Sequence[str], returncode: int | None, stderr_tail: str) -> None:
        self.tool = tool
        self.command = list(command)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        status = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(
            f"{tool} {status}\n  command: {' '.join(self.command)}\n  last output:\n{stderr_tail}"
        )


class RemoteError(EdgeSDKError):
    """Something failed on or on the way to the board."""


__all__ = [
    "BundleError",
    "EdgeSDKError",
    "EngineFailure",
    "EngineUnavailable",
    "InputMismatch",
    "EmulatorError",
    "EnvironmentProblem",
    "InputError",
    "ModelError",
    "ProfileError",
    "RemoteError",
    "ToolchainError",
    "UnknownBoardError",
    "UnknownToolchainError",
]

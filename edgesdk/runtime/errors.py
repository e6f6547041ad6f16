"""The root of edgesdk's exception tree, and the errors the on-board runtime raises.

It lives in edgesdk.runtime because the runtime must not import the rest of edgesdk;
edgesdk.errors re-exports these classes and grows the host-side branches from them.

    EdgeSDKError
    ├── InputError              bad input: exit code 2
    │   ├── BundleError         a bundle that is missing, corrupt or whose manifest is invalid
    │   └── InputMismatch       a feed with the wrong input name, shape or dtype
    ├── EngineUnavailable       an engine the bundle needs is not installed (names the fix)
    └── EngineFailure           an engine failed to load a model or to run it
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base of every error edgesdk raises on purpose."""

    exit_code: int = 1


class InputError(EdgeSDKError):
    """The user gave something we cannot use (file, id, option, tensor)."""

    exit_code = 2


class BundleError(InputError):
    """A bundle directory or manifest that cannot be used. The message names the file and field."""


class InputMismatch(InputError):
    """A feed that does not match the model's inputs; says what was expected and what was given."""


class EngineUnavailable(EdgeSDKError):
    """An engine the bundle needs is missing on this machine."""

    def __init__(self, engine: str, fix: str, detail: str | None = None) -> None:
        self.engine = engine
        self.fix = fix
        extra = f" ({detail})" if detail else ""
        super().__init__(f"engine {engine!r} is not available here{extra}\n  fix: {fix}")


class EngineFailure(EdgeSDKError):
    """An engine failed to load a model file or to run it."""


__all__ = ["BundleError", "EdgeSDKError", "EngineFailure", "EngineUnavailable", "InputError", "InputMismatch"]

"""The contract every app step keeps: built-in steps (this package) and custom ones (a function in a module the
app ships).

A step is a class built once per stage from the stage's ``params`` (checked there: a bad parameter raises
``AppError`` naming the stage and the field), then called once per frame with its inputs as keyword arguments. It
returns a dict of its outputs. Values are numpy arrays (strings are numpy ``str`` arrays, never objects: they must
round-trip through ``np.save`` without pickle) or lists of them (a list of crops, one text per crop). A stage with
``map: true`` is called once per item of its list inputs; the step itself never sees the list then.

Standard library + numpy only: steps run on the board.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.errors import BundleError

Value = Any  # np.ndarray | list[np.ndarray]

_MISSING = object()


class AppError(BundleError):
    """An app spec or app bundle that cannot be used; the message names the file, stage and field."""


class Params:
    """Reads a step's params dict with checks; every error names ``where`` (e.g. 'app.yaml: stages.det_post.params')."""

    def __init__(self, params: Mapping[str, Any] | None, where: str) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise AppError(f"{where}: expected a mapping of parameters, got {type(params).__name__}")
        self.params = dict(params or {})
        self.where = where
        self._seen: set[str] = set()

    def fail(self, key: str, msg: str) -> AppError:
        return AppError(f"{self.where}.{key}: {msg}")

    def get(self, key: str, types: type | tuple[type, ...], default: Any = _MISSING,
            choices: Sequence[Any] | None = None, lo: float | None = None, hi: float | None = None) -> Any:
        self._seen.add(key)
        if key not in self.params:
            if default is _MISSING:
                raise self.fail(key, "required")
            return default
        v = self.params[key]
        if float in (types if isinstance(types, tuple) else (types,)) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(key, f"expected {_tname(types)}, got {v!r}")
        if not isinstance(v, types):
            raise self.fail(key, f"expected {_tname(types)}, got {v!r}")
        if choices is not None and v not in choices:
            raise self.fail(key, f"expected one of {', '.join(map(str, choices))}, got {v!r}")
        if lo is not None and v < lo:
            raise self.fail(key, f"must be >= {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise self.fail(key, f"must be <= {hi}, got {v!r}")
        return v

    def floats(self, key: str, n: int | None = None, default: Any = _MISSING) -> tuple[float, ...] | Any:
        """A list of numbers (exactly n of them when n is given); a single number is repeated n times."""
        self._seen.add(key)
        if key not in self.params:
            if default is _MISSING:
                raise self.fail(key, "required")
            return default
        v = self.params[key]
        if isinstance(v, (int, float)) and not isinstance(v, bool) and n is not None:
            v = [v] * n
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                        for x in v):
            raise self.fail(key, f"expected a list of numbers, got {v!r}")
        if n is not None and len(v) != n:
            raise self.fail(key, f"expected {n} numbers, got {len(v)}")
        return tuple(float(x) for x in v)

    def done(self) -> None:
        """Refuse parameters the step does not know (a typo must not be silently ignored)."""
        extra = sorted(set(self.params) - self._seen)
        if extra:
            raise self.fail(extra[0], f"unknown parameter (known: {', '.join(sorted(self._seen)) or 'none'})")


def _tname(types: type | tuple[type, ...]) -> str:
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join({"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false",
                        "list": "a list", "dict": "a mapping"}.get(t.__name__, t.__name__) for t in ts)


class Step:
    """Base of the built-in steps.

    Class attributes:
      kind       the name app.yaml uses (``step: letterbox``)
      inputs     required input names, in order; ``optional_inputs`` may be left unwired
      outputs    output names, in order
      file_params  params whose value is a file of the app (relative to app.yaml); convert copies it into the
                 bundle and hashes it, and the step reads it with ``self.file(key)``
      stateful   True when outputs depend on earlier frames (the tracker): ``reset()`` forgets them
    """

    kind: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    optional_inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    file_params: ClassVar[tuple[str, ...]] = ()
    stateful: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None, where: str,
                 resolve: Callable[[str], Path] | None = None) -> None:
        self.where = where
        self._resolve = resolve
        p = Params(params, where)
        self.configure(p)
        p.done()
        self.params = dict(p.params)

    def configure(self, p: Params) -> None:
        """Read and check the parameters (override)."""

    def file(self, rel: str) -> Path:
        """A file param's path: in the bundle on the board, beside app.yaml on the host."""
        if self._resolve is None:
            raise AppError(f"{self.where}: no file root to resolve {rel!r}")
        return self._resolve(rel)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state carried between frames (stateful steps)."""


def as_array(x: Any, where: str, name: str, ndim: int | tuple[int, ...] | None = None,
             dtype: Any = None) -> np.ndarray:
    """An input as an ndarray, with its rank checked; errors name the step and input."""
    if isinstance(x, list):
        raise AppError(f"{where}: input {name!r} is a list of {len(x)} items; set `map: true` on the stage to run it "
                       "once per item")
    a = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    if ndim is not None:
        ok = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in ok:
            raise AppError(f"{where}: input {name!r} has shape {a.shape}; expected {' or '.join(map(str, ok))} dims")
    return a


__all__ = ["AppError", "Params", "Step", "Value", "as_array"]

"""Engine adapters: engine id -> adapter class, imported only when a segment needs it.

Every adapter is a small class with the same four parts:

    available() -> bool            (classmethod) can this machine import the engine?
    version() -> str               (classmethod) the engine package's version, "" if unknown
    load(files, inputs, outputs, options)   files: role -> absolute Path; specs from the manifest
    run(feed) -> dict              feed/results keyed by the engine's tensor names, in the
                                   engine's layout and dtype (the Session converts around it)
    close()                        idempotent

Adapters translate the engine's own errors into EngineFailure. They never fall back to
anything: that is the Session's decision, and it is explicit.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.errors import EngineFailure, EngineUnavailable
from edgesdk.runtime.manifest import TensorSpec

class _Registry(Mapping[str, tuple[str, str]]):
    """engine id -> (module, class name), found by file name: edgesdk/runtime/engines/<id>.py holds the one Engine
    subclass whose `name` is <id>. Adding an engine is adding its module; nothing is imported until used."""

    def _ids(self) -> tuple[str, ...]:
        from edgesdk.runtime.manifest import engine_ids

        return engine_ids()

    def __getitem__(self, engine: str) -> tuple[str, str]:
        if engine not in self._ids():
            raise KeyError(engine)
        mod = importlib.import_module(f"{__name__}.{engine}")
        for attr, obj in vars(mod).items():
            if isinstance(obj, type) and issubclass(obj, Engine) and obj.__module__ == mod.__name__ \
                    and obj.name == engine:
                return mod.__name__, attr
        raise KeyError(f"{mod.__name__} defines no Engine subclass named {engine!r}")

    def __contains__(self, engine: object) -> bool:
        return engine in self._ids()

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())


class _Hints(Mapping[str, str]):
    """engine id -> what to run on the board when it is missing (each engine class's `install_hint`; the same
    text as its toolchain record's runtime.install_hint, which a unit test holds them to)."""

    def __getitem__(self, engine: str) -> str:
        if engine not in REGISTRY:
            raise KeyError(engine)
        return engine_class(engine).install_hint

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


#: engine id -> (module, class). Modules are imported on first use only.
REGISTRY: Mapping[str, tuple[str, str]] = _Registry()
#: What to run on the board when an engine is missing.
INSTALL_HINTS: Mapping[str, str] = _Hints()


class Engine:
    """Base of the adapters; the shared parts only."""

    name: ClassVar[str] = ""
    #: Python modules whose presence makes the engine available (any one of them).
    modules: ClassVar[tuple[str, ...]] = ()
    #: What to run on the board when the engine is missing (== its toolchain record's runtime.install_hint).
    install_hint: ClassVar[str] = ""
    #: Why the engine gives no per-layer times, when it gives none (edgesdk profile --layers).
    per_layer_note: ClassVar[str] = ""
    #: Native loaders known to crash the process on malformed files: loaded first in a
    #: guarded subprocess unless the Session is told otherwise.
    crash_prone: ClassVar[bool] = False

    @classmethod
    def available(cls) -> bool:
        return any(_has_module(m) for m in cls.modules)

    @classmethod
    def version(cls) -> str:
        from importlib import metadata

        for dist in cls.distributions():
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return ""

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ()

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # helpers for the adapters
    def _file(self, files: Mapping[str, Path], *roles: str) -> Path:
        for r in roles:
            if r in files:
                return files[r]
        raise EngineFailure(f"{self.name}: the segment has no file with role {' or '.join(map(repr, roles))} "
                            f"(it has {sorted(files)})")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def engine_class(engine: str) -> type[Engine]:
    if engine not in REGISTRY:
        raise EngineUnavailable(engine, INSTALL_HINTS.get(engine, "no Python runtime for this engine in edgesdk"),
                                "edgesdk has no runtime adapter for it")
    mod, cls = REGISTRY[engine]
    return getattr(importlib.import_module(mod), cls)


def is_available(engine: str) -> bool:
    return engine in REGISTRY and engine_class(engine).available()


def require(engine: str) -> type[Engine]:
    """The adapter class of an engine that is installed here, else EngineUnavailable with the fix."""
    cls = engine_class(engine)
    if not cls.available():
        raise EngineUnavailable(engine, INSTALL_HINTS[engine], f"none of the modules {list(cls.modules)} imports")
    return cls


def import_engine(engine: str, module: str) -> Any:
    """Import an engine's module; an ImportError becomes EngineUnavailable with the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EngineUnavailable(engine, INSTALL_HINTS[engine], f"import {module}: {exc}") from exc


__all__ = ["INSTALL_HINTS", "REGISTRY", "Engine", "engine_class", "import_engine", "is_available", "require"]

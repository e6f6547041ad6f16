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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.errors import EngineFailure, EngineUnavailable
from edgesdk.runtime.manifest import TensorSpec

#: engine id -> (module, class). Modules are imported on first use only.
REGISTRY: dict[str, tuple[str, str]] = {
    "onnxruntime": ("edgesdk.runtime.engines.onnxruntime", "OnnxRuntimeEngine"),
    "ncnn": ("edgesdk.runtime.engines.ncnn", "NcnnEngine"),
    "mnn": ("edgesdk.runtime.engines.mnn", "MnnEngine"),
    "tflite": ("edgesdk.runtime.engines.tflite", "TFLiteEngine"),
    "edgetpu": ("edgesdk.runtime.engines.edgetpu", "EdgeTPUEngine"),
    "vart": ("edgesdk.runtime.engines.vart", "VartEngine"),
    "bpu": ("edgesdk.runtime.engines.bpu", "BpuEngine"),
}

#: What to run on the board when an engine is missing.
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install onnxruntime",
    "ncnn": "pip install ncnn",
    "mnn": "pip install MNN",
    "tflite": "pip install ai-edge-litert   (or tflite-runtime on Python <= 3.11 / older boards)",
    "edgetpu": "install the Edge TPU runtime (apt-get install libedgetpu1-std, from Coral's apt repository) "
               "and ai-edge-litert or tflite-runtime; pycoral is optional",
    "vart": "use the Vitis AI runtime image for the board (Kria KV260: the xlnx-vai runtime packages that "
            "provide the vart and xir Python modules)",
    "bpu": "install Horizon's hobot-dnn package on the board (the RDK X3 system image ships it: "
           "python3 -c 'from hobot_dnn import pyeasy_dnn')",
    "nnie": "the HiSilicon NNIE has no Python runtime in edgesdk; run the bundle with the vendor's C SDK",
}


class Engine:
    """Base of the adapters; the shared parts only."""

    name: ClassVar[str] = ""
    #: Python modules whose presence makes the engine available (any one of them).
    modules: ClassVar[tuple[str, ...]] = ()
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

"""Rockchip RKNPU2 (RK3588 & co.): a .rknn model run by rknn-toolkit-lite2's RKNNLite.

NOT VERIFIED ON HARDWARE: written against RKNNLite's documented calls (load_rknn, init_runtime(core_mask=...),
inference(inputs=[...], data_format=...), release) and unit-tested against a fake of that shape
(tests/unit/test_rknn.py). The .rknn files themselves are real (rknn-toolkit2 2.5.0 on this host).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, _has_module, import_engine
from edgesdk.runtime.errors import EngineFailure

LIBRARY = "librknnrt.so"
INSTALL_HINT = ("pip install rknn-toolkit-lite2 (wheel from airockchip/rknn-toolkit2 "
                "rknn-toolkit-lite2/packages) and copy librknnrt.so (rknpu2/runtime/Linux/librknn_api/aarch64) "
                "to /usr/lib; needs the rknpu kernel driver (/dev/rknpu or a rknpu /dev/dri/renderD*)")
CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
              "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}


def _lib_loadable() -> bool:
    import ctypes

    try:
        ctypes.CDLL(LIBRARY)
    except OSError:
        return False
    return True


def _npu_node(root: str = "/") -> str | None:
    """The NPU device node: /dev/rknpu, or a DRM render node whose driver is rknpu."""
    if os.path.exists(os.path.join(root, "dev/rknpu")):
        return os.path.join(root, "dev/rknpu")
    for node in sorted(glob.glob(os.path.join(root, "dev/dri/renderD*"))):
        drv = os.path.join(root, "sys/class/drm", os.path.basename(node), "device/driver")
        if os.path.exists(drv) and os.path.basename(os.path.realpath(drv)) == "rknpu":
            return node
    return None


def missing(root: str = "/") -> list[str]:
    """What stops the engine here (empty when it can run)."""
    out = []
    if "rknnlite" not in sys.modules and not _has_module("rknnlite"):
        out.append("python module rknnlite (pip install rknn-toolkit-lite2)")
    if not _lib_loadable():
        out.append(f"{LIBRARY} (not loadable by ctypes)")
    if _npu_node(root) is None:
        out.append("NPU device node (/dev/rknpu or /dev/dri/renderD* with driver rknpu)")
    return out


class RknnEngine(Engine):
    name = "rknn"
    modules = ("rknnlite",)
    install_hint = INSTALL_HINT
    per_layer_note = "RKNNLite gives no per-layer times (perf_debug is rknn-toolkit2 with a connected board)"

    @classmethod
    def available(cls) -> bool:
        return not missing()

    @classmethod
    def missing(cls) -> list[str]:
        """What stops the engine here (doctor shows it)."""
        return missing()

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("rknn-toolkit-lite2",)

    def __init__(self) -> None:
        self._rt: Any = None
        self._ins: list[str] = []
        self._outs: list[str] = []
        self._fmt = "nchw"

    def load(self, files: Mapping[str, Path], inputs, outputs, options: Mapping[str, Any]) -> None:  # type: ignore[no-untyped-def]
        mod = import_engine(self.name, "rknnlite.api")
        lite = mod.RKNNLite
        path = self._file(files, "model", "rknn")
        rt = lite()
        if rt.load_rknn(str(path)) != 0:
            raise EngineFailure(f"rknn: load_rknn({path}) failed")
        mask = options.get("core_mask", "auto")
        if isinstance(mask, str):
            mask = getattr(lite, CORE_MASKS.get(mask.lower(), mask), None)
            if mask is None:
                raise EngineFailure(f"rknn: unknown core_mask {options.get('core_mask')!r} (one of {sorted(CORE_MASKS)})")
        if rt.init_runtime(core_mask=mask) != 0:
            rt.release()
            raise EngineFailure("rknn: init_runtime failed (is the rknpu driver loaded and librknnrt.so current?)")
        self._rt = rt
        self._fmt = str(options.get("data_format", "nchw"))
        self._ins = [t.engine_name or t.name for t in inputs]
        self._outs = [t.engine_name or t.name for t in outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._rt is None:
            raise EngineFailure("rknn: run() before load()")
        try:
            arrays = [np.ascontiguousarray(feed[n]) for n in self._ins]
        except KeyError as exc:
            raise EngineFailure(f"rknn: missing input {exc}") from exc
        outs = self._rt.inference(inputs=arrays, data_format=[self._fmt] * len(arrays))
        if outs is None:
            raise EngineFailure("rknn: inference returned None")
        return {n: np.asarray(o) for n, o in zip(self._outs, outs)}

    def close(self) -> None:
        if self._rt is not None:
            self._rt.release()
            self._rt = None


__all__ = ["INSTALL_HINT", "RknnEngine", "missing"]

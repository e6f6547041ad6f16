"""MNN adapter (pip package `MNN`): .mnn through the MNN.nn module API, CPU backend."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec

_DTYPES = {"float32": "float", "int32": "int", "uint8": "uint8", "int8": "int8"}


class MnnEngine(Engine):
    name = "mnn"
    modules = ("MNN",)
    install_hint = "pip install MNN"
    crash_prone = True

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("MNN",)

    def __init__(self) -> None:
        self._mod: Any = None

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        MNN = import_engine(self.name, "MNN")
        self._F = F = MNN.expr
        path = self._file(files, "model", "mnn")
        self._ins = [(t.engine_name or t.name, list(t.shape), getattr(F, _DTYPES.get(t.dtype, "float")))
                     for t in inputs]
        self._outs = [t.engine_name or t.name for t in outputs]
        config = {"backend": "CPU", "numThread": int(options.get("threads", 1) or 1),
                  "precision": "high" if not options.get("fp16") else "low"}
        try:
            rt = MNN.nn.create_runtime_manager((config,))
            self._mod = MNN.nn.load_module_from_file(str(path), [n for n, _, _ in self._ins], self._outs,
                                                     runtime_manager=rt)
        except Exception as exc:  # MNN raises bare Exception / SystemError
            raise EngineFailure(f"MNN could not load {path.name}: {exc}") from exc
        if self._mod is None:
            raise EngineFailure(f"MNN could not load {path.name}")
        self._nchw = F.NCHW
        # int8 models quantized with --keepInputFormat 0 want their input in MNN's packed NC4HW4.
        self._nc4hw4 = options.get("input_format") == "NC4HW4"

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        F = self._F
        args = [F.const(np.ascontiguousarray(feed[n]), shape, F.NCHW, dt) for n, shape, dt in self._ins]
        if self._nc4hw4:
            args = [F.convert(a, F.NC4HW4) for a in args]
        try:
            res = self._mod.onForward(args)
        except Exception as exc:
            raise EngineFailure(f"MNN run failed: {exc}") from exc
        out = {}
        for name, v in zip(self._outs, res):
            if v.data_format != self._nchw:
                v = F.convert(v, self._nchw)
            out[name] = np.array(v.read(), copy=True)
        return out

    def close(self) -> None:
        self._mod = None

"""ONNX Runtime adapter (CPU execution provider): the reference engine and the usual CPU fallback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    modules = ("onnxruntime",)

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("onnxruntime", "onnxruntime-gpu")

    def __init__(self) -> None:
        self._sess: Any = None
        self._out_names: list[str] = []

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        ort = import_engine(self.name, "onnxruntime")
        path = self._file(files, "model", "onnx")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = int(options.get("threads", 0))
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... classes
            raise EngineFailure(f"onnxruntime could not load {path.name}: {exc}") from exc
        self._out_names = [t.engine_name or t.name for t in outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self._sess.run(self._out_names, feed)
        except Exception as exc:
            raise EngineFailure(f"onnxruntime run failed: {exc}") from exc
        return dict(zip(self._out_names, res))

    def close(self) -> None:
        self._sess = None

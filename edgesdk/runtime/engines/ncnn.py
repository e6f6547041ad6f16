"""ncnn adapter (pip package `ncnn`): .param + .bin, CPU only, fp32 by default.

ncnn tensors have no batch axis: batch-1 inputs are passed as (C, H, W) and outputs are
reshaped back to the manifest's shape. fp16 storage/arithmetic are off unless the segment's
options ask for them ({"fp16": true}), so results match the reference within fp32 tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec


class NcnnEngine(Engine):
    name = "ncnn"
    modules = ("ncnn",)
    crash_prone = True  # a malformed .bin that load_model rejects can still segfault at extract()

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("ncnn",)

    def __init__(self) -> None:
        self._net: Any = None
        self._ncnn: Any = None
        self._outs: list[tuple[str, tuple[int, ...]]] = []

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        ncnn = self._ncnn = import_engine(self.name, "ncnn")
        param, binf = self._file(files, "param"), self._file(files, "bin", "model")
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = bool(options.get("vulkan", False))
        opt.num_threads = int(options.get("threads", 1) or 1)
        fp16 = bool(options.get("fp16", False))
        for attr in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            if hasattr(opt, attr):
                setattr(opt, attr, fp16 and "bf16" not in attr)
        if net.load_param(str(param)) != 0:
            raise EngineFailure(f"ncnn could not load {param.name} (load_param failed: not an ncnn .param file)")
        if net.load_model(str(binf)) != 0:
            raise EngineFailure(f"ncnn could not load {binf.name} (load_model failed: truncated or not matching "
                                f"{param.name})")
        self._net = net
        self._ins = [(t.engine_name or t.name) for t in inputs]
        self._outs = [(t.engine_name or t.name, t.shape) for t in outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        Mat = self._ncnn.Mat
        ex = self._net.create_extractor()
        for name, arr in feed.items():
            if arr.ndim >= 4 and arr.shape[0] == 1:
                arr = arr[0]
            # clone(): a Mat that merely wraps the numpy buffer crashes ncnn on some shapes
            # (e.g. 64x1x1 inputs of a squeeze-excite segment); the copy is small.
            ex.input(name, Mat(np.ascontiguousarray(arr)).clone())
        out = {}
        for name, shape in self._outs:
            ret, mat = ex.extract(name)
            if ret != 0:
                raise EngineFailure(f"ncnn extract({name!r}) failed with code {ret}")
            out[name] = np.array(mat).reshape(shape)
        return out

    def close(self) -> None:
        if self._net is not None:
            self._net.clear()
            self._net = None

"""ncnn adapter (pip package `ncnn`): .param + .bin, CPU only, fp32 by default.

ncnn tensors have no batch axis: batch-1 inputs are passed as (C, H, W) and outputs are
reshaped back to the manifest's shape. fp16 storage/arithmetic are off unless the segment's
options ask for them ({"fp16": true}), so results match the reference within fp32 tolerance.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec


@contextlib.contextmanager
def _native_output() -> Iterator[list[str]]:
    """Collect what native code prints to fds 1 and 2 meanwhile (its lines, filled after the block).

    ncnn reports why a load failed (``layer Tensor.slice not exists or registered``) only as console output.
    Without usable fds (closed, or not real files) nothing is captured and the output goes where it went."""
    lines: list[str] = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
    except (OSError, ValueError, AttributeError):
        yield lines
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            try:
                yield lines
            finally:
                _flush_c_stdio()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                tmp.seek(0)
                text = tmp.read().decode("utf-8", errors="replace")
                lines.extend(x.strip() for x in text.splitlines() if x.strip())
    finally:
        for fd in saved:
            os.close(fd)


def _echo(lines: list[str]) -> None:
    """What ncnn said during a load that succeeded (warnings): passed on to stderr."""
    if lines:
        sys.stderr.write("".join(x + "\n" for x in lines))


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


class NcnnEngine(Engine):
    name = "ncnn"
    modules = ("ncnn",)
    install_hint = "pip install ncnn"
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
        with _native_output() as said:  # ncnn prints its reason (e.g. an unknown layer) to stdout, not to us
            ret = net.load_param(str(param))
        if ret != 0:
            why = "; ".join(said) or "load_param failed: not an ncnn .param file"
            raise EngineFailure(f"ncnn could not load {param.name}: {why}")
        _echo(said)
        with _native_output() as said:
            ret = net.load_model(str(binf))
        if ret != 0:
            why = "; ".join(said) or "load_model failed"
            raise EngineFailure(f"ncnn could not load {binf.name} ({why}: truncated or not matching {param.name})")
        _echo(said)
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

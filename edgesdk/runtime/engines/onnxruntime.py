"""ONNX Runtime adapter (CPU execution provider): the reference engine and the usual CPU fallback."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec

_ALLOC = re.compile(r"Failed to allocate memory for requested buffer of size (\d+)")
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def describe_failure(exc: BaseException) -> str:
    """onnxruntime's error in a few words: an allocation failure says which node asked for how much; anything
    else is its first lines (never its C++ source locations)."""
    text = str(exc)
    m = _ALLOC.search(text)
    if m:
        n = int(m.group(1))
        node = _NODE.search(text)
        who = f"node {node.group(2)!r} ({node.group(1)})" if node else "a node"
        return (f"out of memory: {who} asked for {n} bytes ({n / 2**30:.3g} GiB), which onnxruntime could not "
                "allocate; the model's shapes are larger than this machine holds")
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return " ".join(lines[:3])[:2000] or type(exc).__name__


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    modules = ("onnxruntime",)
    install_hint = "pip install onnxruntime"

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
            raise EngineFailure(f"onnxruntime could not load {path.name}: {describe_failure(exc)}") from exc
        self._out_names = [t.engine_name or t.name for t in outputs]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self._sess.run(self._out_names, feed)
        except Exception as exc:
            raise EngineFailure(f"onnxruntime run failed: {describe_failure(exc)}") from exc
        return dict(zip(self._out_names, res))

    def close(self) -> None:
        self._sess = None

"""Fakes of the vendor runtimes that cannot run off their hardware, with exactly their documented API shape.

    pycoral.utils.edgetpu.make_interpreter(model_path, device=None)      Coral Edge TPU
    <interpreter module>.load_delegate("libedgetpu.so.1", options)       tflite-runtime / ai-edge-litert
    xir.Graph.deserialize(path).get_root_subgraph().toposort_child_subgraph()
    vart.Runner.create_runner(subgraph, "run"): get_input_tensors(), get_output_tensors(),
        execute_async(inputs, outputs) -> job id, wait(job id)           Vitis AI DPU
    hobot_dnn.pyeasy_dnn.load(path) -> [Model]: model.inputs[i].properties, model.forward(data)
        -> [output with .buffer and .properties]                          Horizon BPU

`modules_*()` return {module name: module object} to put into sys.modules (tests use
pytest's monkeypatch.setitem). The fakes compute a simple known function so that tests can
check what crossed the boundary (dtype, layout, quantization, NV12).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import numpy as np


def _module(name: str, **attrs: Any) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = ModuleSpec(name, loader=None)
    m.__dict__.update(attrs)
    return m


# -- Edge TPU --------------------------------------------------------------------------------------
@dataclass
class Calls:
    """What the code under test asked the fake for."""

    log: list[tuple[str, Any]] = field(default_factory=list)


def modules_pycoral(interpreter_factory: Callable[[str], Any], calls: Calls) -> dict[str, types.ModuleType]:
    """pycoral with make_interpreter(model_path, device=None, delegate=None) -> a TFLite Interpreter."""

    def make_interpreter(model_path_or_content: Any, device: str | None = None, delegate: Any = None) -> Any:
        calls.log.append(("make_interpreter", {"model": str(model_path_or_content), "device": device}))
        return interpreter_factory(str(model_path_or_content))

    edgetpu = _module("pycoral.utils.edgetpu", make_interpreter=make_interpreter)
    utils = _module("pycoral.utils", edgetpu=edgetpu)
    utils.__path__ = []  # a package
    pkg = _module("pycoral", utils=utils)
    pkg.__path__ = []
    return {"pycoral": pkg, "pycoral.utils": utils, "pycoral.utils.edgetpu": edgetpu}


def interpreter_module_with_delegate(real: Any, calls: Calls) -> types.ModuleType:
    """A tflite interpreter module whose load_delegate records the call and returns a token; the
    Interpreter is the real one on the CPU, accepting experimental_delegates as the real one does."""

    class Delegate:
        def __init__(self, library: str, options: dict) -> None:
            self.library, self.options = library, options

    def load_delegate(library: str, options: dict | None = None) -> Delegate:
        calls.log.append(("load_delegate", {"library": library, "options": dict(options or {})}))
        return Delegate(library, dict(options or {}))

    def Interpreter(model_path: str | None = None, experimental_delegates: list | None = None,
                    num_threads: int | None = None) -> Any:
        calls.log.append(("Interpreter", {"model_path": model_path,
                                          "delegates": [d.library for d in experimental_delegates or []]}))
        return real.Interpreter(model_path=model_path, num_threads=num_threads)

    return _module("fake_tflite_interpreter", load_delegate=load_delegate, Interpreter=Interpreter)


# -- Vitis AI (VART + XIR) ------------------------------------------------------------------------
class FakeXirTensor:
    def __init__(self, name: str, dims: tuple[int, ...], fix_point: int) -> None:
        self.name, self.dims, self.dtype = name, list(dims), "xint8"
        self._attrs = {"fix_point": fix_point}

    def get_attr(self, key: str) -> Any:
        return self._attrs[key]

    def has_attr(self, key: str) -> bool:
        return key in self._attrs


class FakeSubgraph:
    def __init__(self, name: str, device: str, children: list[FakeSubgraph] | None = None) -> None:
        self.name, self._attrs, self._children = name, {"device": device}, children or []

    def has_attr(self, key: str) -> bool:
        return key in self._attrs

    def get_attr(self, key: str) -> Any:
        return self._attrs[key]

    def toposort_child_subgraph(self) -> list[FakeSubgraph]:
        return list(self._children)


def modules_vart(in_dims: tuple[int, ...], out_dims: tuple[int, ...], fix_in: int, fix_out: int,
                 fn: Callable[[np.ndarray], np.ndarray], calls: Calls, dpu_subgraphs: int = 1) -> dict[str, Any]:
    """xir + vart. The DPU computes out_q = fn(in_q) on int8 arrays (NHWC, as the DPU sees them)."""

    class Graph:
        @staticmethod
        def deserialize(path: str) -> Graph:
            if not Path(path).is_file():
                raise RuntimeError(f"[XIR_FILE_NOT_EXIST] {path}")
            calls.log.append(("deserialize", path))
            return Graph()

        def get_root_subgraph(self) -> FakeSubgraph:
            kids = [FakeSubgraph("input", "USER")] + [FakeSubgraph(f"dpu{i}", "DPU") for i in range(dpu_subgraphs)]
            return FakeSubgraph("root", "", kids + [FakeSubgraph("softmax", "CPU")])

    class Runner:
        def __init__(self, sg: FakeSubgraph, mode: str) -> None:
            self._jobs: dict[int, tuple[list, list]] = {}

        @staticmethod
        def create_runner(subgraph: FakeSubgraph, mode: str = "run") -> Runner:
            if subgraph.get_attr("device") != "DPU":
                raise RuntimeError("not a DPU subgraph")
            calls.log.append(("create_runner", (subgraph.name, mode)))
            return Runner(subgraph, mode)

        def get_input_tensors(self) -> list[FakeXirTensor]:
            return [FakeXirTensor("input", in_dims, fix_in)]

        def get_output_tensors(self) -> list[FakeXirTensor]:
            return [FakeXirTensor("output", out_dims, fix_out)]

        def execute_async(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[int, int]:
            for a, t in zip(inputs, self.get_input_tensors()):
                if a.dtype != np.int8 or list(a.shape) != t.dims or not a.flags.c_contiguous:
                    raise ValueError(f"input must be C-contiguous int8 {t.dims}, got {a.dtype}{list(a.shape)}")
            calls.log.append(("execute_async", [a.copy() for a in inputs]))
            outputs[0][...] = fn(inputs[0])
            job = len(self._jobs) + 1
            self._jobs[job] = (inputs, outputs)
            return job, 0

        def wait(self, job: Any) -> int:
            jid = job[0] if isinstance(job, tuple) else job
            self._jobs.pop(jid)
            return 0

    xir = _module("xir", Graph=Graph)
    vart = _module("vart", Runner=Runner)
    return {"xir": xir, "vart": vart}


# -- Horizon BPU (hobot_dnn) ------------------------------------------------------------------------
@dataclass
class FakeProperties:
    tensor_type: str
    dtype: str
    layout: str
    shape: tuple[int, ...]
    scale_data: tuple[float, ...] = ()
    quantiType: int = 0


class FakeDNNTensor:
    def __init__(self, name: str, props: FakeProperties, buffer: np.ndarray | None = None) -> None:
        self.name, self.properties, self.buffer = name, props, buffer


class FakeBpuModel:
    def __init__(self, name: str, inputs: list[FakeDNNTensor], outputs: list[FakeDNNTensor],
                 fn: Callable[[Any], list[np.ndarray]], calls: Calls) -> None:
        self.name, self.inputs, self.outputs, self._fn, self._calls = name, inputs, outputs, fn, calls

    def forward(self, data: Any) -> list[FakeDNNTensor]:
        self._calls.log.append(("forward", data.copy() if isinstance(data, np.ndarray) else data))
        bufs = self._fn(data)
        return [FakeDNNTensor(o.name, o.properties, b) for o, b in zip(self.outputs, bufs)]


def modules_hobot(model: FakeBpuModel, calls: Calls) -> dict[str, Any]:
    def load(path: str) -> list[FakeBpuModel]:
        if not Path(path).is_file():
            raise RuntimeError(f"Model file {path} not found")
        calls.log.append(("load", path))
        return [model]

    pyeasy = _module("hobot_dnn.pyeasy_dnn", load=load)
    pkg = _module("hobot_dnn", pyeasy_dnn=pyeasy)
    pkg.__path__ = []
    return {"hobot_dnn": pkg, "hobot_dnn.pyeasy_dnn": pyeasy}


__all__ = ["Calls", "FakeBpuModel", "FakeDNNTensor", "FakeProperties", "FakeSubgraph", "FakeXirTensor",
           "interpreter_module_with_delegate", "modules_hobot", "modules_pycoral", "modules_vart"]

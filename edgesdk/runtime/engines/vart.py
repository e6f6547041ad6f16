"""Vitis AI DPU adapter (Kria KV260): VART `Runner` on the DPU subgraph of a compiled .xmodel.

NOT VERIFIED ON HARDWARE: written against the documented Vitis AI Python API
(xir.Graph.deserialize, get_root_subgraph().toposort_child_subgraph(), the "device" attribute,
vart.Runner.create_runner(subgraph, "run"), get_input_tensors()/get_output_tensors() with
.dims and the "fix_point" attribute, execute_async(inputs, outputs) + wait(job)), and
unit-tested against fakes of that shape (edgesdk.runtime.fakes).

DPU tensors are NHWC int8 with a power-of-two scale: real = q * 2**-fix_point. When the
manifest declares `quant` on a tensor, the Session (de)quantizes and this adapter passes int8
through; otherwise this adapter converts float <-> int8 with the runner's fix_point.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec


class VartEngine(Engine):
    name = "vart"
    modules = ("vart",)
    install_hint = "use the Vitis AI runtime image for the board (Kria KV260: the xlnx-vai runtime packages that provide the vart and xir Python modules)"
    per_layer_note = "per-layer DPU times come from vaitrace, not the VART Python API"

    @classmethod
    def available(cls) -> bool:
        from edgesdk.runtime.engines import _has_module

        return _has_module("vart") and _has_module("xir")

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("vart", "vitis-ai-runtime")

    def __init__(self) -> None:
        self._runner: Any = None

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        vart = import_engine(self.name, "vart")
        xir = import_engine(self.name, "xir")
        path = self._file(files, "model", "xmodel")
        try:
            graph = xir.Graph.deserialize(str(path))
            subgraphs = [s for s in graph.get_root_subgraph().toposort_child_subgraph()
                         if s.has_attr("device") and s.get_attr("device").upper() == "DPU"]
        except Exception as exc:
            raise EngineFailure(f"vart: could not read {path.name}: {exc}") from exc
        if len(subgraphs) != 1:
            raise EngineFailure(f"vart: {path.name} has {len(subgraphs)} DPU subgraphs; edgesdk puts one DPU "
                                "subgraph in each segment (re-convert the bundle)")
        try:
            self._runner = vart.Runner.create_runner(subgraphs[0], "run")
        except Exception as exc:
            raise EngineFailure(f"vart: create_runner failed for {path.name}: {exc}") from exc
        tin, tout = self._runner.get_input_tensors(), self._runner.get_output_tensors()
        if len(tin) != len(inputs) or len(tout) != len(outputs):
            raise EngineFailure(f"vart: {path.name} has {len(tin)} inputs/{len(tout)} outputs, the manifest "
                                f"{len(inputs)}/{len(outputs)}")
        # (name, dims, input scale 2**fix_point or None when the Session quantizes)
        self._ins = [(s.engine_name or s.name, tuple(t.dims), None if s.quant else 2.0 ** t.get_attr("fix_point"))
                     for s, t in zip(inputs, tin)]
        self._outs = [(s.engine_name or s.name, tuple(t.dims), None if s.quant else 2.0 ** -t.get_attr("fix_point"))
                      for s, t in zip(outputs, tout)]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        in_data = []
        for name, dims, scale in self._ins:
            x = feed[name]
            if scale is not None:
                x = np.clip(np.rint(x * scale), -128, 127)
            in_data.append(np.ascontiguousarray(x.reshape(dims), dtype=np.int8))
        out_data = [np.empty(dims, dtype=np.int8, order="C") for _, dims, _ in self._outs]
        try:
            job = self._runner.execute_async(in_data, out_data)
            self._runner.wait(job)
        except Exception as exc:
            raise EngineFailure(f"vart: execute_async failed: {exc}") from exc
        return {name: (o.astype(np.float32) * scale if scale is not None else o)
                for (name, _, scale), o in zip(self._outs, out_data)}

    def close(self) -> None:
        self._runner = None  # VART releases the DPU when the runner is garbage-collected

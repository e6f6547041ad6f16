"""TFLite adapter: ai-edge-litert (the current package) or tflite-runtime, whichever is installed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import INSTALL_HINTS, Engine
from edgesdk.runtime.errors import EngineFailure, EngineUnavailable
from edgesdk.runtime.manifest import TensorSpec

#: Interpreter modules, in order of preference.
INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def interpreter_module(engine: str = "tflite") -> Any:
    errors = []
    for mod in INTERPRETERS:
        try:
            return importlib.import_module(mod)
        except ImportError as exc:
            errors.append(f"{mod}: {exc}")
    raise EngineUnavailable(engine, INSTALL_HINTS[engine], "; ".join(errors))


class TFLiteEngine(Engine):
    name = "tflite"
    modules = ("ai_edge_litert", "tflite_runtime")
    install_hint = "pip install ai-edge-litert   (or tflite-runtime on Python <= 3.11 / older boards)"
    per_layer_note = "the TFLite Python interpreter does not expose its op profiler (benchmark_model --enable_op_profiling does, natively)"

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("ai-edge-litert", "tflite-runtime")

    def __init__(self) -> None:
        self._interp: Any = None

    def _make_interpreter(self, path: Path, options: Mapping[str, Any]) -> Any:
        mod = interpreter_module(self.name)
        return mod.Interpreter(model_path=str(path), num_threads=int(options.get("threads", 1) or 1))

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        path = self._file(files, "model", "tflite")
        try:
            it = self._make_interpreter(path, options)
            it.allocate_tensors()
        except (EngineUnavailable, EngineFailure):
            raise
        except Exception as exc:  # ValueError / RuntimeError from the interpreter wrapper
            raise EngineFailure(f"{self.name} could not load {path.name}: {exc}") from exc
        self._interp = it
        by_name = {d["name"]: d["index"] for d in it.get_input_details()}
        out_by_name = {d["name"]: d["index"] for d in it.get_output_details()}
        self._ins = self._indexes(inputs, by_name, "input", path)
        self._outs = self._indexes(outputs, out_by_name, "output", path)

    def _indexes(self, specs: tuple[TensorSpec, ...], by_name: dict[str, int], what: str,
                 path: Path) -> list[tuple[str, int]]:
        res = []
        order = list(by_name.values())
        for i, t in enumerate(specs):
            n = t.engine_name or t.name
            if n in by_name:
                res.append((n, by_name[n]))
            elif len(specs) == len(order):  # converters rename tensors (serving_default_x:0): go by position
                res.append((n, order[i]))
            else:
                raise EngineFailure(f"{self.name}: {path.name} has no {what} tensor {n!r} (it has {sorted(by_name)})")
        return res

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self._interp
        try:
            for name, idx in self._ins:
                it.set_tensor(idx, feed[name])
            it.invoke()
            return {name: it.get_tensor(idx) for name, idx in self._outs}
        except KeyError:
            raise
        except Exception as exc:
            raise EngineFailure(f"{self.name} run failed: {exc}") from exc

    def close(self) -> None:
        self._interp = None

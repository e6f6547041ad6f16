"""One way in for every command: any accepted model input -> ONNX -> safe load -> graph preparation.

inspect, partition, convert and flash all open a model here, so they see the same graph: the input formats
of `edgesdk.frontends` (ONNX, TorchScript, nn.Module, .tflite), the shapes fixed by --input-shape (or the
model's metadata), and the prepared graph of `edgesdk.graph.prepare` unless --no-prepare.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.graph.load import Model, load_model
from edgesdk.graph.prepare import Prepared, PrepareReport, prepare


@dataclass(frozen=True)
class Opened:
    """A model opened for analysis: what to analyse (`model`), the unprepared `original`, where it came from."""

    model: Model
    original: Model
    prepare: PrepareReport
    onnx_path: Path  # the ONNX the original was loaded from (the user's file, or an export in the work dir)
    kind: str  # onnx | torchscript | pytorch | tflite
    source: Path | None  # the user's file (None for an nn.Module)
    notes: tuple[str, ...]

    @property
    def prepared(self) -> Prepared:
        return Prepared(self.model, self.original, self.prepare, self.notes)


def load_source(model: Any, work: Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
                example_inputs: Any = None, trust_model: bool = False
                ) -> tuple[Model, Path, str, Path | None, tuple[str, ...]]:
    """(loaded original, its ONNX path, kind, the user's file, notes) for any accepted input.

    trust_model: let a TorchScript archive's code run (confined; see edgesdk.frontends); refused otherwise."""
    from edgesdk.frontends import to_onnx

    is_tflite = isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".tflite"
    # a .tflite's HardSwish (MobileNetV3 family) exists in ONNX from op set 14; 17 is what every engine reads
    src = to_onnx(model, work, input_shapes=input_shapes, example_inputs=example_inputs,
                  opset=17 if is_tflite else 13, trust_model=trust_model)
    shapes = input_shapes if src.kind in ("onnx", "tflite") else None  # an export has its shapes fixed
    m = load_model(src.path, shapes)
    return m, src.path, src.kind, src.original, tuple(src.notes) + m.notes


def open_model(model: Any, work: Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
               do_prepare: bool = True, example_inputs: Any = None, feed: Mapping[str, Any] | None = None,
               feed_source: str | None = None, trust_model: bool = False) -> Opened:
    """Open any accepted model input for analysis; exports go into `work` (the caller's temporary folder)."""
    m, path, kind, original, notes = load_source(model, work, input_shapes, example_inputs, trust_model)
    p = prepare(m, enabled=do_prepare, feed=feed, input_source=feed_source)
    return Opened(p.model, m, p.report, path, kind, original, notes)


@contextmanager
def opened(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None, do_prepare: bool = True,
           example_inputs: Any = None, trust_model: bool = False) -> Iterator[Opened]:
    """`open_model` with its own temporary work folder, removed on exit (inspect, partition)."""
    with tempfile.TemporaryDirectory(prefix="edgesdk-model-") as td:
        yield open_model(model, Path(td), input_shapes, do_prepare, example_inputs, trust_model=trust_model)


__all__ = ["Opened", "load_source", "open_model", "opened"]

"""Host int8 simulation of accelerator segments: quantized ONNX (QDQ) following each accelerator's scheme.

The vendors' own simulators (RKNN's, NNIE's PC library, Horizon's *_quantized_model.onnx) tell a
user the int8 accuracy before they own the board; this does the same with onnxruntime for every
accelerator edgesdk targets. It is a model of the quantization scheme, not the vendor's kernels:

| scheme   | weights                         | activations                  | scales            |
|----------|---------------------------------|------------------------------|-------------------|
| edgetpu  | int8 symmetric, per channel     | int8 asymmetric, per tensor  | float (TFLite)    |
| dpu      | int8 symmetric, per tensor      | int8 symmetric, per tensor   | powers of two     |
| nnie     | int8 symmetric, per tensor      | int8 symmetric, per tensor   | float             |
| bpu      | int8 symmetric, per channel     | int8 symmetric, per tensor   | float             |
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scheme:
    id: str
    per_channel: bool
    activation_symmetric: bool
    power_of_two: bool
    description: str


def _schemes() -> tuple[dict[str, Scheme], dict[str, str]]:
    """The schemes of the accelerators, from their toolchain records (toolchains/<id>/toolchain.yaml
    simulation_scheme), and each accelerator engine's scheme id."""
    from edgesdk.toolchains.spec import list_toolchains

    schemes: dict[str, Scheme] = {}
    by_engine: dict[str, str] = {}
    for t in list_toolchains():
        sc = t.simulation_scheme
        if sc is None:
            continue
        sid = sc.id or t.engine
        schemes[sid] = Scheme(sid, sc.per_channel, sc.activation_symmetric, sc.power_of_two, sc.description)
        by_engine[t.engine] = sid
    return schemes, by_engine


#: scheme id -> scheme; runtime engine of an accelerator -> its scheme id
SCHEMES, ENGINE_SCHEME = _schemes()


def pow2_scale(s: np.ndarray) -> np.ndarray:
    """The power of two at or above each scale (never clips more than the calibrated range)."""
    s = np.asarray(s, np.float64)
    return np.power(2.0, np.ceil(np.log2(np.maximum(s, np.finfo(np.float32).tiny)))).astype(np.float32)


def make_pow2(model: Any) -> Any:
    """Round every QDQ scale of an onnxruntime QDQ model to a power of two, requantizing int8 weights.

    int32 biases are dequantized back to float (the DPU keeps biases at higher precision; their
    scale depends on the rounded input and weight scales, which this keeps simple)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    done: set[str] = set()
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        s_name = n.input[1]
        data = n.input[0]
        if n.op_type == "DequantizeLinear" and data in inits:  # a constant: weight (int8) or bias (int32)
            q = numpy_helper.to_array(inits[data]).astype(np.float64)
            s = numpy_helper.to_array(inits[s_name]).astype(np.float64)
            zp = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) if len(n.input) > 2 and n.input[2] in inits else 0.0
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shp = [1] * q.ndim
            if s.ndim == 1 and s.size > 1:
                shp[axis] = s.size
            w = (q - np.reshape(zp, shp) if np.ndim(zp) else q - zp) * (s.reshape(shp) if s.ndim else s)
            if inits[data].data_type == 6:  # int32 bias
                n.op_type = "Identity"
                del n.input[1:]
                inits[data].CopyFrom(numpy_helper.from_array(w.astype(np.float32), data))
                continue
            s2 = pow2_scale(s)
            q2 = np.clip(np.rint(w / (s2.reshape(shp) if s2.ndim else s2)), -128, 127).astype(np.int8)
            inits[data].CopyFrom(numpy_helper.from_array(q2, data))
            if s_name not in done:
                inits[s_name].CopyFrom(numpy_helper.from_array(s2.astype(np.float32), s_name))
                done.add(s_name)
            continue
        if s_name not in done:
            s = numpy_helper.to_array(inits[s_name])
            inits[s_name].CopyFrom(numpy_helper.from_array(pow2_scale(s).reshape(s.shape), s_name))
            done.add(s_name)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def quantize(model: str | Path, calib: str | Path, out: str | Path, scheme: str, exclude: Sequence[str] = ()
             ) -> Path:
    """Quantize `model` (ONNX) to a QDQ ONNX following `scheme`, calibrated on the arrays of `calib` (.npz); the
    nodes `exclude` stay in float (mixed precision's search on an accelerator: those layers then go to the CPU)."""
    import logging

    import onnx
    import onnxruntime as ort

    from edgesdk.toolchains.adapters._ort_tool import _quantize

    sc = SCHEMES[scheme]
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    _quantize(str(model), str(calib), str(out), sc.per_channel,
              extra_options={"ActivationSymmetric": sc.activation_symmetric, "WeightSymmetric": True},
              exclude=list(exclude))
    if sc.power_of_two:
        m = make_pow2(onnx.load(str(out)))
        onnx.save(m, str(out))
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="edgesdk-simulate", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scheme", required=True, choices=sorted(SCHEMES))
    a = ap.parse_args(argv)
    quantize(a.model, a.calib, a.out, a.scheme)


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = ["ENGINE_SCHEME", "SCHEMES", "Scheme", "make_pow2", "pow2_scale", "quantize"]

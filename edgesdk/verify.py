"""`edgesdk verify`: run a bundle on the host with its real engines and compare it with the fp32 ONNX model
(for a bundle made from a .tflite: with the TFLite interpreter on that .tflite, or the bundle's reference outputs).

Per output: cosine similarity, max absolute error, that error relative to the reference's range,
and top-1 agreement for classifier outputs. For int8 bundles, a per-layer view in the manner of
RKNN's accuracy_analysis: the fp32 model and an onnxruntime int8 (QDQ) simulation of it, compared
node by node in topological order, naming the first layer whose cosine drops below the threshold.
That view measures where int8 rounding hurts this graph; it is a simulation, not the engine's own
kernels (engines do not expose their intermediate tensors the same way); the engine's outputs
themselves are what the pass/fail compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import EdgeSDKError, InputError, ModelError

# the one reference check (board package): verify, convert's artifact check, the smoke test and the profiler
from edgesdk.runtime.reference import OutputMetrics, compare, cosine

#: Per-layer cosine below which a layer is named (when the bundle's tolerance gives none).
LAYER_COSINE = 0.99


@dataclass(frozen=True)
class LayerMetric:
    node: str
    op_type: str
    tensor: str
    cosine: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "tensor": self.tensor, "cosine": self.cosine}


@dataclass(frozen=True)
class VerifyReport:
    bundle: Path
    bundle_id: str
    precision: str
    samples: int
    source: str  # "reference" | "data"
    compared_with: str  # what the outputs were compared against
    outputs: tuple[OutputMetrics, ...]
    engines: tuple[dict[str, Any], ...]
    tolerance: dict[str, Any]
    layers: tuple[LayerMetric, ...] = ()
    layer_threshold: float | None = None
    first_bad_layer: LayerMetric | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "bundle_id": self.bundle_id, "precision": self.precision,
                "ok": self.ok, "samples": self.samples, "source": self.source, "compared_with": self.compared_with,
                "tolerance": self.tolerance, "outputs": [o.to_dict() for o in self.outputs],
                "engines": list(self.engines), "per_layer": {
                    "threshold": self.layer_threshold,
                    "first_below": self.first_bad_layer.to_dict() if self.first_bad_layer else None,
                    "what": "fp32 ONNX vs onnxruntime int8 QDQ simulation, accumulated error, topological order",
                    "layers": [x.to_dict() for x in self.layers]} if self.layers else None,
                "notes": list(self.notes)}


def _first_line(exc: BaseException) -> str:
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    return " ".join(lines[:3]) or type(exc).__name__


def _ncnn_layers_known(bundle: Path, manifest: Any) -> None:
    """An ncnn segment whose .param names a layer this ncnn lacks: say which, before ncnn says only 'failed'."""
    from edgesdk.runtime.engines import is_available
    from edgesdk.runtime.errors import EngineFailure
    from edgesdk.toolchains.check import ncnn_layer_problem

    if not any(sg.engine == "ncnn" for sg in manifest.segments) or not is_available("ncnn"):
        return
    for sg in manifest.segments:
        if sg.engine == "ncnn" and "param" in sg.files:
            why = ncnn_layer_problem(bundle / sg.files["param"])
            if why:
                raise EngineFailure(f"segment {sg.id!r} of {bundle}: {why}")


def _find_model(bundle: Path, manifest: Any, model: str | Path | None) -> tuple[Path | None, str | None]:
    """The fp32 ONNX the bundle was made from: --model, else the manifest's source path (checked by sha256)."""
    from edgesdk.runtime.manifest import sha256_file

    src = manifest.source_model
    if model is not None:
        p = Path(model)
        if not p.is_file():
            raise InputError(f"--model {p} does not exist")
        note = None
        if src.get("sha256") and sha256_file(p) != src["sha256"]:
            note = f"{p} is not the model this bundle was converted from (sha256 differs)"
        return p, note
    path = src.get("path") or ""
    if not path:
        return None, None
    p = Path(path) if Path(path).is_absolute() else bundle / path
    if not p.is_file():
        return None, f"the source model {p} is not on this machine; comparing with the bundle's reference outputs"
    if src.get("sha256") and sha256_file(p) != src["sha256"]:
        return None, f"{p} changed since conversion (sha256 differs); comparing with the bundle's reference outputs"
    return p, None


def per_layer(model_path: Path, samples: list[dict[str, Any]], threshold: float,
              input_shapes: Mapping[str, Any] | None = None) -> tuple[list[LayerMetric], Any]:
    """fp32 vs onnxruntime QDQ int8 simulation, every float node output, in topological order."""
    import tempfile

    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgesdk.conversion import ort_session, with_outputs
    from edgesdk.graph.load import load_model, load_weights

    m = load_model(model_path, input_shapes)
    full = load_weights(m)
    names = [o for n in m.nodes for o in n.output if o and o in m.tensors and m.tensors[o].dtype == "float32"]
    fp = ort_session(with_outputs(full, names, m.tensors))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.it, None)

    import logging

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # quantize_static's advice lines
    with tempfile.TemporaryDirectory(prefix="edgesdk-verify-") as d:
        src, dst = Path(d) / "fp32.onnx", Path(d) / "qdq.onnx"
        onnx.save_model(full, str(src))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        q_proto = onnx.load(str(dst))
    # What the next layer sees in the simulation: X -> QuantizeLinear -> DequantizeLinear -> X'. Reading X'
    # (not X) also keeps fused activations right: quantize_static drops a Relu into its Conv's quantization.
    q_out = {o for n in q_proto.graph.node for o in n.output}
    quant_of = {n.input[0]: n.output[0] for n in q_proto.graph.node if n.op_type == "QuantizeLinear"}
    deq_of = {n.input[0]: n.output[0] for n in q_proto.graph.node if n.op_type == "DequantizeLinear"}
    seen = {t: deq_of[quant_of[t]] for t in names if t in quant_of and quant_of[t] in deq_of}
    seen.update({t: t for t in names if t not in seen and t in q_out})
    common = [n for n in names if n in seen]
    shapes = {**m.tensors, **{seen[t]: m.tensors[t] for t in common}}
    qs = ort_session(with_outputs(q_proto, [seen[t] for t in common], shapes))
    layers = []
    per_node = {o: (n.name, n.op_type) for n in m.nodes for o in n.output}
    a_all = [dict(zip(common, fp.run(common, s))) for s in samples]
    b_all = [dict(zip(common, qs.run([seen[t] for t in common], s))) for s in samples]
    for t in common:
        c = float(np.mean([cosine(a[t], b[t]) for a, b in zip(a_all, b_all)]))
        node, op = per_node[t]
        layers.append(LayerMetric(node, op, t, c))
    first = next((x for x in layers if x.cosine < threshold), None)
    return layers, first


def verify(bundle: str | Path, data: str | Path | None = None, model: str | Path | None = None,
           layers: bool = True, limit: int | None = None) -> VerifyReport:
    """Run `bundle` with its engines on this machine and compare its outputs with the fp32 model."""
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.session import Session

    b = Path(bundle)
    if not b.is_dir():
        raise InputError(f"bundle {b} does not exist (or is not a directory)")
    mf = load_manifest(b, verify=True)
    model_path, note = _find_model(b, mf, model)
    notes = [note] if note else []
    import numpy as np

    if data is not None:
        if model_path is None:
            raise InputError("--data needs the model to compare with: pass --model MODEL.onnx (or the source "
                             "MODEL.tflite for a bundle made from one)")
        cset = load_calibration(data, [InputSpec(t.name, t.shape, t.dtype) for t in mf.inputs], mf.preprocess,
                                limit=limit)
        samples = [cset.sample(i) for i in range(cset.count)]
        source = "data"
    else:
        samples = [{n: np.load(b / rel, allow_pickle=False) for n, rel in mf.reference_inputs.items()}]
        source = "reference"
    if not samples:
        raise InputError("nothing to verify: no samples")

    tflite_src = model_path is not None and model_path.suffix.lower() == ".tflite"
    if tflite_src:  # a bundle made from a .tflite: its source is the reference (there is no ONNX original)
        from edgesdk.tflite_source import run_tflite

        try:
            refs = run_tflite(model_path, samples)  # type: ignore[arg-type]
        except EdgeSDKError:
            raise
        except Exception as exc:  # noqa: BLE001 - the interpreter's own errors (ValueError, RuntimeError)
            raise ModelError(f"the TFLite interpreter cannot run the source model {model_path}: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from exc
        compared = f"the TFLite interpreter on {model_path.name} (the source .tflite; there is no ONNX original)"
    elif model_path is not None:
        from edgesdk.conversion import ort_session
        from edgesdk.graph.load import load_model, load_weights

        shapes = {t.name: t.shape for t in mf.inputs}
        loaded = load_model(model_path, shapes)
        try:
            sess = ort_session(load_weights(loaded))
        except EdgeSDKError:
            raise
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"onnxruntime cannot load the reference model {model_path}: {_first_line(exc)}") from exc
        names = [t.name for t in mf.outputs]
        missing = [n for n in names if n not in loaded.outputs]
        if missing:
            raise InputError(f"{model_path} has no output(s) {missing} (it has {list(loaded.outputs)}): it is not the "
                             "model this bundle was converted from; pass the right one with --model")
        try:
            refs = [dict(zip(names, sess.run(names, s))) for s in samples]
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot run the reference model {model_path} on the bundle's inputs: "
                             f"{_first_line(exc)}") from exc
        compared = f"onnxruntime on {model_path.name} (fp32)"
    else:
        refs = [{n: np.load(b / rel, allow_pickle=False) for n, rel in mf.reference_outputs.items()}]
        compared = ("the bundle's reference outputs (the TFLite interpreter on the source .tflite at conversion; "
                    "there is no ONNX original)" if mf.source_model.get("kind") == "tflite" else
                    "the bundle's reference outputs (onnxruntime on the fp32 model at conversion)")

    # accelerator segments carry their host int8 simulation as a CPU version: run it when the accelerator is absent
    fallback = "cpu" if any(sg.cpu_version is not None for sg in mf.segments) else "error"
    _ncnn_layers_known(b, mf)
    with Session(b, fallback=fallback) as s:
        got = [s.run(x) for x in samples]
        engines = tuple({"segment": u.segment, "engine": u.engine, "version": u.version,
                         "fallback": u.reason if u.fallback else None} for u in s.engines_used)
        for u in s.engines_used:
            if u.fallback:
                what = "its host int8 simulation" if u.engine == "onnxruntime" else "its CPU version"
                notes.append(f"segment {u.segment} ran {what} on {u.engine}, not the {u.planned} accelerator "
                             f"({u.reason})")
    for sg in mf.segments:
        if sg.reason and "host int8 simulation" in sg.reason:
            notes.append(f"segment {sg.id} is the host int8 simulation of its accelerator segment (not compiled here)")
    outs = tuple(compare(t.name, [g[t.name] for g in got], [r[t.name] for r in refs], mf.tolerance)
                 for t in mf.outputs)

    lay: list[LayerMetric] = []
    first = None
    thr = None
    if layers and mf.precision == "int8":
        if mf.source_model.get("kind") == "tflite" and (model_path is None or tflite_src):
            notes.append("per-layer comparison skipped: the source is a .tflite, there is no fp32 ONNX model")
        elif model_path is None:
            notes.append("per-layer comparison skipped: it needs the fp32 model (--model)")
        else:
            thr = mf.tolerance.cosine_min or LAYER_COSINE
            try:
                lay, first = per_layer(model_path, samples, thr, {t.name: t.shape for t in mf.inputs})
            except EdgeSDKError:
                raise
            except Exception as exc:  # noqa: BLE001 - the per-layer view is extra: the verdict stands
                thr = None
                notes.append(f"per-layer comparison skipped: the onnxruntime int8 simulation failed: "
                             f"{type(exc).__name__}: {_first_line(exc)}")
    tol = {"max_abs_rel": mf.tolerance.max_abs_rel, "cosine_min": mf.tolerance.cosine_min}
    return VerifyReport(b, mf.bundle_id, mf.precision, len(samples), source, compared, outs, engines, tol,
                        tuple(lay), thr, first, tuple(notes))


def evaluate_accuracy(bundle: str | Path, images: Any, labels: Any, output: str | None = None) -> float:
    """Top-1 accuracy of a classifier bundle on images (N x H x W x 3 uint8 BGR), with its declared preprocessing."""
    import numpy as np

    from edgesdk.runtime.session import Session

    with Session(bundle) as s:
        name = output or s.outputs[0].name
        pre = s.manifest.preprocess
        if pre is None:
            raise InputError(f"{bundle}: the manifest declares no preprocessing; accuracy needs images")
        hits = 0
        for img, y in zip(images, labels):
            feed, _ = s.preprocess(img)
            hits += int(np.argmax(s.run(feed)[name]) == int(y))
    return hits / max(1, len(labels))



__all__ = ["LAYER_COSINE", "LayerMetric", "OutputMetrics", "VerifyReport", "compare", "cosine", "evaluate_accuracy",
           "per_layer", "verify"]

"""`edgesdk verify`: run a bundle on the host with its real engines and compare it with the fp32 ONNX model
(for a bundle made from a .tflite: with the TFLite interpreter on that .tflite, or the bundle's reference outputs).

Per output: cosine similarity, max absolute error, that error relative to the reference's range,
and top-1 agreement for classifier outputs. For int8 bundles, a per-layer view in the manner of
RKNN's accuracy_analysis: the fp32 model and an onnxruntime int8 (QDQ) simulation of it, compared
node by node in topological order, naming the first layer whose cosine drops below the threshold.
That view measures where int8 rounding hurts this graph; it is a simulation, not the engine's own
kernels (engines do not expose their intermediate tensors the same way); the engine's outputs
themselves are what the pass/fail compares.

With `eval_dir` (verify --eval DIR), the samples are real images and each output also gets its task metric
against the fp32 model's own outputs (edgesdk.evaluate: mAP@0.5, top-1 agreement, mIoU, CER). With a
`target` (METRIC=VALUE), that target is the verdict; without one the verdict stays the tensor tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import EdgeSDKError, InputError, ModelError
from edgesdk.evaluate import METRIC_NAMES, TARGET_METRICS, EvalSummary

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
class TargetCheck:
    """verify --target METRIC=VALUE: the measured value (the worst over the outputs it applies to)."""

    metric: str
    target: float
    value: float
    ok: bool
    where: str  # which outputs the value comes from

    @property
    def message(self) -> str:
        rel = ">=" if TARGET_METRICS[self.metric] == "min" else "<="
        verb = "meets" if self.ok else "misses"
        return (f"{METRIC_NAMES[self.metric]} {self.value:.4f} ({self.where}) {verb} the target "
                f"{self.metric} {rel} {self.target:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "target": self.target, "value": self.value, "ok": self.ok,
                "where": self.where, "message": self.message}


@dataclass(frozen=True)
class VerifyReport:
    bundle: Path
    bundle_id: str
    precision: str
    samples: int
    source: str  # "reference" | "data" | "eval"
    compared_with: str  # what the outputs were compared against
    outputs: tuple[OutputMetrics, ...]
    engines: tuple[dict[str, Any], ...]
    tolerance: dict[str, Any]
    layers: tuple[LayerMetric, ...] = ()
    layer_threshold: float | None = None
    first_bad_layer: LayerMetric | None = None
    notes: tuple[str, ...] = field(default=())
    evaluation: EvalSummary | None = None
    target: TargetCheck | None = None
    sensitivity: tuple[dict[str, Any], ...] = ()  # the layers that hurt most when quantized alone (--sensitivity)
    #: the vendor compiler's own per-layer comparison, per accelerator segment that carries one (RKNN's
    #: accuracy_analysis): {"segment", "tool", "against", "sample", "threshold", "first_below", "layers"}
    vendor_layers: tuple[dict[str, Any], ...] = ()

    @property
    def tolerance_ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def ok(self) -> bool:
        """The verdict: the target when one is given, else the tensor tolerance."""
        return self.target.ok if self.target is not None else self.tolerance_ok

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "bundle_id": self.bundle_id, "precision": self.precision,
                "ok": self.ok, "verdict": "target" if self.target is not None else "tolerance",
                "tolerance_ok": self.tolerance_ok, "samples": self.samples, "source": self.source, "compared_with": self.compared_with,
                "tolerance": self.tolerance, "outputs": [o.to_dict() for o in self.outputs],
                "engines": list(self.engines), "per_layer": {
                    "threshold": self.layer_threshold,
                    "first_below": self.first_bad_layer.to_dict() if self.first_bad_layer else None,
                    "what": "fp32 ONNX vs onnxruntime int8 QDQ simulation, accumulated error, topological order",
                    "layers": [x.to_dict() for x in self.layers]} if self.layers else None,
                "eval": self.evaluation.to_dict() if self.evaluation else None,
                "target": self.target.to_dict() if self.target else None,
                "sensitivity": {"what": "each layer alone quantized (its inputs and outputs through the calibrated "
                                        "Q/DQ of onnxruntime int8), the worst output cosine; most harmful first",
                                "layers": list(self.sensitivity)} if self.sensitivity else None,
                "vendor_per_layer": list(self.vendor_layers) or None,
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


def _save_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    """Feeds (batch axis 1) as the calibration .npz format: N samples stacked on axis 0, one array per input."""
    import numpy as np

    np.savez(path, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})


def per_layer(model_path: Path, samples: list[dict[str, Any]], threshold: float,
              input_shapes: Mapping[str, Any] | None = None) -> tuple[list[LayerMetric], Any]:
    """fp32 vs onnxruntime QDQ int8 simulation, every float node output, in topological order."""
    import tempfile

    import numpy as np
    import onnx

    from edgesdk.conversion import ort_session, with_outputs
    from edgesdk.graph.load import load_model, load_weights
    from edgesdk.toolchains.adapters._ort_tool import _quantize

    m = load_model(model_path, input_shapes)
    full = load_weights(m)
    names = [o for n in m.nodes for o in n.output if o and o in m.tensors and m.tensors[o].dtype == "float32"]
    fp = ort_session(with_outputs(full, names, m.tensors))

    with tempfile.TemporaryDirectory(prefix="edgesdk-verify-") as d:
        src, dst, cal = Path(d) / "fp32.onnx", Path(d) / "qdq.onnx", Path(d) / "calib.npz"
        onnx.save_model(full, str(src))
        _save_samples(cal, samples)
        # the adapter's own quantization: below opset 13 it upgrades the model first (per-channel DequantizeLinear
        # needs `axis`), or quantizes weights per tensor
        _quantize(str(src), str(cal), str(dst), True)
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


def _input_hw(mf: Any) -> tuple[int, int] | None:
    """The model's image height and width (the preprocessing's size, else the first 4-D input's shape)."""
    from edgesdk.preprocess_config import infer_input_layout

    if mf.preprocess is not None:
        return tuple(mf.preprocess.size)  # type: ignore[return-value]
    guess = next((g for g in (infer_input_layout(t.shape) for t in mf.inputs) if g is not None), None)
    return guess[1] if guess else None


def _target_check(target: tuple[str, float], outs: tuple[OutputMetrics, ...], ev: EvalSummary | None) -> TargetCheck:
    """The measured value of the target's metric: the worst over the outputs it applies to."""
    from edgesdk.evaluate import meets_target

    metric, want = target
    if metric == "cosine":
        worst = min(outs, key=lambda o: o.cosine_min)
        return TargetCheck(metric, want, worst.cosine_min, meets_target(metric, want, worst.cosine_min),
                           f"output {worst.name}, smallest over the samples")
    # verify() has refused, before running anything, a task-metric target that no planned task measures
    assert ev is not None
    found = ev.value(metric)
    undefined = [t for t in found if t.value is None]
    if undefined:
        why = "; ".join(undefined[0].notes) or "nothing to compare"
        raise InputError(f"--target {metric}=...: {METRIC_NAMES[metric]} of {'+'.join(undefined[0].outputs)} is "
                         f"undefined on {ev.directory}: {why}")
    pick = max if TARGET_METRICS[metric] == "max" else min
    worst_t = pick(found, key=lambda t: float(t.value))  # type: ignore[arg-type]
    value = float(worst_t.value)  # type: ignore[arg-type]
    return TargetCheck(metric, want, value, meets_target(metric, want, value),
                       f"{worst_t.task} on {'+'.join(worst_t.outputs)}, {ev.images} image(s)")


def verify(bundle: str | Path, data: str | Path | None = None, model: str | Path | None = None,
           layers: bool = True, limit: int | None = None, eval_dir: str | Path | None = None,
           task: str | None = None, postprocess: str | Path | None = None, charset: str | Path | None = None,
           blank: int = 0, target: str | None = None, sensitivity: bool = False) -> VerifyReport:
    """Run `bundle` with its engines on this machine and compare its outputs with the fp32 model.

    eval_dir: real images (preprocessed as the manifest declares, like `data`); adds the task metrics
    (edgesdk.evaluate) of each output against the fp32 model on them. task: detect|classify|segment|ctc for
    outputs no postprocess decodes. postprocess: a YAML file with a yolo/classification postprocess, for a
    bundle that declares none (or to replace its own). charset, blank: the CTC decode. target: METRIC=VALUE
    (edgesdk.evaluate.parse_target); when given, it is the verdict.
    """
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.evaluate import (
        TASK_METRIC,
        TaskPlan,
        evaluate,
        load_charset,
        load_postprocess,
        parse_target,
        plan_tasks,
    )
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.session import Session

    b = Path(bundle)
    if not b.is_dir():
        raise InputError(f"bundle {b} does not exist (or is not a directory)")
    if data is not None and eval_dir is not None:
        raise InputError("give --data or --eval, not both (--eval also reports the tensor metrics)")
    want = parse_target(target) if target is not None else None
    if want is not None and want[0] != "cosine" and eval_dir is None:
        raise InputError(f"--target {target}: {METRIC_NAMES[want[0]]} is measured on real images: give --eval DIR")
    mf = load_manifest(b, verify=True)
    model_path, note = _find_model(b, mf, model)
    notes = [note] if note else []
    post, post_from = mf.postprocess, "manifest postprocess"
    if postprocess is not None:
        post, post_from = load_postprocess(postprocess, [t.name for t in mf.outputs]), f"--postprocess {postprocess}"
        if mf.postprocess is not None and mf.postprocess.kind != "none":
            notes.append(f"--postprocess {postprocess} replaces the manifest's {mf.postprocess.kind} postprocess "
                         "for the task metrics")
    chars = load_charset(charset) if charset is not None else None
    plans: list[TaskPlan] = []
    if eval_dir is not None:
        plans, eval_notes = plan_tasks(mf.outputs, _input_hw(mf), post, post_from, task)
        if want is not None and want[0] != "cosine" and not any(TASK_METRIC[p.task] == want[0] for p in plans):
            tasks = ", ".join(f"{p.task} on {'+'.join(p.outputs)}" for p in plans) or "none"
            raise InputError(f"--target {target}: no output of this bundle has a {METRIC_NAMES[want[0]]} metric "
                             f"(task metrics: {tasks}); see --task and --postprocess")
    elif task is not None or postprocess is not None or charset is not None:
        notes.append("--task/--postprocess/--charset apply to the task metrics: they need --eval DIR")
    import numpy as np

    if data is not None or eval_dir is not None:
        flag = "--data" if data is not None else "--eval"
        if model_path is None:
            raise InputError(f"{flag} needs the model to compare with: pass --model MODEL.onnx (or the source "
                             "MODEL.tflite for a bundle made from one)")
        cset = load_calibration(data if data is not None else eval_dir,  # type: ignore[arg-type]
                                [InputSpec(t.name, t.shape, t.dtype) for t in mf.inputs], mf.preprocess,
                                limit=limit, what=flag)
        samples = [cset.sample(i) for i in range(cset.count)]
        source = "data" if data is not None else "eval"
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
    evaluation = None
    if eval_dir is not None:
        names = [t.name for t in mf.outputs]
        results = evaluate(plans, got, refs, post, names, chars, str(charset) if charset else None, blank)
        evaluation = EvalSummary(Path(eval_dir), len(samples), tuple(results), tuple(eval_notes))
    check = _target_check(want, outs, evaluation) if want is not None else None

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
    vendor = _vendor_layers(b, mf, thr or mf.tolerance.cosine_min or LAYER_COSINE, notes) if layers else []
    hurts: list[dict[str, Any]] = []
    if sensitivity:
        if tflite_src or (model_path is None and mf.source_model.get("kind") == "tflite"):
            notes.append("sensitivity skipped: the source is a .tflite, there is no fp32 ONNX model")
        elif model_path is None:
            notes.append("sensitivity skipped: it needs the fp32 ONNX model (--model)")
        else:
            hurts = _sensitivity(model_path, samples, notes)
    tol = {"max_abs_rel": mf.tolerance.max_abs_rel, "cosine_min": mf.tolerance.cosine_min}
    return VerifyReport(b, mf.bundle_id, mf.precision, len(samples), source, compared, outs, engines, tol,
                        tuple(lay), thr, first, tuple(notes), evaluation, check, tuple(hurts), tuple(vendor))


def _vendor_layers(bundle: Path, mf: Any, threshold: float, notes: list[str]) -> list[dict[str, Any]]:
    """The per-layer comparisons the vendor compilers made at conversion (a segment's `vendor_layers` file: RKNN's
    accuracy_analysis, its simulator against its float run), with the first layer below `threshold`. They are the
    compiler's own kernels, where the onnxruntime view above is edgesdk's simulation."""
    import json

    out = []
    for sg in mf.segments:
        rel = sg.files.get("vendor_layers")
        if rel is None:
            continue
        try:
            doc = json.loads((bundle / rel).read_text(encoding="utf-8"))
            rows = [r for r in doc["layers"] if isinstance(r.get("cosine"), (int, float))]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"segment {sg.id}: its vendor per-layer file {rel} is unreadable ({exc}): skipped")
            continue
        first = next((r for r in rows if r["cosine"] < threshold), None)
        out.append({"segment": sg.id, "tool": doc.get("tool", ""), "against": doc.get("against", ""),
                    "sample": doc.get("sample", ""), "threshold": threshold, "first_below": first, "layers": rows})
    return out


#: verify --sensitivity lists this many layers.
SENSITIVITY_TOP = 10


def _sensitivity(model_path: Path, samples: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """The layers that hurt most when each alone is int8 (edgesdk.quantize.sensitivity), calibrated and measured on
    the verification samples, as the per-layer view is."""
    import tempfile

    from edgesdk.quantize import sensitivity

    with tempfile.TemporaryDirectory(prefix="edgesdk-verify-sens-") as d:
        cal = Path(d) / "samples.npz"
        _save_samples(cal, samples)
        try:
            ranked = sensitivity(model_path, cal, samples[:8])
        except Exception as exc:  # noqa: BLE001 - the view is extra: the verdict stands
            notes.append(f"sensitivity skipped: the onnxruntime int8 simulation failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}")
            return []
    return [x.to_dict() for x in ranked[:SENSITIVITY_TOP]]


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



__all__ = ["LAYER_COSINE", "LayerMetric", "OutputMetrics", "TargetCheck", "VerifyReport", "compare", "cosine", "evaluate_accuracy",
           "per_layer", "verify"]

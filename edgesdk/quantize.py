"""int8 that is chosen, not assumed (onnxruntime QDQ): the calibration method, per-layer sensitivity, and the
smallest set of layers to keep in float so that a metric meets a target (mixed precision).

    samples = load_samples("eval.npz")                                   # feeds {input: 1 x ...}
    q = quantize_ort("m.onnx", "calib.npz", "q.onnx", method="entropy", exclude=["/head/Concat"])
    layers = sensitivity("m.onnx", "calib.npz", samples)                 # most harmful alone first
    best, scores = choose_method("m.onnx", "calib.npz", holdout=[12, 13, 14, 15])
    result = search("m.onnx", "calib.npz", layers, output_cosine("m.onnx", samples), target=0.99)
    # then convert with job.options {"calibrate_method": best, "exclude_nodes": list(result.kept)}

A metric is a callable that takes the path of a quantized ONNX model and returns a float; `output_cosine(model,
samples)` is the default one: the worst cosine, over samples and outputs, that edgesdk.runtime.reference.compare
finds against the fp32 model (the judge verify and the smoke test use, so it judges per component where compare
does). choose_method takes a metric factory instead, `samples -> metric`, because it makes its own held-back samples.

Node names are those of `model` as edgesdk.graph.load.load_model reads it (unnamed nodes get its names; an
opset-11/12 model is first upgraded to opset 13, which keeps them): run sensitivity and search on the ONNX file the
onnxruntime adapter quantizes (the segment), so that `exclude_nodes` names its nodes.

Why opset 13: onnxruntime's per-channel weights write DequantizeLinear with `axis`, which older opsets lack. Models
below it are upgraded with onnx's version converter; where the converter fails, weights are quantized per tensor.
`Quantized.opset_note` says which happened.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError, ModelError
from edgesdk.toolchains.adapters._ort_tool import (
    METHODS,
    PER_CHANNEL_OPSET,
    _quantize,
    onnx_opset,
    upgrade_opset,
)

#: A feed of one sample: input name -> array with the batch axis of 1.
Feed = Mapping[str, Any]
#: Quantized ONNX path -> score.
Metric = Callable[[Path], float]
#: The samples a metric scores on -> the metric (choose_method makes its held-back samples itself).
MetricFactory = Callable[[Sequence[Feed]], Metric]
#: Default bound on the quantize+measure rounds of `search`: 0 kept, the doublings and the bisection of ~2^10 layers.
MAX_STEPS = 24
#: Prefix of the names of the Q/DQ nodes and tensors that the single-layer models add.
_TAG = "edgesdk_single"


@dataclass(frozen=True)
class Quantized:
    """One onnxruntime QDQ int8 model: where it is and how it was made."""

    path: Path
    method: str
    per_channel: bool
    excluded: tuple[str, ...]
    opset_note: str | None  # "opset 11 upgraded to 13 ..." or "... weights quantized per tensor"; None at opset >= 13
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "method": self.method, "per_channel": self.per_channel,
                "excluded": list(self.excluded), "opset": self.opset_note, "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class LayerSensitivity:
    """One node quantize_static quantizes: what it costs when it alone is int8, and in the full int8 model.

    alone_cosine: the worst output cosine (compare's, over samples and model outputs) of the fp32 model in which only
    this node's tensors go through QuantizeLinear/DequantizeLinear with the calibrated scales: its inputs (activations,
    weights, bias) and its outputs, as quantize_static quantizes a node (and as nodes_to_exclude un-quantizes it). accumulated_cosine: verify.per_layer's cosine of the
    node's own output (worst over its outputs), fp32 vs the full QDQ model; None when per_layer does not see it (or
    cannot run on this model).
    """

    node: str
    op_type: str
    quantized_tensors: int
    alone_cosine: float
    accumulated_cosine: float | None

    @property
    def error(self) -> float:
        """What quantizing this node alone costs: 1 - alone_cosine."""
        return 1.0 - self.alone_cosine

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "quantized_tensors": self.quantized_tensors,
                "alone_cosine": self.alone_cosine, "error": self.error, "accumulated_cosine": self.accumulated_cosine}


@dataclass(frozen=True)
class SearchStep:
    """One round of the mixed-precision search: these layers kept in float, the metric, the model's size, the
    board's estimated compute time for that split (edgesdk.precision_plan.latency_estimate) and the engine that
    was measured (onnxruntime's QDQ model during the search; the target engine's own artifact when confirming)."""

    kept: tuple[str, ...]
    metric: float
    size_bytes: int
    meets: bool
    estimate_ms: float | None = None
    engine: str = "onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        return {"kept": list(self.kept), "metric": self.metric, "size_bytes": self.size_bytes, "meets": self.meets,
                "estimate_ms": None if self.estimate_ms is None else round(self.estimate_ms, 3),
                "engine": self.engine}


@dataclass(frozen=True)
class SearchResult:
    """The smallest prefix of the sensitivity ranking kept in float that meets the target (when `reached`)."""

    target: float
    higher_is_better: bool
    method: str
    reached: bool
    kept: tuple[str, ...]  # the layers to keep in float (exclude_nodes); () when plain int8 meets the target
    metric: float | None  # the metric with `kept` in float; None when not reached
    steps: tuple[SearchStep, ...]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "higher_is_better": self.higher_is_better, "method": self.method,
                "reached": self.reached, "kept": list(self.kept), "metric": self.metric,
                "steps": [s.to_dict() for s in self.steps], "note": self.note}


def load_samples(npz: str | Path, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The samples of an .npz of N-sample arrays (the calibration file format) as feeds with the batch axis of 1."""
    import numpy as np

    p = Path(npz)
    if not p.is_file():
        raise InputError(f"sample file {p} does not exist")
    with np.load(p, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if not arrays:
        raise InputError(f"sample file {p} holds no arrays")
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise InputError(f"sample file {p}: its arrays hold different numbers of samples "
                         f"({ {k: len(a) for k, a in arrays.items()} })")
    n = counts.pop()
    idx = list(range(n)) if indices is None else list(indices)
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise InputError(f"sample file {p} has {n} samples; no sample {bad[:5]}")
    return [{k: a[i:i + 1] for k, a in arrays.items()} for i in idx]


def _quiet() -> None:
    """quantize_static logs its advice (pre-processing, ...) at WARNING for every call."""
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))


def _prepare(model: str | Path, shapes: Mapping[str, Sequence[int]], work: Path) -> tuple[Path, str | None]:
    """`model` as edgesdk reads it (checked, nodes named, static input shapes), at opset >= 13 when the version
    converter can do that, saved in `work`; with the note of the upgrade."""
    import onnx

    from edgesdk.graph.load import load_model, load_weights

    m = load_model(model, shapes)
    proto = load_weights(m)
    note = None
    opset = onnx_opset(proto)
    if opset < PER_CHANNEL_OPSET:
        try:
            upgraded = upgrade_opset(proto)
        except Exception:  # noqa: BLE001 - the converter's own errors: _quantize then quantizes weights per tensor
            upgraded = None
        if upgraded is not None:
            up = work / "upgraded.onnx"
            onnx.save_model(upgraded, str(up))
            proto = load_weights(load_model(up, shapes))  # names the nodes the converter added
            note = f"opset {opset} upgraded to {PER_CHANNEL_OPSET} (per-channel DequantizeLinear needs axis)"
    path = work / "fp32.onnx"
    onnx.save_model(proto, str(path))
    return path, note


def _session(model: Any, optimize: bool = True) -> Any:
    """An onnxruntime CPU session (model: a path or a ModelProto) whose threads do not spin between runs: spinning
    threads starve the numpy comparison that follows every run (measured: compare 30x slower, runs 3x)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _calib_shapes(calib_npz: str | Path) -> dict[str, tuple[int, ...]]:
    s = load_samples(calib_npz, [0])[0]
    return {k: tuple(v.shape) for k, v in s.items()}


def _run_quantize(src: Path, calib: str | Path, out: Path, method: str, exclude: Sequence[str],
                  prepared_note: str | None, per_channel: bool = True, scheme: str | None = None) -> Quantized:
    """One quantize_static call; with `scheme`, an accelerator's host int8 simulation (edgesdk.simulate: its
    symmetry, per-tensor or per-channel weights, power-of-two scales) instead of the onnxruntime CPU int8."""
    _quiet()
    try:
        if scheme is not None:
            from edgesdk.simulate import SCHEMES
            from edgesdk.simulate import quantize as simulate

            simulate(src, calib, out, scheme, exclude)
            info = {"per_channel": SCHEMES[scheme].per_channel, "opset": None}
        else:
            info = _quantize(str(src), str(calib), str(out), per_channel, method=method, exclude=list(exclude))
    except ValueError as exc:  # no array for an input, unknown node names, unknown method
        raise InputError(f"quantize with {calib}: {exc}") from exc
    return Quantized(out, method if scheme is None else f"{scheme} scheme", bool(info["per_channel"]), tuple(exclude),
                     prepared_note or info["opset"], out.stat().st_size)


def quantize_ort(model: str | Path, calib_npz: str | Path, out: str | Path, method: str = "minmax",
                 exclude: Sequence[str] = (), per_channel: bool = True) -> Quantized:
    """`model` to onnxruntime QDQ int8 at `out`, calibrated on `calib_npz` with `method` (a key of METHODS),
    the nodes `exclude` kept in float. What the onnxruntime adapter does, in this process."""
    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not one onnxruntime offers: {', '.join(METHODS)}")
    dst = Path(out)
    with tempfile.TemporaryDirectory(prefix="edgesdk-quant-") as d:
        src, note = _prepare(model, _calib_shapes(calib_npz), Path(d))
        return _run_quantize(src, calib_npz, dst, method, exclude, note, per_channel)


def _fp32_outputs(model: str | Path, samples: Sequence[Feed]) -> tuple[list[str], list[dict[str, Any]]]:
    from edgesdk.graph.load import load_model, load_weights

    m = load_model(model, {k: tuple(v.shape) for k, v in samples[0].items()})
    names = list(m.outputs)
    sess = _session(load_weights(m))
    return names, [dict(zip(names, sess.run(names, dict(s)))) for s in samples]


def _worst_cosine(names: Sequence[str], got: Sequence[Mapping[str, Any]], refs: Sequence[Mapping[str, Any]]) -> float:
    """min over outputs of compare(...).cosine_min: the reference judge, with the int8 tolerance."""
    from edgesdk.convert_base import TOLERANCES
    from edgesdk.runtime.reference import compare

    return min(compare(n, [g[n] for g in got], [r[n] for r in refs], TOLERANCES["int8"]).cosine_min for n in names)


def output_cosine(fp32_model: str | Path, samples: Sequence[Feed]) -> Metric:
    """The default metric: a quantized model's worst output cosine against `fp32_model` on `samples` (higher is
    better; 1.0 is identical). The fp32 outputs are computed once, here."""
    if not samples:
        raise InputError("output_cosine needs at least one sample")
    names, refs = _fp32_outputs(fp32_model, samples)

    def metric(quantized: Path) -> float:
        sess = _session(quantized)
        missing = [n for n in names if n not in {o.name for o in sess.get_outputs()}]
        if missing:
            raise ModelError(f"{quantized} has no output(s) {missing} of {fp32_model}")
        got = [dict(zip(names, sess.run(names, dict(s)))) for s in samples]
        return _worst_cosine(names, got, refs)

    return metric


@dataclass(frozen=True)
class _Insert:
    """One Q/DQ pair of the QDQ model, as it applies to one node of the fp32 model."""

    kind: str  # "activation" (Q->DQ on an input) | "constant" (quantized initializer -> DQ) | "output"
    index: int  # input index (activation, constant) or output index (output)
    q: Any | None  # the QuantizeLinear node (activation, output)
    dq: Any  # the DequantizeLinear node


def _single_layer_plan(qdq: Any, fp_names: set[str]) -> dict[str, list[_Insert]]:
    """For each node of the QDQ model that is also in the fp32 model: the Q/DQ pairs on its inputs and on its outputs,
    which is what quantize_static quantizes for a node (it leaves a tensor in float only when no node that reads or
    writes it is quantized: so keeping a node in float removes both). Read by position: a Relu that quantize_static
    folded into its Conv's output QuantizeLinear still maps to the Conv's output and the consumer's input."""
    prod = {o: n for n in qdq.graph.node for o in n.output if o}
    readers: dict[str, list[Any]] = {}
    for n in qdq.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    inits = {t.name for t in qdq.graph.initializer}
    plan: dict[str, list[_Insert]] = {}
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name not in fp_names:
            continue
        for i, t in enumerate(node.input):
            dq = prod.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            src = prod.get(dq.input[0])
            if src is not None and src.op_type == "QuantizeLinear":
                plan.setdefault(node.name, []).append(_Insert("activation", i, src, dq))
            elif dq.input[0] in inits:
                plan.setdefault(node.name, []).append(_Insert("constant", i, None, dq))
        for k, t in enumerate(node.output):
            q = next((r for r in readers.get(t, ()) if r.op_type == "QuantizeLinear"), None)
            dq = next((r for r in readers.get(q.output[0], ()) if r.op_type == "DequantizeLinear"), None) if q else None
            if dq is not None:
                plan.setdefault(node.name, []).append(_Insert("output", k, q, dq))
    return plan


def _single_layer_model(fp: Any, qdq_inits: Mapping[str, Any], node_name: str, inserts: Sequence[_Insert],
                        values: Mapping[str, Any]) -> Any:
    """The part of the fp32 model that `node_name` reaches (itself and everything downstream), with only that node's
    tensors through the QDQ model's Q/DQ pairs. What the part reads from upstream becomes a model input (fed with
    the fp32 values, `values` gives their types); the model outputs it does not produce are the fp32 ones anyway."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(fp)
    g = m.graph
    nodes = list(g.node)
    j = next(k for k, n in enumerate(nodes) if n.name == node_name)
    node = nodes[j]
    before: list[Any] = []
    after: list[Any] = []
    params: list[Any] = []

    def param(name: str) -> str:  # the QDQ model's scale / zero point / quantized weight, under a name of our own
        new = f"{_TAG}/{name}"
        if all(t.name != new for t in params):
            t = onnx.TensorProto()
            t.CopyFrom(qdq_inits[name])
            t.name = new
            params.append(t)
        return new

    def pair(q: Any | None, dq: Any, x: str, y: str, key: str) -> list[Any]:
        dq_in = [param(n) for n in dq.input[1:] if n]
        if q is None:  # a constant: its quantized initializer straight into DequantizeLinear
            dn = onnx.helper.make_node("DequantizeLinear", [param(dq.input[0]), *dq_in], [y], name=f"{key}/dq",
                                       domain=dq.domain)
            dn.attribute.extend(dq.attribute)
            return [dn]
        qn = onnx.helper.make_node("QuantizeLinear", [x, *[param(n) for n in q.input[1:] if n]], [f"{key}/quantized"],
                                   name=f"{key}/q", domain=q.domain)
        qn.attribute.extend(q.attribute)
        dn = onnx.helper.make_node("DequantizeLinear", [f"{key}/quantized", *dq_in], [y], name=f"{key}/dq",
                                   domain=dq.domain)
        dn.attribute.extend(dq.attribute)
        return [qn, dn]

    for ins in inserts:
        key = f"{_TAG}/{node_name}/{ins.kind}{ins.index}"
        if ins.kind == "output":
            y = node.output[ins.index]
            node.output[ins.index] = f"{key}/float"
            after += pair(ins.q, ins.dq, f"{key}/float", y, key)
            continue
        y = f"{key}/dequantized"
        before += pair(ins.q, ins.dq, node.input[ins.index], y, key)
        node.input[ins.index] = y
    inits = {t.name: t for t in g.initializer}

    def reads(part: list[Any]) -> tuple[list[str], list[str]]:  # (names it reads, those it reads from outside)
        made = {o for n in part for o in n.output}
        read = list(dict.fromkeys(i for n in part for i in n.input if i))
        return read, [i for i in read if i not in made and i not in inits and not i.startswith(f"{_TAG}/")]

    part = before + [node] + after
    reached = {o for n in part for o in n.output}
    for n in nodes[j + 1:]:
        if any(i in reached for i in n.input):
            part.append(n)
            reached.update(n.output)
    read, outside = reads(part)
    kept = [inits[i] for i in read if i in inits]
    if any(a.HasField("g") or a.graphs for n in nodes for a in n.attribute) or any(i not in values for i in outside):
        # subgraphs read outer tensors by name, or an upstream tensor has no known value: run the whole model
        part = nodes[:j] + before + [node] + after + nodes[j + 1:]
        _, outside = reads(part)
        kept = list(inits.values())
    made = {o for n in part for o in n.output}
    outputs = [o for o in g.output if o.name in made]
    del g.node[:]
    g.node.extend(part)
    del g.input[:]
    g.input.extend(onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(values[i].dtype),
                                                      list(values[i].shape)) for i in outside)
    del g.output[:]
    g.output.extend(outputs)
    del g.initializer[:]
    g.initializer.extend(kept + params)
    del g.value_info[:]
    return m


def _fp32_values(fp_path: Path, samples: Sequence[Feed]) -> tuple[list[str], list[dict[str, Any]]]:
    """The model's output names, and per sample every tensor of the fp32 model (inputs, node outputs)."""
    from edgesdk.conversion import with_outputs
    from edgesdk.graph.load import load_model, load_weights

    m = load_model(fp_path, {k: tuple(v.shape) for k, v in samples[0].items()})
    names = [o for n in m.nodes for o in n.output if o and o in m.tensors and m.tensors[o].shape is not None]
    sess = _session(with_outputs(load_weights(m), names, m.tensors))
    known = [o.name for o in sess.get_outputs()]
    return list(m.outputs), [{**dict(s), **dict(zip(known, sess.run(known, dict(s))))} for s in samples]


def _single_layer_errors(fp_path: Path, qdq_path: Path, samples: Sequence[Feed]
                         ) -> Iterator[tuple[str, str, int, float]]:
    """(node, op_type, quantized tensors, worst output cosine) for every node the QDQ model quantizes."""
    import onnx

    fp = onnx.load(str(fp_path))
    qdq = onnx.load(str(qdq_path))
    op_of = {n.name: n.op_type for n in fp.graph.node}
    plan = _single_layer_plan(qdq, set(op_of))
    inits = {t.name: t for t in qdq.graph.initializer}
    names, values = _fp32_values(fp_path, samples)
    refs = [{k: v[k] for k in names} for v in values]
    for n in fp.graph.node:  # topological order
        inserts = plan.get(n.name)
        if not inserts:
            continue
        part = _single_layer_model(fp, inits, n.name, inserts, values[0])
        # graph optimisations off: the Q/DQ pairs stay the float simulation they are (no fusion into int8 kernels,
        # which would also quantize what this node feeds), and the session is ready in a fraction of the time
        sess = _session(part, optimize=False)
        feeds = [i.name for i in part.graph.input]
        outs = [o.name for o in part.graph.output]
        got = [{**r, **dict(zip(outs, sess.run(outs, {k: v[k] for k in feeds})))} for r, v in zip(refs, values)]
        yield n.name, n.op_type, len(inserts), _worst_cosine(names, got, refs)


def sensitivity(model: str | Path, calib_npz: str | Path, samples: Sequence[Feed],
                method: str = "minmax", scheme: str | None = None) -> list[LayerSensitivity]:
    """Every node quantize_static quantizes (per-channel weights, `method` calibration on `calib_npz`), ranked by the
    error it adds when it alone is quantized, measured on `samples` (the most harmful first).

    Quantizes once: each node's single-layer model is the fp32 model with the full QDQ model's calibrated
    QuantizeLinear/DequantizeLinear pairs put back on that node's inputs and outputs only, cut to the part the node
    reaches (fed with the fp32 values upstream of it): one onnxruntime session per node, graph optimisations off,
    so the pairs stay a float simulation. accumulated_cosine comes from edgesdk.verify.per_layer, which, as verify
    does, calibrates its QDQ simulation on `samples` themselves. Keeps every fp32 tensor of `samples` in memory:
    give a few samples (YOLOv8n at 320: 2 samples ~20 s, 8 ~60 s on 2 cores).
    """
    from edgesdk.verify import LAYER_COSINE, per_layer

    if not samples:
        raise InputError("sensitivity needs at least one sample")
    shapes = {k: tuple(v.shape) for k, v in samples[0].items()}
    with tempfile.TemporaryDirectory(prefix="edgesdk-sensitivity-") as d:
        src, note = _prepare(model, shapes, Path(d))
        qdq = _run_quantize(src, calib_npz, Path(d) / "qdq.onnx", method, (), note, scheme=scheme)
        single = list(_single_layer_errors(src, qdq.path, samples))
        try:
            layers, _ = per_layer(src, list(samples), LAYER_COSINE, shapes)
        except Exception:  # noqa: BLE001 - its own quantize_static's errors: the single-layer ranking stands
            layers = []
    acc: dict[str, float] = {}
    for x in layers:
        acc[x.node] = min(acc.get(x.node, 1.0), x.cosine)
    out = [LayerSensitivity(name, op, k, cos, acc.get(name)) for name, op, k, cos in single]
    return sorted(out, key=lambda x: x.alone_cosine)  # stable: topological order among equals


def _meets(value: float, target: float, higher_is_better: bool) -> bool:
    if math.isnan(value):  # NaN meets nothing
        return False
    return value >= target if higher_is_better else value <= target


def choose_method(model: str | Path, calib_npz: str | Path, holdout: Sequence[int],
                  metric: MetricFactory | None = None, methods: Sequence[str] = tuple(METHODS),
                  higher_is_better: bool = True, exclude: Sequence[str] = ()) -> tuple[str, list[dict[str, Any]]]:
    """The calibration method that scores best on held-back calibration samples.

    Each of `methods` quantizes `model` calibrated on the samples of `calib_npz` not in `holdout` (indices); each is
    scored by `metric(held-back samples)` (default: output_cosine against the fp32 model), with the nodes `exclude`
    kept in float (to choose for a mixed-precision model). Returns the best method (a tie keeps the one tried first)
    and [{method, score, opset, error}] in the order tried; a method whose quantization fails scores None and says why.
    """
    import numpy as np

    with np.load(Path(calib_npz), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n = len(next(iter(arrays.values()))) if arrays else 0
    held = sorted(set(holdout))
    if not held or any(not 0 <= i < n for i in held) or len(held) >= n:
        raise InputError(f"holdout {list(holdout)} must name some, not all, of the {n} samples of {calib_npz}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"calibration method(s) {unknown or '(none)'}: onnxruntime offers {', '.join(METHODS)}")
    score_on = (metric or (lambda s: output_cosine(model, s)))(load_samples(calib_npz, held))
    rest = [i for i in range(n) if i not in set(held)]
    scores: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-calib-method-") as d:
        cal = Path(d) / "calib.npz"
        np.savez(cal, **{k: a[rest] for k, a in arrays.items()})
        src, note = _prepare(model, _calib_shapes(cal), Path(d))
        for m in methods:
            try:
                q = _run_quantize(src, cal, Path(d) / f"{m}.onnx", m, exclude, note)
            except Exception as exc:  # noqa: BLE001 - one method failing (onnxruntime's errors) leaves the others
                scores.append({"method": m, "score": None, "opset": note,
                               "error": f"{type(exc).__name__}: {str(exc).strip()[:200]}"})
                continue
            scores.append({"method": m, "score": float(score_on(q.path)), "opset": q.opset_note, "error": None})
    ok = [s for s in scores if s["score"] is not None and not math.isnan(s["score"])]
    if not ok:
        raise ModelError(f"no calibration method could quantize {model}: "
                         + "; ".join(f"{s['method']}: {s['error']}" for s in scores))
    best = (max if higher_is_better else min)(ok, key=lambda s: s["score"])
    return str(best["method"]), scores


def search(model: str | Path, calib_npz: str | Path, ranking: Sequence[LayerSensitivity | str], metric: Metric,
           target: float, higher_is_better: bool = True, max_steps: int = MAX_STEPS, method: str = "minmax",
           out: str | Path | None = None, estimate: Callable[[Sequence[str]], float] | None = None,
           scheme: str | None = None) -> SearchResult:
    """The smallest prefix of `ranking` (most sensitive first) to keep in float so that metric(quantized) meets
    `target`: plain int8 first, then 1, 2, 4, ... layers kept until it holds, then bisection between the last miss
    and the first hit. Every quantize+measure round is a step (with `estimate(kept)`, its estimated latency). Not reached when even the whole ranking in float
    misses, or `max_steps` ran out before a hit. With `out`, the chosen model is written there (when reached).

    Assumes the metric improves as layers are kept in float (what the ranking is for); the bisection's answer is the
    smallest hit it measured.
    """
    if method not in METHODS:
        raise InputError(f"calibration method {method!r} is not one onnxruntime offers: {', '.join(METHODS)}")
    if max_steps < 1:
        raise InputError(f"max_steps must be at least 1, not {max_steps}")
    names = list(dict.fromkeys(r.node if isinstance(r, LayerSensitivity) else str(r) for r in ranking))
    steps: list[SearchStep] = []
    models: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="edgesdk-search-") as d:
        src, note = _prepare(model, _calib_shapes(calib_npz), Path(d))

        def trial(k: int) -> bool:
            q = _run_quantize(src, calib_npz, Path(d) / f"kept{k}.onnx", method, names[:k], note, scheme=scheme)
            value = float(metric(q.path))
            steps.append(SearchStep(tuple(names[:k]), value, q.size_bytes, _meets(value, target, higher_is_better),
                                    estimate(names[:k]) if estimate is not None else None))
            models[k] = q.path
            return steps[-1].meets

        def done(hit: int | None, why: str) -> SearchResult:
            if hit is None:
                return SearchResult(target, higher_is_better, method, False, (), None, tuple(steps), why)
            if out is not None:
                shutil.copyfile(models[hit], Path(out))
            value = next(s.metric for s in steps if len(s.kept) == hit)
            return SearchResult(target, higher_is_better, method, True, tuple(names[:hit]), value, tuple(steps), why)

        if trial(0):
            return done(0, "plain int8 meets the target")
        lo, k = 0, 1
        while True:
            if not names or lo == len(names):
                return done(None, f"not reachable: even with all {len(names)} ranked layers kept in float the metric "
                                  f"is {steps[-1].metric:.6g}, target {target:g}")
            if len(steps) >= max_steps:
                return done(None, f"stopped after {max_steps} steps without meeting the target {target:g}")
            k = min(k, len(names))
            if trial(k):
                break
            lo, k = k, k * 2
        hi = k
        while hi - lo > 1 and len(steps) < max_steps:
            mid = (lo + hi) // 2
            if trial(mid):
                hi = mid
            else:
                lo = mid
        exact = hi - lo <= 1
        return done(hi, f"{hi} layer(s) kept in float meet the target" + (
            "" if exact else f" (bisection stopped after {max_steps} steps: between {lo + 1} and {hi})"))


__all__ = ["MAX_STEPS", "METHODS", "Feed", "LayerSensitivity", "Metric", "MetricFactory", "Quantized",
           "SearchResult", "SearchStep", "choose_method", "load_samples", "output_cosine", "quantize_ort", "search",
           "sensitivity"]

"""Segment extraction: each segment as a standalone ONNX model, proven valid (full checker, one onnxruntime run)
before anything uses it; plan.json; and a reference runner."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from edgesdk.errors import EnvironmentProblem, InputError, ModelError
from edgesdk.graph.load import Model, load_weights
from edgesdk.graph.partition import DEFAULT_MIN_ISLAND_SHARE, PartitionPlan, Segment
from edgesdk.graph.shapes import elem_type

PLAN_SCHEMA_VERSION = 1
#: Segments whose weights exceed this are saved with their weights in a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_THRESHOLD = 1_500_000_000


#: Ops whose output size depends on the input data: no input shape makes their outputs static.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression", "Unique", "Compress", "TopK", "Loop", "If",
                                "Scan", "StringSplit", "RegexFullMatch"})


def describe_segment(segment: Any, proto: onnx.ModelProto | None = None) -> str:
    """``segment 3 (tflite; 12 nodes, first 'conv1' (Conv), last 'relu5' (Relu))``: for messages."""
    nodes = list(proto.graph.node) if proto is not None else []
    if nodes:
        first, last, count = (f"{nodes[0].name!r} ({nodes[0].op_type})", f"{nodes[-1].name!r} ({nodes[-1].op_type})",
                              len(nodes))
    else:
        names = list(getattr(segment, "nodes", ()) or ())
        first, last, count = (repr(names[0]) if names else "-"), (repr(names[-1]) if names else "-"), len(names)
    what = f"{count} node{'s' if count != 1 else ''}"
    what += f", node {first}" if count == 1 else f", first {first}, last {last}" if count else ""
    return f"segment {segment.index} ({segment.engine}; {what})"


def _fmt_shape(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "unknown"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _shape_lost_at(model: Model, name: str) -> onnx.NodeProto | None:
    """The first node upstream of `name` whose inputs all have static shapes but whose output has none."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        node = _producer(model, n)
        if node is None:
            continue
        ins = [i for i in node.input if i]
        bad = [i for i in ins if not (model.tensors.get(i) is not None and model.tensors[i].static)]
        if not bad:
            return node
        todo.extend(bad)
    return None


def _producer(model: Model, name: str) -> onnx.NodeProto | None:
    i = model.producer.get(name) if model.producer else None
    if i is None:
        i = next((k for k, n in enumerate(model.nodes) if name in n.output), None)
    return model.nodes[i] if i is not None else None


def _boundary_value_info(model: Model, segment: Segment, ref: Any, side: str) -> onnx.ValueInfoProto:
    """The typed input/output of a segment. Tensors edgesdk cuts at must have a static shape: the engine
    artifacts, the manifest and the hand-off buffers are sized from it. A model output that no other segment
    reads may keep dynamic dimensions (its rank must be known: the ONNX checker requires a shape)."""
    name = ref.name
    t = model.tensors.get(name)
    node = _producer(model, name)
    made_by = f" (made by node {node.name!r} ({node.op_type}))" if node is not None else " (a model input)"
    where = f"{describe_segment(segment)}: {side} tensor {name!r}{made_by}"
    if t is None:
        raise ModelError(f"{where} has no known type; edgesdk cannot cut the graph there")
    try:
        elem = elem_type(t.dtype)
    except ValueError as exc:
        raise ModelError(f"{where} has dtype {t.dtype}, which edgesdk cannot cut the graph at") from exc
    final_output = bool(getattr(ref, "model_output", False)) and not getattr(ref, "consumers", ())
    if not t.static and not (final_output and t.shape is not None):
        lost = _shape_lost_at(model, name) if node is not None else None
        if lost is not None and lost.op_type in DATA_DEPENDENT_OPS:
            how = (f"its size depends on the input data (node {lost.name!r} ({lost.op_type})), so no input shape "
                   "can fix it and the graph cannot be cut after it")
        elif node is None:
            how = "give the input a fixed size with --input-shape NAME=D0,D1,..."
        else:
            at = (f"shape inference loses the shape at node {lost.name!r} ({lost.op_type}), " if lost is not None
                  and lost is not node else "")
            how = (f"{at}typically a Reshape or Expand whose target a shape subgraph (Shape -> Gather -> ...) "
                   "computes: give every model input a fixed size with --input-shape NAME=D0,D1,..., and keep the "
                   "preparation stage on (it folds shape subgraphs to constants; --no-prepare skips it)")
        found = "shape inference found none" if t.shape is None else f"only {_fmt_shape(t.shape)}"
        raise ModelError(f"{where} has no static shape ({found}); edgesdk needs static shapes at segment "
                         f"boundaries: {how}")
    return onnx.helper.make_tensor_value_info(name, elem, None if t.shape is None else list(t.shape))


def segment_model(model: Model, full: onnx.ModelProto, segment: Segment,
                  initializers: Mapping[str, onnx.TensorProto] | None = None,
                  node_index: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """One segment as a standalone ONNX model: its nodes, the initializers they read, typed inputs/outputs.

    Boundary tensors get their static shapes (ModelError naming the tensor and its producer otherwise).
    Intermediate value_info: the whole model's inferred shapes where they are complete, then ONNX shape
    inference on the segment itself for the rest; entries without a type or a shape are never written
    (the checker rejects them, converters trip over them). Check it with `validate_segment` before use."""
    inits = initializers if initializers is not None else {t.name: t for t in full.graph.initializer}
    index = node_index if node_index is not None else {n.name: i for i, n in enumerate(model.nodes)}
    positions = sorted(index[n] for n in segment.nodes)
    nodes = [full.graph.node[i] for i in positions]
    used: dict[str, None] = {}
    for i in positions:
        for name in model.node_inputs[i]:
            if name in inits:
                used[name] = None
    graph = onnx.helper.make_graph(
        nodes,
        f"{model.name}_seg{segment.index}_{segment.engine}",
        [_boundary_value_info(model, segment, t, "input") for t in segment.inputs],
        [_boundary_value_info(model, segment, t, "output") for t in segment.outputs],
        initializer=[inits[n] for n in used],
    )
    inner = {o for n in nodes for o in n.output if o} - {t.name for t in segment.outputs}
    for n in sorted(inner):
        t = model.tensors.get(n)
        if t is not None and t.static and t.itemsize:
            try:
                graph.value_info.append(onnx.helper.make_tensor_value_info(n, elem_type(t.dtype), list(t.shape)))
            except ValueError:
                continue
    out = onnx.helper.make_model(graph, opset_imports=list(full.opset_import), ir_version=segment_ir_version(full),
                                 producer_name="edgesdk", doc_string=f"segment {segment.index} of {model.name}")
    out.functions.extend(full.functions)
    _rebuild_value_info(out, segment)
    return out


def segment_ir_version(full: onnx.ModelProto) -> int:
    """The oldest IR version the model's op sets allow, never newer than the model's own.

    A model saved by a recent onnx carries a new IR version its op set does not need, and the converters'
    bundled onnxruntime refuses it (pnnx: "Unsupported model IR version: 14, max supported IR version: 13")."""
    try:
        need = onnx.helper.find_min_ir_version_for(list(full.opset_import), ignore_unknown=True)
    except (TypeError, ValueError):
        return full.ir_version
    if full.functions:
        need = max(need, 8)  # model-local functions came with IR 8
    return min(full.ir_version, max(need, 3)) if full.ir_version else need


#: Initializers above this many bytes are left out of the copy that shape inference sees (typed inputs instead):
#: their values do not matter to shapes, and serialising them per segment would cost time and memory.
_INFER_KEEP_BYTES = 1 << 16


def _light_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model for shape inference and the structural check: big initializers become typed graph inputs."""
    g = proto.graph
    keep, typed = [], []
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.raw_data) > _INFER_KEEP_BYTES:
            typed.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            keep.append(t)
    graph = onnx.helper.make_graph(list(g.node), g.name, [*g.input, *typed], list(g.output), initializer=keep,
                                   value_info=list(g.value_info))
    m = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    m.functions.extend(proto.functions)
    return m


def _complete(vi: onnx.ValueInfoProto) -> bool:
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    return tt is not None and tt.elem_type != 0 and tt.HasField("shape")


def _rebuild_value_info(proto: onnx.ModelProto, segment: Any) -> None:
    """Replace the segment's value_info by ONNX shape inference's (strict; the copied entries are checked by it)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_light_copy(proto), check_type=True, strict_mode=True,
                                                     data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{describe_segment(segment, proto)}: shape inference fails on the segment: "
                         f"{_first_lines(exc)}") from exc
    boundary = {v.name for v in (*proto.graph.input, *proto.graph.output)} | {t.name for t in proto.graph.initializer}
    vis = [vi for vi in inferred.graph.value_info if vi.name not in boundary and _complete(vi)]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(vis)


def _first_lines(exc: BaseException, n: int = 3) -> str:
    if "Failed to allocate memory" in str(exc):  # onnxruntime's allocation failure: which node, how much
        from edgesdk.runtime.engines.onnxruntime import describe_failure

        return describe_failure(exc)
    lines = [x.strip() for x in str(exc).strip().splitlines() if x.strip()]
    return " ".join(lines[:n]) or type(exc).__name__


def validate_segment(proto: onnx.ModelProto, segment: Any, feed: Mapping[str, Any] | None = None, *,
                     path: str | Path | None = None, run: bool = True, seed: int = 0) -> dict[str, Any]:
    """Prove a segment is a valid, runnable model before anything uses it; returns its outputs by name.

    1. the full ONNX checker (``full_check=True``: structure, types, strict shape inference), on `path` when
       given (the written file, which may keep its weights in a side file), else on `proto`;
    2. with `run`: onnxruntime loads it and runs it once on `feed` (the segment's inputs by name) and each
       output must have its declared shape. Inputs not in `feed` get random values (float in [-1, 1), integers
       0); when an integer input another segment computes (a shape, indices) is not given, the segment is only
       loaded, not run: made-up values there prove nothing. Give the real boundary values for the full check.

    `segment` is the partition Segment (index, engine, nodes), for the message. Any failure is a ModelError
    naming the segment index, engine, first and last nodes and the checker's or onnxruntime's own message.
    """
    label = describe_segment(segment, proto)
    try:
        if path is not None:
            onnx.checker.check_model(str(path), full_check=True)
        elif proto.ByteSize() < EXTERNAL_DATA_THRESHOLD:
            onnx.checker.check_model(proto, full_check=True)
        else:
            onnx.checker.check_model(_light_copy(proto), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{label} is not a valid ONNX model: onnx.checker: {_first_lines(exc)}") from exc
    if not run:
        return {}
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EnvironmentProblem("onnxruntime is not installed", fix="pip install 'edgesdk[host]'") from exc
    import numpy as np

    so = ort.SessionOptions()
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="edgesdk-segment-") as d:
        src: Any = str(path) if path is not None else None
        if src is None:
            if proto.ByteSize() < EXTERNAL_DATA_THRESHOLD:
                src = proto.SerializeToString()
            else:
                src = str(Path(d) / "segment.onnx")
                save_model(proto, Path(src), check=False)
        try:
            sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph / ... (pybind classes)
            raise ModelError(f"{label}: onnxruntime cannot load it: {_first_lines(exc)}") from exc
    rng = np.random.default_rng(seed)
    given = dict(feed or {})
    inputs = {}
    made_up = []
    for i in sess.get_inputs():
        if i.name in given:
            inputs[i.name] = given[i.name]
            continue
        vi = next((v for v in proto.graph.input if v.name == i.name), None)
        if vi is None:
            continue
        dt = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        if np.issubdtype(dt, np.floating):
            inputs[i.name] = rng.uniform(-1.0, 1.0, shape).astype(dt)
        else:
            inputs[i.name] = np.zeros(shape, dt)
            made_up.append(i.name)
    if made_up and any(v.name in made_up for v in proto.graph.input if _from_segment(v.name, segment)):
        # an integer tensor another segment computes (a shape, indices): zeros prove nothing, and may not run
        return {}
    names = [o.name for o in sess.get_outputs()]
    try:
        res = sess.run(names, inputs)
    except Exception as exc:
        raise ModelError(f"{label}: onnxruntime cannot run it: {_first_lines(exc)}") from exc
    outs = dict(zip(names, res))
    for o in proto.graph.output:
        dims = o.type.tensor_type.shape.dim
        want = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        got = np.shape(outs.get(o.name))
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise ModelError(f"{label}: output {o.name!r} is declared {_fmt_shape(want)} but onnxruntime computes "
                             f"{_fmt_shape(got)}: the model's shape inference is wrong there")
    return outs


def _from_segment(name: str, segment: Any) -> bool:
    """Whether the segment's input `name` comes from another segment (not from the model's inputs)."""
    for t in getattr(segment, "inputs", ()) or ():
        if t.name == name:
            return getattr(t, "producer", None) is not None
    return True  # unknown: assume it does


def save_model(proto: onnx.ModelProto, path: Path, check: bool = True) -> None:
    """Write a segment model (and check it, unless `check` is False: then validate_segment does);
    weights over the threshold go to a side file next to it. An invalid model is a ModelError."""
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    try:
        if weights > EXTERNAL_DATA_THRESHOLD:
            onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.stem + ".data", size_threshold=1024)
            if check:
                onnx.checker.check_model(str(path))
        else:
            if check:
                onnx.checker.check_model(proto)
            onnx.save_model(proto, str(path))
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{path.name} is not a valid ONNX model: onnx.checker: {_first_lines(exc)}") from exc


def write_segments(model: Model, plan: PartitionPlan, out_dir: str | Path, force: bool = False) -> Path:
    """Write each segment as ``NN_<engine>.onnx`` plus ``plan.json`` into `out_dir`; returns its path.

    All or nothing: everything is written into a temporary folder beside `out_dir`, checked, then
    renamed into place. An existing `out_dir` is an InputError unless `force`. Every segment passes
    `validate_segment` (full checker, one onnxruntime run): the segments run in order on one random input
    of the model, each on the tensors the segments before it computed.
    """
    out = Path(out_dir)
    if out.exists() and not force:
        raise InputError(f"{out} already exists; choose another -o DIR or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{parent} does not exist")
    full = load_weights(model)
    inits = {t.name: t for t in full.graph.initializer}
    node_index = {n.name: i for i, n in enumerate(model.nodes)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        entries = []
        env = _model_feed(model, plan)  # random model inputs; each segment runs on what the ones before made
        for seg in plan.segments:
            fname = f"{seg.index:02d}_{seg.engine}.onnx"
            proto = segment_model(model, full, seg, inits, node_index)
            save_model(proto, tmp / fname, check=False)
            env.update(validate_segment(proto, seg, {t.name: env[t.name] for t in seg.inputs if t.name in env},
                                        path=tmp / fname))
            entries.append({
                "index": seg.index, "engine": seg.engine, "target": seg.target, "file": fname,
                "inputs": [t.name for t in seg.inputs], "outputs": [t.name for t in seg.outputs],
                "input_sources": {t.name: ("model" if t.producer is None else t.producer) for t in seg.inputs},
                "nodes": len(seg.nodes), "flops_share": seg.flops_share,
            })
        doc: dict[str, Any] = {
            "schema_version": PLAN_SCHEMA_VERSION,
            "model": model.name,
            "source": str(model.path) if model.path else None,
            "board": plan.board_id,
            "partition_rule": plan.partition_rule,
            "inputs": [t.to_dict() for t in plan.model_inputs],
            "outputs": list(plan.model_outputs),
            "segments": entries,
            "plan": plan.to_dict(),
        }
        (tmp / "plan.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=parent))
            os.rename(out, old / "x")
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass(frozen=True)
class PartitionResult:
    out_dir: Path
    plan: PartitionPlan
    files: tuple[str, ...]
    prepare: Any = None  # edgesdk.graph.prepare.PrepareReport
    notes: tuple[str, ...] = ()


def partition_model(path: Any, board_id: str, out_dir: str | Path, force: bool = False,
                    input_shapes: Mapping[str, Sequence[int]] | None = None,
                    min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE, prepare: bool = True,
                    example_inputs: Any = None, trust_model: bool = False, plan: str = "best",
                    max_segments: int | None = None, rewrite: bool = True) -> PartitionResult:
    """Open (any input convert takes), prepare, partition and write the segments of `path` for `board_id`
    (the `edgesdk partition` command). trust_model: see edgesdk.frontends (TorchScript is code). plan /
    max_segments: the plan choice (edgesdk.graph.plans)."""
    from edgesdk.boards import get_board
    from edgesdk.graph.report import analyze
    from edgesdk.graph.source import opened

    out = Path(out_dir)
    if out.exists() and not force:  # fail before any work, and write nothing
        raise InputError(f"{out} already exists; choose another -o DIR or pass --force to replace it")
    board = get_board(board_id)
    with opened(path, input_shapes, prepare, example_inputs, trust_model=trust_model) as o:
        a = analyze(o.model, board, min_island_flops_share=min_island_flops_share, plan=plan,
                    max_segments=max_segments, rewrite=rewrite)
        d = write_segments(a.model, a.plan, out, force=force)
        files = tuple(sorted(p.name for p in d.iterdir()))
        return PartitionResult(d, a.plan, files, o.prepare, o.notes + (o.prepare.summary(),))


def run_segments(plan_dir: str | Path, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """Run the segments of a written plan in order on onnxruntime (the host reference); model outputs by name."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EnvironmentProblem("onnxruntime is not installed", fix="pip install 'edgesdk[host]'") from exc
    d = Path(plan_dir)
    doc = json.loads((d / "plan.json").read_text(encoding="utf-8"))
    env: dict[str, Any] = dict(feeds)
    missing = [t["name"] for t in doc["inputs"] if t["name"] not in env]
    if missing:
        raise InputError(f"missing model input(s) {missing}")
    for seg in doc["segments"]:
        what = f"segment {seg['index']} ({seg['engine']}, {seg['file']})"
        try:
            sess = ort.InferenceSession(str(d / seg["file"]), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception classes
            raise ModelError(f"{what}: onnxruntime cannot load it: {_first_lines(exc)}") from exc
        try:
            res = sess.run(seg["outputs"], {n: env[n] for n in seg["inputs"]})
        except Exception as exc:
            raise ModelError(f"{what}: onnxruntime cannot run it: {_first_lines(exc)}") from exc
        env.update(zip(seg["outputs"], res))
    return {n: env[n] for n in doc["outputs"]}


def _model_feed(model: Model, plan: PartitionPlan, seed: int = 0) -> dict[str, Any]:
    """One random input of the model (float in [-1, 1), integers 0), by input name."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed: dict[str, Any] = {}
    for name in model.inputs:
        t = model.tensors.get(name)
        if t is None or not t.static:
            continue
        try:
            dt = np.dtype(t.dtype)
        except TypeError:
            continue
        feed[name] = (rng.uniform(-1.0, 1.0, t.shape).astype(dt) if np.issubdtype(dt, np.floating)
                      else np.zeros(t.shape, dt))
    return feed


__all__ = ["PLAN_SCHEMA_VERSION", "PartitionResult", "describe_segment", "partition_model", "run_segments", "save_model",
           "segment_model", "validate_segment", "write_segments"]

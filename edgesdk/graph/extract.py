"""Segment extraction: each segment as a standalone checked ONNX model, plan.json, and a reference runner."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from edgesdk.errors import EnvironmentProblem, InputError, ModelError
from edgesdk.graph.load import Model, load_model, load_weights
from edgesdk.graph.partition import DEFAULT_MIN_ISLAND_SHARE, PartitionPlan, Segment
from edgesdk.graph.shapes import TensorInfo, elem_type

PLAN_SCHEMA_VERSION = 1
#: Segments whose weights exceed this are saved with their weights in a side file (protobuf's 2 GB limit).
EXTERNAL_DATA_THRESHOLD = 1_500_000_000


def _value_info(t: TensorInfo | None, name: str) -> onnx.ValueInfoProto:
    if t is None:
        raise ModelError(f"tensor {name!r} has no known type; cannot cut the graph there")
    try:
        elem = elem_type(t.dtype)
    except ValueError as exc:
        raise ModelError(f"tensor {name!r} has dtype {t.dtype}, which edgesdk cannot cut the graph at") from exc
    shape = None if t.shape is None else list(t.shape)
    return onnx.helper.make_tensor_value_info(name, elem, shape)


def segment_model(model: Model, full: onnx.ModelProto, segment: Segment,
                  initializers: Mapping[str, onnx.TensorProto] | None = None,
                  node_index: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """One segment as a standalone ONNX model: its nodes, the initializers they read, typed inputs/outputs."""
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
        [_value_info(model.tensors.get(t.name), t.name) for t in segment.inputs],
        [_value_info(model.tensors.get(t.name), t.name) for t in segment.outputs],
        initializer=[inits[n] for n in used],
    )
    inner = {o for n in nodes for o in n.output if o} - {t.name for t in segment.outputs}
    graph.value_info.extend(_value_info(model.tensors[n], n) for n in sorted(inner)
                            if n in model.tensors and model.tensors[n].shape is not None and model.tensors[n].itemsize)
    out = onnx.helper.make_model(graph, opset_imports=list(full.opset_import), ir_version=full.ir_version,
                                 producer_name="edgesdk", doc_string=f"segment {segment.index} of {model.name}")
    out.functions.extend(full.functions)
    return out


def save_model(proto: onnx.ModelProto, path: Path) -> None:
    """Check and write a segment model; weights over the threshold go to a side file next to it."""
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    if weights > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.stem + ".data", size_threshold=1024)
        onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(path))


def write_segments(model: Model, plan: PartitionPlan, out_dir: str | Path, force: bool = False) -> Path:
    """Write each segment as ``NN_<engine>.onnx`` plus ``plan.json`` into `out_dir`; returns its path.

    All or nothing: everything is written into a temporary folder beside `out_dir`, checked, then
    renamed into place. An existing `out_dir` is an InputError unless `force`.
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
        for seg in plan.segments:
            fname = f"{seg.index:02d}_{seg.engine}.onnx"
            proto = segment_model(model, full, seg, inits, node_index)
            try:
                save_model(proto, tmp / fname)
            except onnx.checker.ValidationError as exc:
                raise ModelError(f"segment {seg.index} ({seg.engine}) is not a valid ONNX model: {exc}") from exc
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


def partition_model(path: str | Path, board_id: str, out_dir: str | Path, force: bool = False,
                    input_shapes: Mapping[str, Sequence[int]] | None = None,
                    min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE) -> PartitionResult:
    """Load, check, partition and write the segments of `path` for `board_id` (the `edgesdk partition` command)."""
    from edgesdk.boards import get_board
    from edgesdk.graph.report import analyze

    out = Path(out_dir)
    if out.exists() and not force:  # fail before any work, and write nothing
        raise InputError(f"{out} already exists; choose another -o DIR or pass --force to replace it")
    board = get_board(board_id)
    model = load_model(path, input_shapes)
    a = analyze(model, board, min_island_flops_share=min_island_flops_share)
    d = write_segments(model, a.plan, out, force=force)
    files = tuple(sorted(p.name for p in d.iterdir()))
    return PartitionResult(d, a.plan, files)


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
        sess = ort.InferenceSession(str(d / seg["file"]), providers=["CPUExecutionProvider"])
        res = sess.run(seg["outputs"], {n: env[n] for n in seg["inputs"]})
        env.update(zip(seg["outputs"], res))
    return {n: env[n] for n in doc["outputs"]}


__all__ = ["PLAN_SCHEMA_VERSION", "PartitionResult", "partition_model", "run_segments", "segment_model", "write_segments"]

"""Support check: for every node, which engine of the board runs it and why, from the op tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from edgesdk.boards import BoardProfile
from edgesdk.errors import ModelError
from edgesdk.graph.load import Model
from edgesdk.graph.shapes import TensorInfo
from edgesdk.toolchains.spec import NAMED_CHECKS, AttrCond, OpRule, OpTable, get_op_table, list_toolchains

#: Runtime engine -> the toolchain whose ops.yaml describes what it accepts (from the toolchain records).
ENGINE_TOOLCHAIN: dict[str, str] = {t.engine: t.id for t in list_toolchains()}

Target = Literal["accelerator", "cpu"]
#: Why a node runs where it runs.
Kind = Literal["supported", "unsupported_op", "attribute", "limits", "partition_rule", "fallback", "folded", "plan"]


@dataclass(frozen=True)
class Refusal:
    """Why one engine refuses one node."""

    kind: Kind
    reason: str
    rewrite: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where one node runs and why."""

    node: str
    op_type: str
    engine: str
    target: Target
    kind: Kind
    reasons: tuple[str, ...] = ()
    rewrite: str | None = None
    refused_by: tuple[str, ...] = ()  # engines earlier in the preference chain that refused it

    def to_dict(self) -> dict[str, object]:
        return {"node": self.node, "op_type": self.op_type, "engine": self.engine, "target": self.target,
                "kind": self.kind, "reasons": list(self.reasons), "rewrite": self.rewrite,
                "refused_by": list(self.refused_by)}


@dataclass(frozen=True)
class EngineSpec:
    """One engine in the board's placement chain, with the op table that describes it."""

    engine: str
    target: Target
    table: OpTable


@dataclass(frozen=True)
class SupportReport:
    """Per-node placement on one board (the plan edgesdk executes), plus the vendor compiler's own view."""

    board_id: str
    partition_rule: str  # "first-unsupported-to-cpu", "any-segments" or "cpu-only"
    chain: tuple[EngineSpec, ...]
    placements: tuple[Placement, ...]
    #: For first-unsupported-to-cpu: what the vendor compiler alone would place (None otherwise).
    compiler_view: tuple[Placement, ...] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def primary(self) -> EngineSpec:
        return self.chain[0]

    def to_dict(self) -> dict[str, object]:
        return {
            "board": self.board_id,
            "partition_rule": self.partition_rule,
            "engines": [{"engine": e.engine, "target": e.target, "op_table": e.table.toolchain} for e in self.chain],
            "placements": [p.to_dict() for p in self.placements],
            "compiler_view": [p.to_dict() for p in self.compiler_view] if self.compiler_view is not None else None,
            "notes": list(self.notes),
        }


# -- rule evaluation -------------------------------------------------------------------------------

class _NodeView:
    """What the checks need to know about one node, computed lazily."""

    def __init__(self, model: Model, index: int) -> None:
        self.model = model
        self.node = model.nodes[index]
        self._attrs: dict[str, object] | None = None

    @property
    def attrs(self) -> dict[str, object]:
        if self._attrs is None:
            self._attrs = {}
            for a in self.node.attribute:
                v = onnx.helper.get_attribute_value(a)
                # float attributes are float32: 0.3 is stored as 0.30000001..., compare and print as written
                if a.type == onnx.AttributeProto.FLOAT:
                    v = float(f"{v:.7g}")
                elif a.type == onnx.AttributeProto.FLOATS:
                    v = [float(f"{x:.7g}") for x in v]
                if isinstance(v, bytes):
                    v = v.decode("utf-8", "replace")
                elif isinstance(v, list):
                    v = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
                self._attrs[a.name] = v
        return self._attrs

    def tensor(self, name: str) -> TensorInfo | None:
        return self.model.tensors.get(name) if name else None

    def input(self, i: int) -> TensorInfo | None:
        ins = self.node.input
        return self.tensor(ins[i]) if i < len(ins) else None

    def activations(self) -> list[TensorInfo | None]:
        """Runtime (non-initializer) inputs and all outputs."""
        out = [self.tensor(n) for n in self.node.input if n]
        out = [t for t in out if t is None or not t.is_initializer]
        return out + [self.tensor(n) for n in self.node.output if n]

    def is_const(self, i: int) -> bool:
        t = self.input(i)
        return t is not None and t.is_initializer

    def const_value(self, i: int) -> np.ndarray | None:
        if not self.is_const(i):
            return None
        t = self.model.initializer(self.node.input[i])
        if t is None or t.data_location == onnx.TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(t)

    def axis(self) -> int | None:
        op = self.node.op_type
        if "axis" in self.attrs:
            a = self.attrs["axis"]
        elif op in ("Softmax", "LogSoftmax", "Hardmax"):
            a = -1 if self.model.opset >= 13 else 1
        elif op == "Flatten":
            a = 1
        else:
            a = 0
        x = self.input(0)
        if x is None or x.rank is None or not isinstance(a, int):
            return None
        return a + x.rank if a < 0 else a


def _check_depthwise_or_dense(v: _NodeView) -> str | None:
    group = v.attrs.get("group", 1)
    x = v.input(0)
    ch = x.shape[1] if x is not None and x.shape and len(x.shape) > 1 else None
    if group == 1 or (ch is not None and group == ch):
        return None
    return f"grouped convolution (group={group}, input channels={ch}) is neither dense nor depthwise"


def _check_static_shapes(v: _NodeView) -> str | None:
    bad = [t.name if t else "?" for t in v.activations() if t is None or not t.static]
    return f"tensor(s) {', '.join(bad)} have no static shape" if bad else None


def _check_const_weights(v: _NodeView) -> str | None:
    bad = [v.node.input[i] for i in range(1, len(v.node.input)) if v.node.input[i] and not v.is_const(i)]
    return f"weights {', '.join(bad)} are runtime tensors, not constants" if bad else None


def _check_batch_one(v: _NodeView) -> str | None:
    x = v.input(0)
    if x is None or not x.shape:
        return "the batch dimension is unknown"
    return None if x.shape[0] == 1 else f"batch dimension is {x.shape[0]}, not 1"


def _check_channel_axis(v: _NodeView) -> str | None:
    ax = v.axis()
    return None if ax == 1 else f"works along axis {ax}, not the channel axis 1"


def _check_broadcast_4d(v: _NodeView) -> str | None:
    ranks = [t.rank for t in (v.tensor(n) for n in v.node.input if n) if t is not None]
    if any(r is None or r > 4 for r in ranks) and len(set(ranks)) > 1:
        return f"broadcasts between tensors of ranks {ranks} (at most 4 supported)"
    if any(r is None or r > 4 for r in ranks):
        return f"input rank {max(r or 0 for r in ranks)} above 4"
    return None


def _check_innermost_3d(v: _NodeView) -> str | None:
    for t in v.activations():
        if t is None or t.shape is None:
            return "a tensor has an unknown shape"
        outer = t.shape[:-3]
        if any(d is None or d > 1 for d in outer):
            return f"tensor {t.name} {list(t.shape)} has a dimension > 1 outside the 3 innermost"
    return None


def _check_same_pads(v: _NodeView) -> str | None:
    pads = v.attrs.get("pads")
    if pads is None and v.node.op_type == "Pad":
        val = v.const_value(1)
        pads = None if val is None else [int(x) for x in val.ravel()]
        if pads is None and len(v.node.input) > 1:
            return "pads are not constant"
    if pads:
        n = len(pads) // 2  # type: ignore[arg-type]
        if list(pads[:n]) != list(pads[n:]):  # type: ignore[index]
            return f"asymmetric padding {list(pads)}"  # type: ignore[arg-type]
    auto = v.attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return None  # symmetric whenever the kernel fits; the converter pads explicitly otherwise
    return None


def _check_resize_2x_int(v: _NodeView) -> str | None:
    x, y = v.input(0), v.tensor(v.node.output[0])
    if x is None or y is None or not x.static or not y.static or x.rank != y.rank or (x.rank or 0) < 3:
        return "input/output shapes must be static and of rank >= 3"
    fac = []
    for a, b in zip(x.shape, y.shape):  # type: ignore[arg-type]
        if a == 0 or b % a:  # type: ignore[operator]
            return f"scale {b}/{a} is not an integer"
        fac.append(b // a)  # type: ignore[operator]
    if any(f != 1 for f in fac[:-2]):
        return f"scales {fac} change more than H and W"
    return None


def _check_last_axis(v: _NodeView) -> str | None:
    x = v.input(0)
    ax = v.axis()
    if x is None or x.rank is None:
        return "input rank unknown"
    return None if ax == x.rank - 1 else f"works along axis {ax}, not the last axis {x.rank - 1}"


def _check_single_input_dynamic(v: _NodeView) -> str | None:
    bad = [v.node.input[i] for i in range(1, len(v.node.input)) if v.node.input[i] and not v.is_const(i)]
    return f"inputs {', '.join(bad)} must be constants" if bad else None


def _check_feature_maps_only(v: _NodeView) -> str | None:
    bad = [n for i, n in enumerate(v.node.input) if n and v.is_const(i)]
    return f"input(s) {', '.join(bad)} are constants" if bad else None


def _check_square_exponent(v: _NodeView) -> str | None:
    e = v.const_value(1) if len(v.node.input) > 1 else None
    if e is None:
        return "the exponent is not a constant"
    return None if e.size == 1 and float(e.reshape(-1)[0]) == 2.0 else f"exponent {e.reshape(-1)[:4].tolist()} is not 2"


#: Implementation of every check name in edgesdk.toolchains.spec.NAMED_CHECKS (a test keeps them equal).
CHECKS: dict[str, Callable[[_NodeView], str | None]] = {
    "depthwise_or_dense": _check_depthwise_or_dense,
    "static_shapes": _check_static_shapes,
    "const_weights": _check_const_weights,
    "batch_one": _check_batch_one,
    "channel_axis_concat": _check_channel_axis,
    "broadcast_4d": _check_broadcast_4d,
    "innermost_3d": _check_innermost_3d,
    "same_pads": _check_same_pads,
    "resize_2x_int": _check_resize_2x_int,
    "last_axis": _check_last_axis,
    "single_input_dynamic": _check_single_input_dynamic,
    "square_exponent": _check_square_exponent,
    "feature_maps_only": _check_feature_maps_only,
}


def _attr_problem(name: str, cond: AttrCond, value: object) -> str | None:
    def num(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if cond.in_ is not None and value not in cond.in_:
        return f"{name}={value!r} not in {cond.in_}"
    if cond.not_in is not None and value in cond.not_in:
        return f"{name}={value!r} is not accepted"
    if cond.min is not None and num(value) and value < cond.min:  # type: ignore[operator]
        return f"{name}={value!r} below {cond.min:g}"
    if cond.max is not None and num(value) and value > cond.max:  # type: ignore[operator]
        return f"{name}={value!r} above {cond.max:g}"
    seq = value if isinstance(value, (list, tuple)) else None
    if seq is not None:
        if cond.len_max is not None and len(seq) > cond.len_max:
            return f"{name} has {len(seq)} values, at most {cond.len_max}"
        if cond.each_in is not None and any(x not in cond.each_in for x in seq):
            return f"{name}={list(seq)} has values outside {cond.each_in}"
        if cond.each_min is not None and any(num(x) and x < cond.each_min for x in seq):
            return f"{name}={list(seq)} has values below {cond.each_min:g}"
        if cond.each_max is not None and any(num(x) and x > cond.each_max for x in seq):
            return f"{name}={list(seq)} has values above {cond.each_max:g}"
    return None


def evaluate(view: _NodeView, rule: OpRule | None, table: OpTable) -> Refusal | None:
    """None if `table`'s target accepts the node, else why not."""
    op = view.node.op_type
    if rule is None:
        return None if table.default_supported else Refusal("unsupported_op", f"{op}: {table.default_reason}")
    if not rule.supported:
        return Refusal("unsupported_op", f"{op}: {rule.reason}", rule.rewrite)
    for name, cond in rule.attrs.items():
        value = view.attrs.get(name, cond.default)
        if value is None:
            continue
        problem = _attr_problem(name, cond, value)
        if problem:
            return Refusal("attribute", f"{op}: unsupported attribute value {problem}", rule.rewrite)
    x = view.input(0)
    if rule.rank is not None and x is not None and x.rank is not None:
        if (rule.rank.min is not None and x.rank < rule.rank.min) or (rule.rank.max is not None and x.rank > rule.rank.max):
            return Refusal("limits", f"{op}: input rank {x.rank} outside [{rule.rank.min}, {rule.rank.max}]", rule.rewrite)
    if table.max_rank is not None:
        over = [t.name for t in view.activations() if t is not None and t.rank is not None and t.rank > table.max_rank]
        if over:
            return Refusal("limits", f"{op}: tensor(s) {', '.join(over)} above rank {table.max_rank}", rule.rewrite)
    if rule.dtypes is not None and x is not None and x.dtype not in rule.dtypes:
        return Refusal("limits", f"{op}: input dtype {x.dtype} not in {rule.dtypes}", rule.rewrite)
    for i in rule.const_inputs:
        if i < len(view.node.input) and view.node.input[i] and not view.is_const(i):
            return Refusal("limits", f"{op}: input {i} ({view.node.input[i]}) must be a constant", rule.rewrite)
    for check in rule.checks:
        problem = CHECKS[check](view)
        if problem:
            return Refusal("limits", f"{op}: {problem} ({check}: {NAMED_CHECKS[check]})", rule.rewrite)
    return None


# -- per board -------------------------------------------------------------------------------------

def engine_chain(board: BoardProfile, tables: Mapping[str, OpTable] | None = None) -> tuple[EngineSpec, ...]:
    """The engines a node is offered to, in order: accelerator, then the CPU engine, then the fallback.

    `tables` (toolchain id -> OpTable) overrides the shipped tables (tests use synthetic ones).
    """
    def table(tc: str) -> OpTable:
        if tables is not None and tc in tables:
            return tables[tc]
        return get_op_table(tc)

    chain: list[EngineSpec] = []
    acc = board.accelerator
    if acc is not None:
        chain.append(EngineSpec(acc.engine, "accelerator", table(acc.op_table)))
        cpu = next((e for e in board.engines if e != acc.engine), board.fallback_engine)
    else:
        cpu = board.engines[0]
    for eng in (cpu, board.fallback_engine):
        if all(c.engine != eng for c in chain):
            chain.append(EngineSpec(eng, "cpu", table(ENGINE_TOOLCHAIN[eng])))
    return tuple(chain)


def check_opset(model: Model, chain: tuple[EngineSpec, ...], board_id: str) -> list[str]:
    """ModelError when the model's op set is older than the board's first converter needs; notes otherwise."""
    notes = []
    first = chain[0].table
    if first.opset is not None and first.opset.min is not None and model.opset < first.opset.min:
        raise ModelError(
            f"the model uses ONNX op set {model.opset}, older than {first.toolchain} (board {board_id}) needs "
            f"(>= {first.opset.min}); convert it: onnx.version_converter.convert_version(model, {first.opset.min})")
    for spec in chain:
        rng = spec.table.opset
        if rng is not None and rng.max is not None and model.opset > rng.max:
            notes.append(f"op set {model.opset} is newer than {spec.table.toolchain} documents (<= {rng.max})")
    return notes


def check_support(model: Model, board: BoardProfile, tables: Mapping[str, OpTable] | None = None) -> SupportReport:
    """Where every node of `model` runs on `board`, and why, from the boards' op tables."""
    chain = engine_chain(board, tables)
    notes = check_opset(model, chain, board.id)
    placements: list[Placement] = []
    for i, node in enumerate(model.nodes):
        view = _NodeView(model, i)
        refused: list[tuple[str, Refusal]] = []
        chosen = None
        for spec in chain:
            r = evaluate(view, spec.table.rule(node.op_type), spec.table)
            if r is None:
                chosen = spec
                break
            refused.append((spec.engine, r))
        if chosen is None:
            # The last engine of the chain is the fallback: it takes the node even when its table
            # doubts it, and the report says so.
            chosen = chain[-1]
            notes.append(f"node {node.name} ({node.op_type}) is refused by every engine, even {chosen.engine}: "
                         f"{refused[-1][1].reason}")
        if not refused:
            placements.append(Placement(node.name, node.op_type, chosen.engine, chosen.target, "supported"))
            continue
        first = refused[0][1]
        kind: Kind = first.kind if chosen.target == "cpu" and chain[0].target == "accelerator" else "fallback"
        if chain[0].target == "cpu":
            kind = "fallback"
        reasons = tuple(f"{eng}: {r.reason}" for eng, r in refused)
        rewrite = next((r.rewrite for _, r in refused if r.rewrite), None)
        placements.append(Placement(node.name, node.op_type, chosen.engine, chosen.target, kind, reasons,
                                    rewrite, tuple(e for e, _ in refused)))

    compiler_view = None
    rule = board.accelerator.partition_rule if board.accelerator else "cpu-only"
    if rule == "first-unsupported-to-cpu":
        compiler_view = first_unsupported_view(placements, chain)
    return SupportReport(board.id, rule, chain, tuple(placements), compiler_view, tuple(notes))


def first_unsupported_view(placements: list[Placement], chain: tuple[EngineSpec, ...]) -> tuple[Placement, ...]:
    """The vendor compiler's view: the first unsupported op and everything after it stay on the CPU."""
    cpu = next((c for c in chain if c.target == "cpu"), chain[-1])
    out = []
    blocker: Placement | None = None
    for p in placements:  # ONNX nodes are stored in topological order, like the converted model's ops
        if blocker is None and p.target == "cpu":
            blocker = p
        if blocker is not None and p.target == "accelerator":
            p = Placement(p.node, p.op_type, cpu.engine, "cpu", "partition_rule",
                          (f"placed behind an earlier CPU op by the board's partition rule (first-unsupported-to-cpu): "
                           f"{blocker.node} ({blocker.op_type}) is the first op the accelerator refuses",),
                          None, (chain[0].engine,))
        out.append(p)
    return tuple(out)



def cpu_engine_for(model: Model, chain: tuple[EngineSpec, ...], index: int) -> EngineSpec:
    """The first CPU engine of the chain that accepts node `index` (the last one takes anything)."""
    view = _NodeView(model, index)
    cpus = [c for c in chain if c.target == "cpu"]
    for spec in cpus:
        if evaluate(view, spec.table.rule(view.node.op_type), spec.table) is None:
            return spec
    return cpus[-1]


__all__ = [
    "CHECKS",
    "first_unsupported_view",
    "ENGINE_TOOLCHAIN",
    "EngineSpec",
    "Placement",
    "Refusal",
    "SupportReport",
    "check_support",
    "cpu_engine_for",
    "engine_chain",
    "evaluate",
]

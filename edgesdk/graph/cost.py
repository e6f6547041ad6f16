"""The latency cost model: what a partition plan costs on a board, in estimated milliseconds.

Per node, a roofline at the utilisation of its op class (dense conv, depthwise, matmul, elementwise; data movement
costs its bytes only): ``max(FLOPs / (peak x utilisation), bytes / bandwidth)``; a Relu / Clip fed by a conv or matmul
costs nothing (every engine fuses it, `fused_nodes`). On the CPU the peak is the precision's (fp32; fp16 = 2x fp32
where the CPU has fp16 arithmetic; int8 = cpu_int8_gops x cpu_int8_efficiency) per core x (1 + (threads - 1) x
cpu_parallel_efficiency), the bandwidth the profile's (measured, else theoretical) x cpu_bandwidth_efficiency and the
bytes at the precision's width. On the accelerator the peak is accelerator.tops x accelerator_peak_fraction (one of
several NPU cores), the bandwidth the profile's DRAM, the bytes int8 (1/4 of float32). Per accelerator segment, a
fixed cost per invocation (invoke_ms) and, where the board says so (`weights_over_link`, the Coral), the parameters
that do not fit the on-chip cache crossing the link every inference. Per tensor that crosses between the CPU and the
accelerator (model inputs and outputs included): the bytes over the link at the accelerator's precision, and on the CPU
the (de)quantization and, where the layouts differ, the NCHW <-> NHWC conversion. Every figure comes from the board
profile's `cost` section, each with its source; scripts/calibrate_cost.py fits the free ones to the board's published
`reference_latencies` (docs/partitioning.md has the table). A board without a `cost` section gets the defaults below
and the estimate says it is uncalibrated.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgesdk.boards import BoardProfile
from edgesdk.graph.load import Model

#: op classes of the cost model, in the order the board profiles list their utilisations
OP_CLASSES = ("conv", "depthwise", "matmul", "elementwise")

_CONV = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"})
_MATMUL = frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"})
_LAYER_CLASSES = frozenset({"conv", "depthwise", "matmul"})
#: clamp activations every engine here applies in the producing conv's / matmul's output loop (TFLite's fused
#: activations RELU / RELU6 / RELU_N1_TO_1, ncnn's and MNN's conv + relu fusion, onnxruntime's FusedConv, the vendor
#: compilers): such a node moves no bytes of its own. Sigmoid, SiLU, HardSwish are not in the set: TFLite runs them
#: as separate LOGISTIC / MUL / HARD_SWISH ops, so whether they fuse depends on the engine.
_FUSABLE = frozenset({"Relu", "Clip"})
_FUSED: weakref.WeakKeyDictionary[Model, frozenset[int]] = weakref.WeakKeyDictionary()

#: used where a board has no `cost` section (the estimate is then labelled uncalibrated): middle-of-the-road
#: utilisations for NEON CPUs and int8 NPUs, 0.5 ms per accelerator invocation.
_DEFAULT_UTIL = {"conv": 0.4, "depthwise": 0.15, "matmul": 0.3, "elementwise": 0.1}
_DEFAULT_ACC_UTIL = {"conv": 0.3, "depthwise": 0.1, "matmul": 0.2, "elementwise": 0.05}
_DEFAULT_INVOKE_MS = 0.5
_DEFAULT_QUANT_NS = 0.5
_DEFAULT_LAYOUT_NS = 1.0
_DEFAULT_PARALLEL = 0.7

LABEL = "estimate (edgesdk.graph.cost: roofline per op class, invocations and hand-offs; not a measurement)"


@dataclass(frozen=True)
class Params:
    """A board's cost figures, resolved (defaults filled in) for one thread count and CPU precision."""

    board_id: str
    calibrated: bool
    cpu_peak: float  # op/s at the CPU precision, the threads used at the parallel efficiency
    acc_peak: float | None  # op/s: accelerator.tops x accelerator_peak_fraction
    cpu_util: Mapping[str, float]
    acc_util: Mapping[str, float]
    cpu_bw: float  # bytes/s
    acc_bw: float
    acc_byte_scale: float  # bytes on the accelerator per declared byte (int8: 1/4 of float32)
    invoke_ms: float
    link_bw: float  # bytes/s
    weights_over_link: bool
    weight_cache_bytes: float
    quant_ns: float
    layout_ns: float
    layout_differs: bool
    cpu_byte_scale: float = 1.0  # bytes on the CPU per declared byte at the CPU precision
    precision: str = "fp32"
    threads: int = 1


def _fig(f: Any, default: float) -> float:
    return float(f.value) if f is not None else default


#: bytes per declared float32 byte at each precision
_BYTE_SCALE = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25}


def cpu_peak_ops(board: BoardProfile, precision: str = "fp32", int8_efficiency: float | None = None) -> float:
    """All-core peak of the CPU at `precision`, op/s: fp32 = peaks.cpu_fp32_gflops; fp16 = twice that where the
    CPU has fp16 arithmetic (8 fp16 lanes per 128-bit FMA instead of 4), else fp32's; int8 = peaks.cpu_int8_gops x
    the board's cpu_int8_efficiency (default 1)."""
    fp32 = board.peaks.cpu_fp32_gflops.value * 1e9
    if precision == "fp16":
        return 2 * fp32 if "fp16" in board.cpu.features else fp32
    if precision == "int8":
        c = board.cost
        eff = int8_efficiency if int8_efficiency is not None else _fig(c.cpu_int8_efficiency if c else None, 1.0)
        return board.peaks.cpu_int8_gops.value * 1e9 * eff
    return fp32


def cpu_threads_peak(board: BoardProfile, precision: str, threads: int, parallel_efficiency: float,
                     int8_efficiency: float | None = None) -> float:
    """The CPU peak with `threads` threads: one core's peak x (1 + (threads - 1) x parallel_efficiency)."""
    n = max(1, min(threads, board.cpu.cores))
    return cpu_peak_ops(board, precision, int8_efficiency) / board.cpu.cores * (1 + (n - 1) * parallel_efficiency)


def params(board: BoardProfile, threads: int | None = None, precision: str | None = None) -> Params:
    """The board's cost figures; `threads`: CPU threads (default: every core); `precision`: what the CPU segments
    compute in (fp32 by default; fp16, int8). Accelerator segments are int8 (what convert builds for them)."""
    c = board.cost
    acc = board.accelerator
    cores = board.cpu.cores
    n = max(1, min(threads or cores, cores))
    prec = precision or "fp32"
    eff = _fig(c.cpu_parallel_efficiency if c else None, _DEFAULT_PARALLEL)
    cpu_peak = cpu_threads_peak(board, prec, n, eff)
    bw = (board.memory.measured_gbs or board.memory.bandwidth_gbs).value * 1e9
    cpu_bw = bw * _fig(c.cpu_bandwidth_efficiency if c else None, 1.0)
    cpu_util = {k: float(getattr(c.cpu, k).value) for k in OP_CLASSES} if c else dict(_DEFAULT_UTIL)
    acc_util = ({k: float(getattr(c.accelerator, k).value) for k in OP_CLASSES} if c and c.accelerator
                else dict(_DEFAULT_ACC_UTIL))
    cache = acc.on_chip_memory_mb.value * 1e6 if acc is not None and acc.on_chip_memory_mb else 0.0
    acc_peak = None
    if acc is not None:
        acc_peak = acc.tops.value * 1e12 * _fig(c.accelerator_peak_fraction if c else None, 1.0)
    return Params(
        board_id=board.id, calibrated=c is not None,
        cpu_peak=cpu_peak, acc_peak=acc_peak,
        cpu_util=cpu_util, acc_util=acc_util, cpu_bw=cpu_bw, acc_bw=board.memory.bandwidth_gbs.value * 1e9,
        acc_byte_scale=_BYTE_SCALE["int8"],
        invoke_ms=_fig(c.invoke_ms if c else None, _DEFAULT_INVOKE_MS) if acc is not None else 0.0,
        link_bw=_fig(c.link_gbs if c else None, board.memory.bandwidth_gbs.value) * 1e9,
        weights_over_link=bool(c and c.weights_over_link), weight_cache_bytes=cache,
        quant_ns=_fig(c.quantize_ns_per_byte if c else None, _DEFAULT_QUANT_NS),
        layout_ns=_fig(c.layout_ns_per_byte if c else None, _DEFAULT_LAYOUT_NS),
        layout_differs=bool(c and c.accelerator_layout == "NHWC"),
        cpu_byte_scale=_BYTE_SCALE.get(prec, 1.0),
        precision=prec, threads=n,
    )


def op_class(model: Model, j: int) -> str | None:
    """The cost class of node j: conv, depthwise, matmul, elementwise, or None for data movement (0 FLOPs)."""
    node = model.nodes[j]
    op = node.op_type
    if op in _CONV:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if group > 1:
            x = model.tensors.get(node.input[0]) if node.input else None
            cin = x.shape[1] if x is not None and x.shape and len(x.shape) > 1 else None
            if cin is not None and group == cin:
                return "depthwise"
        return "conv"
    if op in _MATMUL:
        return "matmul"
    if model.costs[j].flops == 0:
        return None
    return "elementwise"


def fused_nodes(model: Model) -> frozenset[int]:
    """Nodes fused into the conv / matmul that produces their input: an activation of `_FUSABLE` whose data input
    comes from a conv, depthwise or matmul node (or from such a fused activation), and the Mul of x * act(x) (SiLU,
    HardSwish written out) over such a pair. They cost nothing beyond the producer's own output write."""
    got = _FUSED.get(model)
    if got is not None:
        return got
    fused: set[int] = set()
    for j, node in enumerate(model.nodes):
        data = [n for n in node.input if n and not (model.tensors.get(n) and model.tensors[n].is_initializer)]
        prods = [model.producer.get(n) for n in data]
        if not data or any(i is None for i in prods):
            continue
        base = [i for i in prods if i is not None and (i in fused or op_class(model, i) in _LAYER_CLASSES)]
        if node.op_type in _FUSABLE and len(data) == 1 and base:
            fused.add(j)
        elif node.op_type == "Mul" and len(data) == 2 and len(base) == 2 and any(i in fused for i in prods):
            a, b = prods
            act, x = (a, b) if a in fused else (b, a)
            if model.producer.get(model.nodes[act].input[0]) == x or model.nodes[act].input[0] in model.nodes[x].output:
                fused.add(j)
    out = frozenset(fused)
    _FUSED[model] = out
    return out


def node_ms(model: Model, j: int, target: str, p: Params) -> float:
    """Estimated milliseconds of node j on `target` ("cpu" or "accelerator"): the roofline at its class's
    utilisation; 0 for an activation fused into its producer (see `fused_nodes`)."""
    if j in fused_nodes(model):
        return 0.0
    c = model.costs[j]
    cls = op_class(model, j)
    if target == "accelerator" and p.acc_peak is not None:
        peak, util, bw, scale = p.acc_peak, p.acc_util, p.acc_bw, p.acc_byte_scale
    else:
        peak, util, bw, scale = p.cpu_peak, p.cpu_util, p.cpu_bw, p.cpu_byte_scale
    compute = c.flops / (peak * util[cls]) if cls is not None and c.flops else 0.0
    memory = c.bytes_moved * scale / bw
    return 1e3 * max(compute, memory)


@dataclass(frozen=True)
class SegmentCost:
    index: int
    engine: str
    target: str
    compute_ms: float  # the nodes' rooflines
    invoke_ms: float  # the fixed cost of one invocation (accelerator segments)
    weights_ms: float  # parameters streamed over the link (weights_over_link boards)

    @property
    def ms(self) -> float:
        return self.compute_ms + self.invoke_ms + self.weights_ms

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "engine": self.engine, "target": self.target,
                "compute_ms": self.compute_ms, "invoke_ms": self.invoke_ms, "weights_ms": self.weights_ms,
                "estimate_ms": self.ms}


@dataclass(frozen=True)
class BoundaryCost:
    """One tensor crossing between the CPU and the accelerator (or between two CPU engines: a copy)."""

    tensor: str
    src: int | None  # segment index, None for a model input
    dst: int | None  # segment index, None for a model output
    bytes: int  # as the graph declares it (float32 usually)
    link_ms: float
    convert_ms: float  # (de)quantize + layout on the CPU

    @property
    def ms(self) -> float:
        return self.link_ms + self.convert_ms

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "src": self.src, "dst": self.dst, "bytes": self.bytes,
                "link_ms": self.link_ms, "convert_ms": self.convert_ms, "estimate_ms": self.ms}


@dataclass(frozen=True)
class PlanCost:
    board_id: str
    calibrated: bool
    segments: tuple[SegmentCost, ...]
    boundaries: tuple[BoundaryCost, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def compute_ms(self) -> float:
        return sum(s.compute_ms for s in self.segments)

    @property
    def invoke_ms(self) -> float:
        return sum(s.invoke_ms + s.weights_ms for s in self.segments)

    @property
    def boundary_ms(self) -> float:
        return sum(b.ms for b in self.boundaries)

    @property
    def total_ms(self) -> float:
        return self.compute_ms + self.invoke_ms + self.boundary_ms

    def to_dict(self) -> dict[str, Any]:
        return {"label": LABEL, "calibrated": self.calibrated, "total_ms": self.total_ms,
                "compute_ms": self.compute_ms, "invoke_ms": self.invoke_ms, "boundary_ms": self.boundary_ms,
                "segments": [s.to_dict() for s in self.segments],
                "boundaries": [b.to_dict() for b in self.boundaries], "notes": list(self.notes)}


def boundary_ms(p: Params, nbytes: int, rank: int | None, to_or_from_accelerator: bool = True) -> tuple[float, float]:
    """(link ms, CPU convert ms) of one tensor of `nbytes` (declared) crossing a boundary."""
    if not to_or_from_accelerator:
        return 0.0, 1e3 * 2 * nbytes / p.cpu_bw  # a copy between two CPU engines
    link = 1e3 * nbytes * p.acc_byte_scale / p.link_bw
    conv = nbytes * p.quant_ns * 1e-6
    if p.layout_differs and rank == 4:
        conv += nbytes * p.layout_ns * 1e-6
    return link, conv


def _rank(model: Model, name: str) -> int | None:
    t = model.tensors.get(name)
    return len(t.shape) if t is not None and t.shape is not None else None


def estimate_placement(model: Model, board: BoardProfile, segments: Iterable[tuple[int, str, str, Iterable[int]]],
                       threads: int | None = None, precision: str | None = None, p: Params | None = None
                       ) -> PlanCost:
    """Cost of ordered segments given as (index, engine, target, node indices), the model's inputs feeding them.

    The general form behind estimate_plan: callers that try many placements (plan candidates, calibration) build the
    segments without a PartitionPlan. `precision`: the CPU segments' (see `params`); `p`: resolved figures to use
    instead of the board's (calibration tries candidate figures this way)."""
    p = p or params(board, threads, precision)
    segs = [(i, e, t, list(nodes)) for i, e, t, nodes in segments]
    seg_of: dict[int, int] = {}
    for k, (_, _, _, nodes) in enumerate(segs):
        for j in nodes:
            seg_of[j] = k
    out_names = set(model.outputs)
    seg_costs = []
    boundaries: list[BoundaryCost] = []
    for k, (idx, eng, target, nodes) in enumerate(segs):
        compute = sum(node_ms(model, j, target, p) for j in nodes)
        inv = weights = 0.0
        if target == "accelerator":
            inv = p.invoke_ms
            if p.weights_over_link:
                params_b = sum(model.costs[j].param_bytes for j in nodes) * p.acc_byte_scale
                weights = 1e3 * max(0.0, params_b - p.weight_cache_bytes) / p.link_bw
        seg_costs.append(SegmentCost(idx, eng, target, compute, inv, weights))
        # inputs: each tensor read from outside the segment, once per segment
        seen: set[str] = set()
        for j in nodes:
            for name in model.node_inputs[j]:
                if name in seen:
                    continue
                src = model.producer.get(name)
                t = model.tensors.get(name)
                if t is None or t.is_initializer:
                    continue
                if src is None and name not in model.inputs:
                    continue
                if src is not None and seg_of.get(src) == k:
                    continue
                seen.add(name)
                src_target = "cpu" if src is None else segs[seg_of[src]][2]
                src_engine = None if src is None else segs[seg_of[src]][1]
                if src_target == target and (target == "accelerator" or src_engine in (None, eng)):
                    continue
                link, conv = boundary_ms(p, t.nbytes, _rank(model, name), "accelerator" in (src_target, target))
                boundaries.append(BoundaryCost(name, None if src is None else segs[seg_of[src]][0], idx,
                                               t.nbytes, link, conv))
        if target == "accelerator":  # model outputs leave the accelerator
            for j in nodes:
                for name in model.nodes[j].output:
                    if name in out_names and name in model.tensors:
                        t = model.tensors[name]
                        link, conv = boundary_ms(p, t.nbytes, _rank(model, name))
                        boundaries.append(BoundaryCost(name, idx, None, t.nbytes, link, conv))
    notes = () if p.calibrated else (f"board {board.id} has no calibrated cost model (no `cost` section in its "
                                     f"profile): default utilisations",)
    return PlanCost(board.id, p.calibrated, tuple(seg_costs), tuple(boundaries), notes)


def estimate_plan(model: Model, board: BoardProfile, plan: Any, threads: int | None = None,
                  precision: str | None = None) -> PlanCost:
    """Cost of a PartitionPlan of `model` on `board`."""
    idx = {n.name: i for i, n in enumerate(model.nodes)}
    return estimate_placement(model, board, ((s.index, s.engine, s.target, [idx[n] for n in s.nodes])
                                             for s in plan.segments), threads, precision)


def all_on(model: Model, board: BoardProfile, target: str, engine: str | None = None,
           threads: int | None = None, precision: str | None = None, p: Params | None = None) -> PlanCost:
    """Cost of the whole model in one segment on `target` (calibration against published whole-model figures)."""
    eng = engine or ((board.accelerator.engine if board.accelerator else board.engines[0]) if target == "accelerator"
                     else next(e for e in board.engines if board.accelerator is None or e != board.accelerator.engine))
    return estimate_placement(model, board, [(0, eng, target, range(len(model.nodes)))], threads, precision, p)


__all__ = ["LABEL", "OP_CLASSES", "BoundaryCost", "Params", "PlanCost", "SegmentCost", "all_on", "boundary_ms",
           "cpu_peak_ops", "cpu_threads_peak", "estimate_placement", "estimate_plan", "fused_nodes", "node_ms",
           "op_class", "params"]

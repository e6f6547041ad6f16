"""The inspect report: per-op placement table, segments, roofline latency estimates, rewrites, board comparison."""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgesdk.boards import BoardProfile, get_board, list_boards
from edgesdk.graph.load import Model
from edgesdk.graph.partition import DEFAULT_MIN_ISLAND_SHARE, PartitionPlan, partition
from edgesdk.graph.support import SupportReport, check_support
from edgesdk.toolchains.logs import COMPILER_LOG_NOTE
from edgesdk.toolchains.spec import OpTable

ESTIMATE_LABEL = "estimate (roofline from the board profile's peaks, not a measurement)"


@dataclass(frozen=True)
class Analysis:
    """A model checked and partitioned for one board."""

    model: Model
    board: BoardProfile
    support: SupportReport
    plan: PartitionPlan
    #: the candidate plans and why the chosen one won (edgesdk.graph.plans); None on a CPU board
    choice: Any = None
    #: the function-preserving rewrites applied for this board (edgesdk.graph.rewrite.RewriteResult), or None
    rewrites: Any = None


def keep_on_cpu(model: Model, support: Any, nodes: Mapping[str, str]) -> Any:
    """`support` with the accelerator nodes named in `nodes` (name -> why) placed on the board's CPU engine that
    takes them: int8 mixed precision keeps those layers in float, which an int8-only accelerator cannot (a recorded
    fallback, kind "fallback", its reason the precision's)."""
    from dataclasses import replace

    from edgesdk.graph.support import cpu_engine_for

    out = []
    for i, p in enumerate(support.placements):
        if p.node in nodes and p.target == "accelerator":
            spec = cpu_engine_for(model, support.chain, i)
            p = replace(p, engine=spec.engine, target="cpu", kind="fallback", reasons=(nodes[p.node],),
                        refused_by=(*p.refused_by, p.engine))
        out.append(p)
    from edgesdk.graph.support import first_unsupported_view

    # the vendor compiler's own cut moves with them (the `vendor` candidate reads it)
    view = first_unsupported_view(out, support.chain) if support.compiler_view is not None else None
    return replace(support, placements=tuple(out), compiler_view=view)


def analyze(model: Model, board: BoardProfile, tables: Mapping[str, OpTable] | None = None,
            min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE, whole_model: bool = True,
            keep_cpu: Mapping[str, str] | None = None, plan: str = "best",
            max_segments: int | None = None, rewrite: bool = True, feed: Mapping[str, Any] | None = None,
            feed_source: str | None = None) -> Analysis:
    """Support check and partition of a loaded model for one board.

    On a board without an accelerator, a model its first CPU engine cannot take whole goes whole to the
    board's next CPU engine that takes every node (`whole_model`), rather than being cut between engines:
    the plan says so in its notes. With `whole_model=False` (an explicit --engine) the board's order stands.
    `keep_cpu`: accelerator nodes moved to the CPU (keep_on_cpu). On a board with an accelerator, `plan` picks among
    the candidate plans by estimated latency (edgesdk.graph.plans: best, or a forced cpu / vendor / split) within
    `max_segments`; the analysis carries the candidates and the reason (`choice`). Before that, `rewrite` applies
    the function-preserving rewrites the accelerator needs (edgesdk.graph.rewrite: proven on onnxruntime on `feed`,
    else a seeded input); the analysis' `model` is then the rewritten one, and `rewrites` says what was applied."""
    from edgesdk.graph.plans import PLAN_MODES

    if plan not in PLAN_MODES or (max_segments is not None and max_segments < 1):
        from edgesdk.errors import InputError

        raise InputError(f"--plan {plan!r} / --max-segments {max_segments}: the plan is one of "
                         f"{', '.join(PLAN_MODES)}, and the bound at least 1")
    rw = None
    original = model
    if rewrite and board.accelerator is not None:
        from edgesdk.graph.rewrite import apply_rewrites

        rw = apply_rewrites(model, board, tables, feed=feed, input_source=feed_source)
        model = rw.model
    support = check_support(model, board, tables)
    if keep_cpu:
        support = keep_on_cpu(model, support, keep_cpu)
    if whole_model and board.accelerator is None:
        first = board.engines[0]
        refused = [p for p in support.placements if p.engine != first]
        if refused:
            for eng in board.engines[1:]:
                if eng == board.fallback_engine:
                    break
                alt = board.model_copy(update={"engines": [eng, *[e for e in board.engines if e != eng]]})
                s2 = check_support(model, alt, tables)
                if all(p.engine == eng for p in s2.placements):
                    ops = sorted({p.op_type for p in refused})
                    note = (f"{first} cannot take {len(refused)} node(s) ({', '.join(ops[:5])}"
                            f"{'...' if len(ops) > 5 else ''}: {refused[0].reasons[0] if refused[0].reasons else ''}); "
                            f"the whole model goes to {eng}, the board's next engine, which takes every node, "
                            f"instead of cutting it between {first} and {support.chain[-1].engine}")
                    plan = partition(model, alt, s2, min_island_flops_share)
                    from dataclasses import replace

                    plan = replace(plan, notes=(note, *plan.notes))
                    return Analysis(model, alt, s2, plan)
    if board.accelerator is None:
        return Analysis(model, board, support, partition(model, board, support, min_island_flops_share))
    from edgesdk.graph.plans import choose

    ch = choose(model, board, support, plan, max_segments, min_island_flops_share, tables)
    chosen = ch.chosen
    if rw is not None and rw.changed and not any(s.target == "accelerator" for s in chosen.plan.segments):
        # the rewrites only serve the accelerator: a plan without it runs the model as it came
        return analyze(original, board, tables, min_island_flops_share, whole_model, keep_cpu, plan, max_segments,
                       rewrite=False)
    from dataclasses import replace

    notes = (*((rw.summary(),) if rw is not None and rw.changed else ()), *(rw.notes if rw is not None else ()),
             f"plan: {ch.reason}", *chosen.plan.notes)
    return Analysis(model, board, chosen.support, replace(chosen.plan, notes=notes), ch, rw)


@dataclass(frozen=True)
class OpRow:
    op_type: str
    count: int
    where: dict[str, int]  # engine -> node count
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "count": self.count, "where": self.where, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class SegmentEstimate:
    index: int
    engine: str
    target: str
    nodes: int
    flops: int
    flops_share: float
    bytes: int
    compute_ms: float
    memory_ms: float

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "engine": self.engine, "target": self.target, "nodes": self.nodes,
                "flops": self.flops, "flops_share": self.flops_share, "bytes": self.bytes,
                "compute_ms": self.compute_ms, "memory_ms": self.memory_ms, "estimate_ms": self.ms,
                "bound": self.bound}


@dataclass(frozen=True)
class Rewrite:
    op_type: str
    count: int
    suggestion: str
    source: str  # "op table" or "rewrites table"

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "count": self.count, "suggestion": self.suggestion, "source": self.source}


@dataclass(frozen=True)
class InspectReport:
    model: str
    nodes: int
    total_flops: int
    param_bytes: int
    inputs: tuple[dict[str, Any], ...]
    board_id: str
    board_name: str
    partition_rule: str
    ops: tuple[OpRow, ...]
    plan: PartitionPlan
    estimates: tuple[SegmentEstimate, ...]
    transfer_bytes: int
    transfer_ms: float
    rewrites: tuple[Rewrite, ...]
    accelerator: str | None
    compiler_view: dict[str, Any] | None
    notes: tuple[str, ...] = field(default=())
    #: per node, in topological order: name, op_type, engine, target, kind, reasons
    node_placements: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    #: producer node -> consumer node, for drawing
    edges: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    #: graph preparation (edgesdk.graph.prepare) as a dict, when the model went through it
    prepare: dict[str, Any] | None = None
    #: inspect --compiler: what the vendor compiler, run here, did with each node (run_compiler)
    compiler_run: dict[str, Any] | None = None
    #: the latency model's estimate of the plan (edgesdk.graph.cost.PlanCost)
    cost: Any = None
    #: the candidate plans and the reason for the choice (edgesdk.graph.plans.PlanChoice.to_dict())
    plan_choice: dict[str, Any] | None = None
    #: the op types that keep nodes off the accelerator, with their estimated cost and rewrite (plans.Blocker)
    blockers: tuple[Any, ...] = ()
    #: the estimate with every node on the accelerator (what lifting every blocker could give at best)
    all_on_accelerator_ms: float | None = None
    #: function-preserving rewrites applied for this board (edgesdk.graph.rewrite), as dicts
    rewrites_applied: tuple[dict[str, Any], ...] = ()

    @property
    def accelerator_flops_share(self) -> float | None:
        return self.plan.accelerator_flops_share if self.accelerator else None

    @property
    def estimate_ms(self) -> float:
        """The latency model's estimate of the chosen plan (edgesdk.graph.cost)."""
        if self.cost is not None:
            return float(self.cost.total_ms)
        return sum(e.ms for e in self.estimates) + self.transfer_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "nodes": self.nodes, "total_flops": self.total_flops,
            "param_bytes": self.param_bytes, "inputs": list(self.inputs),
            "board": self.board_id, "board_name": self.board_name, "accelerator": self.accelerator,
            "partition_rule": self.partition_rule,
            "ops": [r.to_dict() for r in self.ops],
            "accelerator_flops_share": self.accelerator_flops_share,
            "segments": [s.to_dict() for s in self.plan.segments],
            "transfers": {"count": len(self.plan.transfers), "handoffs": self.plan.handoffs,
                          "bytes": self.transfer_bytes, "estimate_ms": self.transfer_ms},
            "folded_islands": [f.to_dict() for f in self.plan.folded],
            "latency": {**(self.cost.to_dict() if self.cost is not None else {"label": ESTIMATE_LABEL}),
                        "total_ms": self.estimate_ms,
                        "roofline": {"label": ESTIMATE_LABEL, "segments": [e.to_dict() for e in self.estimates],
                                     "transfer_ms": self.transfer_ms}},
            "plan_choice": self.plan_choice,
            "blockers": [b.to_dict() for b in self.blockers],
            "all_on_accelerator_ms": self.all_on_accelerator_ms,
            "rewrites_applied": list(self.rewrites_applied),
            "rewrites": [r.to_dict() for r in self.rewrites],
            "prepare": self.prepare,
            "compiler_view": self.compiler_view,
            "compiler_run": self.compiler_run,
            "notes": list(self.notes),
            "placements": list(self.node_placements),
        }


@functools.lru_cache(maxsize=1)
def rewrite_table() -> dict[str, dict[str, str]]:
    data = yaml.safe_load((Path(__file__).with_name("rewrites.yaml")).read_text(encoding="utf-8"))
    return {k: dict(v or {}) for k, v in data.items()}


def _estimates(board: BoardProfile, plan: PartitionPlan) -> tuple[list[SegmentEstimate], int, float]:
    bw = board.memory.bandwidth_gbs.value * 1e9
    cpu_peak = board.peaks.cpu_fp32_gflops.value * 1e9
    acc = board.accelerator
    acc_peak = acc.tops.value * 1e12 if acc else cpu_peak
    # int8 accelerators move a quarter of the fp32 bytes the graph declares.
    acc_scale = 0.25 if acc and not set(acc.dtypes) & {"fp16", "int16"} else 0.5
    out = []
    for s in plan.segments:
        nbytes = s.param_bytes + s.input_bytes + s.activation_bytes
        is_acc = s.target == "accelerator"
        if is_acc:
            nbytes = int(nbytes * acc_scale)
        peak = acc_peak if is_acc else cpu_peak
        out.append(SegmentEstimate(s.index, s.engine, s.target, len(s.nodes), s.flops, s.flops_share, nbytes,
                                   1e3 * s.flops / peak, 1e3 * nbytes / bw))
    tbytes = sum(t.bytes for t in plan.transfers)
    return out, tbytes, 1e3 * tbytes / bw


def build_report(a: Analysis) -> InspectReport:
    """The inspect report of one analysis."""
    model, board, support, plan = a.model, a.board, a.support, a.plan
    folded_nodes = {n for f in plan.folded for n in f.nodes}
    counts: Counter[str] = Counter()
    where: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, dict[str, None]] = defaultdict(dict)
    rewrite_src: dict[str, str] = {}
    refused: Counter[str] = Counter()
    for p in support.placements:
        eng = plan.placement.get(p.node, p.engine)
        counts[p.op_type] += 1
        where[p.op_type][eng] += 1
        for r in p.reasons:
            reasons[p.op_type][r] = None
        if p.node in folded_nodes:
            reasons[p.op_type]["folded into the CPU: a small accelerator island, moving it saves two transfers"] = None
        if p.reasons and p.target == "cpu" and p.kind != "plan":
            refused[p.op_type] += 1
            if p.rewrite and p.op_type not in rewrite_src:
                rewrite_src[p.op_type] = p.rewrite
    ops = tuple(OpRow(op, counts[op], dict(where[op].most_common()), tuple(reasons[op]))
                for op in sorted(counts, key=lambda o: (-counts[o], o)))

    table = rewrite_table()
    kind = board.accelerator.kind if board.accelerator else "cpu"
    rewrites = []
    for op, n in refused.most_common():
        if op in rewrite_src:
            rewrites.append(Rewrite(op, n, rewrite_src[op], "op table"))
        else:
            text = table.get(kind, {}).get(op) or table.get("any", {}).get(op)
            if text:
                rewrites.append(Rewrite(op, n, text, "rewrites table"))

    est, tbytes, tms = _estimates(board, plan)
    from edgesdk.graph.cost import estimate_plan
    from edgesdk.graph.plans import explain

    cost = estimate_plan(model, board, plan)
    blockers: tuple[Any, ...] = ()
    all_acc = None
    if a.choice is not None:
        blockers, all_acc = explain(model, board, a.choice, lambda op, p: suggestion(kind, op, p.rewrite))
    compiler_view = None
    if support.compiler_view is not None:
        total = model.total_flops or 1
        idx = {n.name: i for i, n in enumerate(model.nodes)}
        on_acc = sum(model.costs[idx[p.node]].flops for p in support.compiler_view if p.target == "accelerator")
        from_log = COMPILER_LOG_NOTE in support.notes
        # A log-derived view is what the vendor compiler did; otherwise it is edgesdk's prediction of it.
        first = next((p for p in (support.compiler_view if from_log else support.placements) if p.target == "cpu"),
                     None)
        behind = sum(1 for p in support.compiler_view if p.kind == "partition_rule")
        compiler_view = {
            "source": "vendor compiler log" if from_log else "edgesdk's prediction",
            "rule": support.partition_rule,
            "accelerator_flops_share": on_acc / total,
            "segments": 1 if first is None or on_acc == 0 else 2,
            "first_unsupported": {"node": first.node, "op_type": first.op_type, "reasons": list(first.reasons)}
            if first else None,
            "placed_behind_by_rule": behind,
        }
    params = sum(t.nbytes for t in model.tensors.values() if t.is_initializer)
    node_placements = []
    for p in support.placements:
        eng = plan.placement.get(p.node, p.engine)
        d = p.to_dict()
        if p.node in folded_nodes:
            d.update(engine=eng, target="cpu", kind="folded",
                     reasons=["folded into the CPU: a small accelerator island, moving it saves two transfers"])
        node_placements.append(d)
    names = [n.name for n in model.nodes]
    edges = tuple((names[i], names[j]) for i, succ in enumerate(model.consumers()) for j in succ)
    inputs = tuple(model.tensors[n].to_dict() for n in model.inputs)
    return InspectReport(
        model=model.name, nodes=len(model.nodes), total_flops=model.total_flops, param_bytes=params, inputs=inputs,
        board_id=board.id, board_name=board.name, partition_rule=support.partition_rule, ops=ops, plan=plan,
        estimates=tuple(est), transfer_bytes=tbytes, transfer_ms=tms, rewrites=tuple(rewrites),
        accelerator=board.accelerator.name if board.accelerator else None, compiler_view=compiler_view,
        notes=plan.notes, node_placements=tuple(node_placements), edges=edges,
        cost=cost, plan_choice=a.choice.to_dict() if a.choice is not None else None, blockers=blockers,
        all_on_accelerator_ms=all_acc,
        rewrites_applied=tuple(r.to_dict() for r in a.rewrites.applied) if a.rewrites is not None else (),
    )


def suggestion(kind: str, op_type: str, table_rewrite: str | None = None) -> tuple[str, bool] | None:
    """(rewrite text, keeps the function) for an op an accelerator of `kind` refuses: the op table's own `rewrite`
    first, then edgesdk/graph/rewrites.yaml. A rewrite keeps the function only where its text says "(exact";
    every other one changes it (fine-tune after applying it)."""
    text = table_rewrite
    if not text:
        table = rewrite_table()
        text = table.get(kind, {}).get(op_type) or table.get("any", {}).get(op_type)
    if not text:
        return None
    return text, "(exact" in text


def inspect_model(path: Any, board_id: str, input_shapes: Mapping[str, Sequence[int]] | None = None,
                  min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE, prepare: bool = True,
                  example_inputs: Any = None, trust_model: bool = False, compiler: bool = False,
                  plan: str = "best", max_segments: int | None = None, rewrite: bool = True) -> InspectReport:
    """Open `path` (any input convert takes), prepare it, check and partition it for `board_id`, and report
    (the `edgesdk inspect` command). trust_model: see edgesdk.frontends (TorchScript is code). compiler: also run
    the board's vendor compiler on the prepared model and report what it did (`compiler_run`), against edgesdk's
    prediction, node by node."""
    from dataclasses import replace

    from edgesdk.graph.source import opened

    board = get_board(board_id)
    with opened(path, input_shapes, prepare, example_inputs, trust_model=trust_model) as o:
        rep = build_report(analyze(o.model, board, min_island_flops_share=min_island_flops_share, plan=plan,
                                   max_segments=max_segments, rewrite=rewrite))
        rep = replace(rep, model=o.original.name if o.source is None else Path(o.source).stem,
                      notes=o.notes + (o.prepare.summary(),) + rep.notes, prepare=o.prepare.to_dict())
        if compiler:
            rep = replace(rep, compiler_run=run_compiler(o.model, board, rep))
        return rep


def run_compiler(model: Model, board: BoardProfile, rep: InspectReport) -> dict[str, Any]:
    """The board's vendor compiler run on `model` (inspect --compiler): its placement per node, mapped back to the
    ONNX nodes, beside edgesdk's (the report's node_placements), with every disagreement. Raises InputError when the
    board has no accelerator or its adapter cannot run the compiler here, with the fix."""
    import tempfile

    import onnx

    from edgesdk.errors import InputError
    from edgesdk.toolchains.adapters import accelerator_adapter_class
    from edgesdk.toolchains.adapters.base import IOSpec

    if board.accelerator is None:
        raise InputError(f"--compiler: board {board.id} has no accelerator, so no vendor compiler")
    adapter = accelerator_adapter_class(board.accelerator.engine)()
    env = adapter.vendor_env()
    if not env.ok:
        raise InputError(f"--compiler: {adapter.vendor_binary} is not ready for board {board.id}: {env.detail} "
                         f"(fix: {env.fix or adapter.install_hint})")
    host = adapter.check_env()  # the host steps before the compiler (imx93: the tflite toolchain's int8 TFLite)
    if not host.ok:
        raise InputError(f"--compiler: the host steps for board {board.id} are not ready: {host.detail} "
                         f"(fix: {host.fix})")

    def spec(name: str) -> IOSpec:
        t = model.tensors[name]
        if t.shape is None or any(not isinstance(d, int) or d <= 0 for d in t.shape):
            raise InputError(f"--compiler: tensor {name!r} has no static shape {t.shape}: pass --input-shape")
        return IOSpec(name, tuple(int(d) for d in t.shape), t.dtype)

    ins, outs = tuple(spec(n) for n in model.inputs), tuple(spec(n) for n in model.outputs)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgesdk-inspect-compiler-") as d:
        onnx_path = Path(d) / "model.onnx"
        onnx.save(model.proto, str(onnx_path))
        placement = adapter.compiler_placement(onnx_path, Path(d), ins, outs)
    if placement is None:
        raise InputError(f"--compiler: edgesdk cannot map {adapter.vendor_binary}'s placement back to the model's "
                         f"nodes for board {board.id} (it does for rk3588 and imx93); `edgesdk convert --board "
                         f"{board.id}` runs the compiler and keeps its log")
    idx = {n.name: i for i, n in enumerate(model.nodes)}
    ours = {p["node"]: p for p in rep.node_placements}
    mapped = [n for n in ours if n in placement]
    diffs = [{"node": n, "op_type": ours[n]["op_type"], "edgesdk": ours[n]["target"], "compiler": placement[n][0],
              "compiler_says": placement[n][1], "edgesdk_says": list(ours[n]["reasons"])}
             for n in mapped if (ours[n]["target"] == "accelerator") != (placement[n][0] == "accelerator")]
    total = sum(model.costs[idx[n]].flops for n in mapped) or 1  # of the mapped nodes: a fused op's others are not
    on_acc = sum(model.costs[idx[n]].flops for n in mapped if placement[n][0] == "accelerator")
    from edgesdk.toolchains.spec import get_toolchain

    pins = get_toolchain(adapter.id).versions
    tool = env.version or " ".join(f"{k}{v}" for k, v in pins.items()) or adapter.vendor_binary
    return {"label": "vendor compiler", "tool": tool, "seconds": round(time.perf_counter() - t0, 1),
            "nodes": len(ours), "mapped": len(mapped), "unmapped": len(ours) - len(mapped),
            "agreement_percent": round(100.0 * (len(mapped) - len(diffs)) / len(mapped), 1) if mapped else None,
            "accelerator_flops_share_of_mapped": on_acc / total,
            "cpu_nodes": [n for n in mapped if placement[n][0] == "cpu"],
            "disagreements": diffs,
            "note": "mapped: the nodes the compiler's per-op output names (a fused op is named after its first node); "
                    "the others are unmapped, not counted as agreement"}


@dataclass(frozen=True)
class BoardSummary:
    board_id: str
    accelerator: str | None
    primary_engine: str
    accelerator_flops_share: float | None
    primary_flops_share: float  # share of FLOPs on the board's preferred engine (accelerator or first CPU engine)
    segments: int
    handoffs: int
    estimate_ms: float
    compiler_view_share: float | None = None
    plan: str = "cpu-board"  # the chosen candidate (edgesdk.graph.plans)
    reason: str = ""
    cpu_ms: float | None = None  # the whole model on the board's CPU
    top_blocker: dict[str, Any] | None = None
    calibrated: bool = False
    rank: int = 0  # 1 = the fastest board by the estimate

    def to_dict(self) -> dict[str, Any]:
        from edgesdk.graph.cost import LABEL

        return {"rank": self.rank, "board": self.board_id, "accelerator": self.accelerator,
                "primary_engine": self.primary_engine,
                "accelerator_flops_share": self.accelerator_flops_share,
                "primary_flops_share": self.primary_flops_share, "segments": self.segments,
                "handoffs": self.handoffs, "estimate_ms": self.estimate_ms, "cpu_ms": self.cpu_ms,
                "plan": self.plan, "reason": self.reason, "top_blocker": self.top_blocker,
                "cost_model_calibrated": self.calibrated,
                "compiler_view_accelerator_flops_share": self.compiler_view_share,
                "estimate_label": LABEL}


def compare_boards(path: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                   board_ids: Sequence[str] | None = None,
                   min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE, prepare: bool = True,
                   example_inputs: Any = None, opened_info: list[Any] | None = None,
                   trust_model: bool = False, plan: str = "best",
                   max_segments: int | None = None, rewrite: bool = True) -> list[BoardSummary]:
    """One row per board: FLOPs share on the accelerator, segment count, estimated latency (`--all-boards`), ranked
    by the estimated latency of each board's chosen plan (fastest first; `rank`).

    `opened_info`, when given, receives the Opened model (its preparation report and notes)."""
    from edgesdk.graph.source import opened

    boards = [get_board(b) for b in board_ids] if board_ids else list_boards()
    with opened(path, input_shapes, prepare, example_inputs, trust_model=trust_model) as o:
        if opened_info is not None:
            opened_info.append(o)
        return _compare(o.model, boards, min_island_flops_share, plan, max_segments, rewrite)


def _compare(model: Model, boards: Sequence[BoardProfile], min_island_flops_share: float, plan: str = "best",
             max_segments: int | None = None, rewrite: bool = True) -> list[BoardSummary]:
    from dataclasses import replace

    out = []
    for board in boards:
        r = build_report(analyze(model, board, min_island_flops_share=min_island_flops_share, plan=plan,
                                 max_segments=max_segments, rewrite=rewrite))
        primary = board.accelerator.engine if board.accelerator else board.engines[0]
        ch = r.plan_choice or {}
        top = r.blockers[0] if r.blockers else None
        out.append(BoardSummary(
            board.id, r.accelerator, primary, r.accelerator_flops_share,
            sum(s.flops_share for s in r.plan.segments if s.engine == primary), len(r.plan.segments),
            r.plan.handoffs, r.estimate_ms,
            r.compiler_view["accelerator_flops_share"] if r.compiler_view else None,
            plan=ch.get("chosen", "cpu-board"), reason=ch.get("reason", "a CPU board: one plan"),
            cpu_ms=next((c["estimate_ms"] for c in ch.get("candidates", []) if c["name"] == "cpu"), r.estimate_ms),
            top_blocker=top.to_dict() if top is not None else None, calibrated=bool(r.cost and r.cost.calibrated)))
    order = sorted(range(len(out)), key=lambda k: out[k].estimate_ms)
    ranks = {k: i + 1 for i, k in enumerate(order)}
    return [replace(out[k], rank=ranks[k]) for k in order]


__all__ = [
    "ESTIMATE_LABEL",
    "Analysis",
    "BoardSummary",
    "InspectReport",
    "OpRow",
    "Rewrite",
    "SegmentEstimate",
    "analyze",
    "build_report",
    "compare_boards",
    "inspect_model",
    "rewrite_table",
]

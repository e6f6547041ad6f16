"""Plan choice: candidate partitions of one model for one board, each costed by edgesdk.graph.cost, the fastest kept.

Candidates:

- ``cpu``: the whole model on the board's CPU engines (the best CPU engine that takes it whole, as on a CPU board);
- ``vendor``: what the vendor compiler does alone: the Edge TPU compiler's single cut (everything from the first
  refused op on runs on the CPU), or, on boards whose compilers split the graph themselves, every op the accelerator
  takes on it, no island folded;
- ``split``: edgesdk's multi-segment partition (small islands folded by hand-off count, graph/partition.py);
- ``merged``: ``split`` with accelerator islands moved to the CPU, round by round, while that lowers the estimate
  (each island's gain computed from its nodes on both sides, its invocation and the hand-offs it adds or removes).

``best`` keeps the cheapest that fits ``max_segments`` (ties: fewer segments). ``cpu`` is always a candidate, so the
chosen plan is never estimated slower than the whole model on the CPU. Every candidate is a partition by
graph/partition.py, so it is convex and exact like any plan (the tests chain its segments against the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgesdk.boards import BoardProfile
from edgesdk.graph.cost import PlanCost, boundary_ms, estimate_plan, node_ms, params
from edgesdk.graph.load import Model
from edgesdk.graph.partition import PartitionPlan, partition
from edgesdk.graph.support import Placement, SupportReport, cpu_engine_for

PLAN_MODES = ("best", "cpu", "vendor", "split")

_DESCRIPTIONS = {
    "cpu": "the whole model on the board's CPU",
    "vendor": "what the vendor compiler does alone",
    "split": "edgesdk's multi-segment partition",
    "merged": "edgesdk's partition with the accelerator islands that cost more than they save moved to the CPU",
}

#: rounds of island merging; each round re-partitions once (O(N + E)), so the search stays linear in practice
_MAX_ROUNDS = 64


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    plan: PartitionPlan
    support: SupportReport
    cost: PlanCost
    moved: int = 0  # accelerator nodes the candidate moved to the CPU (merged, cpu)

    @property
    def ms(self) -> float:
        return self.cost.total_ms

    def to_dict(self, chosen: bool = False) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "chosen": chosen,
                "segments": len(self.plan.segments), "handoffs": self.plan.handoffs,
                "accelerator_segments": sum(1 for s in self.plan.segments if s.target == "accelerator"),
                "accelerator_flops_share": self.plan.accelerator_flops_share,
                "estimate_ms": self.ms, "compute_ms": self.cost.compute_ms, "invoke_ms": self.cost.invoke_ms,
                "boundary_ms": self.cost.boundary_ms, "moved_to_cpu": self.moved}


@dataclass(frozen=True)
class PlanChoice:
    mode: str
    max_segments: int | None
    chosen: Candidate
    candidates: tuple[Candidate, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "max_segments": self.max_segments, "chosen": self.chosen.name,
                "reason": self.reason, "estimate_ms": self.chosen.ms,
                "candidates": [c.to_dict(c is self.chosen) for c in self.candidates]}


def _to_cpu(model: Model, support: SupportReport, nodes: set[int], why: str) -> SupportReport:
    """`support` with the accelerator nodes in `nodes` on the CPU engine that takes them (kind "plan")."""
    out: list[Placement] = []
    for i, p in enumerate(support.placements):
        if i in nodes and p.target == "accelerator":
            spec = cpu_engine_for(model, support.chain, i)
            p = replace(p, engine=spec.engine, target="cpu", kind="plan", reasons=(why,),
                        refused_by=(*p.refused_by,))
        out.append(p)
    return replace(support, placements=tuple(out))


def _candidate(name: str, model: Model, board: BoardProfile, support: SupportReport, plan: PartitionPlan,
               moved: int = 0) -> Candidate:
    return Candidate(name, _DESCRIPTIONS[name], plan, support, estimate_plan(model, board, plan), moved)


def _island_gains(model: Model, board: BoardProfile, plan: PartitionPlan) -> list[tuple[float, int]]:
    """(estimated ms saved by moving it to the CPU, segment index) of every accelerator segment; > 0 saves time."""
    p = params(board)
    idx = {n.name: i for i, n in enumerate(model.nodes)}
    seg_of = {n: s.index for s in plan.segments for n in s.nodes}
    target = {s.index: s.target for s in plan.segments}
    readers: dict[str, set[int]] = {}
    for j, ins in enumerate(model.node_inputs):
        for name in ins:
            readers.setdefault(name, set()).add(seg_of[model.nodes[j].name])
    out = []
    outputs = set(model.outputs)
    for s in plan.segments:
        if s.target != "accelerator":
            continue
        nodes = [idx[n] for n in s.nodes]
        acc = sum(node_ms(model, j, "accelerator", p) for j in nodes) + p.invoke_ms
        if p.weights_over_link:
            pb = s.param_bytes * p.acc_byte_scale
            acc += 1e3 * max(0.0, pb - p.weight_cache_bytes) / p.link_bw
        cpu = sum(node_ms(model, j, "cpu", p) for j in nodes)
        delta = acc - cpu  # what the nodes cost more on the accelerator (negative: the accelerator is faster)
        for t in s.inputs:  # from the CPU (or the model) today: that hand-off goes; from the accelerator: one comes
            rank = len(t.shape) if t.shape is not None else None
            crossing = sum(boundary_ms(p, t.bytes, rank))
            src_acc = t.producer is not None and target.get(t.producer) == "accelerator"
            delta += -crossing if src_acc else crossing
        for t in s.outputs:
            rank = len(t.shape) if t.shape is not None else None
            crossing = sum(boundary_ms(p, t.bytes, rank))
            for d in t.consumers:
                delta += -crossing if target.get(d) == "accelerator" else crossing
            if t.name in outputs:
                delta += crossing
        out.append((delta, s.index))
    return out


def _merged(model: Model, board: BoardProfile, support: SupportReport, split: Candidate, min_share: float,
            max_segments: int | None) -> Candidate:
    """Move accelerator islands to the CPU while the estimate falls (then, if needed, until max_segments holds)."""
    cur = split
    moved: set[int] = set()
    idx = {n.name: i for i, n in enumerate(model.nodes)}
    why = "moved to the CPU by the plan choice: on the accelerator this island costs more (invocation, hand-offs) " \
          "than it saves"
    for _ in range(_MAX_ROUNDS):
        too_many = max_segments is not None and len(cur.plan.segments) > max_segments
        gains = sorted(_island_gains(model, board, cur.plan), reverse=True)
        if not gains:
            break
        picks = [s for g, s in gains if g > 0]
        if not picks and too_many:  # the least loss first, enough to get under the bound
            picks = [gains[0][1]]
        if not picks:
            break
        seg = {s.index: s for s in cur.plan.segments}
        # islands that touch each other interact: move a set of non-neighbours per round
        chosen: list[int] = []
        near: set[int] = set()
        for s in picks:
            if s in near:
                continue
            chosen.append(s)
            near.add(s)
            near.update(t.producer for t in seg[s].inputs if t.producer is not None)
            near.update(d for t in seg[s].outputs for d in t.consumers)
        new_nodes = {idx[n] for s in chosen for n in seg[s].nodes}
        sup = _to_cpu(model, cur.support, new_nodes, why)
        plan = partition(model, board, sup, min_share)
        cand = _candidate("merged", model, board, sup, plan, len(moved | new_nodes))
        better = cand.ms < cur.ms - 1e-9
        fewer = len(plan.segments) < len(cur.plan.segments)
        if not better and not (too_many and fewer):
            if len(chosen) > 1:  # the round's moves interfered: try the single best one
                one = {idx[n] for n in seg[chosen[0]].nodes}
                sup = _to_cpu(model, cur.support, one, why)
                plan = partition(model, board, sup, min_share)
                cand = _candidate("merged", model, board, sup, plan, len(moved | one))
                if not (cand.ms < cur.ms - 1e-9 or (too_many and len(plan.segments) < len(cur.plan.segments))):
                    break
                new_nodes = one
            else:
                break
        moved |= new_nodes
        cur = cand
    return cur if cur is not split else replace(split, name="merged", description=_DESCRIPTIONS["merged"])


def _cpu_candidate(model: Model, board: BoardProfile, support: SupportReport, min_share: float,
                   tables: Any = None) -> Candidate:
    """The whole model on the CPU: on the CPU engine that takes it whole when there is one (as on a CPU board)."""
    from edgesdk.graph.report import analyze

    acc = board.accelerator
    if acc is None:
        return _candidate("cpu", model, board, support, partition(model, board, support, min_share))
    cpu_board = board.model_copy(update={"accelerator": None, "engines": [e for e in board.engines if e != acc.engine]})
    a = analyze(model, cpu_board, tables, min_island_flops_share=min_share, plan="split")
    why = "the plan runs the whole model on the CPU"
    on_acc = {i for i, p in enumerate(support.placements) if p.target == "accelerator"}
    placements = []
    for i, (orig, new) in enumerate(zip(support.placements, a.support.placements)):
        placements.append(replace(new, kind="plan", reasons=(why,)) if i in on_acc else
                          replace(new, kind=orig.kind if orig.kind != "supported" else new.kind))
    sup = replace(support, placements=tuple(placements))
    plan = replace(a.plan, board_id=board.id, partition_rule=support.partition_rule,
                   notes=tuple(n for n in a.plan.notes if "the vendor compiler alone" not in n))
    return Candidate("cpu", _DESCRIPTIONS["cpu"], plan, sup, estimate_plan(model, board, plan), len(on_acc))


def _vendor_candidate(model: Model, board: BoardProfile, support: SupportReport) -> Candidate:
    if support.compiler_view is not None:  # first-unsupported-to-cpu: the compiler's single cut
        sup = replace(support, placements=support.compiler_view)
    else:
        sup = support
    return _candidate("vendor", model, board, sup, partition(model, board, sup, 0.0))


def candidates(model: Model, board: BoardProfile, support: SupportReport, min_share: float,
               max_segments: int | None = None, names: Sequence[str] = ("cpu", "vendor", "split", "merged"),
               tables: Any = None) -> list[Candidate]:
    """The candidate plans of `model` on `board`, each with its estimate. CPU-only boards have one plan.
    `tables`: the op tables the support check used (None: the boards' own)."""
    split = _candidate("split", model, board, support, partition(model, board, support, min_share))
    if board.accelerator is None or not any(p.target == "accelerator" for p in support.placements):
        return [split]
    out = []
    for name in names:
        if name == "cpu":
            out.append(_cpu_candidate(model, board, support, min_share, tables))
        elif name == "vendor":
            out.append(_vendor_candidate(model, board, support))
        elif name == "split":
            out.append(split)
        elif name == "merged":
            out.append(_merged(model, board, support, split, min_share, max_segments))
    return out


def _fmt(ms: float) -> str:
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def choose(model: Model, board: BoardProfile, support: SupportReport, mode: str = "best",
           max_segments: int | None = None, min_share: float = 0.01, tables: Any = None) -> PlanChoice:
    """The plan to use: `mode` best (cheapest estimate within max_segments), or a forced cpu / vendor / split."""
    if mode not in PLAN_MODES:
        from edgesdk.errors import InputError

        raise InputError(f"--plan {mode!r}: choose one of {', '.join(PLAN_MODES)}")
    if max_segments is not None and max_segments < 1:
        from edgesdk.errors import InputError

        raise InputError(f"--max-segments {max_segments}: must be at least 1")
    cands = candidates(model, board, support, min_share, max_segments, tables=tables)
    if len(cands) == 1:
        c = cands[0]
        return PlanChoice(mode, max_segments, c, tuple(cands),
                          "the board has no accelerator that takes any of the model's ops: one plan" if
                          board.accelerator is not None else "a CPU board: one plan")
    by = {c.name: c for c in cands}
    if mode != "best":
        c = by[mode]
        reason = f"--plan {mode} forces it ({_fmt(c.ms)}; the best estimate is " \
                 f"{min(cands, key=lambda x: x.ms).name} at {_fmt(min(x.ms for x in cands))})"
        return PlanChoice(mode, max_segments, c, tuple(cands), reason)
    fits = [c for c in cands if max_segments is None or len(c.plan.segments) <= max_segments] or [by["cpu"]]
    order = {"cpu": 0, "vendor": 1, "split": 2, "merged": 3}
    win = min(fits, key=lambda c: (round(c.ms, 9), len(c.plan.segments), order[c.name]))
    cpu = by["cpu"]
    others = ", ".join(f"{c.name} {_fmt(c.ms)} ({len(c.plan.segments)} seg)" for c in cands if c is not win)
    if not any(s.target == "accelerator" for s in win.plan.segments):
        with_acc = [c for c in cands if any(s.target == "accelerator" for s in c.plan.segments)]
        acc_best = min(with_acc, key=lambda c: c.ms) if with_acc else None
        reason = f"no candidate keeps a node on the accelerator; others: {others}" if acc_best is None else (f"the whole model on the CPU is estimated fastest ({_fmt(win.ms)}): the best plan that uses the "
                  f"accelerator, {acc_best.name}, costs {_fmt(acc_best.ms)} (compute {_fmt(acc_best.cost.compute_ms)}, "
                  f"invocations {_fmt(acc_best.cost.invoke_ms)}, hand-offs {_fmt(acc_best.cost.boundary_ms)}); "
                  f"others: {others}")
    else:
        speed = cpu.ms / win.ms if win.ms > 0 else float("inf")
        reason = (f"{win.name} ({win.description}) is estimated fastest: {_fmt(win.ms)} in "
                  f"{len(win.plan.segments)} segment(s), {speed:.1f}x the whole model on the CPU ({_fmt(cpu.ms)}); "
                  f"others: {others}")
        if win.name == "merged" and win.moved:
            sp = by["split"]
            reason += (f"; moving {win.moved} node(s) of small accelerator islands to the CPU saves "
                       f"{_fmt(sp.ms - win.ms)} over split ({len(sp.plan.segments)} -> {len(win.plan.segments)} "
                       f"segments)")
    if max_segments is not None:
        dropped = [c.name for c in cands if c not in fits]
        if dropped:
            reason += f"; --max-segments {max_segments} rules out {', '.join(dropped)}"
    return PlanChoice(mode, max_segments, win, tuple(cands), reason)


@dataclass(frozen=True)
class Blocker:
    """An op type the accelerator refuses in this model: what it costs the chosen plan, and what would lift it."""

    op_type: str
    count: int
    nodes: tuple[str, ...]
    reason: str
    cpu_ms: float  # the refused nodes' own estimate on the CPU
    gain_ms: float  # estimated ms the best plan would save if the accelerator took these nodes
    rewrite: str | None
    exact: bool | None  # the rewrite keeps the function (True), changes it: fine-tune (False); None: no rewrite

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "count": self.count, "nodes": list(self.nodes[:10]), "reason": self.reason,
                "cpu_ms": self.cpu_ms, "gain_ms": self.gain_ms, "rewrite": self.rewrite, "exact": self.exact,
                "note": None if self.rewrite is None or self.exact else
                "changes the function: fine-tune (or retrain) after applying it, then check accuracy with verify"}


_BLOCKING = ("unsupported_op", "attribute", "limits")


def explain(model: Model, board: BoardProfile, choice: PlanChoice, suggest: Any = None,
            limit: int = 12) -> tuple[tuple[Blocker, ...], float | None]:
    """(the op types that keep nodes off the accelerator, largest estimated gain first; the estimate with the whole
    model on the accelerator). `suggest(op_type, placement)` -> (rewrite text, exact) or None. Each gain is a what-if:
    the same candidates with that op type's nodes accepted, the cheapest kept, against the chosen plan."""
    from edgesdk.graph.cost import all_on
    from edgesdk.graph.support import first_unsupported_view

    if board.accelerator is None or len(choice.candidates) < 2:
        return (), None
    base = next(c for c in choice.candidates if c.name == "split").support
    by_op: dict[str, list[int]] = {}
    for i, p in enumerate(base.placements):
        if p.target == "cpu" and p.kind in _BLOCKING:
            by_op.setdefault(p.op_type, []).append(i)
    if not by_op:
        return (), all_on(model, board, "accelerator").total_ms
    p = params(board)
    acc_engine = board.accelerator.engine
    cpu_ms = next(c for c in choice.candidates if c.name == "cpu").ms
    out = []
    ranked = sorted(by_op.items(), key=lambda kv: -sum(model.costs[j].flops for j in kv[1]) - len(kv[1]))
    for op, nodes in ranked[:limit]:
        lifted = set(nodes)
        pl = [replace(q, engine=acc_engine, target="accelerator", kind="supported", reasons=())
              if i in lifted else q for i, q in enumerate(base.placements)]
        sup = replace(base, placements=tuple(pl),
                      compiler_view=first_unsupported_view(pl, base.chain) if base.compiler_view is not None else None)
        split = _candidate("split", model, board, sup, partition(model, board, sup, 0.01))
        best = min(cpu_ms, split.ms, _merged(model, board, sup, split, 0.01, None).ms)
        if sup.compiler_view is not None:
            best = min(best, _vendor_candidate(model, board, sup).ms)
        first = base.placements[nodes[0]]
        sug = suggest(op, first) if suggest is not None else None
        out.append(Blocker(op, len(nodes), tuple(base.placements[j].node for j in nodes),
                           first.reasons[0] if first.reasons else "", sum(node_ms(model, j, "cpu", p) for j in nodes),
                           max(0.0, choice.chosen.ms - best), sug[0] if sug else None, sug[1] if sug else None))
    out.sort(key=lambda b: (-b.gain_ms, -b.count))
    return tuple(out), all_on(model, board, "accelerator").total_ms


__all__ = ["PLAN_MODES", "Blocker", "Candidate", "PlanChoice", "candidates", "choose", "explain"]

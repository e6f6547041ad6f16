"""Partitioner: group nodes into convex, ordered engine segments with as few hand-offs as possible."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from edgesdk.boards import BoardProfile
from edgesdk.graph.load import Model
from edgesdk.graph.support import SupportReport, cpu_engine_for

#: Default: an accelerator island below 1 % of the model's FLOPs folds into the CPU if that saves transfers.
DEFAULT_MIN_ISLAND_SHARE = 0.01


@dataclass(frozen=True)
class TensorRef:
    """A tensor crossing a segment boundary."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str
    bytes: int
    producer: int | None  # segment index, None for a model input
    consumers: tuple[int, ...] = ()  # segment indices that read it
    model_output: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape) if self.shape is not None else None,
                "dtype": self.dtype, "bytes": self.bytes, "producer": self.producer,
                "consumers": list(self.consumers), "model_output": self.model_output}


@dataclass(frozen=True)
class Segment:
    index: int
    engine: str
    target: str  # "accelerator" | "cpu"
    nodes: tuple[str, ...]
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]
    flops: int
    flops_share: float
    param_bytes: int
    activation_bytes: int  # bytes of all tensors produced inside

    @property
    def input_bytes(self) -> int:
        return sum(t.bytes for t in self.inputs)

    @property
    def output_bytes(self) -> int:
        return sum(t.bytes for t in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "engine": self.engine, "target": self.target, "nodes": list(self.nodes),
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "flops": self.flops, "flops_share": self.flops_share, "param_bytes": self.param_bytes,
                "activation_bytes": self.activation_bytes}


@dataclass(frozen=True)
class Transfer:
    """One tensor handed from one segment to a later one."""

    tensor: str
    src: int
    dst: int
    bytes: int
    handoff: bool  # crosses between CPU and accelerator

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "src": self.src, "dst": self.dst, "bytes": self.bytes, "handoff": self.handoff}


@dataclass(frozen=True)
class FoldedIsland:
    """A small accelerator island moved to the CPU because that saves transfers."""

    nodes: tuple[str, ...]
    flops_share: float
    engine: str
    transfers_saved: int

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes), "flops_share": self.flops_share, "engine": self.engine,
                "transfers_saved": self.transfers_saved}


@dataclass(frozen=True)
class PartitionPlan:
    """Ordered segments; running them in order, each fed by model inputs and earlier outputs, is the model."""

    board_id: str
    model_name: str
    partition_rule: str
    model_inputs: tuple[TensorRef, ...]
    model_outputs: tuple[str, ...]
    segments: tuple[Segment, ...]
    transfers: tuple[Transfer, ...]
    folded: tuple[FoldedIsland, ...]
    total_flops: int
    min_island_flops_share: float
    placement: dict[str, str] = field(repr=False, default_factory=dict)  # node -> engine, after folding
    notes: tuple[str, ...] = ()

    @property
    def accelerator_flops_share(self) -> float:
        return sum(s.flops_share for s in self.segments if s.target == "accelerator")

    @property
    def handoffs(self) -> int:
        return sum(1 for t in self.transfers if t.handoff)

    def to_dict(self) -> dict[str, Any]:
        return {
            "board": self.board_id,
            "model": self.model_name,
            "partition_rule": self.partition_rule,
            "model_inputs": [t.to_dict() for t in self.model_inputs],
            "model_outputs": list(self.model_outputs),
            "segments": [s.to_dict() for s in self.segments],
            "transfers": [t.to_dict() for t in self.transfers],
            "handoffs": self.handoffs,
            "folded_islands": [f.to_dict() for f in self.folded],
            "total_flops": self.total_flops,
            "accelerator_flops_share": self.accelerator_flops_share,
            "min_island_flops_share": self.min_island_flops_share,
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# -- the algorithm ---------------------------------------------------------------------------------

def _preds_succs(model: Model) -> tuple[list[list[int]], list[list[int]]]:
    succs = model.consumers()
    preds: list[list[int]] = [[] for _ in succs]
    for i, ss in enumerate(succs):
        for j in ss:
            preds[j].append(i)
    return preds, succs


def assign_levels(labels: list[str], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    """Level of each node: the fewest label changes on any path from the inputs to it, then compacted.

    Every edge between different (level, label) groups strictly raises the level, so the groups form
    a DAG ordered by level: each group is convex (no path leaves it and comes back). Nodes are in
    topological order (ONNX requires it). O(N + E).
    """
    n = len(labels)
    level = [0] * n
    for j in range(n):
        lj = labels[j]
        best = 0
        for p in preds[j]:
            c = level[p] + (labels[p] != lj)
            if c > best:
                best = c
        level[j] = best
    # As late as possible where that joins an existing group: a node that only feeds a later group
    # of its own label moves into it instead of opening a segment of its own early.
    count: dict[tuple[int, str], int] = defaultdict(int)
    for j in range(n):
        count[(level[j], labels[j])] += 1
    for v in range(n - 1, -1, -1):
        if not succs[v]:
            continue
        lv = labels[v]
        upper = min(level[w] - (labels[w] != lv) for w in succs[v])
        if upper > level[v] and (count[(upper, lv)] > 0 or count[(level[v], lv)] == 1):
            count[(level[v], lv)] -= 1
            count[(upper, lv)] += 1
            level[v] = upper
    return level


def _groups(labels: list[str], level: list[int], order: dict[str, int]) -> list[list[int]]:
    by: dict[tuple[int, str], list[int]] = defaultdict(list)
    for j, (lv, lb) in enumerate(zip(level, labels)):
        by[(lv, lb)].append(j)
    keys = sorted(by, key=lambda k: (k[0], order.get(k[1], 99), k[1]))
    return [by[k] for k in keys]


def partition(model: Model, board: BoardProfile, support: SupportReport,
              min_island_flops_share: float = DEFAULT_MIN_ISLAND_SHARE) -> PartitionPlan:
    """Split `model` into ordered segments for `board` from the per-node placements in `support`.

    Accelerator segments are maximal and convex; small accelerator islands between CPU segments fold
    into the CPU when that saves transfers (recorded in ``folded``).
    """
    preds, succs = _preds_succs(model)
    labels = [p.engine for p in support.placements]
    targets = {c.engine: c.target for c in support.chain}
    order = {c.engine: k for k, c in enumerate(support.chain)}
    total = model.total_flops
    level = assign_levels(labels, preds, succs)
    groups = _groups(labels, level, order)
    folded: list[FoldedIsland] = []
    outputs = set(model.outputs)

    for _ in range(8):
        seg_of = [0] * len(labels)
        for s, g in enumerate(groups):
            for j in g:
                seg_of[j] = s
        handoffs = _count_handoffs(groups, seg_of, labels, targets, succs)
        candidates = []
        for s, g in enumerate(groups):
            if targets[labels[g[0]]] != "accelerator":
                continue
            share = sum(model.costs[j].flops for j in g) / total if total else 0.0
            if share >= min_island_flops_share:
                continue
            gs = set(g)
            nbr_ok = True
            for j in g:
                if any(o in outputs for o in model.nodes[j].output):
                    nbr_ok = False
                for name in model.node_inputs[j]:
                    p = model.producer.get(name)
                    if p is None:
                        if name in model.inputs:
                            nbr_ok = False
                    elif p not in gs and targets[labels[p]] != "cpu":
                        nbr_ok = False
                for w in succs[j]:
                    if w not in gs and targets[labels[w]] != "cpu":
                        nbr_ok = False
            if nbr_ok:
                candidates.append((g, share))
        if not candidates:
            break
        new_labels = list(labels)
        for g, _share in candidates:
            for j in g:
                new_labels[j] = cpu_engine_for(model, support.chain, j).engine
        new_level = assign_levels(new_labels, preds, succs)
        new_groups = _groups(new_labels, new_level, order)
        new_seg_of = [0] * len(labels)
        for s, g in enumerate(new_groups):
            for j in g:
                new_seg_of[j] = s
        new_handoffs = _count_handoffs(new_groups, new_seg_of, new_labels, targets, succs)
        if new_handoffs >= handoffs:
            break
        saved = (handoffs - new_handoffs)
        for g, share in candidates:
            folded.append(FoldedIsland(tuple(model.nodes[j].name for j in g), share,
                                       new_labels[g[0]], max(2, saved // len(candidates))))
        labels, level, groups = new_labels, new_level, new_groups

    return _build_plan(model, board, support, labels, groups, targets, folded, min_island_flops_share)


def _count_handoffs(groups: list[list[int]], seg_of: list[int], labels: list[str], targets: dict[str, str],
                    succs: list[list[int]]) -> int:
    pairs = set()
    for j in range(len(labels)):
        tj = targets[labels[j]]
        for w in succs[j]:
            if seg_of[w] != seg_of[j] and targets[labels[w]] != tj:
                pairs.add((j, seg_of[w]))
    return len(pairs)


def _build_plan(model: Model, board: BoardProfile, support: SupportReport, labels: list[str],
                groups: list[list[int]], targets: dict[str, str], folded: list[FoldedIsland],
                min_share: float) -> PartitionPlan:
    total = model.total_flops
    mnodes = model.nodes
    seg_of: dict[int, int] = {}
    for s, g in enumerate(groups):
        for j in g:
            seg_of[j] = s
    tensors = model.tensors
    outputs = set(model.outputs)

    def ref(name: str, producer: int | None, consumers: set[int]) -> TensorRef:
        t = tensors.get(name)
        return TensorRef(name, t.shape if t else None, t.dtype if t else "unknown", t.nbytes if t else 0,
                         producer, tuple(sorted(consumers)), name in outputs)

    # who reads each tensor, by segment
    readers: dict[str, set[int]] = defaultdict(set)
    for j, ins in enumerate(model.node_inputs):
        for name in ins:
            readers[name].add(seg_of[j])
    segments = []
    transfers = []
    for s, g in enumerate(groups):
        engine = labels[g[0]]
        produced = set()
        for j in g:
            produced.update(o for o in mnodes[j].output if o)
        in_names: dict[str, None] = {}
        for j in g:
            for name in model.node_inputs[j]:
                if name not in produced and name in tensors and not tensors[name].is_initializer:
                    in_names[name] = None
                elif name not in produced and name not in tensors and name in model.producer:
                    in_names[name] = None
        ins = []
        for name in in_names:
            p = model.producer.get(name)
            ins.append(ref(name, seg_of[p] if p is not None else None, readers[name]))
        outs = []
        for j in g:
            for name in mnodes[j].output:
                if not name:
                    continue
                others = readers.get(name, set()) - {s}
                if others or name in outputs:
                    outs.append(ref(name, s, readers.get(name, set()) - {s}))
                    for d in sorted(others):
                        tgt = targets[labels[groups[d][0]]]
                        t = tensors.get(name)
                        transfers.append(Transfer(name, s, d, t.nbytes if t else 0, tgt != targets[engine]))
        flops = sum(model.costs[j].flops for j in g)
        segments.append(Segment(
            index=s, engine=engine, target=targets[engine],
            nodes=tuple(mnodes[j].name for j in g), inputs=tuple(ins), outputs=tuple(outs),
            flops=flops, flops_share=(flops / total if total else 0.0),
            param_bytes=sum(model.costs[j].param_bytes for j in g),
            activation_bytes=sum(model.costs[j].activation_bytes for j in g),
        ))
    notes = list(support.notes)
    if support.partition_rule == "first-unsupported-to-cpu":
        notes.append("the vendor compiler alone keeps everything after the first unsupported op on the CPU (the "
                     "`vendor` candidate); edgesdk's multi-segment plans (`split`, `merged`) join separate accelerator "
                     "models by CPU segments: the plan choice says which one is used")
    produced_anywhere = set(model.producer)
    for o in model.outputs:
        if o not in produced_anywhere:
            notes.append(f"model output {o!r} is not computed by any node (an input or a constant)")
    model_inputs = tuple(ref(n, None, readers.get(n, set())) for n in model.inputs)
    return PartitionPlan(
        board_id=board.id, model_name=model.name, partition_rule=support.partition_rule,
        model_inputs=model_inputs, model_outputs=model.outputs, segments=tuple(segments),
        transfers=tuple(transfers), folded=tuple(folded), total_flops=total,
        min_island_flops_share=min_share,
        placement={mnodes[j].name: labels[j] for j in range(len(labels))}, notes=tuple(notes),
    )


def is_convex(model: Model, plan: PartitionPlan) -> bool:
    """True when no path leaves a segment and comes back into it (the segment DAG is ordered by index)."""
    seg = {}
    for s in plan.segments:
        for n in s.nodes:
            seg[n] = s.index
    names = [n.name for n in model.nodes]
    for j, ins in enumerate(model.node_inputs):
        for name in ins:
            p = model.producer.get(name)
            if p is not None and seg[names[p]] > seg[names[j]]:
                return False
    return True


__all__ = [
    "DEFAULT_MIN_ISLAND_SHARE",
    "FoldedIsland",
    "PartitionPlan",
    "Segment",
    "TensorRef",
    "Transfer",
    "assign_levels",
    "is_convex",
    "partition",
]

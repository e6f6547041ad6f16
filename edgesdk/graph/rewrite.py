"""Rewrites that keep the function, applied where the board's accelerator refuses the original and takes the rewrite.

Each rule matches a structure by its ops and constants (never by a node name): Div by a constant -> Mul by its
reciprocal; Sub of a constant -> Add; a decomposed HardSwish / HardSigmoid (Add, Clip or Relu/Max/Min, Mul, Div,
in any order and operand order, Clip bounds as inputs or attributes) <-> the fused op; Clip <-> Relu/Max + Min;
ReduceMean over H, W -> GlobalAveragePool; MatMul by a constant (+ Add of a bias) -> Gemm; BatchNormalization
folded into the preceding Conv; a constant first operand of Add/Mul moved second.

How a rewrite is chosen (``apply_rewrites``):

1. The support check on the original names the nodes the accelerator refuses. A site (the nodes one rule would
   replace) is considered only if it holds at least one of them; boards without an accelerator get nothing.
2. Every site has alternatives in a fixed order, smallest change first (below). Round k builds one model with
   every undecided site at its k-th alternative (decided ones at theirs) and runs the support check again. A
   site is decided by the first alternative after which the accelerator takes every node of the site; if none
   does, by the first one after which it takes every replacement node (the rest of the site stays refused);
   else it is left as it is.
3. The rewritten model and the original run once each on onnxruntime on the same input; every output must agree
   (cosine >= 0.99999, max |a-b| <= 1e-3 max(1, max|a|), integer outputs equal). If not, each rule is tried
   alone and the failing rules are dropped (a note names them and their numbers).

Order of alternatives (fewest nodes first). A decomposed HardSwish/HardSigmoid: first the refused pieces' own
one-for-one rewrites (Div -> Mul, Sub -> Add, a constant operand moved second, Min -> Clip), then the fused op
(HardSwish needs op set 14; x * HardSigmoid(x) otherwise), then the pieces' rewrites that add nodes (Clip ->
Relu + Min, Max + Min, or -Max(-x, -hi); a refused HardSigmoid piece decomposed). A fused HardSwish: x * HardSigmoid(x), then
x * Clip(x + 3, 0, 6) * (1/6), the same with Div by 6, then with Relu + Min, Max + Min and -Max(-., -6) in place
of the Clip. A fused HardSigmoid: Clip(alpha x + beta, 0, 1), then the same Clip alternatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgesdk.boards import BoardProfile
from edgesdk.graph.load import Model, _subgraph_outer_inputs, graph_index, load_weights
from edgesdk.graph.shapes import infer_shapes, node_cost, tensor_table
from edgesdk.graph.support import check_support
from edgesdk.toolchains.spec import OpTable

#: rule id -> title (the report's words).
RULES: dict[str, str] = {
    "div-const-to-mul": "Div by a constant -> Mul by its reciprocal",
    "sub-const-to-add": "Sub of a constant -> Add of its negation",
    "const-operand-second": "Add/Mul with the constant first -> constant second",
    "hardswish-fuse": "decomposed HardSwish (Add, Clip, Mul, Div) -> HardSwish",
    "hardswish-decompose": "HardSwish -> x * Clip(x + 3, 0, 6) / 6 (or x * HardSigmoid(x))",
    "hardsigmoid-fuse": "decomposed HardSigmoid (Mul, Add, Clip) -> HardSigmoid",
    "hardsigmoid-decompose": "HardSigmoid -> Clip(alpha * x + beta, 0, 1)",
    "relu6-fuse": "Relu/Max + Min -> Clip (ReLU6)",
    "relu6-decompose": "Clip (ReLU6) -> Relu/Max + Min",
    "reducemean-to-globalavgpool": "ReduceMean over H, W -> GlobalAveragePool",
    "matmul-to-gemm": "MatMul by a constant (+ Add of a bias) -> Gemm",
    "bn-fold-into-conv": "BatchNormalization folded into the preceding Conv",
}
#: The proof's bar, per model output.
COSINE_MIN = 0.99999
ABS_REL = 1e-3
#: A near-empty output (a text map of an input without text: values ~1e-6) has a meaningless cosine; there the
#: outputs agree when max |a-b| <= ABS_FLOOR * max(1, max|a|) (float32 rounding of a deep graph).
ABS_FLOOR = 1e-5
#: Relative tolerance on the constants a pattern names (3, 6, 1/6 = 0.1666667, 0.5).
CONST_RTOL = 1e-3
_FLOATS = ("float32", "float16", "float64")
_BIG = 3.4028234663852886e38


# -- results ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AppliedRewrite:
    """One rule applied to a model: how many sites, the original nodes it replaced, the proof's numbers."""

    rule: str
    title: str
    count: int
    nodes: tuple[str, ...]
    cosine: float | None = None
    max_abs_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "title": self.title, "count": self.count, "nodes": list(self.nodes),
                "cosine": self.cosine, "max_abs_diff": self.max_abs_diff}


@dataclass(frozen=True)
class RewriteResult:
    """The model to analyse (the input object itself when nothing applied), what was applied, and notes."""

    model: Model
    applied: tuple[AppliedRewrite, ...] = ()
    notes: tuple[str, ...] = ()
    refused_before: int | None = None  # nodes the accelerator refuses, before and after
    refused_after: int | None = None
    cosine: float | None = None  # the proof: worst output, rewritten vs original
    max_abs_diff: float | None = None
    input_source: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.applied)

    def summary(self) -> str:
        if not self.applied:
            return "no rewrite applied" + (f" ({self.notes[0]})" if self.notes else "")
        rules = ", ".join(f"{a.rule} x{a.count}" for a in self.applied)
        return (f"rewrites applied: {rules}; nodes the accelerator refuses {self.refused_before} -> "
                f"{self.refused_after}; outputs unchanged on the check input (cosine {self.cosine:.7f}, max abs "
                f"diff {self.max_abs_diff:.3g})")

    def to_dict(self) -> dict[str, Any]:
        return {"applied": [a.to_dict() for a in self.applied], "notes": list(self.notes),
                "refused_before": self.refused_before, "refused_after": self.refused_after,
                "cosine": self.cosine, "max_abs_diff": self.max_abs_diff, "input_source": self.input_source}


# -- sites -----------------------------------------------------------------------------------------------

@dataclass
class _Part:
    """A replacement of some original nodes (`removed`, graph indices) by `nodes`; the last node of `nodes`
    produces `out`, the only tensor of the removed nodes read outside them."""

    rule: str
    removed: tuple[int, ...]
    nodes: list[onnx.NodeProto]
    inits: list[onnx.TensorProto]


@dataclass(eq=False)
class _Site:
    """Nodes one pattern covers, and its alternatives (each a list of parts), smallest change first."""

    pattern: tuple[int, ...]
    alternatives: list[list[_Part]]
    k: int = 0
    partial: int | None = None  # the first alternative that passed partially
    chosen: int | None = None

    def current(self) -> list[_Part] | None:
        i = self.chosen if self.chosen is not None else self.k
        return self.alternatives[i] if i is not None and i < len(self.alternatives) else None


class _Ctx:
    """What the matchers need to know about the original model."""

    def __init__(self, model: Model, refused: set[str]) -> None:
        self.model = model
        self.nodes = list(model.nodes)
        self.refused = refused
        self.claimed: set[int] = set()
        self.outputs = set(model.outputs)
        self.readers: dict[str, list[int]] = {}
        for j, ins in enumerate(model.node_inputs):
            for name in ins:
                self.readers.setdefault(name, []).append(j)
        self.names = {n.name for n in self.nodes} | set(model.tensors)
        for n in self.nodes:
            self.names.update(o for o in n.output if o)
        self._full: onnx.ModelProto | None = None
        self._values: dict[str, np.ndarray | None] = {}

    # constants
    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name not in self._values:
            t = self.model.initializer(name)
            if t is None:
                self._values[name] = None
            else:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    if self._full is None:
                        self._full = load_weights(self.model)
                    t = next(x for x in self._full.graph.initializer if x.name == name)
                self._values[name] = numpy_helper.to_array(t)
        return self._values[name]

    def is_const(self, name: str) -> bool:
        return bool(name) and self.model.initializer(name) is not None

    def dtype(self, name: str) -> str | None:
        t = self.model.tensors.get(name)
        return t.dtype if t is not None else None

    def shape(self, name: str) -> tuple[int | None, ...] | None:
        t = self.model.tensors.get(name)
        return t.shape if t is not None else None

    def is_float(self, name: str) -> bool:
        return self.dtype(name) in _FLOATS

    def producer(self, name: str) -> int | None:
        return self.model.producer.get(name)

    def single_reader(self, name: str) -> int | None:
        """The only node that reads `name` (None when several do, or it is a model output)."""
        r = self.readers.get(name, [])
        return r[0] if len(r) == 1 and name not in self.outputs else None

    def free(self, i: int) -> bool:
        return i not in self.claimed

    def attrs(self, i: int) -> dict[str, Any]:
        return {a.name: helper.get_attribute_value(a) for a in self.nodes[i].attribute}

    def scalar_operand(self, i: int) -> tuple[str, float, int] | None:
        """(runtime input, constant value, index of the constant) of a binary element-wise node with one constant
        operand whose elements are all equal and which does not broadcast the runtime input to a bigger shape."""
        n = self.nodes[i]
        if len(n.input) != 2 or len(n.output) != 1:
            return None
        ci = [k for k in (0, 1) if self.is_const(n.input[k])]
        if len(ci) != 1:
            return None
        c, x = ci[0], 1 - ci[0]
        v = self.const(n.input[c])
        if v is None or v.size < 1 or v.dtype.kind != "f" or not np.all(v == v.flat[0]) or not self.is_float(n.input[x]):
            return None
        sx, so = self.shape(n.input[x]), self.shape(n.output[0])
        if sx is None or so is None or tuple(sx) != tuple(so):
            return None
        return n.input[x], float(v.flat[0]), c


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=CONST_RTOL, abs_tol=1e-6)


# -- emitting nodes --------------------------------------------------------------------------------------

class _Emit:
    """Builds the nodes of one part: new names ``<orig>__<rule>_k``; the last node takes `orig`'s name and output."""

    def __init__(self, ctx: _Ctx, orig: int, rule: str, dtype: str) -> None:
        self.ctx, self.rule, self.dtype = ctx, rule, dtype
        self.base = ctx.nodes[orig].name
        self.out = ctx.nodes[orig].output[0]
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0
        self.opset = ctx.model.opset

    def _name(self, suffix: str = "") -> str:
        while True:
            self.k += 1
            name = f"{self.base}__{self.rule}_{self.k}{suffix}"
            if name not in self.ctx.names:
                return name

    def const(self, value: Any, dtype: str | None = None) -> str:
        arr = np.asarray(value, dtype=np.dtype(dtype or self.dtype))
        t = numpy_helper.from_array(arr, self._name("_c"))
        self.inits.append(t)
        return t.name

    def node(self, op: str, inputs: Sequence[str], final: bool = False, **attrs: Any) -> str:
        ins = list(inputs)
        while ins and not ins[-1]:
            ins.pop()
        name = self.base if final else self._name()
        out = self.out if final else self._name("_out")
        self.nodes.append(helper.make_node(op, ins, [out], name=name, **attrs))
        return out

    def clip(self, x: str, lo: float | None, hi: float | None, form: str, final: bool) -> str | None:
        """Clip(x, lo, hi) as `form`: clip, relu_min (lo == 0), max_min, neg (-Max(-lower(x), -hi))."""
        if form == "clip":
            if self.opset >= 11:
                return self.node("Clip", [x, self.const(lo) if lo is not None else "",
                                          self.const(hi) if hi is not None else ""], final)
            return self.node("Clip", [x], final, min=float(lo if lo is not None else -_BIG),
                             max=float(hi if hi is not None else _BIG))
        if form == "relu_min" and lo != 0.0:
            return None
        if form == "relu_min" and hi is None:
            return self.node("Relu", [x], final)
        if form in ("relu_min", "max_min"):
            t = x
            if lo is not None:
                t = (self.node("Relu", [x], final and hi is None) if form == "relu_min" else
                     self.node("Max", [x, self.const(lo)], final and hi is None))
            if hi is not None:
                t = self.node("Min", [t, self.const(hi)], final)
            return t if t != x else None
        if form == "neg":
            if hi is None:
                return None
            t = x
            if lo is not None:
                t = self.node("Relu", [x]) if lo == 0.0 else self.node("Max", [x, self.const(lo)])
            t = self.node("Mul", [t, self.const(-1.0)])
            t = self.node("Max", [t, self.const(-hi)])
            return self.node("Mul", [t, self.const(-1.0)], final)
        return None

    def part(self, removed: Sequence[int]) -> _Part:
        return _Part(self.rule, tuple(sorted(removed)), self.nodes, self.inits)


CLIP_DECOMPOSE_FORMS = ("relu_min", "max_min", "neg")


# -- node-level alternatives ------------------------------------------------------------------------------

def _clip_bounds(ctx: _Ctx, i: int) -> tuple[str, float | None, float | None] | None:
    """(input, lo, hi) of a clip-like node: Clip (bounds as inputs or attributes), Relu, Max/Min by a scalar."""
    n = ctx.nodes[i]
    if not n.input or not ctx.is_float(n.input[0]) or len(n.output) != 1:
        return None
    if n.op_type == "Clip":
        if ctx.model.opset < 11:
            a = ctx.attrs(i)
            lo, hi = a.get("min"), a.get("max")
            lo = None if lo is None or lo <= -_BIG else float(lo)
            hi = None if hi is None or hi >= _BIG else float(hi)
            return n.input[0], lo, hi
        b: list[float | None] = []
        for k in (1, 2):
            name = n.input[k] if k < len(n.input) else ""
            if not name:
                b.append(None)
                continue
            v = ctx.const(name)
            if v is None or v.size != 1:
                return None
            b.append(float(v.flat[0]))
        return n.input[0], b[0], b[1]
    if n.op_type == "Relu":
        return n.input[0], 0.0, None
    if n.op_type in ("Max", "Min"):
        s = ctx.scalar_operand(i)
        if s is None:
            return None
        return (s[0], s[1], None) if n.op_type == "Max" else (s[0], None, s[1])
    return None


def _node_alternatives(ctx: _Ctx, i: int) -> list[_Part]:
    """A refused node's own function-keeping replacements (one node replaced), smallest first."""
    n = ctx.nodes[i]
    op = n.op_type
    out: list[_Part] = []
    if len(n.output) != 1 or not n.input:
        return out
    x = n.input[0]
    if op == "Div" and len(n.input) == 2 and ctx.is_float(x) and not ctx.is_const(x) and ctx.is_const(n.input[1]):
        c = ctx.const(n.input[1])
        if c is not None and c.dtype.kind == "f" and np.all(np.isfinite(c)) and np.all(c != 0):
            e = _Emit(ctx, i, "div-const-to-mul", ctx.dtype(x) or "float32")
            recip = (1.0 / c.astype(np.float64)).astype(c.dtype)
            e.node("Mul", [x, e.const(recip, str(c.dtype))], True)
            out.append(e.part([i]))
    elif op == "Sub" and len(n.input) == 2 and ctx.is_float(n.output[0]):
        a, b = n.input
        if ctx.is_const(b) and not ctx.is_const(a):
            c = ctx.const(b)
            if c is not None and c.dtype.kind == "f":
                e = _Emit(ctx, i, "sub-const-to-add", ctx.dtype(a) or "float32")
                e.node("Add", [a, e.const(-c, str(c.dtype))], True)
                out.append(e.part([i]))
        elif ctx.is_const(a) and not ctx.is_const(b):
            c = ctx.const(a)
            if c is not None and c.dtype.kind == "f":
                e = _Emit(ctx, i, "sub-const-to-add", ctx.dtype(b) or "float32")
                t = e.node("Mul", [b, e.const(-1.0)])
                e.node("Add", [t, e.const(c, str(c.dtype))], True)
                out.append(e.part([i]))
    elif op in ("Add", "Mul") and len(n.input) == 2 and ctx.is_const(n.input[0]) and not ctx.is_const(n.input[1]):
        e = _Emit(ctx, i, "const-operand-second", ctx.dtype(n.input[1]) or "float32")
        e.node(op, [n.input[1], n.input[0]], True)
        out.append(e.part([i]))
    if op == "Clip":
        cb = _clip_bounds(ctx, i)
        if cb is not None and (cb[1] is not None or cb[2] is not None):
            for form in CLIP_DECOMPOSE_FORMS:
                e = _Emit(ctx, i, "relu6-decompose", ctx.dtype(cb[0]) or "float32")
                if e.clip(cb[0], cb[1], cb[2], form, True) is not None:
                    out.append(e.part([i]))
    elif op in ("Max", "Min"):
        cb = _clip_bounds(ctx, i)
        if cb is not None:
            e = _Emit(ctx, i, "relu6-fuse", ctx.dtype(cb[0]) or "float32")
            e.clip(cb[0], cb[1], cb[2], "clip", True)
            out.append(e.part([i]))
    elif op == "HardSigmoid" and ctx.is_float(x):
        a = ctx.attrs(i)
        out.extend(_hardsigmoid_forms(ctx, i, x, float(a.get("alpha", 0.2)), float(a.get("beta", 0.5)),
                                      "hardsigmoid-decompose"))
    elif op == "HardSwish" and ctx.is_float(x):
        out.extend(_hardswish_forms(ctx, i, x))
    return out


def _hardsigmoid_forms(ctx: _Ctx, i: int, x: str, alpha: float, beta: float, rule: str,
                       forms: Sequence[str] = ("clip", *CLIP_DECOMPOSE_FORMS)) -> list[_Part]:
    out = []
    for form in forms:
        e = _Emit(ctx, i, rule, ctx.dtype(x) or "float32")
        t = x
        if alpha != 1.0:
            t = e.node("Mul", [t, e.const(alpha)])
        if beta != 0.0:
            t = e.node("Add", [t, e.const(beta)])
        if e.clip(t, 0.0, 1.0, form, True) is not None:
            out.append(e.part([i]))
    return out


def _hardswish_forms(ctx: _Ctx, i: int, x: str, rule: str = "hardswish-decompose",
                     removed: Sequence[int] | None = None) -> list[_Part]:
    rem = list(removed) if removed is not None else [i]
    dt = ctx.dtype(x) or "float32"
    out = []
    e = _Emit(ctx, i, rule, dt)
    hs = e.node("HardSigmoid", [x], alpha=1.0 / 6.0, beta=0.5)
    e.node("Mul", [x, hs], True)
    out.append(e.part(rem))
    for form in ("clip", *CLIP_DECOMPOSE_FORMS):
        for scale in ("mul", "div"):
            e = _Emit(ctx, i, rule, dt)
            t = e.node("Add", [x, e.const(3.0)])
            t = e.clip(t, 0.0, 6.0, form, False)
            if t is None:
                continue
            t = e.node("Mul", [x, t])
            if scale == "mul":
                e.node("Mul", [t, e.const(1.0 / 6.0)], True)
            else:
                e.node("Div", [t, e.const(6.0)], True)
            out.append(e.part(rem))
    return out


# -- matchers --------------------------------------------------------------------------------------------

def _refused_in(ctx: _Ctx, nodes: Sequence[int]) -> bool:
    return any(ctx.nodes[i].name in ctx.refused for i in nodes)


def _piecewise(ctx: _Ctx, pattern: Sequence[int]) -> list[list[_Part]]:
    """Alternatives made of the refused pieces' own rewrites: the j-th alternative of each refused piece; last, the
    one-for-one rewrites alone (a Div -> Mul where the Clip has no accepted form: a partial lift, fewer refused)."""
    per = [(i, _node_alternatives(ctx, i)) for i in pattern if ctx.nodes[i].name in ctx.refused]
    per = [(i, alts) for i, alts in per if alts]
    if not per:
        return []
    depth = max(len(a) for _, a in per)
    out = [[alts[min(j, len(alts) - 1)] for _, alts in per] for j in range(depth)]
    small = [next(a for a in alts if not _grows([a])) for _, alts in per if any(not _grows([a]) for a in alts)]
    if small and len(small) < len(per) and small not in out:
        out.append(small)
    return out


def _affine_back(ctx: _Ctx, t: str, reader: int, stop: set[str]) -> tuple[str, float, float, list[int]]:
    """Walk back from `t` (read only by `reader`) through at most one Mul/Div and one Add/Sub by a scalar:
    t = s * x + b. Stops at a tensor in `stop`, one read elsewhere too, or anything else."""
    s, b = 1.0, 0.0
    nodes: list[int] = []
    used_mul = used_add = False
    cur = t
    while cur not in stop and ctx.single_reader(cur) is not None:
        p = ctx.producer(cur)
        if p is None or not ctx.free(p):
            break
        op = ctx.nodes[p].op_type
        so = ctx.scalar_operand(p) if op in ("Add", "Sub", "Mul", "Div") else None
        if so is None:
            break
        x, c, ci = so
        if op in ("Add", "Sub"):
            if used_add or (op == "Sub" and ci == 0):
                break
            b += s * (c if op == "Add" else -c)
            used_add = True
        else:
            if used_mul or (op == "Div" and (ci == 0 or c == 0.0)):
                break
            s *= c if op == "Mul" else 1.0 / c
            used_mul = True
        nodes.append(p)
        cur = x
    return cur, s, b, nodes


def _clip_chain(ctx: _Ctx, head: int) -> tuple[list[int], str, float, float, float, float] | None:
    """From a clip-like node (Clip, Relu, Max/Min by a scalar, HardSigmoid) through the clip-like nodes reading
    it alone: (nodes, input, s, b, lo, hi) with output = clip(s * input + b, lo, hi)."""
    n = ctx.nodes[head]
    if n.op_type == "HardSigmoid":
        if not ctx.is_float(n.input[0]):
            return None
        a = ctx.attrs(head)
        return [head], n.input[0], float(a.get("alpha", 0.2)), float(a.get("beta", 0.5)), 0.0, 1.0
    cb = _clip_bounds(ctx, head)
    if cb is None:
        return None
    x, lo, hi = cb
    lo_f, hi_f = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)
    nodes = [head]
    cur = n.output[0]
    while True:
        r = ctx.single_reader(cur)
        if r is None or not ctx.free(r):
            break
        cb2 = _clip_bounds(ctx, r)
        if cb2 is None or cb2[0] != cur:
            break
        l2 = -math.inf if cb2[1] is None else cb2[1]
        h2 = math.inf if cb2[2] is None else cb2[2]
        nl, nh = max(lo_f, l2), min(hi_f, h2)
        if nl > nh:
            break
        lo_f, hi_f = nl, nh
        nodes.append(r)
        cur = ctx.nodes[r].output[0]
    return nodes, x, 1.0, 0.0, lo_f, hi_f


def _hard_sites(ctx: _Ctx) -> list[_Site]:
    """Decomposed HardSwish / HardSigmoid: y = k * [f *] clip(s * x + b, lo, hi) with lo = 0, k * hi = 1."""
    sites = []
    for head in range(len(ctx.nodes)):
        if not ctx.free(head) or ctx.nodes[head].op_type not in ("Clip", "Relu", "Max", "Min", "HardSigmoid"):
            continue
        prev = ctx.producer(ctx.nodes[head].input[0]) if ctx.nodes[head].input else None
        if prev is not None and ctx.nodes[prev].op_type in ("Clip", "Relu", "Max", "Min") and \
                ctx.single_reader(ctx.nodes[prev].output[0]) == head and _clip_bounds(ctx, prev) is not None:
            continue  # not the chain's head
        chain = _clip_chain(ctx, head)
        if chain is None:
            continue
        cnodes, cin, s0, b0, lo, hi = chain
        if not (abs(lo) <= 1e-7 and math.isfinite(hi) and hi > 0):
            continue
        # forward: Mul/Div by scalars and at most one Mul by a tensor
        steps: list[tuple[int, float, str | None]] = []
        cur = ctx.nodes[cnodes[-1]].output[0]
        have_f = False
        while True:
            r = ctx.single_reader(cur)
            if r is None or not ctx.free(r) or ctx.nodes[r].op_type not in ("Mul", "Div"):
                break
            rn = ctx.nodes[r]
            so = ctx.scalar_operand(r)
            if so is not None and so[0] == cur:
                if rn.op_type == "Div" and (so[2] == 0 or so[1] == 0.0):
                    break
                steps.append((r, so[1] if rn.op_type == "Mul" else 1.0 / so[1], None))
            elif rn.op_type == "Mul" and not have_f and len(rn.input) == 2 and cur in rn.input and \
                    not any(ctx.is_const(v) for v in rn.input):
                other = rn.input[1] if rn.input[0] == cur else rn.input[0]
                if other == cur or ctx.shape(other) != ctx.shape(rn.output[0]):
                    break
                steps.append((r, 1.0, other))
                have_f = True
            else:
                break
            cur = rn.output[0]
        found = None
        for L in range(len(steps), -1, -1):
            pre = steps[:L]
            k = math.prod(c for _, c, _ in pre)
            f = next((t for _, _, t in pre if t is not None), None)
            if k <= 0 or not _close(k * hi, 1.0):
                continue
            reader = cnodes[0]
            x0, s1, b1, back = _affine_back(ctx, cin, reader, {f} if f else set())
            s, b = s1 * s0, s0 * b1 + b0  # clip(s0 * (s1 x + b1) + b0)
            alpha, beta = k * s, k * b
            nodes = sorted([*back, *cnodes, *(i for i, _, _ in pre)])
            if f is not None:
                if x0 != f or not (_close(alpha, 1.0 / 6.0) and _close(beta, 0.5)):
                    continue
                found = ("hardswish", nodes, x0, alpha, beta)
            else:
                if len(nodes) < 2:
                    continue
                found = ("hardsigmoid", nodes, x0, alpha, beta)
            break
        if found is None:
            continue
        kind, nodes, x0, alpha, beta = found
        if not _refused_in(ctx, nodes) or not ctx.is_float(x0):
            continue
        last = nodes[-1]
        pieces = _piecewise(ctx, nodes)
        alts = [a for a in pieces if not _grows(a)]
        if kind == "hardswish":
            dt = ctx.dtype(x0) or "float32"
            if ctx.model.opset >= 14:
                e = _Emit(ctx, last, "hardswish-fuse", dt)
                e.node("HardSwish", [x0], True)
                alts.append([e.part(nodes)])
            e = _Emit(ctx, last, "hardswish-fuse", dt)
            hs = e.node("HardSigmoid", [x0], alpha=1.0 / 6.0, beta=0.5)
            e.node("Mul", [x0, hs], True)
            alts.append([e.part(nodes)])
        else:
            e = _Emit(ctx, last, "hardsigmoid-fuse", ctx.dtype(x0) or "float32")
            e.node("HardSigmoid", [x0], True, alpha=float(alpha), beta=float(beta))
            alts.append([e.part(nodes)])
        alts.extend(a for a in pieces if _grows(a))
        sites.append(_Site(tuple(nodes), alts))
        ctx.claimed.update(nodes)
    return sites


def _grows(parts: Sequence[_Part]) -> bool:
    """Whether an alternative replaces some node by several (a Clip by Relu + Min): tried after the fused op."""
    return any(len(p.nodes) > len(p.removed) for p in parts)


def _fused_hard_sites(ctx: _Ctx) -> list[_Site]:
    sites = []
    for i, n in enumerate(ctx.nodes):
        if n.op_type in ("HardSwish", "HardSigmoid") and ctx.free(i) and n.name in ctx.refused:
            alts = [[p] for p in _node_alternatives(ctx, i)]
            if alts:
                sites.append(_Site((i,), alts))
                ctx.claimed.add(i)
    return sites


def _bn_sites(ctx: _Ctx) -> list[_Site]:
    sites = []
    for i, n in enumerate(ctx.nodes):
        if n.op_type != "BatchNormalization" or not ctx.free(i) or len([o for o in n.output if o]) != 1:
            continue
        if len(n.input) < 5 or not all(ctx.is_const(v) for v in n.input[1:5]):
            continue
        if ctx.attrs(i).get("training_mode", 0):
            continue
        p = ctx.producer(n.input[0])
        if p is None or not ctx.free(p) or ctx.nodes[p].op_type != "Conv" or ctx.single_reader(n.input[0]) != i:
            continue
        conv = ctx.nodes[p]
        if len(conv.input) < 2 or not ctx.is_const(conv.input[1]) or \
                (len(conv.input) > 2 and conv.input[2] and not ctx.is_const(conv.input[2])):
            continue
        if not _refused_in(ctx, (p, i)):
            continue
        w = ctx.const(conv.input[1])
        if w is None or w.dtype.kind != "f":
            continue
        vals = [ctx.const(v) for v in n.input[1:5]]
        if any(v is None for v in vals):
            continue
        scale, bias, mean, var = (np.asarray(v, np.float64).ravel() for v in vals)  # type: ignore[arg-type]
        cout = w.shape[0]
        if not all(v.size in (1, cout) for v in (scale, bias, mean, var)):
            continue
        eps = float(ctx.attrs(i).get("epsilon", 1e-5))
        f = scale / np.sqrt(var + eps)
        b0 = ctx.const(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        b0 = np.zeros(cout) if b0 is None else np.asarray(b0, np.float64).ravel()
        w2 = (w.astype(np.float64) * np.broadcast_to(f, (cout,)).reshape((cout,) + (1,) * (w.ndim - 1))).astype(w.dtype)
        b2 = ((b0 - mean) * f + bias).astype(w.dtype)
        b2 = np.broadcast_to(b2, (cout,)).copy()
        e = _Emit(ctx, i, "bn-fold-into-conv", str(w.dtype))
        e.node("Conv", [conv.input[0], e.const(w2, str(w.dtype)), e.const(b2, str(w.dtype))], True,
               **{a.name: helper.get_attribute_value(a) for a in conv.attribute})
        sites.append(_Site((p, i), [[e.part([p, i])]]))
        ctx.claimed.update((p, i))
    return sites


def _matmul_sites(ctx: _Ctx) -> list[_Site]:
    sites = []
    for i, n in enumerate(ctx.nodes):
        if n.op_type != "MatMul" or not ctx.free(i) or len(n.input) != 2:
            continue
        x, wn = n.input
        w = ctx.const(wn) if ctx.is_const(wn) and not ctx.is_const(x) else None
        sx, so = ctx.shape(x), ctx.shape(n.output[0])
        if w is None or w.ndim != 2 or w.dtype.kind != "f" or not ctx.is_float(x) or sx is None or so is None \
                or len(sx) < 2 or any(d is None for d in (*sx, *so)):
            continue
        kdim, ndim = w.shape
        pattern = [i]
        bias = None
        r = ctx.single_reader(n.output[0])
        if r is not None and ctx.free(r) and ctx.nodes[r].op_type == "Add":
            so2 = ctx.nodes[r]
            other = so2.input[1] if so2.input[0] == n.output[0] else so2.input[0]
            bv = ctx.const(other) if ctx.is_const(other) else None
            if bv is not None and bv.dtype == w.dtype and bv.shape in ((ndim,), (1, ndim)) and \
                    ctx.shape(so2.output[0]) == so:
                bias, pattern = bv.reshape(ndim), [i, r]
        if not _refused_in(ctx, pattern):
            continue
        dt = str(w.dtype)
        alts: list[list[_Part]] = []
        for with_bias in ((True, False) if bias is not None else (False,)):
            last = pattern[-1] if with_bias else i
            e = _Emit(ctx, last, "matmul-to-gemm", dt)
            a = x
            if len(sx) > 2:
                a = e.node("Reshape", [x, e.const([-1, kdim], "int64")])
            ins = [a, wn]
            if with_bias:
                ins.append(e.const(bias, dt))
            elif ctx.model.opset < 11:
                ins.append(e.const(np.zeros(ndim), dt))
            if len(sx) > 2:
                t = e.node("Gemm", ins)
                e.node("Reshape", [t, e.const(list(so), "int64")], True)
            else:
                e.node("Gemm", ins, True)
            alts.append([e.part(pattern if with_bias else [i])])
        sites.append(_Site(tuple(pattern), alts))
        ctx.claimed.update(pattern)
    return sites


def _reducemean_sites(ctx: _Ctx) -> list[_Site]:
    sites = []
    for i, n in enumerate(ctx.nodes):
        if n.op_type != "ReduceMean" or not ctx.free(i) or n.name not in ctx.refused:
            continue
        x = n.input[0]
        sx = ctx.shape(x)
        if sx is None or len(sx) != 4 or not ctx.is_float(x) or any(d is None for d in sx):
            continue
        a = ctx.attrs(i)
        axes = a.get("axes")
        if len(n.input) > 1 and n.input[1]:
            v = ctx.const(n.input[1])
            if v is None:
                continue
            axes = [int(t) for t in v.ravel()]
        if axes is None or sorted(ax % 4 for ax in axes) != [2, 3]:
            continue
        dt = ctx.dtype(x) or "float32"
        alts = []
        if a.get("keepdims", 1):
            e = _Emit(ctx, i, "reducemean-to-globalavgpool", dt)
            e.node("GlobalAveragePool", [x], True)
            alts.append([e.part([i])])
        else:
            for how in ("Flatten", "Reshape"):
                e = _Emit(ctx, i, "reducemean-to-globalavgpool", dt)
                g = e.node("GlobalAveragePool", [x])
                if how == "Flatten":
                    e.node("Flatten", [g], True, axis=1)
                else:
                    e.node("Reshape", [g, e.const([sx[0], sx[1]], "int64")], True)
                alts.append([e.part([i])])
        sites.append(_Site((i,), alts))
        ctx.claimed.add(i)
    return sites


def _minmax_pair_sites(ctx: _Ctx) -> list[_Site]:
    """Relu/Max then Min (either order) with one of them refused -> one Clip."""
    sites = []
    for head in range(len(ctx.nodes)):
        if not ctx.free(head) or ctx.nodes[head].op_type not in ("Relu", "Max", "Min"):
            continue
        chain = _clip_chain(ctx, head)
        if chain is None or len(chain[0]) < 2:
            continue
        nodes, x, _, _, lo, hi = chain
        if any(ctx.nodes[j].op_type == "Clip" for j in nodes) or not _refused_in(ctx, nodes):
            continue
        e = _Emit(ctx, nodes[-1], "relu6-fuse", ctx.dtype(x) or "float32")
        e.clip(x, None if lo == -math.inf else lo, None if hi == math.inf else hi, "clip", True)
        sites.append(_Site(tuple(nodes), [[e.part(nodes)]]))
        ctx.claimed.update(nodes)
    return sites


def _single_sites(ctx: _Ctx) -> list[_Site]:
    sites = []
    for i, n in enumerate(ctx.nodes):
        if not ctx.free(i) or n.name not in ctx.refused or n.op_type not in ("Div", "Sub", "Add", "Mul", "Clip",
                                                                              "Max", "Min"):
            continue
        alts = [[p] for p in _node_alternatives(ctx, i)]
        if alts:
            sites.append(_Site((i,), alts))
            ctx.claimed.add(i)
    return sites


MATCHERS = (_hard_sites, _fused_hard_sites, _bn_sites, _matmul_sites, _reducemean_sites, _minmax_pair_sites,
            _single_sites)


# -- building --------------------------------------------------------------------------------------------

def model_from_proto(proto: onnx.ModelProto, like: Model) -> Model:
    """A Model (shapes, costs) for `proto`, a rewrite of `like`'s graph: same path (external data), inputs, outputs.

    The tail of load_model (inference, tensor table, producers, costs) on an in-memory proto."""
    graph = proto.graph
    del graph.value_info[:]
    for o in graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    inferred = infer_shapes(proto)
    tensors = tensor_table(inferred.graph)
    node_inputs, producer = graph_index(inferred.graph)
    return Model(proto=inferred, path=like.path, name=like.name, opset=like.opset, inputs=like.inputs,
                 outputs=tuple(o.name for o in inferred.graph.output), tensors=tensors, node_inputs=node_inputs,
                 costs=[node_cost(n, tensors) for n in inferred.graph.node], producer=producer,
                 has_external_data=like.has_external_data, notes=like.notes)


def _build(model: Model, parts: Sequence[_Part]) -> Model:
    removed: dict[int, _Part] = {}
    for p in parts:
        for i in p.removed:
            removed[i] = p
    # each part's nodes go where its last removed node was (its output's producer, after all its inputs)
    at = {max(p.removed): p for p in parts}
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    g = proto.graph
    nodes: list[onnx.NodeProto] = []
    for i, n in enumerate(model.nodes):
        if i in at:
            nodes.extend(at[i].nodes)
        elif i not in removed:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    for p in parts:
        g.initializer.extend(p.inits)
    used = {v for n in g.node for v in n.input} | {o.name for o in g.output}
    for n in g.node:
        if any(a.HasField("g") or a.graphs for a in n.attribute):
            used.update(_subgraph_outer_inputs(n))
    graph_inputs = {vi.name for vi in g.input}
    keep = [t for t in g.initializer if t.name in used or t.name in graph_inputs]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
    return model_from_proto(proto, model)


# -- proof -----------------------------------------------------------------------------------------------

def _run(proto: onnx.ModelProto, feed: Mapping[str, Any], outputs: Sequence[str]) -> list[Any]:
    from edgesdk.graph.prepare import _run as run_in_memory  # one in-memory onnxruntime run for both proofs

    return run_in_memory(proto, feed, outputs)


def compare(ref: Sequence[Any], got: Sequence[Any]) -> tuple[bool, float, float]:
    """(ok, worst max abs diff, worst cosine) over the outputs; the bar: cosine >= COSINE_MIN per output and
    max |a-b| <= ABS_REL * max(1, max|a|), or max |a-b| <= ABS_FLOOR * max(1, max|a|) (a near-empty output);
    integer outputs equal; NaN/inf in the same places."""
    from edgesdk.runtime.reference import cosine

    ok, worst_abs, worst_cos = True, 0.0, 1.0
    for a, b in zip(ref, got):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False, math.inf, 0.0
        if a.dtype.kind not in "fc":
            same = bool(np.array_equal(a, b))
            ok &= same
            worst_abs = max(worst_abs, 0.0 if same else math.inf)
            continue
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        fin = np.isfinite(a64) & np.isfinite(b64)
        if not fin.all():
            ok &= bool(np.array_equal(np.isfinite(a64), np.isfinite(b64)))
            a64, b64 = a64[fin], b64[fin]
        if a64.size == 0:
            continue
        d = float(np.max(np.abs(a64 - b64)))
        c = cosine(a64, b64)
        worst_abs, worst_cos = max(worst_abs, d), min(worst_cos, c)
        scale = max(1.0, float(np.max(np.abs(a64))))
        ok &= (c >= COSINE_MIN and d <= ABS_REL * scale) or d <= ABS_FLOOR * scale
    return ok, worst_abs, worst_cos


# -- the entry point -------------------------------------------------------------------------------------

def _accelerated(model: Model, board: BoardProfile, tables: Mapping[str, OpTable] | None) -> set[str]:
    return {p.node for p in check_support(model, board, tables).placements if p.target == "accelerator"}


def find_sites(model: Model, refused: set[str]) -> list[_Site]:
    """Every site of `model` holding a node in `refused`, with its alternatives (no support check here)."""
    ctx = _Ctx(model, refused)
    sites: list[_Site] = []
    for m in MATCHERS:
        sites.extend(m(ctx))
    return sites


def apply_rewrites(model: Model, board: BoardProfile, tables: Mapping[str, OpTable] | None = None,
                   feed: Mapping[str, Any] | None = None, input_source: str | None = None) -> RewriteResult:
    """Rewrite `model` where `board`'s accelerator refuses a node and takes its rewrite; prove it on onnxruntime.

    `feed`: the input of the proof (None: prepare.check_feed's seeded uniform [0, 1) input). Never raises for a
    rewrite that fails: it is left out and `notes` says why. Returns the input model itself when nothing applies."""
    if board.accelerator is None:
        return RewriteResult(model, notes=(f"board {board.id} has no accelerator: no rewrite applies",))
    support = check_support(model, board, tables)
    refused = {p.node for p in support.placements if p.target != "accelerator"}
    before = len(refused)
    if not refused:
        return RewriteResult(model, refused_before=0, refused_after=0)
    sites = find_sites(model, refused)
    if not sites:
        return RewriteResult(model, refused_before=before, refused_after=before)
    notes: list[str] = []

    def chosen_parts(active: Sequence[_Site]) -> list[_Part]:
        return [p for s in active for p in (s.current() or [])]

    undecided = list(sites)
    while undecided:
        open_ids = {id(s) for s in undecided}
        live = [s for s in sites if s.chosen is not None or id(s) in open_ids]
        try:
            built = _build(model, chosen_parts(live))
        except Exception as exc:  # a bad rewrite (shape inference refused it): find it site by site
            bad = _isolate_build_failure(model, [s for s in live if s.chosen is not None], undecided)
            for s in bad:
                s.k += 1
                if s.k >= len(s.alternatives) and s.partial is not None:
                    s.chosen = s.partial
            undecided = [s for s in undecided if s.k < len(s.alternatives)]
            if not bad:
                notes.append(f"rewrites not applied: the rewritten graph does not build ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
                return RewriteResult(model, notes=tuple(notes), refused_before=before, refused_after=before)
            continue
        acc = _accelerated(built, board, tables)
        nxt = []
        for s in undecided:
            parts = s.current() or []
            new = [n.name for p in parts for n in p.nodes]
            gone = {model.nodes[i].name for p in parts for i in p.removed}
            rest = [model.nodes[i].name for i in s.pattern if model.nodes[i].name not in gone]
            if all(n in acc for n in new) and all(n in acc for n in rest):
                s.chosen = s.k
                continue
            if s.partial is None and all(n in acc for n in new) and \
                    sum(n not in acc for n in rest) < sum(model.nodes[i].name in refused for i in s.pattern):
                s.partial = s.k
            s.k += 1
            if s.k < len(s.alternatives):
                nxt.append(s)
            elif s.partial is not None:
                s.chosen = s.partial
        undecided = nxt
    kept = [s for s in sites if s.chosen is not None]
    if not kept:
        return RewriteResult(model, notes=tuple(notes), refused_before=before, refused_after=before)

    parts = chosen_parts(kept)
    from edgesdk.graph.prepare import check_feed

    if feed is None:
        feed = check_feed(model)
        input_source = input_source or "seeded uniform [0, 1)"
    try:
        ref = _run(load_weights(model), feed, model.outputs)
    except Exception as exc:  # onnxruntime cannot run the original: nothing to prove against
        msg = str(exc).strip().splitlines()
        notes.append(f"rewrites not applied: onnxruntime cannot run the original model to prove them "
                     f"({type(exc).__name__}: {msg[0][:200] if msg else ''})")
        return RewriteResult(model, notes=tuple(notes), refused_before=before, refused_after=before)

    def prove(ps: Sequence[_Part]) -> tuple[Model | None, bool, float, float, str]:
        try:
            m = _build(model, ps)
            got = _run(load_weights(m), feed, model.outputs)
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            return None, False, math.inf, 0.0, f"{type(exc).__name__}: {msg[0][:200] if msg else ''}"
        ok, d, c = compare(ref, got)
        return m, ok, d, c, f"cosine {c:.7f}, max abs diff {d:.3g}"

    final, ok, d, c, why = prove(parts)
    if not ok:
        rules = list(dict.fromkeys(p.rule for p in parts))
        good = []
        for r in rules:
            _, ok_r, _, _, why_r = prove([p for p in parts if p.rule == r])
            if ok_r:
                good.append(r)
            else:
                notes.append(f"rewrite {r} dropped: its proof on onnxruntime failed ({why_r}; the bar is cosine >= "
                             f"{COSINE_MIN} per output)")
        parts = [p for p in parts if p.rule in good]
        final, ok, d, c, why = prove(parts) if parts else (None, False, 0.0, 0.0, "")
        if not ok:
            if parts:
                notes.append(f"rewrites {', '.join(good)} dropped: each holds alone but not together ({why})")
            return RewriteResult(model, notes=tuple(notes), refused_before=before, refused_after=before,
                                 input_source=input_source or "given input")
    assert final is not None
    after = len(final.nodes) - len(_accelerated(final, board, tables))
    applied = []
    for r in dict.fromkeys(p.rule for p in parts):
        mine = [p for p in parts if p.rule == r]
        names = tuple(model.nodes[i].name for i in sorted({i for p in mine for i in p.removed}))
        applied.append(AppliedRewrite(r, RULES[r], len(mine), names, c, d))
    applied.sort(key=lambda a: list(RULES).index(a.rule))
    return RewriteResult(final, tuple(applied), tuple(notes), before, after, c, d, input_source or "given input")


def _isolate_build_failure(model: Model, decided: Sequence[_Site], undecided: Sequence[_Site]) -> list[_Site]:
    """The undecided sites whose current alternative makes the graph fail to build (one at a time)."""
    base = [p for s in decided for p in (s.current() or [])]
    bad = []
    for s in undecided:
        try:
            _build(model, base + (s.current() or []))
        except Exception:
            bad.append(s)
    return bad


__all__ = ["COSINE_MIN", "RULES", "AppliedRewrite", "RewriteResult", "apply_rewrites", "compare", "find_sites",
           "model_from_proto"]

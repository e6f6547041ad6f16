#!/usr/bin/env python3
"""Fuzz edgesdk's model loaders with mutated real models (issue 17, reliability cases 17 and 18).

Seeds: tests/data/digits_cnn.onnx (a trained CNN), `ops_model()` (built here with the real-model ops: Conv, Split,
Resize, MaxPool, SiLU, Concat, Reshape, Transpose, Slice, Softmax, ReduceMean), and with --zoo the small real
zoo models already in the zoo cache (scripts/zoo_fetch.py; ppocr-cls, doc-orientation).

Mutations (`MUTATORS`): truncation, bit flips, smashed and inserted bytes, wrong dtypes, shapes that lie
(initializers whose dims do not match their data, wrong input/output/value_info shapes), cycles and unsorted
nodes, dangling inputs, huge dims (inputs, Reshape/Expand/Tile/Resize/ConstantOfShape targets), external-data
paths that escape the model's folder (``..``, absolute, a symlink, NUL, missing, an offset past the end), opset
and IR version lies, unknown domains, swapped op types, mutated attributes, duplicate and hostile names; plus
bundle mutations (a file of a converted bundle changed after its hash was recorded: with the check on, and with
it off so the engine's own loader reads the damage; ncnn and MNN bundles when their toolchains are installed).

Each mutant goes through load_model, inspect, partition (coral-usb: accelerator segments) and convert (rpi4,
onnxruntime), then `edgesdk.runtime.Session` on what convert wrote; a stage that raises an edgesdk error (an
EdgeSDKError subclass) ends the case cleanly. The invariant: a clean edgesdk error or success; never another
exception (a "bug": the traceback is recorded), a hang past the case timeout ("hang"), or a crash of the process
running the case ("crash": the worker died, e.g. a segfault in a native loader outside the guarded child). An
external-data path that escapes and is accepted is a bug too.

    scripts/fuzz_models.py --cases 10000 --seed 1 --json            (the campaign; one worker process)
    scripts/fuzz_models.py --cases 50 --seed 7 --keep-bugs out/     (reproducers of every bug kept in out/)

Exit code 0 when every case held the invariant, 1 otherwise, 2 for bad arguments. tests/unit/test_fuzz_models.py
runs the same mutators through hypothesis (a few hundred cases, derandomized) in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "tests" / "data" / "digits_cnn.onnx"
#: zoo models small enough to fuzz (id -> input shapes they need)
ZOO_SEEDS = {"ppocr-cls": {"x": (1, 3, 48, 192)}, "doc-orientation": None}
STAGES = ("load", "inspect", "partition", "convert", "session")
CASE_TIMEOUT = 60.0


# -- randomness: one interface over random.Random (the campaign) and hypothesis' data.draw (the test) -------------

class Rand:
    """What mutators may ask for. The campaign backs it with random.Random; the test with hypothesis."""

    def __init__(self, rng: random.Random) -> None:
        self._r = rng

    def int(self, lo: int, hi: int) -> int:  # inclusive
        return self._r.randint(lo, hi)

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.int(0, len(seq) - 1)]

    def bool(self) -> bool:
        return self.int(0, 1) == 1

    def bytes(self, n: int) -> bytes:
        return bytes(self.int(0, 255) for _ in range(n))


class HypothesisRand(Rand):
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self._data, self._st = data, st

    def int(self, lo: int, hi: int) -> int:
        return self._data.draw(self._st.integers(lo, hi))

    def bytes(self, n: int) -> bytes:
        return self._data.draw(self._st.binary(min_size=n, max_size=n))


# -- seeds --------------------------------------------------------------------------------------------------------

def ops_model(path: Path) -> Path:
    """A small model with the ops real detectors and OCR models are made of, checked and runnable."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b"),
            numpy_helper.from_array(np.array([4, 4], dtype=np.int64), "split"),
            numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales"),
            numpy_helper.from_array(np.array([1, 8, 256], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "s0"),
            numpy_helper.from_array(np.array([4], dtype=np.int64), "s4"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "ax2"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")]
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             n("Relu", ["c"], ["r"], name="relu"),
             n("Split", ["r", "split"], ["a", "bb"], name="split", axis=1),
             n("Resize", ["a", "", "scales"], ["a2"], name="resize", mode="nearest"),
             n("MaxPool", ["a2"], ["a3"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             n("Sigmoid", ["bb"], ["sg"], name="sigmoid"),
             n("Mul", ["bb", "sg"], ["silu"], name="silu"),
             n("Concat", ["a3", "silu"], ["cat"], name="concat", axis=1),
             n("Reshape", ["cat", "shape"], ["rs"], name="reshape"),
             n("Transpose", ["rs"], ["tr"], name="transpose", perm=[0, 2, 1]),
             n("Slice", ["tr", "s0", "s4", "ax2"], ["sl"], name="slice"),
             n("Add", ["sl", "bias"], ["ad"], name="add"),
             n("Softmax", ["ad"], ["y"], name="softmax", axis=-1),
             n("ReduceMean", ["cat"], ["z"], name="mean", axes=[2, 3], keepdims=0)]
    g = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 4]),
                           helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="fuzz-seed")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return path


@dataclass(frozen=True)
class Seed:
    name: str
    path: Path
    shapes: dict[str, tuple[int, ...]] | None = None


def seeds(work: Path, zoo: bool = False) -> list[Seed]:
    out = [Seed("digits", DIGITS), Seed("ops", ops_model(work / "ops.onnx"))]
    if zoo:
        sys.path.insert(0, str(ROOT / "scripts"))
        import zoo_fetch

        for e in zoo_fetch.load_entries():
            if e["id"] in ZOO_SEEDS:
                p = zoo_fetch.model_path(e)
                if p.is_file() and p.suffix == ".onnx":
                    out.append(Seed(e["id"], p, ZOO_SEEDS[e["id"]]))
    return out


# -- mutators -----------------------------------------------------------------------------------------------------

@dataclass
class Mutant:
    seed: str
    mutator: str
    detail: str
    path: Path  # the model file, in its own folder (`dir`)
    shapes: dict[str, tuple[int, ...]] | None
    escapes: bool = False  # an external-data path that leaves the model's folder: must never be accepted


def _proto(seed: Seed) -> Any:
    import onnx

    return onnx.load(str(seed.path), load_external_data=False)


_ELEM_TYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 19, 21, 23, 40, 99, 1000]


def m_truncate(p: bytes, r: Rand) -> tuple[bytes, str]:
    k = r.int(0, max(0, len(p) - 1))
    return p[:k], f"cut at byte {k} of {len(p)}"


def m_bitflip(p: bytes, r: Rand) -> tuple[bytes, str]:
    b = bytearray(p)
    flips = [r.int(0, len(b) * 8 - 1) for _ in range(r.int(1, 16))]
    for f in flips:
        b[f // 8] ^= 1 << (f % 8)
    return bytes(b), f"{len(flips)} bit(s) flipped, first at byte {flips[0] // 8}"


def m_smash(p: bytes, r: Rand) -> tuple[bytes, str]:
    b = bytearray(p)
    at, n = r.int(0, len(b) - 1), r.int(1, 64)
    if r.bool():
        b[at:at + n] = r.bytes(n)
        return bytes(b), f"{n} random bytes at {at}"
    if r.bool():
        b[at:at] = r.bytes(n)
        return bytes(b), f"{n} random bytes inserted at {at}"
    del b[at:at + n]
    return bytes(b), f"{n} bytes deleted at {at}"


def _tensors(g: Any) -> list[Any]:
    return [*g.input, *g.output, *g.value_info]


def s_dtype(m: Any, r: Rand) -> str:
    g = m.graph
    what = r.int(0, 3)
    et = r.choice(_ELEM_TYPES)
    if what == 0:
        vi = r.choice(_tensors(g))
        vi.type.tensor_type.elem_type = et
        return f"value {vi.name!r} elem_type -> {et}"
    if what == 1 and g.initializer:
        t = r.choice(g.initializer)
        t.data_type = et
        return f"initializer {t.name!r} data_type -> {et}"
    if what == 2:
        import onnx

        node = r.choice(g.node)
        new = onnx.helper.make_node("Cast", [node.output[0]], [node.output[0] + "_cast"], to=et)
        for other in g.node:
            for i, x in enumerate(other.input):
                if x == node.output[0]:
                    other.input[i] = new.output[0]
        for o in g.output:
            if o.name == node.output[0]:
                o.name = new.output[0]
        g.node.insert(list(g.node).index(node) + 1, new)
        return f"Cast(to={et}) after {node.name!r}"
    vi = r.choice(list(g.output))
    vi.type.tensor_type.elem_type = et
    return f"output {vi.name!r} elem_type -> {et}"


def s_shape_lie(m: Any, r: Rand) -> str:
    g = m.graph
    what = r.int(0, 3)
    if what == 0 and g.initializer:
        t = r.choice(g.initializer)
        dims = list(t.dims)
        how = r.int(0, 4)
        if how == 0 and dims:
            i = r.int(0, len(dims) - 1)
            dims[i] = r.choice([0, 1, dims[i] * 2, dims[i] + 1, -1, 2**31, 2**40])
        elif how == 1:
            dims.append(r.choice([1, 2, 3]))
        elif how == 2 and dims:
            dims.pop(r.int(0, len(dims) - 1))
        elif how == 3:
            dims = list(reversed(dims)) + ([7] if dims == list(reversed(dims)) else [])
        else:
            t.raw_data = t.raw_data[: max(0, len(t.raw_data) - r.int(1, 16))]
        del t.dims[:]
        t.dims.extend(dims)
        return f"initializer {t.name!r} dims -> {dims}"
    vi = r.choice(_tensors(g))
    tt = vi.type.tensor_type
    dims = tt.shape.dim
    if what == 1 and dims:
        d = r.choice(list(dims))
        v = r.choice([0, -1, -7, 2, 5, 1000, 2**31, 2**62])
        d.Clear()
        if v == 2**62 and r.bool():
            d.dim_param = r.choice(["n", "", "../x", "h w"])
        else:
            d.dim_value = v
        return f"{vi.name!r} a dim -> {v}"
    if what == 2:
        if r.bool() and dims:
            del tt.shape.dim[-1]
            return f"{vi.name!r} rank - 1"
        tt.shape.dim.add().dim_value = r.choice([1, 3])
        return f"{vi.name!r} rank + 1"
    tt.ClearField("shape")
    return f"{vi.name!r} shape removed"


def s_cycle(m: Any, r: Rand) -> str:
    g = m.graph
    nodes = list(g.node)
    if r.bool() and len(nodes) > 1:
        order = nodes[:]
        random.Random(r.int(0, 2**31)).shuffle(order)
        del g.node[:]
        g.node.extend(order)
        return "nodes shuffled (not topologically sorted)"
    i = r.int(0, len(nodes) - 1)
    j = r.int(i, len(nodes) - 1)
    src, dst = nodes[j], nodes[i]
    if not dst.input:
        dst.input.append(src.output[0])
    else:
        dst.input[r.int(0, len(dst.input) - 1)] = src.output[0]
    return f"{dst.name!r} reads {src.name!r}'s output ({'self-loop' if i == j else 'cycle'})"


def s_dangling(m: Any, r: Rand) -> str:
    g = m.graph
    what = r.int(0, 4)
    if what == 0:
        node = r.choice(g.node)
        if node.input:
            k = r.int(0, len(node.input) - 1)
            node.input[k] = "ghost_" + str(r.int(0, 99))
            return f"{node.name!r} input {k} -> a name nothing produces"
    if what == 1 and g.initializer:
        t = g.initializer[r.int(0, len(g.initializer) - 1)]
        g.initializer.remove(t)
        return f"initializer {t.name!r} removed"
    if what == 2 and len(g.node) > 1:
        node = g.node[r.int(0, len(g.node) - 1)]
        g.node.remove(node)
        return f"node {node.name!r} removed"
    if what == 3:
        g.output[r.int(0, len(g.output) - 1)].name = "nowhere"
        return "an output names nothing"
    if len(g.input):
        vi = g.input[0]
        g.input.remove(vi)
        return f"graph input {vi.name!r} removed"
    return "nothing"


def s_huge(m: Any, r: Rand) -> str:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = m.graph
    huge = r.choice([2**20, 2**31 - 1, 2**31, 2**33, 2**40, 2**62])
    what = r.int(0, 4)
    x = g.input[0].name if g.input else (g.node[0].input[0] if g.node and g.node[0].input else "x")
    if what == 0 and g.input and g.input[0].type.tensor_type.shape.dim:
        d = r.choice(list(g.input[0].type.tensor_type.shape.dim))
        d.Clear()
        d.dim_value = huge
        return f"input dim -> {huge}"
    op = r.choice(["Expand", "Tile", "Reshape", "ConstantOfShape", "Resize"])
    rank = len(g.input[0].type.tensor_type.shape.dim) if g.input else 4
    rank = max(rank, 1)
    target = [1] * rank
    target[r.int(0, rank - 1)] = huge
    name = f"huge_{op.lower()}"
    if op == "Resize":
        c = numpy_helper.from_array(np.array([1.0] * (rank - 1) + [float(huge)], dtype=np.float32), name + "_c")
        node = onnx.helper.make_node(op, [x, "", c.name], [name], name=name)
    elif op == "ConstantOfShape":
        c = numpy_helper.from_array(np.array(target, dtype=np.int64), name + "_c")
        node = onnx.helper.make_node(op, [c.name], [name], name=name)
    else:
        c = numpy_helper.from_array(np.array(target if op != "Reshape" else [huge, -1], dtype=np.int64),
                                    name + "_c")
        node = onnx.helper.make_node(op, [x, c.name], [name], name=name)
    g.initializer.append(c)
    g.node.append(node)
    g.output.append(onnx.helper.make_tensor_value_info(name, g.input[0].type.tensor_type.elem_type if g.input
                                                       else 1, None))
    return f"{op} to {huge} appended"


def s_opset(m: Any, r: Rand) -> str:
    what = r.int(0, 3)
    if what == 0:
        v = r.choice([-1, 0, 1, 5, 6, 7, 9, 10, 11, 12, 14, 17, 21, 22, 23, 24, 26, 30, 99, 10**6])
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = v
        return f"opset -> {v}"
    if what == 1:
        v = r.choice([0, 1, 2, 3, 4, 7, 10, 11, 12, 13, 99, 2**40])
        m.ir_version = v
        return f"ir_version -> {v}"
    if what == 2:
        del m.opset_import[:]
        if r.bool():
            m.opset_import.add(domain="com.bogus", version=1)
        return "default op set import removed"
    node = r.choice(m.graph.node)
    node.domain = r.choice(["com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"])
    return f"{node.name!r} domain -> {node.domain!r}"


_OPS = ["Conv", "Relu", "Add", "MatMul", "Gemm", "Reshape", "Transpose", "Concat", "Split", "Resize", "Slice",
        "Gather", "Softmax", "MaxPool", "GlobalAveragePool", "Flatten", "LSTM", "If", "Loop", "Scan", "Identity",
        "NonMaxSuppression", "TopK", "ScatterND", "NotAnOp", "", "conv", "Constant", "Sequence", "Optional"]


def s_op_swap(m: Any, r: Rand) -> str:
    node = r.choice(m.graph.node)
    old = node.op_type
    node.op_type = r.choice(_OPS)
    return f"{node.name!r} {old} -> {node.op_type or '(empty)'}"


def s_attr(m: Any, r: Rand) -> str:
    import onnx

    node = r.choice(m.graph.node)
    vals = [0, -1, -5, 1, 3, 2**31, 2**62, -(2**62), [0, 0], [-1, -1, -1, -1], [2**31, 1], [], 1.5, "x", b"\xff"]
    if node.attribute and r.bool():
        a = node.attribute[r.int(0, len(node.attribute) - 1)]
        if r.int(0, 3) == 0:
            node.attribute.remove(a)
            return f"{node.name!r} attribute {a.name} removed"
        name = a.name
        node.attribute.remove(a)
    else:
        name = r.choice(["axis", "perm", "kernel_shape", "pads", "strides", "group", "dilations", "axes", "mode",
                         "keepdims", "split", "to", "bogus"])
    v = r.choice(vals)
    try:
        node.attribute.append(onnx.helper.make_attribute(name, v))
    except (ValueError, TypeError):
        node.attribute.append(onnx.helper.make_attribute(name, 7))
        v = 7
    return f"{node.name!r} {name} -> {v!r}"


def s_names(m: Any, r: Rand) -> str:
    g = m.graph
    what = r.int(0, 3)
    if what == 0 and len(g.node) > 1:
        a, b = g.node[0], g.node[r.int(1, len(g.node) - 1)]
        b.output[0] = a.output[0]
        return f"{b.name!r} writes {a.output[0]!r} too (two producers)"
    bad = r.choice(["", "../../etc/passwd", "a/b", "x" * 5000, "\x1b[31mred", "名前", "con", ".", "a\nb", "a;b $(id)"])
    if what == 1:
        node = r.choice(g.node)
        node.name = bad
        return f"a node named {bad[:20]!r}"
    if what == 2:
        old = g.output[0].name
        prod = next((n for n in g.node if old in n.output), None)
        if prod is not None:
            prod.output[list(prod.output).index(old)] = bad
        g.output[0].name = bad
        return f"output renamed {bad[:20]!r}"
    for kv in [m.metadata_props.add()]:
        kv.key, kv.value = r.choice(["imgsz", "input_size"]), r.choice(["[99999999, 99999999]", "[-1, 3]", "'x'",
                                                                         "[1e309]", "[" * 200])
    return "metadata imgsz lies"


def _external_mutant(m: Any, r: Rand, model_dir: Path) -> tuple[str, bool]:
    """Move one initializer to external data; the location may escape. (detail, escapes)"""
    import onnx

    inits = [t for t in m.graph.initializer if t.raw_data]
    if not inits:
        return "no raw initializer", False
    t = r.choice(inits)
    data = t.raw_data
    outside = model_dir.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.bin").write_bytes(b"SECRET!!" * (len(data) // 8 + 1))
    kind = r.choice(["dotdot", "absolute", "symlink", "nested-dotdot", "nul", "empty", "missing", "offset",
                     "inside-ok", "dir-symlink", "backslash"])
    loc, escapes, offset, length = "weights.bin", False, None, None
    if kind == "dotdot":
        loc, escapes = "../outside/secret.bin", True
    elif kind == "absolute":
        loc, escapes = str(outside / "secret.bin"), True
    elif kind == "symlink":
        (model_dir / "link.bin").symlink_to(outside / "secret.bin")
        loc, escapes = "link.bin", True
    elif kind == "dir-symlink":
        (model_dir / "sub").symlink_to(outside)
        loc, escapes = "sub/secret.bin", True
    elif kind == "nested-dotdot":
        (model_dir / "a").mkdir()
        loc, escapes = "a/../../outside/secret.bin", True
    elif kind == "backslash":
        loc, escapes = "..\\outside\\secret.bin", True
    elif kind == "nul":
        loc = "weights.bin\x00../../outside/secret.bin"
        escapes = True
    elif kind == "empty":
        loc = ""
    elif kind == "missing":
        loc = "absent.bin"
    else:
        (model_dir / "weights.bin").write_bytes(data)
        if kind == "offset":
            offset, length = len(data) + r.int(0, 1 << 20), len(data)
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    del t.external_data[:]
    for k, v in (("location", loc), ("offset", offset), ("length", length)):
        if v is not None:
            e = t.external_data.add()
            e.key, e.value = k, str(v)
    return f"initializer {t.name!r} external at {loc!r} ({kind})", escapes


#: byte-level mutators work on the serialized file; structure-level ones on the ModelProto
BYTE_MUTATORS: dict[str, Callable[[bytes, Rand], tuple[bytes, str]]] = {
    "truncate": m_truncate, "bitflip": m_bitflip, "smash": m_smash}
PROTO_MUTATORS: dict[str, Callable[[Any, Rand], str]] = {
    "dtype": s_dtype, "shape-lie": s_shape_lie, "cycle": s_cycle, "dangling": s_dangling, "huge-dims": s_huge,
    "opset-lie": s_opset, "op-swap": s_op_swap, "attribute": s_attr, "names": s_names}
MUTATORS = (*BYTE_MUTATORS, *PROTO_MUTATORS, "external-data", "stacked", "bundle")


def make_mutant(seed: Seed, mutator: str, r: Rand, case_dir: Path) -> Mutant:
    """Write one mutant of `seed` into case_dir/model/ (bundle mutants: see `bundle_case`)."""
    model_dir = case_dir / "model"
    model_dir.mkdir(parents=True)
    path = model_dir / "model.onnx"
    shapes = dict(seed.shapes) if seed.shapes else None
    escapes = False
    if mutator in BYTE_MUTATORS:
        data, detail = BYTE_MUTATORS[mutator](seed.path.read_bytes(), r)
        path.write_bytes(data)
        return Mutant(seed.name, mutator, detail, path, shapes)
    m = _proto(seed)
    if mutator == "external-data":
        detail, escapes = _external_mutant(m, r, model_dir)
    elif mutator == "stacked":
        parts = []
        for _ in range(r.int(2, 3)):
            name = r.choice(list(PROTO_MUTATORS))
            parts.append(f"{name}: {PROTO_MUTATORS[name](m, r)}")
        detail = "; ".join(parts)
    else:
        detail = PROTO_MUTATORS[mutator](m, r)
    if shapes is not None and r.int(0, 5) == 0:  # an --input-shape that lies too
        k = next(iter(shapes))
        shapes[k] = r.choice([(1,), (1, 3, 2**20, 2**20), (0, 3, 8, 8), tuple(shapes[k]) + (1,)])
        detail += f"; --input-shape {k}={shapes[k]}"
    try:
        data = m.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - protobuf refuses what the mutator made: write what it can
        data = seed.path.read_bytes()
        detail += f" (not serialisable: {type(exc).__name__}; seed written)"
    path.write_bytes(data)
    return Mutant(seed.name, mutator, detail, path, shapes, escapes)


# -- running a case -----------------------------------------------------------------------------------------------

class CaseTimeout(BaseException):
    """Raised by the alarm in the case's process (a BaseException: `except Exception` cannot swallow it)."""


@dataclass
class Outcome:
    kind: str  # ok | clean | bug | hang | crash
    seed: str
    mutator: str
    detail: str
    stage: str | None = None  # where it stopped (clean, bug) or hung
    error: str | None = None  # error class
    message: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    trace: str | None = None
    stages_passed: list[str] = field(default_factory=list)


def _alarm(seconds: float) -> Any:
    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"no answer within {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return old


def _disarm(old: Any) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def _feed(sess: Any) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {t.name: (rng.random(t.shape).astype(t.dtype) if np.dtype(t.dtype).kind == "f"
                     else np.zeros(t.shape, t.dtype)) for t in sess.inputs}


def run_stages(mut: Mutant, case_dir: Path, timeout: float = CASE_TIMEOUT, stages: Sequence[str] = STAGES,
               prepare: bool = False) -> Outcome:
    """Run the mutant through the stages in this process; classify what happened."""
    from edgesdk.conversion import convert
    from edgesdk.errors import EdgeSDKError
    from edgesdk.graph.extract import partition_model
    from edgesdk.graph.load import load_model
    from edgesdk.graph.report import inspect_model
    from edgesdk.runtime import Session

    out = Outcome("ok", mut.seed, mut.mutator, mut.detail)
    steps: dict[str, Callable[[], Any]] = {
        "load": lambda: load_model(mut.path, mut.shapes),
        "inspect": lambda: inspect_model(mut.path, "rpi4", mut.shapes, prepare=False),
        "partition": lambda: partition_model(mut.path, "coral-usb", case_dir / "parts", input_shapes=mut.shapes,
                                             prepare=False),
        "convert": lambda: convert(mut.path, "rpi4", case_dir / "bundle", engine="onnxruntime",
                                   input_shapes=mut.shapes, prepare=prepare),
        "session": lambda: _session(Session, case_dir / "bundle"),
    }
    t0 = time.perf_counter()
    old = _alarm(timeout)
    stage = None
    try:
        for stage in stages:
            steps[stage]()
            out.stages_passed.append(stage)
        stage = None
    except CaseTimeout as exc:
        out.kind, out.error, out.message = "hang", "CaseTimeout", str(exc)
    except EdgeSDKError as exc:
        out.kind, out.error, out.message = "clean", type(exc).__name__, str(exc)[:600]
        out.exit_code = exc.exit_code
        if not str(exc).strip() or "Traceback (most recent call last)" in str(exc):
            out.kind = "bug"  # an edgesdk error that carries a traceback or nothing is still a bug
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        out.kind, out.error, out.message = "bug", type(exc).__name__, " ".join(str(exc).split())[:600]
        out.trace = "".join(traceback.format_exception(exc)[-6:])
    finally:
        _disarm(old)
    out.stage = stage
    out.seconds = round(time.perf_counter() - t0, 3)
    if mut.escapes and "load" in out.stages_passed:
        out.kind, out.error = "bug", "EscapeAccepted"
        out.message = f"an external-data path that leaves the model's folder was accepted ({mut.detail})"
    return out


def _session(session_cls: Any, bundle: Path) -> None:
    with session_cls(bundle) as s:
        s.run(_feed(s))


# -- bundles mutated after hashing --------------------------------------------------------------------------------

def base_bundles(work: Path, engines: Sequence[str] = ("onnxruntime", "ncnn", "mnn")) -> dict[str, Path]:
    """The digits CNN converted for rpi4 with each engine whose toolchain is here (onnxruntime always)."""
    from edgesdk.conversion import convert
    from edgesdk.errors import EdgeSDKError

    out = {}
    work.mkdir(parents=True, exist_ok=True)
    for eng in engines:
        d = work / f"bundle-{eng}"
        if not (d / "manifest.json").is_file():
            try:
                convert(DIGITS, "rpi4", d, engine=eng, force=True)
            except EdgeSDKError:
                if eng == "onnxruntime":
                    raise
                continue
        out[eng] = d
    return out


def bundle_case(bundles: dict[str, Path], r: Rand, case_dir: Path, timeout: float = CASE_TIMEOUT) -> Outcome:
    """Copy a base bundle, mutate one of its files after the manifest recorded its hash, open it with Session
    (verify on: the damage must be a BundleError; verify off: the engine's loader reads the damaged file)."""
    from edgesdk.errors import BundleError, EdgeSDKError
    from edgesdk.runtime import Session

    eng = r.choice(sorted(bundles))
    b = case_dir / "bundle"
    shutil.copytree(bundles[eng], b)
    files = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    target = r.choice(files)
    how = r.choice(list(BYTE_MUTATORS))
    data, detail = BYTE_MUTATORS[how](b.joinpath(target).read_bytes() or b"\0", r)
    b.joinpath(target).write_bytes(data)
    verify = target == "manifest.json" or r.bool()
    detail = f"{eng} bundle, {target}: {how} {detail}; verify={'on' if verify else 'off'}"
    out = Outcome("ok", f"bundle-{eng}", "bundle", detail)
    t0 = time.perf_counter()
    old = _alarm(timeout)
    try:
        with Session(b, verify=verify) as s:
            s.run(_feed(s))
        out.stages_passed.append("session")
        if verify and target != "manifest.json" and data != bundles[eng].joinpath(target).read_bytes():
            out.kind, out.error = "bug", "DamageAccepted"
            out.message = "a file changed after hashing was accepted with verify on"
    except CaseTimeout as exc:
        out.kind, out.error, out.message, out.stage = "hang", "CaseTimeout", str(exc), "session"
    except EdgeSDKError as exc:
        out.kind, out.error, out.message, out.stage = "clean", type(exc).__name__, str(exc)[:600], "session"
        out.exit_code = exc.exit_code
        if verify and target != "manifest.json" and not isinstance(exc, BundleError):
            out.kind = "bug"  # the hash check must catch it before any engine
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        out.kind, out.error, out.stage = "bug", type(exc).__name__, "session"
        out.message = " ".join(str(exc).split())[:600]
        out.trace = "".join(traceback.format_exception(exc)[-6:])
    finally:
        _disarm(old)
    out.seconds = round(time.perf_counter() - t0, 3)
    return out


# -- the campaign: a supervisor and one worker process ------------------------------------------------------------

def case_rand(seed: int, index: int) -> Rand:
    return Rand(random.Random(f"{seed}:{index}"))


def run_case(index: int, seed: int, seed_models: list[Seed], bundles: dict[str, Path], base: Path,
             timeout: float) -> Outcome:
    r = case_rand(seed, index)
    case_dir = Path(tempfile.mkdtemp(prefix=f"case{index}-", dir=base))
    try:
        mutator = r.choice(MUTATORS)
        if mutator == "bundle":
            return bundle_case(bundles, r, case_dir, timeout)
        sm = r.choice(seed_models)
        mut = make_mutant(sm, mutator, r, case_dir)
        return run_stages(mut, case_dir, timeout, prepare=r.int(0, 3) == 0)
    finally:
        shutil.rmtree(case_dir, ignore_errors=True)


def worker(args: argparse.Namespace) -> int:
    """Read case indices on stdin, answer one JSON line each on the real stdout."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever native code prints goes to stderr
    base = Path(tempfile.mkdtemp(prefix="edgesdk-fuzz-", dir=args.base))
    bundles = base_bundles(base / "bundles")
    os.environ["EDGESDK_HOME"] = str(base / "home")  # the prepare cache of thousands of mutants stays here
    seed_models = seeds(base, args.zoo)
    out.write(json.dumps({"ready": True, "seeds": [s.name for s in seed_models], "bundles": sorted(bundles)}) + "\n")
    try:
        for line in sys.stdin:
            i = int(line)
            o = run_case(i, args.seed, seed_models, bundles, base, args.timeout)
            out.write(json.dumps({"index": i, **asdict(o)}) + "\n")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        #: every worker's folder lives in here, removed at the end (a killed worker cannot clean up after itself)
        self.base = Path(tempfile.mkdtemp(prefix="edgesdk-fuzz-"))

    def start(self) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--seed", str(self.args.seed),
               "--timeout", str(self.args.timeout), "--base", str(self.base), *(["--zoo"] if self.args.zoo else [])]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1, start_new_session=True)
        line = self._read(600)
        if line is None:
            raise SystemExit("the fuzz worker did not start")
        self.info = json.loads(line)

    def _read(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line or None

    def stop(self, clean: bool = False) -> None:
        if self.proc is not None:
            if clean and self.proc.stdin is not None:  # EOF: the worker removes its temporary folder and exits
                self.proc.stdin.close()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None

    def case(self, i: int) -> dict[str, Any]:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        line = self._read(self.args.timeout * 2 + 30)
        if line is not None:
            return json.loads(line)
        alive = self.proc.poll() is None
        self.stop()
        desc = describe_case(self.args.seed, i)
        if alive:
            return {"index": i, **desc, "kind": "hang", "error": "WorkerTimeout",
                    "message": f"no answer in {self.args.timeout * 2 + 30:.0f} s (the alarm did not fire)"}
        return {"index": i, **desc, "kind": "crash", "error": "WorkerDied",
                "message": "the process running the case died (a native crash outside the guarded child)"}


def describe_case(seed: int, i: int) -> dict[str, Any]:
    """The mutator a case index draws (for a case whose worker died before it could say)."""
    r = case_rand(seed, i)
    return {"mutator": r.choice(MUTATORS), "seed": "?", "detail": "(worker died)"}


def keep_reproducer(seed: int, i: int, zoo: bool, out_dir: Path) -> None:
    """Write the mutant of case i into out_dir/case<i>/ (regenerated from the seed: cases are deterministic)."""
    base = Path(tempfile.mkdtemp(prefix="edgesdk-fuzz-repro-"))
    try:
        r = case_rand(seed, i)
        mutator = r.choice(MUTATORS)
        d = out_dir / f"case{i}"
        shutil.rmtree(d, ignore_errors=True)
        if mutator != "bundle":
            make_mutant(r.choice(seeds(base, zoo)), mutator, r, d)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def campaign(args: argparse.Namespace) -> dict[str, Any]:
    sup = Supervisor(args)
    t0 = time.perf_counter()
    sup.start()
    kinds: Counter[str] = Counter()
    by_mutator: dict[str, Counter[str]] = {}
    stops: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    bugs: list[dict[str, Any]] = []
    n = 0
    try:
        for i in range(args.start, args.start + args.cases):
            if args.max_seconds and time.perf_counter() - t0 > args.max_seconds:
                break
            o = sup.case(i)
            n += 1
            kinds[o["kind"]] += 1
            by_mutator.setdefault(o["mutator"], Counter())[o["kind"]] += 1
            stops[f"{o['kind']}@{o.get('stage') or 'end'}"] += 1
            if o.get("error"):
                errors[o["error"]] += 1
            if o["kind"] in ("bug", "hang", "crash"):
                bugs.append(o)
                if args.keep_bugs:
                    keep_reproducer(args.seed, i, args.zoo, Path(args.keep_bugs))
            if args.progress and n % args.progress == 0:
                print(f"{n} cases, {dict(kinds)}, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        sup.stop(clean=True)
        shutil.rmtree(sup.base, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return {"cases": n, "seed": args.seed, "start": args.start, "seconds": round(seconds, 1),
            "cases_per_second": round(n / seconds, 2) if seconds else None,
            "seeds": sup.info.get("seeds"), "bundles": sup.info.get("bundles"),
            "outcomes": dict(kinds), "by_mutator": {k: dict(v) for k, v in sorted(by_mutator.items())},
            "stopped_at": dict(stops.most_common()), "errors": dict(errors.most_common()),
            "invariant_violations": len(bugs), "violations": bugs[:50]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[4:6]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000, help="how many cases (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="campaign seed: case i is the same for the same seed")
    ap.add_argument("--start", type=int, default=0, help="first case index (resume a campaign)")
    ap.add_argument("--timeout", type=float, default=CASE_TIMEOUT, help="seconds per case before it is a hang")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0: no limit)")
    ap.add_argument("--zoo", action="store_true", help="also mutate the small zoo ONNX models in the zoo cache")
    ap.add_argument("--keep-bugs", metavar="DIR", help="write the mutant of every violating case into DIR")
    ap.add_argument("--progress", type=int, default=0, metavar="N", help="a progress line on stderr every N cases")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cases < 1 or args.timeout <= 0:
        ap.error("--cases and --timeout must be positive")
    if args.worker:
        return worker(args)
    res = campaign(args)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['cases']} cases in {res['seconds']} s (seed {res['seed']}): {res['outcomes']}")
        for k, v in res["by_mutator"].items():
            print(f"  {k:<14} {v}")
        for b in res["violations"]:
            print(f"VIOLATION {b['kind']} case {b['index']} {b['mutator']} ({b['detail']}) at {b.get('stage')}: "
                  f"{b.get('error')}: {b.get('message')}")
    return 0 if res["invariant_violations"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

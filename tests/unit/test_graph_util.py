"""Shared builders for the graph tests: small ONNX models, synthetic op tables and boards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import Accelerator, BoardProfile, get_board
from edgesdk.toolchains.spec import OpTable

OPSET = 17
RNG = np.random.default_rng(0)


def conv(name: str, x: str, y: str, cin: int, cout: int, inits: list, k: int = 3, group: int = 1) -> onnx.NodeProto:
    w = numpy_helper.from_array((RNG.standard_normal((cout, cin // group, k, k)) * 0.2).astype(np.float32), f"{name}_w")
    b = numpy_helper.from_array(RNG.standard_normal(cout).astype(np.float32), f"{name}_b")
    inits += [w, b]
    return helper.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[k // 2] * 4, group=group)


def make_model(nodes, inits, inputs, outputs, opset: int = OPSET) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)  # fills the output shapes left open (None) by the builders
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    return m


def vi(name: str, shape, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def save(m: onnx.ModelProto, d: Path, name: str = "model.onnx") -> Path:
    p = d / name
    onnx.save_model(m, str(p))
    return p


def acc_table(**extra_ops) -> OpTable:
    """A synthetic accelerator: Conv, Relu, Add, Mul, Concat, MaxPool (ceil_mode 0 only), LeakyRelu (alpha <= 0.2)."""
    ops = {
        "Conv": {"supported": True, "const_inputs": [1], "checks": ["depthwise_or_dense"]},
        "Relu": {"supported": True},
        "Add": {"supported": True, "checks": ["broadcast_4d"]},
        "Mul": {"supported": True},
        "Concat": {"supported": True, "checks": ["channel_axis_concat"]},
        "MaxPool": {"supported": True, "attrs": {"ceil_mode": {"in": [0], "default": 0}}},
        "LeakyRelu": {"supported": True, "attrs": {"alpha": {"max": 0.2, "default": 0.01}}},
        "Sigmoid": {"supported": False, "reason": "no LUT for sigmoid", "rewrite": "use HardSigmoid"},
    }
    ops.update(extra_ops)
    return OpTable.model_validate({
        "toolchain": "synthetic-acc", "target": "test accelerator", "default_supported": False,
        "source": "tests", "ops": ops, "opset": {"min": 11, "max": 23},
    })


def cpu_table(refuse: tuple[str, ...] = ()) -> OpTable:
    return OpTable.model_validate({
        "toolchain": "synthetic-cpu", "target": "test cpu", "default_supported": True, "source": "tests",
        "ops": {op: {"supported": False, "reason": f"{op} is not implemented"} for op in refuse},
    })


def _base() -> BoardProfile:
    return get_board("rpi4")


def acc_board(rule: str = "any-segments", kind: str = "dpu") -> tuple[BoardProfile, dict[str, OpTable]]:
    """A board with a synthetic accelerator; returns it with the tables to pass to check_support."""
    fig = {"value": 4.0, "unit": "TOPS", "source": "tests"}
    if kind == "edgetpu":
        engine, tc, engines = "edgetpu", "edgetpu", ["edgetpu", "tflite", "onnxruntime"]
    else:
        engine, tc, engines = "vart", "vitis-ai", ["vart", "onnxruntime"]
    acc = Accelerator(kind=kind, name="test accelerator", tops=fig, dtypes=["int8"], op_table=tc, engine=engine,
                      partition_rule=rule, partition_rule_text="test", partition_rule_source="tests", source="tests")
    board = _base().model_copy(update={"id": f"test-{kind}", "accelerator": acc, "engines": engines})
    tables = {tc: acc_table(), "tflite": cpu_table(), "onnxruntime": cpu_table()}
    return board, tables


def cpu_board(refuse: tuple[str, ...] = ("LeakyRelu",)) -> tuple[BoardProfile, dict[str, OpTable]]:
    board = _base()
    return board, {board.engines[0]: cpu_table(refuse), "onnxruntime": cpu_table()}


# -- models -----------------------------------------------------------------------------------------

def chain_cpu_middle() -> onnx.ModelProto:
    """Conv-Relu-Sigmoid(CPU)-Conv-Relu: a CPU op in the middle of an accelerator chain."""
    inits: list = []
    nodes = [
        conv("c1", "x", "a", 3, 8, inits), helper.make_node("Relu", ["a"], ["b"], name="r1"),
        helper.make_node("Sigmoid", ["b"], ["s"], name="sig"),
        conv("c2", "s", "d", 8, 8, inits), helper.make_node("Relu", ["d"], ["y"], name="r2"),
    ]
    return make_model(nodes, inits, [vi("x", [1, 3, 16, 16])], [vi("y", None)])


def skip_across_cpu() -> onnx.ModelProto:
    """Branches and a skip connection that cross a CPU island, and three outputs."""
    inits: list = []
    nodes = [
        conv("c1", "x", "a", 3, 8, inits), helper.make_node("Relu", ["a"], ["b"], name="r1"),
        conv("c2", "b", "c", 8, 8, inits),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),           # CPU island
        helper.make_node("LeakyRelu", ["s"], ["l"], name="leaky_cpu", alpha=0.5),  # CPU (alpha too big)
        conv("c3", "l", "e", 8, 8, inits),
        helper.make_node("Add", ["e", "b"], ["f"], name="skip_add"),     # skip from before the island
        helper.make_node("Concat", ["f", "c"], ["g"], name="cat", axis=1),
        conv("c4", "g", "h", 16, 4, inits),
        helper.make_node("Sigmoid", ["h"], ["y2"], name="sig_out"),
        helper.make_node("MaxPool", ["h"], ["y3"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    return make_model(nodes, inits, [vi("x", [1, 3, 16, 16])], [vi("h", None), vi("y2", None), vi("y3", None)])


def attr_dependent() -> onnx.ModelProto:
    """The same op types, supported only for some attribute values (LeakyRelu alpha, MaxPool ceil_mode)."""
    inits: list = []
    nodes = [
        conv("c1", "x", "a", 3, 8, inits),
        helper.make_node("LeakyRelu", ["a"], ["b"], name="leaky_ok", alpha=0.1),
        helper.make_node("LeakyRelu", ["b"], ["c"], name="leaky_bad", alpha=0.3),
        helper.make_node("MaxPool", ["c"], ["d"], name="pool_ok", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["d"], ["e"], name="pool_ceil", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        conv("c2", "e", "y", 8, 4, inits),
    ]
    return make_model(nodes, inits, [vi("x", [1, 3, 17, 17])], [vi("y", None)])


def random_dag(seed: int, n: int = 30) -> onnx.ModelProto:
    """A random DAG of Relu/Sigmoid/LeakyRelu/Max/Mul nodes (values stay in [0, 1]) over one 1x4x5x5 tensor shape."""
    rng = np.random.default_rng(seed)
    avail = ["x"]
    nodes = []
    for i in range(n):
        op = rng.choice(["Relu", "Sigmoid", "LeakyRelu", "Max", "Mul", "Max"])
        out = f"t{i}"
        if op in ("Max", "Mul"):
            a, b = rng.choice(avail, 2)
            nodes.append(helper.make_node(op, [a, b], [out], name=f"n{i}"))
        elif op == "LeakyRelu":
            nodes.append(helper.make_node(op, [rng.choice(avail[-6:])], [out], name=f"n{i}",
                                          alpha=float(rng.choice([0.1, 0.3]))))
        else:
            nodes.append(helper.make_node(op, [rng.choice(avail[-6:])], [out], name=f"n{i}"))
        avail.append(out)
    consumed = {i for nd in nodes for i in nd.input}
    outs = [o for o in avail[1:] if o not in consumed] or [avail[-1]]
    return make_model(nodes, [], [vi("x", [1, 4, 5, 5])], [vi(o, None) for o in outs])

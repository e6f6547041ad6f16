"""Function-keeping rewrites (edgesdk.graph.rewrite): each rule on small models built with onnx.helper, proven on
onnxruntime against the original on several random inputs (negative values, the Clip knees), applied only where
the board's accelerator refuses the original and takes the rewrite; and one real model of the zoo."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import get_board
from edgesdk.graph.load import load_model, load_weights
from edgesdk.graph.rewrite import RULES, apply_rewrites, compare
from edgesdk.graph.support import check_support
from edgesdk.toolchains.spec import OpRule, get_op_table

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)


# -- helpers ---------------------------------------------------------------------------------------------

def c(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def build(tmp_path, nodes, inits, shape=(1, 8, 4, 4), out_shape=None, opset=13, name="m", external=False):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    p = tmp_path / f"{name}.onnx"
    if external:
        onnx.save_model(m, str(p), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{name}.data",
                        size_threshold=0)
    else:
        onnx.save_model(m, str(p))
    return load_model(p)


def feeds(model):
    """Random inputs with negative values and values on and around the Clip knees (-3, 0, 3, 6)."""
    shape = model.tensors["x"].shape
    out = []
    for s in SEEDS:
        rng = np.random.default_rng(s)
        x = rng.normal(0.0, 4.0, size=shape).astype(np.float32)
        flat = x.reshape(-1)
        knees = np.array([-3, 3, 0, 6, -6, 1, -1, 2.9999, 3.0001, -2.9999, -3.0001, 5.9999, 6.0001], np.float32)
        flat[: knees.size] = knees[: flat.size]
        out.append({"x": x})
    return out


def run(model, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(load_weights(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(list(model.outputs), feed)


def assert_proven(orig, res):
    for f in feeds(orig):
        ref = run(orig, f)
        ok, d, cos = compare(ref, run(res.model, f))
        scale = max(1.0, max(float(np.max(np.abs(r))) for r in ref))
        assert ok and cos >= 0.99999 and d <= 1e-5 * scale, (d, cos, scale)
    for a in res.applied:
        assert a.cosine is not None and a.cosine >= 0.99999


def accepted(model, board, tables=None):
    return {p.node: p.target == "accelerator" for p in check_support(model, get_board(board), tables).placements}


def apply(model, board, tables=None, rules=None):
    res = apply_rewrites(model, get_board(board), tables, feed=feeds(model)[0])
    if rules is not None:
        assert {a.rule for a in res.applied} == set(rules), (res.applied, res.notes)
    before, after = accepted(model, board, tables), accepted(res.model, board, tables)
    for a in res.applied:
        assert a.rule in RULES and a.count >= 1 and a.nodes
        assert any(not before[n] for n in a.nodes), "a site with no refused node was rewritten"
    assert res.refused_after == sum(not v for v in after.values())
    return res, before, after


def ops(model):
    return Counter(n.op_type for n in model.nodes)


def table_with(toolchain, **rules):
    """A copy of a shipped op table with some rules replaced (True: supported, str: refused with that reason)."""
    t = get_op_table(toolchain).model_copy(deep=True)
    for op, v in rules.items():
        t.ops[op] = OpRule(supported=True) if v is True else OpRule(supported=False, reason=v)
    return {toolchain: t}


def hardswish_nodes(variant):
    """PaddlePaddle's x * Clip(x + 3, 0, 6) / 6 and variants: operand order, Mul by 1/6, Clip as Relu + Min."""
    x = "x0"
    pre = [helper.make_node("Conv", ["x", "w"], [x], name="conv")]
    inits = [c("w", np.random.default_rng(5).normal(size=(8, 8, 1, 1)))]
    if variant == "paddle":
        nodes = [helper.make_node("Add", [x, "three"], ["a"], name="add"),
                 helper.make_node("Clip", ["a", "zero", "six"], ["cl"], name="clip"),
                 helper.make_node("Mul", [x, "cl"], ["m"], name="mul"),
                 helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    elif variant == "commuted":
        nodes = [helper.make_node("Add", ["three", x], ["a"], name="add"),
                 helper.make_node("Clip", ["a", "zero", "six"], ["cl"], name="clip"),
                 helper.make_node("Mul", ["sixth", "cl"], ["m"], name="mul"),
                 helper.make_node("Mul", ["m", x], ["y"], name="mul2")]
    elif variant == "relu_min":
        nodes = [helper.make_node("Add", [x, "three"], ["a"], name="add"),
                 helper.make_node("Relu", ["a"], ["r"], name="relu"),
                 helper.make_node("Min", ["r", "six"], ["cl"], name="min"),
                 helper.make_node("Div", ["cl", "six"], ["d"], name="div"),
                 helper.make_node("Mul", ["d", x], ["y"], name="mul")]
    inits += [c("three", 3.0), c("zero", 0.0), c("six", 6.0), c("sixth", 0.1666667)]
    return pre + nodes, inits


# -- div / sub / operand order -----------------------------------------------------------------------------

@pytest.mark.parametrize("const", [2.5, -0.3 * np.arange(1, 9, dtype=np.float32).reshape(1, 8, 1, 1)])
def test_div_by_constant_becomes_mul_on_the_edge_tpu(tmp_path, const):
    m = build(tmp_path, [helper.make_node("Div", ["x", "k"], ["y"], name="div")], [c("k", const)])
    res, before, after = apply(m, "coral-usb", rules={"div-const-to-mul"})
    assert not before["div"] and after["div"]  # the Mul keeps the Div's name
    assert ops(res.model) == {"Mul": 1}
    assert res.applied[0].nodes == ("div",) and res.refused_before == 1 and res.refused_after == 0
    assert_proven(m, res)


def test_div_of_a_runtime_tensor_or_by_zero_is_left(tmp_path):
    m = build(tmp_path, [helper.make_node("Div", ["x", "k"], ["y"], name="div")], [c("k", [[[[0.0]]]])])
    res = apply_rewrites(m, get_board("coral-usb"))
    assert res.model is m and not res.applied


@pytest.mark.parametrize("order", ["x-c", "c-x"])
def test_sub_of_a_constant_becomes_add_on_the_dpu(tmp_path, order):
    ins = ["x", "k"] if order == "x-c" else ["k", "x"]
    m = build(tmp_path, [helper.make_node("Sub", ins, ["y"], name="sub")], [c("k", 1.25)])
    res, before, after = apply(m, "kv260", rules={"sub-const-to-add"})
    assert not before["sub"] and all(after.values())
    assert "Sub" not in ops(res.model)
    assert_proven(m, res)


def test_constant_first_operand_moves_second_for_the_bpu_rank_check(tmp_path):
    m = build(tmp_path, [helper.make_node("Mul", ["k", "x"], ["y"], name="mul")], [c("k", [0.7])])
    res, before, after = apply(m, "x3", rules={"const-operand-second"})
    assert not before["mul"] and after["mul"]
    assert list(res.model.nodes[0].input) == ["x", "k"]
    assert_proven(m, res)


# -- HardSwish ---------------------------------------------------------------------------------------------

def test_paddle_hardswish_on_the_edge_tpu_takes_the_smallest_change_div_to_mul(tmp_path):
    nodes, inits = hardswish_nodes("paddle")
    m = build(tmp_path, nodes, inits)
    res, before, after = apply(m, "coral-usb", rules={"div-const-to-mul"})
    assert not before["div"] and all(after.values())
    assert ops(res.model)["Div"] == 0 and ops(res.model)["Clip"] == 1
    assert_proven(m, res)


@pytest.mark.parametrize("variant", ["paddle", "commuted", "relu_min"])
def test_decomposed_hardswish_fuses_where_a_piece_is_refused_and_hardswish_is_taken(tmp_path, variant):
    tables = table_with("edgetpu", HardSwish=True, Clip="refused", Min="refused", Div="refused", Mul=True)
    nodes, inits = hardswish_nodes(variant)  # fusing (1 node) beats Clip -> Relu + Min (the pieces' rewrites)
    m = build(tmp_path, nodes, inits, opset=14)
    res, before, after = apply(m, "coral-usb", tables, rules={"hardswish-fuse"})
    assert ops(res.model) == {"Conv": 1, "HardSwish": 1}
    assert all(after.values())
    assert_proven(m, res)


def test_decomposed_hardswish_below_opset_14_fuses_to_x_times_hardsigmoid_with_clip_attributes(tmp_path):
    tables = table_with("edgetpu", HardSigmoid=True, Clip="refused", Div="refused", Mul=True)
    x = "x"
    nodes = [helper.make_node("Add", [x, "three"], ["a"], name="add"),
             helper.make_node("Clip", ["a"], ["cl"], name="clip", min=0.0, max=6.0),
             helper.make_node("Mul", ["cl", x], ["m"], name="mul"),
             helper.make_node("Div", ["m", "six"], ["y"], name="div")]
    m = build(tmp_path, nodes, [c("three", 3.0), c("six", 6.0)], opset=10)
    res, _, after = apply(m, "coral-usb", tables, rules={"hardswish-fuse"})
    assert ops(res.model) == {"HardSigmoid": 1, "Mul": 1} and all(after.values())
    assert_proven(m, res)


def test_hardswish_decomposes_on_the_edge_tpu_without_div(tmp_path):
    m = build(tmp_path, [helper.make_node("Conv", ["x", "w"], ["x0"], name="conv"),
                         helper.make_node("HardSwish", ["x0"], ["y"], name="hs")],
              [c("w", np.random.default_rng(1).normal(size=(8, 8, 1, 1)))], opset=14)
    res, before, after = apply(m, "coral-usb", rules={"hardswish-decompose"})
    assert not before["hs"] and all(after.values())
    got = ops(res.model)
    assert got["HardSwish"] == 0 and got["Div"] == 0 and got["Clip"] == 1  # x * Clip(x + 3, 0, 6) * (1/6)
    assert_proven(m, res)


def _nnie_max():
    """NNIE's table with a Max that takes a constant (the shipped one refuses it: Caffe has no such layer), so that
    the decompositions into Max forms have an accelerator that takes them."""
    return table_with("nnie", Max=True)


def test_hardswish_on_nnie_decomposes_without_clip_or_min(tmp_path):
    m = build(tmp_path, [helper.make_node("HardSwish", ["x"], ["y"], name="hs")], [], opset=14)
    res, _, after = apply(m, "hi3519a", _nnie_max(), rules={"hardswish-decompose"})
    assert all(after.values()) and not {"Clip", "Min", "Div", "HardSwish"} & set(ops(res.model))
    assert_proven(m, res)


def test_hardswish_refused_with_its_pieces_refused_too_is_left(tmp_path):
    tables = table_with("edgetpu", Clip="no", Relu="no", Max="no", Min="no", HardSigmoid="no")
    m = build(tmp_path, [helper.make_node("HardSwish", ["x"], ["y"], name="hs")], [], opset=14)
    res = apply_rewrites(m, get_board("coral-usb"), tables)
    assert res.model is m and not res.applied and res.refused_after == res.refused_before == 1


# -- HardSigmoid -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("board,alpha,applies", [("coral-usb", 0.2, True), ("kv260", 0.2, True),
                                                 ("kv260", 1 / 6, False), ("x3", 0.2, True)])
def test_hardsigmoid_decomposes_where_refused(tmp_path, board, alpha, applies):
    m = build(tmp_path, [helper.make_node("HardSigmoid", ["x"], ["y"], name="hsig", alpha=alpha, beta=0.5)], [],
              opset=11)
    res, before, after = apply(m, board, rules={"hardsigmoid-decompose"} if applies else set())
    if applies:
        assert not before["hsig"] and all(after.values()) and "HardSigmoid" not in ops(res.model)
        assert_proven(m, res)
    else:
        assert res.model is m


@pytest.mark.parametrize("form", ["paddle", "relu6_div", "clip_attrs"])
def test_decomposed_hardsigmoid_fuses_where_clip_is_refused(tmp_path, form):
    tables = table_with("edgetpu", HardSigmoid=True, Clip="refused", Div="refused")
    opset = 10 if form == "clip_attrs" else 13
    if form == "paddle":  # Paddle's hardsigmoid: Clip(x * 0.1666667 + 0.5, 0, 1)
        nodes = [helper.make_node("Mul", ["sixth", "x"], ["a"], name="mul"),
                 helper.make_node("Add", ["a", "half"], ["b"], name="add"),
                 helper.make_node("Clip", ["b", "zero", "one"], ["y"], name="clip")]
    elif form == "relu6_div":  # PyTorch's Hardsigmoid: relu6(x + 3) / 6
        nodes = [helper.make_node("Add", ["x", "three"], ["a"], name="add"),
                 helper.make_node("Clip", ["a", "zero", "six"], ["b"], name="clip"),
                 helper.make_node("Div", ["b", "six"], ["y"], name="div")]
    else:
        nodes = [helper.make_node("Mul", ["x", "fifth"], ["a"], name="mul"),
                 helper.make_node("Add", ["a", "half"], ["b"], name="add"),
                 helper.make_node("Clip", ["b"], ["y"], name="clip", min=0.0, max=1.0)]
    inits = [c("sixth", 0.1666667), c("fifth", 0.2), c("half", 0.5), c("zero", 0.0), c("one", 1.0), c("three", 3.0),
             c("six", 6.0)]
    m = build(tmp_path, nodes, inits, opset=opset)
    res, _, after = apply(m, "coral-usb", tables, rules={"hardsigmoid-fuse"})
    assert ops(res.model) == {"HardSigmoid": 1} and all(after.values())
    assert_proven(m, res)


# -- ReLU6 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [10, 13])
def test_relu6_clip_decomposes_on_nnie(tmp_path, opset):
    clip = (helper.make_node("Clip", ["x"], ["y"], name="clip", min=0.0, max=6.0) if opset < 11 else
            helper.make_node("Clip", ["x", "zero", "six"], ["y"], name="clip"))
    m = build(tmp_path, [clip], [c("zero", 0.0), c("six", 6.0)], opset=opset)
    res, before, after = apply(m, "hi3519a", _nnie_max(), rules={"relu6-decompose"})
    assert not before["clip"] and all(after.values()) and "Clip" not in ops(res.model)
    assert_proven(m, res)
    # the shipped NNIE table: no Caffe layer takes a max/min with a constant, so ReLU6 has no accepted form
    res, before, after = apply(m, "hi3519a", rules=set())
    assert res.model is m and not before["clip"]


@pytest.mark.parametrize("pair", [("Relu", "Min"), ("Max", "Min"), ("Min", "Max"), ("Min", "Relu")])
def test_relu_and_min_fuse_to_clip_on_the_bpu(tmp_path, pair):
    def mk(op, i, o, name):
        if op == "Relu":
            return helper.make_node("Relu", [i], [o], name=name)
        return helper.make_node(op, [i, "six" if op == "Min" else "zero"], [o], name=name)

    m = build(tmp_path, [mk(pair[0], "x", "t", "first"), mk(pair[1], "t", "y", "second")],
              [c("zero", 0.0), c("six", 6.0)], opset=11)
    res, before, after = apply(m, "x3", rules={"relu6-fuse"})
    assert ops(res.model) == {"Clip": 1} and all(after.values())
    assert res.model.nodes[0].name == "second"
    assert_proven(m, res)


# -- ReduceMean, MatMul, BatchNormalization ----------------------------------------------------------------

@pytest.mark.parametrize("axes,keepdims,opset", [([2, 3], 1, 13), ([-2, -1], 1, 13), ([2, 3], 0, 13),
                                                 ([3, 2], 0, 18), ([-1, -2], 1, 18)])
def test_reducemean_over_hw_becomes_global_average_pool_on_nnie(tmp_path, axes, keepdims, opset):
    if opset >= 18:
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="rm", keepdims=keepdims)
        inits = [c("axes", axes, np.int64)]
    else:
        node = helper.make_node("ReduceMean", ["x"], ["y"], name="rm", axes=axes, keepdims=keepdims)
        inits = []
    m = build(tmp_path, [node], inits, opset=opset)
    res, before, after = apply(m, "hi3519a", rules={"reducemean-to-globalavgpool"})
    assert not before["rm"] and all(after.values())
    assert ops(res.model)["GlobalAveragePool"] == 1
    assert res.model.tensors["y"].shape == m.tensors["y"].shape
    assert_proven(m, res)


def test_reducemean_over_channels_is_left(tmp_path):
    m = build(tmp_path, [helper.make_node("ReduceMean", ["x"], ["y"], name="rm", axes=[1], keepdims=1)], [])
    assert not apply_rewrites(m, get_board("hi3519a")).applied


@pytest.mark.parametrize("shape,bias,opset", [((4, 16), True, 13), ((4, 16), False, 13), ((4, 16), False, 10),
                                              ((1, 6, 16), True, 13), ((1, 2, 5, 16), False, 13)])
def test_matmul_by_a_constant_becomes_gemm_on_nnie(tmp_path, shape, bias, opset):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm" if bias else "y"], name="matmul")]
    inits = [c("w", rng.normal(size=(16, 8)))]
    if bias:
        nodes.append(helper.make_node("Add", ["b", "mm"], ["y"], name="add"))
        inits.append(c("b", rng.normal(size=(8,))))
    m = build(tmp_path, nodes, inits, shape=shape, opset=opset)
    res, before, after = apply(m, "hi3519a", rules={"matmul-to-gemm"})
    assert not before["matmul"] and all(after.values())
    got = ops(res.model)
    assert got["Gemm"] == 1 and "MatMul" not in got and ("Add" not in got or not bias)
    assert_proven(m, res)


@pytest.mark.parametrize("group,external", [(1, False), (8, False), (1, True)])
def test_batchnorm_folds_into_the_conv_where_bn_is_refused(tmp_path, group, external):
    rng = np.random.default_rng(4)
    tables = table_with("edgetpu", BatchNormalization="refused (test table)")
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["t"], name="conv", group=group, pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["t", "s", "bb", "mean", "var"], ["y"], name="bn", epsilon=1e-3)]
    inits = [c("w", rng.normal(size=(8, 8 // group, 3, 3))), c("cb", rng.normal(size=8)),
             c("s", rng.uniform(0.5, 2, 8)), c("bb", rng.normal(size=8)), c("mean", rng.normal(size=8)),
             c("var", rng.uniform(0.1, 2, 8))]
    # (with external data, load_model's checker needs the output's shape: it checks the file)
    m = build(tmp_path, nodes, inits, opset=13, external=external, out_shape=[1, 8, 4, 4])
    assert m.has_external_data == external
    res, before, after = apply(m, "coral-usb", tables, rules={"bn-fold-into-conv"})
    assert not before["bn"] and ops(res.model) == {"Conv": 1} and all(after.values())
    assert res.model.has_external_data == external and res.model.path == m.path
    assert_proven(m, res)
    # the shipped Edge TPU table takes BatchNormalization: nothing to do there
    assert not apply_rewrites(m, get_board("coral-usb")).applied


def test_a_rewritten_model_with_external_weights_partitions_and_extracts(tmp_path):
    from edgesdk.graph.extract import run_segments, write_segments
    from edgesdk.graph.report import analyze

    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"], name="conv"),
             helper.make_node("Div", ["t", "k"], ["u"], name="div"),
             helper.make_node("Softmax", ["u"], ["v"], name="softmax", axis=1),
             helper.make_node("Conv", ["v", "w2"], ["y"], name="conv2")]
    m = build(tmp_path, nodes, [c("w", rng.normal(size=(8, 8, 1, 1))), c("k", 3.0), c("w2", rng.normal(size=(8, 8, 1, 1)))],
              external=True, out_shape=[1, 8, 4, 4])
    res = apply_rewrites(m, get_board("coral-usb"))
    assert [a.rule for a in res.applied] == ["div-const-to-mul"] and res.model.has_external_data
    a = analyze(res.model, get_board("coral-usb"))
    out = write_segments(res.model, a.plan, tmp_path / "plan")
    f = feeds(m)[0]
    got = run_segments(out, f)
    ok, _, _ = compare(run(m, f), [got["y"]])
    assert ok


# -- where nothing applies, proof failures, reports ---------------------------------------------------------

def test_not_applied_where_the_accelerator_takes_the_original_or_there_is_none(tmp_path):
    nodes, inits = hardswish_nodes("paddle")
    m = build(tmp_path, nodes, inits)
    for board in ("rk3588", "imx93", "rpi4"):
        res = apply_rewrites(m, get_board(board))
        assert res.model is m and not res.applied, board
    assert "no accelerator" in apply_rewrites(m, get_board("rpi4")).notes[0]


def test_a_rule_whose_proof_fails_is_dropped_and_named(tmp_path, monkeypatch):
    from edgesdk.graph import rewrite

    real = rewrite._node_alternatives

    def broken(ctx, i):
        parts = real(ctx, i)
        for p in parts:
            if p.rule == "sub-const-to-add":  # add the constant instead of subtracting it
                p.inits[:] = [numpy_helper.from_array(-numpy_helper.to_array(t), t.name) for t in p.inits]
        return parts

    monkeypatch.setattr(rewrite, "_node_alternatives", broken)
    m = build(tmp_path, [helper.make_node("Div", ["x", "k"], ["t"], name="div"),
                         helper.make_node("Sub", ["t", "k"], ["y"], name="sub")], [c("k", 2.0)])
    res = apply_rewrites(m, get_board("kv260"), feed=feeds(m)[0])
    assert [a.rule for a in res.applied] == ["div-const-to-mul"]
    assert any("sub-const-to-add dropped" in n and "cosine" in n for n in res.notes)
    assert_proven(m, res)


def test_result_to_dict_and_names(tmp_path):
    nodes, inits = hardswish_nodes("paddle")
    m = build(tmp_path, nodes, inits, opset=14)
    res = apply_rewrites(m, get_board("hi3519a"), _nnie_max())
    d = res.to_dict()
    assert d["refused_before"] > d["refused_after"] == 0
    assert {a["rule"] for a in d["applied"]} == {"div-const-to-mul", "relu6-decompose"}
    names = [n.name for n in res.model.nodes]
    assert len(set(names)) == len(names) and "div" in names and "clip" in names  # the site outputs keep their names
    assert all(n in ("conv", "add", "mul", "div", "clip") or "__relu6-decompose_" in n for n in names)
    assert res.model.outputs == m.outputs and "x" in res.model.inputs


# -- a real model ------------------------------------------------------------------------------------------

def _zoo_model(model_id: str) -> Path:
    spec = importlib.util.spec_from_file_location("zoo_fetch_for_rewrite", ROOT / "scripts" / "zoo_fetch.py")
    zf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zf)
    entry = next(e for e in zf.load_entries() if e["id"] == model_id)
    root = Path(os.environ.get("EDGESDK_ZOO_CACHE") or Path.home() / ".cache" / "edgesdk" / "zoo")
    cached = root / model_id / Path(entry["member"]).name
    if cached.is_file():
        return cached
    if os.environ.get("CI") != "true":
        pytest.skip(f"zoo model {model_id} not cached ({cached}); scripts/zoo_fetch.py --ids {model_id} fetches it")
    try:  # under CI the zoo must be there, as tests/integration/test_zoo.py: a failed fetch fails
        return zf.fetch([model_id])[model_id]
    except zf.ZooError as exc:
        pytest.fail(f"cannot fetch the zoo under CI: {exc}", pytrace=False)


@pytest.mark.parametrize("board", ["coral-usb", "hi3519a"])
def test_paddle_ppocr_cls_refused_nodes_drop_and_the_proof_holds(board):
    from edgesdk.graph.prepare import check_feed, prepare

    m = prepare(load_model(_zoo_model("ppocr-cls"), {"x": (1, 3, 48, 192)})).model
    res = apply_rewrites(m, get_board(board))
    rules = {a.rule: a.count for a in res.applied}
    assert rules["div-const-to-mul"] == 18
    if board == "hi3519a":  # Caffe has no ReLU6 / HardSigmoid layer and no max with a constant: those stay
        assert res.refused_before >= 27 and 0 < res.refused_after < res.refused_before, res.to_dict()
        left = {p.op_type for p in check_support(res.model, get_board(board)).placements if p.target == "cpu"}
        assert left <= {"Clip", "HardSigmoid"}, left
    else:
        assert res.refused_before >= 27 and res.refused_after == 0, res.to_dict()
        assert rules["hardsigmoid-decompose"] == 9
    assert res.cosine >= 0.99999
    f = check_feed(m, seed=7)
    ok, _, cos = compare(run(m, f), run(res.model, f))
    assert ok and cos >= 0.99999

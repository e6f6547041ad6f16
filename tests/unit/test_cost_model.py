"""The latency cost model (edgesdk.graph.cost) and its calibration (scripts/calibrate_cost.py, boards/*.yaml `cost:`).

The calibration test rebuilds the reference networks (edgesdk.graph.refnets, cached exports) and holds the figures AS
WRITTEN in the yamls to the published reference_latencies: every fitted row within +-30 %."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import Figure, OpUtilisation, get_board, list_boards
from edgesdk.graph import cost, refnets
from edgesdk.graph.load import load_model

ROOT = Path(__file__).resolve().parents[2]


def _calibrate_module():
    spec = importlib.util.spec_from_file_location("calibrate_cost_under_test", ROOT / "scripts" / "calibrate_cost.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _need_torchvision() -> None:
    if refnets.available():
        return
    msg = "torch + torchvision needed to build the reference networks (pip install 'edgesdk[torch]')"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI=true: the torch extra must be installed)")
    pytest.skip(msg)


# -- calibration ---------------------------------------------------------------------------------------------

def test_fitted_rows_within_30_percent_with_the_yaml_figures():
    _need_torchvision()
    cc = _calibrate_module()
    if not cc.ensure_zoo(log=False) and os.environ.get("CI") == "true":
        pytest.fail("the zoo's YOLOv8n (scripts/zoo_fetch.py yolov8n-nudenet) is needed for the yolov8n rows")
    bad, checked = [], 0
    for b in list_boards():
        for r in cc.rows_of(b):
            if not r.fitted or r.target is None:
                continue
            r.estimate_ms = cc.estimate(b, r)  # no fit: the yaml's figures
            checked += 1
            if abs(r.error) > cc.TOLERANCE:
                bad.append(f"{b.id} {r.ref.model} {r.ref.input} {r.ref.engine} {r.precision}: published "
                           f"{r.ref.latency_ms} ms, estimate {r.estimate_ms:.2f} ms ({100 * r.error:+.0f} %)")
    assert checked >= 40, checked
    assert not bad, "\n".join(bad)


def test_every_board_with_published_rows_is_calibrated():
    for b in list_boards():
        assert b.cost is not None, b.id
        assert b.cost.calibration
        if not b.reference_latencies:
            assert "too few figures to calibrate" in b.cost.calibration, b.id


def _figures(obj) -> list[tuple[str, Figure]]:
    out = []
    for name in type(obj).model_fields:
        v = getattr(obj, name)
        if isinstance(v, Figure):
            out.append((name, v))
        elif isinstance(v, OpUtilisation):
            out += [(f"{name}.{k}", f) for k, f in _figures(v)]
    return out


def test_every_cost_figure_carries_a_source():
    for b in list_boards():
        figs = _figures(b.cost)
        assert len(figs) >= 6, b.id
        for name, f in figs:
            assert f.source and len(f.source) >= 3, f"{b.id} cost.{name}"
            assert f.derivation, f"{b.id} cost.{name}: say how the figure was obtained"
            if name.endswith(("conv", "depthwise", "matmul", "elementwise")):
                assert 0 < f.value <= 1, f"{b.id} cost.{name} is a share of the peak"


# -- op classes ----------------------------------------------------------------------------------------------

def _model(tmp_path: Path, nodes, inits, x_shape, y_shape, name="m"):
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    p = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(p))
    return load_model(p)


def _conv(tmp_path, cin, cout, group, name):
    w = np.zeros((cout, cin // group, 3, 3), np.float32)
    n = helper.make_node("Conv", ["x", "w"], ["y"], group=group, pads=[1, 1, 1, 1], name="c")
    return _model(tmp_path, [n], {"w": w}, [1, cin, 8, 8], [1, cout, 8, 8], name)


def test_op_class_depthwise_grouped_dense(tmp_path):
    assert cost.op_class(_conv(tmp_path, 8, 8, 8, "dw"), 0) == "depthwise"
    assert cost.op_class(_conv(tmp_path, 8, 16, 8, "dwmult"), 0) == "depthwise"  # channel multiplier 2
    assert cost.op_class(_conv(tmp_path, 8, 8, 2, "grouped"), 0) == "conv"
    assert cost.op_class(_conv(tmp_path, 8, 8, 1, "dense"), 0) == "conv"


def test_op_class_matmul_elementwise_and_data_movement(tmp_path):
    w = np.zeros((16, 4), np.float32)
    m = _model(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                          helper.make_node("Sigmoid", ["h"], ["s"], name="act"),
                          helper.make_node("Reshape", ["s", "shape"], ["y"], name="rs")],
               {"w": w, "shape": np.array([1, 4], np.int64)}, [1, 16], [1, 4], "mm")
    assert [cost.op_class(m, j) for j in range(3)] == ["matmul", "elementwise", None]


def test_relu_after_conv_is_fused_but_not_a_lone_one(tmp_path):
    w = np.zeros((8, 8, 3, 3), np.float32)
    m = _model(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="c"),
                          helper.make_node("Relu", ["c"], ["r"], name="r"),
                          helper.make_node("Add", ["r", "x"], ["a"], name="a"),
                          helper.make_node("Relu", ["a"], ["y"], name="r2")], {"w": w},
               [1, 8, 8, 8], [1, 8, 8, 8], "fuse")
    assert cost.fused_nodes(m) == frozenset({1})
    p = cost.params(get_board("rpi4"))
    assert cost.node_ms(m, 1, "cpu", p) == 0 and cost.node_ms(m, 3, "cpu", p) > 0


# -- sanity of the formula -----------------------------------------------------------------------------------

def _chain(tmp_path, n=5, ch=32, hw=28):
    nodes, inits, prev = [], {}, "x"
    for i in range(n):
        inits[f"w{i}"] = np.zeros((ch, ch, 3, 3), np.float32)
        out = "y" if i == n - 1 else f"t{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [out], pads=[1, 1, 1, 1], name=f"c{i}"))
        prev = out
    return _model(tmp_path, nodes, inits, [1, ch, hw, hw], [1, ch, hw, hw], "chain")


@pytest.mark.parametrize("board_id", [b.id for b in list_boards() if b.accelerator is not None])
def test_more_hand_offs_cost_more_and_a_segment_costs_its_invocation(tmp_path, board_id):
    b = get_board(board_id)
    m = _chain(tmp_path)
    eng = b.accelerator.engine
    cpu_eng = next(e for e in b.engines if e != eng)
    one = cost.estimate_placement(m, b, [(0, eng, "accelerator", range(5))])
    split = cost.estimate_placement(m, b, [(0, eng, "accelerator", [0, 1]), (1, cpu_eng, "cpu", [2]),
                                           (2, eng, "accelerator", [3, 4])])
    assert len(split.boundaries) == len(one.boundaries) + 2
    assert split.boundary_ms > one.boundary_ms
    assert split.invoke_ms > one.invoke_ms
    assert split.total_ms > one.total_ms
    p = cost.params(b)
    for s in one.segments + split.segments:
        if s.target == "accelerator":
            assert s.ms >= p.invoke_ms > 0


def test_coral_weights_beyond_the_cache_cross_the_link(tmp_path):
    b = get_board("coral-usb")
    p = cost.params(b)
    assert p.weights_over_link and p.weight_cache_bytes == pytest.approx(8e6)

    def seg(k, name):
        m = _model(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   {"w": np.zeros((k, k), np.float32)}, [1, k], [1, k], name)
        return cost.all_on(m, b, "accelerator").segments[0], k * k  # int8 parameter bytes

    small, _ = seg(2000, "small")  # 4 MB int8: in the cache
    big, nbytes = seg(4000, "big")  # 16 MB int8: 8 MB over USB every inference
    assert small.weights_ms == 0
    assert big.weights_ms == pytest.approx(1e3 * (nbytes - 8e6) / p.link_bw)
    assert big.weights_ms > 10  # 8 MB at USB 3's 0.5 GB/s


def test_cpu_threads_and_precision():
    b = get_board("rpi5")
    p1, p4 = cost.params(b, threads=1), cost.params(b, threads=4)
    assert p4.cpu_peak > p1.cpu_peak
    assert cost.params(b, precision="fp16").cpu_peak == pytest.approx(2 * cost.params(b).cpu_peak)  # A76 has fp16
    rpi4 = get_board("rpi4")
    assert cost.params(rpi4, precision="fp16").cpu_peak == pytest.approx(cost.params(rpi4).cpu_peak)  # A72: none


def test_boundary_ms_layout_and_copy():
    p = cost.params(get_board("imx93"))
    link4, conv4 = cost.boundary_ms(p, 1_000_000, 4)
    link2, conv2 = cost.boundary_ms(p, 1_000_000, 2)
    assert link4 == link2 > 0 and conv4 > conv2 > 0  # NHWC accelerator: a 4-D tensor is also transposed
    assert cost.boundary_ms(p, 1_000_000, 4, False)[0] == 0


def test_uncalibrated_board_says_so():
    b = get_board("rpi4").model_copy(update={"cost": None})
    assert not cost.params(b).calibrated


def test_refnets_shim_and_mobilenet_v1():
    _need_torchvision()
    tv = refnets._import_torchvision()
    assert hasattr(tv.models, "mobilenet_v2")
    m = refnets._mobilenet_v1(alpha=0.25)
    import torch

    assert m(torch.zeros(1, 3, 128, 128)).shape == (1, 1000)
    assert refnets.network("no-such-network", "224x224") is None

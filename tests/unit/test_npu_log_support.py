"""The vendor compiler's log read back into the support report (issue 8): Edge TPU, Horizon, Vitis AI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import get_board
from edgesdk.graph import check_support, load_model
from edgesdk.graph.partition import partition
from edgesdk.graph.report import Analysis, build_report
from edgesdk.toolchains.logs import (
    COMPILER_LOG_NOTE,
    parse_edgetpu_log,
    parse_horizon_checker,
    parse_vitis_log,
    support_from_compiler_log,
)

LOGS = Path(__file__).resolve().parents[1] / "golden" / "npu" / "logs"
CITE = "from the compiler log"


def _model(tmp_path: Path):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(8, np.float32), "b")
    gw = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "gw")
    gb = numpy_helper.from_array(np.zeros(10, np.float32), "gb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="/0/Conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("MaxPool", ["c"], ["p"], name="/3/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Sigmoid", ["p"], ["s"], name="/5/Sigmoid"),
        helper.make_node("GlobalAveragePool", ["s"], ["g"], name="/11/GlobalAveragePool"),
        helper.make_node("Flatten", ["g"], ["f"], name="/12/Flatten"),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["m"], name="/13/Gemm", transB=1),
        helper.make_node("Softmax", ["m"], ["sm"], name="/14/Softmax", axis=1),
        helper.make_node("Transpose", ["sm"], ["y"], name="/15/Transpose", perm=[1, 0]),
    ]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10, 1])], [w, b, gw, gb])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "net.onnx"
    onnx.save(proto, path)
    return load_model(path)


def _by_node(report):
    return {p.node: p for p in report.compiler_view}


def test_edgetpu_log_marks_unmapped_op_types(tmp_path):
    model = _model(tmp_path)
    board = get_board("coral-usb")
    base = check_support(model, board)
    log = parse_edgetpu_log((LOGS / "edgetpu_compiler.log").read_text())
    rep = support_from_compiler_log(base, log)

    assert rep.placements == base.placements  # edgesdk's own plan is untouched
    v = _by_node(rep)
    assert [p.node for p in rep.compiler_view] == [n.name for n in model.nodes]
    assert all(any(CITE in r for r in p.reasons) for p in rep.compiler_view)
    # mapped in the log: CONV_2D, MEAN
    assert v["/0/Conv"].target == "accelerator" and v["/0/Conv"].kind == "supported"
    assert v["/11/GlobalAveragePool"].target == "accelerator"
    # not mapped, with the log's reason text
    assert v["/15/Transpose"].target == "cpu" and v["/15/Transpose"].kind == "unsupported_op"
    assert "Operation not supported" in v["/15/Transpose"].reasons[0]
    assert v["/12/Flatten"].target == "cpu" and v["/12/Flatten"].kind == "limits"
    assert "unsupported rank" in v["/12/Flatten"].reasons[0]
    assert v["/5/Sigmoid"].target == "cpu" and v["/5/Sigmoid"].kind == "partition_rule"
    assert "More than one subgraph" in v["/5/Sigmoid"].reasons[0]
    # not in the log's table: edgesdk's placement kept, and it says so
    for name in ("/3/MaxPool", "/13/Gemm", "/14/Softmax"):
        assert "placement kept" in v[name].reasons[0]
    assert COMPILER_LOG_NOTE in rep.notes
    mem = next(n for n in rep.notes if "on-chip" in n)
    assert "7.25 MiB" in mem and "3.50 MiB off-chip" in mem and "60 of 67 ops" in mem
    assert any("do not fit" in n for n in rep.notes)  # the cache warning


def test_horizon_checker_per_node(tmp_path):
    model = _model(tmp_path)
    board = get_board("x3")
    base = check_support(model, board)
    rep = support_from_compiler_log(base, parse_horizon_checker((LOGS / "hb_mapper_checker.log").read_text()))
    v = _by_node(rep)
    assert all(any(CITE in r for r in p.reasons) for p in rep.compiler_view)
    for name in ("/0/Conv", "/3/MaxPool", "/11/GlobalAveragePool", "/13/Gemm"):
        assert v[name].target == "accelerator" and v[name].kind == "supported", name
    for name in ("/12/Flatten", "/14/Softmax"):
        assert v[name].target == "cpu", name
        assert "hb_mapper checker: CPU" in v[name].reasons[0]
    for name in ("/5/Sigmoid", "/15/Transpose"):  # not in the table
        assert "not in the checker table" in v[name].reasons[0]
        assert v[name].target == base.placements[[p.node for p in base.placements].index(name)].target
    assert any("2 node(s) are not in the checker table" in n for n in rep.notes)
    assert any("BPU subgraph" in n for n in rep.notes)


def test_vitis_log_adds_subgraph_note(tmp_path):
    model = _model(tmp_path)
    base = check_support(model, get_board("kv260"))
    log = parse_vitis_log((LOGS / "vai_c_xir.log").read_text())
    rep = support_from_compiler_log(base, log)
    assert rep.compiler_view == base.compiler_view
    note = rep.notes[-1]
    assert f"{log.dpu_subgraphs} on the DPU" in note and f"{log.cpu_subgraphs} on the CPU" in note


@pytest.mark.parametrize(("board_id", "logname", "parse"), [
    ("coral-usb", "edgetpu_compiler.log", parse_edgetpu_log),
    ("x3", "hb_mapper_checker.log", parse_horizon_checker),
])
def test_inspect_report_labels_log_view(tmp_path, board_id, logname, parse):
    model = _model(tmp_path)
    board = get_board(board_id)
    base = check_support(model, board)
    rep = support_from_compiler_log(base, parse((LOGS / logname).read_text()))
    out = build_report(Analysis(model, board, rep, partition(model, board, rep)))
    assert out.compiler_view is not None and out.compiler_view["source"] == "vendor compiler log"
    assert out.compiler_view["first_unsupported"] is not None
    if base.compiler_view is not None:
        pred = build_report(Analysis(model, board, base, partition(model, board, base)))
        assert pred.compiler_view["source"] == "edgesdk's prediction"

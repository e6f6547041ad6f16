"""Partitioning: placements and reasons, convex segments, folding, and segment-by-segment equivalence."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgesdk.graph import check_support, is_convex, load_model, partition, run_segments, write_segments
from edgesdk.graph.partition import assign_levels
from edgesdk.graph.report import analyze, build_report

from test_graph_util import (
    cpu_table,
    acc_board,
    attr_dependent,
    chain_cpu_middle,
    cpu_board,
    random_dag,
    save,
    skip_across_cpu,
)

ort = pytest.importorskip("onnxruntime")


def _reference(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _roundtrip(tmp_path, proto, board, tables, share=0.0, whole_model=True):
    p = save(proto, tmp_path)
    model = load_model(p)
    a = analyze(model, board, tables, min_island_flops_share=share, whole_model=whole_model, plan="split")
    out = write_segments(a.model, a.plan, tmp_path / "out")
    x = np.random.default_rng(1).random((tuple(model.tensors[model.inputs[0]].shape))).astype(np.float32)
    feeds = {model.inputs[0]: x}
    got = run_segments(out, feeds)
    ref = _reference(p, feeds)
    assert set(got) == set(ref)
    for k in ref:
        assert np.abs(got[k] - ref[k]).max() <= 1e-5, k
    for seg in json.loads((out / "plan.json").read_text())["segments"]:
        onnx.checker.check_model(onnx.load(str(out / seg["file"])))
    assert is_convex(a.model, a.plan)
    return model, a


def test_cpu_op_in_the_middle_of_an_accelerator_chain(tmp_path):
    board, tables = acc_board()
    model, a = _roundtrip(tmp_path, chain_cpu_middle(), board, tables)
    assert [s.target for s in a.plan.segments] == ["accelerator", "cpu", "accelerator"]
    assert [s.nodes for s in a.plan.segments] == [("c1", "r1"), ("sig",), ("c2", "r2")]
    sig = next(p for p in a.support.placements if p.node == "sig")
    assert sig.kind == "unsupported_op" and "no LUT for sigmoid" in sig.reasons[0] and sig.rewrite == "use HardSigmoid"
    assert a.plan.handoffs == 2
    mid = a.plan.segments[1]
    assert [t.name for t in mid.inputs] == ["b"] and mid.inputs[0].bytes == 8 * 16 * 16 * 4
    assert mid.inputs[0].shape == (1, 8, 16, 16) and mid.inputs[0].dtype == "float32"


def test_branches_and_skip_connections_across_a_cpu_island(tmp_path):
    board, tables = acc_board()
    model, a = _roundtrip(tmp_path, skip_across_cpu(), board, tables)
    by = {p.node: p for p in a.support.placements}
    assert by["leaky_cpu"].kind == "attribute" and "alpha" in by["leaky_cpu"].reasons[0]
    # the skip tensor b leaves the first accelerator segment and re-enters a later one, never the island
    first = a.plan.segments[0]
    assert "b" in [t.name for t in first.outputs]
    assert set(a.plan.model_outputs) == {"h", "y2", "y3"}


def test_op_supported_only_for_some_attribute_values(tmp_path):
    board, tables = acc_board()
    model, a = _roundtrip(tmp_path, attr_dependent(), board, tables)
    by = {p.node: p for p in a.support.placements}
    assert by["leaky_ok"].target == "accelerator"
    assert by["leaky_bad"].target == "cpu" and "alpha=0.3 above 0.2" in by["leaky_bad"].reasons[0]
    assert by["pool_ok"].target == "accelerator"  # ceil_mode absent -> default 0
    assert by["pool_ceil"].target == "cpu" and "ceil_mode=1" in by["pool_ceil"].reasons[0]


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_are_convex_and_equivalent(tmp_path, seed):
    board, tables = acc_board()
    _roundtrip(tmp_path, random_dag(seed), board, tables, share=0.0)


@pytest.mark.parametrize("seed", range(4))
def test_random_dags_with_folding(tmp_path, seed):
    board, tables = acc_board()
    _roundtrip(tmp_path, random_dag(seed, 40), board, tables, share=0.5)


def test_levels_form_a_dag_of_groups():
    # a -> b -> c with labels A, C, A and a side edge a -> c: c must not share a's group.
    labels = ["A", "C", "A"]
    preds = [[], [0], [0, 1]]
    succs = [[1, 2], [2], []]
    lv = assign_levels(labels, preds, succs)
    assert lv[0] < lv[1] < lv[2]


def test_late_placement_joins_the_later_group():
    # A0 and C0 are sources; A1 reads both. A0 should join A1 (2 segments, not 3).
    labels = ["A", "C", "A"]
    preds = [[], [], [0, 1]]
    succs = [[2], [2], []]
    lv = assign_levels(labels, preds, succs)
    assert lv[0] == lv[2]


def test_small_island_folds_into_cpu(tmp_path):
    # Sigmoid(CPU) -> Relu(acc, tiny) -> Sigmoid(CPU): the Relu island folds when the threshold allows.
    from onnx import helper
    from test_graph_util import make_model, vi
    nodes = [helper.make_node("Sigmoid", ["x"], ["a"], name="s1"), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="s2")]
    proto = make_model(nodes, [], [vi("x", [1, 4, 4, 4])], [vi("y", None)])
    board, tables = acc_board()
    _, a = _roundtrip(tmp_path, proto, board, tables, share=0.5)
    assert len(a.plan.segments) == 1 and a.plan.segments[0].target == "cpu"
    assert a.plan.folded and a.plan.folded[0].nodes == ("r",) and a.plan.folded[0].transfers_saved == 2
    rep = build_report(a)
    relu = next(r for r in rep.ops if r.op_type == "Relu")
    assert any("folded into the CPU" in x for x in relu.reasons)


def test_no_fold_without_threshold(tmp_path):
    from onnx import helper
    from test_graph_util import make_model, vi
    nodes = [helper.make_node("Sigmoid", ["x"], ["a"], name="s1"), helper.make_node("Relu", ["a"], ["b"], name="r"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="s2")]
    proto = make_model(nodes, [], [vi("x", [1, 4, 4, 4])], [vi("y", None)])
    board, tables = acc_board()
    _, a = _roundtrip(tmp_path, proto, board, tables, share=0.0)
    assert len(a.plan.segments) == 3 and not a.plan.folded


def test_edgetpu_rule_reports_compiler_view_and_plans_multi_segment(tmp_path):
    board, tables = acc_board(rule="first-unsupported-to-cpu", kind="edgetpu")
    model, a = _roundtrip(tmp_path, chain_cpu_middle(), board, tables)
    view = {p.node: p for p in a.support.compiler_view}
    assert view["c2"].target == "cpu" and view["c2"].kind == "partition_rule"
    assert "placed behind an earlier CPU op" in view["c2"].reasons[0] and "sig" in view["c2"].reasons[0]
    assert view["c1"].target == "accelerator"
    # edgesdk's own plan still puts c2/r2 on the Edge TPU, as a second Edge TPU model
    assert [s.engine for s in a.plan.segments] == ["edgetpu", "tflite", "edgetpu"]
    rep = build_report(a)
    assert rep.compiler_view["first_unsupported"]["node"] == "sig"
    assert rep.compiler_view["accelerator_flops_share"] < rep.plan.accelerator_flops_share
    assert any("multi-segment" in n for n in rep.notes)


def test_cpu_only_board_falls_back_to_onnxruntime_with_reason(tmp_path):
    board, tables = cpu_board(refuse=("Sigmoid",))
    model, a = _roundtrip(tmp_path, chain_cpu_middle(), board, tables, whole_model=False)
    assert [s.engine for s in a.plan.segments] == [board.engines[0], "onnxruntime", board.engines[0]]
    sig = next(p for p in a.support.placements if p.node == "sig")
    assert sig.kind == "fallback" and sig.refused_by == (board.engines[0],) and "not implemented" in sig.reasons[0]
    assert a.plan.accelerator_flops_share == 0


def test_cpu_only_board_gives_the_whole_model_to_the_next_engine_that_takes_it(tmp_path):
    """rpi4-like: engines[0] refuses one node, engines[1] takes all: one segment on engines[1], said in the notes."""
    board, tables = cpu_board(refuse=("Sigmoid",))
    nxt = next(e for e in board.engines[1:] if e != board.fallback_engine)
    tables = {**tables, nxt: cpu_table()}
    _, a = _roundtrip(tmp_path, chain_cpu_middle(), board, tables)
    assert [s.engine for s in a.plan.segments] == [nxt]
    assert any(f"the whole model goes to {nxt}" in n and "Sigmoid" in n for n in a.plan.notes)


def test_cpu_only_board_single_segment_when_all_supported(tmp_path):
    board, tables = cpu_board(refuse=())
    _, a = _roundtrip(tmp_path, skip_across_cpu(), board, tables)
    assert len(a.plan.segments) == 1 and a.plan.segments[0].engine == board.engines[0]


def test_plan_json_lists_order_engine_file_and_names(tmp_path):
    board, tables = acc_board()
    p = save(skip_across_cpu(), tmp_path)
    model = load_model(p)
    a = analyze(model, board, tables, plan="split")
    out = write_segments(a.model, a.plan, tmp_path / "o")
    doc = json.loads((out / "plan.json").read_text())
    assert [s["index"] for s in doc["segments"]] == list(range(len(a.plan.segments)))
    available = {t["name"] for t in doc["inputs"]}
    for s in doc["segments"]:
        assert (out / s["file"]).is_file() and s["engine"] in ("vart", "onnxruntime")
        assert set(s["inputs"]) <= available  # fed only by model inputs and earlier segments
        available |= set(s["outputs"])
    assert set(doc["outputs"]) <= available
    json.dumps(a.plan.to_dict())


def test_support_report_is_json_serialisable():
    board, tables = acc_board()
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        model = load_model(save(chain_cpu_middle(), Path(d)))
        s = check_support(model, board, tables)
        json.dumps(s.to_dict())
        rep = build_report(analyze(model, board, tables, plan="split"))
        json.dumps(rep.to_dict())
        assert rep.to_dict()["latency"]["label"].startswith("estimate")
        assert partition(model, board, s).segments

"""Plan choice (edgesdk.graph.plans): candidates by estimated latency, never slower than all-CPU, exact and convex,
--max-segments, forced plans, the blockers' explanation, boards ranked by estimate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesdk.boards import get_board
from edgesdk.cli import app
from edgesdk.graph import is_convex, load_model, run_segments, write_segments
from edgesdk.graph.plans import PLAN_MODES
from edgesdk.graph.report import analyze, build_report, compare_boards

from test_graph_util import acc_board, chain_cpu_middle, conv, make_model, random_dag, save, skip_across_cpu, vi

ort = pytest.importorskip("onnxruntime")
from onnx import helper  # noqa: E402

NPU_BOARDS = ["coral-usb", "kv260", "hi3519a", "x3", "rk3588", "imx93"]
ZOO = Path.home() / ".cache" / "edgesdk" / "zoo"


def _exact(tmp_path: Path, path: Path, model, plan, feeds=None) -> None:
    """The plan's segments, chained on onnxruntime, reproduce the model (max abs diff <= 1e-5) and are convex."""
    assert is_convex(model, plan)
    out = write_segments(model, plan, tmp_path / f"out-{len(list(tmp_path.iterdir()))}")
    if feeds is None:
        feeds = {n: np.random.default_rng(1).random(model.tensors[n].shape).astype(np.float32) for n in model.inputs}
    got = run_segments(out, feeds)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    for k in ref:
        assert np.abs(got[k] - ref[k]).max() <= 1e-5, k


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind,rule", [("dpu", "any-segments"), ("edgetpu", "first-unsupported-to-cpu")])
def test_every_mode_is_exact_and_best_is_never_slower_than_cpu(tmp_path, seed, kind, rule):
    board, tables = acc_board(rule, kind)
    p = save(random_dag(seed, 40), tmp_path)
    model = load_model(p)
    for mode in PLAN_MODES:
        a = analyze(model, board, tables, plan=mode)
        _exact(tmp_path, p, a.model, a.plan)
        ch = a.choice
        cpu = next(c for c in ch.candidates if c.name == "cpu")
        assert {c.name for c in ch.candidates} == {"cpu", "vendor", "split", "merged"}
        if mode == "best":
            assert ch.chosen.ms <= cpu.ms + 1e-9
            assert ch.chosen.ms <= min(c.ms for c in ch.candidates) + 1e-9
        else:
            assert ch.chosen.name == mode and f"--plan {mode}" in ch.reason


def test_cpu_plan_has_no_accelerator_segment_and_vendor_cut_is_one_prefix(tmp_path):
    board, tables = acc_board("first-unsupported-to-cpu", "edgetpu")
    p = save(skip_across_cpu(), tmp_path)
    model = load_model(p)
    cpu = analyze(model, board, tables, plan="cpu")
    assert all(s.target == "cpu" for s in cpu.plan.segments)
    assert all(pl.kind == "plan" or pl.target == "cpu" for pl in cpu.support.placements)
    vendor = analyze(model, board, tables, plan="vendor")
    acc = [s for s in vendor.plan.segments if s.target == "accelerator"]
    assert len(acc) == 1 and acc[0].index == 0  # the Edge TPU compiler's single cut
    split = analyze(model, board, tables, plan="split")
    assert sum(s.target == "accelerator" for s in split.plan.segments) > 1
    for a in (cpu, vendor, split):
        _exact(tmp_path, p, a.model, a.plan)


def _islands() -> object:
    """Big convs on the accelerator with tiny accelerator islands (a 1-channel Relu) between CPU Sigmoids."""
    inits: list = []
    nodes = [conv("c1", "x", "a", 3, 32, inits)]
    cur = "a"
    for i in range(4):
        nodes += [helper.make_node("Sigmoid", [cur], [f"s{i}"], name=f"sig{i}"),
                  helper.make_node("Relu", [f"s{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Sigmoid", [f"r{i}"], [f"t{i}"], name=f"sigb{i}")]
        cur = f"t{i}"
    nodes.append(conv("c2", cur, "y", 32, 32, inits))
    return make_model(nodes, inits, [vi("x", [1, 3, 64, 64])], [vi("y", None)])


def test_merged_moves_islands_that_cost_more_than_they_save(tmp_path):
    board, tables = acc_board()
    p = save(_islands(), tmp_path)
    model = load_model(p)
    a = analyze(model, board, tables, min_island_flops_share=0.0)
    by = {c.name: c for c in a.choice.candidates}
    assert len(by["split"].plan.segments) > len(by["merged"].plan.segments)
    assert by["merged"].ms < by["split"].ms and by["merged"].moved > 0
    moved = [pl for pl in by["merged"].support.placements if pl.kind == "plan"]
    assert {f"relu{i}" for i in range(4)} <= {pl.node for pl in moved} and "plan choice" in moved[0].reasons[0]
    assert "c2" not in {pl.node for pl in moved}  # the big conv stays on the accelerator
    _exact(tmp_path, p, a.model, by["merged"].plan)


@pytest.mark.parametrize("bound", [1, 2, 3])
def test_max_segments_bounds_the_plan(tmp_path, bound):
    board, tables = acc_board()
    p = save(_islands(), tmp_path)
    model = load_model(p)
    free = analyze(model, board, tables, plan="split", min_island_flops_share=0.0)
    assert len(free.plan.segments) > 3
    a = analyze(model, board, tables, max_segments=bound, min_island_flops_share=0.0)
    assert len(a.plan.segments) <= bound, [s.engine for s in a.plan.segments]
    assert f"--max-segments {bound}" in a.choice.reason or len(a.choice.chosen.plan.segments) <= bound
    _exact(tmp_path, p, a.model, a.plan)


def test_report_explains_blockers_and_the_choice(tmp_path):
    board, tables = acc_board()
    p = save(chain_cpu_middle(), tmp_path)
    rep = build_report(analyze(load_model(p), board, tables, plan="split"))
    d = rep.to_dict()
    assert d["plan_choice"]["chosen"] == "split" and len(d["plan_choice"]["candidates"]) == 4
    assert d["latency"]["label"].startswith("estimate") and d["latency"]["total_ms"] == pytest.approx(rep.estimate_ms)
    b = d["blockers"][0]
    assert b["op_type"] == "Sigmoid" and b["count"] == 1 and "no LUT for sigmoid" in b["reason"]
    assert b["rewrite"] == "use HardSigmoid" and b["exact"] is False and "fine-tune" in b["note"]
    assert b["gain_ms"] >= 0 and b["cpu_ms"] >= 0
    assert d["all_on_accelerator_ms"] > 0


def test_bad_plan_options_are_exit_2(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["inspect", str(p), "--board", "kv260", "--plan", "fastest"])
    assert r.exit_code == 2 and "--plan" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["inspect", str(p), "--board", "kv260", "--max-segments", "0"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["partition", str(p), "--board", "kv260", "--plan", "x", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and not (tmp_path / "o").exists()
    r = runner.invoke(app, ["inspect", str(p), "--board", "kv260", "--plan", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["plan_choice"]["chosen"] == "cpu" and all(s["target"] == "cpu" for s in doc["segments"])


def _zoo(name: str, pattern: str) -> Path:
    hits = sorted((ZOO / name).glob(pattern)) if (ZOO / name).is_dir() else []
    if not hits:
        if os.environ.get("CI"):
            pytest.fail(f"zoo model {name} missing in {ZOO}: scripts/setup.sh --test fetches it")
        pytest.skip(f"zoo model {name} not fetched (scripts/zoo_fetch.py)")
    return hits[0]


@pytest.mark.parametrize("board", NPU_BOARDS)
def test_real_detector_best_plan_is_exact_and_not_slower_than_cpu(tmp_path, board):
    """YOLOv8n (a real detector from a PyPI wheel) on every NPU board: the chosen plan chains exactly."""
    from edgesdk.graph.source import opened

    src = _zoo("yolov8n-nudenet", "*.onnx")
    with opened(src, None, True, None) as o:
        m = o.model
        a = analyze(m, get_board(board))
        cpu = next(c for c in a.choice.candidates if c.name == "cpu")
        assert a.choice.chosen.ms <= cpu.ms + 1e-9
        pm = tmp_path / "prepared.onnx"
        import onnx

        onnx.save(m.proto, str(pm))  # the reference: the prepared model, before the board's rewrites
        _exact(tmp_path, pm, a.model, a.plan)


def test_all_boards_are_ranked_by_estimate(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    rows = compare_boards(p)
    assert [r.rank for r in rows] == list(range(1, len(rows) + 1))
    assert [r.estimate_ms for r in rows] == sorted(r.estimate_ms for r in rows)
    assert all(r.cpu_ms is not None and r.estimate_ms <= r.cpu_ms + 1e-9 for r in rows)

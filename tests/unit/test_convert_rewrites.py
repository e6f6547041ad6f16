"""convert with the accelerator's rewrites (edgesdk.graph.rewrite) and the plan choice, as a user runs it: the CLI,
from the user's own folder, a Paddle-style decomposed HardSwish (Add, Clip, Mul, Div by 6) that an NPU refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]


def _model(d: Path) -> Path:
    rng = np.random.default_rng(0)

    def init(name: str, arr) -> onnx.TensorProto:  # noqa: ANN001
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    inits = [init("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), init("b1", rng.standard_normal(8) * 0.1),
             init("three", 3.0), init("six", 6.0), init("zero", 0.0),
             init("w2", rng.standard_normal((4, 8, 3, 3)) * 0.3), init("b2", rng.standard_normal(4) * 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "three"], ["a"], name="hs_add"),
             helper.make_node("Clip", ["a", "zero", "six"], ["cl"], name="hs_clip"),
             helper.make_node("Mul", ["c1", "cl"], ["m"], name="hs_mul"),
             helper.make_node("Div", ["m", "six"], ["h"], name="hs_div"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "paddle_hswish", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    p = d / "hswish.onnx"
    onnx.save(m, str(p))
    return p


def _calib(d: Path) -> Path:
    from PIL import Image

    c = d / "calib"
    c.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(c / f"{i}.png")
    return c


def _edgesdk(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesdk", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("board", ["kv260", "hi3519a"])
def test_convert_applies_the_rewrite_and_the_bundle_verifies(tmp_path: Path, board: str) -> None:
    model, calib = _model(tmp_path), _calib(tmp_path)
    r = _edgesdk("convert", model.name, "--board", board, "--precision", "int8", "--calib", "calib", "--plan", "split",
                 "-o", "bundle", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    sm = json.loads((tmp_path / "bundle" / "manifest.json").read_text())["source_model"]
    applied = {a["rule"]: a for a in sm["rewrites"]["applied"]}
    assert applied["div-const-to-mul"]["nodes"] == ["hs_div"] and applied["div-const-to-mul"]["cosine"] >= 0.99999
    assert sm["plan"]["chosen"] == "split" and {c["name"] for c in sm["plan"]["candidates"]} == \
        {"cpu", "vendor", "split", "merged"}
    mf = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    with_rw = len(mf["segments"])
    # kv260: the Div no longer cuts the model; hi3519a: Caffe has no ReLU6, so the Clip still does
    assert with_rw == {"kv260": 1, "hi3519a": 3}[board]
    v = _edgesdk("verify", "bundle", "--json", cwd=tmp_path)
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]
    # without the rewrite, the refused Div cuts the model twice more
    r = _edgesdk("convert", model.name, "--board", board, "--precision", "int8", "--calib", "calib", "--plan", "split",
                 "--no-rewrite", "-o", "plain", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    mf = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert len(mf["segments"]) == with_rw + 2 and "rewrites" not in mf["source_model"]


def test_best_plan_on_a_tiny_model_keeps_the_model_as_it_came(tmp_path: Path) -> None:
    """When the CPU wins, the rewrites (which only serve the accelerator) are not applied."""
    from edgesdk.boards import get_board
    from edgesdk.graph import load_model
    from edgesdk.graph.report import analyze

    model = load_model(_model(tmp_path))
    a = analyze(model, get_board("kv260"))
    if any(s.target == "accelerator" for s in a.plan.segments):
        pytest.skip("the cost model puts this tiny CNN on the DPU")
    assert a.rewrites is None and a.model is model and a.choice.chosen.name == "cpu"
    assert "estimated fastest" in a.choice.reason

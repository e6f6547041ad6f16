"""The engine chain of convert: every artifact is loaded, run and checked on its own engine; a failure moves the
segment to the board's next engine and says so; --engine X means X only. Real pnnx, ncnn, MNN here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import require_toolchains


def _strided_slice_model(path: Path) -> Path:
    """Conv -> Slice with step 2 -> Relu: pnnx leaves the strided Slice as `Tensor.slice`, a layer ncnn lacks."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), n)
              for n, v in [("st", [1, 1]), ("en", [16, 16]), ("ax", [2, 3]), ("sp", [2, 2])]]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Slice", ["c", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "strided", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_chain_order_per_precision() -> None:
    from edgesdk.boards import get_board
    from edgesdk.conversion import engine_chain

    rpi4 = get_board("rpi4")
    assert engine_chain(rpi4, "ncnn", "fp32", False) == [("ncnn", "fp32"), ("mnn", "fp32"), ("tflite", "fp32"),
                                                         ("onnxruntime", "fp32")]
    assert [e for e, _ in engine_chain(rpi4, "mnn", "int8", False)] == ["mnn", "tflite", "onnxruntime"]  # no ncnn int8
    fp16 = engine_chain(rpi4, "ncnn", "fp16", False)
    assert fp16[-1] == ("onnxruntime", "fp32")  # onnxruntime has no fp16: last resort at fp32
    assert engine_chain(rpi4, "ncnn", "fp32", True) == [("ncnn", "fp32")]


@pytest.mark.integration
def test_ncnn_artifact_that_does_not_load_moves_to_mnn(tmp_path: Path) -> None:
    require_toolchains("ncnn", "mnn")
    from edgesdk.conversion import convert
    from edgesdk.runtime import Session
    from edgesdk.verify import verify

    model = _strided_slice_model(tmp_path / "strided.onnx")
    res = convert(model, "rpi4", tmp_path / "b")
    seg = res.segments[0]
    assert seg.engine == "mnn" and seg.planned_engine == "ncnn"
    assert seg.attempts[0].engine == "ncnn" and seg.attempts[0].stage == "load"
    assert "Tensor.slice" in seg.attempts[0].message
    assert seg.fallback_reason and "ncnn failed" in seg.fallback_reason and "converted with mnn" in seg.fallback_reason
    assert seg.check is not None and seg.check.ok and seg.check.cosine is not None and seg.check.cosine > 0.9999
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert "Tensor.slice" in man["segments"][0]["reason"]
    assert any("converted with mnn" in n for n in man["notes"])
    assert verify(tmp_path / "b").ok
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with Session(tmp_path / "b") as s:
        got = s.run({"x": x})["y"]
    assert np.abs(got - ref).max() < 1e-4


@pytest.mark.integration
def test_explicit_engine_fails_with_its_own_message(tmp_path: Path) -> None:
    require_toolchains("ncnn")
    from edgesdk.conversion import ConversionFailed, convert

    model = _strided_slice_model(tmp_path / "strided.onnx")
    with pytest.raises(ConversionFailed, match="ncnn has no layer 'Tensor.slice'"):
        convert(model, "rpi4", tmp_path / "b", engine="ncnn")
    assert not (tmp_path / "b").exists()


@pytest.mark.integration
def test_cli_json_reports_the_chain(tmp_path: Path) -> None:
    require_toolchains("ncnn", "mnn")
    import subprocess
    import sys

    model = _strided_slice_model(tmp_path / "strided.onnx")
    r = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(model), "--board", "rpi4", "-o",
                        str(tmp_path / "b"), "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["segments"][0]["engine"] == "mnn"
    assert doc["segments"][0]["attempts"][0]["stage"] == "load"
    assert "Traceback" not in r.stderr
    r2 = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(model), "--board", "rpi4", "-o",
                         str(tmp_path / "c"), "--engine", "ncnn"], capture_output=True, text=True, cwd=tmp_path,
                        timeout=300)
    assert r2.returncode == 1 and "Tensor.slice" in r2.stderr and "Traceback" not in r2.stderr

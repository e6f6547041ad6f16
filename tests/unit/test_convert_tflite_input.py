"""`edgesdk convert model.tflite`: a .tflite bundled as it is (TFLite CPU path, Edge TPU path), its refusals,
Session against the TFLite interpreter, and `edgesdk verify` (which compares with the source .tflite: there is no
ONNX original). The .tflite files are written with the flatbuffer schema in ai-edge-litert (tests/runtime_bundles.py).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import runtime_bundles as rb

pytestmark = pytest.mark.skipif(not rb.tflite_available(), reason="ai-edge-litert (TFLite schema) not installed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tflite")
    wt = rb.weights()
    return {"fp32": rb.to_tflite_head(wt, d / "head_fp32.tflite"),
            "int8": rb.to_tflite_head_int8(wt, d / "head_int8.tflite"),
            "uint8": rb.to_tflite_head_int8(wt, d / "head_uint8.tflite", "uint8")}


def _interpreter(path: Path, x_real: np.ndarray) -> np.ndarray:
    """The TFLite interpreter on its own, quantizing by hand: what the bundle must agree with."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    s, z = i["quantization"]
    if s:
        info = np.iinfo(i["dtype"])
        x_real = np.clip(np.round(x_real / s) + z, info.min, info.max).astype(i["dtype"])
    it.set_tensor(i["index"], x_real)
    it.invoke()
    y = it.get_tensor(o["index"])
    s, z = o["quantization"]
    return (y.astype(np.float32) - z) * s if s else y


def _nhwc_input(seed: int = 3) -> np.ndarray:
    return np.clip(rb.sample_input(seed), -1.9, 1.9).transpose(0, 2, 3, 1).copy()


@pytest.mark.parametrize("kind", ["fp32", "int8", "uint8"])
def test_tflite_for_rpi4_runs_as_the_interpreter(models: dict[str, Path], kind: str, tmp_path: Path) -> None:
    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.session import Session
    from edgesdk.verify import verify

    src = models[kind]
    res = convert(src, "rpi4", tmp_path / "b")
    mf = load_manifest(tmp_path / "b")
    prec = "fp32" if kind == "fp32" else "int8"
    assert res.precision == mf.precision == prec
    assert [s.engine for s in mf.segments] == ["tflite"]
    seg = mf.segments[0]
    assert (tmp_path / "b" / seg.files["model"]).read_bytes() == src.read_bytes()  # the file as it is
    # the model's own tensors: names, NHWC shapes; float32 at the boundary, the file's quantization on the segment
    assert [(t.name, t.shape, t.dtype) for t in mf.inputs] == [("x", (1, 16, 16, 3), "float32")]
    assert [(t.name, t.shape) for t in mf.outputs] == [("a", (1, 16, 16, 8))]
    assert seg.inputs[0].layout is None and mf.inputs[0].layout is None  # no NCHW contract invented
    if kind == "fp32":
        assert seg.inputs[0].quant is None and seg.outputs[0].quant is None
    else:
        q_in, q_out = seg.inputs[0].quant, seg.outputs[0].quant
        assert q_in is not None and q_out is not None and q_in.dtype == q_out.dtype == kind
        off = 128 if kind == "uint8" else 0
        assert q_in.scale == pytest.approx(rb.INT8_IN[0]) and q_in.zero_point == rb.INT8_IN[1] + off
        assert q_out.scale == pytest.approx(rb.INT8_OUT[0]) and q_out.zero_point == rb.INT8_OUT[1] + off
    assert mf.source_model["kind"] == "tflite" and mf.source_model["sha256"]
    assert any("no ONNX original" in n for n in mf.notes)
    # reference outputs: the interpreter on the file
    ref_in = np.load(tmp_path / "b" / mf.reference_inputs["x"])
    ref_out = np.load(tmp_path / "b" / mf.reference_outputs["a"])
    np.testing.assert_array_equal(ref_out, _interpreter(src, ref_in))
    x = _nhwc_input()
    with Session(tmp_path / "b") as s:
        y = s.run({"x": x})["a"]
        assert s.engines_used[0].engine == "tflite"
    np.testing.assert_allclose(y, _interpreter(src, x), atol=1e-6)
    if kind != "fp32":  # and close to the float model it approximates
        assert np.abs(y - rb.reference("head", rb.weights(), x.transpose(0, 3, 1, 2).copy()).transpose(0, 2, 3, 1)
                      ).max() < 0.1
    rep = verify(tmp_path / "b")
    assert rep.ok, rep.to_dict()
    assert "TFLite interpreter" in rep.compared_with and "no ONNX original" in rep.compared_with
    # without the source file: the bundle's reference outputs (the interpreter's, at conversion), said so
    moved = tmp_path / src.name
    import shutil

    shutil.copyfile(src, moved)
    convert(moved, "rpi4", tmp_path / "b2")
    moved.unlink()
    rep2 = verify(tmp_path / "b2")
    assert rep2.ok and "reference outputs (the TFLite interpreter" in rep2.compared_with


def test_tflite_reference_input_from_calibration_with_the_declared_preprocess(models: dict[str, Path],
                                                                             tmp_path: Path) -> None:
    from PIL import Image

    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.preprocess import Preprocessor
    from edgesdk.verify import verify

    calib = tmp_path / "calib"
    calib.mkdir()
    r = np.random.default_rng(0)
    imgs = [r.integers(0, 256, (20, 24, 3), dtype=np.uint8) for _ in range(3)]
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(calib / f"{i}.png")
    convert(models["int8"], "rpi5", tmp_path / "b", calib=calib, preprocess={"mean": [0.5], "std": [0.25],
                                                                               "resize": "stretch"})
    mf = load_manifest(tmp_path / "b")
    assert mf.preprocess is not None and mf.preprocess.layout == "NHWC" and mf.preprocess.size == (16, 16)
    x0 = np.load(tmp_path / "b" / mf.reference_inputs["x"])
    assert x0.shape == (1, 16, 16, 3) and x0.dtype == np.float32 and x0.min() >= -2.0 and x0.max() <= 2.0
    # the first calibration image (sorted file order), through the declared preprocessing
    bgr = np.asarray(Image.open(min(calib.iterdir())).convert("RGB"))[..., ::-1]
    np.testing.assert_allclose(x0, Preprocessor(mf.preprocess)(np.ascontiguousarray(bgr))[0], atol=1e-6)
    rep = verify(tmp_path / "b", data=calib)  # --data: the interpreter on the source .tflite, per image
    assert rep.ok and rep.samples == 3 and rep.source == "data"


def test_random_reference_input_spans_the_quantized_range(models: dict[str, Path], tmp_path: Path) -> None:
    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest

    convert(models["int8"], "rpi4", tmp_path / "b")
    mf = load_manifest(tmp_path / "b")
    x0 = np.load(tmp_path / "b" / mf.reference_inputs["x"])
    s, z = rb.INT8_IN
    assert x0.min() >= (-128 - z) * s and x0.max() <= (127 - z) * s and x0.max() - x0.min() > 3.0


def test_coral_usb_int8_without_the_compiler_keeps_the_cpu_segment(models: dict[str, Path], tmp_path: Path) -> None:
    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.verify import verify

    res = convert(models["int8"], "coral-usb", tmp_path / "b")
    mf = load_manifest(tmp_path / "b")
    seg = mf.segments[0]
    assert seg.engine == "tflite" and not seg.accelerator and "edgetpu_compiler is not on this machine" in seg.reason
    how = (tmp_path / "b" / "vendor" / "s0" / "COMPILE.txt").read_text()
    assert "edgetpu_compiler -s -m 14 -o s0_edgetpu s0_tflite.tflite" in how  # the bundle's own file
    assert res.segments[0].planned_engine == "edgetpu" and res.segments[0].fallback_reason
    assert verify(tmp_path / "b").ok


FAKE_COMPILER = """#!{python}
# TEST DOUBLE of edgetpu_compiler (the real one is x86-64 only and was not run here): copies the input to
# <stem>_edgetpu.tflite and writes an empty log.
import pathlib, shutil, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1])
src = pathlib.Path(args[-1])
out.mkdir(parents=True, exist_ok=True)
shutil.copyfile(src, out / (src.stem + "_edgetpu.tflite"))
(out / (src.stem + "_edgetpu.log")).write_text("Edge TPU Compiler version 16.0 (test double)\\n")
"""


def test_coral_usb_int8_with_a_compiler_gets_an_edgetpu_segment(models: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.verify import verify

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text(FAKE_COMPILER.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    convert(models["int8"], "coral-usb", tmp_path / "b")
    mf = load_manifest(tmp_path / "b")
    seg = mf.segments[0]
    assert seg.engine == "edgetpu" and seg.accelerator and seg.files["model"] == "s0_edgetpu.tflite"
    assert seg.cpu_version is not None and seg.cpu_version.engine == "tflite"
    assert seg.cpu_version.inputs[0].quant == seg.inputs[0].quant  # the CPU version keeps the file's int8 I/O
    rep = verify(tmp_path / "b")  # no Edge TPU here: the .tflite runs on the CPU, and the report says so
    assert rep.ok and any("ran its CPU version on tflite" in n for n in rep.notes)


def _need_tflite_frontend() -> None:
    import os

    from edgesdk.errors import EnvironmentProblem
    from edgesdk.frontends import tflite_frontend

    try:
        tflite_frontend()
    except EnvironmentProblem as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"tflite frontend (tf2onnx in the tflite toolchain venv) missing: {exc}")


@pytest.mark.parametrize("board", ["kv260", "hi3519a", "x3"])
def test_boards_without_tflite_go_through_onnx(models: dict[str, Path], tmp_path: Path, board: str) -> None:
    """A board that runs no TFLite gets the .tflite through ONNX (tf2onnx): the usual rules apply (its
    accelerator needs int8 + calibration; its CPU engine converts the float model)."""
    from edgesdk.conversion import convert
    from edgesdk.errors import InputError

    _need_tflite_frontend()
    with pytest.raises(InputError, match="runs int8 only"):
        convert(models["fp32"], board, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    res = convert(models["fp32"], board, tmp_path / "cpu", engine="onnxruntime")
    assert res.segments[0].engine == "onnxruntime"
    assert any("converted to ONNX" in n for n in res.notes)
    assert res.manifest is not None and res.manifest.source_model["kind"] == "tflite"


def test_float_tflite_for_coral_is_refused_with_the_reason(models: dict[str, Path], tmp_path: Path) -> None:
    from edgesdk.conversion import convert
    from edgesdk.errors import InputError

    with pytest.raises(InputError, match="full-integer int8"):
        convert(models["fp32"], "coral-usb", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # on the board's CPU it is fine
    convert(models["fp32"], "coral-usb", tmp_path / "cpu", engine="tflite")


@pytest.mark.parametrize("kind,precision", [("int8", "fp32"), ("int8", "fp16"), ("fp32", "int8")])
def test_other_precision_is_refused(models: dict[str, Path], tmp_path: Path, kind: str, precision: str) -> None:
    from edgesdk.conversion import convert
    from edgesdk.errors import InputError

    with pytest.raises(InputError, match="does not re-quantize a .tflite"):
        convert(models[kind], "rpi4", tmp_path / "o", precision=precision)
    convert(models[kind], "rpi4", tmp_path / "same", precision="fp32" if kind == "fp32" else "int8")  # its own: fine


def test_other_engines_go_through_onnx(models: dict[str, Path], tmp_path: Path) -> None:
    """--engine ncnn on a .tflite: the file goes through ONNX (tf2onnx) to ncnn, and verify holds."""
    from edgesdk.conversion import convert
    from edgesdk.verify import verify

    _need_tflite_frontend()
    res = convert(models["fp32"], "rpi4", tmp_path / "o", engine="ncnn")
    assert [s.engine for s in res.segments] == ["ncnn"]
    assert res.segments[0].check is not None and res.segments[0].check.ok
    assert verify(tmp_path / "o").ok


def test_cli_exit_codes_and_dry_run(models: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgesdk.cli import app

    r = CliRunner()
    res = r.invoke(app, ["convert", str(models["fp32"]), "--board", "coral-usb", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "full-integer int8" in res.output
    res = r.invoke(app, ["convert", str(models["fp32"]), "--board", "kv260", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "runs int8 only" in res.output  # goes through ONNX: the accelerator rules apply
    res = r.invoke(app, ["convert", str(models["int8"]), "--board", "rpi4", "-p", "fp32", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "re-quantize" in res.output
    res = r.invoke(app, ["convert", str(models["int8"]), "--board", "coral-usb", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["dry_run"] and doc["precision"] == "int8"
    assert [c["tool"] for c in doc["plans"][0]["commands"]] == ["edgetpu_compiler"]
    res = r.invoke(app, ["convert", str(models["int8"]), "--board", "rpi4", "-o", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["verify", str(tmp_path / "ok")])
    assert res.exit_code == 0, res.output

"""Edge TPU, Vitis AI DPU and Horizon BPU adapters against fakes of their documented APIs (no hardware here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import runtime_bundles as rb

from edgesdk.runtime import Session, fakes
from edgesdk.runtime.engines import bpu as bpu_mod
from edgesdk.runtime.engines import edgetpu as edgetpu_mod
from edgesdk.runtime.engines import tflite as tflite_mod
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import CpuVersion, QuantParams, Segment, TensorSpec


def _install(monkeypatch: pytest.MonkeyPatch, modules: dict) -> None:
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)


# -- Edge TPU ----------------------------------------------------------------------------------------
@pytest.fixture
def edgetpu_bundle(tmp_path: Path) -> Path:
    if not rb.tflite_available():
        pytest.skip("needs ai-edge-litert to write and run a .tflite")
    b = rb.make_bundle(tmp_path / "b", [("tflite", "head")])
    # turn the TFLite segment into an Edge TPU one: same file (the fake runs it on the CPU)
    import json

    from edgesdk.runtime.manifest import MANIFEST, Manifest, canonical_json

    d = json.loads((b / MANIFEST).read_text())
    d["segments"][0]["engine"] = "edgetpu"
    d["segments"][0]["accelerator"] = True
    d["segments"][0]["options"] = {"device": "usb:0"}
    d["bundle_id"] = Manifest.from_dict(d).content_id()
    (b / MANIFEST).write_bytes(canonical_json(d))
    return b


def test_edgetpu_through_pycoral_make_interpreter(monkeypatch: pytest.MonkeyPatch, edgetpu_bundle: Path) -> None:
    calls = fakes.Calls()
    real = tflite_mod.interpreter_module()
    _install(monkeypatch, fakes.modules_pycoral(lambda p: real.Interpreter(model_path=p), calls))
    monkeypatch.setattr(edgetpu_mod, "_loadable", lambda lib: True)
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    x = rb.sample_input()
    with Session(edgetpu_bundle) as s:
        assert s.engines_used[0].engine == "edgetpu"
        out = s.run({"x": x})["a"]
    assert calls.log[0] == ("make_interpreter", {"model": str(edgetpu_bundle / "s0_tflite.tflite"), "device": "usb:0"})
    np.testing.assert_allclose(out, rb.reference("head", rb.weights(), x), atol=1e-4)


def test_edgetpu_through_load_delegate(monkeypatch: pytest.MonkeyPatch, edgetpu_bundle: Path) -> None:
    calls = fakes.Calls()
    fake = fakes.interpreter_module_with_delegate(tflite_mod.interpreter_module(), calls)
    monkeypatch.setattr(edgetpu_mod, "interpreter_module", lambda engine="tflite": fake)
    monkeypatch.setattr(edgetpu_mod, "_loadable", lambda lib: True)
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pycoral" else real_find(n, *a))
    with Session(edgetpu_bundle) as s:
        s.run({"x": rb.sample_input()})
    assert ("load_delegate", {"library": "libedgetpu.so.1", "options": {"device": "usb:0"}}) in calls.log
    assert ("Interpreter", {"model_path": str(edgetpu_bundle / "s0_tflite.tflite"),
                            "delegates": ["libedgetpu.so.1"]}) in calls.log


def test_edgetpu_missing_delegate_is_unavailable(monkeypatch: pytest.MonkeyPatch, edgetpu_bundle: Path) -> None:
    from edgesdk.runtime.errors import EngineUnavailable

    monkeypatch.setattr(edgetpu_mod, "_loadable", lambda lib: False)
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    with pytest.raises(EngineUnavailable, match="libedgetpu1-std"):
        Session(edgetpu_bundle)


# -- Vitis AI DPU --------------------------------------------------------------------------------------
def _vart_bundle(tmp_path: Path, quant: bool) -> Path:
    """One DPU segment a -> b (8 channels, 16x16), NHWC on the DPU, optionally with manifest quant params."""
    root = tmp_path / "b"
    root.mkdir()
    (root / "s0.xmodel").write_bytes(b"fake xmodel")
    q_in = QuantParams(2.0 ** -5, 0, "int8") if quant else None
    q_out = QuantParams(2.0 ** -4, 0, "int8") if quant else None
    seg = Segment("s0", "vart", {"model": "s0.xmodel"},
                  (TensorSpec("a", (1, 8, 16, 16), "float32", layout="NHWC", quant=q_in),),
                  (TensorSpec("b", (1, 8, 16, 16), "float32", layout="NHWC", quant=q_out),), precision="int8",
                  accelerator=True)
    rb.write_manifest(root, ["a"], ["b"], [seg])
    return root


@pytest.mark.parametrize("quant", [True, False], ids=["manifest-quant", "fix_point"])
def test_vart_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quant: bool) -> None:
    calls = fakes.Calls()
    # the DPU op: out_q = in_q // 2 with fix_in 5 and fix_out 4  ->  real out == real in (quantised)
    _install(monkeypatch, fakes.modules_vart((1, 16, 16, 8), (1, 16, 16, 8), 5, 4,
                                             lambda q: (q.astype(np.int16) // 2).astype(np.int8), calls))
    b = _vart_bundle(tmp_path, quant)
    a = np.random.default_rng(0).uniform(-3, 3, (1, 8, 16, 16)).astype(np.float32)
    a[0, 1, 2, 3] = 1.0
    with Session(b) as s:
        out = s.run({"a": a})["b"]
    assert ("create_runner", ("dpu0", "run")) in calls.log
    sent = next(v for k, v in calls.log if k == "execute_async")[0]
    assert sent.shape == (1, 16, 16, 8) and sent.dtype == np.int8  # NHWC int8 on the DPU
    assert sent[0, 2, 3, 1] == 32  # 1.0 * 2**5
    assert out.shape == a.shape and out.dtype == np.float32
    assert np.abs(out - a).max() <= 2 ** -4 + 1e-6


def test_vart_rejects_multiple_dpu_subgraphs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install(monkeypatch, fakes.modules_vart((1, 16, 16, 8), (1, 16, 16, 8), 5, 4, lambda q: q, fakes.Calls(),
                                             dpu_subgraphs=2))
    with pytest.raises(EngineFailure, match="2 DPU subgraphs"):
        Session(_vart_bundle(tmp_path, True))


# -- Horizon BPU ------------------------------------------------------------------------------------------
def test_bgr_to_nv12_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(img[::2, ::2], 2, 0), 2, 1)  # flat 2x2 blocks: chroma subsampling is exact
    nv12 = bpu_mod.bgr_to_nv12(img)
    i420 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    h, w = img.shape[:2]
    y, u, v = i420[: h * w], i420[h * w: h * w * 5 // 4], i420[h * w * 5 // 4:]
    assert np.abs(nv12[: h * w].astype(int) - y).max() <= 1
    assert np.abs(nv12[h * w:: 2].astype(int) - u).max() <= 1
    assert np.abs(nv12[h * w + 1:: 2].astype(int) - v).max() <= 1


def test_bpu_nv12_input_and_dequantized_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fakes.Calls()
    P = fakes.FakeProperties
    scale = tuple(0.5 + 0.1 * i for i in range(4))

    def forward(data: np.ndarray) -> list[np.ndarray]:
        assert data.dtype == np.uint8 and data.shape == (16 * 16 * 3 // 2,)
        return [np.full((1, 4, 2, 2), 10, np.int32)]  # quantized: real = 10 * scale[channel]

    model = fakes.FakeBpuModel("m", [fakes.FakeDNNTensor("in", P("NV12_SEPARATE", "uint8", "NCHW", (1, 3, 16, 16)))],
                               [fakes.FakeDNNTensor("out", P("S32", "int32", "NCHW", (1, 4, 2, 2), scale, 2))],
                               forward, calls)
    _install(monkeypatch, fakes.modules_hobot(model, calls))
    root = tmp_path / "b"
    root.mkdir()
    (root / "m.bin").write_bytes(b"fake hbm")
    seg = Segment("s0", "bpu", {"model": "m.bin"}, (TensorSpec("img", (1, 3, 16, 16), "uint8"),),
                  (TensorSpec("y", (1, 4, 2, 2), "float32"),), accelerator=True, options={"color": "BGR"},
                  cpu_version=None)
    rb.write_manifest(root, ["img"], ["y"], [seg], shapes={"img": [1, 3, 16, 16], "y": [1, 4, 2, 2]})
    import json

    from edgesdk.runtime.manifest import MANIFEST, Manifest, canonical_json

    d = json.loads((root / MANIFEST).read_text())  # the model input is uint8 here
    d["inputs"][0]["dtype"] = "uint8"
    d["bundle_id"] = Manifest.from_dict(d).content_id()
    (root / MANIFEST).write_bytes(canonical_json(d))
    img = np.full((1, 3, 16, 16), 128, np.uint8)
    with Session(root) as s:
        y = s.run({"img": img})["y"]
    assert ("load", str(root / "m.bin")) in calls.log
    sent = next(v for k, v in calls.log if k == "forward")
    assert abs(int(sent[0]) - 126) <= 1  # Y of mid-grey (16 + 0.859 * 128)
    np.testing.assert_allclose(y[0, :, 0, 0], [10 * s_ for s_ in scale], rtol=1e-6)


def test_cpu_version_runs_when_vendor_module_missing(tmp_path: Path) -> None:
    """Without hobot_dnn, fallback='cpu' runs the bundled CPU version and says so."""
    b = rb.make_bundle(tmp_path / "b", [("bpu", "all")], cpu_versions={0: "onnxruntime"}, accelerator=[0])
    with Session(b, fallback="cpu") as s:
        u = s.engines_used[0]
        assert (u.engine, u.planned, u.fallback) == ("onnxruntime", "bpu", True)
        assert "hobot_dnn" in u.reason
    assert isinstance(CpuVersion, type)

"""Session: feed checks, engine list, explicit fallback, close, corrupt files (onnxruntime only: fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import runtime_bundles as rb

from edgesdk.runtime import Session
from edgesdk.runtime.errors import BundleError, EngineFailure, EngineUnavailable, InputMismatch
from edgesdk.runtime.manifest import MANIFEST, QuantParams, TensorSpec
from edgesdk.runtime.session import _in_converter, _out_converter, normalize_engines


@pytest.fixture(scope="module")
def ort_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rb.make_bundle(tmp_path_factory.mktemp("ort") / "b", [("onnxruntime", "all")])


@pytest.fixture(scope="module")
def split_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rb.make_bundle(tmp_path_factory.mktemp("split") / "b",
                          [("onnxruntime", "head"), ("onnxruntime", "mid"), ("onnxruntime", "tail")])


@pytest.fixture(scope="module")
def accel_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Edge TPU segment (not runnable here) with a CPU version, between two CPU segments."""
    return rb.make_bundle(tmp_path_factory.mktemp("accel") / "b",
                          [("onnxruntime", "head"), ("edgetpu", "mid"), ("onnxruntime", "tail")],
                          cpu_versions={1: "onnxruntime"}, accelerator=[1])


def test_run_matches_reference(ort_bundle: Path) -> None:
    x = rb.sample_input()
    with Session(ort_bundle) as s:
        out = s.run({"x": x})
        assert list(out) == ["logits"]
        np.testing.assert_allclose(out["logits"], rb.reference("all", rb.weights(), x), rtol=1e-5, atol=1e-5)
        assert [u.engine for u in s.engines_used] == ["onnxruntime"]
        assert not s.engines_used[0].fallback and s.engines_used[0].version
        assert s.inputs[0].name == "x" and s.outputs[0].shape == (1, 10)


def test_partitioned_matches_whole(split_bundle: Path) -> None:
    x = rb.sample_input(3)
    with Session(split_bundle) as s:
        np.testing.assert_allclose(s.run({"x": x})["logits"], rb.reference("all", rb.weights(), x), atol=1e-5)
        assert [u.segment for u in s.engines_used] == ["s0", "s1", "s2"]


@pytest.mark.parametrize("feed, words", [
    ({"y": np.zeros((1, 3, 16, 16), np.float32)}, ["expected inputs ['x']", "given ['y']", "missing ['x']"]),
    ({"x": np.zeros((1, 3, 8, 16), np.float32)}, ["expected float32[1, 3, 16, 16]", "given float32[1, 3, 8, 16]"]),
    ({"x": np.zeros((1, 3, 16, 16), np.float64)}, ["expected float32[1, 3, 16, 16]", "given float64[1, 3, 16, 16]"]),
    ({"x": [[0.0]]}, ["expected a numpy array", "given list"]),
    ({"x": np.zeros((1, 3, 16, 16), np.float32), "z": np.zeros(1)}, ["unknown ['z']"]),
])
def test_feed_mismatch_names_expected_and_given(ort_bundle: Path, feed: dict, words: list[str]) -> None:
    with Session(ort_bundle) as s, pytest.raises(InputMismatch) as ei:
        s.run(feed)
    for w in words:
        assert w in str(ei.value)


def test_close_is_idempotent_and_final(ort_bundle: Path) -> None:
    s = Session(ort_bundle)
    s.close()
    s.close()
    with pytest.raises(EngineFailure, match="closed"):
        s.run({"x": rb.sample_input()})


def test_engines_argument_is_checked_up_front() -> None:
    assert normalize_engines(["ncnn", ("mnn", {"threads": 4})]) == {"ncnn": {}, "mnn": {"threads": 4}}
    assert normalize_engines(None) is None
    with pytest.raises(InputMismatch, match="unknown engine 'onnx'.*did you mean 'onnxruntime'"):
        normalize_engines(["onnx"])
    with pytest.raises(InputMismatch, match="twice"):
        normalize_engines(["ncnn", "ncnn"])
    with pytest.raises(InputMismatch, match="name or"):
        normalize_engines([("ncnn", 4)])


def test_engine_not_in_list_is_unavailable(ort_bundle: Path) -> None:
    with pytest.raises(EngineUnavailable) as ei:
        Session(ort_bundle, engines=["ncnn"])
    assert ei.value.engine == "onnxruntime" and "engines=" in str(ei.value)


def test_missing_accelerator_raises_with_fix(accel_bundle: Path) -> None:
    with pytest.raises(EngineUnavailable) as ei:
        Session(accel_bundle)
    assert ei.value.engine == "edgetpu"
    assert "libedgetpu" in ei.value.fix and "fix:" in str(ei.value)


def test_cpu_fallback_is_explicit_and_recorded(accel_bundle: Path) -> None:
    x = rb.sample_input(5)
    with Session(accel_bundle, fallback="cpu") as s:
        used = s.engines_used
        assert [(u.engine, u.planned, u.fallback) for u in used] == [
            ("onnxruntime", "onnxruntime", False), ("onnxruntime", "edgetpu", True), ("onnxruntime", "onnxruntime", False)]
        assert "edgetpu" in used[1].reason and "CPU fallback for edgetpu" in str(used[1])
        np.testing.assert_allclose(s.run({"x": x})["logits"], rb.reference("all", rb.weights(), x), atol=1e-5)


def test_cpu_fallback_needs_a_cpu_version(tmp_path: Path) -> None:
    b = rb.make_bundle(tmp_path / "b", [("onnxruntime", "head"), ("vart", "mid"), ("onnxruntime", "tail")])
    with pytest.raises(EngineUnavailable, match="no CPU version of segment 's1'") as ei:
        Session(b, fallback="cpu")
    assert ei.value.engine == "vart"


def test_cpu_fallback_respects_engine_list(tmp_path: Path) -> None:
    b = rb.make_bundle(tmp_path / "b", [("edgetpu", "all")], cpu_versions={0: "onnxruntime"}, accelerator=[0])
    with pytest.raises(EngineUnavailable, match="CPU version needs 'onnxruntime'"):
        Session(b, engines=["edgetpu"], fallback="cpu")
    with Session(b, engines=["edgetpu", ("onnxruntime", {"threads": 1})], fallback="cpu") as s:
        assert s.engines_used[0].fallback and s.engines_used[0].engine == "onnxruntime"


def test_bad_fallback_value(ort_bundle: Path) -> None:
    with pytest.raises(InputMismatch, match="fallback"):
        Session(ort_bundle, fallback="silent")


def _corrupt(bundle: Path, rel: str, data: bytes) -> None:
    """Replace a model file and re-sign the manifest, as a broken converter would have written it."""
    (bundle / rel).write_bytes(data)
    from edgesdk.runtime.manifest import Manifest, canonical_json, sha256_file

    d = json.loads((bundle / MANIFEST).read_text())
    d["files"][rel] = sha256_file(bundle / rel)
    m = Manifest.from_dict(d)
    d["bundle_id"] = m.content_id()
    (bundle / MANIFEST).write_bytes(canonical_json(d))


def test_corrupt_onnx_is_a_clean_error(tmp_path: Path) -> None:
    b = rb.make_bundle(tmp_path / "b", [("onnxruntime", "all")])
    _corrupt(b, "s0_onnxruntime.onnx", b"\x08\x07garbage" * 50)
    with pytest.raises(EngineFailure, match="onnxruntime could not load s0_onnxruntime.onnx"):
        Session(b)


def test_tampered_file_is_a_bundle_error(tmp_path: Path) -> None:
    b = rb.make_bundle(tmp_path / "b", [("onnxruntime", "all")])
    (b / "s0_onnxruntime.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="does not match the manifest"):
        Session(b)


def test_layout_and_quant_converters_roundtrip() -> None:
    q = QuantParams(scale=0.05, zero_point=3, dtype="int8")
    t = TensorSpec("a", (1, 8, 4, 5), "float32", layout="NHWC", quant=q)
    x = np.random.default_rng(0).uniform(-3, 3, t.shape).astype(np.float32)
    e = _in_converter(t)(x)
    assert e.shape == (1, 4, 5, 8) and e.dtype == np.int8
    back = _out_converter(t)(e)
    assert back.shape == x.shape and back.dtype == np.float32
    assert np.abs(back - x).max() <= 0.05 / 2 + 1e-6
    assert _in_converter(TensorSpec("b", (1, 3), "float32")) is None


def test_runtime_package_is_lazy() -> None:
    """edgesdk.runtime.errors / .manifest never import numpy (the host's edgesdk.errors imports them)."""
    code = ("import sys; import edgesdk.runtime.errors, edgesdk.runtime.manifest, edgesdk.runtime; "
            "bad = [m for m in ('numpy', 'edgesdk.runtime.session', 'onnxruntime') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[2],
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_public_names_resolve() -> None:
    import edgesdk.runtime as rt

    for name in rt.__all__:
        assert getattr(rt, name) is not None
    with pytest.raises(AttributeError):
        rt.no_such_name  # noqa: B018

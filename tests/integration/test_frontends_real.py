"""A real .tflite through edgesdk.frontends: MediaPipe's short-range face detector (BlazeFace, 128x128 NHWC),
taken from the mediapipe wheel on PyPI (version and sha256 pinned, cached under the edgesdk home), converted to ONNX
with tf2onnx in the tflite toolchain venv and compared on onnxruntime against the TFLite interpreter.

Skips when the tflite toolchain venv (with tf2onnx) is absent or PyPI cannot be reached; under CI=true both fail.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgesdk import frontends
from edgesdk.errors import EnvironmentProblem

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CI = os.environ.get("CI") == "true"

# The wheel is asked for by platform so that every host downloads the same file.
WHEEL = "mediapipe==0.10.14"
WHEEL_ARGS = ("--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11")
WHEEL_SHA256 = "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
MEMBER_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_face_detector() -> Path:
    from edgesdk.paths import home

    target = home() / "models" / "mediapipe-0.10.14" / "face_detection_short_range.tflite"
    if target.is_file() and _sha(target.read_bytes()) == MEMBER_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", *WHEEL_ARGS, WHEEL, "-d", d],
                       check=True, capture_output=True, timeout=600)
        wheel = next(Path(d).glob("mediapipe-0.10.14-*.whl"))
        assert _sha(wheel.read_bytes()) == WHEEL_SHA256, f"{wheel.name}: unexpected sha256"
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MEMBER)
    assert _sha(data) == MEMBER_SHA256, f"{MEMBER}: unexpected sha256"
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.rename(target)
    return target


@pytest.fixture(scope="module")
def face_detector() -> Path:
    try:
        frontends.tflite_frontend()
    except EnvironmentProblem as exc:
        if CI:
            pytest.fail(f"CI=true and the .tflite frontend is missing: {exc}")
        pytest.skip(f"the tflite toolchain venv with tf2onnx is absent ({exc.fix})")
    try:
        return fetch_face_detector()
    except (subprocess.SubprocessError, OSError, StopIteration, KeyError) as exc:
        if CI:
            raise
        pytest.skip(f"cannot download {WHEEL} from PyPI: {exc}")


def test_face_detector_converts_and_matches_the_interpreter(face_detector: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    interp = pytest.importorskip("ai_edge_litert.interpreter")
    monkeypatch.setattr(frontends, "cache_dir", lambda: tmp_path / "cache")  # convert for real, once
    t0 = time.perf_counter()
    src = frontends.to_onnx(face_detector, tmp_path / "w")
    first = time.perf_counter() - t0
    assert src.kind == "tflite" and src.original == face_detector
    assert "input [1, 128, 128, 3]" in src.notes[1]  # the file's name and NHWC layout
    t0 = time.perf_counter()
    again = frontends.to_onnx(face_detector, tmp_path / "w2")
    assert "cached" in again.notes[0] and time.perf_counter() - t0 < first

    it = interp.Interpreter(str(face_detector))
    it.allocate_tensors()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)  # MediaPipe feeds [-1, 1]
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    ref = {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}
    sess = ort.InferenceSession(str(src.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    assert set(got) == set(ref) == {"regressors", "classificators"}
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape
        a, b = g.ravel().astype(np.float64), r.ravel().astype(np.float64)
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) >= 0.999, name
        assert np.abs(a - b).max() <= 1e-3, name

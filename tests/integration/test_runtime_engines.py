"""Real engines (ncnn, MNN, TFLite) on real converted bundles, each against onnxruntime on the same model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import runtime_bundles as rb

from edgesdk.runtime import Session
from edgesdk.runtime.engines import is_available
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import MANIFEST, Manifest, canonical_json, sha256_file

pytestmark = pytest.mark.integration


def _need(engine: str) -> None:
    if not is_available(engine):
        pytest.skip(f"{engine} is not installed here")
    if engine == "ncnn" and rb.pnnx_binary() is None:
        pytest.skip("pnnx (ONNX -> ncnn converter) is not installed: pip install --no-deps pnnx")
    if engine == "mnn" and rb.mnnconvert_binary() is None:
        pytest.skip("mnnconvert is not installed (pip install MNN)")
    if engine == "tflite" and not rb.tflite_available():
        pytest.skip("no TFLite schema/flatbuffers to write a test model (pip install ai-edge-litert flatbuffers)")


def _close(a: np.ndarray, ref: np.ndarray, rel: float = 1e-3) -> None:
    """The manifest's default tolerance: max |a - ref| / (max(ref) - min(ref)) <= 1e-3."""
    span = float(ref.max() - ref.min()) or 1.0
    err = float(np.abs(a - ref).max()) / span
    assert err <= rel, f"max abs/range error {err:.2e} > {rel}"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {"root": tmp_path_factory.mktemp("engines")}


def _bundle(bundles: dict, name: str, plan: list, **kw) -> Path:
    if name not in bundles:
        bundles[name] = rb.make_bundle(bundles["root"] / name, plan, **kw)
    return bundles[name]


@pytest.mark.parametrize("engine, part", [("ncnn", "all"), ("mnn", "all"), ("tflite", "head")])
def test_engine_matches_onnxruntime(bundles: dict, engine: str, part: str) -> None:
    _need(engine)
    b = _bundle(bundles, f"{engine}-{part}", [(engine, part)])
    ref_b = _bundle(bundles, f"onnxruntime-{part}", [("onnxruntime", part)])
    for seed in (1, 2):
        x = rb.sample_input(seed)
        with Session(b) as s, Session(ref_b) as r:
            assert [u.engine for u in s.engines_used] == [engine]
            out, ref = s.run({"x": x}), r.run({"x": x})
            assert out.keys() == ref.keys()
            for k in ref:
                assert out[k].shape == ref[k].shape and out[k].dtype == ref[k].dtype
                _close(out[k], ref[k])


@pytest.mark.parametrize("plan", [
    [("ncnn", "head"), ("onnxruntime", "mid"), ("mnn", "tail")],
    [("tflite", "head"), ("onnxruntime", "mid"), ("ncnn", "tail")],
    [("mnn", "head"), ("onnxruntime", "mid"), ("ncnn", "tail")],
], ids=["ncnn-cpu-mnn", "tflite(NHWC)-cpu-ncnn", "mnn-cpu-ncnn"])
def test_partitioned_bundle_matches_whole_model(tmp_path: Path, plan: list) -> None:
    for e, _ in plan:
        if e != "onnxruntime":
            _need(e)
    b = rb.make_bundle(tmp_path / "b", plan)
    x = rb.sample_input(7)
    with Session(b) as s:
        assert [u.engine for u in s.engines_used] == [e for e, _ in plan]
        _close(s.run({"x": x})["logits"], rb.reference("all", rb.weights(), x))


def _resign(bundle: Path, rel: str, data: bytes) -> None:
    (bundle / rel).write_bytes(data)
    d = json.loads((bundle / MANIFEST).read_text())
    d["files"][rel] = sha256_file(bundle / rel)
    d["bundle_id"] = Manifest.from_dict(d).content_id()
    (bundle / MANIFEST).write_bytes(canonical_json(d))


@pytest.mark.parametrize("engine, part, rel, mangle", [
    ("ncnn", "all", "s0_ncnn.bin", lambda b: np.random.default_rng(0).bytes(len(b) // 3)),  # segfaults ncnn unguarded
    ("ncnn", "all", "s0_ncnn.param", lambda b: b"7767517\n2 2\nInput in0 0 1 in0\nBogusLayer c 1 1 in0 out0\n"),
    ("mnn", "all", "s0_mnn.mnn", lambda b: b[: len(b) // 2]),
    ("mnn", "all", "s0_mnn.mnn", lambda b: np.random.default_rng(1).bytes(len(b))),
    ("tflite", "head", "s0_tflite.tflite", lambda b: b[:64]),
])
def test_corrupt_model_file_is_a_clean_error(tmp_path: Path, engine: str, part: str, rel: str, mangle) -> None:
    _need(engine)
    b = rb.make_bundle(tmp_path / "b", [(engine, part)])
    _resign(b, rel, mangle((b / rel).read_bytes()))
    with pytest.raises(EngineFailure) as ei:
        Session(b)
    assert engine.lower() in str(ei.value).lower()


def test_guarded_load_cost_is_at_load_only(bundles: dict) -> None:
    _need("ncnn")
    b = _bundle(bundles, "ncnn-all", [("ncnn", "all")])
    t = time.perf_counter()
    Session(b, guard_load=False).close()
    plain = time.perf_counter() - t
    t = time.perf_counter()
    with Session(b) as s:
        guarded = time.perf_counter() - t
        x = rb.sample_input()
        s.run({"x": x})
    assert guarded < plain + 10.0  # one child process (python + import ncnn), not per run


def test_cli_json_stays_clean_with_chatty_engine(bundles: dict, tmp_path: Path) -> None:
    """MNN prints to fd 1 from C; `--json` output must still be JSON alone."""
    import subprocess
    import sys

    _need("mnn")
    b = _bundle(bundles, "mnn-all", [("mnn", "all")])
    f = tmp_path / "x.npy"
    np.save(f, rb.sample_input())
    r = subprocess.run(check=False, args=[sys.executable, "-m", "edgesdk.runtime", str(b), "--input", str(f), "--json", "--bench", "2"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engines_used"][0]["engine"] == "mnn" and out["bench"]["runs"] == 2

"""check_artifact: a converted segment is loaded and run on its own engine and compared with onnxruntime.

Real conversions: small ONNX models converted with the ncnn adapter (pnnx) and the MNN adapter, the artifacts
loaded by the runtime's own engine adapters (ncnn and MNN in the guarded child first). A strided slice makes
pnnx write a ``Tensor.slice`` layer, which ncnn does not have: the check fails at load and names it; so do
Session and ``edgesdk verify`` on a bundle holding such a .param.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.runtime.manifest import TensorSpec, Tolerance
from edgesdk.toolchains.check import ArtifactCheck, check_artifact, ncnn_layer_problem

ort = pytest.importorskip("onnxruntime")
DATA = Path(__file__).resolve().parent.parent / "data"
X = np.random.default_rng(5).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
MODULES = {"ncnn": "ncnn", "mnn": "MNN"}


def need(engine: str) -> None:
    from edgesdk.toolchains.adapters import get_adapter

    st = get_adapter(engine).check_env()
    if not st.ok:
        pytest.skip(f"{engine} toolchain not ready: {st.detail} (fix: {st.fix})")
    if importlib.util.find_spec(MODULES[engine]) is None:
        pytest.skip(f"engine module {MODULES[engine]} not installed (pip install 'edgesdk[test]')")


def small_cnn(path: Path, seed: int = 0, strided_slice: bool = False) -> Path:
    """conv3x3 + relu + conv1x1 (+ a Slice with step 2 on W: pnnx leaves it as Tensor.slice)."""
    r = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((r.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("b1", (8,)), ("w2", (4, 8, 1, 1)), ("b2", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y" if not strided_slice else "c2"], name="conv2")]
    out_shape = [1, 4, 16, 16]
    if strided_slice:
        inits += [numpy_helper.from_array(np.array(v, np.int64), n)
                  for n, v in (("st", [0]), ("en", [16]), ("ax", [3]), ("sp", [2]))]
        nodes.append(helper.make_node("Slice", ["c2", "st", "en", "ax", "sp"], ["y"], name="strided_slice"))
        out_shape = [1, 4, 16, 8]
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(path))
    return path


def convert_segment(engine: str, onnx_path: Path, work: Path):
    """The adapter's plan run by the executor, as convert does it: returns the Artifact."""
    from edgesdk.toolchains.adapters import get_adapter
    from edgesdk.toolchains.adapters.base import ConversionJob, IOSpec
    from edgesdk.toolchains.executor import execute

    m = onnx.load(str(onnx_path))
    io = lambda vi: IOSpec(vi.name, tuple(d.dim_value for d in vi.type.tensor_type.shape.dim))
    work.mkdir(parents=True, exist_ok=True)
    job = ConversionJob("s0", onnx_path, work, "fp32", tuple(io(v) for v in m.graph.input),
                        tuple(io(v) for v in m.graph.output))
    a = get_adapter(engine)
    plan = a.plan(job)
    execute(plan)
    return a.describe(job, plan)


def reference(onnx_path: Path) -> dict[str, np.ndarray]:
    return {"y": ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["y"], {"x": X})[0]}


def check(engine: str, art, ref: dict[str, np.ndarray], files=None) -> ArtifactCheck:
    return check_artifact(engine, files or art.files, art.inputs, art.outputs, art.options, {"x": X}, ref, Tolerance())


@pytest.mark.parametrize("engine", ["ncnn", "mnn"])
def test_real_conversion_passes(tmp_path: Path, engine: str) -> None:
    need(engine)
    src = small_cnn(tmp_path / "m.onnx")
    art = convert_segment(engine, src, tmp_path / "w")
    c = check(engine, art, reference(src))
    assert c.ok, c
    assert (c.engine, c.stage, c.message) == (engine, "verify", "")
    assert set(c.max_abs) == {"y"} and c.max_abs["y"] < 1e-4 and c.cosine["y"] > 0.99999
    assert c.seconds > 0 and c.metrics[0].ok
    json.dumps(c.to_dict())


def test_pnnx_tensor_slice_fails_at_load_naming_the_layer(tmp_path: Path) -> None:
    need("ncnn")
    src = small_cnn(tmp_path / "sliced.onnx", strided_slice=True)
    art = convert_segment("ncnn", src, tmp_path / "w")  # pnnx exits 0
    param = Path(art.files["param"])
    assert "Tensor.slice" in param.read_text()
    c = check("ncnn", art, reference(src))
    assert not c.ok and c.stage == "load" and c.engine == "ncnn"
    assert c.message.startswith(f"ncnn has no layer 'Tensor.slice' (1 layer of that type in {param.name}"), c.message
    assert "pnnx leaves it for strided slices" in c.message
    assert c.max_abs == {} and c.metrics == ()


def test_tampered_param_fails_at_load(tmp_path: Path) -> None:
    need("ncnn")
    src = small_cnn(tmp_path / "m.onnx")
    art = convert_segment("ncnn", src, tmp_path / "w")
    param = Path(art.files["param"])
    text = param.read_text()
    n = len(re.findall(r"^Convolution\s", text, flags=re.MULTILINE))
    param.write_text(re.sub(r"^Convolution(\s)", r"Tensor.slice\1", text, flags=re.MULTILINE))
    c = check("ncnn", art, reference(src))
    assert not c.ok and c.stage == "load"
    assert f"ncnn has no layer 'Tensor.slice' ({n} layer{'s' if n != 1 else ''} of that type in {param.name}" \
        in c.message, c.message
    assert ncnn_layer_problem(param) == c.message


def test_wrong_weights_fail_at_verify_with_metrics(tmp_path: Path) -> None:
    need("ncnn")
    src = small_cnn(tmp_path / "a.onnx", seed=0)
    other = small_cnn(tmp_path / "b.onnx", seed=1)  # same graph, other weights
    art = convert_segment("ncnn", src, tmp_path / "wa")
    art_b = convert_segment("ncnn", other, tmp_path / "wb")
    files = {"param": art.files["param"], "bin": art_b.files["bin"]}
    c = check("ncnn", art, reference(src), files)
    assert not c.ok and c.stage == "verify"
    assert c.max_abs["y"] > 0.01 and c.cosine["y"] < 0.99
    assert "output 'y'" in c.message and "of the output range" in c.message
    assert not c.metrics[0].ok and c.metrics[0].problems


def test_corrupt_bin_is_an_answer_not_a_crash(tmp_path: Path) -> None:
    need("ncnn")
    src = small_cnn(tmp_path / "m.onnx")
    art = convert_segment("ncnn", src, tmp_path / "w")
    binf = Path(art.files["bin"])
    binf.write_bytes(binf.read_bytes()[:100])
    c = check("ncnn", art, reference(src))
    assert not c.ok and c.stage in ("load", "run") and "ncnn" in c.message, c


def test_mnn_wrong_reference_fails_at_verify(tmp_path: Path) -> None:
    need("mnn")
    src = small_cnn(tmp_path / "m.onnx")
    art = convert_segment("mnn", src, tmp_path / "w")
    ref = reference(src)
    c = check("mnn", art, {"y": -ref["y"]})
    assert not c.ok and c.stage == "verify" and c.cosine["y"] < -0.99


def test_onnxruntime_artifact_and_unreadable_file(tmp_path: Path) -> None:
    src = small_cnn(tmp_path / "m.onnx")
    spec_in, spec_out = (TensorSpec("x", (1, 3, 16, 16), "float32"),), (TensorSpec("y", (1, 4, 16, 16), "float32"),)
    c = check_artifact("onnxruntime", {"model": src}, spec_in, spec_out, {}, {"x": X}, reference(src), Tolerance())
    assert c.ok, c
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    c = check_artifact("onnxruntime", {"model": bad}, spec_in, spec_out, {}, {"x": X}, reference(src), Tolerance())
    assert not c.ok and c.stage == "load" and "onnxruntime could not load bad.onnx" in c.message
    c = check_artifact("onnxruntime", {"model": tmp_path / "missing.onnx"}, spec_in, spec_out, {}, {"x": X},
                       reference(src), Tolerance())
    assert not c.ok and c.stage == "load" and "did not write" in c.message


def test_programming_errors_raise(tmp_path: Path) -> None:
    src = small_cnn(tmp_path / "m.onnx")
    spec_in, spec_out = (TensorSpec("x", (1, 3, 16, 16), "float32"),), (TensorSpec("y", (1, 4, 16, 16), "float32"),)
    with pytest.raises(ValueError, match="unknown engine"):
        check_artifact("nope", {"model": src}, spec_in, spec_out, {}, {"x": X}, reference(src), Tolerance())
    with pytest.raises(ValueError, match="feed has no"):
        check_artifact("onnxruntime", {"model": src}, spec_in, spec_out, {}, {}, reference(src), Tolerance())
    with pytest.raises(ValueError, match="reference"):
        check_artifact("onnxruntime", {"model": src}, spec_in, spec_out, {}, {"x": X}, {"y": np.zeros(3)},
                       Tolerance())


# -- the same .param through Session and edgesdk verify -----------------------------------------------------

def _rehash(bundle: Path) -> None:
    from edgesdk.runtime.manifest import MANIFEST, Manifest, canonical_json, sha256_file

    d = json.loads((bundle / MANIFEST).read_text())
    d["files"] = {rel: sha256_file(bundle / rel) for rel in d["files"]}
    d["bundle_id"] = Manifest.from_dict(d).content_id()
    (bundle / MANIFEST).write_bytes(canonical_json(d))


@pytest.fixture
def sliced_bundle(tmp_path: Path) -> Path:
    need("ncnn")
    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest

    out = tmp_path / "bundle"
    convert(DATA / "digits_cnn.onnx", "rpi4", out, engine="ncnn")
    seg = load_manifest(out).segments[0]
    assert seg.engine == "ncnn"
    param = out / seg.files["param"]
    text = param.read_text()
    param.write_text(re.sub(r"^Pooling(\s)", r"Tensor.slice\1", text, count=1, flags=re.MULTILINE))
    assert "Tensor.slice" in param.read_text()
    _rehash(out)
    return out


def test_session_reports_ncnns_own_reason(sliced_bundle: Path) -> None:
    from edgesdk.runtime.errors import EngineFailure
    from edgesdk.runtime.session import Session

    with pytest.raises(EngineFailure) as ei:
        Session(sliced_bundle)
    msg = str(ei.value)
    assert "layer Tensor.slice not exists or registered" in msg, msg
    assert "not an ncnn .param file" not in msg


def test_verify_names_the_unknown_layer(sliced_bundle: Path) -> None:
    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.runtime.errors import EngineFailure
    from edgesdk.verify import verify

    with pytest.raises(EngineFailure, match=r"segment 's0' of .*: ncnn has no layer 'Tensor.slice' \(1 layer of that "
                                            r"type in s0_ncnn.param"):
        verify(sliced_bundle)
    r = CliRunner().invoke(app, ["verify", str(sliced_bundle), "--json"])
    assert r.exit_code == 1 and "ncnn has no layer 'Tensor.slice'" in r.stderr and r.stdout.strip() == ""

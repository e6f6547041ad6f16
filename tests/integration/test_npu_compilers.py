"""Issue 15: the two NPU compilers that really run here, through the CLI as a user runs it (from their own
directory): `edgesdk convert --board rk3588` builds a real .rknn with RKNN-Toolkit2 (its PC simulator checks it),
`--board imx93` compiles a real vela .tflite for the Ethos-U65. Then `flash --board rk3588` to the emulated board,
which has no NPU: refused with the fix (exit 2, nothing pushed) unless `--fallback cpu`, which runs the segment's
CPU version (the host int8 simulation) on the board.

Nothing here is a test double: the only thing absent is the RK3588's NPU driver, which the emulated board lacks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATA = Path(__file__).resolve().parents[1] / "data"
MODEL = DATA / "digits_cnn.onnx"


def _need(toolchain: str) -> None:
    from edgesdk.boards import get_board
    from edgesdk.toolchains.adapters import accelerator_adapter_class

    engine = {"rknn": get_board("rk3588"), "vela": get_board("imx93")}[toolchain].accelerator.engine
    st = accelerator_adapter_class(engine)().vendor_env()
    if not st.ok:
        why = f"{toolchain} toolchain not installed: {st.detail} (fix: edgesdk toolchain install {toolchain})"
        if os.environ.get("CI"):
            pytest.fail(why)  # scripts/setup.sh installs both
        pytest.skip(why)


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's directory with 24 calibration photos of digits (3-channel PNGs) and a pre-processing file."""
    from PIL import Image

    d = tmp_path_factory.mktemp("user")
    calib = d / "calib"
    calib.mkdir()
    z = np.load(DATA / "digits.npz")
    for i, im in enumerate(np.kron(z["images8"][z["calib"]][:24], np.ones((1, 4, 4), dtype=np.uint8))):
        Image.fromarray(np.ascontiguousarray(np.repeat(im[..., None], 3, axis=-1))).save(calib / f"{i:04d}.png")
    (d / "pre.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\n")
    return d


def _convert(user_dir: Path, board: str) -> tuple[dict, Path]:
    from typer.testing import CliRunner

    from edgesdk.cli import app

    out = user_dir / f"bundle-{board}"
    cwd = os.getcwd()
    os.chdir(user_dir)
    try:
        r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", board, "--precision", "int8", "--calib",
                                     "calib", "--preprocess", "pre.yaml", "-o", out.name,
                                     "--plan", "split", "--json"])  # the compiler path, not the plan choice
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.stdout + r.stderr
    return json.loads(r.stdout[r.stdout.index("{"):]), out


@pytest.fixture(scope="module")
def rk_bundle(user_dir: Path) -> Path:
    _need("rknn")
    res, out = _convert(user_dir, "rk3588")
    from edgesdk.runtime.manifest import load_manifest

    (seg,) = load_manifest(out).segments
    assert seg.engine == "rknn" and seg.accelerator and seg.cpu_version is not None
    rknn = out / seg.files["model"]
    assert rknn.suffix == ".rknn" and rknn.stat().st_size > 1000
    said = " ".join(res.get("warnings", []) + res.get("notes", []))
    assert "on the NPU" in said and "simulator vs onnxruntime cosine" in said, said
    cos = float(said.split("simulator vs onnxruntime cosine: ")[1].split("=")[1].split()[0].rstrip(",;"))
    assert cos > 0.99, said  # RKNN's own simulator of the int8 .rknn against fp32 onnxruntime
    view = res["segments"][0]["compiler_view"]  # the compiler's per-op table, mapped to ONNX nodes, as data
    assert view["label"] == "vendor compiler" and set(view["placement"].values()) <= {"npu", "cpu"}
    assert "npu" in view["placement"].values()
    return out


def _verify(bundle: Path) -> dict:
    from typer.testing import CliRunner

    from edgesdk.cli import app

    r = CliRunner().invoke(app, ["verify", str(bundle), "--model", str(MODEL), "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    return json.loads(r.stdout[r.stdout.index("{"):])


def test_verify_rk3588_shows_rknn_accuracy_analysis_per_layer(rk_bundle):
    """verify --per-layer (the default) shows RKNN's own accuracy_analysis of the .rknn beside edgesdk's view."""
    rep = _verify(rk_bundle)
    assert rep["ok"] and rep["engines"][0]["engine"] == "onnxruntime"  # no NPU here: the host int8 simulation
    (v,) = rep["vendor_per_layer"]
    assert v["segment"] == "s0" and v["tool"] == "rknn-toolkit2 accuracy_analysis"
    import onnx

    nodes = {n.name for n in onnx.load(str(MODEL)).graph.node}
    named = [x for x in v["layers"] if x["node"]]
    assert len(named) >= 5 and {x["node"] for x in named} <= nodes  # mapped to the model's own nodes
    assert all(0.9 < x["cosine"] <= 1.0 for x in named), named  # the digits CNN quantizes well on the simulator


def test_target_on_rk3588_asks_rknns_own_simulator_first(user_dir):
    """--target on the RK3588: the whole segment built by RKNN-Toolkit2 and run on its simulator meets the target,
    so no layer leaves the NPU and the host int8 search does not run."""
    _need("rknn")
    from typer.testing import CliRunner

    from edgesdk.cli import app

    cwd = os.getcwd()
    os.chdir(user_dir)
    try:
        r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rk3588", "-p", "int8", "--calib", "calib",
                                     "--preprocess", "pre.yaml", "--target", "cosine=0.95", "-o", "bundle-target",
                                     "--plan", "split", "--json"])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 0, r.stdout + r.stderr
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert [s["engine"] for s in res["segments"]] == ["rknn"]
    (q,) = res["quantization"]
    assert q["engine"] == "rknn (vendor simulator)" and q["kept_in_float"] == [] and q["search"] is None
    assert q["metric"] >= 0.95 and q["engine_steps"][0]["meets"]


def test_convert_imx93_compiles_with_vela_and_reports_its_placement_and_estimate(user_dir):
    _need("vela")
    res, out = _convert(user_dir, "imx93")
    from edgesdk.runtime.manifest import load_manifest

    (seg,) = load_manifest(out).segments
    assert seg.engine == "ethosu" and seg.accelerator and seg.cpu_version is not None
    tfl = (out / seg.files["model"]).read_bytes()
    assert tfl[4:8] == b"TFL3" and b"ethos-u" in tfl  # vela's output: a TFLite whose NPU part is an ethos-u op
    said = " ".join(res.get("warnings", []) + res.get("notes", []))
    assert "ops on the Ethos-U, 0 on the CPU" in said and "vela estimate:" in said, said
    assert 0 < seg.options["vendor_estimate_ms"] < 10  # the profile's expectation for the board
    view = res["segments"][0]["compiler_view"]
    assert view["label"] == "vendor compiler" and view["cpu_ops"] == 0 and view["npu_ops"] > 0
    assert {o["target"] for o in view["ops"]} == {"npu"}
    # the host reference is the int8 TFLite interpreter (the record's fallback_engine): the .tflite vela compiled
    assert seg.cpu_version.engine == "tflite" and (out / seg.cpu_version.files["model"]).read_bytes()[4:8] == b"TFL3"
    assert seg.cpu_version.inputs[0].quant is not None  # full-integer: int8 in, int8 out
    rep = _verify(out)
    assert rep["ok"], rep
    (e,) = rep["engines"]
    assert e["engine"] == "tflite" and e["fallback"], e  # no Ethos-U here


def test_flash_rk3588_without_npu_is_refused_unless_fallback_cpu(rk_bundle, tmp_path):
    from typer.testing import CliRunner

    from edgesdk.boards import get_board
    from edgesdk.cli import app
    from edgesdk.deploy.flash import FlashOptions, emulator_target, flash, run_remote
    from tests.integration.conftest import emulated

    gen = emulated("rk3588")
    next(gen)
    try:
        r = CliRunner().invoke(app, ["flash", "--board", "rk3588", str(rk_bundle), "--json"])
        assert r.exit_code == 2, r.stdout + r.stderr
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["status"] == "refused" and res["accelerator_present"] is False
        assert "--fallback cpu" in res["error"] and "s0 (rknn)" in res["error"] and res["bytes_sent"] == 0

        target, _ = emulator_target(get_board("rk3588"))
        res = flash(rk_bundle, "rk3588", target, FlashOptions(fallback="cpu"))
        assert res.ok, (res.error, res.log)
        (use,) = res.engines_used
        assert use["engine"] == "onnxruntime" and use["planned"] == "rknn" and use["fallback"]
        out = run_remote(target, [str(rk_bundle / "reference" / "input_0.npy")], tmp_path / "out")
        (o,) = out.outputs.values()
        want = np.load(rk_bundle / "reference" / "output_0.npy")
        assert int(np.load(o.file).argmax()) == int(want.argmax())
    finally:
        gen.close()

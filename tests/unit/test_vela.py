"""vela (Arm Ethos-U65-256, NXP i.MX 93): parsers on captured real vela 5.2.0 output, the ethosu engine
against a fake delegate, and one real vela compile (skipped unless the vela venv exists; fails under CI)."""

from __future__ import annotations

import os
import subprocess
import types
from pathlib import Path

import pytest

from edgesdk.runtime.engines import ethosu
from edgesdk.runtime.engines.ethosu import EthosUEngine
from edgesdk.paths import toolchain_venv
from edgesdk.toolchains.adapters.vela import VelaAdapter, parse_vela_output, parse_vela_summary_csv

# Captured: vela 5.2.0 on a tiny int8 CNN (conv, dwconv, maxpool, conv1x1, GAP, dense, softmax), abridged.
VELA_STDOUT = """\
Warning: Consider accessing the configuration by --config Arm/vela.ini since it is located inside the config_files directory.

Network summary for M
Accelerator configuration               Ethos_U65_256
System configuration               Ethos_U65_High_End
Memory mode                      Dedicated_Sram_512KB
Accelerator clock                                1000 MHz
Design peak SRAM bandwidth                      14.90 GB/s
Design peak DRAM bandwidth                       3.49 GB/s

Total SRAM used                                 32.20 KiB
Total DRAM used                                  6.20 KiB

CPU operators = 0 (0.0%)
NPU operators = 39 (100.0%)
   NPU: Conv2D = functional_1/conv2d_1/Relu;functional_1/conv2d_1/convolution (outputs [1, 32, 32, 8])
   NPU: DepthwiseConv2D = functional_1/depthwise_conv2d_1/Relu6;functional_1/depthwise_conv2d_1/depthwise (outputs [1, 32, 32, 8])
   NPU: MaxPool = functional_1/max_pooling2d_1/MaxPool2d (outputs [1, 16, 16, 8])
   NPU: FullyConnected = functional_1/dense_1/MatMul (outputs [1, 1, 1, 10])

Neural network macs                            340148 MACs/batch
"""

# Captured header + first row of OUT/M_summary_Ethos_U65_High_End.csv (selected columns).
SUMMARY_CSV = """\
experiment,network,accelerator_configuration,system_config,memory_mode,core_clock,inference_time,inferences_per_second,nn_macs,cycles_npu,cycles_sram_access,cycles_dram_access,cycles_total
default,M,Ethos_U65_256,Ethos_U65_High_End,Dedicated_Sram_512KB,1000000000.0,3.3401e-05,29939.2,340148,29603,7764,17749,33401
"""

# Captured (abridged): vela 5.2.0 on the same CNN with a tf.math.cumsum (float, unsupported) after the maxpool.
CPU_STDOUT = """\
TfLiteReader: Built-in options type 'CumsumOptions' is not yet implemented and will be ignored.

Warning (supported operators) operator: QUANTIZE, ofm: 'tfl.quantize'
Reason: Operation has tensor with unsupported DataType Float32 (functional_1/lambda_1/Cumsum)
Feature-map dataTypes must be one of {"INT16", "INT32", "INT64", "INT8", "UINT8"}

Warning (supported operators) operator: CUMSUM, ofm: 'functional_1/lambda_1/Cumsum'
Reason: Unsupported opType

Network summary for C
CPU operators = 3 (7.1%)
   CPU: Passthrough = functional_1/lambda_1/Cumsum (outputs [1, 16, 16, 8])
   CPU: Passthrough = tfl.quantize (outputs [1, 16, 16, 8])
NPU operators = 39 (92.9%)
   NPU: Conv2D = functional_1/conv2d_1/Relu;functional_1/conv2d_1/convolution (outputs [1, 32, 32, 8])
"""


def test_parse_vela_output_npu() -> None:
    r = parse_vela_output(VELA_STDOUT)
    assert (r.npu_ops, r.cpu_ops) == (39, 0)
    assert [o.op for o in r.ops] == ["Conv2D", "DepthwiseConv2D", "MaxPool", "FullyConnected"]
    assert all(o.target == "npu" for o in r.ops)
    assert r.ops[2].name == "functional_1/max_pooling2d_1/MaxPool2d"
    assert r.summary["Accelerator clock"] == "1000 MHz"


def test_parse_vela_output_cpu_reason() -> None:
    r = parse_vela_output(CPU_STDOUT)
    cpu = [o for o in r.ops if o.target == "cpu"]
    assert r.cpu_ops == 3 and len(cpu) == 2 and r.npu_ops == 39
    assert cpu[0].op == "CUMSUM" and cpu[0].reason == "Unsupported opType"
    assert cpu[1].op == "QUANTIZE" and "unsupported DataType Float32" in cpu[1].reason
    assert "Feature-map dataTypes" in cpu[1].reason


def test_parse_summary_csv() -> None:
    s = parse_vela_summary_csv(SUMMARY_CSV)
    assert s["cycles_total"] == 33401
    assert s["inference_ms"] == pytest.approx(0.033401)


# -- engine against a fake delegate ----------------------------------------------------------------

class _FakeInterp:
    def __init__(self, model_path: str, experimental_delegates=None, num_threads: int = 1) -> None:
        self.model_path, self.delegates, self.threads = model_path, experimental_delegates, num_threads


def _fake_module(calls: list) -> types.ModuleType:
    m = types.ModuleType("tflite_runtime.interpreter")

    def load_delegate(lib, opts=None):
        calls.append((lib, opts))
        if "missing" in lib:
            raise ValueError("Failed to load delegate from " + lib)
        return object()

    m.load_delegate = load_delegate  # type: ignore[attr-defined]
    m.Interpreter = _FakeInterp  # type: ignore[attr-defined]
    return m


def test_engine_loads_delegate(monkeypatch, tmp_path: Path) -> None:
    lib = tmp_path / "libethosu_delegate.so"
    lib.write_bytes(b"")
    calls: list = []
    monkeypatch.setattr(ethosu, "interpreter_module", lambda name: _fake_module(calls))
    monkeypatch.setenv("EDGESDK_ETHOSU_DELEGATE", str(lib))
    it = EthosUEngine()._make_interpreter(tmp_path / "m_vela.tflite", {"threads": 2})
    assert calls == [(str(lib), {})] and it.threads == 2 and len(it.delegates) == 1
    assert EthosUEngine.name == "ethosu" and "libethosu_delegate.so" in EthosUEngine.install_hint


def test_engine_delegate_missing(monkeypatch, tmp_path: Path) -> None:
    from edgesdk.runtime.errors import EngineUnavailable

    monkeypatch.setattr(ethosu, "interpreter_module", lambda name: _fake_module([]))
    with pytest.raises(EngineUnavailable):
        EthosUEngine()._make_interpreter(tmp_path / "m.tflite", {"delegate": "/missing/libethosu_delegate.so"})


def test_available_needs_delegate(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ethosu.TFLiteEngine, "available", classmethod(lambda cls: True))
    monkeypatch.delenv("EDGESDK_ETHOSU_DELEGATE", raising=False)
    monkeypatch.setattr(ethosu, "DELEGATE_PATHS", (str(tmp_path / "none.so"),))
    assert not EthosUEngine.available()
    (tmp_path / "none.so").write_bytes(b"")
    assert EthosUEngine.available()


# -- the vela command and one real compile ----------------------------------------------------------

def test_compile_step_argv(tmp_path: Path) -> None:
    a = VelaAdapter(venv=tmp_path / "venv")
    cmd, outs = a.compile_step(tmp_path / "s0.tflite", tmp_path, "s0", {})
    assert any(x.endswith("bin/vela") for x in cmd.argv) and "--show-cpu-operations" in cmd.argv
    assert outs["log"].name == "s0_vela.log"  # vela's stdout (per-op placement) is kept
    assert cmd.argv[cmd.argv.index("--accelerator-config") + 1] == "ethos-u65-256"
    assert outs["model"].name == "s0_vela.tflite"
    assert outs["summary"].name == "s0_summary_Ethos_U65_High_End.csv"


TFLITE_PY = toolchain_venv("tflite") / "bin" / "python"
VENV = toolchain_venv("vela")
_MK = """
import sys, numpy as np, tensorflow as tf
inp = tf.keras.Input((16, 16, 3), batch_size=1)
x = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
x = tf.keras.layers.GlobalAveragePooling2D()(x)
m = tf.keras.Model(inp, x)
c = tf.lite.TFLiteConverter.from_keras_model(m)
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.representative_dataset = lambda: ([np.random.rand(1, 16, 16, 3).astype("float32")] for _ in range(4))
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = tf.int8; c.inference_output_type = tf.int8
open(sys.argv[1], "wb").write(c.convert())
"""


def test_real_vela_compile(tmp_path: Path) -> None:
    if not (VENV / "bin" / "vela").is_file() or not TFLITE_PY.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"vela venv {VENV} or the tflite venv is missing under CI")
        pytest.skip("vela venv (~/.cache/edgesdk/toolchains/vela/venv) or tflite venv not installed")
    tfl = tmp_path / "s0.tflite"
    subprocess.run([str(TFLITE_PY), "-c", _MK, str(tfl)], check=True, capture_output=True, timeout=120)
    a = VelaAdapter()
    cmd, outs = a.compile_step(tfl, tmp_path, "s0", {})
    r = subprocess.run(list(cmd.argv), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert outs["model"].is_file() and outs["summary"].is_file()
    rep = parse_vela_output(r.stdout)
    assert rep.npu_ops >= 1 and rep.cpu_ops == 0
    est = parse_vela_summary_csv(outs["summary"].read_text())
    assert 0 < est["inference_ms"] < 10

    # a user's own int8 .tflite for imx93 goes to vela as it is (edgesdk convert model.tflite --board imx93)
    import json

    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.runtime.manifest import load_manifest

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        res = CliRunner().invoke(app, ["convert", "s0.tflite", "--board", "imx93", "-o", "b", "--json"])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout[res.stdout.index("{"):])
    (seg,) = load_manifest(tmp_path / "b").segments
    assert seg.engine == "ethosu" and seg.accelerator and seg.cpu_version.engine == "tflite"
    assert seg.options["vendor_estimate_ms"] > 0
    assert any("ops on the Ethos-U" in w for w in out["warnings"])


def test_pow_goes_to_the_ethos_u_only_as_a_square(tmp_path: Path) -> None:
    """vela 5.2.0 was seen to run Pow(x, 2) (x * x) on the NPU, nothing else: the op table says exactly that."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgesdk.boards import get_board
    from edgesdk.graph.load import load_model
    from edgesdk.graph.support import check_support

    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"], name="square"),
             helper.make_node("Pow", ["sq", "half"], ["y"], name="root")]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    g = helper.make_graph(nodes, "pow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, str(tmp_path / "pow.onnx"))
    where = {p.node: p for p in check_support(load_model(tmp_path / "pow.onnx"), get_board("imx93")).placements}
    assert where["square"].target == "accelerator"
    assert where["root"].target == "cpu" and any("is not 2" in r for r in where["root"].reasons)


def test_inspect_compiler_runs_vela_and_maps_its_ops_to_the_model(tmp_path: Path, monkeypatch) -> None:
    """`edgesdk inspect --board imx93 --compiler`: the int8 TFLite compiled by vela, its per-op placement found back
    on the ONNX nodes by value."""
    import json
    import os

    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.toolchains.adapters.vela import VelaAdapter

    if not (VelaAdapter().vendor_env().ok and VelaAdapter().tflite.check_env().ok):
        if os.environ.get("CI") == "true":
            pytest.fail("vela or tflite toolchain not ready (scripts/setup.sh installs them)")
        pytest.skip("vela or tflite toolchain not ready")
    model = Path(__file__).resolve().parents[1] / "data" / "digits_cnn.onnx"
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["inspect", str(model), "--board", "imx93", "--compiler", "--json"])
    assert r.exit_code == 0, r.stdout
    cr = json.loads(r.stdout)["compiler_run"]
    assert cr["tool"] == "ethos-u-vela==5.2.0" and cr["mapped"] >= 8 and cr["nodes"] == 11
    assert cr["agreement_percent"] == 100.0 and cr["cpu_nodes"] == []  # the digits CNN is all Ethos-U ops


def test_tflite_outputs_the_signature_does_not_name_are_found_by_shape() -> None:
    """onnx2tf renamed the outputs (picodet's 8 heads): each is the unnamed TFLite output of its shape, NCHW or NHWC,
    not the one at its position."""
    from edgesdk.toolchains.adapters.base import IOSpec
    from edgesdk.toolchains.adapters.tflite import _match

    specs = (IOSpec("scores", (1, 7600, 10)), IOSpec("boxes", (1, 7600, 32)), IOSpec("feat", (1, 8, 4, 6)))
    details = [{"index": 5, "name": "Identity", "shape": [1, 7600, 32], "dtype": "float32"},
               {"index": 6, "name": "Identity_1", "shape": [1, 4, 6, 8], "dtype": "float32"},
               {"index": 7, "name": "Identity_2", "shape": [1, 7600, 10], "dtype": "float32"}]
    got = {t.name: (t.engine_name, t.layout) for t in _match(specs, details, {}, "output")}
    assert got == {"scores": ("Identity_2", None), "boxes": ("Identity", None), "feat": ("Identity_1", "NHWC")}
    with pytest.raises(Exception, match="no output"):
        _match((IOSpec("other", (1, 3)),), details[:1], {}, "output")


def test_tflite_outputs_named_output_k_follow_the_onnx_order() -> None:
    """onnx2tf names outputs output_0.. in the ONNX graph's order when it cannot keep their names: yolov8n's
    /model.18/Split outputs (same shape) on imx93 were swapped by position (cosine 0.02), caught by the CPU version's
    check."""
    from edgesdk.toolchains.adapters.base import IOSpec
    from edgesdk.toolchains.adapters.tflite import _match

    specs = (IOSpec("/m9", (1, 256, 10, 10)), IOSpec("/m15", (1, 64, 40, 40)), IOSpec("/split_0", (1, 64, 20, 20)),
             IOSpec("/split_1", (1, 64, 20, 20)))
    details = [{"index": 202, "name": "PartitionedCall:1", "shape": [1, 40, 40, 64], "dtype": "float32"},
               {"index": 212, "name": "PartitionedCall:3", "shape": [1, 20, 20, 64], "dtype": "float32"},
               {"index": 167, "name": "PartitionedCall:0", "shape": [1, 10, 10, 256], "dtype": "float32"},
               {"index": 211, "name": "PartitionedCall:2", "shape": [1, 20, 20, 64], "dtype": "float32"}]
    sig = {"output_0": 167, "output_1": 202, "output_2": 211, "output_3": 212}
    got = {t.name: t.engine_name for t in _match(specs, details, sig, "output")}
    assert got == {"/m9": "PartitionedCall:0", "/m15": "PartitionedCall:1", "/split_0": "PartitionedCall:2",
                   "/split_1": "PartitionedCall:3"}

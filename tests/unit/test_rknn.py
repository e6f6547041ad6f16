"""rknn: the RKNNLite engine against a fake, the compiler-table parser on a real captured log, one real build."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime.engines import rknn as rk
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.adapters.base import CalibData, ConversionJob, IOSpec
from edgesdk.toolchains.adapters.rknn import RknnAdapter, map_to_onnx, parse_layer_table, placement

#: Captured from rknn-toolkit2 2.5.0 (verbose build of the tiny CNN below: conv1/relu1/pool1/erf1/flat1/fc1).
LOG = r"""D RKNN: [23:03:25.694]                                                         Network Layer Information Table                                                      
D RKNN: [23:03:25.694] --------------------------------------------------------------------------------------------------------------------------------------------------------------------------
D RKNN: [23:03:25.694] ID   OpType             DataType Target InputShape                               OutputShape            Cycles(DDR/NPU/Total)    RW(KB)       FullName        
D RKNN: [23:03:25.694] --------------------------------------------------------------------------------------------------------------------------------------------------------------------------
D RKNN: [23:03:25.694] 0    InputOperator      INT8     CPU    \                                        (1,3,16,16)            0/0/0                    0            InputOperator:x 
D RKNN: [23:03:25.694] 1    ConvRelu           INT8     NPU    (1,3,16,16),(8,3,3,3),(8)                (1,8,16,16)            266/2304/2304            2            Conv:conv1      
D RKNN: [23:03:25.694] 2    MaxPool            INT8     NPU    (1,8,16,16)                              (1,8,8,8)              0/0/0                    4            MaxPool:pool1   
D RKNN: [23:03:25.694] 3    Erf                INT8     CPU    (1,8,8,8)                                (1,8,8,8)              0/0/0                    1            Erf:erf1        
D RKNN: [23:03:25.694] 4    Reshape            INT8     NPU    (1,8,8,8),(4)                            (1,512,1,1)            0/0/0                    0            Reshape:f1_tp_rs
D RKNN: [23:03:25.694] 5    Conv               INT8     NPU    (1,512,1,1),(10,512,1,1),(10)            (1,10,1,1)             250/256/256              5            Conv:fc1#2      
D RKNN: [23:03:25.694] 6    Reshape            INT8     CPU    (1,10,1,1),(2)                           (1,10)                 0/0/0                    0            Reshape:y_mm_tp_rs
D RKNN: [23:03:25.694] 7    OutputOperator     INT8     CPU    (1,10)                                   \                      0/0/0                    0            OutputOperator:y
D RKNN: [23:03:25.694] --------------------------------------------------------------------------------------------------------------------------------------------------------------------------
D RKNN: [23:03:25.694] <<<<<<<< end: rknn::RKNNModelRegCmdbuildPass
D RKNN: [23:03:25.694] >>>>>> start: rknn::RKNNModelExportPass
D RKNN: [23:03:25.694] Export RKNN model to /tmp/tmpyx754ls8/check.rknn
D RKNN: [23:03:25.694] <<<<<<<< end: rknn::RKNNModelExportPass
D RKNN: [23:03:25.695] >>>>>> start: rknn::RKNNMemStatisticsPass
D RKNN: [23:03:25.695] -------------------------------------------------------------------------------------------------------------------------
D RKNN: [23:03:25.695]                                         Feature Tensor Information Table                            
D RKNN: [23:03:25.695] ---------------------------------------------------------------------------------------+---------------------------------
D RKNN: [23:03:25.695] ID  User           Tensor           DataType  DataFormat   OrigShape    NativeShape    |     [Start       End)       Size
D RKNN: [23:03:25.695] ---------------------------------------------------------------------------------------+---------------------------------
D RKNN: [23:03:25.695] 1   ConvRelu       x                INT8      NC1HWC2      (1,3,16,16)  (1,1,16,16,3)  | 0x00000000 0x00000300 0x00000300
D RKNN: [23:03:25.695] 2   MaxPool        r1               INT8      NC1HWC2      (1,8,16,16)  (1,2,16,16,16) | 0x00000300 0x00002300 0x00002000
D RKNN: [23:03:25.695] 3   Erf            p1               INT8      NC1HWC2      (1,8,8,8)    (1,1,8,8,16)   | 0x00002300*0x00002700 0x00000400
D RKNN: [23:03:25.695] 4   Reshape        e1               INT8      UNDEFINED    (1,8,8,8)    (1,8,8,8)      | 0x00000000 0x00000400 0x00000400
D RKNN: [23:03:25.695] 4   Reshape        e1_exSecondary   INT8      NC1HWC2      (1,8,8,8)    (1,0,8,8,16)   | 0x00000400 0x00000600 0x00000200
D RKNN: [23:03:25.695] 5   Conv           f1_tp_rs         INT8      NC1HWC2      (1,512,1,1)  (1,64,1,1,16)  | 0x00000000 0x00000400 0x00000400
D RKNN: [23:03:25.695] 6   Reshape        y_mm             INT8      NC1HWC2      (1,10,1,1)   (1,2,1,1,16)   | 0x00000400 0x00000420 0x00000020
D RKNN: [23:03:25.695] 7   OutputOperator y                INT8      UNDEFINED    (1,10)       (1,10)         | 0x00000040 0x00000080 0x00000040
D RKNN: [23:03:25.695] ---------------------------------------------------------------------------------------+---------------------------------
D RKNN: [23:03:25.695] ------------------------------------------------------------------------------------
D RKNN: [23:03:25.695]                             Const Tensor Information Table            
"""

ONNX_NODES = [("conv1", ["x", "w1", "b1"], ["c1"]), ("relu1", ["c1"], ["r1"]), ("pool1", ["r1"], ["p1"]),
              ("erf1", ["p1"], ["e1"]), ("flat1", ["e1"], ["f1"]), ("fc1", ["f1", "w2", "b2"], ["y"])]


def test_parse_layer_table():
    rows = parse_layer_table(LOG)
    assert [(r.id, r.op, r.target) for r in rows] == [
        (0, "InputOperator", "CPU"), (1, "ConvRelu", "NPU"), (2, "MaxPool", "NPU"), (3, "Erf", "CPU"),
        (4, "Reshape", "NPU"), (5, "Conv", "NPU"), (6, "Reshape", "CPU"), (7, "OutputOperator", "CPU")]
    assert rows[1].dtype == "INT8" and rows[1].output_shape == "(1,8,16,16)" and rows[1].cycles == "266/2304/2304"
    assert rows[4].tensors == ("e1",)  # the _exSecondary copy is dropped
    assert rows[5].full_name == "Conv:fc1#2"
    mapped = map_to_onnx(rows, ONNX_NODES)
    # by FullName (fc1#2: the Gemm rewritten to a Conv); flat1 through its only-consumed input tensor e1
    assert placement(mapped) == {"conv1": "npu", "pool1": "npu", "erf1": "cpu", "flat1": "npu", "fc1": "npu"}


def test_a_tensor_feeding_several_nodes_does_not_name_a_row():
    """A residual: x feeds a Conv (NPU) and an Add (CPU). Only FullName names a row, never a shared tensor."""
    from edgesdk.toolchains.adapters.rknn import LayerRow

    nodes = [("conv", ["x", "w"], ["c"]), ("add", ["c", "x"], ["y"])]
    rows = [LayerRow(1, "Conv", "INT8", "NPU", "", "", tensors=("x",), full_name="Conv:conv"),
            LayerRow(2, "Add", "INT8", "CPU", "", "", tensors=("c", "x"), full_name="Add:add"),
            LayerRow(3, "Reshape", "INT8", "CPU", "", "", tensors=("x",), full_name="Reshape:made_by_rknn")]
    assert placement(map_to_onnx(rows, nodes)) == {"conv": "npu", "add": "cpu"}


# -- engine against a fake RKNNLite ---------------------------------------------------------------------
class FakeRKNNLite:
    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2, NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 0, 1, 2, 4, 3, 7, 0xFFFF
    last: FakeRKNNLite | None = None
    fail_init = False

    def __init__(self):
        self.calls = []
        FakeRKNNLite.last = self

    def load_rknn(self, path):
        self.calls.append(("load_rknn", path))
        return 0

    def init_runtime(self, core_mask=0):
        self.calls.append(("init_runtime", core_mask))
        return -1 if FakeRKNNLite.fail_init else 0

    def inference(self, inputs, data_format=None):
        self.calls.append(("inference", [x.shape for x in inputs], data_format))
        return [inputs[0].reshape(1, -1)[:, :10] * 2]

    def release(self):
        self.calls.append(("release",))


@pytest.fixture
def fake_lite(monkeypatch):
    pkg = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = FakeRKNNLite
    pkg.api = api
    monkeypatch.setitem(sys.modules, "rknnlite", pkg)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    FakeRKNNLite.fail_init = False
    return FakeRKNNLite


def _specs():
    return (TensorSpec("x", (1, 3, 16, 16), "float32"),), (TensorSpec("y", (1, 10), "float32"),)


def test_engine_runs_fake(fake_lite, tmp_path):
    e = rk.RknnEngine()
    ins, outs = _specs()
    e.load({"model": tmp_path / "m.rknn"}, ins, outs, {"core_mask": "0_1_2"})
    x = np.ones((1, 3, 16, 16), np.float32)
    y = e.run({"x": x})
    assert y["y"].shape == (1, 10) and float(y["y"][0, 0]) == 2.0
    calls = fake_lite.last.calls
    assert calls[0] == ("load_rknn", str(tmp_path / "m.rknn"))
    assert calls[1] == ("init_runtime", FakeRKNNLite.NPU_CORE_0_1_2)
    assert calls[2] == ("inference", [(1, 3, 16, 16)], ["nchw"])
    e.close()
    assert calls[-1] == ("release",)


def test_engine_default_core_mask_and_errors(fake_lite, tmp_path):
    e = rk.RknnEngine()
    ins, outs = _specs()
    e.load({"model": tmp_path / "m.rknn"}, ins, outs, {})
    assert fake_lite.last.calls[1] == ("init_runtime", FakeRKNNLite.NPU_CORE_AUTO)
    with pytest.raises(EngineFailure):
        e.run({})
    with pytest.raises(EngineFailure):
        rk.RknnEngine().load({"model": tmp_path / "m.rknn"}, ins, outs, {"core_mask": "bogus"})
    fake_lite.fail_init = True
    with pytest.raises(EngineFailure):
        rk.RknnEngine().load({"model": tmp_path / "m.rknn"}, ins, outs, {})


def test_missing_says_what(fake_lite, tmp_path, monkeypatch):
    monkeypatch.setattr(rk, "_lib_loadable", lambda: False)
    miss = rk.missing(str(tmp_path))
    assert not any("rknnlite" in m for m in miss)
    assert any("librknnrt.so" in m for m in miss) and any("device node" in m for m in miss)
    assert not rk.RknnEngine.available()
    # a DRM render node whose driver is rknpu counts
    (tmp_path / "dev/dri").mkdir(parents=True)
    (tmp_path / "dev/dri/renderD129").touch()
    drv = tmp_path / "drivers/rknpu"
    drv.mkdir(parents=True)
    dev = tmp_path / "sys/class/drm/renderD129/device"
    dev.mkdir(parents=True)
    (dev / "driver").symlink_to(drv)
    assert rk._npu_node(str(tmp_path)) == str(tmp_path / "dev/dri/renderD129")
    monkeypatch.setattr(rk, "_lib_loadable", lambda: True)
    assert rk.missing(str(tmp_path)) == []


# -- one real build + simulator run ------------------------------------------------------------------------
def _tiny_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (10, 512)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Erf", ["p1"], ["e1"], name="erf1"),
             helper.make_node("Flatten", ["e1"], ["f1"], name="flat1"),
             helper.make_node("Gemm", ["f1", "w2", "b2"], ["y"], name="fc1", transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_real_build_and_simulator(tmp_path):
    a = RknnAdapter()
    st = a.vendor_env()
    if not st.ok:
        why = f"rknn toolchain not ready: {st.detail} (fix: {st.fix})"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    from edgesdk.toolchains.executor import execute

    _tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(1).uniform(0, 1, (4, 3, 16, 16)).astype(np.float32))
    job = ConversionJob("s0", tmp_path / "tiny.onnx", tmp_path, "int8", (IOSpec("x", (1, 3, 16, 16)),),
                        (IOSpec("y", (1, 10)),), CalibData(tmp_path / "calib.npz", 4))
    plan = a.plan(job)
    execute(plan)
    assert plan.outputs["model"].stat().st_size > 0
    assert plan.outputs["sim"].is_file()  # the host int8 simulation (rknn scheme): the segment's CPU version
    art = a.describe(job, plan)
    import onnx

    m = onnx.load(str(tmp_path / "tiny.onnx"))
    view = a.compiler_view(plan, [(n.name, list(n.input), list(n.output)) for n in m.graph.node])
    assert view["label"] == "vendor compiler"
    assert view["placement"]["erf1"] == "cpu" and view["placement"]["conv1"] == "npu"
    import json

    assert json.loads(plan.outputs["report"].read_text())["cosine"]["y"] > 0.99  # simulator vs onnxruntime
    assert any("on the NPU" in n for n in art.notes)
    # accuracy_analysis's per-layer table, mapped to the ONNX nodes that write each tensor, for edgesdk verify
    doc = json.loads(art.files["vendor_layers"].read_text())
    by_node = {x["node"]: x for x in doc["layers"] if x["node"]}
    assert "conv1" in by_node or "relu1" in by_node, doc
    assert all(0.0 <= x["cosine"] <= 1.0 + 1e-6 for x in doc["layers"])
    assert not (tmp_path / "s0_rknn_accuracy.txt.d").exists()  # the per-tensor dumps are not kept


#: rknn-toolkit2 2.5.0's error_analysis.txt for the digits CNN (tests/data/digits_cnn.onnx), as written here
ERROR_ANALYSIS = """\
layer_name                                         simulator_error
                                               entire              single
                                            cos      euc        cos      euc
----------------------------------------------------------------------------------
[Input] image                             1.00000 | 0.00000   1.00000 | 0.00000
[exDataConvert] image_int8                0.99999 | 0.14328   0.99999 | 0.14328
[Conv] /0/Conv_output_0
[Relu] /2/Relu_output_0                   0.99996 | 0.90032   0.99996 | 0.90032
[Conv] /11/GlobalAveragePool_2conv0       0.99986 | 1.02898   0.99999 | 0.20106
[ConvTranspose] p2o.ConvTranspose.3        0.99272 | 3422.526860.99996 | 188.36549
[exDataConvert] logits                    0.99979 | 0.49588   0.99999 | 0.07981
"""


def test_parse_accuracy_analysis_keeps_the_rows_with_figures():
    from edgesdk.toolchains.adapters.rknn import parse_accuracy_analysis

    rows = parse_accuracy_analysis(ERROR_ANALYSIS)
    assert [r["tensor"] for r in rows] == ["image", "image_int8", "/2/Relu_output_0",
                                          "/11/GlobalAveragePool_2conv0", "p2o.ConvTranspose.3", "logits"]
    # (the fused Conv has none; the ConvTranspose row is ppocr-det's, whose euclidean runs into the next cosine)
    assert rows[4]["euclidean"] == 3422.52686 and rows[4]["single_cosine"] == 0.99996
    r = rows[2]
    assert r["op_type"] == "Relu" and r["cosine"] == 0.99996 and r["euclidean"] == 0.90032
    assert rows[3]["single_cosine"] == 0.99999 and rows[3]["single_euclidean"] == 0.20106


def test_probe_names_what_an_rk3588_lacks_and_takes_either_npu_node():
    from edgesdk.boards import get_board
    from edgesdk.deploy.probe import accelerator_present, missing_devices

    prof = get_board("rk3588")
    bare = {"dev_nodes": {n: False for n in prof.detect.dev_nodes}, "tools": {"librknnrt.so": None}}
    miss = missing_devices(prof, bare)
    assert any("/dev/rknpu or" in m for m in miss) and any("librknnrt.so" in m for m in miss)
    assert not accelerator_present(prof, bare)
    one = {"dev_nodes": {"/dev/rknpu": True, "/dev/dri/renderD129": False}, "tools": {"librknnrt.so": "/usr/lib/x"}}
    assert missing_devices(prof, one) == [] and accelerator_present(prof, one)


def test_the_board_wheelhouse_takes_rknn_toolkit_lite2_and_its_needs_from_the_record():
    from edgesdk.deploy.wheelhouse import engine_packages

    assert engine_packages({"rknn"}) == ["rknn-toolkit-lite2==2.5.0", "psutil", "ruamel.yaml"]


def test_the_vendor_simulator_decides_when_it_is_here(tmp_path):
    """convert judges an accelerator with a vendor simulator by that simulator's outputs on the reference input:
    a host-simulation miss is a warning when the simulator meets the tolerance, and a simulator miss refuses."""
    from types import SimpleNamespace

    from edgesdk.conversion import ConversionFailed, _vendor_sim_verdict
    from edgesdk.convert_base import Attempt

    ref = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)
    job = ConversionJob("s0", tmp_path / "m.onnx", tmp_path, "int8", (IOSpec("x", (1, 3)),), (IOSpec("y", (1, 64)),),
                        None)
    host_miss = Attempt("rknn (host int8 simulation)", "int8", False, "verify", "cosine 0.9", cosine=0.9)
    close = SimpleNamespace(engine="rknn", vendor="rknn-toolkit2", scheme="rknn",
                            simulated_outputs=lambda j, p: [{"y": ref + 0.001}])
    warnings: list[str] = []
    _vendor_sim_verdict(close, job, None, {"y": ref}, None, None, host_miss, "m", warnings)
    assert "misses the tolerance (cosine 0.90000)" in warnings[0] and "--fallback cpu" in warnings[0]
    far = SimpleNamespace(**{**close.__dict__, "simulated_outputs": lambda j, p: [{"y": ref[:, ::-1].copy()}]})
    with pytest.raises(ConversionFailed) as e:
        _vendor_sim_verdict(far, job, None, {"y": ref}, None, None, None, "m", [])
    assert "vendor's simulator" in str(e.value) and "output 'y'" in str(e.value)
    none = SimpleNamespace(**{**close.__dict__, "simulated_outputs": lambda j, p: None})
    with pytest.raises(ConversionFailed, match="ran no sample"):
        _vendor_sim_verdict(none, job, None, {"y": ref}, None, None, host_miss, "m", [])


def test_inspect_compiler_runs_rknn_and_compares_it_with_our_table(tmp_path, monkeypatch):
    """`edgesdk inspect --board rk3588 --compiler` (from a user's directory): RKNN-Toolkit2 builds the model and
    its placement is set beside edgesdk's, node by node."""
    if not RknnAdapter().vendor_env().ok:
        if os.environ.get("CI") == "true":
            pytest.fail("rknn toolchain not ready (scripts/setup.sh installs it)")
        pytest.skip("rknn toolchain not ready")
    import json

    from typer.testing import CliRunner

    from edgesdk.cli import app

    _tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["inspect", "tiny.onnx", "--board", "rk3588", "--compiler", "--json"])
    assert r.exit_code == 0, r.stdout
    cr = json.loads(r.stdout)["compiler_run"]
    assert cr["label"] == "vendor compiler" and cr["tool"].startswith("rknn-toolkit2")
    assert cr["mapped"] >= 3 and "erf1" in cr["cpu_nodes"]  # RKNN runs Erf on the CPU
    for d in cr["disagreements"]:
        assert {"node", "op_type", "edgesdk", "compiler"} <= set(d) and d["edgesdk"] != d["compiler"]
    assert cr["agreement_percent"] == round(100 * (cr["mapped"] - len(cr["disagreements"])) / cr["mapped"], 1)
    r = CliRunner().invoke(app, ["inspect", "tiny.onnx", "--board", "rpi4", "--compiler"])
    assert r.exit_code == 2 and "no accelerator" in r.output


def test_mean_and_std_folded_into_the_rknn_take_pixels_back(tmp_path):
    """Segment options mean_values/std_values: RKNN normalizes on the NPU, so every array the driver gives it (the
    calibration dataset, the simulator check, check_feeds) is turned back into pixels; the outputs still match
    onnxruntime on the normalized inputs."""
    a = RknnAdapter()
    if not a.vendor_env().ok:
        if os.environ.get("CI") == "true":
            pytest.fail("rknn toolchain not ready (scripts/setup.sh installs it)")
        pytest.skip("rknn toolchain not ready")
    import json

    import onnxruntime as ort

    from edgesdk.toolchains.executor import execute

    _tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    pixels = rng.uniform(0, 255, (6, 3, 16, 16)).astype(np.float32)
    normed = ((pixels - 127.5) / 64.0).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=normed[:4])
    np.savez(tmp_path / "feeds.npz", x=normed[4:])
    job = ConversionJob("s0", tmp_path / "tiny.onnx", tmp_path, "int8", (IOSpec("x", (1, 3, 16, 16)),),
                        (IOSpec("y", (1, 10)),), CalibData(tmp_path / "calib.npz", 4),
                        {"mean_values": [[127.5] * 3], "std_values": [[64.0] * 3], "accuracy_analysis": False,
                         "check_feeds": str(tmp_path / "feeds.npz")})
    plan = a.plan(job)
    execute(plan)
    assert float(np.load(tmp_path / "s0_rknn_calib" / "0_0.npy").max()) > 100  # the dataset is pixels
    assert json.loads(plan.outputs["report"].read_text())["cosine"]["y"] > 0.99
    got = a.simulated_outputs(job, plan)
    s = ort.InferenceSession(str(tmp_path / "tiny.onnx"))
    for k, g in enumerate(got):
        ref = s.run(None, {"x": normed[4 + k:5 + k]})[0].ravel()
        y = g["y"].ravel()
        assert float(y @ ref / (np.linalg.norm(y) * np.linalg.norm(ref))) > 0.99

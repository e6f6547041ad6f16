"""The MNN adapter's int8 options and its mixed-precision pieces, without MNN: option checks, the plan's steps, the
ONNX -> MNN op mapping (fusions, data movement, folds) and the int8 model edit, on small hand-made graphs shaped
like what MNN 3.6.1 produced for YOLOv8n (tests/integration/test_mnn_mixed.py runs the real thing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters import CalibData, ConversionJob, ConversionRefused, IOSpec
from edgesdk.toolchains.adapters.mnn import (
    MnnAdapter,
    activation_scales,
    edit_int8,
    int8_shortfall,
    kept_notes,
    main,
    map_kept,
    runtime_status,
)

W = Path("/WORK")


def _job(options: dict, onnx_path: Path = W / "s0.onnx", work: Path = W, count: int = 200) -> ConversionJob:
    cal = CalibData(work / "s0_calib.npz", count, work / "s0_calib_images", (127.5,) * 3, (1 / 127.5,) * 3, "RGB")
    return ConversionJob("s0", onnx_path, work, "int8", (IOSpec("image", (1, 3, 32, 32)),),
                         (IOSpec("logits", (1, 10)),), cal, options)


def _plan(options: dict, **kw):
    return MnnAdapter(venv=Path("/VENV"), python="/HOST/python").plan(_job(options, **kw))


def _check_argv(plan) -> tuple[str, ...]:
    (check,) = [c for c in plan.commands if c.tool == "mnn-check"]
    return check.argv


def test_methods_are_mnnquant_s_own() -> None:
    assert MnnAdapter.int8_methods == ("KL", "ADMM", "EMA")
    assert MnnAdapter.weight_methods == ("MAX_ABS", "ADMM")
    assert MnnAdapter.int8_exclude


@pytest.mark.parametrize(("options", "named"), [
    ({"mnn_feature_method": "minmax"}, "mnn_feature_method"),
    ({"mnn_weight_method": "PER_TENSOR"}, "mnn_weight_method"),
    ({"exclude_nodes": "/model.22/Concat_25"}, "exclude_nodes"),
    ({"exclude_nodes": ["a", ""]}, "exclude_nodes"),
    ({"exclude_nodes": ["a"], "mnn_feature_method": "EMA"}, "EMA"),
])
def test_bad_options_are_input_errors_naming_the_option(options: dict, named: str) -> None:
    with pytest.raises(InputError, match=named):
        _plan(options)


def test_methods_reach_the_config() -> None:
    plan = _plan({"mnn_feature_method": "KL", "mnn_weight_method": "ADMM"})
    cfg = json.loads(plan.writes[0].content)
    assert cfg["feature_quantize_method"] == "KL" and cfg["weight_quantize_method"] == "ADMM"
    assert "skip_quant_op_names" not in cfg
    (quant,) = [c for c in plan.commands if c.tool == "mnnquant"]
    assert quant.purpose.endswith("KL activation calibration on 200 images, ADMM weights")


def test_kept_nodes_plan_maps_after_the_float_convert_and_edits_after_mnnquant() -> None:
    plan = _plan({"exclude_nodes": ["/a", "/b", "/a"]})
    tools = [c.tool for c in plan.commands]
    assert tools == ["mnnconvert", "mnn-probe", "edgesdk-mnn", "mnnquant", "mnnconvert", "edgesdk-mnn", "mnnconvert",
                     "mnn-probe"]
    keep, base = {w.path.name: w for w in plan.writes}["s0_mnn_keep.json"], plan.writes[0]
    assert json.loads(keep.content) == ["/a", "/b"]  # deduplicated, in order
    assert "skip_quant_op_names" not in json.loads(base.content)  # the mapping step adds it
    skip_cfg = plan.commands[2]
    assert skip_cfg.argv[:4] == ("/HOST/python", "-m", "edgesdk.toolchains.adapters.mnn", "skip-config")
    assert Path(skip_cfg.argv[skip_cfg.argv.index("--config") + 1]) == W / "s0_mnnquant.json"
    assert plan.commands[3].argv[-1] == str(W / "s0_mnnquant.json")
    assert plan.outputs["model"] == W / "s0_mnn.mnn" and plan.commands[6].produces == (W / "s0_mnn.mnn",)
    assert any("2 ONNX node(s) kept in float: /a, /b" in n for n in plan.notes)


def test_kept_node_the_segment_lacks_is_refused_at_plan_time(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/r")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])])
    onnx.save(helper.make_model(g), tmp_path / "s0.onnx")
    plan = _plan({"exclude_nodes": ["/r"]}, onnx_path=tmp_path / "s0.onnx", work=tmp_path)
    assert any("/r -> y" in n for n in plan.notes)  # MNN names an imported op after its node's first output
    with pytest.raises(InputError, match="segment s0.*/nope"):
        _plan({"exclude_nodes": ["/r", "/nope"]}, onnx_path=tmp_path / "s0.onnx", work=tmp_path)


# A YOLO-like tail: Conv -> SiLU (Sigmoid + Mul, which MNN fuses into one UnaryOp) -> Conv; a Concat of both
# branches as the output; a Reshape MNN folds into the Concat's raster; a Softmax; an unused Identity.
NODES = [
    {"name": "/c", "op_type": "Conv", "inputs": ["x", "w"], "outputs": ["c_out"]},
    {"name": "/s", "op_type": "Sigmoid", "inputs": ["c_out"], "outputs": ["s_out"]},
    {"name": "/m", "op_type": "Mul", "inputs": ["c_out", "s_out"], "outputs": ["m_out"]},
    {"name": "/c2", "op_type": "Conv", "inputs": ["m_out", "w2"], "outputs": ["c2_out"]},
    {"name": "/r", "op_type": "Reshape", "inputs": ["c2_out", "shape"], "outputs": ["r_out"]},
    {"name": "/sm", "op_type": "Softmax", "inputs": ["r_out"], "outputs": ["sm_out"]},
    {"name": "/cat", "op_type": "Concat", "inputs": ["m_out", "sm_out"], "outputs": ["y"]},
    {"name": "/dead", "op_type": "Identity", "inputs": ["x"], "outputs": ["dead_out"]},
]
GRAPH = {
    "ops": [
        {"name": "x", "type": "Input", "inputs": [], "outputs": ["x"]},
        {"name": "c_out", "type": "Convolution", "inputs": ["x"], "outputs": ["c_out"]},
        {"name": "m_out", "type": "UnaryOp", "inputs": ["c_out"], "outputs": ["m_out"]},
        {"name": "c2_out", "type": "Convolution", "inputs": ["m_out"], "outputs": ["c2_out"]},
        {"name": "shape", "type": "Const", "inputs": [], "outputs": ["shape"]},
        {"name": "r_out", "type": "Reshape", "inputs": ["c2_out", "shape"], "outputs": ["r_out"]},
        {"name": "sm_out", "type": "Softmax", "inputs": ["r_out"], "outputs": ["sm_out"]},
        {"name": "y", "type": "Concat", "inputs": ["m_out", "sm_out"], "outputs": ["y"]},
    ],
    "commands": [["c_out", "Convolution"], ["m_out", "UnaryOp"], ["c2_out", "Convolution"],
                 ["sm_out_raster_0", "Raster"], ["sm_out", "Softmax"], ["y_raster_0", "Raster"]],
}


def _entry(rep: dict, node: str) -> dict:
    (e,) = [e for e in rep["kept"] if e["node"] == node]
    return e


def test_map_kept_follows_mnn_names_fusions_and_run_time_commands() -> None:
    rep = map_kept(NODES, GRAPH, ["/s", "/m", "/c", "/cat", "/r", "/sm", "/dead"])
    s, m, c = _entry(rep, "/s"), _entry(rep, "/m"), _entry(rep, "/c")
    assert (s["how"], s["mnn"], s["kind"]) == ("fused into", "m_out", "unary")  # Sigmoid absorbed by the SiLU op
    assert (m["how"], m["mnn"]) == ("same op", "m_out")
    assert (c["mnn"], c["kind"], c["commands"]) == ("c_out", "conv", ["c_out"])
    cat = _entry(rep, "/cat")
    assert (cat["kind"], cat["commands"]) == ("data movement", ["y_raster_0"])
    r = _entry(rep, "/r")
    assert (r["kind"], r["folded_into"]) == ("folded", ["sm_out"])  # run inside the Softmax's input raster
    assert _entry(rep, "/sm")["kind"] == "compute"
    assert _entry(rep, "/dead") == {"node": "/dead", "op_type": "Identity", "how": "not in the MNN model", "mnn": []}
    # op names for the weights, run-time names for the statistics
    assert rep["skip_quant_op_names"] == ["m_out", "c_out", "y", "y_raster_0", "r_out", "sm_out"]
    assert rep["tables"] == ["m_out"]
    assert rep["float_tensors"] == ["y", "r_out", "sm_out"]
    assert rep["tied_inputs"] == ["m_out", "sm_out"]  # KL ties a Concat's inputs to its scale
    assert set(rep["propagating_ops"]) == {"r_out", "y"}


def test_map_kept_refuses_unknown_nodes_and_ema_models() -> None:
    with pytest.raises(ValueError, match="segment s3: kept node.*/zz"):
        map_kept(NODES, GRAPH, ["/zz"], "s3")
    bn = {**GRAPH, "ops": [*GRAPH["ops"], {"name": "bn", "type": "BatchNorm", "inputs": ["x"], "outputs": ["bn"]}]}
    with pytest.raises(ValueError, match="BatchNorm.*EMA"):
        map_kept(NODES, bn, ["/c"])


def _net(scales: dict[str, float]) -> dict:
    names = ["x", "c_out", "m_out", "c2_out", "shape", "r_out", "sm_out", "y"]
    ix = {n: i for i, n in enumerate(names)}
    ops = [{"name": o["name"], "type": o["type"], "inputIndexes": [ix[t] for t in o["inputs"]],
            "outputIndexes": [ix[t] for t in o["outputs"]]} for o in GRAPH["ops"]]
    for o in ops:
        if o["type"] == "UnaryOp":
            o["main_type"], o["main"] = "UnaryOp", {"opType": "SILU", "tableInt8": [1] * 255}
    return {"tensorName": names, "oplists": ops,
            "extraTensorDescribe": [{"index": ix[n], "quantInfo": {"scale": s, "zero": 0.0}} for n, s in scales.items()]}


def _scaled(net: dict) -> set[str]:
    return {net["tensorName"][d["index"]] for d in net["extraTensorDescribe"] if "quantInfo" in d}


def test_edit_removes_kept_scales_zero_scales_and_what_mnn_would_propagate_back() -> None:
    rep = map_kept(NODES, GRAPH, ["/r"])  # the folded Reshape: its output loses its scale
    net = _net({"x": 0.02, "c_out": 0.1, "m_out": 0.1, "c2_out": 0.3, "r_out": 0.3, "sm_out": 0.01, "y": 0.0})
    done = edit_int8(net, rep)
    # MNN would give r_out c2_out's scale back (forward through the Reshape): c2_out goes too; y's zero scale (KL's
    # copy of a skipped Concat's missing one) goes; the Softmax's output keeps its own
    assert _scaled(net) == {"x", "c_out", "m_out", "sm_out"}
    assert done["zero_scales"] == ["y"] and done["propagated"] == ["c2_out"]
    assert done["tables_removed"] == []  # the SiLU keeps int8 neighbours: its table stays
    assert net["oplists"][2]["main"]["tableInt8"]
    softmax = _net({"x": 0.02, "c_out": 0.1, "m_out": 0.1, "c2_out": 0.3, "r_out": 0.3, "sm_out": 0.01, "y": 0.5})
    # a kept Softmax: MNN would give its output the Concat's scale back (backward through the Concat's raster)
    assert edit_int8(softmax, map_kept(NODES, GRAPH, ["/sm"]))["scales_removed"] == ["sm_out", "y"]


def test_edit_drops_the_table_of_a_kept_or_stranded_unary() -> None:
    scales = {"x": 0.02, "c_out": 0.1, "m_out": 0.1, "c2_out": 0.3, "r_out": 0.3, "sm_out": 0.01, "y": 0.5}
    kept_unary = _net(scales)
    assert edit_int8(kept_unary, map_kept(NODES, GRAPH, ["/s"]))["tables_removed"] == ["m_out"]
    assert "tableInt8" not in kept_unary["oplists"][2]["main"] and "m_out" in _scaled(kept_unary)
    stranded = _net(scales)  # the Concat's inputs lose their scales: the SiLU feeding it can no longer run int8
    done = edit_int8(stranded, map_kept(NODES, GRAPH, ["/cat"]))
    assert done["tables_removed"] == ["m_out"] and {"m_out", "y", "sm_out"}.isdisjoint(_scaled(stranded))


def test_edit_refuses_a_model_without_activation_scales() -> None:
    with pytest.raises(ValueError, match="no activation scale"):
        edit_int8(_net({"y": 0.0}), map_kept(NODES, GRAPH, ["/cat"]))


def test_runtime_status_reads_the_int8_mark_and_ignores_casts() -> None:
    rep = map_kept(NODES, GRAPH, ["/c", "/cat", "/sm", "/r"])
    commands = [["c_out", "Convolution"], ["m_out", "UnaryOp [ DT_INT8 ] "], ["sm_out_raster_0", "Int8ToFloat"],
                ["sm_out", "Softmax [ DT_INT8 ] "], ["y_raster_0", "FloatToInt8 [ DT_INT8 ] "], ["y_raster_1", "Raster"]]
    state = runtime_status(rep, commands)
    assert state == {"c_out": "float", "y": "float", "sm_out": "int8", "r_out": "no command"}
    notes = kept_notes("s0", {**rep, "runtime": state})
    assert notes[0].startswith("segment s0: 4 ONNX node(s) kept in float on MNN: /c -> c_out [Convolution]: float")
    assert any("still run int8: sm_out" in n for n in notes)
    assert any("/r (into sm_out)" in n for n in notes)


def test_host_steps_write_the_config_and_the_edit(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node(n["op_type"], n["inputs"], n["outputs"], name=n["name"]) for n in NODES]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(g), tmp_path / "s0.onnx")
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "keep.json").write_text(json.dumps(["/cat"]))
    (tmp_path / "base.json").write_text(json.dumps({"feature_quantize_method": "KL"}))
    args = ["--segment", "s0", "--graph", str(tmp_path / "graph.json"), "--keep", str(tmp_path / "keep.json"),
            "--base", str(tmp_path / "base.json"), "--config", str(tmp_path / "q.json"),
            "--report", str(tmp_path / "rep.json")]
    assert main(["skip-config", "--onnx", str(tmp_path / "s0.onnx"), *args]) == 0
    assert json.loads((tmp_path / "q.json").read_text()) == {"feature_quantize_method": "KL",
                                                             "skip_quant_op_names": ["y", "y_raster_0"]}
    (tmp_path / "int8.json").write_text(json.dumps(_net({"x": 0.02, "m_out": 0.1, "sm_out": 0.01, "y": 0.0})))
    assert main(["edit", "--segment", "s0", "--model", str(tmp_path / "int8.json"), "--report",
                 str(tmp_path / "rep.json"), "--out", str(tmp_path / "out.json")]) == 0
    assert _scaled(json.loads((tmp_path / "out.json").read_text())) == {"x"}
    assert json.loads((tmp_path / "rep.json").read_text())["edit"]["zero_scales"] == ["y"]
    # a kept node the segment lacks: exit 1, the reason names the segment and the node
    (tmp_path / "keep.json").write_text(json.dumps(["/nope"]))
    assert main(["skip-config", "--onnx", str(tmp_path / "s0.onnx"), *args]) == 1


def test_data_movement_mnn_inserted_before_kept_ops_only_is_kept_too() -> None:
    nodes = [{"name": "/c", "op_type": "Conv", "inputs": ["x", "w"], "outputs": ["c_out"]},
             {"name": "/add", "op_type": "Add", "inputs": ["c_out", "x"], "outputs": ["y"]}]
    graph = {"ops": [{"name": "x", "type": "Input", "inputs": [], "outputs": ["x"]},
                     {"name": "c_out", "type": "Convolution", "inputs": ["x"], "outputs": ["c_out"]},
                     {"name": "c_out___tr4y", "type": "ConvertTensor", "inputs": ["c_out"], "outputs": ["c_out___tr4y"]},
                     {"name": "y", "type": "BinaryOp", "inputs": ["c_out___tr4y", "x"], "outputs": ["y"]}],
             "commands": [["c_out", "Convolution"], ["y_raster_0", "Raster"], ["y", "BinaryOp"]]}
    rep = map_kept(nodes, graph, ["/add"])
    assert rep["inserted"] == ["c_out___tr4y"] and rep["float_tensors"] == ["y", "c_out___tr4y"]
    assert map_kept(nodes, graph, ["/c"])["inserted"] == []  # it feeds an int8 op: it stays int8


# -- plain int8: mnnquant exits 0 with float activations when its calibration run fails ------------------------------

def _dumped(conv_scales: list[float | None]) -> dict:
    """An int8 model as MNN's JSON dump shows it: an input, a float first Conv (mnnquant leaves the 3-channel input
    layer float), then Convs with int8 weights (quanParameter); conv_scales: each int8 Conv's output scale (None: no
    quantInfo, 0.0: a zero scale)."""
    names = ["x", "c0", *[f"c{i + 1}" for i in range(len(conv_scales))]]
    ops = [{"name": "x", "type": "Input", "outputIndexes": [0]}]
    ops.append({"name": "c0", "type": "Convolution", "main_type": "Convolution2D", "inputIndexes": [0],
                "outputIndexes": [1], "main": {"weight": [0.1] * 27}})
    for i in range(len(conv_scales)):
        ops.append({"name": names[i + 2], "type": "ConvolutionDepthwise" if i % 2 else "Convolution",
                    "main_type": "Convolution2D", "inputIndexes": [i + 1], "outputIndexes": [i + 2],
                    "main": {"quanParameter": {"buffer": [1, 2], "scaleIn": 0.0, "scaleOut": 0.0}}})
    extra = [{"index": i + 2, "quantInfo": {"scale": sc, "zero": 0.0, "type": "DT_INT8"}}
             for i, sc in enumerate(conv_scales) if sc is not None]
    net = {"tensorName": names, "oplists": ops}
    if extra:
        net["extraTensorDescribe"] = [{"index": 0, "quantInfo": {"scale": 0.02}}, *extra]
    return net


def test_activation_scales_count_the_int8_convolutions_that_have_one() -> None:
    full = activation_scales(_dumped([0.1, 0.2, 0.3, 0.4]))
    assert full == {"int8_convolutions": 4, "with_scale": 4, "scales": 5}  # the input's scale counts, c0 is float
    assert int8_shortfall(full, "KL") is None
    # ADMM's failed batch run on YOLOv8n: int8 weights, no extraTensorDescribe at all
    none = activation_scales(_dumped([None] * 4))
    assert none == {"int8_convolutions": 4, "with_scale": 0, "scales": 0}
    assert int8_shortfall(none, "ADMM") == ("mnnquant's ADMM calibration wrote no activation scale (4 convolution(s) "
                                            "with int8 weights)")
    # zero scales are no scales; one of four is far fewer than the convolutions it quantized; two of four is enough
    few = activation_scales(_dumped([0.1, 0.0, None, 0.0]))
    assert few == {"int8_convolutions": 4, "with_scale": 1, "scales": 2}
    assert "only 1 of the 4 convolution(s)" in int8_shortfall(few, "EMA")
    assert int8_shortfall(activation_scales(_dumped([0.1, 0.2, None, None])), "KL") is None
    assert "no activation scale (0 convolution" in int8_shortfall(activation_scales({"oplists": []}), "KL")


def test_plain_int8_plan_checks_the_scales_and_retries_a_default_admm_with_kl() -> None:
    plan = _plan({})  # 200 x 3 x 32 x 32: ADMM by default
    assert [c.tool for c in plan.commands] == ["mnnconvert", "mnnquant", "mnn-check"]
    argv = _check_argv(plan)
    assert argv[0] == "/VENV/bin/python" and "def check_int8" in argv[2]  # the toolchain venv runs it (MNN's _tools)
    assert argv[3:7] == (str(W / "s0_mnn.mnn"), str(W / "s0_mnnquant.json"), str(W / "s0_mnn_int8_check.json"), "s0")
    assert argv[7:] == ("--retry", str(W / "s0_mnn_float.mnn"), str(W / "s0_mnnquant_kl.json"))
    writes = {w.path.name: json.loads(w.content) for w in plan.writes}
    assert writes["s0_mnnquant.json"]["feature_quantize_method"] == "ADMM"
    assert writes["s0_mnnquant_kl.json"] == {**writes["s0_mnnquant.json"], "feature_quantize_method": "KL"}
    assert any("then KL calibrates instead" in n for n in plan.notes)
    # asked for: checked, never replaced
    forced = _plan({"mnn_feature_method": "ADMM"})
    assert _check_argv(forced)[7:] == ("--forced",) and len(forced.writes) == 1
    # KL by default above ADMM's size limit: checked, nothing to retry with
    big = _plan({}, count=2000)
    assert json.loads(big.writes[0].content)["feature_quantize_method"] == "KL"
    assert _check_argv(big)[7:] == () and len(big.writes) == 1


FAKE_TOOLS = """
import json, os, shutil
def mnnconvert(argv):  # -f MNN --modelFile M --JsonFile J: the fake .mnn files hold their JSON dump
    shutil.copy(argv[argv.index("--modelFile") + 1], argv[argv.index("--JsonFile") + 1])
def mnnquant(argv):  # FLOAT OUT CONFIG: writes the model of the config's method (METHOD.json beside the config)
    with open(argv[3]) as f:
        method = json.load(f)["feature_quantize_method"]
    shutil.copy(os.path.join(os.path.dirname(argv[3]), method + ".json"), argv[2])
"""


def _run_plain(tmp_path: Path, options: dict, nets: dict[str, dict]) -> tuple[MnnAdapter, ConversionJob, object]:
    """The plain int8 plan executed without MNN: mnnconvert and mnnquant faked (each method writes its model in
    `nets`), the plan's check script run by this interpreter with a fake `_tools` module."""
    import subprocess
    import sys

    from edgesdk.toolchains.executor import execute

    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "_tools.py").write_text(FAKE_TOOLS)
    for method, net in nets.items():
        (tmp_path / f"{method}.json").write_text(json.dumps(net))
    job = _job(options, onnx_path=tmp_path / "s0.onnx", work=tmp_path)
    adapter = MnnAdapter(venv=Path("/VENV"), python="/HOST/python")
    plan = adapter.plan(job)

    def runner(cmd):
        if cmd.tool == "mnnconvert":
            Path(cmd.argv[cmd.argv.index("--MNNModel") + 1]).write_text("float model")
            return 0, ""
        if cmd.tool == "mnnquant":
            method = json.loads(Path(cmd.argv[-1]).read_text())["feature_quantize_method"]
            Path(cmd.argv[-2]).write_text((tmp_path / f"{method}.json").read_text())
            return 0, "Quantize model done!"
        r = subprocess.run([sys.executable, *cmd.argv[1:]], capture_output=True, text=True, check=False,
                           env={"PYTHONPATH": str(tmp_path / "fake")})
        return r.returncode, r.stdout + r.stderr

    execute(plan, runner)
    return adapter, job, plan


def test_default_admm_without_scales_is_calibrated_again_with_kl(tmp_path: Path) -> None:
    adapter, job, plan = _run_plain(tmp_path, {}, {"ADMM": _dumped([None] * 4), "KL": _dumped([0.1] * 4)})
    art = adapter.describe(job, plan)
    (note,) = art.notes
    assert note == ("ADMM wrote no activation scales (fixed batch); calibrated with KL: 4 of 4 int8 convolution(s) "
                    "have activation scales (5 in all)")
    assert json.loads((tmp_path / "s0_mnn.mnn").read_text()) == _dumped([0.1] * 4)  # KL's model replaced ADMM's
    rep = json.loads((tmp_path / "s0_mnn_int8_check.json").read_text())
    assert rep["method"] == "KL" and rep["first"]["method"] == "ADMM" and rep["refused"] is None


def test_admm_with_scales_is_kept_as_it_is(tmp_path: Path) -> None:
    adapter, job, plan = _run_plain(tmp_path, {}, {"ADMM": _dumped([0.1] * 4), "KL": {"not": "used"}})
    assert adapter.describe(job, plan).notes == ()
    assert json.loads((tmp_path / "s0_mnn.mnn").read_text()) == _dumped([0.1] * 4)
    assert json.loads((tmp_path / "s0_mnn_int8_check.json").read_text())["stats"]["with_scale"] == 4


@pytest.mark.parametrize(("options", "nets", "said"), [
    ({"mnn_feature_method": "ADMM"}, {"ADMM": _dumped([None] * 4)},
     (r"segment s0: the int8 model would run float activations \(calibration mnn_feature_method ADMM\): "
      r"mnnquant's ADMM calibration wrote no activation scale .*one batch.*use mnn_feature_method KL")),
    ({"mnn_feature_method": "KL"}, {"KL": _dumped([0.1, None, None, None])},
     r"calibration mnn_feature_method KL\): .*only 1 of the 4"),
    ({}, {"ADMM": _dumped([None] * 4), "KL": _dumped([None] * 4)},
     r"calibration ADMM, the default here\): .*; the KL retry failed too: mnnquant's KL calibration wrote no"),
])
def test_a_model_without_activation_scales_is_refused(tmp_path: Path, options: dict, nets: dict, said: str) -> None:
    adapter, job, plan = _run_plain(tmp_path, options, nets)
    with pytest.raises(ConversionRefused, match=said) as exc:
        adapter.describe(job, plan)
    assert exc.value.tool == "mnnquant"


def test_describe_refuses_when_the_check_did_not_run(tmp_path: Path) -> None:
    job = _job({}, work=tmp_path)
    adapter = MnnAdapter(venv=Path("/VENV"), python="/HOST/python")
    with pytest.raises(ConversionRefused, match="segment s0: s0_mnn_int8_check.json is missing"):
        adapter.describe(job, adapter.plan(job))

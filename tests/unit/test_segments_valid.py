"""Segments are always valid models: every extracted segment passes the full ONNX checker and runs on onnxruntime.

Models here have what real exports have: PaddlePaddle-style value_info entries with a type and no shape, a
Reshape whose target a Shape -> Gather -> Mul -> Unsqueeze -> Concat chain computes (unknown to ONNX shape
inference), and they are partitioned for the real NPU boards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import get_board
from edgesdk.errors import ModelError
from edgesdk.graph.extract import segment_model, validate_segment, write_segments
from edgesdk.graph.load import load_model, load_weights
from edgesdk.graph.partition import Segment
from edgesdk.graph.report import analyze
from edgesdk.graph.shapes import TensorInfo

ort = pytest.importorskip("onnxruntime")
NPU_BOARDS = ("kv260", "x3", "hi3519a", "coral-usb")
R = np.random.default_rng(0)


def _w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array((R.standard_normal(shape) * 0.2).astype(np.float32), name)


def _i(name: str, v) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(v, np.int64), name)


def paddle_like(dynamic_reshape: bool = False) -> onnx.ModelProto:
    """conv-relu-conv-hardswish-conv, then Flatten+Softmax (or a Reshape to a computed target + Softmax);
    a symbolic batch, and every intermediate tensor with a value_info that has a type and no shape."""
    inits = [_w("w1", (8, 3, 3, 3)), _w("b1", (8,)), _w("w2", (8, 8, 3, 3)), _w("b2", (8,)), _w("w3", (4, 8, 1, 1)),
             _w("b3", (4,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
        helper.make_node("HardSigmoid", ["c2"], ["hs"], name="hsig"),
        helper.make_node("Mul", ["c2", "hs"], ["hsw"], name="hswish_mul"),
        helper.make_node("Conv", ["hsw", "w3", "b3"], ["c3"], name="conv3"),
    ]
    shape_chain = set()
    if dynamic_reshape:
        inits += [_i("i1", 1), _i("two", 2), _i("ax0", [0]), _i("minus1", [-1])]
        chain = [
            helper.make_node("Shape", ["c3"], ["sh"], name="shape"),
            helper.make_node("Gather", ["sh", "i1"], ["ch"], axis=0, name="gather_c"),
            helper.make_node("Mul", ["ch", "two"], ["ch2"], name="mul_c"),
            helper.make_node("Unsqueeze", ["ch2", "ax0"], ["ch2u"], name="unsqueeze_c"),
            helper.make_node("Concat", ["ch2u", "minus1"], ["target"], axis=0, name="concat_target"),
        ]
        shape_chain = {o for n in chain for o in n.output}
        nodes += chain + [helper.make_node("Reshape", ["c3", "target"], ["rs"], name="reshape"),
                          helper.make_node("Softmax", ["rs"], ["y"], axis=-1, name="softmax")]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"])
    else:
        nodes += [helper.make_node("Flatten", ["c3"], ["fl"], axis=1, name="flatten"),
                  helper.make_node("Softmax", ["fl"], ["y"], axis=-1, name="softmax")]
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1024])
    vis = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for n in nodes for o in n.output
           if o != "y" and o not in shape_chain]
    g = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [out], inits, value_info=vis)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _save(m: onnx.ModelProto, p: Path) -> Path:
    onnx.save_model(m, str(p))
    return p


def _x() -> np.ndarray:
    return np.random.default_rng(3).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)


def _assert_valid_segments(out: Path, src: Path) -> None:
    from edgesdk.graph.extract import run_segments

    doc = json.loads((out / "plan.json").read_text())
    for seg in doc["segments"]:
        path = out / seg["file"]
        onnx.checker.check_model(str(path), full_check=True)
        proto = onnx.load(str(path))
        for vi in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
            tt = vi.type.tensor_type
            assert tt.elem_type != 0 and tt.HasField("shape"), (seg["file"], vi)
        for vi in (*proto.graph.input, *proto.graph.output):
            assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), (seg["file"], vi)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = run_segments(out, {"x": _x()})
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(["y"], {"x": _x()})[0]
    assert np.abs(got["y"] - ref).max() <= 1e-5


@pytest.mark.parametrize("board", NPU_BOARDS)
def test_paddle_value_info_without_shapes_partitions_into_valid_segments(tmp_path: Path, board: str) -> None:
    src = _save(paddle_like(), tmp_path / "paddle.onnx")
    model = load_model(src, {"x": (1, 3, 16, 16)})
    a = analyze(model, get_board(board), plan="split", rewrite=False)  # the cut itself is tested
    assert len(a.plan.segments) >= 2, [s.engine for s in a.plan.segments]  # a real cut, on an NPU board
    out = write_segments(a.model, a.plan, tmp_path / "out")
    _assert_valid_segments(out, src)


def test_missing_intermediate_shape_is_rebuilt_not_copied(tmp_path: Path) -> None:
    """A tensor the model's tables know without a shape gets its value_info from shape inference on the segment."""
    src = _save(paddle_like(), tmp_path / "paddle.onnx")
    model = load_model(src, {"x": (1, 3, 16, 16)})
    a = analyze(model, get_board("kv260"), plan="split", rewrite=False)
    seg = a.plan.segments[0]
    by_name = {n.name: n for n in model.nodes}
    outs = {t.name for t in seg.outputs}
    inner = next(o for n in seg.nodes for o in by_name[n].output if o not in outs)
    t = model.tensors[inner]
    model.tensors[inner] = TensorInfo(inner, None, t.dtype, t.itemsize)  # what an exporter's bare value_info gives
    proto = segment_model(model, load_weights(model), seg)
    vi = next(v for v in proto.graph.value_info if v.name == inner)
    assert [d.dim_value for d in vi.type.tensor_type.shape.dim] == list(t.shape)
    assert all(v.type.tensor_type.HasField("shape") for v in proto.graph.value_info)
    validate_segment(proto, seg, {"x": _x()})


def test_dynamic_boundary_names_tensor_producer_and_fix(tmp_path: Path) -> None:
    """Without preparation, the computed Reshape target leaves the tail without a shape: a clear ModelError."""
    src = _save(paddle_like(dynamic_reshape=True), tmp_path / "dyn.onnx")
    model = load_model(src, {"x": (1, 3, 16, 16)})
    assert model.tensors["rs"].shape is None  # ONNX shape inference cannot evaluate the target
    a = analyze(model, get_board("kv260"), plan="split", rewrite=False)
    with pytest.raises(ModelError) as ei:
        write_segments(a.model, a.plan, tmp_path / "out")
    msg = str(ei.value)
    last = a.plan.segments[-1]
    assert f"segment {last.index} ({last.engine}" in msg
    assert "'y'" in msg and "'softmax' (Softmax)" in msg and "'reshape' (Reshape)" in msg
    assert "--input-shape" in msg and "preparation" in msg
    assert not (tmp_path / "out").exists()  # all or nothing


def test_partition_cli_on_npu_board_is_valid_or_clean(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgesdk.cli import app

    src = _save(paddle_like(dynamic_reshape=True), tmp_path / "dyn.onnx")
    r = CliRunner().invoke(app, ["partition", str(src), "--board", "kv260", "-o", str(tmp_path / "raw"),
                                 "--input-shape", "x=1,3,16,16", "--no-prepare"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "no static shape" in r.stderr and "Traceback" not in r.stderr
    # with the preparation stage (folds the shape chain) the same model partitions into valid segments
    r = CliRunner().invoke(app, ["partition", str(src), "--board", "kv260", "-o", str(tmp_path / "prep"),
                                 "--input-shape", "x=1,3,16,16"])
    if r.exit_code == 0:
        _assert_valid_segments(tmp_path / "prep", src)
    else:
        assert r.exit_code in (1, 2) and "Traceback" not in r.stderr, r.output


# -- validate_segment on its own ------------------------------------------------------------------------

def _seg(index: int = 2, engine: str = "ncnn", nodes: tuple[str, ...] = ()) -> Segment:
    return Segment(index, engine, "cpu", nodes, (), (), 0, 0.0, 0, 0)


def _one_conv(extra_attr: bool = False, out_shape=(1, 4, 8, 8), gather_index: int | None = None) -> onnx.ModelProto:
    inits = [_w("w", (4, 3, 3, 3))]
    conv = helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="first_conv")
    if extra_attr:
        conv.attribute.append(helper.make_attribute("bogus", 1))
    nodes = [conv, helper.make_node("Relu", ["c"], ["y"], name="last_relu")]
    if gather_index is not None:
        inits.append(_i("idx", [0, 1, gather_index]))
        nodes[-1] = helper.make_node("Relu", ["c"], ["r"], name="relu")
        nodes.append(helper.make_node("Gather", ["r", "idx"], ["y"], axis=1, name="last_gather"))
        out_shape = (1, 3, 8, 8)
    g = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_validate_segment_passes_and_returns_outputs() -> None:
    outs = validate_segment(_one_conv(), _seg())
    assert outs["y"].shape == (1, 4, 8, 8) and (outs["y"] >= 0).all()


def test_validate_segment_names_segment_nodes_and_checker_message() -> None:
    with pytest.raises(ModelError) as ei:
        validate_segment(_one_conv(extra_attr=True), _seg(2, "ncnn"))
    msg = str(ei.value)
    assert msg.startswith("segment 2 (ncnn; 2 nodes, first 'first_conv' (Conv), last 'last_relu' (Relu))"), msg
    assert "onnx.checker" in msg and "bogus" in msg


def test_validate_segment_names_the_onnxruntime_failure() -> None:
    with pytest.raises(ModelError) as ei:
        validate_segment(_one_conv(gather_index=99), _seg(5, "tflite"))
    msg = str(ei.value)
    assert msg.startswith("segment 5 (tflite; 3 nodes, first 'first_conv' (Conv), last 'last_gather' (Gather))"), msg
    assert "onnxruntime cannot run it" in msg and "out of" in msg


def test_validate_segment_catches_a_wrong_declared_shape() -> None:
    # shape inference refutes it: the full checker says so
    with pytest.raises(ModelError, match=r"segment 2 \(ncnn; .*onnx\.checker"):
        validate_segment(_one_conv(out_shape=(1, 4, 7, 7)), _seg())
    # a Reshape to a target fed from another segment: inference cannot know; onnxruntime's run can
    g = helper.make_graph([helper.make_node("Reshape", ["x", "t"], ["y"], name="reshape")], "seg",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                           helper.make_tensor_value_info("t", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 192])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    x = np.zeros((1, 3, 8, 8), np.float32)
    assert validate_segment(m, _seg(1, "tflite"), {"x": x, "t": np.array([1, 192])})["y"].shape == (1, 192)
    with pytest.raises(ModelError, match=r"output 'y' is declared \(1, 192\) but onnxruntime computes \(3, 64\)"):
        validate_segment(m, _seg(1, "tflite"), {"x": x, "t": np.array([3, 64])})

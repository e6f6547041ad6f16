"""Safe loading: external data confined to the model folder, clear errors for bad files, fixed shapes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.errors import InputError, ModelError
from edgesdk.graph import load_model, parse_input_shape
from edgesdk.graph.load import PROTOBUF_LIMIT

from test_graph_util import chain_cpu_middle, make_model, save, vi


def _external_model(d, location: str):
    """A Conv model whose weight is stored as external data at `location` (written by hand)."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    m = make_model(nodes, [w], [vi("x", [1, 3, 8, 8])], [vi("y", None)])
    t = m.graph.initializer[0]
    raw = t.raw_data or np.ones((4, 3, 3, 3), np.float32).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = t.external_data.add()
        e.key, e.value = k, v
    p = d / "model.onnx"
    p.write_bytes(m.SerializeToString())
    return p, raw


def test_loads_and_infers_shapes_and_costs(tmp_path):
    m = load_model(save(chain_cpu_middle(), tmp_path))
    assert m.inputs == ("x",) and m.outputs == ("y",)
    assert m.tensors["b"].shape == (1, 8, 16, 16) and m.tensors["b"].dtype == "float32"
    c1 = m.costs[0]
    assert c1.flops == 2 * (8 * 16 * 16) * (3 * 3 * 3) + 8 * 16 * 16
    assert c1.param_bytes == (8 * 3 * 3 * 3 + 8) * 4
    assert c1.activation_bytes == 8 * 16 * 16 * 4


def test_external_data_inside_the_folder_loads(tmp_path):
    p, raw = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(raw)
    m = load_model(p)
    assert m.has_external_data


def test_external_data_with_dotdot_is_refused(tmp_path):
    inner = tmp_path / "m"
    inner.mkdir()
    p, raw = _external_model(inner, "../secret.bin")
    (tmp_path / "secret.bin").write_bytes(raw)
    with pytest.raises(ModelError, match=r"'\.\.'"):
        load_model(p)


def test_external_data_absolute_path_is_refused(tmp_path):
    p, raw = _external_model(tmp_path, str(tmp_path / "w.bin"))
    (tmp_path / "w.bin").write_bytes(raw)
    with pytest.raises(ModelError, match="absolute path"):
        load_model(p)


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path):
    inner, outside = tmp_path / "m", tmp_path / "outside"
    inner.mkdir()
    outside.mkdir()
    p, raw = _external_model(inner, "w.bin")
    (outside / "w.bin").write_bytes(raw)
    os.symlink(outside / "w.bin", inner / "w.bin")
    with pytest.raises(ModelError, match="symlink"):
        load_model(p)


def test_non_onnx_file(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="not an ONNX model"):
        load_model(p)


def test_empty_file(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(p)


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(tmp_path, cut):
    data = chain_cpu_middle().SerializeToString()
    p = tmp_path / "t.onnx"
    p.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelError):
        load_model(p)


def test_larger_than_protobuf_limit_without_external_data(tmp_path):
    p = tmp_path / "huge.onnx"
    with open(p, "wb") as f:  # sparse: no disk used
        f.truncate(PROTOBUF_LIMIT + 1)
    with pytest.raises(ModelError, match="2 GB"):
        load_model(p)


def test_invalid_graph(tmp_path):
    m = chain_cpu_middle()
    m.graph.node[1].input[0] = "does_not_exist"
    p = tmp_path / "bad.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="invalid"):
        load_model(p)


def test_unknown_domain(tmp_path):
    m = chain_cpu_middle()
    m.graph.node[1].domain = "com.example"
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    p = tmp_path / "dom.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelError, match="unknown op domain 'com.example'"):
        load_model(p)


def _dynamic(tmp_path):
    nodes = [helper.make_node("Relu", ["images"], ["y"], name="r")]
    return save(make_model(nodes, [], [vi("images", ["N", 3, "H", "W"])], [vi("y", ["N", 3, "H", "W"])]), tmp_path)


def test_dynamic_shape_left_unfixed_names_the_input_and_the_fix(tmp_path):
    with pytest.raises(ModelError, match=r"input 'images'.*--input-shape images=<N>,3,<H>,<W>"):
        load_model(_dynamic(tmp_path))


def test_input_shape_fixes_dynamic_dims(tmp_path):
    m = load_model(_dynamic(tmp_path), {"images": (1, 3, 32, 48)})
    assert m.tensors["y"].shape == (1, 3, 32, 48)


def test_input_shape_errors(tmp_path):
    p = _dynamic(tmp_path)
    with pytest.raises(InputError, match="no input 'nope'"):
        load_model(p, {"nope": (1, 3, 4, 4)})
    with pytest.raises(InputError, match="rank 4"):
        load_model(p, {"images": (1, 3, 4)})
    with pytest.raises(InputError, match="dimension 1 is fixed to 3"):
        load_model(p, {"images": (1, 4, 4, 4)})


def test_parse_input_shape():
    assert parse_input_shape("x=1,3,224,224") == ("x", (1, 3, 224, 224))
    assert parse_input_shape("a=b=1,2") == ("a=b", (1, 2))
    for bad in ("x", "x=", "x=1,a", "x=0,3"):
        with pytest.raises(InputError):
            parse_input_shape(bad)


def test_opset_older_than_the_board_needs(tmp_path):
    from edgesdk.graph import check_support

    from test_graph_util import acc_board
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    p = save(make_model(nodes, [], [vi("x", [1, 3, 4, 4])], [vi("y", None)], opset=9), tmp_path)
    board, tables = acc_board()  # synthetic accelerator table: opset >= 11
    with pytest.raises(ModelError, match="op set 9, older than"):
        check_support(load_model(p), board, tables)


def test_constant_nodes_become_initializers(tmp_path):
    c = helper.make_node("Constant", [], ["k"], name="k", value=numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32)))
    nodes = [c, helper.make_node("Mul", ["x", "k"], ["y"], name="mul")]
    m = load_model(save(make_model(nodes, [], [vi("x", [1, 3, 4, 4])], [vi("y", None)]), tmp_path))
    assert [n.op_type for n in m.nodes] == ["Mul"] and m.tensors["k"].is_initializer

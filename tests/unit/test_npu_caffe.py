"""The ONNX -> Caffe exporter's refusals and schema (its numerical check through OpenCV: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.caffe import CaffeExportError, export_caffe, unsupported_nodes
from edgesdk.caffe.proto import message, schema_text


def _m(nodes, inits, shape=(1, 3, 8, 8)):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


W = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")


def test_field_numbers_are_bvlc() -> None:
    text = schema_text()
    for line in ("repeated LayerParameter layer = 100;", "optional ConvolutionParameter convolution_param = 106;",
                 "optional PoolingParameter pooling_param = 121;", "repeated BlobProto blobs = 7;",
                 "repeated float data = 5 [packed = true];", "optional BatchNormParameter batch_norm_param = 139;",
                 "optional ScaleParameter scale_param = 142;", "optional EltwiseParameter eltwise_param = 110;"):
        assert line in text
    net = message("NetParameter")()
    net.layer.add(name="a").blobs.add().data.extend([1.0])
    assert net.SerializeToString()[:1] == b"\xa2"  # field 100, wire type 2 -> key 0x322 as varint a2 06


@pytest.mark.parametrize(("node", "why"), [
    (helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[0, 0, 1, 1]), "asymmetric pads"),
    (helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]), "rounds the output size up"),
    (helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1]), "no NNIE-supported Caffe layer"),
])
def test_refusals_name_the_node(node, why, tmp_path: Path) -> None:
    node.name = "n1"
    m = _m([node], [W], shape=(1, 3, 7, 7))
    with pytest.raises(CaffeExportError, match=why) as ei:
        export_caffe(m, tmp_path / "a.prototxt", tmp_path / "a.caffemodel")
    assert ei.value.node == "n1"
    assert "n1" in unsupported_nodes(m)

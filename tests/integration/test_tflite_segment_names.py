"""A mid-graph segment through onnx2tf: I/O tensor names with '/' and '.', 3-D (NCW) tensors, node names Keras
refuses, full-integer int8 with calibration. Real onnx2tf + LiteRT; checked with the artifact check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import require_toolchains

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _segment(path: Path) -> Path:
    a, b, y = "/model.22/Split_1_output_1", "/model.22/Add_10_output_0", "output0"
    k = numpy_helper.from_array(np.full((1, 2, 1), 0.5, np.float32), "k")
    nodes = [helper.make_node("Sigmoid", [a], ["s"], name="Sigmoid@0"),
             helper.make_node("Mul", [b, "k"], ["m"], name="Mul@1"),
             helper.make_node("Concat", ["m", "s"], [y], axis=1, name="Concat@2")]
    g = helper.make_graph(nodes, "seg", [helper.make_tensor_value_info(a, TensorProto.FLOAT, [1, 6, 50]),
                                         helper.make_tensor_value_info(b, TensorProto.FLOAT, [1, 2, 50])],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 8, 50])], [k])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_mid_graph_segment_names_and_3d_layout(tmp_path: Path, precision: str) -> None:
    require_toolchains("tflite")
    import onnxruntime as ort

    from edgesdk.convert_base import TOLERANCES
    from edgesdk.toolchains.adapters import CalibData, ConversionJob, IOSpec, get_adapter
    from edgesdk.toolchains.check import check_artifact
    from edgesdk.toolchains.executor import execute

    seg = _segment(tmp_path / "s3.onnx")
    ins = (IOSpec("/model.22/Split_1_output_1", (1, 6, 50)), IOSpec("/model.22/Add_10_output_0", (1, 2, 50)))
    outs = (IOSpec("output0", (1, 8, 50)),)
    rng = np.random.default_rng(0)
    calib = None
    if precision == "int8":
        arrays = tmp_path / "calib.npz"
        np.savez(arrays, **{i.name: rng.uniform(-2, 2, (16, *i.shape[1:])).astype(np.float32) for i in ins})
        calib = CalibData(arrays, 16)
    job = ConversionJob("s3", seg, tmp_path, precision, ins, outs, calib)
    a = get_adapter("tflite")
    plan = a.plan(job)
    execute(plan)
    art = a.describe(job, plan)
    assert [t.layout for t in art.inputs] == ["NHWC", "NHWC"]  # channels-last for 3-D: NCW -> NWC
    feed = {i.name: rng.uniform(-2, 2, i.shape).astype(np.float32) for i in ins}
    ref = dict(zip(["output0"], ort.InferenceSession(str(seg), providers=["CPUExecutionProvider"]).run(None, feed)))
    chk = check_artifact("tflite", art.files, art.inputs, art.outputs, art.options, feed, ref, TOLERANCES[precision])
    assert chk.ok, chk

"""The NNIE path's ONNX -> Caffe export, verified numerically: OpenCV's Caffe importer loads the
prototxt + caffemodel edgesdk writes (cv2.dnn.readNetFromCaffe) and its outputs match onnxruntime's.

OpenCV 5 removed the Caffe importer, so this runs in the nnie toolchain venv (OpenCV 4.x:
`edgesdk toolchain install nnie`, done by scripts/setup.sh); skipped with that reason otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.caffe import compare_with_onnxruntime, export_caffe, opencv_caffe_python

DATA = Path(__file__).resolve().parent.parent / "data"
TOL = 1e-4

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cv_python() -> str:
    py = opencv_caffe_python()
    if py is None:
        pytest.skip("no OpenCV with cv2.dnn.readNetFromCaffe (removed in OpenCV 5): run `edgesdk toolchain install nnie`")
    return py


R = np.random.default_rng(7)


def _w(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
    return numpy_helper.from_array(R.normal(0, scale, shape).astype(np.float32), name)


def _model(nodes, inits, in_shape, out_name, out_shape=None, opset=13, extra_inputs=()):
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape), *extra_inputs],
                          [], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    m.graph.output.append(inferred[out_name])
    onnx.checker.check_model(m)
    return m


def conv_bn_relu():
    C = 8
    return _model([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["y"]),
    ], [_w("w", C, 3, 3, 3), _w("b", C), numpy_helper.from_array(R.uniform(0.5, 1.5, C).astype(np.float32), "g"),
        _w("be", C), _w("mu", C), numpy_helper.from_array(R.uniform(0.5, 2, C).astype(np.float32), "var")],
        [1, 3, 16, 16], "y")


def pooling():
    return _model([
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["p"], ["q"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["q"], ["r"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("GlobalMaxPool", ["r"], ["y"]),
    ], [], [1, 4, 15, 15], "y")


def eltwise():
    return _model([
        helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Mul", ["s", "a"], ["m"]),
        helper.make_node("Max", ["m", "b"], ["mx"]),
        helper.make_node("Sub", ["mx", "a"], ["d"]),
        helper.make_node("Mul", ["d", "cs"], ["e"]),   # per-channel constant -> Scale
        helper.make_node("Add", ["e", "cb"], ["f"]),   # per-channel constant -> Scale with bias
        helper.make_node("Div", ["f", "two"], ["y"]),  # scalar constant -> Scale
    ], [_w("w1", 6, 3, 1, 1), _w("w2", 6, 3, 3, 3), _w("cs", 1, 6, 1, 1), _w("cb", 6, 1, 1),
        numpy_helper.from_array(np.array(2.0, np.float32), "two")], [1, 3, 10, 10], "y")


def concat_depthwise():
    return _model([
        helper.make_node("Conv", ["x", "dw", "db"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4),
        helper.make_node("Conv", ["x", "pw"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "dil"], ["q"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Concat", ["d", "p", "q"], ["c"], axis=1),
        helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.1),
    ], [_w("dw", 4, 1, 3, 3), _w("db", 4), _w("pw", 5, 4, 1, 1), _w("dil", 3, 4, 3, 3)], [1, 4, 12, 12], "y")


def fc_head():
    return _model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["c", "slope"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
        helper.make_node("Sigmoid", ["g"], ["s"]),
        helper.make_node("MatMul", ["s", "m"], ["h"]),
        helper.make_node("Softmax", ["h"], ["y"], axis=-1),
    ], [_w("w", 4, 2, 3, 3), numpy_helper.from_array(R.uniform(0, 0.3, (4, 1, 1)).astype(np.float32), "slope"),
        _w("fw", 12, 4 * 6 * 6, scale=0.1), _w("fb", 12), _w("m", 12, 5)], [1, 2, 8, 8], "y")


def upsample_deconv():
    return _model([
        helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
        helper.make_node("Resize", ["c", "", "sc"], ["u"], mode="nearest"),
        helper.make_node("ConvTranspose", ["u", "tw", "tb"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Tanh", ["t"], ["y"]),
    ], [_w("w", 3, 3, 1, 1), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
        _w("tw", 3, 2, 2, 2), _w("tb", 2)], [1, 3, 5, 7], "y")


MODELS = {"conv_bn_relu": conv_bn_relu, "pooling": pooling, "eltwise": eltwise, "concat_depthwise": concat_depthwise,
          "fc_head": fc_head, "upsample_deconv": upsample_deconv}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_opencv_matches_onnxruntime(name: str, tmp_path: Path, cv_python: str) -> None:
    m = MODELS[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(m, str(path))
    ex = export_caffe(path, tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel")
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)
        diff = compare_with_onnxruntime(path, ex, {"x": x}, cv_python)
        assert max(diff.values()) <= TOL, (name, diff, ex.layers)


def test_digits_cnn_through_opencv(tmp_path: Path, cv_python: str) -> None:
    """The trained classifier: same logits and the same top-1 on held-out digits."""
    import onnxruntime as ort

    from edgesdk.caffe import run_caffe

    model = DATA / "digits_cnn.onnx"
    ex = export_caffe(model, tmp_path / "d.prototxt", tmp_path / "d.caffemodel")
    assert [t for _, t in ex.layers] == ["Convolution", "ReLU", "Pooling", "Convolution", "ReLU", "Pooling",
                                         "Convolution", "ReLU", "Pooling", "Flatten", "InnerProduct"]
    d = np.load(DATA / "digits.npz")
    idx = d["heldout"][:64]
    x8 = d["images8"][idx].astype(np.float32)
    big = np.kron(x8, np.ones((1, 4, 4), np.float32))  # the training script's 4x nearest upsampling
    x = np.repeat(((big / 255.0 - 0.5) / 0.5)[:, None], 3, axis=1).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    agree = 0
    worst = 0.0
    for i in range(len(x)):
        ref = sess.run(["logits"], {"image": x[i:i + 1]})[0]
        got = run_caffe(ex.prototxt, ex.caffemodel, {"image": x[i:i + 1]}, ["logits"], cv_python)["logits"]
        worst = max(worst, float(np.max(np.abs(got - ref))))
        agree += int(np.argmax(got) == np.argmax(ref))
        if i >= 15:  # each call starts an interpreter: 16 samples bound the time, top-1 over all would be the same
            break
    assert worst <= TOL and agree == i + 1

"""Research probe: tiny CNN ONNX -> RKNN (rk3588, int8) -> simulator; prints cosine vs onnxruntime.

Run with the rknn venv's python: ~/.cache/edgesdk/toolchains/rknn/venv/bin/python scripts/rknn_probe.py WORKDIR
"""
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

work = Path(sys.argv[1]); work.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
b1 = numpy_helper.from_array(np.zeros(8, np.float32), "b1")
w2 = numpy_helper.from_array(rng.normal(0, 0.2, (10, 8 * 8 * 8)).astype(np.float32), "w2")
b2 = numpy_helper.from_array(np.zeros(10, np.float32), "b2")
nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Erf", ["p1"], ["e1"], name="erf1"),
    helper.make_node("Flatten", ["e1"], ["f1"], name="flat1"),
    helper.make_node("Gemm", ["f1", "w2", "b2"], ["y"], name="fc1", transB=1),
]
g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w1, b1, w2, b2])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
onnx.save(m, work / "tiny.onnx")
lines = []
for i in range(4):
    p = work / f"calib{i}.npy"; np.save(p, rng.uniform(0, 255, (1, 3, 16, 16)).astype(np.float32)); lines.append(str(p))
(work / "list.txt").write_text("\n".join(lines) + "\n")

from rknn.api import RKNN

r = RKNN(verbose=True)
r.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform="rk3588")
assert r.load_onnx(model=str(work / "tiny.onnx")) == 0
assert r.build(do_quantization=True, dataset=str(work / "list.txt")) == 0
assert r.export_rknn(str(work / "tiny.rknn")) == 0
assert r.init_runtime() == 0
x = np.load(lines[0])
out = r.inference(inputs=[x], data_format="nchw")[0].ravel()
import onnxruntime as ort

ref = ort.InferenceSession(str(work / "tiny.onnx")).run(None, {"x": x / 255.0})[0].ravel()
cos = float(np.dot(out, ref) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-12))
print("COSINE", cos)
try:
    rc = r.accuracy_analysis(inputs=[lines[0]], output_dir=str(work / "snapshot"))
    print("ACCURACY_ANALYSIS rc", rc)
except Exception as e:  # noqa: BLE001
    print("ACCURACY_ANALYSIS failed", e)
r.release()

"""ONNX tensors found in a TFLite model by value: the source of functions for scripts run in the tflite venv.

onnx2tf names TFLite tensors after its Keras layers ("model_5/tf.concat_213/concat"), not after ONNX nodes, so an ONNX
node is found by value: the float TFLite runs with every tensor kept beside the ONNX model on onnxruntime, and a node's
output matches the TFLite tensors whose sorted values are the same (layout-free: NCHW -> NHWC, and the
transposes/reshapes that only move the same values). An output TFLite fused into its consumer (Conv + Relu,
Conv + BatchNormalization) is looked for at that consumer (`fused_into`).

`VALUE_MATCH` is Python source (numpy only) that a script prepends: the tflite adapter's mixed-precision script
(adapters/tflite.py `_MIXED`: which TFLite tensors to keep in float) and scripts/compiler_agreement.py (which TFLite op,
hence which vela placement, an ONNX node became).
"""

from __future__ import annotations

VALUE_MATCH = r'''
import numpy as np

FUSED = {"Relu", "Clip", "Tanh", "BatchNormalization", "Add", "Sub", "Mul", "Div"}  # TFLite folds into the producer


def float_tensors(it):
    """{size: [(name, sorted values)]} of the float tensors the ops of `it` wrote (invoked, every tensor kept)."""
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    by_size = {}
    for op in it._get_ops_details():
        for ti in op["outputs"]:
            if ti < 0 or tensors[ti]["dtype"] not in (np.float32, np.float16):
                continue
            try:
                v = it.get_tensor(ti)
            except ValueError:
                continue
            by_size.setdefault(v.size, []).append((tensors[ti]["name"], np.sort(v.astype(np.float32).ravel())))
    return by_size


def fused_into(t, consumers, inits):
    """The single consumer TFLite folds the op writing `t` into (its output then holds the values), else None.

    consumers: ONNX tensor -> the nodes reading it; inits: the constant tensors."""
    c = consumers.get(t, [])
    if len(c) != 1 or c[0].op_type not in FUSED or len(c[0].output) != 1:
        return None
    others = [x for x in c[0].input if x and x != t]
    if c[0].op_type in ("Add", "Sub", "Mul", "Div") and not all(x in inits for x in others):
        return None
    return c[0]


def onnx_graph(m):
    """(nodes by name, constant tensors, consumers, producer node name, dynamic tensors) of an ONNX model."""
    import onnx

    nodes = {n.name: n for n in m.graph.node}
    inits = {t.name for t in m.graph.initializer}
    inits |= {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    subgraph = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)  # If, Loop: may read outer tensors
    consumers, producer = {}, {o: n.name for n in m.graph.node for o in n.output}
    dynamic = {v.name for v in m.graph.input} - inits
    for n in m.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
        if any(x in dynamic for x in n.input) or any(a.type in subgraph for a in n.attribute):
            dynamic.update(n.output)
    return nodes, inits, consumers, producer, dynamic


def fused_chain(o, consumers, inits):
    """`o`, then the outputs of the (at most 3) consumers TFLite folds its producer into, in order."""
    chain, cur = [o], o
    for _ in range(3):
        nxt = fused_into(cur, consumers, inits)
        if nxt is None:
            break
        cur = nxt.output[0]
        chain.append(cur)
    return chain


def onnx_values(m, names, arrays):
    """The ONNX tensors `names` (made graph outputs) on onnxruntime, on the first sample of the .npz `arrays`."""
    import onnx
    import onnxruntime as ort

    have = {v.name for v in m.graph.output}
    for t in dict.fromkeys(names):
        if t not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {}
    with np.load(arrays) as z:
        for i in sess.get_inputs():
            a = z[i.name][:1]
            feed[i.name] = a.astype(np.float32) if i.type == "tensor(float)" else a
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def match(v, by_size):
    """(TFLite tensors holding v's values, why none); None when v is not a float tensor (never quantized)."""
    if not np.issubdtype(v.dtype, np.floating):
        return None, ""
    s = np.sort(v.astype(np.float32).ravel())
    if s.size == 0 or s[0] == s[-1]:
        return [], "its value is constant on the calibration sample, so its tensor cannot be told apart"
    tol = 1e-3 * max(abs(float(s[0])), abs(float(s[-1])))
    probe = [0, s.size // 2, s.size - 1]
    return [nm for nm, t in by_size.get(s.size, ())
            if float(np.abs(t[probe] - s[probe]).max()) <= tol and float(np.abs(t - s).max()) <= tol], \
        "no TFLite tensor holds its values (onnx2tf rewrote or fused it)"
'''

__all__ = ["VALUE_MATCH"]

"""ONNX -> Caffe (prototxt + caffemodel) for the layers the HiSilicon NNIE runs.

Each ONNX node becomes one or more standard Caffe layers (Convolution, Deconvolution, Pooling,
InnerProduct, BatchNorm + Scale, Scale, Eltwise, Concat, ReLU, PReLU, Sigmoid, TanH, Softmax,
Flatten, Reshape). Integer-factor nearest upsampling becomes a depthwise Deconvolution with a
kernel of ones, which is exact and a standard layer. Anything else, or a parameter Caffe cannot
express exactly (asymmetric pads, ONNX floor pooling where Caffe would round up, ...), raises
CaffeExportError naming the node: the partitioner then keeps that node on the CPU.

Blob names are the ONNX tensor names made safe ([A-Za-z0-9_]); `CaffeExport.inputs/outputs`
map ONNX names to Caffe blob names, and each layer that ends a node is named after its top blob
(OpenCV and nnie_mapper address outputs by layer name).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.errors import EdgeSDKError


class CaffeExportError(EdgeSDKError):
    """A node the ONNX -> Caffe exporter cannot express exactly as an NNIE-supported Caffe layer."""

    def __init__(self, node: str, op: str, reason: str) -> None:
        self.node, self.op, self.reason = node, op, reason
        super().__init__(f"{op} node {node!r}: {reason}")


@dataclass(frozen=True)
class CaffeExport:
    prototxt: Path
    caffemodel: Path
    inputs: dict[str, str]  # ONNX name -> Caffe blob name
    outputs: dict[str, str]
    layers: tuple[tuple[str, str], ...]  # (layer name, type)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"prototxt": str(self.prototxt), "caffemodel": str(self.caffemodel), "inputs": self.inputs,
                "outputs": self.outputs, "layers": [list(x) for x in self.layers], "notes": list(self.notes)}


#: ONNX ops the exporter handles (each still subject to the parameter checks in its handler).
EXPORTABLE = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh",
              "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Add", "Sub", "Mul", "Div", "Max",
              "Concat", "Gemm", "MatMul", "Flatten", "Reshape", "Softmax", "Upsample", "Resize", "Identity",
              "Dropout")


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "t"
    return s if not s[0].isdigit() else f"t_{s}"


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Builder:
    def __init__(self, model: Any) -> None:
        import onnx
        from onnx import numpy_helper

        from edgesdk.caffe.proto import message

        self.onnx = onnx
        self.model = model
        g = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                a = _attrs(n)
                if "value" in a:
                    self.consts[n.output[0]] = numpy_helper.to_array(a["value"])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
        for k, v in self.consts.items():
            self.shapes[k] = tuple(v.shape)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.net = message("NetParameter")()
        self.blob: dict[str, str] = {}  # ONNX tensor -> Caffe blob
        self.used: set[str] = set()
        self.layers: list[tuple[str, str]] = []
        self.notes: list[str] = []

    # -- names ------------------------------------------------------------------------------------
    def new_name(self, onnx_name: str) -> str:
        base = _safe(onnx_name)
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def src(self, node: Any, i: int) -> str:
        t = node.input[i]
        if t not in self.blob:
            raise CaffeExportError(node.name, node.op_type, f"input {t!r} is neither a model input nor computed "
                                                            "by an exported layer")
        return self.blob[t]

    def shape(self, t: str) -> tuple[int, ...]:
        if t not in self.shapes:
            raise CaffeExportError("?", "?", f"tensor {t!r} has no static shape")
        return self.shapes[t]

    def layer(self, name: str, type_: str, bottoms: list[str], top: str, blobs: list[np.ndarray] = ()) -> Any:
        L = self.net.layer.add(name=name, type=type_)
        L.bottom.extend(bottoms)
        L.top.append(top)
        for b in blobs:
            bp = L.blobs.add()
            bp.shape.dim.extend(int(d) for d in b.shape)
            bp.data.extend(np.asarray(b, np.float32).ravel().tolist())
        self.layers.append((name, type_))
        return L

    def out(self, node: Any, k: int = 0) -> str:
        name = self.new_name(node.output[k])
        self.blob[node.output[k]] = name
        return name

    # -- the conversion ---------------------------------------------------------------------------
    def run(self, name: str) -> None:
        g = self.model.graph
        self.net.name = name
        for i in g.input:
            if i.name in self.consts:
                continue
            shp = self.shapes.get(i.name)
            if shp is None:
                raise CaffeExportError(i.name, "input", "the input has no static shape")
            b = self.new_name(i.name)
            self.blob[i.name] = b
            self.net.input.append(b)
            self.net.input_shape.add().dim.extend(shp)
        for n in g.node:
            if n.op_type == "Constant":
                continue
            if n.op_type not in EXPORTABLE:
                raise CaffeExportError(n.name, n.op_type, "no NNIE-supported Caffe layer for this op in edgesdk's "
                                                          "exporter")
            getattr(self, f"op_{n.op_type}")(n, _attrs(n))
        for o in g.output:
            if o.name not in self.blob:
                raise CaffeExportError(o.name, "output", "the output is not computed by any exported layer")

    # helpers
    def _const(self, n: Any, i: int, what: str) -> np.ndarray:
        if len(n.input) <= i or n.input[i] not in self.consts:
            raise CaffeExportError(n.name, n.op_type, f"{what} must be a constant (initializer)")
        return np.asarray(self.consts[n.input[i]], np.float32)

    def _sym_pads(self, n: Any, a: dict[str, Any], k: tuple[int, ...], s: tuple[int, ...], d: tuple[int, ...],
                  in_hw: tuple[int, int]) -> tuple[int, int]:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", "VALID"):
            p = list(a.get("pads", [0, 0, 0, 0])) if auto == "NOTSET" else [0, 0, 0, 0]
        else:  # SAME_UPPER / SAME_LOWER: total pad per axis, split
            p = [0, 0, 0, 0]
            for ax in range(2):
                out = -(-in_hw[ax] // s[ax])
                total = max(0, (out - 1) * s[ax] + (k[ax] - 1) * d[ax] + 1 - in_hw[ax])
                lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
                p[ax], p[ax + 2] = lo, total - lo
        if p[0] != p[2] or p[1] != p[3]:
            raise CaffeExportError(n.name, n.op_type, f"asymmetric pads {p}: Caffe pads both sides equally "
                                                      "(pad the input explicitly or re-export with symmetric pads)")
        return int(p[0]), int(p[1])

    def op_Identity(self, n: Any, a: dict[str, Any]) -> None:
        self.blob[n.output[0]] = self.src(n, 0)

    op_Dropout = op_Identity

    def op_Conv(self, n: Any, a: dict[str, Any], transpose: bool = False) -> None:
        W = self._const(n, 1, "the weight")
        if W.ndim != 4:
            raise CaffeExportError(n.name, n.op_type, f"only 2-D convolution converts (weight rank {W.ndim})")
        group = int(a.get("group", 1))
        k = tuple(a.get("kernel_shape", W.shape[2:]))
        s = tuple(a.get("strides", (1, 1)))
        d = tuple(a.get("dilations", (1, 1)))
        x_shape = self.shape(n.input[0])
        ph, pw = self._sym_pads(n, a, k, s, d, x_shape[2:4]) if not transpose else (0, 0)
        if transpose:
            if any(a.get("output_padding", [0, 0])) or "output_shape" in a:
                raise CaffeExportError(n.name, n.op_type, "output_padding/output_shape have no Caffe Deconvolution "
                                                          "equivalent")
            ph, pw = self._sym_pads(n, {k2: v for k2, v in a.items() if k2 != "auto_pad"}, k, s, d, x_shape[2:4])
        num_out = W.shape[1] * group if transpose else W.shape[0]
        blobs = [W]
        bias = len(n.input) > 2 and n.input[2] != ""
        if bias:
            blobs.append(self._const(n, 2, "the bias"))
        top = self.out(n)
        L = self.layer(top, "Deconvolution" if transpose else "Convolution", [self.src(n, 0)], top, blobs)
        p = L.convolution_param
        p.num_output = int(num_out)
        p.bias_term = bias
        p.kernel_h, p.kernel_w = int(k[0]), int(k[1])
        p.stride_h, p.stride_w = int(s[0]), int(s[1])
        p.pad_h, p.pad_w = ph, pw
        if group != 1:
            p.group = group
        if d != (1, 1):
            p.dilation.extend([int(d[0]), int(d[1])] if d[0] != d[1] else [int(d[0])])

    def op_ConvTranspose(self, n: Any, a: dict[str, Any]) -> None:
        self.op_Conv(n, a, transpose=True)

    def op_BatchNormalization(self, n: Any, a: dict[str, Any]) -> None:
        if a.get("training_mode", 0):
            raise CaffeExportError(n.name, n.op_type, "training_mode=1")
        gamma, beta = self._const(n, 1, "scale"), self._const(n, 2, "B")
        mean, var = self._const(n, 3, "mean"), self._const(n, 4, "var")
        eps = float(a.get("epsilon", 1e-5))
        top = self.out(n)
        bn = f"{top}_bn"
        self.used.add(bn)
        L = self.layer(bn, "BatchNorm", [self.src(n, 0)], bn, [mean, var, np.ones(1, np.float32)])
        L.batch_norm_param.use_global_stats = True
        L.batch_norm_param.eps = eps
        S = self.layer(top, "Scale", [bn], top, [gamma, beta])
        S.scale_param.bias_term = True

    def _act(self, n: Any, type_: str) -> Any:
        top = self.out(n)
        return self.layer(top, type_, [self.src(n, 0)], top)

    def op_Relu(self, n: Any, a: dict[str, Any]) -> None:
        self._act(n, "ReLU")

    def op_LeakyRelu(self, n: Any, a: dict[str, Any]) -> None:
        self._act(n, "ReLU").relu_param.negative_slope = float(a.get("alpha", 0.01))

    def op_Sigmoid(self, n: Any, a: dict[str, Any]) -> None:
        self._act(n, "Sigmoid")

    def op_Tanh(self, n: Any, a: dict[str, Any]) -> None:
        self._act(n, "TanH")

    def op_PRelu(self, n: Any, a: dict[str, Any]) -> None:
        slope = self._const(n, 1, "the slope").ravel()
        top = self.out(n)
        L = self.layer(top, "PReLU", [self.src(n, 0)], top, [slope])
        if slope.size == 1:
            L.prelu_param.channel_shared = True

    def _pool(self, n: Any, a: dict[str, Any], method: int) -> None:
        x = self.shape(n.input[0])
        if len(x) != 4:
            raise CaffeExportError(n.name, n.op_type, "only 2-D pooling converts")
        k = tuple(a["kernel_shape"])
        s = tuple(a.get("strides", (1, 1)))
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise CaffeExportError(n.name, n.op_type, "dilated pooling has no Caffe equivalent")
        ph, pw = self._sym_pads(n, a, k, s, (1, 1), x[2:4])
        if method == 1 and (ph or pw) and not a.get("count_include_pad", 0):
            raise CaffeExportError(n.name, n.op_type, "Caffe AVE pooling counts the padding (count_include_pad=1); "
                                                      "this node excludes it")
        want = self.shape(n.output[0])[2:4]
        for ax, (size, kk, ss, pp) in enumerate(zip(x[2:4], k, s, (ph, pw))):
            # Caffe: ceil, then drop a last window that starts inside the padding only
            out = -(-(size + 2 * pp - kk) // ss) + 1
            if pp and (out - 1) * ss >= size + pp:
                out -= 1
            if out != want[ax]:
                raise CaffeExportError(n.name, n.op_type, f"Caffe pooling rounds the output size up ({out}), ONNX "
                                                          f"gives {want[ax]} on axis {ax + 2} (ceil_mode="
                                                          f"{a.get('ceil_mode', 0)}); pad the input or change the "
                                                          "kernel/stride so that the sizes agree")
        top = self.out(n)
        p = self.layer(top, "Pooling", [self.src(n, 0)], top).pooling_param
        p.pool = method
        p.kernel_h, p.kernel_w = int(k[0]), int(k[1])
        p.stride_h, p.stride_w = int(s[0]), int(s[1])
        p.pad_h, p.pad_w = ph, pw

    def op_MaxPool(self, n: Any, a: dict[str, Any]) -> None:
        if len(n.output) > 1 and n.output[1]:
            raise CaffeExportError(n.name, n.op_type, "the Indices output has no Caffe equivalent")
        self._pool(n, a, 0)

    def op_AveragePool(self, n: Any, a: dict[str, Any]) -> None:
        self._pool(n, a, 1)

    def _global(self, n: Any, method: int) -> None:
        top = self.out(n)
        p = self.layer(top, "Pooling", [self.src(n, 0)], top).pooling_param
        p.pool = method
        p.global_pooling = True

    def op_GlobalAveragePool(self, n: Any, a: dict[str, Any]) -> None:
        self._global(n, 1)

    def op_GlobalMaxPool(self, n: Any, a: dict[str, Any]) -> None:
        self._global(n, 0)

    def _binary(self, n: Any, kind: str) -> None:
        c0, c1 = n.input[0] in self.consts, n.input[1] in self.consts
        if c0 and c1:
            raise CaffeExportError(n.name, n.op_type, "both operands are constants (fold them first)")
        if not c0 and not c1:
            s0, s1 = self.shape(n.input[0]), self.shape(n.input[1])
            if s0 != s1:
                raise CaffeExportError(n.name, n.op_type, f"broadcasting {list(s0)} with {list(s1)}: Caffe Eltwise "
                                                          "needs equal shapes")
            ops = {"Add": (1, None), "Sub": (1, [1.0, -1.0]), "Mul": (0, None), "Max": (2, None)}
            if kind not in ops:
                raise CaffeExportError(n.name, n.op_type, "element-wise division has no Caffe layer")
            op, coeff = ops[kind]
            top = self.out(n)
            p = self.layer(top, "Eltwise", [self.src(n, 0), self.src(n, 1)], top).eltwise_param
            p.operation = op
            if coeff:
                p.coeff.extend(coeff)
            return
        xi = 1 if c0 else 0
        x = self.shape(n.input[xi])
        c = np.asarray(self.consts[n.input[1 - xi]], np.float32)
        ch = x[1] if len(x) >= 2 else 1
        flat = c.ravel()
        per_channel = c.size == ch and (c.ndim <= 1 or (c.ndim <= len(x) and c.shape[c.ndim - len(x) + 1:][:1] ==
                                                         (ch,) and all(v == 1 for v in c.shape[c.ndim - len(x) + 2:])))
        if c.size == 1:
            flat = np.full(ch, float(c.ravel()[0]), np.float32)
        elif not per_channel or len(x) < 2:
            raise CaffeExportError(n.name, n.op_type, f"a constant of shape {list(c.shape)} is neither a scalar nor "
                                                      f"per-channel for input {list(x)} (Caffe Scale/Bias)")
        ones = np.ones(ch, np.float32)
        if kind == "Add":
            scale, bias = ones, flat
        elif kind == "Sub":
            scale, bias = (ones, -flat) if xi == 0 else (-ones, flat)
        elif kind == "Mul":
            scale, bias = flat, None
        elif kind == "Div" and xi == 0:
            if np.any(flat == 0):
                raise CaffeExportError(n.name, n.op_type, "division by a constant containing 0")
            scale, bias = 1.0 / flat, None
        else:
            raise CaffeExportError(n.name, n.op_type, f"{kind} with a constant {'first operand' if xi else ''} has "
                                                      "no Caffe layer")
        top = self.out(n)
        blobs = [scale] + ([bias] if bias is not None else [])
        p = self.layer(top, "Scale", [self.src(n, xi)], top, blobs).scale_param
        p.axis = 1
        p.bias_term = bias is not None

    def op_Add(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "Add")

    def op_Sub(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "Sub")

    def op_Mul(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "Mul")

    def op_Div(self, n: Any, a: dict[str, Any]) -> None:
        self._binary(n, "Div")

    def op_Max(self, n: Any, a: dict[str, Any]) -> None:
        if len(n.input) != 2:
            raise CaffeExportError(n.name, n.op_type, "only two-operand Max converts")
        self._binary(n, "Max")

    def op_Concat(self, n: Any, a: dict[str, Any]) -> None:
        rank = len(self.shape(n.input[0]))
        axis = int(a.get("axis", 1))
        axis = axis + rank if axis < 0 else axis
        top = self.out(n)
        self.layer(top, "Concat", [self.src(n, i) for i in range(len(n.input))], top).concat_param.axis = axis

    def _inner_product(self, n: Any, W: np.ndarray, b: np.ndarray | None) -> None:
        x = self.shape(n.input[0])
        if int(np.prod(x[1:])) != W.shape[1]:
            raise CaffeExportError(n.name, n.op_type, f"input {list(x)} does not flatten to the weight's {W.shape[1]}")
        top = self.out(n)
        blobs = [W] + ([b] if b is not None else [])
        p = self.layer(top, "InnerProduct", [self.src(n, 0)], top, blobs).inner_product_param
        p.num_output = int(W.shape[0])
        p.bias_term = b is not None

    def op_Gemm(self, n: Any, a: dict[str, Any]) -> None:
        if a.get("transA", 0) or float(a.get("alpha", 1.0)) != 1.0:
            raise CaffeExportError(n.name, n.op_type, "transA=1 or alpha != 1")
        B = self._const(n, 1, "B (the weight)")
        W = B if a.get("transB", 0) else B.T
        b = None
        if len(n.input) > 2 and n.input[2]:
            C = self._const(n, 2, "C (the bias)") * float(a.get("beta", 1.0))
            if C.size != W.shape[0]:
                raise CaffeExportError(n.name, n.op_type, f"bias of shape {list(C.shape)} is not per output")
            b = C.ravel()
        self._inner_product(n, np.ascontiguousarray(W), b)

    def op_MatMul(self, n: Any, a: dict[str, Any]) -> None:
        B = self._const(n, 1, "the second operand")
        if B.ndim != 2 or len(self.shape(n.input[0])) != 2:
            raise CaffeExportError(n.name, n.op_type, "only a 2-D input times a 2-D constant converts (InnerProduct)")
        self._inner_product(n, np.ascontiguousarray(B.T), None)

    def _reshape(self, n: Any) -> None:
        out = self.shape(n.output[0])
        top = self.out(n)
        self.layer(top, "Reshape", [self.src(n, 0)], top).reshape_param.shape.dim.extend(out)

    def op_Flatten(self, n: Any, a: dict[str, Any]) -> None:
        if int(a.get("axis", 1)) != 1:
            self._reshape(n)
            return
        top = self.out(n)
        self.layer(top, "Flatten", [self.src(n, 0)], top).flatten_param.axis = 1

    def op_Reshape(self, n: Any, a: dict[str, Any]) -> None:
        self._reshape(n)

    def op_Softmax(self, n: Any, a: dict[str, Any]) -> None:
        rank = len(self.shape(n.input[0]))
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        axis = axis + rank if axis < 0 else axis
        if self.opset < 13 and axis != rank - 1:
            raise CaffeExportError(n.name, n.op_type, "opset < 13 Softmax flattens from its axis; only the last axis "
                                                      "converts")
        top = self.out(n)
        self.layer(top, "Softmax", [self.src(n, 0)], top).softmax_param.axis = axis

    def _nearest_up(self, n: Any, mode: str, ctm: str, nearest: str) -> None:
        x, y = self.shape(n.input[0]), self.shape(n.output[0])
        if len(x) != 4 or x[:2] != y[:2]:
            raise CaffeExportError(n.name, n.op_type, "only spatial (H, W) resizing of a 4-D tensor converts")
        if mode != "nearest":
            raise CaffeExportError(n.name, n.op_type, f"mode {mode!r}: only nearest upsampling converts")
        f = []
        for ax in (2, 3):
            if y[ax] % x[ax]:
                raise CaffeExportError(n.name, n.op_type, f"non-integer scale {y[ax]}/{x[ax]}")
            s = y[ax] // x[ax]
            idx = np.arange(y[ax], dtype=np.float64)
            src = {"half_pixel": (idx + 0.5) / s - 0.5, "asymmetric": idx / s, "pytorch_half_pixel": (idx + 0.5) / s - 0.5,
                   "tf_half_pixel_for_nn": (idx + 0.5) / s}.get(ctm)
            if src is None:
                raise CaffeExportError(n.name, n.op_type, f"coordinate_transformation_mode {ctm!r}")
            rnd = {"floor": np.floor(src), "ceil": np.ceil(src), "round_prefer_floor": np.ceil(src - 0.5),
                   "round_prefer_ceil": np.floor(src + 0.5)}[nearest]
            if not np.array_equal(np.clip(rnd, 0, x[ax] - 1), idx // s):
                raise CaffeExportError(n.name, n.op_type, f"({ctm}, {nearest}) is not a plain {s}x repeat")
            f.append(int(s))
        C = x[1]
        top = self.out(n)
        L = self.layer(top, "Deconvolution", [self.src(n, 0)], top, [np.ones((C, 1, f[0], f[1]), np.float32)])
        p = L.convolution_param
        p.num_output, p.group, p.bias_term = C, C, False
        p.kernel_h, p.kernel_w = f
        p.stride_h, p.stride_w = f
        self.notes.append(f"{n.name or n.output[0]}: nearest {f[0]}x{f[1]} upsampling as a depthwise Deconvolution "
                          "with a kernel of ones (exact)")

    def op_Upsample(self, n: Any, a: dict[str, Any]) -> None:
        mode = a.get("mode", b"nearest")
        self._nearest_up(n, mode.decode() if isinstance(mode, bytes) else mode, "asymmetric", "floor")

    def op_Resize(self, n: Any, a: dict[str, Any]) -> None:
        def s(k: str, d: str) -> str:
            v = a.get(k, d)
            return v.decode() if isinstance(v, bytes) else v

        self._nearest_up(n, s("mode", "nearest"), s("coordinate_transformation_mode", "half_pixel"),
                         s("nearest_mode", "round_prefer_floor"))


def export_caffe(model: Any, prototxt: str | Path, caffemodel: str | Path, name: str | None = None,
                 input_scale: Mapping[str, Any] | None = None) -> CaffeExport:
    """Write `model` (an ONNX path or ModelProto) as a Caffe prototxt + caffemodel.

    input_scale: optional per-input per-channel factors applied first as a Caffe Scale layer
    (NNIE's data_scale is one number; a per-channel std difference goes here).
    Raises CaffeExportError naming the first node that has no exact Caffe equivalent.
    """
    import onnx
    from google.protobuf import text_format

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    b = _Builder(proto)
    b.run(name or (proto.graph.name or "net"))
    if input_scale:
        _prepend_scales(b, input_scale)
    prototxt, caffemodel = Path(prototxt), Path(caffemodel)
    prototxt.parent.mkdir(parents=True, exist_ok=True)
    caffemodel.write_bytes(b.net.SerializeToString())
    text = b.net.__class__()
    text.CopyFrom(b.net)
    for L in text.layer:
        del L.blobs[:]
    prototxt.write_text(text_format.MessageToString(text), encoding="utf-8")
    ins = {i.name: b.blob[i.name] for i in proto.graph.input if i.name in b.blob}
    outs = {o.name: b.blob[o.name] for o in proto.graph.output}
    return CaffeExport(prototxt, caffemodel, ins, outs, tuple(b.layers), tuple(b.notes))


def _prepend_scales(b: _Builder, input_scale: Mapping[str, Any]) -> None:
    net = b.net
    layers = list(net.layer)
    del net.layer[:]
    for onnx_name, factors in input_scale.items():
        blob = b.blob[onnx_name]
        scaled = f"{blob}_scaled"
        L = net.layer.add(name=scaled, type="Scale")
        L.bottom.append(blob)
        L.top.append(scaled)
        bp = L.blobs.add()
        f = np.asarray(factors, np.float32).ravel()
        bp.shape.dim.append(int(f.size))
        bp.data.extend(f.tolist())
        L.scale_param.axis = 1
        for old in layers:
            for k, bot in enumerate(old.bottom):
                if bot == blob:
                    old.bottom[k] = scaled
    net.layer.extend(layers)


def unsupported_nodes(model: Any) -> dict[str, str]:
    """node name -> why the exporter refuses it, for every node it cannot export on its own.

    Each node is tried alone (its inputs fed as graph inputs), so one refusal does not hide others.
    """
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    b = _Builder(proto)
    refused: dict[str, str] = {}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            continue
        if n.op_type not in EXPORTABLE:
            refused[n.name] = "no NNIE-supported Caffe layer for this op in edgesdk's exporter"
            continue
        probe = _Builder.__new__(_Builder)
        probe.__dict__.update(b.__dict__)
        probe.net = b.net.__class__()
        probe.blob = {t: _safe(t) for t in n.input if t and t not in b.consts}
        probe.used, probe.layers, probe.notes = set(probe.blob.values()), [], []
        try:
            getattr(probe, f"op_{n.op_type}")(n, _attrs(n))
        except CaffeExportError as exc:
            refused[n.name] = exc.reason
    return refused


def main(argv: list[str] | None = None) -> None:
    """`python -m edgesdk.caffe.export --onnx M --prototxt P --caffemodel C [--json J]`: the executor's entry."""
    import json

    ap = argparse.ArgumentParser(prog="edgesdk-caffe-export")
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--prototxt", required=True)
    ap.add_argument("--caffemodel", required=True)
    ap.add_argument("--name")
    ap.add_argument("--input-scale", action="append", default=[], metavar="NAME=f0,f1,f2")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    scales = {}
    for s in a.input_scale:
        k, _, v = s.rpartition("=")
        scales[k] = [float(x) for x in v.split(",")]
    try:
        res = export_caffe(a.onnx, a.prototxt, a.caffemodel, a.name, scales or None)
    except CaffeExportError as exc:
        raise SystemExit(f"edgesdk caffe export: {exc}") from exc
    if a.json:
        Path(a.json).write_text(json.dumps(res.to_dict(), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])


__all__ = ["EXPORTABLE", "CaffeExport", "CaffeExportError", "export_caffe", "unsupported_nodes"]

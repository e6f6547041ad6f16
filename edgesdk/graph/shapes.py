"""Shapes, dtypes and costs: ONNX shape inference plus per-node FLOPs, parameter and activation bytes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from edgesdk.errors import ModelError

#: ONNX element type -> (edgesdk dtype name, bytes per element).
_DTYPES: dict[int, tuple[str, int]] = {
    TensorProto.FLOAT: ("float32", 4),
    TensorProto.FLOAT16: ("float16", 2),
    TensorProto.BFLOAT16: ("bfloat16", 2),
    TensorProto.DOUBLE: ("float64", 8),
    TensorProto.INT8: ("int8", 1),
    TensorProto.UINT8: ("uint8", 1),
    TensorProto.INT16: ("int16", 2),
    TensorProto.UINT16: ("uint16", 2),
    TensorProto.INT32: ("int32", 4),
    TensorProto.UINT32: ("uint32", 4),
    TensorProto.INT64: ("int64", 8),
    TensorProto.UINT64: ("uint64", 8),
    TensorProto.BOOL: ("bool", 1),
    TensorProto.STRING: ("string", 0),
}


def elem_type(dtype: str) -> int:
    """edgesdk dtype name -> ONNX element type."""
    for k, (name, _) in _DTYPES.items():
        if name == dtype:
            return k
    raise ValueError(f"unknown dtype {dtype!r}")


def dtype_name(elem_type: int) -> str:
    if elem_type in _DTYPES:
        return _DTYPES[elem_type][0]
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:  # not an ONNX element type at all (a damaged file)
        return f"unknown-type-{elem_type}"


@dataclass(frozen=True)
class TensorInfo:
    """A tensor's static facts. `shape` is None when unknown; a dim is None when dynamic."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str
    itemsize: int
    is_initializer: bool = False

    @property
    def static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) and d >= 0 for d in self.shape)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def numel(self) -> int:
        """Element count (0 when the shape is not static)."""
        return math.prod(self.shape) if self.static else 0  # type: ignore[arg-type]

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shape": list(self.shape) if self.shape is not None else None,
                "dtype": self.dtype, "bytes": self.nbytes}


@dataclass(frozen=True)
class NodeCost:
    """What one node costs: FLOPs (2 x MACs for multiply-accumulate ops) and the bytes it touches."""

    flops: int
    param_bytes: int
    input_bytes: int
    activation_bytes: int  # bytes of the tensors the node produces

    @property
    def bytes_moved(self) -> int:
        return self.param_bytes + self.input_bytes + self.activation_bytes


def _value_info_to_tensor(vi: onnx.ValueInfoProto) -> TensorInfo | None:
    if not vi.type.HasField("tensor_type"):
        return None
    tt = vi.type.tensor_type
    name, size = _DTYPES.get(tt.elem_type, (dtype_name(tt.elem_type), 0))
    shape: tuple[int | None, ...] | None = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return TensorInfo(vi.name, shape, name, size)


def _init_to_tensor(t: onnx.TensorProto) -> TensorInfo:
    name, size = _DTYPES.get(t.data_type, (dtype_name(t.data_type), 0))
    return TensorInfo(t.name, tuple(int(d) for d in t.dims), name, size, is_initializer=True)


def infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with data propagation; a failure is an invalid graph (ModelError)."""
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError,
            TypeError) as exc:  # ValueError: "Invalid tensor data type 99." (the checker lets it through)
        raise ModelError(f"invalid graph: shape inference failed: {str(exc).strip()}") from exc


def tensor_table(graph: onnx.GraphProto) -> dict[str, TensorInfo]:
    """Every named tensor of the (inferred) main graph -> TensorInfo."""
    out: dict[str, TensorInfo] = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        ti = _value_info_to_tensor(vi)
        if ti is not None:
            out[vi.name] = ti
    for t in graph.initializer:
        out[t.name] = _init_to_tensor(t)
    return out


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


_ZERO_FLOP = frozenset({
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
    "GatherElements", "GatherND", "Identity", "Shape", "Size", "Cast", "Expand", "Tile", "Pad",
    "DepthToSpace", "SpaceToDepth", "ConstantOfShape", "Range", "Dropout", "ScatterND", "ScatterElements",
    "NonZero", "TopK", "Constant", "CastLike", "Trilu", "OneHot",
})
#: FLOPs per output element for element-wise ops that are more than one operation.
_PER_ELEM = {"BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 5,
             "Softmax": 3, "LogSoftmax": 4, "HardSwish": 4, "HardSigmoid": 3, "Gelu": 8, "Erf": 4,
             "Sigmoid": 4, "Tanh": 4, "Swish": 5, "Mish": 6, "Softplus": 3, "Exp": 2, "Log": 2}


def node_cost(node: onnx.NodeProto, tensors: dict[str, TensorInfo]) -> NodeCost:
    """FLOPs and bytes of one node, from its static shapes (unknown shapes count as 0)."""
    ins = [tensors.get(n) for n in node.input if n]
    outs = [tensors.get(n) for n in node.output if n]
    params = sum(t.nbytes for t in ins if t is not None and t.is_initializer)
    in_bytes = sum(t.nbytes for t in ins if t is not None and not t.is_initializer)
    act = sum(t.nbytes for t in outs if t is not None)
    out0 = outs[0] if outs and outs[0] is not None else None
    out_n = out0.numel if out0 is not None else 0
    x = ins[0] if ins and ins[0] is not None else None
    op = node.op_type
    flops = 0
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = tensors.get(node.input[3 if op == "QLinearConv" else 1])
        if w is not None and w.static and out0 is not None and out0.static:
            # out elements x (Cin/group x kernel) MACs
            macs = out_n * math.prod(w.shape[1:])  # type: ignore[arg-type]
            flops = 2 * macs + (out_n if len(node.input) > 2 and node.input[2] and op == "Conv" else 0)
    elif op == "ConvTranspose":
        w = tensors.get(node.input[1])
        if w is not None and w.static and x is not None and x.static:
            # each input element scatters into Cout/group x kernel outputs
            macs = x.numel * (w.shape[1] or 0) * math.prod(w.shape[2:])  # type: ignore[arg-type]
            flops = 2 * macs + (out_n if len(node.input) > 2 and node.input[2] else 0)
    elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = x
        if a is not None and a.static and out0 is not None and out0.static and a.shape:
            k = a.shape[0] if (op == "Gemm" and _attr(node, "transA", 0)) else a.shape[-1]
            flops = 2 * out_n * int(k or 0) + (out_n if op == "Gemm" and len(node.input) > 2 else 0)
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        k = _attr(node, "kernel_shape", [])
        flops = out_n * math.prod(k) if k else out_n  # type: ignore[arg-type]
    elif op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool") or op.startswith("Reduce") \
            or op in ("ArgMax", "ArgMin"):
        flops = x.numel if x is not None else 0
    elif op in ("Resize", "Upsample"):
        mode = _attr(node, "mode", b"nearest")
        flops = out_n * (4 if mode in (b"linear", "linear", b"cubic", "cubic") else 1)
    elif op in _ZERO_FLOP:
        flops = 0
    else:
        flops = out_n * _PER_ELEM.get(op, 1)
    return NodeCost(int(flops), int(params), int(in_bytes), int(act))


__all__ = ["NodeCost", "TensorInfo", "dtype_name", "elem_type", "infer_shapes", "node_cost", "tensor_table"]

"""The subset of Caffe's protobuf schema edgesdk writes, built at import time (no generated code, no build step).

Field numbers and types are those of BVLC caffe.proto (src/caffe/proto/caffe.proto), so that
Caffe, OpenCV's Caffe importer and nnie_mapper read the files: the text `.prototxt` and the
binary `.caffemodel` are both a NetParameter. Only the messages and fields the exporter uses
are declared; readers ignore nothing we write and we write nothing outside this list.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
OPT, REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_T = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "float": _F.TYPE_FLOAT, "int32": _F.TYPE_INT32,
      "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32}

#: message -> [(field, number, type or message/enum name, label, packed)], numbers as in BVLC caffe.proto.
MESSAGES: dict[str, list[tuple[str, int, str, int, bool]]] = {
    "BlobShape": [("dim", 1, "int64", REP, True)],
    "BlobProto": [("num", 1, "int64", OPT, False), ("channels", 2, "int64", OPT, False),
                  ("height", 3, "int64", OPT, False), ("width", 4, "int64", OPT, False),
                  ("data", 5, "float", REP, True), ("shape", 7, ".caffe.BlobShape", OPT, False)],
    "NetParameter": [("name", 1, "string", OPT, False), ("input", 3, "string", REP, False),
                     ("input_dim", 4, "int64", REP, False), ("input_shape", 8, ".caffe.BlobShape", REP, False),
                     ("layer", 100, ".caffe.LayerParameter", REP, False)],
    "LayerParameter": [
        ("name", 1, "string", OPT, False), ("type", 2, "string", OPT, False), ("bottom", 3, "string", REP, False),
        ("top", 4, "string", REP, False), ("blobs", 7, ".caffe.BlobProto", REP, False),
        ("concat_param", 104, ".caffe.ConcatParameter", OPT, False),
        ("convolution_param", 106, ".caffe.ConvolutionParameter", OPT, False),
        ("eltwise_param", 110, ".caffe.EltwiseParameter", OPT, False),
        ("inner_product_param", 117, ".caffe.InnerProductParameter", OPT, False),
        ("pooling_param", 121, ".caffe.PoolingParameter", OPT, False),
        ("relu_param", 123, ".caffe.ReLUParameter", OPT, False),
        ("softmax_param", 125, ".caffe.SoftmaxParameter", OPT, False),
        ("prelu_param", 131, ".caffe.PReLUParameter", OPT, False),
        ("reshape_param", 133, ".caffe.ReshapeParameter", OPT, False),
        ("flatten_param", 135, ".caffe.FlattenParameter", OPT, False),
        ("batch_norm_param", 139, ".caffe.BatchNormParameter", OPT, False),
        ("scale_param", 142, ".caffe.ScaleParameter", OPT, False),
        ("input_param", 143, ".caffe.InputParameter", OPT, False),
    ],
    "ConcatParameter": [("concat_dim", 1, "uint32", OPT, False), ("axis", 2, "int32", OPT, False)],
    "ConvolutionParameter": [
        ("num_output", 1, "uint32", OPT, False), ("bias_term", 2, "bool", OPT, False),
        ("pad", 3, "uint32", REP, False), ("kernel_size", 4, "uint32", REP, False),
        ("group", 5, "uint32", OPT, False), ("stride", 6, "uint32", REP, False),
        ("pad_h", 9, "uint32", OPT, False), ("pad_w", 10, "uint32", OPT, False),
        ("kernel_h", 11, "uint32", OPT, False), ("kernel_w", 12, "uint32", OPT, False),
        ("stride_h", 13, "uint32", OPT, False), ("stride_w", 14, "uint32", OPT, False),
        ("axis", 16, "int32", OPT, False), ("dilation", 18, "uint32", REP, False)],
    "EltwiseParameter": [("operation", 1, ".caffe.EltwiseParameter.EltwiseOp", OPT, False),
                         ("coeff", 2, "float", REP, False)],
    "InnerProductParameter": [("num_output", 1, "uint32", OPT, False), ("bias_term", 2, "bool", OPT, False),
                              ("axis", 5, "int32", OPT, False), ("transpose", 6, "bool", OPT, False)],
    "PoolingParameter": [
        ("pool", 1, ".caffe.PoolingParameter.PoolMethod", OPT, False), ("kernel_size", 2, "uint32", OPT, False),
        ("stride", 3, "uint32", OPT, False), ("pad", 4, "uint32", OPT, False),
        ("kernel_h", 5, "uint32", OPT, False), ("kernel_w", 6, "uint32", OPT, False),
        ("stride_h", 7, "uint32", OPT, False), ("stride_w", 8, "uint32", OPT, False),
        ("pad_h", 9, "uint32", OPT, False), ("pad_w", 10, "uint32", OPT, False),
        ("global_pooling", 12, "bool", OPT, False)],
    "ReLUParameter": [("negative_slope", 1, "float", OPT, False)],
    "SoftmaxParameter": [("axis", 2, "int32", OPT, False)],
    "PReLUParameter": [("channel_shared", 2, "bool", OPT, False)],
    "ReshapeParameter": [("shape", 1, ".caffe.BlobShape", OPT, False), ("axis", 2, "int32", OPT, False),
                         ("num_axes", 3, "int32", OPT, False)],
    "FlattenParameter": [("axis", 1, "int32", OPT, False), ("end_axis", 2, "int32", OPT, False)],
    "BatchNormParameter": [("use_global_stats", 1, "bool", OPT, False),
                           ("moving_average_fraction", 2, "float", OPT, False), ("eps", 3, "float", OPT, False)],
    "ScaleParameter": [("axis", 1, "int32", OPT, False), ("num_axes", 2, "int32", OPT, False),
                       ("bias_term", 4, "bool", OPT, False)],
    "InputParameter": [("shape", 1, ".caffe.BlobShape", REP, False)],
}
#: nested enums: message -> enum name -> [(value name, number)], as in BVLC caffe.proto.
ENUMS: dict[str, dict[str, list[tuple[str, int]]]] = {
    "EltwiseParameter": {"EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)]},
    "PoolingParameter": {"PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)]},
}


@cache
def _classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(name="edgesdk/caffe_subset.proto", package="caffe", syntax="proto2")
    for msg, fields in MESSAGES.items():
        m = fdp.message_type.add(name=msg)
        for ename, values in ENUMS.get(msg, {}).items():
            e = m.enum_type.add(name=ename)
            for vname, num in values:
                e.value.add(name=vname, number=num)
        for fname, num, ftype, label, packed in fields:
            f = m.field.add(name=fname, number=num, label=label)
            if ftype in _T:
                f.type = _T[ftype]
            else:
                f.type_name = ftype
                f.type = _F.TYPE_ENUM if ftype.count(".") > 2 else _F.TYPE_MESSAGE
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in MESSAGES}


def message(name: str) -> Any:
    """The message class `caffe.<name>` (e.g. message("NetParameter")())."""
    return _classes()[name]


def schema_text() -> str:
    """The subset as .proto text, for reading and for users who want to compile it."""
    lines = ['syntax = "proto2";', "package caffe;", ""]
    label = {OPT: "optional", REP: "repeated"}
    for msg, fields in MESSAGES.items():
        lines.append(f"message {msg} {{")
        for ename, values in ENUMS.get(msg, {}).items():
            lines.append(f"  enum {ename} {{ " + " ".join(f"{v} = {n};" for v, n in values) + " }")
        for fname, num, ftype, lab, packed in fields:
            t = ftype.rsplit(".", 1)[-1] if ftype.startswith(".") else ftype
            lines.append(f"  {label[lab]} {t} {fname} = {num}{' [packed = true]' if packed else ''};")
        lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["ENUMS", "MESSAGES", "message", "schema_text"]

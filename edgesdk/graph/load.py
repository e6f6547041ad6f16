"""Safe model loading: external data confined to the model's folder, checked graph, fixed static input shapes."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from edgesdk.errors import InputError, ModelError
from edgesdk.graph.shapes import NodeCost, TensorInfo, infer_shapes, node_cost, tensor_table

#: Protobuf cannot serialise or parse a message of 2 GiB or more.
PROTOBUF_LIMIT = 2**31 - 1
#: Op domains edgesdk understands (the ONNX default domain and its aliases).
KNOWN_DOMAINS = frozenset({"", "ai.onnx"})
#: The largest tensor (input, weight or activation) a model may have, in bytes: a bigger one is a model error
#: before any engine allocates it (an Expand to 120 GB). Override with EDGESDK_MAX_TENSOR_BYTES (e.g. 8G).
DEFAULT_MAX_TENSOR_BYTES = 2 << 30
MAX_TENSOR_ENV = "EDGESDK_MAX_TENSOR_BYTES"


@dataclass(eq=False)
class Model:
    """A checked ONNX model with static input shapes, inferred tensor shapes and per-node costs.

    ``proto`` holds the structure; weights stored as external data stay on disk until a segment
    needs them (see ``base_dir``).
    """

    proto: onnx.ModelProto
    path: Path | None
    name: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tensors: dict[str, TensorInfo]
    node_inputs: list[tuple[str, ...]]  # explicit and outer-scope (subgraph) inputs of each node
    costs: list[NodeCost]
    producer: dict[str, int] = field(default_factory=dict)
    has_external_data: bool = False
    notes: tuple[str, ...] = ()  # what loading decided for the user (e.g. an input size taken from metadata)
    _inits: dict[str, onnx.TensorProto] | None = field(default=None, repr=False)
    _nodes: list[onnx.NodeProto] | None = field(default=None, repr=False)

    @property
    def nodes(self) -> Sequence[onnx.NodeProto]:
        # a plain list of the graph's nodes: protobuf's repeated-field access costs ~0.3 us a call, and the
        # partition and the plan choice index nodes millions of times (the graph is never edited once loaded)
        nodes = self._nodes
        if nodes is None:
            nodes = self._nodes = list(self.proto.graph.node)
        return nodes

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    @property
    def total_flops(self) -> int:
        return sum(c.flops for c in self.costs)

    def initializer(self, name: str) -> onnx.TensorProto | None:
        if self._inits is None:
            self._inits = {t.name: t for t in self.proto.graph.initializer}
        return self._inits.get(name)

    def consumers(self) -> list[list[int]]:
        """For each node, the indices of the nodes that read one of its outputs."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for j, ins in enumerate(self.node_inputs):
            seen = set()
            for name in ins:
                i = self.producer.get(name)
                if i is not None and i not in seen:
                    seen.add(i)
                    out[i].append(j)
        return out


# -- external data ---------------------------------------------------------------------------------

def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values
                yield a.sparse_tensor.indices
            if a.HasField("g"):
                yield from _graph_tensors(a.g)
            for g in a.graphs:
                yield from _graph_tensors(g)


def _all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(proto.graph)
    for fn in proto.functions:
        for node in fn.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t


def _external_location(t: onnx.TensorProto) -> str | None:
    if t.data_location != onnx.TensorProto.EXTERNAL:
        return None
    for kv in t.external_data:
        if kv.key == "location":
            return kv.value
    return ""


def check_external_data(proto: onnx.ModelProto, model_dir: Path) -> bool:
    """Refuse any external data path that could leave the model's folder. True if the model has any.

    Runs before a single external byte is read (CVE-2024-27318 was this bug in onnx itself).
    """
    base = os.path.realpath(model_dir)
    found = False
    for t in _all_tensors(proto):
        loc = _external_location(t)
        if loc is None:
            continue
        found = True
        where = f"tensor {t.name!r}: external data location {loc!r}"
        if not loc:
            raise ModelError(f"{where} is empty")
        if "\x00" in loc:
            raise ModelError(f"{where} contains a NUL byte")
        posix, win = PurePosixPath(loc), PureWindowsPath(loc)
        if posix.is_absolute() or win.is_absolute() or win.drive or loc.startswith(("/", "\\")):
            raise ModelError(f"{where} is an absolute path; external data must sit inside the model's folder")
        if ".." in posix.parts or ".." in win.parts:
            raise ModelError(f"{where} contains '..'; external data must sit inside the model's folder")
        target = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, target]) != base:
            raise ModelError(f"{where} resolves (through a symlink) to {target}, outside the model's folder {base}")
        if not os.path.isfile(target):
            raise ModelError(f"{where}: file {target} does not exist")
    return found


# -- tensor sizes ----------------------------------------------------------------------------------

def max_tensor_bytes() -> int:
    """The per-tensor size limit: EDGESDK_MAX_TENSOR_BYTES (bytes, or with a K/M/G/T suffix), else 2 GiB."""
    text = os.environ.get(MAX_TENSOR_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_TENSOR_BYTES
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:].upper(), 1)
    try:
        n = int(float(text[:-1] if mult > 1 else text) * mult)
    except ValueError:
        n = 0
    if n <= 0:
        raise InputError(f"{MAX_TENSOR_ENV}={text!r}: expected a positive size in bytes, e.g. 4G or 4294967296")
    return n


def _gb(n: int) -> str:
    return (f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB" if n >= 2**20 else
            f"{n / 2**10:.3g} KiB")


def _typed_count(t: onnx.TensorProto) -> int | None:
    """How many elements an initializer actually holds (None: external data, or a type this does not check)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    from edgesdk.graph.shapes import _DTYPES

    itemsize = _DTYPES.get(t.data_type, ("", 0))[1]
    if t.HasField("raw_data") or t.raw_data:
        if not itemsize:
            return None
        return len(t.raw_data) // itemsize if len(t.raw_data) % itemsize == 0 else -1
    if t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.INT8,
                       onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
                       onnx.TensorProto.INT32, onnx.TensorProto.BOOL):
        return len(t.int32_data)
    field = {onnx.TensorProto.FLOAT: "float_data", onnx.TensorProto.DOUBLE: "double_data",
             onnx.TensorProto.INT64: "int64_data", onnx.TensorProto.UINT32: "uint64_data",
             onnx.TensorProto.UINT64: "uint64_data", onnx.TensorProto.STRING: "string_data"}.get(t.data_type)
    return len(getattr(t, field)) if field else None


def check_initializers(graph: onnx.GraphProto, limit: int, origin: str = "") -> None:
    """Every initializer's dims are non-negative, within the size limit, and match the data it holds (a shape
    that lies reaches engines as an out-of-bounds read or an allocation failure)."""
    import math

    from edgesdk.graph.shapes import _DTYPES

    valid = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    for t in graph.initializer:
        dims = list(t.dims)
        where = f"{origin}initializer {t.name!r} (shape {dims})"
        if t.data_type not in valid:
            raise ModelError(f"{where} has data type {t.data_type}, which is not an ONNX element type")
        if any(d < 0 for d in dims):
            raise ModelError(f"{where} has a negative dimension")
        n = math.prod(dims)
        size = n * max(1, _DTYPES.get(t.data_type, ("", 1))[1])
        if size > limit:
            raise ModelError(f"{where} would take {_gb(size)}, more than the per-tensor limit of {_gb(limit)} "
                             f"({MAX_TENSOR_ENV} raises it)")
        held = _typed_count(t)
        if held is not None and held != n:
            what = "a byte count that is not a whole number of elements" if held < 0 else f"{held} element(s)"
            raise ModelError(f"{where} declares {n} element(s) but holds {what}: the file is damaged or lies "
                             "about the shape")


def check_tensor_sizes(tensors: Mapping[str, object], graph: onnx.GraphProto, limit: int, origin: str = "") -> None:
    """No tensor of the inferred graph (inputs, weights, every node's outputs) is larger than `limit` bytes:
    refused here, before onnxruntime or a converter tries to allocate it."""
    producers = {o: n for n in graph.node for o in n.output if o}
    inputs = {vi.name for vi in graph.input}
    for name, t in tensors.items():
        nbytes = getattr(t, "nbytes", 0)
        if nbytes <= limit:
            continue
        shape = list(t.shape)  # type: ignore[attr-defined]
        node = producers.get(name)
        who = (f"output {name!r} of node {node.name!r} ({node.op_type})" if node is not None else
               f"input {name!r}" if name in inputs else f"tensor {name!r}")
        raise ModelError(f"{origin}{who} would be {shape} {t.dtype} = {_gb(nbytes)}, more than the per-tensor limit of "  # type: ignore[attr-defined]
                         f"{_gb(limit)}: no board can hold it (a shape that lies, or a wrong --input-shape); "
                         f"{MAX_TENSOR_ENV} raises the limit")


def check_names(graph: onnx.GraphProto, origin: str = "", where: str = "graph") -> None:
    """Every name and op type of the graph (and its subgraphs) is text: protobuf hands a string field that is
    not valid UTF-8 back as bytes, which reaches plan.json and reports as a crash (found by the fuzzer)."""
    def bad(value: object) -> bool:
        return not isinstance(value, str)

    for kind, items in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info),
                        ("initializer", graph.initializer)):
        for i, vi in enumerate(items):
            if bad(vi.name):
                raise ModelError(f"{origin}{where} {kind} {i}: its name {vi.name!r} is not valid UTF-8 text")
    for i, node in enumerate(graph.node):
        fields = [("name", node.name), ("op_type", node.op_type), ("domain", node.domain)]
        fields += [(f"input {k}", x) for k, x in enumerate(node.input)]
        fields += [(f"output {k}", x) for k, x in enumerate(node.output)]
        fields += [("attribute name", a.name) for a in node.attribute]
        for what, value in fields:
            if bad(value):
                raise ModelError(f"{origin}{where} node {i} ({node.op_type!r}): its {what} {value!r} is not valid "
                                 "UTF-8 text")
        for a in node.attribute:
            for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                check_names(sg, origin, f"subgraph {a.name!r} of node {i}")


# -- input shapes ----------------------------------------------------------------------------------

def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``name=1,3,224,224`` (the --input-shape option)."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims:
        raise InputError(f"--input-shape {text!r}: expected NAME=D0,D1,... e.g. images=1,3,640,640")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError as exc:
        raise InputError(f"--input-shape {text!r}: dimensions must be integers, e.g. {name}=1,3,224,224") from exc
    if any(d <= 0 for d in shape):
        raise InputError(f"--input-shape {text!r}: dimensions must be positive")
    return name, shape


def _fmt_dims(dims: Sequence[onnx.TensorShapeProto.Dimension]) -> str:
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims) + ")"


_SIZE_KEYS = ("imgsz", "input_size", "img_size", "image_size")


def _metadata_size(proto: onnx.ModelProto) -> tuple[int, int, str] | None:
    """(H, W, "key=value") the model's metadata names as its input size: ``imgsz`` (ultralytics), ``input_size``..."""
    import ast

    for kv in proto.metadata_props:
        if not isinstance(kv.key, str) or not isinstance(kv.value, str) or kv.key.lower() not in _SIZE_KEYS:
            continue
        try:
            v = ast.literal_eval(kv.value.strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(v, int):
            v = [v, v]
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v):
            return int(v[0]), int(v[1]), f"{kv.key}={kv.value.strip()}"
    return None


def shapes_from_metadata(proto: onnx.ModelProto, real_inputs: Sequence[onnx.ValueInfoProto],
                         given: Mapping[str, Sequence[int]]) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Input shapes for a single dynamic 4-D image input whose size the model's metadata names.

    Only fills what the user left open: batch 1, the channel count the model fixes (else 3), and H, W from
    the metadata (NCHW, or NHWC when the last dimension is the fixed channel count)."""
    size = _metadata_size(proto)
    if size is None or len(real_inputs) != 1 or real_inputs[0].name in given:
        return {}, []
    vi = real_inputs[0]
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 4:
        return {}, []
    fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if all(f is not None for f in fixed):
        return {}, []
    h, w, origin = size
    if fixed[3] in (1, 3, 4) and fixed[1] not in (1, 3, 4):
        shape = (fixed[0] or 1, fixed[1] or h, fixed[2] or w, fixed[3])
    else:
        shape = (fixed[0] or 1, fixed[1] or 3, fixed[2] or h, fixed[3] or w)
    note = (f"input {vi.name!r}: no --input-shape given; took {','.join(map(str, shape))} from the model's metadata "
            f"({origin}); override with --input-shape {vi.name}=...")
    return {vi.name: shape}, [note]


def _fix_input_shapes(graph: onnx.GraphProto, real_inputs: list[onnx.ValueInfoProto],
                      input_shapes: Mapping[str, Sequence[int]]) -> None:
    by_name = {vi.name: vi for vi in real_inputs}
    for name, shape in input_shapes.items():
        vi = by_name.get(name)
        if vi is None:
            raise InputError(f"--input-shape {name}=...: the model has no input {name!r}; its inputs: "
                             + ", ".join(repr(n) for n in by_name))
        tt = vi.type.tensor_type
        dims = tt.shape.dim
        if tt.HasField("shape") and len(dims) != len(shape):
            raise InputError(f"--input-shape {name}: the input has rank {len(dims)} {_fmt_dims(dims)}, "
                             f"got {len(shape)} dimensions")
        if not tt.HasField("shape") or not dims:
            tt.shape.Clear()
            for _ in shape:
                tt.shape.dim.add()
        for i, (d, v) in enumerate(zip(tt.shape.dim, shape)):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                raise InputError(f"--input-shape {name}: dimension {i} is fixed to {d.dim_value} in the model, got {v}")
            d.Clear()
            d.dim_value = int(v)
    for vi in real_inputs:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"input {vi.name!r} is not a tensor; edgesdk handles tensor inputs only")
        dyn = [i for i, d in enumerate(tt.shape.dim) if not (d.HasField("dim_value") and d.dim_value > 0)]
        if not tt.HasField("shape") or dyn:
            hint = ",".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else
                            f"<{d.dim_param or 'dim' + str(i)}>" for i, d in enumerate(tt.shape.dim)) or "1,3,224,224"
            what = f"dynamic dimension(s) {dyn} in shape {_fmt_dims(tt.shape.dim)}" if tt.HasField("shape") \
                else "no shape"
            raise ModelError(f"input {vi.name!r} has {what}; fix it with --input-shape {vi.name}={hint} "
                             f"(input_shapes={{{vi.name!r}: (...)}} in Python)")


# -- loading ---------------------------------------------------------------------------------------

def _complete_io_types(proto: onnx.ModelProto) -> None:
    """Exporters (Paddle2ONNX among them) write value_info and graph outputs with a type but no shape, which
    onnx.checker refuses ("Field 'shape' of 'type' is required but missing"). Shapes there are hints: drop
    shapeless value_info, and give a shapeless output the shape inference finds (or leave it to the checker)."""
    g = proto.graph

    def shapeless(vi: onnx.ValueInfoProto) -> bool:
        return vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")

    if any(shapeless(vi) for vi in g.value_info):
        keep = [vi for vi in g.value_info if not shapeless(vi)]
        del g.value_info[:]
        g.value_info.extend(keep)
    if any(shapeless(o) for o in g.output):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
            return
        found = {o.name: o for o in inferred.graph.output}
        for o in g.output:
            if shapeless(o) and o.name in found and found[o.name].type.tensor_type.HasField("shape"):
                o.type.tensor_type.shape.CopyFrom(found[o.name].type.tensor_type.shape)


def _without_shapeless_outputs(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model the checker sees: an output whose shape nothing states yet gets a placeholder shape for the
    check only (edgesdk clears and infers every output's shape after loading); everything else is checked."""
    outs = proto.graph.output
    if not any(o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape") for o in outs):
        return proto
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    for o in m.graph.output:
        if o.type.HasField("tensor_type") and not o.type.tensor_type.HasField("shape"):
            o.type.tensor_type.shape.Clear()
            o.type.tensor_type.shape.dim.add()  # a placeholder rank for the check only: shapes are inferred later
    return m


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn Constant nodes into initializers: they cost nothing and belong to whichever segment reads them."""
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in KNOWN_DOMAINS and node.output[0] not in outputs:
            attr = node.attribute[0] if len(node.attribute) == 1 else None
            t = None
            if attr is not None and attr.name == "value":
                t = onnx.TensorProto()
                t.CopyFrom(attr.t)
            elif attr is not None and attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                import numpy as np

                val = onnx.helper.get_attribute_value(attr)
                dt = np.float32 if "float" in attr.name else np.int64
                t = numpy_helper.from_array(np.array(val, dtype=dt))
            if t is not None:
                t.name = node.output[0]
                graph.initializer.append(t)
                continue
        keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _subgraph_outer_inputs(node: onnx.NodeProto) -> list[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    out: list[str] = []

    def walk(g: onnx.GraphProto, bound: set[str]) -> None:
        local = set(bound) | {i.name for i in g.input} | {t.name for t in g.initializer}
        for n in g.node:
            for i in n.input:
                if i and i not in local:
                    out.append(i)
            for a in n.attribute:
                for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(sg, local)
            local.update(o for o in n.output if o)

    for a in node.attribute:
        for sg in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            walk(sg, set())
    return out


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: reports, plans and segment files refer to nodes by name."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name
        if not name or name in seen:
            base = name or f"{node.op_type}_{i}"
            name, k = base, 1
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        seen.add(name)


def _parse(path: Path) -> onnx.ModelProto:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if size > PROTOBUF_LIMIT:
        raise ModelError(f"{path}: {size / 2**30:.2f} GiB is larger than protobuf's 2 GB limit; a model this big "
                         "must keep its weights as external data (onnx.save_model(..., save_as_external_data=True))")
    if size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not an ONNX model, or a truncated one (protobuf parse failed: {exc})") from exc
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no ir_version, graph or opset_import)")
    return proto


def load_model(path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Model:
    """Load an ONNX model safely and return it checked, with static shapes and per-node costs.

    Raises ModelError (exit code 2) for a non-ONNX or truncated file, an invalid graph, external data
    outside the model's folder, an unknown op domain, an input shape left dynamic, an initializer whose data does
    not match its shape, or a tensor larger than the per-tensor limit (`max_tensor_bytes`).
    """
    p = Path(path)
    limit = max_tensor_bytes()
    proto = _parse(p)
    has_ext = check_external_data(proto, p.parent)
    check_names(proto.graph, f"{p}: ")
    check_initializers(proto.graph, limit, f"{p}: ")

    # Structure checks first: they give clearer messages than the checker.
    graph = proto.graph
    for node in graph.node:
        if node.domain not in KNOWN_DOMAINS:
            local = {(f.domain, f.name) for f in proto.functions}
            kind = "a model-local function" if (node.domain, node.op_type) in local else "an unknown op domain"
            raise ModelError(f"node {node.name or node.op_type!r} uses {kind} {node.domain!r} (op {node.op_type}); "
                             "edgesdk handles the standard ONNX domain only: export without custom ops")
    opsets = {o.domain: o.version for o in proto.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    if opset <= 0:
        raise ModelError(f"{p}: the model imports no version of the default ONNX op set")

    inits = {t.name for t in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in inits]
    shapes = dict(input_shapes or {})
    meta_shapes, notes = shapes_from_metadata(proto, real_inputs, shapes)
    shapes.update(meta_shapes)
    _fix_input_shapes(graph, real_inputs, shapes)
    _complete_io_types(proto)  # after the input shapes are fixed: inference can then fill the outputs
    try:
        if has_ext:
            onnx.checker.check_model(str(p))  # needs the folder to check external tensors; paths vetted above
        else:
            onnx.checker.check_model(_without_shapeless_outputs(proto))
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()
        raise ModelError(f"{p}: invalid ONNX graph: {' '.join(msg[:3])}") from exc

    _constants_to_initializers(graph)
    _name_nodes(graph)
    # Stale intermediate shapes (often symbolic) would fight the fixed input shapes.
    del graph.value_info[:]
    for o in graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    try:
        inferred = infer_shapes(proto)
    except ModelError as exc:
        raise ModelError(f"{p}: {exc}") from exc
    tensors = tensor_table(inferred.graph)
    check_tensor_sizes(tensors, inferred.graph, limit, f"{p}: ")

    node_inputs, producer = graph_index(inferred.graph)
    costs = [node_cost(n, tensors) for n in inferred.graph.node]
    return Model(
        proto=inferred,
        path=p,
        name=p.stem,
        opset=opset,
        inputs=tuple(vi.name for vi in real_inputs),
        outputs=tuple(o.name for o in inferred.graph.output),
        tensors=tensors,
        node_inputs=node_inputs,
        costs=costs,
        producer=producer,
        has_external_data=has_ext,
        notes=tuple(notes),
    )


def graph_index(graph: onnx.GraphProto) -> tuple[list[tuple[str, ...]], dict[str, int]]:
    """(each node's inputs, explicit and outer-scope; tensor name -> index of the node that produces it)."""
    node_inputs = []
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        ins = [n for n in node.input if n]
        if any(a.HasField("g") or a.graphs for a in node.attribute):
            ins += _subgraph_outer_inputs(node)
        node_inputs.append(tuple(dict.fromkeys(ins)))
        for o in node.output:
            if o:
                producer[o] = i
    return node_inputs, producer


def load_weights(model: Model) -> onnx.ModelProto:
    """A copy of the model's proto with external data read in (paths were vetted at load time)."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    if model.has_external_data and model.base_dir is not None:
        check_external_data(proto, model.base_dir)
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(model.base_dir))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelError(f"{model.path}: cannot read external data: {exc}") from exc
    return proto


__all__ = ["DEFAULT_MAX_TENSOR_BYTES", "MAX_TENSOR_ENV", "PROTOBUF_LIMIT", "Model", "check_external_data",
           "check_initializers", "check_names", "check_tensor_sizes", "load_model", "load_weights", "max_tensor_bytes",
           "parse_input_shape", "shapes_from_metadata"]

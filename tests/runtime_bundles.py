"""Small real bundles for the runtime tests and benchmarks, built without `edgesdk convert`.

A tiny CNN is written with onnx.helper (random, seeded weights) and converted with the real
converters: pnnx (ONNX -> ncnn), mnnconvert (ONNX -> MNN), and a TFLite flatbuffer written
directly with the schema shipped in ai-edge-litert (no TensorFlow needed). The manifest is
written with edgesdk.runtime.manifest, so it is exactly the schema the convert step writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesdk.runtime.manifest import (
    MANIFEST,
    CpuVersion,
    Manifest,
    Postprocess,
    Preprocess,
    Segment,
    TensorSpec,
    canonical_json,
    sha256_file,
)

BIN = Path(sys.executable).parent
H = W = 16


@dataclass(frozen=True)
class Weights:
    w1: np.ndarray  # (8, 3, 3, 3) conv1, OIHW
    b1: np.ndarray
    w2: np.ndarray  # (8, 8, 3, 3) conv2
    b2: np.ndarray
    fc: np.ndarray  # (10, 8) Gemm, transB
    fb: np.ndarray


def weights(seed: int = 0) -> Weights:
    r = np.random.default_rng(seed)
    f = np.float32
    return Weights(
        (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(f), (r.standard_normal(8) * 0.1).astype(f),
        (r.standard_normal((8, 8, 3, 3)) * 0.2).astype(f), (r.standard_normal(8) * 0.1).astype(f),
        (r.standard_normal((10, 8)) * 0.5).astype(f), (r.standard_normal(10) * 0.1).astype(f),
    )


# -- ONNX ----------------------------------------------------------------------------------------
# The whole model: x -> conv1+relu (a) -> conv2 + a (b) -> GAP -> flatten -> gemm (logits).
# Parts: "head" (x -> a), "mid" (a -> b), "tail" (b -> logits), "all" (x -> logits).
_PARTS = {"head": ("x", "a"), "mid": ("a", "b"), "tail": ("b", "logits"), "all": ("x", "logits"),
          "headmid": ("x", "b")}
_SHAPES = {"x": [1, 3, H, W], "a": [1, 8, H, W], "b": [1, 8, H, W], "logits": [1, 10]}


def onnx_model(part: str, wt: Weights, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, dst = _PARTS[part]
    nodes, inits = [], []
    head = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["a"])]
    mid = [helper.make_node("Conv", ["a", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
           helper.make_node("Add", ["c2", "a"], ["b"])]
    tail = [helper.make_node("GlobalAveragePool", ["b"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], transB=1)]
    order = [("x", head, {"w1": wt.w1, "b1": wt.b1}), ("a", mid, {"w2": wt.w2, "b2": wt.b2}),
             ("b", tail, {"fc": wt.fc, "fb": wt.fb})]
    on = False
    for start, ns, ws in order:
        on = on or start == src
        if on:
            nodes += ns
            inits += [numpy_helper.from_array(v, k) for k, v in ws.items()]
        if on and ns[-1].output[0] == dst:
            break
    g = helper.make_graph(nodes, part, [helper.make_tensor_value_info(src, TensorProto.FLOAT, _SHAPES[src])],
                          [helper.make_tensor_value_info(dst, TensorProto.FLOAT, _SHAPES[dst])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def reference(part: str, wt: Weights, feed: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    p = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgesdk-ref-{os.getpid()}-{part}.onnx"
    onnx_model(part, wt, p)
    try:
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        return s.run(None, {_PARTS[part][0]: feed})[0]
    finally:
        p.unlink(missing_ok=True)


# -- converters ----------------------------------------------------------------------------------
def _toolchain_venv(tid: str) -> Path:
    try:
        from edgesdk.paths import toolchain_venv

        return toolchain_venv(tid)
    except ImportError:
        return Path.home() / ".cache" / "edgesdk" / "toolchains" / tid / "venv"


def pnnx_binary() -> Path | None:
    """The pnnx executable shipped inside the PyPI package (its Python wrapper needs torch; the binary does not):
    in this interpreter's site-packages, or in the ncnn toolchain venv `edgesdk toolchain install ncnn` made."""
    sites = list(sys.path) + [str(p) for p in (_toolchain_venv("ncnn") / "lib").glob("python3*/site-packages")]
    for site in sites:
        p = Path(site) / "pnnx" / "pnnx"
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def mnnconvert_binary() -> Path | None:
    """A Python that has MNN's converter core (`_tools`): this one, or the mnn toolchain venv's.

    Never the `mnnconvert` console script: its wrapper runs `pip install aliyun-log-python-sdk`
    with whatever pip is on PATH and sends telemetry (see DEVELOPERS.md).
    """
    import importlib.util

    if importlib.util.find_spec("_tools") is not None:
        return Path(sys.executable)
    py = _toolchain_venv("mnn") / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import _tools"], capture_output=True, timeout=60).returncode == 0:
        return py
    return None


def tflite_available() -> bool:
    try:
        import flatbuffers  # noqa: F401
        from ai_edge_litert import schema_py_generated  # noqa: F401
    except ImportError:
        return False
    return True


def to_ncnn(onnx_path: Path, out_dir: Path) -> tuple[Path, Path]:
    exe = pnnx_binary()
    if exe is None:
        raise RuntimeError("pnnx is not installed (pip install --no-deps pnnx)")
    work = out_dir / f"pnnx-{onnx_path.stem}"
    work.mkdir(parents=True, exist_ok=True)
    src = work / onnx_path.name
    shutil.copy(onnx_path, src)
    subprocess.run([str(exe), str(src)], cwd=work, check=True, capture_output=True, timeout=120)
    param, binf = out_dir / f"{onnx_path.stem}.param", out_dir / f"{onnx_path.stem}.bin"
    shutil.move(work / f"{onnx_path.stem}.ncnn.param", param)
    shutil.move(work / f"{onnx_path.stem}.ncnn.bin", binf)
    shutil.rmtree(work)
    return param, binf


def to_mnn(onnx_path: Path, out_dir: Path) -> Path:
    exe = mnnconvert_binary()
    if exe is None:
        raise RuntimeError("mnnconvert is not installed (pip install MNN)")
    out = out_dir / f"{onnx_path.stem}.mnn"
    subprocess.run([str(exe), "-c", "import sys, _tools; _tools.mnnconvert(sys.argv)", "-f", "ONNX",
                    "--modelFile", str(onnx_path), "--MNNModel", str(out), "--bizCode", "edgesdk"],
                   check=True, capture_output=True, timeout=120)
    if not out.is_file():  # the core returns success even when it fails
        raise RuntimeError(f"MNNConvert wrote no {out.name}")
    return out


def to_tflite_head(wt: Weights, path: Path) -> Path:
    """The "head" part (conv1 + relu) as a TFLite model: NHWC input 'x', NHWC output 'a'."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name: str, shape: list[int], buf: int) -> s.TensorT:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), shape, s.TensorType.FLOAT32, buf
        return t

    bufs = [s.BufferT(), s.BufferT(), s.BufferT(), s.BufferT(), s.BufferT()]
    bufs[3].data = np.ascontiguousarray(wt.w1.transpose(0, 2, 3, 1)).tobytes()  # OHWI
    bufs[4].data = wt.b1.tobytes()
    sg = s.SubGraphT()
    sg.tensors = [tensor("x", [1, H, W, 3], 1), tensor("a", [1, H, W, 8], 2),
                  tensor("w1", [8, 3, 3, 3], 3), tensor("b1", [8], 4)]
    sg.inputs, sg.outputs = [0], [1]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 2, 3], [1]
    opt = s.Conv2DOptionsT()
    opt.padding, opt.strideW, opt.strideH = s.Padding.SAME, 1, 1
    opt.dilationWFactor = opt.dilationHFactor = 1
    opt.fusedActivationFunction = s.ActivationFunctionType.RELU
    op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.Conv2DOptions, opt
    sg.operators = [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CONV_2D
    code.version = 1
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [code], [sg], bufs
    m.description = b"edgesdk test head"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


# -- bundles -------------------------------------------------------------------------------------
def spec(name: str, engine_name: str | None = None, layout: str | None = None) -> TensorSpec:
    return TensorSpec(name, tuple(_SHAPES[name]), "float32", layout=layout, engine_name=engine_name)


def segment_files(engine: str, part: str, wt: Weights, root: Path, tag: str) -> tuple[dict[str, str], dict]:
    """Convert one part for one engine; returns (files role->relpath, tensor naming/layout)."""
    src, dst = _PARTS[part]
    tmp = root / "_src"
    tmp.mkdir(exist_ok=True)
    onnx_path = onnx_model(part, wt, tmp / f"{tag}.onnx")
    if engine == "onnxruntime":
        shutil.copy(onnx_path, root / f"{tag}.onnx")
        return {"model": f"{tag}.onnx"}, {}
    if engine == "ncnn":
        to_ncnn(onnx_path, root)
        return {"param": f"{tag}.param", "bin": f"{tag}.bin"}, {src: ("in0", None), dst: ("out0", None)}
    if engine == "mnn":
        to_mnn(onnx_path, root)
        return {"model": f"{tag}.mnn"}, {}
    if engine == "tflite":
        if part != "head":
            raise ValueError("the test TFLite builder writes the head part only")
        to_tflite_head(wt, root / f"{tag}.tflite")
        return {"model": f"{tag}.tflite"}, {src: (None, "NHWC"), dst: (None, "NHWC")}
    if engine in ("edgetpu", "vart", "bpu", "nnie"):  # accelerator artifacts: placeholders for the fakes
        ext = {"edgetpu": "_edgetpu.tflite", "vart": ".xmodel", "bpu": ".bin", "nnie": ".wk"}[engine]
        (root / f"{tag}{ext}").write_bytes(b"placeholder " + engine.encode())
        return {"model": f"{tag}{ext}"}, {}
    raise ValueError(engine)


def write_manifest(root: Path, inputs: Sequence[str], outputs: Sequence[str], segments: Sequence[Segment],
                   preprocess: Preprocess | None = None, postprocess: Postprocess | None = None,
                   shapes: dict | None = None) -> Manifest:
    shutil.rmtree(root / "_src", ignore_errors=True)
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    io = {**_SHAPES, **(shapes or {})}
    m = Manifest(
        board="host", precision="fp32",
        inputs=tuple(TensorSpec(n, tuple(io[n]), "float32") for n in inputs),
        outputs=tuple(TensorSpec(n, tuple(io[n]), "float32") for n in outputs),
        segments=tuple(segments), files=files, source_model={"name": "tiny", "sha256": "0" * 64, "opset": 13},
        preprocess=preprocess, postprocess=postprocess,
    )
    d = m.to_dict()
    d["bundle_id"] = m.content_id()
    (root / MANIFEST).write_bytes(canonical_json(d))
    return Manifest.from_dict(d)


def make_bundle(root: Path, plan: Sequence[tuple[str, str]], wt: Weights | None = None,
                cpu_versions: dict[int, str] | None = None, preprocess: Preprocess | None = None,
                postprocess: Postprocess | None = None, accelerator: Sequence[int] = ()) -> Path:
    """plan: [(engine, part), ...] in order, e.g. [("ncnn", "head"), ("onnxruntime", "mid"), ("mnn", "tail")].

    cpu_versions: segment index -> CPU engine to build a cpu_version for (fallback tests).
    accelerator: indexes of segments marked accelerator=True.
    """
    wt = wt or weights()
    root.mkdir(parents=True, exist_ok=True)
    segs = []
    for i, (engine, part) in enumerate(plan):
        files, naming = segment_files(engine, part, wt, root, f"s{i}_{engine}")
        src, dst = _PARTS[part]
        ins = (spec(src, *naming.get(src, (None, None))),)
        outs = (spec(dst, *naming.get(dst, (None, None))),)
        cpu = None
        if cpu_versions and i in cpu_versions:
            ce = cpu_versions[i]
            cfiles, cnaming = segment_files(ce, part, wt, root, f"s{i}_cpu_{ce}")
            cpu = CpuVersion(ce, cfiles, (spec(src, *cnaming.get(src, (None, None))),),
                             (spec(dst, *cnaming.get(dst, (None, None))),))
        segs.append(Segment(f"s{i}", engine, files, ins, outs, accelerator=i in accelerator, cpu_version=cpu,
                            options={"threads": 1}))
    write_manifest(root, [_PARTS[plan[0][1]][0]], [_PARTS[plan[-1][1]][1]], segs, preprocess, postprocess)
    return root


def sample_input(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(_SHAPES["x"]).astype(np.float32)


#: Quantization of the int8 head's input and output (real = scale * (q - zero_point)).
INT8_IN = (1.0 / 64.0, 0)  # x in about [-2, 2]
INT8_OUT = (6.0 / 255.0, -128)  # relu output in [0, 6]


def to_tflite_head_int8(wt: Weights, path: Path, io_dtype: str = "int8") -> Path:
    """The "head" part as a full-integer TFLite model, as the TFLite converter writes one: int8 (or uint8) input
    'x' [1, H, W, 3] and output 'a' [1, H, W, 8], per-channel int8 weights, int32 bias, fused ReLU."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def quant(scales: list[float], zps: list[int], dim: int = 0) -> s.QuantizationParametersT:
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(v) for v in scales], [int(v) for v in zps], dim
        return q

    def tensor(name: str, shape: list[int], buf: int, ttype: int, q: s.QuantizationParametersT) -> s.TensorT:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name.encode(), shape, ttype, buf, q
        return t

    uint8 = io_dtype == "uint8"
    in_s, in_zp = INT8_IN
    out_s, out_zp = INT8_OUT
    w = wt.w1.transpose(0, 2, 3, 1)  # OHWI
    w_s = np.maximum(np.abs(w).reshape(8, -1).max(axis=1), 1e-8) / 127.0
    wq = np.clip(np.rint(w / w_s[:, None, None, None]), -127, 127).astype(np.int8)
    bq = np.rint(wt.b1 / (in_s * w_s)).astype(np.int32)
    I8 = s.TensorType.INT8
    bufs = [s.BufferT() for _ in range(7)]
    bufs[3].data = np.ascontiguousarray(wq).tobytes()
    bufs[4].data = bq.tobytes()
    sg = s.SubGraphT()
    sg.tensors = [tensor("x", [1, H, W, 3], 1, I8, quant([in_s], [in_zp])),
                  tensor("a", [1, H, W, 8], 2, I8, quant([out_s], [out_zp])),
                  tensor("w1", [8, 3, 3, 3], 3, I8, quant(list(w_s), [0] * 8)),
                  tensor("b1", [8], 4, s.TensorType.INT32, quant(list(in_s * w_s), [0] * 8))]

    def operator(code: int, ins: list[int], outs: list[int]) -> s.OperatorT:
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, ins, outs
        return o

    conv = operator(0, [0, 2, 3], [1])
    opt = s.Conv2DOptionsT()
    opt.padding, opt.strideW, opt.strideH = s.Padding.SAME, 1, 1
    opt.dilationWFactor = opt.dilationHFactor = 1
    opt.fusedActivationFunction = s.ActivationFunctionType.RELU
    conv.builtinOptionsType, conv.builtinOptions = s.BuiltinOptions.Conv2DOptions, opt
    sg.operators, sg.inputs, sg.outputs = [conv], [0], [1]
    codes = [(s.BuiltinOperator.CONV_2D, 3)]  # version 3: per-channel int8
    if uint8:  # as the TFLite converter does for uint8 I/O: QUANTIZE ops at both ends, int8 inside
        sg.tensors[0].name, sg.tensors[1].name = b"x_int8", b"a_int8"
        sg.tensors += [tensor("x", [1, H, W, 3], 5, s.TensorType.UINT8, quant([in_s], [in_zp + 128])),
                       tensor("a", [1, H, W, 8], 6, s.TensorType.UINT8, quant([out_s], [out_zp + 128]))]
        sg.operators = [operator(1, [4], [0]), conv, operator(1, [1], [5])]
        sg.inputs, sg.outputs = [4], [5]
        codes.append((s.BuiltinOperator.QUANTIZE, 2))
    m_codes = []
    for c, v in codes:
        code = s.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = c
        code.version = v
        m_codes.append(code)
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, m_codes, [sg], bufs
    m.description = b"edgesdk test head int8"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path

"""A .tflite as the input of `edgesdk convert`: read as it is and bundled as it is, for TFLite and the Edge TPU.

There is no ONNX original and no conversion: the bundle's one segment is the file itself (engine tflite), or,
on coral-usb with a full-integer int8 file, the file compiled by edgetpu_compiler with the file itself as its
CPU version. The bundle's model-level inputs and outputs are the TFLite model's own tensors (names, shapes and
layout as the file has them, e.g. NHWC images); an int8/uint8 tensor is float32 at the bundle boundary and its
TensorSpec.quant carries the file's own scale and zero point, so the runtime (de)quantizes it. Reference
outputs are the TFLite interpreter's on this file. Re-quantizing a .tflite (another --precision) is refused.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import EnvironmentProblem, InputError, ModelError
from edgesdk.runtime.manifest import CpuVersion, Postprocess, QuantParams, Segment, TensorSpec

QUANT_DTYPES = ("int8", "uint8", "int16")


@dataclass(frozen=True)
class TfliteTensor:
    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str  # the file's dtype
    quant: QuantParams | None  # int8/uint8/int16 with a per-tensor scale

    def spec(self) -> TensorSpec:
        """The bundle's view: float32 for a quantized tensor (the runtime (de)quantizes with `quant`)."""
        return TensorSpec(self.name, self.shape, "float32" if self.quant else self.dtype, quant=self.quant)

    def model_spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.shape, "float32" if self.quant else self.dtype)


@dataclass(frozen=True)
class TfliteInfo:
    path: Path
    inputs: tuple[TfliteTensor, ...]
    outputs: tuple[TfliteTensor, ...]
    precision: str  # fp32 | fp16 | int8
    full_integer: bool  # every tensor but the model's inputs/outputs is integer (what the Edge TPU needs)
    description: str
    interpreter: str  # e.g. "ai-edge-litert 2.3.0"
    notes: tuple[str, ...] = ()
    ops: int = 0  # operators of the main graph (0: the interpreter does not say)


def _interpreter_module() -> Any:
    from edgesdk.runtime.engines.tflite import interpreter_module
    from edgesdk.runtime.errors import EngineUnavailable

    try:
        return interpreter_module()
    except EngineUnavailable as exc:
        raise EnvironmentProblem("reading a .tflite needs the TFLite interpreter", fix="pip install ai-edge-litert") from exc


def _interpreter(path: Path) -> Any:
    mod = _interpreter_module()
    try:
        it = mod.Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    except Exception as exc:  # ValueError / RuntimeError from the interpreter wrapper
        raise ModelError(f"{path}: the TFLite interpreter cannot load it: {str(exc).strip()}") from exc
    return it


def _interpreter_version() -> str:
    from importlib import metadata

    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "tflite interpreter"


def _tensor(d: Mapping[str, Any], path: Path) -> TfliteTensor:
    import numpy as np

    dtype = np.dtype(d["dtype"]).name
    shape = tuple(int(x) for x in d["shape"])
    if not shape or any(x <= 0 for x in shape):
        raise ModelError(f"{path}: tensor {d['name']!r} has shape {list(shape)}; edgesdk needs static shapes")
    scale, zp = d.get("quantization", (0.0, 0))
    q = QuantParams(float(scale), int(zp), dtype) if dtype in QUANT_DTYPES and scale and scale > 0 else None
    return TfliteTensor(str(d["name"]), int(d["index"]), shape, dtype, q)


def read_tflite(path: str | Path) -> TfliteInfo:
    """Inputs, outputs and precision of a .tflite, as the TFLite interpreter reads it."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file {p} does not exist")
    it = _interpreter(p)
    ins = tuple(_tensor(d, p) for d in it.get_input_details())
    outs = tuple(_tensor(d, p) for d in it.get_output_details())
    notes = []
    for d in it.get_input_details():
        sig = d.get("shape_signature")
        if sig is not None and any(int(x) < 0 for x in sig):
            notes.append(f"input {d['name']!r} has a dynamic shape {[int(x) for x in sig]}; the bundle uses the "
                         f"file's default {[int(x) for x in d['shape']]}")
    io = {t.index for t in (*ins, *outs)}
    quantized = fp16 = internal_float = int16 = False
    for d in it.get_tensor_details():
        dt = np.dtype(d["dtype"]).name
        qp = d.get("quantization_parameters") or {}
        has_q = (d.get("quantization", (0.0, 0))[0] or 0) > 0 or len(qp.get("scales", ())) > 0
        if dt in QUANT_DTYPES and has_q:
            quantized = True
            int16 = int16 or dt == "int16"
        if dt == "float16":
            fp16 = True
        if dt in ("float32", "float16") and int(d["index"]) not in io:
            internal_float = True
    full_integer = quantized and not internal_float and not int16
    io_types = sorted({t.dtype for t in (*ins, *outs)})
    if quantized:
        precision = "int8"
        desc = (f"full-integer int8 ({'/'.join(io_types)} inputs and outputs)" if full_integer else
                "int16 activations (16x8 quantization)" if int16 else
                "int8 weights with float activations (dynamic-range quantization), not full integer")
    elif fp16:
        precision, desc = "fp16", "fp16 weights, float32 computation"
    else:
        precision, desc = "fp32", "float32"
    try:
        ops = sum(1 for d in it._get_ops_details() if d.get("op_name") != "DELEGATE")
    except Exception:  # a private helper of the interpreter wrapper: only the report's node count needs it
        ops = 0
    return TfliteInfo(p, ins, outs, precision, full_integer, desc, _interpreter_version(), tuple(notes), ops)


def run_tflite(path: str | Path, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The TFLite interpreter on `path`: each sample is the bundle-side feed (float32 for a quantized input),
    quantized with the file's own parameters; outputs are dequantized the same way."""
    from edgesdk.runtime.session import dequantize, quantize

    p = Path(path)
    info = read_tflite(p)
    it = _interpreter(p)
    res = []
    for feed in samples:
        for t in info.inputs:
            x = feed[t.name]
            it.set_tensor(t.index, quantize(x, t.quant) if t.quant else x)
        it.invoke()
        out = {}
        for t in info.outputs:
            y = it.get_tensor(t.index)
            out[t.name] = dequantize(y, t.quant) if t.quant else y.copy()
        res.append(out)
    return res


def _random_feed(info: TfliteInfo, seed: int = 0) -> dict[str, Any]:
    """Random inputs within each input's range: the quantized range for int8/uint8 inputs."""
    import numpy as np

    from edgesdk.convert_base import random_input

    r = np.random.default_rng(seed)
    feed = {}
    for t in info.inputs:
        if t.quant is not None:
            ii = np.iinfo(t.quant.dtype)
            q = r.integers(ii.min, int(ii.max) + 1, size=t.shape)
            feed[t.name] = ((q - t.quant.zero_point) * t.quant.scale).astype("float32")
        else:
            feed[t.name] = random_input(t.model_spec(), seed)
    return feed


def convert_tflite(src: Path, prof: Any, out: str | Path | None, *, precision: str | None, engine: str | None,
                   calib: str | Path | None, sample: str | Path | None = None, preprocess: Any,
                   postprocess: Postprocess | str | Path | None, force: bool,
                   dry_run: bool, calib_limit: int | None, runner: Any, adapters: Mapping[str, Any] | None,
                   accel_options: Mapping[str, Any] | None, t_start: float | None = None) -> Any:
    """`edgesdk convert model.tflite --board B`: see the module docstring. Input errors (exit 2) come before
    anything is written."""
    from edgesdk.bundle import check_out_dir
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.convert_base import (
        BundleParts,
        ConvertResult,
        SegmentReport,
        declared_preprocess,
        finish_bundle,
        load_sample_set,
        reference_feed,
        stage_vendor_handoff,
    )
    from edgesdk.runtime.manifest import sha256_file
    from edgesdk.toolchains.adapters import IOSpec
    from edgesdk.toolchains.executor import execute

    t_start = t_start if t_start is not None else time.perf_counter()
    if "tflite" not in prof.engines:
        raise InputError(f"board {prof.id!r} does not run TFLite models (its engines: {', '.join(prof.engines)}); a "
                         ".tflite goes to the TFLite and Edge TPU paths only. Convert the original ONNX model for "
                         "this board instead")
    if engine is not None and engine != "tflite":
        raise InputError(f"--engine {engine}: a .tflite is bundled as it is for the tflite engine"
                         f"{f' (and the {prof.accelerator.name})' if _tflite_accelerator(prof) else ''}; edgesdk does not convert a .tflite to "
                         "other engines. Convert the original ONNX model with --engine " + engine)
    if not src.is_file():
        raise InputError(f"model file {src} does not exist")
    info = read_tflite(src)
    if precision is not None and precision != info.precision:
        raise InputError(f"--precision {precision}: {src.name} is {info.precision} ({info.description}); edgesdk "
                         "does not re-quantize a .tflite. Drop --precision to bundle it as it is, or convert the "
                         "original model at that precision")
    use_tpu = _tflite_accelerator(prof) and engine is None
    if use_tpu and not info.full_integer:
        raise InputError(f"board {prof.id!r}: the {prof.accelerator.name} runs full-integer int8 models only, and {src.name} is "
                         f"{info.description}. Quantize it to full integer int8 (or convert the original model with "
                         "--precision int8 --calib DIR), or pass --engine tflite to run it on the board's CPU")
    if not dry_run:
        if out is None:
            raise InputError("give the bundle's output directory: -o OUT")
        check_out_dir(out, force)
    prec = info.precision
    if isinstance(postprocess, (str, Path)):  # --postprocess FILE.yaml: checked against the file's outputs
        from edgesdk.evaluate import load_postprocess

        postprocess = load_postprocess(postprocess, [t.name for t in info.outputs])
    model_ins = [IOSpec(t.name, t.shape, t.model_spec().dtype) for t in info.inputs]
    pre = declared_preprocess(model_ins, preprocess, calib if calib is not None else sample)
    cset = None
    warnings: list[str] = []
    if calib is not None:
        cset = load_calibration(calib, [InputSpec(i.name, i.shape, i.dtype) for i in model_ins], pre,
                                limit=calib_limit)
        warnings += cset.warnings
    notes = [(f"source is a .tflite ({info.description}), bundled as it is: no conversion and no ONNX original; "
              f"the reference outputs are the TFLite interpreter's ({info.interpreter}) on this file"),
             "inputs and outputs are the TFLite model's own tensors (names, shapes and layout as the file has them"
             + (", NHWC for images" if any(len(t.shape) == 4 for t in info.inputs) else "") + ")"
             + ("; int8/uint8 ones are float32 at the bundle boundary, (de)quantized by the runtime with the file's "
                "own scale and zero point" if any(t.quant for t in (*info.inputs, *info.outputs)) else ""),
             *info.notes]
    sid = "s0"
    seg_in = tuple(t.spec() for t in info.inputs)
    seg_out = tuple(t.spec() for t in info.outputs)
    accel = None
    cplan = None
    if use_tpu:
        from edgesdk.toolchains.adapters import accelerator_adapter_class

        accel = dict(adapters or {}).get(prof.accelerator.engine) or accelerator_adapter_class(prof.accelerator.engine)()
    work = Path(tempfile.mkdtemp(prefix="edgesdk-convert-"))
    try:
        cpu_rel = f"{sid}_tflite.tflite"
        if accel is not None:
            tfl = work / f"{sid}_tflite.tflite"
            shutil.copyfile(src, tfl)
            cplan = accel.plan_tflite(tfl, work, sid, accel_options)
        if dry_run:
            plan = (cplan.to_dict() if cplan is not None else
                    {"toolchain": "tflite", "engine": "tflite", "precision": prec, "writes": [], "commands": [],
                     "outputs": {"model": str(src)}, "notes": ["the .tflite as it is: nothing to convert"]})
            if accel is not None:
                plan["vendor_compiler"] = accel.vendor_env().detail
            eng = accel.engine if accel else "tflite"
            rep = SegmentReport(sid, eng, prec, info.ops, 0.0, 0, eng)
            return ConvertResult(None, prof.id, prec, "tflite", (rep,), None, cset.summary() if cset else None,
                                 tuple(warnings), tuple(notes), ({"segment": sid, **plan},),
                                 time.perf_counter() - t_start, True)

        staged: list[tuple[str, Path]] = [(cpu_rel, src)]
        toolchains: dict[str, dict[str, str]] = {}
        t0 = time.perf_counter()
        segment = Segment(sid, "tflite", {"model": cpu_rel}, seg_in, seg_out, prec)
        report = SegmentReport(sid, "tflite", prec, info.ops, 0.0, src.stat().st_size, "tflite")
        if accel is not None and cplan is not None:
            venv_ok = accel.vendor_env()
            toolchains[accel.id] = {accel.id: venv_ok.detail}
            vend = accel.split(cplan)[1]
            if venv_ok.ok:
                execute(vend, runner)
                warnings.extend(accel.log_notes(cplan))
                tpu_rel = f"{sid}_{accel.engine}.tflite"
                staged.append((tpu_rel, cplan.outputs["model"]))
                segment = Segment(sid, accel.engine, {"model": tpu_rel}, seg_in, seg_out, "int8", True,
                                  dict(accel.compiled_options(cplan)), CpuVersion("tflite", {"model": cpu_rel}, seg_in,
                                                                                  seg_out))
                report = SegmentReport(sid, accel.engine, "int8", info.ops, time.perf_counter() - t0,
                                       cplan.outputs["model"].stat().st_size, accel.engine)
            else:
                # COMPILE.txt names the bundle's own file, to run from the bundle directory
                rel_plan = accel.plan_tflite(Path(cpu_rel), Path("."), sid, accel_options)
                how = stage_vendor_handoff(accel, rel_plan, accel.split(rel_plan)[0], sid, work, staged,
                                           skip=("tflite",))
                reason = (f"{accel.vendor} is not on this machine: segment {sid} runs the .tflite as it is on the "
                          f"CPU (tflite); vendor/{sid}/COMPILE.txt says how to compile it for the {prof.accelerator.name} (its command runs "
                          "in the bundle directory)")
                notes.append(reason)
                warnings.append(reason + ":\n" + how)
                segment = Segment(sid, "tflite", {"model": cpu_rel}, seg_in, seg_out, prec, False, {}, None, reason)
                report = SegmentReport(sid, "tflite", prec, info.ops, time.perf_counter() - t0, src.stat().st_size,
                                       accel.engine, reason)

        # reference inputs and outputs: the TFLite interpreter on the file itself
        sset = load_sample_set(sample, model_ins, pre)
        ref_in, ref_source, ref_warn = reference_feed(sset, cset, lambda: _random_feed(info))
        warnings += ref_warn
        ref_out = run_tflite(src, [ref_in])[0]
        parts = BundleParts(
            prof.id, prec, tuple(t.model_spec() for t in info.inputs), tuple(t.model_spec() for t in info.outputs),
            [segment], staged, toolchains, notes,
            {"name": src.name, "sha256": sha256_file(src), "kind": "tflite", "path": str(src.resolve()),
             "format": info.description,
             "reference": f"TFLite interpreter ({info.interpreter}) on this file; no ONNX original"},
            pre, postprocess, reference_source=ref_source)
        path, final = finish_bundle(out, force, parts, ref_in, ref_out)  # type: ignore[arg-type]
        return ConvertResult(path, prof.id, prec, "tflite", (report,), final, cset.summary() if cset else None,
                             tuple(warnings), tuple(notes), (), time.perf_counter() - t_start,
                             reference=ref_source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tflite_accelerator(prof: Any) -> bool:
    """Whether the board's accelerator compiles a full-integer int8 .tflite (Edge TPU, Ethos-U): its adapter is a
    TfliteCompilerAdapter, so a .tflite goes to its compiler as it is."""
    if prof.accelerator is None:
        return False
    from edgesdk.toolchains.adapters import ACCELERATOR_ADAPTERS, accelerator_adapter_class
    from edgesdk.toolchains.adapters._accel import TfliteCompilerAdapter

    return prof.accelerator.engine in ACCELERATOR_ADAPTERS and \
        issubclass(accelerator_adapter_class(prof.accelerator.engine), TfliteCompilerAdapter)


__all__ = ["TfliteInfo", "TfliteTensor", "convert_tflite", "read_tflite", "run_tflite"]

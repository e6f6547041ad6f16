"""`edgesdk convert` (the public `edgesdk.convert`): inspect, partition, convert each segment, write the bundle."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgesdk.errors import EnvironmentProblem, InputError, ModelError, ToolchainError
from edgesdk.runtime.manifest import Manifest, Postprocess, Preprocess, Segment, TensorSpec, Tolerance
from edgesdk.toolchains.adapters import (
    CPU_ENGINES,
    Adapter,
    CalibData,
    ConversionJob,
    ConversionRefused,
    IOSpec,
)
from edgesdk.toolchains.adapters import adapter_class as _adapter_class
from edgesdk.toolchains.executor import Runner, execute

PRECISIONS = ("fp32", "fp16", "int8")
FALLBACK_ENGINE = "onnxruntime"
#: Default tolerances per precision (`edgesdk verify` and the smoke test on the board).
TOLERANCES = {
    "fp32": Tolerance(max_abs_rel=1e-3),
    "fp16": Tolerance(max_abs_rel=1e-2, cosine_min=0.999),
    "int8": Tolerance(max_abs_rel=0.25, cosine_min=0.99),
}
_EXT = {"model": {"onnxruntime": ".onnx", "mnn": ".mnn", "tflite": ".tflite"}, "param": {"ncnn": ".param"},
        "bin": {"ncnn": ".bin"}}


@dataclass(frozen=True)
class SegmentReport:
    """How one segment was converted: engine, precision, time, size, and why it fell back, if it did."""

    id: str
    engine: str
    precision: str
    nodes: int
    seconds: float
    bytes: int
    planned_engine: str
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "engine": self.engine, "precision": self.precision, "nodes": self.nodes,
                "seconds": round(self.seconds, 3), "bytes": self.bytes, "planned_engine": self.planned_engine,
                "fallback_reason": self.fallback_reason}


@dataclass(frozen=True)
class ConvertResult:
    out: Path | None  # None for a dry run
    board: str
    precision: str
    engine: str
    segments: tuple[SegmentReport, ...]
    manifest: Manifest | None
    calibration: dict[str, Any] | None
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    plans: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def bundle_id(self) -> str | None:
        return self.manifest.bundle_id if self.manifest else None

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "bundle_id": self.bundle_id, "board": self.board,
                "precision": self.precision, "engine": self.engine, "dry_run": self.dry_run,
                "segments": [s.to_dict() for s in self.segments], "calibration": self.calibration,
                "warnings": list(self.warnings), "notes": list(self.notes), "plans": list(self.plans),
                "seconds": round(self.seconds, 3)}


# -- choosing engines ---------------------------------------------------------------------------------

def choose_engine(board: Any, precision: str, engine: str | None) -> tuple[str, list[str]]:
    """The CPU engine for the model: --engine, else the board's first engine that can do `precision`."""
    notes: list[str] = []
    if engine is not None:
        cls = _adapter_class(engine)  # InputError with did-you-mean for an unknown engine
        if engine not in board.engines:
            raise InputError(f"board {board.id!r} does not run engine {engine!r}; its engines: "
                             f"{', '.join(board.engines)}")
        cls().check_precision(precision)
        return engine, notes
    if board.accelerator is not None:
        if precision != "int8":
            raise InputError(f"board {board.id!r}: its accelerator ({board.accelerator.engine}) runs int8 only; pass "
                             f"--precision int8 --calib DIR, or convert for its CPU with --engine "
                             f"{board.fallback_engine}")
        notes.append(f"accelerator segments go to the {board.accelerator.engine} toolchain; CPU segments to "
                     f"{board.fallback_engine}")
        return board.fallback_engine, notes
    for e in board.engines:
        if e in CPU_ENGINES and precision in _adapter_class(e).precisions:
            if e != board.engines[0]:
                notes.append(f"{board.engines[0]} cannot do {precision} "
                             f"({_adapter_class(board.engines[0]).unsupported.get(precision, 'not offered')}); "
                             f"using {e}, the board's next engine")
            return e, notes
    raise InputError(f"no engine of board {board.id!r} can do {precision}")


# -- model inputs -------------------------------------------------------------------------------------

def _export_torch(module: Any, example_inputs: Any, path: Path, opset: int = 13) -> Path:
    try:
        import torch
    except ImportError as exc:
        raise EnvironmentProblem("converting a PyTorch model needs torch",
                                 fix="pip install torch==2.13.0  (the CPU wheel; or: pip install 'edgesdk[torch]')") from exc
    if example_inputs is None:
        raise InputError("a PyTorch model needs example_inputs=(tensor, ...) to fix its input shapes")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    names = [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))]
    module = module.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=names, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    except Exception as exc:  # torch raises many types; the user needs the message
        raise ModelError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    return path


def _resolve_model(model: Any, example_inputs: Any, tmp: Path) -> tuple[Path, str]:
    """An ONNX file for any accepted input: .onnx path, TorchScript file, or nn.Module. Returns (path, kind)."""
    if not isinstance(model, (str, Path)):
        if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
            return _export_torch(model, example_inputs, tmp / "model.onnx"), "pytorch"
        raise InputError(f"model: expected a path or a torch.nn.Module, got {type(model).__name__}")
    p = Path(model)
    if not p.is_file():
        raise InputError(f"model file {p} does not exist")
    suf = p.suffix.lower()
    if suf == ".onnx":
        return p, "onnx"
    if suf in (".pt", ".pth", ".ts", ".torchscript"):
        try:
            import torch
        except ImportError as exc:
            raise EnvironmentProblem("converting a TorchScript file needs torch", fix="pip install torch==2.13.0") from exc
        try:
            # torch.jit.load reads TorchScript archives (code + tensors), never arbitrary pickled objects
            scripted = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{p}: not a TorchScript archive ({type(exc).__name__}: {exc}); edgesdk never unpickles "
                             "checkpoints (torch.load): export the model with torch.jit.script/trace or to ONNX") from exc
        return _export_torch(scripted, example_inputs, tmp / f"{p.stem}.onnx"), "torchscript"
    if suf == ".tflite":
        return p, "tflite"
    raise InputError(f"model {p}: unsupported file type {suf!r}; give .onnx, a TorchScript file (.pt/.ts), "
                     "a .tflite, or a torch.nn.Module through the Python API")


# -- ONNX helpers ---------------------------------------------------------------------------------------

def with_outputs(proto: Any, names: Sequence[str], tensors: Mapping[str, Any]) -> Any:
    """A copy of the model that also outputs `names` (intermediate tensors), for calibration and per-layer views."""
    import onnx

    from edgesdk.graph.shapes import elem_type

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n in have:
            continue
        t = tensors.get(n)
        if t is None or t.shape is None:
            continue
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, elem_type(t.dtype), list(t.shape)))
    return m


def ort_session(proto: Any) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EnvironmentProblem("onnxruntime is not installed", fix="pip install 'edgesdk[host]'") from exc
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_many(sess: Any, arrays: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Run a session over N samples (axis 0); returns name -> stacked outputs."""
    import numpy as np

    n = len(next(iter(arrays.values())))
    acc: dict[str, list[Any]] = {k: [] for k in names}
    for i in range(n):
        res = sess.run(list(names), {k: v[i:i + 1] for k, v in arrays.items()})
        for k, r in zip(names, res):
            acc[k].append(r)
    return {k: np.concatenate(v) for k, v in acc.items()}


def _random_input(t: TensorSpec, seed: int = 0) -> Any:
    import numpy as np

    r = np.random.default_rng(seed)
    if t.dtype.startswith("float"):
        return r.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype)
    if t.dtype == "bool":
        return r.integers(0, 2, size=t.shape).astype(bool)
    return r.integers(0, 10, size=t.shape).astype(t.dtype)


# -- the conversion -------------------------------------------------------------------------------------

def _convert_accelerator(accel: Any, job: ConversionJob, s: Any, dry_run: bool, runner: Runner | None,
                         plans: list[dict[str, Any]], reports: list[SegmentReport], staged: list[tuple[str, Path]],
                         notes: list[str], warnings: list[str], toolchains: dict[str, dict[str, str]]) -> Segment | None:
    """One accelerator segment: host steps, then the vendor compiler when it is here.

    With the compiler: the segment runs on the accelerator, its host int8 simulation is its CPU version.
    Without it: everything up to the compiler is done and kept under vendor/<segment>/ with COMPILE.txt (the
    exact commands), and the segment runs its host int8 simulation on onnxruntime, recorded as such."""
    from edgesdk.runtime.manifest import CpuVersion

    sid = job.segment
    cplan = accel.plan(job)
    venv_ok = accel.vendor_env()
    if dry_run:
        plans.append({"segment": sid, **cplan.to_dict(), "vendor_compiler": venv_ok.detail})
        reports.append(SegmentReport(sid, accel.engine, "int8", len(s.nodes), 0.0, 0, accel.engine))
        return None
    pre, vend = accel.split(cplan)
    t0 = time.perf_counter()
    execute(pre, runner)
    sim_rel = f"{sid}_{accel.engine}_sim.onnx"
    staged.append((sim_rel, cplan.outputs["sim"]))
    plain = tuple(TensorSpec(i.name, i.shape, i.dtype) for i in job.inputs)
    plain_out = tuple(TensorSpec(o.name, o.shape, o.dtype) for o in job.outputs)
    toolchains[accel.id] = {accel.id: venv_ok.detail}
    if venv_ok.ok:
        execute(vend, runner)
        art = accel.describe(job, cplan)
        files = {}
        for role, path in art.files.items():
            rel = f"{sid}_{accel.engine}{path.suffix}"
            staged.append((rel, path))
            files[role] = rel
        warnings.extend(art.notes)
        size = sum(p.stat().st_size for p in art.files.values())
        reports.append(SegmentReport(sid, accel.engine, "int8", len(s.nodes), time.perf_counter() - t0, size,
                                     accel.engine))
        return Segment(sid, accel.engine, files, art.inputs, art.outputs, "int8", True, dict(art.options),
                       CpuVersion("onnxruntime", {"model": sim_rel}, plain, plain_out), None)
    how = stage_vendor_handoff(accel, cplan, pre, sid, job.work, staged, skip=("sim",))
    reason = (f"{accel.vendor} is not on this machine: segment {sid} runs its host int8 simulation "
              f"({accel.scheme} scheme) on onnxruntime; everything up to the compiler is in vendor/{sid}/, and "
              f"vendor/{sid}/COMPILE.txt says how to install and run it")
    notes.append(reason)
    warnings.append(reason + ":\n" + how)
    size = cplan.outputs["sim"].stat().st_size
    reports.append(SegmentReport(sid, "onnxruntime", "int8", len(s.nodes), time.perf_counter() - t0, size,
                                 accel.engine, reason))
    return Segment(sid, "onnxruntime", {"model": sim_rel}, plain, plain_out, "int8", False, {}, None, reason)


def stage_vendor_handoff(accel: Any, cplan: Any, pre: Any, sid: str, work: Path, staged: list[tuple[str, Path]],
                         skip: Sequence[str] = ()) -> str:
    """The vendor compiler is absent: keep everything made up to it under vendor/<sid>/, with COMPILE.txt (how to
    install the compiler and the exact commands left to run). Returns that text."""
    for role, path in pre.outputs.items():
        if role not in skip and path.is_file():
            staged.append((f"vendor/{sid}/{path.name}", path))
    for w in pre.writes:
        staged.append((f"vendor/{sid}/{w.path.name}", w.path))
    how = accel.instructions(cplan)
    compile_txt = work / f"{sid}_COMPILE.txt"
    compile_txt.write_text(how, encoding="utf-8")
    staged.append((f"vendor/{sid}/COMPILE.txt", compile_txt))
    return how


def declared_preprocess(model_ins: Sequence[IOSpec], preprocess: Any, calib: Any) -> Preprocess | None:
    """The manifest's Preprocess from --preprocess FILE / options, or inferred for calibration images."""
    from edgesdk.preprocess_config import infer_input_layout, make_preprocess

    if isinstance(preprocess, Preprocess):
        return preprocess
    if preprocess is None and calib is None:
        return None
    img_inputs = [i for i in model_ins if infer_input_layout(i.shape)]
    if len(model_ins) == 1 and img_inputs:
        yaml_path = preprocess if isinstance(preprocess, (str, Path)) else None
        opts = preprocess if isinstance(preprocess, Mapping) else None
        return make_preprocess(model_ins[0].name, model_ins[0].shape, yaml_path, opts)
    if preprocess is not None:
        raise InputError("preprocessing applies to a model with one image input (4-D, 1 or 3 channels); "
                         f"this model's inputs: {[(i.name, list(i.shape)) for i in model_ins]}")
    return None


def _spec_of(ref: Any) -> IOSpec:
    if ref.shape is None or any(d is None or d <= 0 for d in ref.shape):
        raise ModelError(f"tensor {ref.name!r} has no static shape {ref.shape}; edgesdk needs static shapes "
                         "at segment boundaries")
    return IOSpec(ref.name, tuple(int(d) for d in ref.shape), ref.dtype)


def _write_images(images: Any, d: Path) -> Path:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[..., ::-1] if im.shape[-1] == 3 else im[..., 0]).save(d / f"{i:05d}.png")
    return d


def convert(
    model: Any,
    board: str,
    out: str | Path | None = None,
    precision: str | None = None,
    engine: str | None = None,
    calib: str | Path | None = None,
    preprocess: str | Path | Preprocess | Mapping[str, Any] | None = None,
    postprocess: Postprocess | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    force: bool = False,
    dry_run: bool = False,
    calib_limit: int | None = None,
    runner: Runner | None = None,
    adapters: Mapping[str, Adapter] | None = None,
    accel_options: Mapping[str, Any] | None = None,
) -> ConvertResult:
    """Convert `model` for `board` into a bundle at `out` (see docs/convert.md).

    model: an .onnx path, a TorchScript file, a .tflite (bundled as it is for the TFLite and Edge TPU paths:
    edgesdk.tflite_source), or a torch.nn.Module (then `example_inputs`). precision: None is fp32, or a
    .tflite's own precision. Bad input raises InputError before anything is written; a segment its
    engine's converter rejects falls back to onnxruntime, recorded in the result and the manifest.
    """
    import numpy as np

    from edgesdk import __version__
    from edgesdk.boards import get_board
    from edgesdk.bundle import BundleWriter, check_out_dir, engine_versions
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.graph.extract import save_model, segment_model
    from edgesdk.graph.load import load_model, load_weights
    from edgesdk.graph.report import analyze
    from edgesdk.preprocess_config import mnn_mean_normal
    from edgesdk.runtime.manifest import sha256_file

    t_start = time.perf_counter()
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    prof = get_board(board)
    if isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".tflite":
        from edgesdk.tflite_source import convert_tflite

        return convert_tflite(Path(model), prof, out, precision=precision, engine=engine, calib=calib,
                              preprocess=preprocess, postprocess=postprocess, force=force, dry_run=dry_run,
                              calib_limit=calib_limit, runner=runner, adapters=adapters, accel_options=accel_options,
                              t_start=t_start)
    precision = precision or "fp32"
    eng, notes = choose_engine(prof, precision, engine)
    if precision == "int8" and calib is None:
        raise InputError("int8 needs a calibration set: --calib DIR of images (jpg/png) or .npy tensors")
    if not dry_run:
        if out is None:
            raise InputError("give the bundle's output directory: -o OUT")
        check_out_dir(out, force)
    adapters = dict(adapters or {})

    def adapter(e: str) -> Adapter:
        if e not in adapters:
            adapters[e] = _adapter_class(e)()
        return adapters[e]


    work = Path(tempfile.mkdtemp(prefix="edgesdk-convert-"))
    writer: BundleWriter | None = None
    try:
        src, kind = _resolve_model(model, example_inputs, work)
        m = load_model(src, input_shapes)
        upd: dict[str, Any] = {"engines": [eng, *[e for e in prof.engines if e != eng]]}
        if engine is not None and prof.accelerator is not None:  # an explicit CPU engine: no accelerator segments
            upd["accelerator"] = None
        prof2 = prof.model_copy(update=upd)
        analysis = analyze(m, prof2)
        plan = analysis.plan
        accel = None
        if any(s.target == "accelerator" for s in plan.segments):
            from edgesdk.toolchains.adapters import accelerator_adapter_class

            accel = dict(adapters).get(prof.accelerator.engine) or accelerator_adapter_class(prof.accelerator.engine)()

        # preprocessing, declared once
        model_ins = [IOSpec(t.name, tuple(int(d) for d in (t.shape or ())), t.dtype) for t in plan.model_inputs]
        pre = declared_preprocess(model_ins, preprocess, calib)

        # calibration
        cset = None
        warnings: list[str] = []
        if calib is not None:
            cset = load_calibration(calib, [InputSpec(i.name, i.shape, i.dtype) for i in model_ins],
                                    pre if pre is not None else None, limit=calib_limit)
            warnings += cset.warnings

        if not dry_run:  # after every input check: bad input is exit 2 even where a converter is missing
            for e in dict.fromkeys((eng, FALLBACK_ENGINE)):
                adapter(e).check_env().require()
            if accel is not None:
                accel.check_env().require()

        full = load_weights(m)
        full_sess = ort_session(full)
        inits = {t.name: t for t in full.graph.initializer}
        node_index = {n.name: i for i, n in enumerate(m.nodes)}
        # boundary tensors of every segment over the calibration set (the segments' own calibration data)
        seg_calib: dict[int, dict[str, Any]] = {}
        if cset is not None and precision == "int8":
            needed = [t.name for s in plan.segments for t in s.inputs if t.name not in cset.arrays]
            inter = {}
            if needed:
                sess = ort_session(with_outputs(full, needed, m.tensors))
                inter = run_many(sess, cset.arrays, list(dict.fromkeys(needed)))
            for s in plan.segments:
                seg_calib[s.index] = {t.name: (cset.arrays.get(t.name) if t.name in cset.arrays else inter[t.name])
                                      for t in s.inputs}

        reports: list[SegmentReport] = []
        segments: list[Segment] = []
        plans: list[dict[str, Any]] = []
        staged: list[tuple[str, Path]] = []  # (bundle rel path, source)
        toolchains: dict[str, dict[str, str]] = {}
        for s in plan.segments:
            sid = f"s{s.index}"
            seg_onnx = work / f"{sid}.onnx"
            proto = segment_model(m, full, s, inits, node_index)
            save_model(proto, seg_onnx)
            calib_data = None
            if s.index in seg_calib:
                arrays = work / f"{sid}_calib.npz"
                np.savez(arrays, **{k: v for k, v in seg_calib[s.index].items()})
                images = mean = normal = None
                if cset is not None and cset.images is not None and pre is not None and \
                        [t.name for t in s.inputs] == [model_ins[0].name]:
                    images = _write_images(cset.images, work / f"{sid}_calib_images")
                    mean, normal = mnn_mean_normal(pre, cset.images.shape[-1])
                calib_data = CalibData(arrays, cset.count if cset else 0, images, mean, normal,
                                       pre.color if pre else "RGB")
            if s.target == "accelerator" and accel is not None:
                job = ConversionJob(sid, seg_onnx, work, "int8", tuple(_spec_of(t) for t in s.inputs),
                                    tuple(_spec_of(t) for t in s.outputs), calib_data, dict(accel_options or {}))
                acc_res = _convert_accelerator(accel, job, s, dry_run, runner, plans, reports, staged, notes, warnings,
                                               toolchains)
                if acc_res is not None:
                    segments.append(acc_res)
                continue
            planned = s.engine if s.engine in CPU_ENGINES else FALLBACK_ENGINE
            seg_prec = precision
            if seg_prec not in adapter(planned).precisions:  # e.g. fp16 bundle, onnxruntime segment: fp32
                seg_prec = "fp32"
                notes.append(f"segment {sid} runs on {planned}, which has no {precision}: converted as fp32")
            job = ConversionJob(sid, seg_onnx, work, seg_prec, tuple(_spec_of(t) for t in s.inputs),
                                tuple(_spec_of(t) for t in s.outputs), calib_data)
            reason = None
            target = planned
            try:
                cplan = adapter(target).plan(job)
                if dry_run:
                    plans.append({"segment": sid, **cplan.to_dict()})
                    reports.append(SegmentReport(sid, target, job.precision, len(s.nodes), 0.0, 0, planned))
                    continue
                t0 = time.perf_counter()
                ex = execute(cplan, runner)
                art = adapter(target).describe(job, cplan)
            except (ToolchainError, ConversionRefused) as exc:
                if target == FALLBACK_ENGINE:
                    raise
                reason = f"{planned} converter refused segment {sid}: {str(exc).strip()}"
                target = FALLBACK_ENGINE
                fb_prec = job.precision if job.precision in adapter(target).precisions else "fp32"
                job = ConversionJob(sid, seg_onnx, work, fb_prec, job.inputs, job.outputs, job.calib)
                cplan = adapter(target).plan(job)
                t0 = time.perf_counter()
                ex = execute(cplan, runner)
                art = adapter(target).describe(job, cplan)
                notes.append(reason)
            files = {}
            for role, path in art.files.items():
                rel = f"{sid}_{target}{_EXT.get(role, {}).get(target, path.suffix)}"
                staged.append((rel, path))
                files[role] = rel
            seconds = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in art.files.values())
            reports.append(SegmentReport(sid, target, job.precision, len(s.nodes), seconds, size, planned, reason))
            env = adapter(target).check_env()
            toolchains[target] = {adapter(target).id: env.version or ""}
            segments.append(Segment(sid, target, files, art.inputs, art.outputs, job.precision, False,
                                    dict(art.options), None, reason))

        if dry_run:
            return ConvertResult(None, prof.id, precision, eng, tuple(reports), None,
                                 cset.summary() if cset else None, tuple(warnings), tuple(notes), tuple(plans),
                                 time.perf_counter() - t_start, True)

        # reference inputs and outputs: onnxruntime on the original model
        model_in_specs = tuple(TensorSpec(i.name, i.shape, i.dtype) for i in model_ins)
        model_out_specs = tuple(TensorSpec(n, tuple(int(d) for d in m.tensors[n].shape), m.tensors[n].dtype)
                                for n in plan.model_outputs)
        ref_in = cset.sample(0) if cset is not None else {t.name: _random_input(t) for t in model_in_specs}
        ref_out = dict(zip(plan.model_outputs, full_sess.run(list(plan.model_outputs), ref_in)))

        writer = BundleWriter(out, force)  # type: ignore[arg-type]
        for rel, path in staged:
            writer.add_file(path, rel)
        ref_inputs, ref_outputs = writer.add_reference(ref_in, ref_out)
        engines_v = engine_versions(sg.engine for sg in segments)
        src_path = Path(src)
        manifest = Manifest(
            board=prof.id, precision=precision, inputs=model_in_specs, outputs=model_out_specs,
            segments=tuple(segments), files={},
            source_model={"name": src_path.name, "sha256": sha256_file(src_path), "opset": m.opset,
                          "path": str(src_path.resolve()) if kind == "onnx" else "", "kind": kind},
            reference_inputs=ref_inputs, reference_outputs=ref_outputs, tolerance=TOLERANCES[precision],
            preprocess=pre, postprocess=postprocess, toolchains=toolchains, engines=engines_v,
            notes=tuple(notes + list(plan.notes)), edgesdk_version=__version__,
        )
        if kind != "onnx":  # keep the exported ONNX: verify compares against it
            writer.add_file(src_path, "reference/model.onnx")
            manifest = replace(manifest, source_model={**manifest.source_model, "path": "reference/model.onnx"})
        path, final = writer.commit(manifest)
        return ConvertResult(path, prof.id, precision, eng, tuple(reports), final,
                             cset.summary() if cset else None, tuple(warnings), tuple(notes), (),
                             time.perf_counter() - t_start)
    finally:
        if writer is not None:
            writer.discard()
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["PRECISIONS", "TOLERANCES", "ConvertResult", "SegmentReport", "choose_engine", "convert", "declared_preprocess",
           "stage_vendor_handoff"]

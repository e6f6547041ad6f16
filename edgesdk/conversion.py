"""`edgesdk convert` (the public `edgesdk.convert`): open, prepare, partition, convert each segment, write the bundle.

The path of a model (docs/convert.md):

- a source frontend (`edgesdk.frontends`: ONNX, TorchScript, nn.Module, .tflite through tf2onnx) gives ONNX;
  a .tflite for a board that runs TFLite is bundled as it is instead (`edgesdk.tflite_source`);
- `edgesdk.graph.prepare` folds it (proven on the bundle's reference input), the partition splits it;
- `convert_segment` converts each CPU segment along the board's engine chain (rpi4: ncnn -> MNN -> TFLite ->
  onnxruntime): each artifact is converted, loaded and run on its own engine and checked against onnxruntime
  on the segment's reference input before it is taken; a failure moves the segment to the next engine, and
  says so. `--engine X` means X only;
- accelerator segments go to their vendor toolchain (`_convert_accelerator`);
- `edgesdk.convert_base.finish_bundle` writes the bundle atomically.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgesdk.convert_base import (
    FALLBACK_ENGINE,
    PRECISIONS,
    TOLERANCES,
    Attempt,
    BundleParts,
    ConvertResult,
    SegmentReport,
    declared_preprocess,
    finish_bundle,
    load_sample_set,
    random_input,
    reference_feed,
    stage_vendor_handoff,
)
from edgesdk.errors import EdgeSDKError, EnvironmentProblem, InputError, ModelError, ToolchainError
from edgesdk.runtime.manifest import Postprocess, Preprocess, Segment, TensorSpec, Tolerance
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

_EXT = {"model": {"onnxruntime": ".onnx", "mnn": ".mnn", "tflite": ".tflite"}, "param": {"ncnn": ".param"},
        "bin": {"ncnn": ".bin"}}
Progress = Callable[[str], None]


class ConversionFailed(EdgeSDKError):
    """Every engine of a segment's chain failed; names the segment and each engine's reason (exit 1)."""

    def __init__(self, segment: str, model: str, attempts: Sequence[Attempt]) -> None:
        self.segment = segment
        self.attempts = tuple(attempts)
        lines = "\n".join(f"  - {a.engine} ({a.precision}) {a.stage}: " + "\n    ".join(
            a.message.strip().splitlines()[-12:]) for a in attempts)
        super().__init__(f"{model}: segment {segment}: no engine could take it:\n{lines}")


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


def engine_chain(board: Any, planned: str, precision: str, explicit: bool) -> list[tuple[str, str]]:
    """(engine, precision) to try for a CPU segment, in order: `planned` first, then the board's other CPU
    engines, onnxruntime last (at fp32 when the bundle's precision is one it does not have)."""
    if explicit:  # that engine only (onnxruntime for the nodes its table refuses, as the plan says)
        return [(planned, precision if precision in _adapter_class(planned).precisions else "fp32")]
    order = list(dict.fromkeys([planned, *(e for e in board.engines if e in CPU_ENGINES), FALLBACK_ENGINE]))
    chain = [(e, precision) for e in order if precision in _adapter_class(e).precisions]
    if not any(e == FALLBACK_ENGINE for e, _ in chain):
        chain.append((FALLBACK_ENGINE, "fp32"))
    return chain


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


def _segment_inputs(full: Any, m: Any, segments: Sequence[Any], arrays: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Each segment's input arrays for N model-input samples (intermediate tensors through fp32 onnxruntime)."""
    needed = [t.name for s in segments for t in s.inputs if t.name not in arrays]
    inter: dict[str, Any] = {}
    if needed:
        sess = ort_session(with_outputs(full, needed, m.tensors))
        inter = run_many(sess, arrays, list(dict.fromkeys(needed)))
    return {s.index: {t.name: (arrays[t.name] if t.name in arrays else inter[t.name]) for t in s.inputs}
            for s in segments}


def random_feed(specs: Sequence[TensorSpec], seed: int = 0) -> dict[str, Any]:
    return {t.name: random_input(t, seed) for t in specs}


def _convert_accelerator(accel: Any, job: ConversionJob, s: Any, dry_run: bool, runner: Runner | None,
                         plans: list[dict[str, Any]], reports: list[SegmentReport], staged: list[tuple[str, Path]],
                         notes: list[str], warnings: list[str], toolchains: dict[str, dict[str, str]],
                         feed: Mapping[str, Any] | None = None, expected: Mapping[str, Any] | None = None,
                         model_name: str = "", split_outputs: frozenset[str] | None = None,
                         tolerance: Tolerance | None = None) -> Segment | None:
    """One accelerator segment: host steps, then the vendor compiler when it is here.

    The host int8 simulation (the accelerator's quantization scheme on onnxruntime) is checked against the fp32
    reference like every CPU artifact: an accelerator whose int8 destroys an output (a YOLO head's scores) is
    refused here, before a bundle is written, not found by verify later.

    With the compiler: the segment runs on the accelerator, its host int8 simulation is its CPU version.
    Without it: everything up to the compiler is done and kept under vendor/<segment>/ with COMPILE.txt (the
    exact commands), and the segment runs its host int8 simulation on onnxruntime, recorded as such."""
    from edgesdk.runtime.manifest import CpuVersion

    sid = job.segment
    venv_ok = accel.vendor_env()
    vendor_sim = bool(accel.vendor_simulator and venv_ok.ok and feed is not None and expected is not None
                      and not dry_run)
    if vendor_sim:  # the vendor's simulator also runs the reference input: its outputs are the accelerator's
        from edgesdk.precision_plan import write_npz

        assert feed is not None
        feeds = write_npz(job.work / f"{sid}_{accel.engine}_check_in.npz", {k: v for k, v in feed.items()})
        job = replace(job, options={**job.options, "check_feeds": str(feeds)})
    cplan = accel.plan(job)
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
    sim_art = SimpleNamespace(files={"model": cplan.outputs["sim"]}, inputs=plain, outputs=plain_out, options={})
    chk = _check("onnxruntime", sim_art, feed, expected, "int8", tolerance, split_outputs)
    host_miss = None if chk.ok else replace(chk, engine=f"{accel.engine} (host int8 simulation)")
    # the CPU version: the toolchain record's fallback_engine (the host int8 simulation on onnxruntime, or e.g. the
    # int8 TFLite on the TFLite interpreter for the Ethos-U), checked like every artifact before it is bundled
    cv_engine = accel.cpu_engine()
    if host_miss is not None and not vendor_sim and cv_engine == "onnxruntime":
        raise ConversionFailed(sid, model_name, [host_miss])  # nothing truer than the simulation judges it here
    cv_paths: dict[str, Path] = {"model": cplan.outputs["sim"]}
    if cv_engine == "onnxruntime":
        cv = CpuVersion("onnxruntime", {"model": sim_rel}, plain, plain_out)
        cv_what = f"its host int8 simulation ({accel.scheme} scheme) on onnxruntime"
    else:
        staged.remove((sim_rel, cplan.outputs["sim"]))  # the simulation stays a conversion-time check
        cv_paths, cv_in, cv_out = accel.cpu_artifact(job, cplan, cv_engine)
        cv_in, cv_out = cv_in or plain, cv_out or plain_out
        cv_art = SimpleNamespace(files=cv_paths, inputs=cv_in, outputs=cv_out, options={})
        chk = _check(cv_engine, cv_art, feed, expected, "int8", tolerance, split_outputs)
        if not chk.ok:
            raise ConversionFailed(sid, model_name, [replace(chk, engine=f"{accel.engine} (its CPU version on "
                                                                         f"{cv_engine})")])
        cv_rel = {role: f"{sid}_{cv_engine}{path.suffix}" for role, path in cv_paths.items()}
        staged.extend((cv_rel[role], path) for role, path in cv_paths.items())
        cv = CpuVersion(cv_engine, cv_rel, cv_in, cv_out)
        cv_what = f"its CPU version on {cv_engine}"
        worst = f"cosine {chk.cosine:.5f}" if chk.cosine is not None else chk.message
        if host_miss is not None and not vendor_sim:  # the artifact the accelerator compiles meets it: that decides
            warnings.append(f"segment {sid}: the host int8 simulation ({accel.scheme} scheme) misses the tolerance "
                            f"(cosine {host_miss.cosine if host_miss.cosine is not None else float('nan'):.5f}) where "
                            f"the int8 model the compiler takes meets it on {cv_engine} ({worst}): that model decides")
        notes.append(f"segment {sid}: its CPU version is {', '.join(sorted(cv_rel.values()))} on {cv_engine} "
                     f"(fallback_engine of toolchains/{accel.id}/toolchain.yaml); against the fp32 model: {worst}")
    toolchains[accel.id] = {accel.id: venv_ok.detail}
    if venv_ok.ok:
        execute(vend, runner)
        if vendor_sim:
            _vendor_sim_verdict(accel, job, cplan, expected, tolerance, split_outputs, host_miss, model_name,
                                warnings)
        art = accel.describe(job, cplan)
        files = {}
        for role, path in art.files.items():
            rel = f"{sid}_{accel.engine}{path.suffix}"
            staged.append((rel, path))
            files[role] = rel
        warnings.extend(art.notes)
        size = sum(p.stat().st_size for p in art.files.values())
        reports.append(SegmentReport(sid, accel.engine, "int8", len(s.nodes), time.perf_counter() - t0, size,
                                     accel.engine, compiler_view=art.compiler_view))
        return Segment(sid, accel.engine, files, art.inputs, art.outputs, "int8", True, dict(art.options), cv, None)
    in_bundle = ("sim", *(r for r, q in pre.outputs.items() if q in cv_paths.values()))  # staged as the CPU version
    how = stage_vendor_handoff(accel, cplan, pre, sid, job.work, staged, skip=in_bundle)
    reason = (f"{accel.vendor} is not on this machine: segment {sid} runs {cv_what}; everything up to the "
              f"compiler is in vendor/{sid}/, and vendor/{sid}/COMPILE.txt says how to install and run it")
    notes.append(reason)
    warnings.append(reason + ":\n" + how)
    size = sum(path.stat().st_size for path in cv_paths.values())
    reports.append(SegmentReport(sid, cv.engine, "int8", len(s.nodes), time.perf_counter() - t0, size,
                                 accel.engine, reason))
    return Segment(sid, cv.engine, dict(cv.files), cv.inputs, cv.outputs, "int8", False, {}, None, reason)


def _vendor_sim_verdict(accel: Any, job: ConversionJob, cplan: Any, expected: Any, tolerance: Tolerance | None,
                        split_outputs: frozenset[str] | None, host_miss: Attempt | None, model_name: str,
                        warnings: list[str]) -> None:
    """The vendor simulator's outputs on the reference input, judged as every engine's are: they decide, not the host
    int8 simulation (a stand-in for the accelerator's quantizer, which can be worse than the real one)."""
    from edgesdk.runtime.reference import compare

    got = accel.simulated_outputs(job, cplan)
    what = f"{accel.engine} (the vendor's simulator of the compiled model)"
    if not got:
        raise ConversionFailed(job.segment, model_name, [*(x for x in (host_miss,) if x is not None), Attempt(
            what, "int8", False, "run", "the simulator ran no sample (see the toolchain's log in the work folder)")])
    tol = tolerance or TOLERANCES["int8"]
    outs = [compare(o.name, [g[o.name] for g in got], [expected[o.name]], tol,
                    split_outputs is None or o.name in split_outputs) for o in job.outputs]
    worst = min(o.cosine_min for o in outs)
    bad = [f"output {o.name!r}: " + ", ".join(o.problems) for o in outs if not o.ok]
    if bad:
        raise ConversionFailed(job.segment, model_name, [*(x for x in (host_miss,) if x is not None), Attempt(
            what, "int8", False, "verify", "; ".join(bad), cosine=worst)])
    if host_miss is not None:
        warnings.append(f"segment {job.segment}: the host int8 simulation ({accel.scheme} scheme) misses the "
                        f"tolerance (cosine {host_miss.cosine if host_miss.cosine is not None else float('nan'):.5f})"
                        f" where {accel.vendor}'s own simulator of the compiled model meets it (cosine {worst:.5f}): "
                        "the accelerator is judged by its simulator; the segment's CPU version (the host simulation) "
                        "is below the tolerance, so `verify` on a machine without the accelerator and a board flashed "
                        "with --fallback cpu will fail it")


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


# -- one CPU segment along the engine chain -----------------------------------------------------------

@dataclass(frozen=True)
class SegmentOutcome:
    """What `convert_segment` made of one segment: the manifest entry, its report, the files to bundle."""

    segment: Segment | None  # None for a dry run
    report: SegmentReport
    staged: tuple[tuple[str, Path], ...] = ()
    plan: dict[str, Any] | None = None
    toolchain: tuple[str, str, str] | None = None  # (engine, toolchain id, version)
    notes: tuple[str, ...] = ()  # the adapter's own (Artifact.notes: e.g. which kept layers run in float)


def _check(engine: str, art: Any, feed: Mapping[str, Any] | None, expected: Mapping[str, Any] | None,
           precision: str, tolerance: Any = None, split_outputs: frozenset[str] | None = None) -> Attempt:
    """Load and run the artifact on its own engine and compare it with onnxruntime on the segment's input."""
    from edgesdk.toolchains.check import check_artifact

    if feed is None or expected is None:
        return Attempt(engine, precision, True, "ok", "not checked (no reference input)")
    chk = check_artifact(engine, dict(art.files), tuple(art.inputs), tuple(art.outputs), dict(art.options),
                         feed, expected, tolerance or TOLERANCES[precision], split_outputs)
    cos = min(chk.cosine.values(), default=None)  # the worst output
    mx = max(chk.max_abs.values(), default=None)
    return Attempt(engine, precision, chk.ok, "ok" if chk.ok else chk.stage, chk.message, chk.seconds, mx, cos)


def convert_segment(job: ConversionJob, chain: Sequence[tuple[str, str]], adapter: Callable[[str], Adapter],
                    runner: Runner | None, feed: Mapping[str, Any] | None, expected: Mapping[str, Any] | None,
                    nodes: int, explicit: bool, model_name: str, dry_run: bool = False,
                    progress: Progress | None = None, tolerance: Any = None,
                    split_outputs: frozenset[str] | None = None) -> SegmentOutcome:
    """Convert one CPU segment with the first engine of `chain` whose artifact converts, loads, runs and
    matches onnxruntime on `feed` (the segment's reference input; `expected` its onnxruntime outputs).

    Every failed engine is kept in the report (`attempts`) and named in `fallback_reason`. With `explicit`
    (--engine X) the chain is X alone and its failure is raised as it is: nothing changes engine silently."""
    sid = job.segment
    planned = chain[0][0]
    attempts: list[Attempt] = []
    for engine, prec in chain:
        a = adapter(engine)
        j = ConversionJob(sid, job.onnx, job.work, prec, job.inputs, job.outputs, job.calib, job.options)
        env = a.check_env()
        if not env.ok:
            if explicit:
                env.require()
            attempts.append(Attempt(engine, prec, False, "environment", f"{env.detail}; fix: {env.fix}"))
            continue
        t0 = time.perf_counter()
        try:
            cplan = a.plan(j)
            if dry_run:
                return SegmentOutcome(None, SegmentReport(sid, engine, prec, nodes, 0.0, 0, planned),
                                      plan={"segment": sid, **cplan.to_dict(), "chain": [e for e, _ in chain]})
            if progress:
                progress(f"{sid}: converting with {engine} ({prec})")
            execute(cplan, runner)
            art = a.describe(j, cplan)
        except ConversionRefused as exc:
            if explicit:
                raise
            attempts.append(Attempt(engine, prec, False, "refused", str(exc), time.perf_counter() - t0))
            continue
        except ToolchainError as exc:
            if explicit:
                raise
            attempts.append(Attempt(engine, prec, False, "convert", str(exc), time.perf_counter() - t0))
            continue
        seconds = time.perf_counter() - t0
        if progress:
            progress(f"{sid}: checking the {engine} artifact on {engine}")
        chk = _check(engine, art, feed, expected, prec, tolerance if prec == job.precision else None, split_outputs)
        if not chk.ok:
            attempts.append(chk)
            if explicit:
                raise ConversionFailed(sid, model_name, attempts)
            continue
        staged = []
        files = {}
        for role, path in art.files.items():
            rel = f"{sid}_{engine}{_EXT.get(role, {}).get(engine, path.suffix)}"
            staged.append((rel, path))
            files[role] = rel
        reason = None
        if attempts:
            reason = (f"{sid}: " + "; ".join(f"{x.engine} failed ({x.stage}: {x.line().split(': ', 1)[-1]})"
                                              for x in attempts) + f"; converted with {engine}")
        size = sum(p.stat().st_size for p in art.files.values())
        report = SegmentReport(sid, engine, prec, nodes, seconds, size, planned, reason, tuple(attempts), chk)
        seg = Segment(sid, engine, files, art.inputs, art.outputs, prec, False, dict(art.options), None, reason)
        return SegmentOutcome(seg, report, tuple(staged), None, (engine, a.id, env.version or ""),
                              tuple(n if n.startswith(f"segment {sid}") else f"segment {sid} ({engine}): {n}"
                                    for n in art.notes))
    raise ConversionFailed(sid, model_name, attempts)


# -- the conversion -------------------------------------------------------------------------------------

def _is_tflite(model: Any) -> bool:
    return isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".tflite"


def convert(
    model: Any,
    board: str,
    out: str | Path | None = None,
    precision: str | None = None,
    engine: str | None = None,
    calib: str | Path | None = None,
    preprocess: str | Path | Preprocess | Mapping[str, Any] | None = None,
    postprocess: Postprocess | str | Path | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
    force: bool = False,
    dry_run: bool = False,
    calib_limit: int | None = None,
    runner: Runner | None = None,
    adapters: Mapping[str, Adapter] | None = None,
    accel_options: Mapping[str, Any] | None = None,
    prepare: bool = True,
    progress: Progress | None = None,
    trust_model: bool = False,
    target: str | None = None,
    calib_method: str | None = None,
    sample: str | Path | None = None,
    plan: str = "best",
    max_segments: int | None = None,
    rewrite: bool = True,
) -> ConvertResult:
    """Convert `model` for `board` into a bundle at `out` (see docs/convert.md).

    model: an .onnx path, a TorchScript file (`input_shapes` or `example_inputs` fix its inputs), a .tflite
    (bundled as it is where the board runs TFLite: edgesdk.tflite_source; else through ONNX), or a
    torch.nn.Module (then `example_inputs` or `input_shapes`). precision: None is fp32, or a .tflite's own.
    sample: a folder of real inputs (images or tensors, read like `calib`); its first is the bundle's reference
    input, which verify, the smoke test and the profiler judge on (default: the first calibration sample, else
    random, and then a warning). trust_model: a TorchScript archive is code: refused unless True, and then loaded and exported in a confined
    child process (edgesdk.frontends). target ("cosine=0.99", "map50=0.9", ...): int8 mixed precision, the fewest
    layers kept in float for the metric to meet it on the evaluation split (edgesdk.precision_plan: searched on
    onnxruntime, confirmed on an MNN/TFLite segment's own build; an accelerator's kept layers move to the CPU);
    calib_method: auto (tried on held-back samples, the onnxruntime default), minmax, entropy or percentile.
    prepare: graph preparation (edgesdk.graph.prepare), proven on the reference
    input. plan: on a board with an accelerator, best (the candidate plan with the lowest estimated latency,
    edgesdk.graph.plans), or a forced cpu / vendor / split; max_segments bounds the plan. rewrite: the
    function-preserving rewrites the accelerator needs (edgesdk.graph.rewrite), proven on the reference input. Bad
    input raises
    InputError before anything is written; a segment whose engine fails moves along the engine chain, recorded
    in the result and the manifest; with `engine`, that engine only.
    """
    import numpy as np

    from edgesdk.boards import get_board
    from edgesdk.bundle import check_out_dir
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.graph.extract import segment_model
    from edgesdk.graph.load import load_weights
    from edgesdk.graph.prepare import prepare as prepare_graph
    from edgesdk.graph.report import analyze
    from edgesdk.graph.source import load_source
    from edgesdk.preprocess_config import mnn_mean_normal
    from edgesdk.runtime.manifest import sha256_file

    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    from edgesdk.graph.plans import PLAN_MODES

    plan_mode = plan  # `plan` is the partition plan below
    if plan_mode not in PLAN_MODES:
        raise InputError(f"--plan {plan_mode!r}: choose one of {', '.join(PLAN_MODES)}")
    if max_segments is not None and max_segments < 1:
        raise InputError(f"--max-segments {max_segments}: must be at least 1")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    prof = get_board(board)
    tflite_notes: list[str] = []
    from edgesdk.precision_plan import check_options, eval_arrays
    from edgesdk.precision_plan import split as precision_split

    tgt, cmethod = check_options(precision or "fp32", engine, target, calib_method)
    if _is_tflite(model) and (target is not None or calib_method is not None):
        raise InputError(f"{Path(model).name} is a .tflite: --target and --calib-method apply to an ONNX/PyTorch "
                         "model edgesdk quantizes itself (a .tflite keeps its own quantization)")
    if _is_tflite(model):
        if "tflite" in prof.engines and engine in (None, "tflite"):
            from edgesdk.tflite_source import convert_tflite

            return convert_tflite(Path(model), prof, out, precision=precision, engine=engine, calib=calib,
                                  sample=sample, preprocess=preprocess, postprocess=postprocess, force=force, dry_run=dry_run,
                                  calib_limit=calib_limit, runner=runner, adapters=adapters,
                                  accel_options=accel_options, t_start=t_start)
        tflite_notes.append(f"{Path(model).name} is a .tflite: converted to ONNX (tf2onnx) for "
                            f"{engine or 'this board'}; its inputs keep the file's layout")
    precision = precision or "fp32"
    eng, notes = choose_engine(prof, precision, engine)
    notes = tflite_notes + notes
    if tgt is not None and plan_mode == "best" and prof.accelerator is not None and engine is None:
        # --target's search on an accelerator measures the multi-segment partition's accelerator segments and moves
        # the kept layers off them: the latency choice would re-cut the plan under it (not combined yet)
        plan_mode = "split"
        notes.append("--target on an accelerator: the plan is edgesdk's multi-segment partition (split), the one "
                     "its search measures; the choice by estimated latency does not combine with --target yet")
    explicit = engine is not None
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
    try:
        say("opening the model")
        orig, onnx_path, kind, source_file, src_notes = load_source(model, work, input_shapes, example_inputs,
                                                                    trust_model=trust_model)
        notes = list(src_notes) + notes
        if isinstance(postprocess, (str, Path)):  # --postprocess FILE.yaml: checked against the model's outputs
            from edgesdk.evaluate import load_postprocess

            postprocess = load_postprocess(postprocess, list(orig.outputs))
        model_ins = [IOSpec(n, tuple(int(d) for d in (orig.tensors[n].shape or ())), orig.tensors[n].dtype)
                     for n in orig.inputs]
        pre = declared_preprocess(model_ins, preprocess, calib if calib is not None else sample)
        cset = None
        warnings: list[str] = []
        if calib is not None:
            cset = load_calibration(calib, [InputSpec(i.name, i.shape, i.dtype) for i in model_ins],
                                    pre if pre is not None else None, limit=calib_limit)
            warnings += cset.warnings
        sset = load_sample_set(sample, model_ins, pre)
        if not dry_run:  # after every input check: bad input is exit 2 even where a converter is missing
            if explicit:
                adapter(eng).check_env().require()
            adapter(FALLBACK_ENGINE).check_env().require()

        model_in_specs = tuple(TensorSpec(i.name, i.shape, i.dtype) for i in model_ins)
        ref_in, ref_source, ref_warn = reference_feed(sset, cset, lambda: random_feed(model_in_specs))
        warnings += ref_warn
        say("preparing the graph (onnxslim, checked on onnxruntime)")
        prepared = prepare_graph(orig, enabled=prepare, feed=ref_in, input_source="the bundle's reference input")
        m = prepared.model
        prep = prepared.report
        warnings += list(prep.warnings)
        notes.append(prep.summary())

        upd: dict[str, Any] = {"engines": [eng, *[e for e in prof.engines if e != eng]]}
        if explicit and prof.accelerator is not None:  # an explicit CPU engine: no accelerator segments
            upd["accelerator"] = None
        prof2 = prof.model_copy(update=upd)
        say(f"partitioning for {prof.id}")
        analysis = analyze(m, prof2, whole_model=not explicit, plan=plan_mode, max_segments=max_segments,
                           rewrite=rewrite, feed=ref_in, feed_source="the bundle's reference input")
        m, plan = analysis.model, analysis.plan  # m: with the accelerator's rewrites (edgesdk.graph.rewrite), if any
        notes.extend(plan.notes)
        accel = None
        if any(s.target == "accelerator" for s in plan.segments):
            from edgesdk.toolchains.adapters import accelerator_adapter_class

            accel = adapters.get(prof.accelerator.engine) or accelerator_adapter_class(prof.accelerator.engine)()
            if not dry_run:
                accel.check_env().require()

        full = load_weights(m)
        inits = {t.name: t for t in full.graph.initializer}
        node_index = {n.name: i for i, n in enumerate(m.nodes)}
        # every boundary tensor on the reference input: each segment's check input and expected output
        boundary = list(dict.fromkeys(t.name for s in plan.segments for t in (*s.inputs, *s.outputs)
                                      if t.name not in ref_in))
        ref_env: dict[str, Any] = dict(ref_in)
        if not dry_run:
            say("running the reference on onnxruntime")
            ref_env.update(zip(boundary, _reference_run(with_outputs(full, boundary, m.tensors), boundary, ref_in,
                                                        f"{orig.name} (segment boundaries)")))
            ref_out = dict(zip(plan.model_outputs, _reference_run(load_weights(orig), plan.model_outputs, ref_in,
                                                                  orig.name)))

        seg_calib: dict[int, dict[str, Any]] = {}
        seg_eval: dict[int, dict[str, Any]] = {}
        ort_int8 = precision == "int8" and not dry_run and (tgt is not None or eng == FALLBACK_ENGINE)
        calib_idx, held = ([], []) if cset is None else \
            precision_split(cset.count, sset is not None or tgt is None)
        eval_in, eval_source = (None, None)
        if cset is not None and ort_int8 and tgt is not None:
            eval_in, eval_source = eval_arrays(sset.arrays if sset is not None else None, cset.arrays, held)
        quant: list[dict[str, Any]] = []
        tolerance: Tolerance | None = None  # the bundle's, when --target sets it (else the precision's)
        keep_cpu: dict[str, str] = {}  # accelerator layers a --target keeps in float, on the CPU
        if tgt is not None and accel is not None and cset is not None and eval_in is not None:
            keep_cpu, acc_plans = _accelerator_keep(accel, plan, m, full, inits, node_index, work,
                                                    {k: v[calib_idx] for k, v in cset.arrays.items()}, eval_in,
                                                    eval_source, tgt, ref_env, ref_out, postprocess, pre, prof, say,
                                                    dict(accel_options or {}))
            for ip in acc_plans:
                quant.append(ip.to_dict())
                notes.append(ip.summary())
                tolerance = _merge_tolerance(tolerance, ip.tolerance())
            if keep_cpu:
                plan = analyze(m, prof2, whole_model=not explicit, keep_cpu=keep_cpu, plan=plan_mode,
                               max_segments=max_segments, rewrite=rewrite, feed=ref_in,
                               feed_source="the bundle's reference input").plan
                notes.append(f"--target keeps {len(keep_cpu)} accelerator layer(s) in float on the CPU "
                             f"({', '.join(list(keep_cpu)[:5])}{', ...' if len(keep_cpu) > 5 else ''}): the partition "
                             f"now has {len(plan.segments)} segment(s)")
                boundary = list(dict.fromkeys(t.name for s in plan.segments for t in (*s.inputs, *s.outputs)
                                              if t.name not in ref_in))
                ref_env = dict(ref_in)
                ref_env.update(zip(boundary, _reference_run(with_outputs(full, boundary, m.tensors), boundary, ref_in,
                                                            f"{orig.name} (segment boundaries)")))
        if cset is not None and precision == "int8":
            seg_calib = _segment_inputs(full, m, plan.segments, {k: v[calib_idx] for k, v in cset.arrays.items()})
            if eval_in is not None:
                seg_eval = _segment_inputs(full, m, plan.segments, eval_in)

        reports: list[SegmentReport] = []
        segments: list[Segment] = []
        # judged per component: the model's outputs only (an intermediate feature map's dead channel is no block)
        model_out_names = frozenset(plan.model_outputs)
        plans: list[dict[str, Any]] = []
        staged: list[tuple[str, Path]] = []
        toolchains: dict[str, dict[str, str]] = {}
        for s in plan.segments:
            sid = f"s{s.index}"
            seg_onnx = work / f"{sid}.onnx"
            proto = segment_model(m, full, s, inits, node_index)
            _save_segment(proto, seg_onnx, s, None if dry_run else {t.name: ref_env[t.name] for t in s.inputs})
            calib_data = None
            calib_images = None  # the segment's calibration images (decoded, resized), when it reads the image input
            if s.index in seg_calib:
                arrays = work / f"{sid}_calib.npz"
                np.savez(arrays, **{k: v for k, v in seg_calib[s.index].items()})
                images = mean = normal = None
                if cset is not None and cset.images is not None and pre is not None and \
                        [t.name for t in s.inputs] == [model_ins[0].name]:
                    calib_images = cset.images[calib_idx]
                    images = _write_images(calib_images, work / f"{sid}_calib_images")
                    mean, normal = mnn_mean_normal(pre, cset.images.shape[-1])
                calib_data = CalibData(arrays, len(calib_idx), images, mean, normal,
                                       pre.color if pre else "RGB")
            ins = tuple(_spec_of(t) for t in s.inputs)
            outs = tuple(_spec_of(t) for t in s.outputs)
            if s.target == "accelerator" and accel is not None:
                say(f"{sid}: {accel.engine} toolchain")
                job = ConversionJob(sid, seg_onnx, work, "int8", ins, outs, calib_data, dict(accel_options or {}))
                acc_res = _convert_accelerator(accel, job, s, dry_run, runner, plans, reports, staged, notes,
                                               warnings, toolchains,
                                               None if dry_run else {t.name: ref_env[t.name] for t in s.inputs},
                                               None if dry_run else {t.name: ref_env[t.name] for t in s.outputs},
                                               orig.name, model_out_names, tolerance)
                if acc_res is not None:
                    segments.append(acc_res)
                continue
            planned = s.engine if s.engine in CPU_ENGINES else FALLBACK_ENGINE
            chain = engine_chain(prof2, planned, precision, explicit)
            confirm_on = None  # a --target confirmed on the segment's own engine (edgesdk.precision_plan.confirm)
            if (tgt is not None or cmethod not in (None, "auto")) and chain[0][0] != FALLBACK_ENGINE:
                if cmethod in (None, "auto") and chain[0][1] == "int8" and \
                        getattr(_adapter_class(chain[0][0]), "int8_exclude", False):
                    confirm_on = chain[0][0]
                else:
                    chain = [(FALLBACK_ENGINE, "int8")]
                    flag = "--target runs mixed precision" if tgt is not None else f"--calib-method {cmethod} runs"
                    notes.append(f"segment {sid}: {flag} on {FALLBACK_ENGINE} (not {planned}, which cannot keep "
                                 "named layers in float)" if tgt is not None else
                                 f"segment {sid}: {flag} on {FALLBACK_ENGINE} (not {planned})")
            if chain[0][1] != precision:
                notes.append(f"segment {sid} runs on {chain[0][0]}, which has no {precision}: converted as fp32")
            options: dict[str, Any] = {}
            res = None
            from edgesdk.precision_plan import ENGINE_METHOD_OPTION

            engine_choice = None  # the engine's own calibration method, tried on held-back samples
            if precision == "int8" and not dry_run and calib_data is not None and chain[0][1] == "int8" and \
                    chain[0][0] in ENGINE_METHOD_OPTION and cmethod in (None, "auto") and \
                    not any(n in keep_cpu for n in s.nodes):
                engine_choice = _engine_method_choice(
                    chain[0][0], s, seg_onnx, calib_data, seg_calib[s.index], calib_images, ins, outs, adapter,
                    runner, {t.name: ref_env[t.name] for t in s.inputs}, {t.name: ref_env[t.name] for t in s.outputs},
                    orig.name, say, model_out_names, work, keep_layers=confirm_on is not None)
                notes.append(f"segment {sid}: {chain[0][0]} int8 calibration {engine_choice['summary']}")
            base_opts = ({ENGINE_METHOD_OPTION[chain[0][0]]: engine_choice["method"]}
                         if engine_choice is not None and engine_choice["method"] is not None else {})
            options.update(base_opts)
            kept_here = [n for n in s.nodes if n in keep_cpu]
            if kept_here:  # the accelerator's search chose these layers: float here, the rest int8
                chain = [(FALLBACK_ENGINE, "int8")]
                options = {"calibrate_method": "minmax", "exclude_nodes": kept_here}
                notes.append(f"segment {sid}: {FALLBACK_ENGINE} int8 with {len(kept_here)} layer(s) kept in float "
                             f"(moved off {accel.engine if accel else 'the accelerator'} by --target)")
            elif (chain[0] == (FALLBACK_ENGINE, "int8") or confirm_on) and calib_data is not None and not dry_run:
                from edgesdk.precision_plan import latency_estimate, plan_int8, write_npz

                ev = write_npz(work / f"{sid}_eval.npz", seg_eval[s.index]) if s.index in seg_eval else None
                task_ctx = _task_context(s, plan, ref_out, postprocess, pre)
                estimate = latency_estimate({n: m.costs[node_index[n]].flops for n in s.nodes},
                                            prof.peaks.cpu_int8_gops.value * 1e9,
                                            prof.peaks.cpu_fp32_gflops.value * 1e9)
                ip = plan_int8(sid, seg_onnx, calib_data.arrays, ev, eval_source, cmethod or "auto", tgt, task_ctx,
                               say, {t.name: ref_env[t.name] for t in s.inputs},
                               {t.name: ref_env[t.name] for t in s.outputs}, estimate)
                if confirm_on is not None and ev is not None:
                    ip, res = _confirm_on_engine(ip, confirm_on, s, seg_onnx, ev, task_ctx, calib_data, ins, outs,
                                                 adapter, runner, {t.name: ref_env[t.name] for t in s.inputs},
                                                 {t.name: ref_env[t.name] for t in s.outputs}, orig.name, say,
                                                 model_out_names, estimate, notes, warnings, base_opts)
                    if res is None:
                        chain = [(FALLBACK_ENGINE, "int8")]
                options = {**base_opts, **ip.options()}
                tolerance = _merge_tolerance(tolerance, ip.tolerance())
                quant.append({**ip.to_dict(), "engine_method": engine_choice})
                engine_choice = None
                notes.append(ip.summary())
            if engine_choice is not None:
                quant.append({"segment": sid, "engine": chain[0][0], "method": engine_choice["method"],
                              "method_how": engine_choice["how"], "method_scores": engine_choice["scores"],
                              "target": None, "kept_in_float": []})
            job = ConversionJob(sid, seg_onnx, work, chain[0][1], ins, outs, calib_data, options)
            feed = None if dry_run else {t.name: ref_env[t.name] for t in s.inputs}
            expected = None if dry_run else {t.name: ref_env[t.name] for t in s.outputs}
            if res is None:
                res = convert_segment(job, chain, adapter, runner, feed, expected, len(s.nodes), explicit,
                                      orig.name, dry_run, say, tolerance, model_out_names)
            reports.append(res.report)
            if res.plan is not None:
                plans.append(res.plan)
                continue
            if res.report.fallback_reason:
                notes.append(res.report.fallback_reason)
                warnings.append(res.report.fallback_reason)
            staged.extend(res.staged)
            notes.extend(res.notes)
            if res.toolchain:
                toolchains[res.toolchain[0]] = {res.toolchain[1]: res.toolchain[2]}
            if res.segment is not None:
                segments.append(res.segment)

        if dry_run:
            return ConvertResult(None, prof.id, precision, eng, tuple(reports), None,
                                 cset.summary() if cset else None, tuple(warnings), tuple(notes), tuple(plans),
                                 time.perf_counter() - t_start, True, prep.to_dict(), ref_source)

        say("writing the bundle")
        # the shapes onnxruntime produced: the original may leave an output's shape symbolic
        model_out_specs = tuple(TensorSpec(n, tuple(int(d) for d in ref_out[n].shape), str(ref_out[n].dtype))
                                for n in plan.model_outputs)
        src_path = Path(source_file) if source_file is not None else onnx_path
        source_model = {"name": src_path.name, "sha256": sha256_file(src_path), "opset": orig.opset,
                        "path": str(src_path.resolve()) if kind == "onnx" else "", "kind": kind,
                        "prepare": prep.to_dict()}
        # only where there is an accelerator: a CPU board's manifest (and its cached bundles' ids) stay as they were
        if analysis.rewrites is not None and analysis.rewrites.changed:
            source_model["rewrites"] = analysis.rewrites.to_dict()
        if analysis.choice is not None:
            ch = analysis.choice
            source_model["plan"] = {"mode": ch.mode, "max_segments": ch.max_segments, "chosen": ch.chosen.name,
                                    "reason": ch.reason,
                                    "candidates": [{"name": c.name, "estimate_ms": round(c.ms, 4),
                                                    "segments": len(c.plan.segments)} for c in ch.candidates]}
        parts = BundleParts(prof.id, precision, model_in_specs, model_out_specs, segments, staged, toolchains,
                            notes, source_model, pre, postprocess, reference_source=ref_source, tolerance=tolerance)
        path, final = finish_bundle(out, force, parts, ref_in, ref_out,  # type: ignore[arg-type]
                                    reference_model=onnx_path if kind != "onnx" else None)
        return ConvertResult(path, prof.id, precision, eng, tuple(reports), final,
                             cset.summary() if cset else None, tuple(warnings), tuple(notes), (),
                             time.perf_counter() - t_start, False, prep.to_dict(), ref_source, tuple(quant))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_and_run(engine: str, job: ConversionJob, s: Any, adapter: Callable[[str], Adapter], runner: Runner | None,
                   feed: Mapping[str, Any], expected: Mapping[str, Any], model_name: str,
                   split_outputs: frozenset[str], feeds: list[Any], say: Callable[[str], None] | None = None
                   ) -> tuple[SegmentOutcome, list[dict[str, Any]]]:
    """One int8 build of a segment on `engine` (its artifact check proves load and run only: the caller's metric,
    not the int8 tolerance, is the criterion) and its outputs on `feeds`, on the host. EdgeSDKError when the engine
    cannot build, load or run it."""
    from edgesdk.toolchains.check import run_artifact

    loose = Tolerance(max_abs_rel=1.0, cosine_min=-1.0)
    out = convert_segment(job, [(engine, "int8")], adapter, runner, feed, expected, len(s.nodes), True, model_name,
                          False, say, loose, split_outputs)
    seg, staged = out.segment, dict(out.staged)
    files = {role: staged[rel] for role, rel in seg.files.items()}
    return out, run_artifact(engine, files, tuple(seg.inputs), tuple(seg.outputs), dict(seg.options), feeds)


def _engine_method_choice(engine: str, s: Any, seg_onnx: Path, calib_data: CalibData, arrays: Mapping[str, Any],
                          images: Any, ins: tuple, outs: tuple, adapter: Callable[[str], Adapter],
                          runner: Runner | None, feed: Mapping[str, Any], expected: Mapping[str, Any], model_name: str,
                          say: Callable[[str], None], split_outputs: frozenset[str], work: Path,
                          keep_layers: bool = False) -> dict[str, Any]:
    """The engine's own int8 calibration method (MNN KL/ADMM/EMA, TFLite per-channel/per-tensor weights), tried, not
    assumed: each builds the segment calibrated on the calibration samples less every 4th, and is scored on those
    held-back ones (edgesdk.precision_plan.choose_engine_method). Too few samples: the adapter's default, said."""
    import numpy as np

    from edgesdk.precision_plan import (
        ENGINE_METHOD_OPTION,
        MIN_FOR_CHOICE,
        choose_engine_method,
        engine_methods,
    )
    from edgesdk.precision_plan import split as precision_split
    from edgesdk.quantize import load_samples

    sid, n = f"s{s.index}", calib_data.count
    first = next(iter(arrays.values()))
    methods = engine_methods(engine, n, first.shape[1:], keep_layers)
    if n < MIN_FOR_CHOICE or len(methods) < 2:
        why = (f"{n} calibration samples are too few to hold some back (at least {MIN_FOR_CHOICE})"
               if n < MIN_FOR_CHOICE else "it offers one method here")
        return {"method": None, "scores": [], "how": f"default: {why}", "summary": f"the adapter's default ({why})"}
    train, held = precision_split(n, False)
    d = work / f"{sid}_{engine}_method_trials"
    d.mkdir(parents=True, exist_ok=True)
    cal = d / "calib.npz"
    np.savez(cal, **{k: v[train] for k, v in arrays.items()})
    held_npz = d / "held.npz"
    np.savez(held_npz, **{k: v[held] for k, v in arrays.items()})
    img_dir = _write_images(images[train], d / "images") if images is not None else None
    cd = CalibData(cal, len(train), img_dir, calib_data.mean, calib_data.normal, calib_data.color)
    feeds = load_samples(held_npz)

    def build(method: str) -> list[dict[str, Any]]:
        t = d / method
        t.mkdir(exist_ok=True)
        job = ConversionJob(sid, seg_onnx, t, "int8", ins, outs, cd, {ENGINE_METHOD_OPTION[engine]: method})
        return _build_and_run(engine, job, s, adapter, runner, feed, expected, model_name, split_outputs, feeds)[1]

    best, scores = choose_engine_method(sid, engine, methods, seg_onnx, held_npz, build, say)
    shutil.rmtree(d, ignore_errors=True)
    tried = ", ".join(f"{x['method']} {x['score']:.5f}" if x["score"] is not None else f"{x['method']} failed"
                      for x in scores)
    if best is None:
        return {"method": None, "scores": scores, "how": "every method failed on the held-back samples; the "
                "adapter's default", "summary": f"the adapter's default (every trial failed: {tried})"}
    how = f"best worst-component cosine on {len(held)} held-back calibration samples"
    return {"method": best, "scores": scores, "how": how, "summary": f"{best} ({how}): {tried}"}


def _task_context(s: Any, plan: Any, ref_out: Mapping[str, Any], postprocess: Any, pre: Any) -> dict[str, Any] | None:
    """What a task-metric target judges a segment on (precision_plan._judge): only a segment whose outputs are the
    model's (None otherwise)."""
    if {t.name for t in s.outputs} != set(plan.model_outputs):
        return None
    return {"outputs": [TensorSpec(n, tuple(ref_out[n].shape), str(ref_out[n].dtype)) for n in plan.model_outputs],
            "postprocess": postprocess, "input_hw": pre.size if pre is not None else None}


def _one_line(exc: BaseException, limit: int = 400) -> str:
    """An error in one line for a note: a tool's failure as its status and the last line it printed (not the command,
    which can be a whole script), anything else its first line."""
    if isinstance(exc, ToolchainError):
        last = next((ln.strip() for ln in reversed(exc.stderr_tail.splitlines()) if ln.strip()), "")
        status = "timed out" if exc.returncode is None else f"exited with {exc.returncode}"
        text = f"{exc.tool} {status}" + (f": {last}" if last else "")
    else:
        text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _merge_tolerance(a: Tolerance | None, b: Tolerance | None) -> Tolerance | None:
    """The bundle's tolerance from two segments' (--target): the looser of each criterion."""
    if a is None or b is None:
        return a or b
    floors = [c for c in (a.cosine_min, b.cosine_min) if c is not None]
    return Tolerance(max(a.max_abs_rel, b.max_abs_rel), min(floors) if floors else None)


def _accelerator_keep(accel: Any, plan: Any, m: Any, full: Any, inits: Any, node_index: Mapping[str, int],
                      work: Path, calib: Mapping[str, Any], eval_in: Mapping[str, Any], eval_source: str | None,
                      tgt: tuple[str, float], ref_env: Mapping[str, Any], ref_out: Mapping[str, Any],
                      postprocess: Any, pre: Any, prof: Any, say: Callable[[str], None],
                      options: Mapping[str, Any] | None = None) -> tuple[dict[str, str], list]:
    """--target on an int8-only accelerator: each accelerator segment's search on its host int8 simulation (the
    accelerator's scheme, edgesdk.simulate), and the layers it keeps in float, which go to the CPU (name -> why).

    The accelerator has no float: the kept layers leave it, so the partition changes (recorded as a fallback of those
    nodes, kind "fallback"). Raises ModelError (nothing written) when a segment cannot meet the target at all."""
    from edgesdk.graph.extract import segment_model
    from edgesdk.precision_plan import latency_estimate, plan_int8, write_npz
    from edgesdk.simulate import ENGINE_SCHEME

    scheme = ENGINE_SCHEME.get(accel.engine)
    segs = [s for s in plan.segments if s.target == "accelerator"]
    seg_calib = _segment_inputs(full, m, segs, calib)
    seg_eval = _segment_inputs(full, m, segs, eval_in)
    keep: dict[str, str] = {}
    plans = []
    for s in segs:
        sid = f"s{s.index}"
        seg_onnx = work / f"{sid}_{accel.engine}_search.onnx"
        feed = {t.name: ref_env[t.name] for t in s.inputs}
        _save_segment(segment_model(m, full, s, inits, node_index), seg_onnx, s, feed)
        cal = write_npz(work / f"{sid}_{accel.engine}_search_calib.npz", seg_calib[s.index])
        ev = write_npz(work / f"{sid}_{accel.engine}_search_eval.npz", seg_eval[s.index])
        task_ctx = _task_context(s, plan, ref_out, postprocess, pre)
        estimate = latency_estimate({n: m.costs[node_index[n]].flops for n in s.nodes},
                                    prof.accelerator.tops.value * 1e12, prof.peaks.cpu_fp32_gflops.value * 1e9)
        if accel.vendor_simulator and accel.vendor_env().ok:
            ip = _vendor_meets_target(accel, sid, s, seg_onnx, cal, seg_eval[s.index], feed,
                                      {t.name: ref_env[t.name] for t in s.outputs}, eval_source, tgt, task_ctx, say,
                                      options or {})
            if ip is not None:
                plans.append(ip)
                continue
        say(f"{sid}: --target on {accel.engine}: searching its host int8 simulation ({scheme} scheme)")
        ip = plan_int8(sid, seg_onnx, cal, ev, eval_source, "minmax", tgt, task_ctx, say, feed,
                       {t.name: ref_env[t.name] for t in s.outputs}, estimate, scheme=scheme)
        ip = replace(ip, engine=f"{accel.engine} (host int8 simulation)")
        for n in ip.kept:
            keep[n] = (f"kept in float for --target {tgt[0]}={tgt[1]:g}: {accel.engine} runs int8 only, so the layer "
                       "runs on the CPU")
        plans.append(ip)
    return keep, plans


def _vendor_meets_target(accel: Any, sid: str, s: Any, seg_onnx: Path, cal: Path, seg_eval: Mapping[str, Any],
                         feed: Mapping[str, Any], expected: Mapping[str, Any], eval_source: str | None,
                         tgt: tuple[str, float], task_ctx: Any, say: Callable[[str], None],
                         options: Mapping[str, Any] | None = None) -> Any:
    """--target on an accelerator whose toolchain simulates its compiled model (RKNN): the whole segment compiled by
    the vendor, with the vendor's own quantizer, judged on the evaluation samples by the search's judge. Returns the
    segment's Int8Plan when that meets the target (nothing leaves the accelerator), else None (the host search
    then chooses the layers to move to the CPU)."""
    import numpy as np

    from edgesdk.precision_plan import Int8Plan, _judge, write_npz
    from edgesdk.quantize import SearchStep, _meets, _worst_cosine, load_samples

    metric, value = tgt
    samples = load_samples(write_npz(seg_onnx.parent / f"{sid}_{accel.engine}_vendor_eval.npz", seg_eval))
    judge, _names, higher = _judge(metric, seg_onnx, samples, task_ctx)
    feeds = {k: np.concatenate([feed[k], v]) for k, v in seg_eval.items()}  # the reference input first
    work = seg_onnx.parent / f"{sid}_{accel.engine}_vendor_target"
    work.mkdir(exist_ok=True)
    ins = tuple(_spec_of(t) for t in s.inputs)
    outs = tuple(_spec_of(t) for t in s.outputs)
    with np.load(cal) as z:
        n_cal = len(z[z.files[0]])
    job = ConversionJob(sid, seg_onnx, work, "int8", ins, outs, CalibData(cal, n_cal),
                        {**(options or {}), "check_feeds": str(write_npz(work / "feeds.npz", feeds)),
                         "accuracy_analysis": False, "simulate": False})  # the shipped build's options
    t0 = time.perf_counter()
    say(f"{sid}: --target on {accel.engine}: the whole segment on {accel.vendor}'s own quantizer and simulator")
    try:
        cplan = accel.without_simulation(accel.plan(job))
        execute(cplan)
        got = accel.simulated_outputs(job, cplan) or []
    except EdgeSDKError as exc:
        say(f"{sid}: {accel.vendor} could not build it for the check ({str(exc).splitlines()[0][:200]}): the host "
            "search decides")
        return None
    if len(got) != 1 + len(samples):
        say(f"{sid}: {accel.vendor}'s simulator returned {len(got)} of {1 + len(samples)} samples: the host search "
            "decides")
        return None
    v = float(judge(got[1:]))
    size = cplan.outputs["model"].stat().st_size if cplan.outputs["model"].is_file() else 0
    if not _meets(v, value, higher):
        say(f"{sid}: {accel.vendor}'s simulator gives {metric} {v:.5f} with every layer on {accel.engine}: searching")
        return None
    ref_cos = _worst_cosine(list(expected), got[:1], [dict(expected)])
    step = SearchStep((), v, int(size), True, None, f"{accel.engine} (vendor simulator)")
    return Int8Plan(sid, f"{accel.vendor}'s own", "the vendor toolchain's quantizer", target=tgt,
                    eval_source=eval_source, reference_cosine=ref_cos, seconds=time.perf_counter() - t0,
                    notes=(f"{accel.vendor}'s simulator of the compiled segment meets --target {metric}={value:g} "
                           f"({metric} {v:.5f} on {eval_source}) with every layer on {accel.engine}: nothing moves "
                           "to the CPU; the host int8 simulation was not searched",),
                    engine=f"{accel.engine} (vendor simulator)", confirm_steps=(step,), final_kept=())


def _confirm_on_engine(ip: Any, engine: str, s: Any, seg_onnx: Path, ev: Path, task_ctx: Any, calib_data: CalibData,
                       ins: tuple, outs: tuple, adapter: Callable[[str], Adapter], runner: Runner | None,
                       feed: Mapping[str, Any], expected: Mapping[str, Any], model_name: str,
                       say: Callable[[str], None], split_outputs: frozenset[str], estimate: Any,
                       notes: list[str], warnings: list[str], base_options: Mapping[str, Any] | None = None
                       ) -> tuple[Any, SegmentOutcome | None]:
    """A --target's layers built into the segment's own engine and measured there (edgesdk.precision_plan.confirm).

    Returns (the plan, the accepted outcome); (the onnxruntime plan, None) when the engine cannot reach the target or
    cannot build or run the model: the segment then goes to onnxruntime, whose search met it, and the notes say so."""
    from edgesdk.precision_plan import confirm
    from edgesdk.quantize import load_samples

    sid = f"s{s.index}"
    feeds = load_samples(ev)
    built: dict[str, SegmentOutcome] = {}

    def build(kept: tuple[str, ...]) -> tuple[list[dict[str, Any]], int]:
        job = ConversionJob(sid, seg_onnx, seg_onnx.parent, "int8", ins, outs, calib_data,
                            {**(base_options or {}), "exclude_nodes": list(kept)})
        out, got = _build_and_run(engine, job, s, adapter, runner, feed, expected, model_name, split_outputs, feeds,
                                  say)
        built["last"] = out
        return got, out.report.bytes

    try:
        plan = confirm(ip, engine, seg_onnx, ev, task_ctx, build, say, estimate)
    except EdgeSDKError as exc:
        why = (f"segment {sid}: {engine} int8 with the searched layers kept in float: {_one_line(exc)}; the segment "
               f"goes to {FALLBACK_ENGINE} int8, whose search met --target with {len(ip.kept)} layer(s) kept in float")
        notes.append(why)
        warnings.append(why)
        return replace(ip, notes=(*ip.notes, why)), None
    out = built["last"]
    cos = out.report.check.cosine if out.report.check is not None else None
    return replace(plan, reference_cosine=cos if cos is not None else plan.reference_cosine), out


def _save_segment(proto: Any, path: Path, seg: Any, feed: Mapping[str, Any] | None) -> None:
    """Write a segment, then prove it (edgesdk.graph.extract.validate_segment: the full checker and one
    onnxruntime run on its reference input): a segment that fails names itself, its nodes and the message."""
    from edgesdk.graph.extract import save_model, validate_segment

    save_model(proto, path)
    validate_segment(proto, seg, feed, path=path)


def _reference_run(proto: Any, names: Sequence[str], feed: Mapping[str, Any], what: str) -> list[Any]:
    """onnxruntime on the host reference; its failures are the model's (ModelError naming `what`)."""
    try:
        return ort_session(proto).run(list(names), dict(feed))
    except EdgeSDKError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
        msg = " ".join(str(exc).strip().splitlines()[:3])
        raise ModelError(f"{what}: onnxruntime cannot run it on the reference input: {type(exc).__name__}: "
                         f"{msg}") from exc


__all__ = ["PRECISIONS", "TOLERANCES", "ConversionFailed", "ConvertResult", "SegmentOutcome", "SegmentReport",
           "choose_engine", "convert", "convert_segment", "declared_preprocess", "engine_chain", "random_input",
           "stage_vendor_handoff"]

"""What every conversion path shares: results, tolerances, preprocessing, the vendor hand-off, `finish_bundle`.

`edgesdk.conversion` (ONNX, TorchScript, nn.Module, and .tflite through ONNX) and `edgesdk.tflite_source`
(a .tflite bundled as it is) both end here; neither imports the other's internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import Manifest, Postprocess, Preprocess, Segment, TensorSpec, Tolerance
from edgesdk.toolchains.adapters import IOSpec

PRECISIONS = ("fp32", "fp16", "int8")
FALLBACK_ENGINE = "onnxruntime"
#: Default tolerances per precision (`edgesdk verify`, convert's artifact check, the smoke test on the board).
TOLERANCES = {
    "fp32": Tolerance(max_abs_rel=1e-3),
    "fp16": Tolerance(max_abs_rel=1e-2, cosine_min=0.999),
    "int8": Tolerance(max_abs_rel=0.25, cosine_min=0.99),
}


@dataclass(frozen=True)
class Attempt:
    """One engine tried on one segment: converted, loaded, run and verified, or where it failed."""

    engine: str
    precision: str
    ok: bool
    stage: str  # environment | refused | convert | load | run | verify | ok
    message: str = ""
    seconds: float = 0.0
    max_abs: float | None = None
    cosine: float | None = None

    def line(self) -> str:
        first = next((ln.strip() for ln in self.message.splitlines() if ln.strip()), "")
        return f"{self.engine} {self.stage} failed: {first[:300]}" if not self.ok else f"{self.engine} ok"

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "precision": self.precision, "ok": self.ok, "stage": self.stage,
                "message": self.message[-2000:], "seconds": round(self.seconds, 3), "max_abs": self.max_abs,
                "cosine": self.cosine}


@dataclass(frozen=True)
class SegmentReport:
    """How one segment was converted: engine, precision, time, size, the engines tried before, and why."""

    id: str
    engine: str
    precision: str
    nodes: int
    seconds: float
    bytes: int
    planned_engine: str
    fallback_reason: str | None = None
    attempts: tuple[Attempt, ...] = ()
    check: Attempt | None = None  # the artifact check of the engine that took it
    compiler_view: Mapping[str, Any] | None = None  # the vendor compiler's per-op placement (accelerator segments)

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "engine": self.engine, "precision": self.precision, "nodes": self.nodes,
             "seconds": round(self.seconds, 3), "bytes": self.bytes, "planned_engine": self.planned_engine,
             "fallback_reason": self.fallback_reason, "attempts": [a.to_dict() for a in self.attempts],
             "check": self.check.to_dict() if self.check else None}
        if self.compiler_view is not None:
            d["compiler_view"] = dict(self.compiler_view)
        return d


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
    prepare: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # where the reference input came from (manifest.reference_source)
    quantization: tuple[dict[str, Any], ...] = ()  # int8 decisions per segment (edgesdk.precision_plan.Int8Plan)

    @property
    def bundle_id(self) -> str | None:
        return self.manifest.bundle_id if self.manifest else None

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "bundle_id": self.bundle_id, "board": self.board,
                "precision": self.precision, "engine": self.engine, "dry_run": self.dry_run,
                "segments": [s.to_dict() for s in self.segments], "calibration": self.calibration,
                "warnings": list(self.warnings), "notes": list(self.notes), "plans": list(self.plans),
                "prepare": self.prepare, "reference": self.reference,
                "quantization": list(self.quantization), "seconds": round(self.seconds, 3)}


#: Said when nothing real was given: verify, the smoke test and the profiler then judge on noise.
RANDOM_REFERENCE = ("the reference input is random noise (no --sample or --calib): verify, the on-board smoke test "
                    "and the profiler judge the bundle on it, and a real model's outputs on noise say little; give "
                    "real inputs with --sample DIR")


def load_sample_set(sample: str | Path | None, specs: Sequence[Any], pre: Preprocess | None) -> Any:
    """--sample DIR read like a calibration set (edgesdk.calib), or None."""
    from edgesdk.calib import InputSpec, load_calibration

    if sample is None:
        return None
    return load_calibration(sample, [InputSpec(i.name, tuple(i.shape), i.dtype) for i in specs], pre, what="--sample")


def reference_feed(sset: Any, cset: Any, random_feed: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The bundle's reference input: the first of --sample DIR (`sset`), else the first calibration sample, else
    random (`random_feed()`), and then a warning. Returns (feed, manifest.reference_source, warnings)."""
    if sset is not None:
        return sset.sample(0), {"kind": "sample", "dir": str(sset.source), "file": sset.files[0]}, []
    if cset is not None:
        return cset.sample(0), {"kind": "calibration", "dir": str(cset.source), "file": cset.files[0]}, []
    return random_feed(), {"kind": "random"}, [RANDOM_REFERENCE]


def random_input(t: TensorSpec, seed: int = 0) -> Any:
    """The reference input when no calibration set is given: uniform [-1, 1) floats, small integers."""
    import numpy as np

    r = np.random.default_rng(seed)
    if t.dtype.startswith("float"):
        return r.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype)
    if t.dtype == "bool":
        return r.integers(0, 2, size=t.shape).astype(bool)
    return r.integers(0, 10, size=t.shape).astype(t.dtype)


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


@dataclass
class BundleParts:
    """Everything a bundle is made of, gathered by a conversion path before `finish_bundle` writes it."""

    board: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    segments: list[Segment] = field(default_factory=list)
    staged: list[tuple[str, Path]] = field(default_factory=list)  # (bundle rel path, source file)
    toolchains: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source_model: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    postprocess: Postprocess | None = None
    extra_engines: tuple[str, ...] = ()  # engines the manifest must list besides the segments' own
    reference_source: dict[str, Any] = field(default_factory=dict)
    tolerance: Tolerance | None = None  # None: the precision's (TOLERANCES); mixed precision sets its own


def finish_bundle(out: str | Path, force: bool, parts: BundleParts, ref_in: Mapping[str, Any],
                  ref_out: Mapping[str, Any], reference_model: Path | None = None) -> tuple[Path, Manifest]:
    """Write the bundle: staged files, reference inputs/outputs, the manifest; atomically (temp dir, rename).

    `reference_model`: an ONNX file to keep as reference/model.onnx (an export of a TorchScript, nn.Module or
    .tflite source: verify compares against it)."""
    from edgesdk import __version__
    from edgesdk.bundle import BundleWriter, engine_versions

    writer = BundleWriter(out, force)
    try:
        for rel, path in parts.staged:
            writer.add_file(path, rel)
        ref_inputs, ref_outputs = writer.add_reference(dict(ref_in), dict(ref_out))
        engines = [sg.engine for sg in parts.segments] + [sg.cpu_version.engine for sg in parts.segments
                                                          if sg.cpu_version] + list(parts.extra_engines)
        source = dict(parts.source_model)
        if reference_model is not None:
            writer.add_file(reference_model, "reference/model.onnx")
            source["path"] = "reference/model.onnx"
        manifest = Manifest(
            board=parts.board, precision=parts.precision, inputs=parts.inputs, outputs=parts.outputs,
            segments=tuple(parts.segments), files={}, source_model=source, reference_inputs=ref_inputs,
            reference_outputs=ref_outputs, reference_source=dict(parts.reference_source) or None,
            tolerance=parts.tolerance or TOLERANCES[parts.precision], preprocess=parts.preprocess,
            postprocess=parts.postprocess, toolchains=parts.toolchains, engines=engine_versions(dict.fromkeys(engines)),
            notes=tuple(parts.notes), edgesdk_version=__version__,
        )
        path, final = writer.commit(manifest)
        writer = None  # committed: nothing to discard
        return path, final
    finally:
        if writer is not None:
            writer.discard()


__all__ = ["FALLBACK_ENGINE", "PRECISIONS", "TOLERANCES", "Attempt", "BundleParts", "ConvertResult", "SegmentReport",
           "declared_preprocess", "finish_bundle", "random_input", "replace", "stage_vendor_handoff"]

"""`edgesdk convert app.yaml --board ID --sample DIR`: every model stage converted for the board into one app bundle.

1. app.yaml is validated (edgesdk.app.spec) and every file it names is checked before anything runs.
2. The host reference run: the app's own stage graph (edgesdk.runtime.app.graph, the code the board runs) over the
   real samples, model stages on onnxruntime over the source models. Every stage's inputs and outputs of every
   sample are recorded (APP/reference/<k>/<stage>.in.npz / .out.npz).
3. Each model stage is converted with `edgesdk.conversion.convert` (its own partition, engine chain, precision),
   with the tensors that stage really received as its reference sample (and its calibration set for int8), into
   APP/stages/<stage>/.
4. The app's files (character lists, custom modules) are copied into APP/files/, and one manifest over all of it is
   written with every file's sha256. The bundle is built in a temporary folder beside OUT and renamed at the end:
   nothing half-written.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgesdk.app.spec import AppSpec, AppSpecError, StageDecl, load_app_spec
from edgesdk.errors import InputError
from edgesdk.runtime.app.graph import AppGraph, VariantRunner, jsonable, shape_key
from edgesdk.runtime.app.manifest import (
    AppManifest,
    SampleRef,
    StageSpec,
    save_values,
    shapes_key,
    shown_shapes,
    wiring_problem,
)
from edgesdk.runtime.app.steps import AppError, builtin
from edgesdk.runtime.manifest import MANIFEST, canonical_json, sha256_file

Progress = Callable[[str], None]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TENSOR_SUFFIXES = (".npy", ".npz")
#: at most this many recorded inputs of a model stage become its sample/calibration set
MAX_STAGE_SAMPLES = 64


@dataclass
class StageReport:
    name: str
    kind: str
    seconds: float = 0.0
    bundle_id: str | None = None
    engines: list[str] = field(default_factory=list)
    precision: str | None = None
    items: int = 0  # how many times the host run called it over the samples
    host_ms: float = 0.0
    variants: int | None = None  # a model stage converted at several input shapes: how many

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class AppConvertResult:
    out: Path
    board: str
    manifest: AppManifest
    stages: list[StageReport]
    samples: list[str]
    reference: list[dict[str, Any]]  # per sample: the app's outputs on the host (onnxruntime), as JSON
    warnings: list[str]
    seconds: float

    @property
    def bundle_id(self) -> str:
        return self.manifest.bundle_id

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "app", "out": str(self.out), "bundle_id": self.bundle_id, "board": self.board,
                "name": self.manifest.name, "stages": [s.to_dict() for s in self.stages], "samples": self.samples,
                "reference_outputs": self.reference, "warnings": self.warnings, "seconds": round(self.seconds, 3)}


# -- the host's model runner --------------------------------------------------------------------------------------
class OrtRunner:
    """A model stage on onnxruntime over its source model (converted to ONNX first if it is not one), fed exactly
    the static shapes its input_shape declares (what the board's bundle will take)."""

    def __init__(self, onnx_path: Path, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own errors: name the stage and file
            raise InputError(f"{where}: onnxruntime cannot load {onnx_path}: {str(exc).splitlines()[0]}") from exc
        self.where = where
        self.inputs = {i.name: i for i in self.sess.get_inputs()}
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self.shapes = dict(shapes)
        for name, i in self.inputs.items():
            if name not in self.shapes:
                dims = [d if isinstance(d, int) and d > 0 else None for d in i.shape]
                if None in dims:
                    raise InputError(f"{where}: field input_shape: the model's input {name!r} is {i.shape}: give "
                                     f"its static shape (input_shape: [{name}=1,3,H,W])")
                self.shapes[name] = tuple(dims)  # type: ignore[arg-type]
        unknown = [n for n in self.shapes if n not in self.inputs]
        if unknown:
            raise InputError(f"{where}: field input_shape: the model has no input {unknown[0]!r} "
                             f"(it has {list(self.inputs)})")

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(feed) != set(self.inputs):
            raise AppError(f"{self.where}: the model takes inputs {list(self.inputs)}, the stage feeds {list(feed)}")
        for k, v in feed.items():
            if tuple(v.shape) != tuple(self.shapes[k]):
                raise AppError(f"{self.where}: input {k!r} is fed {list(v.shape)}; the stage's input_shape is "
                               f"{list(self.shapes[k])} (the board's bundle takes only that shape)")
            want = _ORT_DTYPES.get(self.inputs[k].type)
            if want is not None and v.dtype != want:
                raise AppError(f"{self.where}: input {k!r} is fed {v.dtype}; the model takes {want} (the board's "
                               "bundle takes only that dtype: cast it in the stage that makes it)")
        try:
            outs = self.sess.run(self.output_names, {k: np.ascontiguousarray(v) for k, v in feed.items()})
        except Exception as exc:  # onnxruntime's own errors: name the stage
            raise AppError(f"{self.where}: onnxruntime cannot run the model: {str(exc).splitlines()[0]}") from exc
        return dict(zip(self.output_names, outs))


_ORT_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16),
               "tensor(double)": np.dtype(np.float64), "tensor(int64)": np.dtype(np.int64),
               "tensor(int32)": np.dtype(np.int32), "tensor(uint8)": np.dtype(np.uint8),
               "tensor(int8)": np.dtype(np.int8), "tensor(bool)": np.dtype(np.bool_)}


# -- spec -> stage specs --------------------------------------------------------------------------------------------
def _norm(rel: str) -> str:
    """A file of the app as the bundle's files table names it (`./keys.txt` is `keys.txt`)."""
    return PurePosixPath(rel).as_posix()


def _rel_file(app_dir: Path, rel: str, where: str, spec_path: Path) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise AppSpecError(str(spec_path), [f"field {where}: {rel!r} must be a path inside the app's folder"])
    full = app_dir / p
    if not full.is_file():
        raise AppSpecError(str(spec_path), [f"field {where}: {rel!r}: no such file beside app.yaml"])
    return full


def _model_outputs(decl: StageDecl, names: Sequence[str], where: str, spec_path: Path) -> dict[str, str]:
    o = decl.outputs
    if o is None:
        import re

        bad = [n for n in names if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", n)]
        if bad:
            raise AppSpecError(str(spec_path), [f"field {where}.outputs: name the model's outputs {list(names)} "
                                                f"(e.g. outputs: [{', '.join(f'out{i}' for i in range(len(names)))}])"])
        return {n: n for n in names}
    if isinstance(o, dict):
        bad = [v for v in o.values() if v not in names]
        if bad:
            raise AppSpecError(str(spec_path), [f"field {where}.outputs: the model has no output {bad[0]!r} (it has "
                                                f"{list(names)})"])
        return dict(o)
    if len(o) > len(names):
        raise AppSpecError(str(spec_path), [f"field {where}.outputs: {len(o)} names for the model's {len(names)} "
                                            f"outputs {list(names)}"])
    return dict(zip(o, names))


def _stage_specs(spec: AppSpec, app_dir: Path, spec_path: Path, onnx: Mapping[str, OrtRunner]) -> list[StageSpec]:
    out = []
    for i, d in enumerate(spec.stages):
        where = f"stages.{i}"
        if d.kind == "model":
            r = onnx[d.name]
            missing = [n for n in r.inputs if n not in d.inputs]
            unknown = [n for n in d.inputs if n not in r.inputs]
            if missing or unknown:
                raise AppSpecError(str(spec_path), [f"field {where}.inputs: the model takes {list(r.inputs)}"
                                                    + (f"; missing {missing}" if missing else "")
                                                    + (f"; unknown {unknown}" if unknown else "")])
            mo = _model_outputs(d, r.output_names, where, spec_path)
            out.append(StageSpec(d.name, "model", dict(d.inputs), tuple(mo), bundle=f"stages/{d.name}",
                                 model_outputs=mo, map=d.map))
        elif d.kind == "step":
            cls = builtin(str(d.step), f"{spec_path}: field {where}.step")
            outs = tuple(d.outputs) if d.outputs else cls.outputs
            params = {k: (_norm(v) if k in cls.file_params and isinstance(v, str) else v) for k, v in d.params.items()}
            out.append(StageSpec(d.name, "step", dict(d.inputs), outs, params=params, step=d.step,
                                 map=d.map, stateful=cls.stateful))
        else:
            mod, _, fn = str(d.custom).rpartition(":")
            _rel_file(app_dir, mod, f"{where}.custom", spec_path)
            mod = _norm(mod)
            out.append(StageSpec(d.name, "custom", dict(d.inputs), tuple(d.outputs or ()), params=dict(d.params),
                                 function=f"{mod}:{fn}", map=d.map, stateful=bool(d.params.get("stateful", False))))
    return out


def app_files(spec: AppSpec, stages: Sequence[StageSpec], app_dir: Path, spec_path: Path) -> dict[str, Path]:
    """Every file the app ships: file params of its steps, custom modules, `modules:` and `files:`."""
    files: dict[str, Path] = {}
    for i, s in enumerate(stages):
        if s.kind == "step":
            for key in builtin(str(s.step)).file_params:
                v = s.params.get(key)
                if isinstance(v, str):
                    files[v] = _rel_file(app_dir, v, f"stages.{i}.params.{key}", spec_path)
        elif s.kind == "custom":
            mod = str(s.function).rpartition(":")[0]
            files[mod] = _rel_file(app_dir, mod, f"stages.{i}.custom", spec_path)
    for k, rel in [("modules", m) for m in spec.modules] + [("files", f) for f in spec.files]:
        files[_norm(rel)] = _rel_file(app_dir, rel, k, spec_path)
    return files


def _in_bundle(stages: Sequence[StageSpec]) -> list[StageSpec]:
    """The stage specs as the bundle holds them: file params and modules under files/."""
    out = []
    for s in stages:
        if s.kind == "step":
            fp = builtin(str(s.step)).file_params
            params = {k: (f"files/{v}" if k in fp and isinstance(v, str) else v) for k, v in s.params.items()}
            out.append(replace(s, params=params))
        elif s.kind == "custom":
            mod, _, fn = str(s.function).rpartition(":")
            out.append(replace(s, function=f"files/{mod}:{fn}"))
        else:
            out.append(s)
    return out


def _shown(p: Path, app_dir: Path) -> str:
    """A path as the manifest records it: relative to the app's folder when inside it (the bundle id must not
    depend on where the app was checked out)."""
    try:
        return Path(p).resolve().relative_to(app_dir).as_posix()
    except ValueError:
        return Path(p).name


# -- samples -----------------------------------------------------------------------------------------------------
def read_samples(d: Path, inputs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The app's sample inputs: one file a sample, in name order. Images (BGR uint8, as the board reads them) or
    .npy for a one-input app; .npz with one array per app input otherwise."""
    if not d.is_dir():
        raise InputError(f"--sample {d}: expected a folder of sample inputs (images or .npy/.npz)")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + TENSOR_SUFFIXES)
    if not files:
        raise InputError(f"--sample {d}: no images (png/jpg) or .npy/.npz files in it")
    out = []
    for p in files:
        suf = p.suffix.lower()
        if suf == ".npz":
            try:
                with np.load(p, allow_pickle=False) as z:
                    arrs = {k: z[k] for k in z.files}
            except (OSError, ValueError, zipfile.BadZipFile) as exc:
                raise InputError(f"--sample {p}: not a readable .npz of arrays: {exc}") from exc
            missing = [n for n in inputs if n not in arrs]
            if missing:
                raise InputError(f"--sample {p}: no array for app input(s) {missing} (it has {sorted(arrs)})")
            out.append((p.name, {n: arrs[n] for n in inputs}))
            continue
        if len(inputs) != 1:
            raise InputError(f"--sample {p}: the app takes {list(inputs)}: give .npz files with those arrays")
        if suf == ".npy":
            try:
                out.append((p.name, {inputs[0]: np.load(p, allow_pickle=False)}))
            except (OSError, ValueError) as exc:
                raise InputError(f"--sample {p}: not a readable .npy array: {exc}") from exc
        else:
            import cv2

            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(f"--sample {p}: not an image OpenCV can read")
            out.append((p.name, {inputs[0]: img}))
    return out


# -- convert ------------------------------------------------------------------------------------------------------
def convert_app(spec_path: str | Path, board: str, out: str | Path | None = None, sample: str | Path | None = None,
                force: bool = False, progress: Progress | None = None, calib_limit: int | None = None,
                convert_fn: Callable[..., Any] | None = None) -> AppConvertResult:
    """Convert app.yaml for `board` into an app bundle at `out` (default: <app dir>/build/<name>-<board>)."""
    from edgesdk import __version__
    from edgesdk.boards import get_board
    from edgesdk.bundle import check_out_dir
    from edgesdk.cli.inspect import shapes_from
    from edgesdk.conversion import convert
    from edgesdk.frontends import to_onnx

    t_all = time.perf_counter()
    say = progress or (lambda _m: None)
    convert_fn = convert_fn or convert
    spec_path = Path(spec_path)
    spec = load_app_spec(spec_path)
    app_dir = spec_path.resolve().parent
    get_board(board)  # an unknown board is refused before any work
    sample_dir = Path(sample) if sample is not None else (app_dir / spec.samples if spec.samples else None)
    if sample_dir is None:
        raise InputError(f"{spec_path}: an app needs real sample inputs to record its stages' references: "
                         "--sample DIR (or `samples:` in app.yaml)")
    samples = read_samples(sample_dir, spec.inputs)
    out_dir = Path(out) if out is not None else app_dir / "build" / f"{spec.name}-{board}"
    if out is None:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    check_out_dir(out_dir, force)
    warnings: list[str] = []

    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        # the model stages' ONNX on the host, and their runners
        runners: dict[str, Any] = {}
        model_files: dict[str, Path] = {}
        variant_shapes: dict[str, list[dict[str, tuple[int, ...]]]] = {}
        for i, d in enumerate(spec.stages):
            if d.kind != "model":
                continue
            src = _rel_file(app_dir, str(d.model), f"stages.{i}.model", spec_path)
            model_files[d.name] = src
            try:
                variant_shapes[d.name] = [shapes_from(v) for v in d.shape_variants()]
            except InputError as exc:
                raise AppSpecError(str(spec_path), [f"field stages.{i}.input_shape: {exc}"]) from exc
            where = f"{spec_path}: stage {d.name!r}"
            ort_runners = []
            for j, shapes in enumerate(variant_shapes[d.name]):
                onnx_src = to_onnx(src, work / "onnx" / d.name / str(j), shapes or None, trust_model=d.trust_model)
                ort_runners.append(OrtRunner(onnx_src.path, shapes, where))
            runners[d.name] = (ort_runners[0] if len(ort_runners) == 1 else
                               VariantRunner([(shapes_key(r.shapes), r) for r in ort_runners], where))
        stages = _stage_specs(spec, app_dir, spec_path, runners)
        problem = wiring_problem(stages, spec.inputs, spec.outputs)  # the model stages' real outputs, now known
        if problem:
            raise AppSpecError(str(spec_path), [problem])
        files = app_files(spec, stages, app_dir, spec_path)
        # the app's files are copied first and the host's reference run reads those copies, by the names the
        # board uses: what was recorded is what ships
        for rel, src in files.items():
            dst = work / "bundle" / "files" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

        def resolve(rel: str) -> Path:
            return work / "bundle" / rel

        graph = AppGraph(_in_bundle(stages), spec.inputs, spec.outputs, resolve, lambda s: runners[s.name],
                         where=str(spec_path))

        # 2. the reference run on the host
        say(f"reference run on the host (onnxruntime): {len(samples)} sample(s) from {sample_dir}")
        reports = {s.name: StageReport(s.name, s.kind if s.kind != "step" else str(s.step)) for s in stages}
        refs: list[SampleRef] = []
        ref_json: list[dict[str, Any]] = []
        stage_inputs: dict[str, list[dict[str, np.ndarray]]] = {s.name: [] for s in stages if s.kind == "model"}
        graph.reset()
        for k, (fname, inp) in enumerate(samples):
            try:
                run = graph.run(inp, trace=True)
            except AppError as exc:
                raise AppError(f"host reference run on sample {fname}: {exc}") from exc
            rdir = work / "bundle" / "reference" / f"{k:03d}"
            rdir.mkdir(parents=True, exist_ok=True)
            sref = {}
            for s in stages:
                tr = run.trace[s.name]
                save_values(rdir / f"{s.name}.in.npz", tr["inputs"])
                save_values(rdir / f"{s.name}.out.npz", tr["outputs"])
                sref[s.name] = {"inputs": f"reference/{k:03d}/{s.name}.in.npz",
                                "outputs": f"reference/{k:03d}/{s.name}.out.npz"}
                t = run.timings[s.name]
                reports[s.name].items += t.calls
                reports[s.name].host_ms += t.ms
                if s.kind == "model":
                    vals = tr["inputs"]
                    n = next((len(v) for v in vals.values() if isinstance(v, list)), None)
                    for j in range(n if n is not None else 1):
                        stage_inputs[s.name].append({m: np.asarray(v[j] if isinstance(v, list) else v)
                                                     for m, v in vals.items()})
            save_values(rdir / "app.in.npz", inp)
            save_values(rdir / "app.out.npz", run.outputs)
            refs.append(SampleRef(f"{k:03d}", fname, f"reference/{k:03d}/app.in.npz",
                                  f"reference/{k:03d}/app.out.npz", sref))
            ref_json.append({"sample": fname, "outputs": {o: jsonable(v) for o, v in run.outputs.items()}})
        graph.reset()

        # 3. the model stages, each converted for the board on the tensors it really received
        models = [d for d in spec.stages if d.kind == "model"]
        bundles: dict[str, list[str]] = {}
        for n_done, d in enumerate(models, 1):
            items = stage_inputs[d.name]
            if not items:
                raise InputError(f"{spec_path}: stage {d.name!r} ran on no item of the samples (its list inputs were "
                                 f"empty on every sample): give samples on which it runs, so that its bundle has a "
                                 "real reference input")
            variants = variant_shapes[d.name]
            groups = _by_variant(items, variants, runners[d.name])
            t0 = time.perf_counter()
            rep = reports[d.name]
            (work / "bundle" / "stages").mkdir(parents=True, exist_ok=True)
            bundles[d.name] = []
            for j, shapes in enumerate(variants):
                vitems = groups[j]
                vname = d.name if len(variants) == 1 else f"{d.name}.v{j}"
                shown = "" if len(variants) == 1 else f" at {shown_shapes(shapes_key(shapes))} (variant {j + 1}/{len(variants)})"
                if not vitems:
                    vitems = [_fit(x, shapes) for x in _nearest(groups, j)]
                    warnings.append(f"stage {d.name}: no sample gave it an input of shape {shown_shapes(shapes_key(shapes))}: "
                                    "that variant's reference and calibration inputs are recorded inputs of another "
                                    "variant, padded or cut to that shape; give samples that reach it for real ones")
                sdir = work / "samples" / vname
                sdir.mkdir(parents=True)
                for k, feed in enumerate(vitems[:MAX_STAGE_SAMPLES]):
                    np.savez(sdir / f"{k:04d}.npz", **feed)
                say(f"stage {d.name} ({n_done}/{len(models)}): converting {model_files[d.name].name} for {board}"
                    + shown + (f" ({d.precision})" if d.precision else "")
                    + f" on {min(len(vitems), MAX_STAGE_SAMPLES)} recorded input(s)")

                def sub(msg: str, _n: str = vname) -> None:
                    say(f"  {_n}: {msg}")

                res = convert_fn(model_files[d.name], board, out=work / "bundle" / "stages" / vname,
                                 precision=d.precision, engine=d.engine, input_shapes=shapes or None,
                                 sample=sdir, calib=sdir if d.precision == "int8" else None, calib_limit=calib_limit,
                                 target=d.target, plan=d.plan, trust_model=d.trust_model, force=True, progress=sub)
                bundles[d.name].append(f"stages/{vname}")
                if j == 0:
                    rep.bundle_id = res.bundle_id
                    rep.precision = res.precision
                rep.engines = sorted(set(rep.engines) | {s.engine for s in res.segments})
                warnings += [f"stage {vname}: {w}" for w in res.warnings if "random" not in w]
            rep.seconds = time.perf_counter() - t0
            rep.variants = len(variants) if len(variants) > 1 else None
        stages = [replace(s, bundle=bundles[s.name][0], variants=tuple(bundles[s.name][1:]) or None)
                  if s.kind == "model" else s for s in stages]

        # 4. the manifest
        root = work / "bundle"
        table = {}
        for dirpath, _dirs, fnames in os.walk(root):
            for f in fnames:
                p = Path(dirpath) / f
                rel = p.relative_to(root).as_posix()
                if rel != MANIFEST:
                    table[rel] = sha256_file(p)
        m = AppManifest(name=spec.name, board=board, inputs=tuple(spec.inputs), outputs=dict(spec.outputs),
                        stages=tuple(_in_bundle(stages)), files=dict(sorted(table.items())), samples=tuple(refs),
                        tolerance=dict(spec.tolerance),
                        source={"spec": spec_path.name, "sha256": sha256_file(spec_path),
                                "samples": _shown(sample_dir, app_dir),
                                "models": {k: v.name for k, v in model_files.items()}},
                        edgesdk_version=__version__,
                        created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        m = replace(m, bundle_id=m.content_id())
        (root / MANIFEST).write_bytes(canonical_json(m.to_dict()))
        # sanity: the bundle reads back as what the board will load
        from edgesdk.runtime.app.manifest import load_app_manifest

        m = load_app_manifest(root, verify=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(root, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote app bundle {m.bundle_id} to {out_dir}")
    return AppConvertResult(out_dir, board, m, list(reports.values()), [f for f, _ in samples], ref_json, warnings,
                            time.perf_counter() - t_all)


def _by_variant(items: Sequence[Mapping[str, np.ndarray]], variants: Sequence[Mapping[str, Sequence[int]]],
                runner: Any) -> list[list[dict[str, np.ndarray]]]:
    """The recorded inputs of a model stage, per shape variant (the host run fed each one its variant)."""
    if len(variants) == 1:
        return [[dict(x) for x in items]]
    keys = [k for k, _r in runner.variants]
    groups: list[list[dict[str, np.ndarray]]] = [[] for _ in variants]
    for x in items:
        groups[keys.index(shape_key(x))].append(dict(x))
    return groups


def _nearest(groups: Sequence[Sequence[Mapping[str, np.ndarray]]], j: int) -> Sequence[Mapping[str, np.ndarray]]:
    """The recorded inputs of the variant nearest to variant j that has some (the next larger first)."""
    order = sorted((i for i in range(len(groups)) if groups[i]), key=lambda i: (abs(i - j), i < j))
    return groups[order[0]]


def _fit(feed: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """A recorded input brought to another variant's shapes: cut where it is larger, padded with its edge values
    where it is smaller (a text line's padded end, an image's border)."""
    out = {}
    for k, v in feed.items():
        want = tuple(shapes.get(k, v.shape))
        a = v[tuple(slice(0, min(n, w)) for n, w in zip(v.shape, want))]
        pad = [(0, max(0, w - n)) for n, w in zip(a.shape, want)]
        out[k] = np.ascontiguousarray(np.pad(a, pad, mode="edge") if any(p for _, p in pad) else a)
    return out


def app_cache_key(spec_path: str | Path) -> str:
    """A hash over app.yaml and every file it uses (models, app files, samples) and edgesdk's version: `flash
    app.yaml` converts again when any of them changes."""
    import hashlib

    from edgesdk import __version__

    p = Path(spec_path)
    spec = load_app_spec(p)
    d = p.resolve().parent
    h = hashlib.sha256(p.read_bytes())
    h.update(f"\0edgesdk {__version__}".encode())
    rels = [s.model for s in spec.stages if s.model] + [str(s.custom).rpartition(":")[0] for s in spec.stages
                                                          if s.custom]
    rels += list(spec.modules) + list(spec.files)
    rels += [v for s in spec.stages if s.step for v in s.params.values() if isinstance(v, str) and (d / v).is_file()]
    if spec.samples and (d / spec.samples).is_dir():
        rels += [str(f.relative_to(d)) for f in sorted((d / spec.samples).iterdir()) if f.is_file()]
    for rel in sorted(set(r for r in rels if r)):
        f = d / rel
        h.update(f"\0{rel}\0".encode() + (sha256_file(f).encode() if f.is_file() else b"missing"))
    return h.hexdigest()[:16]


__all__ = ["AppConvertResult", "app_cache_key", "OrtRunner", "StageReport", "convert_app", "read_samples"]

"""Running an app's stages in order, wired by name, and checking each stage against its reference.

The same code runs an app bundle on the board (model stages on `Session`s of their sub-bundles) and the host's
reference run at convert time (model stages on onnxruntime over the source models): only the model runner differs,
so the steps' reference outputs are exactly what the board's steps must give on the same inputs.

A wire is an app input name or ``stage.output``. A stage with ``map: true`` runs once per item of its list inputs
(inputs that are not lists are given to every call) and its outputs are lists.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgesdk.runtime.app.manifest import ShapeKey, StageSpec, load_values, shapes_key, shown_shapes
from edgesdk.runtime.app.steps import AppError, Step, builtin
from edgesdk.runtime.errors import EdgeSDKError


class ModelRunner(Protocol):
    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class StageTiming:
    calls: int = 0
    ms: float = 0.0


@dataclass
class AppRun:
    """One run of the app: its outputs, and per stage the calls and milliseconds (``trace``: every stage's inputs and
    outputs, when asked for)."""

    outputs: dict[str, Any]
    timings: dict[str, StageTiming]
    total_ms: float
    trace: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def load_custom(path: Path, func: str, where: str, sha256: str | None = None) -> Callable[..., Any]:
    """The function FUNC of the module file PATH (a file the app ships, hashed in its manifest). The bytes are read
    once, checked against `sha256` when given, and executed from memory: no import machinery, so no bytecode cache
    is read (a stale .pyc cannot stand in for the checked source) or written into the bundle."""
    import hashlib
    import types

    if not path.is_file():
        raise AppError(f"{where}: custom step module {path} is missing")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise AppError(f"{where}: custom step module {path} does not match the sha256 its manifest records")
    name = f"edgesdk_app_custom_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod  # dataclasses and pickling look a module up by name
    try:
        exec(compile(data, str(path), "exec"), mod.__dict__)  # noqa: S102 - the app's own, hash-checked code
    except Exception as exc:  # the app's own code: name it, never a bare traceback
        sys.modules.pop(name, None)
        raise AppError(f"{where}: importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise AppError(f"{where}: {path.name} has no function {func!r}")
    return fn


def _value(v: Any, where: str) -> Any:
    """A custom step's output value as the graph carries it: an ndarray (numbers, booleans or str) or a flat list
    of them (a tuple is a list)."""
    if isinstance(v, (list, tuple)):
        return [_item(x, where) for x in v]
    return _item(v, where)


def _item(x: Any, where: str) -> np.ndarray:
    if isinstance(x, (list, tuple, dict)) or x is None:
        raise AppError(f"{where}: expected an array, a number or a string, got {type(x).__name__}")
    a = np.asarray(x)
    if a.dtype.kind not in "biufU":
        raise AppError(f"{where}: {a.dtype} values cannot be carried between stages (numbers, booleans or str only)")
    return a


class _Custom:
    """A custom step: ``fn(inputs: dict, params: dict) -> dict`` from a module of the app."""

    def __init__(self, fn: Callable[..., Any], params: Mapping[str, Any], outputs: Sequence[str], where: str) -> None:
        self.fn, self.params, self.outputs, self.where = fn, dict(params), tuple(outputs), where

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        try:
            res = self.fn(dict(inputs), dict(self.params))
        except EdgeSDKError:
            raise
        except Exception as exc:
            raise AppError(f"{self.where}: the custom function raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(res, Mapping) or set(res) != set(self.outputs):
            got = sorted(res) if isinstance(res, Mapping) else type(res).__name__
            raise AppError(f"{self.where}: the custom function must return a dict with exactly "
                           f"{list(self.outputs)}, returned {got}")
        return {k: _value(v, f"{self.where}: output {k!r}") for k, v in res.items()}

    def reset(self) -> None:
        reset = getattr(self.fn, "reset", None)
        if callable(reset):
            reset()


def shape_key(feed: Mapping[str, Any]) -> ShapeKey:
    """The shapes of a feed's arrays, as the key a stage with shape variants picks by."""
    return shapes_key({k: np.shape(v) for k, v in feed.items()})


class VariantRunner:
    """A model stage converted at several input shapes (its variants): each feed runs on the variant of its shapes.
    ``inputs`` and ``output_names`` are the first variant's (the variants differ only in shapes)."""

    def __init__(self, variants: Sequence[tuple[ShapeKey, ModelRunner]], where: str) -> None:
        self.variants = list(variants)
        self.by_key = dict(self.variants)
        self.where = where

    def __getattr__(self, name: str) -> Any:
        if name in ("inputs", "output_names"):
            return getattr(self.variants[0][1], name)
        raise AttributeError(name)

    def pick(self, feed: Mapping[str, Any]) -> int:
        key = shape_key(feed)
        for j, (k, _r) in enumerate(self.variants):
            if k == key:
                return j
        raise AppError(f"{self.where}: no variant of the stage takes inputs {shown_shapes(key)}; it is converted at "
                       + "; ".join(shown_shapes(k) for k, _r in self.variants)
                       + " (the stage before it must give one of these shapes)")

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.variants[self.pick(feed)][1].run(feed)


class _Model:
    """A model stage: its model's inputs fed from wires, its outputs renamed to the stage's names."""

    def __init__(self, runner: ModelRunner, spec: StageSpec, where: str) -> None:
        self.runner, self.spec, self.where = runner, spec, where

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        feed = {}
        for k, v in inputs.items():
            if isinstance(v, list):
                raise AppError(f"{self.where}: input {k!r} is a list of {len(v)} items; set `map: true` on the "
                               "stage to run the model once per item")
            feed[k] = np.asarray(v)
        res = self.runner.run(feed)
        return {local: res[model] for local, model in self.spec.model_outputs.items()}

    def reset(self) -> None:
        pass


def build_step(spec: StageSpec, resolve: Callable[[str], Path], where: str,
               sha256: Callable[[str], str | None] | None = None) -> Any:
    """The callable of a step / custom stage (its params checked now: errors name the stage and field)."""
    if spec.kind == "step":
        cls: type[Step] = builtin(str(spec.step), where)
        inst = cls(spec.params, f"{where}.params", resolve)
        _check_io(spec, cls.inputs, cls.optional_inputs, cls.outputs, where)
        return inst
    if spec.kind == "custom":
        mod, _, fn = str(spec.function).rpartition(":")
        if not mod or not fn:
            raise AppError(f"{where}.function: expected 'module.py:function', got {spec.function!r}")
        return _Custom(load_custom(resolve(mod), fn, where, sha256(mod) if sha256 else None), spec.params,
                       spec.outputs, where)
    raise AppError(f"{where}: a {spec.kind} stage is not a step")


def _check_io(spec: StageSpec, inputs: Sequence[str], optional: Sequence[str], outputs: Sequence[str],
              where: str) -> None:
    missing = [n for n in inputs if n not in spec.inputs]
    unknown = [n for n in spec.inputs if n not in inputs and n not in optional]
    if missing or unknown:
        raise AppError(f"{where}.inputs: step {spec.step!r} takes {list(inputs)}"
                       + (f" (optional {list(optional)})" if optional else "")
                       + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    bad = [o for o in spec.outputs if o not in outputs]
    if bad:
        raise AppError(f"{where}.outputs: step {spec.step!r} gives {list(outputs)}, not {bad}")


class AppGraph:
    """The stages of an app, ready to run. model_runner(spec) gives each model stage's runner."""

    def __init__(self, stages: Sequence[StageSpec], inputs: Sequence[str], outputs: Mapping[str, str],
                 resolve: Callable[[str], Path], model_runner: Callable[[StageSpec], ModelRunner],
                 where: str = "app", sha256: Callable[[str], str | None] | None = None) -> None:
        self.stages = tuple(stages)
        self.inputs = tuple(inputs)
        self.outputs = dict(outputs)
        self.where = where
        self.impl: dict[str, Any] = {}
        for i, s in enumerate(self.stages):
            w = f"{where}: stages.{i} ({s.name})"
            self.impl[s.name] = (_Model(model_runner(s), s, w) if s.kind == "model"
                                 else build_step(s, resolve, w, sha256))

    def reset(self) -> None:
        for impl in self.impl.values():
            impl.reset()

    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def call(self, spec: StageSpec, values: Mapping[str, Any]) -> dict[str, Any]:
        """Run one stage on its inputs ({input name: value}); with map, once per item."""
        impl = self.impl[spec.name]
        if not spec.map:
            out = impl(**values)
        else:
            lens = {k: len(v) for k, v in values.items() if isinstance(v, list)}
            if not lens:
                raise AppError(f"{self.where}: stage {spec.name!r} has map: true but none of its inputs is a list")
            if len(set(lens.values())) > 1:
                raise AppError(f"{self.where}: stage {spec.name!r}: its list inputs differ in length {lens}")
            n = next(iter(lens.values()))
            items = [impl(**{k: (v[i] if isinstance(v, list) else v) for k, v in values.items()}) for i in range(n)]
            out = {o: [it[o] for it in items] for o in spec.outputs}
        missing = [o for o in spec.outputs if o not in out]
        if missing:
            raise AppError(f"{self.where}: stage {spec.name!r} gave no output {missing}")
        return {o: out[o] for o in spec.outputs}

    def run(self, inputs: Mapping[str, Any], trace: bool = False,
            on_stage: Callable[[str, float], None] | None = None) -> AppRun:
        missing = [n for n in self.inputs if n not in inputs]
        extra = [n for n in inputs if n not in self.inputs]
        if missing or extra:
            raise AppError(f"{self.where}: the app takes inputs {list(self.inputs)}; given {list(inputs)}")
        env: dict[str, Any] = dict(inputs)
        timings: dict[str, StageTiming] = {}
        tr: dict[str, dict[str, dict[str, Any]]] = {}
        t_all = time.perf_counter()
        for s in self.stages:
            vals = {k: env[w] for k, w in s.inputs.items()}
            t0 = time.perf_counter()
            out = self.call(s, vals)
            ms = (time.perf_counter() - t0) * 1e3
            calls = len(next(iter(v for v in vals.values() if isinstance(v, list)), [])) if s.map else 1
            timings[s.name] = StageTiming(calls, ms)
            if on_stage is not None:
                on_stage(s.name, ms)
            if trace:  # copies: a later custom step changing an array in place must not change this record
                tr[s.name] = {"inputs": _copy(vals), "outputs": _copy(out)}
            for o, v in out.items():
                env[f"{s.name}.{o}"] = v
        total = (time.perf_counter() - t_all) * 1e3
        return AppRun({k: env[w] for k, w in self.outputs.items()}, timings, total, tr)


def _copy(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: [np.array(x) for x in v] if isinstance(v, list) else np.array(v) for k, v in values.items()}


# -- checking stages against their reference -------------------------------------------------------------------
@dataclass
class OutputCheck:
    ok: bool
    max_abs_rel: float | None = None
    cosine: float | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class StageCheck:
    name: str
    kind: str
    samples: int
    outputs: dict[str, OutputCheck]
    ms: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs.values())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"ok": self.ok, "kind": self.kind, "samples": self.samples, "ms": round(self.ms, 3),
                             "outputs": {k: v.to_dict() for k, v in self.outputs.items()}}
        if self.error:
            d["error"] = self.error
        return d


def _flat(v: Any) -> list[np.ndarray]:
    return [np.asarray(x) for x in v] if isinstance(v, list) else [np.asarray(v)]


def compare_step_values(got: Sequence[Any], ref: Sequence[Any], max_abs_rel: float) -> OutputCheck:
    """A step's output over the samples against its reference: same structure and shapes; numbers within
    max_abs_rel of the reference's range, integers, booleans and strings equal."""
    if len(got) != len(ref):
        return OutputCheck(False, problem=f"{len(got)} samples, reference {len(ref)}")
    worst = 0.0
    for i, (g, r) in enumerate(zip(got, ref)):
        gl, rl = _flat(g), _flat(r)
        if isinstance(g, list) != isinstance(r, list) or len(gl) != len(rl):
            return OutputCheck(False, problem=f"sample {i}: {len(gl)} items, reference {len(rl)}")
        for j, (a, b) in enumerate(zip(gl, rl)):
            where = f"sample {i}" + (f" item {j}" if isinstance(r, list) else "")
            if a.shape != b.shape:
                return OutputCheck(False, problem=f"{where}: shape {list(a.shape)}, reference {list(b.shape)}")
            if b.dtype.kind in "US" or a.dtype.kind in "US":
                if a.dtype.kind != b.dtype.kind or not np.array_equal(a, b):
                    return OutputCheck(False, problem=f"{where}: {_short(a)} != reference {_short(b)}")
            elif b.dtype.kind in "iub" and a.dtype.kind in "iub":
                if not np.array_equal(a, b):
                    return OutputCheck(False, problem=f"{where}: {_short(a)} != reference {_short(b)}"
                                       if b.size <= 8 else f"{where}: integers differ from the reference "
                                       f"({int(np.sum(a != b))} of {b.size})")
            elif b.size:
                af, bf = a.astype(np.float64), b.astype(np.float64)
                fa, fb = np.isfinite(af), np.isfinite(bf)
                if not np.array_equal(fa, fb) or not np.array_equal(af[~fa], bf[~fb], equal_nan=True):
                    return OutputCheck(False, problem=f"{where}: its non-finite values (nan/inf) differ from the "
                                       "reference's")
                if not fb.any():
                    continue
                bf_f = bf[fb]
                rng = float(bf_f.max() - bf_f.min()) or max(1.0, float(np.abs(bf_f).max()))
                err = float(np.abs(af[fa] - bf_f).max()) / rng
                worst = max(worst, err)
    if worst > max_abs_rel:
        return OutputCheck(False, worst, problem=f"max |a-b|/range {worst:.3g} > {max_abs_rel:g}")
    return OutputCheck(True, worst)


def _short(a: np.ndarray) -> str:
    s = repr(a.tolist())
    return s if len(s) < 80 else s[:77] + "..."


def check_stages(graph: AppGraph, samples: Sequence[Any], root: Path,
                 model_compare: Callable[[StageSpec, str, list[Any], list[Any]], OutputCheck],
                 tolerance: Mapping[str, float], only: Iterable[str] | None = None) -> list[StageCheck]:
    """Each stage fed its recorded reference inputs, sample after sample (stateful stages reset first), its outputs
    against its recorded reference outputs. model_compare judges a model stage's output (the sub-bundle's tolerance)."""
    wanted = set(only) if only is not None else None
    graph.reset()
    checks = []
    for s in graph.stages:
        if wanted is not None and s.name not in wanted:
            continue
        got: dict[str, list[Any]] = {o: [] for o in s.outputs}
        ref: dict[str, list[Any]] = {o: [] for o in s.outputs}
        ms, n, error = 0.0, 0, None
        for smp in samples:
            files = smp.stages.get(s.name)
            if files is None:
                error = f"sample {smp.name} has no reference for this stage"
                break
            try:
                ins, outs = load_values(root / files["inputs"]), load_values(root / files["outputs"])
            except (OSError, ValueError) as exc:
                error = f"sample {smp.name}: its recorded values cannot be read: {type(exc).__name__}: {exc}"
                break
            t0 = time.perf_counter()
            try:
                res = graph.call(s, ins)
            except Exception as exc:  # noqa: BLE001 - one stage's failure is that stage's result, never a traceback
                error = f"sample {smp.name}: {type(exc).__name__}: {exc}"
                break
            ms += (time.perf_counter() - t0) * 1e3
            n += 1
            for o in s.outputs:
                got[o].append(res[o])
                ref[o].append(outs.get(o))
        outputs: dict[str, OutputCheck] = {}
        if error is None:
            for o in s.outputs:
                if any(r is None for r in ref[o]):
                    outputs[o] = OutputCheck(False, problem="no reference recorded")
                elif s.kind == "model":
                    outputs[o] = model_compare(s, o, got[o], ref[o])
                else:
                    outputs[o] = compare_step_values(got[o], ref[o], float(tolerance.get("max_abs_rel", 1e-3)))
        checks.append(StageCheck(s.name, s.kind if s.kind == "model" else str(s.step or "custom"), n, outputs,
                                 ms, error))
    graph.reset()
    return checks


def first_failure(checks: Sequence[StageCheck]) -> StageCheck | None:
    return next((c for c in checks if not c.ok), None)


# -- results as JSON -------------------------------------------------------------------------------------------
def jsonable(v: Any, digits: int = 3) -> Any:
    """An app value as JSON: strings as str, arrays as (rounded) nested lists, lists item by item."""
    if isinstance(v, (list, tuple)):
        return [jsonable(x, digits) for x in v]
    a = np.asarray(v)
    if a.dtype.kind == "U":
        return a.tolist()
    if a.dtype.kind == "S":
        return np.char.decode(a, "utf-8", "replace").tolist()
    if a.dtype.kind == "f":
        return np.round(a.astype(np.float64), digits).tolist()
    if a.dtype.kind in "iub":
        return a.tolist()
    raise AppError(f"cannot show a value of dtype {a.dtype}")


__all__ = ["AppGraph", "AppRun", "ModelRunner", "OutputCheck", "StageCheck", "StageTiming", "build_step",
           "check_stages", "compare_step_values", "first_failure", "jsonable", "load_custom"]

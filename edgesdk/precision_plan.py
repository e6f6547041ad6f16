"""convert's int8 decisions for an onnxruntime segment: the calibration method (tried, not assumed) and mixed
precision to a target (`convert --precision int8 --target cosine=0.99`).

The mechanics are edgesdk.quantize (choose_method, sensitivity, search); this module decides what they run on:

- the evaluation split: `--sample DIR` when given (every sample), else every 4th calibration sample, which is
  then left out of the calibration (never one image in both);
- the metric: `cosine` is the reference judge's worst cosine (edgesdk.runtime.reference.compare: per component
  where the output concatenates quantities) against the fp32 segment; a task metric (map50, top1, miou, cer) is
  edgesdk.evaluate's on the segment's outputs, which must then be the model's outputs;
- the result: the adapter's job options {"calibrate_method", "exclude_nodes"} and a report of every step.

The search runs on onnxruntime's QDQ model in-process (fast: one quantize + run per step), whatever the segment's
engine. For another engine that can keep named layers in float (an adapter with `int8_exclude`: MNN's
skip_quant_op_names, TFLite's selective quantization), the layers found are then confirmed on that engine's own
artifact (`confirm`): built, run on the evaluation split on the host, measured with the same metric; while it
misses, more layers of the ranking are kept (doubling), at most MAX_ENGINE_BUILDS builds. An engine that cannot
reach the target gives the segment to onnxruntime, whose search met it (a recorded fallback): nothing is shipped
below the target.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError, ModelError

#: A calibration set of at least this many samples is split to choose the method.
MIN_FOR_CHOICE = 8
#: Every HOLDOUT_EVERY-th calibration sample is held back (method choice; the eval split without --sample).
HOLDOUT_EVERY = 4
CALIB_METHODS = ("auto", "minmax", "entropy", "percentile")
#: A mixed-precision bundle's board check: the host's cosine on the reference input, less this.
TOLERANCE_MARGIN = 0.005
#: Sensitivity runs on at most this many evaluation samples (it keeps every fp32 tensor of each in memory).
SENSITIVITY_SAMPLES = 8
#: At most this many artifacts of the segment's own engine are built to confirm a target there.
MAX_ENGINE_BUILDS = 3


@dataclass(frozen=True)
class Int8Plan:
    """What convert decided for one segment's int8, and why (ConvertResult.quantization, the manifest notes)."""

    segment: str
    method: str
    method_how: str  # "forced (--calib-method)" | "chosen on N held-back calibration samples" | "default ..."
    method_scores: tuple[dict[str, Any], ...] = ()
    target: tuple[str, float] | None = None
    eval_source: str | None = None
    search: Any | None = None  # edgesdk.quantize.SearchResult
    ranking: tuple[dict[str, Any], ...] = ()  # the most sensitive layers first (top 20)
    reference_cosine: float | None = None  # the chosen model's worst-component cosine on the reference input
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())
    engine: str = "onnxruntime"  # the engine the kept layers were confirmed on
    confirm_steps: tuple[Any, ...] = ()  # edgesdk.quantize.SearchStep, measured on `engine`'s own artifacts
    final_kept: tuple[str, ...] | None = None  # what `engine` needed (None: the search's answer)

    @property
    def kept(self) -> tuple[str, ...]:
        if self.final_kept is not None:
            return self.final_kept
        return tuple(self.search.kept) if self.search is not None and self.search.reached else ()

    @property
    def metric_value(self) -> float | None:
        """The target metric of what is shipped: the confirming engine's, else the search's."""
        met = [s for s in self.confirm_steps if s.meets]
        if met:
            return float(met[-1].metric)
        return self.search.metric if self.search is not None else None

    def tolerance(self) -> Any:
        """The bundle's tolerance when a target chose the layers (None without one): the board must reproduce what
        the chosen model scores on the reference input on the host, less TOLERANCE_MARGIN, and a cosine target is
        the floor's ceiling (the target was met on the evaluation split, pooled; one reference image may score
        below it). The max error is not judged on its own then: the target is the user's criterion."""
        from edgesdk.runtime.manifest import Tolerance

        if self.target is None or self.reference_cosine is None:
            return None
        floor = max(0.0, math.floor((self.reference_cosine - TOLERANCE_MARGIN) * 1e4) / 1e4)
        if self.target[0] == "cosine":
            floor = min(self.target[1], floor)
        return Tolerance(max_abs_rel=1.0, cosine_min=floor)

    def options(self) -> dict[str, Any]:
        """The onnxruntime adapter's job options."""
        return {"calibrate_method": self.method, "exclude_nodes": list(self.kept)}

    def summary(self) -> str:
        s = f"segment {self.segment}: int8 calibration {self.method} ({self.method_how})"
        if self.method_scores:
            s += ": " + ", ".join(f"{m['method']} {m['score']:.5f}" if m.get("score") is not None else
                                  f"{m['method']} failed" for m in self.method_scores)
        if self.search is not None and self.target is not None:
            metric, value = self.target
            if self.search.reached:
                s += (f"; target {metric}={value:g} met with {len(self.kept)} layer(s) kept in float "
                      f"({metric} {self.metric_value:.5f}, {len(self.search.steps)} search step(s) on onnxruntime"
                      f"{f', {len(self.confirm_steps)} build(s) on {self.engine}' if self.confirm_steps else ''}"
                      f", on {self.eval_source})")
                tol = self.tolerance()
                if tol is not None:
                    s += (f"; the bundle's check (verify, smoke test): cosine >= {tol.cosine_min:g} per component "
                          f"(the reference input scores {self.reference_cosine:.5f} on the host)")
            else:
                s += f"; target {metric}={value:g} not reachable: {self.search.note}"
        elif self.target is not None and self.confirm_steps and self.confirm_steps[-1].meets:
            metric, value = self.target  # met on the engine's own build, no search needed (a vendor simulator)
            s += (f"; target {metric}={value:g} met with nothing kept in float ({metric} {self.metric_value:.5f} "
                  f"on {self.engine}, on {self.eval_source})") + "".join(f"; {n}" for n in self.notes)
        return s

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "method": self.method, "method_how": self.method_how,
                "method_scores": list(self.method_scores),
                "target": {"metric": self.target[0], "value": self.target[1]} if self.target else None,
                "eval": self.eval_source, "kept_in_float": list(self.kept),
                "search": self.search.to_dict() if self.search is not None else None,
                "sensitivity_top": list(self.ranking),
                "reference_cosine": self.reference_cosine, "seconds": round(self.seconds, 3), "notes": list(self.notes),
                "engine": self.engine, "engine_steps": [x.to_dict() for x in self.confirm_steps],
                "metric": self.metric_value}


def split(count: int, have_sample: bool) -> tuple[list[int], list[int]]:
    """(calibration indices, held-back indices) of a calibration set of `count` samples."""
    held = [i for i in range(count) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1] if count >= HOLDOUT_EVERY else []
    if have_sample or not held:
        return list(range(count)), held
    return [i for i in range(count) if i not in set(held)], held


def _judge(name: str, seg_onnx: Path, samples: Sequence[Mapping[str, Any]], task_ctx: Mapping[str, Any] | None
           ) -> tuple[Callable[[Sequence[Mapping[str, Any]]], float], list[str], bool]:
    """(judge(outputs per sample) -> value, the output names it reads, higher_is_better), against the fp32 segment's
    outputs on `samples` (computed once, here). The one judge of the search (onnxruntime) and of `confirm` (the
    segment's own engine)."""
    from edgesdk.evaluate import TARGET_METRICS
    from edgesdk.quantize import _fp32_outputs, _worst_cosine

    if name == "cosine":
        names, refs = _fp32_outputs(seg_onnx, samples)
        return (lambda got: _worst_cosine(names, got, refs)), names, True
    if task_ctx is None:
        raise InputError(f"--target {name}: a task metric needs the whole model in one CPU segment (its outputs are "
                         "the model's); use --target cosine=VALUE for this plan")
    from edgesdk.evaluate import TASK_METRIC, evaluate, plan_tasks

    outputs, post, input_hw, task = (task_ctx["outputs"], task_ctx["postprocess"], task_ctx["input_hw"],
                                     task_ctx.get("task"))
    plans, _ = plan_tasks(outputs, input_hw, post, "the postprocess", task)
    plans = [p for p in plans if TASK_METRIC[p.task] == name]
    if not plans:
        raise InputError(f"--target {name}: no output of this model is judged by {name} (its outputs: "
                         f"{[(o.name, list(o.shape)) for o in outputs]}); declare the decoder (a yolo postprocess) "
                         "or choose another metric")
    names, refs = _fp32_outputs(seg_onnx, samples)

    def judge(got: Sequence[Mapping[str, Any]]) -> float:
        res = evaluate(plans, list(got), refs, post, names)
        vals = [r.value for r in res]
        if any(v is None for v in vals):
            raise ModelError(f"--target {name}: the fp32 model gives nothing to judge {name} on the evaluation "
                             f"samples ({'; '.join(n for r in res for n in r.notes)})")
        return min(vals) if TARGET_METRICS[name] == "min" else max(vals)  # type: ignore[type-var]

    return judge, names, TARGET_METRICS[name] == "min"


def _metric(name: str, seg_onnx: Path, samples: Sequence[Mapping[str, Any]], task_ctx: Mapping[str, Any] | None
            ) -> tuple[Callable[[Path], float], Callable[[Sequence[Mapping[str, Any]]], float], bool]:
    """(metric(quantized onnx path) -> value on onnxruntime, the judge of outputs, higher_is_better)."""
    from edgesdk.quantize import _session

    judge, names, higher = _judge(name, seg_onnx, samples, task_ctx)

    def metric(q: Path) -> float:
        sess = _session(q)
        missing = [n for n in names if n not in {o.name for o in sess.get_outputs()}]
        if missing:
            raise ModelError(f"{q} has no output(s) {missing} of {seg_onnx}")
        return judge([dict(zip(names, sess.run(names, dict(smp)))) for smp in samples])

    return metric, judge, higher


def latency_estimate(flops: Mapping[str, float], int8_ops_per_s: float, fp32_flops_per_s: float
                     ) -> Callable[[Sequence[str]], float]:
    """estimate(kept) -> ms: the segment's compute at the board's int8 peak, the kept layers' at its fp32 peak (the
    same peak-figure model as inspect's estimate, compute only: what keeping layers in float costs)."""
    total = float(sum(flops.values()))

    def estimate(kept: Sequence[str]) -> float:
        fk = float(sum(flops.get(n, 0.0) for n in kept))
        return 1e3 * ((total - fk) / int8_ops_per_s + fk / fp32_flops_per_s)

    return estimate


def plan_int8(sid: str, seg_onnx: Path, calib_npz: Path, eval_npz: Path | None, eval_source: str | None,
              method: str, target: tuple[str, float] | None, task_ctx: Mapping[str, Any] | None,
              say: Callable[[str], None], ref_feed: Mapping[str, Any] | None = None,
              ref_expected: Mapping[str, Any] | None = None,
              estimate: Callable[[Sequence[str]], float] | None = None, scheme: str | None = None) -> Int8Plan:
    """The calibration method and the layers kept in float for one onnxruntime int8 segment.

    calib_npz: the segment's calibration arrays (already without the held-back samples when those are the eval
    split); eval_npz: the evaluation split (for the target). Raises ModelError when the target is not reachable
    (nothing is shipped below it)."""
    import numpy as np

    from edgesdk.quantize import choose_method, load_samples, search, sensitivity

    t0 = time.perf_counter()
    with np.load(calib_npz, allow_pickle=False) as z:
        count = len(z[z.files[0]])
    scores: tuple[dict[str, Any], ...] = ()
    if scheme is not None:  # an accelerator segment: its compiler's calibration, simulated (edgesdk.simulate)
        method, how = "minmax", f"the {scheme} scheme's own (host int8 simulation)"
    elif method != "auto":
        how = "forced (--calib-method)"
    elif count >= MIN_FOR_CHOICE:
        _, held = split(count, True)
        say(f"{sid}: choosing the int8 calibration method on {len(held)} held-back calibration samples")
        method, tried = choose_method(seg_onnx, calib_npz, held)
        scores = tuple(tried)
        how = f"best worst-component cosine on {len(held)} held-back calibration samples"
    else:
        method = "minmax"
        how = f"default: {count} calibration samples are too few to hold some back (at least {MIN_FOR_CHOICE})"
    if target is None:
        return Int8Plan(sid, method, how, scores, seconds=time.perf_counter() - t0)
    if eval_npz is None:
        raise InputError(f"--target needs evaluation samples: --sample DIR, or at least {HOLDOUT_EVERY} calibration "
                         f"samples (it has {count})")
    samples = load_samples(eval_npz)
    metric, _judge_outputs, higher = _metric(target[0], seg_onnx, samples, task_ctx)
    say(f"{sid}: measuring each layer's int8 sensitivity on {min(len(samples), SENSITIVITY_SAMPLES)} evaluation "
        "sample(s)")
    ranking = sensitivity(seg_onnx, calib_npz, samples[:SENSITIVITY_SAMPLES], method=method, scheme=scheme)
    say(f"{sid}: searching for the fewest layers to keep in float ({target[0]} >= {target[1]:g})"
        if higher else f"{sid}: searching for the fewest layers to keep in float ({target[0]} <= {target[1]:g})")
    chosen = calib_npz.with_name(f"{sid}_mixed_chosen.onnx")
    res = search(seg_onnx, calib_npz, ranking, metric, target[1], higher_is_better=higher, method=method, out=chosen,
                 estimate=estimate, scheme=scheme)
    ref_cos = None
    if res.reached and ref_feed is not None and ref_expected is not None:
        ref_cos = _reference_cosine(chosen, ref_feed, ref_expected)
    plan = Int8Plan(sid, method, how, scores, target, eval_source, res, tuple(x.to_dict() for x in ranking[:20]),
                    ref_cos, time.perf_counter() - t0)
    if not res.reached:
        steps = "; ".join(f"{len(s.kept)} kept: {target[0]} {s.metric:.5f}" for s in res.steps)
        raise ModelError(f"segment {sid}: int8 cannot meet --target {target[0]}={target[1]:g} on {eval_source}: "
                         f"{res.note} (steps: {steps}); nothing was written. Lower the target, or convert as fp16/"
                         "fp32")
    return plan


def confirm(plan: Int8Plan, engine: str, seg_onnx: Path, eval_npz: Path, task_ctx: Mapping[str, Any] | None,
            build: Callable[[tuple[str, ...]], tuple[Sequence[Mapping[str, Any]], int]],
            say: Callable[[str], None], estimate: Callable[[Sequence[str]], float] | None = None,
            max_builds: int = MAX_ENGINE_BUILDS) -> Int8Plan:
    """The search's layers confirmed on `engine`'s own artifact (see the module docstring).

    build(kept) -> (the artifact's outputs on every evaluation sample, artifact bytes); it raises
    edgesdk.errors.EdgeSDKError when the engine cannot build or run it (then the plan is not confirmed: the caller
    falls back). Returns the plan with the engine's steps; raises ModelError when `engine` misses the target within
    `max_builds` builds or the ranking runs out (the caller gives the segment to onnxruntime)."""
    from edgesdk.quantize import SearchStep, _meets, load_samples

    if plan.target is None or plan.search is None or not plan.search.reached:
        raise ValueError("confirm needs a plan whose search reached its target")
    metric, value = plan.target
    samples = load_samples(eval_npz)
    judge, _names, higher = _judge(metric, seg_onnx, samples, task_ctx)
    ranking = [r["node"] for r in plan.ranking]
    kept = list(plan.search.kept)
    # the whole ranking is longer than the report's top 20: the search's own order first, then the rest
    order = list(dict.fromkeys([*kept, *ranking]))
    steps: list[Any] = []
    while True:
        say(f"{plan.segment}: building on {engine} with {len(kept)} layer(s) kept in float")
        got, size = build(tuple(kept))
        v = float(judge(got))
        ok = _meets(v, value, higher)
        steps.append(SearchStep(tuple(kept), v, int(size), ok, estimate(kept) if estimate is not None else None,
                                engine))
        if ok:
            from dataclasses import replace

            return replace(plan, engine=engine, confirm_steps=tuple(steps), final_kept=tuple(kept))
        grow = max(1, len(kept))
        more = [n for n in order if n not in kept][:grow]
        if not more or len(steps) >= max_builds:
            tried = "; ".join(f"{len(x.kept)} kept: {metric} {x.metric:.5f}" for x in steps)
            raise ModelError(f"segment {plan.segment}: {engine} misses --target {metric}={value:g} with the layers "
                             f"onnxruntime needed and more ({tried})")
        kept = [*kept, *more]


def _reference_cosine(model: Path, feed: Mapping[str, Any], expected: Mapping[str, Any]) -> float:
    """The chosen model's worst-component cosine on the reference input (the judge quantize's metrics use)."""
    from edgesdk.quantize import _session, _worst_cosine

    names = list(expected)
    got = dict(zip(names, _session(model).run(names, dict(feed))))
    return _worst_cosine(names, [got], [expected])


def eval_arrays(sample_arrays: Mapping[str, Any] | None, calib_arrays: Mapping[str, Any], held: Sequence[int]
                ) -> tuple[dict[str, Any] | None, str]:
    """The model-input arrays of the evaluation split and what they are (for the report)."""
    if sample_arrays is not None:
        n = len(next(iter(sample_arrays.values())))
        return dict(sample_arrays), f"{n} --sample input(s)"
    if not held:
        return None, "no evaluation samples"
    return {k: v[list(held)] for k, v in calib_arrays.items()}, f"{len(held)} held-back calibration sample(s)"


def write_npz(path: Path, arrays: Mapping[str, Any]) -> Path:
    import numpy as np

    np.savez(path, **dict(arrays))
    return path


def check_options(precision: str, engine: str | None, target: str | None, calib_method: str | None
                  ) -> tuple[tuple[str, float] | None, str | None]:
    """Validate --target / --calib-method before anything runs (exit 2)."""
    from edgesdk.evaluate import parse_target

    if calib_method is not None and calib_method not in CALIB_METHODS:
        raise InputError(f"--calib-method {calib_method!r}: choose one of {', '.join(CALIB_METHODS)}")
    if (target is not None or calib_method is not None) and precision != "int8":
        raise InputError(f"--target and --calib-method apply to --precision int8, not {precision}")
    if calib_method not in (None, "auto", "minmax") and engine not in (None, "onnxruntime"):
        raise InputError(f"--calib-method {calib_method} on --engine {engine}: {calib_method} is onnxruntime's "
                         "calibration; use --engine onnxruntime or leave --engine out")
    if target is not None and engine not in (None, "onnxruntime") and not _keeps_layers(engine):
        raise InputError(f"--target on --engine {engine}: {engine} cannot keep named layers in float (engines that "
                         f"can: {', '.join(_engines_keeping_layers())}); use one of those or leave --engine out")
    return (parse_target(target) if target is not None else None), calib_method


#: The job option that selects an engine's own int8 calibration (its adapter's `int8_methods`).
ENGINE_METHOD_OPTION = {"mnn": "mnn_feature_method", "tflite": "tflite_quant_type"}


def engine_methods(engine: str, count: int, sample_shape: Sequence[int], keep_layers: bool = False
                   ) -> tuple[str, ...]:
    """The calibration methods of `engine` worth trying on `count` samples of `sample_shape` (without the batch):
    the adapter's `int8_methods` (with `keep_layers`, a --target's, only those that can keep layers in float:
    `int8_exclude_methods`), less MNN's ADMM above its size limit (ADMM optimises over the whole set at once:
    a 224x224 MobileNetV3 with 64 images ran over 9 minutes; the adapter uses KL there too)."""
    from edgesdk.toolchains.adapters import adapter_class

    cls = adapter_class(engine)
    methods = tuple(getattr(cls, "int8_methods", ()))
    if keep_layers:
        methods = tuple(m for m in methods if m in getattr(cls, "int8_exclude_methods", methods))
    if engine == "mnn":
        from edgesdk.toolchains.adapters.mnn import ADMM_MAX_ELEMENTS

        if count * math.prod(int(d) for d in sample_shape) > ADMM_MAX_ELEMENTS:
            methods = tuple(m for m in methods if m != "ADMM")
    return methods


def choose_engine_method(sid: str, engine: str, methods: Sequence[str], seg_onnx: Path, held_npz: Path,
                         build: Callable[[str], Sequence[Mapping[str, Any]]], say: Callable[[str], None]
                         ) -> tuple[str | None, list[dict[str, Any]]]:
    """The engine's own calibration method that scores best on held-back samples: each of `methods` is built
    (build(method) -> the artifact's outputs on the held-back samples, calibrated on the others) and scored by the
    reference judge's worst per-component cosine against the fp32 segment. A method whose build or run fails scores
    None with its reason. Returns (the best, ties to the one tried first; None when none worked, [{method, score,
    error}])."""
    from edgesdk.errors import EdgeSDKError
    from edgesdk.quantize import load_samples

    samples = load_samples(held_npz)
    judge, _names, _higher = _judge("cosine", seg_onnx, samples, None)
    scores: list[dict[str, Any]] = []
    for m in methods:
        say(f"{sid}: trying {engine} int8 calibration {m} on {len(samples)} held-back calibration samples")
        try:
            v = float(judge(build(m)))
            scores.append({"method": m, "score": None if math.isnan(v) else v})
        except EdgeSDKError as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            scores.append({"method": m, "score": None, "error": first[:300]})
    ok = [x for x in scores if x["score"] is not None]
    if not ok:
        return None, scores
    return str(max(ok, key=lambda x: x["score"])["method"]), scores


def _keeps_layers(engine: str) -> bool:
    from edgesdk.toolchains.adapters import adapter_class

    try:
        return bool(getattr(adapter_class(engine), "int8_exclude", False))
    except Exception:  # noqa: BLE001 - an unknown engine is choose_engine's error (with did-you-mean)
        return True


def _engines_keeping_layers() -> list[str]:
    from edgesdk.toolchains.adapters import ADAPTERS, adapter_class

    return sorted(k for k in ADAPTERS if getattr(adapter_class(k), "int8_exclude", False))


__all__ = ["CALIB_METHODS", "ENGINE_METHOD_OPTION", "HOLDOUT_EVERY", "MAX_ENGINE_BUILDS", "MIN_FOR_CHOICE", "Int8Plan",
           "check_options", "choose_engine_method", "confirm", "engine_methods", "eval_arrays", "latency_estimate",
           "plan_int8", "split", "write_npz"]

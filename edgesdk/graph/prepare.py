"""Graph preparation: fold what a fixed input shape makes constant, before the support check and the partition.

Exporters leave work for runtime that is constant once the input shape is fixed: shape subgraphs
(Shape -> Gather -> Range ... for a YOLO head's anchors, Shape -> Gather -> Mul -> Concat for a Reshape
target), Identity and Dropout nodes, Conv+BatchNorm pairs, PaddlePaddle's duplicated constants. Left in, they
leave tensors without a static shape at segment boundaries, ops the accelerators refuse, and needless cuts.

The passes are onnxslim's (a maintained library; ultralytics' exporter runs it): constant folding, graph
fusion, dead-node elimination, common-subexpression elimination, weight tying. Nothing here rewrites the graph
by hand. Every preparation is proven: the prepared model runs on onnxruntime against the original on the same
input, and a result outside ``TOLERANCE`` is not used. Then each pass is tried alone-disabled to name the one
that changed the outputs; the model goes on without that pass (or unprepared), with a warning naming it.

Prepared models are cached by the hash of the shape-fixed model and the onnxslim version.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from edgesdk.errors import EnvironmentProblem, ModelError
from edgesdk.graph.load import Model, load_model, load_weights
from edgesdk.runtime.reference import cosine

#: onnxslim's passes, in its own names (onnxslim.core.OptimizationSettings).
PASSES = ("constant_folding", "graph_fusion", "dead_node_elimination", "subexpression_elimination", "weight_tying")
#: Bumped when what `prepare` does changes: part of the cache key.
PREPARE_VERSION = 1


@dataclass(frozen=True)
class Tolerance:
    """The prepared model must agree with the original: per output, max |a-b| <= atol + rtol * max|a|, cosine."""

    atol: float = 1e-4
    rtol: float = 1e-4
    cosine_min: float = 0.99999


TOLERANCE = Tolerance()


@dataclass(frozen=True)
class PrepareReport:
    """What preparation did to a model, and the proof that outputs did not change."""

    tool: str  # "onnxslim 0.1.98"
    applied: bool
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    passes: tuple[str, ...]  # the passes used
    skipped_passes: tuple[str, ...] = ()  # passes left out because they changed the outputs
    max_abs: float | None = None  # worst output, prepared vs original, on the check input
    cosine: float | None = None
    seconds: float = 0.0
    cached: bool = False
    reason: str | None = None  # why nothing was applied (--no-prepare, no change, every attempt failed)
    warnings: tuple[str, ...] = ()
    input_source: str = "seeded uniform [0, 1)"

    @property
    def changed_ops(self) -> dict[str, tuple[int, int]]:
        """op type -> (before, after), for the op types whose count changed."""
        keys = sorted(set(self.ops_before) | set(self.ops_after))
        return {k: (self.ops_before.get(k, 0), self.ops_after.get(k, 0)) for k in keys
                if self.ops_before.get(k, 0) != self.ops_after.get(k, 0)}

    def summary(self) -> str:
        if not self.applied:
            return f"graph preparation not applied: {self.reason}"
        ops = ", ".join(f"{k} {a}->{b}" for k, (a, b) in list(self.changed_ops.items())[:8])
        extra = f", without {', '.join(self.skipped_passes)}" if self.skipped_passes else ""
        return (f"prepared with {self.tool}{extra}: {self.nodes_before} -> {self.nodes_after} nodes ({ops}); "
                f"outputs unchanged on the check input (max abs diff {self.max_abs:.3g}, cosine {self.cosine:.6f})"
                + (" [cached]" if self.cached else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "applied": self.applied, "nodes_before": self.nodes_before,
                "nodes_after": self.nodes_after, "changed_ops": {k: list(v) for k, v in self.changed_ops.items()},
                "passes": list(self.passes), "skipped_passes": list(self.skipped_passes),
                "max_abs": self.max_abs, "cosine": self.cosine, "seconds": round(self.seconds, 3),
                "cached": self.cached, "reason": self.reason, "warnings": list(self.warnings),
                "input_source": self.input_source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], ops_before: dict[str, int], ops_after: dict[str, int]) -> PrepareReport:
        return cls(d["tool"], d["applied"], d["nodes_before"], d["nodes_after"], ops_before, ops_after,
                   tuple(d["passes"]), tuple(d["skipped_passes"]), d["max_abs"], d["cosine"], d["seconds"], True,
                   d["reason"], tuple(d["warnings"]), d.get("input_source", ""))


@dataclass(frozen=True)
class Prepared:
    """A model ready for the support check: the prepared one (or the original), and what was done."""

    model: Model
    original: Model
    report: PrepareReport
    notes: tuple[str, ...] = field(default=())


def _tool() -> tuple[Any, str]:
    try:
        import onnxslim
    except ImportError as exc:
        raise EnvironmentProblem("graph preparation needs onnxslim",
                                 fix="pip install 'edgesdk[host]'  (or pass --no-prepare)") from exc
    return onnxslim, f"onnxslim {getattr(onnxslim, '__version__', '?')}"


def _ops(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in proto.graph.node))


def check_feed(model: Model, seed: int = 0) -> dict[str, Any]:
    """A deterministic input for the equivalence check: uniform [0, 1) floats (image-like), small integers."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for name in model.inputs:
        t = model.tensors[name]
        shape = tuple(int(d) for d in t.shape or ())
        if t.dtype.startswith("float"):
            feed[name] = rng.uniform(0.0, 1.0, size=shape).astype(t.dtype)
        elif t.dtype == "bool":
            feed[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feed[name] = rng.integers(0, 4, size=shape).astype(t.dtype)
    return feed


def _run(proto: onnx.ModelProto, feed: Mapping[str, Any], outputs: Sequence[str]) -> list[Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(list(outputs), {k: v for k, v in feed.items() if k in names})


def compare_outputs(ref: Sequence[Any], got: Sequence[Any], tol: Tolerance = TOLERANCE) -> tuple[bool, float, float]:
    """(ok, worst max-abs diff, worst cosine) over the outputs."""
    import numpy as np

    worst_abs, worst_cos, ok = 0.0, 1.0, True
    for a, b in zip(ref, got):
        a = np.asarray(a)
        b = np.asarray(b)
        if a.shape != b.shape:
            return False, float("inf"), 0.0
        if a.dtype.kind not in "fc":
            eq = bool(np.array_equal(a, b))
            ok &= eq
            worst_abs = max(worst_abs, 0.0 if eq else float("inf"))
            continue
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
            same = bool(np.array_equal(np.isnan(a64), np.isnan(b64)))
            fin = np.isfinite(a64) & np.isfinite(b64)
            a64, b64 = a64[fin], b64[fin]
            ok &= same
        if a64.size == 0:
            continue
        d = float(np.max(np.abs(a64 - b64)))
        cos = cosine(a64, b64)
        worst_abs, worst_cos = max(worst_abs, d), min(worst_cos, cos)
        scale = float(np.max(np.abs(a64)))
        ok &= d <= tol.atol + tol.rtol * scale or (cos >= tol.cosine_min and d <= 1e-3 * max(1.0, scale))
    return ok, worst_abs, worst_cos


def _slim(onnxslim: Any, proto: onnx.ModelProto, skip: Sequence[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    sink = io.StringIO()
    # onnxslim logs and prints progress; library code never prints: keep it out of the user's stdout
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        out = onnxslim.slim(m, skip_optimizations=list(skip) or None)
    if not isinstance(out, onnx.ModelProto):
        raise RuntimeError("onnxslim returned no model")
    return out


def _cache_dir() -> Path:
    from edgesdk.paths import home

    return home() / "prepared"


def _cache_key(proto: onnx.ModelProto, tool: str) -> str:
    h = hashlib.sha256()
    h.update(f"{tool}|prepare-v{PREPARE_VERSION}|".encode())
    h.update(proto.SerializeToString(deterministic=True))
    return h.hexdigest()[:32]


def _save_atomic(proto: onnx.ModelProto, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        weights = sum(len(t.raw_data) for t in proto.graph.initializer)
        if weights > 1_500_000_000:
            raise ModelError(f"{dest.name}: {weights / 2**30:.1f} GiB of weights; preparation keeps models under "
                             "protobuf's limit only: pass --no-prepare")
        onnx.save_model(proto, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json_atomic(doc: Mapping[str, Any], dest: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, dest)


def _not_applied(model: Model, tool: str, reason: str, seconds: float = 0.0,
                 warnings: Sequence[str] = ()) -> PrepareReport:
    ops = _ops(model.proto)
    n = len(model.nodes)
    return PrepareReport(tool, False, n, n, ops, ops, (), (), None, None, seconds, False, reason, tuple(warnings))


def prepare(model: Model, enabled: bool = True, feed: Mapping[str, Any] | None = None,
            input_source: str | None = None, cache: bool = True, tolerance: Tolerance = TOLERANCE) -> Prepared:
    """Prepare a loaded (shape-fixed) model; returns the model to analyse and the report.

    `feed` is the input the equivalence check runs on (the bundle's reference input in convert); None is a
    seeded uniform [0, 1) input. Never raises for a pass that fails or changes outputs: the original model
    goes on, and the report says why.
    """
    if not enabled:
        return Prepared(model, model, _not_applied(model, "onnxslim", "--no-prepare"), model.notes)
    onnxslim, tool = _tool()
    t0 = time.perf_counter()
    full = load_weights(model)
    key = _cache_key(full, tool)
    cdir = _cache_dir() / key
    cached_model, cached_doc = cdir / f"{model.name}.onnx", cdir / "report.json"
    if cache and cached_doc.is_file():
        try:
            doc = json.loads(cached_doc.read_text(encoding="utf-8"))
            if doc.get("applied") and cached_model.is_file():
                pm = load_model(cached_model)
                rep = PrepareReport.from_dict(doc, _ops(model.proto), _ops(pm.proto))
                if feed is not None:  # prove it again on this input (the bundle's reference input)
                    ok, d, c = compare_outputs(_run(full, feed, model.outputs),
                                               _run(load_weights(pm), feed, model.outputs), tolerance)
                    if not ok:
                        w = (f"the prepared graph differs from the original on the given input (max abs diff "
                             f"{d:.3g}, cosine {c:.6f}); the original graph goes on unprepared")
                        return Prepared(model, model, _not_applied(model, tool, w, time.perf_counter() - t0, [w]),
                                        model.notes)
                    rep = replace(rep, max_abs=d, cosine=c, input_source=input_source or "given input")
                return Prepared(pm, model, rep, model.notes)
            if not doc.get("applied"):
                ops = _ops(model.proto)
                return Prepared(model, model, PrepareReport.from_dict(doc, ops, ops), model.notes)
        except (OSError, ValueError, KeyError, TypeError, ModelError):
            pass  # a stale or damaged cache entry: prepare again
    if feed is None:
        feed = check_feed(model)
        input_source = input_source or "seeded uniform [0, 1)"
    try:
        ref = _run(full, feed, model.outputs)
    except Exception as exc:  # onnxruntime cannot run the original: nothing to prove against
        return Prepared(model, model, _not_applied(
            model, tool, f"onnxruntime cannot run the original model ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); left as it is",
            time.perf_counter() - t0), model.notes)

    def attempt(skip: Sequence[str]) -> tuple[onnx.ModelProto | None, float, float, str | None]:
        try:
            out = _slim(onnxslim, full, skip)
            got = _run(out, feed, model.outputs)
        except Exception as exc:  # onnxslim / onnxruntime raise many types; the pass is not used either way
            msg = str(exc).strip().splitlines()
            return None, float("inf"), 0.0, f"{type(exc).__name__}: {msg[0][:200] if msg else ''}"
        ok, d, c = compare_outputs(ref, got, tolerance)
        return (out if ok else None), d, c, None if ok else f"max abs diff {d:.3g}, cosine {c:.6f}"

    warnings: list[str] = []
    skipped: tuple[str, ...] = ()
    out, d, c, why = attempt(())
    if out is None:
        # find the pass responsible: disable one at a time, keep the first configuration that holds
        for p in PASSES:
            o2, d2, c2, _ = attempt((p,))
            if o2 is not None:
                out, d, c, skipped = o2, d2, c2, (p,)
                warnings.append(f"onnxslim pass {p!r} changed the outputs ({why}); prepared without it")
                break
        if out is None:
            warnings.append(f"onnxslim changed the outputs or failed ({why}) with every single pass left out; "
                            "the original graph goes on unprepared")
            rep = _not_applied(model, tool, f"every preparation attempt failed the equivalence check ({why})",
                               time.perf_counter() - t0, warnings)
            _remember(cache, cdir, cached_doc, rep)
            return Prepared(model, model, rep, model.notes)
    if len(out.graph.node) == len(full.graph.node) and _ops(out) == _ops(full):
        rep = _not_applied(model, tool, "nothing to fold", time.perf_counter() - t0, warnings)
        _remember(cache, cdir, cached_doc, rep)
        return Prepared(model, model, rep, model.notes)
    out.metadata_props.extend([onnx.StringStringEntryProto(key="edgesdk.prepared", value=tool)])
    try:
        if cache:
            _save_atomic(out, cached_model)
            pm = load_model(cached_model)
        else:
            with tempfile.TemporaryDirectory(prefix="edgesdk-prepare-") as td:
                _save_atomic(out, Path(td) / f"{model.name}.onnx")
                pm = load_model(Path(td) / f"{model.name}.onnx")
                pm.path = None
    except ModelError as exc:
        warnings.append(f"the prepared graph does not load ({exc}); the original graph goes on unprepared")
        rep = _not_applied(model, tool, "the prepared graph did not load", time.perf_counter() - t0, warnings)
        return Prepared(model, model, rep, model.notes)
    rep = PrepareReport(tool, True, len(model.nodes), len(pm.nodes), _ops(model.proto), _ops(pm.proto),
                        tuple(p for p in PASSES if p not in skipped), skipped, d, c, time.perf_counter() - t0,
                        False, None, tuple(warnings), input_source or "given input")
    _remember(cache, cdir, cached_doc, rep)
    return Prepared(pm, model, rep, model.notes)


def _remember(cache: bool, cdir: Path, doc_path: Path, rep: PrepareReport) -> None:
    if not cache:
        return
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(rep.to_dict(), doc_path)
    except OSError:
        pass  # the cache is an optimisation


__all__ = ["PASSES", "TOLERANCE", "PrepareReport", "Prepared", "Tolerance", "check_feed", "compare_outputs", "prepare"]

"""Session: runs a bundle's partition plan, each segment on its engine, with explicit fallback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime import engines as _engines
from edgesdk.runtime.errors import BundleError, EngineFailure, EngineUnavailable, InputMismatch
from edgesdk.runtime.fallback import FALLBACKS, check_fallback, resolve_fallback  # noqa: F401 - FALLBACKS: re-export
from edgesdk.runtime.manifest import QuantParams, Segment, TensorSpec, load_manifest
from edgesdk.runtime.results import EngineUse, Prediction, Timings

EngineChoice = str | tuple[str, Mapping[str, Any]]
#: Seconds a guarded load (subprocess) may take before it counts as hung.
GUARD_TIMEOUT = 120.0


def normalize_engines(engines: Iterable[EngineChoice] | None) -> dict[str, dict[str, Any]] | None:
    """["ncnn", ("mnn", {"threads": 4})] -> {"ncnn": {}, "mnn": {"threads": 4}}, checked once, up front."""
    if engines is None:
        return None
    if isinstance(engines, (str, tuple)):
        engines = [engines]  # type: ignore[list-item]
    out: dict[str, dict[str, Any]] = {}
    for e in engines:
        if isinstance(e, str):
            name, opts = e, {}
        elif isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], Mapping):
            name, opts = e[0], dict(e[1])
        else:
            raise InputMismatch(f"engines: expected a name or (name, options), got {e!r}")
        if name not in _engines.REGISTRY:
            close = [k for k in _engines.REGISTRY if k.startswith(name[:2].lower())]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputMismatch(f"engines: unknown engine {name!r} (known: {sorted(_engines.REGISTRY)}){hint}")
        if name in out:
            raise InputMismatch(f"engines: {name!r} is listed twice")
        out[name] = opts
    return out


def engine_choices(manifest: Any, engines: Sequence[str] | None, threads: int) -> list[EngineChoice] | None:
    """The `engines` of a Session from the CLI's --engine/--threads: None (the bundle's own) when neither is given;
    with --threads alone, every engine the bundle's segments (and their CPU versions) use, at that many threads."""
    if not engines and not threads:
        return None
    segs = manifest.segments
    names = list(engines) if engines else sorted({s.engine for s in segs}
                                                   | {s.cpu_version.engine for s in segs if s.cpu_version})
    return [(n, {"threads": threads}) if threads else n for n in names]


# -- tensor conversion at segment boundaries ---------------------------------------------------
def _to_last(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim), 1)  # NCHW -> NHWC


def _to_first(ndim: int) -> tuple[int, ...]:
    return (0, ndim - 1, *range(1, ndim - 1))  # NHWC -> NCHW


def _nhwc(spec: TensorSpec) -> bool:
    return spec.layout == "NHWC" and len(spec.shape) >= 3


def engine_spec(spec: TensorSpec) -> TensorSpec:
    """The tensor as the engine sees it: its layout's shape, its quantized dtype."""
    shape = tuple(spec.shape[i] for i in _to_last(len(spec.shape))) if _nhwc(spec) else spec.shape
    dtype = spec.quant.dtype if spec.quant else spec.dtype
    return replace(spec, shape=shape, dtype=dtype)


def quantize(x: np.ndarray, q: QuantParams) -> np.ndarray:
    info = np.iinfo(q.dtype)
    return np.clip(np.rint(x / q.scale) + q.zero_point, info.min, info.max).astype(q.dtype)


def dequantize(x: np.ndarray, q: QuantParams, dtype: str = "float32") -> np.ndarray:
    return ((x.astype(np.float32) - q.zero_point) * np.float32(q.scale)).astype(dtype, copy=False)


def _in_converter(spec: TensorSpec) -> Callable[[np.ndarray], np.ndarray] | None:
    """Model-side array -> engine-side array; None when they are the same."""
    nhwc, q = _nhwc(spec), spec.quant
    if not nhwc and q is None:
        return None
    perm = _to_last(len(spec.shape))

    def conv(x: np.ndarray) -> np.ndarray:
        if nhwc:
            x = x.transpose(perm)  # a view: engines copy into their own buffers anyway
        return quantize(x, q) if q is not None else x

    return conv


def _out_converter(spec: TensorSpec) -> Callable[[np.ndarray], np.ndarray]:
    nhwc, q, dtype = _nhwc(spec), spec.quant, np.dtype(spec.dtype)
    perm = _to_first(len(spec.shape))
    eshape = engine_spec(spec).shape

    def conv(x: np.ndarray) -> np.ndarray:
        if x.shape != eshape:
            if x.size != int(np.prod(eshape)):
                raise EngineFailure(f"output {spec.name!r}: the engine returned shape {x.shape}, the manifest says "
                                    f"{eshape}")
            x = x.reshape(eshape)
        if q is not None:
            x = dequantize(x, q, spec.dtype)
        if nhwc:
            x = x.transpose(perm)  # a view of the engine's fresh output array: no copy
        return x if x.dtype == dtype else x.astype(dtype)

    return conv


@dataclass
class _Stage:
    segment: Segment
    engine: _engines.Engine
    use: EngineUse
    ins: list[tuple[str, str, Callable[[np.ndarray], np.ndarray] | None]]  # model name, engine name, conv
    outs: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]


class Session:
    """Runs a bundle on this machine.

    engines: None (the bundle's engines) or a preference list, each a name or (name, options):
        only the listed engines may run, with these options over the bundle's.
    fallback: "error" (default): a missing engine raises EngineUnavailable with the install fix.
        "cpu": a segment whose engine is missing runs its CPU version, when the manifest carries
        one; `engines_used` records it. Without a CPU version it is still an error.
    guard_load: load crash-prone engines (ncnn, MNN) in a subprocess first, so that a malformed
        model file ends as EngineFailure instead of killing the caller. None: for those engines.
    use_tuning: with engines=None, apply the release's tuning.json (written by `edgesdk tune` into the
        bundle directory; edgesdk.runtime.profiling.tuned_engines) when it is there and made for this
        bundle. `tuning` is then the applied document (None otherwise).
    """

    def __init__(self, bundle_dir: str | Path, engines: Iterable[EngineChoice] | None = None,
                 fallback: str = "error", *, verify: bool = True, guard_load: bool | None = None,
                 use_tuning: bool = True) -> None:
        fallback = check_fallback(fallback)
        self._stages: list[_Stage] = []
        self._closed = False
        self._pre: Any = None
        self._post: Any = None
        self.bundle_dir = Path(bundle_dir)
        self._allowed = normalize_engines(engines)
        self._fallback = fallback
        self._guard = guard_load
        self.tuning: dict[str, Any] | None = None
        self.manifest = load_manifest(self.bundle_dir, verify=verify)
        m = self.manifest
        if engines is None and use_tuning:
            from edgesdk.runtime import profiling

            t = profiling.load_tuning(self.bundle_dir)
            # a stale file is not applied; one listed in the manifest records the id of the bundle it measured
            if t is not None and t.get("bundle_id") in (None, "", m.bundle_id, m.untuned_id()):
                self._allowed = normalize_engines(profiling.tuned_engines(self.bundle_dir))
                self.tuning = t
        self._in_specs = {t.name: t for t in m.inputs}
        self._out_names = [t.name for t in m.outputs]
        try:
            for seg in m.segments:
                self._stages.append(self._load_segment(seg))
        except BaseException:
            self.close()
            raise

    # -- loading -------------------------------------------------------------------------------
    def _load_segment(self, seg: Segment) -> _Stage:
        planned = seg.engine
        try:
            if self._allowed is not None and planned not in self._allowed:
                raise EngineUnavailable(planned, f"add {planned!r} to engines=, or use fallback='cpu'",
                                        f"not in engines={list(self._allowed)}")
            return self._build(seg, planned, seg.files, seg.inputs, seg.outputs, seg.options, None)
        except EngineUnavailable as exc:
            # the one fallback rule (edgesdk.runtime.fallback): refused, or the segment's CPU version
            why = _why(exc)
            (route,) = resolve_fallback([seg], self._fallback, missing=lambda s: why, allowed=self._allowed,
                                        fix=exc.fix)
            cv = route.cpu_version
            try:
                return self._build(seg, cv.engine, cv.files, cv.inputs or _plain(seg.inputs),
                                   cv.outputs or _plain(seg.outputs), {}, route.reason)
            except EngineUnavailable as exc2:
                raise EngineUnavailable(planned, exc.fix, f"and its CPU version's engine is missing too: "
                                        f"{exc2.engine}: {_why(exc2)} (fix: {exc2.fix})") from exc2

    def _build(self, seg: Segment, engine: str, files: Mapping[str, str], inputs: tuple[TensorSpec, ...],
               outputs: tuple[TensorSpec, ...], options: Mapping[str, Any], fallback_reason: str | None) -> _Stage:
        cls = _engines.require(engine)
        opts = {**options, **((self._allowed or {}).get(engine, {}))}
        paths = {role: self.bundle_dir / rel for role, rel in files.items()}
        e_in, e_out = tuple(engine_spec(t) for t in inputs), tuple(engine_spec(t) for t in outputs)
        if self._guard or (self._guard is None and cls.crash_prone):
            guarded_load(engine, paths, e_in, e_out, opts)
        inst = cls()
        try:
            inst.load(paths, e_in, e_out, opts)
        except (EngineFailure, EngineUnavailable):
            inst.close()
            raise
        except Exception as exc:  # an adapter bug or an engine error it did not know: still ours to name
            inst.close()
            raise EngineFailure(f"segment {seg.id!r}: {engine} failed to load {sorted(files.values())}: "
                                f"{type(exc).__name__}: {exc}") from exc
        use = EngineUse(seg.id, engine, seg.engine, fallback_reason is not None, fallback_reason, cls.version())
        ins = [(t.name, t.engine_name or t.name, _in_converter(t)) for t in inputs]
        outs = [(t.name, t.engine_name or t.name, _out_converter(t)) for t in outputs]
        return _Stage(seg, inst, use, ins, outs)

    # -- running -------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.manifest.outputs

    @property
    def engines_used(self) -> tuple[EngineUse, ...]:
        return tuple(s.use for s in self._stages)

    def _check_feed(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feed, Mapping):
            raise InputMismatch(f"feed: expected a dict of input name -> numpy array, got {type(feed).__name__}")
        specs = self._in_specs
        if feed.keys() != specs.keys():
            missing = [n for n in specs if n not in feed]
            extra = [n for n in feed if n not in specs]
            raise InputMismatch(f"feed: expected inputs {list(specs)}, given {list(feed)}"
                                + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        for name, x in feed.items():
            t = specs[name]
            if not isinstance(x, np.ndarray):
                raise InputMismatch(f"input {name!r}: expected a numpy array {t.dtype}{list(t.shape)}, given "
                                    f"{type(x).__name__}")
            if x.dtype.name != t.dtype or x.shape != t.shape:
                raise InputMismatch(f"input {name!r}: expected {t.dtype}{list(t.shape)}, given "
                                    f"{x.dtype.name}{list(x.shape)}")
        return dict(feed)

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise EngineFailure("run() on a closed Session")
        env = self._check_feed(feed)
        for st in self._stages:
            efeed = {en: (c(env[n]) if c is not None else env[n]) for n, en, c in st.ins}
            res = st.engine.run(efeed)
            for n, en, c in st.outs:
                if en not in res:
                    raise EngineFailure(f"segment {st.segment.id!r}: {st.use.engine} returned no output {en!r}")
                env[n] = c(res[en])
        return {n: env[n] for n in self._out_names}

    # -- pre/post ------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
        if self.manifest.preprocess is None:
            raise BundleError(f"{self.bundle_dir}: the manifest declares no preprocess; use run() with tensors")
        if self._pre is None:
            from edgesdk.runtime.preprocess import Preprocessor

            self._pre = Preprocessor(self.manifest.preprocess)
        tensor, info = self._pre(image)
        return {self.manifest.preprocess.input: tensor}, info

    def postprocess(self, outputs: Mapping[str, np.ndarray], info: Any = None) -> Prediction:
        if self._post is None:
            from edgesdk.runtime.postprocess import Postprocessor

            self._post = Postprocessor(self.manifest.postprocess, [t.name for t in self.outputs])
        return self._post(outputs, info)

    def predict(self, image: np.ndarray) -> Prediction:
        """Preprocess an image (H, W, 3 uint8 BGR, as cv2.imread gives), run, postprocess."""
        t0 = time.perf_counter()
        feed, info = self.preprocess(image)
        t1 = time.perf_counter()
        out = self.run(feed)
        t2 = time.perf_counter()
        pred = self.postprocess(out, info)
        t3 = time.perf_counter()
        return replace(pred, timings=Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))

    # -- resources -----------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for st in self._stages:
            try:
                st.engine.close()
            except Exception:  # closing must not raise over the caller's own error
                pass
        self._stages = []

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"Session({str(self.bundle_dir)!r}, engines_used={[str(u) for u in self.engines_used]})"


def _why(exc: EngineUnavailable) -> str:
    """The detail of an EngineUnavailable ("not installed: ..."), without the engine/fix boilerplate."""
    first = str(exc).splitlines()[0]
    head = f"engine {exc.engine!r} is not available here"
    rest = first[len(head):].strip() if first.startswith(head) else first
    return rest[1:-1] if rest.startswith("(") and rest.endswith(")") else (rest or "not available")


def _plain(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """A segment's tensors for its CPU version: same names and shapes, model layout, unquantized."""
    return tuple(replace(t, layout=None, engine_name=None, quant=None) for t in specs)


# -- guarded load --------------------------------------------------------------------------------
_PROBE = r"""
import json, sys, types
import numpy as np
args = json.loads(sys.argv[1])
pkg = types.ModuleType("edgesdk"); pkg.__path__ = [args["pkg"]]
sys.modules["edgesdk"] = pkg  # the runtime alone: do not run edgesdk/__init__ (host dependencies)
from pathlib import Path
from edgesdk.runtime.engines import engine_class
from edgesdk.runtime.manifest import TensorSpec
specs = lambda key: tuple(TensorSpec(d["name"], tuple(d["shape"]), d["dtype"], engine_name=d["engine_name"])
                          for d in args[key])
e = engine_class(args["engine"])()
ins = specs("inputs")
e.load({k: Path(v) for k, v in args["files"].items()}, ins, specs("outputs"), args["options"])
e.run({t.engine_name or t.name: np.zeros(t.shape, t.dtype) for t in ins})
e.close()
"""


def guarded_load(engine: str, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], options: Mapping[str, Any], timeout: float = GUARD_TIMEOUT) -> None:
    """Load the model and run it once on zeros in a child process; a crash there is an EngineFailure here."""
    spec = lambda t: {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "engine_name": t.engine_name}
    args = {"pkg": str(Path(__file__).resolve().parent.parent), "engine": engine,
            "files": {k: str(v) for k, v in files.items()}, "inputs": [spec(t) for t in inputs],
            "outputs": [spec(t) for t in outputs], "options": dict(options)}
    names = ", ".join(p.name for p in files.values())
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(args)], check=False, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except subprocess.TimeoutExpired as exc:
        raise EngineFailure(f"{engine}: loading {names} hung for more than {timeout:.0f} s (guarded load)") from exc
    if proc.returncode == 0:
        return
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
    if proc.returncode < 0:
        import signal

        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        raise EngineFailure(f"{engine} crashed ({sig}) loading {names}: the model file is corrupt or was made "
                            f"for another engine version{(': ' + tail) if tail else ''}")
    last = tail.splitlines()[-1] if tail else f"exit code {proc.returncode}"
    if "EngineUnavailable" in tail:
        raise EngineUnavailable(engine, _engines.INSTALL_HINTS.get(engine, ""), last)
    own = "edgesdk.runtime.errors.EngineFailure: "
    if last.startswith(own):  # the child's own EngineFailure already names the engine and the files
        raise EngineFailure(last[len(own):])
    raise EngineFailure(f"{engine} could not load {names}: {last}")


__all__ = ["Session", "dequantize", "engine_spec", "guarded_load", "normalize_engines", "quantize"]

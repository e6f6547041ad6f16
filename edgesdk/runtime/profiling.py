"""On-board profiler: runs a bundle with edgesdk.runtime and measures latency, segments, layers, memory and the board.

Standard library + numpy only, like the rest of edgesdk.runtime. Its command line is the board CLI's `profile`
verb (`python -m edgesdk.runtime profile BUNDLE --json`): the deploy agent runs it from the board's installed
runtime for `edgesdk profile` (as nobody, under its rlimits and time limit), and the host runs it here for
`edgesdk profile --host local`. `profile_bundle` returns the "measurement" part of an edgesdk.profile/1 report
(a dict; the host adds the expectations).

What it measures, in this order, so that instrumentation never perturbs the latency numbers:
  load, first run, warm-up, N timed runs (each split per segment into boundary conversion in, engine,
  boundary conversion out), RSS through the runs, pre/post-processing (when the bundle declares them),
  throughput through the streaming Pipeline, accuracy against the bundle's reference outputs, and last,
  per-layer times with the engine's own profiler (off by default: --per-layer). The board's state (CPU
  load, temperatures, clocks, throttling) is read before and after.

Per-layer hooks wrap the engines from the outside (a second instance of the model, loaded with the
engine's profiling switched on); the engine adapters themselves are not changed:
  onnxruntime  SessionOptions.enable_profiling, the "Node" *_kernel_time events of the JSON trace
  mnn          Interpreter.runSessionWithCallBackInfo (begin/end callbacks per op)
  ncnn         one Extractor, each layer's top blob extracted in order (type=1: no repacking), so each
               extract() computes exactly that layer: the time between is its time (plus a few us of call)
  tflite       not exposed by the Python interpreter (benchmark_model --enable_op_profiling is native)
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.manifest import TUNING

SCHEMA = "edgesdk.profile/1"
TUNING_FILE = TUNING  # the one name (edgesdk.runtime.manifest.TUNING): listed in the manifest, signed with it
TUNING_SCHEMA = "edgesdk.tuning/1"
EMULATED_MARKER = "/etc/edgesdk/emulated.json"

# vcgencmd get_throttled bits (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under-voltage detected", 1: "arm frequency capped", 2: "currently throttled", 3: "soft temperature limit active",
    16: "under-voltage has occurred", 17: "arm frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


# -- the board's state ---------------------------------------------------------------------------------
def _read(path: str | Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    line = (_read("/proc/stat") or "").splitlines()[:1]
    if not line or not line[0].startswith("cpu "):
        return None
    v = [float(x) for x in line[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0.0)
    return sum(v) - idle, sum(v)


def _thermal() -> list[dict[str, Any]]:
    out = []
    root = Path("/sys/class/thermal")
    for z in sorted(root.glob("thermal_zone*")) if root.is_dir() else []:
        t = _read(z / "temp")
        try:
            c = int(t) / 1000.0 if t is not None else None
        except ValueError:
            c = None
        if c is not None:
            trips = []
            for tp in sorted(z.glob("trip_point_*_temp")):
                try:
                    trips.append(int(_read(tp) or "") / 1000.0)
                except ValueError:
                    pass
            out.append({"zone": z.name, "type": _read(z / "type"), "celsius": c, "trip_points": trips})
    return out


def _cpufreq() -> list[dict[str, Any]]:
    out = []
    root = Path("/sys/devices/system/cpu")
    for c in sorted(root.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])) if root.is_dir() else []:
        f = c / "cpufreq"
        if not f.is_dir():
            continue
        vals = {}
        for key in ("scaling_cur_freq", "cpuinfo_max_freq", "scaling_max_freq", "scaling_governor"):
            vals[key] = _read(f / key)
        try:
            out.append({"cpu": c.name, "cur_mhz": int(vals["scaling_cur_freq"] or 0) / 1000.0,
                        "max_mhz": int(vals["cpuinfo_max_freq"] or 0) / 1000.0,
                        "limit_mhz": int(vals["scaling_max_freq"] or 0) / 1000.0,
                        "governor": vals["scaling_governor"]})
        except ValueError:
            continue
    return out


def _vcgencmd_throttled() -> dict[str, Any] | None:
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        r = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", r.stdout)
    if not m:
        return {"raw": r.stdout.strip(), "value": None, "flags": []}
    v = int(m.group(1), 16)
    return {"raw": m.group(0), "value": v, "flags": [name for bit, name in THROTTLE_BITS.items() if v >> bit & 1]}


def emulated_info() -> dict[str, Any] | None:
    """The emulated-board marker (edgesdk emulator), or EDGESDK_EMULATED=1; None on real hardware."""
    text = _read(EMULATED_MARKER)
    if text is not None:
        try:
            data = json.loads(text)
            return data if isinstance(data, dict) else {"marker": data}
        except ValueError:
            return {"marker": text}
    if os.environ.get("EDGESDK_EMULATED") == "1":
        return {"env": "EDGESDK_EMULATED=1", "qemu_cpu": os.environ.get("QEMU_CPU")}
    return None


def system_snapshot() -> dict[str, Any]:
    """CPU load, temperatures, clocks and throttling: what can make a board slower than it should be."""
    la = (_read("/proc/loadavg") or "").split()
    snap: dict[str, Any] = {
        "time": time.time(),
        "loadavg": [float(x) for x in la[:3]] if len(la) >= 3 else None,
        "cpu_count": os.cpu_count(),
        "thermal": _thermal(),
        "cpufreq": _cpufreq(),
        "throttled": _vcgencmd_throttled(),
    }
    ct = _cpu_times()
    snap["_cpu_jiffies"] = list(ct) if ct else None
    return snap


def throttling_flags(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Why the board may have run slow: firmware throttle bits, hot zones, clocks below their maximum."""
    flags: list[str] = []
    thr = after.get("throttled") or {}
    for f in thr.get("flags") or []:
        flags.append(f"vcgencmd: {f}")
    for z in after.get("thermal") or []:
        trips = [t for t in z.get("trip_points") or [] if t > 0]
        limit = min(trips) if trips else 80.0
        if z["celsius"] >= limit - 5:
            flags.append(f"{z['zone']} at {z['celsius']:.0f} C, near its limit {limit:.0f} C")
    for c in after.get("cpufreq") or []:
        if c["max_mhz"] and c["limit_mhz"] and c["limit_mhz"] < 0.95 * c["max_mhz"]:
            flags.append(f"{c['cpu']}: clock limited to {c['limit_mhz']:.0f} of {c['max_mhz']:.0f} MHz")
            break
    cur = [c["cur_mhz"] for c in after.get("cpufreq") or [] if c["max_mhz"]]
    mx = [c["max_mhz"] for c in after.get("cpufreq") or [] if c["max_mhz"]]
    if cur and mx and (max(cur) < 0.9 * max(mx)) and (after.get("cpufreq") or [{}])[0].get("governor") != "powersave":
        flags.append(f"clock {max(cur):.0f} MHz after the runs, below the maximum {max(mx):.0f} MHz")
    return flags


def _cpu_busy(before: Mapping[str, Any], after: Mapping[str, Any]) -> float | None:
    a, b = before.get("_cpu_jiffies"), after.get("_cpu_jiffies")
    if not a or not b or b[1] <= a[1]:
        return None
    return round(100.0 * (b[0] - a[0]) / (b[1] - a[1]), 1)


# -- memory ---------------------------------------------------------------------------------------------
def rss_mb() -> float | None:
    text = _read("/proc/self/statm")
    if not text:
        return None
    return int(text.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


# -- statistics -----------------------------------------------------------------------------------------
def latency_stats(times_ms: Sequence[float]) -> dict[str, float]:
    """min, p50, p90, p99, max, mean, stdev (sample) of a list of milliseconds; percentiles interpolated."""
    if not times_ms:
        return {"count": 0}
    s = sorted(float(t) for t in times_ms)
    n = len(s)

    def pct(q: float) -> float:
        k = (n - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    mean = sum(s) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in s) / (n - 1)) if n > 1 else 0.0
    r = lambda x: round(x, 4)
    return {"count": n, "min_ms": r(s[0]), "p50_ms": r(pct(0.5)), "p90_ms": r(pct(0.9)), "p99_ms": r(pct(0.99)),
            "max_ms": r(s[-1]), "mean_ms": r(mean), "stdev_ms": r(sd)}


# -- tuning ---------------------------------------------------------------------------------------------
def load_tuning(bundle_dir: str | Path) -> dict[str, Any] | None:
    """The release's tuning.json (written by `edgesdk tune`), checked; None when there is none."""
    p = Path(bundle_dir) / TUNING_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        from edgesdk.runtime.errors import BundleError

        raise BundleError(f"{p}: not valid JSON: {exc}") from exc
    from edgesdk.runtime.errors import BundleError

    if not isinstance(data, dict) or data.get("schema") != TUNING_SCHEMA:
        raise BundleError(f"{p}: field schema: expected {TUNING_SCHEMA!r}")
    eng = data.get("engines")
    if not isinstance(eng, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                             and isinstance(e.get("options", {}), dict) for e in eng):
        raise BundleError(f"{p}: field engines: expected a list of {{name, options}}")
    return data


def tuned_engines(bundle_dir: str | Path) -> list[Any] | None:
    """The Session `engines=` list that tuning.json asks for, or None (the bundle's own settings)."""
    t = load_tuning(bundle_dir)
    if t is None:
        return None
    return [(e["name"], dict(e.get("options") or {})) for e in t["engines"]]


# -- feeds ------------------------------------------------------------------------------------------------
def reference_feed(sess: Any) -> tuple[dict[str, np.ndarray], str]:
    """The bundle's reference inputs when they fit, else seeded random tensors of the right shape and dtype."""
    m = sess.manifest
    feed: dict[str, np.ndarray] = {}
    if m.reference_inputs and set(m.reference_inputs) == {t.name for t in m.inputs}:
        try:
            for t in m.inputs:
                a = np.load(sess.bundle_dir / m.reference_inputs[t.name], allow_pickle=False)
                if a.shape != t.shape or a.dtype.name != t.dtype:
                    raise ValueError
                feed[t.name] = a
            return feed, "reference"
        except (OSError, ValueError):
            feed = {}
    rng = np.random.default_rng(0)
    for t in m.inputs:
        if np.issubdtype(np.dtype(t.dtype), np.floating):
            feed[t.name] = rng.standard_normal(t.shape).astype(t.dtype)
        else:
            info = np.iinfo(t.dtype) if np.dtype(t.dtype) != np.bool_ else None
            feed[t.name] = (rng.integers(0, 2, t.shape).astype(t.dtype) if info is None
                            else rng.integers(max(info.min, 0), min(info.max, 127), t.shape).astype(t.dtype))
    return feed, "random"


def synthetic_image(h: int, w: int) -> np.ndarray:
    """A deterministic BGR camera-like frame (gradients + noise): pre-processing cost depends only on size."""
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    rng = np.random.default_rng(3)
    img = np.stack([y + 0 * x, x + 0 * y, (x + y) / 2], axis=-1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# -- the timed run ------------------------------------------------------------------------------------
def _stage_kind(st: Any) -> str:
    if st.use.fallback:
        return "cpu-fallback"
    return "accelerator" if st.segment.accelerator else "cpu"


def _conversions(specs: Sequence[Any]) -> list[str]:
    kinds: set[str] = set()
    for t in specs:
        if t.layout == "NHWC" and len(t.shape) >= 3:
            kinds.add("layout")
        if t.quant is not None:
            kinds.add("quantize")
    return sorted(kinds)


def timed_run(sess: Any, feed: Mapping[str, np.ndarray], capture: dict[int, dict[str, np.ndarray]] | None = None
              ) -> tuple[dict[str, np.ndarray], list[tuple[float, float, float]]]:
    """Session.run, step for step, with the time of each segment's input conversion, engine call and output
    conversion (seconds). Same checks and same outputs as Session.run; `capture` receives each stage's
    engine-side feed (for the per-layer pass)."""
    from edgesdk.runtime.errors import EngineFailure

    if sess._closed:
        raise EngineFailure("run() on a closed Session")
    env = sess._check_feed(feed)
    pc = time.perf_counter
    rec = []
    for i, st in enumerate(sess._stages):
        t0 = pc()
        efeed = {en: (c(env[n]) if c is not None else env[n]) for n, en, c in st.ins}
        t1 = pc()
        res = st.engine.run(efeed)
        t2 = pc()
        for n, en, c in st.outs:
            if en not in res:
                raise EngineFailure(f"segment {st.segment.id!r}: {st.use.engine} returned no output {en!r}")
            env[n] = c(res[en])
        t3 = pc()
        rec.append((t1 - t0, t2 - t1, t3 - t2))
        if capture is not None:
            capture[i] = efeed
    return {n: env[n] for n in sess._out_names}, rec


# -- per-layer profilers ----------------------------------------------------------------------------------
class LayerProfileUnavailable(Exception):
    """This engine (or this build of it) does not expose per-layer times."""


def _stage_files(sess: Any, st: Any) -> tuple[dict[str, Path], Mapping[str, Any]]:
    seg = st.segment
    files = seg.cpu_version.files if st.use.fallback and seg.cpu_version else seg.files
    opts = {} if st.use.fallback else dict(seg.options)
    opts.update((sess._allowed or {}).get(st.use.engine, {}))
    return {k: sess.bundle_dir / v for k, v in files.items()}, opts


def _layers_onnxruntime(files: Mapping[str, Path], opts: Mapping[str, Any], efeed: Mapping[str, np.ndarray],
                        runs: int) -> tuple[list[dict[str, Any]], float]:
    import onnxruntime as ort

    path = files.get("model") or files.get("onnx")
    tmp = tempfile.mkdtemp(prefix="edgesdk-ortprof-")
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        th = int(opts.get("threads", 0) or 0)
        if th:
            so.intra_op_num_threads, so.inter_op_num_threads = th, 1
        s = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        feed = dict(efeed)
        walls = []
        for _ in range(runs + 1):  # the first run is a warm-up: its events are dropped below
            t = time.perf_counter()
            s.run(None, feed)
            walls.append(time.perf_counter() - t)
        trace = s.end_profiling()
        with open(trace, encoding="utf-8") as fh:
            events = json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs_ev = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                     and e.get("name") == "model_run")
    keep = runs_ev[1:] if len(runs_ev) > 1 else runs_ev
    agg: dict[str, list[Any]] = {}
    order: list[str] = []
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if keep and not any(a <= e["ts"] <= b for a, b in keep):
            continue
        name = e["name"][: -len("_kernel_time")]
        if name not in agg:
            agg[name] = [(e.get("args") or {}).get("op_name", ""), 0.0]
            order.append(name)
        agg[name][1] += e["dur"] / 1e3
    n = max(len(keep), 1)
    layers = [{"name": k, "type": agg[k][0], "ms": agg[k][1] / n} for k in order]
    return layers, 1e3 * sum(walls[1:]) / max(len(walls) - 1, 1)


def _layers_mnn(files: Mapping[str, Path], opts: Mapping[str, Any], efeed: Mapping[str, np.ndarray], runs: int
                ) -> tuple[list[dict[str, Any]], float]:
    import MNN

    path = files.get("model") or files.get("mnn")
    it = MNN.Interpreter(str(path))
    cfg = {"numThread": int(opts.get("threads", 1) or 1), "precision": "low" if opts.get("fp16") else "high"}
    s = it.createSession(cfg)
    for name, arr in efeed.items():
        t = it.getSessionInput(s, name)
        a = np.ascontiguousarray(arr.astype(np.float32) if arr.dtype != np.float32 else arr)
        host = MNN.Tensor(list(a.shape), MNN.Halide_Type_Float, a, MNN.Tensor_DimensionType_Caffe)
        t.copyFrom(host)
    agg: dict[str, list[Any]] = {}
    order: list[str] = []
    cur: list[Any] = [None, 0.0]
    pc = time.perf_counter

    def begin(tensors: Any, op: Any) -> bool:
        cur[0], cur[1] = op, pc()
        return True

    def end(tensors: Any, op: Any) -> bool:
        dt = pc() - cur[1]
        name = op.getName()
        if name not in agg:
            agg[name] = [op.getType(), 0.0]
            order.append(name)
        agg[name][1] += dt * 1e3
        return True

    it.runSessionWithCallBackInfo(s, begin, end)  # warm-up
    agg.clear()
    order.clear()
    walls = []
    for _ in range(runs):
        t0 = pc()
        it.runSessionWithCallBackInfo(s, begin, end)
        walls.append(pc() - t0)
    layers = [{"name": k, "type": agg[k][0], "ms": agg[k][1] / runs} for k in order]
    return layers, 1e3 * sum(walls) / runs


def _layers_ncnn(files: Mapping[str, Path], opts: Mapping[str, Any], efeed: Mapping[str, np.ndarray], runs: int
                 ) -> tuple[list[dict[str, Any]], float]:
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = int(opts.get("threads", 1) or 1)
    fp16 = bool(opts.get("fp16", False))
    for attr in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
        if hasattr(net.opt, attr):
            setattr(net.opt, attr, fp16 and "bf16" not in attr)
    if net.load_param(str(files["param"])) != 0 or net.load_model(str(files.get("bin") or files["model"])) != 0:
        raise LayerProfileUnavailable("ncnn could not load the segment for per-layer timing")
    try:
        layers = list(net.layers())
    except Exception as exc:
        raise LayerProfileUnavailable(f"this ncnn build has no Net.layers(): {exc}") from exc
    todo = [(ly.name, ly.type, list(ly.tops)) for ly in layers if ly.type != "Input" and list(ly.tops)]
    mats = {k: ncnn.Mat(np.ascontiguousarray(v[0] if v.ndim >= 4 and v.shape[0] == 1 else v)).clone()
            for k, v in efeed.items()}
    agg = {name: 0.0 for name, _, _ in todo}
    pc = time.perf_counter
    walls = []
    for r in range(runs + 1):
        ex = net.create_extractor()
        ex.set_light_mode(True)  # each blob has one consumer (Split fans out): in-order extraction keeps working
        t0 = pc()
        for k, m in mats.items():
            ex.input(k, m)
        for name, _, tops in todo:
            t = pc()
            ret, m = ex.extract(tops[0], 1)
            dt = pc() - t
            del m  # drop our reference at once, or an in-place consumer must copy the blob
            if ret != 0:
                raise LayerProfileUnavailable(f"ncnn extract of layer {name!r} failed ({ret})")
            if r:
                agg[name] += dt * 1e3
        if r:
            walls.append(pc() - t0)
        del ex
    net.clear()
    out = [{"name": name, "type": typ, "ms": agg[name] / runs} for name, typ, _ in todo]
    return out, 1e3 * sum(walls) / runs


LAYER_PROFILERS = {"onnxruntime": _layers_onnxruntime, "mnn": _layers_mnn, "ncnn": _layers_ncnn}


def _no_layers(engine: str) -> str:
    """Why an engine gives no per-layer times (its class's `per_layer_note`)."""
    from edgesdk.runtime import engines as _engines

    note = _engines.engine_class(engine).per_layer_note if engine in _engines.REGISTRY else ""
    return note or f"{engine}: no per-layer hook"


def layer_profile(sess: Any, efeeds: Mapping[int, Mapping[str, np.ndarray]], runs: int,
                  compute_ms: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Per segment: its layers (name, type, mean ms) from the engine's own profiler, or why there are none."""
    out = []
    for i, st in enumerate(sess._stages):
        eng = st.use.engine
        entry: dict[str, Any] = {"segment": st.segment.id, "engine": eng, "runs": runs}
        fn = LAYER_PROFILERS.get(eng)
        if fn is None:
            entry.update(available=False, reason=_no_layers(eng))
            out.append(entry)
            continue
        files, opts = _stage_files(sess, st)
        try:
            layers, wall = fn(files, opts, efeeds[i], runs)
        except LayerProfileUnavailable as exc:
            entry.update(available=False, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a profiler failure must not lose the rest of the profile
            entry.update(available=False, reason=f"{eng} per-layer profiling failed: {type(exc).__name__}: {exc}")
        else:
            total = sum(ly["ms"] for ly in layers)
            entry.update(available=True, layers=[{**ly, "ms": round(ly["ms"], 5)} for ly in layers],
                         layers_sum_ms=round(total, 4), instrumented_run_ms=round(wall, 4),
                         coverage=round(total / wall, 4) if wall > 0 else None)
            if compute_ms is not None and wall > 0:
                # the profiler's own overhead: instrumented run / plain run of the same segment
                entry["profiler_overhead"] = round(wall / compute_ms[i], 4) if compute_ms[i] > 0 else None
                entry["scale_to_segment"] = round(compute_ms[i] / total, 6) if total > 0 else None
        out.append(entry)
    return out


# -- accuracy ---------------------------------------------------------------------------------------------
def accuracy_check(sess: Any) -> dict[str, Any]:
    """The smoke test's comparison (edgesdk.runtime.reference, the one reference check): the reference inputs'
    outputs against the reference outputs, with the bundle's tolerance."""
    from edgesdk.runtime.reference import check_reference

    m = sess.manifest
    if not m.reference_inputs or not m.reference_outputs:
        return {"checked": False, "reason": "the bundle carries no reference inputs/outputs"}
    feed, how = reference_feed(sess)
    if how != "reference":
        return {"checked": False, "reason": "the reference inputs do not match the model's inputs"}
    verdict = check_reference(sess, sess.run(feed))
    return {"checked": True, "passed": verdict.ok, "outputs": verdict.checks(), "tolerance": verdict.tolerance}


# -- throughput -------------------------------------------------------------------------------------------
class _TensorShim:
    """Lets the Pipeline stream a bundle that declares no pre/post-processing: every frame is the fixed feed."""

    def __init__(self, sess: Any, feed: Mapping[str, np.ndarray]) -> None:
        self._s, self._feed = sess, dict(feed)

    def preprocess(self, frame: Any) -> tuple[dict[str, np.ndarray], None]:
        return dict(self._feed), None

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._s.run(feed)

    def postprocess(self, outputs: Any, info: Any = None) -> Any:
        return outputs


def pipeline_throughput(sess: Any, feed: Mapping[str, np.ndarray], frames: int, image: np.ndarray | None
                        ) -> dict[str, Any]:
    from edgesdk.runtime.pipeline import Pipeline

    full = image is not None and sess.manifest.preprocess is not None
    target = sess if full else _TensorShim(sess, feed)
    src = [image] * frames if full else [np.zeros((2, 2, 3), np.uint8)] * frames
    lat = []
    with Pipeline(target, src, queue_size=2, drop=False) as p:
        for r in p:
            lat.append(r.latency_ms)
        st = p.stats
    return {"frames": st.delivered, "seconds": round(st.elapsed_s, 4),
            "fps": round(st.fps, 3), "mode": "predict (pre + run + post)" if full else "run (tensors)",
            "frame_latency": latency_stats(lat), "dropped": st.dropped_total}


# -- the profile -------------------------------------------------------------------------------------------
def profile_bundle(bundle: str | Path, runs: int = 50, warmup: int = 5, threads: int = 0, per_layer: bool = False,
                   layer_runs: int = 10, pipeline_frames: int | None = None, image: np.ndarray | None = None,
                   engines: Sequence[str] | None = None, fallback: str = "error", use_tuning: bool = True,
                   check_accuracy: bool = True) -> dict[str, Any]:
    """Profile a bundle on this machine; the measurement part of an edgesdk.profile/1 report (a dict)."""
    from edgesdk.runtime.errors import InputError
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.session import Session, engine_choices

    if runs < 1 or warmup < 0 or threads < 0 or layer_runs < 1:
        raise InputError(f"runs must be >= 1, warmup and threads >= 0, layer runs >= 1 (got runs={runs}, "
                         f"warmup={warmup}, threads={threads}, layer_runs={layer_runs})")
    bundle = Path(bundle)
    manifest = load_manifest(bundle, verify=False)
    eng_arg = engine_choices(manifest, engines, threads)
    tuning = None
    if eng_arg is None and use_tuning:
        tuning = load_tuning(bundle)
        eng_arg = tuned_engines(bundle) if tuning else None
    sys_before = system_snapshot()
    rss0 = rss_mb()
    t = time.perf_counter()
    sess = Session(bundle, engines=eng_arg, fallback=fallback, use_tuning=use_tuning)
    load_ms = (time.perf_counter() - t) * 1e3
    try:
        rss_loaded = rss_mb()
        feed, feed_kind = reference_feed(sess)
        t = time.perf_counter()
        sess.run(feed)
        first_ms = (time.perf_counter() - t) * 1e3
        for _ in range(warmup):
            timed_run(sess, feed)
        rss_warm = rss_mb()
        cpu0 = os.times()
        w0 = time.perf_counter()
        busy0 = _cpu_times()
        totals: list[float] = []
        per_stage: list[list[tuple[float, float, float]]] = []
        rss_series = []
        efeeds: dict[int, dict[str, np.ndarray]] = {}
        for i in range(runs):
            t = time.perf_counter()
            _, rec = timed_run(sess, feed, efeeds if i == runs - 1 else None)
            totals.append((time.perf_counter() - t) * 1e3)
            per_stage.append(rec)
            if runs <= 200 or i % max(1, runs // 200) == 0:
                rss_series.append(round(rss_mb() or 0.0, 2))
        wall = time.perf_counter() - w0
        cpu1 = os.times()
        busy1 = _cpu_times()
        rss_runs = rss_mb()
        proc_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)

        segments = []
        for j, st in enumerate(sess._stages):
            col = [r[j] for r in per_stage]
            ins = [c[0] * 1e3 for c in col]
            eng = [c[1] * 1e3 for c in col]
            outs = [c[2] * 1e3 for c in col]
            opts = _stage_files(sess, st)[1]
            segments.append({
                "id": st.segment.id, "engine": st.use.engine, "planned_engine": st.use.planned,
                "kind": _stage_kind(st), "fallback": st.use.fallback, "fallback_reason": st.use.reason,
                "engine_version": st.use.version, "precision": st.segment.precision,
                "threads": int(opts.get("threads", 0) or 0) or None,
                "boundary_in": {"conversions": _conversions(st.segment.inputs), **_mean_sd(ins)},
                "compute": {**_mean_sd(eng), "p50_ms": latency_stats(eng)["p50_ms"]},
                "boundary_out": {"conversions": _conversions(st.segment.outputs), **_mean_sd(outs)},
                "total_mean_ms": round(sum(ins + eng + outs) / len(col), 4),
            })
        result: dict[str, Any] = {
            "schema": SCHEMA,
            "bundle": {"id": manifest.bundle_id, "path": str(bundle), "board": manifest.board,
                       "precision": manifest.precision, "source_model": manifest.source_model,
                       "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in manifest.inputs],
                       "segments": len(manifest.segments)},
            "settings": {"runs": runs, "warmup": warmup, "threads": threads or None, "per_layer": per_layer,
                         "engines": [e if isinstance(e, str) else [e[0], e[1]] for e in eng_arg] if eng_arg else None,
                         "tuning": tuning, "feed": feed_kind, "fallback": fallback},
            "engines_used": [{"segment": u.segment, "engine": u.engine, "planned": u.planned, "fallback": u.fallback,
                              "reason": u.reason, "version": u.version} for u in sess.engines_used],
            "load_ms": round(load_ms, 3),
            "first_run_ms": round(first_ms, 3),
            "latency": latency_stats(totals),
            "latencies_ms": [round(x, 4) for x in totals],
            "segments": segments,
            "cpu": {"process_cpu_seconds": round(proc_cpu, 4), "wall_seconds": round(wall, 4),
                    "cores_busy": round(proc_cpu / wall, 3) if wall > 0 else None,
                    "system_busy_percent": _cpu_busy({"_cpu_jiffies": busy0}, {"_cpu_jiffies": busy1})},
        }
        # pre/post-processing
        img = image
        if manifest.preprocess is not None:
            if img is None:
                h, w = manifest.preprocess.size
                img = synthetic_image(max(h, 480), max(w, 640))
            pre, post, inf = [], [], []
            for _ in range(max(3, min(runs, 20))):
                pred = sess.predict(img)
                pre.append(pred.timings.preprocess_ms)
                inf.append(pred.timings.inference_ms)
                post.append(pred.timings.postprocess_ms)
            result["prepost"] = {"image": list(img.shape), "preprocess": latency_stats(pre),
                                 "inference": latency_stats(inf), "postprocess": latency_stats(post),
                                 "postprocess_kind": manifest.postprocess.kind if manifest.postprocess else "none"}
        else:
            result["prepost"] = None
        frames = pipeline_frames if pipeline_frames is not None else min(max(runs, 10), 100)
        result["throughput"] = pipeline_throughput(sess, feed, frames, img) if frames > 0 else None
        result["accuracy"] = accuracy_check(sess) if check_accuracy else {"checked": False, "reason": "not asked"}
        result["memory"] = {"rss_before_load_mb": _r(rss0), "rss_after_load_mb": _r(rss_loaded),
                            "rss_after_warmup_mb": _r(rss_warm), "rss_after_runs_mb": _r(rss_runs),
                            "growth_during_runs_mb": _r((rss_runs or 0) - (rss_warm or 0)),
                            "peak_rss_mb": round(peak_rss_mb(), 2), "rss_series_mb": rss_series}
        if per_layer:
            result["layers"] = layer_profile(sess, efeeds, layer_runs,
                                             [s_["compute"]["mean_ms"] for s_ in segments])
        else:
            result["layers"] = None
    finally:
        sess.close()
    sys_after = system_snapshot()
    result["system"] = {"before": _public(sys_before), "after": _public(sys_after),
                        "throttling": throttling_flags(sys_before, sys_after),
                        "emulated": emulated_info(), "machine": os.uname().machine, "node": os.uname().nodename,
                        "python": "%d.%d.%d" % sys.version_info[:3], "numpy": np.__version__}
    result["emulated"] = result["system"]["emulated"] is not None
    return result


def _r(x: float | None) -> float | None:
    return round(x, 2) if x is not None else None


def _mean_sd(xs: Sequence[float]) -> dict[str, float]:
    n = len(xs)
    m = sum(xs) / n if n else 0.0
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean_ms": round(m, 5), "stdev_ms": round(sd, 5)}


def _public(snap: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snap.items() if not k.startswith("_")}


__all__ = ["SCHEMA", "TUNING_FILE", "TUNING_SCHEMA", "accuracy_check", "emulated_info",
           "latency_stats", "layer_profile", "load_tuning", "profile_bundle", "system_snapshot", "throttling_flags",
           "timed_run", "tuned_engines"]

"""What the board should do: roofline from the board profile (the inspect report's), published reference
latencies, and the flags that say why a measurement is far off."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgesdk.boards import BoardProfile

#: measured / published above this: "far slower than published"; below REF_FAST: "suspiciously fast".
REF_SLOW, REF_FAST = 1.5, 0.5
#: measured / roofline above this: far from what the memory and ALUs allow (CPU engines reach 10-50 % of peak).
ROOFLINE_FAR = 20.0


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def model_key(source_model: Mapping[str, Any]) -> str:
    name = str(source_model.get("name") or "")
    return _key(Path(name).stem if name.endswith((".onnx", ".tflite", ".pt")) else name)


def _name_matches(model: str, ref: str) -> bool:
    """mobilenetv27 (mobilenetv2-7.onnx) matches mobilenet_v2; mobilenetv2 does not match mobilenet."""
    m, r = _key(model), _key(ref)
    return m == r or (m.startswith(r) and m[len(r):].isdigit())


def input_hw(inputs: Sequence[Mapping[str, Any]]) -> str | None:
    for t in inputs:
        s = list(t.get("shape") or [])
        if len(s) == 4:
            h, w = (s[2], s[3]) if s[1] in (1, 3, 4) else (s[1], s[2])
            return f"{h}x{w}"
    return None


def main_engine(measure: Mapping[str, Any]) -> str | None:
    segs = measure.get("segments") or []
    if not segs:
        return None
    return max(segs, key=lambda s: s["compute"]["mean_ms"])["engine"]


def threads_used(measure: Mapping[str, Any]) -> int | None:
    t = (measure.get("settings") or {}).get("threads")
    if t:
        return int(t)
    ts = [s.get("threads") for s in measure.get("segments") or [] if s.get("threads")]
    return max(ts) if ts else 1  # every engine adapter defaults to one thread


def reference_match(board: BoardProfile, measure: Mapping[str, Any], model_name: str | None = None
                    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the published figure for exactly this model, input, engine, precision and threads, or None;
    the related figures for the same model)."""
    b = measure.get("bundle") or {}
    name = model_name or model_key(b.get("source_model") or {})
    hw = input_hw(b.get("inputs") or [])
    eng, prec, th = main_engine(measure), b.get("precision"), threads_used(measure)
    related, exact = [], None
    for r in board.reference_latencies:
        if not _name_matches(name, r.model):
            continue
        d = {"model": r.model, "input": r.input, "engine": r.engine, "precision": r.precision, "threads": r.threads,
             "latency_ms": r.latency_ms, "conditions": r.conditions, "source": str(r.source)}
        related.append(d)
        same_engine = eng is not None and (r.engine == eng or r.engine.startswith(eng + "-"))
        if exact is None and r.input == hw and same_engine and r.precision == prec and (r.threads in (None, th)):
            exact = d
    return exact, related


def roofline(model_path: str | Path, board: BoardProfile, measure: Mapping[str, Any]) -> dict[str, Any]:
    """The inspect report's roofline (edgesdk.graph), its compute part scaled to the threads the run used."""
    from edgesdk.graph.report import ESTIMATE_LABEL, inspect_model

    shapes = {t["name"]: list(t["shape"]) for t in (measure.get("bundle") or {}).get("inputs") or []}
    rep = inspect_model(model_path, board.id, input_shapes=shapes or None)
    cores = board.cpu.cores
    th = min(threads_used(measure) or 1, cores)
    int8 = (measure.get("bundle") or {}).get("precision") == "int8"
    speed = (board.peaks.cpu_int8_gops.value / board.peaks.cpu_fp32_gflops.value) if int8 else 1.0
    segs = []
    for e in rep.estimates:
        scale = 1.0
        if e.target != "accelerator":
            scale = cores / th / speed
        compute = e.compute_ms * scale
        segs.append({"index": e.index, "engine": e.engine, "target": e.target, "flops": e.flops, "bytes": e.bytes,
                     "compute_ms": compute, "memory_ms": e.memory_ms, "estimate_ms": max(compute, e.memory_ms),
                     "bound": "compute" if compute >= e.memory_ms else "memory"})
    total = sum(s["estimate_ms"] for s in segs) + rep.transfer_ms
    return {"label": ESTIMATE_LABEL, "model": str(model_path), "total_flops": rep.total_flops,
            "threads": th, "cores": cores, "int8": int8, "all_cores_ms": rep.estimate_ms,
            "segments": segs, "transfer_ms": rep.transfer_ms, "total_ms": total}


def _causes(board: BoardProfile, measure: Mapping[str, Any], emulated: bool, cores: int | None) -> list[str]:
    """The likely causes the measurement itself gives evidence for."""
    out = []
    segs = measure.get("segments") or []
    if board.accelerator is not None:
        fb = [s["id"] for s in segs if s.get("fallback")]
        if fb:
            out.append(f"accelerator not used: segments {fb} ran their CPU fallback")
        elif not any(s.get("kind") == "accelerator" for s in segs):
            out.append(f"accelerator not used: no segment ran on the {board.accelerator.name}")
    sysinfo = measure.get("system") or {}
    for f in sysinfo.get("throttling") or []:
        out.append(f"throttled: {f}")
    th = threads_used(measure)
    n = cores or board.cpu.cores
    if th is not None and th < n:
        out.append(f"wrong thread count: {th} thread(s) on {n} cores (try --threads {n} or a --sweep threads=...)")
    elif th is not None and th > n:
        out.append(f"wrong thread count: {th} threads on {n} cores oversubscribes the CPU")
    la = (sysinfo.get("before") or {}).get("loadavg")
    if la and la[0] > 0.5 * n:
        out.append(f"the CPU was busy before the run (load average {la[0]:.2f} on {n} cores)")
    if emulated:
        out.append("running on an emulated board (qemu): timings are the emulator's, not the board's")
    return out


def expectations(board: BoardProfile, measure: Mapping[str, Any], *, emulated: bool, matches_board: bool,
                 model_path: str | Path | None = None, model_name: str | None = None,
                 vendor_estimates: Sequence[Mapping[str, Any]] = ()) -> tuple[dict[str, Any], list[dict]]:
    """(expectations section, flags) of a report. `vendor_estimates`: the vendor compilers' own estimates of their
    segments (vela's), shown beside the measurement."""
    flags: list[dict[str, Any]] = []
    lat = (measure.get("latency") or {}).get("p50_ms")
    exp: dict[str, Any] = {"compared": False, "roofline": None, "reference": None, "related_references": []}
    cores = (measure.get("system") or {}).get("before", {}).get("cpu_count")
    if emulated:
        flags.append({"code": "emulated", "severity": "info",
                      "message": "running on an emulated board: numbers are marked emulated and never compared "
                                 "with the board's published or estimated figures"})
    elif not matches_board:
        flags.append({"code": "not-the-board", "severity": "info",
                      "message": f"this machine is not a {board.name}: numbers are its own, not compared with the "
                                 "board's published or estimated figures"})
    comparable = not emulated and matches_board
    exp["compared"] = comparable
    if model_path is not None and Path(model_path).is_file():
        try:
            exp["roofline"] = roofline(model_path, board, measure)
        except Exception as exc:  # noqa: BLE001 - an estimate must not lose the measurement
            exp["roofline"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        exp["roofline"] = {"error": "no source model on this host (give --model MODEL.onnx for the roofline)"}
    if vendor_estimates:
        total = sum(float(v["ms"]) for v in vendor_estimates)
        exp["vendor_estimate"] = {"segments": [dict(v) for v in vendor_estimates], "total_ms": round(total, 6),
                                  "note": "the vendor compiler's static estimate of its accelerator segments only "
                                          "(no CPU segments, no pre/post-processing)"}
        if lat is not None and comparable and total > 0:
            exp["vendor_estimate"]["measured_over_estimate"] = round(lat / total, 2)
    ref, related = reference_match(board, measure, model_name)
    exp["reference"], exp["related_references"] = ref, related
    rl = exp["roofline"] if exp["roofline"] and "total_ms" in exp["roofline"] else None
    causes = _causes(board, measure, emulated, None if comparable else cores)
    far = False
    if lat is not None and rl is not None:
        ratio = lat / rl["total_ms"] if rl["total_ms"] > 0 else None
        rl["measured_over_estimate"] = round(ratio, 2) if ratio else None
        if comparable and ratio and ratio > ROOFLINE_FAR:
            far = True
            flags.append({"code": "far-from-roofline", "severity": "warning",
                          "message": f"p50 {lat:.1f} ms is {ratio:.0f}x the roofline estimate "
                                     f"{rl['total_ms']:.2f} ms", "causes": causes})
    if lat is not None and ref is not None:
        ratio = lat / ref["latency_ms"]
        ref["measured_over_published"] = round(ratio, 3)
        if comparable and ratio > REF_SLOW:
            far = True
            flags.append({"code": "slower-than-published", "severity": "warning",
                          "message": f"p50 {lat:.1f} ms is {ratio:.1f}x the published {ref['latency_ms']} ms "
                                     f"({ref['engine']}, {ref['threads'] or '?'} threads; {ref['source']})",
                          "causes": causes})
        elif comparable and ratio < REF_FAST:
            flags.append({"code": "faster-than-published", "severity": "info",
                          "message": f"p50 {lat:.1f} ms is {ratio:.2f}x the published {ref['latency_ms']} ms: check "
                                     "that the model and input really are the published ones"})
    if not far:
        for c in causes:
            if c.startswith(("throttled", "accelerator not used")):
                flags.append({"code": c.split(":")[0].replace(" ", "-"), "severity": "warning", "message": c})
    la = ((measure.get("system") or {}).get("before") or {}).get("loadavg")
    n = cores or board.cpu.cores
    if la and la[0] > 0.5 * n and not far:
        flags.append({"code": "busy-cpu", "severity": "warning",
                      "message": f"the CPU was busy before the run (load average {la[0]:.2f} on {n} cores): other "
                                 "processes share it, so the numbers are pessimistic and noisy"})
    mem = measure.get("memory") or {}
    series = mem.get("rss_series_mb") or []
    half = len(series) // 2
    trend = (sum(series[half:]) / max(len(series) - half, 1) - sum(series[:half]) / half) if half else 0.0
    if (mem.get("growth_during_runs_mb") or 0) > 10 and trend > 5:
        flags.append({"code": "memory-growth", "severity": "warning",
                      "message": f"RSS grew {mem['growth_during_runs_mb']:.1f} MB over the timed runs (a leak?)"})
    acc = measure.get("accuracy") or {}
    if acc.get("checked") and not acc.get("passed"):
        flags.append({"code": "accuracy", "severity": "warning",
                      "message": "outputs differ from the bundle's reference beyond its tolerance"})
    return exp, flags


__all__ = ["expectations", "input_hw", "main_engine", "model_key", "reference_match", "roofline", "threads_used"]

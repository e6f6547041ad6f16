"""The board CLI's verbs on an app bundle (`python -m edgesdk.runtime run|smoke|profile APP`): the deploy agent runs
them exactly as it runs a model bundle's, so an app is smoke-tested after a switch and rolled back as one release.

    smoke    every stage on its recorded reference inputs against its recorded outputs, sample after sample; the
             result names the first stage that fails (``first_failure``), and the app's end-to-end outputs on the
             first sample are compared with the host's
    run      the app on one input, or on several as consecutive frames (a tracker carries its state across them);
             the decoded outputs (texts, boxes, track ids) come back in the result
    profile  the reference samples through the app RUNS times: per stage (pre, each model, each step, post) and per
             frame, the milliseconds
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.app.app import App
from edgesdk.runtime.app.graph import first_failure, jsonable
from edgesdk.runtime.errors import InputError


def _frames(items: list[str], inputs: tuple[str, ...]) -> list[dict[str, Any]]:
    """--input values: FILE (the one app input of a frame; several = consecutive frames) or NAME=FILE."""
    from edgesdk.runtime.pipeline import read_image

    frames: list[dict[str, Any]] = []
    named: dict[str, Any] = {}
    for item in items:
        name, _, path = ("", "", item) if "=" not in item or Path(item).is_file() else item.partition("=")
        f = Path(path)
        if not f.is_file():
            raise InputError(f"--input {item}: no such file")
        try:
            arr = np.load(f, allow_pickle=False) if f.suffix.lower() == ".npy" else read_image(f)
        except (ValueError, OSError) as exc:
            raise InputError(f"--input {item}: not a readable .npy file: {exc}") from exc
        if name and name in inputs and len(inputs) > 1:
            named[name] = arr
            if len(named) == len(inputs):
                frames.append(named)
                named = {}
        else:
            if len(inputs) != 1:
                raise InputError(f"--input {item}: the app takes {list(inputs)}: give NAME=FILE for each")
            frames.append({inputs[0]: arr})
    if named:
        raise InputError(f"--input: a frame lacks {[n for n in inputs if n not in named]}")
    return frames


#: per verb, the options of a model bundle's verb that have no meaning on an app, and what to do instead
NOT_FOR_APPS = {
    "run": {"bench": ("--bench", "edgesdk profile times an app per stage and per frame"),
            "tensors": ("--tensors", "an app's inputs are what its first stages take: give each as NAME=FILE.npy"),
            "out_dir": ("--out-dir", "an app's outputs are decoded results: they are in the JSON result")},
    "profile": {"per_layer": ("--per-layer", "profile one model stage for its layers: its sub-bundle is "
                              "APP/stages/NAME, or APP/stages/NAME.vJ for a stage with shape variants "
                              "(edgesdk profile --host local APP/stages/NAME --per-layer); "
                              "edgesdk verify APP --per-layer names the first failing layer"),
                "frames": ("--frames", "an app's profile runs its reference samples as consecutive frames"),
                "image": ("--image", "an app's profile runs its reference samples (convert --sample DIR)")},
}


def _refuse_model_options(args: argparse.Namespace) -> None:
    for attr, (flag, instead) in NOT_FOR_APPS.get(getattr(args, "verb", ""), {}).items():
        v = getattr(args, attr, None)
        if v not in (None, False, 0):
            raise InputError(f"{args.bundle}: {flag} is for a model bundle, and this is an app: {instead}")


def _open(args: argparse.Namespace, verify: bool = True) -> App:
    _refuse_model_options(args)
    engines = getattr(args, "engine", None)
    return App(args.bundle, engines=engines or None, fallback=args.fallback, verify=verify,
               threads=int(getattr(args, "threads", 0) or 0))


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    with _open(args) as app:
        frames = _frames(args.input, app.inputs)
        app.reset()
        out = []
        t_all = time.perf_counter()
        for fr in frames:
            r = app.run(fr)
            out.append({"outputs": {k: jsonable(v) for k, v in r.outputs.items()}, "total_ms": round(r.total_ms, 3),
                        "stages": {k: {"calls": t.calls, "ms": round(t.ms, 3)} for k, t in r.timings.items()}})
        wall = (time.perf_counter() - t_all) * 1e3
        res = {"ok": True, "kind": "app", "app": app.manifest.name, "bundle": str(args.bundle),
               "bundle_id": app.manifest.bundle_id, "fallback": args.fallback, "engines_used": app.engines_used(),
               "frames": out, "latency_ms": round(wall / max(1, len(frames)), 3)}
        if len(out) == 1:
            res["outputs"] = out[0]["outputs"]
    return res, 0


def smoke(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    with _open(args) as app:
        m = app.manifest
        if not m.samples:
            raise InputError(f"{args.bundle}: the app has no reference samples to smoke-test with")
        t = time.perf_counter()
        checks = app.check()
        check_ms = (time.perf_counter() - t) * 1e3
        # end to end on the first sample, against the host's outputs (reported; the stages are the verdict)
        app.reset()
        t = time.perf_counter()
        r = app.run(app.reference_inputs()[0])
        lat = (time.perf_counter() - t) * 1e3
        app.reset()
        ref = app.reference_outputs()[0]
        e2e = {k: _same(r.outputs.get(k), v) for k, v in ref.items()}
        bad = first_failure(checks)
        res = {"ok": bad is None, "kind": "app", "app": m.name, "bundle_id": m.bundle_id, "fallback": args.fallback,
               "first_failure": bad.name if bad else None, "latency_ms": round(lat, 3),
               "check_ms": round(check_ms, 3), "engines_used": app.engines_used(),
               "checks": {c.name: c.to_dict() for c in checks}, "end_to_end": e2e,
               "tolerance": dict(m.tolerance)}
    return res, 0 if bad is None else 1


def _same(a: Any, b: Any) -> bool:
    try:
        return jsonable(a) == jsonable(b)
    except Exception:  # noqa: BLE001 - a value that cannot be shown differs
        return False


def profile(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from edgesdk.runtime import profiling as P

    if args.runs < 1 or args.warmup < 0:
        raise InputError(f"runs must be >= 1 and warmup >= 0 (got runs={args.runs}, warmup={args.warmup})")
    sys_before = P.system_snapshot()
    rss0 = P.rss_mb()
    t0 = time.perf_counter()
    with _open(args) as app:
        load_ms = (time.perf_counter() - t0) * 1e3
        m = app.manifest
        frames = app.reference_inputs()
        if not frames:
            raise InputError(f"{args.bundle}: the app has no reference samples to profile with")
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        per_stage: dict[str, list[float]] = {s.name: [] for s in m.stages}
        calls: dict[str, list[int]] = {s.name: [] for s in m.stages}
        totals: list[float] = []
        first_ms = None
        for rnd in range(args.warmup + args.runs):
            app.reset()  # each round is the same sequence of frames (a tracker starts over)
            for fr in frames:
                r = app.run(fr)
                if first_ms is None:
                    first_ms = r.total_ms
                if rnd < args.warmup:
                    continue
                totals.append(r.total_ms)
                for k, t in r.timings.items():
                    per_stage[k].append(t.ms)
                    calls[k].append(t.calls)
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        frame_mean = sum(totals) / len(totals)
        used = app.engines_used()
        stages = []
        for s in m.stages:
            xs = per_stage[s.name]
            st = P.latency_stats(xs)
            mean = sum(xs) / len(xs)
            stages.append({"name": s.name, "kind": s.kind, "step": s.step, "map": s.map,
                           "engines": sorted({u["engine"] for j in range(len(s.bundles))
                                               for u in used.get(s.sub_key(j), [])}),
                           "variants": len(s.bundles) if len(s.bundles) > 1 else None,
                           "calls_per_frame": round(sum(calls[s.name]) / len(calls[s.name]), 3),
                           "mean_ms": round(mean, 4), "p50_ms": st.get("p50_ms"), "p90_ms": st.get("p90_ms"),
                           "share": round(mean / frame_mean, 4) if frame_mean else None})
        checks = app.check() if not getattr(args, "no_check", False) else []
        bad = first_failure(checks)
        proc_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        result: dict[str, Any] = {
            "schema": P.SCHEMA, "kind": "app",
            "bundle": {"id": m.bundle_id, "path": str(args.bundle), "board": m.board, "precision": m.precision,
                       "kind": "app", "app": m.name, "stages": len(m.stages), "segments": len(m.segments),
                       "inputs": [{"name": n} for n in m.inputs], "source_model": {"name": m.name}},
            "settings": {"runs": args.runs, "warmup": args.warmup, "frames_per_run": len(frames),
                         "feed": "reference samples", "fallback": args.fallback,
                         "threads": int(getattr(args, "threads", 0) or 0), "engines": list(args.engine or [])},
            "engines_used": [{"segment": f"{st}/{u['segment']}", "engine": u["engine"], "planned": u["planned"],
                              "fallback": u["fallback"], "reason": u["reason"], "version": u["version"]}
                             for st, us in used.items() for u in us],
            "load_ms": round(load_ms, 3), "first_run_ms": round(first_ms or 0.0, 3),
            "latency": P.latency_stats(totals), "latencies_ms": [round(x, 4) for x in totals],
            "stages": stages, "segments": [], "prepost": None, "throughput": {
                "frames": len(totals), "seconds": round(wall, 4), "fps": round(len(totals) / wall, 3) if wall else None},
            "cpu": {"process_cpu_seconds": round(proc_cpu, 4), "wall_seconds": round(wall, 4),
                    "cores_busy": round(proc_cpu / wall, 3) if wall > 0 else None},
            "accuracy": ({"checked": True, "passed": bad is None, "first_failure": bad.name if bad else None,
                          "stages": {c.name: c.to_dict() for c in checks}} if checks
                         else {"checked": False, "reason": "not asked"}),
            "memory": {"rss_before_load_mb": rss0, "peak_rss_mb": round(P.peak_rss_mb(), 2)},
            "layers": None,
        }
    sys_after = P.system_snapshot()
    result["system"] = {"before": P._public(sys_before), "after": P._public(sys_after),
                        "throttling": P.throttling_flags(sys_before, sys_after), "emulated": P.emulated_info(),
                        "machine": os.uname().machine, "node": os.uname().nodename,
                        "python": "%d.%d.%d" % sys.version_info[:3], "numpy": np.__version__}
    result["emulated"] = result["system"]["emulated"] is not None
    if getattr(args, "out", None):
        import json

        Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return result, 0


def print_smoke(r: dict[str, Any]) -> None:
    print(f"smoke test of app {r['app']} ({r['bundle_id']}): {'passed' if r['ok'] else 'FAILED'}"
          + (f" - first failing stage: {r['first_failure']}" if r.get("first_failure") else ""))
    for name, c in r["checks"].items():
        print(f"  {name:<16} {c['kind']:<16} {'ok' if c['ok'] else 'FAILED'}  {c['samples']} sample(s)"
              + (f"  {c['error']}" if c.get("error") else ""))
        for o, oc in c["outputs"].items():
            if not oc.get("ok"):
                print(f"      {o}: {oc.get('problem') or oc}")


def print_run(r: dict[str, Any]) -> None:
    for i, fr in enumerate(r["frames"]):
        print(f"frame {i}: {fr['total_ms']} ms  " + "  ".join(f"{k}={v}" for k, v in fr["outputs"].items()))


def print_profile(r: dict[str, Any]) -> None:
    lat = r.get("latency") or {}
    print(f"profile of app {r['bundle']['app']} ({r['bundle']['id']}): {lat.get('count')} frames, p50 "
          f"{lat.get('p50_ms')} ms per frame" + (" (EMULATED)" if r.get("emulated") else ""))
    for s in r["stages"]:
        print(f"  {s['name']:<16} {s['kind']:<7} x{s['calls_per_frame']:<6} {s['mean_ms']:>10.3f} ms  "
              f"{100 * (s['share'] or 0):5.1f} %")


__all__ = ["print_profile", "print_run", "print_smoke", "profile", "run", "smoke"]

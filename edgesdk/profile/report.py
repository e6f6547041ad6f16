"""The profile report: a versioned JSON document (schema edgesdk.profile/1, docs/profile.md) and its result
object, with formatted times in the manner of tvmc's RPC runner result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError

SCHEMA = "edgesdk.profile/1"
#: Keys every edgesdk.profile/1 report has (docs/profile.md); `load_report` checks them.
REQUIRED = ("schema", "created_at", "target", "bundle", "settings", "engines_used", "latency", "latencies_ms",
            "segments", "memory", "system", "emulated", "expectations", "flags")


@dataclass(frozen=True)
class ProfileReport:
    """One profile of one bundle on one target. `data` is the JSON document."""

    data: dict[str, Any]

    @property
    def latency(self) -> dict[str, float]:
        return self.data["latency"]

    @property
    def emulated(self) -> bool:
        return bool(self.data["emulated"])

    @property
    def flags(self) -> list[dict[str, Any]]:
        return self.data["flags"]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=1, sort_keys=False)

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(p)
        return p

    def write_html(self, path: str | Path) -> Path:
        from edgesdk.profile.html import render_html

        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(render_html(self.data), encoding="utf-8")
        tmp.replace(p)
        return p

    def format(self) -> str:
        """A plain-text summary: latency, throughput, segments, top layers, memory, expectations, flags."""
        d = self.data
        if d.get("kind") == "app":
            return format_app(d)
        t = d["target"]
        lat = d["latency"]
        lines = [f"profile of {d['bundle']['id']} on {t['board']} ({t['host']})"
                 + ("  [EMULATED]" if d["emulated"] else "")]
        used = ", ".join(f"{u['segment']}={u['engine']}" for u in d["engines_used"])
        lines.append(f"  engines: {used}"
                     f"   runs {lat['count']}, warm-up {d['settings']['warmup']}, threads "
                     f"{d['settings']['threads'] or 'bundle default'}")
        lines.append("  latency (ms): " + "  ".join(f"{k} {lat[k + '_ms']:.3f}" for k in
                                                     ("min", "p50", "p90", "p99", "max", "mean", "stdev")))
        tp = d.get("throughput")
        if tp:
            lines.append(f"  throughput: {tp['fps']:.2f} fps through the streaming pipeline ({tp['mode']}, "
                         f"{tp['frames']} frames)")
        pp = d.get("prepost")
        if pp:
            lines.append(f"  pre-processing p50 {pp['preprocess']['p50_ms']:.3f} ms, post-processing p50 "
                         f"{pp['postprocess']['p50_ms']:.3f} ms (image {pp['image'][1]}x{pp['image'][0]})")
        lines.append("  segments (mean ms):  in-conversion / engine / out-conversion")
        for s in d["segments"]:
            conv = ",".join(s["boundary_in"]["conversions"] + s["boundary_out"]["conversions"]) or "none"
            lines.append(f"    {s['id']:<4} {s['engine']:<12} {s['kind']:<12} {s['boundary_in']['mean_ms']:.3f} / "
                         f"{s['compute']['mean_ms']:.3f} / {s['boundary_out']['mean_ms']:.3f}   conversions: {conv}")
        top = top_layers(d, 10)
        if top:
            lines.append("  slowest layers (ms, scaled to the segment's plain run):")
            for ly in top:
                lines.append(f"    {ly['ms']:8.3f}  {ly['segment']}/{ly['engine']}  {ly['type']:<16} {ly['name']}")
        for e in d.get("layers") or []:
            if not e.get("available"):
                lines.append(f"  per-layer {e['segment']} ({e['engine']}): {e['reason']}")
        m = d["memory"]
        lines.append(f"  memory: peak RSS {m['peak_rss_mb']:.1f} MB, growth over the runs "
                     f"{m['growth_during_runs_mb']:+.2f} MB")
        sysd = d["system"]
        for when in ("before", "after"):
            s = sysd[when]
            temps = ", ".join(f"{z['celsius']:.0f} C" for z in s.get("thermal") or []) or "n/a"
            clocks = ", ".join(sorted({f"{c['cur_mhz']:.0f}" for c in s.get("cpufreq") or []})) or "n/a"
            la = s.get("loadavg")
            lines.append(f"  {when}: load {la[0] if la else 'n/a'}, temperature {temps}, clock MHz {clocks}"
                         + (f", throttled {s['throttled']['raw']}" if s.get("throttled") else ""))
        exp = d["expectations"]
        rl = exp.get("roofline") or {}
        if "total_ms" in rl:
            lines.append(f"  roofline estimate: {rl['total_ms']:.2f} ms at {rl['threads']} thread(s) "
                         f"(measured p50 / estimate = {rl.get('measured_over_estimate')})"
                         + ("" if exp["compared"] else "  [not compared]"))
        elif rl.get("error"):
            lines.append(f"  roofline: {rl['error']}")
        ref = exp.get("reference")
        if ref:
            lines.append(f"  published: {ref['latency_ms']} ms ({ref['model']} {ref['input']} {ref['engine']} "
                         f"{ref['precision']} {ref['threads']}T; {ref['source']})"
                         + ("" if exp["compared"] else "  [not compared]"))
        for f in d["flags"]:
            lines.append(f"  [{f['severity']}] {f['message']}")
            for c in f.get("causes") or []:
                lines.append(f"      likely: {c}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def stage_table(d: dict[str, Any]) -> list[list[str]]:
    """An app report's stages as rows: stage, kind, engines, calls per frame, mean/p50/p90 ms, share of the frame."""
    rows = []
    for s in d.get("stages") or []:
        what = s["kind"] if s["kind"] == "model" else (s.get("step") or s["kind"])
        tags = [t for t in ("map" if s.get("map") else "", f"{s['variants']} shapes" if s.get("variants") else "") if t]
        rows.append([s["name"], what + (f" ({', '.join(tags)})" if tags else ""), ",".join(s.get("engines") or []) or "numpy",
                     f"{s['calls_per_frame']:g}", f"{s['mean_ms']:.3f}", f"{s.get('p50_ms') or 0:.3f}",
                     f"{s.get('p90_ms') or 0:.3f}", f"{100 * (s.get('share') or 0):.1f} %"])
    return rows


STAGE_HEAD = ["stage", "kind", "engine", "calls/frame", "mean ms", "p50 ms", "p90 ms", "share"]


def format_app(d: dict[str, Any]) -> str:
    """The plain-text summary of an app's profile: per frame, then per stage (pre, each model, each step, post)."""
    t, lat, b = d["target"], d["latency"], d["bundle"]
    lines = [f"profile of app {b.get('app')} ({b['id']}) on {t['board']} ({t['host']})"
             + ("  [EMULATED]" if d.get("emulated") else "")]
    st = d["settings"]
    lines.append(f"  {lat['count']} frames ({st['runs']} run(s) of {st['frames_per_run']} reference frame(s), warm-up "
                 f"{st['warmup']}); load {d.get('load_ms', 0):.0f} ms, first frame {d.get('first_run_ms', 0):.1f} ms")
    lines.append("  per frame (ms): " + "  ".join(f"{k} {lat[k + '_ms']:.3f}" for k in
                                                  ("min", "p50", "p90", "p99", "max", "mean")))
    rows = [STAGE_HEAD, *stage_table(d)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(STAGE_HEAD))]
    for r in rows:
        lines.append("    " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    acc = d.get("accuracy") or {}
    if acc.get("checked"):
        lines.append("  stages against their references: " + ("all match" if acc.get("passed") else
                                                              f"FAILED, first: {acc.get('first_failure')}"))
    m = d.get("memory") or {}
    if m.get("peak_rss_mb") is not None:
        lines.append(f"  memory: peak RSS {m['peak_rss_mb']:.1f} MB")
    for f in d.get("flags") or []:
        lines.append(f"  [{f['severity']}] {f['message']}")
    return "\n".join(lines)


def top_layers(data: dict[str, Any], n: int = 20) -> list[dict[str, Any]]:
    """The n slowest layers over all segments, times scaled so that each segment's layers add up to its plain
    (uninstrumented) engine time."""
    rows = []
    for e in data.get("layers") or []:
        if not e.get("available"):
            continue
        k = e.get("scale_to_segment") or 1.0
        for ly in e["layers"]:
            rows.append({"segment": e["segment"], "engine": e["engine"], "name": ly["name"], "type": ly["type"],
                         "ms": ly["ms"] * k, "raw_ms": ly["ms"]})
    rows.sort(key=lambda r: -r["ms"])
    return rows[:n]


def load_report(path: str | Path) -> ProfileReport:
    """Read and check a report file: the schema tag and the required keys."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable JSON profile report: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{p}: field schema: expected {SCHEMA!r}, got {got!r}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise InputError(f"{p}: missing field(s) {missing}")
    return ProfileReport(data)


__all__ = ["REQUIRED", "SCHEMA", "ProfileReport", "load_report", "top_layers"]

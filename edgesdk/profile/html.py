"""The profile report as one self-contained HTML file: inline CSS and SVG drawn here, no CDN, no external files.

Charts: latency histogram, top-20 layers (bar chart), per-segment timeline of one mean inference.
A few lines of inline JavaScript measure each drawn chart after layout (getBBox) and mark it
`data-rendered`, so a headless browser test can tell that the charts really rendered.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from edgesdk.profile.report import top_layers

COLORS = {"cpu": "#4e79a7", "accelerator": "#59a14f", "cpu-fallback": "#e15759", "conversion": "#f28e2b",
          "prepost": "#b07aa1", "bar": "#4e79a7", "grid": "#ddd"}
E = html.escape


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def histogram_svg(values: Sequence[float], width: int = 640, height: int = 240) -> str:
    if not values:
        return "<p>no runs</p>"
    lo, hi = min(values), max(values)
    n = max(5, min(40, int(math.sqrt(len(values)) * 2)))
    span = (hi - lo) or max(hi * 0.01, 1e-6)
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((v - lo) / span * n))] += 1
    ml, mb, mt = 44, 36, 10
    pw, ph = width - ml - 10, height - mb - mt
    cmax = max(counts)
    bw = pw / n
    parts = [f'<svg class="chart" id="histogram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="latency histogram">']
    for k in range(5):
        y = mt + ph - ph * k / 4
        parts.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" stroke="{COLORS["grid"]}"/>'
                     f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{round(cmax * k / 4)}</text>')
    for i, c in enumerate(counts):
        h = ph * c / cmax if cmax else 0
        x0 = lo + span * i / n
        parts.append(f'<rect class="bar" x="{ml + i * bw + 1:.1f}" y="{mt + ph - h:.1f}" width="{max(bw - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{COLORS["bar"]}"><title>{_fmt(x0)}-{_fmt(x0 + span / n)} ms: {c} '
                     f'runs</title></rect>')
    for k in range(5):
        x = ml + pw * k / 4
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle" font-size="11">'
                     f'{_fmt(lo + span * k / 4)}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 4}" text-anchor="middle" font-size="12">latency (ms)</text>')
    parts.append("</svg>")
    return "".join(parts)


def layers_svg(rows: Sequence[Mapping[str, Any]], width: int = 900) -> str:
    if not rows:
        return "<p>no per-layer times (profile with --per-layer; engines without a hook are listed below)</p>"
    bh, gap, ml, mr = 18, 4, 300, 80
    height = len(rows) * (bh + gap) + 30
    vmax = max(r["ms"] for r in rows) or 1.0
    pw = width - ml - mr
    parts = [f'<svg class="chart" id="layers" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="top layers">']
    for i, r in enumerate(rows):
        y = 6 + i * (bh + gap)
        w = pw * r["ms"] / vmax
        label = f"{r['segment']} {r['type']} {r['name']}"
        short = label if len(label) <= 44 else label[:41] + "..."
        parts.append(f'<text x="{ml - 6}" y="{y + bh - 5}" text-anchor="end" font-size="11">{E(short)}</text>'
                     f'<rect class="bar" x="{ml}" y="{y}" width="{max(w, 1):.1f}" height="{bh}" fill="{COLORS["bar"]}">'
                     f'<title>{E(label)} ({E(r["engine"])}): {_fmt(r["ms"])} ms</title></rect>'
                     f'<text x="{ml + w + 4:.1f}" y="{y + bh - 5}" font-size="11">{_fmt(r["ms"])} ms</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_items(data: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(label, colour key, mean ms) in execution order: pre, then per segment in/engine/out, then post."""
    items: list[tuple[str, str, float]] = []
    pp = data.get("prepost")
    if pp:
        items.append(("preprocess", "prepost", pp["preprocess"]["mean_ms"]))
    for s in data.get("segments") or []:
        conv_in = "+".join(s["boundary_in"]["conversions"]) or "copy"
        conv_out = "+".join(s["boundary_out"]["conversions"]) or "copy"
        items.append((f"{s['id']} in ({conv_in})", "conversion", s["boundary_in"]["mean_ms"]))
        items.append((f"{s['id']} {s['engine']} ({s['kind']})", s["kind"], s["compute"]["mean_ms"]))
        items.append((f"{s['id']} out ({conv_out})", "conversion", s["boundary_out"]["mean_ms"]))
    if pp:
        items.append(("postprocess", "prepost", pp["postprocess"]["mean_ms"]))
    return items


def timeline_svg(data: Mapping[str, Any], width: int = 900) -> str:
    items = timeline_items(data)
    total = sum(ms for _, _, ms in items) or 1.0
    ml, pw = 10, width - 20
    lane = {"prepost": 0, "conversion": 1, "cpu": 2, "cpu-fallback": 2, "accelerator": 2}
    names = ["pre/post", "boundary", "engine"]
    lh = 30
    height = 3 * lh + 60
    parts = [f'<svg class="chart" id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="per-segment timeline">']
    left = 80
    pw -= left
    for i, n in enumerate(names):
        parts.append(f'<text x="{ml}" y="{14 + i * lh + lh / 2}" font-size="11">{n}</text>')
    x = 0.0
    for label, kind, ms in items:
        w = pw * ms / total
        y = 8 + lane.get(kind, 2) * lh
        parts.append(f'<rect class="bar" x="{ml + left + x:.2f}" y="{y}" width="{max(w, 1.0):.2f}" height="{lh - 6}" '
                     f'fill="{COLORS.get(kind, COLORS["cpu"])}"><title>{E(label)}: {_fmt(ms)} ms '
                     f'({100 * ms / total:.1f} %)</title></rect>')
        if w > 60:
            parts.append(f'<text x="{ml + left + x + 3:.1f}" y="{y + lh / 2 + 1}" font-size="10" fill="#fff">'
                         f'{E(label[:int(w / 6)])}</text>')
        x += w
    for k in range(6):
        xx = ml + left + pw * k / 5
        parts.append(f'<line x1="{xx:.1f}" y1="{3 * lh + 8}" x2="{xx:.1f}" y2="{3 * lh + 14}" stroke="#333"/>'
                     f'<text x="{xx:.1f}" y="{3 * lh + 28}" text-anchor="middle" font-size="11">'
                     f'{_fmt(total * k / 5)}</text>')
    parts.append(f'<text x="{ml + left + pw / 2}" y="{height - 6}" text-anchor="middle" font-size="12">'
                 f'ms into one mean inference (total {_fmt(total)} ms)</text></svg>')
    return "".join(parts)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{E(str(x))}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{E(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


_JS = """
document.querySelectorAll('svg.chart').forEach(function (svg) {
  var n = 0;
  svg.querySelectorAll('rect.bar').forEach(function (r) { var b = r.getBBox(); if (b.width > 0 && b.height > 0) n++; });
  var box = svg.getBoundingClientRect();
  svg.parentNode.setAttribute('data-rendered', n + ' bars ' + Math.round(box.width) + 'x' + Math.round(box.height));
});
document.body.setAttribute('data-charts', document.querySelectorAll('[data-rendered]').length);
"""

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #ddd}
.emu{background:#fff3cd;border:1px solid #e0b100;padding:8px 12px;margin:10px 0;font-weight:600}
.flag{padding:6px 10px;margin:4px 0;border-left:4px solid #999;background:#f6f6f6}
.flag.warning{border-color:#e15759;background:#fdeeee} .flag.info{border-color:#4e79a7}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f0f0f0} .grid{display:flex;gap:24px;flex-wrap:wrap} .card{flex:1 1 580px}
.kpi{display:inline-block;margin:4px 18px 4px 0} .kpi b{font-size:20px;display:block}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
"""


def _head(data: Mapping[str, Any], title: str) -> list[str]:
    """The page's start: its title, host, release, date and schema."""
    t = data["target"]
    return [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{E(title)}</title>"
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{E(title)}</h1><div>host {E(str(t['host']))} &middot; release {E(str(t.get('release')))} "
            f"&middot; {E(data['created_at'])} &middot; schema {E(data['schema'])}</div>"]


def render_app_html(data: Mapping[str, Any]) -> str:
    """An app's report: per frame (histogram), per stage (a bar per stage, the stage table), stage checks."""
    from edgesdk.profile.report import STAGE_HEAD, stage_table

    t, lat, b = data["target"], data["latency"], data["bundle"]
    out = _head(data, f"edgesdk profile: app {b.get('app', b['id'])} on {t['board']}")
    if data["emulated"]:
        out.append("<div class='emu'>EMULATED board (qemu): these timings are the emulator's.</div>")
    tp = data.get("throughput") or {}
    kpis = [("frame p50", f"{_fmt(lat['p50_ms'])} ms"), ("frame p90", f"{_fmt(lat['p90_ms'])} ms"),
            ("min / max", f"{_fmt(lat['min_ms'])} / {_fmt(lat['max_ms'])} ms"),
            ("throughput", f"{tp.get('fps') or 0:.2f} fps"), ("stages", str(len(data.get("stages") or []))),
            ("peak RSS", f"{(data.get('memory') or {}).get('peak_rss_mb', 0):.0f} MB")]
    out.append("<div>" + "".join(f"<span class='kpi'>{E(k)}<b>{E(v)}</b></span>" for k, v in kpis) + "</div>")
    for f in data.get("flags") or []:
        out.append(f"<div class='flag {E(f['severity'])}'>{E(f['message'])}</div>")
    bars = [{"segment": s["name"], "type": s["kind"] if s["kind"] == "model" else (s.get("step") or s["kind"]),
             "name": f"x{s['calls_per_frame']:g}", "engine": ",".join(s.get("engines") or []) or "numpy",
             "ms": float(s["mean_ms"])} for s in data.get("stages") or []]
    out.append("<div class='grid'><div class='card'><h2>Per-frame latency histogram</h2>"
               f"<div class='chartbox'>{histogram_svg(data['latencies_ms'])}</div>"
               f"<div>{lat['count']} frames after {data['settings']['warmup']} warm-up round(s)</div></div>"
               "<div class='card'><h2>Mean ms per stage and frame</h2>"
               f"<div class='chartbox'>{layers_svg(bars)}</div></div></div>")
    out.append("<h2>Stages</h2>" + _table(STAGE_HEAD, stage_table(dict(data))))
    acc = data.get("accuracy") or {}
    if acc.get("checked"):
        rows = [[k, v.get("kind"), "ok" if v.get("ok") else "FAILED", v.get("samples"),
                 "; ".join(f"{o}: {oc.get('problem') or ('ok' if oc.get('ok') else 'differs')}"
                           for o, oc in (v.get("outputs") or {}).items())] for k, v in acc["stages"].items()]
        out.append("<h2>Stages against their references</h2>"
                   + (f"<div class='flag warn'>first failing stage: {E(str(acc.get('first_failure')))}</div>"
                      if not acc.get("passed") else "") + _table(["stage", "kind", "check", "samples", "outputs"], rows))
    out.append("<h2>Raw report</h2><details><summary>JSON</summary><pre>"
               + E(json.dumps({k: v for k, v in data.items() if k != "latencies_ms"}, indent=1)[:200000])
               + "</pre></details>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "".join(out)


def render_html(data: Mapping[str, Any]) -> str:
    if data.get("kind") == "app":
        return render_app_html(data)
    t, lat, b = data["target"], data["latency"], data["bundle"]
    out = _head(data, f"edgesdk profile: {b.get('source_model', {}).get('name', b['id'])} on {t['board']}")
    if data["emulated"]:
        out.append("<div class='emu'>EMULATED board (qemu): these timings are the emulator's and are never compared "
                   "with the board's published or estimated figures.</div>")
    tp = data.get("throughput") or {}
    kpis = [("p50", f"{_fmt(lat['p50_ms'])} ms"), ("p90", f"{_fmt(lat['p90_ms'])} ms"),
            ("p99", f"{_fmt(lat['p99_ms'])} ms"), ("min / max", f"{_fmt(lat['min_ms'])} / {_fmt(lat['max_ms'])} ms"),
            ("stdev", f"{_fmt(lat['stdev_ms'])} ms"), ("throughput", f"{tp.get('fps', 0):.1f} fps" if tp else "n/a"),
            ("peak RSS", f"{data['memory']['peak_rss_mb']:.0f} MB")]
    out.append("<div>" + "".join(f"<span class='kpi'>{E(k)}<b>{E(v)}</b></span>" for k, v in kpis) + "</div>")
    for f in data["flags"]:
        causes = "".join(f"<li>{E(c)}</li>" for c in f.get("causes") or [])
        out.append(f"<div class='flag {E(f['severity'])}'>{E(f['message'])}"
                   + (f"<ul>{causes}</ul>" if causes else "") + "</div>")
    out.append("<div class='grid'><div class='card'><h2>Latency histogram</h2>"
               f"<div class='chartbox'>{histogram_svg(data['latencies_ms'])}</div>"
               f"<div>{lat['count']} runs after {data['settings']['warmup']} warm-up</div></div>")
    out.append("<div class='card'><h2>Per-segment timeline (one mean inference)</h2>"
               f"<div class='chartbox'>{timeline_svg(data)}</div><div class='legend'>"
               + "".join(f"<span><i style='background:{COLORS[k]}'></i>{k}</span>"
                         for k in ("prepost", "conversion", "cpu", "accelerator", "cpu-fallback"))
               + "</div></div></div>")
    out.append(f"<h2>Top {min(20, len(top_layers(data, 20)))} layers</h2>"
               f"<div class='chartbox'>{layers_svg(top_layers(data, 20))}</div>")
    for e in data.get("layers") or []:
        if e.get("available"):
            out.append(f"<div>{E(e['segment'])} ({E(e['engine'])}): {len(e['layers'])} layers sum to "
                       f"{_fmt(e['layers_sum_ms'])} ms of an instrumented run of {_fmt(e['instrumented_run_ms'])} ms "
                       f"(profiler overhead x{e.get('profiler_overhead')}); bars are scaled to the plain run.</div>")
        else:
            out.append(f"<div>{E(e['segment'])} ({E(e['engine'])}): no per-layer times: {E(e['reason'])}</div>")
    out.append("<h2>Segments</h2>" + _table(
        ["segment", "engine", "kind", "threads", "in (ms)", "engine (ms)", "out (ms)", "conversions", "fallback"],
        [[s["id"], f"{s['engine']} {s['engine_version']}", s["kind"], s["threads"] or "-",
          _fmt(s["boundary_in"]["mean_ms"]), _fmt(s["compute"]["mean_ms"]), _fmt(s["boundary_out"]["mean_ms"]),
          ",".join(s["boundary_in"]["conversions"] + s["boundary_out"]["conversions"]) or "-",
          s["fallback_reason"] or "-"] for s in data["segments"]]))
    exp = data["expectations"]
    rows = []
    rl = exp.get("roofline") or {}
    if "total_ms" in rl:
        rows.append(["roofline estimate", f"{_fmt(rl['total_ms'])} ms", f"x{rl.get('measured_over_estimate')}",
                     rl["label"]])
    elif rl.get("error"):
        rows.append(["roofline estimate", "-", "-", rl["error"]])
    ref = exp.get("reference")
    if ref:
        rows.append(["published", f"{ref['latency_ms']} ms", f"x{ref.get('measured_over_published')}",
                     f"{ref['model']} {ref['input']} {ref['engine']} {ref['precision']} {ref['threads']}T; "
                     f"{ref['source']}"])
    for r in exp.get("related_references") or []:
        if r is not ref and r != ref:
            rows.append(["related (not compared)", f"{r['latency_ms']} ms", "-",
                         f"{r['model']} {r['input']} {r['engine']} {r['precision']} {r['threads']}T"])
    out.append("<h2>Expectations</h2>" + ("" if exp["compared"] else "<div>Not compared (emulated board or a "
                                          "machine that is not the board).</div>")
               + _table(["what", "value", "measured / it", "basis"], rows))
    m = data["memory"]
    pp = data.get("prepost")
    acc = data.get("accuracy") or {}
    misc = [["load", f"{_fmt(data['load_ms'])} ms"], ["first run", f"{_fmt(data['first_run_ms'])} ms"],
            ["RSS after load / after runs", f"{m['rss_after_load_mb']} / {m['rss_after_runs_mb']} MB"],
            ["RSS growth over the runs", f"{m['growth_during_runs_mb']} MB"],
            ["accuracy vs reference", ("passed" if acc.get("passed") else "FAILED") if acc.get("checked")
             else acc.get("reason", "-")]]
    if pp:
        misc += [["preprocess p50", f"{_fmt(pp['preprocess']['p50_ms'])} ms (image {pp['image']})"],
                 ["postprocess p50", f"{_fmt(pp['postprocess']['p50_ms'])} ms ({pp['postprocess_kind']})"]]
    sysd = data["system"]
    for when in ("before", "after"):
        s = sysd[when]
        misc.append([f"board {when}", f"load {s.get('loadavg')}, temps "
                     f"{[z['celsius'] for z in s.get('thermal') or []] or 'n/a'}, clocks MHz "
                     f"{sorted({c['cur_mhz'] for c in s.get('cpufreq') or []}) or 'n/a'}, throttled "
                     f"{(s.get('throttled') or {}).get('raw', 'n/a')}"])
    out.append("<h2>Run</h2>" + _table(["item", "value"], misc))
    out.append("<h2>Raw report</h2><details><summary>JSON</summary><pre>"
               + E(json.dumps({k: v for k, v in data.items() if k != "latencies_ms"}, indent=1)[:200000])
               + "</pre></details>")
    out.append(f"<script>{_JS}</script></body></html>")
    return "".join(out)


__all__ = ["histogram_svg", "layers_svg", "render_app_html", "render_html", "timeline_items", "timeline_svg"]

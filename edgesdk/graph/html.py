"""Self-contained HTML inspect report: tables plus the graph as inline SVG, nodes coloured by where they run."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgesdk.graph.report import ESTIMATE_LABEL, InspectReport

#: Beyond this many nodes the drawing is unreadable and heavy; the tables still cover every node.
MAX_DRAWN_NODES = 5000
_PALETTE = ["#2e7d32", "#1565c0", "#ef6c00", "#6a1b9a", "#c62828", "#00838f", "#5d4037", "#9e9d24"]


def _colours(rep: InspectReport) -> dict[str, str]:
    """Accelerator engine first (green), then the CPU engines."""
    seen: dict[str, str] = {}
    for s in sorted(rep.plan.segments, key=lambda s: s.target != "accelerator"):
        seen.setdefault(s.engine, s.target)
    return {e: _PALETTE[i % len(_PALETTE)] for i, e in enumerate(seen)}


def graph_svg(rep: InspectReport, colours: dict[str, str]) -> str:
    """A layered drawing: column = longest-path depth from the inputs, row = order within the column."""
    nodes = rep.node_placements
    preds: dict[str, list[str]] = {n["node"]: [] for n in nodes}
    for a, b in rep.edges:
        preds[b].append(a)
    depth: dict[str, int] = {}
    layers: dict[int, list[str]] = {}
    for n in nodes:  # topological order
        name = n["node"]
        depth[name] = 1 + max((depth[p] for p in preds[name]), default=-1)
        layers.setdefault(depth[name], []).append(name)
    w, h, gx, gy = 96, 20, 34, 8
    pos = {name: (10 + d * (w + gx), 10 + k * (h + gy)) for d, ns in layers.items() for k, name in enumerate(ns)}
    width = 20 + (max(layers, default=0) + 1) * (w + gx)
    height = 20 + max((len(v) for v in layers.values()), default=1) * (h + gy)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="9" '
           'font-family="sans-serif">']
    for a, b in rep.edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        out.append(f'<line x1="{x1 + w}" y1="{y1 + h / 2}" x2="{x2}" y2="{y2 + h / 2}" stroke="#aaa" stroke-width="0.7"/>')
    for n in nodes:
        x, y = pos[n["node"]]
        tip = html.escape(f"{n['node']} ({n['op_type']}) on {n['engine']}: {n['kind']}\n" + "\n".join(n["reasons"]))
        out.append(f'<g class="node" data-engine="{html.escape(n["engine"])}"><title>{tip}</title>'
                   f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="{colours.get(n["engine"], "#777")}"/>'
                   f'<text x="{x + 4}" y="{y + 13}" fill="#fff">{html.escape(n["op_type"][:16])}</text></g>')
    out.append("</svg>")
    return "".join(out)


def render_html(rep: InspectReport) -> str:
    e = html.escape
    colours = _colours(rep)
    rows = "".join(
        f"<tr><td>{e(r.op_type)}</td><td>{r.count}</td><td>"
        + ", ".join(f'<span style="color:{colours.get(k, "#000")}">{e(k)} {v}</span>' for k, v in r.where.items())
        + f"</td><td>{'<br>'.join(e(x) for x in r.reasons)}</td></tr>" for r in rep.ops)
    segs = "".join(
        f"<tr><td>{s.index}</td><td style='color:{colours[s.engine]}'>{e(s.engine)} ({s.target})</td>"
        f"<td>{len(s.nodes)}</td><td>{100 * s.flops_share:.1f}%</td><td>{e(', '.join(t.name for t in s.inputs))}</td>"
        f"<td>{s.input_bytes / 1e6:.2f} MB</td><td>{est.ms:.2f} ms ({est.bound}-bound)</td></tr>"
        for s, est in zip(rep.plan.segments, rep.estimates))
    rewrites = "".join(f"<li><b>{e(r.op_type)}</b> ({r.count}): {e(r.suggestion)}</li>" for r in rep.rewrites)
    legend = " ".join(f'<span style="background:{c};color:#fff;padding:2px 6px">{e(k)}</span>' for k, c in colours.items())
    graph = graph_svg(rep, colours) if len(rep.node_placements) <= MAX_DRAWN_NODES else (
        f"<p>{len(rep.node_placements)} nodes: too many to draw (limit {MAX_DRAWN_NODES}); the tables cover them all.</p>")
    acc = f"{100 * rep.accelerator_flops_share:.1f}% of FLOPs on the accelerator; " if rep.accelerator else ""
    cv = ""
    if rep.compiler_view and rep.compiler_view["first_unsupported"]:
        f = rep.compiler_view["first_unsupported"]
        cv = (f"<p>The vendor compiler alone ({e(rep.compiler_view['rule'])}) would put "
              f"{100 * rep.compiler_view['accelerator_flops_share']:.1f}% of FLOPs on the accelerator: everything after "
              f"{e(f['node'])} ({e(f['op_type'])}) stays on the CPU. The segments below are edgesdk's multi-segment "
              "split, the plan used for conversion.</p>")
    data = json.dumps(rep.to_dict(), default=str).replace("</", "<\\/")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgesdk inspect: {e(rep.model)} on {e(rep.board_id)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top;font-size:13px}}
.graph{{overflow:auto;border:1px solid #ddd;max-height:80vh}}</style></head><body>
<h1>{e(rep.model)} on {e(rep.board_name)} ({e(rep.board_id)})</h1>
<p>{rep.nodes} nodes, {rep.total_flops / 1e9:.2f} GFLOPs. Accelerator: {e(rep.accelerator or "none (CPU engines only)")};
partition rule: {e(rep.partition_rule)}.</p>
<p>{acc}{len(rep.plan.segments)} segment(s), {len(rep.plan.transfers)} transfer(s), {rep.plan.handoffs}
CPU/accelerator hand-offs ({rep.transfer_bytes / 1e6:.2f} MB). Latency ~{rep.estimate_ms:.1f} ms:
{e(ESTIMATE_LABEL)}.</p>{cv}
<h2>Graph</h2><p>{legend} (hover a node for why it runs there)</p><div class="graph">{graph}</div>
<h2>Ops</h2><table><tr><th>op type</th><th>count</th><th>runs on</th><th>why</th></tr>{rows}</table>
<h2>Segments</h2><table><tr><th>#</th><th>engine</th><th>nodes</th><th>FLOPs</th><th>inputs</th><th>in bytes</th>
<th>estimate</th></tr>{segs}</table>
<h2>Suggested rewrites</h2><ul>{rewrites or "<li>none</li>"}</ul>
<h2>Notes</h2><ul>{"".join(f"<li>{e(n)}</li>" for n in rep.notes) or "<li>none</li>"}</ul>
<script type="application/json" id="report">{data}</script>
</body></html>
"""


def write_html(rep: InspectReport, path: str | Path) -> Path:
    p = Path(path)
    p.write_text(render_html(rep), encoding="utf-8")
    return p


__all__ = ["MAX_DRAWN_NODES", "graph_svg", "render_html", "write_html"]

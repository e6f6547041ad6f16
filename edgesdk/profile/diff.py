"""`edgesdk profile diff A.json B.json`: what changed between two profiles, and whether it is more than noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgesdk.profile.report import ProfileReport, top_layers

#: A change counts when it is over this share of A and over twice the combined standard error.
MIN_CHANGE = 0.05


@dataclass(frozen=True)
class ProfileDiff:
    a: str
    b: str
    rows: tuple[dict[str, Any], ...]
    segments: tuple[dict[str, Any], ...]
    layers: tuple[dict[str, Any], ...]
    verdict: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgesdk.profile-diff/1", "a": self.a, "b": self.b, "verdict": self.verdict,
                "metrics": list(self.rows), "segments": list(self.segments), "layers": list(self.layers),
                "notes": list(self.notes)}

    def format(self) -> str:
        out = [f"A: {self.a}", f"B: {self.b}", f"verdict: {self.verdict}"]
        out.append(f"  {'metric':<26}{'A':>12}{'B':>12}{'change':>10}")
        for r in self.rows:
            ch = f"{r['change_pct']:+.1f}%" if r["change_pct"] is not None else "-"
            out.append(f"  {r['metric']:<26}{_f(r['a']):>12}{_f(r['b']):>12}{ch:>10}"
                       + ("  *" if r.get("significant") else ""))
        if self.segments:
            out.append("  segments (engine mean ms):")
            for s in self.segments:
                ch = f"{s['change_pct']:+.1f}%" if s["change_pct"] is not None else "-"
                out.append(f"    {s['segment']:<6}{s['engine_a'] or '-':>12}{s['engine_b'] or '-':>12}"
                           f"{_f(s['a']):>12}{_f(s['b']):>12}{ch:>10}")
        if self.layers:
            out.append("  largest per-layer changes (ms):")
            for ly in self.layers:
                out.append(f"    {ly['delta_ms']:+9.3f}  {ly['segment']}/{ly['name']} ({_f(ly['a'])} -> {_f(ly['b'])})")
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def _f(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _pct(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return 100.0 * (b - a) / a


def diff(a: ProfileReport, b: ProfileReport, a_name: str = "A", b_name: str = "B") -> ProfileDiff:
    da, db = a.data, b.data
    la, lb = da["latency"], db["latency"]
    rows = []
    se = math.sqrt((la.get("stdev_ms", 0) ** 2) / max(la.get("count", 1), 1)
                   + (lb.get("stdev_ms", 0) ** 2) / max(lb.get("count", 1), 1))
    for k in ("min", "p50", "p90", "p99", "max", "mean", "stdev"):
        va, vb = la.get(f"{k}_ms"), lb.get(f"{k}_ms")
        ch = _pct(va, vb)
        sig = (k in ("p50", "mean") and ch is not None and abs(ch) >= 100 * MIN_CHANGE
               and abs(vb - va) > 2 * se)
        rows.append({"metric": f"latency {k} (ms)", "a": va, "b": vb, "change_pct": ch, "significant": sig})
    ta, tb = (da.get("throughput") or {}).get("fps"), (db.get("throughput") or {}).get("fps")
    rows.append({"metric": "throughput (fps)", "a": ta, "b": tb, "change_pct": _pct(ta, tb), "significant": False})
    for k, label in (("peak_rss_mb", "peak RSS (MB)"), ("growth_during_runs_mb", "RSS growth (MB)")):
        va, vb = da["memory"].get(k), db["memory"].get(k)
        rows.append({"metric": label, "a": va, "b": vb, "change_pct": _pct(va, vb), "significant": False})
    for k, label in (("preprocess", "preprocess p50 (ms)"), ("postprocess", "postprocess p50 (ms)")):
        va = ((da.get("prepost") or {}).get(k) or {}).get("p50_ms")
        vb = ((db.get("prepost") or {}).get(k) or {}).get("p50_ms")
        if va is not None or vb is not None:
            rows.append({"metric": label, "a": va, "b": vb, "change_pct": _pct(va, vb), "significant": False})
    sa = {s["id"]: s for s in da["segments"]}
    sb = {s["id"]: s for s in db["segments"]}
    segs = []
    for sid in list(sa) + [k for k in sb if k not in sa]:
        x, y = sa.get(sid), sb.get(sid)
        va = x["compute"]["mean_ms"] if x else None
        vb = y["compute"]["mean_ms"] if y else None
        segs.append({"segment": sid, "engine_a": x["engine"] if x else None, "engine_b": y["engine"] if y else None,
                     "a": va, "b": vb, "change_pct": _pct(va, vb)})
    lay_a = {(r["segment"], r["name"]): r["ms"] for r in top_layers(da, 10**6)}
    lay_b = {(r["segment"], r["name"]): r["ms"] for r in top_layers(db, 10**6)}
    deltas = []
    for key in set(lay_a) | set(lay_b):
        va, vb = lay_a.get(key), lay_b.get(key)
        deltas.append({"segment": key[0], "name": key[1], "a": va, "b": vb, "delta_ms": (vb or 0.0) - (va or 0.0)})
    deltas.sort(key=lambda r: -abs(r["delta_ms"]))
    notes = []
    if da["bundle"]["id"] != db["bundle"]["id"]:
        notes.append(f"different bundles: {da['bundle']['id']} vs {db['bundle']['id']}")
    if da["target"].get("board") != db["target"].get("board") or da["target"].get("host") != db["target"].get("host"):
        notes.append(f"different targets: {da['target'].get('board')}@{da['target'].get('host')} vs "
                     f"{db['target'].get('board')}@{db['target'].get('host')}")
    if da["emulated"] != db["emulated"]:
        notes.append("one run is on an emulated board: the timings are not comparable")
    if da["settings"].get("threads") != db["settings"].get("threads"):
        notes.append(f"threads differ: {da['settings'].get('threads')} vs {db['settings'].get('threads')}")
    p50 = rows[1]
    if not p50["significant"]:
        verdict = "no significant change in p50 latency"
    else:
        verdict = (f"B is {'slower' if p50['change_pct'] > 0 else 'faster'} by {abs(p50['change_pct']):.1f}% "
                   f"(p50 {p50['a']:.3f} -> {p50['b']:.3f} ms)")
    return ProfileDiff(a_name, b_name, tuple(rows), tuple(segs), tuple(deltas[:10]), verdict, tuple(notes))


__all__ = ["ProfileDiff", "diff"]

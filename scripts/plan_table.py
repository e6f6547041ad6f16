"""Before/after table of the NPU plans (issue 14) on the real-model zoo, measured in one run.

Before: edgesdk's multi-segment partition as it was (``--plan split --no-rewrite``: islands folded by hand-off count,
no rewrite). After: the default (the rewrites the accelerator needs, then the candidate plan with the lowest estimated
latency). Both are costed by the same latency model (edgesdk.graph.cost), beside the whole model on the CPU.

Usage: python scripts/plan_table.py [--zoo ppocr-det,yolov8n-nudenet] [--boards coral-usb,kv260] [--out FILE.md]
       [--json FILE.json]
The zoo's ONNX models come from scripts/zoo_fetch.py's cache (~/.cache/edgesdk/zoo).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NPU_BOARDS = ["coral-usb", "kv260", "hi3519a", "x3", "rk3588", "imx93"]


def _zoo(ids: list[str] | None) -> list[tuple[str, Path, dict[str, tuple[int, ...]]]]:
    from edgesdk.graph import parse_input_shape

    doc = yaml.safe_load((ROOT / "scripts" / "zoo_models.yaml").read_text(encoding="utf-8"))
    cache = Path.home() / ".cache" / "edgesdk" / "zoo"
    out = []
    for m in doc["models"]:
        if m.get("format") != "onnx" or (ids and m["id"] not in ids):
            continue
        f = cache / m["id"] / Path(m["member"]).name
        if not f.is_file():
            print(f"skip {m['id']}: {f} missing (scripts/zoo_fetch.py)", file=sys.stderr)
            continue
        out.append((m["id"], f, dict(parse_input_shape(s) for s in m.get("inputs") or [])))
    return out


def _row(a, rep) -> dict:  # noqa: ANN001 - Analysis, InspectReport
    cpu = next(c for c in a.choice.candidates if c.name == "cpu") if a.choice else None
    return {"plan": a.choice.chosen.name if a.choice else "cpu-board", "segments": len(a.plan.segments),
            "handoffs": a.plan.handoffs, "accelerator_flops_share": a.plan.accelerator_flops_share,
            "estimate_ms": rep.estimate_ms, "cpu_ms": cpu.ms if cpu else rep.estimate_ms,
            "rewrites": [f"{r.rule} x{r.count}" for r in (a.rewrites.applied if a.rewrites else ())]}


def measure(models, boards: list[str]) -> list[dict]:  # noqa: ANN001
    from edgesdk.boards import get_board
    from edgesdk.graph.report import analyze, build_report
    from edgesdk.graph.source import opened

    rows = []
    for mid, path, shapes in models:
        with opened(path, shapes or None, True, None) as o:
            for b in boards:
                board = get_board(b)
                t0 = time.perf_counter()
                before = analyze(o.model, board, plan="split", rewrite=False)
                rb = build_report(before)
                t1 = time.perf_counter()
                after = analyze(o.model, board)
                ra = build_report(after)
                t2 = time.perf_counter()
                top = ra.blockers[0] if ra.blockers else None
                rows.append({"model": mid, "board": b, "before": _row(before, rb), "after": _row(after, ra),
                             "seconds": {"before": round(t1 - t0, 3), "after": round(t2 - t1, 3)},
                             "top_blocker": top.to_dict() if top else None,
                             "calibrated": bool(ra.cost and ra.cost.calibrated)})
                print(f"{mid:18s} {b:10s} before {rows[-1]['before']['segments']:4d} seg "
                      f"{rows[-1]['before']['estimate_ms']:8.1f} ms  after {rows[-1]['after']['segments']:4d} seg "
                      f"{rows[-1]['after']['estimate_ms']:8.1f} ms ({rows[-1]['after']['plan']})  "
                      f"cpu {rows[-1]['after']['cpu_ms']:8.1f} ms", file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| model | board | before: segments / hand-offs | before: FLOPs on acc. | before: est. ms | "
            "after: plan | after: segments / hand-offs | after: FLOPs on acc. | after: est. ms | all-CPU est. ms | "
            "after / all-CPU | rewrites applied | what still blocks most (est. gain) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        b, a = r["before"], r["after"]
        tb = r["top_blocker"]
        block = f"{tb['op_type']} x{tb['count']} ({tb['gain_ms']:.1f} ms)" if tb else "-"
        lines.append(
            f"| {r['model']} | {r['board']} | {b['segments']} / {b['handoffs']} | "
            f"{100 * b['accelerator_flops_share']:.1f}% | {b['estimate_ms']:.1f} | {a['plan']} | "
            f"{a['segments']} / {a['handoffs']} | {100 * a['accelerator_flops_share']:.1f}% | {a['estimate_ms']:.1f} | "
            f"{a['cpu_ms']:.1f} | {a['estimate_ms'] / a['cpu_ms']:.2f} | {', '.join(a['rewrites']) or '-'} | {block} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", help="comma-separated zoo ids (default: every ONNX model of the zoo)")
    ap.add_argument("--boards", default=",".join(NPU_BOARDS))
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    ap.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    models = _zoo(args.zoo.split(",") if args.zoo else None)
    if not models:
        print("no zoo model found: run scripts/zoo_fetch.py", file=sys.stderr)
        return 2
    rows = measure(models, args.boards.split(","))
    md = markdown(rows)
    if args.out:
        args.out.write_text(md, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(md)
    worse = [r for r in rows if r["after"]["estimate_ms"] > r["after"]["cpu_ms"] + 1e-9]
    if worse:
        print(f"{len(worse)} chosen plan(s) estimated slower than all-CPU: a bug", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Calibrate edgesdk's latency cost model (edgesdk.graph.cost) against the boards' published reference latencies.

For each board, every `reference_latencies` row whose network edgesdk.graph.refnets builds is estimated as the row
was measured: the whole model on the accelerator for accelerator rows (the row's engine is the board's accelerator
engine), else the whole model on the CPU with the row's threads and precision. The board's free figures (CPU conv /
depthwise utilisation, parallel efficiency, int8 efficiency; accelerator conv / depthwise utilisation, invocation
cost) are fitted by least squares on log(estimate / published), within physical bounds and with a weak pull toward
the uncalibrated defaults (so a figure the rows cannot see stays at its default instead of running to a bound).

  .venv/bin/python scripts/calibrate_cost.py                 # fit every board, print the figures and the table
  .venv/bin/python scripts/calibrate_cost.py --board rpi4 --out table.md --json fit.json
  .venv/bin/python scripts/calibrate_cost.py --check         # the figures AS WRITTEN in boards/*.yaml: exit 1 if
                                                             # any fitted row is outside +-30 %

The yamls, not this script, are the truth: the fitted values are written into each board's `cost:` section by hand,
with their derivation; --check then holds the yamls to the published figures (tests/unit/test_cost_model.py too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesdk.boards import BoardProfile, ReferenceLatency, list_boards  # noqa: E402
from edgesdk.graph import cost, refnets  # noqa: E402

TOLERANCE = 0.30

#: rows measured under conditions unlike the board's profile: estimated and listed, left out of the fit and the
#: check. (board id, substring of the row's `conditions`) -> why
UNLIKE = {
    ("coral-usb", "not a Pi 4"): "measured on a desktop host (C++ benchmark), not the Pi 4 the profile describes",
    ("rpi4", "1.5 GHz"): "measured at 1.5 GHz; the profile's clock is 1.8 GHz",
}

#: CPU figures a board takes from another board's yaml instead of fitting them: (board, why, figures)
CPU_FROM = {
    "coral-usb": ("rpi4", "the host is a Raspberry Pi 4", (
        "cpu.conv", "cpu.depthwise", "cpu_parallel_efficiency", "cpu_int8_efficiency", "cpu_bandwidth_efficiency")),
    "rk3588": ("rpi5", "the same 4x Cortex-A76 at 2.4 GHz; rk3588's CPU rows are all 4-thread fp16",
               ("cpu_parallel_efficiency", "cpu_int8_efficiency")),
}

#: free figures: name -> (default = the prior, lower bound, upper bound)
FIGURES = {
    "cpu.conv": (0.4, 0.02, 1.0),
    "cpu.depthwise": (0.15, 0.01, 1.0),
    "cpu_parallel_efficiency": (0.7, 0.05, 1.0),
    "cpu_int8_efficiency": (0.7, 0.1, 1.0),
    # floor 0.3: a layer's traffic gets at least 30 % of the bandwidth (below that the figure would stand for other
    # costs, e.g. depthwise layers that do not scale with threads, and make CPU hand-offs look dearer than they are)
    "cpu_bandwidth_efficiency": (1.0, 0.3, 1.0),
    "cpu.elementwise": (0.1, 0.005, 1.0),
    "accelerator.conv": (0.3, 0.01, 1.0),
    "accelerator.depthwise": (0.1, 0.002, 1.0),
    "invoke_ms": (0.5, 0.01, 20.0),
}
PRIOR_WEIGHT = 0.05  # residual per log-unit of a figure's distance from its default


@dataclass
class Row:
    board: str
    ref: ReferenceLatency
    target: str | None  # accelerator | cpu | None (no network)
    precision: str
    threads: int
    note: str = ""  # why not fitted, how the row was read
    fitted: bool = True
    model: object = None
    estimate_ms: float | None = None

    @property
    def error(self) -> float | None:
        return None if self.estimate_ms is None else self.estimate_ms / self.ref.latency_ms - 1


_MODELS: dict[tuple[str, str], object] = {}


def load(row_model: str, row_input: str) -> object | None:
    """The prepared edgesdk Model of a row's network (cached per process), or None."""
    from edgesdk.graph.source import opened

    key = (row_model, row_input)
    if key not in _MODELS:
        path = refnets.network(row_model, row_input)
        if path is None:
            _MODELS[key] = None
        else:
            with opened(path, refnets.input_shape(path, row_input), True) as o:
                _MODELS[key] = o.model
    return _MODELS[key]


def ensure_zoo(log: bool = True) -> bool:
    """Fetch the zoo's YOLOv8n (the yolov8n rows' network) with scripts/zoo_fetch.py if it is not cached."""
    if refnets.network("yolov8n", "640x640") is not None:
        return True
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_fetch_for_calibration", Path(__file__).with_name("zoo_fetch.py"))
    zf = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(zf)
    try:
        zf.fetch([refnets.ZOO_YOLOV8N[0]], log=(lambda m: print(m, file=sys.stderr)) if log else None)
    except Exception as exc:  # noqa: BLE001 - offline: the rows are then listed without a network
        print(f"calibrate_cost: could not fetch the zoo's YOLOv8n ({exc}); its rows are not estimated",
              file=sys.stderr)
    return refnets.network("yolov8n", "640x640") is not None


def rows_of(board: BoardProfile) -> list[Row]:
    out = []
    acc = board.accelerator
    for ref in board.reference_latencies:
        target = "accelerator" if acc is not None and ref.engine == acc.engine else "cpu"
        precision, note = ref.precision, ""
        if target == "accelerator":
            precision = "int8"
        elif ref.engine == "ncnn" and ref.precision == "fp32" and "fp16" in board.cpu.features:
            precision = "fp16"  # benchncnn turns on fp16 arithmetic where the CPU has it (ncnn src/option.cpp)
            note = "ncnn runs fp32 models with fp16 arithmetic on this CPU: estimated as fp16"
        threads = ref.threads or (1 if target == "accelerator" else board.cpu.cores)
        if target == "accelerator":
            threads = board.cpu.cores
        r = Row(board.id, ref, target, precision, threads, note)
        cpu_engine = next(e for e in board.engines if acc is None or e != acc.engine)
        if target == "cpu" and ref.engine != cpu_engine:
            r.fitted, r.note = False, (f"{ref.engine} is not the board's CPU engine ({cpu_engine}, what plans "
                                       f"estimate)")
        for (bid, cond), why in UNLIKE.items():
            if bid == board.id and cond in (ref.conditions or ""):
                r.fitted, r.note = False, why
        m = load(ref.model, ref.input)
        if m is not None and refnets.ROW_MODELS[ref.model][0] == "yolov8n_zoo":
            r.note = "; ".join(filter(None, [r.note, "the zoo's YOLOv8n (yolov8n-nudenet: 18 classes, not COCO's 80)"]))
        if m is None:
            r.target, r.fitted, r.note = None, False, refnets.NO_NETWORK_REASON
        r.model = m
        out.append(r)
    return out


def _params(board: BoardProfile, row: Row, values: dict[str, float] | None) -> cost.Params:
    p = cost.params(board, row.threads, row.precision)
    if not values:
        return p
    cu = dict(p.cpu_util)
    au = dict(p.acc_util)
    for k, v in values.items():
        if k.startswith("cpu.") and k[4:] in cu:
            cu[k[4:]] = v
        if k.startswith("accelerator.") and k[12:] in au:
            au[k[12:]] = v
    cu["matmul"] = cu["conv"]  # not identifiable from these networks: matmul follows conv
    au["matmul"] = au["conv"]
    c = board.cost
    par = values.get("cpu_parallel_efficiency",
                     c.cpu_parallel_efficiency.value if c and c.cpu_parallel_efficiency else cost._DEFAULT_PARALLEL)
    i8 = values.get("cpu_int8_efficiency")
    peak = cost.cpu_threads_peak(board, row.precision, row.threads, par, i8)
    inv = values.get("invoke_ms", p.invoke_ms) if board.accelerator is not None else 0.0
    bw = p.cpu_bw
    if "cpu_bandwidth_efficiency" in values:
        bw = (board.memory.measured_gbs or board.memory.bandwidth_gbs).value * 1e9 * values["cpu_bandwidth_efficiency"]
    return dataclasses.replace(p, cpu_util=cu, acc_util=au, cpu_peak=peak, invoke_ms=inv, cpu_bw=bw)


def estimate(board: BoardProfile, row: Row, values: dict[str, float] | None = None) -> float:
    p = _params(board, row, values)
    return cost.all_on(row.model, board, row.target, threads=row.threads, precision=row.precision, p=p).total_ms


def free_figures(board: BoardProfile, rows: list[Row]) -> list[str]:
    """The figures the board's fitted rows can see."""
    fit = [r for r in rows if r.fitted]
    names = []
    for tgt, pre in (("cpu", "cpu"), ("accelerator", "accelerator")):
        rs = [r for r in fit if r.target == tgt]
        if not rs:
            continue
        taken = CPU_FROM.get(board.id, ("", "", ()))[2] if tgt == "cpu" else ()
        if f"{pre}.conv" not in taken:
            names.append(f"{pre}.conv")
        if f"{pre}.depthwise" not in taken and any(
                cost.op_class(r.model, j) == "depthwise" for r in rs for j in range(len(r.model.nodes))):
            names.append(f"{pre}.depthwise")
        if tgt == "cpu":
            if len({r.threads for r in rs}) > 1:
                names += ["cpu_parallel_efficiency", "cpu_bandwidth_efficiency", "cpu.elementwise"]
            if {r.precision for r in rs} & {"int8"} and {r.precision for r in rs} - {"int8"}:
                names.append("cpu_int8_efficiency")
        else:
            names.append("invoke_ms")
    return names


def _figure_value(board: BoardProfile, name: str) -> float | None:
    c = board.cost
    if c is None:
        return None
    grp, _, k = name.partition(".")
    f = getattr(getattr(c, grp), k) if k and getattr(c, grp) is not None else getattr(c, name, None)
    return None if f is None else float(f.value)


def taken_figures(board: BoardProfile) -> dict[str, float]:
    """The figures CPU_FROM gives `board`: the other board's, as written in its yaml."""
    if board.id not in CPU_FROM:
        return {}
    other_id, _, names = CPU_FROM[board.id]
    other = next(b for b in list_boards() if b.id == other_id)
    return {n: v for n in names if (v := _figure_value(other, n)) is not None}


def fit(board: BoardProfile, rows: list[Row]) -> dict[str, float]:
    import numpy as np
    from scipy.optimize import least_squares

    names = [n for n in free_figures(board, rows) if n not in CPU_FROM.get(board.id, ("", "", ()))[2]]
    fit_rows = [r for r in rows if r.fitted and r.target is not None]
    if not names or not fit_rows:
        return {}
    base = taken_figures(board)
    x0 = np.log([FIGURES[n][0] for n in names])
    lo = np.log([FIGURES[n][1] for n in names])
    hi = np.log([FIGURES[n][2] for n in names])

    def resid(x: np.ndarray) -> np.ndarray:
        vals = dict(base, **dict(zip(names, np.exp(x))))
        r = [math.log(estimate(board, row, vals) / row.ref.latency_ms) for row in fit_rows]
        return np.array(r + list(PRIOR_WEIGHT * (x - x0)))

    sol = least_squares(resid, np.clip(x0, lo + 1e-9, hi - 1e-9), bounds=(lo, hi), diff_step=1e-3)
    return dict(zip(names, (float(v) for v in np.exp(sol.x))))


def table(rows: Iterable[Row]) -> str:
    out = ["| board | model | input | engine | precision | threads | published ms | estimate ms | error | note |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        est = "—" if r.estimate_ms is None else f"{r.estimate_ms:.2f}"
        err = "—" if r.error is None else f"{100 * r.error:+.0f} %"
        thr = "" if r.target is None else (str(r.ref.threads or "") if r.target == "accelerator" else str(r.threads))
        note = ("" if r.fitted else "not fitted: ") + r.note if (r.note or not r.fitted) else ""
        out.append(f"| {r.board} | {r.ref.model} | {r.ref.input} | {r.ref.engine} | {r.precision} | {thr} | "
                   f"{r.ref.latency_ms:g} | {est} | {err} | {note} |")
    return "\n".join(out)


def summary(board: BoardProfile, rows: list[Row]) -> str:
    fitted = [r for r in rows if r.fitted and r.error is not None]
    if not fitted:
        return f"{board.id}: no fitted rows ({len(board.reference_latencies)} reference rows)"
    worst = max(fitted, key=lambda r: abs(r.error))
    return (f"{board.id}: {len(fitted)} fitted rows, max |error| {100 * abs(worst.error):.0f} % "
            f"({worst.ref.model} {worst.ref.input} {worst.ref.engine} {worst.precision})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", action="append", help="board id (repeatable; default: every board)")
    ap.add_argument("--check", action="store_true", help="no fit: estimate with the yamls' figures, exit 1 if a "
                                                         "fitted row is outside +-30 %%")
    ap.add_argument("--out", help="write the table (markdown) here")
    ap.add_argument("--json", help="write the rows and the fitted figures (JSON) here")
    a = ap.parse_args(argv)
    if not refnets.available():
        print("calibrate_cost: needs torch and torchvision (pip install 'edgesdk[torch]')", file=sys.stderr)
        return 2
    ensure_zoo()
    boards = [b for b in list_boards() if not a.board or b.id in a.board]
    all_rows: list[Row] = []
    fits: dict[str, dict[str, float]] = {}
    bad = []
    summaries = []
    for b in boards:
        rows = rows_of(b)
        vals = None
        if not a.check:
            vals = fit(b, rows)
            fits[b.id] = vals
            print(f"{b.id}: fitted {', '.join(f'{k}={v:.4g}' for k, v in vals.items()) or 'nothing'}")
        for r in rows:
            if r.target is not None:
                r.estimate_ms = estimate(b, r, vals)
            if r.fitted and r.error is not None and abs(r.error) > TOLERANCE:
                bad.append(r)
        all_rows += rows
        summaries.append(summary(b, rows))
    md = table(all_rows)
    print(md)
    print("\n".join(summaries))
    if a.out:
        Path(a.out).write_text(md + "\n\n" + "\n".join(f"- {s}" for s in summaries) + "\n", encoding="utf-8")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "fitted": fits, "figures": "yaml" if a.check else "fitted",
            "rows": [{"board": r.board, "model": r.ref.model, "input": r.ref.input, "engine": r.ref.engine,
                      "precision": r.precision, "threads": r.threads if r.target else None,
                      "published_ms": r.ref.latency_ms, "estimate_ms": r.estimate_ms, "error": r.error,
                      "fitted": r.fitted, "note": r.note} for r in all_rows]}, indent=1), encoding="utf-8")
    if bad:
        print(f"{len(bad)} fitted row(s) outside +-{100 * TOLERANCE:.0f} %: "
              + "; ".join(f"{r.board} {r.ref.model} {100 * r.error:+.0f} %" for r in bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

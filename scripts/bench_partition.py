"""Benchmark: load + shape inference + support check + partition + plan choice (+ rewrites, + writing segments).

Usage: python scripts/bench_partition.py [--sizes 1000,10000,50000] [--board coral-usb] [--write-segments]
Graphs are conv/relu chains with skip branches and an unsupported op (HardSwish) every ~25 nodes. "plan choice" is
edgesdk.graph.plans.choose on the partition's support (the candidates cpu, vendor, split, merged, each costed);
"rewrites" is edgesdk.graph.rewrite.apply_rewrites (the sites, the support check per round, the onnxruntime proof).
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgesdk.boards import get_board
from edgesdk.graph import check_support, load_model, partition, write_segments
from edgesdk.graph.plans import choose
from edgesdk.graph.rewrite import apply_rewrites


def generate(n: int, c: int = 8, hw: int = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((c, c, 1, 1)) * 0.1).astype(np.float32), "w")
    nodes, cur, skip, i = [], "x", "x", 0
    while len(nodes) < n:
        k = len(nodes)
        if k % 25 == 24:
            nodes.append(helper.make_node("HardSwish", [cur], [f"t{i}"], name=f"n{i}"))
        elif k % 9 == 8:
            nodes.append(helper.make_node("Add", [cur, skip], [f"t{i}"], name=f"n{i}"))
            skip = f"t{i}"
        elif k % 2:
            nodes.append(helper.make_node("Relu", [cur], [f"t{i}"], name=f"n{i}"))
        else:
            nodes.append(helper.make_node("Conv", [cur, "w"], [f"t{i}"], name=f"n{i}"))
        cur, i = f"t{i}", i + 1
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, c, hw, hw])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def bench(n: int, board_id: str, write: bool) -> dict[str, float]:
    board = get_board(board_id)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        onnx.save_model(generate(n), str(p))
        t0 = time.perf_counter()
        model = load_model(p)
        t1 = time.perf_counter()
        support = check_support(model, board)
        t2 = time.perf_counter()
        plan = partition(model, board, support)
        t3 = time.perf_counter()
        choice = choose(model, board, support) if board.accelerator is not None else None
        t4 = time.perf_counter()
        rw = apply_rewrites(model, board)
        t5 = time.perf_counter()
        if write:
            write_segments(model, plan, Path(d) / "out")
        t6 = time.perf_counter()
    return {"n": n, "load": t1 - t0, "support": t2 - t1, "partition": t3 - t2, "choice": t4 - t3,
            "total": t4 - t0, "rewrites": t5 - t4, "write": t6 - t5 if write else float("nan"),
            "segments": len(plan.segments),
            "chosen": f"{choice.chosen.name} ({len(choice.chosen.plan.segments)})" if choice else "-",
            "rewritten": sum(a.count for a in rw.applied)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,50000")
    ap.add_argument("--board", default="coral-usb")
    ap.add_argument("--write-segments", action="store_true")
    args = ap.parse_args()
    rows = [bench(int(s), args.board, args.write_segments) for s in args.sizes.split(",")]
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"onnx {onnx.__version__}, board {args.board}")
    print("| nodes | segments | load + shape inference (s) | support (s) | partition (s) | plan choice (s) | chosen "
          "(segments) | total (s) | total / (N log2 N) (us) | rewrites (s) | sites rewritten | write segments (s) |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        nlogn = r["n"] * math.log2(r["n"])
        print(f"| {r['n']} | {r['segments']} | {r['load']:.3f} | {r['support']:.3f} | {r['partition']:.3f} | "
              f"{r['choice']:.3f} | {r['chosen']} | {r['total']:.3f} | {1e6 * r['total'] / nlogn:.3f} | "
              f"{r['rewrites']:.3f} | {r['rewritten']} | "
              + ("-" if math.isnan(r["write"]) else f"{r['write']:.2f}") + " |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Conversion benchmark: time and artifact size per engine and precision (and held-out accuracy for digits).

Usage:
  .venv/bin/python scripts/bench_convert.py                      # the digits CNN (tests/data), with accuracy
  .venv/bin/python scripts/bench_convert.py --model M.onnx --input-shape x=1,3,224,224 --calib-random 64

Prints a markdown table (the "## Conversion" section of docs/benchmarks.md) and, with --json, the rows.
For a model without a calibration set, --calib-random N makes N random images: fine for time and size,
meaningless for accuracy (the table then has none).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

COMBOS = [("ncnn", "fp32"), ("ncnn", "fp16"), ("mnn", "fp32"), ("mnn", "fp16"), ("mnn", "int8"),
          ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("onnxruntime", "fp32"),
          ("onnxruntime", "int8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "tests" / "data" / "digits_cnn.onnx")
    ap.add_argument("--input-shape", default=None)
    ap.add_argument("--calib-random", type=int, default=0)
    ap.add_argument("--board", default="rpi4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from PIL import Image

    from edgesdk.conversion import convert
    from edgesdk.graph.load import parse_input_shape
    from edgesdk.verify import evaluate_accuracy

    digits = args.model.name == "digits_cnn.onnx"
    shapes = dict([parse_input_shape(args.input_shape)]) if args.input_shape else None
    tmp = Path(tempfile.mkdtemp(prefix="edgesdk-bench-"))
    calib = tmp / "calib"
    calib.mkdir()
    pre = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize": "stretch"}
    if digits:
        from test_convert_engines import images

        for i, im in enumerate(images("calib")[0]):
            Image.fromarray(im[..., ::-1]).save(calib / f"{i:04d}.png")
        x, y = images("heldout")
    else:
        r = np.random.default_rng(0)
        for i in range(args.calib_random or 32):
            Image.fromarray(r.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(calib / f"{i:04d}.png")
        pre = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize": "stretch"}
    rows = []
    for engine, precision in COMBOS:
        out = tmp / f"{engine}_{precision}"
        t0 = time.perf_counter()
        try:
            res = convert(args.model, args.board, out, precision=precision, engine=engine, preprocess=pre,
                          input_shapes=shapes, calib=calib if precision == "int8" else None)
        except Exception as exc:  # a benchmark reports failures as rows
            rows.append({"engine": engine, "precision": precision, "error": str(exc).splitlines()[0]})
            continue
        total = time.perf_counter() - t0
        seg = res.segments
        row = {"engine": engine, "precision": precision, "segments": [s.engine for s in seg],
               "convert_s": round(sum(s.seconds for s in seg), 2), "total_s": round(total, 2),
               "bytes": sum(s.bytes for s in seg)}
        if digits:
            row["accuracy"] = round(evaluate_accuracy(out, x, y), 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\nModel: {args.model.name} ({args.model.stat().st_size / 1024:.0f} KiB ONNX), board {args.board}\n")
    head = "| engine | precision | converter time (s) | convert total (s) | artifact size (KiB) |"
    head += " held-out top-1 |" if digits else ""
    print(head)
    print("|" + "---|" * (6 if digits else 5))
    for r in rows:
        if "error" in r:
            print(f"| {r['engine']} | {r['precision']} | failed: {r['error']} |")
            continue
        line = (f"| {r['engine']} | {r['precision']} | {r['convert_s']:.2f} | {r['total_s']:.2f} | "
                f"{r['bytes'] / 1024:.1f} |")
        if digits:
            line += f" {100 * r['accuracy']:.1f}% |"
        print(line)


if __name__ == "__main__":
    main()

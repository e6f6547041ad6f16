"""`python -m edgesdk.runtime BUNDLE --input IMG|NPY [--bench N] [--json]`: run a bundle on the board.

Standard library + numpy (OpenCV only to read images). Exit codes: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesdk.runtime.errors import EdgeSDKError, InputError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgesdk.runtime", description="Run an edgesdk bundle on this machine.")
    p.add_argument("bundle", help="bundle directory (with manifest.json)")
    p.add_argument("--input", "-i", required=True,
                   help="an image (runs preprocess + postprocess) or a .npy tensor (or NAME=FILE.npy, repeatable)",
                   action="append")
    p.add_argument("--bench", type=int, default=0, metavar="N", help="time N runs after one warm-up")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.add_argument("--engine", action="append", default=None, metavar="NAME",
                   help="restrict to these engines (repeatable)")
    p.add_argument("--threads", type=int, default=0, help="threads per engine (0: the bundle's setting)")
    p.add_argument("--fallback", choices=("error", "cpu"), default="error",
                   help="cpu: run a segment's CPU version when its engine is missing (default: error)")
    return p


@contextlib.contextmanager
def native_stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """Engines print from C straight to fd 1 (MNN: "The device supports: ..."); with --json, stdout must
    carry the JSON alone, so fd 1 points at stderr while engines load and run."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _stats(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]
    return {"runs": len(s), "mean_ms": round(sum(s) / len(s), 4), "min_ms": round(s[0], 4),
            "p50_ms": round(pick(0.5), 4), "p90_ms": round(pick(0.9), 4), "max_ms": round(s[-1], 4)}


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors already; keep --help at 0
        return int(exc.code or 0)
    try:
        with native_stdout_to_stderr(args.json):
            result = _run(args)
    except EdgeSDKError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc)}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_human(result)
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from edgesdk.runtime.pipeline import read_image
    from edgesdk.runtime.session import Session

    if args.bench < 0:
        raise InputError(f"--bench must be >= 0, got {args.bench}")
    engines = None
    if args.engine or args.threads:
        from edgesdk.runtime.manifest import load_manifest

        segs = load_manifest(args.bundle, verify=False).segments
        names = args.engine or sorted({s.engine for s in segs} | {s.cpu_version.engine for s in segs if s.cpu_version})
        engines = [(n, {"threads": args.threads}) if args.threads else n for n in names]
    with Session(args.bundle, engines=engines, fallback=args.fallback) as sess:
        tensors: dict[str, Any] = {}
        image = None
        for item in args.input:
            name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
            f = Path(path)
            if not f.is_file():
                raise InputError(f"--input {item}: no such file")
            if f.suffix.lower() == ".npy":
                try:
                    arr = np.load(f, allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise InputError(f"--input {item}: not a readable .npy file: {exc}") from exc
                if arr.ndim == 3 and arr.dtype == np.uint8 and not name and sess.manifest.preprocess:
                    image = arr  # an image saved as .npy (H, W, 3)
                else:
                    tensors[name or sess.inputs[len(tensors) % len(sess.inputs)].name] = arr
            else:
                image = read_image(f)
        if image is not None and tensors:
            raise InputError("--input: give either one image or tensors, not both")
        if image is not None:
            call = lambda: sess.predict(image)
        else:
            call = lambda: sess.run(tensors)
        out = call()
        res: dict[str, Any] = {"ok": True, "bundle": str(args.bundle), "bundle_id": sess.manifest.bundle_id,
                               "engines_used": [{"segment": u.segment, "engine": u.engine, "planned": u.planned,
                                                 "fallback": u.fallback, "reason": u.reason, "version": u.version}
                                                for u in sess.engines_used]}
        if image is not None:
            res["prediction"] = out.to_dict()
        else:
            res["outputs"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                                  "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None,
                                  "mean": float(v.mean()) if v.size else None} for k, v in out.items()}
        if args.bench:
            times = []
            for _ in range(args.bench):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) * 1e3)
            res["bench"] = {"what": "predict (pre + run + post)" if image is not None else "run", **_stats(times)}
        return res


def _print_human(r: dict[str, Any]) -> None:
    print(f"bundle {r['bundle']} ({r['bundle_id'] or 'no id'})")
    for u in r["engines_used"]:
        extra = f"  CPU fallback for {u['planned']}: {u['reason']}" if u["fallback"] else ""
        print(f"  {u['segment']}: {u['engine']} {u['version']}{extra}")
    if "prediction" in r:
        pr = r["prediction"]
        for c in pr.get("classifications", []):
            print(f"  class {c['class_id']} {c['label'] or ''} {c['score']:.4f}")
        for d in pr.get("detections", []):
            x1, y1, x2, y2 = d["box"]
            print(f"  {d['label'] or d['class_id']} {d['score']:.3f} [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]")
        for k, v in pr.get("outputs", {}).items():
            print(f"  {k}: {v['dtype']}{v['shape']}")
    for k, v in r.get("outputs", {}).items():
        print(f"  {k}: {v['dtype']}{v['shape']} min {v['min']:.4g} max {v['max']:.4g} mean {v['mean']:.4g}")
    if "bench" in r:
        b = r["bench"]
        print(f"  bench {b['what']}: {b['runs']} runs, mean {b['mean_ms']} ms, p50 {b['p50_ms']} ms, "
              f"p90 {b['p90_ms']} ms, min {b['min_ms']} ms")


if __name__ == "__main__":
    sys.exit(main())

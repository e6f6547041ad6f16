"""The board CLI, `python -m edgesdk.runtime VERB BUNDLE ...`: the one program that runs bundles on a board.

Standard library + numpy (OpenCV only to read images). The deploy agent runs these verbs in the board's venv,
as `nobody`, under its rlimits and a time limit: `smoke` after a switch, `run` for `edgesdk run`, `profile`
for `edgesdk profile`. They work the same by hand on the board and on a host.

    python -m edgesdk.runtime run BUNDLE --input IMG|NPY|NAME=NPY ... [--bench N] [--engine E] [--threads N]
                                       [--fallback cpu] [--tensors] [--out-dir DIR]
    python -m edgesdk.runtime smoke BUNDLE [--fallback cpu]
    python -m edgesdk.runtime profile BUNDLE [--runs N] [--warmup N] [--threads N] [--per-layer] [--layer-runs N]
                                       [--frames N] [--engine E] [--fallback cpu] [--image F] [--no-tuning] [--out F]
    python -m edgesdk.runtime BUNDLE --input ...          the `run` verb (its form before there were verbs)

Every verb takes --json (the result alone on stdout, one JSON document; engines that print from C are sent
to stderr meanwhile) or --result-line (one line `EDGESDK-RESULT <json>` on stdout: what the agent reads from
the child's merged output); otherwise it prints a human summary. An error is {"ok": false, "error": CLASS,
"message": ...}. Exit codes: 0 ok, 1 failed (smoke: an output is beyond the bundle's tolerance), 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgesdk.runtime.errors import BundleError, EdgeSDKError, InputError
from edgesdk.runtime.fallback import check_fallback

#: what starts the result line (--result-line); the agent and the host's profile parse it
RESULT_MARK = "EDGESDK-RESULT "
VERBS = ("run", "smoke", "profile")
EPILOG = """verbs (VERB --help for all options):
  run BUNDLE --input IMG|NPY|NAME=NPY ... [--bench N] [--engine E] [--threads N] [--tensors] [--out-dir DIR]
  smoke BUNDLE                      reference inputs vs reference outputs, within the bundle's tolerance
  profile BUNDLE [--runs N] [--per-layer] ...
  BUNDLE --input ...                the run verb
every verb: [--fallback cpu] [--json | --result-line]
exit codes: 0 ok, 1 failed (smoke: beyond the tolerance), 2 bad input"""


def _fallback_arg(value: str) -> str:
    try:
        return check_fallback(value, "--fallback")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the result as JSON alone on stdout")
    out.add_argument("--result-line", action="store_true",
                     help=f"print the result as one line '{RESULT_MARK}<json>' on stdout (the deploy agent's form)")
    p.add_argument("--fallback", type=_fallback_arg, default="error",
                   help="cpu: run a segment's CPU version when its engine is missing (default: error)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgesdk.runtime", description="Run an edgesdk bundle on this machine.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="verb", required=True, metavar="{run,smoke,profile}")

    r = sub.add_parser("run", help="run a bundle on an image or tensors")
    r.add_argument("bundle", help="bundle directory (with manifest.json)")
    r.add_argument("--input", "-i", required=True, action="append",
                   help="an image (runs preprocess + postprocess) or a .npy tensor (or NAME=FILE.npy, repeatable)")
    r.add_argument("--bench", type=int, default=0, metavar="N", help="time N runs after the first")
    r.add_argument("--engine", action="append", default=None, metavar="NAME",
                   help="restrict to these engines (repeatable)")
    r.add_argument("--threads", type=int, default=0, help="threads per engine (0: the bundle's setting)")
    r.add_argument("--tensors", action="store_true", help="every --input is a tensor (never an image)")
    r.add_argument("--out-dir", default=None, metavar="DIR",
                   help="write the outputs there as output_<i>.npy (the result's 'files' maps them to names)")
    _common(r)

    s = sub.add_parser("smoke", help="run the bundle's reference inputs and check its reference outputs")
    s.add_argument("bundle")
    _common(s)

    f = sub.add_parser("profile", help="measure latency, segments, layers, memory and the board")
    f.add_argument("bundle")
    f.add_argument("--runs", type=int, default=50)
    f.add_argument("--warmup", type=int, default=5)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--per-layer", action="store_true")
    f.add_argument("--layer-runs", type=int, default=10)
    f.add_argument("--frames", type=int, default=None, help="frames through the streaming Pipeline (0: skip)")
    f.add_argument("--engine", action="append", default=None)
    f.add_argument("--image", default=None, help="an image (.npy HxWx3 uint8, or a file OpenCV reads)")
    f.add_argument("--no-tuning", action="store_true", help="ignore the release's tuning.json")
    f.add_argument("--out", default=None, help="also write the JSON here")
    _common(f)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in VERBS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `python -m edgesdk.runtime BUNDLE --input ...`
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors already; keep --help at 0
        return int(exc.code or 0)
    machine = args.json or args.result_line
    code = 0
    try:
        with native_stdout_to_stderr(machine):
            result, code = _verb(args)
    except EdgeSDKError as exc:
        result, code = {"ok": False, "error": type(exc).__name__, "message": str(exc)}, exc.exit_code
        if args.verb == "profile":
            from edgesdk.runtime.profiling import SCHEMA

            result = {"schema": SCHEMA, **result}
        if not machine:
            print(f"error: {exc}", file=sys.stderr)
            return code
        human = HUMAN[args.verb]
    else:
        human = _human(args, result)
    if args.result_line:
        if isinstance(result, dict):
            result.setdefault("uid", os.getuid())  # who ran it: the agent drops to nobody when it is root
        print(RESULT_MARK + json.dumps(result), flush=True)
    elif args.json:
        print(json.dumps(result, indent=2))
    else:
        human(result)
    return code


def _is_app(bundle: str) -> bool:
    from edgesdk.runtime.app.manifest import is_app

    return is_app(bundle)


def _verb(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The verb on a model bundle, or on an app bundle (manifest kind "app": edgesdk.runtime.app.verbs)."""
    if _is_app(args.bundle):
        from edgesdk.runtime.app import verbs

        return {"run": verbs.run, "smoke": verbs.smoke, "profile": verbs.profile}[args.verb](args)
    return VERB_FUNCS[args.verb](args)


def _human(args: argparse.Namespace, result: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    if isinstance(result, dict) and result.get("kind") == "app":
        from edgesdk.runtime.app import verbs

        return {"run": verbs.print_run, "smoke": verbs.print_smoke, "profile": verbs.print_profile}[args.verb]
    return HUMAN[args.verb]


# -- run -------------------------------------------------------------------------------------------------
def _used(sess: Any) -> list[dict[str, Any]]:
    return [{"segment": u.segment, "engine": u.engine, "planned": u.planned, "fallback": u.fallback,
             "reason": u.reason, "version": u.version} for u in sess.engines_used]


def _run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    import numpy as np

    from edgesdk.runtime.pipeline import read_image
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.runtime.session import Session, engine_choices

    if args.bench < 0:
        raise InputError(f"--bench must be >= 0, got {args.bench}")
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir}: no such directory")
    engines = engine_choices(load_manifest(args.bundle, verify=False), args.engine, args.threads)
    with Session(args.bundle, engines=engines, fallback=args.fallback) as sess:
        tensors: dict[str, Any] = {}
        image = None
        for item in args.input:
            # NAME=FILE (names have no "="), or FILE (which may have one)
            name, _, path = ("", "", item) if "=" not in item or Path(item).is_file() else item.partition("=")
            f = Path(path)
            if not f.is_file():
                raise InputError(f"--input {item}: no such file")
            if f.suffix.lower() == ".npy":
                try:
                    arr = np.load(f, allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise InputError(f"--input {item}: not a readable .npy file: {exc}") from exc
                if arr.ndim == 3 and arr.dtype == np.uint8 and not name and not args.tensors \
                        and sess.manifest.preprocess:
                    image = arr  # an image saved as .npy (H, W, 3)
                else:
                    tensors[name or sess.inputs[len(tensors) % len(sess.inputs)].name] = arr
            elif args.tensors:
                raise InputError(f"--input {item}: --tensors takes .npy files only")
            else:
                image = read_image(f)
        if image is not None and tensors:
            raise InputError("--input: give either one image or tensors, not both")
        call: Callable[[], Any] = (lambda: sess.predict(image)) if image is not None else (lambda: sess.run(tensors))
        t = time.perf_counter()
        out = call()
        first_ms = (time.perf_counter() - t) * 1e3
        res: dict[str, Any] = {"ok": True, "bundle": str(args.bundle), "bundle_id": sess.manifest.bundle_id,
                               "fallback": args.fallback, "engines_used": _used(sess),
                               "first_run_ms": round(first_ms, 3), "latency_ms": round(first_ms, 3)}
        if image is not None:
            res["prediction"] = out.to_dict()
        else:
            res["outputs"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype),
                                  "min": float(v.min()) if v.size else None, "max": float(v.max()) if v.size else None,
                                  "mean": float(v.mean()) if v.size else None} for k, v in out.items()}
            if out_dir is not None:
                files = {}
                for i, (k, v) in enumerate(out.items()):
                    fn = f"output_{i}.npy"
                    np.save(out_dir / fn, np.asarray(v))
                    files[fn] = k
                res["files"] = files
        if args.bench:
            times = []
            for _ in range(args.bench):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) * 1e3)
            res["bench"] = {"what": "predict (pre + run + post)" if image is not None else "run", **_stats(times)}
            res["latency_ms"] = res["bench"]["p50_ms"]  # a warm run, not the first
        return res, 0


def _print_run(r: dict[str, Any]) -> None:
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
    for fn, k in (r.get("files") or {}).items():
        print(f"  {k} -> {fn}")
    if "bench" in r:
        b = r["bench"]
        print(f"  bench {b['what']}: {b['runs']} runs, mean {b['mean_ms']} ms, p50 {b['p50_ms']} ms, "
              f"p90 {b['p90_ms']} ms, min {b['min_ms']} ms")


# -- smoke -----------------------------------------------------------------------------------------------
def _smoke(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The bundle (every sha256 checked again) on its reference inputs, twice (the second run is the latency),
    against its reference outputs with its tolerance (edgesdk.runtime.reference, the one reference check)."""
    from edgesdk.runtime.reference import check_reference, reference_arrays
    from edgesdk.runtime.session import Session

    with Session(args.bundle, fallback=args.fallback, verify=True) as s:
        m = s.manifest
        if not m.reference_inputs or not m.reference_outputs:
            raise BundleError(f"{args.bundle}: the bundle has no reference inputs/outputs to smoke-test with")
        feed, _ = reference_arrays(args.bundle, m)
        t = time.perf_counter()
        s.run(feed)
        first = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        got = s.run(feed)
        lat = (time.perf_counter() - t) * 1e3
        verdict = check_reference(s, got)
        res = {"ok": verdict.ok, "bundle_id": m.bundle_id, "fallback": args.fallback,
               "first_run_ms": round(first, 3), "latency_ms": round(lat, 3), "engines_used": _used(s),
               "checks": verdict.checks(), "tolerance": verdict.tolerance}
    return res, 0 if verdict.ok else 1


def _print_smoke(r: dict[str, Any]) -> None:
    print(f"smoke test of {r['bundle_id']}: {'passed' if r['ok'] else 'FAILED'} (one run {r['latency_ms']} ms)")
    for name, c in r["checks"].items():
        print(f"  {name}: {'ok' if c['ok'] else 'beyond tolerance'}  rel err {c.get('max_abs_rel')}  "
              f"cosine {c.get('cosine')}" + (f"  {c['problem']}" if c.get("problem") else ""))


# -- profile ---------------------------------------------------------------------------------------------
def _profile(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    from edgesdk.runtime.profiling import profile_bundle

    image = None
    if args.image:
        if args.image.endswith(".npy"):
            import numpy as np

            image = np.load(args.image, allow_pickle=False)
        else:
            from edgesdk.runtime.pipeline import read_image

            image = read_image(Path(args.image))
    res = profile_bundle(args.bundle, runs=args.runs, warmup=args.warmup, threads=args.threads,
                         per_layer=args.per_layer, layer_runs=args.layer_runs, pipeline_frames=args.frames,
                         image=image, engines=args.engine, fallback=args.fallback, use_tuning=not args.no_tuning)
    if args.out:
        Path(args.out).write_text(json.dumps(res), encoding="utf-8")
    return res, 0


def _print_profile(r: dict[str, Any]) -> None:
    lat = r.get("latency") or {}
    print(f"profile of {r['bundle']['id']}: {lat.get('count')} runs, p50 {lat.get('p50_ms')} ms, "
          f"p90 {lat.get('p90_ms')} ms" + (" (EMULATED)" if r.get("emulated") else ""))
    for s in r.get("segments") or []:
        print(f"  {s['id']}: {s['engine']} {s['total_mean_ms']} ms")
    acc = r.get("accuracy") or {}
    if acc.get("checked"):
        print(f"  accuracy vs reference: {'passed' if acc.get('passed') else 'FAILED'}")
    print("  (--json for everything)")


VERB_FUNCS: dict[str, Callable[[argparse.Namespace], tuple[dict[str, Any], int]]] = {
    "run": _run, "smoke": _smoke, "profile": _profile}
HUMAN: dict[str, Callable[[dict[str, Any]], None]] = {"run": _print_run, "smoke": _print_smoke,
                                                      "profile": _print_profile}


if __name__ == "__main__":
    sys.exit(main())

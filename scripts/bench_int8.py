#!/usr/bin/env python3
"""int8 accuracy on real zoo models, measured through the edgesdk CLI as a user runs it (docs/quantization.md).

Usage:
  .venv/bin/python scripts/bench_int8.py                        # every model, rpi4 engines + NPU host simulations
  .venv/bin/python scripts/bench_int8.py --models ppocr-cls,digits --npu-boards coral-usb --json
  .venv/bin/python scripts/bench_int8.py --mixed cosine=0.99     # also `convert ... --target cosine=0.99`
  .venv/bin/python scripts/bench_int8.py --from-json run.json    # the table of a saved --json run

For each model (MODELS: a YOLOv8n detector, the PP-OCRv4 recogniser, two classifiers, the digits CNN):
  1. `edgesdk convert MODEL --board rpi4 --engine onnxruntime` (fp32), and `--precision int8 --engine E --calib
     CALIB` for each int8 engine of rpi4 (onnxruntime, mnn, tflite); `--board B --precision int8 --calib CALIB`
     for each NPU board (its accelerator segments carry a host int8 simulation when the vendor compiler is
     absent). `--sample EVAL` makes the bundle's reference input a real image. A refusal is recorded with its
     one-line reason (convert's per-component judge refuses broken int8 at convert time).
  2. `edgesdk verify BUNDLE --eval EVAL --task T --json` (--postprocess / --charset where the task needs them):
     the task metric against the fp32 model on the evaluation images, the worst cosine (whole tensor and its
     components), and whether the tensor tolerance holds.
  3. Host latency: the median of --runs calls of `edgesdk.runtime.Session.run` on the bundle's reference input,
     after two warm-up calls (accelerator segments run their host simulation, `fallback="cpu"`).
  4. With --mixed TARGET: the same int8 conversions with `--target TARGET` (mixed precision); a convert that
     does not know the flag is recorded as "not available".

Images: `scripts/photos.py` (scikit-image's own files): calib/ (16) calibrates, eval/ (8) is evaluated and gives
the reference input. The recogniser is evaluated on text-line crops cut from eval/page.png (text_lines), since a
photo squeezed to 48x320 holds no text line. The digits CNN keeps its real labels (tests/data/digits.npz:
calibrated on the 200 calibration digits, top-1 on the 500 held-out digits through Session, as
docs/benchmarks.md measured it). The eval sets are small: 8 photos, 23 text lines, 500 digits.

Every edgesdk call is a subprocess run from a temporary folder; nothing here changes edgesdk. Prints a markdown
table (or, with --json, the rows and the run's date, machine and versions).
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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BOARD = "rpi4"
INT8_ENGINES = ("onnxruntime", "mnn", "tflite")
NPU_BOARDS = ("coral-usb", "kv260", "hi3519a", "x3")
#: A text-line crop gets this width:height (the recogniser's 320x48 input), padded right with its background.
LINE_ASPECT = 320 / 48
TIMEOUT = 900
#: A reason is cut to this many characters in the table (the --json rows keep it whole).
REASON_CHARS = 180


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model: where it comes from, how a user converts and evaluates it."""

    id: str
    source: str  # a zoo id (scripts/zoo_models.yaml) or a path relative to the repository
    input_shape: str  # --input-shape
    preprocess: tuple[str, ...]  # convert's preprocessing flags
    task: str  # verify --task
    eval_set: str  # "photos" | "lines" | "digits"
    yolo_classes: int | None = None  # detect: the anchor-free head's class count (verify --postprocess)
    note: str = ""


#: YOLO decode threshold: at the default 0.25 the fp32 model finds 2 boxes on the 8 eval photos, at 0.1 it finds 8.
YOLO_CONF = 0.1
MODELS = (
    ModelSpec("yolov8n-nudenet", "yolov8n-nudenet", "images=1,3,320,320", ("--resize", "letterbox"), "detect",
              "photos", yolo_classes=18, note=f"anchor-free, 18 classes, conf {YOLO_CONF}, IoU 0.45"),
    ModelSpec("ppocr-rec", "ppocr-rec", "x=1,3,48,320",
              ("--color", "BGR", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--resize", "stretch"), "ctc",
              "lines", note="greedy CTC, the model's own 6623-character list (ONNX metadata `character`)"),
    ModelSpec("ppocr-cls", "ppocr-cls", "x=1,3,48,192",
              ("--color", "BGR", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--resize", "stretch"),
              "classify", "photos", note="2 classes (0/180 degrees)"),
    ModelSpec("doc-orientation", "doc-orientation", "x=1,3,224,224",
              ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--resize", "stretch"), "classify",
              "photos", note="4 classes (0/90/180/270 degrees)"),
    ModelSpec("digits", "tests/data/digits_cnn.onnx", "image=1,3,32,32",
              ("--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--resize", "stretch"), "classify", "digits",
              note="10 classes, real labels"),
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load_script(name: str) -> Any:
    """scripts/<name>.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def edgesdk_cli() -> list[str]:
    """The edgesdk console script beside this interpreter, else the repository's .venv, else on PATH."""
    for cand in (Path(sys.executable).parent / "edgesdk", REPO / ".venv" / "bin" / "edgesdk"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    found = shutil.which("edgesdk")
    return [found] if found else [sys.executable, "-m", "edgesdk"]


@dataclass(frozen=True)
class CliResult:
    rc: int
    data: Any  # the parsed --json stdout, None when there is none
    stderr: str
    seconds: float


def run_cli(args: list[str], cwd: Path) -> CliResult:
    """One `edgesdk ... --json` call, as a user makes it."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run([*edgesdk_cli(), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT,
                           stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    except subprocess.TimeoutExpired:
        return CliResult(-1, None, f"error: timed out after {TIMEOUT} s", time.perf_counter() - t0)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else None
    except json.JSONDecodeError:
        data = None
    return CliResult(p.returncode, data, p.stderr, time.perf_counter() - t0)


#: stderr lines that are engine chatter, not the reason of a failure
_NOISE = re.compile(r"^(Command exited|INFO:|WARNING:|The device supports|MNN use |<frozen runpy>|.*RuntimeWarning)")


#: the last line of a Python traceback: `pkg.module.SomeError: message` (cv2's exception class is `cv2.error`)
_EXCEPTION = re.compile(r"^([A-Za-z_]\w*\.)*([A-Z]\w*|error): ")


def reason(stderr: str) -> str:
    """The one line that says why a command failed: a refused engine attempt (`- ENGINE (int8) verify: ...`),
    else the last line the failing tool printed (`last output:`), else edgesdk's `error:` line. A converter's
    traceback that edgesdk's message quotes is reduced to its exception line, marked "converter traceback";
    a traceback outside any `error:` message (edgesdk itself crashed) is marked "TRACEBACK"."""
    lines = [x for x in (ln.strip().strip("│╭╮╰╯─ ") for ln in stderr.splitlines()) if x and not _NOISE.match(x)]
    tb = "Traceback (most recent call last):"
    handled = tb not in lines or any(ln.startswith("error:") for ln in lines[:lines.index(tb)])
    exc = next((ln for ln in reversed(lines) if _EXCEPTION.match(ln)), None) if tb in lines else None
    if not handled:
        return "TRACEBACK: " + (exc or lines[-1])
    if exc is not None:
        return "converter traceback: " + exc
    attempt = next((ln[2:] for ln in lines if ln.startswith("- ")), None)
    if attempt:
        return attempt
    if "last output:" in lines:
        tail = lines[lines.index("last output:") + 1:]
        if tail:
            return tail[-1]
    return next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "no message")


def cosines_in(text: str) -> list[float]:
    """The cosines a refusal message quotes (`cosine 0.97619 < 0.99`)."""
    return [float(x) for x in re.findall(r"cosine (-?[0-9.]+) <", text)]


# -- images ---------------------------------------------------------------------------------------------

def photos(out: Path) -> dict[str, list[str]]:
    """`python scripts/photos.py --out OUT --json`: OUT/calib (16) and OUT/eval (8)."""
    p = subprocess.run([sys.executable, str(HERE / "photos.py"), "--out", str(out), "--json"], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout)


def text_lines(page: Path, out: Path, aspect: float = LINE_ASPECT) -> list[str]:
    """Cut a scanned page into text-line crops of width:height `aspect`, for a line recogniser's fixed input.

    Ink = pixels 60 grey levels below their column's 90th percentile (the page's uneven lighting); a line is a
    run of at least 8 rows whose ink count is above 12% of the fullest row's. A line wider than `aspect` is cut at
    the widest gap between ink columns in the allowed width (between words where there is one); each crop is
    padded on the right with its median colour to exactly `aspect`, as PaddleOCR pads a line. Deterministic."""
    from PIL import Image

    im = np.asarray(Image.open(page).convert("RGB"))
    grey = im.astype(np.float64).mean(axis=2)
    ink = (np.percentile(grey, 90, axis=0)[None, :] - grey) > 60
    rows = ink.sum(axis=1)
    on = np.concatenate([rows > 0.12 * rows.max(), [False]])
    runs, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start >= 8:
                runs.append((start, i))
            start = None
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for top, bottom in runs:
        y0, y1 = max(0, top - 3), min(grey.shape[0], bottom + 3)
        h = y1 - y0
        cols = ink[y0:y1].any(axis=0)
        xs = np.flatnonzero(cols)
        x_end = int(xs[-1]) + 1
        gap = np.zeros(cols.size + 1, int)  # gap[x]: blank columns ending at x (exclusive)
        for x in range(cols.size):
            gap[x + 1] = gap[x] + 1 if not cols[x] else 0
        s = max(0, int(xs[0]) - 3)
        width = round(aspect * h)
        while s < x_end:
            limit = s + width
            if limit >= x_end:
                e = min(grey.shape[1], x_end + 3, limit)
            else:
                inside = range(s + h, limit + 1)
                e = max(inside, key=lambda x: (gap[x], x)) if any(gap[x] for x in inside) else limit
            crop = im[y0:y1, s:e]
            canvas = np.empty((h, width, 3), np.uint8)
            canvas[:] = np.median(crop.reshape(-1, 3), axis=0).astype(np.uint8)
            canvas[:, :crop.shape[1]] = crop
            name = f"{page.stem}_line{len(names):02d}.png"
            Image.fromarray(canvas).save(out / name)
            names.append(name)
            s = e
            while s < x_end and not cols[s]:
                s += 1
    return names


def digits(out: Path) -> tuple[Any, Any]:
    """The digits CNN's calibration (200) and held-out (500) digits as PNGs in out/calib and out/eval (32x32,
    grey, scripts/train_digits.to_images); returns the held-out images (BGR) and their labels."""
    from PIL import Image

    to_images = _load_script("train_digits").to_images
    d = np.load(REPO / "tests" / "data" / "digits.npz")
    for split, folder in (("calib", "calib"), ("heldout", "eval")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(to_images(d["images8"][d[split]])):
            Image.fromarray(im).save(out / folder / f"{i:04d}.png")
    return to_images(d["images8"][d["heldout"]]), d["labels"][d["heldout"]]


def charset(model: Path, out: Path) -> Path | None:
    """The recogniser's own character list: rapidocr's PP-OCR ONNX files carry it in the metadata key
    `character` (the rapidocr-onnxruntime 1.4.4 wheel has no ppocr_keys_v1.txt; rapidocr reads this key). The
    model file is pinned by its sha256 in the zoo, so the list is too. None when the model has no such key."""
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    text = next((p.value for p in m.metadata_props if p.key == "character"), None)
    if not text:
        return None
    out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return out


# -- one bundle ---------------------------------------------------------------------------------------

from edgesdk.runtime.__main__ import native_stdout_to_stderr  # MNN prints from C to fd 1


def latency_ms(bundle: Path, runs: int) -> float:
    """Median of `runs` Session.run calls on the bundle's reference input (after 2 warm-up calls), in ms."""
    from edgesdk.runtime.session import Session

    with Session(bundle, fallback="cpu") as s:
        feed = {n: np.load(bundle / rel, allow_pickle=False) for n, rel in s.manifest.reference_inputs.items()}
        for _ in range(2):
            s.run(feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            s.run(feed)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def task_value(v: dict[str, Any]) -> dict[str, Any]:
    """The task metric of verify's JSON (its first task result), with the details the table shows."""
    tasks = (v.get("eval") or {}).get("tasks") or []
    if not tasks:
        return {"metric": None, "value": None}
    t = tasks[0]
    m = t["metrics"]
    keep = {k: m[k] for k in ("reference_boxes", "bundle_boxes", "reference_length", "exact", "compared") if k in m}
    keep.update({f"box_{k}": m[k] for k in ("precision", "recall") if k in m})
    return {"metric": t["metric"], "value": t["value"], **keep, "notes": t["notes"]}


def measure(bundle: Path, spec: ModelSpec, ev: Path, verify_args: list[str], work: Path, runs: int,
            labelled: tuple[Any, Any] | None) -> dict[str, Any]:
    """verify --eval, the host latency and (digits) the real-label top-1 of one written bundle."""
    v = run_cli(["verify", str(bundle), "--eval", str(ev), *verify_args, "--no-layers", "--json"], work)
    row: dict[str, Any] = {"verify_rc": v.rc, "verify_s": round(v.seconds, 1)}
    if v.data is None:
        row["verify_error"] = reason(v.stderr)
    else:
        outs = v.data["outputs"]
        row.update(task_value(v.data), tolerance_ok=v.data["tolerance_ok"], images=v.data["samples"],
                   cosine_worst=min(o["cosine_min"] for o in outs),
                   cosine_whole=min(o["cosine_mean"] for o in outs),
                   engines=sorted({f"{e['engine']} {e['version']}" for e in v.data["engines"]}),
                   verify_notes=[n for n in v.data["notes"] if "host int8 simulation" not in n])
    with native_stdout_to_stderr():
        try:
            row["latency_ms"] = round(latency_ms(bundle, runs), 2)
            row["load1"] = round(os.getloadavg()[0], 1)  # the machine is shared: a latency means little under load
        except Exception as exc:  # noqa: BLE001 - a benchmark records a failure as a row
            row["latency_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if labelled is not None:
            from edgesdk.verify import evaluate_accuracy

            row["label_top1"] = round(evaluate_accuracy(bundle, *labelled), 4)
    return row


def convert_row(spec: ModelSpec, model: Path, board: str, engine: str | None, precision: str, sets: dict[str, Path],
                verify_args: list[str], work: Path, runs: int, labelled: tuple[Any, Any] | None,
                target: str | None = None) -> dict[str, Any]:
    """Convert (and when written, measure) one (board, engine, precision[, --target]) of a model."""
    name = "-".join(x for x in (spec.id, board, engine or "chain", precision, "mixed" if target else "") if x)
    out = work / name
    args = ["convert", str(model), "--board", board, "--input-shape", spec.input_shape, *spec.preprocess,
            "--sample", str(sets["sample"]), "-o", str(out), "--json"]
    if engine:
        args += ["--engine", engine]
    if precision != "fp32":
        args += ["--precision", precision, "--calib", str(sets["calib"])]
    if target:
        args += ["--target", target]
    log(f"bench_int8: {name}")
    c = run_cli(args, work)
    row: dict[str, Any] = {"model": spec.id, "board": board, "engine": engine or "(board chain)",
                           "precision": precision, "target": target, "convert_s": round(c.seconds, 1)}
    if c.rc == 0 and c.data is not None:
        segs = c.data["segments"]
        row.update(result="converted", bytes=sum(s["bytes"] for s in segs), segments=len(segs),
                   simulated=sum(1 for s in segs if "host int8 simulation" in (s.get("fallback_reason") or "")),
                   segment_engines=sorted({f"{s['engine']} {s['precision']}" for s in segs}),
                   planned=sorted({s.get("planned_engine") or s["engine"] for s in segs}),
                   kept_float=_kept(c.data))
        row.update(measure(out, spec, sets["eval"], verify_args, work, runs, labelled))
    elif target and c.rc == 2 and "no such option" in c.stderr.lower():
        row.update(result="not available", reason=reason(c.stderr))
    else:
        why = reason(c.stderr)
        row.update(result="refused" if c.rc == 1 and not why.startswith("TRACEBACK") else f"failed (exit {c.rc})",
                   reason=why, stderr_tail=c.stderr[-3000:])
        cos = cosines_in(why)
        if cos:
            row["cosine_worst_at_convert"] = min(cos)
    return row


def _kept(doc: Any) -> list[str] | None:
    """The layers a mixed-precision convert kept in float: the first `kept` list anywhere in its JSON."""
    if isinstance(doc, dict):
        if isinstance(doc.get("kept"), list):
            return [str(x) for x in doc["kept"]]
        items = doc.values()
    elif isinstance(doc, list):
        items = doc
    else:
        return None
    for x in items:
        found = _kept(x)
        if found is not None:
            return found
    return None


# -- the run ------------------------------------------------------------------------------------------

def prepare_model(spec: ModelSpec, work: Path, img: dict[str, Path]) -> tuple[Path, dict[str, Path], list[str],
                                                                               tuple[Any, Any] | None, str]:
    """(model file, {calib, eval, sample} folders, verify's task flags, real labels or None, what was evaluated)."""
    if spec.source.endswith(".onnx"):
        model = REPO / spec.source
    else:
        model = _load_script("zoo_fetch").fetch([spec.source], log=log)[spec.source]
    verify_args = ["--task", spec.task]
    labelled = None
    if spec.eval_set == "digits":
        root = work / "digits"
        labelled = digits(root)
        sets = {"calib": root / "calib", "eval": root / "eval", "sample": root / "eval"}
        what = "500 held-out digits (real labels); calib: 200 calibration digits"
    elif spec.eval_set == "lines":
        lines = work / "lines"
        n = len(text_lines(img["eval"] / "page.png", lines))
        sets = {"calib": img["calib"], "eval": lines, "sample": lines}
        what = f"{n} text-line crops of eval/page.png; calib: the 16 calib photos"
    else:
        sets = {"calib": img["calib"], "eval": img["eval"], "sample": img["eval"]}
        what = "the 8 eval photos; calib: the 16 calib photos"
    if spec.task == "ctc":
        keys = charset(model, work / f"{spec.id}_keys.txt")
        verify_args += ["--charset", str(keys)] if keys else []
        what += "; CER over " + ("characters" if keys else "class indices (no character list)")
    if spec.yolo_classes:
        pp = work / f"{spec.id}_postprocess.yaml"
        pp.write_text(f"kind: yolo\nhead: anchor-free\nnum_classes: {spec.yolo_classes}\n"
                      f"conf_threshold: {YOLO_CONF}\niou_threshold: 0.45\n")
        verify_args = ["--postprocess", str(pp)]
    return model, sets, verify_args, labelled, what


def versions(work: Path) -> dict[str, Any]:
    """The converters' versions (`edgesdk toolchain status --json`), this host's onnxruntime/numpy/skimage, and
    the edgesdk sources measured: their folder, git commit and whether edgesdk/ has uncommitted changes."""
    import onnxruntime
    import skimage

    import edgesdk

    st = run_cli(["toolchain", "status", "--json"], work)
    tools = {t["toolchain"]: t.get("detail") or t.get("version") for t in (st.data or [])}
    src = Path(edgesdk.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        p = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, check=False)
        return p.stdout.strip() if p.returncode == 0 else "?"

    return {"toolchains": tools, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__,
            "edgesdk": {"source": str(src), "commit": git("rev-parse", "--short", "HEAD"),
                        "uncommitted_changes": bool(git("status", "--porcelain", "--", "edgesdk"))}}


def run(models: list[ModelSpec], engines: list[str], npu_boards: list[str], runs: int, mixed: str | None,
        work: Path) -> dict[str, Any]:
    img_root = work / "photos"
    split = photos(img_root)
    img = {"calib": img_root / "calib", "eval": img_root / "eval"}
    rows: list[dict[str, Any]] = []
    evaluated: dict[str, str] = {}
    t0 = time.perf_counter()
    for spec in models:
        model, sets, verify_args, labelled, evaluated[spec.id] = prepare_model(spec, work, img)
        jobs: list[tuple[str, str | None, str, str | None]] = [(BOARD, "onnxruntime", "fp32", None)]
        jobs += [(BOARD, e, "int8", None) for e in engines]
        jobs += [(b, None, "int8", None) for b in npu_boards]
        if mixed:
            jobs += [(BOARD, e, "int8", mixed) for e in engines]
        for board, engine, precision, target in jobs:
            row = convert_row(spec, model, board, engine, precision, sets, verify_args, work, runs, labelled, target)
            rows.append(row)
            log("  " + json.dumps({k: row.get(k) for k in ("result", "value", "cosine_worst", "latency_ms",
                                                           "reason") if row.get(k) is not None})[:400])
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
                       f"Python {platform.python_version()}",
            "versions": versions(work), "photos": split, "evaluated_on": evaluated, "runs": runs, "mixed": mixed,
            "models": {m.id: {"source": m.source, "input": m.input_shape, "preprocess": " ".join(m.preprocess),
                              "task": m.task, "note": m.note} for m in models},
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


# -- the table ----------------------------------------------------------------------------------------

def _metric_cell(r: dict[str, Any]) -> str:
    v, metric = r.get("value"), r.get("metric")
    if r.get("result") != "converted":
        return "-"
    if metric is None:
        return r.get("verify_error", "no task metric")
    if v is None:
        return f"{metric} undefined"
    if metric == "map50":
        p = "-" if r.get("box_precision") is None else f"{r['box_precision']:.2f}"
        rc = "-" if r.get("box_recall") is None else f"{r['box_recall']:.2f}"
        cell = f"mAP@0.5 {v:.3f} (P {p} R {rc}, {r.get('bundle_boxes')}/{r.get('reference_boxes')} boxes)"
    elif metric == "cer":
        cell = f"CER {v:.3f} ({r.get('reference_length')} chars, {100 * r.get('exact', 0):.0f}% lines exact)"
    elif metric == "top1":
        cell = f"top-1 agree {round(v * r['images'])}/{r['images']}"
    else:
        cell = f"{metric} {v:.3f}"
    if "label_top1" in r:
        cell = f"labels top-1 {100 * r['label_top1']:.1f}%; " + cell
    return cell


def _cos_cell(r: dict[str, Any]) -> str:
    if "cosine_worst" in r:
        return f"{r['cosine_worst']:.4f} ({r['cosine_whole']:.4f})"
    if "cosine_worst_at_convert" in r:
        return f"{r['cosine_worst_at_convert']:.4f} (convert check)"
    return "-"


def _result_cell(r: dict[str, Any]) -> str:
    if r["result"] != "converted":
        why = re.sub(r"^(\S+) \((\w+)\) verify: \1 output differs from the reference: ", r"\2 check: ",
                     r.get("reason", ""))
        why = why if len(why) <= REASON_CHARS else why[:REASON_CHARS - 1] + "…"
        return f"**{r['result']}**: {why}".replace("|", "\\|")
    parts = ["converted"]
    if r.get("simulated"):
        parts.append(f"{r['segments']} segments, {r['simulated']} host-simulated ({', '.join(r['planned'])})")
    elif r.get("segments", 1) > 1:
        parts.append(f"{r['segments']} segments")
    if r.get("verify_rc") == 1 and r.get("tolerance_ok") is False:
        parts.append("verify: fails the tolerance")
    return "; ".join(parts)


def _mixed_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if r["result"] != "converted":
        return r["result"] if r["result"] == "not available" else f"{r['result']}: {r.get('reason', '')}"
    kept = r.get("kept_float")
    return (f"{_metric_cell(r)}; cos {_cos_cell(r)}; {r['bytes'] / 1024:.0f} KiB; "
            f"{'?' if kept is None else len(kept)} layers float")


def table(doc: dict[str, Any]) -> str:
    """The markdown table: one line per (model, board, engine, precision), the mixed-precision run beside its
    plain int8 row, each latency next to the fp32 bundle's."""
    rows = doc["rows"]
    mixed = {(r["model"], r["board"], r["engine"]): r for r in rows if r.get("target")}
    fp32 = {r["model"]: r for r in rows if r["precision"] == "fp32"}
    head = ("| model | board | engine | precision | result | task metric vs fp32 | cosine: worst (mean) | "
            f"size (KiB) | host latency ms (fp32) | mixed precision{' ' + doc['mixed'] if doc.get('mixed') else ''} |")
    out = [head, "|" + "---|" * 10]
    for r in rows:
        if r.get("target"):
            continue
        size = f"{r['bytes'] / 1024:.0f}" if "bytes" in r else "-"
        lat = r.get("latency_ms")
        ref = fp32.get(r["model"], {}).get("latency_ms")
        lat_cell = "-" if lat is None else f"{lat:.1f}" + (f" ({ref:.1f})" if ref is not None and r is not
                                                          fp32.get(r["model"]) else "")
        on_cpu = r["precision"] == "int8" and r["board"] == BOARD
        m = _mixed_cell(mixed.get((r["model"], r["board"], r["engine"]))) if on_cpu else ""
        if on_cpu and not doc.get("mixed"):
            m = "(lead: `--mixed TARGET`)"
        out.append(f"| {r['model']} | {r['board']} | {r['engine']} | {r['precision']} | {_result_cell(r)} | "
                   f"{_metric_cell(r)} | {_cos_cell(r)} | {size} | {lat_cell} | {m} |")
    return "\n".join(out)


def header(doc: dict[str, Any]) -> str:
    v = doc["versions"]
    e = v["edgesdk"]
    lines = [f"Measured {doc['date']} on {doc['machine']} by `scripts/bench_int8.py` ({doc['seconds']:.0f} s), "
             f"edgesdk at commit {e['commit']}" + (" with uncommitted changes" if e["uncommitted_changes"] else "")
             + ".",
             f"onnxruntime {v['onnxruntime']}; " + "; ".join(f"{k}: {d}" for k, d in v["toolchains"].items()) +
             f"; scikit-image {v['scikit-image']}. Host latency: median of {doc['runs']} Session.run calls.",
             "Evaluated on: " + "; ".join(f"{k}: {w}" for k, w in doc["evaluated_on"].items()) + "."]
    loads = [r["load1"] for r in doc["rows"] if "load1" in r]
    if loads:
        lines.append(f"1-minute load average after the latency runs: {min(loads):g} to {max(loads):g} (other "
                     "jobs share the cores: compare a latency with its fp32 value, measured minutes apart).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(m.id for m in MODELS),
                    help=f"comma-separated, from {', '.join(m.id for m in MODELS)}")
    ap.add_argument("--engines", default=",".join(INT8_ENGINES), help="rpi4's int8 engines to try")
    ap.add_argument("--npu-boards", default=",".join(NPU_BOARDS), help="NPU boards (host int8 simulation); '' none")
    ap.add_argument("--runs", type=int, default=20, help="Session.run calls per latency median")
    ap.add_argument("--mixed", metavar="TARGET", default=None,
                    help="also convert each int8 engine with `--target TARGET` (mixed precision), e.g. cosine=0.99")
    ap.add_argument("--work", type=Path, default=None, help="keep the bundles in this folder (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the rows and the run's metadata as JSON")
    ap.add_argument("--from-json", type=Path, default=None, help="only print the table of a saved --json run")
    a = ap.parse_args(argv)
    if a.from_json is not None:
        doc = json.loads(a.from_json.read_text(encoding="utf-8"))
        print(header(doc) + "\n\n" + table(doc))
        return 0
    known = {m.id: m for m in MODELS}
    ids = [x for x in a.models.split(",") if x]
    bad = [x for x in ids if x not in known]
    if bad:
        print(f"bench_int8: error: unknown model(s) {', '.join(bad)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    engines = [x for x in a.engines.split(",") if x]
    boards = [x for x in a.npu_boards.split(",") if x]
    work = a.work or Path(tempfile.mkdtemp(prefix="edgesdk-bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        doc = run([known[x] for x in ids], engines, boards, a.runs, a.mixed, work.resolve())
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print(header(doc) + "\n\n" + table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

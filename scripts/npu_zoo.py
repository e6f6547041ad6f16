"""The zoo through the two NPU boards whose compilers run here (issue 15, item 5), as a user runs it: for each model
and board, `edgesdk convert MODEL --board B -p int8 --calib photos/calib --sample photos/eval --json`, then
`edgesdk verify OUT --json`, each a subprocess from a scratch directory.

    .venv/bin/python scripts/npu_zoo.py [--boards rk3588,imx93] [--ids ppocr-cls,...] [--json results.json]

The photos are skimage's (scripts/photos.py: 16 calibration, 8 evaluation, disjoint); the preprocessing is the
default (RGB, scale 1/255, letterbox), the same for every model, so the figures compare boards, not preprocessing.
convert runs with `--target cosine=0.98` (--target): the criterion is the cosine on the 8 evaluation photos.
Prints a Markdown table: segments and their engines, the compiler's NPU/CPU op count, the vendor check (RKNN's
simulator cosine on a calibration sample; vela's estimate), the CPU version's engine, and verify's verdict on the
host (no NPU here: the CPU version runs) with its worst cosine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IDS = "ppocr-cls,doc-orientation,ppocr-rec,crnn-ddddocr-rec,yolov8n-nudenet,ppocr-det"


def _load(name: str):  # noqa: ANN202 - a sibling script as a module
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _cli(args: list[str], cwd: Path, timeout: float) -> tuple[int, dict, str]:
    exe = Path(sys.executable).with_name("edgesdk")
    r = subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    out = r.stdout
    try:
        doc = json.loads(out[out.index("{"):]) if "{" in out else {}
    except ValueError:
        doc = {}
    return r.returncode, doc, r.stderr


def run(model_id: str, path: Path, shapes: list[str], board: str, photos: Path, work: Path, timeout: float,
        target: str) -> dict:
    out = work / f"{model_id}-{board}"
    args = ["convert", str(path), "--board", board, "-p", "int8", "--calib", str(photos / "calib"), "--sample",
            str(photos / "eval"), "-o", str(out), "--json", *(["--target", target] if target else [])]
    for s in shapes:
        args += ["--input-shape", s]
    t0 = time.perf_counter()
    rc, doc, err = _cli(args, work, timeout)
    row: dict = {"model": model_id, "board": board, "convert_s": round(time.perf_counter() - t0, 1), "rc": rc}
    if rc != 0:
        row["error"] = (doc.get("error") or err.strip().splitlines()[-1:] or ["?"])[0][:300] if doc or err else "?"
        return row
    said = " ".join(doc.get("warnings", []) + doc.get("notes", []))
    row["segments"] = [s.get("engine") for s in doc.get("segments", [])]
    views = [s.get("compiler_view") for s in doc.get("segments", []) if s.get("compiler_view")]
    npu = cpu = 0
    for v in views:
        if "rows" in v:  # rknn
            ops = [r for r in v["rows"] if r["op"] not in ("InputOperator", "OutputOperator")]
            npu += sum(r["target"] == "NPU" for r in ops)
            cpu += sum(r["target"] == "CPU" for r in ops)
        else:  # vela
            npu += v.get("npu_ops", 0)
            cpu += v.get("cpu_ops", 0)
    row["npu_ops"], row["cpu_ops"] = npu, cpu
    m = re.findall(r"simulator vs onnxruntime cosine: ([^;]+?)(?= warning|$| RKNN| vendor| note|;)", said)
    row["vendor_cosine"] = min((float(x.split("=")[1].rstrip(",")) for grp in m for x in grp.split(", ")
                                if "=" in x), default=None)
    est = re.search(r"vela estimate: ([0-9.]+) ms", said)
    row["vela_ms"] = float(est.group(1)) if est else None
    from edgesdk.runtime.manifest import load_manifest

    mf = load_manifest(out)
    row["cpu_version"] = sorted({s.cpu_version.engine for s in mf.segments if s.cpu_version})
    rc, vdoc, err = _cli(["verify", str(out), "--json"], work, timeout)
    row["verify_ok"] = bool(vdoc.get("ok")) if vdoc else False
    row["verify_cosine"] = min((o["cosine_min"] for o in vdoc.get("outputs", [])), default=None) if vdoc else None
    if not vdoc:
        row["verify_error"] = (err.strip().splitlines() or ["?"])[-1][:300]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", default="rk3588,imx93")
    ap.add_argument("--ids", default=DEFAULT_IDS)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--target", default="cosine=0.98",
                    help="convert's --target (default cosine=0.98: the photos are not each model's domain, so the "
                         "default int8 tolerance's max-error bound judges inputs the models are unsure of); '' for none")
    a = ap.parse_args(argv)
    zf = _load("zoo_fetch")
    paths = zf.fetch(a.ids.split(","))
    entries = {e["id"]: e for e in zf.load_entries()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-npu-zoo-") as d:
        work = Path(d)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "photos.py"), "--out", str(work / "photos")],
                       check=True, capture_output=True)
        for mid, p in paths.items():
            for board in a.boards.split(","):
                try:
                    rows.append(run(mid, Path(p), entries[mid].get("inputs", []), board, work / "photos", work,
                                    a.timeout, a.target))
                except subprocess.TimeoutExpired:
                    rows.append({"model": mid, "board": board, "error": f"timeout after {a.timeout:g} s"})
                print(f"{mid} {board}: {rows[-1].get('error', 'done')}", file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(rows, indent=2))
    print("| model | board | convert | segments | compiler: NPU / CPU ops | RKNN simulator cosine | vela estimate | "
          "CPU version | verify on the host (CPU version) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['board']} | refused ({r.get('convert_s', '-')} s) | {r['error']} |||||")
            continue
        vc = f"{r['vendor_cosine']:.4f}" if r["vendor_cosine"] is not None else "-"
        vm = f"{r['vela_ms']:.3f} ms" if r["vela_ms"] is not None else "-"
        ver = (f"{'ok' if r['verify_ok'] else 'FAIL'} (cosine {r['verify_cosine']:.4f})"
               if r.get("verify_cosine") is not None else r.get("verify_error", "-"))
        print(f"| {r['model']} | {r['board']} | {r['convert_s']} s | {len(r['segments'])}: "
              f"{', '.join(r['segments'])} | {r['npu_ops']} / {r['cpu_ops']} | {vc} | {vm} | "
              f"{', '.join(r['cpu_version']) or '-'} | {ver} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

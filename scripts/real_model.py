"""Fetch a real detection model for tests and docs: PP-OCRv4 text detector (DBNet) from rapidocr-onnxruntime 1.4.4.

Usage: python scripts/real_model.py [CACHE_DIR]   (prints the model path; default ~/.cache/edgesdk/models)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "rapidocr-onnxruntime==1.4.4"
MEMBER = "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
INPUT_SHAPE = "x=1,3,640,640"


def fetch(cache: Path | None = None) -> Path:
    cache = cache or Path.home() / ".cache" / "edgesdk" / "models"
    target = cache / "ch_PP-OCRv4_det_infer.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", PACKAGE, "-d", d],
                       check=True, capture_output=True, timeout=600)
        wheel = next(Path(d).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(src.read())
            tmp.rename(target)
    return target


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else None))

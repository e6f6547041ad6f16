#!/usr/bin/env python3
"""Benchmark letterbox + normalise + HWC->CHW on this host: the native kernel (cross/examples/preproc,
built here with the host g++ through the same CMake project) against OpenCV and the numpy reference.

Usage: .venv/bin/python scripts/bench_preproc.py [--repeat 50] [--lib path/to/libedgesdk_preproc.so]
Prints a markdown table (docs/benchmarks.md, "Native pre-processing"). Needs cmake, g++, and
opencv-python-headless (the `test` extra).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgesdk.runtime.native import NativePreproc, letterbox_normalize_numpy

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
CASES = [  # (source h, w) -> (network h, w)
    ((1080, 1920), (640, 640)),
    ((720, 1280), (320, 320)),
    ((480, 640), (224, 224)),
]


def build_host_lib(build_dir: Path) -> Path:
    src = REPO / "cross" / "examples" / "preproc"
    for argv in (["cmake", "-S", str(src), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2)]):
        subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return build_dir / "libedgesdk_preproc.so"


def opencv_path(cv2, img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The usual OpenCV pipeline: resize, copyMakeBorder, BGR->RGB, normalise in numpy, HWC->CHW."""
    h, w = img.shape[:2]
    oh, ow = out_hw
    s = min(ow / w, oh / h)
    nw, nh = int(round(w * s)), int(round(h * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    l, t = (ow - nw) // 2, (oh - nh) // 2
    r = cv2.copyMakeBorder(r, t, oh - nh - t, l, ow - nw - l, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    r = cv2.cvtColor(r, cv2.COLOR_BGR2RGB).astype(np.float32)
    r -= MEAN
    r *= 1.0 / STD
    return np.ascontiguousarray(r.transpose(2, 0, 1))


def opencv_blob(cv2, img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """OpenCV with cv2.dnn.blobFromImage doing mean, swapRB and HWC->CHW (then per-channel std)."""
    h, w = img.shape[:2]
    oh, ow = out_hw
    s = min(ow / w, oh / h)
    nw, nh = int(round(w * s)), int(round(h * s))
    r = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    l, t = (ow - nw) // 2, (oh - nh) // 2
    r = cv2.copyMakeBorder(r, t, oh - nh - t, l, ow - nw - l, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    blob = cv2.dnn.blobFromImage(r, 1.0, None, tuple(float(m) for m in MEAN[::-1]), swapRB=True)[0]
    blob *= (1.0 / STD)[:, None, None]
    return blob


def bench(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--lib", type=Path, help="a host-built libedgesdk_preproc.so (default: build one now)")
    ap.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (the native kernel is single-threaded)")
    a = ap.parse_args()
    import cv2

    cv2.setNumThreads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lib = NativePreproc(a.lib or build_host_lib(Path(tmp) / "build"))
        rng = np.random.default_rng(0)
        print(f"host: {platform.machine()}, {platform.processor() or platform.platform()}, {os.cpu_count()} cores; "
              f"numpy {np.__version__}, opencv {cv2.__version__} ({a.threads} thread(s)); median of {a.repeat}")
        print()
        print("| source -> network | native (ms) | OpenCV resize+border+normalise (ms) | OpenCV blobFromImage (ms) "
              "| numpy reference (ms) | OpenCV best / native | max abs diff native vs OpenCV |")
        print("|---|---|---|---|---|---|---|")
        for (h, w), out_hw in CASES:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            args = (img, out_hw, MEAN, STD, 114.0, True)
            t_nat = bench(lambda: lib(*args), a.repeat)
            t_cv = bench(lambda: opencv_path(cv2, img, out_hw), a.repeat)
            t_blob = bench(lambda: opencv_blob(cv2, img, out_hw), a.repeat)
            t_np = bench(lambda: letterbox_normalize_numpy(*args), max(5, a.repeat // 5))
            nat = lib(*args).tensor
            diff = float(np.abs(nat - opencv_path(cv2, img, out_hw)).max())
            assert np.array_equal(nat, letterbox_normalize_numpy(*args).tensor)
            print(f"| {h}x{w} -> {out_hw[0]}x{out_hw[1]} | {t_nat:.2f} | {t_cv:.2f} | {t_blob:.2f} | {t_np:.1f} "
                  f"| {min(t_cv, t_blob) / t_nat:.2f}x | {diff:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

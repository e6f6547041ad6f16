#!/usr/bin/env python3
"""Runtime benchmarks, each a side-by-side ratio measured in one run on this machine (not a board).

    1. Session.run vs the raw engine call (ncnn, MNN, TFLite) on the same model and input
    2. edgesdk NMS vs cv2.dnn.NMSBoxes on 25,200 YOLO candidates (same kept boxes checked)
    3. letterbox + normalise vs the same built on cv2.resize/copyMakeBorder + cv2.dnn.blobFromImage
    4. Pipeline (threads) vs a sequential predict() loop

Usage: .venv/bin/python scripts/bench_runtime.py [--json OUT.json] [--quick]
Timings interleave the two sides (A, B, A, B, ...) and report medians, so that drift on a
shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import runtime_bundles as rb

from edgesdk.runtime import Pipeline, Session
from edgesdk.runtime.manifest import Postprocess, Preprocess
from edgesdk.runtime.postprocess import nms
from edgesdk.runtime.preprocess import Preprocessor, letterbox_geometry

SIZE = 224


def paired(a, b, n: int, warmup: int = 5) -> tuple[float, float]:
    """Median ms of a() and b(), interleaved."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(n):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def raw_calls(bundle: Path, engine: str, x: np.ndarray):
    """The engine's own Python API, as a user would call it without edgesdk, returning numpy."""
    seg_files = {"ncnn": ("s0_ncnn.param", "s0_ncnn.bin"), "mnn": ("s0_mnn.mnn",), "tflite": ("s0_tflite.tflite",)}
    f = [str(bundle / p) for p in seg_files[engine]]
    if engine == "ncnn":
        import ncnn

        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        net.opt.num_threads = 1
        for a in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(net.opt, a, False)
        net.load_param(f[0])
        net.load_model(f[1])

        def call():
            ex = net.create_extractor()
            ex.input("in0", ncnn.Mat(x[0]))
            _, m = ex.extract("out0")
            return np.array(m)

        return call, net
    if engine == "mnn":
        import MNN

        F = MNN.expr
        rt = MNN.nn.create_runtime_manager(({"backend": "CPU", "numThread": 1, "precision": "high"},))
        mod = MNN.nn.load_module_from_file(f[0], ["x"], ["logits" if "all" in str(bundle) else "a"], runtime_manager=rt)

        def call():
            out = mod.onForward([F.const(x, list(x.shape), F.NCHW, F.float)])[0]
            if out.data_format != F.NCHW:
                out = F.convert(out, F.NCHW)
            return np.array(out.read(), copy=True)

        return call, mod
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=f[0], num_threads=1)
    it.allocate_tensors()
    i_in, i_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # a TFLite user feeds NHWC directly

    def call():
        it.set_tensor(i_in, xh)
        it.invoke()
        return it.get_tensor(i_out)

    return call, it


def bench_session(work: Path, n: int) -> list[dict]:
    rb.H = rb.W = SIZE
    rb._SHAPES.update({"x": [1, 3, SIZE, SIZE], "a": [1, 8, SIZE, SIZE], "b": [1, 8, SIZE, SIZE]})
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    rows = []
    for engine, part in (("ncnn", "all"), ("mnn", "all"), ("tflite", "head")):
        b = rb.make_bundle(work / f"{engine}-{part}", [(engine, part)])
        with Session(b) as s:
            raw, keep = raw_calls(b, engine, x)
            feed = {"x": x}
            np.testing.assert_allclose(
                next(iter(s.run(feed).values())).reshape(-1)[:5] if engine != "tflite" else
                s.run(feed)["a"].transpose(0, 2, 3, 1).reshape(-1)[:5], raw().reshape(-1)[:5], rtol=1e-3, atol=1e-3)
            t_sess, t_raw = paired(lambda s=s, feed=feed: s.run(feed), raw, n)
        note = "raw: fed NHWC directly; Session converts the model's NCHW in and out" if engine == "tflite" else ""
        if engine == "tflite":
            def raw_nchw(raw=raw, it=keep):  # the same call for a caller holding NCHW tensors, as the model has
                it.set_tensor(it.get_input_details()[0]["index"], x.transpose(0, 2, 3, 1))
                it.invoke()
                return it.get_tensor(it.get_output_details()[0]["index"]).transpose(0, 3, 1, 2)

            with Session(b) as s:
                t_s2, t_r2 = paired(lambda s=s, feed=feed: s.run(feed), raw_nchw, n)
            rows.append({"engine": "tflite", "model": f"tiny CNN {part} 1x3x{SIZE}x{SIZE}", "raw_ms": round(t_r2, 4),
                         "session_ms": round(t_s2, 4), "ratio": round(t_s2 / t_r2, 3), "added_ms": round(t_s2 - t_r2, 4),
                         "note": "raw: the same NCHW<->NHWC transposes done by the caller"})
        rows.append({"engine": engine, "model": f"tiny CNN {part} 1x3x{SIZE}x{SIZE}", "raw_ms": round(t_raw, 4),
                     "session_ms": round(t_sess, 4), "ratio": round(t_sess / t_raw, 3),
                     "added_ms": round(t_sess - t_raw, 4), "note": note})
    return rows


def yolo_candidates(n: int = 25200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """25,200 candidates like a YOLOv5s 640x640 head: 40 objects with jittered candidate clusters, scores
    mostly low (beta(0.5, 8)), so ~900 pass conf 0.25."""
    r = np.random.default_rng(seed)
    centres, sizes = r.uniform(50, 590, (40, 2)), r.uniform(20, 200, (40, 2))
    k = r.integers(0, 40, n)
    j = r.normal(0, 0.08, (n, 4))
    c = centres[k] + j[:, :2] * sizes[k]
    wh = sizes[k] * np.exp(j[:, 2:])
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    return boxes, r.beta(0.5, 8, n).astype(np.float32)


def bench_nms(n: int) -> list[dict]:
    import cv2

    boxes, scores = yolo_candidates()
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    rows = []
    for conf in (0.25, 0.001):
        ours = nms(boxes, scores, 0.45, score_threshold=conf)
        bl, sl = xywh.tolist(), scores.tolist()
        ref = np.asarray(cv2.dnn.NMSBoxes(bl, sl, conf, 0.45)).reshape(-1)
        same = ours.tolist() == ref.tolist()
        t_ours, t_cv_list = paired(lambda c=conf: nms(boxes, scores, 0.45, score_threshold=c),
                                   lambda bl=bl, sl=sl, c=conf: cv2.dnn.NMSBoxes(bl, sl, c, 0.45), n)
        _, t_cv_arr = paired(lambda: None, lambda c=conf: cv2.dnn.NMSBoxes(xywh, scores, c, 0.45), max(5, n // 4))
        rows.append({"candidates": len(scores), "conf": conf, "above_conf": int((scores > conf).sum()),
                     "kept": len(ours), "same_kept_boxes": same, "edgesdk_ms": round(t_ours, 4),
                     "cv2_lists_ms": round(t_cv_list, 4), "cv2_arrays_ms": round(t_cv_arr, 4),
                     "ratio_vs_cv2_lists": round(t_ours / t_cv_list, 3)})
    return rows


def bench_preproc(n: int) -> list[dict]:
    import cv2
    from skimage import data

    img = cv2.resize(np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (1920, 1080))
    spec = Preprocess(input="x", size=(640, 640))
    ours = Preprocessor(spec, backend="opencv")

    def blob():
        _, nw, nh, px, py = letterbox_geometry(1080, 1920, 640, 640)
        lb = cv2.copyMakeBorder(cv2.resize(img, (nw, nh)), py, 640 - nh - py, px, 640 - nw - px,
                                cv2.BORDER_CONSTANT, value=(114, 114, 114))
        return cv2.dnn.blobFromImage(lb, 1 / 255.0, swapRB=True)

    assert np.abs(ours(img)[0] - blob()).max() < 1e-5
    t_ours, t_blob = paired(lambda: ours(img), blob, n)
    rows = [{"what": "1920x1080 BGR -> 640x640 letterbox, /255, RGB, NCHW float32", "backend": "opencv",
             "edgesdk_ms": round(t_ours, 4), "blobFromImage_ms": round(t_blob, 4), "ratio": round(t_ours / t_blob, 3)}]
    npy = Preprocessor(spec, backend="numpy")
    t_np, t_blob2 = paired(lambda: npy(img), blob, max(5, n // 10))
    rows.append({"what": rows[0]["what"], "backend": "numpy (no OpenCV)", "edgesdk_ms": round(t_np, 4),
                 "blobFromImage_ms": round(t_blob2, 4), "ratio": round(t_np / t_blob2, 3)})
    return rows


def bench_pipeline(work: Path, frames: int, size: int = 416) -> dict:
    import cv2
    from skimage import data

    rb.H = rb.W = size
    rb._SHAPES.update({"x": [1, 3, size, size], "a": [1, 8, size, size], "b": [1, 8, size, size]})
    b = rb.make_bundle(work / "pipe", [("ncnn", "all")],
                       preprocess=Preprocess(input="x", size=(size, size)),
                       postprocess=Postprocess(kind="classification", softmax=True, top_k=5))
    img = cv2.resize(np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (1920, 1080))
    src = [img] * frames
    with Session(b) as s:
        for _ in range(3):
            s.predict(img)
        t = time.perf_counter()
        for f in src:
            s.predict(f)
        seq = time.perf_counter() - t
        p = Pipeline(s, src, queue_size=4, drop=False)
        t = time.perf_counter()
        got = sum(1 for _ in p)
        par = time.perf_counter() - t
        stage = s.predict(img).timings
    return {"frames": frames, "model": f"tiny CNN 1x3x{size}x{size} on ncnn (1 thread), 1080p input",
            "sequential_fps": round(frames / seq, 1), "pipeline_fps": round(got / par, 1),
            "speedup": round(seq / par, 3), "dropped": p.stats.dropped_total,
            "stage_ms": {"pre": round(stage.preprocess_ms, 3), "infer": round(stage.inference_ms, 3),
                         "post": round(stage.postprocess_ms, 3)}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    n = 40 if a.quick else 300
    res: dict = {"host": {"machine": platform.machine(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "note": "x86-64 development host, shared; NOT a board"}}
    from importlib import metadata

    res["versions"] = {d: metadata.version(d) for d in ("numpy", "ncnn", "MNN", "ai-edge-litert", "onnxruntime",
                                                        "opencv-python-headless")}
    from edgesdk.runtime.__main__ import native_stdout_to_stderr

    with tempfile.TemporaryDirectory() as tmp, native_stdout_to_stderr():
        work = Path(tmp)
        res["session_vs_raw"] = bench_session(work, n)
        res["nms"] = bench_nms(max(20, n // 3))
        res["preprocess"] = bench_preproc(max(20, n // 3))
        reps = [bench_pipeline(work, 30 if a.quick else 150) for _ in range(1 if a.quick else 3)]
        res["pipeline"] = sorted(reps, key=lambda r: r["speedup"])[len(reps) // 2]  # the median run
        res["pipeline"]["speedups_all_runs"] = [r["speedup"] for r in reps]
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

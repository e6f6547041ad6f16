"""Load an exported Caffe model with OpenCV's Caffe importer and run it: the host check of the NNIE path.

OpenCV 5 dropped the Caffe importer (cv2.dnn.readNetFromCaffe); edgesdk's environment pins
OpenCV 5, so the check runs in the nnie toolchain venv (OpenCV 4.x, `edgesdk toolchain install
nnie`) through a self-contained script, unless this interpreter's OpenCV still has the importer.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.errors import EnvironmentProblem, ToolchainError

#: Run by the OpenCV 4.x interpreter: argv = prototxt caffemodel in.npz out.npz output-blob...
CHECK_SCRIPT = (
    "import sys, numpy as np, cv2\n"
    "proto, model, fin, fout, *outs = sys.argv[1:]\n"
    "net = cv2.dnn.readNetFromCaffe(proto, model)\n"
    "net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV); net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)\n"
    "feeds = np.load(fin)\n"
    "for k in feeds.files: net.setInput(np.ascontiguousarray(feeds[k], dtype=np.float32), k)\n"
    "res = net.forward(outs)\n"
    "np.savez(fout, **{o: np.asarray(r) for o, r in zip(outs, res)})\n"
    "print('opencv', cv2.__version__)\n"
)


def _has_caffe_importer(python: str) -> bool:
    try:
        r = subprocess.run([python, "-c", "import cv2, sys; sys.exit(0 if hasattr(cv2.dnn, 'readNetFromCaffe') else 3)"],
                           capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def opencv_caffe_python() -> str | None:
    """An interpreter whose OpenCV has the Caffe importer: this one, else the nnie toolchain venv's."""
    try:
        import cv2

        if hasattr(cv2.dnn, "readNetFromCaffe"):
            return sys.executable
    except ImportError:
        pass
    from edgesdk.paths import toolchain_venv

    py = toolchain_venv("nnie") / "bin" / "python"
    if py.is_file() and _has_caffe_importer(str(py)):
        return str(py)
    return None


def run_caffe(prototxt: str | Path, caffemodel: str | Path, feeds: Mapping[str, Any], outputs: Sequence[str],
              python: str | None = None, timeout: float = 300.0) -> dict[str, np.ndarray]:
    """Run the Caffe model with OpenCV (cv2.dnn.readNetFromCaffe); feeds and outputs by Caffe blob name."""
    py = python or opencv_caffe_python()
    if py is None:
        raise EnvironmentProblem("no OpenCV with the Caffe importer (cv2.dnn.readNetFromCaffe; removed in OpenCV 5)",
                                 fix="edgesdk toolchain install nnie")
    with tempfile.TemporaryDirectory(prefix="edgesdk-caffe-") as d:
        fin, fout = Path(d) / "in.npz", Path(d) / "out.npz"
        np.savez(fin, **{k: np.asarray(v, np.float32) for k, v in feeds.items()})
        argv = [py, "-c", CHECK_SCRIPT, str(prototxt), str(caffemodel), str(fin), str(fout), *outputs]
        try:
            r = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ToolchainError("opencv-caffe", tuple(argv), None, "    timed out") from exc
        if r.returncode != 0:
            out = (r.stdout + r.stderr).decode("utf-8", "replace").strip().splitlines()[-15:]
            raise ToolchainError("opencv-caffe", tuple(argv[:2]) + ("<check script>",) + tuple(argv[3:]),
                                 r.returncode, "\n".join("    " + x for x in out))
        data = np.load(fout)
        return {k: data[k] for k in data.files}


def compare_with_onnxruntime(onnx_model: str | Path, export: Any, feeds: Mapping[str, Any],
                             python: str | None = None) -> dict[str, float]:
    """Max abs difference per output between onnxruntime on the ONNX model and OpenCV on its Caffe export."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    names = list(export.outputs)
    ref = dict(zip(names, sess.run(names, {k: np.asarray(v, np.float32) for k, v in feeds.items()})))
    got = run_caffe(export.prototxt, export.caffemodel, {export.inputs[k]: v for k, v in feeds.items()},
                    [export.outputs[n] for n in names], python)
    return {n: float(np.max(np.abs(got[export.outputs[n]].reshape(ref[n].shape) - ref[n]))) for n in names}


__all__ = ["CHECK_SCRIPT", "compare_with_onnxruntime", "opencv_caffe_python", "run_caffe"]

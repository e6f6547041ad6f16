"""Horizon BPU adapter (Sunrise X3 / RDK X3): `hobot_dnn.pyeasy_dnn`, with NV12 input conversion.

NOT VERIFIED ON HARDWARE: written against Horizon's documented Python API
(`from hobot_dnn import pyeasy_dnn as dnn; models = dnn.load(path)`; `model.inputs[i].properties`
with `.shape`, `.layout`, `.tensor_type` ("NV12_SEPARATE", "NV12", "F32", ...);
`outputs = model.forward(data)`; `outputs[i].buffer` and `.properties.scale_data`,
`.properties.quantiType`), and unit-tested against fakes of that shape (edgesdk.runtime.fakes).

Models compiled with an NV12 input (the usual case on the X3: the camera's native format)
take one uint8 buffer of H*W*3/2 bytes; this adapter converts the Session's (1, 3, H, W)
image tensor (0-255, colour order from the segment option "color", default "BGR") to NV12.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.engines import Engine, import_engine
from edgesdk.runtime.errors import EngineFailure, InputMismatch
from edgesdk.runtime.manifest import TensorSpec

SCALE_QUANT = 2  # hbDNNQuantiType SCALE: real = q * scale_data[channel]


def bgr_to_nv12(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> flat NV12 (Y plane, then interleaved U, V at half resolution), BT.601 limited range,
    as cv2.cvtColor(COLOR_BGR2YUV_I420) computes it (the X3's image pipeline uses the same matrix)."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        raise InputMismatch(f"bpu: NV12 needs an even height and width, got {h}x{w}")
    f = img.astype(np.float32)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    y = 0.257 * r + 0.504 * g + 0.098 * b + 16.0
    # chroma of each 2x2 block, from the block's mean colour
    rb = r.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    gb = g.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    bb = b.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    u = -0.148 * rb - 0.291 * gb + 0.439 * bb + 128.0
    v = 0.439 * rb - 0.368 * gb - 0.071 * bb + 128.0
    uv = np.stack([u, v], axis=-1).reshape(h // 2, w)
    out = np.empty(h * w * 3 // 2, dtype=np.uint8)
    out[: h * w] = np.clip(np.rint(y), 0, 255).reshape(-1)
    out[h * w:] = np.clip(np.rint(uv), 0, 255).reshape(-1)
    return out


class BpuEngine(Engine):
    name = "bpu"
    modules = ("hobot_dnn",)
    install_hint = "install Horizon's hobot-dnn package on the board (the RDK X3 system image ships it: python3 -c 'from hobot_dnn import pyeasy_dnn')"
    per_layer_note = "per-node BPU times come from hrt_model_exec --profile_path, not hobot_dnn"

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("hobot-dnn", "hobot_dnn")

    def __init__(self) -> None:
        self._model: Any = None

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        dnn = import_engine(self.name, "hobot_dnn.pyeasy_dnn")
        path = self._file(files, "model", "bin")
        try:
            models = dnn.load(str(path))
        except Exception as exc:
            raise EngineFailure(f"bpu: hobot_dnn could not load {path.name}: {exc}") from exc
        if not models:
            raise EngineFailure(f"bpu: {path.name} holds no model")
        name = options.get("model_name")
        self._model = next((m for m in models if getattr(m, "name", None) == name), models[0]) if name else models[0]
        if len(self._model.inputs) != len(inputs):
            raise EngineFailure(f"bpu: {path.name} has {len(self._model.inputs)} inputs, the manifest {len(inputs)}")
        self._color = str(options.get("color", "BGR")).upper()
        self._ins = []
        for spec, t in zip(inputs, self._model.inputs):
            tt = str(t.properties.tensor_type).upper()
            self._ins.append((spec.engine_name or spec.name, "NV12" in tt, tuple(t.properties.shape)))
        self._outs = [t.engine_name or t.name for t in outputs]

    def _to_nv12(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or 3 not in (x.shape[0], x.shape[-1]):
            raise InputMismatch(f"bpu: NV12 input needs a (1, 3, H, W) or (1, H, W, 3) image, got {x.shape}")
        img = x.transpose(1, 2, 0) if x.shape[0] == 3 and x.shape[-1] != 3 else x
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8) if img.dtype != np.uint8 else img
        if self._color == "RGB":
            img = img[..., ::-1]
        return bgr_to_nv12(np.ascontiguousarray(img))

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = [self._to_nv12(feed[n], shape) if nv12 else np.ascontiguousarray(feed[n]) for n, nv12, shape in self._ins]
        try:
            res = self._model.forward(data[0] if len(data) == 1 else data)
        except Exception as exc:
            raise EngineFailure(f"bpu: forward failed: {exc}") from exc
        out = {}
        for name, t in zip(self._outs, res):
            buf = np.asarray(t.buffer)
            props = t.properties
            scale = np.asarray(getattr(props, "scale_data", ()) or (), dtype=np.float32)
            if getattr(props, "quantiType", 0) == SCALE_QUANT and scale.size:
                # per-channel scale on the channel axis (NCHW: 1, NHWC: last)
                axis = 1 if str(getattr(props, "layout", "NCHW")).upper().endswith("NCHW") else buf.ndim - 1
                shp = [1] * buf.ndim
                shp[axis] = scale.size
                buf = buf.astype(np.float32) * scale.reshape(shp)
            out[name] = buf
        return out

    def close(self) -> None:
        self._model = None

"""Image preprocessing declared in the manifest: resize/letterbox, colour order, normalise, layout.

OpenCV is used for the resize when it is installed, numpy otherwise (bilinear with the same
half-pixel convention as cv2.INTER_LINEAR). Normalisation, channel order and layout are one
fused pass: x * (scale / std) - mean / std, written straight into the output layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesdk.runtime.errors import InputMismatch
from edgesdk.runtime.manifest import Preprocess

_CV2: Any = None


def cv2_module() -> Any:
    """cv2 if it imports, else None (cached). Never imported at edgesdk.runtime import time."""
    global _CV2
    if _CV2 is None:
        try:
            import cv2  # type: ignore[import-not-found]
        except ImportError:
            cv2 = False
        _CV2 = cv2
    return _CV2 or None


@dataclass(frozen=True)
class Geometry:
    """How network-input pixels map back to the source image: src = (net - pad) / scale."""

    src_h: int
    src_w: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x1, y1, x2, y2 in network pixels -> source pixels, clipped to the image."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.src_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.src_h, out=out[:, 1::2])
        return out


def letterbox_geometry(h: int, w: int, out_h: int, out_w: int) -> tuple[float, int, int, int, int]:
    """(scale, new_w, new_h, pad_left, pad_top): the image fits inside, centred."""
    s = min(out_w / w, out_h / h)
    new_w = max(1, min(out_w, math.floor(w * s + 0.5)))
    new_h = max(1, min(out_h, math.floor(h * s + 0.5)))
    return s, new_w, new_h, (out_w - new_w) // 2, (out_h - new_h) // 2


def _axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = (np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5
    src = np.maximum(src, 0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_numpy(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Bilinear resize (H, W, C) uint8, half-pixel centres like cv2.INTER_LINEAR; rounded back to uint8."""
    h, w = img.shape[:2]
    if (h, w) == (new_h, new_w):
        return img
    y0, y1, fy = _axis(new_h, h)
    x0, x1, fx = _axis(new_w, w)
    top = img[y0].astype(np.float32)
    bot = img[y1].astype(np.float32)
    rows = top + (bot - top) * fy[:, None, None]
    left, right = rows[:, x0], rows[:, x1]
    out = left + (right - left) * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize(img: np.ndarray, new_w: int, new_h: int, backend: str = "auto") -> np.ndarray:
    cv2 = cv2_module() if backend != "numpy" else None
    if cv2 is not None:
        out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return out[:, :, None] if out.ndim == 2 and img.ndim == 3 else out  # cv2 drops a single channel axis
    return resize_numpy(img, new_w, new_h)


def to_grey(img: np.ndarray, backend: str = "auto") -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (H, W, 1) uint8 luma, 0.299 R + 0.587 G + 0.114 B (OpenCV's COLOR_BGR2GRAY, which it
    computes in fixed point: the numpy path can differ from it by 1 on some pixels)."""
    cv2 = cv2_module() if backend != "numpy" else None
    if cv2 is not None:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)[:, :, None]
    y = img[:, :, 0] * np.float32(0.114) + img[:, :, 1] * np.float32(0.587) + img[:, :, 2] * np.float32(0.299)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[:, :, None]


class Preprocessor:
    """Callable: image (H, W, 3) uint8 BGR -> (batch-1 tensor, Geometry). A one-channel model (mean/std of one
    value) takes the image's luma (to_grey)."""

    def __init__(self, spec: Preprocess, backend: str = "auto") -> None:
        if backend not in ("auto", "opencv", "numpy"):
            raise InputMismatch(f"preprocess backend: expected auto, opencv or numpy, got {backend!r}")
        if backend == "opencv" and cv2_module() is None:
            raise InputMismatch("preprocess backend 'opencv' asked for, but cv2 is not installed "
                                "(pip install opencv-python-headless)")
        self.spec = spec
        self.backend = backend
        n = len(spec.mean)
        std = np.asarray(spec.std, dtype=np.float64)
        self._a = (spec.scale / std).astype(np.float32).reshape(n)
        self._b = (-np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32).reshape(n)
        self._swap = spec.color == "RGB"  # images arrive BGR
        self._dtype = np.dtype(spec.dtype)
        self._blob = self._blob_params() if self.uses_opencv else None

    def _blob_params(self) -> Any:
        """cv2.dnn.blobFromImageWithParams does scale, mean, channel swap and HWC->NCHW in one C++ pass:
        blob = (img[swapped] - m) * f, so f = scale / std and m = mean / scale per model channel."""
        cv2 = cv2_module()
        if (self.spec.layout != "NCHW" or len(self._a) != 3 or not hasattr(cv2, "dnn")
                or not hasattr(cv2.dnn, "blobFromImageWithParams") or np.any(self._a == 0)):
            return None
        p = cv2.dnn.Image2BlobParams()
        p.scalefactor = (*(float(v) for v in self._a), 0.0)
        p.mean = (*(float(-b / a) for a, b in zip(self._a, self._b)), 0.0)
        p.size = (int(self.spec.size[1]), int(self.spec.size[0]))
        p.swapRB = self._swap
        p.ddepth = cv2.CV_32F
        return p

    @property
    def uses_opencv(self) -> bool:
        return self.backend != "numpy" and cv2_module() is not None

    def geometry(self, h: int, w: int) -> tuple[Geometry, int, int, int, int]:
        out_h, out_w = self.spec.size
        mode = self.spec.resize
        if mode == "letterbox":
            _, nw, nh, px, py = letterbox_geometry(h, w, out_h, out_w)
            return Geometry(h, w, nw / w, nh / h, px, py), nw, nh, px, py
        if mode == "stretch":
            return Geometry(h, w, out_w / w, out_h / h, 0, 0), out_w, out_h, 0, 0
        if (h, w) != (out_h, out_w):
            raise InputMismatch(f"preprocess: resize 'none' needs a {out_h}x{out_w} image, given {h}x{w}")
        return Geometry(h, w, 1.0, 1.0, 0, 0), w, h, 0, 0

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """The resized and padded uint8 image (out_h, out_w, C), still BGR (grey for a one-channel model)."""
        img = self._check(image)
        if len(self._a) == 1 and img.shape[2] == 3:
            img = to_grey(img, self.backend)
        h, w = img.shape[:2]
        geo, nw, nh, px, py = self.geometry(h, w)
        out_h, out_w = self.spec.size
        small = resize(img, nw, nh, self.backend)
        if (nw, nh) == (out_w, out_h):
            return small, geo
        pad = int(round(self.spec.pad_value))
        cv2 = cv2_module() if self.backend != "numpy" else None
        if cv2 is not None:
            out = cv2.copyMakeBorder(small, py, out_h - nh - py, px, out_w - nw - px, cv2.BORDER_CONSTANT,
                                     value=(pad,) * 4)
            if out.ndim == 2:
                out = out[:, :, None]
            return out, geo
        out = np.full((out_h, out_w, img.shape[2]), pad, dtype=np.uint8)
        out[py:py + nh, px:px + nw] = small
        return out, geo

    def normalize(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 BGR -> (1, C, H, W) or (1, H, W, C) in the model's colour order and dtype."""
        h, w, c = img.shape
        if c != len(self._a):
            raise InputMismatch(f"preprocess: the manifest normalises {len(self._a)} channels, the image has {c}")
        f32 = np.float32
        if self._blob is not None and (w, h) == self._blob.size:
            out = cv2_module().dnn.blobFromImageWithParams(img, self._blob)
        elif self.spec.layout == "NCHW":
            out = np.empty((1, c, h, w), dtype=f32)
            for k in range(c):
                src = img[:, :, c - 1 - k] if self._swap and c == 3 else img[:, :, k]
                np.multiply(src, self._a[k], out=out[0, k], dtype=f32)
                out[0, k] += self._b[k]
        else:
            src = img[:, :, ::-1] if self._swap and c == 3 else img
            out = (src * self._a + self._b).astype(f32, copy=False)[None]
        if self._dtype == f32:
            return out
        if self._dtype.kind in "iu":
            info = np.iinfo(self._dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(self._dtype)
        return out.astype(self._dtype)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        lb, geo = self.letterbox(image)
        return self.normalize(lb), geo

    @staticmethod
    def _check(image: Any) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise InputMismatch(f"image: expected a numpy array (H, W, 3) uint8 BGR, given {type(image).__name__}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.dtype != np.uint8:
            raise InputMismatch(f"image: expected (H, W, 3) uint8 BGR, given {image.dtype.name}{list(image.shape)}")
        return image


__all__ = ["Geometry", "Preprocessor", "cv2_module", "letterbox_geometry", "resize", "resize_numpy", "to_grey"]

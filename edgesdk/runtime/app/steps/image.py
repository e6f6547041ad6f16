"""Image steps: network-input tensors from an image, crops, and the crop orientation fix.

    letterbox         image -> tensor, meta         resize keeping the ratio, pad, colour order, normalise, layout
    resize            image -> tensor, meta         the same without keeping the ratio (a plain resize)
    crop              image, boxes -> crops         axis-aligned crops, one per box (a list)
    perspective_crop  image, quads -> crops         rotated boxes cut out and made upright (PaddleOCR's
                                                    get_rotate_crop_image), one per quad (a list)
    orient            image, probs -> image, angle  turn a crop by 180 degrees when a direction classifier says so

Images are (H, W, 3) uint8 BGR (OpenCV's order) or grey (H, W) / (H, W, 1). numpy only (they run on the board,
where there is no OpenCV, and the host's reference run uses the same code): the resize is
edgesdk.runtime.preprocess.resize_numpy (bilinear, cv2.INTER_LINEAR's half-pixel centres) and the perspective
crop samples bilinearly with numpy, so the outputs never depend on whether cv2 is installed.

``meta`` is float32 [scale_x, scale_y, pad_x, pad_y, src_h, src_w] with source = (net - pad) / scale: what the
detect and text steps read to map network-input coordinates back to the source image.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.app.steps.base import AppError, Params, Step, Value, as_array
from edgesdk.runtime.preprocess import letterbox_geometry, resize_numpy


# -- helpers -------------------------------------------------------------------------------------
def _image(x: Any, where: str, name: str = "image") -> tuple[np.ndarray, bool]:
    """An image input as (H, W, C) uint8 with C 1 or 3, and whether it came as a 2-d (H, W) grey image."""
    a = as_array(x, where, name)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)) or a.dtype != np.uint8:
        raise AppError(f"{where}: input {name!r} is {a.dtype.name}{list(a.shape)}; expected an (H, W, 3) uint8 BGR "
                       "image, or grey (H, W) / (H, W, 1) uint8")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise AppError(f"{where}: input {name!r} is an empty image of shape {list(a.shape)}")
    return (a[:, :, None], True) if a.ndim == 2 else (a, False)


def _numbers(x: Any, where: str, name: str) -> np.ndarray:
    """A numeric input as float64, non-finite values refused."""
    a = as_array(x, where, name)
    if a.dtype.kind not in "biuf":
        raise AppError(f"{where}: input {name!r} has dtype {a.dtype.name}; expected numbers")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise AppError(f"{where}: input {name!r} has non-finite values")
    return a


def _size(p: Params, key: str) -> tuple[int, int]:
    v = p.get(key, (list, tuple))
    if len(v) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v):
        raise p.fail(key, f"expected [height, width], two integers >= 1, got {v!r}")
    return int(v[0]), int(v[1])


def _per_channel(p: Params, key: str, default: float, channels: int) -> np.ndarray:
    """mean / std: one number (or a list of one) for every channel, or a list of one per channel."""
    raw = p.params.get(key)
    one = isinstance(raw, (int, float)) and not isinstance(raw, bool)
    v = p.floats(key, 1 if one else None, default=(default,))
    if len(v) not in (1, channels) or not all(math.isfinite(x) for x in v):
        raise p.fail(key, f"expected 1 or {channels} finite numbers (one per channel), got {list(v)}")
    return np.asarray(v * (channels if len(v) == 1 else 1), dtype=np.float32)


def _switch(p: Params, key: str) -> str:
    """An auto | true | false param (YAML's true/false arrive as booleans)."""
    v = p.get(key, (str, bool), "auto")
    if isinstance(v, bool):
        return "true" if v else "false"
    if v not in ("auto", "true", "false"):
        raise p.fail(key, f"expected one of auto, true, false, got {v!r}")
    return v


def _looks_like_probs(a: np.ndarray, axis: int = -1) -> bool:
    """Scores in [0, 1] summing to 1 (within fp16 rounding) along axis: already probabilities."""
    return bool(a.size) and bool((a >= 0).all() and (a <= 1).all()
                                 and (np.abs(a.sum(axis=axis) - 1.0) < 1e-2).all())


def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (float64)."""
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# -- network input -------------------------------------------------------------------------------
class Letterbox(Step):
    """An image -> a batch-1 float32 network input, and the meta that maps network pixels back to the source.

    ``size`` [h, w] of the network input. ``keep_ratio`` (default true): the image is scaled to fit inside and
    padded, centred (``align: center``, edgesdk.runtime.preprocess.letterbox_geometry) or at the top left
    (``align: topleft``: the same scale and size, no pad before it); the padded area holds what a pixel of value
    ``pad_value`` (0..255, default 114) normalises to. ``fit: height`` (default ``contain``) is PaddleOCR's
    text-line resize instead: the height filled, the width by the ratio up to w (a longer line is squeezed into w),
    the rest padded. With ``widths`` [w1 < w2 < ... = w] (fit: height only) the tensor is as wide as the first
    width the line fits into, squeezed by at most ``max_squeeze`` (default 1: not at all): the recogniser after it
    is a model stage converted at each width (input_shape with one shape per width), and a long line is read at a
    width near its own instead of squeezed into w. Without keep_ratio the image is resized to [h, w]. The
    resize is resize_numpy (bilinear, uint8 in and out). ``color``: the model's channel order, RGB (default) or
    BGR, or GREY (0.299 R + 0.587 G + 0.114 B of the resized image in float, one channel); a grey image given to
    an RGB/BGR model is repeated on three channels. Then x = (pixel * scale - mean) / std per channel (``scale``
    default 1/255, ``mean`` default 0, ``std`` default 1: one number or one per channel in the model's order),
    laid out ``NCHW`` (default) or ``NHWC``.

    meta: float32 [scale_x, scale_y, pad_x, pad_y, src_h, src_w] with scale_x = new_w / src_w (and y alike), so
    source = (net - pad) / scale.
    """

    kind: ClassVar[str] = "letterbox"
    inputs: ClassVar[tuple[str, ...]] = ("image",)
    outputs: ClassVar[tuple[str, ...]] = ("tensor", "meta")
    letterbox: ClassVar[bool] = True  # Resize: False (no keep_ratio / align / pad_value params)

    def configure(self, p: Params) -> None:
        self.size: tuple[int, int] = _size(p, "size")
        if self.letterbox:
            self.keep_ratio: bool = p.get("keep_ratio", bool, True)
            self.align: str = p.get("align", str, "center", choices=("center", "topleft"))
            self.pad_value: float = p.get("pad_value", float, 114.0, lo=0.0, hi=255.0)
            self.fit: str = p.get("fit", str, "contain", choices=("contain", "height"))
            if self.fit == "height" and not self.keep_ratio:
                raise p.fail("fit", "fit: height keeps the ratio up to the width; it cannot go with keep_ratio: false")
            self.widths: tuple[int, ...] = self._widths(p)
            self.max_squeeze: float = p.get("max_squeeze", float, 1.0, lo=1.0)
            if "max_squeeze" in p.params and len(self.widths) == 1:
                raise p.fail("max_squeeze", "only with widths (a line squeezed into a width, not the next one)")
        else:
            self.keep_ratio, self.align, self.pad_value, self.fit = False, "center", 0.0, "contain"
            self.widths, self.max_squeeze = (self.size[1],), 1.0
        self.color: str = p.get("color", str, "RGB", choices=("RGB", "BGR", "GREY"))
        self.scale: float = p.get("scale", float, 1.0 / 255.0)
        if not math.isfinite(self.scale):
            raise p.fail("scale", f"must be a finite number, got {self.scale!r}")
        c = 1 if self.color == "GREY" else 3
        self.mean: np.ndarray = _per_channel(p, "mean", 0.0, c)
        self.std: np.ndarray = _per_channel(p, "std", 1.0, c)
        if (self.std == 0).any():
            raise p.fail("std", f"must not be 0, got {self.std.tolist()}")
        self.layout: str = p.get("layout", str, "NCHW", choices=("NCHW", "NHWC"))

    def _widths(self, p: Params) -> tuple[int, ...]:
        if "widths" not in p.params:
            p.get("widths", list, None)
            return (self.size[1],)
        v = p.get("widths", list)
        if not v or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v) \
                or any(b <= a for a, b in zip(v, v[1:])):
            raise p.fail("widths", f"expected increasing integers >= 1, got {v!r}")
        if self.fit != "height":
            raise p.fail("widths", "only with fit: height (a text line read at one of several widths)")
        if v[-1] != self.size[1]:
            raise p.fail("widths", f"the last width is size's width ({self.size[1]}), got {v[-1]}")
        return tuple(int(n) for n in v)

    def out_width(self, h: int, w: int) -> int:
        """The tensor's width for an h x w source: size's, or with widths the first one the image fits into at
        the network height, squeezed by at most max_squeeze (else the last)."""
        if len(self.widths) == 1:
            return self.size[1]
        natural = math.ceil(self.size[0] * w / h)
        return next((x for x in self.widths if x * self.max_squeeze >= natural), self.widths[-1])

    def geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(new_w, new_h, pad_x, pad_y) of an h x w source image."""
        out_h, out_w = self.size[0], self.out_width(h, w)
        if not self.keep_ratio:
            return out_w, out_h, 0, 0
        if self.fit == "height":  # PaddleOCR's text-line resize: full height, width by the ratio, squeezed at out_w
            nw = max(1, min(out_w, math.ceil(out_h * w / h)))
            return (nw, out_h, 0, 0) if self.align == "topleft" else (nw, out_h, (out_w - nw) // 2, 0)
        _, nw, nh, px, py = letterbox_geometry(h, w, out_h, out_w)
        return (nw, nh, 0, 0) if self.align == "topleft" else (nw, nh, px, py)

    def _channels(self, img: np.ndarray) -> np.ndarray:
        """(h, w, 1 or 3) uint8 BGR -> (h, w, C) float32 in the model's channel order."""
        f = img.astype(np.float32)
        if self.color == "GREY":
            if f.shape[2] == 1:
                return f
            return (f[:, :, 2] * np.float32(0.299) + f[:, :, 1] * np.float32(0.587)
                    + f[:, :, 0] * np.float32(0.114))[:, :, None]
        if f.shape[2] == 1:
            return np.repeat(f, 3, axis=2)
        return f[:, :, ::-1] if self.color == "RGB" else f

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        img, _ = _image(inputs["image"], self.where)
        h, w = img.shape[:2]
        out_h, out_w = self.size[0], self.out_width(h, w)
        nw, nh, px, py = self.geometry(h, w)
        small = self._channels(resize_numpy(img, nw, nh))
        if (nw, nh) == (out_w, out_h):
            canvas = small
        else:
            canvas = np.full((out_h, out_w, small.shape[2]), self.pad_value, dtype=np.float32)
            canvas[py:py + nh, px:px + nw] = small
        x = ((canvas * np.float32(self.scale) - self.mean) / self.std).astype(np.float32, copy=False)
        tensor = np.ascontiguousarray(x.transpose(2, 0, 1)[None] if self.layout == "NCHW" else x[None])
        meta = np.array([nw / w, nh / h, px, py, h, w], dtype=np.float32)
        return {"tensor": tensor, "meta": meta}


class Resize(Letterbox):
    """Letterbox without keeping the ratio: the image is resized to ``size`` [h, w] (so scale_x and scale_y of
    the meta differ in general). Params as letterbox's without keep_ratio, align and pad_value."""

    kind: ClassVar[str] = "resize"
    letterbox: ClassVar[bool] = False


# -- crops ---------------------------------------------------------------------------------------
def _out(crop: np.ndarray, grey2d: bool) -> np.ndarray:
    """A crop in the input image's own form ((H, W) for a 2-d grey image), contiguous and owning its data."""
    return np.ascontiguousarray(crop[:, :, 0] if grey2d else crop).copy()


def _span(lo: float, hi: float, n: int, min_size: int) -> tuple[int, int]:
    """An interval [lo, hi) clipped to [0, n] and rounded outwards, grown to min_size (at most n) around its
    centre and shifted back inside [0, n] when it is shorter."""
    a, b = min(max(lo, 0.0), float(n)), min(max(hi, 0.0), float(n))
    i0, i1 = math.floor(a), math.ceil(b)
    m = min(min_size, n)
    if i1 - i0 < m:
        i0 = min(max(math.floor((a + b) / 2 - m / 2), 0), n - m)
        i1 = i0 + m
    return i0, i1


class Crop(Step):
    """Axis-aligned crops: one uint8 crop per (N, 4) x1, y1, x2, y2 box in source pixels (a list, in box order).

    Each box grows by ``pad`` (a fraction of its width / height, default 0) on every side, is clipped to the
    image and rounded outwards (floor x1, y1; ceil x2, y2). A side shorter than ``min_size`` (default 1) grows to
    min_size around the box's centre, kept inside the image: so a box that is empty after clipping (outside the
    image, or of zero size) still gives a min_size x min_size crop, and the list stays aligned with the boxes.
    Crops of a grey (H, W) image are (h, w).
    """

    kind: ClassVar[str] = "crop"
    inputs: ClassVar[tuple[str, ...]] = ("image", "boxes")
    outputs: ClassVar[tuple[str, ...]] = ("crops",)

    def configure(self, p: Params) -> None:
        self.pad: float = p.get("pad", float, 0.0, lo=0.0)
        self.min_size: int = p.get("min_size", int, 1, lo=1)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        img, grey2d = _image(inputs["image"], self.where)
        b = _numbers(inputs["boxes"], self.where, "boxes")
        if b.size == 0:
            return {"crops": []}
        if b.ndim != 2 or b.shape[1] != 4:
            raise AppError(f"{self.where}: input 'boxes' has shape {b.shape}; expected (N, 4) x1, y1, x2, y2")
        h, w = img.shape[:2]
        crops = []
        for x1, y1, x2, y2 in b.tolist():
            dx, dy = (x2 - x1) * self.pad, (y2 - y1) * self.pad
            i0, i1 = _span(x1 - dx, x2 + dx, w, self.min_size)
            j0, j1 = _span(y1 - dy, y2 + dy, h, self.min_size)
            crops.append(_out(img[j0:j1, i0:i1], grey2d))
        return {"crops": crops}


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 projective map taking the 4 points src (4, 2) to dst (4, 2) (cv2.getPerspectiveTransform's
    8x8 system), float64. A degenerate quad gets the least-squares solution."""
    a = np.zeros((8, 8))
    rhs = np.zeros(8)
    for k, ((x, y), (u, v)) in enumerate(zip(src.tolist(), dst.tolist())):
        a[k] = [x, y, 1, 0, 0, 0, -x * u, -y * u]
        a[k + 4] = [0, 0, 0, x, y, 1, -x * v, -y * v]
        rhs[k], rhs[k + 4] = u, v
    try:
        h = np.linalg.solve(a, rhs)
    except np.linalg.LinAlgError:
        h = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return np.append(h, 1.0).reshape(3, 3)


def warp_quad(img: np.ndarray, quad: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, C) uint8 -> the (h, w, C) uint8 image of the quad (tl, tr, br, bl in source pixels) made upright.

    Output pixel (i, j) has its centre at (j + 0.5, i + 0.5) in a w x h rectangle whose corners map onto the
    quad; that point is sampled bilinearly in the source, whose pixel (r, c) has its centre at (c + 0.5, r + 0.5),
    with the border replicated (coordinates clamped)."""
    m = homography(np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64), quad)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        den = m[2, 0] * gx + m[2, 1] * gy + m[2, 2]
        u = (m[0, 0] * gx + m[0, 1] * gy + m[0, 2]) / den - 0.5
        v = (m[1, 0] * gx + m[1, 1] * gy + m[1, 2]) / den - 0.5
    src_h, src_w = img.shape[:2]
    u = np.clip(np.nan_to_num(u, nan=0.0, posinf=src_w - 1.0, neginf=0.0), 0, src_w - 1)
    v = np.clip(np.nan_to_num(v, nan=0.0, posinf=src_h - 1.0, neginf=0.0), 0, src_h - 1)
    x0 = np.floor(u).astype(np.int64)
    y0 = np.floor(v).astype(np.int64)
    x1 = np.minimum(x0 + 1, src_w - 1)
    y1 = np.minimum(y0 + 1, src_h - 1)
    fx = (u - x0)[:, :, None]
    fy = (v - y0)[:, :, None]
    f = img.astype(np.float64)
    top = f[y0, x0] + (f[y0, x1] - f[y0, x0]) * fx
    bot = f[y1, x0] + (f[y1, x1] - f[y1, x0]) * fx
    return np.clip(np.rint(top + (bot - top) * fy), 0, 255).astype(np.uint8)


class PerspectiveCrop(Step):
    """Rotated boxes cut out and made upright: PaddleOCR's get_rotate_crop_image, one uint8 crop per quad.

    quads: (N, 4, 2) (or (N, 8)) points in source pixels, top-left, top-right, bottom-right, bottom-left (as
    db_boxes gives them). Crop width = int(max(|p0 - p1|, |p2 - p3|)), height = int(max(|p0 - p3|, |p1 - p2|)),
    at least 1; the quad is sampled bilinearly at the crop's pixel centres through the homography taking the
    crop's corners to the quad, with the border replicated (warp_quad). A crop with height / width >=
    ``rotate_ratio`` (default 1.5; 0: never) is turned 90 degrees counter-clockwise (np.rot90, as PaddleOCR does:
    vertical text). Paddle's cv2.warpPerspective interpolates bicubically and at integer pixel coordinates, so
    its crops differ from these by a fraction of a pixel (identical for an axis-aligned integer quad).
    """

    kind: ClassVar[str] = "perspective_crop"
    inputs: ClassVar[tuple[str, ...]] = ("image", "quads")
    outputs: ClassVar[tuple[str, ...]] = ("crops",)

    def configure(self, p: Params) -> None:
        self.rotate_ratio: float = p.get("rotate_ratio", float, 1.5, lo=0.0)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        img, grey2d = _image(inputs["image"], self.where)
        q = _numbers(inputs["quads"], self.where, "quads")
        if q.size == 0:
            return {"crops": []}
        if q.ndim == 2 and q.shape[1] == 8:
            q = q.reshape(-1, 4, 2)
        if q.ndim != 3 or q.shape[1:] != (4, 2):
            raise AppError(f"{self.where}: input 'quads' has shape {q.shape}; expected (N, 4, 2) points top-left, "
                           "top-right, bottom-right, bottom-left")
        crops = []
        limit = 4 * (img.shape[0] + img.shape[1])
        for k, quad in enumerate(q):
            p0, p1, p2, p3 = quad
            cw = max(1, int(max(np.linalg.norm(p0 - p1), np.linalg.norm(p2 - p3))))
            ch = max(1, int(max(np.linalg.norm(p0 - p3), np.linalg.norm(p1 - p2))))
            if max(cw, ch) > limit:
                raise AppError(f"{self.where}: input 'quads': quad {k} is {cw} x {ch} pixels, far larger than the "
                               f"{img.shape[1]} x {img.shape[0]} image (not in source pixels?)")
            crop = warp_quad(img, quad, cw, ch)
            if self.rotate_ratio > 0 and ch / cw >= self.rotate_ratio:
                crop = np.rot90(crop)
            crops.append(_out(crop, grey2d))
        return {"crops": crops}


# -- orientation ---------------------------------------------------------------------------------
class Orient(Step):
    """Turn an image (a text crop) by 180 degrees when a direction classifier says it is upside down.

    probs: the classifier's (1, K) or (K,) scores over ``labels`` (default [0, 180], angles in degrees, one per
    class). When the best class's label is 180 and its probability is above ``thresh`` (default 0.9) the image is
    rotated by 180 degrees; other labels never rotate. ``softmax``: auto (default: applied unless the scores are
    already probabilities: in [0, 1], summing to 1), true or false. angle: int32 0-d, 180 when rotated, else 0.
    """

    kind: ClassVar[str] = "orient"
    inputs: ClassVar[tuple[str, ...]] = ("image", "probs")
    outputs: ClassVar[tuple[str, ...]] = ("image", "angle")

    def configure(self, p: Params) -> None:
        v = p.get("labels", (list, tuple), [0, 180])
        if (not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
                or len(set(v)) != len(v)):
            raise p.fail("labels", f"expected a non-empty list of distinct integer angles, got {v!r}")
        self.labels: tuple[int, ...] = tuple(v)
        self.thresh: float = p.get("thresh", float, 0.9, lo=0.0, hi=1.0)
        self.softmax: str = _switch(p, "softmax")

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        arr, grey2d = _image(inputs["image"], self.where)
        probs = _numbers(inputs["probs"], self.where, "probs")
        if probs.ndim == 2 and probs.shape[0] == 1:
            probs = probs[0]
        if probs.ndim != 1 or probs.size != len(self.labels):
            raise AppError(f"{self.where}: input 'probs' has shape {probs.shape}; expected (1, {len(self.labels)}) "
                           f"or ({len(self.labels)},) scores over the labels {list(self.labels)}")
        if self.softmax == "true" or (self.softmax == "auto" and not _looks_like_probs(probs)):
            probs = softmax(probs)
        k = int(np.argmax(probs))
        turn = self.labels[k] == 180 and float(probs[k]) > self.thresh
        out = _out(arr[::-1, ::-1], grey2d) if turn else _out(arr, grey2d)
        return {"image": out, "angle": np.array(180 if turn else 0, dtype=np.int32)}


__all__ = ["Crop", "Letterbox", "Orient", "PerspectiveCrop", "Resize", "homography", "softmax", "warp_quad"]

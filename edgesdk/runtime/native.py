"""Letterbox + normalise + HWC->CHW: a numpy reference and the native libedgesdk_preproc.so, when present.

Runs on the board: standard library and numpy only. The arithmetic (spelled out in
cross/examples/preproc/include/edgesdk_preproc.h) is specified in float32 step by step, so
the native kernel and this numpy path give bit-identical tensors; ``preprocess`` uses the
native one when it loads and says which one it used.
"""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LIB_NAME = "libedgesdk_preproc.so"
ABI_VERSION = 1
ENV_VAR = "EDGESDK_PREPROC_LIB"
#: Searched after $EDGESDK_PREPROC_LIB and the caller's directories (e.g. the bundle's).
STANDARD_DIRS = (
    Path(__file__).resolve().parent,
    Path("/opt/edgesdk/lib"),
    Path.home() / ".edgesdk" / "lib",
    Path("/usr/local/lib"),
)


class NativeLibraryError(RuntimeError):
    """A library that was asked for explicitly (by path or $EDGESDK_PREPROC_LIB) cannot be used."""


@dataclass(frozen=True)
class Letterboxed:
    """The network input and what maps its coordinates back to the source image."""

    tensor: np.ndarray  # (c, out_h, out_w) float32
    scale: float  # source pixels * scale = network pixels
    pad: tuple[int, int]  # (left, top) in network pixels
    resized: tuple[int, int]  # (width, height) of the image inside the letterbox
    backend: str  # "native" | "numpy"

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a point of the network input back into the source image."""
        return (x - self.pad[0]) / self.scale, (y - self.pad[1]) / self.scale


def letterbox_geometry(h: int, w: int, out_h: int, out_w: int) -> tuple[float, int, int, int, int]:
    """(scale, new_w, new_h, pad_left, pad_top), exactly as the native kernel computes them."""
    s = min(out_w / w, out_h / h)
    new_w = max(1, min(out_w, math.floor(w * s + 0.5)))
    new_h = max(1, min(out_h, math.floor(h * s + 0.5)))
    return s, new_w, new_h, (out_w - new_w) // 2, (out_h - new_h) // 2


def _axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    f32 = np.float32
    ratio = f32(n_in) / f32(n_out)
    s = (np.arange(n_out, dtype=f32) + f32(0.5)) * ratio - f32(0.5)
    s = np.maximum(s, f32(0.0))
    i0 = np.minimum(s.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = s - i0.astype(f32)
    return i0, i1, f, f32(1.0) - f


def _check(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise TypeError(f"image must be a uint8 numpy array, got {getattr(img, 'dtype', type(img).__name__)}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or not 1 <= img.shape[2] <= 4 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"image must be HxWxC with C in 1..4, got shape {img.shape}")
    c = img.shape[2]
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    sd = np.asarray(std, dtype=np.float32).reshape(-1)
    if m.size == 1:
        m = np.repeat(m, c)
    if sd.size == 1:
        sd = np.repeat(sd, c)
    if m.size != c or sd.size != c:
        raise ValueError(f"mean and std need {c} values (one per channel), got {m.size} and {sd.size}")
    if np.any(sd == 0):
        raise ValueError("std must not contain 0")
    return img, m, sd


def letterbox_normalize_numpy(
    img: np.ndarray,
    out_hw: tuple[int, int],
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    pad_value: float = 114.0,
    bgr_to_rgb: bool = False,
) -> Letterboxed:
    """The reference: bilinear resize with half-pixel centres (as cv2.INTER_LINEAR, but in float
    rather than cv2's 11-bit fixed point), letterboxed and centred, normalised, HWC -> CHW."""
    img, m, sd = _check(img, mean, std)
    h, w, c = img.shape
    out_h, out_w = (int(v) for v in out_hw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {out_hw}")
    s, new_w, new_h, pad_l, pad_t = letterbox_geometry(h, w, out_h, out_w)
    f32 = np.float32
    inv = f32(1.0) / sd
    order = list(range(c))
    if bgr_to_rgb and c >= 3:
        order[0], order[2] = 2, 0
    src = img[:, :, order].astype(f32)
    x0, x1, fx, gx = _axis(new_w, w)
    y0, y1, fy, gy = _axis(new_h, h)

    # Vertical first (as the native kernel: its contiguous pass), then horizontal, each step in float32.
    cols = src[y0] * gy[:, None, None] + src[y1] * fy[:, None, None]  # (new_h, w, c)
    v = cols[:, x0, :] * gx[None, :, None] + cols[:, x1, :] * fx[None, :, None]  # (new_h, new_w, c)
    v = (v - m) * inv
    out = np.empty((c, out_h, out_w), dtype=f32)
    out[:] = ((f32(pad_value) - m) * inv)[:, None, None]
    out[:, pad_t : pad_t + new_h, pad_l : pad_l + new_w] = v.transpose(2, 0, 1)
    return Letterboxed(out, float(f32(s)), (pad_l, pad_t), (new_w, new_h), "numpy")


class NativePreproc:
    """libedgesdk_preproc.so through ctypes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            lib = ctypes.CDLL(str(self.path))
            abi = lib.edgesdk_preproc_abi_version
            fn = lib.edgesdk_letterbox_normalize
        except (OSError, AttributeError) as exc:
            raise NativeLibraryError(f"{self.path}: cannot load: {exc}") from exc
        abi.restype = ctypes.c_int
        abi.argtypes = []
        if abi() != ABI_VERSION:
            raise NativeLibraryError(f"{self.path}: ABI version {abi()}, this runtime needs {ABI_VERSION}")
        vp, ci, cf = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        fn.restype = ci
        fn.argtypes = [vp, ci, ci, ci, ci, vp, ci, ci, vp, vp, cf, ci, vp, vp]
        self._lib, self._fn = lib, fn

    def __call__(
        self,
        img: np.ndarray,
        out_hw: tuple[int, int],
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        pad_value: float = 114.0,
        bgr_to_rgb: bool = False,
    ) -> Letterboxed:
        img, m, sd = _check(img, mean, std)
        # Rows may be padded (a crop, a strided buffer); pixels and channels must be packed.
        if img.strides[2] != 1 or img.strides[1] != img.shape[2] or img.strides[0] < 0:
            img = np.ascontiguousarray(img)
        h, w, c = img.shape
        out_h, out_w = (int(v) for v in out_hw)
        out = np.empty((c, out_h, out_w), dtype=np.float32)
        scale = ctypes.c_float()
        pad = (ctypes.c_int * 4)()
        rc = self._fn(
            img.ctypes.data, h, w, c, img.strides[0], out.ctypes.data, out_h, out_w,
            m.ctypes.data, sd.ctypes.data, float(pad_value), int(bool(bgr_to_rgb)),
            ctypes.addressof(scale), ctypes.addressof(pad),
        )
        if rc != 0:
            raise ValueError(f"edgesdk_letterbox_normalize rejected its arguments (code {rc}): shape {img.shape}, out {out_hw}")
        return Letterboxed(out, float(scale.value), (pad[0], pad[1]), (pad[2], pad[3]), "native")


def find_native(search_dirs: Sequence[str | Path] = ()) -> Path | None:
    """Where libedgesdk_preproc.so is: $EDGESDK_PREPROC_LIB, then `search_dirs`, then STANDARD_DIRS."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    for d in [*search_dirs, *STANDARD_DIRS]:
        cand = Path(d) / LIB_NAME
        if cand.is_file():
            return cand
    return None


@dataclass(frozen=True)
class NativeStatus:
    """Whether the native kernel is in use, and why not when it is not."""

    available: bool
    path: str | None
    reason: str


def load_native(search_dirs: Sequence[str | Path] = ()) -> tuple[NativePreproc | None, NativeStatus]:
    """Load the native kernel if there is one. A library named explicitly by $EDGESDK_PREPROC_LIB
    that cannot be loaded raises NativeLibraryError; a found-by-search one that fails falls back
    with the reason recorded (e.g. a library of another architecture left in a directory)."""
    path = find_native(search_dirs)
    if path is None:
        return None, NativeStatus(False, None, f"{LIB_NAME} not found (set ${ENV_VAR} or put it next to the bundle)")
    try:
        lib = NativePreproc(path)
    except NativeLibraryError as exc:
        if os.environ.get(ENV_VAR):
            raise
        return None, NativeStatus(False, str(path), str(exc))
    return lib, NativeStatus(True, str(path), "loaded")


class LetterboxNormalizer:
    """Letterbox + normalise with the native kernel when it loads, numpy otherwise (recorded in .status)."""

    def __init__(self, search_dirs: Sequence[str | Path] = (), prefer_native: bool = True) -> None:
        if prefer_native:
            self._native, self.status = load_native(search_dirs)
        else:
            self._native, self.status = None, NativeStatus(False, None, "native kernel not requested")

    @property
    def backend(self) -> str:
        return "native" if self._native is not None else "numpy"

    def __call__(
        self,
        img: np.ndarray,
        out_hw: tuple[int, int],
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        pad_value: float = 114.0,
        bgr_to_rgb: bool = False,
    ) -> Letterboxed:
        fn = self._native if self._native is not None else letterbox_normalize_numpy
        return fn(img, out_hw, mean, std, pad_value, bgr_to_rgb)


def letterbox_normalize(
    img: np.ndarray,
    out_hw: tuple[int, int],
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    pad_value: float = 114.0,
    bgr_to_rgb: bool = False,
) -> Letterboxed:
    """One call with the default LetterboxNormalizer (native if found, numpy otherwise); see .backend."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = LetterboxNormalizer()
    return _DEFAULT(img, out_hw, mean, std, pad_value, bgr_to_rgb)


_DEFAULT: LetterboxNormalizer | None = None


def pattern_image(h: int, w: int, c: int = 3) -> np.ndarray:
    """The deterministic test image of cross/examples/preproc's preproc_check --pattern H W."""
    y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    return ((x * 7 + y * 13 + ch * 29 + ((x * y) % 17) * 3) & 255).astype(np.uint8)


__all__ = [
    "ABI_VERSION",
    "LIB_NAME",
    "LetterboxNormalizer",
    "Letterboxed",
    "NativeLibraryError",
    "NativePreproc",
    "NativeStatus",
    "find_native",
    "letterbox_geometry",
    "letterbox_normalize",
    "letterbox_normalize_numpy",
    "load_native",
    "pattern_image",
]

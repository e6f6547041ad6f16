"""Text (OCR) steps: DB detector map -> boxes, reading order, CTC recogniser -> text.

    db_boxes    map[, meta] -> quads, scores       PaddleOCR's DBPostProcess (score_mode fast): rotated boxes in
                                                   source pixels
    sort        boxes[, scores] -> boxes, scores, order   PaddleOCR's sorted_boxes reading order
    ctc_decode  logits -> text, score              CTC greedy decoding over a character list (a file of the app)

numpy only (they run on the board, and the host's reference run uses the same code). What PaddleOCR does with
OpenCV, pyclipper and shapely is written out here: connected components by run-length union-find, the convex
hull by monotone chain, the minimum-area rectangle by rotating calipers over the hull's edges (the rectangle
cv2.minAreaRect finds), the box score by rasterising the rectangle, and the unclip offset of a rectangle in closed
form (expanded by d = area * unclip_ratio / perimeter on every side, what pyclipper's round offset followed by
minAreaRect gives).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.app.steps.base import AppError, Params, Step, Value
from edgesdk.runtime.app.steps.detect import _meta
from edgesdk.runtime.app.steps.image import _looks_like_probs, _numbers, _switch, softmax


# -- geometry helpers ----------------------------------------------------------------------------
def label_components(bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """8-connected components of a 2-d bool bitmap, by runs: (rows, starts, ends, labels, n) with one entry per
    horizontal run of True pixels (ends exclusive), in scan order; labels 0..n-1 are numbered in the order the
    components are first met scanning top to bottom, left to right.

    Runs of consecutive rows touch when their column ranges, widened by one, overlap; the runs are joined by a
    vectorised union-find (hook every root onto the smallest root it touches, then compress the paths), which
    ends after O(log n) rounds."""
    h, w = bitmap.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = bitmap
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    n_runs = rows.size
    if n_runs == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z, 0
    k = w + 2
    start_key = rows * k + starts
    end_key = rows * k + ends
    lo = np.searchsorted(end_key, (rows + 1) * k + starts, side="left")  # next row's runs with end >= start
    hi = np.searchsorted(start_key, (rows + 1) * k + ends, side="right")  # ... and start <= end
    cnt = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n_runs), cnt)
    b = np.repeat(lo, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    parent = np.arange(n_runs)
    while a.size:
        ra, rb = parent[a], parent[b]
        small, big = np.minimum(ra, rb), np.maximum(ra, rb)
        m = small != big
        if not m.any():
            break
        np.minimum.at(parent, big[m], small[m])
        while True:
            pp = parent[parent]
            if np.array_equal(pp, parent):
                break
            parent = pp
    roots, labels = np.unique(parent, return_inverse=True)
    return rows, starts, ends, labels.reshape(-1), int(roots.size)


def convex_hull(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Andrew's monotone chain over integer points: the hull's vertices (collinear ones dropped), in order."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts

    def cross(o: tuple[int, int], p: tuple[int, int], q: tuple[int, int]) -> int:
        return (p[0] - o[0]) * (q[1] - o[1]) - (p[1] - o[1]) * (q[0] - o[0])

    lower: list[tuple[int, int]] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[int, int]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def min_area_rect(hull: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The minimum-area rectangle around a convex polygon (m, 2), one side on one of its edges (rotating
    calipers): (axes (2, 2) rows u, n unit vectors, lo (2,), hi (2,)): the rectangle is lo <= (p . u, p . n) <= hi.
    """
    hull = np.asarray(hull, dtype=np.float64)
    if hull.shape[0] < 2:
        axes = np.eye(2)
        proj = hull @ axes.T
        return axes, proj.min(axis=0), proj.max(axis=0)
    e = np.roll(hull, -1, axis=0) - hull
    length = np.hypot(e[:, 0], e[:, 1])
    e, length = e[length > 0], length[length > 0]
    u = e / length[:, None]
    nrm = np.stack([-u[:, 1], u[:, 0]], axis=1)
    pu = hull @ u.T  # (m, E)
    pn = hull @ nrm.T
    area = (pu.max(axis=0) - pu.min(axis=0)) * (pn.max(axis=0) - pn.min(axis=0))
    best = int(np.argmin(area))
    axes = np.stack([u[best], nrm[best]])
    proj = hull @ axes.T
    return axes, proj.min(axis=0), proj.max(axis=0)


def rect_corners(axes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 4 corners (4, 2) of the rectangle lo <= (p . u, p . n) <= hi, ordered as PaddleOCR's get_mini_boxes:
    top-left, top-right, bottom-right, bottom-left."""
    ab = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    return order_corners(ab @ axes)


def order_corners(pts: np.ndarray) -> np.ndarray:
    """get_mini_boxes' order: sorted by x; of the left two the upper is top-left, the other bottom-left; of the
    right two the upper is top-right, the other bottom-right. Returns tl, tr, br, bl."""
    p = pts[np.argsort(pts[:, 0], kind="stable")]
    tl, bl = (p[0], p[1]) if p[1, 1] > p[0, 1] else (p[1], p[0])
    tr, br = (p[2], p[3]) if p[3, 1] > p[2, 1] else (p[3], p[2])
    return np.stack([tl, tr, br, bl])


def box_score(prob: np.ndarray, axes: np.ndarray, lo: np.ndarray, hi: np.ndarray, corners: np.ndarray) -> float:
    """box_score_fast: the mean of the map over the pixels of the rectangle's integer bounding box (clipped to the
    map) whose centre (x, y) is inside the rectangle or on its edge; 0 when there is none."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(corners[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(corners[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()), 0, h - 1))
    gx, gy = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64), np.arange(y0, y1 + 1, dtype=np.float64))
    eps = 1e-6
    pu = gx * axes[0, 0] + gy * axes[0, 1]
    pn = gx * axes[1, 0] + gy * axes[1, 1]
    inside = (pu >= lo[0] - eps) & (pu <= hi[0] + eps) & (pn >= lo[1] - eps) & (pn <= hi[1] + eps)
    if not inside.any():
        return 0.0
    return float(prob[y0:y1 + 1, x0:x1 + 1].astype(np.float64)[inside].mean())


def _prob_map(x: Any, where: str) -> np.ndarray:
    """The DB map input as an (H, W) float64 array."""
    a = _numbers(x, where, "map")
    shape = a.shape
    if a.ndim == 4 and a.shape[0] == 1 and a.shape[1] == 1:
        a = a[0, 0]
    elif a.ndim == 4 and a.shape[0] == 1 and a.shape[3] == 1:
        a = a[0, :, :, 0]
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise AppError(f"{where}: input 'map' has shape {shape}; expected a DB probability map (1, 1, H, W), "
                       "(1, H, W) or (H, W)")
    return a


# -- steps ---------------------------------------------------------------------------------------
class DbBoxes(Step):
    """A DB text detector's probability map -> rotated text boxes in source pixels (PaddleOCR's DBPostProcess,
    score_mode fast).

    The map (1, 1, H, W), (1, H, W) or (H, W) is binarised (> ``thresh``, default 0.3); each 8-connected component
    (the ``max_candidates`` largest, default 1000) gets the minimum-area rectangle around its pixel coordinates
    (x, y: integers, a pixel's centre), skipped when its short side is below ``min_size`` (default 3); its score
    is the mean map value inside it (box_score), skipped below ``box_thresh`` (default 0.6); it is expanded by
    d = area * ``unclip_ratio`` (default 1.5) / perimeter on every side and skipped when the short side is then
    below min_size + 2. Corners are mapped to source pixels with ``meta`` (the letterbox step's, source = (map -
    pad) / scale; without it, the map's own pixels) and clipped to the image.

    quads: float32 (N, 4, 2) top-left, top-right, bottom-right, bottom-left; scores: float32 (N,); in the order the
    components are met scanning the map top to bottom (use the sort step for reading order). Unlike
    cv2.findContours (RETR_LIST) the holes of a component give no boxes of their own; and Paddle's score
    (cv2.fillPoly of the corners truncated to integers) also counts a band of pixels just outside a rotated box's
    edges, so its scores of rotated boxes can be a few hundredths lower than these.
    """

    kind: ClassVar[str] = "db_boxes"
    inputs: ClassVar[tuple[str, ...]] = ("map",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("meta",)
    outputs: ClassVar[tuple[str, ...]] = ("quads", "scores")

    def configure(self, p: Params) -> None:
        self.thresh: float = p.get("thresh", float, 0.3, lo=0.0, hi=1.0)
        self.box_thresh: float = p.get("box_thresh", float, 0.6, lo=0.0, hi=1.0)
        self.unclip_ratio: float = p.get("unclip_ratio", float, 1.5, lo=0.0)
        self.min_size: float = p.get("min_size", float, 3.0, lo=0.0)
        self.max_candidates: int = p.get("max_candidates", int, 1000, lo=1)
        self.score_mode: str = p.get("score_mode", str, "fast", choices=("fast",))

    def boxes(self, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4, 2) float64 quads in map pixels and (N,) scores."""
        rows, starts, ends, labels, n = label_components(prob > self.thresh)
        quads: list[np.ndarray] = []
        scores: list[float] = []
        if n == 0:
            return np.zeros((0, 4, 2)), np.zeros(0)
        sizes = np.bincount(labels, weights=(ends - starts).astype(np.float64), minlength=n)
        keep = np.zeros(n, dtype=bool)
        keep[np.argsort(-sizes, kind="stable")[: self.max_candidates]] = True
        # each component's leftmost and rightmost pixel per row: enough for its convex hull
        order = np.lexsort((rows, labels))
        lab, r, s, e = labels[order], rows[order], starts[order], ends[order] - 1
        first = np.flatnonzero(np.r_[True, (lab[1:] != lab[:-1]) | (r[1:] != r[:-1])])
        g_lab, g_row = lab[first], r[first]
        g_min, g_max = np.minimum.reduceat(s, first), np.maximum.reduceat(e, first)
        bounds = np.flatnonzero(np.r_[True, g_lab[1:] != g_lab[:-1], True])
        for i0, i1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            if not keep[g_lab[i0]]:
                continue
            ys = g_row[i0:i1].tolist()
            pts = list(zip(g_min[i0:i1].tolist(), ys)) + list(zip(g_max[i0:i1].tolist(), ys))
            axes, lo, hi = min_area_rect(np.array(convex_hull(pts), dtype=np.float64))
            side = hi - lo
            if min(side) < self.min_size:
                continue
            score = box_score(prob, axes, lo, hi, rect_corners(axes, lo, hi))
            if score < self.box_thresh:
                continue
            perimeter = 2.0 * float(side.sum())
            d = float(side.prod()) * self.unclip_ratio / perimeter if perimeter > 0 else 0.0
            if min(side) + 2 * d < self.min_size + 2:
                continue
            quads.append(rect_corners(axes, lo - d, hi + d))
            scores.append(score)
        if not quads:
            return np.zeros((0, 4, 2)), np.zeros(0)
        return np.stack(quads), np.array(scores)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        prob = _prob_map(inputs["map"], self.where)
        quads, scores = self.boxes(prob)
        if inputs.get("meta") is not None:
            sx, sy, px, py, h, w = _meta(_numbers(inputs["meta"], self.where, "meta"), self.where)
        else:
            sx, sy, px, py, h, w = 1.0, 1.0, 0.0, 0.0, float(prob.shape[0]), float(prob.shape[1])
        out = np.empty(quads.shape, dtype=np.float32)
        out[..., 0] = np.clip((quads[..., 0] - px) / sx, 0, w)
        out[..., 1] = np.clip((quads[..., 1] - py) / sy, 0, h)
        return {"quads": out.reshape(-1, 4, 2), "scores": scores.astype(np.float32)}


class SortBoxes(Step):
    """Reading order, PaddleOCR's sorted_boxes: sorted by the top-left corner's (y, x), then a box moves before
    the previous one while their top-left y differ by less than ``line_tol`` (default 10 pixels) and it is more to
    the left (boxes of one line, read left to right).

    boxes: (N, 4, 2) quads (top-left first, as db_boxes gives) or (N, 4) x1, y1, x2, y2, returned in the same form
    as float32; scores (N,) are permuted the same way (ones when not wired); order: int64 indexes into the input.
    """

    kind: ClassVar[str] = "sort"
    inputs: ClassVar[tuple[str, ...]] = ("boxes",)
    optional_inputs: ClassVar[tuple[str, ...]] = ("scores",)
    outputs: ClassVar[tuple[str, ...]] = ("boxes", "scores", "order")

    def configure(self, p: Params) -> None:
        self.line_tol: float = p.get("line_tol", float, 10.0, lo=0.0)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        b = _numbers(inputs["boxes"], self.where, "boxes")
        if b.size == 0:
            b = b.reshape((0, 4) if b.ndim == 2 and b.shape[-1] == 4 else (0, 4, 2))
        if b.ndim == 3 and b.shape[1:] == (4, 2):
            x, y = b[:, 0, 0], b[:, 0, 1]
        elif b.ndim == 2 and b.shape[1] == 4:
            x, y = b[:, 0], b[:, 1]
        else:
            raise AppError(f"{self.where}: input 'boxes' has shape {b.shape}; expected (N, 4, 2) quads or (N, 4) "
                           "x1, y1, x2, y2 boxes")
        n = b.shape[0]
        if inputs.get("scores") is not None:
            scores = _numbers(inputs["scores"], self.where, "scores").reshape(-1)
            if scores.size != n:
                raise AppError(f"{self.where}: input 'scores' has {scores.size} values for {n} boxes")
        else:
            scores = np.ones(n)
        order = np.lexsort((x, y)).tolist()
        ys, xs = y.tolist(), x.tolist()
        for i in range(n - 1):
            for j in range(i, -1, -1):
                a, c = order[j], order[j + 1]
                if abs(ys[c] - ys[a]) < self.line_tol and xs[c] < xs[a]:
                    order[j], order[j + 1] = c, a
                else:
                    break
        idx = np.array(order, dtype=np.int64)
        return {"boxes": b[idx].astype(np.float32), "scores": scores[idx].astype(np.float32), "order": idx}


class CtcDecode(Step):
    """CTC greedy decoding of a text recogniser's output (PaddleOCR's CTCLabelDecode).

    ``charset``: a file of the app, one symbol per line in UTF-8 (PaddleOCR's ppocr_keys format; lines are split
    on "\\n" and lose a trailing "\\r" only, so a line may be " " or U+3000; the newline ending the file makes no
    line). The classes are the blank at index ``blank`` (default 0) and the symbols filling the other indexes in
    order, then a " " class with ``append_space`` (PaddleOCR's use_space_char; default false). logits (1, T, C),
    (T, 1, C) or (T, C); C must be that number of classes. ``softmax``: auto (default: applied unless each row is
    already probabilities), true or false.

    Argmax per step, repeats merged, blanks dropped; text: the string (0-d numpy str array); score: float32 0-d,
    the mean of the kept steps' top probabilities (0 when none is kept).
    """

    kind: ClassVar[str] = "ctc_decode"
    inputs: ClassVar[tuple[str, ...]] = ("logits",)
    outputs: ClassVar[tuple[str, ...]] = ("text", "score")
    file_params: ClassVar[tuple[str, ...]] = ("charset",)

    def configure(self, p: Params) -> None:
        self.charset: str = p.get("charset", str)
        if not self.charset:
            raise p.fail("charset", "expected the path of a file of the app, got ''")
        self.blank: int = p.get("blank", int, 0, lo=0)
        self.append_space: bool = p.get("append_space", bool, False)
        self.softmax: str = _switch(p, "softmax")
        self._classes: list[str] | None = None

    def classes(self) -> list[str]:
        """The text of each class ('' for the blank), read from the charset file once."""
        if self._classes is not None:
            return self._classes
        path = self.file(self.charset)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as e:
            raise AppError(f"{self.where}.charset: cannot read {self.charset!r} ({path}): {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise AppError(f"{self.where}.charset: {self.charset!r} is not UTF-8 text ({e.reason} at byte "
                           f"{e.start})") from None
        lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        if not lines:
            raise AppError(f"{self.where}.charset: {self.charset!r} is empty; expected one symbol per line")
        symbols = lines + ([" "] if self.append_space else [])
        n = len(symbols) + 1
        if self.blank >= n:
            raise AppError(f"{self.where}.blank: {self.blank} is not a class index: {self.charset!r} gives "
                           f"{n} classes (blank + {len(lines)} symbols" + (" + space" if self.append_space else "")
                           + ")")
        it = iter(symbols)
        self._classes = ["" if i == self.blank else next(it) for i in range(n)]
        return self._classes

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        a = _numbers(inputs["logits"], self.where, "logits")
        shape = a.shape
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        elif a.ndim == 3 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 2:
            raise AppError(f"{self.where}: input 'logits' has shape {shape}; expected (1, T, C) or (T, C)")
        classes = self.classes()
        if a.shape[1] != len(classes):
            hint = ""
            if a.shape[1] == len(classes) + 1 and not self.append_space:
                hint = " (PaddleOCR models with a space class: set append_space: true)"
            elif a.shape[1] == len(classes) - 1 and self.append_space:
                hint = " (set append_space: false)"
            n_symbols = len(classes) - 1 - int(self.append_space)
            raise AppError(f"{self.where}: the charset {self.charset!r} has {n_symbols} symbols, so {len(classes)} "
                           "classes (blank + symbols"
                           + (" + space" if self.append_space else "") + f"), but the logits have C={a.shape[1]}"
                           + hint)
        if a.shape[0] and (self.softmax == "true" or (self.softmax == "auto" and not _looks_like_probs(a))):
            a = softmax(a)
        best = a.argmax(axis=1) if a.shape[0] else np.zeros(0, dtype=np.int64)
        keep = np.ones(best.size, dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != self.blank
        kept = best[keep]
        text = "".join(classes[i] for i in kept.tolist())
        probs = a[np.flatnonzero(keep), kept] if kept.size else np.zeros(0)
        score = float(probs.mean()) if probs.size else 0.0
        return {"text": np.array(text, dtype=np.str_), "score": np.array(score, dtype=np.float32)}


__all__ = ["CtcDecode", "DbBoxes", "SortBoxes", "box_score", "convex_hull", "label_components", "min_area_rect",
           "order_corners", "rect_corners"]

"""Detection and tracking steps: YOLO head decoding, NMS, and a SORT multi-object tracker.

    decode_yolo  output, meta -> boxes, scores, classes          a YOLO head (anchor-free / objectness) + NMS,
                                                                 boxes mapped back to source pixels
    nms          boxes, scores[, classes] -> boxes, scores, classes, keep
    tracker      boxes, scores[, classes] -> tracks, ids, classes, scores   SORT (Bewley et al. 2016)

numpy only (they run on the board). Decoding and NMS reuse edgesdk.runtime.postprocess, so an app gives the same
boxes as a single-model bundle's manifest postprocess. The tracker follows the reference SORT implementation
(github.com/abewley/sort): a constant-velocity Kalman filter per track on [cx, cy, area, aspect, vcx, vcy, varea],
IoU matching with an optimal assignment (``linear_sum_assignment`` below, the shortest augmenting path algorithm
scipy uses, so ties are broken the same way), tracks created for unmatched detections and deleted after
``max_age`` frames without a match.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edgesdk.runtime.app.steps.base import AppError, Params, Step, Value, as_array
from edgesdk.runtime.errors import EngineFailure
from edgesdk.runtime.postprocess import decode_anchor_based, decode_anchor_free, nms


# -- helpers -------------------------------------------------------------------------------------
def _boxes(x: Any, where: str, name: str = "boxes") -> np.ndarray:
    """An (N, 4) float32 box input; an empty input of any shape is (0, 4); non-finite values are refused."""
    a = as_array(x, where, name)
    if a.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != 4:
        raise AppError(f"{where}: input {name!r} has shape {a.shape}; expected (N, 4) x1, y1, x2, y2")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise AppError(f"{where}: input {name!r} has non-finite values")
    return a


def _vector(x: Any, where: str, name: str, n: int, dtype: Any) -> np.ndarray:
    """A per-box (N,) input (a (N, 1) or (1, N) one is flattened) with N checked against the boxes."""
    a = as_array(x, where, name, ndim=(0, 1, 2)).reshape(-1)
    if a.size != n:
        raise AppError(f"{where}: input {name!r} has {a.size} values for {n} boxes")
    if np.issubdtype(dtype, np.integer) and a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise AppError(f"{where}: input {name!r} must hold integer class ids")
    return a.astype(dtype)


def _meta(x: Any, where: str) -> tuple[float, float, float, float, float, float]:
    """letterbox's meta: [scale_x, scale_y, pad_x, pad_y, src_h, src_w] (source = (net - pad) / scale)."""
    m = as_array(x, where, "meta").reshape(-1)
    if m.dtype.kind not in "iuf":
        raise AppError(f"{where}: input 'meta' must be numbers (the letterbox step's meta), got {m.dtype} values")
    m = m.astype(np.float64)
    if m.size != 6 or not np.isfinite(m).all() or m[0] <= 0 or m[1] <= 0 or m[4] <= 0 or m[5] <= 0:
        raise AppError(f"{where}: input 'meta' must be 6 numbers [scale_x, scale_y, pad_x, pad_y, src_h, src_w] "
                       f"with positive scales and size (as the letterbox step gives), got {m.tolist()}")
    sx, sy, px, py, h, w = (float(v) for v in m)
    return sx, sy, px, py, h, w


def _to_source(boxes: np.ndarray, meta: tuple[float, ...]) -> np.ndarray:
    """Network-input boxes -> source pixels, clipped to the source image."""
    sx, sy, px, py, h, w = meta
    out = np.empty(boxes.shape, dtype=np.float32)
    out[:, 0::2] = np.clip((boxes[:, 0::2] - px) / sx, 0, w)
    out[:, 1::2] = np.clip((boxes[:, 1::2] - py) / sy, 0, h)
    return out


def _class_list(p: Params, key: str) -> tuple[int, ...] | None:
    v = p.get(key, (list, type(None)), None)
    if v is None:
        return None
    if not v or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in v):
        raise p.fail(key, f"expected a non-empty list of class ids (integers >= 0), got {v!r}")
    return tuple(v)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) x1, y1, x2, y2 boxes -> (N, M) IoU; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0)
    h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = w * h
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# -- steps ---------------------------------------------------------------------------------------
class DecodeYolo(Step):
    """A YOLO detection head -> boxes in source pixels, highest score first.

    format ``anchor_free`` (YOLOv8/11: (1, 4+C, N) or (1, N, 4+C) rows of cx, cy, w, h, class scores) or
    ``objectness`` (YOLOv5/YOLOX exported with the grid decode in the graph: (1, N, 5+C) rows of cx, cy, w, h,
    objectness, class scores; score = objectness * class score). Boxes are in network-input pixels; ``meta`` (from
    the letterbox step) maps them back. Candidates need a score strictly above ``score``; then NMS (per class when
    ``class_aware``), at most ``max_det`` boxes (0: no limit); ``classes`` keeps only those class ids (before NMS, so
    a dropped class never suppresses a kept one).
    """

    kind: ClassVar[str] = "decode_yolo"
    inputs: ClassVar[tuple[str, ...]] = ("output", "meta")
    outputs: ClassVar[tuple[str, ...]] = ("boxes", "scores", "classes")

    def configure(self, p: Params) -> None:
        self.format: str = p.get("format", str, "anchor_free", choices=("anchor_free", "objectness"))
        self.num_classes: int | None = p.get("num_classes", (int, type(None)), None)
        if self.num_classes is not None and self.num_classes < 1:
            raise p.fail("num_classes", f"must be >= 1, got {self.num_classes}")
        self.score: float = p.get("score", float, 0.25, lo=0.0, hi=1.0)
        self.iou: float = p.get("iou", float, 0.45, lo=0.0, hi=1.0)
        self.class_aware: bool = p.get("class_aware", bool, True)
        self.max_det: int = p.get("max_det", int, 300, lo=0)
        self.classes: tuple[int, ...] | None = _class_list(p, "classes")

    def _rows(self, out: np.ndarray) -> np.ndarray:
        """The (N, 5+C) rows of an objectness head; (1, 5+C, N) is accepted when num_classes says so."""
        a = out[0] if out.ndim == 3 else out
        c = self.num_classes
        if c is not None and a.shape[1] != 5 + c and a.shape[0] == 5 + c:
            a = a.T
        if a.shape[1] < 6 or (c is not None and a.shape[1] != 5 + c):
            raise AppError(f"{self.where}: input 'output' of shape {out.shape} is not (1, N, 5+C) rows of cx, cy, "
                           f"w, h, objectness, class scores" + (f" with C={c}" if c is not None else ""))
        return a

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        out = as_array(inputs["output"], self.where, "output", ndim=(2, 3))
        if out.ndim == 3 and out.shape[0] != 1:
            raise AppError(f"{self.where}: input 'output' has shape {out.shape}; one image at a time (batch 1)")
        meta = _meta(inputs["meta"], self.where)
        out = out.astype(np.float32)
        if self.format == "anchor_free":
            try:
                boxes, scores, cls = decode_anchor_free(out, self.num_classes, self.score)
            except EngineFailure as e:
                raise AppError(f"{self.where}: input 'output': {e}") from None
        else:
            boxes, scores, cls = decode_anchor_based(self._rows(out), self.score)
        if self.classes is not None:
            m = np.isin(cls, self.classes)
            boxes, scores, cls = boxes[m], scores[m], cls[m]
        keep = nms(boxes, scores, self.iou, class_ids=cls if self.class_aware else None, max_det=self.max_det)
        return {"boxes": _to_source(boxes[keep].reshape(-1, 4), meta),
                "scores": scores[keep].astype(np.float32),
                "classes": cls[keep].astype(np.int32)}


class Nms(Step):
    """Greedy non-maximum suppression (edgesdk.runtime.postprocess.nms, the cv2.dnn.NMSBoxes rules).

    A box is dropped when its IoU with a higher-scored kept box is above ``iou``; boxes of different classes never
    suppress each other when ``class_aware`` and classes are wired. ``score``: keep only scores strictly above it
    (none: no threshold); ``max_det``: at most that many (0: no limit). ``keep``: the kept input indexes (int64),
    highest score first; ``classes`` is all 0 when none were given.
    """

    kind: ClassVar[str] = "nms"
    inputs: ClassVar[tuple[str, ...]] = ("boxes", "scores")
    optional_inputs: ClassVar[tuple[str, ...]] = ("classes",)
    outputs: ClassVar[tuple[str, ...]] = ("boxes", "scores", "classes", "keep")

    def configure(self, p: Params) -> None:
        self.iou: float = p.get("iou", float, 0.45, lo=0.0, hi=1.0)
        self.score: float | None = p.get("score", (float, type(None)), None)
        self.max_det: int = p.get("max_det", int, 0, lo=0)
        self.class_aware: bool = p.get("class_aware", bool, True)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        boxes = _boxes(inputs["boxes"], self.where)
        n = boxes.shape[0]
        scores = _vector(inputs["scores"], self.where, "scores", n, np.float32)
        given = inputs.get("classes") is not None
        classes = (_vector(inputs["classes"], self.where, "classes", n, np.int64) if given
                   else np.zeros(n, dtype=np.int64))
        keep = nms(boxes, scores, self.iou, -np.inf if self.score is None else self.score,
                   class_ids=classes if (given and self.class_aware) else None, max_det=self.max_det)
        return {"boxes": boxes[keep].reshape(-1, 4), "scores": scores[keep], "classes": classes[keep].astype(np.int32),
                "keep": keep.astype(np.int64)}


# -- optimal assignment --------------------------------------------------------------------------
def linear_sum_assignment(cost: Any) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a rectangular (R, C) cost matrix: (rows, cols) int64, min(R, C) pairs, rows
    ascending; what scipy.optimize.linear_sum_assignment returns, ties included.

    The shortest augmenting path algorithm (Jonker-Volgenant as described by Crouse, "On implementing 2D
    rectangular assignment algorithms", 2016), in the same order of operations as scipy's implementation: a wide
    matrix's rows are assigned one by one (a tall one is transposed first), each by a Dijkstra-like search over
    reduced costs with the dual variables u, v. The search over the columns is vectorised; only the path steps
    loop. ValueError for NaN or -inf entries and for an infeasible matrix (+inf everywhere a row could go).
    """
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"linear_sum_assignment: expected a 2-d cost matrix, got shape {c.shape}")
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if np.isnan(c).any() or (c == -np.inf).any():
        raise ValueError("linear_sum_assignment: the cost matrix contains NaN or -inf")
    transpose = c.shape[1] < c.shape[0]
    if transpose:
        c = np.ascontiguousarray(c.T)
    nr, nc = c.shape
    u = np.zeros(nr)
    v = np.zeros(nc)
    path = np.full(nc, -1, dtype=np.int64)
    col4row = np.full(nr, -1, dtype=np.int64)
    row4col = np.full(nc, -1, dtype=np.int64)
    for cur in range(nr):
        spc = np.full(nc, np.inf)  # shortest path cost to each column
        sr = np.zeros(nr, dtype=bool)
        sc = np.zeros(nc, dtype=bool)
        remaining = np.arange(nc - 1, -1, -1)  # scipy's order: a constant matrix gives the identity
        min_val = 0.0
        i = cur
        sink = -1
        while sink < 0:
            sr[i] = True
            r = min_val + c[i, remaining] - u[i] - v[remaining]
            better = r < spc[remaining]
            path[remaining[better]] = i
            spc[remaining[better]] = r[better]
            s = spc[remaining]
            lowest = s.min()
            if lowest == np.inf:
                raise ValueError("linear_sum_assignment: the cost matrix is infeasible")
            # scipy scans `remaining` keeping the first minimum, replaced by any later one whose column is free
            tied = np.flatnonzero(s == lowest)
            free = tied[row4col[remaining[tied]] < 0]
            index = int(free[-1]) if free.size else int(tied[0])
            min_val = float(lowest)
            j = int(remaining[index])
            if row4col[j] < 0:
                sink = j
            else:
                i = int(row4col[j])
            sc[j] = True
            remaining[index] = remaining[-1]
            remaining = remaining[:-1]
        u[cur] += min_val
        others = sr.copy()
        others[cur] = False
        u[others] += min_val - spc[col4row[others]]
        v[sc] -= min_val - spc[sc]
        j = sink
        while True:  # augment along the path
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, int(col4row[i])
            if i == cur:
                break
    if transpose:
        order = np.argsort(col4row, kind="stable")
        return col4row[order].astype(np.int64), order.astype(np.int64)
    return np.arange(nr, dtype=np.int64), col4row.astype(np.int64)


# -- SORT ----------------------------------------------------------------------------------------
# Constant-velocity model on x = [cx, cy, s (area), r (aspect w/h), vcx, vcy, vs]; r has no velocity.
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_H = np.eye(4, 7)
# The reference implementation's noise (filterpy's identity defaults, then scaled).
_R = np.eye(4)
_R[2:, 2:] *= 10.0  # area and aspect measurements are noisier than the centre
_P0 = np.eye(7)
_P0[4:, 4:] *= 1000.0  # the initial velocities are unobserved: high uncertainty
_P0 *= 10.0
_Q = np.eye(7)
_Q[-1, -1] *= 0.01
_Q[4:, 4:] *= 0.01


def box_to_z(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 -> (N, 4) measurements cx, cy, s = w * h, r = w / h (h > 0)."""
    b = np.asarray(boxes, dtype=np.float64)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w * h, w / h], axis=1)


def x_to_box(x: np.ndarray) -> np.ndarray:
    """(N, >=4) states -> (N, 4) x1, y1, x2, y2 (NaN when s * r < 0: a diverged track)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.sqrt(x[:, 2] * x[:, 3])
        h = x[:, 2] / w
    return np.stack([x[:, 0] - w / 2, x[:, 1] - h / 2, x[:, 0] + w / 2, x[:, 1] + h / 2], axis=1)


def kalman_predict(x: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One constant-velocity step for M tracks at once: x (M, 7), P (M, 7, 7) -> F x, F P F^T + Q.

    As in the reference, an area velocity that would make the area non-positive is zeroed first.
    """
    x = np.array(x, dtype=np.float64)
    x[x[:, 6] + x[:, 2] <= 0, 6] = 0.0
    return x @ _F.T, _F @ p @ _F.T + _Q


def kalman_update(x: np.ndarray, p: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The measurement update for M tracks at once: x (M, 7), P (M, 7, 7), z (M, 4) -> x, P.

    K = P H^T S^-1 with S = H P H^T + R; P in the Joseph form (I - KH) P (I - KH)^T + K R K^T, as filterpy does.
    """
    y = z - x @ _H.T
    ph = p @ _H.T  # (M, 7, 4)
    s = _H @ ph + _R  # (M, 4, 4), symmetric
    k = np.swapaxes(np.linalg.solve(s, np.swapaxes(ph, 1, 2)), 1, 2)  # P H^T S^-1
    ikh = np.eye(7) - k @ _H
    x = x + (k @ y[:, :, None])[:, :, 0]
    p = ikh @ p @ np.swapaxes(ikh, 1, 2) + k @ _R @ np.swapaxes(k, 1, 2)
    return x, p


class SortTracker(Step):
    """SORT: Simple Online and Realtime Tracking (Bewley et al. 2016), as in its reference implementation.

    Each frame: every track's Kalman filter predicts; detections are matched to the predicted boxes by IoU with an
    optimal assignment (directly when each detection and track overlap at most one other above ``iou``, as the
    reference does), pairs with IoU < ``iou`` are unmatched; matched tracks are updated with their detection,
    unmatched detections start new tracks (ids 1, 2, ... in detection order, never reused until ``reset``), and
    tracks unmatched for more than ``max_age`` frames are deleted. A track is output when it was matched (or
    created) this frame and has ``min_hits`` consecutive matches, or while the first ``min_hits`` frames run.
    Detections with zero width or height (boxes clipped away at the image border) are ignored.

    Outputs, ordered by id: tracks (M, 4) float32 x1, y1, x2, y2 from the filter's state, ids (M,) int32, classes
    (M,) int32 and scores (M,) float32 of the detection each track last matched (classes 0 when none are wired).
    """

    kind: ClassVar[str] = "tracker"
    inputs: ClassVar[tuple[str, ...]] = ("boxes", "scores")
    optional_inputs: ClassVar[tuple[str, ...]] = ("classes",)
    outputs: ClassVar[tuple[str, ...]] = ("tracks", "ids", "classes", "scores")
    stateful: ClassVar[bool] = True

    def configure(self, p: Params) -> None:
        self.iou: float = p.get("iou", float, 0.3, lo=0.0, hi=1.0)
        self.max_age: int = p.get("max_age", int, 1, lo=0)
        self.min_hits: int = p.get("min_hits", int, 3, lo=0)
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids restart at 1."""
        self.frame_count = 0
        self.next_id = 1
        self._x = np.zeros((0, 7))
        self._p = np.zeros((0, 7, 7))
        self._id = np.zeros(0, dtype=np.int64)
        self._since = np.zeros(0, dtype=np.int64)  # frames since the last match
        self._streak = np.zeros(0, dtype=np.int64)  # consecutive matches
        self._cls = np.zeros(0, dtype=np.int64)
        self._score = np.zeros(0, dtype=np.float64)

    def _keep(self, m: np.ndarray) -> None:
        """Keep the tracks where m is true (in their order)."""
        self._x, self._p, self._id, self._since = self._x[m], self._p[m], self._id[m], self._since[m]
        self._streak, self._cls, self._score = self._streak[m], self._cls[m], self._score[m]

    def _associate(self, dets: np.ndarray, trks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(det indexes, track indexes) of the matches with IoU >= iou."""
        if dets.shape[0] == 0 or trks.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        iou = iou_matrix(dets, trks)
        over = iou > self.iou
        if over.sum(axis=1).max() == 1 and over.sum(axis=0).max() == 1:
            d, t = np.nonzero(over)
        else:
            d, t = linear_sum_assignment(-iou)
        ok = iou[d, t] >= self.iou
        return d[ok].astype(np.int64), t[ok].astype(np.int64)

    def __call__(self, **inputs: Value) -> dict[str, Value]:
        boxes = _boxes(inputs["boxes"], self.where)
        n = boxes.shape[0]
        scores = _vector(inputs["scores"], self.where, "scores", n, np.float64)
        classes = (_vector(inputs["classes"], self.where, "classes", n, np.int64)
                   if inputs.get("classes") is not None else np.zeros(n, dtype=np.int64))
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, classes = boxes[valid], scores[valid], classes[valid]
        self.frame_count += 1

        self._x, self._p = kalman_predict(self._x, self._p)
        self._streak[self._since > 0] = 0
        self._since += 1
        pred = x_to_box(self._x)
        self._keep(np.isfinite(pred).all(axis=1))
        pred = x_to_box(self._x)

        d, t = self._associate(boxes, pred)
        if d.size:
            x, p = kalman_update(self._x[t], self._p[t], box_to_z(boxes[d]))
            self._x[t], self._p[t] = x, p
            self._since[t] = 0
            self._streak[t] += 1
            self._cls[t] = classes[d]
            self._score[t] = scores[d]

        new = np.setdiff1d(np.arange(boxes.shape[0]), d)
        if new.size:
            k = new.size
            x0 = np.zeros((k, 7))
            x0[:, :4] = box_to_z(boxes[new])
            self._x = np.concatenate([self._x, x0])
            self._p = np.concatenate([self._p, np.broadcast_to(_P0, (k, 7, 7))])
            self._id = np.concatenate([self._id, np.arange(self.next_id, self.next_id + k)])
            self.next_id += k
            self._since = np.concatenate([self._since, np.zeros(k, dtype=np.int64)])
            self._streak = np.concatenate([self._streak, np.zeros(k, dtype=np.int64)])
            self._cls = np.concatenate([self._cls, classes[new]])
            self._score = np.concatenate([self._score, scores[new]])

        state = x_to_box(self._x)
        show = ((self._since < 1) & ((self._streak >= self.min_hits) | (self.frame_count <= self.min_hits))
                & np.isfinite(state).all(axis=1))
        order = np.argsort(self._id[show], kind="stable")
        res = {"tracks": state[show][order].astype(np.float32).reshape(-1, 4),
               "ids": self._id[show][order].astype(np.int32),
               "classes": self._cls[show][order].astype(np.int32),
               "scores": self._score[show][order].astype(np.float32)}
        self._keep(self._since <= self.max_age)
        return res


__all__ = ["DecodeYolo", "Nms", "SortTracker", "box_to_z", "iou_matrix", "kalman_predict", "kalman_update",
           "linear_sum_assignment", "x_to_box"]

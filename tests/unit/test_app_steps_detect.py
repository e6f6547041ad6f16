"""App steps decode_yolo, nms and tracker (edgesdk/runtime/app/steps/detect.py), against independent references:
cv2.dnn.NMSBoxes(Batched) for NMS, scipy.optimize.linear_sum_assignment for the assignment, a per-track direct
matrix Kalman filter and a transcription of the reference SORT (github.com/abewley/sort) for the tracker."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.runtime.app.steps import AppError, builtin
from edgesdk.runtime.app.steps.detect import (
    DecodeYolo,
    Nms,
    SortTracker,
    box_to_z,
    iou_matrix,
    kalman_predict,
    kalman_update,
    linear_sum_assignment,
    x_to_box,
)

cv2 = pytest.importorskip("cv2")
scipy_opt = pytest.importorskip("scipy.optimize")


def _xywh(b: np.ndarray) -> list[list[float]]:
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()


def _candidates(n: int, seed: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clusters of overlapping boxes (what a detector gives before NMS)."""
    r = np.random.default_rng(seed)
    centres = r.uniform(50, 600, (10, 2))
    k = r.integers(0, 10, n)
    wh = r.uniform(20, 160, (10, 2))[k] * np.exp(r.normal(0, 0.1, (n, 2)))
    c = centres[k] + r.normal(0, 6, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    return boxes, r.uniform(0, 1, n).astype(np.float32), r.integers(0, classes, n)


# -- registry and params ---------------------------------------------------------------------------
def test_registry_and_contract() -> None:
    assert builtin("decode_yolo") is DecodeYolo and builtin("nms") is Nms and builtin("tracker") is SortTracker
    assert SortTracker.stateful and not Nms.stateful and not DecodeYolo.stateful
    assert DecodeYolo.inputs == ("output", "meta") and DecodeYolo.outputs == ("boxes", "scores", "classes")
    assert Nms.optional_inputs == ("classes",) and Nms.outputs == ("boxes", "scores", "classes", "keep")
    assert SortTracker.inputs == ("boxes", "scores") and SortTracker.outputs == ("tracks", "ids", "classes", "scores")


@pytest.mark.parametrize("cls, params, field", [
    (DecodeYolo, {"format": "anchor_based"}, "format"),
    (DecodeYolo, {"classes": []}, "classes"),
    (DecodeYolo, {"classes": [1, "a"]}, "classes"),
    (DecodeYolo, {"num_classes": 0}, "num_classes"),
    (DecodeYolo, {"score": 1.5}, "score"),
    (DecodeYolo, {"iuo": 0.5}, "iuo"),
    (Nms, {"score": "low"}, "score"),
    (Nms, {"max_det": -1}, "max_det"),
    (Nms, {"class_aware": 1}, "class_aware"),
    (SortTracker, {"max_age": 1.5}, "max_age"),
    (SortTracker, {"iou": -0.1}, "iou"),
])
def test_bad_params_name_the_field(cls: type, params: dict, field: str) -> None:
    with pytest.raises(AppError, match=rf"stages\.s\.params\.{field}:"):
        cls(params, "app.yaml: stages.s.params")


def test_bad_inputs_name_the_step() -> None:
    w = "app.yaml: stages.s"
    with pytest.raises(AppError, match="stages.s: input 'boxes'"):
        Nms({}, w)(boxes=np.zeros((3, 5)), scores=np.zeros(3))
    with pytest.raises(AppError, match="stages.s: input 'scores' has 2 values for 3 boxes"):
        Nms({}, w)(boxes=np.zeros((3, 4)), scores=np.zeros(2))
    with pytest.raises(AppError, match="stages.s: input 'classes' must hold integer"):
        Nms({}, w)(boxes=np.zeros((1, 4)), scores=np.zeros(1), classes=np.array([0.5]))
    with pytest.raises(AppError, match="stages.s: input 'boxes' has non-finite"):
        SortTracker({}, w)(boxes=np.full((1, 4), np.nan), scores=np.zeros(1))
    with pytest.raises(AppError, match="stages.s: input 'meta'"):
        DecodeYolo({}, w)(output=np.zeros((1, 84, 10), np.float32), meta=np.zeros(6, np.float32))
    with pytest.raises(AppError, match="stages.s: input 'output'.*batch 1"):
        DecodeYolo({}, w)(output=np.zeros((2, 84, 10), np.float32), meta=_meta(1, 1, 0, 0, 10, 10))
    with pytest.raises(AppError, match="stages.s: input 'output'"):
        DecodeYolo({"num_classes": 80}, w)(output=np.zeros((1, 10, 20), np.float32), meta=_meta(1, 1, 0, 0, 9, 9))
    with pytest.raises(AppError, match="stages.s: input 'output'"):
        DecodeYolo({"format": "objectness", "num_classes": 80}, w)(output=np.zeros((1, 10, 84), np.float32),
                                                                   meta=_meta(1, 1, 0, 0, 9, 9))
    with pytest.raises(AppError, match="map: true"):
        Nms({}, w)(boxes=[np.zeros((1, 4))], scores=np.zeros(1))


# -- nms -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_step_equals_cv2(seed: int) -> None:
    boxes, scores, cls = _candidates(1500, seed)
    ref = np.asarray(cv2.dnn.NMSBoxes(_xywh(boxes), scores.tolist(), 0.3, 0.45)).reshape(-1)
    out = Nms({"iou": 0.45, "score": 0.3, "class_aware": True}, "s")(boxes=boxes, scores=scores)  # no classes wired
    assert out["keep"].dtype == np.int64 and out["keep"].tolist() == ref.tolist()
    np.testing.assert_array_equal(out["boxes"], boxes[ref])
    np.testing.assert_array_equal(out["scores"], scores[ref])
    assert out["classes"].dtype == np.int32 and not out["classes"].any()
    assert np.all(np.diff(out["scores"]) <= 0)

    ref_b = np.asarray(cv2.dnn.NMSBoxesBatched(_xywh(boxes), scores.tolist(), cls.tolist(), 0.3, 0.45)).reshape(-1)
    out_b = Nms({"score": 0.3}, "s")(boxes=boxes, scores=scores, classes=cls)
    assert sorted(out_b["keep"].tolist()) == sorted(ref_b.tolist())
    assert out_b["classes"].tolist() == cls[out_b["keep"]].tolist()
    assert len(out_b["keep"]) > len(out["keep"])  # classes kept apart
    agnostic = Nms({"score": 0.3, "class_aware": False}, "s")(boxes=boxes, scores=scores, classes=cls)
    assert agnostic["keep"].tolist() == ref.tolist()


def test_nms_defaults_and_limits() -> None:
    b = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    s = np.array([0.9, 0.8, 0.01, 0.7], np.float32)
    out = Nms({}, "s")(boxes=b, scores=s)  # no score threshold by default: the 0.01 box stays
    assert out["keep"].tolist() == [0, 3, 2]
    assert Nms({"max_det": 2}, "s")(boxes=b, scores=s)["keep"].tolist() == [0, 3]
    assert Nms({"iou": 0.9}, "s")(boxes=b, scores=s)["keep"].tolist() == [0, 1, 3, 2]
    empty = Nms({}, "s")(boxes=np.zeros((0, 4)), scores=np.zeros(0))
    assert empty["boxes"].shape == (0, 4) and empty["keep"].shape == (0,) and empty["classes"].dtype == np.int32


# -- decode_yolo -----------------------------------------------------------------------------------
def _meta(sx: float, sy: float, px: float, py: float, h: float, w: float) -> np.ndarray:
    return np.array([sx, sy, px, py, h, w], np.float32)


def _head(objects: list[tuple[float, float, float, float, int]], nc: int, n: int = 2000, seed: int = 0,
          net: int = 640) -> np.ndarray:
    """(N, 4+nc) rows cx, cy, w, h, class scores in network pixels: noise plus clusters around each object."""
    r = np.random.default_rng(seed)
    rows = np.zeros((n, 4 + nc), np.float32)
    rows[:, 4:] = r.uniform(0, 0.1, (n, nc))
    rows[:, 0:2] = r.uniform(0, net, (n, 2))
    rows[:, 2:4] = r.uniform(5, 60, (n, 2))
    for j, (x1, y1, x2, y2, c) in enumerate(objects):
        idx = np.arange(j * 50, j * 50 + 50)
        rows[idx, 0] = (x1 + x2) / 2 + r.normal(0, 2, 50)
        rows[idx, 1] = (y1 + y2) / 2 + r.normal(0, 2, 50)
        rows[idx, 2] = (x2 - x1) * np.exp(r.normal(0, 0.03, 50))
        rows[idx, 3] = (y2 - y1) * np.exp(r.normal(0, 0.03, 50))
        rows[idx, 4 + c] = r.uniform(0.3, 0.95, 50)
    return rows


def _reference_decode(rows: np.ndarray, meta: np.ndarray, conf: float, iou: float, aware: bool,
                      objectness: bool = False, keep_classes: tuple[int, ...] | None = None) -> np.ndarray:
    """Written separately, row by row: threshold, cv2.dnn.NMSBoxes(Batched), scale back, clip.
    Returns (K, 6) x1, y1, x2, y2, score, class, highest score first."""
    cands = []
    for row in rows.astype(np.float64):
        cls_scores = row[5:] * row[4] if objectness else row[4:]
        if objectness and row[4] <= conf:
            continue
        c = int(np.argmax(cls_scores))
        s = float(cls_scores[c])
        if s > conf and (keep_classes is None or c in keep_classes):
            cx, cy, bw, bh = row[:4]
            cands.append((cx - bw / 2, cy - bh / 2, bw, bh, s, c))
    if not cands:
        return np.zeros((0, 6))
    xywh = [list(t[:4]) for t in cands]
    sc = [t[4] for t in cands]
    keep = (cv2.dnn.NMSBoxesBatched(xywh, sc, [t[5] for t in cands], conf, iou) if aware
            else cv2.dnn.NMSBoxes(xywh, sc, conf, iou))
    sx, sy, px, py, h, w = meta.tolist()
    res = []
    for k in np.asarray(keep).reshape(-1):
        x, y, bw, bh, s, c = cands[k]
        res.append((min(max((x - px) / sx, 0), w), min(max((y - py) / sy, 0), h),
                    min(max((x + bw - px) / sx, 0), w), min(max((y + bh - py) / sy, 0), h), s, c))
    return np.array(sorted(res, key=lambda t: -t[4]))


def _check(out: dict, ref: np.ndarray) -> None:
    assert out["boxes"].dtype == np.float32 and out["scores"].dtype == np.float32 and out["classes"].dtype == np.int32
    assert out["boxes"].shape == (len(ref), 4) and len(ref) > 0
    np.testing.assert_allclose(out["scores"], ref[:, 4], atol=1e-6)
    assert out["classes"].tolist() == ref[:, 5].astype(int).tolist()
    np.testing.assert_allclose(out["boxes"], ref[:, :4], atol=1e-2)


# a 480x640 (h, w) image letterboxed into 640x640: scale 1, pad_y 80; and a 300x451 one: scale 640/451
METAS = [_meta(1.0, 1.0, 0.0, 80.0, 480, 640), _meta(640 / 451, 640 / 451, 0.0, 107.0, 300, 451)]
OBJECTS = [(100, 150, 300, 400, 2), (40, 90, 120, 200, 0), (250, 300, 420, 500, 2), (500, 70, 640, 260, 1),
           (-20, 500, 60, 620, 3)]  # the last crosses the image border: clipped


@pytest.mark.parametrize("meta", METAS)
@pytest.mark.parametrize("transposed", [True, False])
def test_decode_anchor_free_matches_independent(meta: np.ndarray, transposed: bool) -> None:
    rows = _head(OBJECTS, nc=6)
    out = rows.T[None] if transposed else rows[None]  # (1, 4+C, N) as YOLOv8 exports, or (1, N, 4+C)
    ref = _reference_decode(rows, meta, 0.25, 0.45, aware=True)
    got = DecodeYolo({"num_classes": 6}, "s")(output=out, meta=meta)
    _check(got, ref)
    assert len(ref) >= len(OBJECTS)
    assert (got["boxes"][:, 0::2] >= 0).all() and (got["boxes"][:, 0::2] <= meta[5]).all()
    assert (got["boxes"][:, 1::2] >= 0).all() and (got["boxes"][:, 1::2] <= meta[4]).all()
    # the best box of each object lands on it in the source image
    for x1, y1, x2, y2, c in OBJECTS[:4]:
        src = np.array([[(x1 - meta[2]) / meta[0], (y1 - meta[3]) / meta[1], (x2 - meta[2]) / meta[0],
                         (y2 - meta[3]) / meta[1]]])
        src[:, 0::2] = src[:, 0::2].clip(0, meta[5])
        src[:, 1::2] = src[:, 1::2].clip(0, meta[4])
        assert iou_matrix(got["boxes"][got["classes"] == c], src).max() > 0.85


def test_decode_anchor_free_options() -> None:
    rows = _head(OBJECTS, nc=6, seed=1)
    meta = METAS[1]
    out = rows.T[None]
    # layout found without num_classes too (N > 4+C)
    _check(DecodeYolo({}, "s")(output=out, meta=meta), _reference_decode(rows, meta, 0.25, 0.45, aware=True))
    agn = DecodeYolo({"class_aware": False, "score": 0.4, "iou": 0.3}, "s")(output=out, meta=meta)
    _check(agn, _reference_decode(rows, meta, 0.4, 0.3, aware=False))
    only = DecodeYolo({"classes": [2, 3]}, "s")(output=out, meta=meta)
    _check(only, _reference_decode(rows, meta, 0.25, 0.45, aware=True, keep_classes=(2, 3)))
    assert set(only["classes"].tolist()) == {2, 3}
    capped = DecodeYolo({"max_det": 3}, "s")(output=out, meta=meta)
    full = DecodeYolo({}, "s")(output=out, meta=meta)
    np.testing.assert_array_equal(capped["scores"], full["scores"][:3])
    none = DecodeYolo({"score": 0.99}, "s")(output=out, meta=meta)
    assert none["boxes"].shape == (0, 4) and none["scores"].shape == (0,) and none["classes"].shape == (0,)
    half = DecodeYolo({}, "s")(output=out.astype(np.float16), meta=meta)  # fp16 heads
    assert len(half["scores"]) == len(full["scores"])


@pytest.mark.parametrize("transposed", [False, True])
def test_decode_objectness_matches_independent(transposed: bool) -> None:
    """YOLOv5 / YOLOX with the decode in the graph: (1, N, 5+C) with objectness; score = obj * class score."""
    r = np.random.default_rng(5)
    base = _head(OBJECTS, nc=4, seed=2)
    obj = r.uniform(0, 0.2, base.shape[0]).astype(np.float32)
    obj[: 50 * len(OBJECTS)] = r.uniform(0.5, 1.0, 50 * len(OBJECTS))
    rows = np.concatenate([base[:, :4], obj[:, None], base[:, 4:]], axis=1)
    meta = METAS[0]
    out = rows.T[None] if transposed else rows[None]
    got = DecodeYolo({"format": "objectness", "num_classes": 4, "score": 0.2}, "s")(output=out, meta=meta)
    ref = _reference_decode(rows, meta, 0.2, 0.45, aware=True, objectness=True)
    _check(got, ref)
    # objectness matters: decoding the class scores alone keeps other boxes
    plain = DecodeYolo({"score": 0.2}, "s")(output=np.delete(rows, 4, axis=1)[None], meta=meta)
    assert not np.array_equal(plain["scores"], got["scores"])


# -- linear_sum_assignment ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 5), (12, 12), (4, 9), (9, 4), (30, 17), (3, 40)])
@pytest.mark.parametrize("kind", ["uniform", "integers", "constant", "binary"])
def test_linear_sum_assignment_equals_scipy(shape: tuple[int, int], kind: str) -> None:
    r = np.random.default_rng(hash((shape, kind)) % 2**32)
    for _ in range(4):
        cost = {"uniform": lambda: r.uniform(-1, 1, shape),
                "integers": lambda: r.integers(0, 4, shape).astype(float),  # many ties
                "constant": lambda: np.full(shape, 2.5),
                "binary": lambda: -(r.uniform(0, 1, shape) > 0.7).astype(float)}[kind]()
        rows, cols = linear_sum_assignment(cost)
        ref_r, ref_c = scipy_opt.linear_sum_assignment(cost)
        assert rows.dtype == np.int64 and cols.dtype == np.int64
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_r, ref_c].sum(), abs=1e-12)
        assert rows.tolist() == ref_r.tolist() and cols.tolist() == ref_c.tolist()  # ties broken like scipy
        assert len(set(cols.tolist())) == len(cols) == min(shape)


def test_linear_sum_assignment_beats_greedy_and_handles_inf() -> None:
    cost = np.array([[1.0, 2.0], [1.0, 10.0]])  # greedy row by row would take (0, 0) then (1, 1): 11
    rows, cols = linear_sum_assignment(cost)
    assert cols.tolist() == [1, 0] and cost[rows, cols].sum() == 3.0
    inf = np.array([[np.inf, 1.0, np.inf], [2.0, np.inf, np.inf]])
    assert [c.tolist() for c in linear_sum_assignment(inf)] == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match="infeasible"):
        linear_sum_assignment(np.array([[np.inf, 1.0], [np.inf, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        linear_sum_assignment(np.array([[np.nan, 1.0]]))
    assert [x.shape for x in linear_sum_assignment(np.zeros((0, 3)))] == [(0,), (0,)]


# -- Kalman filter -----------------------------------------------------------------------------------
class DirectKF:
    """One track's filter written out with plain matrices as the SORT paper / filterpy define it."""

    def __init__(self, box: np.ndarray) -> None:
        self.F = np.array([[1, 0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0, 1], [0, 0, 0, 1, 0, 0, 0],
                           [0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1]], float)
        self.H = np.hstack([np.eye(4), np.zeros((4, 3))])
        self.R = np.diag([1.0, 1.0, 10.0, 10.0])
        self.P = np.diag([10.0, 10.0, 10.0, 10.0, 10000.0, 10000.0, 10000.0])
        self.Q = np.diag([1.0, 1.0, 1.0, 1.0, 0.01, 0.01, 0.0001])
        self.x = np.zeros((7, 1))
        self.x[:4, 0] = self.z(box)

    @staticmethod
    def z(b: np.ndarray) -> np.ndarray:
        w, h = b[2] - b[0], b[3] - b[1]
        return np.array([b[0] + w / 2.0, b[1] + h / 2.0, w * h, w / float(h)])

    def box(self) -> np.ndarray:
        w = np.sqrt(self.x[2, 0] * self.x[3, 0])
        h = self.x[2, 0] / w
        cx, cy = self.x[0, 0], self.x[1, 0]
        return np.array([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0])

    def predict(self) -> None:
        if self.x[6, 0] + self.x[2, 0] <= 0:
            self.x[6, 0] = 0.0
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + self.Q

    def update(self, box: np.ndarray) -> None:
        y = self.z(box)[:, None] - self.H @ self.x
        S = self.H @ self.P @ self.H.T + self.R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ y
        ikh = np.eye(7) - K @ self.H
        self.P = ikh @ self.P @ ikh.T + K @ self.R @ K.T


def test_kalman_predict_update_equal_direct_matrices() -> None:
    r = np.random.default_rng(0)
    m = 6
    start = np.column_stack([r.uniform(0, 500, (m, 2)), r.uniform(20, 80, (m, 2))])
    start[:, 2:] += start[:, :2]
    vel = r.uniform(-8, 8, (m, 2))
    direct = [DirectKF(b) for b in start]
    x = np.zeros((m, 7))
    x[:, :4] = box_to_z(start)
    p = np.broadcast_to(np.diag([10.0] * 4 + [10000.0] * 3), (m, 7, 7)).copy()
    for t in range(1, 15):
        x, p = kalman_predict(x, p)
        for kf in direct:
            kf.predict()
        np.testing.assert_allclose(x, np.stack([kf.x[:, 0] for kf in direct]), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p, np.stack([kf.P for kf in direct]), rtol=1e-9, atol=1e-9)
        sel = np.flatnonzero(r.uniform(size=m) < 0.8)  # some tracks miss this frame
        meas = start[sel] + np.tile(vel[sel], 2) * t + r.normal(0, 1.5, (sel.size, 4))
        x[sel], p[sel] = kalman_update(x[sel], p[sel], box_to_z(meas))
        for i, b in zip(sel, meas):
            direct[i].update(b)
        np.testing.assert_allclose(x, np.stack([kf.x[:, 0] for kf in direct]), rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(p, np.stack([kf.P for kf in direct]), rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(x_to_box(x), np.stack([kf.box() for kf in direct]), rtol=1e-9, atol=1e-7)
    # the filter learnt the velocities
    np.testing.assert_allclose(x[:, 4:6], vel, atol=1.0)


# -- SORT against a transcription of the reference implementation -------------------------------------
class RefSort:
    """abewley/sort's Sort.update, transcribed with DirectKF and scipy's assignment. One deliberate difference:
    new tracks are created in detection order (the reference appends low-IoU rejects after the other unmatched)."""

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3) -> None:
        self.max_age, self.min_hits, self.iou_threshold = max_age, min_hits, iou_threshold
        self.trackers: list[dict] = []
        self.frame_count = 0
        self.count = 0

    def update(self, dets: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.frame_count += 1
        for trk in self.trackers:  # KalmanBoxTracker.predict
            trk["kf"].predict()
            trk["age"] += 1
            if trk["tsu"] > 0:
                trk["hit_streak"] = 0
            trk["tsu"] += 1
        self.trackers = [t for t in self.trackers if not np.any(np.isnan(t["kf"].box()))]
        trks = np.array([t["kf"].box() for t in self.trackers]).reshape(-1, 4)
        matches, unmatched = [], list(range(len(dets)))
        if len(dets) and len(trks):
            iou = np.zeros((len(dets), len(trks)))
            for d in range(len(dets)):
                for t in range(len(trks)):
                    a, b = dets[d], trks[t]
                    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                    inter = w * h
                    iou[d, t] = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
            a = (iou > self.iou_threshold).astype(np.int32)
            if a.sum(1).max() == 1 and a.sum(0).max() == 1:
                matched = np.stack(np.where(a), axis=1)
            else:
                matched = np.stack(scipy_opt.linear_sum_assignment(-iou), axis=1)
            matches = [(d, t) for d, t in matched if iou[d, t] >= self.iou_threshold]
            unmatched = [d for d in range(len(dets)) if d not in {m[0] for m in matches}]
        for d, t in matches:  # KalmanBoxTracker.update
            trk = self.trackers[t]
            trk["tsu"] = 0
            trk["hits"] += 1
            trk["hit_streak"] += 1
            trk["kf"].update(dets[d])
        for d in unmatched:
            self.count += 1
            self.trackers.append({"kf": DirectKF(dets[d]), "tsu": 0, "hits": 0, "hit_streak": 0, "age": 0,
                                  "id": self.count})
        ret = []
        for trk in list(self.trackers):
            if trk["tsu"] < 1 and (trk["hit_streak"] >= self.min_hits or self.frame_count <= self.min_hits):
                ret.append((trk["id"], trk["kf"].box()))
        self.trackers = [t for t in self.trackers if t["tsu"] <= self.max_age]
        return sorted(ret, key=lambda t: t[0])


def _scene(seed: int, frames: int = 40, objects: int = 7) -> list[np.ndarray]:
    """Boxes moving at constant velocity with jitter, missed detections, objects entering late, false alarms;
    each frame's detections shuffled."""
    r = np.random.default_rng(seed)
    p0 = r.uniform(0, 600, (objects, 2))
    size = r.uniform(30, 90, (objects, 2))
    vel = r.uniform(-6, 6, (objects, 2))
    born = r.integers(0, frames // 2, objects)
    born[:3] = 0
    out = []
    for t in range(frames):
        live = (born <= t) & (r.uniform(size=objects) < 0.85)
        c = p0[live] + vel[live] * t + r.normal(0, 1.0, (live.sum(), 2))
        b = np.concatenate([c - size[live] / 2, c + size[live] / 2], axis=1)
        if r.uniform() < 0.2:  # a false alarm
            c = r.uniform(0, 600, 2)
            b = np.vstack([b, np.concatenate([c - 20, c + 20])])
        out.append(b[r.permutation(len(b))].astype(np.float32))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("max_age, min_hits", [(1, 3), (3, 1), (0, 2)])
def test_sort_matches_reference_transcription(seed: int, max_age: int, min_hits: int) -> None:
    ours = SortTracker({"max_age": max_age, "min_hits": min_hits}, "s")
    ref = RefSort(max_age=max_age, min_hits=min_hits)
    outputs = 0
    for dets in _scene(seed):
        got = ours(boxes=dets, scores=np.ones(len(dets), np.float32))
        want = ref.update(dets.astype(np.float64))
        assert got["ids"].tolist() == [i for i, _ in want]
        if want:
            np.testing.assert_allclose(got["tracks"], np.stack([b for _, b in want]), rtol=1e-5, atol=1e-3)
        outputs += len(want)
    assert outputs > 100 and ref.count > 7  # tracks were output, and some were lost and re-created


def _run(tracker: SortTracker, frames: list[np.ndarray], classes: list[np.ndarray] | None = None) -> list[dict]:
    res = []
    for i, b in enumerate(frames):
        kw = {} if classes is None else {"classes": classes[i]}
        res.append(tracker(boxes=b, scores=np.linspace(0.9, 0.5, len(b)).astype(np.float32), **kw))
    return res


def _box(cx: float, cy: float, w: float = 40, h: float = 60) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_crossing_objects_keep_their_ids() -> None:
    # A moves right, B moves left; they overlap heavily mid-way (IoU > 0.5 for several frames)
    frames = [np.array([_box(100 + 12 * t, 200), _box(460 - 12 * t, 215)], np.float32)[::-1 if t % 2 else 1]
              for t in range(31)]
    res = _run(SortTracker({}, "s"), frames)
    a_id = None
    for t, r in enumerate(res):
        assert len(r["ids"]) == 2 and r["ids"].dtype == np.int32 and r["tracks"].dtype == np.float32
        a_row = int(np.argmin(np.abs(r["tracks"] - _box(100 + 12 * t, 200)).sum(axis=1)))  # the track on A's path
        assert np.abs(r["tracks"][a_row] - _box(100 + 12 * t, 200)).max() < 3.0
        a_id = int(r["ids"][a_row]) if a_id is None else a_id
        assert r["ids"][a_row] == a_id == 1  # A's track keeps id 1 through the crossing
    assert sorted(res[-1]["ids"].tolist()) == [1, 2]


def test_missed_detection_and_new_objects() -> None:
    t1 = [np.array([_box(100 + 5 * t, 100), _box(400, 300 - 4 * t)], np.float32) for t in range(12)]
    t1[6] = t1[6][:1]  # the second object is missed in frame 6 only
    t1[9] = np.vstack([t1[9], _box(600, 500)])  # a third object appears in frame 9
    t1[10] = np.vstack([t1[10], _box(601, 501)])
    t1[11] = np.vstack([t1[11], _box(602, 502)])
    res = _run(SortTracker({"min_hits": 1}, "s"), t1)
    assert [r["ids"].tolist() for r in res[:6]] == [[1, 2]] * 6
    assert res[6]["ids"].tolist() == [1]  # not output while unmatched
    assert res[7]["ids"].tolist() == [1, 2]  # max_age 1: the same id again
    assert res[9]["ids"].tolist() == [1, 2]  # a new track is shown once matched min_hits times (after frame 3)
    assert res[10]["ids"].tolist() == [1, 2, 3] and res[11]["ids"].tolist() == [1, 2, 3]
    # missed for two frames with max_age 1: the track is deleted, the object comes back with a new id
    t2 = [f.copy() for f in t1[:9]]
    t2[5] = t2[5][:1]
    t2[6] = t2[6][:1]
    res2 = _run(SortTracker({"min_hits": 1}, "s"), t2)
    assert res2[7]["ids"].tolist() == [1] and res2[8]["ids"].tolist() == [1, 3]
    assert _run(SortTracker({"min_hits": 1, "max_age": 2}, "s"), t2)[7]["ids"].tolist() == [1, 2]


def test_min_hits_gates_output() -> None:
    frames = [np.array([_box(100 + 5 * t, 100)], np.float32) for t in range(8)]
    frames[5] = np.zeros((0, 4), np.float32)  # missed once: the hit streak restarts
    res = _run(SortTracker({"min_hits": 3}, "s"), frames)
    assert [r["ids"].tolist() for r in res] == [[1], [1], [1], [1], [1], [], [], []]  # frames 1-3 always shown
    res = _run(SortTracker({"min_hits": 3}, "s"), frames + [np.array([_box(140, 100)], np.float32)])
    assert res[-1]["ids"].tolist() == [1]  # 3 consecutive hits again


def test_classes_scores_and_degenerate_boxes() -> None:
    frames = [np.array([_box(100 + 5 * t, 100), _box(300, 300), [50, 50, 50, 80]], np.float32) for t in range(4)]
    classes = [np.array([7, 2, 1]) for _ in range(3)] + [np.array([5, 2, 1])]
    res = _run(SortTracker({}, "s"), frames, classes)
    last = res[-1]
    assert last["ids"].tolist() == [1, 2]  # the zero-width box never makes a track
    assert last["classes"].tolist() == [5, 2]  # the class of the detection matched last
    np.testing.assert_allclose(last["scores"], [0.9, 0.7])
    assert last["scores"].dtype == np.float32 and last["classes"].dtype == np.int32
    no_cls = _run(SortTracker({}, "s"), frames)[-1]
    assert no_cls["classes"].tolist() == [0, 0]
    empty = SortTracker({}, "s")(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32))
    assert empty["tracks"].shape == (0, 4) and empty["ids"].shape == (0,) and empty["ids"].dtype == np.int32


def test_deterministic_and_reset() -> None:
    frames = _scene(7, frames=25)
    a = SortTracker({}, "s")
    first = _run(a, frames)
    b = SortTracker({}, "s")
    again = _run(b, frames)
    a.reset()
    after_reset = _run(a, frames)
    for x, y, z in zip(first, again, after_reset):
        for k in ("tracks", "ids", "classes", "scores"):
            np.testing.assert_array_equal(x[k], y[k])
            np.testing.assert_array_equal(x[k], z[k])
    assert first[0]["ids"].min() == 1 and max(r["ids"].max(initial=0) for r in first) > 3
    # ids keep counting without a reset and restart at 1 after one (min_hits 0: new tracks are shown at once)
    c = SortTracker({"min_hits": 0}, "s")
    seen = max(r["ids"].max(initial=0) for r in _run(c, frames))
    far = [np.array([_box(2000, 2000)], np.float32)]
    assert _run(c, far)[0]["ids"].tolist() == [seen + 1]
    c.reset()
    assert _run(c, far)[0]["ids"].tolist() == [1]


def test_unambiguous_overlaps_match_directly() -> None:
    """As the reference: when each detection and track overlap at most one other above iou, those pairs match
    directly; the assignment would maximise the total IoU with two pairs below iou and match nothing."""
    x, y = [19, 7, 24, 18], [11, 8, 17, 16]
    a, b = [15, 4, 24, 15], [19, 6, 28, 12]  # IoU(a, x) 0.35, IoU(a, y) 0.11, IoU(b, x) 0.298, IoU(b, y) 0
    trk = SortTracker({}, "s")
    assert trk(boxes=np.array([x, y], np.float32), scores=np.ones(2))["ids"].tolist() == [1, 2]
    assert trk(boxes=np.array([a, b], np.float32), scores=np.ones(2))["ids"].tolist() == [1, 3]
    iou = iou_matrix(np.array([a, b]), np.array([x, y]))
    rows, cols = linear_sum_assignment(-iou)
    assert cols.tolist() == [1, 0] and (iou[rows, cols] < 0.3).all()

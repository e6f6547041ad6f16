"""App steps db_boxes, sort and ctc_decode (edgesdk/runtime/app/steps/text.py): synthetic DB maps with known
rectangles, the components, hulls and rectangles against OpenCV (connectedComponents, convexHull, minAreaRect), a
PaddleOCR-style reference written with OpenCV, a transcription of PaddleOCR's sorted_boxes, and CTC decoding over a
charset file of the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesdk.runtime.app.steps import AppError, builtin
from edgesdk.runtime.app.steps.text import (
    CtcDecode,
    DbBoxes,
    SortBoxes,
    convex_hull,
    label_components,
    min_area_rect,
    order_corners,
)

cv2 = pytest.importorskip("cv2")

W = "app.yaml: stages.s.params"


def _rect_mask(h: int, w: int, c: tuple[float, float], size: tuple[float, float], deg: float) -> np.ndarray:
    """The pixels (x, y) (integer coordinates) inside a rectangle of size (along, across) centred at c, its long
    side at deg degrees (image axes: y down)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.deg2rad(deg)
    du, dv = x - c[0], y - c[1]
    u = du * np.cos(a) + dv * np.sin(a)
    v = -du * np.sin(a) + dv * np.cos(a)
    return (np.abs(u) <= size[0] / 2) & (np.abs(v) <= size[1] / 2)


def _d(w: float, h: float, ratio: float = 1.5) -> float:
    return w * h * ratio / (2 * (w + h))


def _sides(q: np.ndarray) -> tuple[float, float]:
    return float(np.linalg.norm(q[1] - q[0])), float(np.linalg.norm(q[3] - q[0]))


# -- registry and params ---------------------------------------------------------------------------
def test_registry_and_contract() -> None:
    assert builtin("db_boxes") is DbBoxes and builtin("sort") is SortBoxes and builtin("ctc_decode") is CtcDecode
    assert DbBoxes.inputs == ("map",) and DbBoxes.optional_inputs == ("meta",)
    assert DbBoxes.outputs == ("quads", "scores")
    assert SortBoxes.optional_inputs == ("scores",) and SortBoxes.outputs == ("boxes", "scores", "order")
    assert CtcDecode.file_params == ("charset",) and CtcDecode.outputs == ("text", "score")
    assert not any(c.stateful for c in (DbBoxes, SortBoxes, CtcDecode))


@pytest.mark.parametrize("cls, params, field", [
    (DbBoxes, {"thresh": 1.5}, "thresh"),
    (DbBoxes, {"box_thresh": "high"}, "box_thresh"),
    (DbBoxes, {"unclip_ratio": -1}, "unclip_ratio"),
    (DbBoxes, {"min_size": -1}, "min_size"),
    (DbBoxes, {"max_candidates": 0}, "max_candidates"),
    (DbBoxes, {"max_candidates": 10.5}, "max_candidates"),
    (DbBoxes, {"score_mode": "slow"}, "score_mode"),
    (DbBoxes, {"unclip": 2.0}, "unclip"),
    (SortBoxes, {"line_tol": -1}, "line_tol"),
    (SortBoxes, {"tol": 5}, "tol"),
    (CtcDecode, {}, "charset"),
    (CtcDecode, {"charset": ""}, "charset"),
    (CtcDecode, {"charset": 3}, "charset"),
    (CtcDecode, {"charset": "k.txt", "blank": -1}, "blank"),
    (CtcDecode, {"charset": "k.txt", "append_space": "yes"}, "append_space"),
    (CtcDecode, {"charset": "k.txt", "softmax": "sometimes"}, "softmax"),
    (CtcDecode, {"charset": "k.txt", "space": True}, "space"),
])
def test_bad_params_name_the_field(cls: type, params: dict, field: str) -> None:
    with pytest.raises(AppError, match=rf"stages\.s\.params\.{field}:"):
        cls(params, W)


def test_bad_inputs_name_the_step() -> None:
    w = "app.yaml: stages.s"
    for bad in (np.zeros((2, 1, 8, 8)), np.zeros((1, 2, 8, 8)), np.zeros(8), np.zeros((0, 8)), np.array("map")):
        with pytest.raises(AppError, match="stages.s: input 'map'"):
            DbBoxes({}, w)(map=bad)
    with pytest.raises(AppError, match="stages.s: input 'map' has non-finite"):
        DbBoxes({}, w)(map=np.full((8, 8), np.nan))
    with pytest.raises(AppError, match="stages.s: input 'meta'"):
        DbBoxes({}, w)(map=np.zeros((8, 8)), meta=np.zeros(6))
    with pytest.raises(AppError, match="map: true"):
        DbBoxes({}, w)(map=[np.zeros((8, 8))])
    with pytest.raises(AppError, match="stages.s: input 'boxes' has shape"):
        SortBoxes({}, w)(boxes=np.zeros((3, 5)))
    with pytest.raises(AppError, match="stages.s: input 'scores' has 2 values for 3 boxes"):
        SortBoxes({}, w)(boxes=np.zeros((3, 4)), scores=np.zeros(2))


# -- components, hull, rectangle against OpenCV --------------------------------------------------------
def _partition(bitmap: np.ndarray) -> np.ndarray:
    rows, starts, ends, labels, n = label_components(bitmap)
    out = np.full(bitmap.shape, -1, dtype=np.int64)
    for r, s, e, lab in zip(rows.tolist(), starts.tolist(), ends.tolist(), labels.tolist()):
        out[r, s:e] = lab
    assert labels.size == 0 or labels.max() == n - 1
    return out


def _serpent(n: int) -> np.ndarray:
    """A one-pixel-wide serpentine: every other row, joined alternately at the right and left ends (one long
    component whose runs are labelled from both ends: many union-find rounds)."""
    m = np.zeros((n, n), dtype=bool)
    m[::2] = True
    m[1::4, -1] = True
    m[3::4, 0] = True
    return m


@pytest.mark.parametrize("case", ["sparse", "dense", "percolating", "serpent", "diagonal", "full", "empty"])
def test_components_equal_cv2(case: str) -> None:
    r = np.random.default_rng(len(case))
    bm = {"sparse": lambda: r.uniform(size=(97, 131)) > 0.8,
          "dense": lambda: r.uniform(size=(120, 90)) > 0.45,
          "percolating": lambda: r.uniform(size=(150, 150)) > 0.55,
          "serpent": lambda: _serpent(81),
          "diagonal": lambda: np.eye(40, dtype=bool) | np.eye(40, k=5, dtype=bool)[::-1],
          "full": lambda: np.ones((30, 20), dtype=bool),
          "empty": lambda: np.zeros((30, 20), dtype=bool)}[case]()
    ours = _partition(bm)
    n_cv, lab_cv = cv2.connectedComponents(bm.astype(np.uint8), connectivity=8)
    assert ((ours >= 0) == bm).all()
    pairs = set(zip(ours[bm].tolist(), lab_cv[bm].tolist()))
    assert len(pairs) == n_cv - 1 == len({p[0] for p in pairs})  # the same partition
    if bm.any():  # numbered in scan order: the first pixel met in each component
        firsts = [int(np.flatnonzero((ours == k).reshape(-1))[0]) for k in range(n_cv - 1)]
        assert firsts == sorted(firsts)
    if case == "serpent":
        assert n_cv - 1 == 1


@pytest.mark.parametrize("seed", range(6))
def test_hull_and_min_area_rect_equal_cv2(seed: int) -> None:
    r = np.random.default_rng(seed)
    pts = r.normal(0, [40, 12], (200, 2)) @ np.array([[np.cos(seed), np.sin(seed)], [-np.sin(seed), np.cos(seed)]])
    pts = np.rint(pts + 100).astype(np.int64)
    hull = convex_hull([tuple(p) for p in pts.tolist()])
    ref = cv2.convexHull(pts.astype(np.int32)).reshape(-1, 2)
    assert {tuple(p) for p in hull} == {tuple(p) for p in ref.tolist()}
    axes, lo, hi = min_area_rect(np.array(hull, np.float64))
    (_, _), (w, h), _ = cv2.minAreaRect(pts.astype(np.float32))
    area = float(np.prod(hi - lo))
    assert area == pytest.approx(w * h, rel=0.02) and area <= w * h * (1 + 1e-6)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-12)
    proj = pts @ axes.T
    assert (proj >= lo - 1e-9).all() and (proj <= hi + 1e-9).all()  # it encloses every point


def test_order_corners_like_get_mini_boxes() -> None:
    sq = np.array([[10, 0], [0, 10], [10, 20], [20, 10]], np.float64)  # a diamond
    np.testing.assert_array_equal(order_corners(sq), [[10, 0], [20, 10], [10, 20], [0, 10]])
    rot = np.array([[30, 5], [2, 12], [33, 17], [5, 24]], np.float64)
    np.testing.assert_array_equal(order_corners(rot), [[2, 12], [30, 5], [33, 17], [5, 24]])


# -- db_boxes ------------------------------------------------------------------------------------
def test_db_axis_aligned_rectangle() -> None:
    m = np.zeros((100, 200), np.float32)
    m[30:50, 40:120] = 0.9  # pixels x 40..119, y 30..49: a 79 x 19 rectangle of pixel coordinates
    out = DbBoxes({}, W)(map=m[None, None])
    q, s = out["quads"], out["scores"]
    assert q.dtype == np.float32 and q.shape == (1, 4, 2) and s.dtype == np.float32
    assert s[0] == pytest.approx(0.9)
    d = _d(79, 19)
    np.testing.assert_allclose(q[0], [[40 - d, 30 - d], [119 + d, 30 - d], [119 + d, 49 + d], [40 - d, 49 + d]],
                               atol=1e-4)
    for shape in ((1, 100, 200), (100, 200), (1, 100, 200, 1)):
        np.testing.assert_array_equal(DbBoxes({}, W)(map=m.reshape(shape))["quads"], q)
    d2 = _d(79, 19, 2.0)
    wider = DbBoxes({"unclip_ratio": 2.0}, W)(map=m)["quads"][0]
    assert _sides(wider) == pytest.approx((79 + 2 * d2, 19 + 2 * d2), abs=1e-4)


@pytest.mark.parametrize("deg", [25.0, -12.0, 63.0])
def test_db_rotated_rectangle(deg: float) -> None:
    mask = _rect_mask(240, 320, (160, 120), (150, 32), deg)
    m = np.where(mask, 0.8, 0.05).astype(np.float32)
    out = DbBoxes({}, W)(map=m)
    q = out["quads"]
    assert q.shape == (1, 4, 2) and out["scores"][0] == pytest.approx(0.8, abs=1e-6)
    e1, e2 = q[0, 1] - q[0, 0], q[0, 3] - q[0, 0]
    long_edge = e1 if np.linalg.norm(e1) > np.linalg.norm(e2) else e2
    angle = (np.degrees(np.arctan2(long_edge[1], long_edge[0])) + 90) % 180 - 90  # the line's direction
    assert angle == pytest.approx(deg, abs=1.0)
    # against cv2.minAreaRect of the component's pixels, expanded by d
    ys, xs = np.nonzero(mask)
    (_, _), (rw, rh), _ = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32))
    d = _d(rw, rh)
    got = sorted(_sides(q[0]))
    want = sorted((rw + 2 * d, rh + 2 * d))
    assert got == pytest.approx(want, rel=0.02)
    assert np.prod(got) == pytest.approx(np.prod(want), rel=0.02)


def _reference_db(m: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.6, ratio: float = 1.5,
                  min_size: float = 3) -> list[tuple[np.ndarray, float, float]]:
    """PaddleOCR's boxes_from_bitmap with OpenCV (outer contours, minAreaRect), the pyclipper unclip of a
    rectangle written as its closed form. Two scores: the mean over the pixels whose centre is inside the box or
    on its edge (cv2.pointPolygonTest; the step's rule, used for box_thresh) and Paddle's own (cv2.fillPoly of the
    corners truncated to integers: its line drawing adds a band of outside pixels along rotated edges)."""
    contours, _ = cv2.findContours((m > thresh).astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    res = []
    h, w = m.shape
    for cnt in contours:
        (cx, cy), (rw, rh), ang = cv2.minAreaRect(cnt)
        if min(rw, rh) < min_size:
            continue
        box = cv2.boxPoints(((cx, cy), (rw, rh), ang))
        x0, x1 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1)), int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
        y0, y1 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1)), int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
        inside = [m[y, x] for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)
                  if cv2.pointPolygonTest(box.reshape(-1, 1, 2), (float(x), float(y)), True) >= -1e-3]
        score = float(np.mean(inside))
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(mask, [(box - [x0, y0]).astype(np.int32)], 1)
        paddle = cv2.mean(m[y0:y1 + 1, x0:x1 + 1], mask)[0]
        if score < box_thresh:
            continue
        d = _d(rw, rh, ratio)
        if min(rw, rh) + 2 * d < min_size + 2:
            continue
        big = cv2.boxPoints(((cx, cy), (rw + 2 * d, rh + 2 * d), ang)).astype(np.float64)
        big[:, 0] = big[:, 0].clip(0, w)
        big[:, 1] = big[:, 1].clip(0, h)
        res.append((order_corners(big), score, paddle))
    return res


def test_db_matches_an_opencv_reference() -> None:
    r = np.random.default_rng(3)
    m = r.uniform(0, 0.2, (256, 384)).astype(np.float32)
    specs = [((60, 40), (90, 20), 0.0), ((250, 50), (160, 26), 8.0), ((110, 130), (120, 30), -30.0),
             ((300, 170), (110, 24), 72.0), ((180, 220), (200, 36), 3.0), ((40, 200), (40, 12), 0.0),
             ((370, 240), (60, 20), 0.0)]  # the last crosses the border: clipped
    for c, size, deg in specs:
        mask = _rect_mask(256, 384, c, size, deg)
        m[mask] = r.uniform(0.5, 1.0, int(mask.sum()))
    got = DbBoxes({}, W)(map=m)
    ref = _reference_db(m)
    assert len(ref) == len(got["quads"]) >= 5
    for q, s in zip(got["quads"], got["scores"]):
        centre = q.mean(axis=0)
        k = int(np.argmin([np.linalg.norm(rq.mean(axis=0) - centre) for rq, _, _ in ref]))
        rq, rs, paddle = ref[k]
        assert np.abs(q - rq).max() < 0.01
        assert s == pytest.approx(rs, abs=1e-5)
        assert s == pytest.approx(paddle, abs=0.05)
    assert (got["quads"][..., 0] <= 384).all() and (got["quads"][..., 0] >= 0).all()


def test_db_filters_and_limits() -> None:
    m = np.zeros((120, 200), np.float32)
    m[10:30, 10:90] = 0.9     # kept
    m[50:70, 10:90] = 0.5     # a component (> thresh) but its score is below box_thresh 0.6
    m[90:92, 10:90] = 0.9     # 2 pixels tall: short side 1 < min_size
    m[10:30, 120:190] = 0.25  # below thresh: no component
    m[40:44, 120:124] = 0.95  # small: 3 x 3, unclipped 5.25 >= min_size + 2, but 3.75 with unclip_ratio 0.5
    assert _sides(DbBoxes({}, W)(map=m)["quads"][1]) == pytest.approx((3 + 2 * _d(3, 3),) * 2)
    assert len(DbBoxes({}, W)(map=m)["quads"]) == 2
    assert len(DbBoxes({"unclip_ratio": 0.5}, W)(map=m)["quads"]) == 1
    assert len(DbBoxes({"box_thresh": 0.4}, W)(map=m)["quads"]) == 3
    assert len(DbBoxes({"min_size": 0}, W)(map=m)["quads"]) == 3  # the thin line: short side 1 + 2d >= 2
    assert len(DbBoxes({"min_size": 0, "unclip_ratio": 0.5}, W)(map=m)["quads"]) == 2  # 1 + 2d < 2
    assert len(DbBoxes({"thresh": 0.2, "box_thresh": 0.2}, W)(map=m)["quads"]) == 4
    assert len(DbBoxes({"min_size": 0, "box_thresh": 0, "thresh": 0.2}, W)(map=m)["quads"]) == 5
    # the largest max_candidates components are the ones considered
    top = DbBoxes({"box_thresh": 0.4, "max_candidates": 1}, W)(map=m)
    assert len(top["quads"]) == 1
    two = DbBoxes({"box_thresh": 0.4, "max_candidates": 2}, W)(map=m)  # the 3 x 3 blob is not among the 2 largest
    assert two["scores"].tolist() == pytest.approx([0.9, 0.5])  # in scan order
    empty = DbBoxes({}, W)(map=np.zeros((32, 32), np.float32))
    assert empty["quads"].shape == (0, 4, 2) and empty["scores"].shape == (0,)
    assert empty["quads"].dtype == np.float32 and empty["scores"].dtype == np.float32


def test_db_two_blobs_and_meta() -> None:
    m = np.zeros((160, 160), np.float32)
    m[20:40, 10:100] = 0.8
    m[80:110, 60:150] = 0.7
    plain = DbBoxes({}, W)(map=m)
    assert plain["quads"].shape == (2, 4, 2) and plain["scores"].tolist() == pytest.approx([0.8, 0.7])
    # a 480x640 (h, w) image letterboxed to 160x160: scale 0.25, pad_y 20
    meta = np.array([0.25, 0.25, 0.0, 20.0, 480, 640], np.float32)
    src = DbBoxes({}, W)(map=m, meta=meta)["quads"]
    want = plain["quads"].astype(np.float64).copy()
    want[..., 1] -= 20
    want /= 0.25
    want[..., 0] = want[..., 0].clip(0, 640)
    want[..., 1] = want[..., 1].clip(0, 480)
    np.testing.assert_allclose(src, want, rtol=1e-6, atol=1e-3)
    # clipped to the image: the first blob's box reaches above pad_y
    assert src[0, 0, 1] == 0.0 and (src[..., 1] <= 480).all()
    # a blob at the map's own border is clipped to the map without meta
    edge = np.zeros((50, 50), np.float32)
    edge[0:10, 30:50] = 0.9
    q = DbBoxes({}, W)(map=edge)["quads"][0]
    assert q[:, 1].min() == 0.0 and q[:, 0].max() == 50.0


def test_db_large_map_is_fast_enough() -> None:
    import time

    r = np.random.default_rng(0)
    m = np.zeros((960, 960), np.float32)
    for _ in range(150):
        x, y = r.integers(0, 900), r.integers(0, 940)
        m[y:y + r.integers(8, 20), x:x + r.integers(20, 200)] = r.uniform(0.6, 1.0)
    m += r.uniform(0, 0.35, m.shape).astype(np.float32)  # noise: many one-pixel components
    t = time.perf_counter()
    out = DbBoxes({}, W)(map=m)
    assert time.perf_counter() - t < 5.0 and len(out["quads"]) > 20


# -- sort ----------------------------------------------------------------------------------------
def _paddle_sorted(boxes: np.ndarray, tol: float = 10) -> list[int]:
    """PaddleOCR's sorted_boxes, on indexes."""
    idx = sorted(range(len(boxes)), key=lambda i: (boxes[i][0][1], boxes[i][0][0]))
    for i in range(len(idx) - 1):
        for j in range(i, -1, -1):
            a, b = boxes[idx[j]][0], boxes[idx[j + 1]][0]
            if abs(b[1] - a[1]) < tol and b[0] < a[0]:
                idx[j], idx[j + 1] = idx[j + 1], idx[j]
            else:
                break
    return idx


def _quad(x: float, y: float, w: float = 80, h: float = 24) -> list[list[float]]:
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def test_sort_reading_order_two_lines() -> None:
    r = np.random.default_rng(0)
    lines = [(20, [10, 120, 240, 360]), (70, [15, 130, 250])]
    quads, truth = [], []
    for y, xs in lines:
        for x in xs:
            quads.append(_quad(x + r.uniform(-3, 3), y + r.uniform(-4, 4)))
            truth.append(len(truth))
    perm = r.permutation(len(quads))
    boxes = np.array(quads, np.float32)[perm]
    scores = np.linspace(0.9, 0.3, len(quads)).astype(np.float32)
    out = SortBoxes({}, W)(boxes=boxes, scores=scores)
    assert out["order"].dtype == np.int64 and out["boxes"].dtype == np.float32
    assert perm[out["order"]].tolist() == truth  # line by line, left to right
    np.testing.assert_array_equal(out["boxes"], boxes[out["order"]])
    np.testing.assert_array_equal(out["scores"], scores[out["order"]])
    assert out["order"].tolist() == _paddle_sorted(boxes)
    # xyxy boxes; scores default to ones
    xyxy = np.concatenate([boxes[:, 0], boxes[:, 2]], axis=1)
    o2 = SortBoxes({}, W)(boxes=xyxy)
    assert o2["order"].tolist() == out["order"].tolist() and o2["boxes"].shape == (len(quads), 4)
    assert o2["scores"].tolist() == [1.0] * len(quads)
    # line_tol 0: plain (y, x) order, jitter breaks the lines
    plain = SortBoxes({"line_tol": 0}, W)(boxes=boxes)["order"]
    assert plain.tolist() == np.lexsort((boxes[:, 0, 0], boxes[:, 0, 1])).tolist() != out["order"].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_sort_equals_paddle_transcription(seed: int) -> None:
    r = np.random.default_rng(seed)
    n = 25
    boxes = np.array([_quad(x, y) for x, y in zip(r.uniform(0, 600, n), r.choice([10, 40, 75, 120], n)
                                                  + r.uniform(-8, 8, n))], np.float32)
    for tol in (10.0, 25.0):
        assert SortBoxes({"line_tol": tol}, W)(boxes=boxes)["order"].tolist() == _paddle_sorted(boxes, tol)
    empty = SortBoxes({}, W)(boxes=np.zeros((0, 4, 2)))
    assert empty["boxes"].shape == (0, 4, 2) and empty["order"].shape == (0,) and empty["scores"].shape == (0,)
    assert SortBoxes({}, W)(boxes=np.zeros((0, 4)))["boxes"].shape == (0, 4)


# -- ctc_decode ----------------------------------------------------------------------------------
@pytest.fixture()
def charset(tmp_path: Path) -> Path:
    p = tmp_path / "keys.txt"
    p.write_bytes("a\nb\n \n\u3000\nc\r\n".encode("utf-8"))  # a space line, an ideographic space, a CRLF line
    return p


def _ctc(params: dict, root: Path) -> CtcDecode:
    return CtcDecode({"charset": "keys.txt", **params}, W, lambda rel: root / rel)


def _probs(steps: list[int], c: int, top: list[float] | None = None) -> np.ndarray:
    top = top or [0.9] * len(steps)
    p = np.zeros((len(steps), c), np.float32)
    for t, (k, v) in enumerate(zip(steps, top)):
        p[t] = (1 - v) / (c - 1)
        p[t, k] = v
    return p


def test_ctc_greedy_decode(charset: Path) -> None:
    # classes: 0 blank, 1 a, 2 b, 3 " ", 4 U+3000, 5 c
    steps = [1, 1, 0, 1, 2, 2, 3, 4, 0, 0, 5, 5]
    top = [0.9, 0.5, 0.99, 0.8, 0.7, 0.6, 0.95, 0.85, 0.9, 0.9, 0.75, 0.4]
    p = _probs(steps, 6, top)
    out = _ctc({}, charset.parent)(logits=p[None])
    t = out["text"]
    assert isinstance(t, np.ndarray) and t.shape == () and t.dtype.kind == "U"
    assert str(t) == "aab \u3000c"
    assert out["score"].dtype == np.float32 and out["score"].shape == ()
    assert float(out["score"]) == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.95, 0.85, 0.75]), abs=1e-6)
    np.testing.assert_array_equal(_ctc({}, charset.parent)(logits=p)["text"], t)  # (T, C)
    np.testing.assert_array_equal(_ctc({}, charset.parent)(logits=p[:, None])["text"], t)  # (T, 1, C)
    # logits: softmax applied (auto, or asked); the decoded text is the same, the score the softmax's
    logits = np.log(p + 1e-3) * 3.0
    sm = np.exp(logits - logits.max(axis=1, keepdims=True))
    sm /= sm.sum(axis=1, keepdims=True)
    kept = [0, 3, 4, 6, 7, 10]
    for params in ({}, {"softmax": True}, {"softmax": "true"}):
        o = _ctc(params, charset.parent)(logits=logits[None])
        assert str(o["text"]) == "aab \u3000c"
        assert float(o["score"]) == pytest.approx(sm[kept, np.array(steps)[kept]].mean(), abs=1e-5)
    raw = _ctc({"softmax": False}, charset.parent)(logits=logits[None])
    assert float(raw["score"]) == pytest.approx(logits[kept, np.array(steps)[kept]].mean(), abs=1e-5)


def test_ctc_blank_index_space_class_and_empty(charset: Path) -> None:
    root = charset.parent
    # append_space: a " " class after the symbols (C = 7)
    sp = _ctc({"append_space": True}, root)(logits=_probs([1, 6, 6, 2, 0, 6], 7)[None])
    assert str(sp["text"]) == "a b "
    # blank last: symbols at 0..4
    last = _ctc({"blank": 5}, root)(logits=_probs([0, 5, 0, 1, 1, 4, 5, 5], 6)[None])
    assert str(last["text"]) == "aabc"
    # nothing but blanks: empty text, score 0; the outputs round-trip through np.save without pickle
    empty = _ctc({}, root)(logits=_probs([0, 0, 0], 6)[None])
    assert str(empty["text"]) == "" and empty["text"].dtype.kind == "U" and float(empty["score"]) == 0.0
    none = _ctc({}, root)(logits=np.zeros((1, 0, 6), np.float32))
    assert str(none["text"]) == "" and float(none["score"]) == 0.0
    for v in (sp["text"], sp["score"], empty["text"]):
        f = root / "v.npy"
        np.save(f, v, allow_pickle=False)
        assert np.load(f, allow_pickle=False) == v


def test_ctc_class_count_mismatch_names_the_file(charset: Path) -> None:
    root = charset.parent
    with pytest.raises(AppError, match=r"stages\.s\.params: the charset 'keys\.txt' has 5 symbols, so 6 classes "
                                       r"\(blank \+ symbols\), but the logits have C=9"):
        _ctc({}, root)(logits=np.zeros((1, 4, 9), np.float32))
    with pytest.raises(AppError, match=r"'keys\.txt' has 5 symbols.*C=7 \(PaddleOCR .*append_space: true\)"):
        _ctc({}, root)(logits=np.zeros((1, 4, 7), np.float32))
    with pytest.raises(AppError, match=r"7 classes \(blank \+ symbols \+ space\), but the logits have C=6"):
        _ctc({"append_space": True}, root)(logits=np.zeros((1, 4, 6), np.float32))
    with pytest.raises(AppError, match=r"params\.blank: 6 is not a class index"):
        _ctc({"blank": 6}, root)(logits=np.zeros((1, 4, 6), np.float32))
    with pytest.raises(AppError, match="input 'logits' has shape"):
        _ctc({}, root)(logits=np.zeros((2, 4, 6), np.float32))
    with pytest.raises(AppError, match="input 'logits' has non-finite"):
        _ctc({}, root)(logits=np.full((1, 4, 6), np.nan, np.float32))


def test_ctc_charset_file(tmp_path: Path) -> None:
    calls: list[str] = []

    def resolve(rel: str) -> Path:
        calls.append(rel)
        return tmp_path / rel

    (tmp_path / "keys.txt").write_text("x\ny\n", encoding="utf-8")
    st = CtcDecode({"charset": "keys.txt"}, W, resolve)
    assert calls == []  # read lazily
    p = _probs([1, 2], 3)[None]
    assert str(st(logits=p)["text"]) == "xy"
    (tmp_path / "keys.txt").unlink()
    assert str(st(logits=p)["text"]) == "xy" and calls == ["keys.txt"]  # read once, cached
    # no final newline; a lone "\r" inside a line is kept, spaces are never stripped
    (tmp_path / "k2.txt").write_bytes(b" x \na\rb\r\r\n\xe3\x80\x80")
    k2 = CtcDecode({"charset": "k2.txt"}, W, resolve)
    assert str(k2(logits=_probs([1, 2, 3], 4)[None])["text"]) == " x a\rb\r\u3000"
    with pytest.raises(AppError, match=r"params\.charset: cannot read 'missing\.txt'"):
        CtcDecode({"charset": "missing.txt"}, W, resolve)(logits=p)
    (tmp_path / "bad.txt").write_bytes(b"a\n\xff\n")
    with pytest.raises(AppError, match=r"params\.charset: 'bad\.txt' is not UTF-8"):
        CtcDecode({"charset": "bad.txt"}, W, resolve)(logits=p)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(AppError, match=r"params\.charset: 'empty\.txt' is empty"):
        CtcDecode({"charset": "empty.txt"}, W, resolve)(logits=p)
    with pytest.raises(AppError, match="no file root"):
        CtcDecode({"charset": "keys.txt"}, W)(logits=p)


ODD = [None, "x", np.array("x"), np.array([["a"]]), np.array(3.0), np.zeros((0,)), np.zeros((2, 2, 2, 2, 2)),
       np.full((4, 4), np.inf), np.zeros((4, 4), complex), np.zeros((4, 4), bool), np.array([object()]),
       np.ones((1, 3, 4), np.float32), np.ones((3, 4, 2)) * 1e12, np.ones((2, 4)) * -5, np.zeros((1, 0, 3)), 5,
       {"a": 1}, [np.zeros(3)]]


@pytest.mark.parametrize("kind, params, good", [
    ("db_boxes", {}, {"map": np.zeros((8, 8)), "meta": np.array([1, 1, 0, 0, 8, 8.0])}),
    ("sort", {}, {"boxes": np.zeros((2, 4)), "scores": np.ones(2)}),
    ("ctc_decode", {"charset": "keys.txt"}, {"logits": np.zeros((1, 3, 6))}),
])
def test_odd_inputs_raise_only_app_errors(kind: str, params: dict, good: dict, charset: Path) -> None:
    step = builtin(kind)(params, "app.yaml: stages.s", lambda rel: charset.parent / rel)
    step(**good)
    for name in good:
        for odd in ODD:
            try:
                step(**{**good, name: odd})
            except AppError as e:
                assert str(e).startswith("app.yaml: stages.s: "), e

"""Pre/post-processing: letterbox + normalise (OpenCV and numpy), softmax/top-k, YOLO decode, NMS, scale-back."""

from __future__ import annotations

import numpy as np
import pytest

from edgesdk.runtime.errors import InputMismatch
from edgesdk.runtime.manifest import Postprocess, Preprocess
from edgesdk.runtime.postprocess import (
    Postprocessor,
    decode_anchor_based,
    decode_raw_anchor_grids,
    nms,
    softmax,
    top_k,
)
from edgesdk.runtime.preprocess import Preprocessor, resize_numpy

cv2 = pytest.importorskip("cv2")


def real_image() -> np.ndarray:
    """A real photo shipped by scikit-image (Chelsea the cat, 300x451), as BGR like cv2.imread."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.chelsea()[:, :, ::-1])


# -- preprocess ---------------------------------------------------------------------------------
def test_letterbox_matches_blob_from_image() -> None:
    img = real_image()
    spec = Preprocess(input="x", size=(320, 320), mean=(0.485 * 255 / 255, 0.456, 0.406), std=(0.229,) * 3)
    t, geo = Preprocessor(spec)(img)
    # the same with cv2: letterbox by hand, then blobFromImage (mean in the swapped order, scaled)
    h, w = img.shape[:2]
    r = min(320 / h, 320 / w)
    nw, nh = round(w * r), round(h * r)
    px, py = (320 - nw) // 2, (320 - nh) // 2
    lb = cv2.copyMakeBorder(cv2.resize(img, (nw, nh)), py, 320 - nh - py, px, 320 - nw - px, cv2.BORDER_CONSTANT,
                            value=(114, 114, 114))
    blob = cv2.dnn.blobFromImage(lb, 1 / 255 / 0.229, mean=tuple(m * 255 for m in spec.mean), swapRB=True)
    assert t.shape == (1, 3, 320, 320) and t.dtype == np.float32
    np.testing.assert_allclose(t, blob, atol=1e-4)
    assert (geo.pad_x, geo.pad_y) == (px, py)


def test_numpy_backend_close_to_opencv() -> None:
    img = real_image()
    spec = Preprocess(input="x", size=(256, 256))
    a, ga = Preprocessor(spec, backend="opencv")(img)
    b, gb = Preprocessor(spec, backend="numpy")(img)
    assert ga == gb
    assert np.abs(a - b).max() <= 1.5 / 255  # rounding of the bilinear weights
    small = resize_numpy(img, 100, 67)
    assert np.abs(small.astype(int) - cv2.resize(img, (100, 67)).astype(int)).max() <= 1


def test_layout_colour_and_stretch() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 10  # B
    img[..., 2] = 200  # R
    nhwc = Preprocessor(Preprocess(input="x", size=(4, 6), resize="none", layout="NHWC", scale=1.0))(img)[0]
    assert nhwc.shape == (1, 4, 6, 3) and nhwc[0, 0, 0].tolist() == [200, 0, 10]  # RGB
    bgr = Preprocessor(Preprocess(input="x", size=(4, 6), resize="none", color="BGR", scale=1.0))(img)[0]
    assert bgr.shape == (1, 3, 4, 6) and bgr[0, :, 0, 0].tolist() == [10, 0, 200]
    u8 = Preprocessor(Preprocess(input="x", size=(8, 8), resize="stretch", scale=1.0, dtype="uint8"))(img)
    assert u8[0].dtype == np.uint8 and u8[1].scale_x == 8 / 6
    with pytest.raises(InputMismatch, match="resize 'none' needs a 5x6 image, given 4x6"):
        Preprocessor(Preprocess(input="x", size=(5, 6), resize="none"))(img)
    with pytest.raises(InputMismatch, match="uint8 BGR"):
        Preprocessor(Preprocess(input="x", size=(5, 6)))(img.astype(np.float32))


# -- classification ---------------------------------------------------------------------------------
def test_softmax_top_k() -> None:
    x = np.array([1.0, 3.0, 3.0, -1.0, 2.0], np.float32)
    p = softmax(x)
    assert abs(p.sum() - 1) < 1e-6
    assert top_k(p, 3).tolist() == [1, 2, 4]  # ties: lower index first
    post = Postprocessor(Postprocess(kind="classification", softmax=True, top_k=2, labels=("a", "b", "c", "d", "e")),
                         ["logits"])
    pred = post({"logits": x[None]})
    assert [(c.class_id, c.label) for c in pred.classifications] == [(1, "b"), (2, "c")]


# -- NMS against OpenCV ---------------------------------------------------------------------------------
def _candidates(n: int, seed: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    centres = r.uniform(40, 600, (12, 2))
    k = r.integers(0, 12, n)
    wh = r.uniform(20, 160, (12, 2))[k] * np.exp(r.normal(0, 0.1, (n, 2)))
    c = centres[k] + r.normal(0, 6, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)
    return boxes, r.uniform(0, 1, n).astype(np.float32), r.integers(0, classes, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_agnostic_equals_cv2(seed: int) -> None:
    boxes, scores, _ = _candidates(3000, seed)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    ref = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.3, 0.45)).reshape(-1)
    ours = nms(boxes, scores, 0.45, score_threshold=0.3)
    assert ours.tolist() == ref.tolist()


@pytest.mark.parametrize("seed", [3, 4])
def test_nms_class_aware_equals_cv2_batched(seed: int) -> None:
    boxes, scores, cls = _candidates(2000, seed)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    ref = np.asarray(cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), cls.tolist(), 0.2, 0.5)).reshape(-1)
    ours = nms(boxes, scores, 0.5, score_threshold=0.2, class_ids=cls)
    assert sorted(ours.tolist()) == sorted(ref.tolist())
    assert len(ours) > len(nms(boxes, scores, 0.5, score_threshold=0.2))  # classes kept apart


def test_nms_edge_cases() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert nms(b, np.array([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert nms(b, np.array([0.9, 0.8, 0.7]), 0.5, max_det=1).tolist() == [0]


# -- YOLO on a real image against an independent implementation --------------------------------------
def _yolov8_head(img_hw: tuple[int, int], objects: list[tuple[float, float, float, float, int]], nc: int = 80,
                 seed: int = 0) -> np.ndarray:
    """A deterministic YOLOv8 (1, 4+nc, 8400) output for a 640x640 letterbox of an image of size img_hw,
    with clusters of candidates around the given source-image boxes (x1, y1, x2, y2, class)."""
    r = np.random.default_rng(seed)
    h, w = img_hw
    g = min(640 / h, 640 / w)
    px, py = (640 - round(w * g)) / 2, (640 - round(h * g)) / 2
    out = np.zeros((4 + nc, 8400), np.float32)
    out[4:] = r.uniform(0, 0.05, (nc, 8400))  # background noise
    out[0:2] = r.uniform(0, 640, (2, 8400))
    out[2:4] = r.uniform(5, 60, (2, 8400))
    for j, (x1, y1, x2, y2, c) in enumerate(objects):
        idx = np.arange(j * 60, j * 60 + 60)
        cx, cy = (x1 + x2) / 2 * g + px, (y1 + y2) / 2 * g + py
        bw, bh = (x2 - x1) * g, (y2 - y1) * g
        out[0, idx] = cx + r.normal(0, 2, 60)
        out[1, idx] = cy + r.normal(0, 2, 60)
        out[2, idx] = bw * np.exp(r.normal(0, 0.03, 60))
        out[3, idx] = bh * np.exp(r.normal(0, 0.03, 60))
        out[4 + c, idx] = r.uniform(0.3, 0.95, 60)
    return out[None]


def _independent_yolo(out: np.ndarray, img_hw: tuple[int, int], conf: float, iou: float) -> np.ndarray:
    """Written separately, Ultralytics-style: transpose, threshold, cv2.dnn.NMSBoxesBatched, scale_boxes."""
    pred = out[0].T
    scores_all = pred[:, 4:]
    rows = []
    for i in range(pred.shape[0]):
        c = int(np.argmax(scores_all[i]))
        s = float(scores_all[i, c])
        if s > conf:
            cx, cy, bw, bh = pred[i, :4].tolist()
            rows.append((cx - bw / 2, cy - bh / 2, bw, bh, s, c))
    xywh = [list(r_[:4]) for r_ in rows]
    keep = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, [r_[4] for r_ in rows], [r_[5] for r_ in rows], conf, iou))
    h, w = img_hw
    gain = min(640 / h, 640 / w)
    padx, pady = round((640 - w * gain) / 2 - 0.1), round((640 - h * gain) / 2 - 0.1)
    res = []
    for k in keep.reshape(-1):
        x, y, bw, bh, s, c = rows[k]
        x1, y1 = (x - padx) / gain, (y - pady) / gain
        x2, y2 = (x + bw - padx) / gain, (y + bh - pady) / gain
        res.append((min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h), s, c))
    return np.array(sorted(res, key=lambda t: -t[4]), np.float64)


def test_yolo_anchor_free_on_real_image_matches_independent() -> None:
    img = real_image()
    hw = img.shape[:2]
    objects = [(120, 40, 330, 290, 15), (10, 10, 90, 120, 0), (300, 150, 440, 295, 15), (200, 100, 260, 180, 2)]
    out = _yolov8_head(hw, objects)
    pre = Preprocessor(Preprocess(input="images", size=(640, 640)))
    _, geo = pre(img)
    post = Postprocessor(Postprocess(kind="yolo", output="output0", num_classes=80, conf_threshold=0.25,
                                     iou_threshold=0.45), ["output0"])
    pred = post({"output0": out}, geo)
    ref = _independent_yolo(out, hw, 0.25, 0.45)
    ours = np.array([(*d.box, d.score, d.class_id) for d in pred.detections])
    assert pred.source_size == hw
    assert len(ours) == len(ref) >= len(objects)
    np.testing.assert_allclose(ours[:, 4:], ref[:, 4:], atol=1e-6)  # same boxes kept, same order
    np.testing.assert_allclose(ours[:, :4], ref[:, :4], atol=1.0)  # scale-back within a pixel
    # and the best box of each object lands on it in the source image
    for x1, y1, x2, y2, c in objects:
        best = max((d for d in pred.detections if d.class_id == c),
                   key=lambda d: _iou(d.box, (x1, y1, x2, y2)))
        assert _iou(best.box, (x1, y1, x2, y2)) > 0.85


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_yolo_anchor_based_raw_grids_match_loop_decode() -> None:
    r = np.random.default_rng(5)
    nc, strides = 3, (8, 16)
    anchors = ((10, 13, 16, 30), (30, 61, 62, 45))
    outs = [r.normal(0, 2, (1, 2 * (5 + nc), 64 // s, 64 // s)).astype(np.float32) for s in strides]
    rows = decode_raw_anchor_grids(outs, nc, strides, anchors)
    sig = lambda v: 1 / (1 + np.exp(-v))
    k = 0
    for o, s, anc in zip(outs, strides, anchors):
        o5 = o.reshape(2, 5 + nc, o.shape[2], o.shape[3])
        for a in range(2):
            for y in range(o.shape[2]):
                for x in range(o.shape[3]):
                    t = sig(o5[a, :, y, x].astype(np.float64))
                    exp = [(t[0] * 2 - 0.5 + x) * s, (t[1] * 2 - 0.5 + y) * s, (t[2] * 2) ** 2 * anc[2 * a],
                           (t[3] * 2) ** 2 * anc[2 * a + 1], *t[4:]]
                    np.testing.assert_allclose(rows[k], exp, rtol=1e-5, atol=1e-4)
                    k += 1
    boxes, scores, _ = decode_anchor_based(rows, 0.25)
    ok = rows[:, 4] > 0.25
    prod = rows[ok, 5:] * rows[ok, 4:5]
    assert np.allclose(np.sort(scores), np.sort(prod.max(1)[prod.max(1) > 0.25]))
    post = Postprocessor(Postprocess(kind="yolo", head="anchor-based", num_classes=nc, strides=strides,
                                     anchors=anchors, class_agnostic=True), ["p3", "p4"])
    pred = post({"p3": outs[0], "p4": outs[1]})
    assert len(pred.detections) == len(nms(boxes, scores, 0.45))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_opencv_and_numpy_normalise_agree(layout: str) -> None:
    """Per-channel mean/std and RGB swap: the OpenCV path (blobFromImageWithParams) against plain numpy."""
    lb = np.random.default_rng(2).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    spec = Preprocess(input="x", size=(32, 48), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=layout)
    a = Preprocessor(spec, backend="opencv").normalize(lb)
    b = Preprocessor(spec, backend="numpy").normalize(lb)
    rgb = lb[:, :, ::-1].astype(np.float64) / 255
    ref = (rgb - np.array(spec.mean)) / np.array(spec.std)
    ref = ref.transpose(2, 0, 1)[None] if layout == "NCHW" else ref[None]
    np.testing.assert_allclose(a, ref, atol=1e-5)
    np.testing.assert_allclose(b, ref, atol=1e-5)


def test_a_grey_model_takes_the_luma_of_a_colour_photo():
    """A one-channel model (an OCR recogniser): default mean/std of one value, and a BGR photo becomes its luma, the
    same on OpenCV and on numpy (within 1 of 255: OpenCV computes it in fixed point)."""
    import numpy as np

    from edgesdk.preprocess_config import make_preprocess
    from edgesdk.runtime.preprocess import Preprocessor, to_grey

    pre = make_preprocess("x", (1, 1, 32, 96))
    assert list(pre.mean) == [0.0] and list(pre.std) == [1.0]
    img = np.random.default_rng(0).integers(0, 256, (40, 120, 3), dtype=np.uint8)
    a, _ = Preprocessor(pre, "auto")(img)
    b, _ = Preprocessor(pre, "numpy")(img)
    assert a.shape == b.shape == (1, 1, 32, 96)
    assert float(np.abs(a - b).max()) <= 1.5 / 255
    g = to_grey(img, "numpy")[:, :, 0].astype(np.float64)
    want = 0.114 * img[:, :, 0] + 0.587 * img[:, :, 1] + 0.299 * img[:, :, 2]
    assert np.abs(g - want).max() <= 0.5 + 1e-6

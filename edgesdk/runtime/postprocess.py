"""Post-processing declared in the manifest: softmax/top-k, YOLO box decoding, NMS, scale-back.

All numpy, vectorised; NMS follows cv2.dnn.NMSBoxes exactly (scores strictly above the
threshold, stable descending order, a box is dropped when its IoU with a kept box is above
the IoU threshold, areas without the +1), so both keep the same boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgesdk.runtime.errors import BundleError, EngineFailure
from edgesdk.runtime.manifest import Postprocess
from edgesdk.runtime.results import Classification, Detection, Prediction


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indexes of the k highest scores, highest first (ties: lower index first)."""
    s = np.asarray(scores).reshape(-1)
    k = min(k, s.size)
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    idx = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    return idx[np.lexsort((idx, -s[idx]))]


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, score_threshold: float = -np.inf,
        class_ids: np.ndarray | None = None, max_det: int = 0) -> np.ndarray:
    """Greedy NMS on (N, 4) x1, y1, x2, y2 boxes. Returns kept indexes, highest score first.

    class_ids: class-aware NMS (boxes of different classes never suppress each other), done in
    one pass by offsetting each class's boxes by class_id * (largest coordinate + 1).
    max_det: stop after that many boxes (0: no limit).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    cand = np.flatnonzero(scores > score_threshold) if np.isfinite(score_threshold) else np.arange(scores.size)
    if cand.size == 0:
        return cand.astype(np.int64)
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    b = boxes[cand]
    if class_ids is not None:
        off = (np.asarray(class_ids)[cand].astype(np.float32) * (float(np.abs(b).max()) + 1.0))[:, None]
        b = b + off
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    limit = max_det if max_det > 0 else cand.size
    keep: list[int] = []
    rest = np.arange(cand.size)
    while rest.size:
        i = rest[0]
        keep.append(i)
        if len(keep) >= limit:
            break
        r = rest[1:]
        w = np.minimum(x2[i], x2[r]) - np.maximum(x1[i], x1[r])
        h = np.minimum(y2[i], y2[r]) - np.maximum(y1[i], y1[r])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        union = areas[i] + areas[r] - inter
        # IoU <= thr  <=>  inter <= thr * union  (no division; union 0 only for empty boxes)
        rest = r[inter <= iou_threshold * union]
    return cand[np.asarray(keep, dtype=np.int64)]


# -- YOLO heads ----------------------------------------------------------------------------------
def decode_anchor_free(out: np.ndarray, num_classes: int | None, conf_threshold: float) -> tuple[np.ndarray, ...]:
    """YOLOv8-style head: (1, 4 + C, N) or (1, N, 4 + C); cx, cy, w, h in input pixels, class scores.

    Returns (boxes xyxy (M, 4), scores (M,), class_ids (M,)) for candidates above conf_threshold.
    """
    a = out[0] if out.ndim == 3 else out
    if num_classes is not None:
        transposed = a.shape[0] == 4 + num_classes and a.shape[1] != 4 + num_classes
    else:
        transposed = a.shape[0] < a.shape[1]
    if transposed:
        a = a.T
    if a.shape[1] < 5 or (num_classes is not None and a.shape[1] != 4 + num_classes):
        raise EngineFailure(f"yolo anchor-free: output of shape {out.shape} is not (1, 4+C, N) "
                            f"with C={num_classes}")
    cls = a[:, 4:]
    class_ids = cls.argmax(axis=1)
    scores = cls[np.arange(cls.shape[0]), class_ids]
    m = scores > conf_threshold
    return xywh_to_xyxy(a[m, :4].astype(np.float32)), scores[m].astype(np.float32), class_ids[m]


def decode_raw_anchor_grids(outs: Sequence[np.ndarray], num_classes: int, strides: Sequence[int],
                            anchors: Sequence[Sequence[float]]) -> np.ndarray:
    """YOLOv5 raw head outputs, one per stride, (1, na*(5+C), H, W) or (1, na, H, W, 5+C), logits ->
    (N, 5 + C) rows of cx, cy, w, h (input pixels), objectness, class scores (sigmoid applied).

    xy = (2 * sigmoid(t) - 0.5 + grid) * stride; wh = (2 * sigmoid(t)) ** 2 * anchor.
    """
    if len(outs) != len(strides) or len(anchors) != len(strides):
        raise BundleError(f"yolo anchor-based: {len(outs)} outputs, {len(strides)} strides and {len(anchors)} "
                          "anchor sets must match")
    no = 5 + num_classes
    rows = []
    for o, stride, anc in zip(outs, strides, anchors):
        na = len(anc) // 2
        if o.ndim == 4:  # (1, na*no, H, W)
            _, ch, h, w = o.shape
            if ch != na * no:
                raise EngineFailure(f"yolo anchor-based: output {o.shape} has {ch} channels, expected {na}*{no}")
            o = o.reshape(1, na, no, h, w).transpose(0, 1, 3, 4, 2)
        _, na_, h, w, _ = o.shape
        p = sigmoid(o[0].astype(np.float32))  # (na, H, W, no)
        gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
        grid = np.stack([gx, gy], axis=-1)[None]  # (1, H, W, 2)
        ag = np.asarray(anc, dtype=np.float32).reshape(na_, 1, 1, 2)
        xy = (p[..., :2] * 2 - 0.5 + grid) * stride
        wh = (p[..., 2:4] * 2) ** 2 * ag
        rows.append(np.concatenate([xy, wh, p[..., 4:]], axis=-1).reshape(-1, no))
    return np.concatenate(rows, axis=0)


def decode_anchor_based(rows: np.ndarray, conf_threshold: float) -> tuple[np.ndarray, ...]:
    """YOLOv5 decoded rows (N, 5 + C): cx, cy, w, h, objectness, class scores. Score = obj * class."""
    a = rows[0] if rows.ndim == 3 else rows
    obj = a[:, 4]
    a = a[obj > conf_threshold]
    cls = a[:, 5:] * a[:, 4:5]
    class_ids = cls.argmax(axis=1)
    scores = cls[np.arange(cls.shape[0]), class_ids]
    m = scores > conf_threshold
    return xywh_to_xyxy(a[m, :4].astype(np.float32)), scores[m].astype(np.float32), class_ids[m]


class Postprocessor:
    """Callable: (outputs, Geometry or None) -> Prediction."""

    def __init__(self, spec: Postprocess | None, output_names: Sequence[str]) -> None:
        self.spec = spec or Postprocess(kind="none")
        self.names = list(output_names)
        s = self.spec
        if s.output is not None and s.output not in self.names:
            raise BundleError(f"postprocess.output: {s.output!r} is not a model output ({self.names})")
        if s.kind == "yolo" and s.head == "anchor-based" and s.anchors and s.num_classes is None:
            raise BundleError("postprocess: anchor-based raw heads need num_classes")

    def _label(self, i: int) -> str | None:
        labels = self.spec.labels
        return labels[i] if 0 <= i < len(labels) else None

    def __call__(self, outputs: Mapping[str, np.ndarray], geometry: Any = None) -> Prediction:
        s = self.spec
        src = (geometry.src_h, geometry.src_w) if geometry is not None else None
        if s.kind == "classification":
            x = np.asarray(outputs[s.output or self.names[0]], dtype=np.float32).reshape(-1)
            p = softmax(x) if s.softmax else x
            idx = top_k(p, s.top_k)
            cls = tuple(Classification(int(i), float(p[i]), self._label(int(i))) for i in idx)
            return Prediction("classification", classifications=cls, outputs=dict(outputs), source_size=src)
        if s.kind == "yolo":
            boxes, scores, class_ids = self.decode(outputs)
            keep = nms(boxes, scores, s.iou_threshold, class_ids=None if s.class_agnostic else class_ids,
                       max_det=s.max_det)
            b = boxes[keep]
            if geometry is not None:
                b = geometry.to_source(b)
            dets = tuple(Detection(float(x1), float(y1), float(x2), float(y2), float(sc), int(c), self._label(int(c)))
                         for (x1, y1, x2, y2), sc, c in zip(b.tolist(), scores[keep], class_ids[keep]))
            return Prediction("yolo", detections=dets, outputs=dict(outputs), source_size=src)
        return Prediction("none", outputs=dict(outputs), source_size=src)

    def decode(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.spec
        if s.head == "anchor-free":
            return decode_anchor_free(np.asarray(outputs[s.output or self.names[0]]), s.num_classes,
                                      s.conf_threshold)
        if s.anchors:  # raw per-stride grids
            names = [s.output] if s.output else self.names
            rows = decode_raw_anchor_grids([np.asarray(outputs[n]) for n in names], s.num_classes or 0, s.strides,
                                           s.anchors)
        else:  # the export already decoded the grids (YOLOv5's Detect layer): (1, N, 5 + C)
            rows = np.asarray(outputs[s.output or self.names[0]])
        return decode_anchor_based(rows, s.conf_threshold)


__all__ = ["Postprocessor", "decode_anchor_based", "decode_anchor_free", "decode_raw_anchor_grids", "nms",
           "sigmoid", "softmax", "top_k", "xywh_to_xyxy"]

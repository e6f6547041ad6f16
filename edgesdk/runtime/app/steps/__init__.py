"""The built-in app steps, by the name app.yaml gives them (``step: letterbox``). numpy only: they run on the board,
and the host's reference run uses the very same code, so a stage's reference outputs are what the board must give.

    letterbox         image -> tensor, meta         resize (keep ratio, pad), colour order, normalise, layout
    resize            image -> tensor, meta         letterbox without keeping the ratio
    crop              image, boxes -> crops         axis-aligned crops (a list)
    perspective_crop  image, quads -> crops         rotated boxes cut out and made upright (a list)
    orient            image, probs -> image, angle  turn a crop by 180 degrees when a direction classifier says so
    db_boxes          map, meta -> quads, scores    DB text-detector map -> rotated boxes in source pixels
    sort              boxes[, scores] -> boxes, scores, order   reading order (top to bottom, left to right)
    ctc_decode        logits -> text, score         CTC greedy decoding over a character list (a file of the app)
    decode_yolo       output, meta -> boxes, scores, classes    YOLO heads (anchor-free / objectness) + NMS
    nms               boxes, scores[, classes] -> boxes, scores, classes, keep
    tracker           boxes, scores[, classes] -> tracks, ids, classes, scores   SORT: Kalman filter + IoU matching
"""

from __future__ import annotations

import importlib

from edgesdk.runtime.app.steps.base import AppError, Params, Step, Value, as_array

_BUILTIN: dict[str, tuple[str, str]] = {
    "letterbox": ("image", "Letterbox"),
    "resize": ("image", "Resize"),
    "crop": ("image", "Crop"),
    "perspective_crop": ("image", "PerspectiveCrop"),
    "orient": ("image", "Orient"),
    "db_boxes": ("text", "DbBoxes"),
    "sort": ("text", "SortBoxes"),
    "ctc_decode": ("text", "CtcDecode"),
    "decode_yolo": ("detect", "DecodeYolo"),
    "nms": ("detect", "Nms"),
    "tracker": ("detect", "SortTracker"),
}


def builtin_kinds() -> tuple[str, ...]:
    return tuple(_BUILTIN)


def builtin(kind: str, where: str = "step") -> type[Step]:
    """The class of a built-in step; AppError naming the known ones for an unknown name."""
    if kind not in _BUILTIN:
        raise AppError(f"{where}: unknown step {kind!r} (built-in steps: {', '.join(_BUILTIN)}; or `custom` with "
                       "a function of a module the app ships)")
    mod, cls = _BUILTIN[kind]
    return getattr(importlib.import_module(f"edgesdk.runtime.app.steps.{mod}"), cls)


__all__ = ["AppError", "Params", "Step", "Value", "as_array", "builtin", "builtin_kinds"]

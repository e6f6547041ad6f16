"""Task-level agreement of a bundle with its fp32 model on real images, without labels.

The fp32 model's own outputs on each image are the reference ("ground truth"); the bundle's outputs on the
same preprocessed image are judged against them with the metric of the model's task:

- detect (a yolo postprocess): both outputs go through the bundle's own decode + NMS
  (edgesdk.runtime.postprocess, what the board runs, at the postprocess's conf/IoU thresholds). mAP@0.5:
  the fp32 boxes are the ground truth, class-aware; per class that has at least one reference box in the
  whole set, the bundle's boxes of that class from every image are ranked by score, each one is a true
  positive when it has IoU >= 0.5 with a still unmatched reference box of its class on the same image
  (the best such box), and the AP is the all-point interpolated area under that precision/recall curve
  (VOC 2010+ / COCO-style); mAP is the mean over those classes. An image with no reference box adds no
  ground truth: a bundle box on it is a false positive of its class (lowering that class's AP when the
  class has reference boxes elsewhere) and always lowers precision. Classes only the bundle detects are
  not in the mean (no AP is defined without ground truth) but count in precision. Also precision,
  recall and F1 of all the bundle's boxes at the decode threshold.
- classify: top-1 agreement (argmax of the bundle's output == argmax of the fp32 output).
- segment: an output [1, C, H, W] (or [1, H, W, C] when H, W are the input's and C is smaller) -> argmax
  over C; C == 1 -> foreground = value > 0.5, after a sigmoid when the fp32 values are not within [0, 1]
  (decided on the reference, the same for both). mIoU: per class, intersection over union of the two masks
  pooled over every image; mean over the classes present in either (C == 1: the foreground's IoU).
- ctc: an output [1, T, C] or [T, 1, C]: greedy CTC decode (argmax per step, repeats merged, blank
  dropped). CER: Levenshtein distance between the bundle's and the fp32 sequences, summed over the images,
  over the total length of the fp32 sequences. With a charset (one character per line, PaddleOCR's
  format: the classes are blank + the lines [+ a space]) the sequences are strings, else class indices.

`parse_target` reads the `--target METRIC=VALUE` of verify (and convert).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import Postprocess

TASKS = ("detect", "classify", "segment", "ctc")
#: The metric each task is judged by, and the metric's long name.
TASK_METRIC = {"detect": "map50", "classify": "top1", "segment": "miou", "ctc": "cer"}
METRIC_NAMES = {"cosine": "cosine", "map50": "mAP@0.5", "top1": "top-1 agreement", "miou": "mIoU",
                "cer": "CER"}
#: Target metrics: "min" = the measured value must be at least the target, "max" = at most.
TARGET_METRICS = {"cosine": "min", "map50": "min", "top1": "min", "miou": "min", "cer": "max"}
#: A detection is a true positive at this IoU with a reference box of its class.
MATCH_IOU = 0.5


# -- targets ------------------------------------------------------------------------------------

def parse_target(text: str, flag: str = "--target") -> tuple[str, float]:
    """`"map50=0.9"` -> `("map50", 0.9)`: a METRIC=VALUE accuracy target (verify --target, convert --target).

    Metrics (TARGET_METRICS): cosine (of the raw outputs, the smallest over outputs and samples), map50, top1,
    miou (task metrics against the fp32 model, all "at least") and cer ("at most"). Values are finite numbers;
    cosine, map50, top1 and miou lie in [0, 1], cer is >= 0. Bad input raises InputError naming `flag`.
    """
    metric, sep, value = str(text).partition("=")
    metric = metric.strip().lower()
    known = ", ".join(TARGET_METRICS)
    if not sep or not metric or not value.strip():
        raise InputError(f"{flag} {text!r}: expected METRIC=VALUE, e.g. map50=0.9 (metrics: {known})")
    if metric not in TARGET_METRICS:
        raise InputError(f"{flag} {text!r}: unknown metric {metric!r}; choose one of {known}")
    try:
        v = float(value)
    except ValueError:
        raise InputError(f"{flag} {text!r}: {value.strip()!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or (metric != "cer" and v > 1):
        bound = ">= 0" if metric == "cer" else "from 0 to 1"
        raise InputError(f"{flag} {text!r}: {metric} must be a number {bound}")
    return metric, v


def meets_target(metric: str, target: float, value: float) -> bool:
    """Whether a measured `value` of `metric` meets `target` (at least, or at most for cer)."""
    return value <= target if TARGET_METRICS[metric] == "max" else value >= target


# -- detection ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Detections:
    """One image's boxes after decode + NMS: xyxy (N, 4), scores (N,), class ids (N,)."""

    boxes: Any
    scores: Any
    class_ids: Any

    @classmethod
    def of(cls, prediction: Any) -> Detections:
        """From a runtime Prediction (Postprocessor's result)."""
        import numpy as np

        d = prediction.detections
        return cls(np.asarray([x.box for x in d], np.float64).reshape(-1, 4),
                   np.asarray([x.score for x in d], np.float64), np.asarray([x.class_id for x in d], np.int64))


@dataclass(frozen=True)
class DetectionMetrics:
    map50: float | None  # None: no reference box at all
    precision: float | None  # None: the bundle detected nothing
    recall: float | None  # None: no reference box
    f1: float | None
    ap_per_class: dict[int, float]
    reference_boxes: int
    bundle_boxes: int
    true_positives: int
    images_without_reference: int

    def to_dict(self) -> dict[str, Any]:
        return {"map50": self.map50, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "ap_per_class": {str(k): v for k, v in self.ap_per_class.items()},
                "reference_boxes": self.reference_boxes, "bundle_boxes": self.bundle_boxes,
                "true_positives": self.true_positives, "images_without_reference": self.images_without_reference}


def box_iou(a: Any, b: Any) -> Any:
    """IoU of every box of a (N, 4) with every box of b (M, 4), x1 y1 x2 y2 -> (N, M)."""
    import numpy as np

    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a, area_b = (np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1) for x in (a, b))
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(recall: Sequence[float], precision: Sequence[float]) -> float:
    """All-point interpolated AP: the area under the precision envelope (precision made non-increasing
    from the right) over recall, the curve given in rank order."""
    import numpy as np

    r = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
    p = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    i = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[i + 1] - r[i]) * p[i + 1]))


def detection_metrics(got: Sequence[Detections], ref: Sequence[Detections],
                      iou_threshold: float = MATCH_IOU) -> DetectionMetrics:
    """mAP@iou_threshold and precision/recall/F1 of the bundle's detections `got[i]` against the reference
    detections `ref[i]` of the same image (the module docstring says how each case counts)."""
    import numpy as np

    if len(got) != len(ref):
        raise ValueError(f"detection_metrics: {len(got)} images of detections against {len(ref)}")
    ranked: dict[int, list[tuple[float, bool]]] = {}
    n_ref: dict[int, int] = {}
    tp_total = n_got = n_refs = empty = 0
    for g, r in zip(got, ref):
        g_cls, r_cls = np.asarray(g.class_ids).reshape(-1), np.asarray(r.class_ids).reshape(-1)
        n_got += g_cls.size
        n_refs += r_cls.size
        empty += int(r_cls.size == 0)
        for c in set(r_cls.tolist()):
            n_ref[c] = n_ref.get(c, 0) + int(np.count_nonzero(r_cls == c))
        for c in set(g_cls.tolist()):
            gi = np.flatnonzero(g_cls == c)
            gi = gi[np.argsort(-np.asarray(g.scores)[gi], kind="stable")]
            ri = np.flatnonzero(r_cls == c)
            ious = box_iou(np.asarray(g.boxes)[gi], np.asarray(r.boxes)[ri])
            free = np.ones(ri.size, bool)
            for k, row in enumerate(ious):
                cand = np.flatnonzero(free & (row >= iou_threshold))
                hit = cand.size > 0
                if hit:
                    free[cand[np.argmax(row[cand])]] = False
                tp_total += int(hit)
                ranked.setdefault(c, []).append((float(np.asarray(g.scores)[gi[k]]), hit))
    aps: dict[int, float] = {}
    for c in sorted(n_ref):
        rows = sorted(ranked.get(c, []), key=lambda x: -x[0])  # stable: equal scores keep image order
        hits = np.asarray([h for _, h in rows], np.float64)
        tp = np.cumsum(hits)
        fp = np.cumsum(1.0 - hits)
        aps[c] = average_precision(tp / n_ref[c], tp / np.maximum(tp + fp, 1e-12)) if rows else 0.0
    precision = tp_total / n_got if n_got else None
    recall = tp_total / n_refs if n_refs else None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    else:
        f1 = 0.0 if n_refs else None  # nothing detected against real boxes: F1 0; nothing to find: undefined
    return DetectionMetrics(float(np.mean(list(aps.values()))) if aps else None, precision, recall, f1, aps,
                            n_refs, n_got, tp_total, empty)


# -- classification, segmentation ---------------------------------------------------------------

def top1_agreement(got: Sequence[Any], ref: Sequence[Any]) -> float:
    """Share of samples whose argmax (over the flattened output) is the same in `got` and `ref`."""
    import numpy as np

    if not ref or len(got) != len(ref):
        raise ValueError(f"top1_agreement: {len(got)} outputs against {len(ref)}")
    return float(np.mean([int(np.argmax(np.asarray(g).reshape(-1))) == int(np.argmax(np.asarray(r).reshape(-1)))
                          for g, r in zip(got, ref)]))


def seg_mask(x: Any, channels_last: bool = False, probabilities: bool = True) -> Any:
    """A segmentation output with a batch axis of 1 -> (H, W) class ids: argmax over C, or for C == 1
    foreground (1) where the value, after a sigmoid unless `probabilities`, is above 0.5."""
    import numpy as np

    a = np.asarray(x, np.float64)[0]
    if channels_last:
        a = np.moveaxis(a, -1, 0)
    if a.shape[0] == 1:
        v = a[0] if probabilities else 1.0 / (1.0 + np.exp(-a[0]))
        return (v > 0.5).astype(np.int64)
    return a.argmax(axis=0)


def mean_iou(got: Sequence[Any], ref: Sequence[Any], binary: bool = False) -> tuple[float | None, dict[int, float]]:
    """mIoU of class-id masks `got[i]` against `ref[i]`, intersections and unions pooled over the images, mean
    over the classes present in either; binary (C == 1 masks): class 1's IoU only. None when no class counts."""
    import numpy as np

    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    for g0, r0 in zip(got, ref):
        g, r = np.asarray(g0), np.asarray(r0)
        if g.shape != r.shape:
            raise ValueError(f"mean_iou: mask {list(g.shape)} against {list(r.shape)}")
        for c in np.union1d(np.unique(g), np.unique(r)).tolist():
            gc, rc = g == c, r == c
            inter[c] = inter.get(c, 0) + int(np.count_nonzero(gc & rc))
            union[c] = union.get(c, 0) + int(np.count_nonzero(gc | rc))
    ious = {c: inter[c] / union[c] for c in sorted(union) if union[c] and (not binary or c == 1)}
    return (float(np.mean(list(ious.values()))) if ious else None), ious


# -- CTC recognisers ------------------------------------------------------------------------------

def ctc_greedy(x: Any, blank: int = 0) -> list[int]:
    """Greedy CTC decode of one output [1, T, C] or [T, 1, C]: argmax per step, repeats merged, blanks dropped."""
    import numpy as np

    a = np.asarray(x)
    if a.ndim != 3 or 1 not in a.shape[:2]:
        raise ValueError(f"ctc_greedy: expected [1, T, C] or [T, 1, C], got {list(a.shape)}")
    steps = a.reshape(-1, a.shape[2]).argmax(axis=1)
    out: list[int] = []
    prev = None
    for s in steps.tolist():
        if s != prev and s != blank:
            out.append(int(s))
        prev = s
    return out


def load_charset(path: str | Path) -> tuple[str, ...]:
    """A character list, one character per line (PaddleOCR's ppocr_keys format; a line may be a space)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--charset {p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"--charset {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    chars = tuple(line.rstrip("\r") for line in text.split("\n"))
    if chars and chars[-1] == "":
        chars = chars[:-1]  # the final newline
    if not chars:
        raise InputError(f"--charset {p}: empty; expected one character per line")
    return chars


def class_chars(charset: Sequence[str], num_classes: int, blank: int, where: str) -> list[str | None]:
    """The text of each output class: the charset fills the non-blank classes in order; a class count of
    len(charset) + 2 adds a final space (PaddleOCR's use_space_char). InputError when the counts do not fit."""
    n = len(charset)
    if num_classes not in (n + 1, n + 2):
        raise InputError(f"{where}: the charset has {n} characters and the output {num_classes} classes: expected "
                         f"{num_classes - 1} (blank + characters) or {num_classes - 2} (PaddleOCR: blank + "
                         "characters + space)")
    chars = list(charset) + ([" "] if num_classes == n + 2 else [])
    out: list[str | None] = []
    it = iter(chars)
    for i in range(num_classes):
        out.append(None if i == blank else next(it))
    return out


def levenshtein(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Edit distance (insertions, deletions, substitutions of one element) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def cer(got: Sequence[Sequence[Any]], ref: Sequence[Sequence[Any]]) -> float | None:
    """Character error rate: summed edit distances over the summed reference lengths; None when every
    reference is empty."""
    total = sum(len(r) for r in ref)
    if total == 0:
        return None
    return sum(levenshtein(g, r) for g, r in zip(got, ref)) / total


# -- which task each output has -------------------------------------------------------------------

@dataclass(frozen=True)
class TaskPlan:
    """One task metric to compute: on which outputs, and what decided it (for the report)."""

    task: str
    outputs: tuple[str, ...]
    decided_by: str  # "manifest postprocess" | "--postprocess FILE" | "--task" | "output shape"
    channels_last: bool = False  # segment: [1, H, W, C]


def load_postprocess(path: str | Path, output_names: Sequence[str]) -> Postprocess:
    """A yolo or classification postprocess from a YAML file (the manifest's own fields and parser), checked
    against the bundle's outputs; InputError naming the file and the field."""
    import yaml

    from edgesdk.runtime.errors import BundleError
    from edgesdk.runtime.manifest import _Reader
    from edgesdk.runtime.postprocess import Postprocessor

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--postprocess {p}: cannot read: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"--postprocess {p}: not valid YAML: {exc}") from exc
    try:
        spec = Postprocess.parse(_Reader(raw, str(p)))
        if spec.kind not in ("yolo", "classification"):
            raise BundleError(f"{p}: field kind: {spec.kind!r} gives no task metric; use yolo or classification")
        Postprocessor(spec, output_names)
    except BundleError as exc:
        msg = str(exc)
        raise InputError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from exc
    return spec


def _segment_layout(shape: Sequence[int], input_hw: tuple[int, int] | None) -> tuple[bool, bool] | None:
    """(channels_last, same size as the input) of a 4-D batch-1 output, or None when it is not one."""
    if len(shape) != 4 or shape[0] != 1:
        return None
    last = input_hw is not None and tuple(shape[1:3]) == tuple(input_hw) and shape[3] < shape[1]
    hw = tuple(shape[1:3]) if last else tuple(shape[2:4])
    return last, input_hw is not None and hw == tuple(input_hw)


def _fits(task: str, shape: Sequence[int]) -> bool:
    if task == "classify":
        return len(shape) == 2 and shape[0] == 1 and shape[1] > 1
    if task == "segment":
        return len(shape) == 4 and shape[0] == 1
    if task == "ctc":
        return len(shape) == 3 and (shape[0] == 1 or shape[1] == 1) and shape[2] > 1
    return False


def plan_tasks(outputs: Sequence[Any], input_hw: tuple[int, int] | None, postprocess: Postprocess | None,
               postprocess_from: str, task: str | None) -> tuple[list[TaskPlan], list[str]]:
    """The task metric of each output (TensorSpec-like: name, shape): the postprocess decides the outputs it
    decodes, then `task` (verify --task), then the output's shape ([1, C]: classify; 4-D at the input's height
    and width: segment). Returns the plans and notes saying what was inferred, ignored or left out."""
    if task is not None and task not in TASKS:
        raise InputError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    names = [o.name for o in outputs]
    shapes = {o.name: tuple(o.shape) for o in outputs}
    plans: list[TaskPlan] = []
    notes: list[str] = []
    covered: set[str] = set()
    if postprocess is not None and postprocess.kind in ("yolo", "classification"):
        if postprocess.kind == "yolo":
            outs = ([postprocess.output] if postprocess.output else
                    names if postprocess.head == "anchor-based" and postprocess.anchors else names[:1])
            plans.append(TaskPlan("detect", tuple(outs), postprocess_from))
        else:
            outs = [postprocess.output or names[0]]
            plans.append(TaskPlan("classify", tuple(outs), postprocess_from))
        covered |= set(outs)
        if task is not None and task != plans[0].task:
            notes.append(f"--task {task} does not apply to {', '.join(outs)}: the {postprocess_from} "
                         f"({postprocess.kind}) decides it")
    if task == "detect" and not any(p.task == "detect" for p in plans):
        raise InputError("--task detect needs the model's decoder: the manifest declares no yolo postprocess; "
                         "give one with --postprocess FILE.yaml (kind: yolo, head, num_classes, ...)")
    for n in names:
        if n in covered:
            continue
        shape = shapes[n]
        seg = _segment_layout(shape, input_hw)
        if task is not None and task != "detect" and _fits(task, shape):
            plans.append(TaskPlan(task, (n,), "--task", bool(seg and seg[0]) if task == "segment" else False))
        elif task is not None and task != "detect":
            notes.append(f"output {n} {list(shape)} does not fit --task {task}: tensor metrics only")
        elif task is None and _fits("classify", shape):
            plans.append(TaskPlan("classify", (n,), "output shape"))
            notes.append(f"output {n} {list(shape)}: task inferred from its shape: classify (top-1 agreement)")
        elif task is None and seg is not None and seg[1]:
            plans.append(TaskPlan("segment", (n,), "output shape", seg[0]))
            notes.append(f"output {n} {list(shape)}: task inferred from its shape: segment (mIoU; the input's "
                         f"height and width{', channels last' if seg[0] else ''})")
        elif task is None:
            notes.append(f"output {n} {list(shape)}: no task metric (no postprocess decodes it and its shape is "
                         "neither [1, C] nor a map at the input's size); tensor metrics only. Give --task "
                         f"{'|'.join(TASKS)} or --postprocess FILE.yaml")
    return plans, notes


# -- evaluation -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskResult:
    """One task metric over the evaluation images: `value` is the task's metric (TASK_METRIC), None when the
    reference gives nothing to judge (e.g. no fp32 detection at all); `metrics` holds the details."""

    task: str
    outputs: tuple[str, ...]
    decided_by: str
    metric: str
    value: float | None
    metrics: dict[str, Any]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "outputs": list(self.outputs), "decided_by": self.decided_by,
                "metric": self.metric, "value": self.value, "metrics": self.metrics, "notes": list(self.notes)}


@dataclass(frozen=True)
class EvalSummary:
    """verify --eval: the images, and the task metric of each output against the fp32 model."""

    directory: Path
    images: int
    tasks: tuple[TaskResult, ...]
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.directory), "images": self.images,
                "reference": "the fp32 model's own outputs on the same images (no labels)",
                "tasks": [t.to_dict() for t in self.tasks], "notes": list(self.notes)}

    def value(self, metric: str) -> list[TaskResult]:
        """The task results judged by `metric`."""
        return [t for t in self.tasks if t.metric == metric]


def _detect(plan: TaskPlan, got: Sequence[Mapping[str, Any]], ref: Sequence[Mapping[str, Any]],
            post: Postprocess, output_names: Sequence[str]) -> TaskResult:
    from edgesdk.runtime.postprocess import Postprocessor

    pp = Postprocessor(post, output_names)
    m = detection_metrics([Detections.of(pp(g)) for g in got], [Detections.of(pp(r)) for r in ref])
    notes = []
    if m.map50 is None:
        notes.append(f"the fp32 model detects nothing on these {len(ref)} image(s) at conf > "
                     f"{post.conf_threshold:g}: mAP@0.5 is undefined; evaluate on images with objects it detects")
    elif m.images_without_reference:
        notes.append(f"{m.images_without_reference} of {len(ref)} image(s) have no fp32 detection: they add no "
                     "ground truth; bundle boxes on them are false positives")
    d = {**m.to_dict(), "conf_threshold": post.conf_threshold, "iou_threshold": post.iou_threshold,
         "match_iou": MATCH_IOU}
    return TaskResult("detect", plan.outputs, plan.decided_by, "map50", m.map50, d, tuple(notes))


def _segment(plan: TaskPlan, got: Sequence[Any], ref: Sequence[Any]) -> TaskResult:
    import numpy as np

    shape = np.asarray(ref[0]).shape
    channels = shape[-1] if plan.channels_last else shape[1]
    probs = all(float(np.min(r)) >= 0 and float(np.max(r)) <= 1 for r in ref)
    gm = [seg_mask(g, plan.channels_last, probs) for g in got]
    rm = [seg_mask(r, plan.channels_last, probs) for r in ref]
    miou, per = mean_iou(gm, rm, binary=channels == 1)
    agree = float(np.mean([np.mean(g == r) for g, r in zip(gm, rm)]))
    notes = []
    if channels == 1:
        notes.append("one channel: foreground = " + ("value > 0.5" if probs else "sigmoid(value) > 0.5 (the fp32 "
                                                     "values are not within [0, 1])") + "; mIoU is its IoU")
    if miou is None:
        notes.append("neither mask has a foreground pixel on any image: mIoU is undefined")
    d = {"miou": miou, "iou_per_class": {str(k): v for k, v in per.items()}, "pixel_agreement": agree,
         "classes": int(channels)}
    return TaskResult("segment", plan.outputs, plan.decided_by, "miou", miou, d, tuple(notes))


def _ctc(plan: TaskPlan, got: Sequence[Any], ref: Sequence[Any], charset: Sequence[str] | None,
         charset_name: str | None, blank: int) -> TaskResult:
    import numpy as np

    classes = int(np.asarray(ref[0]).shape[2])
    if not 0 <= blank < classes:
        raise InputError(f"--blank {blank}: output {plan.outputs[0]} has {classes} classes (0..{classes - 1})")
    g_idx = [ctc_greedy(g, blank) for g in got]
    r_idx = [ctc_greedy(r, blank) for r in ref]
    d: dict[str, Any] = {"blank": blank, "classes": classes}
    if charset is not None:
        table = class_chars(charset, classes, blank, f"--charset {charset_name}")
        g_seq: list[Any] = ["".join(table[i] or "" for i in s) for s in g_idx]
        r_seq: list[Any] = ["".join(table[i] or "" for i in s) for s in r_idx]
        d["bundle_text"], d["reference_text"] = g_seq, r_seq
        unit = "characters"
    else:
        g_seq, r_seq = g_idx, r_idx
        unit = "class indices (no --charset)"
    value = cer(g_seq, r_seq)
    d.update(cer=value, exact=float(np.mean([a == b for a, b in zip(g_seq, r_seq)])), compared=unit,
             reference_length=sum(len(r) for r in r_seq))
    notes = [] if value is not None else ["the fp32 model reads nothing on any image: CER is undefined"]
    return TaskResult("ctc", plan.outputs, plan.decided_by, "cer", value, d, tuple(notes))


def evaluate(plans: Sequence[TaskPlan], got: Sequence[Mapping[str, Any]], ref: Sequence[Mapping[str, Any]],
             postprocess: Postprocess | None, output_names: Sequence[str], charset: Sequence[str] | None = None,
             charset_name: str | None = None, blank: int = 0) -> list[TaskResult]:
    """Each plan's task metric: the bundle's outputs `got[i]` against the fp32 outputs `ref[i]` (image i)."""
    results = []
    for p in plans:
        name = p.outputs[0]
        if p.task == "detect":
            assert postprocess is not None  # plan_tasks plans detect only from a yolo postprocess
            results.append(_detect(p, got, ref, postprocess, output_names))
        elif p.task == "classify":
            v = top1_agreement([g[name] for g in got], [r[name] for r in ref])
            results.append(TaskResult("classify", p.outputs, p.decided_by, "top1", v, {"top1": v}))
        elif p.task == "segment":
            results.append(_segment(p, [g[name] for g in got], [r[name] for r in ref]))
        else:
            results.append(_ctc(p, [g[name] for g in got], [r[name] for r in ref], charset, charset_name, blank))
    return results


__all__ = ["MATCH_IOU", "METRIC_NAMES", "TARGET_METRICS", "TASKS", "TASK_METRIC", "DetectionMetrics", "Detections",
           "EvalSummary", "TaskPlan", "TaskResult", "average_precision", "box_iou", "cer", "class_chars",
           "ctc_greedy", "detection_metrics", "evaluate", "levenshtein", "load_charset", "load_postprocess",
           "mean_iou", "meets_target", "parse_target", "plan_tasks", "seg_mask", "top1_agreement"]

"""Typed results of Session.predict and Pipeline: frozen dataclasses, no tuples by position."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Classification:
    class_id: int
    score: float
    label: str | None = None


@dataclass(frozen=True)
class Detection:
    """One box in source-image pixels: (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int
    label: str | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


@dataclass(frozen=True)
class EngineUse:
    """Which engine ran a segment, and whether that was the plan or an explicit CPU fallback."""

    segment: str
    engine: str
    planned: str
    fallback: bool = False
    reason: str | None = None
    version: str = ""

    def __str__(self) -> str:
        if self.fallback:
            return f"{self.segment}: {self.engine} (CPU fallback for {self.planned}: {self.reason})"
        return f"{self.segment}: {self.engine}"


@dataclass(frozen=True)
class Timings:
    """Milliseconds per stage of one predict()."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class Prediction:
    """What Session.predict returns: classifications or detections, plus the raw outputs."""

    kind: str  # none | classification | yolo
    classifications: tuple[Classification, ...] = ()
    detections: tuple[Detection, ...] = ()
    outputs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source_size: tuple[int, int] | None = None  # (height, width) of the source image
    timings: Timings = field(default_factory=Timings, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "source_size": list(self.source_size) if self.source_size else None,
                             "timings_ms": {"preprocess": round(self.timings.preprocess_ms, 3),
                                            "inference": round(self.timings.inference_ms, 3),
                                            "postprocess": round(self.timings.postprocess_ms, 3)}}
        if self.kind == "classification":
            d["classifications"] = [{"class_id": c.class_id, "score": c.score, "label": c.label}
                                    for c in self.classifications]
        elif self.kind == "yolo":
            d["detections"] = [{"box": [d_.x1, d_.y1, d_.x2, d_.y2], "score": d_.score, "class_id": d_.class_id,
                                "label": d_.label} for d_ in self.detections]
        else:
            d["outputs"] = {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.outputs.items()}
        return d


__all__ = ["Classification", "Detection", "EngineUse", "Prediction", "Timings"]

"""The one check of outputs against reference outputs: per-output metrics, the tolerance, the verdict.

numpy only (part of the board package). Every comparison edgesdk makes goes through `compare`: `edgesdk verify`
on the host (edgesdk.verify), convert's artifact check (edgesdk.toolchains.check), the smoke test after a flash
and the profiler's accuracy check on the board (`python -m edgesdk.runtime smoke|profile`, via
`check_reference`).

    metrics = compare("logits", [got], [ref], manifest.tolerance)      # one output over N samples
    verdict = check_outputs(got_by_name, ref_by_name, manifest.tolerance)  # every output -> ReferenceCheck
    verdict = check_reference(session, got_by_name)   # the bundle's reference_outputs, loaded from the bundle

Tolerance (the manifest's): max |got - ref| relative to the reference's range (max - min; 1 when the reference
is constant) at most `max_abs_rel`, and, when `cosine_min` is set (int8 bundles), a cosine similarity of at
least that. A sample whose shape differs from the reference's (and is not the same size), or that has NaN/inf
where the reference is finite, fails on its own: such values would otherwise compare as NaN, and NaN passes
every threshold.

Components. One global number hides a broken part of a tensor that concatenates quantities of different scales:
a YOLO head's 1 x (4 + C) x N output holds box coordinates in pixels (range ~300) beside class scores (0-1).
int8 that zeroes every score keeps a whole-tensor cosine of 0.998, and would pass. So `components` looks for
such a tensor along each axis: the per-index scale (the reference's range over every other axis and sample)
falls by at least `COMPONENT_GAP` (100x) from one group of indexes to the next, the smaller group is still above
`COMPONENT_FLOOR` of the largest scale (below that it is numerically silent), and the two groups are a few
contiguous blocks along that axis (concatenated heads, not scattered classes), and the axis is not a position
(`_position_axes`: H and W of a map, whose near-empty border is no separate quantity). Then each block is judged on its
own, with the same tolerance relative to its own range (at least COMPONENT_REL_MIN), beside the whole tensor;
over several samples its cosine is pooled (one vector over every sample), so a sample where the block is near
silent weighs little. The split is a property of the reference only, so the same output is cut the same way on
the host, in convert and on the board.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# numpy is imported inside the functions: `import edgesdk.verify` (which re-exports these names) stays light

#: Scale ratio between two groups of indexes along an axis that makes them separate components.
COMPONENT_GAP = 100.0
#: A group whose scale is below this fraction of the largest is silent (not judged on its own).
COMPONENT_FLOOR = 1e-4
#: At most this many contiguous blocks along the axis (e.g. box | scores, or box | objectness+scores | box).
COMPONENT_MAX_BLOCKS = 4
#: Axes longer than this are positions (anchors, pixels), not features.
COMPONENT_MAX_AXIS = 4096
#: A component's max error is judged against at least this fraction of its own range. The fp32/fp16 bounds are
#: fractions of the whole tensor's range; applied to a small block they would fail an engine's fp16 storage on ARM
#: (ncnn: ~1e-3 of a 0-1 score) that the detector never notices. The component check is for a destroyed block.
COMPONENT_REL_MIN = 0.02


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two arrays (flattened, float64); 1.0 for two zero arrays, 0.0 for one."""
    import numpy as np

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


@dataclass(frozen=True)
class Component:
    """A block of indexes along one axis of an output, judged on its own (see the module docstring)."""

    axis: int
    indexes: tuple[int, ...]
    scale: float  # the reference's range over the block

    @property
    def label(self) -> str:
        return f"axis {self.axis} [{_ranges(self.indexes)}]"

    def take(self, a: Any) -> Any:
        import numpy as np

        return np.take(a, self.indexes, axis=self.axis)


@dataclass(frozen=True)
class ComponentMetrics:
    label: str
    axis: int
    indexes: str  # "4-21" (ranges)
    scale: float
    cosine_min: float
    max_abs: float
    max_abs_rel: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "axis": self.axis, "indexes": self.indexes, "scale": _num(self.scale),
                "cosine_min": _num(self.cosine_min), "max_abs": _num(self.max_abs),
                "max_abs_rel": _num(self.max_abs_rel), "ok": self.ok}


@dataclass(frozen=True)
class OutputMetrics:
    """One output over N samples, and whether it is within the tolerance (`ok`, else `problems` say why).

    cosine_min / max_abs_rel are the worst of the whole tensor and its components (what the verdict judged);
    `components` holds each block's own figures when the output has more than one.
    """

    name: str
    cosine_min: float
    cosine_mean: float
    max_abs: float
    max_abs_rel: float  # max |a - b| / (max(ref) - min(ref)), worst over the whole tensor and its components
    top1_agreement: float | None  # classifier outputs only
    ok: bool
    problems: tuple[str, ...] = ()
    components: tuple[ComponentMetrics, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cosine_min": self.cosine_min, "cosine_mean": self.cosine_mean,
                "max_abs": self.max_abs, "max_abs_rel": self.max_abs_rel, "top1_agreement": self.top1_agreement,
                "ok": self.ok, "problems": list(self.problems),
                "components": [c.to_dict() for c in self.components]}

    def check_dict(self) -> dict[str, Any]:
        """The per-output entry of a smoke test's `checks` / a profile's `accuracy.outputs`."""
        d: dict[str, Any] = {"ok": self.ok, "max_abs_rel": _num(self.max_abs_rel), "max_abs": _num(self.max_abs),
                             "cosine": _num(self.cosine_min)}
        if self.components:
            d["components"] = [c.to_dict() for c in self.components]
        if self.problems:
            d["problems"] = list(self.problems)
            d["problem"] = "; ".join(self.problems)
        return d


def _ranges(idx: Sequence[int]) -> str:
    """(0, 1, 2, 3, 7) -> "0-3,7"."""
    out: list[str] = []
    start = prev = None
    for i in list(idx) + [None]:  # type: ignore[list-item]
        if i is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    return ",".join(out)


def components(refs: Sequence[Any]) -> tuple[Component, ...]:
    """The blocks of an output judged on their own: () when the output is one quantity (see the module docstring).

    refs: the reference samples of one output (same shape). The axis is chosen where the scale gap is widest.
    """
    import numpy as np

    if not refs:
        return ()
    shape = np.shape(refs[0])
    if len(shape) < 2 or any(np.shape(r) != shape for r in refs):
        return ()
    # per-index min and max along every axis, one sample at a time (no stacked copy of N samples)
    lo_hi: list[tuple[Any, Any]] = []
    for r0 in refs:
        r = np.asarray(r0, np.float32)
        if not np.all(np.isfinite(r)):
            return ()
        for ax in range(len(shape)):
            others = tuple(i for i in range(len(shape)) if i != ax)
            mn, mx = r.min(axis=others), r.max(axis=others)
            if len(lo_hi) <= ax:
                lo_hi.append((mn, mx))
            else:
                lo_hi[ax] = (np.minimum(lo_hi[ax][0], mn), np.maximum(lo_hi[ax][1], mx))
    best: tuple[float, int, Any, Any] | None = None
    positions = _position_axes(shape)
    for ax, n in enumerate(shape):
        if n < 2 or n > COMPONENT_MAX_AXIS or ax in positions:
            continue
        scale = (lo_hi[ax][1] - lo_hi[ax][0]).astype(np.float64)
        top = float(scale.max())
        if top <= 0:
            continue
        order = np.sort(scale)[::-1]
        cut = None
        for i in range(1, n):
            if order[i] < COMPONENT_FLOOR * top:
                break
            if order[i - 1] >= COMPONENT_GAP * order[i]:
                cut = (float(order[i - 1]), float(order[i]))
                break
        if cut is None:
            continue
        big = scale >= cut[0]
        blocks = 1 + int(np.count_nonzero(big[1:] != big[:-1]))
        if blocks > COMPONENT_MAX_BLOCKS:
            continue
        gap = cut[0] / cut[1]
        if best is None or gap > best[0]:
            best = (gap, ax, np.flatnonzero(big), np.flatnonzero(~big))
    if best is None:
        return ()
    _, ax, hi, lo = best
    mn, mx = lo_hi[ax]

    def comp(ix: Any) -> Component:
        return Component(ax, tuple(int(i) for i in ix), float(mx[ix].max()) - float(mn[ix].min()))

    return comp(hi), comp(lo)


def _position_axes(shape: tuple[int, ...]) -> set[int]:
    """The axes that are positions, not features: two axes of the same length (H and W of a square map), and H, W of
    a rank-4 map with at most 4 channels (NCHW or NHWC: ppocr-det's 1 x 1 x 640 x 640 text map, whose near-empty border
    is no separate quantity). YOLO heads (1 x 84 x N, 1 x N x 85, 1 x 3 x H x W x 85) keep their feature axis."""
    lens = [n for n in shape if n >= 2]
    out = {ax for ax, n in enumerate(shape) if n >= 2 and lens.count(n) > 1}
    if len(shape) == 4:
        if shape[1] <= 4 < min(shape[2], shape[3]):
            out |= {2, 3}
        elif shape[3] <= 4 < min(shape[1], shape[2]):
            out |= {1, 2}
    return out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no inf/NaN


def compare(name: str, got: Sequence[Any], ref: Sequence[Any], tol: Any, split: bool = True) -> OutputMetrics:
    """Metrics of one output over N samples (got[i] against ref[i]), and whether they are within `tol`
    (anything with `max_abs_rel` and `cosine_min`, e.g. the manifest's Tolerance). split: also judge the output's
    components (see the module docstring); convert turns it off for intermediate segment boundaries."""
    import numpy as np

    problems: list[str] = []
    cos: list[float] = []
    abs_err: list[float] = []
    ranges: list[float] = []
    for i, (g0, r0) in enumerate(zip(got, ref)):
        g, r = np.asarray(g0, np.float64), np.asarray(r0, np.float64)
        at = f" (sample {i})" if len(ref) > 1 else ""
        if g.shape != r.shape:
            if g.size != r.size:
                problems.append(f"shape {list(g.shape)}, the reference has {list(r.shape)}{at}")
                cos.append(0.0)
                abs_err.append(float("inf"))
                ranges.append(1.0)
                continue
            g = g.reshape(r.shape)
        fin = np.isfinite(r)
        bad = int(np.count_nonzero(fin & ~np.isfinite(g)))
        if bad:
            problems.append(f"{bad} NaN/inf value(s) where the reference is finite{at}")
        both = fin & np.isfinite(g)
        gv, rv = g[both], r[both]
        cos.append(cosine(gv, rv) if not bad else 0.0)
        abs_err.append(float(np.max(np.abs(gv - rv))) if gv.size else 0.0)
        ranges.append(float(np.ptp(rv)) if rv.size else 0.0)
    if not cos:
        raise ValueError(f"compare({name!r}): no samples")
    rel = max(e / (rng if rng > 0 else 1.0) for e, rng in zip(abs_err, ranges))
    top1 = None
    r0 = np.asarray(ref[0])
    if r0.ndim == 2 and r0.shape[0] == 1 and r0.shape[1] > 1 and not problems:
        top1 = float(np.mean([int(np.argmax(g)) == int(np.argmax(r)) for g, r in zip(got, ref)]))
    if rel > tol.max_abs_rel and np.isfinite(rel):
        problems.append(f"max abs error {max(abs_err):.3g} is {rel:.3g} of the output range (tolerance "
                        f"{tol.max_abs_rel:g})")
    if tol.cosine_min is not None and min(cos) < tol.cosine_min:
        problems.append(f"cosine {min(cos):.5f} < {tol.cosine_min:g}")
    comp_metrics: list[ComponentMetrics] = []
    shaped = not any("shape" in p or "NaN" in p for p in problems)
    for c in (components(ref) if shaped and split else ()):
        # pooled over the samples: a sample where the block is near silent (a photo with no detection) weighs
        # little, as it should; its error still counts against the block's range over every sample
        dot = ng = nr = 0.0
        cerr = 0.0
        for g0, r0 in zip(got, ref):
            r = c.take(np.asarray(r0, np.float64))
            g = c.take(np.asarray(g0, np.float64).reshape(np.shape(r0)))
            fin = np.isfinite(r) & np.isfinite(g)
            gv, rv = g[fin], r[fin]
            dot += float(np.dot(gv, rv))
            ng += float(np.dot(gv, gv))
            nr += float(np.dot(rv, rv))
            if gv.size:
                cerr = max(cerr, float(np.max(np.abs(gv - rv))))
        ccos = 1.0 if ng == 0 and nr == 0 else 0.0 if ng == 0 or nr == 0 else dot / math.sqrt(ng * nr)
        crel = cerr / (c.scale if c.scale > 0 else 1.0)
        crel_tol = max(tol.max_abs_rel, COMPONENT_REL_MIN)
        bad = []
        if crel > crel_tol:
            bad.append(f"max abs error {cerr:.3g} is {crel:.3g} of its range {c.scale:.3g} (tolerance "
                       f"{crel_tol:g})")
        if tol.cosine_min is not None and ccos < tol.cosine_min:
            bad.append(f"cosine {ccos:.5f} < {tol.cosine_min:g}")
        comp_metrics.append(ComponentMetrics(c.label, c.axis, _ranges(c.indexes), c.scale, ccos, cerr, crel,
                                             not bad))
        problems.extend(f"component {c.label}: {b}" for b in bad)
    worst_cos = min([min(cos), *(c.cosine_min for c in comp_metrics)])
    worst_rel = max([rel, *(c.max_abs_rel for c in comp_metrics)])
    return OutputMetrics(name, worst_cos, float(np.mean(cos)), max(abs_err), worst_rel, top1, not problems,
                         tuple(problems), tuple(comp_metrics))


@dataclass(frozen=True)
class ReferenceCheck:
    """The verdict over every reference output: passed when there is at least one and each is within tolerance."""

    outputs: tuple[OutputMetrics, ...]
    max_abs_rel: float
    cosine_min: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return bool(self.outputs) and all(o.ok for o in self.outputs)

    @property
    def failed(self) -> tuple[OutputMetrics, ...]:
        return tuple(o for o in self.outputs if not o.ok)

    @property
    def tolerance(self) -> dict[str, Any]:
        return {"max_abs_rel": self.max_abs_rel, "cosine_min": self.cosine_min}

    def checks(self) -> dict[str, dict[str, Any]]:
        """{output name: {ok, max_abs_rel, max_abs, cosine[, problems, problem]}}."""
        return {o.name: o.check_dict() for o in self.outputs}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": self.checks(), "tolerance": self.tolerance}


def check_outputs(got: Mapping[str, Any], reference: Mapping[str, Any], tol: Any) -> ReferenceCheck:
    """Each reference output against the output of the same name (one sample each)."""
    metrics = []
    for name, ref in reference.items():
        if name not in got:
            metrics.append(OutputMetrics(name, 0.0, 0.0, float("inf"), float("inf"), None, False,
                                         (f"the bundle produced no output {name!r} (it produced {sorted(got)})",)))
            continue
        metrics.append(compare(name, [got[name]], [ref], tol))
    return ReferenceCheck(tuple(metrics), float(tol.max_abs_rel), tol.cosine_min)


def reference_arrays(bundle_dir: str | Path, manifest: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bundle's reference inputs and outputs ({name: numpy array}); empty dicts when it carries none."""
    import numpy as np

    d = Path(bundle_dir)
    ins = {k: np.load(d / v, allow_pickle=False) for k, v in (manifest.reference_inputs or {}).items()}
    outs = {k: np.load(d / v, allow_pickle=False) for k, v in (manifest.reference_outputs or {}).items()}
    return ins, outs


def check_reference(sess: Any, got: Mapping[str, Any]) -> ReferenceCheck:
    """`got` (the outputs of the bundle's reference inputs) against the bundle's reference outputs, with the
    bundle's tolerance. sess: a Session (its manifest and bundle_dir)."""
    _, outs = reference_arrays(sess.bundle_dir, sess.manifest)
    return check_outputs(got, outs, sess.manifest.tolerance)


__all__ = ["COMPONENT_FLOOR", "COMPONENT_GAP", "COMPONENT_REL_MIN", "Component", "ComponentMetrics", "OutputMetrics", "ReferenceCheck",
           "check_outputs", "check_reference", "compare", "components", "cosine", "reference_arrays"]

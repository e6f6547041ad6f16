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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# numpy is imported inside the functions: `import edgesdk.verify` (which re-exports these names) stays light


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
class OutputMetrics:
    """One output over N samples, and whether it is within the tolerance (`ok`, else `problems` say why)."""

    name: str
    cosine_min: float
    cosine_mean: float
    max_abs: float
    max_abs_rel: float  # max |a - b| / (max(ref) - min(ref))
    top1_agreement: float | None  # classifier outputs only
    ok: bool
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cosine_min": self.cosine_min, "cosine_mean": self.cosine_mean,
                "max_abs": self.max_abs, "max_abs_rel": self.max_abs_rel, "top1_agreement": self.top1_agreement,
                "ok": self.ok, "problems": list(self.problems)}

    def check_dict(self) -> dict[str, Any]:
        """The per-output entry of a smoke test's `checks` / a profile's `accuracy.outputs`."""
        d: dict[str, Any] = {"ok": self.ok, "max_abs_rel": _num(self.max_abs_rel), "max_abs": _num(self.max_abs),
                             "cosine": _num(self.cosine_min)}
        if self.problems:
            d["problems"] = list(self.problems)
            d["problem"] = "; ".join(self.problems)
        return d


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None  # JSON has no inf/NaN


def compare(name: str, got: Sequence[Any], ref: Sequence[Any], tol: Any) -> OutputMetrics:
    """Metrics of one output over N samples (got[i] against ref[i]), and whether they are within `tol`
    (anything with `max_abs_rel` and `cosine_min`, e.g. the manifest's Tolerance)."""
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
    return OutputMetrics(name, min(cos), float(np.mean(cos)), max(abs_err), rel, top1, not problems, tuple(problems))


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


__all__ = ["OutputMetrics", "ReferenceCheck", "check_outputs", "check_reference", "compare", "cosine",
           "reference_arrays"]

"""`edgesdk verify APP`: an app bundle checked stage by stage on this machine, with each model stage's real
engines (its sub-bundle's Session) and the very step code the board runs.

Each stage is fed the inputs the host's reference run recorded for it (so a stage is judged on its own, not on
what an earlier, broken stage gave it) and its outputs are compared with the recorded outputs: a model stage with
its sub-bundle's tolerance (edgesdk.runtime.reference.compare), a step with the app's. The report names the first
stage that fails. Inside a failing model stage (``per_layer``) it goes one level down, as `edgesdk verify BUNDLE`
does for one model: for an int8 stage the fp32 model against its onnxruntime int8 (QDQ) simulation layer by layer
on that stage's own recorded inputs, naming the first layer below the threshold, and the vendor compiler's own
per-layer analysis when the sub-bundle carries one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import EdgeSDKError, InputError


@dataclass
class AppVerifyReport:
    bundle: Path
    app: str
    bundle_id: str
    board: str
    checks: list[Any]  # StageCheck, in stage order
    first_failure: str | None
    engines: dict[str, list[dict[str, Any]]]
    layer_stage: str | None = None
    layers: list[Any] = field(default_factory=list)  # verify.LayerMetric of layer_stage
    first_bad_layer: Any = None
    layer_threshold: float | None = None
    vendor_layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.first_failure is None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "kind": "app", "bundle": str(self.bundle), "app": self.app,
                "bundle_id": self.bundle_id, "board": self.board, "first_failure": self.first_failure,
                "stages": [{"name": c.name, **c.to_dict()} for c in self.checks], "engines": self.engines,
                "per_layer": ({"stage": self.layer_stage, "threshold": self.layer_threshold,
                               "first_below": self.first_bad_layer.to_dict() if self.first_bad_layer else None,
                               "layers": [x.to_dict() for x in self.layers],
                               "vendor": [{**v, "layers": list(v["layers"]),
                                           "first_below": v["first_below"]} for v in self.vendor_layers]}
                              if self.layer_stage else None),
                "notes": self.notes}


def verify_app(bundle: str | Path, per_layer: bool = True, samples: int | None = None,
               fallback: str | None = None) -> AppVerifyReport:
    """Check every stage of the app bundle against its recorded reference; see the module doc."""
    from edgesdk.runtime.app import App
    from edgesdk.runtime.app.graph import first_failure
    from edgesdk.runtime.app.manifest import load_app_manifest

    b = Path(bundle)
    if not b.is_dir():
        raise InputError(f"app bundle {b} does not exist (or is not a directory)")
    m = load_app_manifest(b, verify=True)
    # accelerator segments carry their host int8 simulation as a CPU version: run it when the accelerator is absent
    fb = fallback or ("cpu" if any(sg.cpu_version is not None for sg in m.segments) else "error")
    notes: list[str] = []
    with App(b, fallback=fb, verify=False) as app:
        checks = app.check(samples=samples)
        engines = app.engines_used()
        for stage, used in engines.items():
            for u in used:
                if u.get("fallback"):
                    notes.append(f"stage {stage}, segment {u.get('segment')} ran on {u.get('engine')}, not the "
                                 f"{u.get('planned')} accelerator ({u.get('reason')})")
        bad = first_failure(checks)
        rep = AppVerifyReport(b, m.name, m.bundle_id, m.board, checks, bad.name if bad else None, engines,
                              notes=notes)
        if bad is not None and per_layer:
            spec = next(s for s in m.stages if s.name == bad.name.partition("#")[0])  # "rec#1": a variant
            if spec.kind == "model":
                _layers(app, spec, rep)
            else:
                notes.append(f"stage {bad.name} is a step ({bad.kind}): it has no layers; its inputs are the "
                             "recorded ones, so the step itself differs from the host's (a different edgesdk "
                             "version, or a custom module that is not deterministic)")
    return rep


def _layers(app: Any, spec: Any, rep: AppVerifyReport) -> None:
    """Per-layer view inside a failing model stage (its sub-bundle, on the stage's own recorded inputs)."""
    from edgesdk.runtime.app.graph import shape_key
    from edgesdk.runtime.app.manifest import input_shapes

    all_feeds = app.stage_feeds(spec.name)
    # a stage with shape variants: the first variant whose recorded inputs show a bad layer (else the last looked at)
    for j, bdir in enumerate(spec.bundles):
        sub = app.manifest.sub[spec.sub_key(j)]
        feeds = [f for f in all_feeds if shape_key(f) == input_shapes(sub)]
        if len(spec.bundles) > 1 and not feeds:
            continue
        _variant_layers(app, spec, rep, app.bundle_dir / bdir, sub, feeds,
                        spec.name if len(spec.bundles) == 1 else f"{spec.name} ({bdir})")
        if rep.first_bad_layer is not None or sub.precision != "int8":
            break
    rep.notes[:] = list(dict.fromkeys(rep.notes))  # a note every variant gave, once


def _variant_layers(app: Any, spec: Any, rep: AppVerifyReport, sub_dir: Path, sub: Any, feeds: list[dict[str, Any]],
                    key: str) -> None:
    from edgesdk import verify as V

    rep.layer_stage = key
    thr = sub.tolerance.cosine_min or V.LAYER_COSINE
    rep.layer_threshold = thr
    model = Path(str((sub.source_model or {}).get("path") or ""))
    if sub.precision == "int8":
        if not model.is_file() or model.suffix.lower() != ".onnx":
            rep.notes.append(f"stage {spec.name}: per-layer comparison needs its fp32 ONNX model, which is not on "
                             f"this machine ({model or 'no path in the sub-bundle'})")
        else:
            try:
                rep.layers, rep.first_bad_layer = V.per_layer(model, feeds, thr,
                                                              {t.name: t.shape for t in sub.inputs})
            except EdgeSDKError:
                raise
            except Exception as exc:  # noqa: BLE001 - the per-layer view is extra: the verdict stands
                rep.notes.append(f"stage {spec.name}: per-layer comparison skipped: the onnxruntime int8 simulation "
                                 f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    else:
        rep.notes.append(f"stage {spec.name} is {sub.precision}: the per-layer view compares int8 layers with their "
                         "fp32 originals; an fp32 stage that fails differs in its engine's kernels or conversion: "
                         f"`edgesdk inspect {model.name or 'MODEL'} --board {app.manifest.board}` and "
                         f"`edgesdk verify {sub_dir}` look at it alone")
    rep.vendor_layers = V._vendor_layers(sub_dir, sub, thr, rep.notes)


__all__ = ["AppVerifyReport", "verify_app"]

"""The app bundle's manifest.json (``"kind": "app"``): one manifest over the stages' sub-bundles, the app's files and
the per-stage reference values.

    APP/manifest.json            this manifest: stages, wiring, files (every file of the app, the sub-bundles' too,
                                 with its sha256), reference samples, bundle_id
    APP/stages/<stage>/          a model stage's bundle: a whole edgesdk bundle with its own manifest.json
    APP/files/...                the app's files: character lists, custom step modules
    APP/reference/<k>/...        per sample k: each stage's inputs and outputs (.npz) from the host run

The deploy agent treats it like any bundle (its ``files`` table and ``bundle_id``), so an app installs, activates,
rolls back and is signed as one release. Standard library + numpy, like the rest of the board runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.errors import BundleError
from edgesdk.runtime.manifest import (
    MANIFEST,
    Manifest,
    Segment,
    _Reader,
    _release_version,
    content_hash,
    load_manifest,
    read_manifest,
    verify_files,
)

APP_KIND = "app"
APP_SCHEMA_VERSION = 1
STAGE_KINDS = ("model", "step", "custom")


@dataclass(frozen=True)
class StageSpec:
    """One stage as the board runs it.

    kind: model (``bundle`` is its sub-bundle dir), step (``step`` a built-in name) or custom (``function``
    "files/mod.py:fn"). inputs: the stage's input name -> a wire ("APP_INPUT" or "stage.output"). outputs: the
    stage's output names; for a model, ``model_outputs`` maps each to the model's own output name. map: run once per
    item of the list inputs. variants: a model stage converted at several input shapes (a recogniser at several
    widths) has one sub-bundle per shape: ``bundle`` the first, ``variants`` the others; each input runs on the
    sub-bundle of its shape.
    """

    name: str
    kind: str
    inputs: dict[str, str]
    outputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    bundle: str | None = None
    model_outputs: dict[str, str] = field(default_factory=dict)
    step: str | None = None
    function: str | None = None
    map: bool = False
    stateful: bool = False
    variants: tuple[str, ...] | None = None

    @property
    def bundles(self) -> tuple[str, ...]:
        """A model stage's sub-bundle dirs, one per shape variant (the first is ``bundle``)."""
        return (str(self.bundle), *(self.variants or ())) if self.kind == "model" else ()

    def sub_key(self, j: int) -> str:
        """The name of variant j's sub-bundle in AppManifest.sub and in segment ids: the stage's, then "stage#j"."""
        return self.name if j == 0 else f"{self.name}#{j}"

    @classmethod
    def parse(cls, r: _Reader) -> StageSpec:
        r.unknown({"name", "kind", "inputs", "outputs", "params", "bundle", "model_outputs", "step", "function",
                   "map", "stateful", "variants"})
        kind = r.get("kind", str, choices=STAGE_KINDS)
        s = cls(name=r.get("name", str), kind=kind, inputs=dict(r.get("inputs", dict)),
                outputs=tuple(r.get("outputs", list)), params=dict(r.get("params", dict, {})),
                bundle=r.relpath("bundle", r.get("bundle", str)) if kind == "model" else None,
                model_outputs=dict(r.get("model_outputs", dict, {})),
                step=r.get("step", str) if kind == "step" else None,
                function=r.get("function", str) if kind == "custom" else None,
                map=r.get("map", bool, False), stateful=r.get("stateful", bool, False),
                variants=tuple(r.relpath(f"variants.{j}", v) for j, v in enumerate(r.get("variants", list)))
                if kind == "model" and r.get("variants", list, None) else None)
        for k, v in s.inputs.items():
            if not isinstance(v, str):
                raise r.fail(f"inputs.{k}", "expected a wire name (an app input or stage.output)")
        return s


@dataclass(frozen=True)
class SampleRef:
    """One reference sample: the app's inputs and outputs, and every stage's inputs and outputs, as .npz files."""

    name: str
    source: str
    inputs: str
    outputs: str
    stages: dict[str, dict[str, str]]  # stage -> {"inputs": rel, "outputs": rel}

    @classmethod
    def parse(cls, r: _Reader) -> SampleRef:
        r.unknown({"name", "source", "inputs", "outputs", "stages"})
        stages = {}
        for k, v in r.get("stages", dict).items():
            if not isinstance(v, dict) or set(v) != {"inputs", "outputs"}:
                raise r.fail(f"stages.{k}", "expected {inputs: FILE, outputs: FILE}")
            stages[k] = {io: r.relpath(f"stages.{k}.{io}", v[io]) for io in ("inputs", "outputs")}
        return cls(r.get("name", str), r.get("source", str, ""), r.relpath("inputs", r.get("inputs", str)),
                   r.relpath("outputs", r.get("outputs", str)), stages)


@dataclass(frozen=True)
class AppManifest:
    name: str
    board: str
    inputs: tuple[str, ...]
    outputs: dict[str, str]  # app output name -> wire
    stages: tuple[StageSpec, ...]
    files: dict[str, str]
    samples: tuple[SampleRef, ...] = ()
    #: per value kind, how a step's outputs are compared with their reference: {"max_abs_rel": ..}
    tolerance: dict[str, float] = field(default_factory=lambda: {"max_abs_rel": 1e-3})
    source: dict[str, Any] = field(default_factory=dict)  # {"spec": file name, "sha256": of app.yaml}
    notes: tuple[str, ...] = ()
    kind: str = APP_KIND
    edgesdk_version: str = ""
    created_at: str = ""
    bundle_id: str = ""
    schema_version: int = APP_SCHEMA_VERSION
    release_version: int | None = None
    #: the stages' sub-bundle manifests (loaded beside this one; not serialised)
    sub: dict[str, Manifest] = field(default_factory=dict, compare=False)

    # -- what the deploy code asks every bundle ---------------------------------------------------------------
    @property
    def segments(self) -> tuple[Segment, ...]:
        """Every model stage's segments (the engines the board needs), ids prefixed with the stage."""
        return tuple(replace(s, id=f"{st}/{s.id}") for st, m in self.sub.items() for s in m.segments)

    @property
    def precision(self) -> str:
        ps = sorted({m.precision for m in self.sub.values()})
        return "+".join(ps) if ps else "none"

    @property
    def model_stages(self) -> tuple[StageSpec, ...]:
        return tuple(s for s in self.stages if s.kind == "model")

    def to_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items() if v is not None}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f != "sub"}
        d["stages"] = [{k: v for k, v in s.__dict__.items()} for s in self.stages]
        d["samples"] = [dict(s.__dict__) for s in self.samples]
        return clean(d)

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> AppManifest:
        r = _Reader(data, where)
        r.unknown({f for f in cls.__dataclass_fields__ if f != "sub"})
        if r.get("kind", str) != APP_KIND:
            raise r.fail("kind", f"expected {APP_KIND!r}")
        ver = r.get("schema_version", int)
        if ver != APP_SCHEMA_VERSION:
            raise r.fail("schema_version", f"this runtime reads app version {APP_SCHEMA_VERSION}, the bundle has "
                         f"{ver}; update edgesdk on the board or re-convert")
        files = r.get("files", dict)
        for k, v in files.items():
            r.relpath(f"files.{k}", k)
            if not (isinstance(v, str) and len(v) == 64):
                raise r.fail(f"files.{k}", "expected a sha256 hex digest")
        stages = tuple(StageSpec.parse(x) for x in r.items("stages"))
        if not stages:
            raise r.fail("stages", "an app needs at least one stage")
        m = cls(name=r.get("name", str), board=r.get("board", str), inputs=tuple(r.get("inputs", list)),
                outputs=dict(r.get("outputs", dict)), stages=stages, files=dict(files),
                samples=tuple(SampleRef.parse(x) for x in r.items("samples", optional=True)),
                tolerance=dict(r.get("tolerance", dict, {"max_abs_rel": 1e-3})),
                source=dict(r.get("source", dict, {})), notes=tuple(r.get("notes", list, [])),
                edgesdk_version=r.get("edgesdk_version", str, ""), created_at=r.get("created_at", str, ""),
                bundle_id=r.get("bundle_id", str, ""), schema_version=ver, release_version=_release_version(r))
        m.check_wiring(where)
        return m

    def check_wiring(self, where: str) -> None:
        """Every wire names an app input or an earlier stage's output; stage names are unique."""
        problem = wiring_problem(self.stages, self.inputs, self.outputs)
        if problem:
            raise BundleError(f"{where}: {problem}")

    def content_id(self) -> str:
        return content_hash(self.to_dict(), "a")

    def untuned_id(self) -> str:
        return replace(self, release_version=None).content_id()


def wiring_problem(stages: Sequence[StageSpec], inputs: Sequence[str], outputs: Mapping[str, str]) -> str | None:
    """The first wire that names no app input and no earlier stage's output, or a stage name used twice, as
    "field ...: ..." (the app bundle's check, and convert's once the model stages' outputs are known); None if none."""
    avail = set(inputs)
    seen: set[str] = set()
    for i, s in enumerate(stages):
        if s.name in seen or s.name in inputs:
            return f"field stages.{i}.name: {s.name!r} is used twice"
        seen.add(s.name)
        for k, w in s.inputs.items():
            if w not in avail:
                return (f"field stages.{i}.inputs.{k}: {w!r} is no app input and no output of an earlier stage "
                        f"(available: {', '.join(sorted(avail))})")
        avail |= {f"{s.name}.{o}" for o in s.outputs}
    for k, w in outputs.items():
        if w not in avail:
            return f"field outputs.{k}: {w!r} is produced by no stage (available: {', '.join(sorted(avail))})"
    return None


def is_app(bundle_dir: str | Path) -> bool:
    """True when BUNDLE/manifest.json is an app manifest (cheap: reads only its kind)."""
    try:
        data = json.loads((Path(bundle_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == APP_KIND


def load_app_manifest(bundle_dir: str | Path, verify: bool = True) -> AppManifest:
    """Read and validate APP/manifest.json and its stages' sub-bundle manifests; with verify, every file's sha256."""
    root = Path(bundle_dir)
    mpath = root / MANIFEST
    m = read_manifest(root, AppManifest.from_dict)
    for i, smp in enumerate(m.samples):  # every reference file is one the table hashes
        for rel in (smp.inputs, smp.outputs, *(f for io in smp.stages.values() for f in io.values())):
            if rel not in m.files:
                raise BundleError(f"{mpath}: field samples.{i}: {rel} is not listed in files")
    if verify:
        verify_files(root, m)  # type: ignore[arg-type]
    sub = {}
    for s in m.model_stages:
        seen: dict[tuple, str] = {}
        for j, bdir in enumerate(s.bundles):
            fld = f"stages.{s.name}." + ("bundle" if j == 0 else f"variants.{j - 1}")
            if f"{bdir}/{MANIFEST}" not in m.files:
                raise BundleError(f"{mpath}: field {fld}: {bdir}/{MANIFEST} is not listed in files")
            sm = load_manifest(root / bdir, verify=False)  # its files are in this manifest's table, checked
            names = {t.name for t in sm.outputs}
            for local, model_name in s.model_outputs.items():
                if model_name not in names:
                    raise BundleError(f"{mpath}: field {fld}: stage {s.name}'s model has no output {model_name!r} "
                                      f"for model_outputs.{local} (it has {sorted(names)})")
            key = input_shapes(sm)
            if key in seen:
                raise BundleError(f"{mpath}: field {fld}: takes the same input shapes as {seen[key]}: a stage's "
                                  "variants differ in their input shapes")
            seen[key] = bdir
            sub[s.sub_key(j)] = sm
    return replace(m, sub=sub)


#: input name -> shape, sorted: what a stage with shape variants picks its variant by
ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]


def shapes_key(shapes: Mapping[str, Sequence[int]]) -> ShapeKey:
    return tuple(sorted((k, tuple(int(d) for d in v)) for k, v in shapes.items()))


def shown_shapes(key: ShapeKey) -> str:
    """x=1x3x48x320, y=..."""
    return ", ".join(f"{k}={'x'.join(map(str, dims))}" for k, dims in key)


def input_shapes(m: Manifest) -> ShapeKey:
    """A sub-bundle's input shapes, as the key its stage picks a variant by."""
    return shapes_key({t.name: t.shape for t in m.inputs})


def load_any(bundle_dir: str | Path, verify: bool = True) -> Manifest | AppManifest:
    """The manifest of a model bundle or of an app bundle."""
    return load_app_manifest(bundle_dir, verify) if is_app(bundle_dir) else load_manifest(bundle_dir, verify)


# -- values in .npz files ------------------------------------------------------------------------------------
_LIST = "__list__"


def pack(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{name: array | list of arrays} -> flat {key: array} for np.savez (lists as name.__list__ + name.0, ...)."""
    out: dict[str, np.ndarray] = {}
    for k, v in values.items():
        if isinstance(v, (list, tuple)):
            out[f"{k}.{_LIST}"] = np.asarray(len(v), dtype=np.int64)
            for i, x in enumerate(v):
                if isinstance(x, (list, tuple)):
                    raise BundleError(f"value {k!r}: a list of lists cannot be stored (item {i})")
                out[f"{k}.{i}"] = _storable(x, f"{k}.{i}")
        else:
            out[k] = _storable(v, k)
    return out


def _storable(x: Any, key: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "biufcUS":
        raise BundleError(f"value {key!r}: {a.dtype} arrays cannot be stored without pickle (use numbers or str)")
    return a


def unpack(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lists = {k[: -len(_LIST) - 1]: int(v) for k, v in flat.items() if k.endswith("." + _LIST)}
    for k, v in flat.items():
        if k.endswith("." + _LIST):
            continue
        base, _, idx = k.rpartition(".")
        if base in lists and idx.isdigit():
            continue
        out[k] = np.asarray(v)
    for base, n in lists.items():
        out[base] = [np.asarray(flat[f"{base}.{i}"]) for i in range(n)]
    return out


def save_values(path: str | Path, values: Mapping[str, Any]) -> None:
    """An .npz np.load reads, written entry by entry (np.savez(**values) would take a value named `file` for its
    own argument), never pickled."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for k, a in pack(values).items():
            with z.open(f"{k}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(a), allow_pickle=False)


def load_values(path: str | Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return unpack({k: z[k] for k in z.files})


__all__ = ["APP_KIND", "APP_SCHEMA_VERSION", "AppManifest", "SampleRef", "StageSpec", "is_app", "load_any",
           "load_app_manifest", "load_values", "pack", "save_values", "unpack", "wiring_problem"]

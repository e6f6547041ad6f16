"""The bundle manifest (manifest.json): its schema as frozen dataclasses, validation, hashing.

Standard library only: the board reads this with nothing but Python and numpy. The host
writes it (edgesdk.bundle) with the same classes, so the two sides cannot drift.

A bundle is a directory:

    manifest.json          this schema
    <segment files>        engine artifacts, paths relative to the bundle root
    reference/*.npy        reference inputs and outputs for the smoke test

`files` maps every file except manifest.json and manifest.sig to its sha256: every file that changes
behaviour, `edgesdk tune`'s tuning.json included, so that the id and a signature cover it.
`bundle_id` is "b" + the first 16 hex digits of the sha256 of the canonical JSON of
the manifest without `bundle_id` and `created_at`, so the id is a content hash.
`release_version` is the signer's monotonic release number (`edgesdk sign`), in the id too: each signed
release is its own release dir on the board (unchanged files are hard-linked, not sent again). manifest.sig
signs the exact bytes of manifest.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

from edgesdk.runtime.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: `edgesdk tune`'s choice of engines and options: listed in `files` like every other file
TUNING = "tuning.json"



def engine_ids() -> tuple[str, ...]:
    """The runtime engines: one module per engine in edgesdk/runtime/engines/, named by its id (found by file
    name, nothing imported)."""
    d = Path(__file__).resolve().parent / "engines"
    return tuple(sorted(f.stem for f in d.glob("*.py") if not f.stem.startswith("_")))


ENGINES = engine_ids()
DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool")
LAYOUTS = ("NCHW", "NHWC")


class _Reader:
    """Reads a JSON object with typed access; every error names the file and the field path."""

    def __init__(self, data: Any, where: str, path: str = "") -> None:
        if not isinstance(data, dict):
            raise BundleError(f"{where}: field {path or '<top level>'} must be an object")
        self.d, self.where, self.path = data, where, path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, msg: str) -> BundleError:
        return BundleError(f"{self.where}: field {self._name(key)}: {msg}")

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ..., choices: tuple | None = None) -> Any:
        if key not in self.d:
            if default is ...:
                raise self.fail(key, "missing")
            return default
        v = self.d[key]
        if v is None and default is None:
            return None
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise self.fail(key, f"expected {types}, got a boolean")
        if not isinstance(v, types):
            raise self.fail(key, f"expected {getattr(types, '__name__', types)}, got {type(v).__name__}")
        if choices is not None and v not in choices:
            raise self.fail(key, f"{v!r} is not one of {list(choices)}")
        return v

    def sub(self, key: str, optional: bool = False) -> _Reader | None:
        v = self.d.get(key)
        if v is None:
            if optional:
                return None
            raise self.fail(key, "missing")
        return _Reader(v, self.where, self._name(key))

    def items(self, key: str, optional: bool = False) -> list[_Reader]:
        v = self.d.get(key)
        if v is None and optional:
            return []
        if not isinstance(v, list):
            raise self.fail(key, "expected a list")
        return [_Reader(x, self.where, f"{self._name(key)}.{i}") for i, x in enumerate(v)]

    def relpath(self, key: str, value: Any) -> str:
        """A bundle-relative path: no absolute paths, no '..', no backslashes."""
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a relative file path")
        p = PurePosixPath(value)
        if p.is_absolute() or ".." in p.parts or "\\" in value or value.startswith("~"):
            raise self.fail(key, f"path {value!r} must stay inside the bundle")
        return value

    def unknown(self, known: set[str]) -> None:
        extra = set(self.d) - known
        if extra:
            raise BundleError(f"{self.where}: unknown field(s) {sorted(self._name(k) for k in extra)}")


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of a tensor at an engine boundary: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int
    dtype: str  # int8 | uint8 | int16

    @classmethod
    def parse(cls, r: _Reader) -> QuantParams:
        r.unknown({"scale", "zero_point", "dtype"})
        scale = float(r.get("scale", (int, float)))
        if not scale > 0:
            raise r.fail("scale", "must be > 0")
        return cls(scale, r.get("zero_point", int), r.get("dtype", str, choices=("int8", "uint8", "int16")))


@dataclass(frozen=True)
class TensorSpec:
    """One tensor at a model or segment boundary, as the user's model names it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layout: str | None = None  # the layout the engine expects, when it differs from the model's
    engine_name: str | None = None  # the tensor's name inside the engine artifact (e.g. ncnn "in0")
    quant: QuantParams | None = None  # present when the engine tensor is quantized

    @classmethod
    def parse(cls, r: _Reader) -> TensorSpec:
        r.unknown({"name", "shape", "dtype", "layout", "engine_name", "quant"})
        shape = r.get("shape", list)
        if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in shape):
            raise r.fail("shape", f"must be a list of positive integers (static shapes), got {shape}")
        q = r.sub("quant", optional=True)
        return cls(
            name=r.get("name", str),
            shape=tuple(shape),
            dtype=r.get("dtype", str, choices=DTYPES),
            layout=r.get("layout", str, None, choices=LAYOUTS),
            engine_name=r.get("engine_name", str, None),
            quant=QuantParams.parse(q) if q else None,
        )


@dataclass(frozen=True)
class CpuVersion:
    """A CPU build of an accelerator segment: what fallback="cpu" may run instead."""

    engine: str
    files: dict[str, str]
    inputs: tuple[TensorSpec, ...] = ()  # empty: same as the segment's, unquantized
    outputs: tuple[TensorSpec, ...] = ()

    @classmethod
    def parse(cls, r: _Reader) -> CpuVersion:
        r.unknown({"engine", "files", "inputs", "outputs"})
        files = r.get("files", dict)
        return cls(
            engine=r.get("engine", str, choices=ENGINES),
            files={k: r.relpath(f"files.{k}", v) for k, v in files.items()},
            inputs=tuple(TensorSpec.parse(x) for x in r.items("inputs", optional=True)),
            outputs=tuple(TensorSpec.parse(x) for x in r.items("outputs", optional=True)),
        )


@dataclass(frozen=True)
class Segment:
    """One part of the partition plan, run by one engine."""

    id: str
    engine: str
    files: dict[str, str]  # role -> bundle-relative path, e.g. {"param": "s0.param", "bin": "s0.bin"}
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str = "fp32"
    accelerator: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # engine options, e.g. {"threads": 4}
    cpu_version: CpuVersion | None = None
    reason: str | None = None  # why this engine runs it (e.g. the converter refused the preferred one)

    @classmethod
    def parse(cls, r: _Reader) -> Segment:
        r.unknown({"id", "engine", "files", "inputs", "outputs", "precision", "accelerator", "options",
                   "cpu_version", "reason"})
        files = r.get("files", dict)
        cv = r.sub("cpu_version", optional=True)
        return cls(
            id=r.get("id", str),
            engine=r.get("engine", str, choices=ENGINES),
            files={k: r.relpath(f"files.{k}", v) for k, v in files.items()},
            inputs=tuple(TensorSpec.parse(x) for x in r.items("inputs")),
            outputs=tuple(TensorSpec.parse(x) for x in r.items("outputs")),
            precision=r.get("precision", str, "fp32", choices=("fp32", "fp16", "int8")),
            accelerator=r.get("accelerator", bool, False),
            options=r.get("options", dict, {}),
            cpu_version=CpuVersion.parse(cv) if cv else None,
            reason=r.get("reason", str, None),
        )


@dataclass(frozen=True)
class Preprocess:
    """Declared once; applied identically at calibration, verification and on the board.

    Order: colour conversion (images arrive BGR, as OpenCV reads them) -> resize/letterbox
    to `size` (H, W) -> x * scale -> (x - mean) / std per channel -> layout -> dtype.
    """

    input: str
    size: tuple[int, int]
    resize: str = "letterbox"  # letterbox | stretch | none
    pad_value: float = 114.0
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    color: str = "RGB"  # channel order the model wants
    layout: str = "NCHW"
    dtype: str = "float32"

    @classmethod
    def parse(cls, r: _Reader) -> Preprocess:
        r.unknown({f.name for f in fields(cls)})
        size = r.get("size", list)
        if len(size) != 2 or not all(isinstance(x, int) and x > 0 for x in size):
            raise r.fail("size", f"must be [height, width], got {size}")
        mean = tuple(float(x) for x in r.get("mean", list, [0.0, 0.0, 0.0]))
        std = tuple(float(x) for x in r.get("std", list, [1.0, 1.0, 1.0]))
        if any(s == 0 for s in std):
            raise r.fail("std", "must not contain 0")
        return cls(
            input=r.get("input", str),
            size=(size[0], size[1]),
            resize=r.get("resize", str, "letterbox", choices=("letterbox", "stretch", "none")),
            pad_value=float(r.get("pad_value", (int, float), 114.0)),
            scale=float(r.get("scale", (int, float), 1.0 / 255.0)),
            mean=mean,
            std=std,
            color=r.get("color", str, "RGB", choices=("RGB", "BGR")),
            layout=r.get("layout", str, "NCHW", choices=LAYOUTS),
            dtype=r.get("dtype", str, "float32", choices=DTYPES),
        )


@dataclass(frozen=True)
class Postprocess:
    """What to do with the outputs in Session.predict.

    kind "classification": softmax (when the model outputs logits) then top-k.
    kind "yolo": decode boxes from `output`; `head` is "anchor-free" (YOLOv8-style: 4 box + C
    class scores per candidate) or "anchor-based" (YOLOv5-style: 4 box + objectness + C
    classes, with `anchors` per stride); NMS class-aware unless `class_agnostic`; boxes are
    scaled back to the source image.
    """

    kind: str  # none | classification | yolo
    output: str | None = None
    softmax: bool = False
    top_k: int = 5
    labels: tuple[str, ...] = ()
    head: str = "anchor-free"
    num_classes: int | None = None
    strides: tuple[int, ...] = (8, 16, 32)
    anchors: tuple[tuple[float, ...], ...] = ()
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    class_agnostic: bool = False
    max_det: int = 300

    @classmethod
    def parse(cls, r: _Reader) -> Postprocess:
        r.unknown({f.name for f in fields(cls)})
        return cls(
            kind=r.get("kind", str, choices=("none", "classification", "yolo")),
            output=r.get("output", str, None),
            softmax=r.get("softmax", bool, False),
            top_k=r.get("top_k", int, 5),
            labels=tuple(r.get("labels", list, [])),
            head=r.get("head", str, "anchor-free", choices=("anchor-free", "anchor-based")),
            num_classes=r.get("num_classes", int, None),
            strides=tuple(r.get("strides", list, [8, 16, 32])),
            anchors=tuple(tuple(float(v) for v in a) for a in r.get("anchors", list, [])),
            conf_threshold=float(r.get("conf_threshold", (int, float), 0.25)),
            iou_threshold=float(r.get("iou_threshold", (int, float), 0.45)),
            class_agnostic=r.get("class_agnostic", bool, False),
            max_det=r.get("max_det", int, 300),
        )


@dataclass(frozen=True)
class Tolerance:
    """When outputs count as equal to the reference (smoke test on the board, `edgesdk verify`)."""

    max_abs_rel: float = 1e-3  # max |a-b| / (max(ref) - min(ref)), per output
    cosine_min: float | None = None  # int8 bundles: per-output cosine similarity floor

    @classmethod
    def parse(cls, r: _Reader) -> Tolerance:
        r.unknown({"max_abs_rel", "cosine_min"})
        return cls(float(r.get("max_abs_rel", (int, float), 1e-3)), r.get("cosine_min", (int, float), None))


@dataclass(frozen=True)
class Manifest:
    board: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    segments: tuple[Segment, ...]
    files: dict[str, str]  # relative path -> sha256
    source_model: dict[str, Any]  # {"name", "sha256", "opset"}
    reference_inputs: dict[str, str] = field(default_factory=dict)  # tensor name -> .npy path
    reference_outputs: dict[str, str] = field(default_factory=dict)
    #: where the reference inputs came from: {"kind": "sample" | "calibration" | "random", "dir", "file"}; None
    #: (left out of manifest.json, so bundles made before it keep their content id) when not recorded
    reference_source: dict[str, Any] | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)
    preprocess: Preprocess | None = None
    postprocess: Postprocess | None = None
    toolchains: dict[str, dict[str, str]] = field(default_factory=dict)  # toolchain -> component -> version
    engines: dict[str, str] = field(default_factory=dict)  # engine -> version used on the host
    notes: tuple[str, ...] = ()  # conversion report lines: fallbacks with the converter's message
    edgesdk_version: str = ""
    created_at: str = ""
    bundle_id: str = ""
    schema_version: int = SCHEMA_VERSION
    #: the signer's monotonic release number (edgesdk sign); boards refuse a lower one than current's
    release_version: int | None = None

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items() if v is not None}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        return clean(asdict(self))

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST) -> Manifest:
        r = _Reader(data, where)
        r.unknown({f.name for f in fields(cls)})
        ver = r.get("schema_version", int)
        if ver != SCHEMA_VERSION:
            raise r.fail("schema_version", f"this runtime reads version {SCHEMA_VERSION}, the bundle has {ver}; "
                         "update edgesdk on the board or re-convert")
        files = r.get("files", dict)
        for k, v in files.items():
            r.relpath(f"files.{k}", k)
            if not (isinstance(v, str) and len(v) == 64):
                raise r.fail(f"files.{k}", "expected a sha256 hex digest")
        segs = tuple(Segment.parse(x) for x in r.items("segments"))
        if not segs:
            raise r.fail("segments", "a bundle needs at least one segment")
        pre, post, tol = r.sub("preprocess", True), r.sub("postprocess", True), r.sub("tolerance", True)
        ref_in, ref_out = r.get("reference_inputs", dict, {}), r.get("reference_outputs", dict, {})
        m = cls(
            board=r.get("board", str),
            precision=r.get("precision", str, choices=("fp32", "fp16", "int8")),
            inputs=tuple(TensorSpec.parse(x) for x in r.items("inputs")),
            outputs=tuple(TensorSpec.parse(x) for x in r.items("outputs")),
            segments=segs,
            files=dict(files),
            source_model=r.get("source_model", dict),
            reference_inputs={k: r.relpath(f"reference_inputs.{k}", v) for k, v in ref_in.items()},
            reference_outputs={k: r.relpath(f"reference_outputs.{k}", v) for k, v in ref_out.items()},
            reference_source=r.get("reference_source", dict, None),
            tolerance=Tolerance.parse(tol) if tol else Tolerance(),
            preprocess=Preprocess.parse(pre) if pre else None,
            postprocess=Postprocess.parse(post) if post else None,
            toolchains=r.get("toolchains", dict, {}),
            engines=r.get("engines", dict, {}),
            notes=tuple(r.get("notes", list, [])),
            edgesdk_version=r.get("edgesdk_version", str, ""),
            created_at=r.get("created_at", str, ""),
            bundle_id=r.get("bundle_id", str, ""),
            schema_version=ver,
            release_version=_release_version(r),
        )
        m._check_graph(where)
        return m

    def _check_graph(self, where: str) -> None:
        """Every segment input comes from a model input or an earlier segment's output."""
        available = {t.name for t in self.inputs}
        for i, s in enumerate(self.segments):
            for t in s.inputs:
                if t.name not in available:
                    raise BundleError(
                        f"{where}: field segments.{i}.inputs: tensor {t.name!r} of segment {s.id!r} is produced by "
                        "no model input and no earlier segment"
                    )
            available |= {t.name for t in s.outputs}
            for role, rel in s.files.items():
                if rel not in self.files:
                    raise BundleError(f"{where}: field segments.{i}.files.{role}: {rel!r} is not listed in files")
        missing = [t.name for t in self.outputs if t.name not in available]
        if missing:
            raise BundleError(f"{where}: field outputs: {missing} are produced by no segment")

    # -- identity --------------------------------------------------------------------------
    def content_id(self) -> str:
        return content_hash(self.to_dict(), "b")

    def untuned_id(self) -> str:
        """The content id of this bundle without its tuning.json and release_version: the bundle `edgesdk tune`
        measured (the `bundle_id` a tuning.json records), whether the tuning is listed yet and however signed."""
        return replace(self, files={k: v for k, v in self.files.items() if k != TUNING},
                       release_version=None).content_id()


def content_hash(d: dict[str, Any], prefix: str) -> str:
    """A manifest's id: PREFIX + the sha256 of its canonical JSON without bundle_id and created_at (so the id names
    the content, whenever and as whatever it was written)."""
    d = {k: v for k, v in d.items() if k not in ("bundle_id", "created_at")}
    return prefix + hashlib.sha256(canonical_json(d)).hexdigest()[:16]


def _release_version(r: _Reader) -> int | None:
    v = r.get("release_version", int, None)
    if v is not None and not 0 <= v < 1 << 63:
        raise r.fail("release_version", f"must be an integer from 0 to 2**63-1, got {v}")
    return v


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def load_manifest(bundle_dir: str | Path, verify: bool = True) -> Manifest:
    """Read and validate BUNDLE/manifest.json; with verify, also check every file's sha256 and
    that no file in the bundle escapes it through a symlink."""
    root = Path(bundle_dir)
    m = read_manifest(root, Manifest.from_dict)
    if verify:
        verify_files(root, m)
    return m


def read_manifest(root: Path, from_dict: Any) -> Any:
    """ROOT/manifest.json parsed by from_dict(data, where), its bundle_id checked against its content (the one
    reading of a manifest file: model bundles and app bundles)."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON: {exc}") from exc
    m = from_dict(data, str(mpath))
    if m.bundle_id and m.bundle_id != m.content_id():
        raise BundleError(f"{mpath}: field bundle_id: {m.bundle_id} does not match the content ({m.content_id()})")
    return m


def verify_files(root: Path, m: Manifest) -> None:
    real_root = root.resolve()
    for rel, digest in m.files.items():
        p = root / rel
        if p.is_symlink() or not p.resolve().is_relative_to(real_root):
            raise BundleError(f"{p}: links are not allowed in a bundle")
        if not p.is_file():
            raise BundleError(f"{p}: listed in the manifest but missing")
        actual = sha256_file(p)
        if actual != digest:
            raise BundleError(f"{p}: sha256 {actual[:12]}... does not match the manifest ({digest[:12]}...)")


__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "SIGNATURE",
    "TUNING",
    "CpuVersion",
    "Manifest",
    "Postprocess",
    "Preprocess",
    "QuantParams",
    "Segment",
    "TensorSpec",
    "Tolerance",
    "canonical_json",
    "load_manifest",
    "sha256_file",
    "verify_files",
]

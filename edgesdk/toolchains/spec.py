"""Toolchain specs: the schema of toolchains/<id>/toolchain.yaml and ops.yaml, and loading them."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgesdk._data import data_dir
from edgesdk.boards import _format_validation
from edgesdk.errors import ProfileError, UnknownToolchainError

Source = Annotated[str, Field(min_length=3)]

#: Named checks an op rule may ask for; edgesdk.graph.support implements each one.
NAMED_CHECKS: dict[str, str] = {
    "depthwise_or_dense": "group is 1 or equals the input channel count (no other grouped convolution)",
    "static_shapes": "every input and output shape is fully static",
    "const_weights": "weights/second operands are initializers, not runtime tensors",
    "batch_one": "the batch dimension (axis 0) is 1",
    "channel_axis_concat": "concatenation/split along the channel axis (axis 1 in NCHW)",
    "broadcast_4d": "element-wise broadcasting only between tensors of rank <= 4",
    "innermost_3d": "at most the 3 innermost dimensions are larger than 1",
    "same_pads": "symmetric padding (begin == end on every axis)",
    "resize_2x_int": "Resize/Upsample scale is an integer factor (typically 2) on H and W only",
    "last_axis": "the op works on the last axis only",
    "single_input_dynamic": "only the first input is a runtime tensor, the rest are constants",
    "square_exponent": "Pow's exponent is the constant 2 (converters write x * x)",
    "feature_maps_only": "every input is a runtime tensor, none a constant (e.g. Caffe Eltwise takes blobs only)",
}

_ONNX_DTYPES = (
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "bool",
    "string",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AttrCond(_Strict):
    """A condition on one ONNX attribute. All given fields must hold."""

    in_: list[Any] | None = Field(default=None, alias="in")
    not_in: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    each_in: list[Any] | None = None
    each_min: float | None = None
    each_max: float | None = None
    len_max: int | None = None
    default: Any | None = Field(default=None, description="ONNX default when the attribute is absent")


class RankLimit(_Strict):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class OpRule(_Strict):
    """What one engine/accelerator accepts of one ONNX op type."""

    supported: bool
    attrs: dict[str, AttrCond] = Field(default_factory=dict)
    rank: RankLimit | None = None
    dtypes: list[str] | None = Field(default=None, description="allowed dtypes of the first input")
    const_inputs: list[int] = Field(default_factory=list, description="input indices that must be initializers")
    checks: list[str] = Field(default_factory=list)
    reason: str | None = Field(default=None, description="why it is unsupported, or what the constraint means")
    rewrite: str | None = Field(default=None, description="suggested rewrite when the op is refused")
    source: Source | None = None

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in NAMED_CHECKS]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known: {sorted(NAMED_CHECKS)}")
        return v

    @field_validator("dtypes")
    @classmethod
    def _known_dtypes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            bad = [d for d in v if d not in _ONNX_DTYPES]
            if bad:
                raise ValueError(f"unknown dtype(s) {bad}; known: {list(_ONNX_DTYPES)}")
        return v

    @model_validator(mode="after")
    def _unsupported_needs_reason(self) -> OpRule:
        if not self.supported and not self.reason:
            raise ValueError("an unsupported op needs a reason")
        return self


class OpTable(_Strict):
    """The op support table of one toolchain's target (toolchains/<id>/ops.yaml)."""

    schema_version: Literal[1] = 1
    toolchain: str
    target: str = Field(description="what executes the ops: engine or accelerator, with version")
    default_supported: bool = Field(description="whether an ONNX op missing from `ops` is accepted")
    default_reason: str = "not in the op table of this target"
    opset: RankLimit | None = Field(default=None, description="ONNX opset range the converter accepts")
    dtypes: list[str] = Field(default_factory=list, description="dtypes the target computes in")
    max_rank: int | None = None
    source: Source
    notes: list[str] = Field(default_factory=list)
    ops: dict[str, OpRule]

    def rule(self, op_type: str) -> OpRule | None:
        return self.ops.get(op_type)


class Tool(_Strict):
    """One thing `doctor` probes for a toolchain."""

    name: str
    kind: Literal["executable", "python-module", "container-image"]
    command: str | None = None
    version_args: list[str] = Field(default_factory=lambda: ["--version"])
    version_regex: str | None = None
    module: str | None = None
    where: Literal["host", "venv"] = "host"
    image: str | None = None
    install_hint: str
    required: bool = True
    platforms: list[str] | None = Field(default=None, description="host platforms it exists for, e.g. x86_64")

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Tool:
        need = {"executable": "command", "python-module": "module", "container-image": "image"}[self.kind]
        if getattr(self, need) is None:
            raise ValueError(f"a tool of kind {self.kind!r} needs {need!r}")
        return self


class Provision(_Strict):
    kind: Literal["venv", "host", "binary", "container"]
    requirements: list[str] = Field(default_factory=list, description="pip requirements (venv/host)")
    requirements_file: str | None = None
    container_image: str | None = None
    note: str | None = None


class RuntimePackage(_Strict):
    """What the board needs to run this toolchain's artifacts."""

    engine: str = Field(pattern=r"^[a-z][a-z0-9_]*$",
                        description="runtime engine id: edgesdk/runtime/engines/<engine>.py drives it on the board")
    python_modules: list[str] = Field(default_factory=list, description="import names; any one makes it available")
    pip: str | None = None
    pip_extras: list[str] = Field(default_factory=list, description="what `pip` needs besides numpy on the board "
                                                                    "(the wheelhouse installs --no-deps)")
    system: str | None = Field(default=None, description="non-pip runtime, e.g. libedgetpu1-std")
    install_hint: str = Field(min_length=3, description="what to run on the board when the engine is missing")
    source: Source | None = None


class SimulationScheme(_Strict):
    """The int8 scheme the host simulation of an accelerator uses (edgesdk.simulate.Scheme)."""

    id: str | None = Field(default=None, description="scheme id (simulate --scheme); default: the engine id")
    per_channel: bool
    activation_symmetric: bool
    power_of_two: bool
    description: str


class ToolchainSpec(_Strict):
    schema_version: Literal[1] = 1
    id: str
    name: str
    description: str
    kind: Literal["cpu", "accelerator"]
    engine: str = Field(description="the runtime engine that runs its artifacts (== runtime.engine)")
    adapter: str = Field(pattern=r"^edgesdk\.toolchains\.adapters\.[a-z_0-9]+:[A-Za-z_][A-Za-z_0-9]*$",
                         description="module:Class of its toolchain adapter")
    simulation_scheme: SimulationScheme | None = Field(default=None, description="accelerators: host int8 simulation")
    fallback_engine: str | None = Field(
        default=None, description="accelerators: the engine of a segment's CPU version, which runs it where the "
                                  "accelerator is absent (verify on the host, --fallback cpu on a board): onnxruntime "
                                  "runs the host int8 simulation, tflite the int8 TFLite the compiler takes")
    artifacts: list[str] = Field(min_length=1, description="file suffixes it produces")
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(min_length=1)
    provision: Provision
    versions: dict[str, str] = Field(default_factory=dict, description="component -> PEP 440 constraint")
    tools: list[Tool] = Field(min_length=1)
    runtime: RuntimePackage
    source: Source
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _engine_agrees(self) -> ToolchainSpec:
        if self.runtime.engine != self.engine:
            raise ValueError(f"runtime.engine {self.runtime.engine!r} differs from engine {self.engine!r}")
        return self


def toolchains_dir() -> Path:
    return data_dir("toolchains")


def _read_yaml(p: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ProfileError(str(p), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ProfileError(str(p), ["top level must be a mapping of fields"])
    return raw


def load_spec(path: str | Path) -> ToolchainSpec:
    p = Path(path)
    raw = _read_yaml(p)
    try:
        spec = ToolchainSpec.model_validate(raw)
    except ValidationError as exc:
        raise ProfileError(str(p), _format_validation(exc)) from exc
    if spec.id != p.parent.name:
        raise ProfileError(str(p), [f"field id: {spec.id!r} must match its folder {p.parent.name!r}"])
    return spec


def load_op_table(path: str | Path) -> OpTable:
    p = Path(path)
    raw = _read_yaml(p)
    try:
        table = OpTable.model_validate(raw)
    except ValidationError as exc:
        raise ProfileError(str(p), _format_validation(exc)) from exc
    if table.toolchain != p.parent.name:
        raise ProfileError(str(p), [f"field toolchain: {table.toolchain!r} must match its folder {p.parent.name!r}"])
    return table


@functools.lru_cache(maxsize=None)
def _all_specs(directory: str) -> dict[str, ToolchainSpec]:
    out = {}
    for f in sorted(Path(directory).glob("*/toolchain.yaml")):
        s = load_spec(f)
        out[s.id] = s
    return out


def list_toolchains(directory: str | Path | None = None) -> list[ToolchainSpec]:
    return list(_all_specs(str(directory or toolchains_dir())).values())


# The registries every other module derives from the toolchain records (one record per toolchain).


def toolchain_ids() -> tuple[str, ...]:
    return tuple(s.id for s in list_toolchains())


def engine_ids() -> tuple[str, ...]:
    """Every runtime engine a toolchain record names, in record order."""
    return tuple(dict.fromkeys(s.engine for s in list_toolchains()))


def cpu_engines() -> tuple[str, ...]:
    """The engines of the CPU toolchains (their toolchain id is their engine id)."""
    return tuple(s.engine for s in list_toolchains() if s.kind == "cpu")


def toolchain_of_engine(engine: str) -> ToolchainSpec | None:
    """The toolchain whose artifacts an engine runs (its ops.yaml describes what the engine accepts)."""
    for s in list_toolchains():
        if s.engine == engine:
            return s
    return None


def _unknown(tid: str, known: list[str]) -> UnknownToolchainError:
    return UnknownToolchainError(tid, known, difflib.get_close_matches(tid, known, n=2, cutoff=0.5))


def get_toolchain(toolchain_id: str, directory: str | Path | None = None) -> ToolchainSpec:
    specs = _all_specs(str(directory or toolchains_dir()))
    if toolchain_id not in specs:
        raise _unknown(toolchain_id, sorted(specs))
    return specs[toolchain_id]


@functools.lru_cache(maxsize=None)
def _op_table_cached(path: str) -> OpTable:
    return load_op_table(path)


def get_op_table(toolchain_id: str, directory: str | Path | None = None) -> OpTable:
    """The op support table of a toolchain (toolchains/<id>/ops.yaml)."""
    d = Path(directory or toolchains_dir())
    p = d / toolchain_id / "ops.yaml"
    if not p.is_file():
        raise _unknown(toolchain_id, sorted(x.parent.name for x in d.glob("*/ops.yaml")))
    return _op_table_cached(str(p))


__all__ = [
    "NAMED_CHECKS",
    "AttrCond",
    "OpRule",
    "OpTable",
    "SimulationScheme",
    "Tool",
    "ToolchainSpec",
    "cpu_engines",
    "engine_ids",
    "toolchain_ids",
    "toolchain_of_engine",
    "get_op_table",
    "get_toolchain",
    "list_toolchains",
    "load_op_table",
    "load_spec",
    "toolchains_dir",
]

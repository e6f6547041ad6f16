"""Board profiles: the pydantic schema of boards/*.yaml, and loading, listing and validating them."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgesdk._data import data_dir
from edgesdk.errors import ProfileError, UnknownBoardError

ISA_FEATURES = ("neon", "vfpv4", "fp16", "dotprod", "i8mm", "bf16", "sve", "crypto", "crc32")

#: Engine and toolchain ids are checked against the toolchain records (toolchains/*/toolchain.yaml), not listed here.
def _known_engine(v: str) -> str:
    from edgesdk.toolchains.spec import engine_ids

    if v not in engine_ids():
        raise ValueError(f"unknown engine {v!r}; the toolchain records name {list(engine_ids())}")
    return v


def _known_toolchain(v: str) -> str:
    from edgesdk.toolchains.spec import toolchain_ids

    if v not in toolchain_ids():
        raise ValueError(f"unknown toolchain {v!r}; toolchains/ has {list(toolchain_ids())}")
    return v


EngineId = Annotated[str, AfterValidator(_known_engine)]
ToolchainId = Annotated[str, AfterValidator(_known_toolchain)]
Source = Annotated[str, Field(min_length=3, description="where the fact comes from: URL, repo:path, or 'derived: ...'")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Figure(_Strict):
    """A number with its unit and where it comes from (a vendor figure or a derivation)."""

    value: float = Field(gt=0)
    unit: str
    derivation: str | None = None
    source: Source
    confirmed: bool = Field(default=True, description="false for a placeholder or an untraced figure")


class Soc(_Strict):
    name: str
    vendor: str
    source: Source


class Cpu(_Strict):
    arch: Literal["aarch64", "armv7l"]
    core: str = Field(description="core type, e.g. cortex-a72")
    cores: int = Field(ge=1, le=64)
    clock_mhz: int = Field(ge=100, le=6000)
    features: list[str]
    source: Source

    @field_validator("features")
    @classmethod
    def _known_features(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in ISA_FEATURES]
        if unknown:
            raise ValueError(f"unknown ISA feature(s) {unknown}; known: {list(ISA_FEATURES)}")
        return v


class Memory(_Strict):
    sizes_mb: list[int] = Field(min_length=1, description="RAM sizes the board ships with")
    type: str
    bandwidth_gbs: Figure
    measured_gbs: Figure | None = None
    source: Source


class Peaks(_Strict):
    cpu_fp32_gflops: Figure
    cpu_int8_gops: Figure


class Accelerator(_Strict):
    kind: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="what the accelerator is: edgetpu, dpu, rknpu, ...")
    name: str
    tops: Figure
    dtypes: list[Literal["int8", "uint8", "int16", "fp16"]] = Field(min_length=1)
    op_table: ToolchainId = Field(description="toolchain id whose ops.yaml describes this accelerator")
    engine: EngineId = Field(description="runtime engine that drives the accelerator on the board")
    partition_rule: Literal["first-unsupported-to-cpu", "any-segments"]
    partition_rule_text: str = Field(description="the rule in the vendor's words")
    partition_rule_source: Source
    interface: str | None = None
    on_chip_memory_mb: Figure | None = None
    source: Source


class OsInfo(_Strict):
    name: str
    libc: str = Field(pattern=r"^(glibc|musl|uclibc) \d+(\.\d+)*$")
    python: str = Field(pattern=r"^3\.\d+$")
    platform_tags: list[str] = Field(min_length=1)
    source: Source


class Cross(_Strict):
    triple: Literal["aarch64-linux-gnu", "arm-linux-gnueabihf"]
    mcpu: str
    extra_flags: list[str] = Field(default_factory=list)
    vendor_toolchain: str | None = None
    source: Source


class UsbId(_Strict):
    vid_pid: str = Field(pattern=r"^[0-9a-f]{4}:[0-9a-f]{4}$")
    meaning: str


class Detect(_Strict):
    """How to recognise the real board over SSH."""

    device_tree_model: list[str] = Field(default_factory=list, description="substrings of /proc/device-tree/model")
    usb_ids: list[UsbId] = Field(default_factory=list)
    dev_nodes: list[str] = Field(default_factory=list)
    dev_nodes_any: bool = Field(default=False, description="the device nodes are alternatives (one driver or another)"
                                                          "; else every one is needed")
    vendor_tools: list[str] = Field(default_factory=list)
    source: Source


class Emulation(_Strict):
    qemu_arch: Literal["aarch64", "arm"]
    qemu_cpu: str
    debian_arch: Literal["arm64", "armhf"]
    debian_suite: str = "bookworm"
    note: str | None = None


class ReferenceLatency(_Strict):
    model: str
    input: str = Field(description="input size, e.g. 224x224")
    engine: str = Field(description="engine or runtime that was measured, e.g. ncnn, tflite-xnnpack, edgetpu")
    precision: Literal["fp32", "fp16", "int8"]
    threads: int | None = Field(default=None, ge=1)
    latency_ms: float = Field(gt=0)
    conditions: str | None = Field(default=None, description="clock, OS, what is included")
    source: Source


class OpUtilisation(_Strict):
    """Share of the peak an op class reaches (0-1], fitted or derived: each figure names its source."""

    conv: Figure = Field(description="dense convolution (group 1, or grouped below depthwise)")
    depthwise: Figure = Field(description="depthwise convolution (group == input channels)")
    matmul: Figure = Field(description="Gemm / MatMul")
    elementwise: Figure = Field(description="activations, pooling, resize, reductions, normalisation")


class CostModel(_Strict):
    """The latency model of edgesdk.graph.cost: per-node roofline at each op class's utilisation, a cost per
    accelerator invocation, the CPU<->accelerator link, and the CPU work at every hand-off (quantize/dequantize, layout
    conversion). Calibrated against `reference_latencies` by scripts/calibrate_cost.py; `calibration` says how."""

    cpu: OpUtilisation
    cpu_parallel_efficiency: Figure | None = Field(
        default=None, description="speed-up of each extra CPU core, 0-1: cores used = 1 + (n - 1) x this")
    cpu_int8_efficiency: Figure | None = Field(
        default=None, description="share of peaks.cpu_int8_gops int8 kernels reach relative to fp32 at the same "
                                  "utilisation (int8 peak used = cpu_int8_gops x this); default 1")
    cpu_bandwidth_efficiency: Figure | None = Field(
        default=None, description="share of the profile's memory bandwidth (measured_gbs, else bandwidth_gbs) a "
                                  "layer's tensor traffic gets on the CPU: the memory roofline's bandwidth is "
                                  "bandwidth x this; default 1")
    accelerator: OpUtilisation | None = None
    accelerator_peak_fraction: Figure | None = Field(
        default=None, description="share of accelerator.tops one inference uses (e.g. one of three NPU cores); "
                                  "default 1")
    invoke_ms: Figure | None = Field(default=None, description="fixed cost of one accelerator invocation")
    link_gbs: Figure | None = Field(default=None, description="CPU <-> accelerator link (USB, PCIe or shared DRAM)")
    weights_over_link: bool = Field(
        default=False, description="parameters beyond accelerator.on_chip_memory_mb cross the link every inference")
    quantize_ns_per_byte: Figure = Field(description="CPU cost per byte of the float tensor to (de)quantize it")
    layout_ns_per_byte: Figure = Field(description="CPU cost per byte of the float tensor for NCHW <-> NHWC")
    accelerator_layout: Literal["NHWC", "NCHW"] | None = Field(
        default=None, description="the layout the accelerator's runtime takes; an NHWC accelerator pays "
                                  "layout_ns_per_byte for each 4-D tensor it exchanges with the NCHW graph")
    calibration: str = Field(min_length=3, description="which reference rows calibrated it, and the error; or why not")


class BoardProfile(_Strict):
    """Everything edgesdk knows about one board. One YAML file in boards/."""

    schema_version: Literal[1] = 1
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    description: str
    aliases: list[str] = Field(default_factory=list, description="other names users type for this board")
    soc: Soc
    cpu: Cpu
    memory: Memory
    peaks: Peaks
    accelerator: Accelerator | None
    engines: list[EngineId] = Field(min_length=1, description="in order of preference")
    fallback_engine: EngineId = "onnxruntime"
    toolchains: list[ToolchainId] = Field(min_length=1)
    os: OsInfo
    cross: Cross
    detect: Detect
    emulation: Emulation
    reference_latencies: list[ReferenceLatency] = Field(default_factory=list)
    cost: CostModel | None = Field(default=None, description="the latency model's figures (edgesdk.graph.cost)")

    @model_validator(mode="after")
    def _consistent(self) -> BoardProfile:
        if len(set(self.engines)) != len(self.engines):
            raise ValueError(f"engines: duplicates in {self.engines}")
        if self.accelerator is not None:
            if self.accelerator.engine not in self.engines:
                raise ValueError(
                    f"accelerator.engine {self.accelerator.engine!r} must also be listed in engines {self.engines}"
                )
            if self.accelerator.op_table not in self.toolchains:
                raise ValueError(
                    f"accelerator.op_table {self.accelerator.op_table!r} must also be listed in toolchains"
                )
        arch_ok = {("aarch64", "aarch64"), ("armv7l", "arm")}
        if (self.cpu.arch, self.emulation.qemu_arch) not in arch_ok:
            raise ValueError(f"emulation.qemu_arch {self.emulation.qemu_arch!r} does not fit cpu.arch {self.cpu.arch!r}")
        return self

    @property
    def has_accelerator(self) -> bool:
        return self.accelerator is not None


def _format_validation(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        out.append(f"field {loc}: {msg}")
    return out


def load_profile(path: str | Path) -> BoardProfile:
    """Load and validate one board profile file. Raises ProfileError naming the file and field."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(str(p), [f"cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ProfileError(str(p), [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ProfileError(str(p), ["top level must be a mapping of fields"])
    try:
        profile = BoardProfile.model_validate(raw)
    except ValidationError as exc:
        raise ProfileError(str(p), _format_validation(exc)) from exc
    if profile.id != p.stem:
        raise ProfileError(str(p), [f"field id: {profile.id!r} must match the file name {p.stem!r}"])
    return profile


def boards_dir() -> Path:
    return data_dir("boards")


@functools.lru_cache(maxsize=None)
def _load_all(directory: str) -> dict[str, BoardProfile]:
    out: dict[str, BoardProfile] = {}
    for f in sorted(Path(directory).glob("*.yaml")):
        prof = load_profile(f)
        out[prof.id] = prof
    return out


def list_boards(directory: str | Path | None = None) -> list[BoardProfile]:
    """All shipped board profiles (validated), sorted by id."""
    d = str(directory or boards_dir())
    return list(_load_all(d).values())


def board_ids(directory: str | Path | None = None) -> list[str]:
    return [b.id for b in list_boards(directory)]


def get_board(board_id: str, directory: str | Path | None = None) -> BoardProfile:
    """The profile of `board_id`; UnknownBoardError with did-you-mean suggestions otherwise."""
    d = str(directory or boards_dir())
    boards = _load_all(d)
    if board_id in boards:
        return boards[board_id]
    known = sorted(boards)
    suggestions = difflib.get_close_matches(board_id.lower(), known, n=2, cutoff=0.5)
    # Common aliases people type (each profile's `aliases`).
    alias = next((b for b, p in boards.items() if board_id.lower() in (a.lower() for a in p.aliases)), None)
    if alias and alias not in suggestions:
        suggestions.insert(0, alias)
    raise UnknownBoardError(board_id, known, suggestions)


__all__ = [
    "Accelerator",
    "BoardProfile",
    "CostModel",
    "Cpu",
    "Figure",
    "OpUtilisation",
    "ReferenceLatency",
    "board_ids",
    "boards_dir",
    "get_board",
    "list_boards",
    "load_profile",
]

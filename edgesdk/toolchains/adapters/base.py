"""The adapter shape every toolchain follows: check_env, plan(job) -> ConversionPlan, describe(job) -> Artifact."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgesdk.errors import EdgeSDKError, EnvironmentProblem, InputError
from edgesdk.paths import toolchain_venv
from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.executor import ConversionPlan


class ConversionRefused(EdgeSDKError):
    """A converter cannot take this segment (not a crash): convert falls back to onnxruntime with this message."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(f"{tool}: {message}")


@dataclass(frozen=True)
class IOSpec:
    """A tensor at the segment boundary, as the ONNX segment names it."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class CalibData:
    """Calibration data prepared for one segment (edgesdk.calib writes these files).

    arrays: an .npz with one array per segment input, N samples stacked on axis 0 (each sample
    has the input's shape without its batch axis of 1: N x C x H x W for a 1 x C x H x W input).
    images: a folder of the calibration images already colour-converted and resized to the
    model's input size (only when the segment's input is the model's image input and the set
    came from images); mean/normal map those pixels to the model input: (p - mean) * normal.
    """

    arrays: Path
    count: int
    images: Path | None = None
    mean: tuple[float, ...] | None = None
    normal: tuple[float, ...] | None = None
    color: str = "RGB"

    def to_dict(self) -> dict[str, Any]:
        return {"arrays": str(self.arrays), "count": self.count, "images": str(self.images) if self.images else None}


@dataclass(frozen=True)
class ConversionJob:
    """One segment to convert: its standalone ONNX file, where to work, at which precision."""

    segment: str  # segment id, e.g. "s0"; artifact files are named after it
    onnx: Path
    work: Path
    precision: str  # fp32 | fp16 | int8
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    calib: CalibData | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Artifact:
    """What a converted segment is for the bundle: its files (role -> path), tensors, engine options."""

    files: Mapping[str, Path]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: the vendor compiler's own per-op placement, as data (label "vendor compiler"), when it reports one
    compiler_view: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EnvStatus:
    """check_env's answer: ready with a version, or missing with the fix."""

    toolchain: str
    ok: bool
    version: str | None
    detail: str
    fix: str | None = None

    def require(self) -> None:
        if not self.ok:
            raise EnvironmentProblem(f"toolchain {self.toolchain!r} is not ready: {self.detail}", fix=self.fix)


class Adapter:
    """Base of the four CPU adapters (and the template for the accelerator ones)."""

    id: ClassVar[str] = ""
    engine: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: Why a precision is not offered (shown in the exit-2 error).
    unsupported: ClassVar[Mapping[str, str]] = {}
    #: Extra pip arguments `edgesdk toolchain install` needs for this toolchain's venv.
    pip_args: ClassVar[tuple[str, ...]] = ()
    #: Seconds one conversion command may take.
    timeout: ClassVar[float] = 900.0
    #: int8 can keep the ONNX nodes named in job.options["exclude_nodes"] in float (mixed precision, --target).
    int8_exclude: ClassVar[bool] = False

    def __init__(self, venv: Path | None = None) -> None:
        self.venv = Path(venv) if venv is not None else toolchain_venv(self.id)

    # -- environment -------------------------------------------------------------------------
    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def venv_ready(self) -> bool:
        return self.python.is_file() and os.access(self.python, os.X_OK)

    def missing_venv(self) -> EnvStatus:
        return EnvStatus(self.id, False, None, f"its isolated venv {self.venv} does not exist",
                         f"edgesdk toolchain install {self.id}")

    def check_env(self) -> EnvStatus:
        raise NotImplementedError

    # -- planning ------------------------------------------------------------------------------
    def check_precision(self, precision: str) -> None:
        """InputError (exit 2) when this toolchain cannot produce `precision`, with the reason."""
        if precision not in self.precisions:
            why = self.unsupported.get(precision, "not offered by this toolchain")
            raise InputError(f"engine {self.engine!r} cannot do precision {precision!r}: {why}. "
                             f"It offers {', '.join(self.precisions)}.")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        raise NotImplementedError

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        """After execution: the artifact's files and tensors as the manifest records them."""
        raise NotImplementedError


def plain_specs(specs: tuple[IOSpec, ...], engine_names: list[str] | None = None) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(s.name, s.shape, s.dtype, engine_name=engine_names[i] if engine_names else None)
                 for i, s in enumerate(specs))


__all__ = ["Adapter", "Artifact", "CalibData", "ConversionJob", "ConversionRefused", "EnvStatus", "IOSpec",
           "plain_specs"]

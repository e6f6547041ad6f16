"""onnxruntime: fp32 is the segment's ONNX itself; int8 is QDQ through onnxruntime.quantization.quantize_static."""

from __future__ import annotations

import sys
from pathlib import Path

from edgesdk.toolchains.adapters.base import Adapter, Artifact, ConversionJob, EnvStatus, plain_specs
from edgesdk.toolchains.executor import Command, ConversionPlan


class OnnxRuntimeAdapter(Adapter):
    id = "onnxruntime"
    engine = "onnxruntime"
    precisions = ("fp32", "int8")
    unsupported = {"fp16": "edgesdk does not make fp16 ONNX for the CPU fallback (onnxruntime's CPU kernels run "
                           "fp16 models slower than fp32); use fp32 or int8"}

    def __init__(self, venv: Path | None = None, python: str | None = None) -> None:
        super().__init__(venv)
        # Runs in the host environment (provision: host): the host interpreter does the work.
        self.host_python = python or sys.executable

    def check_env(self) -> EnvStatus:
        try:
            from importlib import metadata

            ver = metadata.version("onnxruntime")
        except Exception:  # PackageNotFoundError or a broken install
            return EnvStatus(self.id, False, None, "onnxruntime is not installed in this environment",
                             "pip install 'edgesdk[host]'")
        return EnvStatus(self.id, True, ver, f"onnxruntime {ver} (host)")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.check_precision(job.precision)
        out = job.work / f"{job.segment}_onnxruntime.onnx"
        if job.precision == "fp32":
            argv = (self.host_python, "-m", "edgesdk.toolchains.adapters._ort_tool", "copy",
                    "--model", str(job.onnx), "--out", str(out))
            purpose = "check the segment loads in onnxruntime and copy it into the bundle"
        else:
            if job.calib is None:
                from edgesdk.errors import InputError

                raise InputError("int8 needs a calibration set: pass --calib DIR")
            argv = (self.host_python, "-m", "edgesdk.toolchains.adapters._ort_tool", "quantize",
                    "--model", str(job.onnx), "--calib", str(job.calib.arrays), "--out", str(out),
                    "--per-channel")
            purpose = "int8 QDQ with quantize_static (MinMax calibration, per-channel weights, QInt8)"
        cmd = Command("onnxruntime", argv, cwd=job.work, timeout=self.timeout, purpose=purpose)
        return ConversionPlan(self.id, self.engine, job.precision, (), (cmd,), {"model": out})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        return Artifact({"model": plan.outputs["model"]}, plain_specs(job.inputs), plain_specs(job.outputs))

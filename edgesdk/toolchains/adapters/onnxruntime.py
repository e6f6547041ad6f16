"""onnxruntime: fp32 is the segment's ONNX itself; int8 is QDQ through onnxruntime.quantization.quantize_static.

int8 options (job.options): `calibrate_method` ("minmax" | "entropy" | "percentile", onnxruntime's
CalibrationMethod; default minmax) and `exclude_nodes` (node names kept in float: quantize_static's
nodes_to_exclude, the mixed-precision layers edgesdk.quantize.search chooses). Weights are per channel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgesdk.toolchains.adapters._ort_tool import METHODS, PER_CHANNEL_OPSET
from edgesdk.toolchains.adapters.base import Adapter, Artifact, ConversionJob, EnvStatus, plain_specs
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite


class OnnxRuntimeAdapter(Adapter):
    id = "onnxruntime"
    engine = "onnxruntime"
    precisions = ("fp32", "int8")
    int8_exclude = True
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
        writes: tuple[FileWrite, ...] = ()
        if job.precision == "fp32":
            argv = (self.host_python, "-m", "edgesdk.toolchains.adapters._ort_tool", "copy",
                    "--model", str(job.onnx), "--out", str(out))
            purpose = "check the segment loads in onnxruntime and copy it into the bundle"
        else:
            if job.calib is None:
                from edgesdk.errors import InputError

                raise InputError("int8 needs a calibration set: pass --calib DIR")
            method, exclude = _int8_options(job)
            argv = (self.host_python, "-m", "edgesdk.toolchains.adapters._ort_tool", "quantize",
                    "--model", str(job.onnx), "--calib", str(job.calib.arrays), "--out", str(out),
                    "--per-channel")
            said = [f"{METHODS[method]} calibration", "per-channel weights", "QInt8"]
            if method != "minmax":
                argv += ("--method", method)
            if exclude:
                listed = job.work / f"{job.segment}_ort_exclude.json"
                writes = (FileWrite(listed, (json.dumps(exclude, indent=1) + "\n").encode(),
                                    "the nodes quantize_static keeps in float (nodes_to_exclude)"),)
                argv += ("--exclude", str(listed))
                names = ", ".join(exclude[:5]) + (f", ... ({len(exclude)} in all)" if len(exclude) > 5 else "")
                said.append(f"{len(exclude)} node(s) kept in float: {names}")
            opset = _opset_of(job.onnx)
            if opset is not None and opset < PER_CHANNEL_OPSET:
                said.append(f"opset {opset} upgraded to {PER_CHANNEL_OPSET} first (per-tensor weights if that fails)")
            purpose = f"int8 QDQ with quantize_static ({', '.join(said)})"
        cmd = Command("onnxruntime", argv, cwd=job.work, timeout=self.timeout, purpose=purpose)
        return ConversionPlan(self.id, self.engine, job.precision, writes, (cmd,), {"model": out})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        return Artifact({"model": plan.outputs["model"]}, plain_specs(job.inputs), plain_specs(job.outputs))


def _int8_options(job: ConversionJob) -> tuple[str, list[str]]:
    """job.options' calibrate_method and exclude_nodes, checked (InputError names the option)."""
    from edgesdk.errors import InputError

    method = str(job.options.get("calibrate_method") or "minmax")
    if method not in METHODS:
        raise InputError(f"calibrate_method {method!r} is not one onnxruntime offers: {', '.join(METHODS)}")
    exclude = job.options.get("exclude_nodes") or []
    if isinstance(exclude, str) or not all(isinstance(x, str) and x for x in exclude):
        raise InputError(f"exclude_nodes must be a list of node names, not {exclude!r}")
    return method, list(dict.fromkeys(exclude))


def _opset_of(path: Path) -> int | None:
    """The segment's default-domain opset, read without its weights; None when the file is not there yet."""
    if not Path(path).is_file():
        return None
    import onnx

    from edgesdk.toolchains.adapters._ort_tool import onnx_opset

    return onnx_opset(onnx.load(str(path), load_external_data=False))

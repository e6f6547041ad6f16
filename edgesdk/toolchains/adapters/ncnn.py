"""ncnn: ONNX -> .ncnn.param/.ncnn.bin with the pnnx binary from the ncnn toolchain venv (fp32, fp16)."""

from __future__ import annotations

import re
from pathlib import Path

from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.adapters.base import Adapter, Artifact, ConversionJob, EnvStatus
from edgesdk.toolchains.executor import Command, ConversionPlan

_PNNX_DTYPES = {"float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int8": "i8", "uint8": "u8"}


class NcnnAdapter(Adapter):
    id = "ncnn"
    engine = "ncnn"
    precisions = ("fp32", "fp16")
    unsupported = {"int8": "ncnn int8 needs ncnn2table and ncnn2int8, which are not in the PyPI wheels of ncnn or "
                           "pnnx (only the pnnx converter is); edgesdk does not fake it. Use --engine mnn or "
                           "--engine tflite for int8"}
    # The pnnx wheel declares torch as a dependency but its converter is a self-contained binary.
    pip_args = ("--no-deps",)

    def __init__(self, venv: Path | None = None, binary: Path | None = None) -> None:
        super().__init__(venv)
        self._binary = binary

    @property
    def binary(self) -> Path:
        """The pnnx executable inside the venv's pnnx package (not the console script: it imports torch)."""
        if self._binary is not None:
            return self._binary
        found = sorted(self.venv.glob("lib/python3*/site-packages/pnnx/pnnx"))
        return found[0] if found else self.venv / "lib" / "python3" / "site-packages" / "pnnx" / "pnnx"

    def check_env(self) -> EnvStatus:
        if not self.venv_ready():
            return self.missing_venv()
        if not self.binary.is_file():
            return EnvStatus(self.id, False, None, f"the pnnx binary is missing from {self.venv}",
                             f"edgesdk toolchain install {self.id} --force")
        from edgesdk.toolchains.install import venv_package_version

        ver = venv_package_version(self.venv, "pnnx")
        return EnvStatus(self.id, True, ver, f"pnnx {ver} ({self.binary})")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.check_precision(job.precision)
        w, s = job.work, job.segment
        shapes = ",".join("[" + ",".join(str(d) for d in i.shape) + "]" + _PNNX_DTYPES.get(i.dtype, "f32")
                          for i in job.inputs)
        param, binf = w / f"{s}_ncnn.param", w / f"{s}_ncnn.bin"
        argv = (
            str(self.binary), str(job.onnx), f"inputshape={shapes}", f"fp16={1 if job.precision == 'fp16' else 0}",
            f"ncnnparam={param}", f"ncnnbin={binf}", f"ncnnpy={w / f'{s}_ncnn.py'}",
            f"pnnxparam={w / f'{s}.pnnx.param'}", f"pnnxbin={w / f'{s}.pnnx.bin'}",
            f"pnnxpy={w / f'{s}_pnnx.py'}", f"pnnxonnx={w / f'{s}.pnnx.onnx'}",
        )
        purpose = ("ONNX -> ncnn, weights stored as fp16" if job.precision == "fp16" else "ONNX -> ncnn, fp32 weights")
        cmd = Command("pnnx", argv, cwd=w, timeout=self.timeout, purpose=purpose)
        return ConversionPlan(self.id, self.engine, job.precision, (), (cmd,), {"param": param, "bin": binf})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        py = job.work / f"{job.segment}_ncnn.py"
        text = py.read_text(encoding="utf-8", errors="replace") if py.is_file() else ""
        batch = {m.group(1): int(m.group(2)) for m in
                 re.finditer(r'ex\.input\("(\w+)",\s*ncnn\.Mat\([^)]*batch_index=(\d+)', text)}
        batch.update({m.group(1): int(m.group(2)) for m in re.finditer(r'(out\d+)\.numpy\(batch_index=(\d+)\)', text)})
        ins = tuple(TensorSpec(i.name, i.shape, i.dtype, engine_name=f"in{k}") for k, i in enumerate(job.inputs))
        outs = tuple(TensorSpec(o.name, o.shape, o.dtype, engine_name=f"out{k}") for k, o in enumerate(job.outputs))
        options: dict[str, object] = {}
        if batch:
            # pnnx's guess of each blob's batch axis; 233 means "no batch axis" (one-op graphs)
            options["batch_index"] = dict(sorted(batch.items()))
        if job.precision == "fp16":
            options["fp16"] = True
        return Artifact({"param": plan.outputs["param"], "bin": plan.outputs["bin"]}, ins, outs, options)

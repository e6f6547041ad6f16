"""MNN: ONNX -> .mnn with MNNConvert (fp32, fp16 weights), int8 with mnnquant and a calibration set.

Both tools are called through the `_tools` extension of the MNN wheel in the toolchain venv, never
through the wheel's console scripts: those import a module that uploads usage data and runs
`pip install` at import time (see toolchains/mnn/toolchain.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters.base import Adapter, Artifact, ConversionJob, ConversionRefused, EnvStatus, plain_specs
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

_CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv)"
_QUANT = "import sys, _tools; _tools.mnnquant(sys.argv)"

#: Feature (activation) calibration method. Measured on the digits CNN (tests/data): KL clipped the
#: sparse activations (held-out accuracy 0.95 vs fp32 0.988), ADMM kept it (0.988); EMA gave chance.
#: ADMM optimises over the whole set at once and is slow on big inputs (a 224x224 MobileNetV3 with 64
#: images ran over 9 minutes), so above ADMM_MAX_ELEMENTS (samples x C x H x W) KL is used.
FEATURE_METHOD = "ADMM"
ADMM_MAX_ELEMENTS = 4_000_000


class MnnAdapter(Adapter):
    id = "mnn"
    engine = "mnn"
    precisions = ("fp32", "fp16", "int8")

    def check_env(self) -> EnvStatus:
        if not self.venv_ready():
            return self.missing_venv()
        from edgesdk.toolchains.install import venv_package_version

        ver = venv_package_version(self.venv, "MNN")
        if ver is None:
            return EnvStatus(self.id, False, None, f"MNN is not installed in {self.venv}",
                             f"edgesdk toolchain install {self.id} --force")
        return EnvStatus(self.id, True, ver, f"MNN {ver} (MNNConvert, mnnquant)")

    def _convert(self, job: ConversionJob, out: Path, extra: tuple[str, ...], purpose: str) -> Command:
        argv = (str(self.python), "-c", _CONVERT, "-f", "ONNX", "--modelFile", str(job.onnx), "--MNNModel", str(out),
                "--bizCode", "edgesdk", *extra)
        return Command("mnnconvert", argv, cwd=job.work, timeout=self.timeout, purpose=purpose)

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.check_precision(job.precision)
        out = job.work / f"{job.segment}_mnn.mnn"
        if job.precision == "fp32":
            return ConversionPlan(self.id, self.engine, "fp32", (),
                                  (self._convert(job, out, (), "ONNX -> MNN, fp32"),), {"model": out})
        if job.precision == "fp16":
            return ConversionPlan(self.id, self.engine, "fp16", (),
                                  (self._convert(job, out, ("--fp16",), "ONNX -> MNN, weights stored as fp16"),),
                                  {"model": out})
        cal = job.calib
        if cal is None:
            raise InputError("int8 needs a calibration set: pass --calib DIR")
        if cal.images is None or len(job.inputs) != 1 or len(job.inputs[0].shape) != 4:
            raise ConversionRefused(
                "mnnquant", "mnnquant calibrates from images fed to a single 4-D image input; this segment's "
                "inputs are intermediate tensors or non-image data, whose 'sequence' mode gave wrong results or "
                "crashed in MNN 3.6.1")
        n, c, h, w = job.inputs[0].shape
        fmt = {1: "GRAY", 3: cal.color}.get(c)
        if fmt is None:
            raise ConversionRefused("mnnquant", f"mnnquant reads 1- or 3-channel images; the input has {c} channels")
        method = job.options.get("mnn_feature_method") or (
            FEATURE_METHOD if cal.count * c * h * w <= ADMM_MAX_ELEMENTS else "KL")
        float_model = job.work / f"{job.segment}_mnn_float.mnn"
        config_path = job.work / f"{job.segment}_mnnquant.json"
        config = {
            "format": fmt, "mean": list(cal.mean or (0.0,) * c), "normal": list(cal.normal or (1.0,) * c),
            "width": w, "height": h, "path": str(cal.images) + "/", "used_image_num": cal.count,
            "feature_quantize_method": method, "weight_quantize_method": "MAX_ABS",
        }
        write = FileWrite(config_path, (json.dumps(config, indent=2) + "\n").encode(),
                          "mnnquant configuration: the declared preprocessing as MNN's (pixel - mean) * normal")
        # keepInputFormat 0: with the default (1) mnnquant's calibration mis-reads the input (checked: chance-level
        # accuracy); the model then takes its input as NC4HW4, which the runtime feeds via MNN.expr.convert.
        conv = self._convert(job, float_model, ("--keepInputFormat", "0"), "ONNX -> MNN fp32, the model mnnquant reads")
        quant = Command("mnnquant", (str(self.python), "-c", _QUANT, str(float_model), str(out), str(config_path)),
                        cwd=job.work, timeout=self.timeout,
                        purpose=f"int8: {method} activation calibration on {cal.count} images, MAX_ABS weights")
        return ConversionPlan(self.id, self.engine, "int8", (write,), (conv, quant), {"model": out},
                              (f"feature_quantize_method {method}", "input format NC4HW4 (keepInputFormat 0)"))

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        options: dict[str, object] = {}
        if job.precision == "int8":
            options["input_format"] = "NC4HW4"
        if job.precision == "fp16":
            options["fp16"] = True
        return Artifact({"model": plan.outputs["model"]}, plain_specs(job.inputs), plain_specs(job.outputs), options)

"""Horizon BPU (RDK X3, bernoulli2): opset-11 ONNX, calibration data, hb_mapper YAML; checker + makertbin.

hb_mapper runs natively or in the OpenExplorer container; it was not run on this machine (its YAML
and commands are golden-tested, its checker table is parsed from documented-format fixtures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.adapters._accel import AcceleratorAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

IMAGE = "openexplorer/ai_toolchain_ubuntu_20_x3j5_gpu:v1.0.0"
_OPSET = (
    "import sys, onnx\n"
    "from onnx import version_converter\n"
    "m = onnx.load(sys.argv[1]); v = next(o.version for o in m.opset_import if o.domain in ('', 'ai.onnx'))\n"
    "try:\n"
    "    m = version_converter.convert_version(m, 11) if v != 11 else m\n"
    "except RuntimeError:\n"
    "    # no down-converter for some ops (e.g. Relu 14 -> 11): relabel the opset, unless an op's inputs or\n"
    "    # attributes changed meaning after 11 (axes moved to inputs; Softmax's axis semantics)\n"
    "    changed = {'Squeeze', 'Unsqueeze', 'Split', 'ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin',\n"
    "               'ReduceProd', 'ReduceL2', 'Softmax', 'LogSoftmax', 'Hardmax', 'Resize', 'Pad'}\n"
    "    bad = sorted({n.op_type for n in m.graph.node if n.op_type in changed})\n"
    "    if bad: sys.exit(f'cannot express {bad} in opset 11 for hb_mapper')\n"
    "    for o in m.opset_import:\n"
    "        if o.domain in ('', 'ai.onnx'): o.version = 11\n"
    "onnx.checker.check_model(m, full_check=True); onnx.save(m, sys.argv[2])\n"
)
# Horizon's calibration format: one file per sample, the *training-layout* input before the mean/scale
# that hb_mapper inserts (input_type_train rgb/bgr: pixel values 0..255, NCHW, float32, np.tofile).
_CAL = (
    "import sys, pathlib, numpy as np\n"
    "arrays, name, out, mean, scale = sys.argv[1:6]\n"
    "a = np.load(arrays)[name].astype(np.float32); d = pathlib.Path(out); d.mkdir(parents=True, exist_ok=True)\n"
    "m = np.array([float(v) for v in mean.split(',')], np.float32) if mean != '-' else None\n"
    "s = np.array([float(v) for v in scale.split(',')], np.float32) if scale != '-' else None\n"
    "for i, x in enumerate(a):\n"
    "    if m is not None: x = x / s[:, None, None] + m[:, None, None]\n"
    "    np.ascontiguousarray(x[None], dtype=np.float32).tofile(d / f'{i:05d}.bin')\n"
)


def hb_yaml(job: ConversionJob, onnx11: Path, cal_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The hb_mapper makertbin configuration (model / input / calibration / compiler parameters, [HZ-ptq])."""
    cal = job.calib
    inp = job.inputs[0]
    image = cal is not None and cal.images is not None and cal.mean is not None and cal.normal is not None \
        and len(job.inputs) == 1 and len(inp.shape) == 4 and inp.shape[1] == 3
    ip: dict[str, Any] = {"input_name": inp.name, "input_shape": "x".join(str(d) for d in inp.shape)}
    if image:
        assert cal is not None and cal.mean is not None and cal.normal is not None
        ip.update({"input_type_rt": "nv12", "input_layout_rt": "NHWC",
                   "input_type_train": cal.color.lower(), "input_layout_train": "NCHW",
                   "norm_type": "data_mean_and_scale",
                   "mean_value": " ".join(f"{m:.6g}" for m in cal.mean),
                   "scale_value": " ".join(f"{n:.10g}" for n in cal.normal)})
    else:
        ip.update({"input_type_rt": "featuremap", "input_layout_rt": "NCHW", "input_type_train": "featuremap",
                   "input_layout_train": "NCHW", "norm_type": "no_preprocess"})
    return {
        "model_parameters": {"onnx_model": str(onnx11), "march": "bernoulli2", "working_dir": str(out_dir),
                             "output_model_file_prefix": job.segment, "layer_out_dump": False},
        "input_parameters": ip,
        "calibration_parameters": {"cal_data_dir": str(cal_dir), "cal_data_type": "float32",
                                   "calibration_type": "default", "per_channel": True},
        "compiler_parameters": {"compile_mode": "latency", "optimize_level": "O3", "core_num": 1, "debug": False},
    }


class HorizonAdapter(AcceleratorAdapter):
    id = "horizon"
    engine = "bpu"
    scheme = "bpu"
    vendor_tools = ("hb_mapper",)
    vendor_binary = "hb_mapper"
    container_image = IMAGE
    vendor_roles = ("model", "checker")
    install_hint = (f"docker pull {IMAGE} (x86-64; mount the OpenExplorer package), or install hb_mapper from "
                    "Horizon's OpenExplorer (Ai_Toolchain_Package) for the X3")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.need_calib(job)
        assert job.calib is not None
        w, s = job.work, job.segment
        onnx11, cal_dir, out_dir = w / f"{s}_opset11.onnx", w / f"{s}_cal_data", w / f"{s}_bpu"
        cfg = w / f"{s}_hb_mapper.yaml"
        conf = hb_yaml(job, onnx11, cal_dir, out_dir)
        image = conf["input_parameters"]["norm_type"] != "no_preprocess"
        cal = job.calib
        mean = ",".join(f"{m:.6g}" for m in cal.mean) if image and cal.mean else "-"
        scale = ",".join(f"{n:.10g}" for n in cal.normal) if image and cal.normal else "-"
        inp = job.inputs[0]
        shape = "x".join(str(d) for d in inp.shape)
        cmds = (
            self.sim_command(job),
            Command("python", (self.host_python, "-c", _OPSET, str(job.onnx), str(onnx11)), cwd=w, timeout=300,
                    purpose="hb_mapper takes ONNX opset 10/11: convert the segment to opset 11"),
            Command("python", (self.host_python, "-c", _CAL, str(cal.arrays), inp.name, str(cal_dir), mean, scale),
                    cwd=w, timeout=600, purpose="cal_data_dir in Horizon's format: one float32 .bin per sample, "
                                                "training layout, before mean/scale"),
            Command("hb_mapper", self.wrap(["hb_mapper", "checker", "--model-type", "onnx", "--march", "bernoulli2",
                                            "--model", str(onnx11), "--input-shape", inp.name, shape], w), cwd=w,
                    timeout=1800, purpose="per-node BPU/CPU placement (parsed into the support report)"),
            Command("hb_mapper", self.wrap(["hb_mapper", "makertbin", "--config", str(cfg), "--model-type", "onnx"], w),
                    cwd=w, timeout=3600, purpose="PTQ calibration and compilation to a .bin for the X3 BPU"),
        )
        text = "# hb_mapper makertbin configuration written by edgesdk\n" + yaml.safe_dump(conf, sort_keys=False)
        return ConversionPlan(self.id, self.engine, "int8", (FileWrite(cfg, text.encode(), "hb_mapper YAML"),), cmds,
                              {"sim": self.sim_path(job), "onnx11": onnx11, "model": out_dir / f"{s}.bin"})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        ins = tuple(TensorSpec(i.name, i.shape, i.dtype) for i in job.inputs)
        outs = tuple(TensorSpec(o.name, o.shape, o.dtype) for o in job.outputs)
        color = job.calib.color if job.calib else "RGB"
        return Artifact({"model": plan.outputs["model"]}, ins, outs, {"color": color, "model_name": job.segment})


__all__ = ["IMAGE", "HorizonAdapter", "hb_yaml"]

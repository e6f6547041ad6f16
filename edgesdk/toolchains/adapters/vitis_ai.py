"""Vitis AI DPU (Kria KV260): int8 with power-of-two scales, then `vai_c_xir -x ... -a arch.json -o ... -n ...`.

Quantizer: vai_q_onnx when importable, else onnxruntime QDQ with the DPU's settings (per-tensor,
symmetric int8, power-of-two scales; edgesdk.simulate scheme "dpu"). vai_c_xir runs natively or in
the Vitis AI container; it was not run on this machine (golden-tested commands, parsed logs).
"""

from __future__ import annotations

import importlib.util
import json
import re

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import TensorSpec
from edgesdk.toolchains.adapters._accel import AcceleratorAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

IMAGE = "xilinx/vitis-ai-pytorch-cpu:ubuntu2004-3.5.0.306"
#: DPUCZDX8G_ISA1_B4096 fingerprints by the Vitis AI release the board image's DPU IP comes from:
#: 2.5 -> 0x101000016010407, 3.0 and later -> 0x101000056010407 (amd/Kria-RoboticsAI#1 quoting
#: Xilinx/Vitis-AI#1145 and the target_factory DPUCZDX8G_ISA1_B4096.prototxt of each release).
FINGERPRINTS = {"2.5": "0x101000016010407", "3.0": "0x101000056010407", "3.5": "0x101000056010407"}
DEFAULT_VAI = "3.5"
_VAI_Q = (
    "import sys, numpy as np, vai_q_onnx\n"
    "from onnxruntime.quantization import CalibrationDataReader\n"
    "d = np.load(sys.argv[2]); names = d.files\n"
    "class R(CalibrationDataReader):\n"
    "    def __init__(self): self.i = 0\n"
    "    def get_next(self):\n"
    "        if self.i >= len(d[names[0]]): return None\n"
    "        self.i += 1; return {n: d[n][self.i - 1:self.i] for n in names}\n"
    "vai_q_onnx.quantize_static(sys.argv[1], sys.argv[3], R(), quant_format=vai_q_onnx.QuantFormat.QDQ,\n"
    "    calibrate_method=vai_q_onnx.PowerOfTwoMethod.MinMSE, activation_type=vai_q_onnx.QuantType.QInt8,\n"
    "    weight_type=vai_q_onnx.QuantType.QInt8, enable_dpu=True, extra_options={'ActivationSymmetric': True})\n"
)


def arch_json(fingerprint: str) -> bytes:
    """arch.json as vai_c_xir takes it: the DPU's fingerprint (the target the compiler builds for)."""
    return (json.dumps({"fingerprint": fingerprint}, indent=2) + "\n").encode()


def parse_xdputil_query(text: str) -> list[str]:
    """The DPU fingerprints `xdputil query` prints on the board (its JSON "kernels"[].fingerprint)."""
    try:
        data = json.loads(text)
        return [str(k["fingerprint"]).lower() for k in data.get("kernels", []) if "fingerprint" in k]
    except (ValueError, AttributeError, TypeError):
        return [m.lower() for m in re.findall(r'"fingerprint"\s*:\s*"(0x[0-9a-fA-F]+)"', text)]


def check_fingerprint(arch: str, board: str | None) -> None:
    """InputError before compiling when arch.json's fingerprint is not the board's DPU fingerprint.

    This is the mismatch that makes VART abort on the board with "CHECK fingerprint fail"
    (Xilinx/Vitis-AI#263, #1195, #975; Vitis-AI-Tutorials#117)."""
    if board is None:
        return
    if arch.lower() != board.lower():
        known = {v: k for k, v in FINGERPRINTS.items()}
        why = f" (that is the Vitis AI {known[board.lower()]} DPU IP)" if board.lower() in known else ""
        raise InputError(f"DPU fingerprint mismatch: arch.json targets {arch}, the board's DPU is {board}{why}. "
                         "VART would abort with 'CHECK fingerprint fail'. Pass the board's Vitis AI version "
                         "(--vai-version) or its fingerprint from `xdputil query` so that they agree.")


class VitisAiAdapter(AcceleratorAdapter):
    id = "vitis-ai"
    engine = "vart"
    scheme = "dpu"
    vendor_tools = ("vai_c_xir",)
    vendor_binary = "vai_c_xir"
    container_image = IMAGE
    vendor_roles = ("model",)
    install_hint = (f"docker pull {IMAGE} (x86-64), or run inside the Vitis AI 3.5 container "
                    "(https://xilinx.github.io/Vitis-AI/3.5/html/docs/install/install.html)")

    def container_prefix(self) -> tuple[str, ...]:
        return ("conda", "run", "-n", "vitis-ai-pytorch")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.need_calib(job)
        assert job.calib is not None
        w, s = job.work, job.segment
        vai = str(job.options.get("vai_version", DEFAULT_VAI))
        if vai not in FINGERPRINTS and "fingerprint" not in job.options:
            raise InputError(f"unknown Vitis AI version {vai!r}; known: {', '.join(FINGERPRINTS)}")
        fp = str(job.options.get("fingerprint") or FINGERPRINTS[vai])
        check_fingerprint(fp, job.options.get("board_fingerprint"))
        arch = w / f"{s}_arch.json"
        quant = w / f"{s}_vart_quant.onnx"
        cmds = [self.sim_command(job)]
        if job.options.get("use_vai_q_onnx", importlib.util.find_spec("vai_q_onnx") is not None):
            cmds.append(Command("vai_q_onnx", (self.host_python, "-c", _VAI_Q, str(job.onnx), str(job.calib.arrays),
                                               str(quant)), cwd=w, timeout=3600,
                                purpose="vai_q_onnx PTQ: power-of-two MinMSE, int8, enable_dpu"))
        else:
            cmds.append(Command("python", (self.host_python, "-c",
                                           "import shutil, sys; shutil.copyfile(sys.argv[1], sys.argv[2])",
                                           str(self.sim_path(job)), str(quant)), cwd=w, timeout=60,
                                purpose="vai_q_onnx is not installed: the DPU-compatible onnxruntime QDQ (per-tensor, "
                                        "symmetric int8, power-of-two scales) is the quantized model"))
        out = w / f"{s}_vart"
        argv = ["vai_c_xir", "-x", str(quant), "-a", str(arch), "-o", str(out), "-n", s]
        cmds.append(Command("vai_c_xir", self.wrap(argv, w), cwd=w, timeout=3600,
                            purpose=f"compile for DPUCZDX8G_ISA1_B4096 (fingerprint {fp})"))
        return ConversionPlan(self.id, self.engine, "int8",
                              (FileWrite(arch, arch_json(fp), "the KV260 DPU's fingerprint for vai_c_xir"),),
                              tuple(cmds), {"sim": self.sim_path(job), "quant": quant, "model": out / f"{s}.xmodel"},
                              (("vai_c_xir taking vai_q_onnx's QDQ ONNX is unverified here (Xilinx/Vitis-AI#1385); "
                                "the documented input is the xmodel of vai_q_pytorch / vai_q_tensorflow2"),))

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        ins = tuple(TensorSpec(i.name, i.shape, i.dtype, layout="NHWC" if len(i.shape) == 4 else None)
                    for i in job.inputs)
        outs = tuple(TensorSpec(o.name, o.shape, o.dtype, layout="NHWC" if len(o.shape) == 4 else None)
                     for o in job.outputs)
        return Artifact({"model": plan.outputs["model"]}, ins, outs)


__all__ = ["FINGERPRINTS", "IMAGE", "VitisAiAdapter", "arch_json", "check_fingerprint", "parse_xdputil_query"]

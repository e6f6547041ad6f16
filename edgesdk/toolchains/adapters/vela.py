"""Arm Ethos-U (NXP i.MX 93, Ethos-U65-256): full-integer int8 TFLite (tflite adapter), then Arm's vela.

vela (PyPI ethos-u-vela, pinned in toolchains/vela/requirements.txt) runs here, in its own venv
(~/.cache/edgesdk/toolchains/vela/venv). It writes <stem>_vela.tflite (the NPU part as `ethos-u`
custom ops, the rest TFLite builtins run on the Cortex-A55 by the interpreter) and a summary CSV.
Host reference: the int8 TFLite interpreter (Ethos-U is said to match TFLite int8 reference kernels; Arm primary source not yet cited).
"""

from __future__ import annotations

import csv
import io as _io
import sys
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.paths import toolchain_venv
from edgesdk.toolchains.adapters._accel import TfliteCompilerAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob
from edgesdk.toolchains.executor import Command, ConversionPlan

ACCELERATOR = "ethos-u65-256"
#: vela's bundled Arm/vela.ini (ethosu/config_files/Arm/vela.ini in the wheel); NXP's own vela fork/eIQ
#: ini was not found here, so the i.MX 93 is approximated by Arm's U65 High-End system config.
CONFIG = "Arm/vela.ini"
SYSTEM_CONFIG = "Ethos_U65_High_End"
MEMORY_MODE = "Dedicated_Sram_512KB"


@dataclass(frozen=True)
class VelaOp:
    target: str  # "npu" | "cpu"
    op: str
    name: str
    reason: str = ""


@dataclass(frozen=True)
class VelaReport:
    ops: tuple[VelaOp, ...] = ()
    cpu_ops: int = 0
    npu_ops: int = 0
    summary: Mapping[str, str] = field(default_factory=dict)


_OPLINE = re.compile(r"^\s*(NPU|CPU):\s*(\S+)\s*=\s*(.*?)(?:\s+\(outputs .*\))?\s*$")
_COUNT = re.compile(r"^(CPU|NPU) operators\s*=\s*(\d+)")
#: vela 5.2: "Warning (supported operators) operator: CUMSUM, ofm: 'name'" then "Reason: ..." (+ detail lines)
_WARN = re.compile(r"^Warning \(supported operators\) operator:\s*(\S+),\s*ofm:\s*'(.*)'")
_INFO = re.compile(r"^Info:\s*(\S+)\s+'(.*)'\s+is a CPU only op")


def parse_vela_output(text: str) -> VelaReport:
    """vela stdout with --show-cpu-operations: per-op NPU/CPU placement, CPU reasons from the warnings."""
    reasons: dict[str, list[str]] = {}
    wop: dict[str, str] = {}  # tensor -> TFLite op named in the warning
    ops: list[VelaOp] = []
    counts = {"CPU": 0, "NPU": 0}
    summary: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if m := _WARN.match(line):
            last = m.group(2)
            wop[last] = m.group(1)
            reasons.setdefault(last, [])
            continue
        if m := _INFO.match(line):
            reasons.setdefault(m.group(2), []).append("CPU only op")
            last = None
            continue
        if last is not None and line.strip():
            reasons[last].append(line.strip().removeprefix("Reason: "))
            continue
        last = None
        if m := _COUNT.match(line):
            counts[m.group(1)] = int(m.group(2))
        elif m := _OPLINE.match(line):
            ops.append(VelaOp(m.group(1).lower(), m.group(2), m.group(3)))
        elif re.match(r"^[A-Z][A-Za-z ]+?\s{2,}\S", line):
            k, v = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            summary[k] = v.strip()
    ops = [VelaOp(o.target, wop.get(o.name, o.op) if o.target == "cpu" else o.op, o.name,
                  "; ".join(reasons.get(o.name, ())) if o.target == "cpu" else "") for o in ops]
    return VelaReport(tuple(ops), counts["CPU"], counts["NPU"], summary)


def parse_vela_summary_csv(text: str) -> dict[str, float]:
    """The <stem>_summary_<system>.csv: cycles and inference time; returns inference_ms, cycles_total, ..."""
    rows = list(csv.DictReader(_io.StringIO(text)))
    if not rows:
        return {}
    r = rows[0]
    out: dict[str, float] = {}
    for k in ("cycles_total", "cycles_npu", "cycles_sram_access", "cycles_dram_access", "nn_macs",
              "core_clock", "inference_time", "inferences_per_second"):
        if r.get(k) not in (None, ""):
            try:
                out[k] = float(r[k])
            except ValueError:
                pass
    if "inference_time" in out:
        out["inference_ms"] = out["inference_time"] * 1000.0
    return out


class VelaAdapter(TfliteCompilerAdapter):
    id = "vela"
    engine = "ethosu"
    scheme = "ethosu"
    vendor_tools = ("vela",)
    vendor_binary = "vela"
    vendor_roles = ("model", "summary", "log")
    install_hint = "edgesdk toolchain install vela"
    timeout = 600.0

    def __init__(self, venv: Path | None = None, python: str | None = None, vendor: str | None = None,
                 mode: str | None = None, tflite_venv: Path | None = None) -> None:
        self.vela_venv = Path(venv) if venv else toolchain_venv(self.id)  # edgesdk toolchain install vela
        super().__init__(None, python, vendor or str(self.vela_venv / "bin" / "vela"), mode, tflite_venv)

    def vendor_mode(self) -> str | None:
        if self._mode is not None:
            return self._mode
        return "native" if Path(self.vendor).is_file() else None

    def compile_step(self, tfl: Path, work: Path, segment: str, options: Mapping[str, Any]
                     ) -> tuple[Command, dict[str, Path]]:
        out_dir = work / f"{segment}_vela"
        system = str(options.get("system_config", SYSTEM_CONFIG))
        argv = [self.vendor, str(tfl), "--accelerator-config", str(options.get("accelerator", ACCELERATOR)),
                "--config", str(options.get("vela_config", CONFIG)), "--system-config", system,
                "--memory-mode", str(options.get("memory_mode", MEMORY_MODE)), "--show-cpu-operations",
                "--output-dir", str(out_dir)]
        stem = tfl.stem
        outputs = {"model": out_dir / f"{stem}_vela.tflite", "summary": out_dir / f"{stem}_summary_{system}.csv",
                   "log": work / f"{segment}_vela.log"}
        # vela prints its per-op placement (--show-cpu-operations) on stdout only: kept in a log for the report
        tee = [sys.executable, "-c", _TEE, str(outputs["log"])]
        cmd = Command("vela", (*tee, *argv), cwd=work, timeout=self.timeout, produces=(outputs["model"],),
                      purpose="compile the int8 TFLite for the Ethos-U65-256 (vela; --show-cpu-operations: per-op "
                              "NPU/CPU placement; summary CSV: cycles and estimated inference time)")
        return cmd, outputs

    def report(self, plan: ConversionPlan, stdout: str | None = None) -> dict[str, Any]:
        """Data for the compiler view ("vendor compiler") and the estimate."""
        log = plan.outputs.get("log")  # vela's stdout, if the caller saved it
        text = stdout if stdout is not None else (log.read_text(encoding="utf-8", errors="replace")
                                                  if log is not None and log.is_file() else "")
        rep = parse_vela_output(text)
        summ = plan.outputs.get("summary")
        est = parse_vela_summary_csv(summ.read_text(encoding="utf-8")) if summ is not None and summ.is_file() else {}
        return {"label": "vendor compiler", "tool": "vela",
                "ops": [{"target": o.target, "op": o.op, "name": o.name, "reason": o.reason} for o in rep.ops],
                "npu_ops": rep.npu_ops, "cpu_ops": rep.cpu_ops, "estimate": est}

    def log_notes(self, plan: ConversionPlan) -> tuple[str, ...]:
        r = self.report(plan)
        notes = [f"vela (vendor compiler): {r['npu_ops']} ops on the Ethos-U, {r['cpu_ops']} on the CPU"]
        notes += [f"CPU: {o['op']} {o['name']}: {o['reason']}" for o in r["ops"] if o["target"] == "cpu"]
        if "inference_ms" in r["estimate"]:
            notes.append(f"vela estimate: {r['estimate']['inference_ms']:.4f} ms per inference "
                         f"({int(r['estimate'].get('cycles_total', 0))} cycles), NPU only, not measured")
        return tuple(notes)

    def compiled_options(self, plan: ConversionPlan) -> dict[str, Any]:
        """vela's static estimate of the NPU part: the profile's expectation for the board (edgesdk.profile.expect)."""
        est = self.report(plan)["estimate"].get("inference_ms")
        return {"vendor_estimate_ms": round(float(est), 6), "vendor_estimate_by": "vela (static, NPU only)"} \
            if est is not None else {}

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        ins, outs = self.tflite_io(job, plan)
        return Artifact({"model": plan.outputs["model"]}, ins, outs, options=self.compiled_options(plan),
                        notes=self.log_notes(plan), compiler_view=self.report(plan))


#: `python -c _TEE LOG argv...`: run argv, pass its output through, and keep a copy of it in LOG.
_TEE = ("import subprocess, sys; r = subprocess.run(sys.argv[2:], capture_output=True, text=True); "
        "open(sys.argv[1], 'w').write(r.stdout + r.stderr); sys.stdout.write(r.stdout); "
        "sys.stderr.write(r.stderr); sys.exit(r.returncode)")

__all__ = ["VelaAdapter", "VelaOp", "VelaReport", "parse_vela_output", "parse_vela_summary_csv"]

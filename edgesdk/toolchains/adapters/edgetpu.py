"""Coral Edge TPU: full-integer int8 TFLite (tflite adapter), then `edgetpu_compiler -s -m <runtime>`.

edgetpu_compiler exists for x86-64 Linux only and was not run on this machine: its commands and the
parse of its log are golden-tested (tests/unit/test_npu_*.py), the int8 TFLite before it is real.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesdk.toolchains.adapters._accel import TfliteCompilerAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob
from edgesdk.toolchains.executor import Command, ConversionPlan

#: `-m`: the runtime version of the board's libedgetpu. libedgetpu1-std 16.0 (Coral's last release,
#: the package Raspberry Pi OS users install) is runtime 14; an older 15.0 runtime is 13 and refuses
#: models built for 14 ("Package requires runtime version (14), which is newer than this runtime
#: version (13)", google-coral/edgetpu#435). Override with job option min_runtime_version.
RUNTIME_VERSION = 14


class EdgeTpuAdapter(TfliteCompilerAdapter):
    id = "edgetpu"
    engine = "edgetpu"
    scheme = "edgetpu"
    vendor_tools = ("edgetpu_compiler",)
    vendor_binary = "edgetpu_compiler"
    vendor_roles = ("model", "log")
    install_hint = ("x86-64 Linux only: add Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/"
                    "#system-requirements) and `sudo apt-get install edgetpu-compiler`")
    timeout = 600.0

    def compile_step(self, tfl: Path, work: Path, segment: str, options: Mapping[str, Any]
                     ) -> tuple[Command, dict[str, Path]]:
        """`edgetpu_compiler -s -m <runtime> -o <dir> [-n N] model.tflite` and the files it writes."""
        out_dir = work / f"{segment}_edgetpu"
        argv = [self.vendor, "-s", "-m", str(int(options.get("min_runtime_version", RUNTIME_VERSION))),
                "-o", str(out_dir)]
        n = int(options.get("num_segments", 1) or 1)
        if n > 1:
            argv += ["-n", str(n)]
        argv.append(str(tfl))
        stem = tfl.stem
        outputs: dict[str, Path] = {}
        if n > 1:
            for k in range(n):
                outputs[f"model_{k}"] = out_dir / f"{stem}_segment_{k}_of_{n}_edgetpu.tflite"
        else:
            outputs["model"] = out_dir / f"{stem}_edgetpu.tflite"
        outputs["log"] = out_dir / f"{stem}_edgetpu.log"
        cmd = Command("edgetpu_compiler", self.wrap(argv, work, "native"), cwd=work, timeout=self.timeout,
                      purpose="compile the int8 TFLite for the Edge TPU (-s: per-op mapping log; -m: the board's "
                              "libedgetpu runtime version" + ("; -n: pipeline segments" if n > 1 else "") + ")")
        return cmd, outputs

    def log_notes(self, plan: ConversionPlan) -> tuple[str, ...]:
        """Warnings from the compiler's log (e.g. parameter data that does not fit the on-chip cache)."""
        log = plan.outputs.get("log")
        if log is None or not log.is_file():
            return ()
        from edgesdk.toolchains.logs import edgetpu_cache_warning, parse_edgetpu_log

        parsed = parse_edgetpu_log(log.read_text(encoding="utf-8", errors="replace"))
        w = edgetpu_cache_warning(parsed)
        bad = "; ".join(f"{o.op} x{o.count}: {o.reason}" for o in parsed.ops if o.target == "cpu")
        # The same facts `support_from_compiler_log` puts into the support report, for the manifest.
        summary = (f"Edge TPU compiler log: {parsed.tpu_ops} of {parsed.total_ops} ops on the Edge TPU, "
                   f"{parsed.cpu_ops} on the CPU; {parsed.on_chip_mib:.2f} MiB of parameters on-chip, "
                   f"{parsed.off_chip_mib:.2f} MiB off-chip" + (f"; not mapped: {bad}" if bad else ""))
        return tuple(x for x in (summary, w) if x)

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        ins, outs = self.tflite_io(job, plan)
        notes = self.log_notes(plan)
        return Artifact({"model": plan.outputs["model"]}, ins, outs, notes=notes)


__all__ = ["RUNTIME_VERSION", "EdgeTpuAdapter"]

from edgesdk.toolchains.adapters._accel import AcceleratorMissing

__all__ += ["AcceleratorMissing"]

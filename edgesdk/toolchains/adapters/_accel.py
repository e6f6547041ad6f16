"""Shared shape of the four accelerator adapters: host pre-steps, then the vendor compiler (native or container).

plan(job) returns one ConversionPlan: everything that runs here (int8 simulation, export, config
files) and then the vendor compiler's commands. `split` separates the two, so that convert can run
everything up to the compiler when the compiler is absent, and `instructions` says how to finish.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters.base import Adapter, ConversionJob, EnvStatus
from edgesdk.toolchains.executor import Command, ConversionPlan


class AcceleratorAdapter(Adapter):
    precisions = ("int8",)
    unsupported = {"fp32": "the accelerator runs int8 only (pass --precision int8 --calib DIR)",
                   "fp16": "the accelerator runs int8 only (pass --precision int8 --calib DIR)"}
    #: host simulation scheme (edgesdk.simulate.SCHEMES)
    scheme: ClassVar[str] = ""
    #: tool names (Command.tool) of the vendor compiler's commands
    vendor_tools: ClassVar[tuple[str, ...]] = ()
    #: the vendor binary looked up on PATH
    vendor_binary: ClassVar[str] = ""
    #: container image that carries the vendor tools ("" = none)
    container_image: ClassVar[str] = ""
    #: roles the vendor compiler produces (the rest are made here)
    vendor_roles: ClassVar[tuple[str, ...]] = ("model",)
    install_hint: ClassVar[str] = ""
    #: the vendor toolchain simulates its compiled model on the host (RKNN's PC simulator): with it here, its outputs
    #: on convert's reference input are the accelerator's check (job option `check_feeds`, `simulated_outputs`)
    vendor_simulator: ClassVar[bool] = False

    def __init__(self, venv: Path | None = None, python: str | None = None, vendor: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__(venv)
        self.host_python = python or sys.executable
        self.vendor = vendor or self.vendor_binary
        self._mode = mode  # "native" | "container" | None (detect)

    # -- environment ---------------------------------------------------------------------------------
    def vendor_mode(self) -> str | None:
        """How the vendor compiler runs here: "native" (on PATH), "container" (docker + the image), or None."""
        if self._mode is not None:
            return self._mode
        if shutil.which(self.vendor):
            return "native"
        if self.container_image and shutil.which("docker"):
            try:
                r = subprocess.run(["docker", "image", "inspect", self.container_image], capture_output=True,
                                   timeout=30, check=False)
            except (OSError, subprocess.TimeoutExpired):
                return None
            if r.returncode == 0:
                return "container"
        return None

    def vendor_env(self) -> EnvStatus:
        mode = self.vendor_mode()
        if mode is None:
            return EnvStatus(self.id, False, None, f"{self.vendor} is not on this machine"
                             + (f" and the container image {self.container_image} is not pulled"
                                if self.container_image else ""), self.install_hint)
        return EnvStatus(self.id, True, None, f"{self.vendor} ({mode})")

    def check_env(self) -> EnvStatus:
        """The host part (simulation, export, configs): onnxruntime in this environment."""
        try:
            from importlib import metadata

            ver = metadata.version("onnxruntime")
        except Exception:
            return EnvStatus(self.id, False, None, "onnxruntime is not installed", "pip install 'edgesdk[host]'")
        return EnvStatus(self.id, True, ver, f"host steps with onnxruntime {ver}; compiler: {self.vendor_env().detail}")

    # -- planning helpers ------------------------------------------------------------------------------
    def need_calib(self, job: ConversionJob) -> None:
        self.check_precision(job.precision)
        if job.calib is None:
            raise InputError("int8 needs a calibration set: pass --calib DIR")

    def sim_path(self, job: ConversionJob) -> Path:
        return job.work / f"{job.segment}_{self.engine}_sim.onnx"

    def sim_command(self, job: ConversionJob) -> Command:
        assert job.calib is not None
        return Command("onnxruntime", (self.host_python, "-m", "edgesdk.simulate", "--model", str(job.onnx),
                                       "--calib", str(job.calib.arrays), "--out", str(self.sim_path(job)),
                                       "--scheme", self.scheme), cwd=job.work, timeout=1800,
                       purpose=f"host int8 simulation ({self.scheme} scheme): the CPU version of this segment "
                               "and what `edgesdk verify` measures")

    def wrap(self, argv: Sequence[str], work: Path, mode: str | None = None) -> tuple[str, ...]:
        """The vendor command, natively or in its container (work dir mounted at the same path)."""
        mode = mode or self.vendor_mode() or "native"
        if mode == "container" and self.container_image:
            return ("docker", "run", "--rm", "-v", f"{work}:{work}", "-w", str(work), self.container_image,
                    *self.container_prefix(), *argv)
        return tuple(argv)

    def container_prefix(self) -> tuple[str, ...]:
        return ()

    def simulated_outputs(self, job: ConversionJob, plan: ConversionPlan) -> list[dict[str, Any]] | None:
        """The vendor simulator's outputs on job.options["check_feeds"] (a .npz of N samples per input), one dict per
        sample; None without a vendor simulator."""
        return None

    @staticmethod
    def without_simulation(plan: ConversionPlan) -> ConversionPlan:
        """`plan` without the host int8 simulation (its command and its output): for a build that only asks the
        compiler something (its placement, its simulator's verdict), not a segment's conversion."""
        from dataclasses import replace

        return replace(plan, commands=tuple(c for c in plan.commands if c.tool != "onnxruntime"),
                       outputs={k: v for k, v in plan.outputs.items() if k != "sim"})

    def placement_build(self, onnx_path: Path, work: Path, inputs: Sequence[Any], outputs: Sequence[Any],
                        options: Mapping[str, Any] | None = None) -> tuple[ConversionJob, ConversionPlan]:
        """Compile `onnx_path` int8 on 4 random calibration samples (placement does not depend on the values),
        without the host simulation; returns the executed job and plan (compiler_placement's build)."""
        import numpy as np

        from edgesdk.toolchains.adapters.base import CalibData
        from edgesdk.toolchains.executor import execute

        rng = np.random.default_rng(0)
        calib = work / "placement_calib.npz"
        np.savez(calib, **{t.name: rng.uniform(0, 1, (4, *t.shape[1:])).astype(np.float32) for t in inputs})
        job = ConversionJob("placement", onnx_path, work, "int8", tuple(inputs), tuple(outputs), CalibData(calib, 4),
                            dict(options or {}))
        plan = self.without_simulation(self.plan(job))
        execute(plan)
        return job, plan

    def compiler_placement(self, onnx_path: Path, work: Path, inputs: Sequence[Any], outputs: Sequence[Any]
                           ) -> dict[str, tuple[str, str]] | None:
        """What the vendor compiler itself does with each node of `onnx_path` (static shapes): node -> ("accelerator"
        | "cpu", its words), for the nodes its output can be mapped back to. None when this adapter cannot run its
        compiler for that here (`edgesdk inspect --compiler`)."""
        return None

    # -- the segment's CPU version -----------------------------------------------------------------------------
    def cpu_engine(self) -> str:
        """The engine of this accelerator's CPU version: its toolchain record's `fallback_engine` (onnxruntime when
        the record names none). It runs the segment where the accelerator is absent (verify on the host, a board
        flashed with --fallback cpu) and is checked against the fp32 model before a bundle is written."""
        from edgesdk.toolchains.spec import get_toolchain

        return get_toolchain(self.id).fallback_engine or "onnxruntime"

    def cpu_artifact(self, job: ConversionJob, plan: ConversionPlan, engine: str
                     ) -> tuple[dict[str, Path], tuple[Any, ...] | None, tuple[Any, ...] | None]:
        """The files (and, when they differ from the segment's plain float tensors, the io specs) of the CPU version
        on `engine`. Every accelerator has its host int8 simulation on onnxruntime; an adapter that makes another
        CPU build says so by overriding this."""
        if engine != "onnxruntime":
            raise InputError(f"toolchains/{self.id}/toolchain.yaml: fallback_engine {engine!r}: the {self.id} adapter "
                             "makes a CPU version for onnxruntime only (its host int8 simulation)")
        return {"model": plan.outputs["sim"]}, None, None

    def split(self, plan: ConversionPlan) -> tuple[ConversionPlan, ConversionPlan]:
        pre = [c for c in plan.commands if c.tool not in self.vendor_tools]
        vend = [c for c in plan.commands if c.tool in self.vendor_tools]
        pre_out = {k: v for k, v in plan.outputs.items() if k not in self.vendor_roles and not k.startswith("model_")}
        vend_out = {k: v for k, v in plan.outputs.items() if k in self.vendor_roles or k.startswith("model_")}
        return (ConversionPlan(plan.toolchain, plan.engine, plan.precision, plan.writes, tuple(pre), pre_out,
                               plan.notes),
                ConversionPlan(plan.toolchain, plan.engine, plan.precision, (), tuple(vend), vend_out, plan.notes))

    def instructions(self, plan: ConversionPlan) -> str:
        """How to install the vendor compiler and run the remaining commands, exactly."""
        _, vend = self.split(plan)
        lines = [f"# {self.vendor} is not on this machine. Install: {self.install_hint}", "# then run:"]
        lines += [shlex.join(c.argv) for c in vend.commands]
        return "\n".join(lines) + "\n"


class TfliteCompilerAdapter(AcceleratorAdapter):
    """An accelerator whose compiler takes a full-integer int8 TFLite (Edge TPU, Ethos-U): the tflite toolchain makes
    it (its host steps), then `compile_step` (the vendor's) compiles it."""

    def __init__(self, venv: Path | None = None, python: str | None = None, vendor: str | None = None,
                 mode: str | None = None, tflite_venv: Path | None = None) -> None:
        from edgesdk.toolchains.adapters.tflite import TfliteAdapter

        super().__init__(venv, python, vendor, mode)
        self.tflite = TfliteAdapter(venv=tflite_venv)

    def check_env(self) -> EnvStatus:
        return self.tflite.check_env()  # the host part is the int8 TFLite

    def compile_step(self, tfl: Path, work: Path, segment: str, options: Mapping[str, Any]
                     ) -> tuple[Command, dict[str, Path]]:
        raise NotImplementedError

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.need_calib(job)
        t = self.tflite.plan(job)
        cmd, outs = self.compile_step(t.outputs["model"], job.work, job.segment, job.options)
        outputs = {"tflite": t.outputs["model"], "io": t.outputs["io"], "sim": self.sim_path(job), **outs}
        return ConversionPlan(self.id, self.engine, "int8", t.writes, (*t.commands, self.sim_command(job), cmd),
                              outputs, ("int8 TFLite: full integer, int8 inputs and outputs, static shapes, batch 1",))

    def plan_tflite(self, tfl: Path, work: Path, segment: str, options: Mapping[str, Any] | None = None
                    ) -> ConversionPlan:
        """The compiler step alone, for a .tflite that is already full-integer int8 (`edgesdk convert x.tflite`)."""
        cmd, outs = self.compile_step(tfl, work, segment, options or {})
        return ConversionPlan(self.id, self.engine, "int8", (), (cmd,), {"tflite": tfl, **outs},
                              ("the .tflite as given: full integer int8, compiled as it is",))

    def log_notes(self, plan: ConversionPlan) -> tuple[str, ...]:
        """What the compiler said that the bundle's notes keep (its per-op placement, warnings)."""
        return ()

    def compiled_options(self, plan: ConversionPlan) -> dict[str, Any]:
        """Segment options the compiled model carries (vela: its latency estimate)."""
        return {}

    def cpu_artifact(self, job: ConversionJob, plan: ConversionPlan, engine: str
                     ) -> tuple[dict[str, Path], tuple[Any, ...] | None, tuple[Any, ...] | None]:
        """fallback_engine tflite: the int8 TFLite the compiler takes, on the TFLite interpreter. The accelerator is
        specified to compute what TFLite's int8 reference kernels compute (Ethos-U: see the vela adapter), so this
        is its host reference, and what the board's CPU runs when the accelerator is absent."""
        if engine != "tflite":
            return super().cpu_artifact(job, plan, engine)
        ins, outs = self.tflite_io(job, plan)
        return {"model": plan.outputs["tflite"]}, ins, outs

    def tflite_io(self, job: ConversionJob, plan: ConversionPlan) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """The compiled model's inputs and outputs, matched to the segment's (the TFLite's names are Keras')."""
        import json

        from edgesdk.toolchains.adapters.tflite import _match

        io = json.loads(plan.outputs["io"].read_text(encoding="utf-8"))
        sig = io.get("signature", {})
        both = (*job.inputs, *job.outputs)
        return (_match(job.inputs, io["inputs"], sig.get("inputs", {}), "input", both),
                _match(job.outputs, io["outputs"], sig.get("outputs", {}), "output", both))


__all__ = ["AcceleratorAdapter", "TfliteCompilerAdapter"]


# -- flashing a bundle onto a board whose accelerator is absent -----------------------------------------------

class AcceleratorMissing(InputError):
    """The bundle needs the board's accelerator, which the board does not have (exit 2, with the fix)."""


__all__ += ["AcceleratorMissing"]

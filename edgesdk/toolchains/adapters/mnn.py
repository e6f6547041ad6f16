"""MNN: ONNX -> .mnn with MNNConvert (fp32, fp16 weights), int8 with mnnquant and a calibration set.

Both tools are called through the `_tools` extension of the MNN wheel in the toolchain venv, never
through the wheel's console scripts: those import a module that uploads usage data and runs
`pip install` at import time (see toolchains/mnn/toolchain.yaml).

int8 options (job.options): `mnn_feature_method` (one of `int8_methods`, MNN's activation calibration),
`mnn_weight_method` (one of `weight_methods`) and `exclude_nodes` (ONNX node names of the segment kept in
float: mixed precision). mnnquant exits 0 even when its calibration run failed, with int8 weights and no
activation scale (float activations): the plain int8 plan checks its model for scales (FEATURE_METHOD's comment).
How a kept node stays float in MNN 3.6.1 (read in its source, checked on YOLOv8n):

- names: MNN names each imported op after its ONNX node's first output; its own fusions (Sigmoid + Mul -> SiLU)
  drop the absorbed node, which is mapped to the op computed through it. At run time MNN's geometry turns data
  movement (Concat, Slice, Reshape, ...) into `<op>_raster_<i>` commands, or folds it into a consumer's raster.
  mnnquant's `skip_quant_op_names` matches the op names (weights) and the run-time names (statistics): both are
  listed from the float model (MNN's JSON dump, a debug session).
- what runs int8: a command whose output has a scale, whose inputs all have int8 scales and that MNN can run in
  int8. A skipped Conv keeps float weights, so it runs in float; a UnaryOp runs int8 through its lookup table;
  anything else runs int8 as long as its tensors have scales. So, after mnnquant, the int8 model is edited in
  MNN's JSON form (`mnnconvert -f MNN --JsonFile` and back): kept UnaryOps lose their tables, other kept ops
  the scales of their outputs. KL gives every input of a Concat the Concat's scale (zero when the Concat is
  skipped, which zeroes them): those inputs lose their scales too, as does any zero scale. MNN's run time gives
  a tensor without a scale its neighbour's through data movement, pooling or resize (forward from one input,
  backward from one output): the neighbours lose theirs as well. A UnaryOp left without int8 neighbours loses
  its table (MNN 3.6.1 would run it on float data). JSON prints floats to 6 digits: scales and biases move by
  < 1e-6 relative.
- a debug session of the final model lists which commands run int8: describe() reports each kept node as float
  or not, and the nodes MNN folded away or dropped. Kept in full, YOLOv8n's int8 model equals its fp32 one.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters.base import (
    Adapter,
    Artifact,
    ConversionJob,
    ConversionRefused,
    EnvStatus,
    plain_specs,
)
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

_CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv)"
_QUANT = "import sys, _tools; _tools.mnnquant(sys.argv)"
#: Run in the toolchain venv: `MODEL.mnn OUT.json [--graph]`. Writes the commands a debug session runs (name, type;
#: int8 ones carry " [ DT_INT8 ] "), and with --graph the op list of MNN's own JSON dump (name, type, tensors).
_PROBE = r"""
import json, os, sys
model, out = sys.argv[1], sys.argv[2]
doc = {}
if "--graph" in sys.argv[3:]:
    import _tools
    full = out + ".full.json"
    _tools.mnnconvert(["mnnconvert", "-f", "MNN", "--modelFile", model, "--JsonFile", full])
    with open(full) as f:
        net = json.load(f)
    os.remove(full)
    names = net.get("tensorName") or []
    doc["ops"] = [{"name": o.get("name", ""), "type": o.get("type", ""),
                   "inputs": [names[i] for i in o.get("inputIndexes") or [] if 0 <= i < len(names)],
                   "outputs": [names[i] for i in o.get("outputIndexes") or [] if 0 <= i < len(names)]}
                  for o in net.get("oplists") or []]
    doc["outputs"] = net.get("outputName") or []
import MNN
it = MNN.Interpreter(model)
it.setSessionMode(0)  # Session_Debug: a callback per command
session = it.createSession({"backend": "CPU", "numThread": 1})
commands = []
it.runSessionWithCallBackInfo(session, lambda t, i: True, lambda t, i: commands.append([i.getName(), i.getType()]) or True)
doc["commands"] = commands
with open(out, "w") as f:
    json.dump(doc, f)
print(f"{len(commands)} commands" + (f", {len(doc['ops'])} ops" if "ops" in doc else ""))
"""

#: Feature (activation) calibration method. Measured on the digits CNN (tests/data): KL clipped the
#: sparse activations (held-out accuracy 0.95 vs fp32 0.988), ADMM kept it (0.988); EMA gave chance.
#: ADMM optimises over the whole set at once and is slow on big inputs (a 224x224 MobileNetV3 with 64
#: images ran over 9 minutes), so above ADMM_MAX_ELEMENTS (samples x C x H x W) KL is used. ADMM runs the whole
#: set as one batch: a model whose shapes fix a batch of 1 (YOLOv8n's Reshapes) fails that run, and mnnquant
#: still writes a model, with int8 weights and no activation scale (exit 0), which MNN runs with float activations.
#: The plain int8 plan checks the model (check_int8: activation_scales, int8_shortfall) and calibrates it again with
#: KL when ADMM was the default; a method asked for that fails is refused. The kept-nodes path's edit refuses it.
FEATURE_METHOD = "ADMM"
ADMM_MAX_ELEMENTS = 4_000_000
WEIGHT_METHOD = "MAX_ABS"
#: MNN op types whose weights mnnquant quantizes; skipped, they keep float weights and MNN runs them in float.
CONV_TYPES = frozenset({"Convolution", "ConvolutionDepthwise", "Deconvolution", "DeconvolutionDepthwise"})
#: The casts MNN inserts between int8 and float commands (they carry the int8 mark without computing anything).
CAST_TYPES = frozenset({"FloatToInt8", "Int8ToFloat"})
#: Command types through which MNN 3.6.1's CPU pipeline propagates int8 scales (Pipeline.cpp, besides Raster).
PROPAGATE_TYPES = frozenset({"Raster", "ReLU", "ReLU6", "Pooling", "Interp", "CropAndResize", "ROIPooling"})
INT8_MARK = "DT_INT8"


class MnnAdapter(Adapter):
    id = "mnn"
    engine = "mnn"
    precisions = ("fp32", "fp16", "int8")
    int8_exclude = True
    #: mnnquant's feature_quantize_method values (MNN 3.6.1 Helper::featureQuantizeMethod). EMA ignores
    #: skip_quant_op_names, so it cannot keep layers in float.
    int8_methods = ("KL", "ADMM", "EMA")
    #: the methods that honour skip_quant_op_names (exclude_nodes): EMA does not
    int8_exclude_methods = ("KL", "ADMM")
    #: mnnquant's weight_quantize_method values (Helper::weightQuantizeMethod), per output channel.
    weight_methods = ("MAX_ABS", "ADMM")

    def __init__(self, venv: Path | None = None, python: str | None = None) -> None:
        super().__init__(venv)
        # mapping kept ONNX nodes and editing the int8 model's JSON are edgesdk code: the host interpreter runs it
        self.host_python = python or sys.executable

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
        _, c, h, w = job.inputs[0].shape
        fmt = {1: "GRAY", 3: cal.color}.get(c)
        if fmt is None:
            raise ConversionRefused("mnnquant", f"mnnquant reads 1- or 3-channel images; the input has {c} channels")
        chosen, wmethod, kept = self._int8_options(job)
        method = chosen or (FEATURE_METHOD if cal.count * c * h * w <= ADMM_MAX_ELEMENTS else "KL")
        if kept and method == "EMA":
            raise InputError(f"segment {job.segment}: mnn_feature_method EMA cannot keep exclude_nodes in float "
                             "(MNN 3.6.1's EMA calibration ignores skip_quant_op_names); use KL or ADMM")
        config = {
            "format": fmt, "mean": list(cal.mean or (0.0,) * c), "normal": list(cal.normal or (1.0,) * c),
            "width": w, "height": h, "path": str(cal.images) + "/", "used_image_num": cal.count,
            "feature_quantize_method": method, "weight_quantize_method": wmethod,
        }
        # keepInputFormat 0: with the default (1) mnnquant's calibration mis-reads the input (checked: chance-level
        # accuracy); the model then takes its input as NC4HW4, which the runtime feeds via MNN.expr.convert.
        conv = self._convert(job, job.work / f"{job.segment}_mnn_float.mnn", ("--keepInputFormat", "0"),
                             "ONNX -> MNN fp32, the model mnnquant reads")
        purpose = f"int8: {method} activation calibration on {cal.count} images, {wmethod} weights"
        notes = (f"feature_quantize_method {method}", "input format NC4HW4 (keepInputFormat 0)")
        if not kept:
            return self._plain_plan(job, config, conv, purpose, notes, retry=chosen is None and method == "ADMM")
        return self._mixed_plan(job, kept, config, conv, purpose, notes)

    def _plain_plan(self, job: ConversionJob, config: dict[str, Any], conv: Command, purpose: str,
                    notes: tuple[str, ...], retry: bool) -> ConversionPlan:
        """int8 of the whole segment: mnnquant, then a check that its model has activation scales (mnnquant exits 0
        with int8 weights and float activations when its calibration run fails: ADMM's one batch on a model with a
        fixed batch of 1). With `retry` (ADMM by default, not asked for) such a model is calibrated again with KL;
        otherwise describe() refuses it."""
        seg, work, py = job.segment, job.work, str(self.python)
        p = {k: work / f"{seg}_{k}" for k in ("mnn_float.mnn", "mnnquant.json", "mnnquant_kl.json",
                                             "mnn_int8_check.json", "mnn.mnn")}
        method = config["feature_quantize_method"]
        writes = [FileWrite(p["mnnquant.json"], (json.dumps(config, indent=2) + "\n").encode(),
                            "mnnquant configuration: the declared preprocessing as MNN's (pixel - mean) * normal")]
        check = (py, "-c", _check_script(), str(p["mnn.mnn"]), str(p["mnnquant.json"]), str(p["mnn_int8_check.json"]),
                 seg)
        said = f"after mnnquant, a check that its {method} calibration wrote activation scales (else refused)"
        if retry:
            kl = {**config, "feature_quantize_method": "KL"}
            writes.append(FileWrite(p["mnnquant_kl.json"], (json.dumps(kl, indent=2) + "\n").encode(),
                                    "mnnquant configuration for the KL retry (used only when ADMM wrote no "
                                    "activation scales)"))
            check += ("--retry", str(p["mnn_float.mnn"]), str(p["mnnquant_kl.json"]))
            said = ("after mnnquant, a check that ADMM wrote activation scales: ADMM runs every calibration image in "
                    "one batch, which a model with a fixed batch of 1 fails (mnnquant still exits 0, with float "
                    "activations); then KL calibrates instead")
        else:
            check += ("--forced",) if job.options.get("mnn_feature_method") else ()
        cmds = (
            conv,
            Command("mnnquant", (py, "-c", _QUANT, str(p["mnn_float.mnn"]), str(p["mnn.mnn"]),
                                 str(p["mnnquant.json"])), cwd=work, timeout=self.timeout, purpose=purpose),
            Command("mnn-check", check, cwd=work, timeout=2 * self.timeout, produces=(p["mnn_int8_check.json"],),
                    purpose="check that the int8 model has activation scales (int8 activations, not only int8 "
                            "weights)" + ("; if ADMM wrote none, run mnnquant again with KL" if retry else "")),
        )
        return ConversionPlan(self.id, self.engine, "int8", tuple(writes), cmds, {"model": p["mnn.mnn"]},
                              (*notes, said))

    def _int8_options(self, job: ConversionJob) -> tuple[str | None, str, list[str]]:
        """job.options' mnn_feature_method, mnn_weight_method and exclude_nodes, checked (InputError names the option)."""
        opts = job.options
        method = opts.get("mnn_feature_method") or None
        if method is not None and method not in self.int8_methods:
            raise InputError(f"mnn_feature_method {method!r} is not one mnnquant offers: {', '.join(self.int8_methods)}")
        wmethod = opts.get("mnn_weight_method") or WEIGHT_METHOD
        if wmethod not in self.weight_methods:
            raise InputError(f"mnn_weight_method {wmethod!r} is not one mnnquant offers: "
                             f"{', '.join(self.weight_methods)}")
        kept = opts.get("exclude_nodes") or []
        if isinstance(kept, str) or not all(isinstance(x, str) and x for x in kept):
            raise InputError(f"exclude_nodes must be a list of ONNX node names, not {kept!r}")
        return method, wmethod, list(dict.fromkeys(kept))

    def _mixed_plan(self, job: ConversionJob, kept: list[str], config: dict[str, Any], conv: Command, purpose: str,
                    notes: tuple[str, ...]) -> ConversionPlan:
        """int8 with `kept` ONNX nodes in float: the float model's ops and run-time commands are listed, the nodes
        mapped to them (the mnnquant config's skip_quant_op_names), mnnquant runs, its model is edited through MNN's
        JSON form (module docstring), and the final model's debug session shows what runs int8."""
        seg, work, py, host = job.segment, job.work, str(self.python), self.host_python
        p = {k: work / f"{seg}_{k}" for k in ("mnn_float.mnn", "mnnquant.json", "mnnquant_base.json", "mnn_keep.json",
                                             "mnn_graph.json", "mnn_kept.json", "mnn_int8raw.mnn", "mnn_int8raw.json",
                                             "mnn_int8.json", "mnn_int8_commands.json", "mnn.mnn")}
        writes = (
            FileWrite(p["mnnquant_base.json"], (json.dumps(config, indent=2) + "\n").encode(),
                      "mnnquant configuration without skip_quant_op_names: the declared preprocessing as MNN's "
                      "(pixel - mean) * normal"),
            FileWrite(p["mnn_keep.json"], (json.dumps(kept, indent=1) + "\n").encode(),
                      "the ONNX nodes kept in float (exclude_nodes)"),
        )
        me = "edgesdk.toolchains.adapters.mnn"
        t = self.timeout
        cmds = (
            conv,
            Command("mnn-probe", (py, "-c", _PROBE, str(p["mnn_float.mnn"]), str(p["mnn_graph.json"]), "--graph"),
                    cwd=work, timeout=t, produces=(p["mnn_graph.json"],),
                    purpose="list the float model's ops (MNN's JSON dump) and the commands its debug session runs"),
            Command("edgesdk-mnn", (host, "-m", me, "skip-config", "--segment", seg, "--onnx", str(job.onnx),
                                    "--graph", str(p["mnn_graph.json"]), "--keep", str(p["mnn_keep.json"]),
                                    "--base", str(p["mnnquant_base.json"]), "--config", str(p["mnnquant.json"]),
                                    "--report", str(p["mnn_kept.json"])),
                    cwd=work, timeout=t, produces=(p["mnnquant.json"], p["mnn_kept.json"]),
                    purpose="map the kept ONNX nodes to MNN ops and run-time commands: skip_quant_op_names"),
            Command("mnnquant", (py, "-c", _QUANT, str(p["mnn_float.mnn"]), str(p["mnn_int8raw.mnn"]),
                                 str(p["mnnquant.json"])),
                    cwd=work, timeout=t, produces=(p["mnn_int8raw.mnn"],),
                    purpose=f"{purpose}, {len(kept)} node(s) skipped"),
            Command("mnnconvert", (py, "-c", _CONVERT, "-f", "MNN", "--modelFile", str(p["mnn_int8raw.mnn"]),
                                   "--JsonFile", str(p["mnn_int8raw.json"])),
                    cwd=work, timeout=t, produces=(p["mnn_int8raw.json"],), purpose="int8 model -> MNN's JSON form"),
            Command("edgesdk-mnn", (host, "-m", me, "edit", "--segment", seg, "--model", str(p["mnn_int8raw.json"]),
                                    "--report", str(p["mnn_kept.json"]), "--out", str(p["mnn_int8.json"])),
                    cwd=work, timeout=t, produces=(p["mnn_int8.json"],),
                    purpose="remove the int8 scales and tables that would keep the kept ops (or their zero-scale "
                            "inputs) in int8"),
            Command("mnnconvert", (py, "-c", _CONVERT, "-f", "JSON", "--modelFile", str(p["mnn_int8.json"]),
                                   "--MNNModel", str(p["mnn.mnn"]), "--bizCode", "edgesdk"),
                    cwd=work, timeout=t, produces=(p["mnn.mnn"],), purpose="edited JSON -> the int8 .mnn"),
            Command("mnn-probe", (py, "-c", _PROBE, str(p["mnn.mnn"]), str(p["mnn_int8_commands.json"])),
                    cwd=work, timeout=t, produces=(p["mnn_int8_commands.json"],),
                    purpose="the commands the int8 model runs, int8 or float (describe reports the kept ones)"),
        )
        shown = ", ".join(kept[:5]) + (f", ... ({len(kept)} in all)" if len(kept) > 5 else "")
        predicted = _predicted_mnn_names(job.onnx, kept, seg)
        said = (f"{len(kept)} ONNX node(s) kept in float: {shown}; MNN op names (MNN's ONNX import, before its own "
                f"fusions): {predicted}" if predicted else
                f"{len(kept)} ONNX node(s) kept in float: {shown}; their MNN op names are read from the float model")
        return ConversionPlan(self.id, self.engine, "int8", writes, cmds, {"model": p["mnn.mnn"]}, (*notes, said))

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        options: dict[str, object] = {}
        if job.precision == "int8":
            options["input_format"] = "NC4HW4"
        if job.precision == "fp16":
            options["fp16"] = True
        notes: tuple[str, ...] = ()
        report = job.work / f"{job.segment}_mnn_kept.json"
        commands = job.work / f"{job.segment}_mnn_int8_commands.json"
        if job.precision == "int8" and job.options.get("exclude_nodes") and report.is_file() and commands.is_file():
            rep = json.loads(report.read_text())
            rep["runtime"] = runtime_status(rep, json.loads(commands.read_text()).get("commands") or [])
            report.write_text(json.dumps(rep, indent=1) + "\n")
            notes = kept_notes(job.segment, rep)
        elif job.precision == "int8" and not job.options.get("exclude_nodes"):
            notes = self._checked_int8(job)
        return Artifact({"model": plan.outputs["model"]}, plain_specs(job.inputs), plain_specs(job.outputs), options,
                        notes)

    def _checked_int8(self, job: ConversionJob) -> tuple[str, ...]:
        """The plain int8 plan's check report: ConversionRefused when the model has no (or too few) activation
        scales, the notes when KL replaced ADMM."""
        path = job.work / f"{job.segment}_mnn_int8_check.json"
        if not path.is_file():
            raise ConversionRefused("mnnquant", f"segment {job.segment}: {path.name} is missing: the plan's check that "
                                    "mnnquant wrote activation scales did not run, so the model may be float")
        rep = json.loads(path.read_text())
        if rep.get("refused"):
            raise ConversionRefused("mnnquant", rep["refused"])
        return tuple(n for n in (rep.get("note"),) if n)


# -- plain int8: did mnnquant calibrate the activations? -------------------------------------------------------------

def activation_scales(net: Mapping[str, Any]) -> dict[str, int]:
    """How much of mnnquant's model (MNN's JSON form) is int8 for real: its convolutions with int8 weights
    (`quanParameter`), how many of those have an activation scale on their output, and the non-zero activation
    scales in all. A failed calibration leaves the int8 weights and no scale: MNN then runs float activations."""
    scaled = {d.get("index") for d in net.get("extraTensorDescribe") or []
              if (d.get("quantInfo") or {}).get("scale")}
    convs = [o for o in net.get("oplists") or []
             if o.get("type") in CONV_TYPES and (o.get("main") or {}).get("quanParameter")]
    with_scale = sum(1 for o in convs if set(o.get("outputIndexes") or []) & scaled)
    return {"int8_convolutions": len(convs), "with_scale": with_scale, "scales": len(scaled)}


def int8_shortfall(stats: Mapping[str, int], method: str) -> str | None:
    """Why a model mnnquant wrote (exit 0) is not int8 (None when it is): no activation scale at all, or scales on
    fewer than half of its int8 convolutions (those then take and give float tensors)."""
    n, k, total = stats["int8_convolutions"], stats["with_scale"], stats["scales"]
    if total == 0:
        return f"mnnquant's {method} calibration wrote no activation scale ({n} convolution(s) with int8 weights)"
    if n and k < n / 2:
        return (f"mnnquant's {method} calibration wrote activation scales for only {k} of the {n} convolution(s) with "
                f"int8 weights ({total} scale(s) in all)")
    return None


def check_int8(argv: Sequence[str]) -> int:
    """The plain int8 plan's check step, run in the toolchain venv (`_check_script`): `MODEL CONFIG REPORT SEGMENT
    [--forced] [--retry FLOAT_MODEL RETRY_CONFIG]`. Reads MODEL's activation scales through MNN's JSON dump; when
    they fall short and a retry is given (ADMM by default), runs mnnquant again with RETRY_CONFIG (KL) over MODEL and
    checks that. Writes REPORT: the stats, a refusal (describe() raises it) or the note saying KL replaced ADMM."""
    import json
    import os

    import _tools

    model, config_path, report, segment = argv[:4]
    forced = "--forced" in argv[4:]
    retry = argv[argv.index("--retry") + 1:argv.index("--retry") + 3] if "--retry" in argv[4:] else None

    def stats_of(path: str) -> dict:
        dump = path + ".check.json"
        try:
            _tools.mnnconvert(["mnnconvert", "-f", "MNN", "--modelFile", path, "--JsonFile", dump])
            if not os.path.isfile(dump):
                raise SystemExit(f"segment {segment}: mnnconvert wrote no JSON dump of {os.path.basename(path)}")
            with open(dump) as f:
                return activation_scales(json.load(f))
        finally:
            if os.path.isfile(dump):
                os.remove(dump)

    with open(config_path) as f:
        config = json.load(f)
    method, count = config.get("feature_quantize_method", "?"), config.get("used_image_num", "?")
    stats = stats_of(model)
    why = int8_shortfall(stats, method)
    rep = {"segment": segment, "method": method, "stats": stats, "refused": None, "note": None}
    if why and method == "ADMM":
        why += (f"; ADMM calibrates all {count} images in one batch: a model whose shapes fix the batch at 1 fails "
                "that run, and mnnquant still exits 0")
    if why and retry:
        with open(retry[1]) as f:
            again_method = json.load(f).get("feature_quantize_method", "?")
        rep["first"] = {"method": method, "stats": stats, "reason": why}
        sys.stdout.flush()
        _tools.mnnquant(["mnnquant", retry[0], model, retry[1]])
        stats = stats_of(model)
        again = int8_shortfall(stats, again_method)
        rep.update(method=again_method, stats=stats)
        if again:
            why = f"{why}; the {again_method} retry failed too: {again}"
        else:
            first = rep["first"]["stats"]
            what = ("wrote no activation scales (fixed batch)" if not first["scales"] else
                    f"wrote activation scales for only {first['with_scale']} of {first['int8_convolutions']} int8 "
                    "convolution(s)")
            why, rep["note"] = None, (f"{method} {what}; calibrated with {again_method}: "
                                      f"{stats['with_scale']} of {stats['int8_convolutions']} int8 convolution(s) "
                                      f"have activation scales ({stats['scales']} in all)")
    if why:
        asked = f"mnn_feature_method {method}" if forced else f"{method}, the default here"
        hint = "; use mnn_feature_method KL" if method == "ADMM" and not retry else ""
        rep["refused"] = (f"segment {segment}: the int8 model would run float activations (calibration {asked}): "
                          f"{why}{hint}")
    with open(report, "w") as f:
        json.dump(rep, f, indent=1)
        f.write("\n")
    s = rep["stats"]
    print(f"segment {segment}: {rep['method']}: {s['with_scale']} of {s['int8_convolutions']} int8 convolution(s) "
          f"with activation scales, {s['scales']} scale(s)"
          + (f"; refused: {rep['refused']}" if rep["refused"] else f"; {rep['note']}" if rep["note"] else ""))
    return 0


def _check_script() -> str:
    """check_int8 and the functions it calls, as a script for the toolchain venv's python (which has MNN's `_tools`,
    not edgesdk): the same code the unit tests run on the host."""
    import inspect

    parts = [inspect.getsource(f) for f in (activation_scales, int8_shortfall, check_int8)]
    return "\n".join(["from __future__ import annotations", "import sys", f"CONV_TYPES = {sorted(CONV_TYPES)!r}",
                      *parts, "sys.exit(check_int8(sys.argv[1:]))", ""])


# -- kept nodes: ONNX -> MNN ops -> run-time commands ---------------------------------------------------------------

def _onnx_nodes(path: str | Path) -> list[dict[str, Any]]:
    """The segment's nodes (name, op type, input and output tensors), read without the weights."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [{"name": n.name, "op_type": n.op_type, "inputs": list(n.input), "outputs": list(n.output)}
            for n in m.graph.node]


def _predicted_mnn_names(onnx_path: Path, kept: Sequence[str], segment: str) -> str | None:
    """At plan time, when the segment file is there: each kept node's MNN op name (MNN names an imported op after
    its node's first output). InputError for a node the segment does not have."""
    if not Path(onnx_path).is_file():
        return None
    by_name = {n["name"]: n for n in _onnx_nodes(onnx_path)}
    missing = [k for k in kept if k not in by_name]
    if missing:
        raise InputError(f"segment {segment}: exclude_nodes names {len(missing)} node(s) {Path(onnx_path).name} does "
                         f"not have: {', '.join(missing[:5])}")
    out = [f"{k} -> {by_name[k]['outputs'][0]}" if by_name[k]["outputs"] else k for k in kept[:5]]
    return ", ".join(out) + (", ..." if len(kept) > 5 else "")


def _commands_of(op: str, commands: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """The run-time commands of MNN op `op` in a debug session: its own (named as the op) and the rasters MNN's
    geometry made of it (`<op>_raster_<i>`, in order; casts between int8 and float are named so too)."""
    pat = re.compile(re.escape(op) + r"_raster_\d+")
    own = [c[0] for c in commands if c[0] == op]
    rasters = [c[0] for c in commands if pat.fullmatch(c[0])]
    return own, rasters


def map_kept(nodes: Sequence[Mapping[str, Any]], graph: Mapping[str, Any], kept: Sequence[str],
             segment: str = "s0") -> dict[str, Any]:
    """Map each kept ONNX node to the MNN op(s) computing it and decide how each stays float (module docstring).

    nodes: the segment's ONNX nodes (name, op_type, inputs, outputs); graph: the float model's probe (ops with
    name/type/inputs/outputs, commands with name/type). Raises ValueError for a node the segment does not have or
    a model MNN would calibrate by EMA. Returns the report: one entry per kept node, the skip list, the tensors
    whose int8 scales the edit removes, the UnaryOps whose tables it removes."""
    ops = list(graph.get("ops") or [])
    commands = [tuple(c) for c in graph.get("commands") or []]
    if any(o["type"] == "BatchNorm" for o in ops):
        raise ValueError(f"segment {segment}: the MNN model has BatchNorm ops, for which mnnquant switches to EMA "
                         "calibration, which ignores skip_quant_op_names: no layer can be kept in float")
    onnx_by = {n["name"]: n for n in nodes}
    missing = [k for k in kept if k not in onnx_by]
    if missing:
        raise ValueError(f"segment {segment}: kept node(s) not in the segment's ONNX graph: {', '.join(missing[:5])}")
    mnn_tensors = {t for o in ops for t in (*o["inputs"], *o["outputs"])}
    onnx_producer = {t: n for n in nodes for t in n["outputs"]}
    producer = {t: o for o in ops for t in o["outputs"]}
    consumers: dict[str, list[dict[str, Any]]] = {}
    for o in ops:
        for t in o["inputs"]:
            consumers.setdefault(t, []).append(o)

    absorbed: dict[str, list[str]] | None = None

    def absorbers(node: str) -> list[str]:
        """The MNN ops whose output is computed through `node` from tensors MNN still has (its fusions)."""
        nonlocal absorbed
        if absorbed is None:
            absorbed = {}
            for o in ops:
                stack = [t for t in o["outputs"] if t in onnx_producer]
                seen: set[str] = set()
                while stack:
                    n = onnx_producer[stack.pop()]
                    if n["name"] in seen:
                        continue
                    seen.add(n["name"])
                    stack.extend(i for i in n["inputs"] if i and i not in mnn_tensors and i in onnx_producer)
                for name in seen:
                    absorbed.setdefault(name, []).append(o["name"])
        return absorbed.get(node, [])

    def folded_into(o: Mapping[str, Any]) -> list[str]:
        """The nearest consumers that run commands: MNN's geometry folded `o`'s data movement into their rasters."""
        found, stack, seen = [], [o], set()
        while stack:
            cur = stack.pop()
            for t in cur["outputs"]:
                for c in consumers.get(t, []):
                    if c["name"] in seen:
                        continue
                    seen.add(c["name"])
                    own, rasters = _commands_of(c["name"], commands)
                    if own or rasters:
                        found.append(c["name"])
                    else:
                        stack.append(c)
        return found

    types = {c[0]: c[1] for c in commands}

    def propagates(o: Mapping[str, Any]) -> bool:
        """MNN passes int8 scales through this op at run time (Pipeline's propagation): its commands are rasters
        (data movement; none when folded into a consumer's raster) or one of PROPAGATE_TYPES."""
        if o["type"] in ("Const", "Input"):
            return False
        own, _ = _commands_of(o["name"], commands)
        return not own or all(types[c] in PROPAGATE_TYPES for c in own)

    entries, skip, seeds, tied, tables = [], [], [], [], []
    for name in kept:
        node = onnx_by[name]
        direct = [o for o in ops if o["name"] in node["outputs"] or set(o["outputs"]) & set(node["outputs"])]
        how = "same op" if direct else "fused into"
        mapped = direct or [o for o in ops if o["name"] in set(absorbers(name))]
        if not mapped:
            entries.append({"node": name, "op_type": node["op_type"], "how": "not in the MNN model", "mnn": []})
            continue
        for o in mapped:
            own, rasters = _commands_of(o["name"], commands)
            e: dict[str, Any] = {"node": name, "op_type": node["op_type"], "how": how, "mnn": o["name"],
                                 "mnn_type": o["type"]}
            if o["type"] in ("Const", "Input"):
                e["kind"] = "constant"  # folded to a constant by MNN's import, or the input: nothing computes
            elif o["type"] in CONV_TYPES:
                e["kind"] = "conv"  # skipped: float weights, which MNN runs in float
                skip += [o["name"], *own]
            elif o["type"] == "UnaryOp":
                e["kind"] = "unary"  # its int8 lookup table is what runs it in int8
                skip += [o["name"], *own]
                tables.append(o["name"])
            else:
                e["kind"] = "compute" if own else "data movement" if rasters else "folded"
                # an op's own command computes it (its rasters gather its inputs and keep their statistics); a data
                # movement op's rasters are its outputs
                skip += [o["name"], *(own or rasters)]
                seeds += o["outputs"]
                ins = [t for t in o["inputs"] if producer.get(t, {}).get("type") != "Const"]
                if not own and len(ins) > 1:  # KL gives every input of a multi-input raster the output's scale
                    tied += ins
                if e["kind"] == "folded":
                    e["folded_into"] = folded_into(o)
            e["commands"] = own or rasters
            entries.append(e)
    # data movement MNN inserted itself (ConvertTensor, no ONNX tensor) feeding kept ops only belongs to them: left
    # int8, it would requantize a float tensor between two float ops
    onnx_tensors = {t for n in nodes for t in (*n["inputs"], *n["outputs"])}
    kept_ops = {e["mnn"] for e in entries if e.get("kind") not in (None, "constant")}
    inserted: list[str] = []
    grown = True
    while grown:
        grown = False
        for o in ops:
            if o["name"] in kept_ops or not propagates(o) or set(o["outputs"]) & onnx_tensors:
                continue
            users = [c["name"] for t in o["outputs"] for c in consumers.get(t, [])]
            if users and all(u in kept_ops for u in users):
                kept_ops.add(o["name"])
                inserted.append(o["name"])
                skip += [o["name"], *_commands_of(o["name"], commands)[1]]
                seeds += o["outputs"]
                grown = True
    return {"segment": segment, "kept": entries, "skip_quant_op_names": list(dict.fromkeys(skip)),
            "float_tensors": list(dict.fromkeys(seeds)), "tied_inputs": list(dict.fromkeys(tied)),
            "tables": list(dict.fromkeys(tables)), "inserted": inserted,
            "propagating_ops": [o["name"] for o in ops if propagates(o)]}


def edit_int8(net: dict[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """Edit mnnquant's model (MNN's JSON form, in place) so the kept ops run in float; returns what was changed.

    Removes the int8 scales of the report's float_tensors and tied_inputs and every zero scale (KL's copy of a
    skipped raster's missing scale: it would zero the tensor); then those of the tensors MNN would give one of these
    scales back at run time (Pipeline's propagation through the report's propagating_ops: forward from a single
    input, backward from a single output); then the int8 table of each kept UnaryOp and of any UnaryOp whose input
    or output has no scale left (MNN 3.6.1 runs a table even on float data). ValueError when mnnquant wrote no
    activation scale at all (its calibration run failed, e.g. ADMM's batched run on a model with a fixed batch of 1).
    """
    names = net.get("tensorName") or []
    index = {n: i for i, n in enumerate(names)}
    scaled = {d["index"]: d for d in net.get("extraTensorDescribe") or [] if d.get("quantInfo")}
    if not any(d["quantInfo"].get("scale") for d in scaled.values()):
        raise ValueError("mnnquant wrote no activation scale: its calibration run failed (see its output above; "
                         "ADMM runs every calibration image in one batch, which a model with a fixed batch of 1 "
                         "refuses), so the model would be int8 weights only")
    ops = net.get("oplists") or []
    consts = {i for o in ops if o.get("type") == "Const" for i in o.get("outputIndexes") or []}
    asked = {index[t] for k in ("float_tensors", "tied_inputs") for t in report.get(k, ()) if t in index}
    zero = {i for i, d in scaled.items() if not d["quantInfo"].get("scale")}
    floats = asked | zero
    prop_names = set(report.get("propagating_ops", ()))
    prop = [([i for i in o.get("inputIndexes") or [] if i not in consts], o.get("outputIndexes") or [])
            for o in ops if o.get("name") in prop_names]
    grown = True
    while grown:
        grown = False
        for ins, outs in prop:
            more = (set(ins) if len(ins) == 1 and floats & set(outs) else set()) | \
                   (set(outs) if len(outs) == 1 and floats & set(ins) else set())
            if more - floats:
                floats |= more
                grown = True
    removed = sorted(floats & set(scaled))
    for i in removed:
        del scaled[i]["quantInfo"]
    left = set(scaled) - set(removed)
    kept_tables = set(report.get("tables", ()))
    tables = []
    for o in ops:
        main = o.get("main") or {}
        if o.get("main_type") != "UnaryOp" or not main.get("tableInt8"):
            continue
        ins, outs = o.get("inputIndexes") or [], o.get("outputIndexes") or []
        if o.get("name") in kept_tables or not (set(ins) <= left and set(outs) <= left):
            del main["tableInt8"]
            tables.append(o.get("name", ""))
    return {"scales_removed": [names[i] for i in removed], "zero_scales": [names[i] for i in sorted(zero)],
            "propagated": [names[i] for i in removed if i not in asked | zero],
            "tables_removed": tables, "scales_left": len(left)}


def runtime_status(report: Mapping[str, Any], commands: Sequence[Sequence[str]]) -> dict[str, str]:
    """Each kept MNN op's state in the final model's debug session: "float", "int8" (a command of its own still
    runs int8) or "no command" (folded or constant)."""
    out: dict[str, str] = {}
    types = {c[0]: c[1] for c in commands}
    for e in report.get("kept", ()):
        op = e.get("mnn")
        if not op:
            continue
        own, rasters = _commands_of(op, commands)
        work = [c for c in (own if e.get("kind") in ("conv", "unary", "compute") else own + rasters)
                if types[c].split("[")[0].strip() not in CAST_TYPES]
        out[op] = "no command" if not work else ("int8" if any(INT8_MARK in types[c] for c in work) else "float")
    return out


def kept_notes(segment: str, rep: Mapping[str, Any]) -> tuple[str, ...]:
    """The artifact's notes on its kept nodes: how many, their MNN names and state, and what else went float."""
    entries = rep.get("kept", [])
    state = rep.get("runtime", {})
    nodes = list(dict.fromkeys(e["node"] for e in entries))
    shown = []
    for e in entries:
        if not e.get("mnn"):
            continue
        via = "" if e["how"] == "same op" else " (fused into it)"
        shown.append(f"{e['node']} -> {e['mnn']} [{e['mnn_type']}]{via}: {state.get(e['mnn'], '?')}")
    notes = [f"segment {segment}: {len(nodes)} ONNX node(s) kept in float on MNN: " + "; ".join(shown[:8])
             + (f"; ... ({len(shown)} MNN ops in all, see {segment}_mnn_kept.json)" if len(shown) > 8 else "")]
    lost = [e["node"] for e in entries if not e.get("mnn")]
    if lost:
        notes.append(f"segment {segment}: {len(lost)} kept node(s) have no MNN op (removed by MNN's import): "
                     + ", ".join(lost[:8]))
    folded = [f"{e['node']} (into {', '.join(e.get('folded_into') or ['?'])})" for e in entries
              if e.get("kind") == "folded"]
    if folded:
        notes.append(f"segment {segment}: {len(folded)} kept node(s) are data movement MNN folds into other commands "
                     "(nothing of their own runs, so nothing to keep): " + "; ".join(folded[:8]))
    still = [op for op, s in state.items() if s == "int8"]
    if still:
        notes.append(f"segment {segment}: {len(still)} kept MNN op(s) still run int8: " + ", ".join(still[:8]))
    edit = rep.get("edit") or {}
    extra = [t for t in edit.get("scales_removed", []) if t not in set(rep.get("float_tensors", []))]
    if extra:
        notes.append(f"segment {segment}: also float, {len(extra)} neighbouring tensor(s) (a kept Concat's inputs, "
                     "which KL gives its scale; zero scales; those MNN would give a removed scale back): "
                     + ", ".join(extra[:6]) + (", ..." if len(extra) > 6 else ""))
    return tuple(notes)


# -- the commands the plan runs on the host ---------------------------------------------------------------------------

def _skip_config(args: Any) -> str:
    graph = json.loads(Path(args.graph).read_text())
    kept = json.loads(Path(args.keep).read_text())
    rep = map_kept(_onnx_nodes(args.onnx), graph, kept, args.segment)
    config = json.loads(Path(args.base).read_text())
    config["skip_quant_op_names"] = rep["skip_quant_op_names"]
    Path(args.config).write_text(json.dumps(config, indent=2) + "\n")
    Path(args.report).write_text(json.dumps(rep, indent=1) + "\n")
    how: dict[str, int] = {}
    for e in rep["kept"]:
        how[e.get("kind") or e["how"]] = how.get(e.get("kind") or e["how"], 0) + 1
    return (f"segment {args.segment}: {len(kept)} kept node(s) -> {len(rep['skip_quant_op_names'])} skip name(s) "
            f"({', '.join(f'{v} {k}' for k, v in sorted(how.items()))})")


def _edit(args: Any) -> str:
    net = json.loads(Path(args.model).read_text())
    rep = json.loads(Path(args.report).read_text())
    try:
        rep["edit"] = edit_int8(net, rep)
    except ValueError as exc:
        raise ValueError(f"segment {args.segment}: {exc}") from exc
    Path(args.out).write_text(json.dumps(net))
    Path(args.report).write_text(json.dumps(rep, indent=1) + "\n")
    e = rep["edit"]
    return (f"segment {args.segment}: {len(e['scales_removed'])} int8 scale(s) removed ({len(e['zero_scales'])} "
            f"zero), {len(e['tables_removed'])} UnaryOp table(s) removed, {e['scales_left']} scale(s) left")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m edgesdk.toolchains.adapters.mnn skip-config|edit ...`: the plan's host steps (exit 1 with the
    reason on stderr, which the executor puts in its ToolchainError)."""
    import argparse

    ap = argparse.ArgumentParser(prog="edgesdk.toolchains.adapters.mnn")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("skip-config")
    for flag in ("--segment", "--onnx", "--graph", "--keep", "--base", "--config", "--report"):
        s.add_argument(flag, required=True)
    e = sub.add_parser("edit")
    for flag in ("--segment", "--model", "--report", "--out"):
        e.add_argument(flag, required=True)
    args = ap.parse_args(argv)
    try:
        print(_skip_config(args) if args.cmd == "skip-config" else _edit(args))
    except (ValueError, OSError, KeyError) as exc:
        print(f"edgesdk-mnn {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

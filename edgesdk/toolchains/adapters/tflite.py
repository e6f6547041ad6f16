"""TFLite: ONNX -> .tflite with onnx2tf in the tflite toolchain venv: fp32, fp16, full-integer int8 (int8 I/O)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import QuantParams, TensorSpec
from edgesdk.toolchains.adapters.base import Adapter, Artifact, ConversionJob, ConversionRefused, EnvStatus
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

#: onnx2tf checks its output against a sample it downloads for 3-channel 4-D inputs; offline it
#: crashes unless a file of this name is in the working directory (toolchains/tflite/toolchain.yaml).
SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"
_SAMPLE = "import sys, numpy as np; np.save(sys.argv[1], np.full((20, 128, 128, 3), 0.5, np.float32))"
# One calibration array per input, channels-first -> channels-last for inputs of rank >= 3 (onnx2tf
# calibrates the channels-last model: NCW -> NWC, NCHW -> NHWC, NCDHW -> NDHWC).
_CALIB = ("import sys, numpy as np; a = np.load(sys.argv[1])[sys.argv[2]].astype(np.float32); "
          "a = a.transpose(0, *range(2, a.ndim), 1) if a.ndim >= 3 else a; "
          "np.save(sys.argv[3], np.ascontiguousarray(a))")
# Input/output details of the converted model, by the ONNX names its signature keeps (-coion).
_PROBE = (
    "import sys, json\n"
    "from ai_edge_litert.interpreter import Interpreter\n"
    "it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()\n"
    "sig = it._get_full_signature_list().get('serving_default', {'inputs': {}, 'outputs': {}})\n"
    "def d(x): return {'name': x['name'], 'index': int(x['index']), 'shape': [int(v) for v in x['shape']],\n"
    "                  'dtype': x['dtype'].__name__, 'scale': float(x['quantization'][0]),\n"
    "                  'zero_point': int(x['quantization'][1])}\n"
    "json.dump({'inputs': [d(x) for x in it.get_input_details()], 'outputs': [d(x) for x in it.get_output_details()],\n"
    "           'signature': {k: {n: int(i) for n, i in v.items()} for k, v in sig.items()}}, open(sys.argv[2], 'w'))\n"
)
# onnx2tf names Keras layers after ONNX node names, and Keras refuses a name outside [A-Za-z0-9_.\\/>-]:
# PaddlePaddle exports name nodes "Softmax@0" ('...is not a valid scope name'). onnx2tf also rewrites I/O
# tensor names that are not plain identifiers (a segment input "/model.22/dfl/Softmax_output_0" becomes
# "wa/model.22/...", and its -cind calibration key then misses: KeyError). So onnx2tf gets a copy of the
# segment with safe node names and the segment's I/O tensors renamed to `io_aliases` (argv[3], JSON
# {name: alias}); describe() maps the converted model's signature back through the same aliases.
_SAFE_NAMES = (
    "import sys, re, json, onnx\n"
    "m = onnx.load(sys.argv[1]); alias = json.loads(open(sys.argv[3]).read()); seen = set()\n"
    "for i, n in enumerate(m.graph.node):\n"
    "    base = re.sub(r'[^A-Za-z0-9_.\\\\/>-]', '_', n.name) or f'{n.op_type}_{i}'\n"
    "    name, k = base, 1\n"
    "    while name in seen:\n"
    "        name, k = f'{base}_{k}', k + 1\n"
    "    seen.add(name); n.name = name\n"
    "    n.input[:] = [alias.get(x, x) for x in n.input]; n.output[:] = [alias.get(x, x) for x in n.output]\n"
    "for v in (*m.graph.input, *m.graph.output, *m.graph.value_info):\n"
    "    v.name = alias.get(v.name, v.name)\n"
    "onnx.save(m, sys.argv[2])\n"
)


def io_aliases(names: list[str]) -> dict[str, str]:
    """Plain-identifier names for a segment's I/O tensors (unique, deterministic); identity for safe names."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:
        a = re.sub(r"[^A-Za-z0-9_]", "_", n).strip("_") or "t"
        if a[0].isdigit():
            a = "t_" + a
        base, k = a, 1
        while a in used:
            a, k = f"{base}_{k}", k + 1
        used.add(a)
        out[n] = a
    return out


_SUFFIX = {"fp32": "float32", "fp16": "float16", "int8": "full_integer_quant"}


class TfliteAdapter(Adapter):
    id = "tflite"
    engine = "tflite"
    precisions = ("fp32", "fp16", "int8")
    timeout = 1800.0

    def check_env(self) -> EnvStatus:
        if not self.venv_ready():
            return self.missing_venv()
        from edgesdk.toolchains.install import venv_package_version

        ver = venv_package_version(self.venv, "onnx2tf")
        if ver is None or not (self.venv / "bin" / "onnx2tf").is_file():
            return EnvStatus(self.id, False, None, f"onnx2tf is not installed in {self.venv}",
                             f"edgesdk toolchain install {self.id} --force")
        tf = venv_package_version(self.venv, "tensorflow") or venv_package_version(self.venv, "tensorflow-cpu")
        return EnvStatus(self.id, True, ver, f"onnx2tf {ver}, tensorflow {tf}")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.check_precision(job.precision)
        w, s = job.work, job.segment
        out_dir = w / f"{s}_tflite"
        safe = w / f"{job.onnx.stem}_tf.onnx"
        model = out_dir / f"{safe.stem}_{_SUFFIX[job.precision]}.tflite"
        py = str(self.python)
        alias = io_aliases([t.name for t in (*job.inputs, *job.outputs)])
        alias_json = w / f"{s}_tflite_aliases.json"
        cmds = [Command("python", (py, "-c", _SAMPLE, str(w / SAMPLE_NAME)), cwd=w, timeout=120,
                        purpose="onnx2tf's self-check sample, written locally so that it never downloads it"),
                Command("python", (py, "-c", _SAFE_NAMES, str(job.onnx), str(safe), str(alias_json)), cwd=w,
                        timeout=300, purpose="node names Keras accepts as layer names, plain I/O tensor names")]
        argv = [str(self.venv / "bin" / "onnx2tf"), "-i", str(safe), "-o", str(out_dir), "-coion"]
        if job.precision == "int8":
            if job.calib is None:
                raise InputError("int8 needs a calibration set: pass --calib DIR")
            argv += ["-oiqt", "-qt", "per-channel", "-iqd", "int8", "-oqd", "int8"]
            for i in job.inputs:
                npy = w / f"{s}_calib_{_safe(i.name)}.npy"
                cmds.append(Command("python", (py, "-c", _CALIB, str(job.calib.arrays), i.name, str(npy)), cwd=w,
                                    timeout=300, purpose=f"calibration samples of {i.name!r} for onnx2tf (NHWC)"))
                # the data is already preprocessed: onnx2tf's own (x - mean) / std is the identity
                argv += ["-cind", alias[i.name], str(npy), "0.0", "1.0"]
        purpose = {"fp32": "ONNX -> TFLite fp32", "fp16": "ONNX -> TFLite with fp16 weights",
                   "int8": "ONNX -> TFLite full-integer int8 (int8 inputs and outputs), per-channel weights"}
        cmds.append(Command("onnx2tf", tuple(argv), cwd=w, timeout=self.timeout, purpose=purpose[job.precision],
                            produces=(model,)))
        io = w / f"{s}_tflite_io.json"
        cmds.append(Command("python", (py, "-c", _PROBE, str(model), str(io)), cwd=w, timeout=120,
                            purpose="read the converted model's input/output tensors and quantization"))
        writes = (FileWrite(alias_json, (json.dumps(alias, indent=1, sort_keys=True) + "\n").encode(),
                            "the segment's I/O tensor names and the plain aliases onnx2tf sees"),)
        return ConversionPlan(self.id, self.engine, job.precision, writes, tuple(cmds), {"model": model, "io": io})

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        io = json.loads(plan.outputs["io"].read_text(encoding="utf-8"))
        sig = io.get("signature", {})
        both = (*job.inputs, *job.outputs)
        ins = _match(job.inputs, io["inputs"], sig.get("inputs", {}), "input", both)
        outs = _match(job.outputs, io["outputs"], sig.get("outputs", {}), "output", both)
        return Artifact({"model": plan.outputs["model"]}, ins, outs)


def _alias_sig(specs: tuple, sig: dict[str, int]) -> dict[str, int]:
    """The signature keyed by the segment's own tensor names (onnx2tf saw their io_aliases)."""
    alias = io_aliases([t.name for t in specs])
    back = {a: n for n, a in alias.items()}
    return {back.get(k, k): v for k, v in sig.items()}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _match(specs: tuple, details: list[dict], sig: dict[str, int], what: str,
           all_specs: tuple | None = None) -> tuple[TensorSpec, ...]:
    """TensorSpecs of the converted model for `specs` (inputs or outputs), found through the signature.

    `all_specs`: the segment's inputs then outputs, whose names were aliased together (io_aliases)."""
    sig = _alias_sig(all_specs if all_specs is not None else specs, sig)
    by_index = {d["index"]: d for d in details}
    res = []
    for k, s in enumerate(specs):
        d = by_index.get(sig[s.name]) if s.name in sig else (details[k] if len(details) == len(specs) else None)
        if d is None:
            raise ConversionRefused("onnx2tf", f"the converted model has no {what} for {s.name!r}")
        shape, tshape = tuple(s.shape), tuple(d["shape"])
        layout = None
        if tshape != shape:
            if len(shape) >= 3 and tshape == (shape[0], *shape[2:], shape[1]):
                layout = "NHWC"  # channels-last, for any rank >= 3 (the runtime's meaning of NHWC)
            else:
                raise ConversionRefused("onnx2tf", f"{what} {s.name!r} became {list(tshape)} (ONNX {list(shape)}), "
                                                   "a layout edgesdk cannot map back")
        quant = None
        if d["dtype"] in ("int8", "uint8"):
            quant = QuantParams(d["scale"], d["zero_point"], d["dtype"])
        res.append(TensorSpec(s.name, shape, s.dtype, layout=layout, engine_name=d["name"], quant=quant))
    return tuple(res)

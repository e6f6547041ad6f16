"""TFLite: ONNX -> .tflite with onnx2tf in the tflite toolchain venv: fp32, fp16, full-integer int8 (int8 I/O).

int8 options (job.options): `tflite_quant_type` (weights "per-channel", the default, or "per-tensor": onnx2tf's -qt)
and `exclude_nodes` (ONNX node names of the segment kept in float, the mixed-precision layers edgesdk.quantize.search
chooses). onnx2tf has no per-node exclusion, so with `exclude_nodes` onnx2tf only writes its SavedModel (-osd) and
TensorFlow Lite's own quantizer makes the int8 model with those ops on its denylist (_MIXED below).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime.manifest import QuantParams, TensorSpec
from edgesdk.toolchains.adapters._tflite_values import VALUE_MATCH
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

# int8 with ONNX nodes kept in float (argv[1]: a JSON config the plan writes). onnx2tf names TFLite tensors after its
# Keras layers ("model_5/tf.concat_213/concat"), not after ONNX nodes, so each kept node is found by value: the
# calibrated float model runs (no delegate, every tensor kept) on the first calibration sample beside the ONNX segment
# on onnxruntime, and the node's output matches the TFLite tensors whose sorted values are the same (layout-free:
# NCHW -> NHWC, and the transposes/reshapes that only move the same values). An output TFLite fused into its consumer
# (Conv + Relu, Conv + BatchNormalization) is looked for at that consumer. Then the same MLIR quantizer as
# TFLiteConverter's full-integer path (calibrate, then mlir_quantize) runs with those tensors' ops denylisted:
# int8 inputs; int8 outputs unless a kept op writes one (float32 outputs then: int8 would requantize that op's values
# with one scale, what keeping it in float is for), and without the int8 round trip the quantizer still puts after a
# kept op of fixed output range (drop_requantize). The report (cfg["report"]) names every node's tensors, the nodes it
# could not map and why, and kept tensors left int8; describe() refuses on either.
_MIXED = VALUE_MATCH + r'''
import json, sys
import numpy as np
cfg = json.load(open(sys.argv[1]))
import onnx, tensorflow as tf
from tensorflow.lite.python import convert as tfl_convert
from ai_edge_litert.interpreter import Interpreter, OpResolverType

ins = cfg["inputs"]
data = {i["alias"]: np.load(i["npy"]).astype(np.float32) for i in ins}
count = min(len(a) for a in data.values())

conv = tf.lite.TFLiteConverter.from_saved_model(cfg["saved_model"])
conv.optimizations = [tf.lite.Optimize.DEFAULT]  # onnx2tf's full-integer settings
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
conv._experimental_disable_per_channel = not cfg["per_channel"]
def representative():
    for k in range(count):
        yield {a: x[k:k + 1] for a, x in data.items()}
conv.representative_dataset = representative
conv._experimental_calibrate_only = True
calibrated = conv.convert()

it = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
it.allocate_tensors()
sig = it._get_full_signature_list().get("serving_default", {}).get("inputs", {})
details = it.get_input_details()
for pos, i in enumerate(ins):
    idx = sig.get(i["alias"], details[pos]["index"] if len(details) == len(ins) else None)
    if idx is None:
        sys.exit(f"the calibrated model has no input {i['alias']!r} (signature: {sorted(sig)})")
    it.set_tensor(idx, data[i["alias"]][:1])
it.invoke()
by_size = float_tensors(it)
outputs = {t["name"] for t in it.get_output_details()}

m = onnx.load(cfg["onnx"])
nodes, inits, consumers, producer, dynamic = onnx_graph(m)

wanted, chains = [], {}
for name in cfg["exclude"]:
    n = nodes.get(name)
    for o in (n.output if n is not None else ()):
        chains[o] = fused_chain(o, consumers, inits)
        wanted += [t for t in chains[o] if t in dynamic]
values = onnx_values(m, wanted, cfg["arrays"])

kept, via, unmapped, unquantized = {}, {}, {}, []
for name in cfg["exclude"]:
    n = nodes.get(name)
    if n is None:
        unmapped[name] = "no node of that name in the segment"
        continue
    if not any(o in dynamic for o in n.output):
        unmapped[name] = "it computes a constant (onnx2tf folds it into a weight)"
        continue
    hits, why, ints = [], [], 0
    for o in n.output:
        if not o or o not in dynamic:
            continue
        for k, t in enumerate(chains[o]):
            h, reason = match(values[t], by_size)
            if h is None:
                ints += 1
                break
            if h:
                hits += h
                if k:
                    via[name] = producer[t]
                break
        else:
            why.append(f"output {o!r}: {reason}")
    if why:
        unmapped[name] = "; ".join(why)
    elif hits:
        kept[name] = list(dict.fromkeys(hits))
    elif ints:
        unquantized.append(name)
deny = sorted({t for ts in kept.values() for t in ts})
float_out = bool(outputs & set(deny))
q = tfl_convert.mlir_quantize(calibrated, disable_per_channel=not cfg["per_channel"], input_data_type=tf.int8,
                              output_data_type=tf.float32 if float_out else tf.int8, denylisted_nodes=deny)

def drop_requantize(model, keep):
    """The model without QUANTIZE -> DEQUANTIZE round trips on the float tensors `keep` names.

    The quantizer keeps a denylisted op float but still rounds its output through int8 on the way to the next float
    op when the op has a fixed output range (LOGISTIC: scale 1/256, which zeroes every score below 0.004): the
    consumers of such a DEQUANTIZE read the float tensor itself, and a QUANTIZE nothing else reads goes too."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu
    from tensorflow.lite.python import schema_py_generated as fb

    mo = fbu.read_model_from_bytearray(bytearray(model))
    floats = (fb.TensorType.FLOAT32, fb.TensorType.FLOAT16)
    dropped = 0
    for gi, g in enumerate(mo.subgraphs):
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in g.tensors]
        ops = [(fbu.opcode_to_name(mo, op.opcodeIndex), op) for op in g.operators]
        producer = {int(t): k for k, (_, op) in enumerate(ops) for t in op.outputs}
        repl = {}  # a DEQUANTIZE's output -> the float tensor its QUANTIZE read
        for kind, op in ops:
            p = producer.get(int(op.inputs[0])) if kind == "DEQUANTIZE" and len(op.inputs) else None
            if p is not None and ops[p][0] == "QUANTIZE":
                x = int(ops[p][1].inputs[0])
                if names[x] in keep and g.tensors[x].type in floats:
                    repl[int(op.outputs[0])] = x
        if not repl:
            continue
        for _, op in ops:
            op.inputs = [repl.get(int(i), int(i)) for i in op.inputs]
        g.outputs = [repl.get(int(i), int(i)) for i in g.outputs]
        for sd in mo.signatureDefs or []:
            if sd.subgraphIndex == gi:
                for tm in sd.outputs or []:
                    tm.tensorIndex = repl.get(tm.tensorIndex, tm.tensorIndex)
        live = [(kind, op) for kind, op in ops if not (kind == "DEQUANTIZE" and int(op.outputs[0]) in repl)]
        read = {int(i) for _, op in live for i in op.inputs} | set(g.outputs)
        live = [(kind, op) for kind, op in live
                if not (kind == "QUANTIZE" and all(int(o) not in read for o in op.outputs))]
        dropped += len(ops) - len(live)
        g.operators = [op for _, op in live]
    return (fbu.convert_object_to_bytearray(mo) if dropped else model), dropped

q, dropped = drop_requantize(q, set(deny))
open(cfg["model"], "wb").write(q)
qi = Interpreter(model_content=q)
qi.allocate_tensors()
qt = {t["index"]: t for t in qi.get_tensor_details()}
dtypes = {t["name"]: t["dtype"].__name__ for t in qt.values()}
not_float = {t: dtypes.get(t, "absent") for t in deny if dtypes.get(t) not in ("float32", "float16")}
# a kept tensor some op still reads through int8 (QUANTIZE of it feeding a DEQUANTIZE) was not kept in float
qops = qi._get_ops_details()
qprod = {t: o for o in qops for t in o["outputs"]}
for o in qops:
    src = qprod.get(o["inputs"][0]) if o["op_name"] == "DEQUANTIZE" and len(o["inputs"]) else None
    if src is not None and src["op_name"] == "QUANTIZE" and qt[src["inputs"][0]]["name"] in deny:
        not_float[qt[src["inputs"][0]]["name"]] = "rounded through int8 to a float op"
json.dump({"kept": kept, "via": via, "unmapped": unmapped, "unquantized": unquantized, "float_outputs": float_out,
           "not_float": not_float, "tensors": len(deny), "requantize_dropped": dropped},
          open(cfg["report"], "w"), indent=1, sort_keys=True)
print(f"{len(kept)} node(s) kept in float as {len(deny)} TFLite tensor(s); {len(unmapped)} not mapped; "
      f"{dropped} int8 round trip op(s) dropped; outputs {'float32' if float_out else 'int8'}")
'''


class TfliteAdapter(Adapter):
    id = "tflite"
    engine = "tflite"
    precisions = ("fp32", "fp16", "int8")
    timeout = 1800.0
    #: int8 weight quantization (onnx2tf's -qt; job.options["tflite_quant_type"]), the first is the default
    int8_methods: tuple[str, ...] = ("per-channel", "per-tensor")
    int8_exclude = True

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
        py = str(self.python)
        alias = io_aliases([t.name for t in (*job.inputs, *job.outputs)])
        alias_json = w / f"{s}_tflite_aliases.json"
        cmds = [Command("python", (py, "-c", _SAMPLE, str(w / SAMPLE_NAME)), cwd=w, timeout=120,
                        purpose="onnx2tf's self-check sample, written locally so that it never downloads it"),
                Command("python", (py, "-c", _SAFE_NAMES, str(job.onnx), str(safe), str(alias_json)), cwd=w,
                        timeout=300, purpose="node names Keras accepts as layer names, plain I/O tensor names")]
        argv = [str(self.venv / "bin" / "onnx2tf"), "-i", str(safe), "-o", str(out_dir), "-coion"]
        qtype, exclude = self.int8_methods[0], []
        npys: dict[str, Path] = {}
        if job.precision == "int8":
            if job.calib is None:
                raise InputError("int8 needs a calibration set: pass --calib DIR")
            qtype, exclude = self._int8_options(job)
            # with kept nodes onnx2tf stops at its SavedModel (the same graph: -osd takes -oiqt's export path)
            argv += ["-osd"] if exclude else ["-oiqt", "-qt", qtype, "-iqd", "int8", "-oqd", "int8"]
            for i in job.inputs:
                npy = npys[i.name] = w / f"{s}_calib_{_safe(i.name)}.npy"
                cmds.append(Command("python", (py, "-c", _CALIB, str(job.calib.arrays), i.name, str(npy)), cwd=w,
                                    timeout=300, purpose=f"calibration samples of {i.name!r} for onnx2tf (NHWC)"))
                # the data is already preprocessed: onnx2tf's own (x - mean) / std is the identity
                argv += ["-cind", alias[i.name], str(npy), "0.0", "1.0"]
        writes = [FileWrite(alias_json, (json.dumps(alias, indent=1, sort_keys=True) + "\n").encode(),
                            "the segment's I/O tensor names and the plain aliases onnx2tf sees")]
        outputs: dict[str, Path] = {}
        notes: tuple[str, ...] = ()
        if exclude:
            assert job.calib is not None
            model = out_dir / f"{safe.stem}_mixed_int8.tflite"
            report = w / f"{s}_tflite_kept.json"
            # the SavedModel does not depend on the kept nodes: a search that converts the segment again with other
            # nodes (edgesdk.precision_plan) reuses the one an earlier plan of the same segment, data and argv made
            stamp, key = out_dir / "edgesdk_saved_model.key", _saved_model_key(job, argv)
            reuse = key is not None and (out_dir / "saved_model.pb").is_file() and stamp.is_file() \
                and stamp.read_text(encoding="utf-8") == key
            if not reuse:
                cmds.append(Command("onnx2tf", tuple(argv), cwd=w, timeout=self.timeout,
                                    purpose="ONNX -> TensorFlow SavedModel (and float TFLite) for the mixed int8 model",
                                    produces=(out_dir / "saved_model.pb",)))
                if key is not None:
                    cmds.append(Command("python", (py, "-c", _STAMP, str(stamp), key), cwd=w, timeout=60,
                                        purpose="remember which segment, data and argv this SavedModel is of"))
            script, cfg = w / f"{s}_tflite_mixed.py", w / f"{s}_tflite_mixed.json"
            conf = {"saved_model": str(out_dir), "onnx": str(job.onnx), "arrays": str(job.calib.arrays),
                    "inputs": [{"name": i.name, "alias": alias[i.name], "npy": str(npys[i.name])} for i in job.inputs],
                    "per_channel": qtype == "per-channel", "exclude": exclude, "model": str(model),
                    "report": str(report)}
            writes += [FileWrite(script, _MIXED.encode(), "TFLite int8 with the kept ONNX nodes' ops denylisted"),
                       FileWrite(cfg, (json.dumps(conf, indent=1) + "\n").encode(),
                                 "the SavedModel, calibration files and ONNX nodes the mixed int8 script reads")]
            cmds.append(Command("python", (py, str(script), str(cfg)), cwd=w, timeout=self.timeout,
                                purpose=f"TFLite full-integer int8 ({qtype} weights, int8 inputs) with "
                                        f"{_listed(exclude)} kept in float: their TFLite ops, found by value, on "
                                        "the quantizer's denylist; float32 outputs if a kept node writes one",
                                produces=(model, report)))
            outputs["kept"] = report
            notes = ((f"{s}: {len(exclude)} ONNX node(s) kept in float through TensorFlow Lite's quantizer denylist "
                      "(onnx2tf has no per-node exclusion), mapped to TFLite tensors by value after conversion; "
                      "a node that cannot be mapped refuses the conversion"),)
            if reuse:
                notes += ((f"{s}: onnx2tf not run again: its SavedModel in {out_dir.name} is of this segment, "
                           "calibration data and argv"),)
        else:
            model = out_dir / f"{safe.stem}_{_SUFFIX[job.precision]}.tflite"
            purpose = {"fp32": "ONNX -> TFLite fp32", "fp16": "ONNX -> TFLite with fp16 weights",
                       "int8": f"ONNX -> TFLite full-integer int8 (int8 inputs and outputs), {qtype} weights"}
            cmds.append(Command("onnx2tf", tuple(argv), cwd=w, timeout=self.timeout, purpose=purpose[job.precision],
                                produces=(model,)))
        io = w / f"{s}_tflite_io.json"
        cmds.append(Command("python", (py, "-c", _PROBE, str(model), str(io)), cwd=w, timeout=120,
                            purpose="read the converted model's input/output tensors and quantization"))
        return ConversionPlan(self.id, self.engine, job.precision, tuple(writes), tuple(cmds),
                              {"model": model, "io": io, **outputs}, notes)

    def _int8_options(self, job: ConversionJob) -> tuple[str, list[str]]:
        """job.options' tflite_quant_type and exclude_nodes, checked: InputError names the option, ConversionRefused
        the kept nodes the segment does not have or that compute a constant (no TFLite op to keep)."""
        qtype = str(job.options.get("tflite_quant_type") or self.int8_methods[0])
        if qtype not in self.int8_methods:
            raise InputError(f"tflite_quant_type {qtype!r} is not one the tflite toolchain offers: "
                             f"{', '.join(self.int8_methods)}")
        exclude = job.options.get("exclude_nodes") or []
        if isinstance(exclude, str) or not all(isinstance(x, str) and x for x in exclude):
            raise InputError(f"exclude_nodes must be a list of node names, not {exclude!r}")
        exclude = list(dict.fromkeys(exclude))
        if exclude and Path(job.onnx).is_file():  # a plan of a file not written yet (--dry-run) checks at run time
            import onnx

            g = onnx.load(str(job.onnx), load_external_data=False).graph
            consts = {t.name for t in g.initializer}
            dynamic = {v.name for v in g.input} - consts
            sub = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for n in g.node:  # topological order; a node with a subgraph (If, Loop) may read outer tensors
                if any(x in dynamic for x in n.input) or any(a.type in sub for a in n.attribute):
                    dynamic.update(n.output)
            nodes = {n.name: n for n in g.node}
            unknown = [x for x in exclude if x not in nodes]
            if unknown:
                raise ConversionRefused(_QUANTIZER, f"segment {job.segment}: no node {_listed(unknown)} to keep in "
                                                    f"float in {job.onnx.name}")
            fixed = [x for x in exclude if not any(o in dynamic for o in nodes[x].output)]
            if fixed:
                raise ConversionRefused(_QUANTIZER, f"segment {job.segment}: node {_listed(fixed)} of {job.onnx.name} "
                                                    "computes a constant (onnx2tf folds it into a weight): no TFLite "
                                                    "op of it to keep in float")
        return qtype, exclude

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        notes: tuple[str, ...] = ()
        if "kept" in plan.outputs:
            notes = (_kept_note(job, json.loads(plan.outputs["kept"].read_text(encoding="utf-8"))),)
        io = json.loads(plan.outputs["io"].read_text(encoding="utf-8"))
        sig = io.get("signature", {})
        both = (*job.inputs, *job.outputs)
        ins = _match(job.inputs, io["inputs"], sig.get("inputs", {}), "input", both)
        outs = _match(job.outputs, io["outputs"], sig.get("outputs", {}), "output", both)
        return Artifact({"model": plan.outputs["model"]}, ins, outs, notes=notes)


_QUANTIZER = "TFLite quantizer"
_STAMP = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"


def _saved_model_key(job: ConversionJob, argv: list[str]) -> str | None:
    """What onnx2tf's SavedModel of this job depends on (the segment, the calibration arrays, the argv), hashed; None
    while the files are not there (a --dry-run plan)."""
    import hashlib

    files = [Path(job.onnx), *([Path(job.calib.arrays)] if job.calib is not None else [])]
    if not all(f.is_file() for f in files):
        return None
    h = hashlib.sha256(json.dumps([argv, _SAFE_NAMES, _CALIB, _SAMPLE]).encode())
    for f in files:
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _listed(names: list[str], limit: int = 5) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def _kept_note(job: ConversionJob, rep: dict) -> str:
    """The mixed int8 script's report as a note; ConversionRefused naming every kept node it could not keep in float."""
    bad = [f"{n!r} ({why})" for n, why in sorted(rep.get("unmapped", {}).items())]
    if rep.get("not_float"):
        bad.append("TFLite tensor(s) the quantizer left integer despite its denylist: "
                   + ", ".join(f"{t!r} ({d})" for t, d in sorted(rep["not_float"].items())))
    if bad:
        raise ConversionRefused(_QUANTIZER, f"segment {job.segment}: cannot keep in float: " + "; ".join(bad))
    kept, via, ints = rep.get("kept", {}), rep.get("via", {}), rep.get("unquantized", [])
    fused = f"; {len(via)} through the op TFLite fused them into" if via else ""
    plain = f"; {len(ints)} with integer outputs only (never quantized)" if ints else ""
    return (f"{len(kept)} ONNX node(s) kept in float as {rep.get('tensors', 0)} TFLite tensor(s){fused}{plain}; "
            "outputs " + ("float32 (a kept op writes one)" if rep.get("float_outputs") else "int8"))


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
    # onnx2tf keeps the names (-coion) or, where it cannot, names them output_0.. in the ONNX graph's order
    for k, s in enumerate(specs):
        if s.name not in sig and f"{what}_{k}" in sig:
            sig[s.name] = sig[f"{what}_{k}"]
    named = {sig[s.name] for s in specs if s.name in sig}
    free = [d for d in details if d["index"] not in named]  # in the model's order

    def fits(spec: Any, d: dict) -> bool:
        shape, tshape = tuple(spec.shape), tuple(int(x) for x in d["shape"])
        return tshape == shape or (len(shape) >= 3 and tshape == (shape[0], *shape[2:], shape[1]))

    res = []
    for k, s in enumerate(specs):
        if s.name in sig:
            d = by_index.get(sig[s.name])
        else:
            # the signature does not name it (onnx2tf renamed it): the one unnamed tensor of its shape (NCHW or NHWC),
            # else, among several of that shape, the one in its position; never a tensor of another shape
            same = [x for x in free if fits(s, x)]
            d = same[0] if len(same) == 1 else None
            if d is None and len(details) == len(specs) and fits(s, details[k]) and details[k] in free:
                d = details[k]
            if d is None and len(same) > 1:
                raise ConversionRefused("onnx2tf", f"{what} {s.name!r}: the converted model has {len(same)} unnamed "
                                                   f"{what}s of its shape {list(s.shape)} and none in its position")
            if d is not None:
                free.remove(d)
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

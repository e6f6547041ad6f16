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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.paths import toolchain_venv
from edgesdk.toolchains.adapters._accel import TfliteCompilerAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob
from edgesdk.toolchains.executor import Command, ConversionPlan

ACCELERATOR = "ethos-u65-256"
#: vela's bundled Arm/vela.ini (ethosu/config_files/Arm/vela.ini in the wheel). NXP ships no ini for the i.MX 93: its
#: vela fork (nxp-imx/ethos-u-vela, Imx93ArchitectureFeatures) hard-codes the numbers of Arm's Ethos_U65_High_End
#: system config and a 384 KiB SRAM arena cache, which is Arm's Dedicated_Sram_384KB memory mode
#: (toolchains/vela/toolchain.yaml notes, with the sources).
CONFIG = "Arm/vela.ini"
SYSTEM_CONFIG = "Ethos_U65_High_End"
MEMORY_MODE = "Dedicated_Sram_384KB"


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

    def node_placement(self, job: ConversionJob, plan: ConversionPlan
                       ) -> tuple[dict[str, Any], dict[str, tuple[str, str, str]], dict[str, str]]:
        """vela's placement per ONNX node of an executed plan: (the by-value mapping, node -> (npu|cpu, vela op(s),
        reason), node -> why it is unmapped). The float32 TFLite onnx2tf writes beside the int8 one, the segment's
        calibration arrays and the tflite venv's interpreter find each node's TFLite op (module comment above
        _NODE_MAP)."""
        import json
        import subprocess

        from edgesdk.errors import ToolchainError
        from edgesdk.toolchains.adapters._tflite_values import VALUE_MATCH
        from edgesdk.toolchains.adapters.tflite import _safe, io_aliases

        assert job.calib is not None
        w, sid = job.work, job.segment
        tfl = plan.outputs["tflite"]
        alias = io_aliases([t.name for t in (*job.inputs, *job.outputs)])
        cfg = {"float": str(tfl.with_name(tfl.name.replace("_full_integer_quant", "_float32"))), "int8": str(tfl),
               "onnx": str(job.onnx), "arrays": str(job.calib.arrays), "out": str(w / f"{sid}_vela_map.json"),
               "inputs": [{"alias": alias[i.name], "npy": str(w / f"{sid}_calib_{_safe(i.name)}.npy")}
                          for i in job.inputs]}
        (w / f"{sid}_vela_map.cfg.json").write_text(json.dumps(cfg, indent=1))
        (w / f"{sid}_vela_map.py").write_text(VALUE_MATCH + _NODE_MAP)
        r = subprocess.run([str(self.tflite.python), str(w / f"{sid}_vela_map.py"), str(w / f"{sid}_vela_map.cfg.json")],
                           capture_output=True, text=True, timeout=1800, check=False)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolchainError(f"vela placement: mapping the TFLite ops back to ONNX nodes by value failed: {last[0]}")
        mapping = json.loads(Path(cfg["out"]).read_text())
        placed, unmapped = placement_by_node(mapping, self.report(plan)["ops"])
        return mapping, placed, unmapped

    def compiler_placement(self, onnx_path: Path, work: Path, inputs: Sequence[Any], outputs: Sequence[Any]
                           ) -> dict[str, tuple[str, str]] | None:
        """The int8 TFLite (tflite toolchain, 4 random calibration samples: placement does not depend on the values),
        compiled by vela; its per-op placement mapped to ONNX nodes by value (node_placement). Minutes: onnx2tf."""
        if not self.vendor_env().ok or not self.tflite.check_env().ok:
            return None
        job, plan = self.placement_build(onnx_path, work, inputs, outputs)
        _, placed, _ = self.node_placement(job, plan)
        return {n: ("accelerator" if t == "npu" else "cpu", f"vela: {op} on the {t.upper()}" + (f" ({why})" if why else ""))
                for n, (t, op, why) in placed.items()}

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        ins, outs = self.tflite_io(job, plan)
        return Artifact({"model": plan.outputs["model"]}, ins, outs, options=self.compiled_options(plan),
                        notes=self.log_notes(plan), compiler_view=self.report(plan))


# Run in the tflite venv after _tflite_values.VALUE_MATCH (argv[1]: a JSON config). Each ONNX node's outputs (or the
# consumer TFLite fuses them into) are found by value in onnx2tf's float32 TFLite, then the float32 TFLite's ops are
# aligned with the int8 TFLite's (the same converter run: the same op sequence, other fused tensor names) to name the
# int8 op vela saw.
_NODE_MAP = r'''
import difflib, json, sys
import onnx
from ai_edge_litert.interpreter import Interpreter, OpResolverType

cfg = json.load(open(sys.argv[1]))


def load(path, keep):
    it = Interpreter(model_path=path, experimental_preserve_all_tensors=keep,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def op_rows(it):
    t = {d["index"]: d for d in it.get_tensor_details()}
    return [(o["op_name"], t[o["outputs"][0]]["name"], tuple(int(x) for x in t[o["outputs"][0]]["shape"]))
            for o in it._get_ops_details() if len(o["outputs"]) and o["outputs"][0] >= 0]


fl = load(cfg["float"], True)
sig = fl._get_full_signature_list().get("serving_default", {}).get("inputs", {})
details = fl.get_input_details()
for pos, i in enumerate(cfg["inputs"]):
    idx = sig.get(i["alias"], details[pos]["index"] if len(details) == len(cfg["inputs"]) else None)
    if idx is None:
        sys.exit(f"the float TFLite has no input {i['alias']!r} (signature: {sorted(sig)})")
    fl.set_tensor(idx, np.load(i["npy"]).astype(np.float32)[:1])
fl.invoke()
by_size = float_tensors(fl)
frows, qrows = op_rows(fl), op_rows(load(cfg["int8"], False))
to_int8 = {}
sm = difflib.SequenceMatcher(a=[(r[0], r[2]) for r in frows], b=[(r[0], r[2]) for r in qrows], autojunk=False)
for blk in sm.get_matching_blocks():
    for k in range(blk.size):
        to_int8[frows[blk.a + k][1]] = qrows[blk.b + k][1]

m = onnx.load(cfg["onnx"])
nodes, inits, consumers, producer, dynamic = onnx_graph(m)
chains = {o: fused_chain(o, consumers, inits) for n in m.graph.node for o in n.output if o in dynamic}
values = onnx_values(m, [t for c in chains.values() for t in c], cfg["arrays"])
out = {}
for n in m.graph.node:
    hits, why, via = [], [], None
    for o in (o for o in n.output if o in chains):
        for k, t in enumerate(chains[o]):
            h, reason = match(values[t], by_size)
            if h is None:
                why.append(f"output {o!r} is not a float tensor (no quantized TFLite op of its own)")
                break
            if h:
                q = [to_int8[x] for x in h if x in to_int8]
                if not q:
                    why.append(f"output {o!r}: its float32 TFLite op(s) have no counterpart in the int8 TFLite")
                hits += q
                via = producer[t] if k else via
                break
        else:
            why.append(f"output {o!r}: {reason}")
    if not any(o in dynamic for o in n.output):
        why = ["it computes a constant (folded into a weight)"]
    out[n.name] = {"tensors": list(dict.fromkeys(hits)), "why": "; ".join(why), "via": via}
json.dump({"nodes": out, "int8_ops": [[r[0], r[1]] for r in qrows], "aligned": len(to_int8), "float_ops": len(frows)},
          open(cfg["out"], "w"), indent=1)
'''


def placement_by_node(mapping: dict, vela_ops: list[dict]) -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """ONNX node -> (npu|cpu, vela op(s), reason) for the nodes mapped to int8 TFLite ops; node -> why for the rest.

    A TFLite op vela does not list was fused into a neighbouring NPU op or removed by vela's graph optimiser (vela
    passes every op it cannot run to the CPU under its own name): NPU. A node whose values several TFLite ops hold (a
    RESHAPE or TRANSPOSE that only moves them, an op fused into its producer) takes their placement when they agree;
    when they do not, the nodes sharing those ops are matched to them in graph order if the counts agree, else the
    node is unmapped (ambiguous)."""
    listed: dict[str, list[dict]] = {}
    for o in vela_ops:
        listed.setdefault(o["name"], []).append(o)
    order = {name: k for k, (_, name) in enumerate(mapping["int8_ops"])}

    def where(t: str) -> tuple[str, str, str]:
        rows = listed.get(t)
        if not rows:
            return "npu", "(fused/removed by vela)", ""
        tgt = "cpu" if any(r["target"] == "cpu" for r in rows) else "npu"
        return tgt, "+".join(dict.fromkeys(r["op"] for r in rows)), "; ".join(
            dict.fromkeys(r["reason"] for r in rows if r["reason"]))

    placed: dict[str, tuple[str, str, str]] = {}
    unmapped: dict[str, str] = {}
    groups: dict[tuple[str, ...], list[str]] = {}
    for node, r in mapping["nodes"].items():
        ts = sorted(r["tensors"], key=lambda t: order.get(t, 1 << 30))
        if not ts:
            unmapped[node] = r["why"] or "not found in the TFLite"
            continue
        ws = [where(t) for t in ts]
        if len({w[0] for w in ws}) == 1:
            placed[node] = (ws[0][0], "+".join(dict.fromkeys(w[1] for w in ws)),
                            "; ".join(dict.fromkeys(w[2] for w in ws if w[2])))
        else:
            groups.setdefault(tuple(ts), []).append(node)
    for ts, group in groups.items():
        if len(group) == len(ts):  # nodes in graph order, ops in TFLite order
            placed.update({node: where(t) for node, t in zip(group, ts)})
        else:
            unmapped.update({node: f"ambiguous: its values are in {len(ts)} TFLite ops that vela placed differently"
                             for node in group})
    return placed, unmapped


#: `python -c _TEE LOG argv...`: run argv, pass its output through, and keep a copy of it in LOG.
_TEE = ("import subprocess, sys; r = subprocess.run(sys.argv[2:], capture_output=True, text=True); "
        "open(sys.argv[1], 'w').write(r.stdout + r.stderr); sys.stdout.write(r.stdout); "
        "sys.stderr.write(r.stderr); sys.exit(r.returncode)")

__all__ = ["VelaAdapter", "VelaOp", "VelaReport", "parse_vela_output", "parse_vela_summary_csv", "placement_by_node"]

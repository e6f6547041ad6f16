"""Rockchip RKNN (RK3588 NPU): ONNX -> .rknn with rknn-toolkit2 2.5.0 in its own venv, checked on its simulator.

Really runs on x86-64 Linux: one driver script (_DRIVER) is run by the toolchain venv's python. It calls
RKNN.config(mean_values, std_values, target_platform) -> load_onnx -> build(do_quantization, dataset=list of
NCHW .npy) -> export_rknn -> init_runtime() (no target: the simulator) -> inference(data_format='nchw') and
writes the cosine of the simulator vs onnxruntime (fp32 ONNX) per output. The compiler's per-op table
("Network Layer Information Table": ID OpType DataType Target InputShape OutputShape Cycles RW) is written to
the build log; parse_layer_table() reads it and map_to_onnx() names the ONNX nodes of each row via the
"Feature Tensor Information Table" (the input tensors of each op ID).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters._accel import AcceleratorAdapter
from edgesdk.toolchains.adapters.base import Artifact, ConversionJob, EnvStatus, plain_specs
from edgesdk.toolchains.executor import Command, ConversionPlan, FileWrite

TARGET = "rk3588"

#: Run by the venv's python: `driver.py CONFIG.json`. fd 1/2 go to config["log"] while the toolkit runs.
_DRIVER = r'''
import json, os, sys
cfg = json.load(open(sys.argv[1]))
log = os.open(cfg["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
saved = os.dup(1), os.dup(2)
os.dup2(log, 1); os.dup2(log, 2)
report = {"cosine": {}, "rc": {}}
try:
    import numpy as np
    from rknn.api import RKNN
    r = RKNN(verbose=True)
    kw = {"target_platform": cfg["target"]}
    if cfg.get("mean") is not None:
        kw["mean_values"] = cfg["mean"]; kw["std_values"] = cfg["std"]
    if cfg.get("quantized_algorithm"):
        kw["quantized_algorithm"] = cfg["quantized_algorithm"]
    r.config(**kw)
    for step, call in (("load_onnx", lambda: r.load_onnx(model=cfg["onnx"])),
                       ("build", lambda: r.build(do_quantization=cfg["quantize"], dataset=cfg.get("dataset"))),
                       ("export_rknn", lambda: r.export_rknn(cfg["rknn"]))):
        rc = call(); report["rc"][step] = rc
        if rc != 0:
            raise SystemExit(f"rknn-toolkit2 {step} returned {rc}")
    first = open(cfg["samples_from"]).readline().split() if cfg.get("samples_from") else []
    if cfg.get("check") and first:
        report["rc"]["init_runtime"] = r.init_runtime()
        if report["rc"]["init_runtime"] != 0:
            raise SystemExit(f"rknn-toolkit2 init_runtime (the simulator) returned {report['rc']['init_runtime']}")
        xs = [np.load(p) for p in first]
        got = r.inference(inputs=xs, data_format="nchw")
        import onnxruntime as ort
        s = ort.InferenceSession(cfg["onnx"], providers=["CPUExecutionProvider"])
        feed = {}
        for i, (inp, x) in enumerate(zip(s.get_inputs(), xs)):
            if cfg.get("mean") is not None:
                m = np.asarray(cfg["mean"][i], np.float32).reshape(1, -1, 1, 1)
                d = np.asarray(cfg["std"][i], np.float32).reshape(1, -1, 1, 1)
                x = (x - m) / d
            feed[inp.name] = x.astype(np.float32)
        ref = s.run(None, feed)
        for o, a, b in zip(s.get_outputs(), got, ref):
            a = np.asarray(a, np.float64).ravel(); b = np.asarray(b, np.float64).ravel()
            report["cosine"][o.name] = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    if cfg.get("check_feeds"):
        # the simulator on the caller's own inputs (convert's reference input, --target's evaluation samples):
        # its outputs are what the accelerator computes, judged by edgesdk like every engine's
        if "init_runtime" not in report["rc"]:
            report["rc"]["init_runtime"] = r.init_runtime()
            if report["rc"]["init_runtime"] != 0:
                raise SystemExit(f"rknn-toolkit2 init_runtime (the simulator) returned {report['rc']['init_runtime']}")
        feeds = np.load(cfg["check_feeds"])
        names = cfg["input_names"]
        count = len(feeds[feeds.files[0]])
        outs = {}
        for k in range(count):
            xs = [np.ascontiguousarray(feeds[n][k:k + 1], np.float32) for n in names]
            if cfg.get("mean") is not None:  # the .rknn normalizes: give it the pixels these inputs came from
                xs = [x * np.asarray(cfg["std"][i], np.float32).reshape(1, -1, 1, 1)
                      + np.asarray(cfg["mean"][i], np.float32).reshape(1, -1, 1, 1) for i, x in enumerate(xs)]
            for j, y in enumerate(r.inference(inputs=xs, data_format="nchw")):
                outs[f"{k}_{j}"] = np.asarray(y, np.float32)
        np.savez(cfg["check_out"], **outs)
    if cfg.get("accuracy") and first:
        # per-layer: the simulator against the toolkit's float 'golden', on the first calibration sample; only the
        # table is kept (the per-tensor dumps under golden/ and simulator/ are as big as the activations)
        import shutil
        d = cfg["accuracy"] + ".d"
        try:  # a diagnostic: its failure is reported, the built model stands
            report["rc"]["accuracy_analysis"] = r.accuracy_analysis(inputs=first, output_dir=d)
        except Exception as exc:
            report["rc"]["accuracy_analysis"] = f"{type(exc).__name__}: {exc}"
        if os.path.isfile(os.path.join(d, "error_analysis.txt")):
            shutil.copyfile(os.path.join(d, "error_analysis.txt"), cfg["accuracy"])
        shutil.rmtree(d, ignore_errors=True)
    r.release()
finally:
    os.dup2(saved[0], 1); os.dup2(saved[1], 2)
json.dump(report, open(cfg["report"], "w"), indent=2)
'''


@dataclass(frozen=True)
class LayerRow:
    """One row of the compiler's Network Layer Information Table."""

    id: int
    op: str
    dtype: str
    target: str  # "NPU" | "CPU"
    input_shapes: str
    output_shape: str
    cycles: str = ""
    rw_kb: str = ""
    tensors: tuple[str, ...] = field(default_factory=tuple)  # input feature tensors (Feature Tensor table)
    onnx_nodes: tuple[str, ...] = field(default_factory=tuple)
    full_name: str = ""  # the FullName column, `OnnxOpType:onnx_node_name` of the op's first ONNX node


_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)*\s*[DIWE]\s+RKNN:\s+\[[0-9:.]+\]\s?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _rknn_lines(log: str) -> list[str]:
    out = []
    for line in _ANSI.sub("", log).splitlines():
        m = _PREFIX.match(line)
        if m:
            out.append(line[m.end():].rstrip())
    return out


def parse_layer_table(log: str) -> list[LayerRow]:
    """The per-op placement rows of an rknn-toolkit2 (verbose) build log, with feature-tensor names."""
    lines = _rknn_lines(log)
    rows: dict[int, LayerRow] = {}
    tensors: dict[int, list[str]] = {}
    mode = ""
    for ln in lines:
        s = ln.strip()
        if "Network Layer Information Table" in s:
            mode = "layer"; continue
        if "Feature Tensor Information Table" in s:
            mode = "feature"; continue
        if "Const Tensor Information Table" in s or s.startswith("Total "):
            mode = ""; continue
        if not s or s.startswith(("-", "ID ")):
            continue
        parts = s.split()
        if not parts[0].isdigit():
            continue
        if mode == "layer" and len(parts) >= 6:
            rows[int(parts[0])] = LayerRow(int(parts[0]), parts[1], parts[2], parts[3], parts[4], parts[5],
                                           parts[6] if len(parts) > 6 else "", parts[7] if len(parts) > 7 else "",
                                           full_name=" ".join(parts[8:]))
        elif mode == "feature" and len(parts) >= 3:
            tensors.setdefault(int(parts[0]), []).append(parts[2])
    out = []
    for i, r in sorted(rows.items()):
        out.append(LayerRow(r.id, r.op, r.dtype, r.target, r.input_shapes, r.output_shape, r.cycles, r.rw_kb,
                            tuple(t for t in tensors.get(i, ()) if not t.endswith("_exSecondary")),
                            full_name=r.full_name))
    return out


def map_to_onnx(rows: Sequence[LayerRow], onnx_nodes: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                ) -> list[LayerRow]:
    """Name the ONNX node (name, inputs, outputs) of each row.

    The FullName column (`Conv:conv1`) names the op's first ONNX node; that is the mapping. A row without a usable
    FullName (a name the table truncated, a node the toolkit made) falls back to its input tensor, and only when
    exactly one ONNX node consumes that tensor: a tensor that feeds several nodes (a residual, a YOLO head) says
    nothing about which of them this op is. The other nodes of a fusion (the Relu of ConvRelu) stay unmapped.
    """
    names_known = {name for name, _, _ in onnx_nodes}
    consumers: dict[str, list[str]] = {}
    for name, ins, _ in onnx_nodes:
        for t in ins:
            consumers.setdefault(t, []).append(name)
    out = []
    for r in rows:
        node = r.full_name.split(":", 1)[1] if ":" in r.full_name else ""
        if node not in names_known and re.fullmatch(r".+#\d+", node):  # `fc1#2`: a node the toolkit rewrote
            node = node.rsplit("#", 1)[0]
        if node in names_known:
            names: tuple[str, ...] = (node,)
        else:
            only = [consumers[t][0] for t in r.tensors if len(consumers.get(t, ())) == 1]
            names = tuple(dict.fromkeys(only))[:1]
        out.append(LayerRow(r.id, r.op, r.dtype, r.target, r.input_shapes, r.output_shape, r.cycles, r.rw_kb,
                            r.tensors, names, r.full_name))
    return out


#: figures are %.5f; a long euclidean runs into the next cosine ("3422.526860.99996"), so widths decide, not spaces
_ACC_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<tensor>\S+)\s+(?P<ec>-?\d\.\d{5})\s*\|\s*(?P<ee>\d+\.\d{5})\s*"
                      r"(?P<sc>-?\d\.\d{5})\s*\|\s*(?P<se>\d+\.\d{5})")


def parse_accuracy_analysis(text: str) -> list[dict[str, Any]]:
    """rknn-toolkit2's error_analysis.txt: per layer `[OpType] tensor  entire_cos | entire_euc  single_cos |
    single_euc` (the simulator against its float 'golden'; entire accumulates the error, single is the layer alone).
    Rows without figures (a Conv fused into the Relu after it) are left out."""
    rows = []
    for line in text.splitlines():
        m = _ACC_ROW.match(line.strip())
        if m:
            rows.append({"op_type": m["op"], "tensor": m["tensor"], "cosine": float(m["ec"]),
                         "euclidean": float(m["ee"]), "single_cosine": float(m["sc"]), "single_euclidean": float(m["se"])})
    return rows


def placement(rows: Sequence[LayerRow]) -> dict[str, str]:
    """ONNX node name -> "npu" | "cpu" (the mapped rows only)."""
    res: dict[str, str] = {}
    for r in rows:
        if r.op in ("InputOperator", "OutputOperator"):
            continue
        for n in r.onnx_nodes:
            res.setdefault(n, r.target.lower())
    return res


class RknnAdapter(AcceleratorAdapter):
    """rknn-toolkit2 in its venv: build, export, and its PC simulator as the vendor's own host check. Before it, the
    host int8 simulation (scheme `rknn`, edgesdk.simulate) is the segment's CPU version, as for every accelerator."""

    id = "rknn"
    engine = "rknn"
    scheme = "rknn"
    vendor_tools = ("rknn",)
    vendor_binary = "rknn-toolkit2"
    vendor_roles = ("model", "log", "report", "accuracy", "check_out")
    vendor_simulator = True
    install_hint = "edgesdk toolchain install rknn"
    precisions = ("int8", "fp16")
    unsupported: ClassVar[Mapping[str, str]] = {"fp32": "the RKNPU2 computes in int8 or fp16 (build(do_quantization=False) gives fp16)"}
    pip_args = ("--no-deps",)
    timeout = 1800.0
    compiler_label = "vendor compiler"

    def vendor_mode(self) -> str | None:
        if self._mode is not None:
            return self._mode
        return "native" if self.venv_ready() else None

    def vendor_env(self) -> EnvStatus:
        if not self.venv_ready():
            return self.missing_venv()
        return EnvStatus(self.id, True, "rknn-toolkit2 2.5.0", f"rknn-toolkit2 (venv {self.venv})", "")

    def plan(self, job: ConversionJob) -> ConversionPlan:
        self.check_precision(job.precision)
        quant = job.precision == "int8"
        if quant and job.calib is None:
            raise InputError("int8 needs a calibration set: pass --calib DIR")
        w = job.work
        cfg: dict[str, Any] = {
            "onnx": str(job.onnx), "rknn": str(w / f"{job.segment}.rknn"), "log": str(w / f"{job.segment}_rknn.log"),
            "report": str(w / f"{job.segment}_rknn.json"), "target": str(job.options.get("target_platform", TARGET)),
            "quantize": quant, "check": bool(job.options.get("simulate", True)),
            "quantized_algorithm": job.options.get("quantized_algorithm"),
            "accuracy": str(w / f"{job.segment}_rknn_accuracy.txt") if job.options.get("accuracy_analysis", True)
            and quant else None,
        }
        # The calibration arrays are model inputs already: no normalization unless asked (then the .rknn takes
        # raw pixels: the dataset, the simulator check and check_feeds are given the pixels back, x * std + mean).
        if job.options.get("mean_values") is not None:
            cfg["mean"] = job.options["mean_values"]
            cfg["std"] = job.options.get("std_values")
        if job.options.get("check_feeds"):
            cfg["check_feeds"] = str(job.options["check_feeds"])
            cfg["check_out"] = str(w / f"{job.segment}_rknn_check_out.npz")
            cfg["input_names"] = [t.name for t in job.inputs]
        writes = [FileWrite(w / "rknn_driver.py", _DRIVER.encode(), "the rknn-toolkit2 driver run in the venv")]
        commands = []
        if job.calib is not None:
            cfg["dataset"] = str(w / f"{job.segment}_rknn_dataset.txt")
            split = ("-c", _SPLIT, str(job.calib.arrays), str(w / f"{job.segment}_rknn_calib"), cfg["dataset"],
                     ",".join(s.name for s in job.inputs), json.dumps([cfg.get("mean"), cfg.get("std")]))
            commands.append(Command("rknn", (str(self.python), *split), cwd=w, timeout=600,
                                    purpose="calibration .npz -> one NCHW .npy per sample and input (dataset list)"))
            cfg["samples_from"] = cfg["dataset"]
        writes.append(FileWrite(w / f"{job.segment}_rknn_cfg.json", json.dumps(cfg, indent=2).encode(),
                                "rknn driver configuration"))
        commands.append(Command("rknn", (str(self.python), str(w / "rknn_driver.py"), str(w / f"{job.segment}_rknn_cfg.json")),
                                cwd=w, timeout=self.timeout, produces=(Path(cfg["rknn"]),),
                                purpose=f"rknn-toolkit2: build for {cfg['target']} ({job.precision}), export .rknn, "
                                        "check on the simulator against onnxruntime"))
        outputs = {"model": Path(cfg["rknn"]), "log": Path(cfg["log"]), "report": Path(cfg["report"])}
        if cfg["accuracy"]:
            outputs["accuracy"] = Path(cfg["accuracy"])
        if cfg.get("check_out"):
            outputs["check_out"] = Path(cfg["check_out"])
        if quant:  # the host int8 simulation: the segment's CPU version and what the conversion check measures
            commands.insert(0, self.sim_command(job))
            outputs["sim"] = self.sim_path(job)
        notes = ((f"RKNN {job.precision} for {cfg['target']}; inputs/outputs become int8 in the .rknn (rknn-toolkit2 "
                 "changes the default io dtype); the runtime takes float and converts"),)
        return ConversionPlan(self.id, self.engine, job.precision, tuple(writes), tuple(commands), outputs, notes)

    def compiler_placement(self, onnx_path: Path, work: Path, inputs: Sequence[Any], outputs: Sequence[Any]
                           ) -> dict[str, tuple[str, str]] | None:
        """Build `onnx_path` for the RK3588 (int8, 4 random calibration samples: placement does not depend on the
        values; no simulator, no accuracy analysis) and read the layer table, mapped to ONNX nodes."""
        if not self.vendor_env().ok:
            return None
        import onnx

        _, plan = self.placement_build(onnx_path, work, inputs, outputs, {"simulate": False, "accuracy_analysis": False})
        m = onnx.load(str(onnx_path), load_external_data=False)
        view = self.compiler_view(plan, [(n.name, list(n.input), list(n.output)) for n in m.graph.node])
        ops = {n: r for r in view["rows"] for n in r["onnx_nodes"]}
        return {n: ("accelerator" if t == "npu" else "cpu",
                    f"rknn-toolkit2 layer table: {ops[n]['op']} on the {t.upper()}" if n in ops else "")
                for n, t in view["placement"].items()}

    def simulated_outputs(self, job: ConversionJob, plan: ConversionPlan) -> list[dict[str, Any]] | None:
        """The simulator's outputs on job.options["check_feeds"] (one dict per sample, by output name)."""
        import numpy as np

        path = plan.outputs.get("check_out")
        if path is None or not path.is_file():
            return None
        d = np.load(path)
        count = len({k.split("_", 1)[0] for k in d.files})
        return [{o.name: d[f"{k}_{j}"].reshape(o.shape) for j, o in enumerate(job.outputs)} for k in range(count)]

    def compiler_view(self, plan: ConversionPlan, onnx_nodes: Sequence[tuple[str, Sequence[str], Sequence[str]]] = ()
                      ) -> dict[str, Any]:
        log = plan.outputs["log"]
        rows = parse_layer_table(log.read_text(encoding="utf-8", errors="replace")) if log.is_file() else []
        if onnx_nodes:
            rows = map_to_onnx(rows, onnx_nodes)
        return {"label": self.compiler_label, "rows": [r.__dict__ for r in rows], "placement": placement(rows)}

    def describe(self, job: ConversionJob, plan: ConversionPlan) -> Artifact:
        import onnx

        m = onnx.load(str(job.onnx), load_external_data=False)
        view = self.compiler_view(plan, [(n.name, list(n.input), list(n.output)) for n in m.graph.node])
        rep = plan.outputs["report"]
        report = json.loads(rep.read_text()) if rep.is_file() else {}
        cpu = [r for r in view["rows"] if r["target"] == "CPU" and r["op"] not in ("InputOperator", "OutputOperator")]
        npu = [r for r in view["rows"] if r["target"] == "NPU" and r["op"] not in ("InputOperator", "OutputOperator")]
        notes = [f"vendor compiler: {len(npu)} ops on the NPU, {len(cpu)} on the CPU"
                 + ("; CPU: " + ", ".join(f"{r['op']}({','.join(r['onnx_nodes']) or r['id']})" for r in cpu) if cpu else "")]
        if report.get("cosine"):
            notes.append("simulator vs onnxruntime cosine: " + ", ".join(f"{k}={v:.5f}" for k, v in report["cosine"].items()))
        files = {"model": plan.outputs["model"]}
        acc = plan.outputs.get("accuracy")
        if acc is not None and acc.is_file():
            producer = {o: (n.name, n.op_type) for n in m.graph.node for o in n.output}
            layers = [{"node": producer.get(r["tensor"], ("", ""))[0], **r}
                      for r in parse_accuracy_analysis(acc.read_text(encoding="utf-8", errors="replace"))]
            path = job.work / f"{job.segment}_rknn_layers.json"
            path.write_text(json.dumps(vendor_layers_doc(layers), indent=1), encoding="utf-8")
            files["vendor_layers"] = path
            worst = min((x for x in layers if x["node"]), key=lambda x: x["cosine"], default=None)
            if worst is not None:
                notes.append(f"RKNN accuracy_analysis (simulator vs float, first calibration sample): {len(layers)} "
                             f"layers, lowest accumulated cosine {worst['cosine']:.5f} at {worst['node']} "
                             f"({worst['op_type']}); `edgesdk verify` shows them")
        return Artifact(files, plain_specs(job.inputs), plain_specs(job.outputs),
                        options={"data_format": "nchw"}, compiler_view=view,
                        notes=tuple(notes))


#: `-c _SPLIT CALIB.npz OUTDIR LIST.txt in1,in2 [MEAN,STD]`: one .npy (1 x sample shape) per sample and input, a
#: dataset list. With mean/std (the .rknn normalizes), the model inputs are turned back into the pixels they came from.
_SPLIT = r'''
import json, os, sys, numpy as np
npz, out, lst, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
mean, std = json.loads(sys.argv[5]) if len(sys.argv) > 5 else (None, None)
os.makedirs(out, exist_ok=True); d = np.load(npz); arrs = [d[n] if n in d else d[d.files[i]] for i, n in enumerate(names)]
lines = []
for k in range(len(arrs[0])):
    ps = []
    for i, a in enumerate(arrs):
        x = a[k:k+1].astype(np.float32)
        if mean is not None:
            x = x * np.asarray(std[i], np.float32).reshape(1, -1, 1, 1) + np.asarray(mean[i], np.float32).reshape(1, -1, 1, 1)
        p = os.path.join(out, f"{k}_{i}.npy"); np.save(p, x); ps.append(p)
    lines.append(" ".join(ps))
open(lst, "w").write("\n".join(lines) + "\n")
'''

def vendor_layers_doc(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The bundle's `vendor_layers` file (read by edgesdk verify): the compiler's own per-layer comparison."""
    return {"tool": "rknn-toolkit2 accuracy_analysis", "against": "the toolkit's float run ('golden')",
            "sample": "the first calibration sample, at conversion",
            "cosine": "entire: accumulated through the network; single_cosine: the layer alone on float inputs",
            "layers": layers}


__all__ = ["LayerRow", "RknnAdapter", "map_to_onnx", "parse_accuracy_analysis", "parse_layer_table", "placement",
           "vendor_layers_doc"]

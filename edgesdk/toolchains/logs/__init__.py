"""Parsers of the vendor compilers' logs into edgesdk's own terms (placement per op, memory, subgraphs).

Each parser takes the text a tool prints and returns a frozen dataclass; the formats and where
they are documented are in each function's docstring and in tests/golden/npu/logs/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesdk.graph.support import Kind, Placement, SupportReport

_SIZE = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}


def _mib(text: str) -> float:
    m = re.match(r"\s*([0-9.]+)\s*([KMG]?i?B)", text)
    if not m:
        return 0.0
    return float(m.group(1)) * _SIZE.get(m.group(2), 1.0)


@dataclass(frozen=True)
class OpPlacement:
    """One row of a compiler's placement table: an op (type or node), how many, where, and why."""

    op: str
    count: int
    target: str  # "accelerator" | "cpu"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "count": self.count, "target": self.target, "reason": self.reason}


@dataclass(frozen=True)
class EdgeTpuLog:
    compiler_version: str | None
    on_chip_mib: float
    off_chip_mib: float
    subgraphs: int | None
    total_ops: int | None
    tpu_ops: int | None
    cpu_ops: int | None
    ops: tuple[OpPlacement, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"compiler_version": self.compiler_version, "on_chip_mib": self.on_chip_mib,
                "off_chip_mib": self.off_chip_mib, "subgraphs": self.subgraphs, "total_ops": self.total_ops,
                "tpu_ops": self.tpu_ops, "cpu_ops": self.cpu_ops, "ops": [o.to_dict() for o in self.ops]}


def parse_edgetpu_log(text: str) -> EdgeTpuLog:
    """`edgetpu_compiler -s` output / the `<model>_edgetpu.log` file.

    Format (google-coral/edgetpu#60, #342, #490; ultralytics/ultralytics#4719): a header with
    "Edge TPU Compiler version X", "On-chip memory used for caching model parameters: 6.86MiB",
    "Off-chip memory used for streaming uncached model parameters: 1.22MiB", "Number of Edge TPU
    subgraphs: 1", "Total number of operations: 93", "Number of operations that will run on Edge
    TPU: 83" / "...on CPU: 10", then the table "Operator  Count  Status" with one row per
    (operator, status): status "Mapped to Edge TPU" or the reason it is not mapped.
    """
    def grab(pat: str) -> str | None:
        m = re.search(pat, text)
        return m.group(1) if m else None

    def num(pat: str) -> int | None:
        v = grab(pat)
        return int(v) if v is not None else None

    ops = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"\s*Operator\s+Count\s+Status", line):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        m = re.match(r"\s*([A-Z0-9_]+)\s+(\d+)\s+(.+?)\s*$", line)
        if not m:
            in_table = False
            continue
        status = m.group(3)
        ops.append(OpPlacement(m.group(1), int(m.group(2)), "accelerator" if status == "Mapped to Edge TPU" else "cpu",
                               status))
    on = grab(r"On-chip memory used for caching model parameters:\s*(\S+)")
    off = grab(r"Off-chip memory used for streaming uncached model parameters:\s*(\S+)")
    return EdgeTpuLog(grab(r"Edge TPU Compiler version\s+([0-9.]+)"), _mib(on) if on else 0.0,
                      _mib(off) if off else 0.0, num(r"Number of Edge TPU subgraphs:\s*(\d+)"),
                      num(r"Total number of operations:\s*(\d+)"),
                      num(r"Number of operations that will run on Edge TPU:\s*(\d+)"),
                      num(r"Number of operations that will run on CPU:\s*(\d+)"), tuple(ops))


#: Edge TPU on-chip parameter cache and the streaming cost of what does not fit (boards.md section 4:
#: about 300 MB/s effective USB 3 -> about 3 ms per uncached MB; USB 2 about 25-30 ms).
EDGETPU_CACHE_MIB = 8.0
EDGETPU_MS_PER_UNCACHED_MIB_USB3 = 3.0


def edgetpu_cache_warning(log: EdgeTpuLog) -> str | None:
    if log.off_chip_mib <= 0:
        return None
    return (f"{log.off_chip_mib:.2f} MiB of parameters do not fit the Edge TPU's ~{EDGETPU_CACHE_MIB:g} MB on-chip "
            f"cache and are streamed from the host on every inference: about "
            f"{log.off_chip_mib * EDGETPU_MS_PER_UNCACHED_MIB_USB3:.1f} ms more per inference on USB 3 "
            f"(~{EDGETPU_MS_PER_UNCACHED_MIB_USB3:g} ms per uncached MB), about 10x that on USB 2")


@dataclass(frozen=True)
class VitisLog:
    target: str | None
    graph: str | None
    op_count: int | None
    subgraphs: int | None
    dpu_subgraphs: int | None
    cpu_ops: tuple[OpPlacement, ...]
    xmodel: str | None
    fingerprint: str | None = None

    @property
    def cpu_subgraphs(self) -> int | None:
        return None if self.subgraphs is None or self.dpu_subgraphs is None else self.subgraphs - self.dpu_subgraphs

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "graph": self.graph, "op_count": self.op_count, "subgraphs": self.subgraphs,
                "dpu_subgraphs": self.dpu_subgraphs, "cpu_subgraphs": self.cpu_subgraphs,
                "cpu_ops": [o.to_dict() for o in self.cpu_ops], "xmodel": self.xmodel, "fingerprint": self.fingerprint}


def parse_vitis_log(text: str) -> VitisLog:
    """`vai_c_xir` output ([UNILOG][INFO] lines; Vitis AI 1.3-3.5, e.g. Xilinx/Vitis-AI#219, #725, #1091):
    "Target architecture: DPUCZDX8G_ISA1_B4096", "Graph name: net, with op num: 42",
    "Total device subgraph number 5, DPU subgraph number 1", "[UNILOG][WARNING] xir::Op{name = X,
    type = T} has been assigned to CPU: [reason]", "The compiled xmodel is saved to \"path\""."""
    def grab(pat: str) -> str | None:
        m = re.search(pat, text)
        return m.group(1) if m else None

    sub = re.search(r"Total device subgraph number (\d+), DPU subgraph number (\d+)", text)
    cpu = [OpPlacement(f"{m.group(2)} {m.group(1)}", 1, "cpu", m.group(3).strip() or "assigned to CPU")
           for m in re.finditer(r"xir::Op\{name = ([^,]+), type = ([^}]+)\} has been assigned to CPU:?\s*(.*)", text)]
    opn = grab(r"with op num: (\d+)")
    return VitisLog(grab(r"Target architecture: (\S+)"), grab(r"Graph name: ([^,\s]+)"), int(opn) if opn else None,
                    int(sub.group(1)) if sub else None, int(sub.group(2)) if sub else None, tuple(cpu),
                    grab(r'The compiled xmodel is saved to "([^"]+)"'), grab(r"fingerprint[\"': ]+(0x[0-9a-fA-F]+)"))


@dataclass(frozen=True)
class HorizonChecker:
    nodes: tuple[tuple[str, str, str, str], ...]  # (node, "BPU"|"CPU", subgraph, type)
    ops: tuple[OpPlacement, ...] = field(default=())

    @property
    def subgraphs(self) -> int:
        return len({s for _, on, s, _ in self.nodes if on == "BPU" and s.startswith("id(")})

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [list(n) for n in self.nodes], "bpu_subgraphs": self.subgraphs,
                "ops": [o.to_dict() for o in self.ops]}


def parse_horizon_checker(text: str) -> HorizonChecker:
    """`hb_mapper checker` table (D-Robotics rdk_doc ptq_process.md [HZ-ptq]; OpenExplorer check_model.html):
    a block between "====" rules with the header "Node ON Subgraph Type", then one row per node:
    name, BPU or CPU, "id(N)" or "--", and the operator type (HzSQuantizedConv, Softmax, ...)."""
    nodes = []
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if re.match(r"Node\s+ON\s+Subgraph\s+Type", s):
            in_table = True
            continue
        if not in_table or not s or s.startswith("-"):
            continue
        if s.startswith("="):
            if nodes:
                break
            continue
        parts = s.split()
        if len(parts) >= 4 and parts[1] in ("BPU", "CPU"):
            nodes.append((parts[0], parts[1], parts[2], " ".join(parts[3:])))
    agg: dict[tuple[str, str], int] = {}
    for _, on, _, typ in nodes:
        agg[(typ, on)] = agg.get((typ, on), 0) + 1
    ops = tuple(OpPlacement(t, c, "accelerator" if on == "BPU" else "cpu",
                            "on the BPU" if on == "BPU" else "hb_mapper checker places it on the CPU")
                for (t, on), c in sorted(agg.items()))
    return HorizonChecker(tuple(nodes), ops)


# -- the compiler's actual placement, in edgesdk's support-report terms ------------------------------

#: The note a log-derived compiler_view carries, so reports label it "vendor compiler log" and not
#: "edgesdk's prediction" (edgesdk.graph.report looks for this prefix).
COMPILER_LOG_NOTE = "compiler_view: from the vendor compiler log"

#: ONNX op type -> the TFLite op types it becomes (onnx2tf / TFLite converter), for reading the
#: Edge TPU compiler's per-op-type table back onto ONNX nodes.
ONNX_TO_TFLITE: dict[str, tuple[str, ...]] = {
    "Conv": ("CONV_2D", "DEPTHWISE_CONV_2D"), "ConvTranspose": ("TRANSPOSE_CONV",),
    "Gemm": ("FULLY_CONNECTED",), "MatMul": ("FULLY_CONNECTED", "BATCH_MATMUL"),
    "Add": ("ADD",), "Sub": ("SUB",), "Mul": ("MUL",), "Div": ("DIV",),
    "Relu": ("RELU",), "Clip": ("RELU6", "RELU"), "Sigmoid": ("LOGISTIC",), "Tanh": ("TANH",),
    "HardSwish": ("HARD_SWISH",), "LeakyRelu": ("LEAKY_RELU",),
    "Concat": ("CONCATENATION",), "Reshape": ("RESHAPE",), "Flatten": ("RESHAPE",), "Squeeze": ("RESHAPE",),
    "Unsqueeze": ("RESHAPE",), "Resize": ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"),
    "AveragePool": ("AVERAGE_POOL_2D",), "GlobalAveragePool": ("MEAN", "AVERAGE_POOL_2D"),
    "ReduceMean": ("MEAN",), "MaxPool": ("MAX_POOL_2D",), "GlobalMaxPool": ("MAX_POOL_2D", "REDUCE_MAX"),
    "Softmax": ("SOFTMAX",), "Transpose": ("TRANSPOSE",), "Pad": ("PAD",), "Slice": ("STRIDED_SLICE", "SLICE"),
    "Split": ("SPLIT", "SPLIT_V"),
}

_LOG = "from the compiler log"


def _edgetpu_kind(reason: str) -> Kind:
    r = reason.lower()
    if "more than one subgraph" in r:
        return "partition_rule"
    if "rank" in r or "limitation" in r or "dimension" in r or "size" in r:
        return "limits"
    return "unsupported_op"


def _support_from_edgetpu(report: SupportReport, log: EdgeTpuLog) -> tuple[list[Placement], list[str]]:
    from edgesdk.graph.support import Placement

    acc = report.chain[0]
    cpu = next((c for c in report.chain if c.target == "cpu"), report.chain[-1])
    mapped: dict[str, int] = {}
    unmapped: dict[str, list[OpPlacement]] = {}
    for o in log.ops:
        if o.target == "accelerator":
            mapped[o.op] = mapped.get(o.op, 0) + o.count
        else:
            unmapped.setdefault(o.op, []).append(o)
    base = report.compiler_view if report.compiler_view is not None else report.placements
    out: list[Placement] = []
    for p in base:
        tfl = ONNX_TO_TFLITE.get(p.op_type, ())
        seen = [t for t in tfl if t in mapped or t in unmapped]
        if not seen:
            why = (f"{p.op_type} has no TFLite op in edgesdk's mapping table" if not tfl
                   else f"none of {'/'.join(tfl)} appears in the log's operator table")
            out.append(Placement(p.node, p.op_type, p.engine, p.target, p.kind,
                                 (f"{why} {_LOG}; edgesdk's placement kept",) + p.reasons, p.rewrite, p.refused_by))
            continue
        n_map = sum(mapped.get(t, 0) for t in seen)
        bad = [o for t in seen for o in unmapped.get(t, ())]
        n_bad = sum(o.count for o in bad)
        rows = "; ".join(f"{o.op} x{o.count}: {o.reason}" for o in bad)
        if bad and not n_map:
            # Every op of these TFLite types stays on the CPU, so this node does too.
            out.append(Placement(p.node, p.op_type, cpu.engine, "cpu", _edgetpu_kind(bad[0].reason),
                                 (f"not mapped to the Edge TPU {_LOG}: {rows}",), p.rewrite, (acc.engine,)))
        elif bad:
            # Mixed: the log counts per op type, not per node, so which node is not mapped is unknown.
            out.append(Placement(p.node, p.op_type, p.engine, p.target, p.kind,
                                 ((f"{n_map} of {n_map + n_bad} {'/'.join(seen)} mapped to the Edge TPU {_LOG}, "
                                  f"the rest not ({rows}); the log does not say which node, edgesdk's placement kept"),)
                                 + p.reasons, p.rewrite, p.refused_by))
        else:
            out.append(Placement(p.node, p.op_type, acc.engine, "accelerator", "supported",
                                 (f"{'/'.join(seen)} mapped to Edge TPU {_LOG}",)))
    notes = [(f"Edge TPU compiler log: {log.on_chip_mib:.2f} MiB of parameters cached on-chip, "
             f"{log.off_chip_mib:.2f} MiB off-chip (streamed); {log.tpu_ops} of {log.total_ops} ops on the Edge TPU, "
             f"{log.cpu_ops} on the CPU, {log.subgraphs} Edge TPU subgraph(s)")]
    w = edgetpu_cache_warning(log)
    if w:
        notes.append(w)
    return out, notes


def _support_from_horizon(report: SupportReport, log: HorizonChecker) -> tuple[list[Placement], list[str]]:
    from edgesdk.graph.support import Placement

    acc = report.chain[0]
    cpu = next((c for c in report.chain if c.target == "cpu"), report.chain[-1])
    rows = {n: (on, sub, typ) for n, on, sub, typ in log.nodes}
    base = report.compiler_view if report.compiler_view is not None else report.placements
    out: list[Placement] = []
    missing = 0
    for p in base:
        row = rows.get(p.node)
        if row is None:
            missing += 1
            out.append(Placement(p.node, p.op_type, p.engine, p.target, p.kind,
                                 (f"not in the checker table {_LOG}; edgesdk's placement kept",) + p.reasons,
                                 p.rewrite, p.refused_by))
        elif row[0] == "BPU":
            out.append(Placement(p.node, p.op_type, acc.engine, "accelerator", "supported",
                                 (f"hb_mapper checker: BPU, subgraph {row[1]}, as {row[2]} ({_LOG})",)))
        else:
            kind = p.kind if p.target == "cpu" else "unsupported_op"
            out.append(Placement(p.node, p.op_type, cpu.engine, "cpu", kind,
                                 (f"hb_mapper checker: CPU, as {row[2]} ({_LOG})",) + p.reasons,
                                 p.rewrite, (acc.engine,)))
    on_bpu = sum(1 for r in rows.values() if r[0] == "BPU")
    notes = [(f"hb_mapper checker: {on_bpu} node(s) on the BPU, {len(rows) - on_bpu} on the CPU, "
             f"{log.subgraphs} BPU subgraph(s)")]
    if missing:
        notes.append(f"{missing} node(s) are not in the checker table (renamed or fused by hb_mapper); "
                     "edgesdk's placement is kept for them")
    return out, notes


def support_from_compiler_log(report: SupportReport, log: EdgeTpuLog | HorizonChecker | VitisLog) -> SupportReport:
    """`report` (an edgesdk.graph.support.SupportReport) with compiler_view set to what the vendor
    compiler actually did, read from its log, and notes with what the log says about memory and subgraphs.

    - HorizonChecker: per node, by name; nodes missing from the table keep edgesdk's placement.
    - EdgeTpuLog: the log counts per TFLite op type, not per node; a node goes to the CPU when every
      TFLite op its ONNX type becomes (ONNX_TO_TFLITE) is reported not mapped, and to the Edge TPU when
      every one is mapped; mixed or unknown types keep edgesdk's placement and say so.
    - VitisLog: no per-node table; only notes (DPU/CPU subgraph counts, ops assigned to the CPU).
    """
    from dataclasses import replace

    if isinstance(log, VitisLog):
        cpu = ", ".join(f"{o.op} ({o.reason})" for o in log.cpu_ops)
        note = (f"vai_c_xir log: {log.subgraphs} subgraph(s), {log.dpu_subgraphs} on the DPU, "
                f"{log.cpu_subgraphs} on the CPU" + (f"; ops assigned to the CPU: {cpu}" if cpu else ""))
        return replace(report, notes=tuple(report.notes) + (note,))
    if isinstance(log, EdgeTpuLog):
        view, notes = _support_from_edgetpu(report, log)
    elif isinstance(log, HorizonChecker):
        view, notes = _support_from_horizon(report, log)
    else:
        raise TypeError(f"not a parsed compiler log: {type(log).__name__}")
    return replace(report, compiler_view=tuple(view), notes=tuple(report.notes) + (COMPILER_LOG_NOTE, *notes))


__all__ = ["COMPILER_LOG_NOTE", "EDGETPU_CACHE_MIB", "EDGETPU_MS_PER_UNCACHED_MIB_USB3", "ONNX_TO_TFLITE",
           "EdgeTpuLog", "HorizonChecker", "OpPlacement", "VitisLog", "edgetpu_cache_warning", "parse_edgetpu_log", "parse_horizon_checker",
           "parse_vitis_log", "support_from_compiler_log"]

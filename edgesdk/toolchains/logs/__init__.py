"""Parsers of the vendor compilers' logs into edgesdk's own terms (placement per op, memory, subgraphs).

Each parser takes the text a tool prints and returns a frozen dataclass; the formats and where
they are documented are in each function's docstring and in tests/golden/npu/logs/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

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


__all__ = ["EDGETPU_CACHE_MIB", "EDGETPU_MS_PER_UNCACHED_MIB_USB3", "EdgeTpuLog", "HorizonChecker", "OpPlacement",
           "VitisLog", "edgetpu_cache_warning", "parse_edgetpu_log", "parse_horizon_checker", "parse_vitis_log"]

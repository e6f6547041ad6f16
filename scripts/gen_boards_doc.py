"""Write docs/boards.md from boards/*.yaml, so the doc cannot drift from the profiles.

Usage: .venv/bin/python scripts/gen_boards_doc.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

from edgesdk.boards import BoardProfile, list_boards

OUT = Path(__file__).resolve().parent.parent / "docs" / "boards.md"


def _fig(f) -> str:
    d = f" ({f.derivation})" if f.derivation else ""
    flag = " **UNCONFIRMED**" if not f.confirmed else ""
    return f"{f.value:g} {f.unit}{flag}{d}. Source: {f.source}"


def render_board(b: BoardProfile) -> str:
    lines = [f"## {b.name} (`{b.id}`)", "", b.description, ""]
    lines += [
        f"- SoC: {b.soc.vendor} {b.soc.name}. Source: {b.soc.source}",
        f"- CPU: {b.cpu.cores}x {b.cpu.core} @ {b.cpu.clock_mhz} MHz, {b.cpu.arch}, ISA features: "
        f"{', '.join(b.cpu.features)}. Source: {b.cpu.source}",
        f"- Memory: {', '.join(str(m) for m in b.memory.sizes_mb)} MB {b.memory.type}. Source: {b.memory.source}",
        f"  - bandwidth: {_fig(b.memory.bandwidth_gbs)}",
    ]
    if b.memory.measured_gbs:
        lines.append(f"  - measured: {_fig(b.memory.measured_gbs)}")
    lines += [
        f"- CPU peak FP32: {_fig(b.peaks.cpu_fp32_gflops)}",
        f"- CPU peak int8: {_fig(b.peaks.cpu_int8_gops)}",
    ]
    if b.accelerator:
        a = b.accelerator
        lines += [
            f"- Accelerator: {a.name} ({a.kind}), dtypes {', '.join(a.dtypes)}, op table `{a.op_table}`, "
            f"engine `{a.engine}`. Source: {a.source}",
            f"  - peak: {_fig(a.tops)}",
            f"  - partition rule `{a.partition_rule}`: \"{a.partition_rule_text}\" Source: {a.partition_rule_source}",
        ]
        if a.on_chip_memory_mb:
            lines.append(f"  - on-chip memory: {_fig(a.on_chip_memory_mb)}")
        if a.interface:
            lines.append(f"  - interface: {a.interface}")
    else:
        lines.append("- Accelerator: none; models run on the CPU engines.")
    lines += [
        f"- Engines (preferred first): {', '.join(b.engines)}; fallback `{b.fallback_engine}`",
        f"- Toolchains: {', '.join(b.toolchains)}",
        f"- OS: {b.os.name}; {b.os.libc}; Python {b.os.python}; wheel tags {', '.join(b.os.platform_tags)}. "
        f"Source: {b.os.source}",
        f"- Cross: `{b.cross.triple}`, `-mcpu={b.cross.mcpu}` {' '.join(b.cross.extra_flags)}".rstrip()
        + (f"; vendor toolchain {b.cross.vendor_toolchain}" if b.cross.vendor_toolchain else "")
        + f". Source: {b.cross.source}",
        f"- Detection over SSH: device-tree model {b.detect.device_tree_model or '-'}; USB "
        f"{[f'{u.vid_pid} ({u.meaning})' for u in b.detect.usb_ids] or '-'}; /dev {b.detect.dev_nodes or '-'}; "
        f"tools {b.detect.vendor_tools or '-'}. Source: {b.detect.source}",
        f"- Emulation: qemu-{b.emulation.qemu_arch} `-cpu {b.emulation.qemu_cpu}`, Debian {b.emulation.debian_arch} "
        f"{b.emulation.debian_suite}" + (f". {b.emulation.note}" if b.emulation.note else ""),
        "",
    ]
    if b.reference_latencies:
        lines += ["| model | input | engine | precision | threads | ms | conditions | source |", "|---|---|---|---|---|---|---|---|"]
        for r in b.reference_latencies:
            lines.append(
                f"| {r.model} | {r.input} | {r.engine} | {r.precision} | {r.threads or '-'} | {r.latency_ms:g} | "
                f"{r.conditions or ''} | {r.source} |"
            )
        lines.append("")
    return "\n".join(lines)


def render() -> str:
    boards = list_boards()
    head = [
        "# Boards",
        "",
        "Generated from `boards/*.yaml` by `scripts/gen_boards_doc.py`; edit the YAML, not this file.",
        "Every vendor figure carries its source; 'derived' figures show their derivation.",
        "",
        "| id | board | CPU | accelerator |",
        "|---|---|---|---|",
    ]
    for b in boards:
        acc = f"{b.accelerator.name}, {b.accelerator.tops.value:g} TOPS" if b.accelerator else "-"
        head.append(f"| `{b.id}` | {b.name} | {b.cpu.cores}x {b.cpu.core} @ {b.cpu.clock_mhz} MHz | {acc} |")
    head.append("")
    return "\n".join(head + [render_board(b) for b in boards])


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/gen_boards_doc.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

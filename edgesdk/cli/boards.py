"""`edgesdk boards` and `edgesdk board show`."""

from __future__ import annotations

import typer
from rich.table import Table

from edgesdk.boards import get_board, list_boards
from edgesdk.cli.common import JSON_OPTION, console, handle_errors, print_json

board_app = typer.Typer(help="Board profiles.", no_args_is_help=True)


@handle_errors
def boards_cmd(json_out: bool = JSON_OPTION) -> None:
    """List the boards edgesdk targets.

    Examples:

      edgesdk boards

      edgesdk boards --json | jq '.[].id'
    """
    boards = list_boards()
    if json_out:
        print_json([
            {
                "id": b.id,
                "name": b.name,
                "soc": b.soc.name,
                "cpu": f"{b.cpu.cores}x {b.cpu.core} @ {b.cpu.clock_mhz} MHz",
                "arch": b.cpu.arch,
                "accelerator": b.accelerator.name if b.accelerator else None,
                "accelerator_tops": b.accelerator.tops.value if b.accelerator else None,
                "engines": list(b.engines),
            }
            for b in boards
        ])
        return
    t = Table(title="edgesdk boards")
    for col in ("id", "board", "SoC / CPU", "accelerator", "engines (preferred first)"):
        t.add_column(col)
    for b in boards:
        acc = f"{b.accelerator.name} ({b.accelerator.tops.value:g} TOPS {'/'.join(b.accelerator.dtypes)})" if b.accelerator else "-"
        t.add_row(b.id, b.name, f"{b.soc.name}, {b.cpu.cores}x {b.cpu.core} @ {b.cpu.clock_mhz / 1000:g} GHz", acc, ", ".join(b.engines))
    console.print(t)


@board_app.command("show")
@handle_errors
def board_show(board_id: str = typer.Argument(..., metavar="ID", help="Board id, e.g. rpi4."), json_out: bool = JSON_OPTION) -> None:
    """Show everything edgesdk knows about one board, with sources.

    Examples:

      edgesdk board show rpi4

      edgesdk board show coral-usb --json
    """
    b = get_board(board_id)
    if json_out:
        print_json(b.model_dump(mode="json"))
        return
    console.print(f"[bold]{b.name}[/] ([cyan]{b.id}[/]): {b.description}")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("SoC", f"{b.soc.vendor} {b.soc.name}")
    t.add_row("CPU", f"{b.cpu.cores}x {b.cpu.core} @ {b.cpu.clock_mhz} MHz, {b.cpu.arch}, ISA: {', '.join(b.cpu.features)}")
    t.add_row("memory", f"{'/'.join(str(m // 1024) if m >= 1024 else f'{m}M' for m in b.memory.sizes_mb)} GB {b.memory.type}, "
              f"{b.memory.bandwidth_gbs.value:g} GB/s theoretical"
              + (f", {b.memory.measured_gbs.value:g} GB/s measured" if b.memory.measured_gbs else ""))
    t.add_row("CPU peak", f"{b.peaks.cpu_fp32_gflops.value:g} GFLOPS fp32, {b.peaks.cpu_int8_gops.value:g} GOPS int8 "
              f"({b.peaks.cpu_fp32_gflops.derivation or b.peaks.cpu_fp32_gflops.source})")
    if b.accelerator:
        a = b.accelerator
        t.add_row("accelerator", f"{a.name}: {a.tops.value:g} TOPS {'/'.join(a.dtypes)}, op table {a.op_table}, engine {a.engine}")
        t.add_row("partition rule", f"{a.partition_rule}: \"{a.partition_rule_text}\"")
    else:
        t.add_row("accelerator", "none (CPU engines only)")
    t.add_row("engines", " > ".join(b.engines) + f"  (fallback: {b.fallback_engine})")
    t.add_row("toolchains", ", ".join(b.toolchains))
    t.add_row("OS", f"{b.os.name}; {b.os.libc}; Python {b.os.python}")
    t.add_row("wheel tags", ", ".join(b.os.platform_tags))
    t.add_row("cross", f"{b.cross.triple} -mcpu={b.cross.mcpu} {' '.join(b.cross.extra_flags)}".rstrip())
    d = b.detect
    t.add_row("detect", "; ".join(filter(None, [
        f"device-tree model ~ {d.device_tree_model}" if d.device_tree_model else "",
        f"USB {', '.join(u.vid_pid + ' (' + u.meaning + ')' for u in d.usb_ids)}" if d.usb_ids else "",
        f"dev {', '.join(d.dev_nodes)}" if d.dev_nodes else "",
        f"tools {', '.join(d.vendor_tools)}" if d.vendor_tools else "",
    ])))
    t.add_row("emulation", f"qemu-{b.emulation.qemu_arch} -cpu {b.emulation.qemu_cpu}, Debian {b.emulation.debian_arch} {b.emulation.debian_suite}")
    console.print(t)
    if b.reference_latencies:
        r = Table(title="published reference latencies")
        for col in ("model", "input", "engine", "precision", "threads", "ms", "source"):
            r.add_column(col)
        for x in b.reference_latencies:
            r.add_row(x.model, x.input, x.engine, x.precision, str(x.threads or "-"), f"{x.latency_ms:g}", x.source)
        console.print(r)

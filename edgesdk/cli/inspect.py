"""`edgesdk inspect`: where each op of a model runs on a board, the segments, and a latency estimate."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgesdk.cli.common import JSON_OPTION, console, handle_errors, print_json
from edgesdk.errors import InputError

INPUT_SHAPE_OPTION = typer.Option(
    None, "--input-shape", metavar="NAME=D0,D1,...",
    help="Fix a dynamic input shape, e.g. images=1,3,640,640 (repeat for several inputs).")
NO_PREPARE_OPTION = typer.Option(
    False, "--no-prepare",
    help="Skip graph preparation (onnxslim constant/shape folding and fusions, proven on onnxruntime).")
TRUST_MODEL_OPTION = typer.Option(
    False, "--trust-model",
    help="Let a TorchScript file's code run: loading one runs code from the archive. It then runs in a confined "
         "process (writes only to a temporary folder, reads only library folders). Without it TorchScript is "
         "refused (exit 2).")
MIN_ISLAND_OPTION = typer.Option(
    0.01, "--min-island-share", min=0.0, max=1.0,
    help="Accelerator islands below this share of the FLOPs fold into the CPU when that saves two transfers.")


PLAN_OPTION = typer.Option(
    "best", "--plan", metavar="best|cpu|vendor|split",
    help="Which plan: best (the lowest estimated latency: whole model on the CPU, the vendor compiler's own split, "
         "edgesdk's multi-segment plan, or that plan with the costly accelerator islands moved to the CPU), or force "
         "one: cpu, vendor, split.")
NO_REWRITE_OPTION = typer.Option(
    False, "--no-rewrite",
    help="Do not apply the function-preserving rewrites the accelerator needs (Div by a constant -> Mul, decomposed "
         "HardSwish <-> HardSwish, ...; each proven on onnxruntime).")
MAX_SEGMENTS_OPTION = typer.Option(
    None, "--max-segments", min=1, metavar="N",
    help="Keep the plan to at most N segments (islands move to the CPU, least loss first, until it fits).")


def shapes_from(options: list[str] | None) -> dict[str, tuple[int, ...]]:
    from edgesdk.graph import parse_input_shape

    out: dict[str, tuple[int, ...]] = {}
    for text in options or []:
        name, shape = parse_input_shape(text)
        out[name] = shape
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@handle_errors
def inspect_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="ONNX model, TorchScript file (.pt/.ts) or .tflite."),
    board: str | None = typer.Option(None, "--board", "-b", metavar="ID", help="Board id, e.g. coral-usb."),
    all_boards: bool = typer.Option(False, "--all-boards", help="Compare every board in one table."),
    input_shape: list[str] | None = INPUT_SHAPE_OPTION,
    min_island_share: float = MIN_ISLAND_OPTION,
    no_prepare: bool = NO_PREPARE_OPTION,
    html: Path | None = typer.Option(None, "--html", metavar="FILE", help="Also write a self-contained HTML report."),
    trust_model: bool = TRUST_MODEL_OPTION,
    compiler: bool = typer.Option(False, "--compiler", help="Also run the board's vendor compiler (rk3588: "
                                  "RKNN-Toolkit2, seconds; imx93: int8 TFLite + vela, minutes) and show, node by node, "
                                  "where it disagrees with edgesdk's op table."),
    plan: str = PLAN_OPTION,
    max_segments: int | None = MAX_SEGMENTS_OPTION,
    no_rewrite: bool = NO_REWRITE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show where each op of MODEL runs on a board, and why; the candidate plans and the one chosen by estimated
    latency; the ops that keep nodes off the accelerator, what each costs and the rewrite that would lift it.

    Examples:

      edgesdk inspect model.onnx --board coral-usb

      edgesdk inspect det.onnx --board kv260 --input-shape x=1,3,640,640 --html report.html

      edgesdk inspect det.onnx --all-boards --input-shape x=1,3,640,640

      edgesdk inspect face.tflite --board coral-usb

      edgesdk inspect net.pt --board rpi4 --input-shape input=1,3,224,224 --trust-model

      edgesdk inspect det.onnx --board rk3588 --input-shape images=1,3,640,640 --compiler

      edgesdk inspect det.onnx --board kv260 --input-shape x=1,3,640,640 --max-segments 4

      edgesdk inspect det.onnx --board coral-usb --input-shape x=1,3,640,640 --plan vendor
    """
    from edgesdk.graph.report import compare_boards, inspect_model

    shapes = shapes_from(input_shape)
    if all_boards:
        if compiler:
            raise InputError("--compiler needs one --board, not --all-boards")
        if html is not None:
            raise InputError("--html needs one --board, not --all-boards")
        info: list = []
        rows = compare_boards(model, shapes, [board] if board else None, min_island_share, not no_prepare,
                              opened_info=info, trust_model=trust_model, plan=plan, max_segments=max_segments,
                              rewrite=not no_rewrite)
        if json_out:
            print_json([{**r.to_dict(), "prepare": info[0].prepare.to_dict()} for r in rows])
            return
        for n in (*info[0].notes, info[0].prepare.summary()):
            console.print(f"note: {n}", highlight=False)
        from edgesdk.graph.cost import LABEL

        t = Table(title=f"{model.name} on every board, fastest first ({LABEL})")
        for col in ("#", "board", "plan", "est. latency", "all on CPU", "FLOPs on accel.", "segments",
                    "hand-offs", "blocks the accelerator most"):
            t.add_column(col, justify="left" if col in ("board", "plan", "blocks the accelerator most") else "right")
        for r in rows:
            share = _pct(r.accelerator_flops_share)
            if r.compiler_view_share is not None:
                share += f" (compiler alone: {_pct(r.compiler_view_share)})"
            tb = r.top_blocker
            block = f"{tb['op_type']} x{tb['count']} (~{tb['gain_ms']:.1f} ms)" if tb else "-"
            t.add_row(str(r.rank), r.board_id, r.plan + ("" if r.calibrated else " (uncalibrated)"),
                      f"~{r.estimate_ms:.1f} ms", f"~{r.cpu_ms:.1f} ms" if r.cpu_ms is not None else "-", share,
                      str(r.segments), str(r.handoffs), block)
        console.print(t)
        return
    if board is None:
        raise InputError("give --board ID (see `edgesdk boards`) or --all-boards")
    if compiler and not json_out:
        console.print(f"running the vendor compiler for {board} (this builds the model: seconds to minutes) ...")
    rep = inspect_model(model, board, shapes, min_island_share, not no_prepare, trust_model=trust_model,
                        compiler=compiler, plan=plan, max_segments=max_segments, rewrite=not no_rewrite)
    if html is not None:
        from edgesdk.graph.html import write_html

        write_html(rep, html)
    if json_out:
        print_json(rep.to_dict())
        return
    _print_report(rep)
    if html is not None:
        console.print(f"HTML report: {html}")


def _print_report(rep) -> None:  # noqa: ANN001 - InspectReport, imported lazily
    from edgesdk.graph.report import ESTIMATE_LABEL

    console.print(f"[bold]{rep.model}[/]: {rep.nodes} nodes, {rep.total_flops / 1e9:.2f} GFLOPs, "
                  f"{_mb(rep.param_bytes)} of weights; inputs "
                  + ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in rep.inputs))
    console.print(f"board [cyan]{rep.board_id}[/] ({rep.board_name}); "
                  f"accelerator: {rep.accelerator or 'none (CPU engines only)'}; rule: {rep.partition_rule}")
    t = Table(title="ops")
    for col in ("op type", "count", "runs on", "why"):
        t.add_column(col)
    for r in rep.ops:
        t.add_row(r.op_type, str(r.count), ", ".join(f"{e} {n}" for e, n in r.where.items()),
                  "\n".join(r.reasons[:3]) + (f"\n(+{len(r.reasons) - 3} more)" if len(r.reasons) > 3 else ""))
    console.print(t)
    s = Table(title=f"segments; latency is an {ESTIMATE_LABEL}")
    for col in ("#", "engine", "nodes", "FLOPs share", "in", "out", "est. ms", "bound"):
        s.add_column(col)
    for seg, e in zip(rep.plan.segments, rep.estimates):
        s.add_row(str(seg.index), f"{seg.engine} ({seg.target})", str(len(seg.nodes)), _pct(seg.flops_share),
                  _mb(seg.input_bytes), _mb(seg.output_bytes), f"{e.ms:.2f}", e.bound)
    console.print(s)
    acc = f"{_pct(rep.accelerator_flops_share)} of FLOPs on the accelerator; " if rep.accelerator else ""
    console.print(f"{acc}{len(rep.plan.segments)} segment(s), {len(rep.plan.transfers)} transfer(s) "
                  f"({rep.plan.handoffs} CPU/accelerator hand-offs, {_mb(rep.transfer_bytes)}); "
                  f"estimated total ~{rep.estimate_ms:.1f} ms (estimate)")
    if rep.compiler_view:
        cv = rep.compiler_view
        first = cv["first_unsupported"]
        console.print(f"vendor compiler alone ({cv['rule']}): {_pct(cv['accelerator_flops_share'])} of FLOPs on the "
                      f"accelerator; everything after {first['node']} ({first['op_type']}) stays on the CPU"
                      if first else "vendor compiler alone: the whole model maps to the accelerator")
    if rep.compiler_run:
        cr = rep.compiler_run
        agree = f"{cr['agreement_percent']}%" if cr["agreement_percent"] is not None else "-"
        console.print(f"vendor compiler ({cr['tool']}, run here in {cr['seconds']} s): {cr['mapped']} of {cr['nodes']} "
                      f"nodes mapped, {len(cr['cpu_nodes'])} on the CPU, {_pct(cr['accelerator_flops_share_of_mapped'])} "
                      f"of their FLOPs on the accelerator; agreement with edgesdk's table {agree}", highlight=False)
        for x in cr["disagreements"]:
            console.print(f"  {x['node']} ({x['op_type']}): edgesdk {x['edgesdk']}, compiler {x['compiler']}"
                          f"{': ' + x['compiler_says'] if x['compiler_says'] else ''}", highlight=False)
    _print_choice(rep)
    for f in rep.plan.folded:
        console.print(f"folded into the CPU: accelerator island {', '.join(f.nodes[:4])}"
                      f"{'...' if len(f.nodes) > 4 else ''} ({_pct(f.flops_share)} of FLOPs), saves "
                      f"{f.transfers_saved} transfers")
    if rep.rewrites:
        w = Table(title="suggested rewrites")
        for col in ("op type", "nodes", "suggestion"):
            w.add_column(col)
        for r in rep.rewrites:
            w.add_row(r.op_type, str(r.count), r.suggestion)
        console.print(w)
    for n in rep.notes:
        console.print(f"note: {n}", highlight=False)


def _print_choice(rep) -> None:  # noqa: ANN001 - InspectReport
    """The candidate plans, the reason for the choice, the blocking ops and the rewrites applied."""
    ch = rep.plan_choice
    if ch:
        t = Table(title="candidate plans (estimated latency)")
        for col in ("plan", "segments", "hand-offs", "FLOPs on accelerator", "compute", "invocations", "hand-off cost",
                    "total", ""):
            t.add_column(col)
        for c in ch["candidates"]:
            t.add_row(c["name"], str(c["segments"]), str(c["handoffs"]), _pct(c["accelerator_flops_share"]),
                      f"{c['compute_ms']:.2f} ms", f"{c['invoke_ms']:.2f} ms", f"{c['boundary_ms']:.2f} ms",
                      f"{c['estimate_ms']:.2f} ms", "chosen" if c["chosen"] else "")
        console.print(t)
        console.print(f"plan: {ch['reason']}", highlight=False)
    for r in rep.rewrites_applied:
        console.print(f"rewritten: {r['title']} x{r['count']} (proven on onnxruntime: cosine {r['cosine']:.6f})",
                      highlight=False)
    if rep.blockers:
        b = Table(title="what keeps nodes off the accelerator (gain = estimated ms saved if the accelerator took them)")
        for col in ("op type", "nodes", "on the CPU", "gain", "why", "rewrite"):
            b.add_column(col)
        for x in rep.blockers:
            rw = "-" if not x.rewrite else x.rewrite + ("" if x.exact else " [changes the function: fine-tune]")
            b.add_row(x.op_type, str(x.count), f"{x.cpu_ms:.2f} ms", f"{x.gain_ms:.2f} ms", x.reason[:120], rw)
        console.print(b)
        if rep.all_on_accelerator_ms is not None:
            console.print(f"with every node on the accelerator: ~{rep.all_on_accelerator_ms:.1f} ms (estimate)")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)

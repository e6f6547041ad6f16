"""`edgesdk partition`: write each segment of a model as a standalone ONNX file, plus plan.json."""

from __future__ import annotations

from pathlib import Path

import typer

from edgesdk.cli.common import JSON_OPTION, console, handle_errors, print_json
from edgesdk.cli.inspect import (
    INPUT_SHAPE_OPTION,
    MAX_SEGMENTS_OPTION,
    MIN_ISLAND_OPTION,
    NO_PREPARE_OPTION,
    NO_REWRITE_OPTION,
    PLAN_OPTION,
    TRUST_MODEL_OPTION,
    shapes_from,
)


@handle_errors
def partition_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="ONNX model, TorchScript file (.pt/.ts) or .tflite."),
    board: str = typer.Option(..., "--board", "-b", metavar="ID", help="Board id, e.g. kv260."),
    out: Path = typer.Option(..., "-o", "--out", metavar="DIR", help="Output folder (must not exist)."),
    force: bool = typer.Option(False, "--force", help="Replace DIR if it exists."),
    input_shape: list[str] | None = INPUT_SHAPE_OPTION,
    min_island_share: float = MIN_ISLAND_OPTION,
    no_prepare: bool = NO_PREPARE_OPTION,
    trust_model: bool = TRUST_MODEL_OPTION,
    plan: str = PLAN_OPTION,
    max_segments: int | None = MAX_SEGMENTS_OPTION,
    no_rewrite: bool = NO_REWRITE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Split MODEL into accelerator and CPU segments for a board and write them with plan.json.

    Examples:

      edgesdk partition model.onnx --board coral-usb -o build/coral

      edgesdk partition det.onnx --board x3 --input-shape x=1,3,640,640 -o build/x3 --force

      edgesdk partition net.pt --board coral-usb --input-shape image=1,3,224,224 --trust-model -o build/net

      edgesdk partition det.onnx --board kv260 --input-shape x=1,3,640,640 --max-segments 3 -o build/kv
    """
    from edgesdk.graph.extract import partition_model

    res = partition_model(model, board, out, force, shapes_from(input_shape), min_island_share,
                          prepare=not no_prepare, trust_model=trust_model, plan=plan, max_segments=max_segments,
                          rewrite=not no_rewrite)
    if json_out:
        print_json({"out_dir": str(res.out_dir), "files": list(res.files), "plan": res.plan.to_dict(),
                    "prepare": res.prepare.to_dict() if res.prepare else None})
        return
    for n in res.notes:
        console.print(f"note: {n}", highlight=False)
    for s in res.plan.segments:
        console.print(f"  {s.index:02d}_{s.engine}.onnx  {s.target:<11} {len(s.nodes):>5} nodes  "
                      f"{100 * s.flops_share:5.1f}% FLOPs  in: {', '.join(t.name for t in s.inputs)}")
    console.print(f"wrote {len(res.plan.segments)} segment(s) and plan.json to {res.out_dir}")


def register(app: typer.Typer) -> None:
    app.command("partition")(partition_cmd)

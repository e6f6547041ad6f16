"""`edgesdk verify`: run a bundle on the host with its engines and compare it with the fp32 model."""

from __future__ import annotations

from pathlib import Path

import typer

from edgesdk.cli.common import EXIT_FAILED, JSON_OPTION, console, handle_errors, print_json


@handle_errors
def verify_cmd(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder written by edgesdk convert."),
    data: Path | None = typer.Option(None, "--data", metavar="DIR", help="Images or .npy tensors to compare on."),
    model: Path | None = typer.Option(None, "--model", metavar="MODEL.onnx",
                                      help="The fp32 model (default: the one the manifest names)."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most N samples of --data."),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Per-layer comparison for int8 bundles."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Run BUNDLE with its real engines and compare each output with the fp32 ONNX model.

    Exits 1 when an output breaks the bundle's tolerance.

    Examples:

      edgesdk verify build/rpi4

      edgesdk verify build/rpi5-int8 --data calib/ --limit 100 --json
    """
    from edgesdk.verify import verify

    rep = verify(bundle, data=data, model=model, layers=layers, limit=limit)
    if json_out:
        print_json(rep.to_dict())
    else:
        console.print(f"bundle {rep.bundle_id} ({rep.precision}), {rep.samples} sample(s) from {rep.source}, "
                      f"compared with {rep.compared_with}", highlight=False)
        for e in rep.engines:
            console.print(f"  {e['segment']}: {e['engine']} {e['version']}", highlight=False)
        for o in rep.outputs:
            top1 = f"  top-1 agreement {100 * o.top1_agreement:.1f}%" if o.top1_agreement is not None else ""
            status = "[green]ok[/]" if o.ok else "[red]FAIL[/]"
            console.print(f"  {o.name}: cosine {o.cosine_min:.6f} (min)  max abs {o.max_abs:.3g}  "
                          f"rel {o.max_abs_rel:.3g}{top1}  {status}")
            for p in o.problems:
                console.print(f"    {p}", highlight=False)
        if rep.layers:
            console.print(f"  per layer (fp32 vs onnxruntime int8 simulation, threshold {rep.layer_threshold}):")
            for x in rep.layers:
                mark = "  <- first below threshold" if rep.first_bad_layer and x.tensor == rep.first_bad_layer.tensor \
                    else ""
                console.print(f"    {x.node:<40} {x.op_type:<16} {x.cosine:.5f}{mark}", highlight=False)
        for n in rep.notes:
            console.print(f"  note: {n}", highlight=False)
        console.print("[green]within tolerance[/]" if rep.ok else "[red]tolerance broken[/]")
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)

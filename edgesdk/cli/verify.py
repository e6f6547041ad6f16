"""`edgesdk verify`: run a bundle on the host with its engines and compare it with the fp32 model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgesdk.cli.common import EXIT_FAILED, JSON_OPTION, console, handle_errors, print_json


@handle_errors
def verify_cmd(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="Bundle folder written by edgesdk convert."),
    data: Path | None = typer.Option(None, "--data", metavar="DIR", help="Images or .npy tensors to compare on."),
    model: Path | None = typer.Option(None, "--model", metavar="MODEL.onnx",
                                      help="The fp32 model (default: the one the manifest names)."),
    limit: int | None = typer.Option(None, "--limit", help="Use at most N samples of --data."),
    layers: bool = typer.Option(True, "--layers/--no-layers", "--per-layer/--no-per-layer",
                                help="Per-layer comparison for int8 bundles (RKNN's accuracy_analysis form)."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also quantize each layer alone (onnxruntime "
                                     "int8) and list the layers that hurt the outputs most (slow on big models)."),
    eval_dir: Path | None = typer.Option(None, "--eval", metavar="DIR",
                                         help="Real images: also report each output's task metric (mAP@0.5, top-1, "
                                              "mIoU, CER) against the fp32 model on them."),
    task: str | None = typer.Option(None, "--task", metavar="detect|classify|segment|ctc",
                                    help="The task of outputs no postprocess decodes (default: from the shape)."),
    postprocess: Path | None = typer.Option(None, "--postprocess", metavar="FILE.yaml",
                                            help="A yolo/classification postprocess for a bundle that has none."),
    charset: Path | None = typer.Option(None, "--charset", metavar="FILE",
                                        help="ctc: the character list, one per line (PaddleOCR's format)."),
    blank: int = typer.Option(0, "--blank", help="ctc: the blank class index."),
    target: str | None = typer.Option(None, "--target", metavar="METRIC=VALUE",
                                      help="Exit 1 unless this holds: cosine, map50, top1, miou (at least) or "
                                           "cer (at most), e.g. map50=0.9. It replaces the tolerance verdict."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Run BUNDLE with its real engines and compare each output with the fp32 ONNX model.

    Exits 1 when an output breaks the bundle's tolerance, or with --target when the target is missed.

    Examples:

      edgesdk verify build/rpi4

      edgesdk verify build/rpi5-int8 --data calib/ --limit 100 --json

      edgesdk verify build/rpi4-int8 --eval photos/eval --target map50=0.9

      edgesdk verify build/ocr-rpi4            # an app bundle: stage by stage, names the first that fails
    """
    from edgesdk.runtime.app.manifest import is_app
    from edgesdk.verify import verify

    if is_app(bundle):
        given = [f for f, v in (("--data", data), ("--model", model), ("--limit", limit), ("--eval", eval_dir),
                                ("--task", task), ("--postprocess", postprocess), ("--charset", charset),
                                ("--target", target), ("--sensitivity", sensitivity or None)) if v is not None]
        if given:
            from edgesdk.errors import InputError

            raise InputError(f"{bundle} is an app bundle: it is verified stage by stage against the reference its "
                             f"convert recorded; {', '.join(given)} apply to a model bundle (verify one stage's "
                             f"sub-bundle, {bundle}/stages/NAME, with them)")
        return _verify_app(bundle, layers, json_out)

    rep = verify(bundle, data=data, model=model, layers=layers, limit=limit, eval_dir=eval_dir, task=task,
                 postprocess=postprocess, charset=charset, blank=blank, target=target, sensitivity=sensitivity)
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
            for c in o.components:  # blocks of a concatenated output, judged on their own
                mark = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
                console.print(f"    component {c.label} (range {c.scale:.3g}): cosine {c.cosine_min:.6f}  "
                              f"max abs {c.max_abs:.3g}  rel {c.max_abs_rel:.3g}  {mark}", highlight=False)
            for p in o.problems:
                console.print(f"    {p}", highlight=False)
        if rep.layers:
            console.print(f"  per layer (fp32 vs onnxruntime int8 simulation, threshold {rep.layer_threshold}):")
            for x in rep.layers:
                mark = "  <- first below threshold" if rep.first_bad_layer and x.tensor == rep.first_bad_layer.tensor \
                    else ""
                console.print(f"    {x.node:<40} {x.op_type:<16} {x.cosine:.5f}{mark}", highlight=False)
        for v in rep.vendor_layers:
            console.print(f"  segment {v['segment']}, per layer by {v['tool']} ({v['sample']}, against "
                          f"{v['against']}, threshold {v['threshold']}):", highlight=False)
            for x in v["layers"]:
                mark = "  <- first below threshold" if v["first_below"] is x else ""
                console.print(f"    {x.get('node') or x['tensor']:<40} {x['op_type']:<16} {x['cosine']:.5f}{mark}",
                              highlight=False)
        if rep.sensitivity:
            console.print("  layers that hurt most when quantized alone (worst output cosine, onnxruntime int8):")
            for x in rep.sensitivity:
                console.print(f"    {x['node']:<40} {x['op_type']:<16} {x['alone_cosine']:.5f}", highlight=False)
        if rep.evaluation is not None:
            ev = rep.evaluation
            console.print(f"  task metrics on {ev.images} image(s) of {ev.directory}, against the fp32 model's own "
                          "outputs:", highlight=False)
            for t in ev.tasks:
                console.print(f"    {'+'.join(t.outputs)}: {t.task} ({t.decided_by}): {_task_line(t)}",
                              highlight=False)
                for n in t.notes:
                    console.print(f"      {n}", highlight=False)
            for n in ev.notes:
                console.print(f"    note: {n}", highlight=False)
        for n in rep.notes:
            console.print(f"  note: {n}", highlight=False)
        tol = "[green]within tolerance[/]" if rep.tolerance_ok else "[red]tolerance broken[/]"
        if rep.target is None:
            console.print(tol)
        else:
            console.print(f"{tol} (reported; the verdict is the target)")
            console.print(f"[green]{rep.target.message}[/]" if rep.target.ok else f"[red]{rep.target.message}[/]",
                          highlight=False)
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED)


def _verify_app(bundle: Path, layers: bool, json_out: bool) -> None:
    from edgesdk.app.verify import verify_app

    rep = verify_app(bundle, per_layer=layers)
    if json_out:
        print_json(rep.to_dict())
    else:
        console.print(f"app {rep.app} ({rep.bundle_id}, {rep.board}): {len(rep.checks)} stages, each on the inputs "
                      "the host's reference run recorded for it", highlight=False)
        for c in rep.checks:
            status = "[green]ok[/]" if c.ok else "[red]FAIL[/]"
            eng = ",".join(sorted({u.get("engine", "?") for u in rep.engines.get(c.name, [])}))
            console.print(f"  {c.name:<16} {c.kind:<16} {c.samples} sample(s)  {c.ms:9.1f} ms  {status}"
                          + (f"  ({eng})" if eng else ""), highlight=False)
            if c.error:
                console.print(f"      {c.error}", highlight=False)
            for o, oc in c.outputs.items():
                d = oc.to_dict()
                if not d.get("ok"):
                    console.print(f"      {o}: {d.get('problem') or d}", highlight=False)
        if rep.first_failure:
            console.print(f"[red]first failing stage: {rep.first_failure}[/]", highlight=False)
        if rep.layers:
            console.print(f"  stage {rep.layer_stage} per layer (fp32 vs onnxruntime int8 simulation, threshold "
                          f"{rep.layer_threshold}):", highlight=False)
            for x in rep.layers:
                mark = "  <- first below threshold" if rep.first_bad_layer and x.tensor == rep.first_bad_layer.tensor \
                    else ""
                console.print(f"    {x.node:<40} {x.op_type:<16} {x.cosine:.5f}{mark}", highlight=False)
            if rep.first_bad_layer is not None:
                console.print(f"[red]first layer below {rep.layer_threshold} in stage {rep.layer_stage}: "
                              f"{rep.first_bad_layer.node} ({rep.first_bad_layer.op_type})[/]", highlight=False)
        for v in rep.vendor_layers:
            console.print(f"  stage {rep.layer_stage}, segment {v['segment']}, per layer by {v['tool']}:",
                          highlight=False)
            for x in v["layers"]:
                mark = "  <- first below threshold" if v["first_below"] is x else ""
                console.print(f"    {x.get('node') or x['tensor']:<40} {x['op_type']:<16} {x['cosine']:.5f}{mark}",
                              highlight=False)
        for n in rep.notes:
            console.print(f"  note: {n}", highlight=False)
        console.print("[green]every stage matches its reference[/]" if rep.ok else "[red]a stage differs[/]")
    if not rep.ok:
        raise typer.Exit(EXIT_FAILED)


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


def _task_line(t: Any) -> str:
    """One task result as a line: its metric first, then the details."""
    m = t.metrics
    if t.task == "detect":
        return (f"mAP@0.5 {_num(m['map50'])}  precision {_num(m['precision'])}  recall {_num(m['recall'])}  "
                f"F1 {_num(m['f1'])} at conf > {m['conf_threshold']:g}  ({m['reference_boxes']} fp32 box(es), "
                f"{m['bundle_boxes']} bundle box(es), {m['true_positives']} matched)")
    if t.task == "classify":
        return f"top-1 agreement {_num(m['top1'])}"
    if t.task == "segment":
        return f"mIoU {_num(m['miou'])}  pixel agreement {_num(m['pixel_agreement'])}  ({m['classes']} class(es))"
    return (f"CER {_num(m['cer'])}  exact {_num(m['exact'])}  ({m['reference_length']} reference "
            f"{m['compared']})")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)

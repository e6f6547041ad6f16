"""`edgesdk convert`: model -> bundle for a board (inspect, partition, convert each segment, write the bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json
from edgesdk.cli.inspect import (
    INPUT_SHAPE_OPTION,
    MAX_SEGMENTS_OPTION,
    NO_PREPARE_OPTION,
    NO_REWRITE_OPTION,
    PLAN_OPTION,
    TRUST_MODEL_OPTION,
    shapes_from,
)


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    from edgesdk.errors import InputError

    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise InputError(f"--{what} {text!r}: expected comma-separated numbers, e.g. 0.485,0.456,0.406") from exc


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    """Progress lines on stderr (never on stdout: --json output stays pure)."""
    import time

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        err_console.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/] {msg}", highlight=False)

    return None if quiet else say


@handle_errors
def convert_cmd(
    model: Path = typer.Argument(..., metavar="MODEL", help="ONNX model, TorchScript file (.pt/.ts, with --input-shape), or a .tflite (bundled as it is where the board runs TFLite, else through ONNX)."),
    board: str = typer.Option(..., "--board", "-b", metavar="ID", help="Board id, e.g. rpi4."),
    out: Path | None = typer.Option(None, "-o", "--out", metavar="OUT", help="Bundle folder to write (must not exist)."),
    precision: str | None = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8 (default fp32; a "
                                         ".tflite keeps its own)."),
    engine: str | None = typer.Option(None, "--engine", "-e", help="ncnn, mnn, tflite or onnxruntime: that engine "
                                      "only (default: the board's engine chain, next engine when one fails)."),
    calib: Path | None = typer.Option(None, "--calib", metavar="DIR", help="Calibration images (jpg/png) or .npy."),
    sample: Path | None = typer.Option(None, "--sample", metavar="DIR",
                                       help="Real inputs (images or .npy): the first is the bundle's reference "
                                       "input for verify, the smoke test and the profiler (default: the first "
                                       "calibration sample, else random noise)."),
    preprocess: Path | None = typer.Option(None, "--preprocess", metavar="FILE.yaml",
                                           help="Preprocessing: size, resize, scale, mean, std, color, layout, dtype."),
    postprocess: Path | None = typer.Option(None, "--postprocess", metavar="FILE.yaml",
                                            help="The decoder the board runs (kind: yolo | classification, head, "
                                            "num_classes, thresholds): Session.predict, verify --eval, "
                                            "--target map50."),
    mean: str | None = typer.Option(None, "--mean", help="Per-channel mean after scaling, e.g. 0.485,0.456,0.406."),
    std: str | None = typer.Option(None, "--std", help="Per-channel std, e.g. 0.229,0.224,0.225."),
    scale: float | None = typer.Option(None, "--scale", help="Pixel scale before mean/std (default 1/255)."),
    color: str | None = typer.Option(None, "--color", help="RGB or BGR: the channel order the model wants."),
    resize: str | None = typer.Option(None, "--resize", help="letterbox, stretch or none."),
    calib_limit: int | None = typer.Option(None, "--calib-limit", help="Use at most N calibration samples."),
    calib_method: str | None = typer.Option(None, "--calib-method", metavar="METHOD",
                                            help="int8 calibration on onnxruntime: auto (each tried on held-back "
                                            "calibration samples; the default), minmax, entropy or percentile."),
    target: str | None = typer.Option(None, "--target", metavar="METRIC=VALUE",
                                      help="int8 mixed precision: keep the fewest layers in float so that METRIC "
                                      "(cosine, map50, top1, miou; cer at most) meets VALUE on --sample DIR (else "
                                      "held-back calibration samples). onnxruntime, MNN, TFLite; on an "
                                      "accelerator the kept layers run on the CPU."),
    input_shape: list[str] | None = INPUT_SHAPE_OPTION,
    vai_version: str | None = typer.Option(None, "--vai-version", help="kv260: Vitis AI release of the board image "
                                           "(2.5, 3.0, 3.5); sets the DPU fingerprint in arch.json."),
    dpu_fingerprint: str | None = typer.Option(None, "--dpu-fingerprint", metavar="0x...",
                                               help="kv260: the board's DPU fingerprint (`xdputil query`); a "
                                               "mismatch with arch.json is refused before compiling."),
    no_prepare: bool = NO_PREPARE_OPTION,
    trust_model: bool = TRUST_MODEL_OPTION,
    plan: str = PLAN_OPTION,
    max_segments: int | None = MAX_SEGMENTS_OPTION,
    no_rewrite: bool = NO_REWRITE_OPTION,
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    sign: Path | None = typer.Option(None, "--sign", metavar="KEY", help="Sign the bundle with this private key "
                                     "(edgesdk keys generate); release_version: the key's last + 1."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (commands and files), convert nothing."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Convert MODEL (or an app.yaml of several models) for a board and write the bundle OUT.

    Examples:

      edgesdk convert examples/ocr/app.yaml --board rpi4 --sample examples/ocr/samples -o build/ocr

      edgesdk convert model.onnx --board rpi4 -o build/rpi4 --sample photos/

      edgesdk convert model.onnx --board rpi5 --engine tflite --precision int8 --calib calib/ -o build/rpi5-int8

      edgesdk convert model.onnx --board rpi4 --engine mnn --precision int8 --calib calib/ --dry-run

      edgesdk convert yolo.onnx --board rpi4 --precision int8 --calib calib/ --sample eval/ --target cosine=0.99 -o b

      edgesdk convert model_int8.tflite --board coral-usb -o build/coral

      edgesdk convert net.pt --board rpi4 --input-shape input=1,3,224,224 --trust-model -o build/net

      edgesdk convert model.onnx --board rpi4 -o build/rpi4 --sign release.key

      edgesdk convert det.onnx --board kv260 --input-shape x=1,3,640,640 --max-segments 3 -o build/kv260
    """
    from edgesdk.app.spec import looks_like_app
    from edgesdk.conversion import convert

    if looks_like_app(model):
        given = [f for f, v in (("--precision", precision), ("--engine", engine), ("--calib", calib),
                                ("--preprocess", preprocess), ("--postprocess", postprocess), ("--target", target),
                                ("--input-shape", input_shape), ("--dry-run", dry_run), ("--mean", mean),
                                ("--std", std), ("--scale", scale is not None), ("--color", color),
                                ("--resize", resize), ("--calib-method", calib_method),
                                ("--vai-version", vai_version), ("--dpu-fingerprint", dpu_fingerprint),
                                ("--no-prepare", no_prepare), ("--trust-model", trust_model),
                                ("--plan", plan != "best"), ("--max-segments", max_segments is not None),
                                ("--no-rewrite", no_rewrite)) if v]
        if given:
            from edgesdk.errors import InputError

            raise InputError(f"{model}: {', '.join(given)} apply to one model; an app's stages set what they need in "
                             "app.yaml (precision, engine, input_shape, target, plan, trust_model per model stage; "
                             "preprocessing is a step)")
        _convert_app(model, board, out, sample, force, sign, json_out, calib_limit)
        return
    if sign is not None and not dry_run:
        from edgesdk.signing import load_private_key

        load_private_key(sign)  # a bad key is refused before converting

    opts = {k: v for k, v in {"mean": _floats(mean, "mean"), "std": _floats(std, "std"), "scale": scale,
                              "color": color, "resize": resize}.items() if v is not None}
    pre: object = preprocess
    if opts and preprocess is None:
        pre = opts
    elif opts:
        from edgesdk.errors import InputError

        raise InputError("give the preprocessing either as --preprocess FILE.yaml or as options, not both")
    res = convert(model, board, out, precision=precision, engine=engine, calib=calib,  # type: ignore[arg-type]
                  sample=sample, preprocess=pre, postprocess=postprocess, input_shapes=shapes_from(input_shape), force=force, dry_run=dry_run, calib_limit=calib_limit,
                  accel_options={k: v for k, v in {"vai_version": vai_version,
                                                   "board_fingerprint": dpu_fingerprint}.items() if v},
                  prepare=not no_prepare, progress=_progress(json_out), trust_model=trust_model, target=target,
                  calib_method=calib_method, plan=plan, max_segments=max_segments,
                  rewrite=not no_rewrite)
    signed = _sign_and_json(res, sign if not res.dry_run else None, json_out)
    if json_out:
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if res.calibration:
        console.print(f"calibration: {res.calibration['count']} {res.calibration['kind']} from {res.calibration['dir']}")
    ref = res.reference or {}
    if ref.get("file"):
        flag = "--sample" if ref["kind"] == "sample" else "--calib"
        console.print(f"reference input: {ref['file']} from {ref['dir']} ({flag})", highlight=False)
    for n in res.notes:
        console.print(f"note: {n}", highlight=False)
    if res.dry_run:
        for p in res.plans:
            console.print(f"[bold]{p['segment']}[/] {p['engine']} {p['precision']}")
            for c in p["commands"]:
                console.print("  $ " + " ".join(c["argv"]), highlight=False, soft_wrap=True)
            for role, f in p["outputs"].items():
                console.print(f"  -> {role}: {f}", highlight=False)
        console.print("dry run: nothing was converted or written")
        return
    for s in res.segments:
        fb = f"  (fallback: {s.fallback_reason.splitlines()[0]})" if s.fallback_reason else ""
        console.print(f"  {s.id}  {s.engine:<11} {s.precision}  {s.nodes:>5} nodes  {s.seconds:6.2f} s  "
                      f"{s.bytes / 1024:8.1f} KiB{fb}", highlight=False)
    console.print(f"wrote bundle {res.bundle_id} to {res.out} in {res.seconds:.1f} s")
    if signed:
        console.print(f"signed with {signed.fingerprint}, release_version {signed.release_version}", highlight=False)


def _sign_and_json(res: Any, sign: Path | None, json_out: bool) -> Any:
    """Sign the written bundle (model or app) with `sign` (its signature, or None); with --json print the result
    and the signature."""
    signed = None
    if sign is not None:
        from edgesdk.signing import sign_bundle

        signed = sign_bundle(res.out, sign)
    if json_out:
        print_json({**res.to_dict(), **({"signed": signed.to_dict()} if signed else {})})
    return signed


def _convert_app(spec: Path, board: str, out: Path | None, sample: Path | None, force: bool, sign: Path | None,
                 json_out: bool, calib_limit: int | None) -> None:
    """`edgesdk convert app.yaml`: every model stage for the board, one app bundle (edgesdk.app.build)."""
    from edgesdk.app.build import convert_app

    if sign is not None:
        from edgesdk.signing import load_private_key

        load_private_key(sign)
    res = convert_app(spec, board, out=out, sample=sample, force=force, progress=_progress(json_out),
                      calib_limit=calib_limit)
    signed = _sign_and_json(res, sign, json_out)
    if json_out:
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    for s in res.stages:
        what = (f"{'+'.join(s.engines)} {s.precision}  {s.seconds:6.1f} s  bundle {s.bundle_id}" if s.kind == "model"
                else s.kind)
        console.print(f"  {s.name:<16} x{s.items:<4} {what}", highlight=False)
    for r in res.reference:
        shown = {k: (v if len(str(v)) < 120 else str(v)[:117] + "...") for k, v in r["outputs"].items()}
        console.print(f"  reference {r['sample']}: {shown}", highlight=False, soft_wrap=True)
    console.print(f"wrote app bundle {res.bundle_id} ({len(res.stages)} stages, {len(res.samples)} reference "
                  f"samples) to {res.out} in {res.seconds:.1f} s")
    if signed:
        console.print(f"signed with {signed.fingerprint}, release_version {signed.release_version}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)

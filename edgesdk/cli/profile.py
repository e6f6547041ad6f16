"""`edgesdk profile` (and `profile diff`) and `edgesdk tune`: thin layers over edgesdk.profile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json
from edgesdk.cli.common import safe_text as _s
from edgesdk.cli.inspect import INPUT_SHAPE_OPTION, shapes_from

HOST_HELP = ("USER@HOST[:PORT] (a ~/.ssh/config alias works), or 'local' for this machine. "
             "Default: the board's local emulated instance.")


def _target(host: str | None, identity: Path | None, known_hosts: Path | None, accept_new: bool,
            remote_dir: str | None) -> Any:
    if host is None or host == "local":
        return host
    from edgesdk.deploy.transport import SSHTarget

    kw: dict[str, Any] = {"accept_new": accept_new, "remote_dir": remote_dir}
    if identity is not None:
        kw["identity"] = identity
    if known_hosts is not None:
        kw["known_hosts"] = known_hosts
    return SSHTarget.parse(host, **kw)


def _event(quiet: bool):
    def emit(e: dict[str, Any]) -> None:
        if not quiet and e.get("state") in ("start", "note") and e.get("phase"):
            err_console.print(f"[dim]{_s(e['phase'])}… {_s(e.get('detail') or '')}[/]", highlight=False)

    return emit


@handle_errors
def profile_cmd(
    items: list[str] = typer.Argument(None, metavar="MODEL|BUNDLE  |  diff A.json B.json",
                                      help="A model (converted first), a bundle dir; or `diff A.json B.json`."),
    board: str = typer.Option(None, "--board", "-b", metavar="ID", help="Board id, e.g. rpi4."),
    host: str = typer.Option(None, "--host", "-H", help=HOST_HELP),
    release: str = typer.Option(None, "--release", metavar="ID", help="Profile a release already on the board."),
    runs: int = typer.Option(50, "--runs", help="Timed runs."),
    warmup: int = typer.Option(5, "--warmup", help="Warm-up runs before timing."),
    threads: int = typer.Option(0, "--threads", help="Threads per engine (0: the bundle's or the tuning's)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Per-layer times from the engine's profiler."),
    layer_runs: int = typer.Option(10, "--layer-runs", help="Runs of the per-layer pass."),
    frames: int = typer.Option(None, "--frames", help="Frames through the streaming pipeline (0: skip)."),
    sweep: list[str] = typer.Option(None, "--sweep", metavar="KEY=V1,V2 ...",
                                    help="e.g. 'threads=1,2,4 engine=ncnn,mnn,tflite precision=fp32,int8'."),
    calib: Path = typer.Option(None, "--calib", metavar="DIR", help="Calibration data for int8 sweep bundles."),
    model: Path = typer.Option(None, "--model", metavar="MODEL.onnx",
                               help="The source model, for the roofline estimate when profiling a bundle/release."),
    ref_model: str = typer.Option(None, "--reference-model", metavar="NAME",
                                  help="Compare with the board's published figure for NAME (e.g. mobilenet_v2)."),
    input_shape: list[str] = INPUT_SHAPE_OPTION,
    json_out: bool = JSON_OPTION,
    html: Path = typer.Option(None, "--html", metavar="FILE", help="Write the self-contained HTML report."),
    out: Path = typer.Option(None, "--out", "-o", metavar="FILE.json", help="Write the JSON report."),
    python: str = typer.Option(None, "--python", metavar="PY", help="Interpreter on the board (default: its venv)."),
    allow_root: bool = typer.Option(False, "--allow-root", help="Run as root when the board's agent (root) cannot "
                                    "drop the profile to nobody (nobody cannot run its python); reported as such."),
    sign: Path = typer.Option(None, "--sign", metavar="KEY", help="Sign what is flashed first with this private key "
                              "(a signed copy; a board with a trusted key refuses unsigned bundles)."),
    identity: Path = typer.Option(None, "--identity", "-i", metavar="KEY", help="Private key file."),
    known_hosts: Path = typer.Option(None, "--known-hosts", metavar="FILE", help="known_hosts file."),
    accept_new: bool = typer.Option(False, "--accept-new", help="Trust an unknown host key on first contact."),
    remote_dir: str = typer.Option(None, "--remote-dir", metavar="DIR", help="The board's edgesdk dir."),
) -> None:
    """Profile a model on a board: latency, throughput, segments, layers, memory, board state, expectations.

    Examples:

      edgesdk profile model.onnx --board rpi4 --host pi@raspberrypi --per-layer --html report.html

      edgesdk profile build/rpi4 --board rpi4 --host local --json

      edgesdk profile model.onnx --board rpi4 --host local --sweep threads=1,2,4 engine=ncnn,mnn

      edgesdk profile model.onnx --board rpi4 --host pi@raspberrypi --sign release.key

      edgesdk profile diff before.json after.json
    """
    from edgesdk.errors import InputError

    items = list(items or [])
    if items and items[0] == "diff":
        return _diff(items[1:], json_out)
    if board is None:
        raise InputError("--board ID is required (e.g. --board rpi4)")
    if len(items) > 1:
        raise InputError(f"give one MODEL or BUNDLE, got {items}")
    from edgesdk.profile import ProfileOptions
    from edgesdk.profile import profile as run_profile

    if sign is not None:
        from edgesdk.signing import load_private_key

        load_private_key(sign)  # a bad key is refused before anything is converted or measured (exit 2)
    opts = ProfileOptions(runs=runs, warmup=warmup, threads=threads, per_layer=per_layer, layer_runs=layer_runs,
                          frames=frames, python=python, input_shapes=shapes_from(input_shape) or None,
                          allow_root=allow_root, sign_key=sign)
    target = _target(host, identity, known_hosts, accept_new, remote_dir)
    emit = _event(json_out)
    if sweep:
        from edgesdk.profile import sweep as run_sweep

        if not items:
            raise InputError("--sweep needs a MODEL (or a bundle, for threads only)")
        if input_shape:
            raise InputError("--input-shape is not supported with --sweep yet: convert with `edgesdk convert "
                             "--input-shape ...` and sweep the bundle")
        res = run_sweep(items[0], board, target, sweep, opts, calib=calib, event=emit)
        if out:
            Path(out).write_text(json.dumps(res.to_dict(), indent=1), encoding="utf-8")
        if html and res.best is not None:
            res.reports[res.best.label].write_html(html)
        if json_out:
            print_json(res.to_dict())
        else:
            console.print(_s(res.format(), markup=False), highlight=False, markup=False)
        raise typer.Exit(0 if res.best else 1)
    rep = run_profile(items[0] if items else None, board, target, opts, release=release, model=model,
                      model_name=ref_model, event=emit)
    if out:
        rep.write_json(out)
    if html:
        rep.write_html(html)
    if json_out:
        print_json(rep.to_dict())
    else:
        console.print(_s(rep.format(), markup=False), highlight=False, markup=False, soft_wrap=True)


def _diff(files: list[str], json_out: bool) -> None:
    from edgesdk.errors import InputError
    from edgesdk.profile import diff, load_report

    if len(files) != 2:
        raise InputError("usage: edgesdk profile diff A.json B.json")
    d = diff(load_report(files[0]), load_report(files[1]), files[0], files[1])
    if json_out:
        print_json(d.to_dict())
    else:
        console.print(_s(d.format(), markup=False), highlight=False, markup=False)


@handle_errors
def tune_cmd(
    model: str = typer.Argument(..., metavar="MODEL|BUNDLE"),
    board: str = typer.Option(..., "--board", "-b", metavar="ID"),
    host: str = typer.Option(None, "--host", "-H", help=HOST_HELP),
    sweep: list[str] = typer.Option(["threads=1,2,4"], "--sweep", metavar="KEY=V1,V2 ...",
                                    help="What to try (default threads=1,2,4)."),
    calib: Path = typer.Option(None, "--calib", metavar="DIR"),
    runs: int = typer.Option(30, "--runs"),
    warmup: int = typer.Option(3, "--warmup"),
    json_out: bool = JSON_OPTION,
    python: str = typer.Option(None, "--python", metavar="PY"),
    allow_root: bool = typer.Option(False, "--allow-root", help="Run as root when the board's agent (root) cannot "
                                    "drop the runs to nobody (nobody cannot run its python)."),
    sign: Path = typer.Option(None, "--sign", metavar="KEY", help="Sign the bundles flashed (the sweep's and the "
                              "tuned one) with this private key: a board with a trusted key refuses them unsigned."),
    identity: Path = typer.Option(None, "--identity", "-i", metavar="KEY"),
    known_hosts: Path = typer.Option(None, "--known-hosts", metavar="FILE"),
    accept_new: bool = typer.Option(False, "--accept-new"),
    remote_dir: str = typer.Option(None, "--remote-dir", metavar="DIR"),
) -> None:
    """Sweep on the board, then write the fastest configuration that passes accuracy into its release
    (tuning.json) and make that release current.

    Examples:

      edgesdk tune model.onnx --board rpi4 --host pi@raspberrypi

      edgesdk tune build/rpi4 --board rpi4 --host pi@raspberrypi --sign release.key --json
    """
    from edgesdk.profile import ProfileOptions, tune
    from edgesdk.profile import sweep as run_sweep

    if sign is not None:
        from edgesdk.signing import load_private_key

        load_private_key(sign)  # a bad key is refused before the sweep (exit 2)

    target = _target(host, identity, known_hosts, accept_new, remote_dir)
    emit = _event(json_out)
    res = run_sweep(model, board, target, sweep, ProfileOptions(runs=runs, warmup=warmup, python=python,
                                                                   allow_root=allow_root, sign_key=sign),
                    calib=calib, event=emit)
    if not json_out:
        console.print(_s(res.format(), markup=False), highlight=False, markup=False)
    done = tune(res, board, target, python=python, event=emit, allow_root=allow_root, sign_key=sign)
    if json_out:
        print_json({"sweep": res.to_dict(), "tuned": {k: v for k, v in done.items() if k != "flash"}})
    else:
        console.print(f"tuned: {_s(done['tuning'])} (release {_s(done['release'])} is current)", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("profile", context_settings={"allow_interspersed_args": True})(profile_cmd)
    app.command("tune")(tune_cmd)

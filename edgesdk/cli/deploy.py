"""`edgesdk flash | status | rollback | run`: deploy a bundle over SSH, look at the board, switch back, run remotely."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json
from edgesdk.cli.common import safe_text as _s
from edgesdk.cli.inspect import INPUT_SHAPE_OPTION, TRUST_MODEL_OPTION, shapes_from

HOST_OPT = typer.Option(None, "--host", "-H", metavar="USER@HOST[:PORT]",
                        help="The board (a ~/.ssh/config alias works). Default: the board's local emulated instance.")
IDENTITY_OPT = typer.Option(None, "--identity", "-i", metavar="KEY", help="Private key file (keys only, no agent).")
KNOWN_OPT = typer.Option(None, "--known-hosts", metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts).")
ACCEPT_OPT = typer.Option(False, "--accept-new", help="Trust an unknown host key on first contact (OpenSSH accept-new).")
FP_OPT = typer.Option(None, "--fingerprint", metavar="SHA256:...", help="Trust an unknown host only with this key.")
RDIR_OPT = typer.Option(None, "--remote-dir", metavar="DIR",
                        help="The board's edgesdk dir (default /opt/edgesdk as root, ~/.edgesdk otherwise).")
BOARD_OPT = typer.Option(None, "--board", "-b", metavar="ID", help="Board id (used when --host is omitted).")


def _target(host: str | None, board: str | None, identity: Path | None, known_hosts: Path | None, accept_new: bool,
            fingerprint: str | None, remote_dir: str | None) -> Any:
    from edgesdk.deploy.transport import SSHTarget
    from edgesdk.errors import InputError

    kw: dict[str, Any] = {"accept_new": accept_new, "fingerprint": fingerprint, "remote_dir": remote_dir}
    if identity is not None:
        kw["identity"] = identity
    if known_hosts is not None:
        kw["known_hosts"] = known_hosts
    if host:
        return SSHTarget.parse(host, **kw)
    if not board:
        raise InputError("give --host USER@HOST[:PORT], or --board ID for its local emulated board")
    from edgesdk.boards import get_board
    from edgesdk.deploy.flash import emulator_target

    t, note = emulator_target(get_board(board))
    err_console.print(f"[yellow]{note.replace('flashing', 'using')}[/]", highlight=False)
    if remote_dir:
        from dataclasses import replace

        t = replace(t, remote_dir=remote_dir)
    return t


class _Progress:
    """Rich progress per phase, a byte bar (rate, ETA) for the push."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        self.task = None

    def __call__(self, e: dict[str, Any]) -> None:
        if self.quiet:
            return
        ph, state = e.get("phase"), e.get("state")
        if state == "bytes":
            if self.bar is None:
                from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                           TransferSpeedColumn)

                self.bar = Progress("  push", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                    console=err_console, transient=True)
                self.bar.start()
                self.task = self.bar.add_task("push", total=e["total"] or 1)
            self.bar.update(self.task, completed=e["done"], total=e["total"] or 1)
            return
        if self.bar is not None and state in ("done", "failed"):
            self.bar.stop()
            self.bar = None
        if state == "start":
            extra = f" {_s(e['detail'])}" if e.get("detail") else ""
            err_console.print(f"[bold]{ph}[/]…{extra}", highlight=False)
        elif state == "note":
            err_console.print(f"[yellow]{_s(e['detail'])}[/]", highlight=False)
        elif state == "done":
            err_console.print(f"  [green]ok[/] {ph} {e.get('seconds', 0):.1f}s  {_s(e.get('detail') or '')}",
                              highlight=False)
        elif state == "failed":
            err_console.print(f"  [red]failed[/] {ph} {e.get('seconds', 0):.1f}s", highlight=False)


def _summary(r: Any) -> None:
    from rich.table import Table

    colour = {"success": "green", "rolled-back": "yellow"}.get(r.status, "red")
    console.print(f"[bold {colour}]{r.status}[/] {_s(r.board)} at {_s(r.host)}: bundle {_s(r.bundle_id)}",
                  highlight=False)
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("bytes sent", f"{r.bytes_sent:,} of {r.bytes_total:,} (bundle)"
              + (f" + {r.wheel_bytes_sent:,} (wheels)" if r.wheel_bytes_sent else ""))
    t.add_row("phases", "  ".join(f"{k} {v:.1f}s" for k, v in r.phases.items()))
    if r.provisioned:
        t.add_row("provision", r.provisioned)
    if r.smoke is not None or r.status == "rolled-back":
        sm = "passed" if r.status == "success" else "FAILED"
        checks = (r.smoke or {}).get("checks") or {}
        detail = ", ".join(f"{_s(k)}: rel err {_num(v.get('max_abs_rel'))}" for k, v in checks.items()
                           if isinstance(v, Mapping) and "max_abs_rel" in v)
        t.add_row("smoke test", f"{sm} {detail}")
    for n in r.notes:
        t.add_row("note", _s(n))
    if r.engines_used:
        t.add_row("engines", ", ".join(f"{_s(u.get('segment'))}={_s(u.get('engine'))}"
                                       + (f" (CPU fallback for {_s(u.get('planned'))})" if u.get("fallback") else "")
                                       for u in r.engines_used))
    if r.latency_ms is not None:
        t.add_row("one run on the board", f"{r.latency_ms:.2f} ms" + (" (EMULATED: not the board's timing)" if r.emulated else ""))
    if r.previous and r.status != "success":
        t.add_row("current release", _s(r.previous))
    for w in r.warnings:
        t.add_row("warning", _s(w))
    console.print(t)
    if r.error:
        err_console.print(f"[red]{_s(r.error)}[/]", highlight=False)
    if r.status == "rolled-back" and r.log:
        err_console.print("[bold]board log (smoke test):[/]")
        err_console.print(_s(r.log, markup=False), highlight=False, markup=False)


def _num(v: Any) -> str:
    return f"{v:.2g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else _s(v)


@handle_errors
def flash_cmd(
    model: Path = typer.Argument(..., metavar="MODEL|BUNDLE", help="An ONNX model (converted first) or a bundle dir."),
    board: str = typer.Option(..., "--board", "-b", metavar="ID", help="Board id, e.g. rpi4."),
    host: str | None = HOST_OPT,
    hosts: Path | None = typer.Option(None, "--hosts", metavar="FILE", help="Fleet inventory (YAML or Ansible INI)."),
    limit: str | None = typer.Option(None, "--limit", metavar="GROUP", help="Only this inventory group (or host)."),
    parallel: int = typer.Option(8, "--parallel", "-j", help="Fleet: boards at a time."),
    canary: int = typer.Option(0, "--canary", help="Fleet: flash the first K boards first; the rest only if they pass."),
    max_fail: str = typer.Option("0", "--max-fail", help="Fleet: stop starting boards above this failure rate "
                                 "(0.2 or 20%)."),
    identity: Path | None = IDENTITY_OPT,
    known_hosts: Path | None = KNOWN_OPT,
    accept_new: bool = ACCEPT_OPT,
    fingerprint: str | None = FP_OPT,
    remote_dir: str | None = RDIR_OPT,
    force: bool = typer.Option(False, "--force", help="Flash even if the probe says the board differs (recorded)."),
    keep: int = typer.Option(3, "--keep", help="Releases kept on the board."),
    smoke_timeout: float = typer.Option(300.0, "--smoke-timeout", help="Seconds before a hanging smoke test is killed."),
    stall_timeout: float = typer.Option(60.0, "--stall-timeout", metavar="S",
                                        help="Seconds without any answer from the board (keepalives go every S/4 s) "
                                             "before the link counts as stalled and the flash fails, saying where."),
    no_provision: bool = typer.Option(False, "--no-provision", help="Do not install the venv/wheels on the board."),
    python: str | None = typer.Option(None, "--python", metavar="PATH",
                                      help="Interpreter on the board that already has edgesdk.runtime."),
    break_lock: bool = typer.Option(False, "--break-lock", help="Remove a stale lock left by a dead flash."),
    fallback: str | None = typer.Option(None, "--fallback", metavar="cpu",
                                        help="cpu: on a board without its accelerator (e.g. an emulated one), run the "
                                             "accelerator segments' CPU versions, reported as such. Without it such a "
                                             "flash is refused (exit 2)."),
    input_shape: list[str] | None = INPUT_SHAPE_OPTION,
    trust_model: bool = TRUST_MODEL_OPTION,
    allow_downgrade: bool = typer.Option(False, "--allow-downgrade", help="Install a signed bundle older (lower "
                                         "release_version) than the board's current one; recorded in its history."),
    allow_root_smoke: bool = typer.Option(False, "--allow-root-smoke", help="Run the smoke test as root when the "
                                          "board's agent (root) cannot drop it to nobody (nobody cannot run the "
                                          "board's python). Without it such a flash fails before the switch, with "
                                          "the fix; with it the result and the board's history say it ran as root."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Convert (if given a model), probe, provision, push, install and smoke-test on the board; roll back on failure.

    Examples:

      edgesdk flash --board rpi4 model.onnx                      (the local emulated rpi4)

      edgesdk flash --board rpi4 build/rpi4 --host pi@10.0.0.7 -i ~/.ssh/id_ed25519

      edgesdk flash --board rpi4 build/rpi4 --host pi@10.0.0.7 --stall-timeout 20      (flaky link: fail fast)

      edgesdk flash --board rpi4 build/rpi4 --hosts fleet.ini --canary 2 --parallel 16 --max-fail 10% --json

      edgesdk flash --board coral-usb build/coral --fallback cpu     (the emulated coral-usb has no Edge TPU)

      edgesdk flash --board rpi4 det.onnx --input-shape images=1,3,640,640

      edgesdk flash --board rpi4 build/rpi4 --host root@10.0.0.7 --python /root/venv/bin/python --allow-root-smoke
      (that python is private to root: the smoke test runs as root, and the result says so)
    """
    from edgesdk.deploy.flash import FlashOptions, flash
    from edgesdk.errors import InputError

    from edgesdk.runtime.fallback import check_fallback

    if keep < 1:
        raise InputError("--keep must be >= 1")
    fallback = "cpu" if check_fallback(fallback, "--fallback") == "cpu" else None
    if not 0 < stall_timeout <= 86400:
        raise InputError(f"--stall-timeout must be > 0 seconds (at most a day), got {stall_timeout:g}")
    opts = FlashOptions(force=force, keep=keep, smoke_timeout=smoke_timeout, stall_timeout=stall_timeout,
                        provision=not no_provision,
                        python=python, break_lock=break_lock, fallback=fallback,
                        input_shapes=shapes_from(input_shape) or None, allow_downgrade=allow_downgrade, trust_model=trust_model,
                        allow_root_smoke=allow_root_smoke)
    if hosts is not None:
        _fleet(model, board, hosts, limit, parallel, canary, max_fail, opts, identity, known_hosts, accept_new,
               fingerprint, remote_dir, json_out)
        return
    target = None
    if host:
        target = _target(host, board, identity, known_hosts, accept_new, fingerprint, remote_dir)
    elif remote_dir:
        target = _target(None, board, identity, known_hosts, accept_new, fingerprint, remote_dir)
    r = flash(model, board, target, opts, _Progress(json_out))
    if json_out:
        sys.stdout.write(json.dumps(r.to_dict(), default=str) + "\n")
    else:
        if r.target_note:
            err_console.print(f"[yellow]{r.target_note}[/]", highlight=False)
        _summary(r)
    if r.exit_code:
        raise typer.Exit(r.exit_code)


def _fleet(model: Path, board: str, hosts: Path, limit: str | None, parallel: int, canary: int, max_fail: str,
           opts: Any, identity: Path | None, known_hosts: Path | None, accept_new: bool, fingerprint: str | None,
           remote_dir: str | None, json_out: bool) -> None:
    from edgesdk.deploy.fleet import deploy_fleet, parse_inventory, parse_max_fail

    inv = parse_inventory(hosts, limit)
    defaults: dict[str, Any] = {"accept_new": accept_new}
    if identity:
        defaults["identity"] = identity
    if known_hosts:
        defaults["known_hosts"] = known_hosts
    if fingerprint:
        defaults["fingerprint"] = fingerprint
    if remote_dir:
        defaults["remote_dir"] = remote_dir

    def line(r: Any) -> None:
        if json_out:
            d = r.to_dict()
            if r.ok:
                d.pop("log", None)
            sys.stdout.write(json.dumps(d, default=str) + "\n")
            sys.stdout.flush()
        else:
            colour = {"success": "green", "rolled-back": "yellow"}.get(r.status, "red")
            lat = f" {r.latency_ms:.1f} ms" if r.latency_ms is not None else ""
            console.print(f"[{colour}]{r.status:12}[/] {_s(r.host)}  {r.bytes_sent:,} B  {sum(r.phases.values()):.1f}s{lat}"
                          + (f"  {_s(r.error.splitlines()[0] if r.error.strip() else r.error)}" if r.error else ""),
                          highlight=False)

    t0 = time.perf_counter()
    fr = deploy_fleet(model, board, inv, opts, parallel=parallel, canary=canary, max_fail=parse_max_fail(max_fail),
                      target_defaults=defaults, on_result=line)
    for name in fr.skipped:
        if json_out:
            sys.stdout.write(json.dumps({"host": name, "board": board, "status": "skipped", "error": fr.stopped}) + "\n")
        else:
            console.print(f"[dim]skipped     [/] {_s(name)}  ({_s(fr.stopped)})", highlight=False)
    if not json_out:
        s = fr.to_dict()
        console.print(f"{s['boards']} boards in {time.perf_counter() - t0:.1f}s: "
                      + ", ".join(f"{k} {v}" for k, v in s["by_status"].items())
                      + (f", skipped {len(fr.skipped)}" if fr.skipped else ""), highlight=False)
    if not fr.ok:
        raise typer.Exit(1)


@handle_errors
def status_cmd(
    host: str | None = HOST_OPT, board: str | None = BOARD_OPT, identity: Path | None = IDENTITY_OPT,
    known_hosts: Path | None = KNOWN_OPT, accept_new: bool = ACCEPT_OPT, fingerprint: str | None = FP_OPT,
    remote_dir: str | None = RDIR_OPT, json_out: bool = JSON_OPTION,
) -> None:
    """What the board holds: the current release, the others kept, the history (installs, smoke results)."""
    from edgesdk.deploy.flash import status

    st = status(_target(host, board, identity, known_hosts, accept_new, fingerprint, remote_dir))
    if json_out:
        print_json(st.to_dict())
        return
    # every value here comes from the board: printed through safe_text (no control characters, no markup)
    console.print(f"[bold]{_s(st.host)}[/] {_s(st.base)}: current [green]{_s(st.current or 'none')}[/] ({st.status})",
                  highlight=False)
    for r in st.releases:
        console.print(f"  {'*' if r == st.current else ' '} {_s(r)}", highlight=False)
    if st.lock:
        console.print(f"  [yellow]locked[/] by {_s(st.lock.get('who', '?'))}", highlight=False)
    for ev in st.history[-10:]:
        extra = " ".join(f"{k}={_s(ev[k])}" for k in ("smoke", "latency_ms", "fallback", "to", "reason", "note")
                         if ev.get(k))
        what = ev.get("release") or ev.get("wheelset") or ""
        console.print(f"  {_s(ev.get('at'))} {_s(ev.get('event') or '?'):12} {_s(what)} {extra}", highlight=False)


@handle_errors
def rollback_cmd(
    host: str | None = HOST_OPT, board: str | None = BOARD_OPT,
    to: str | None = typer.Option(None, "--to", metavar="RELEASE", help="Release id (default: the previous one)."),
    identity: Path | None = IDENTITY_OPT, known_hosts: Path | None = KNOWN_OPT, accept_new: bool = ACCEPT_OPT,
    fingerprint: str | None = FP_OPT, remote_dir: str | None = RDIR_OPT, json_out: bool = JSON_OPTION,
) -> None:
    """Switch the board's `current` back to the previous release (atomically, under the board's lock)."""
    from edgesdk.deploy.flash import rollback

    r = rollback(_target(host, board, identity, known_hosts, accept_new, fingerprint, remote_dir), to)
    if json_out:
        print_json(r.to_dict())
    else:
        console.print(f"[yellow]rolled back[/]: {_s(r.previous)} -> [green]{_s(r.current)}[/]", highlight=False)


@handle_errors
def run_cmd(
    inputs: list[str] = typer.Option(..., "--input", metavar="[NAME=]FILE", help="Input tensor (.npy), or for an "
                                     "app release an image (decoded here; repeatable: consecutive frames)."),
    host: str | None = HOST_OPT, board: str | None = BOARD_OPT,
    release: str | None = typer.Option(None, "--release", metavar="ID", help="Release to run (default: current)."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Outputs land in OUT/<host>/."),
    python: str | None = typer.Option(None, "--python", metavar="PATH", help="Interpreter on the board."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds before the run is killed."),
    allow_root: bool = typer.Option(False, "--allow-root", help="Run as root when the board's agent (root) cannot "
                                    "drop the run to nobody (nobody cannot run its python); reported as such."),
    identity: Path | None = IDENTITY_OPT, known_hosts: Path | None = KNOWN_OPT, accept_new: bool = ACCEPT_OPT,
    fingerprint: str | None = FP_OPT, remote_dir: str | None = RDIR_OPT, json_out: bool = JSON_OPTION,
) -> None:
    """Run inference on the board with .npy inputs and bring the outputs back as .npy files.

    The board runs it as nobody; its outputs come back only as regular files of the size the bundle's manifest
    declares (never through a link).

    Examples:

      edgesdk run --host pi@10.0.0.7 --input x=input.npy --out results

      edgesdk run --board rpi4 --input images=frame.npy --release 3f2a... --json

      edgesdk run --board rpi4 --input page.png          # an app release: its decoded outputs (texts, ids)
    """
    from edgesdk.deploy.flash import run_remote

    r = run_remote(_target(host, board, identity, known_hosts, accept_new, fingerprint, remote_dir), inputs, out,
                   release, python, timeout, allow_root=allow_root)
    if json_out:
        print_json(r.to_dict())
        return
    console.print(f"ran {_s(r.release)} on {_s(r.host)}: one run {_s(r.latency_ms)} ms"
                  + (" [bold red]as ROOT[/] (--allow-root)" if r.ran_as == "root" else ""), highlight=False)
    for u in r.engines_used or ():
        if u.get("fallback"):
            console.print(f"  {_s(u.get('segment'))}: {_s(u.get('engine'))} (CPU fallback for {_s(u.get('planned'))}: "
                          f"{_s(u.get('reason'))})", highlight=False)
    for name, o in r.outputs.items():
        console.print(f"  {_s(name)}: {_s(o.dtype)}{list(o.shape)} -> {_s(o.file)}", highlight=False)
    for i, fr in enumerate(r.frames or ()):
        console.print(f"  frame {i} ({_s(fr.get('total_ms'))} ms):", highlight=False)
        for name, v in (fr.get("outputs") or {}).items():
            console.print(f"    {_s(name)}: {_s(json.dumps(v, ensure_ascii=False)[:400])}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("flash")(flash_cmd)
    app.command("status")(status_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("run")(run_cmd)


__all__ = ["flash_cmd", "register", "rollback_cmd", "run_cmd", "status_cmd"]

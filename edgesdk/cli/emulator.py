"""`edgesdk emulator`: emulated ARM boards (qemu-user rootfs + OpenSSH sshd on 127.0.0.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from edgesdk.boards import get_board, list_boards
from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json
from edgesdk.errors import EmulatorError

emulator_app = typer.Typer(
    help="Emulated ARM boards for development and tests: real SSH, real ARM binaries, emulated timing.",
    no_args_is_help=True,
)


def _progress(msg: str) -> None:
    err_console.print(f"[cyan]>[/] {msg}")


@emulator_app.command("start")
@handle_errors
def start_cmd(board: str = typer.Argument(..., help="Board id, e.g. rpi4."), json_out: bool = JSON_OPTION) -> None:
    """Start the emulated board (building its Debian rootfs once) and print how to reach it.

    Needs root, qemu-user-static with binfmt_misc, and debootstrap for the first build.

    Examples:

      edgesdk emulator start rpi4

      edgesdk emulator start hi3519a --json
    """
    from edgesdk import emulator

    profile = get_board(board)
    with err_console.status(f"starting emulated {profile.id} ...", spinner="dots"):
        info = emulator.start(profile, progress=_progress)
    if json_out:
        print_json(info.to_dict())
        return
    console.print(f"[green]emulated {info.board} is running[/] (qemu {info.arch}, -cpu {info.qemu_cpu}; EMULATED, timings are not the board's)")
    if info.rootfs_build_seconds is not None:
        console.print(f"  rootfs built in {info.rootfs_build_seconds:.0f} s (cached for next time)")
    console.print(f"  ssh target:  {info.ssh_target}")
    console.print(f"  key:         {info.key_path}")
    console.print(f"  known_hosts: {info.known_hosts}")
    console.print(f"  host key:    {info.host_key_fingerprint}")
    console.print(f"  try:         {info.ssh_command} uname -m", highlight=False, soft_wrap=True)


@emulator_app.command("stop")
@handle_errors
def stop_cmd(
    board: str | None = typer.Argument(None, help="Board id; omit with --all."),
    all_: bool = typer.Option(False, "--all", help="Stop every running emulated board."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Stop an emulated board and everything running inside it. Safe to repeat.

    Examples:

      edgesdk emulator stop rpi4

      edgesdk emulator stop --all
    """
    from edgesdk import emulator

    if not board and not all_:
        raise typer.BadParameter("give a board id or --all")
    profiles = list_boards() if all_ else [get_board(board)]  # type: ignore[arg-type]
    out = [emulator.stop(p) for p in profiles]
    if json_out:
        print_json([i.to_dict() for i in out])
        return
    for i in out:
        console.print(f"{i.board}: {i.state}")


@emulator_app.command("status")
@handle_errors
def status_cmd(board: str = typer.Argument(..., help="Board id."), json_out: bool = JSON_OPTION) -> None:
    """Show whether an emulated board runs, and how to reach it.

    Example:

      edgesdk emulator status rpi4 --json
    """
    from edgesdk import emulator

    info = emulator.status(get_board(board))
    if json_out:
        print_json(info.to_dict())
        return
    console.print(f"{info.board}: [bold]{info.state}[/]" + (f" at {info.ssh_target} (key {info.key_path})" if info.state == "running" else ""))


@emulator_app.command("list")
@handle_errors
def list_cmd(json_out: bool = JSON_OPTION) -> None:
    """List every board's emulator and its state.

    Example:

      edgesdk emulator list
    """
    from edgesdk import emulator

    infos = emulator.list_emulators()
    if json_out:
        print_json([i.to_dict() for i in infos])
        return
    t = Table(title="emulated boards")
    for col in ("board", "state", "arch", "qemu cpu", "ssh target"):
        t.add_column(col)
    for i in infos:
        t.add_row(i.board, i.state, i.arch or "", i.qemu_cpu or "", i.ssh_target or "")
    console.print(t)


@emulator_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def exec_cmd(
    board: str = typer.Argument(..., help="Board id."),
    command: list[str] = typer.Argument(..., help="Command and arguments, after --."),
    timeout: float = typer.Option(120, help="Seconds before the command is abandoned."),
) -> None:
    """Run one command on the running emulated board over SSH (host key checked) and relay its output.

    Example:

      edgesdk emulator exec rpi4 -- uname -m
    """
    from edgesdk import emulator
    from edgesdk.deploy.transport import SSHConnection, SSHTarget

    info = emulator.status(get_board(board))
    if info.state != "running":
        raise EmulatorError(f"emulated {board} is not running", fix=f"edgesdk emulator start {board}")
    target = SSHTarget(host=info.host or "127.0.0.1", port=info.port or 22, user=info.user or "root",
                       identity=Path(info.key_path or ""), known_hosts=Path(info.known_hosts or ""))
    with SSHConnection(target) as conn:
        res = conn.run(list(command), timeout=timeout, check=False)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    raise typer.Exit(res.returncode)

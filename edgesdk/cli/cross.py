"""`edgesdk cross build`: build a CMake project for a board, check its ELF files, and run it there over SSH."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json

cross_app = typer.Typer(
    help="Cross-compile native code (C/C++, CMake) for a board and run it there.",
    no_args_is_help=True,
)


def _progress(msg: str) -> None:
    err_console.print(f"[cyan]>[/] {msg}", highlight=False, soft_wrap=True)


@cross_app.command("build")
@handle_errors
def build_cmd(
    src_dir: Path = typer.Argument(..., help="The CMake project (a directory with CMakeLists.txt)."),
    program_args: list[str] = typer.Argument(None, help="Arguments for the program with --run, after --."),
    board: str = typer.Option(..., "--board", "-b", help="Board id, e.g. rpi4."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: SRC_DIR/build/BOARD)."),
    run: bool = typer.Option(False, "--run", help="Push the program to the board over SSH and run it there."),
    host: str | None = typer.Option(None, "--host", help="user@host[:port] of a real board (default: the emulated board)."),
    identity: Path | None = typer.Option(None, "--identity", "-i", help="Private key for --host."),
    known_hosts: Path | None = typer.Option(None, "--known-hosts", help="known_hosts file for --host."),
    accept_new: bool = typer.Option(False, "--accept-new", help="Enrol an unknown host key of --host (first contact)."),
    fingerprint: str | None = typer.Option(None, "--fingerprint", help="Expected SHA256:... host key of --host."),
    exe: str | None = typer.Option(None, "--exe", help="Which built program --run runs, when there are several."),
    push: list[Path] = typer.Option([], "--push", help="Also copy this file into the run directory (repeatable)."),
    fetch: list[str] = typer.Option([], "--fetch", help="Bring this file of the run directory back into OUT/run (repeatable)."),
    sysroot: str = typer.Option("auto", "--sysroot", help="auto (the emulated board's rootfs if built), none, or a path."),
    make_sysroot: bool = typer.Option(False, "--make-sysroot", help="Build the emulated board's rootfs first if missing."),
    build_type: str = typer.Option("Release", "--build-type", help="CMAKE_BUILD_TYPE."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="Parallel build jobs (default: the CPU count)."),
    target: list[str] = typer.Option([], "--target", help="Build only this CMake target (repeatable)."),
    cmake_arg: list[str] = typer.Option([], "--cmake-arg", "-D", help="Extra configure argument, e.g. -D FOO=1 (repeatable)."),
    toolchain_file: Path | None = typer.Option(None, "--toolchain-file", help="Another toolchain file (a vendor's)."),
    cross_prefix: str | None = typer.Option(None, "--cross-prefix", help="Compiler prefix, e.g. arm-himix200-linux-."),
    float_abi: str | None = typer.Option(None, "--float-abi", help="32-bit ARM: expect 'soft' (a vendor softfp toolchain) or 'hard'."),
    timeout: float = typer.Option(300, "--timeout", help="Seconds the program may run on the board."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (commands, toolchain, sysroot) and stop."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Configure and build a CMake project for BOARD with Debian's cross GCC and the board's toolchain file.

    Checks that every program and library built is an ELF for the board (aarch64, or ARM EABI5
    hard-float). With --run, pushes them over SSH to the board (the emulated board by default, started
    if needed) into a temp dir, runs the program there and relays its output and exit code.

    Examples:

      edgesdk cross build cross/examples/preproc --board rpi4

      edgesdk cross build cross/examples/preproc --board hi3519a --run --exe preproc_check -- --pattern 480 640

      edgesdk cross build ./src --board rpi5 --run --host pi@192.168.1.20 -i ~/.ssh/id_ed25519
    """
    from edgesdk.boards import get_board
    from edgesdk.cross.build import check_source, execute, find_sysroot, plan_build
    from edgesdk.cross.run import run_on_board
    from edgesdk.deploy.transport import SSHTarget

    profile = get_board(board)
    check_source(src_dir)
    cmake_args = [a if a.startswith("-") else f"-D{a}" for a in cmake_arg]
    ssh_target = None
    if host:
        kw: dict[str, object] = {"accept_new": accept_new}
        if identity is not None:
            kw["identity"] = identity.expanduser()
        if known_hosts is not None:
            kw["known_hosts"] = known_hosts.expanduser()
        if fingerprint is not None:
            kw["fingerprint"] = fingerprint
        ssh_target = SSHTarget.parse(host, **kw)
    # --run on the emulated board needs its rootfs anyway: build it first so it is also the sysroot.
    sr = find_sysroot(profile, sysroot, make=make_sysroot or (run and host is None and sysroot == "auto"),
                      progress=_progress)
    plan = plan_build(src_dir, profile, out_dir=out, sysroot=sr, build_type=build_type, jobs=jobs, targets=target,
                      cmake_args=cmake_args, toolchain_file=toolchain_file, cross_prefix=cross_prefix,
                      float_abi=float_abi)
    if dry_run:
        if json_out:
            print_json(plan.to_dict())
            return
        console.print(f"[bold]{profile.id}[/]: {plan.triple}, toolchain file {plan.toolchain_file}", highlight=False)
        console.print(f"  {sr.note}", highlight=False, soft_wrap=True)
        console.print("  configure: " + " ".join(plan.configure), highlight=False, soft_wrap=True)
        console.print("  build:     " + " ".join(plan.build), highlight=False, soft_wrap=True)
        return
    result = execute(plan, profile, progress=None if json_out else _progress)
    run_result = None
    if run:
        run_result = run_on_board(result, profile, target=ssh_target, exe=exe, args=list(program_args or []),
                                  push=push, fetch=fetch, timeout=timeout, progress=None if json_out else _progress)
    if json_out:
        data = result.to_dict()
        data["run"] = run_result.to_dict() if run_result else None
        print_json(data)
        if run_result and run_result.returncode != 0:
            raise typer.Exit(run_result.returncode)
        return
    for w in result.warnings:
        err_console.print(f"[yellow]note:[/] {w}", highlight=False, soft_wrap=True)
    console.print(f"[green]built for {profile.id}[/] ({plan.triple}) in {result.build_seconds + result.configure_seconds:.1f} s:")
    for a in result.artifacts:
        console.print(f"  {a.path}  [dim]{a.check.info.describe()}[/]", highlight=False, soft_wrap=True)
    if run_result is None:
        return
    where = f"emulated {profile.id}" if run_result.emulated else run_result.host
    err_console.print(f"[cyan]>[/] {run_result.program} on {where} exited with {run_result.returncode}"
                      + (f" ({run_result.note})" if run_result.note else ""), highlight=False)
    sys.stdout.write(run_result.stdout)
    sys.stderr.write(run_result.stderr)
    for f in run_result.fetched:
        err_console.print(f"[cyan]>[/] fetched {f}", highlight=False)
    if run_result.returncode != 0:
        raise typer.Exit(run_result.returncode)


def register(app: typer.Typer) -> None:
    app.add_typer(cross_app, name="cross")


__all__ = ["build_cmd", "cross_app", "register"]

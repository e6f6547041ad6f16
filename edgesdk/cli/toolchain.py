"""`edgesdk toolchain install ID` / `edgesdk toolchain status`: the toolchains' isolated environments."""

from __future__ import annotations

import typer

from edgesdk.cli.common import JSON_OPTION, console, handle_errors, print_json

toolchain_app = typer.Typer(help="Install and check the converters' isolated environments.", no_args_is_help=True)


@toolchain_app.command("install")
@handle_errors
def install_cmd(
    toolchain: list[str] = typer.Argument(None, metavar="ID...", help="Toolchain id(s): ncnn, mnn, tflite, ..."),
    all_: bool = typer.Option(False, "--all", help="Every toolchain whose record says it lives in a venv."),
    force: bool = typer.Option(False, "--force", help="Recreate the venv even if it is up to date."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Create a toolchain's isolated venv (~/.cache/edgesdk/toolchains/ID/venv) from its pinned requirements.

    Examples:

      edgesdk toolchain install tflite

      edgesdk toolchain install ncnn mnn tflite

      edgesdk toolchain install --all
    """
    from edgesdk.errors import InputError
    from edgesdk.toolchains.install import install_toolchain
    from edgesdk.toolchains.spec import list_toolchains

    ids = list(toolchain or [])
    if all_:
        ids += [s.id for s in list_toolchains() if s.provision.kind == "venv" and s.id not in ids]
    if not ids:
        raise InputError("name the toolchain(s) to install, or pass --all (e.g. edgesdk toolchain install tflite)")
    results = []
    for t in ids:
        if not json_out:
            console.print(f"{t}: installing (this can take minutes for tflite) ...")
        r = install_toolchain(t, force=force)
        results.append(r)
        if not json_out:
            console.print(f"{t}: {r.action}: {r.detail}", highlight=False)
    if json_out:
        print_json([r.to_dict() for r in results])


@toolchain_app.command("status")
@handle_errors
def status_cmd(json_out: bool = JSON_OPTION) -> None:
    """Whether each CPU converter and each accelerator's vendor compiler is ready, with its version, or the command
    that fixes it. A missing vendor compiler is not an error: convert then stops at it and writes the commands."""
    from edgesdk.toolchains.adapters import ACCELERATOR_ADAPTERS, CPU_ENGINES, accelerator_adapter_class, get_adapter

    rows = [("cpu", get_adapter(e).check_env()) for e in CPU_ENGINES]
    rows += [("accelerator", accelerator_adapter_class(e)().vendor_env()) for e in ACCELERATOR_ADAPTERS]
    if json_out:
        print_json([{"toolchain": r.toolchain, "kind": k, "ok": r.ok, "version": r.version, "detail": r.detail,
                     "fix": r.fix} for k, r in rows])
        return
    for k, r in rows:
        mark = "[green]ok[/]" if r.ok else ("[red]missing[/]" if k == "cpu" else "[yellow]not here[/]")
        console.print(f"  {r.toolchain:<12} {mark}  {r.detail}" + (f"   fix: {r.fix}" if r.fix else ""),
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(toolchain_app, name="toolchain")

"""The edgesdk command line: a thin typer layer, one module per command, each calling one library function."""

from __future__ import annotations

import typer

from edgesdk import __version__
from edgesdk.cli.boards import board_app, boards_cmd
from edgesdk.cli.doctor import doctor_cmd
from edgesdk.cli.emulator import emulator_app

app = typer.Typer(
    name="edgesdk",
    help="Take a vision model to ARM and NPU edge boards: inspect, partition, convert, flash, run, profile.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgesdk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """edgesdk: one tool from model.onnx to a running, proven model on the board."""


app.command("boards")(boards_cmd)
app.add_typer(board_app, name="board")
app.command("doctor")(doctor_cmd)
app.add_typer(emulator_app, name="emulator")

# Commands of later issues register here, one module each.
for _mod in ("inspect", "partition", "cross", "convert", "verify", "toolchain", "deploy", "profile", "keys"):
    try:
        _m = __import__(f"edgesdk.cli.{_mod}", fromlist=["register"])
    except ModuleNotFoundError as _exc:
        if _exc.name != f"edgesdk.cli.{_mod}":
            raise
        continue
    _m.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]

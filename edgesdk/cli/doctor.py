"""`edgesdk doctor`: what is installed, what is missing, and how to fix it."""

from __future__ import annotations

import typer
from rich.table import Table

from edgesdk.boards import get_board
from edgesdk.cli.common import JSON_OPTION, console, handle_errors, print_json
from edgesdk.doctor import run_doctor

_STYLE = {"ok": "green", "missing": "yellow", "broken": "bold red", "unknown": "yellow", "n/a": "dim"}


@handle_errors
def doctor_cmd(
    board: str | None = typer.Option(None, "--board", "-b", help="Only what this board needs."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Check toolchains, engines and external tools; print a version or an install hint for each.

    Exits 0 when things are merely missing, 1 only for a broken install.

    Examples:

      edgesdk doctor

      edgesdk doctor --board coral-usb --json
    """
    profile = get_board(board) if board else None
    rep = run_doctor(profile)
    if json_out:
        print_json(rep.to_dict())
    else:
        h = rep.host
        console.print(f"edgesdk {h['edgesdk']} on {h['system']} {h['machine']}, Python {h['python']}"
                      + (f", board {rep.board}" if rep.board else ""))
        t = Table()
        for col in ("kind", "name", "status", "version", "detail / fix"):
            t.add_column(col)
        for c in rep.checks:
            name = f"{c.component}: {c.name}" if c.component and c.component != c.name else c.name
            info = c.fix or c.detail or ""
            if c.fix and c.detail:
                info = f"{c.detail}; fix: {c.fix}"
            elif c.fix:
                info = f"fix: {c.fix}"
            t.add_row(c.category, name, f"[{_STYLE[c.status]}]{c.status}[/]", c.version or "", info)
        console.print(t)
        for c in rep.checks:  # in full (the table may cut them): what a pip user runs first
            if c.category == "package" and c.status != "ok" and c.fix:
                console.print(f"{c.name}: {c.detail}\n  fix: {c.fix}", soft_wrap=True, markup=False, highlight=False)
        n = {s: sum(1 for c in rep.checks if c.status == s) for s in _STYLE}
        console.print(f"{n['ok']} ok, {n['missing']} missing, {n['broken']} broken, "
                      + (f"{n['unknown']} did not answer in time, " if n["unknown"] else "")
                      + f"{n['n/a']} not applicable here")
    if not rep.ok:
        raise typer.Exit(1)

"""Shared CLI plumbing: error -> exit code mapping, JSON output, the rich consoles."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from edgesdk.errors import EdgeSDKError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: The exit codes every command uses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def handle_errors(fn: F) -> F:
    """Turn edgesdk errors into a red message on stderr and the error's exit code (2 for bad input)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgeSDKError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, never wrapped or coloured."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")

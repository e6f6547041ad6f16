"""Shared CLI plumbing: error -> exit code mapping, JSON output, the rich consoles.

Every command is wrapped in `handle_errors`:

- an edgesdk error is a red ``error: ...`` line on stderr and its exit code (2 bad input, 1 a tool or engine
  failed); anything else is ``internal error in edgesdk <command>: <Type>: <message>; please report it ...``
  with exit 1, and a traceback only when ``EDGESDK_DEBUG=1``;
- with ``--json`` (the ``json_out`` parameter every JSON command has), stdout carries the JSON and nothing
  else: while the command runs, file descriptor 1 points at stderr, so banners that native engine libraries
  print to stdout (MNN's ``The device supports: ...``) end up there; Python's sys.stdout (print_json) writes
  to the real stdout.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from edgesdk.errors import EdgeSDKError
from edgesdk.text import visible

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

#: The exit codes every command uses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Set to 1 to see the traceback of an internal error.
DEBUG_ENV = "EDGESDK_DEBUG"

#: Where print_json writes while a --json command runs with stdout moved to stderr (else sys.stdout).
_json_out: Any = None


def safe_text(value: Any, markup: bool = True) -> str:
    """A string from the board (or any untrusted source) made safe to print: each character of Unicode category
    Cc, Cf, Cs, Zl or Zp (controls, escape sequences' ESC, bidi overrides, zero-width characters, U+FEFF, U+2028,
    U+2029) becomes its visible \\xNN / \\uNNNN form, and with markup=True (text inside a rich markup string) rich
    markup is escaped, so `[link=...]` or `[/x]` print as themselves. Tab and newline stay. Use it for every
    board-provided value a command prints (status, rollback, flash, run, profile, fleet lines, error messages)."""
    text = visible(value)
    return escape(text) if markup else text


def _current_context() -> Any:
    try:
        from click import get_current_context  # typer < 0.20 runs on click
    except ImportError:
        try:
            from typer._click.globals import get_current_context  # typer's own copy of click
        except ImportError:
            return None
    return get_current_context(silent=True)


def _command_name(fn: Callable[..., Any]) -> str:
    """``edgesdk board show`` for the command being run (whatever the program was called)."""
    ctx = _current_context()
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    names = [n for n in reversed(names)][1:]  # drop the program name
    if not names:
        names = [fn.__name__.removesuffix("_cmd").replace("_", " ")]
    return " ".join(["edgesdk", *[n for n in names if n]])


def _passthrough() -> tuple[type[BaseException], ...]:
    """typer.Exit (a RuntimeError), Abort, and the usage errors: the CLI framework reports those itself."""
    kinds: list[type[BaseException]] = [typer.Exit, typer.Abort]
    kinds += [k for k in typer.BadParameter.__mro__ if k.__name__ == "ClickException"]
    return tuple(kinds)


def _flush_c_stdio() -> None:
    """Flush the C library's stdout buffer (native code's printf) before fd 1 changes under it."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


@contextlib.contextmanager
def json_stdout(enabled: bool = True) -> Iterator[None]:
    """While the block runs, file descriptor 1 is stderr: what native code prints there (engine banners)
    cannot mix with the JSON. Python's sys.stdout (and so print_json, and the commands that write JSON lines
    themselves) stays on the real stdout, through a saved copy of the descriptor.

    A no-op when disabled, when already active, or when sys.stdout is not file descriptor 1 (a test runner's
    capture buffer)."""
    global _json_out
    if not enabled or _json_out is not None:
        yield
        return
    try:
        if sys.stdout.fileno() != 1:
            raise ValueError
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c_stdio()
        saved = os.dup(1)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
        yield
        return
    old = sys.stdout
    real = os.fdopen(saved, "w", encoding=getattr(old, "encoding", None) or "utf-8", errors="replace",
                     closefd=False, buffering=1)
    try:
        os.dup2(2, 1)
        sys.stdout = _json_out = real
        yield
    finally:
        _json_out = None
        sys.stdout = old
        try:
            real.flush()
        except (OSError, ValueError):
            pass
        _flush_c_stdio()
        os.dup2(saved, 1)
        real.close()
        os.close(saved)


def handle_errors(fn: F) -> F:
    """Turn edgesdk errors into a red message on stderr and the error's exit code (2 for bad input), any other
    exception into an 'internal error' message and exit 1 (traceback with EDGESDK_DEBUG=1); a ``--json`` run
    keeps stdout for the JSON alone (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with json_stdout(bool(kwargs.get("json_out"))):
            try:
                return fn(*args, **kwargs)
            except _passthrough():
                raise
            except EdgeSDKError as exc:
                err_console.print(f"[bold red]error:[/] {safe_text(exc)}", highlight=False, markup=True,
                                  soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                err_console.print("[red]interrupted[/]")
                raise typer.Exit(130) from None
            except Exception as exc:  # noqa: BLE001 - a bug, or a foreign error nobody translated
                debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
                if debug:
                    traceback.print_exc(file=sys.stderr)
                msg = " ".join(str(exc).split()) or "(no message)"
                if len(msg) > 2000:
                    msg = msg[:2000] + " ..."
                hint = "" if debug else f" ({DEBUG_ENV}=1 shows the traceback)"
                err_console.print(f"[bold red]internal error in {escape(_command_name(fn))}:[/] "
                                  f"{escape(type(exc).__name__)}: {safe_text(msg)}; please report it with the command "
                                  f"line{hint}", highlight=False, markup=True, soft_wrap=True)
                raise typer.Exit(EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


def _plain(data: Any) -> Any:
    """NaN and infinities are not JSON: they become null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, never wrapped or coloured, nothing else on that stream."""
    text = json.dumps(_plain(data), indent=2, default=str, allow_nan=False) + "\n"
    out = _json_out if _json_out is not None else sys.stdout
    out.write(text)
    out.flush()


JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")

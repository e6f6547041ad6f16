"""The one executor: runs the commands a toolchain adapter planned, with timeouts, and checks its files.

Adapters never run anything. They return a ConversionPlan (files to write, argv lists, the
files they expect); `execute` runs it. Every failure becomes a ToolchainError naming the
tool, the command and the last lines of its output.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.errors import ToolchainError

#: Lines of a failing tool's output kept in the error.
TAIL_LINES = 25
DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Command:
    """One external command: argv list (never a shell string), working directory, extra env, timeout."""

    tool: str
    argv: tuple[str, ...]
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    purpose: str = ""
    #: files this command must write: checked right after it, so a tool that exits 0 without its output
    #: (onnx2tf when full-integer quantization fails) is named with its own output, not the next command's
    produces: tuple[Path, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {"tool": self.tool, "argv": list(self.argv), "cwd": str(self.cwd) if self.cwd else None,
             "env": dict(sorted(self.env.items())), "timeout": self.timeout, "purpose": self.purpose}
        if self.produces:
            d["produces"] = [str(p) for p in self.produces]
        return d


@dataclass(frozen=True)
class FileWrite:
    """A small input file a plan needs before its commands run (a tool config, a dummy sample)."""

    path: Path
    content: bytes
    purpose: str = ""

    def to_dict(self) -> dict[str, Any]:
        import hashlib

        try:
            text: str | None = self.content.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        d: dict[str, Any] = {"path": str(self.path), "purpose": self.purpose}
        if text is not None and len(text) < 4000:
            d["text"] = text
        else:
            d["bytes"] = len(self.content)
            d["sha256"] = hashlib.sha256(self.content).hexdigest()
        return d


@dataclass(frozen=True)
class ConversionPlan:
    """What an adapter would do for one job: files to write, commands in order, files it expects."""

    toolchain: str
    engine: str
    precision: str
    writes: tuple[FileWrite, ...]
    commands: tuple[Command, ...]
    outputs: Mapping[str, Path]  # role -> file the commands must produce (bundle file roles)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "toolchain": self.toolchain,
            "engine": self.engine,
            "precision": self.precision,
            "writes": [w.to_dict() for w in self.writes],
            "commands": [c.to_dict() for c in self.commands],
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CommandResult:
    command: Command
    seconds: float
    stdout_tail: str


@dataclass(frozen=True)
class ExecutionResult:
    """What ran and what it produced: the files with their sizes, and the wall time."""

    plan: ConversionPlan
    results: tuple[CommandResult, ...]
    seconds: float
    sizes: Mapping[str, int]  # role -> bytes

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join("    " + ln for ln in kept[-lines:])


#: A runner takes a Command and returns (returncode, combined output); it raises subprocess.TimeoutExpired.
Runner = Callable[[Command], tuple[int, str]]


def subprocess_runner(cmd: Command) -> tuple[int, str]:
    env = dict(os.environ)
    env.update(cmd.env)
    proc = subprocess.run(  # noqa: S603 - argv list, no shell
        list(cmd.argv), cwd=cmd.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=cmd.timeout, check=False,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def run_command(cmd: Command, runner: Runner | None = None) -> CommandResult:
    """Run one command; a non-zero exit, a timeout or a missing executable is a ToolchainError."""
    run = runner or subprocess_runner
    t0 = time.perf_counter()
    try:
        rc, out = run(cmd)
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode("utf-8", "replace") if isinstance(exc.output, bytes) else (exc.output or "")
        raise ToolchainError(cmd.tool, cmd.argv, None,
                             tail(out) + f"\n    (killed after {cmd.timeout:.0f} s)") from exc
    except OSError as exc:  # executable missing or not executable
        raise ToolchainError(cmd.tool, cmd.argv, 127, f"    cannot start: {exc}") from exc
    if rc != 0:
        raise ToolchainError(cmd.tool, cmd.argv, rc, tail(out) or "    (no output)")
    return CommandResult(cmd, time.perf_counter() - t0, tail(out, 5))


def execute(plan: ConversionPlan, runner: Runner | None = None) -> ExecutionResult:
    """Write the plan's files, run its commands in order, and check every expected output exists."""
    t0 = time.perf_counter()
    for w in plan.writes:
        w.path.parent.mkdir(parents=True, exist_ok=True)
        w.path.write_bytes(w.content)
    results = []
    for c in plan.commands:
        res = run_command(c, runner)
        results.append(res)
        missing = [p for p in c.produces if not p.is_file() or p.stat().st_size == 0]
        if missing:
            raise ToolchainError(c.tool, c.argv, 0, f"    the tool exited 0 but did not write "
                                 f"{', '.join(p.name for p in missing)}\n" + _reasons(res.stdout_tail))
    sizes = {}
    for role, p in plan.outputs.items():
        if not p.is_file() or p.stat().st_size == 0:
            last = plan.commands[-1] if plan.commands else None
            raise ToolchainError(
                last.tool if last else plan.toolchain, last.argv if last else (), 0,
                f"    the tool exited 0 but did not write {p.name} ({role})\n"
                + (results[-1].stdout_tail if results else ""))
        sizes[role] = p.stat().st_size
    return ExecutionResult(plan, tuple(results), time.perf_counter() - t0, sizes)


def _reasons(tail: str) -> str:
    """A tool's output tail, with its WARNING/ERROR lines (what it says went wrong) first."""
    lines = tail.splitlines()
    flagged = [ln for ln in lines if any(k in ln for k in ("ERROR", "Error", "WARNING: ", "failed", "Failed"))]
    return "\n".join([*(f"    {ln.strip()}" for ln in flagged[-6:]), *lines]) if flagged else tail


def redact_paths(data: Any, replacements: Sequence[tuple[str, str]]) -> Any:
    """Replace machine-specific path prefixes in a plan's dict (golden tests, --dry-run output)."""
    if isinstance(data, dict):
        return {k: redact_paths(v, replacements) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_paths(v, replacements) for v in data]
    if isinstance(data, str):
        for old, new in replacements:
            data = data.replace(old, new)
        return data
    return data


__all__ = [
    "Command",
    "CommandResult",
    "ConversionPlan",
    "ExecutionResult",
    "FileWrite",
    "execute",
    "redact_paths",
    "run_command",
    "subprocess_runner",
]

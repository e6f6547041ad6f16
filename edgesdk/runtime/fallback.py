"""The one CPU-fallback rule: a segment whose engine cannot run here is refused, or, with fallback "cpu",
runs the CPU version the bundle carries for it.

Standard library only (part of the board package). Used by Session (a segment whose engine is not installed),
flash and fleets (a board without its accelerator: refused before anything is sent, or `--fallback cpu`), the
wheelhouse (which engines the board needs), `edgesdk profile` and the board CLI (`python -m edgesdk.runtime
... --fallback cpu`, which the agent runs for the smoke test, `run` and `profile`).

    fb = check_fallback(value)                      # None/"error" -> "error", "cpu" -> "cpu", else InputMismatch
    routes = resolve_fallback(manifest.segments, fb, missing=lambda seg: None or "why it cannot run")
    engines = engines_needed(manifest.segments, fb, missing=...)

`resolve_fallback` gives one Route per segment (the engine that runs it, and whether that is its CPU version),
or raises FallbackRefused naming every segment that cannot run: no fallback asked (`kind` "no-fallback"), no
CPU version in the bundle ("no-cpu-version"), or the CPU version's engine not among the allowed engines
("cpu-engine-not-allowed").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from edgesdk.runtime.errors import EngineUnavailable, InputMismatch

#: the values of every `fallback` setting: "error" (the default: refuse) and "cpu"
FALLBACKS = ("error", "cpu")
NO_FALLBACK, NO_CPU_VERSION, CPU_ENGINE_NOT_ALLOWED = "no-fallback", "no-cpu-version", "cpu-engine-not-allowed"


def check_fallback(value: str | None, what: str = "fallback") -> str:
    """The fallback setting, checked: "error" (also for None or ""), or "cpu". Anything else raises
    InputMismatch (an InputError: exit code 2) naming the accepted values."""
    if value in (None, "", "error"):
        return "error"
    if value == "cpu":
        return "cpu"
    raise InputMismatch(f"{what}: expected cpu (or error, the default: refuse), got {value!r}")


@dataclass(frozen=True)
class Route:
    """How one segment runs: on its own engine, or (fallback) on its CPU version's."""

    segment: str
    engine: str  # the engine that runs it
    planned: str  # the segment's own engine
    fallback: bool = False
    reason: str | None = None  # why the CPU version runs ("edgetpu unavailable: ...")
    cpu_version: Any = None  # the manifest's CpuVersion when fallback, else None


class FallbackRefused(EngineUnavailable):
    """Segments that cannot run here and may not (or cannot) fall back to their CPU version.

    kind: NO_FALLBACK | NO_CPU_VERSION | CPU_ENGINE_NOT_ALLOWED; segments: ((id, engine), ...);
    why: {segment id: why its engine cannot run}."""

    def __init__(self, kind: str, segments: tuple[tuple[str, str], ...], why: dict[str, str], fix: str,
                 detail: str) -> None:
        self.kind, self.segments, self.why = kind, segments, why
        super().__init__(segments[0][1], fix, detail)


def resolve_fallback(segments: Iterable[Any], fallback: str | None,
                     missing: Callable[[Any], str | None] = lambda seg: None,
                     allowed: Collection[str] | None = None, fix: str | None = None) -> tuple[Route, ...]:
    """One Route per segment, or FallbackRefused naming every segment that cannot run.

    segments: the manifest's Segments (id, engine, cpu_version). fallback: "error"/None or "cpu" (checked).
    missing(segment): None when its engine runs here, else why not ("not installed: ...", "accelerator absent").
    allowed: the engines that may run (Session's engines= list); a CPU version on another engine is refused.
    fix: how to get the missing engine (default: install it, or use fallback "cpu").
    """
    fb = check_fallback(fallback)
    routes: list[Route] = []
    refused: dict[str, list[tuple[str, str]]] = {}
    why: dict[str, str] = {}
    for seg in segments:
        reason = missing(seg)
        if reason is None:
            routes.append(Route(seg.id, seg.engine, seg.engine))
            continue
        why[seg.id] = reason
        cv = getattr(seg, "cpu_version", None)
        if fb != "cpu":
            kind = NO_FALLBACK
        elif cv is None:
            kind = NO_CPU_VERSION
        elif allowed is not None and cv.engine not in allowed:
            kind = CPU_ENGINE_NOT_ALLOWED
        else:
            routes.append(Route(seg.id, cv.engine, seg.engine, True, f"{seg.engine} unavailable: {reason}", cv))
            continue
        refused.setdefault(kind, []).append((seg.id, seg.engine))
    if refused:
        kind = next(k for k in (NO_FALLBACK, NO_CPU_VERSION, CPU_ENGINE_NOT_ALLOWED) if k in refused)
        segs = tuple(refused[kind])
        first = segs[0][0]
        if kind == NO_FALLBACK:
            detail = why[first] if len(segs) == 1 else "; ".join(f"segment {s} ({e}): {why[s]}" for s, e in segs)
        elif kind == NO_CPU_VERSION:
            names = ", ".join(repr(s) for s, _ in segs)
            detail = (f"{why[first]}; fallback='cpu' was asked but the bundle carries no CPU version of segment"
                      f"{'s' if len(segs) > 1 else ''} {names}")
        else:
            cpu = sorted({seg.cpu_version.engine for seg in _by_id(segments, segs)})
            detail = (f"its CPU version needs {', '.join(repr(c) for c in cpu)}, which is not in "
                      f"engines={list(allowed or ())}")
        raise FallbackRefused(kind, segs, why, fix or f"install {segs[0][1]}, or use fallback='cpu'", detail)
    return tuple(routes)


def _by_id(segments: Iterable[Any], ids: tuple[tuple[str, str], ...]) -> list[Any]:
    want = {s for s, _ in ids}
    return [seg for seg in segments if seg.id in want]


def engines_needed(segments: Iterable[Any], fallback: str | None,
                   missing: Callable[[Any], str | None] = lambda seg: None) -> set[str]:
    """The engines a machine needs to run these segments: each segment's route's engine, and, with fallback "cpu",
    every CPU version's engine too (so that the fallback can run wherever the planned engine turns out missing).
    Never raises for a segment that cannot run (resolve_fallback decides that): it keeps its own engine."""
    fb = check_fallback(fallback)
    engines: set[str] = set()
    for seg in segments:
        cv = getattr(seg, "cpu_version", None)
        if fb == "cpu" and cv is not None:
            engines.add(cv.engine)
            if missing(seg) is not None:
                continue
        engines.add(seg.engine)
    return engines


__all__ = ["CPU_ENGINE_NOT_ALLOWED", "FALLBACKS", "NO_CPU_VERSION", "NO_FALLBACK", "FallbackRefused", "Route",
           "check_fallback", "engines_needed", "resolve_fallback"]

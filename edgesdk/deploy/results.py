"""Typed results of flash, status, rollback and run: frozen dataclasses with an enum status.

Sequences are tuples and mappings read-only views (types.MappingProxyType), all the way down: a result is a
value, not a mutable record. `to_dict()` gives plain JSON-ready dicts and lists, with the keys `--json` prints.

    r = flash(...)          FlashResult     r.status is Outcome.SUCCESS, r.ok, r.to_dict()
    st = status(target)     BoardState      st.status is BoardStatus.READY, st.current, st.releases, st.history
    rb = rollback(target)   RollbackResult  rb.status is Outcome.ROLLED_BACK, rb.previous, rb.current
    out = run_remote(...)   RunResult       out.outputs["logits"].file, out.latency_ms
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any


class _StrEnum(str, Enum):
    """A str enum that prints, formats and hashes as its value ("success"), like 3.11's StrEnum."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    __hash__ = str.__hash__


class Outcome(_StrEnum):
    """How a flash (or a fleet board, a rollback, a run) ended."""

    SUCCESS = "success"  # flashed, smoke test passed, `current` switched
    ROLLED_BACK = "rolled-back"  # the smoke test failed; the previous release is current again
    FAILED = "failed"  # a board-side step failed (connection lost, no space, locked, bad file); nothing switched
    UNREACHABLE = "unreachable"  # no connection at all
    REFUSED = "refused"  # refused before anything changed (host key, wrong board, bad input, no accelerator)
    SKIPPED = "skipped"  # fleet: not started (the failure rate passed --max-fail)


#: flash's status type (the same enum)
FlashStatus = Outcome


class BoardStatus(_StrEnum):
    """What `edgesdk status` found on the board."""

    READY = "ready"  # a current release, no flash in progress
    EMPTY = "empty"  # no current release
    LOCKED = "locked"  # a flash or rollback holds the board's lock
    INTERRUPTED = "interrupted"  # a switch never reported its smoke result: the next flash rolls it back


def freeze(value: Any) -> Any:
    """dicts -> read-only mappings, lists/tuples -> tuples, recursively; other values as they are."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse for JSON: mappings -> dicts, tuples -> lists, enums -> their value, dataclasses -> to_dict()."""
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def _set(obj: Any, **values: Any) -> None:
    for k, v in values.items():
        object.__setattr__(obj, k, v)


def _frozen_fields(obj: Any, *names: str) -> None:
    _set(obj, **{n: freeze(getattr(obj, n)) for n in names})


@dataclass(frozen=True)
class FlashResult:
    """One board's flash. Board-side outcomes are `status` (bad input raises before anything is sent)."""

    host: str
    board: str
    status: Outcome
    bundle_id: str | None = None
    previous: str | None = None
    phases: Mapping[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_total: int = 0
    wheel_bytes_sent: int = 0
    provisioned: str | None = None  # installed | skipped | None
    smoke: Mapping[str, Any] | None = None
    latency_ms: float | None = None
    emulated: bool = False
    forced: bool = False
    warnings: tuple[str, ...] = ()
    error: str | None = None
    log: str | None = None
    transfer: Mapping[str, Any] | None = None
    target_note: str | None = None
    #: "cpu" when the release runs with the CPU fallback (recorded on the board too)
    fallback: str | None = None
    accelerator_present: bool | None = None
    #: what changed because of the board (e.g. "segment s0: edgetpu accelerator absent ...; runs its CPU version")
    notes: tuple[str, ...] = ()
    #: from the smoke test: ({segment, engine, planned, fallback, reason}, ...)
    engines_used: tuple[Mapping[str, Any], ...] | None = None
    exit_code: int = 0

    def __post_init__(self) -> None:
        _set(self, status=Outcome(self.status))
        _frozen_fields(self, "phases", "smoke", "warnings", "transfer", "notes", "engines_used")

    @property
    def ok(self) -> bool:
        return self.status is Outcome.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "board": self.board, "status": self.status.value, "bundle_id": self.bundle_id,
                "previous": self.previous, "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "bytes_sent": self.bytes_sent, "bytes_total": self.bytes_total,
                "wheel_bytes_sent": self.wheel_bytes_sent, "provisioned": self.provisioned,
                "smoke": thaw(self.smoke), "latency_ms": self.latency_ms, "emulated": self.emulated,
                "forced": self.forced, "warnings": list(self.warnings), "error": self.error, "log": self.log,
                "transfer": thaw(self.transfer), "target_note": self.target_note, "fallback": self.fallback,
                "accelerator_present": self.accelerator_present, "notes": list(self.notes),
                "engines_used": thaw(self.engines_used)}


@dataclass(frozen=True)
class BoardState:
    """What the board holds (`edgesdk status`): its current release, the others kept, state.json, the lock."""

    host: str
    base: str
    status: BoardStatus
    current: str | None = None
    releases: tuple[str, ...] = ()
    #: state.json: current, previous, pending, fallback per release, history
    state: Mapping[str, Any] = field(default_factory=dict)
    lock: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _set(self, status=BoardStatus(self.status))
        _frozen_fields(self, "releases", "state", "lock")

    @property
    def ok(self) -> bool:
        return True

    @property
    def history(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(self.state.get("history") or ())

    @property
    def fallback(self) -> Mapping[str, str]:
        """{release: "cpu"} for the releases flashed with --fallback cpu."""
        return self.state.get("fallback") or MappingProxyType({})

    @classmethod
    def from_agent(cls, host: str, answer: Mapping[str, Any]) -> BoardState:
        """From the agent's `state` answer. Malformed board state (state.json not an object, a history that is not
        a list of objects, a lock that is not an object, ...) is a RemoteError naming the field, never a crash
        later; the values inside stay as the board wrote them (the CLI prints them through safe_text)."""
        from edgesdk.errors import RemoteError

        def bad(field_: str, v: Any, want: str) -> RemoteError:
            return RemoteError(f"{host}: the board's state is malformed: {field_} is {type(v).__name__}, not {want} "
                               "(see state.json in the board's edgesdk dir)")

        st = answer.get("state") or {}
        if not isinstance(st, Mapping):
            raise bad("state.json", st, "an object")
        hist = st.get("history")
        if hist is not None and not isinstance(hist, (list, tuple)):
            raise bad("history", hist, "a list")
        for i, ev in enumerate(hist or ()):
            if not isinstance(ev, Mapping):
                raise bad(f"history[{i}]", ev, "an object")
        if st.get("fallback") is not None and not isinstance(st.get("fallback"), Mapping):
            raise bad("fallback", st["fallback"], "an object")
        lock = answer.get("lock")
        if lock is not None and not isinstance(lock, Mapping):
            raise bad("lock", lock, "an object")
        rel = answer.get("releases")
        if rel is not None and (not isinstance(rel, (list, tuple)) or not all(isinstance(r, str) for r in rel)):
            raise bad("releases", rel, "a list of names")
        current = answer.get("current")
        if current is not None and not isinstance(current, str):
            raise bad("current", current, "a name")
        status = (BoardStatus.LOCKED if lock else BoardStatus.INTERRUPTED if st.get("pending") else
                  BoardStatus.READY if current else BoardStatus.EMPTY)
        return cls(host, str(answer.get("base") or ""), status, current, tuple(answer.get("releases") or ()), st,
                   lock)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "host": self.host, "base": self.base, "status": self.status.value,
                "current": self.current, "releases": list(self.releases), "state": thaw(self.state),
                "lock": thaw(self.lock)}


@dataclass(frozen=True)
class RollbackResult:
    """`edgesdk rollback`: `current` switched from `previous` to `current` (JSON: "from", "current")."""

    host: str
    previous: str | None
    current: str
    status: Outcome = Outcome.ROLLED_BACK

    def __post_init__(self) -> None:
        _set(self, status=Outcome(self.status))

    @property
    def ok(self) -> bool:
        return self.status is Outcome.ROLLED_BACK

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "host": self.host, "status": self.status.value, "from": self.previous,
                "current": self.current}


@dataclass(frozen=True)
class OutputFile:
    """One output of a remote run, saved on this machine."""

    file: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        _set(self, shape=tuple(int(d) for d in self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class RunResult:
    """`edgesdk run`: one inference of a release on the board, its outputs brought back as .npy files."""

    host: str
    release: str
    outputs: Mapping[str, OutputFile]
    latency_ms: float | None = None
    fallback: str | None = None
    engines_used: tuple[Mapping[str, Any], ...] | None = None
    status: Outcome = Outcome.SUCCESS
    #: who ran it on the board (the runtime's os.getuid()) and as what: "nobody", "root" (--allow-root), "user"
    uid: int | None = None
    ran_as: str | None = None
    #: an app release: its decoded outputs per frame ({"outputs": {name: JSON value}, "total_ms", "stages"}); the
    #: app's outputs are results (texts, boxes, track ids), they come back in the answer, not as .npy files
    frames: tuple[Mapping[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        _set(self, status=Outcome(self.status), outputs=MappingProxyType(dict(self.outputs)))
        _frozen_fields(self, "engines_used", "frames")

    @property
    def ok(self) -> bool:
        return self.status is Outcome.SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "host": self.host, "status": self.status.value, "release": self.release,
                "outputs": {k: v.to_dict() for k, v in self.outputs.items()}, "latency_ms": self.latency_ms,
                "fallback": self.fallback, "engines_used": thaw(self.engines_used), "uid": self.uid,
                "ran_as": self.ran_as, **({"frames": thaw(self.frames)} if self.frames is not None else {})}


def engines_used(raw: Any) -> tuple[dict[str, Any], ...] | None:
    """A smoke test's or run's engines_used as dicts (an older agent reported [segment, engine] pairs)."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        return None
    return tuple(dict(u) if isinstance(u, Mapping) else {"segment": u[0], "engine": u[1]} for u in raw
                 if isinstance(u, Mapping) or (isinstance(u, Sequence) and len(u) == 2))


__all__ = ["BoardState", "BoardStatus", "FlashResult", "FlashStatus", "Outcome", "OutputFile", "RollbackResult",
           "RunResult", "engines_used", "freeze", "thaw"]

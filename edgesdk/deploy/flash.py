"""`flash`: model or bundle -> (convert) -> probe -> provision -> push -> install -> switch + smoke test,
with rollback; plus status, rollback and remote run. One board per call; fleet.py runs many."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.boards import BoardProfile, get_board
from edgesdk.deploy.board import (
    AgentError,
    BoardLocked,
    NoSpaceError,
    RemoteBoard,
    SmokeFailed,
    whoami_host,
)
from edgesdk.deploy.probe import ProbeResult, accelerator_present, probe
from edgesdk.deploy.transfer import LocalFile, TransferStats, local_tree, push, upload
from edgesdk.deploy.transport import ConnectError, HostKeyError, SSHConnection, SSHTarget
from edgesdk.errors import BundleError, EdgeSDKError, InputError, RemoteError
from edgesdk.paths import home

Event = Callable[[dict[str, Any]], None]
PHASES = ("convert", "connect", "probe", "provision", "push", "install", "smoke")


@dataclass
class FlashOptions:
    force: bool = False
    keep: int = 3
    smoke_timeout: float = 300.0
    provision: bool = True
    #: an interpreter on the board that already has edgesdk.runtime (skips provisioning)
    python: str | None = None
    lock_ttl: float = 1800.0
    break_lock: bool = False
    fail_points: dict | None = None
    #: a prebuilt wheelhouse (fleets build it once for all boards)
    wheelhouse: Any = None
    #: None, or "cpu": a board without its accelerator runs the accelerator segments' CPU versions
    #: (`flash --fallback cpu`); without it such a flash is refused (AcceleratorMissing, exit 2)
    fallback: str | None = None
    #: fixed shapes for a model's dynamic inputs when flash converts it (`--input-shape NAME=D0,D1,...`)
    input_shapes: dict[str, tuple[int, ...]] | None = None


@dataclass
class FlashResult:
    host: str
    board: str
    status: str  # success | rolled-back | failed | unreachable | refused
    bundle_id: str | None = None
    previous: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_total: int = 0
    wheel_bytes_sent: int = 0
    provisioned: str | None = None  # installed | skipped | None
    smoke: dict[str, Any] | None = None
    latency_ms: float | None = None
    emulated: bool = False
    forced: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    log: str | None = None
    transfer: dict[str, Any] | None = None
    target_note: str | None = None
    #: "cpu" when the release runs with the CPU fallback (recorded on the board too)
    fallback: str | None = None
    accelerator_present: bool | None = None
    #: what changed because of the board (e.g. "segment s0: edgetpu accelerator absent ...; runs its CPU version")
    notes: list[str] = field(default_factory=list)
    #: from the smoke test: [{segment, engine, planned, fallback, reason}]
    engines_used: list[dict[str, Any]] | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "board": self.board, "status": self.status, "bundle_id": self.bundle_id,
                "previous": self.previous, "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "bytes_sent": self.bytes_sent, "bytes_total": self.bytes_total,
                "wheel_bytes_sent": self.wheel_bytes_sent, "provisioned": self.provisioned, "smoke": self.smoke,
                "latency_ms": self.latency_ms, "emulated": self.emulated, "forced": self.forced,
                "warnings": self.warnings, "error": self.error, "log": self.log, "transfer": self.transfer,
                "target_note": self.target_note, "fallback": self.fallback,
                "accelerator_present": self.accelerator_present, "notes": self.notes,
                "engines_used": self.engines_used}


# -- inputs ------------------------------------------------------------------------------------------

#: optional beside manifest.json: `edgesdk tune`'s recommendation (engines, threads), not in the manifest's files
TUNING_FILE = "tuning.json"


def check_bundle(bundle: Path) -> tuple[Any, dict[str, LocalFile]]:
    """The manifest and files of a bundle dir; refuses links, '..', absolute paths and strays."""
    from edgesdk.runtime.manifest import MANIFEST, SIGNATURE, load_manifest

    bundle = Path(bundle)
    if bundle.is_symlink():
        raise InputError(f"{bundle}: a bundle must be a directory, not a link")
    files = local_tree(bundle)
    m = load_manifest(bundle, verify=True)
    optional = {f for f in (SIGNATURE, TUNING_FILE) if f in files}
    expected = set(m.files) | {MANIFEST} | optional
    strays = sorted(set(files) - expected)
    if strays:
        raise BundleError(f"{bundle}: files not listed in the manifest: {strays[:5]}")
    if not m.bundle_id or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", m.bundle_id):
        raise BundleError(f"{bundle}: manifest has no usable bundle_id ({m.bundle_id!r})")
    if TUNING_FILE in files:  # `edgesdk tune`'s choice: pushed with the bundle, read by the board's runtime
        from edgesdk.runtime.profiling import load_tuning

        tuning = load_tuning(bundle)
        if tuning and tuning.get("bundle_id") not in (None, m.bundle_id):
            raise BundleError(f"{bundle}/{TUNING_FILE} was made for bundle {tuning['bundle_id']}, not "
                              f"{m.bundle_id}: re-run `edgesdk tune` or remove it")
    return m, files


def shapes_key(input_shapes: dict[str, Any] | None) -> str:
    """A stable text of the input shapes, for cache keys ("" when none)."""
    if not input_shapes:
        return ""
    return json.dumps({str(k): [int(d) for d in v] for k, v in sorted(input_shapes.items())}, separators=(",", ":"))


def board_engines(manifest: Any, fallback: str | None = None, accelerator: bool = True) -> set[str]:
    """The engines the board needs for this bundle: the segments' engines, with an accelerator segment's CPU
    version instead of its engine when the accelerator is absent and fallback is "cpu" (and beside it when
    fallback is "cpu" and the accelerator is present, so that the fallback can run)."""
    engines: set[str] = set()
    for s in manifest.segments:
        cv = s.cpu_version if fallback == "cpu" else None
        if cv is not None:
            engines.add(cv.engine)
            if s.accelerator and not accelerator:
                continue
        engines.add(s.engine)
    return engines


def resolve_bundle(model_or_bundle: str | Path, board: str, event: Event | None = None,
                   input_shapes: dict[str, Any] | None = None) -> tuple[Path, float]:
    """A bundle dir as given, or the bundle converted from a model file (cached by the model's hash and the
    input shapes). input_shapes: {name: (d0, d1, ...)} for a model's dynamic inputs (`--input-shape`)."""
    p = Path(model_or_bundle)
    if p.is_dir():
        if input_shapes:
            raise InputError(f"{p}: --input-shape applies when converting a model, not to a bundle (its shapes "
                             "are fixed)")
        return p, 0.0
    if not p.is_file():
        raise InputError(f"{p}: no such model file or bundle directory")
    t0 = time.perf_counter()
    from edgesdk import __version__

    h = hashlib.sha256(p.read_bytes())
    h.update(f"\0edgesdk {__version__}".encode())  # a new edgesdk converts again
    shapes = shapes_key(input_shapes)
    if shapes:
        h.update(b"\0input_shapes:" + shapes.encode())
    digest = h.hexdigest()[:16]
    out = home() / "bundles" / f"{board}-{p.stem}-{digest}"
    if not (out / "manifest.json").is_file():
        from edgesdk.conversion import convert

        if event:
            event({"phase": "convert", "state": "start", "detail": f"{p.name} for {board}"
                   + (f" (input shapes {shapes})" if shapes else "")})
        out.parent.mkdir(parents=True, exist_ok=True)
        convert(p, board, out=out, force=True, input_shapes=dict(input_shapes) if input_shapes else None)
    return out, time.perf_counter() - t0


def emulator_target(board: BoardProfile, event: Event | None = None) -> tuple[SSHTarget, str]:
    """The board's local emulated instance (started if needed)."""
    from edgesdk import emulator

    st = emulator.status(board)
    started = st.state != "running"
    if started and event:
        event({"phase": "connect", "state": "start", "detail": f"starting the emulated {board.id}"})
    info = emulator.start(board) if started else st
    note = (f"no --host: flashing the local EMULATED {board.id} (qemu {info.qemu_cpu}) at {info.ssh_target}"
            + (", started it" if started else ", already running"))
    return SSHTarget(host=info.host, port=info.port, user=info.user or "root", identity=Path(info.key_path),
                     known_hosts=Path(info.known_hosts)), note


# -- flash -------------------------------------------------------------------------------------------

def flash(model_or_bundle: str | Path, board: str | BoardProfile, target: SSHTarget | None = None,
          options: FlashOptions | None = None, event: Event | None = None) -> FlashResult:
    """Flash one board. Bad input raises; board-side outcomes come back in FlashResult.status."""
    opts = options or FlashOptions()
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    emit = event or (lambda e: None)
    phases: dict[str, float] = {}
    if opts.fallback not in (None, "cpu"):
        raise InputError(f"--fallback: expected cpu, got {opts.fallback!r}")
    bundle, conv_s = resolve_bundle(model_or_bundle, prof.id, emit, opts.input_shapes)
    if conv_s:
        phases["convert"] = conv_s
        emit({"phase": "convert", "state": "done", "seconds": conv_s, "detail": str(bundle)})
    manifest, files = check_bundle(bundle)
    if manifest.board != prof.id and not opts.force:
        raise InputError(f"{bundle} was converted for {manifest.board}, not {prof.id} (--force flashes it anyway)")
    note = None
    if target is None:
        target, note = emulator_target(prof, emit)
        emit({"phase": "connect", "state": "note", "detail": note})
    return flash_bundle(bundle, manifest, files, prof, target, opts, emit, phases, note)


def flash_bundle(bundle: Path, manifest: Any, files: dict[str, LocalFile], prof: BoardProfile, target: SSHTarget,
                 opts: FlashOptions, emit: Event, phases: dict[str, float] | None = None,
                 note: str | None = None) -> FlashResult:
    phases = dict(phases or {})
    res = FlashResult(host=target.known_hosts_name, board=prof.id, status="failed", bundle_id=manifest.bundle_id,
                      bytes_total=sum(f.size for f in files.values()), phases=phases, target_note=note)

    def phase(name: str) -> _Phase:
        return _Phase(name, phases, emit)

    conn = SSHConnection(target)
    rb = RemoteBoard(conn, fail_points=opts.fail_points)
    try:
        with phase("connect"):
            conn.connect()
            rb.open()
        with phase("probe") as ph:
            # a missing accelerator is judged against the bundle below (AcceleratorMissing names the fix)
            pr: ProbeResult = probe(rb, prof, force=opts.force, accelerator_required=False)
            res.emulated, res.forced = pr.emulated, pr.forced
            res.warnings += list(pr.warnings) + [f"forced past: {p}" for p in pr.problems]
            res.previous = pr.facts.get("current")
            accel = res.accelerator_present = accelerator_present(prof, pr.facts)
            from edgesdk.toolchains.adapters._accel import check_accelerator_for_flash

            # before anything is locked, provisioned or pushed: refused (exit 2) unless --fallback cpu
            res.notes += list(check_accelerator_for_flash(
                manifest, accel, opts.fallback,
                board_name=f"{prof.id} at {target.known_hosts_name}" + (" (EMULATED)" if pr.emulated else "")))
            if opts.fallback == "cpu":
                res.fallback = "cpu"
            if res.notes:
                ph.detail = "; ".join(res.notes)
            if opts.break_lock:
                rb.call("lock", "break", secrets.token_hex(12))
            locked = rb.lock(who=f"{whoami_host()} flash {manifest.bundle_id}", ttl=opts.lock_ttl)
            if locked.get("recovered"):
                res.warnings.append(f"an interrupted switch to {locked['recovered']} was rolled back first")
        python = opts.python
        with phase("provision") as ph:
            if python is None and opts.provision:
                python = _provision(rb, prof, manifest, pr, res, ph, opts, accel)
            else:
                python = python or rb.venv_python
                ph.detail = "skipped (--python given)" if opts.python else "skipped (--no-provision)"
        with phase("push") as ph:
            def prog(done: int, total: int) -> None:
                emit({"phase": "push", "state": "bytes", "done": done, "total": total})

            st: TransferStats = push(rb, f"staging/{manifest.bundle_id}", files, prog)
            res.bytes_sent, res.transfer = st.bytes_sent, st.to_dict()
            ph.detail = ("already on the board" if st.already_installed else
                         f"{_mb(st.bytes_sent)} sent, {st.files_skipped} of {len(files)} files already there")
            if st.details:
                res.warnings += st.details
        with phase("install"):
            rb.fail_point("before_install")
            rb.call("install", manifest.bundle_id, rb.token, timeout=1800)
        with phase("smoke") as ph:
            rb.fail_point("before_activate")
            notes = []
            if res.forced:
                notes.append("forced: " + "; ".join(pr.problems))
            if res.fallback and res.notes:
                notes.append("accelerator absent: segments "
                             + ", ".join(s.id for s in manifest.segments if s.accelerator)
                             + " run their CPU version (--fallback cpu)")
            try:
                act = rb.call("activate", manifest.bundle_id, rb.token, f"--python={python}",
                              f"--timeout={opts.smoke_timeout}", f"--keep={opts.keep}", f"--note={' '.join(notes)}",
                              f"--fallback={res.fallback or 'error'}", timeout=opts.smoke_timeout + 120)
            except SmokeFailed as exc:
                d = exc.detail
                res.status, res.error, res.log, res.smoke = "rolled-back", str(exc), d.get("log"), d.get("smoke")
                res.previous = d.get("current")
                ph.detail = f"failed: {d.get('reason')}; rolled back to {d.get('current') or 'nothing'}"
                res.exit_code = 1
                return res
            res.smoke = act.get("smoke")
            res.latency_ms = (act.get("smoke") or {}).get("latency_ms")
            res.engines_used = _engines_used((act.get("smoke") or {}).get("engines_used"))
            res.log = act.get("log")
            cpu = [u["segment"] for u in res.engines_used or [] if u.get("fallback")]
            ph.detail = "passed" + (f", one run {res.latency_ms:.1f} ms" if res.latency_ms is not None else "") \
                + (" (EMULATED)" if res.emulated else "") \
                + (f"; CPU fallback for {', '.join(cpu)}" if cpu else "")
            res.status = "success"
    except HostKeyError as exc:
        res.status, res.error, res.exit_code = "refused", str(exc), 1
    except ConnectError as exc:
        res.status, res.error, res.exit_code = "failed" if rb.base else "unreachable", str(exc), 1
    except (NoSpaceError, BoardLocked, AgentError, RemoteError) as exc:
        res.status, res.error, res.exit_code = "failed", str(exc), 1
    except InputError as exc:
        res.status, res.error, res.exit_code = "refused", str(exc), exc.exit_code
    except EdgeSDKError as exc:
        res.status, res.error, res.exit_code = "failed", str(exc), exc.exit_code
    finally:
        _release(rb, target)
        conn.close()
    return res


def _release(rb: RemoteBoard, target: SSHTarget) -> None:
    """Free the board's lock; over a fresh connection if ours was cut (so a rerun can resume)."""
    if not rb.token:
        return
    try:
        rb.unlock()
        return
    except EdgeSDKError:
        pass
    try:
        with SSHConnection(target) as c2:
            rb2 = RemoteBoard(c2, base=rb.base, token=rb.token)
            rb2.unlock()
    except EdgeSDKError:
        pass  # a rerun from this host takes it over; others wait for the lock's TTL
    finally:
        rb.forget()


def _engines_used(raw: Any) -> list[dict[str, Any]] | None:
    """The smoke test's engines_used as dicts (an older agent reported [segment, engine] pairs)."""
    if not isinstance(raw, list):
        return None
    return [u if isinstance(u, dict) else {"segment": u[0], "engine": u[1]} for u in raw
            if isinstance(u, dict) or (isinstance(u, list) and len(u) == 2)]


def _provision(rb: RemoteBoard, prof: BoardProfile, manifest: Any, pr: ProbeResult, res: FlashResult,
               ph: _Phase, opts: FlashOptions, accel: bool = True) -> str:
    from edgesdk.deploy.wheelhouse import build_wheelhouse

    engines = board_engines(manifest, opts.fallback, accel)
    py = ".".join(pr.facts.get("python", prof.os.python).split(".")[:2]) if res.forced else None
    wh = opts.wheelhouse or build_wheelhouse(prof, engines, python=py)
    if pr.facts.get("wheelset") == wh.key and pr.facts.get("venv"):
        res.provisioned = "skipped"
        ph.detail = f"skipped: wheel set {wh.key} already installed"
        return rb.venv_python
    st = push(rb, "wheels", wh.wheels)
    res.wheel_bytes_sent = st.bytes_sent
    rb.call("provision", rb.token, wh.key, stdin={"wheels": sorted(wh.wheels), "force": [wh.board_wheel]},
            timeout=3600)
    res.provisioned = "installed"
    ph.detail = f"{len(wh.wheels)} wheels ({_mb(st.bytes_sent)} sent) installed into {rb.base}/venv"
    return rb.venv_python


class _Phase:
    def __init__(self, name: str, phases: dict[str, float], emit: Event) -> None:
        self.name, self.phases, self.emit, self.detail = name, phases, emit, ""

    def __enter__(self) -> _Phase:
        self.t0 = time.perf_counter()
        self.emit({"phase": self.name, "state": "start"})
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        self.phases[self.name] = time.perf_counter() - self.t0
        self.emit({"phase": self.name, "state": "done" if et is None else "failed", "seconds": self.phases[self.name],
                   "detail": self.detail if et is None else str(ev)})


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} B"


# -- status / rollback / run ---------------------------------------------------------------------------

def _open(target: SSHTarget) -> tuple[SSHConnection, RemoteBoard]:
    conn = SSHConnection(target)
    conn.connect()
    return conn, RemoteBoard(conn).open()


def status(target: SSHTarget) -> dict[str, Any]:
    """What the board holds: current release, releases, history, lock."""
    conn, rb = _open(target)
    with conn:
        st = rb.call("state")
        st["host"] = target.known_hosts_name
        return st


def rollback(target: SSHTarget, to: str | None = None, reason: str = "edgesdk rollback") -> dict[str, Any]:
    """Switch `current` back to the previous release (or `to`), under the board's lock."""
    conn, rb = _open(target)
    with conn:
        rb.lock(who=f"{whoami_host()} rollback")
        try:
            args = [f"--reason={reason}"] + ([f"--to={to}"] if to else [])
            return rb.call("rollback", rb.token, *args)
        finally:
            rb.unlock()


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


def run_remote(target: SSHTarget, inputs: list[str], out_dir: str | Path, release: str | None = None,
               python: str | None = None, timeout: float = 300) -> dict[str, Any]:
    """Run a release on the board with .npy inputs (NAME=FILE or FILE); outputs come back as .npy into
    out_dir/<host>/ (names checked: nothing is written outside it)."""
    import numpy as np

    feeds = []
    for item in inputs:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        p = Path(path)
        if not p.is_file() or p.suffix != ".npy":
            raise InputError(f"--input {item}: expected an existing .npy file")
        if name and not _SAFE_NAME.match(name):
            raise InputError(f"--input {item}: bad tensor name")
        feeds.append((name, p))
    conn, rb = _open(target)
    work = "run-" + secrets.token_hex(6)
    with conn:
        rdir = rb.path("tmp", work)
        with conn.sftp("push inputs") as sftp:
            sftp.mkdir(rdir, 0o755)
            args = []
            for i, (name, p) in enumerate(feeds):
                upload(sftp, p, f"{rdir}/input_{i}.npy", 0)
                args.append(f"--input={name}=input_{i}.npy")
        try:
            r = rb.call("run", release or "current", f"--python={python or rb.venv_python}", f"--timeout={timeout}",
                        f"--workdir={work}", *args, timeout=timeout + 60)
            safe_host = re.sub(r"[^A-Za-z0-9_.-]", "_", target.known_hosts_name)
            dest = Path(out_dir) / safe_host
            dest.mkdir(parents=True, exist_ok=True)
            outputs = {}
            with conn.sftp("fetch outputs") as sftp:
                for fn, tensor in (r["result"].get("outputs") or {}).items():
                    if not _SAFE_NAME.match(fn) or not fn.endswith(".npy") or not isinstance(tensor, str):
                        raise RemoteError(f"the board returned a bad output name {fn!r}: refused")
                    local = dest / (re.sub(r"[^A-Za-z0-9_.-]", "_", tensor)[:80] + ".npy")
                    sftp.get(f"{rdir}/{fn}", str(local))
                    arr = np.load(local, allow_pickle=False)
                    outputs[tensor] = {"file": str(local), "shape": list(arr.shape), "dtype": str(arr.dtype)}
            return {"host": target.known_hosts_name, "release": r["release"], "outputs": outputs,
                    "latency_ms": r["result"].get("latency_ms"), "fallback": r.get("fallback"),
                    "engines_used": _engines_used(r["result"].get("engines_used"))}
        finally:
            try:
                rb.call("cleanup", work, timeout=60)
            except EdgeSDKError:
                pass

"""`flash`: model or bundle -> (convert) -> probe -> provision -> push -> install -> switch + smoke test,
with rollback; plus status, rollback and remote run. One board per call; fleet.py runs many.

Each returns a frozen result with an enum status (edgesdk.deploy.results). Each takes `transport`: how to reach
the board, called with the SSHTarget; SSHConnection by default, FakeTransport (a local dir standing in for the
board, the agent run locally) in tests."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from edgesdk.deploy.results import (  # noqa: F401 - FlashStatus, Outcome: re-exported
    BoardState,
    FlashResult,
    FlashStatus,
    Outcome,
    OutputFile,
    RollbackResult,
    RunResult,
    engines_used,
)
from edgesdk.deploy.transfer import LocalFile, TransferStats, local_tree, push, upload
from edgesdk.deploy.transport import (
    ConnectError,
    HostKeyError,
    LinkStalled,
    SSHConnection,
    SSHTarget,
    Transport,
)
from edgesdk.errors import BundleError, EdgeSDKError, InputError, RemoteError
from edgesdk.paths import home
from edgesdk.runtime.agent import MAX_OUTPUT_BYTES
from edgesdk.runtime.fallback import (
    NO_FALLBACK,
    FallbackRefused,
    Route,
    check_fallback,
    engines_needed,
    resolve_fallback,
)
from edgesdk.runtime.manifest import MANIFEST, SIGNATURE

Event = Callable[[dict[str, Any]], None]
#: how to reach a board: SSHConnection (default) or anything with its interface (FakeTransport)
Connect = Callable[[SSHTarget], Transport]
PHASES = ("convert", "connect", "probe", "provision", "admit", "push", "install", "smoke")


def smoke_timeout(manifest: Any, seconds: float) -> float:
    """The smoke test's time limit: `seconds` per model stage of an app, per shape variant (each stage is checked
    on every reference sample, then the app runs end to end), `seconds` for a model bundle."""
    stages = getattr(manifest, "model_stages", None)
    return seconds * max(1, sum(len(s.bundles) for s in stages)) if stages is not None else seconds


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
    #: install a signed bundle whose release_version is lower than the current release's (`--allow-downgrade`;
    #: recorded in the board's history). Without it the board refuses it (exit 2).
    allow_downgrade: bool = False
    #: when the agent is root and cannot drop the smoke test to nobody (nobody cannot run the board's python),
    #: run it as root anyway (`--allow-root-smoke`; a warning in the result and the board's history). Without it
    #: such a flash fails before anything is switched, with the fix.
    allow_root_smoke: bool = False
    #: let a TorchScript model's code run (confined) when flash converts it (`--trust-model`; edgesdk.frontends)
    trust_model: bool = False
    #: seconds without any answer from the board before the link counts as stalled and the flash fails
    #: (`--stall-timeout`; None: the target's, 60 s)
    stall_timeout: float | None = None


# -- inputs ------------------------------------------------------------------------------------------

def check_bundle(bundle: Path) -> tuple[Any, dict[str, LocalFile]]:
    """The manifest and files of a bundle dir; refuses links, '..', absolute paths and strays."""
    from edgesdk.runtime.app.manifest import load_any
    from edgesdk.runtime.manifest import MANIFEST, SIGNATURE, TUNING

    bundle = Path(bundle)
    if bundle.is_symlink():
        raise InputError(f"{bundle}: a bundle must be a directory, not a link")
    files = local_tree(bundle)
    m = load_any(bundle, verify=True)  # a model bundle, or an app bundle (one release over its stages' bundles)
    # only the signature may sit beside manifest.json unlisted: every file that changes behaviour (tuning.json
    # too) is in the manifest's files, so in the bundle id and under a signature
    optional = {SIGNATURE} & set(files)
    expected = set(m.files) | {MANIFEST} | optional
    if TUNING in files and TUNING not in m.files:
        raise BundleError(f"{bundle}/{TUNING} is not listed in manifest.json's files, so neither the bundle id "
                          "nor a signature covers it: write it with `edgesdk tune` (which lists it) or remove it")
    strays = sorted(set(files) - expected)
    if strays:
        raise BundleError(f"{bundle}: files not listed in the manifest: {strays[:5]}")
    if not m.bundle_id or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", m.bundle_id):
        raise BundleError(f"{bundle}: manifest has no usable bundle_id ({m.bundle_id!r})")
    if TUNING in files:  # `edgesdk tune`'s choice: pushed with the bundle, read by the board's runtime
        from edgesdk.runtime.profiling import load_tuning

        tuning = load_tuning(bundle)
        if tuning and tuning.get("bundle_id") not in (None, m.bundle_id, m.untuned_id()):
            raise BundleError(f"{bundle}/{TUNING} was made for bundle {tuning['bundle_id']}, not "
                              f"{m.untuned_id()}: re-run `edgesdk tune` or remove it")
    return m, files


def shapes_key(input_shapes: dict[str, Any] | None) -> str:
    """A stable text of the input shapes, for cache keys ("" when none)."""
    if not input_shapes:
        return ""
    return json.dumps({str(k): [int(d) for d in v] for k, v in sorted(input_shapes.items())}, separators=(",", ":"))


def _accelerator_missing(accelerator: bool, board_name: str = "the board") -> Callable[[Any], str | None]:
    """For the fallback rule: why an accelerator segment cannot run on a board without its accelerator."""
    return lambda seg: None if accelerator or not seg.accelerator else f"{seg.engine} accelerator absent on {board_name}"


def board_engines(manifest: Any, fallback: str | None = None, accelerator: bool = True) -> set[str]:
    """The engines the board needs for this bundle (edgesdk.runtime.fallback.engines_needed): the segments' engines,
    with an accelerator segment's CPU version instead of its engine when the accelerator is absent and fallback is
    "cpu" (and beside it when fallback is "cpu" and the accelerator is present, so that the fallback can run)."""
    return engines_needed(manifest.segments, fallback, _accelerator_missing(accelerator))


def accelerator_routes(manifest: Any, accelerator: bool, fallback: str | None,
                       board_name: str = "the board") -> tuple[tuple[Route, ...], tuple[str, ...]]:
    """Whether the bundle may be flashed where its accelerator is (or is not) present: the one fallback rule
    (edgesdk.runtime.fallback.resolve_fallback) with "accelerator absent" as the reason a segment cannot run.

    Returns (the segments' routes, the notes to report: one per segment that runs its CPU version). Raises
    AcceleratorMissing (an InputError: exit 2, nothing sent) when an accelerator segment cannot run and no
    `--fallback cpu` was given, or when such a segment carries no CPU version."""
    from edgesdk.toolchains.adapters._accel import AcceleratorMissing

    try:
        routes = resolve_fallback(manifest.segments, fallback, _accelerator_missing(accelerator, board_name))
    except FallbackRefused as exc:
        if exc.kind == NO_FALLBACK:
            names = ", ".join(f"{sid} ({eng})" for sid, eng in exc.segments)
            raise AcceleratorMissing(
                f"{board_name} has no accelerator, but segments {names} of this bundle need it. Connect it (for the "
                "Coral USB Accelerator: plug it into a USB 3 port and install libedgetpu1-std), or flash with "
                "--fallback cpu to run every segment on the CPU (slower; reported as such)") from None
        raise AcceleratorMissing(f"--fallback cpu: segments {', '.join(sid for sid, _ in exc.segments)} carry no CPU "
                                 "version; re-convert the bundle with this edgesdk") from None
    notes = tuple(f"segment {r.segment}: {r.planned} accelerator absent on {board_name}; runs its CPU version "
                  f"({r.engine}, {'host int8 simulation' if r.engine == 'onnxruntime' else 'on the CPU'}) because "
                  "--fallback cpu was given" for r in routes if r.fallback)
    return routes, notes


def resolve_bundle(model_or_bundle: str | Path, board: str, event: Event | None = None,
                   input_shapes: dict[str, Any] | None = None, trust_model: bool = False) -> tuple[Path, float]:
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
    from edgesdk.app.spec import looks_like_app

    if looks_like_app(p):  # app.yaml: every model stage converted, with the samples its `samples:` names
        from edgesdk.app.build import app_cache_key, convert_app

        if input_shapes:
            raise InputError(f"{p}: --input-shape applies to a model; an app's stages give their own input_shape")
        out = home() / "bundles" / f"{board}-app-{p.stem}-{app_cache_key(p)}"
        if not (out / "manifest.json").is_file():
            if event:
                event({"phase": "convert", "state": "start", "detail": f"app {p.name} for {board}"})
            out.parent.mkdir(parents=True, exist_ok=True)
            convert_app(p, board, out=out, force=True,
                        progress=(lambda m: event({"phase": "convert", "state": "note", "detail": m})) if event
                        else None)
        return out, time.perf_counter() - t0

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
        convert(p, board, out=out, force=True, input_shapes=dict(input_shapes) if input_shapes else None,
                trust_model=trust_model)
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
          options: FlashOptions | None = None, event: Event | None = None, *,
          transport: Connect | None = None) -> FlashResult:
    """Flash one board. Bad input raises; board-side outcomes come back in FlashResult.status (an Outcome)."""
    opts = options or FlashOptions()
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    emit = event or (lambda e: None)
    phases: dict[str, float] = {}
    check_fallback(opts.fallback, "--fallback")
    bundle, conv_s = resolve_bundle(model_or_bundle, prof.id, emit, opts.input_shapes, opts.trust_model)
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
    return flash_bundle(bundle, manifest, files, prof, target, opts, emit, phases, note, transport=transport)


def flash_bundle(bundle: Path, manifest: Any, files: dict[str, LocalFile], prof: BoardProfile, target: SSHTarget,
                 opts: FlashOptions, emit: Event, phases: dict[str, float] | None = None,
                 note: str | None = None, *, transport: Connect | None = None) -> FlashResult:
    """The board side of a flash (bundle checked already): connect, probe, lock, provision, push, install,
    switch + smoke test (rolled back by the agent on failure), keep N, unlock. Never raises for what happens on
    the board: the outcome is FlashResult.status."""
    connect = transport or SSHConnection
    if opts.stall_timeout is not None:
        import dataclasses

        target = dataclasses.replace(target, stall_timeout=opts.stall_timeout)
    phases = dict(phases or {})
    fallback = "cpu" if check_fallback(opts.fallback, "--fallback") == "cpu" else None
    res: dict[str, Any] = {"host": target.known_hosts_name, "board": prof.id, "status": Outcome.FAILED,
                           "bundle_id": manifest.bundle_id, "bytes_total": sum(f.size for f in files.values()),
                           "target_note": note, "warnings": [], "notes": []}

    def phase(name: str) -> _Phase:
        res["_phase"] = name
        return _Phase(name, phases, emit)

    def done(status: Outcome, error: str | None = None, exit_code: int = 0, **extra: Any) -> None:
        res.update(status=status, error=error, exit_code=exit_code, **extra)

    conn = connect(target)
    rb = RemoteBoard(conn, fail_points=opts.fail_points)
    try:
        with phase("connect"):
            conn.connect()
            rb.open()
        with phase("probe") as ph:
            # a missing accelerator is judged against the bundle below (AcceleratorMissing names the fix)
            pr: ProbeResult = probe(rb, prof, force=opts.force, accelerator_required=False)
            res.update(emulated=pr.emulated, forced=pr.forced, previous=pr.facts.get("current"))
            res["warnings"] += list(pr.warnings) + [f"forced past: {p}" for p in pr.problems]
            accel = res["accelerator_present"] = accelerator_present(prof, pr.facts)
            # before anything is locked, provisioned or pushed: refused (exit 2) unless --fallback cpu
            _, notes = accelerator_routes(
                manifest, accel, fallback,
                board_name=f"{prof.id} at {target.known_hosts_name}" + (" (EMULATED)" if pr.emulated else ""))
            res["notes"] += list(notes)
            res["fallback"] = fallback
            if notes:
                ph.detail = "; ".join(notes)
            # signatures and versions, checked here first (refused, exit 2, before anything is locked, provisioned
            # or pushed); the board checks again itself (admit, install, activate)
            board_keys = _check_signature(bundle, manifest, pr.facts, opts, res, target.known_hosts_name)
            if opts.break_lock:
                rb.call("lock", "break", secrets.token_hex(12))
            locked = rb.lock(who=f"{whoami_host()} flash {manifest.bundle_id}", ttl=opts.lock_ttl)
            if locked.get("recovered"):
                res["warnings"].append(f"an interrupted switch to {locked['recovered']} was rolled back first")
        python = opts.python
        with phase("provision") as ph:
            if python is None and opts.provision:
                python = _provision(rb, prof, manifest, pr, res, ph, opts, accel, signing=bool(board_keys))
            else:
                python = python or rb.venv_python
                ph.detail = "skipped (--python given)" if opts.python else "skipped (--no-provision)"
        if board_keys:
            with phase("admit") as ph:
                # before anything of the bundle is staged: its manifest and signature, checked by the board (a
                # board with no key has nothing to check here; install and activate check again in any case)
                sig = bundle / SIGNATURE
                adm = rb.call("admit", manifest.bundle_id, rb.token, f"--python={python}", f"--board={prof.id}",
                              *(["--allow-downgrade"] if opts.allow_downgrade else []),
                              *(["--other-board"] if opts.force else []),
                              stdin={"manifest": base64.b64encode((bundle / MANIFEST).read_bytes()).decode(),
                                     "signature": sig.read_text(encoding="utf-8") if sig.is_file() else None},
                              timeout=600)
                ph.detail = f"signature by {adm.get('key')} checked by the board"
        with phase("push") as ph:
            def prog(done: int, total: int) -> None:
                emit({"phase": "push", "state": "bytes", "done": done, "total": total})

            st: TransferStats = push(rb, f"staging/{manifest.bundle_id}", files, prog)
            res.update(bytes_sent=st.bytes_sent, transfer=st.to_dict())
            ph.detail = ("already on the board" if st.already_installed else
                         f"{_mb(st.bytes_sent)} sent, {st.files_skipped} of {len(files)} files already there")
            if st.details:
                res["warnings"] += st.details
        with phase("install"):
            rb.fail_point("before_install")
            rb.call("install", manifest.bundle_id, rb.token, f"--python={python}", timeout=1800)
        with phase("smoke") as ph:
            rb.fail_point("before_activate")
            smoke_notes = []
            if res.get("forced"):
                smoke_notes.append("forced: " + "; ".join(pr.problems))
            if fallback and res["notes"]:
                smoke_notes.append("accelerator absent: segments "
                                   + ", ".join(s.id for s in manifest.segments if s.accelerator)
                                   + " run their CPU version (--fallback cpu)")
            smoke_s = smoke_timeout(manifest, opts.smoke_timeout)
            try:
                act = rb.call("activate", manifest.bundle_id, rb.token, f"--python={python}",
                              f"--timeout={smoke_s}", f"--keep={opts.keep}",
                              f"--note={' '.join(smoke_notes)}", f"--fallback={fallback or 'error'}",
                              *(["--allow-downgrade"] if opts.allow_downgrade else []),
                              *(["--allow-root"] if opts.allow_root_smoke else []),
                              timeout=smoke_s + 120)
            except SmokeFailed as exc:
                d = exc.detail
                done(Outcome.ROLLED_BACK, str(exc), 1, log=d.get("log"), smoke=d.get("smoke"),
                     previous=d.get("current"))
                ph.detail = f"failed: {d.get('reason')}; rolled back to {d.get('current') or 'nothing'}"
                return _result(res, phases)
            if act.get("downgrade"):
                dg = act["downgrade"]
                res["notes"].append(f"downgrade: release_version {dg['to']} replaces {dg['from']} "
                                    "(--allow-downgrade; recorded in the board's history)")
            smoke = act.get("smoke") or {}
            used = engines_used(smoke.get("engines_used"))
            res.update(smoke=act.get("smoke"), latency_ms=smoke.get("latency_ms"), engines_used=used,
                       log=act.get("log"))
            if act.get("ran_as") == "root":
                res["warnings"].append(f"the smoke test ran as ROOT (--allow-root-smoke): "
                                       f"{act.get('ran_as_root_because') or 'no drop to nobody'}")
            cpu = [u["segment"] for u in used or () if u.get("fallback")]
            lat = res["latency_ms"]
            ph.detail = "passed" + (f", one run {lat:.1f} ms" if lat is not None else "") \
                + (" (EMULATED)" if res.get("emulated") else "") \
                + (f"; CPU fallback for {', '.join(cpu)}" if cpu else "")
            done(Outcome.SUCCESS)
    except HostKeyError as exc:
        done(Outcome.REFUSED, str(exc), 1)
    except LinkStalled as exc:
        where = res.get("_phase") or "connect"
        after = ("the board finishes the switch or the rollback by itself: `edgesdk status` shows which"
                 if where == "smoke" else "nothing was switched: the old release is still current; a rerun resumes")
        done(Outcome.FAILED, f"stalled link during {where}: {exc}; {after}", 1)
    except ConnectError as exc:
        done(Outcome.FAILED if rb.base else Outcome.UNREACHABLE, str(exc), 1)
    except (NoSpaceError, BoardLocked, AgentError, RemoteError) as exc:
        done(Outcome.FAILED, str(exc), 1)
    except InputError as exc:
        done(Outcome.REFUSED, str(exc), exc.exit_code)
    except EdgeSDKError as exc:
        done(Outcome.FAILED, str(exc), exc.exit_code)
    finally:
        _release(rb, target, connect)
        conn.close()
    return _result(res, phases)


def _result(res: dict[str, Any], phases: dict[str, float]) -> FlashResult:
    return FlashResult(phases=dict(phases), **{k: v for k, v in res.items() if not k.startswith("_")})


def _release(rb: RemoteBoard, target: SSHTarget, connect: Connect = SSHConnection) -> None:
    """Free the board's lock; over a fresh connection if ours was cut or stalled, so that a flash from another host
    (or another address of this one) is not locked out until the lock's TTL. The fresh connection gets at most the
    stall timeout to answer (a link that is still stalled is not waited on for long)."""
    token = rb.token
    if not token or rb.unlock():
        return
    import dataclasses

    quick = dataclasses.replace(target, connect_timeout=min(target.connect_timeout, target.stall_timeout))
    try:
        with connect(quick) as c2:
            RemoteBoard(c2, base=rb.base, python=rb.python, token=token).unlock()
    except EdgeSDKError:
        pass  # a rerun from this host takes it over; others wait for the lock's TTL
    finally:
        rb.forget()


def _check_signature(bundle: Path, manifest: Any, facts: dict[str, Any], opts: FlashOptions, res: dict[str, Any],
                     host: str) -> set[str]:
    """The host's early check against what the probe said (the board's trusted keys, its current release_version):
    a board with keys gets only bundles signed by one of them, unchanged since; a lower release_version than the
    current one only with --allow-downgrade. InputError (refused, exit 2) otherwise; warnings for a board with no
    key. The board's trusted fingerprints."""
    from edgesdk.signing import signature_of, verify_bundle

    keys = {k for k in facts.get("trust") or () if isinstance(k, str)}
    sig = signature_of(bundle)
    if keys:
        try:
            fp = verify_bundle(bundle, keys)
        except BundleError as exc:
            raise InputError(f"{host} refuses it: {exc}") from None
        res["notes"].append(f"signed by {fp}, release_version {manifest.release_version}")
    elif sig is not None:
        res["warnings"].append(f"{host} trusts no signing key: the signature by {sig['key']} was not checked "
                               "(enroll it: edgesdk keys enroll --host ... KEY.pub)")
    else:
        res["warnings"].append(f"{host} trusts no signing key and accepted an unsigned bundle; enroll one to refuse "
                               "unsigned bundles (edgesdk keys generate; edgesdk keys enroll --host ... KEY.pub)")
    cur_v, new_v = facts.get("current_version"), manifest.release_version
    high = facts.get("highest_version")  # the highest the board ever activated: a rollback does not lower it
    floor = max([v for v in (cur_v, high) if isinstance(v, int)], default=None)
    if floor is not None and new_v is not None and new_v < floor and not opts.allow_downgrade:
        why = (f"the current release {facts.get('current')} (release_version {cur_v})" if cur_v == floor else
               f"release_version {floor}, the highest {host} has accepted (current: {facts.get('current')}, "
               f"release_version {cur_v}, rolled back to)")
        raise InputError(f"{host} refuses it: release_version {new_v} is older than {why}; flash --allow-downgrade "
                         "to install it anyway (recorded in the board's history), or `edgesdk rollback` to a "
                         "release still there")
    return keys


def _provision(rb: RemoteBoard, prof: BoardProfile, manifest: Any, pr: ProbeResult, res: dict[str, Any],
               ph: _Phase, opts: FlashOptions, accel: bool = True, signing: bool = False) -> str:
    from edgesdk.deploy.wheelhouse import SIGNING_PACKAGES, build_wheelhouse

    engines = board_engines(manifest, opts.fallback, accel)
    py = ".".join(pr.facts.get("python", prof.os.python).split(".")[:2]) if res.get("forced") else None
    wh = opts.wheelhouse
    if wh is not None and signing and not set(SIGNING_PACKAGES) <= set(wh.requirements):
        wh = None  # a board with a trust store checks signatures with cryptography: it needs its own wheel set
    wh = wh or build_wheelhouse(prof, engines, python=py, signing=signing)
    if pr.facts.get("wheelset") == wh.key and pr.facts.get("venv"):
        res["provisioned"] = "skipped"
        ph.detail = f"skipped: wheel set {wh.key} already installed"
        return rb.venv_python
    st = push(rb, "wheels", wh.wheels)
    res["wheel_bytes_sent"] = st.bytes_sent
    rb.call("provision", rb.token, wh.key, stdin={"wheels": sorted(wh.wheels), "force": [wh.board_wheel]},
            timeout=3600)
    res["provisioned"] = "installed"
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

def _open(target: SSHTarget, transport: Connect | None = None) -> tuple[Transport, RemoteBoard]:
    conn = (transport or SSHConnection)(target)
    conn.connect()
    return conn, RemoteBoard(conn).open()


def status(target: SSHTarget, *, transport: Connect | None = None) -> BoardState:
    """What the board holds: current release, releases, state.json (history, fallback per release), lock."""
    conn, rb = _open(target, transport)
    with conn:
        return BoardState.from_agent(target.known_hosts_name, rb.call("state"))


def rollback(target: SSHTarget, to: str | None = None, reason: str = "edgesdk rollback", *,
             transport: Connect | None = None) -> RollbackResult:
    """Switch `current` back to the previous release (or `to`), under the board's lock."""
    conn, rb = _open(target, transport)
    with conn:
        rb.lock(who=f"{whoami_host()} rollback")
        try:
            args = [f"--reason={reason}"] + ([f"--to={to}"] if to else [])
            r = rb.call("rollback", rb.token, *args)
        finally:
            rb.unlock()
    return RollbackResult(target.known_hosts_name, r.get("from"), r["current"], Outcome(r.get("status", "rolled-back")))


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


# MAX_OUTPUT_BYTES (the agent's, one value): the most bytes one output of `edgesdk run` may have, whatever the board
# says (the agent bounds each by the size its manifest declares: shape x dtype + the .npy header)


#: images `edgesdk run` decodes on the host and pushes as .npy (H x W x 3 uint8 BGR: a bundle's preprocess and an
#: app's image input take them so)
RUN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _image_as_npy(src: Path, dst: Path) -> Path:
    """An image decoded here (OpenCV, BGR uint8 as the board's runtime takes images) into a .npy: the board's
    runtime is numpy-only and does not decode PNG/JPEG itself."""
    import numpy as np

    try:
        import cv2
    except ImportError as exc:
        raise InputError(f"--input {src}: decoding images needs OpenCV on this machine (pip install "
                         "opencv-python-headless), or give a .npy") from exc
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"--input {src}: not an image OpenCV can read")
    np.save(dst, img, allow_pickle=False)
    return dst


def run_remote(target: SSHTarget, inputs: list[str], out_dir: str | Path, release: str | None = None,
               python: str | None = None, timeout: float = 300, *, allow_root: bool = False,
               transport: Connect | None = None) -> RunResult:
    """Run a release on the board with .npy or image inputs (NAME=FILE or FILE; images decoded here); outputs
    (an app's: in the answer, as JSON) come back as .npy into
    out_dir/<host>/ (names checked: nothing is written outside it). The board runs
    `python -m edgesdk.runtime run` from its venv, as nobody (allow_root: as root when nobody cannot run the
    python; else that is an error), as the release was flashed (--fallback cpu is recorded).

    The outputs are fetched from the copies the agent made in a dir only it can write (never from the work dir the
    model's user owns): each a regular file (lstat, no links), of the size and sha256 the agent reported, at most
    what the manifest declares for it; a file that is not a readable .npy is a RemoteError."""

    feeds = []
    for item in inputs:
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        p = Path(path)
        if not p.is_file() or p.suffix.lower() not in (".npy", *RUN_IMAGE_SUFFIXES):
            raise InputError(f"--input {item}: expected an existing .npy file (or an image: "
                             f"{', '.join(RUN_IMAGE_SUFFIXES)})")
        if name and not _SAFE_NAME.match(name):
            raise InputError(f"--input {item}: bad tensor name")
        feeds.append((name, p))
    with tempfile.TemporaryDirectory(prefix="edgesdk-run-") as td:
        # images are decoded here, before anything connects (a bad one is refused first)
        feeds = [(n, _image_as_npy(p, Path(td) / f"input_{i}.npy") if p.suffix.lower() in RUN_IMAGE_SUFFIXES else p)
                 for i, (n, p) in enumerate(feeds)]
        return _run_remote(target, feeds, out_dir, release, python, timeout, allow_root, transport)


def _run_remote(target: SSHTarget, feeds: list[tuple[str, Path]], out_dir: str | Path, release: str | None,
                python: str | None, timeout: float, allow_root: bool, transport: Connect | None) -> RunResult:
    conn, rb = _open(target, transport)
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
                        f"--workdir={work}", *args, *(["--allow-root"] if allow_root else []), timeout=timeout + 60)
            result = r.get("result") or {}
            safe_host = re.sub(r"[^A-Za-z0-9_.-]", "_", target.known_hosts_name)
            dest = Path(out_dir) / safe_host
            dest.mkdir(parents=True, exist_ok=True)
            checked = r.get("outputs")
            if not isinstance(checked, dict) or r.get("out_dir") != f"tmp/{work}.out":
                raise RemoteError(f"{target.known_hosts_name}: the board's agent did not check the run's outputs "
                                  "(an older agent?): refused to fetch them")
            outputs = {}
            with conn.sftp("fetch outputs") as sftp:
                for fn, tensor in (result.get("files") or {}).items():
                    if not _SAFE_NAME.match(fn) or not fn.endswith(".npy") or not isinstance(tensor, str):
                        raise RemoteError(f"the board returned a bad output name {fn!r}: refused")
                    meta = checked.get(fn)
                    if not isinstance(meta, dict) or meta.get("tensor") != tensor:
                        raise RemoteError(f"{target.known_hosts_name}: output {fn} was not checked by the agent")
                    local = dest / (re.sub(r"[^A-Za-z0-9_.-]", "_", tensor)[:80] + ".npy")
                    _fetch_output(sftp, f"{rb.base}/tmp/{work}.out/{fn}", local, meta, target.known_hosts_name)
                    outputs[tensor] = _load_output(local, fn, target.known_hosts_name)
            frames = result.get("frames") if result.get("kind") == "app" else None
            return RunResult(target.known_hosts_name, r["release"], outputs, result.get("latency_ms"),
                             r.get("fallback"), engines_used(result.get("engines_used")),
                             uid=result.get("uid"), ran_as=result.get("ran_as"),
                             frames=tuple(frames) if isinstance(frames, list) else None)
        finally:
            try:
                rb.call("cleanup", work, timeout=60)
            except EdgeSDKError:
                pass


def _fetch_output(sftp: Any, remote: str, local: Path, meta: dict[str, Any], host: str) -> None:
    """One output file: lstat'ed a regular file (no link) of the size the agent reported (at most
    MAX_OUTPUT_BYTES), read at most that many bytes, its sha256 checked; written to a temp name, then renamed."""
    import stat as st_

    size, digest = meta.get("size"), meta.get("sha256")
    if not isinstance(size, int) or not 0 <= size <= MAX_OUTPUT_BYTES or not isinstance(digest, str):
        raise RemoteError(f"{host}: output {remote}: bad size or sha256 from the board ({size!r}): refused")
    attrs = sftp.lstat(remote)
    if not st_.S_ISREG(attrs.st_mode or 0):
        raise RemoteError(f"{host}: output {remote} is not a regular file: refused")
    if attrs.st_size != size:
        raise RemoteError(f"{host}: output {remote} is {attrs.st_size} bytes, the agent reported {size}: refused")
    h = hashlib.sha256()
    tmp = local.with_name(local.name + ".part")
    try:
        with sftp.open(remote, "rb") as src, open(tmp, "wb") as out:
            left = size
            while left > 0:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
                h.update(chunk)
                out.write(chunk)
            if left or src.read(1):
                raise RemoteError(f"{host}: output {remote} changed size while it was fetched: refused")
        if h.hexdigest() != digest:
            raise RemoteError(f"{host}: output {remote}: sha256 differs from what the agent reported: refused")
        tmp.replace(local)
    finally:
        tmp.unlink(missing_ok=True)


def _load_output(local: Path, fn: str, host: str) -> OutputFile:
    import numpy as np

    try:
        arr = np.load(local, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        local.unlink(missing_ok=True)
        raise RemoteError(f"{host}: output {fn} is not a readable .npy file ({exc}): removed") from None
    return OutputFile(str(local), arr.shape, str(arr.dtype))

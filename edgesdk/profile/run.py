"""`edgesdk profile`: run the on-board profiler (edgesdk.runtime.profiling) here or on a board, then add the
expectations.

Both ways run the board CLI's `profile` verb (`python -m edgesdk.runtime profile BUNDLE --result-line ...`): here
in a fresh Python, on a board through the deploy agent's `profile` verb, with the board's installed runtime (its
venv), as nobody, under the agent's rlimits and time limit (the release is flashed first when the board does not
hold it). Nothing is copied to the board to profile."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.boards import BoardProfile, get_board
from edgesdk.errors import InputError, RemoteError
from edgesdk.profile.expect import expectations
from edgesdk.profile.report import SCHEMA, ProfileReport
from edgesdk.runtime.fallback import check_fallback

LOCAL = "local"
#: what the board CLI prints before its result (`python -m edgesdk.runtime profile ... --result-line`)
RESULT_MARK = "EDGESDK-RESULT "
Event = Callable[[dict[str, Any]], None]
#: the runtime's errors that are the user's input (exit code 2)
INPUT_ERRORS = ("InputError", "BundleError", "InputMismatch")


@dataclass(frozen=True)
class ProfileOptions:
    runs: int = 50
    warmup: int = 5
    threads: int = 0
    per_layer: bool = False
    layer_runs: int = 10
    frames: int | None = None  # frames through the streaming Pipeline; None: min(max(runs, 10), 100)
    engines: tuple[str, ...] = ()
    #: "error" or "cpu"; None: as the release was flashed (`flash --fallback cpu` is recorded on the board),
    #: "error" for --host local
    fallback: str | None = None
    use_tuning: bool = True
    timeout: float = 1800.0
    #: an interpreter on the board with edgesdk.runtime (default: the board's venv from provisioning)
    python: str | None = None
    #: the board's agent (root) runs the profile as nobody; when nobody cannot run `python`, run it as root instead
    #: of failing (`--allow-root`; also the smoke test's, when the release is flashed first)
    allow_root: bool = False
    #: flash options when the release must be flashed first
    flash: Any = None
    extra_args: tuple[str, ...] = field(default=())
    #: fixed shapes for a model's dynamic inputs when it is converted first (`--input-shape NAME=D0,D1,...`)
    input_shapes: dict[str, tuple[int, ...]] | None = None
    #: the private key (`--sign KEY`) that signs what is flashed to the board first (a board with a trusted key
    #: refuses an unsigned bundle): a signed copy of the bundle (signed_copy), so the bundle itself is unchanged
    sign_key: str | Path | None = None

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.threads < 0 or self.layer_runs < 1:
            raise InputError(f"--runs must be >= 1, --warmup and --threads >= 0 (got runs={self.runs}, "
                             f"warmup={self.warmup}, threads={self.threads})")
        if self.fallback is not None:
            check_fallback(self.fallback, "--fallback")  # the one fallback rule (edgesdk.runtime.fallback)

    def argv(self) -> list[str]:
        """The options of the board CLI's `profile` verb (also those of the agent's `profile` verb)."""
        a = [f"--runs={self.runs}", f"--warmup={self.warmup}", f"--threads={self.threads}",
             f"--layer-runs={self.layer_runs}"]
        if self.fallback is not None:
            a.append(f"--fallback={check_fallback(self.fallback)}")
        if self.per_layer:
            a.append("--per-layer")
        if self.frames is not None:
            a.append(f"--frames={self.frames}")
        for e in self.engines:
            a.append(f"--engine={e}")
        if not self.use_tuning:
            a.append("--no-tuning")
        return a + list(self.extra_args)


def _parse_result(text: str, where: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                return json.loads(line[len(RESULT_MARK):])
            except ValueError as exc:
                raise RemoteError(f"{where}: the profiler printed a broken result: {exc}") from exc
    raise RemoteError(f"{where}: the profiler printed no result:\n" + "\n".join(text.splitlines()[-15:]))


def _check(res: dict[str, Any], where: str) -> dict[str, Any]:
    if res.get("ok") is False:
        cls = InputError if res.get("error") in INPUT_ERRORS else RemoteError
        raise cls(f"{where}: {res.get('error')}: {res.get('message')}")
    return res


# -- local --------------------------------------------------------------------------------------------------
def measure_local(bundle: str | Path, opts: ProfileOptions) -> dict[str, Any]:
    """Run the profiler in a fresh Python here (a fresh process: its peak RSS is the model's)."""
    argv = [opts.python or sys.executable, "-m", "edgesdk.runtime", "profile", str(bundle), "--result-line",
            *opts.argv()]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=opts.timeout, check=False, env=env)
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"local profile of {bundle} took more than {opts.timeout:.0f} s") from exc
    return _check(_parse_result(p.stdout + "\n" + p.stderr, "local"), "local")


def local_matches_board(board: BoardProfile) -> bool:
    """Is this machine the board (edgesdk run on the Pi itself)? Device-tree model and architecture."""
    if platform.machine() != board.cpu.arch:
        return False
    for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            model = Path(path).read_bytes().rstrip(b"\0").decode("utf-8", "replace")
        except OSError:
            continue
        return any(m in model for m in board.detect.device_tree_model)
    return False


# -- remote --------------------------------------------------------------------------------------------------
def measure_remote(target: Any, release: str, opts: ProfileOptions, transport: Any = None) -> dict[str, Any]:
    """Profile an installed release with the board's own runtime: the agent's `profile` verb runs
    `python -m edgesdk.runtime profile` from the board's venv (or opts.python), as nobody, under its rlimits
    and opts.timeout. transport: SSHConnection (default) or a stand-in with its interface (FakeTransport)."""
    from edgesdk.deploy.board import AgentError, AgentInputError, RemoteBoard
    from edgesdk.deploy.transport import SSHConnection

    if opts.extra_args:
        raise InputError("ProfileOptions.extra_args apply to --host local only: the board's agent takes the "
                         "profiler's own options")
    where = target.known_hosts_name
    with (transport or SSHConnection)(target) as conn:
        rb = RemoteBoard(conn).open()
        st = rb.call("state")
        if release not in (st.get("releases") or []):
            raise InputError(f"{where}: release {release} is not installed (installed: {st.get('releases')})")
        python = opts.python or rb.venv_python
        try:
            r = rb.call("profile", release, f"--python={python}", f"--timeout={opts.timeout}", *opts.argv(),
                        *(["--allow-root"] if opts.allow_root else []),
                        timeout=opts.timeout + 120)
        except (AgentError, AgentInputError) as exc:
            detail = getattr(exc, "detail", None) or {}
            res = detail.get("result")
            if isinstance(res, dict) and res.get("ok") is False:
                _check(res, where)  # the profiler's own error, raised as --host local raises it
            log = "\n".join(str(detail.get("log") or "").splitlines()[-15:])
            msg = f"{exc}" + (f"\n{log}" if log else "")
            if "invalid choice" in log or "required: --input" in log:
                msg += "\n  the board's edgesdk-runtime predates `profile`: flash a bundle with this edgesdk first"
            raise (InputError if isinstance(exc, AgentInputError) else RemoteError)(msg) from None
        return _check(r["result"], where)


def remote_state(target: Any) -> Any:
    """The board's BoardState (edgesdk.deploy.flash.status)."""
    from edgesdk.deploy.flash import status

    return status(target)


def emulator_target(board: BoardProfile) -> tuple[Any, str]:
    from edgesdk.deploy.flash import emulator_target as _et

    return _et(board)


def signed_copy(bundle: Path, key: str | Path) -> Path:
    """The bundle signed by `key`: itself when it already is (its signature checks out), else a signed copy under
    <edgesdk home>/bundles (made once per bundle and key, reused while its signature still matches), so that a
    bundle profiled or tuned again is the same release on the board, not a new one each time."""
    import hashlib
    import secrets
    import shutil

    from edgesdk.deploy.flash import check_bundle
    from edgesdk.errors import BundleError
    from edgesdk.paths import home
    from edgesdk.runtime.manifest import SIGNATURE
    from edgesdk.signing import load_private_key, sign_bundle, verify_bundle

    sk = load_private_key(key)
    from cryptography.hazmat.primitives import serialization

    from edgesdk.runtime import trust

    fp = trust.fingerprint(sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    manifest, _ = check_bundle(bundle)

    def signed_by_key(b: Path) -> bool:
        try:
            return (b / SIGNATURE).is_file() and verify_bundle(b, {fp}) == fp
        except BundleError:
            return False

    if signed_by_key(bundle):
        return bundle
    raw = json.dumps({"files": manifest.files, "id": manifest.untuned_id()}, sort_keys=True).encode()
    out = home() / "bundles" / f"signed-{manifest.untuned_id()}-{hashlib.sha256(raw).hexdigest()[:12]}-{fp[8:20]}"
    if (out / "manifest.json").is_file() and signed_by_key(out):
        try:
            check_bundle(out)  # every file against the signed manifest
            return out
        except (BundleError, InputError):
            shutil.rmtree(out, ignore_errors=True)  # a damaged cached copy: made again
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}")
    shutil.copytree(bundle, tmp, ignore=shutil.ignore_patterns(SIGNATURE))
    try:
        sign_bundle(tmp, key)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_release(bundle: Path, board: BoardProfile, target: Any, opts: ProfileOptions,
                   event: Event | None = None) -> tuple[str, dict[str, Any] | None]:
    """The bundle's release id on the board; flashed first when the board does not hold it (signed first with
    opts.sign_key, when given: see signed_copy)."""
    from edgesdk.deploy.flash import FlashOptions, check_bundle, flash

    own = bundle
    if opts.sign_key is not None:
        bundle = signed_copy(bundle, opts.sign_key)
    manifest, _ = check_bundle(bundle)
    st = remote_state(target)
    if manifest.bundle_id in st.releases:
        return manifest.bundle_id, None
    if opts.sign_key is not None and bundle != own:
        # our own signed copy, flashed again (the board dropped it): signed anew, so that its release_version is
        # not below what the board has accepted since
        from edgesdk.signing import sign_bundle

        sign_bundle(bundle, opts.sign_key)
        manifest, _ = check_bundle(bundle)
    fo = opts.flash or FlashOptions(python=opts.python, allow_root_smoke=opts.allow_root)
    res = flash(bundle, board, target, fo, event)
    if not res.ok:
        raise RemoteError(f"{target.known_hosts_name}: flashing {manifest.bundle_id} before profiling failed "
                          f"({res.status}): {res.error}")
    return manifest.bundle_id, res.to_dict()


# -- the command --------------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _model_path(model: str | Path | None, bundle: Path | None) -> Path | None:
    if model is not None and Path(model).suffix == ".onnx" and Path(model).is_file():
        return Path(model)
    if bundle is not None:
        try:
            sm = json.loads((bundle / "manifest.json").read_text()).get("source_model") or {}
        except (OSError, ValueError):
            return None
        p = sm.get("path")
        if p and Path(p).is_file():
            return Path(p)
    return None


def _vendor_estimates(bundle: Path | None) -> list[dict[str, Any]]:
    """The vendor compilers' own latency estimates the bundle's segments carry (vela's: `vendor_estimate_ms`)."""
    if bundle is None:
        return []
    try:
        segs = json.loads((bundle / "manifest.json").read_text()).get("segments") or []
    except (OSError, ValueError):
        return []
    return [{"segment": s.get("id"), "engine": s.get("engine"), "ms": float(o["vendor_estimate_ms"]),
             "by": o.get("vendor_estimate_by", "")}
            for s in segs if isinstance(o := s.get("options") or {}, dict) and "vendor_estimate_ms" in o]


def build_report(measure: Mapping[str, Any], board: BoardProfile, target: Mapping[str, Any],
                 model_path: Path | None = None, model_name: str | None = None,
                 vendor_estimates: Sequence[Mapping[str, Any]] = ()) -> ProfileReport:
    from edgesdk import __version__

    emulated = bool(measure.get("emulated")) or bool(target.get("emulated"))
    matches = bool(target.get("matches_board"))
    if measure.get("kind") == "app":  # the roofline and published figures are per model: an app has its stages
        exp, flags = {"compared": False, "roofline": None, "reference": None, "related_references": []}, []
        if emulated:
            flags.append({"code": "emulated", "severity": "info",
                          "message": "running on an emulated board: numbers are marked emulated"})
        data = {"schema": SCHEMA, "created_at": _now(), "edgesdk_version": __version__,
                "target": dict(target, emulated=emulated), **{k: v for k, v in measure.items() if k != "schema"},
                "emulated": emulated, "expectations": exp, "flags": flags}
        return ProfileReport(data)
    exp, flags = expectations(board, measure, emulated=emulated, matches_board=matches, model_path=model_path,
                              model_name=model_name, vendor_estimates=vendor_estimates)
    data = {"schema": SCHEMA, "created_at": _now(), "edgesdk_version": __version__,
            "target": dict(target, emulated=emulated), **{k: v for k, v in measure.items() if k != "schema"},
            "emulated": emulated, "expectations": exp, "flags": flags}
    return ProfileReport(data)


def profile(model_or_bundle: str | Path | None, board: str | BoardProfile, host: str | Any | None = None,
            options: ProfileOptions | None = None, *, release: str | None = None, model: str | Path | None = None,
            model_name: str | None = None, event: Event | None = None) -> ProfileReport:
    """Profile MODEL (converted first), BUNDLE, or an installed RELEASE on `host`: "local", an SSHTarget, or
    None (the board's local emulated instance)."""
    opts = options or ProfileOptions()
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    bundle: Path | None = None
    if model_or_bundle is not None:
        from edgesdk.deploy.flash import resolve_bundle

        bundle, _ = resolve_bundle(model_or_bundle, prof.id, event, opts.input_shapes)
        if model is None and Path(model_or_bundle).is_file():
            model = model_or_bundle
    elif release is None:
        raise InputError("give a MODEL, a BUNDLE or --release ID")
    mpath = _model_path(model, bundle)
    if host == LOCAL:
        if bundle is None:
            raise InputError("--release needs a board (--host USER@HOST); with --host local give the bundle")
        measure = measure_local(bundle, opts)
        target = {"host": LOCAL, "board": prof.id, "board_name": prof.name, "matches_board": local_matches_board(prof),
                  "release": measure["bundle"]["id"], "flash": None}
        return build_report(measure, prof, target, mpath, model_name, _vendor_estimates(bundle))
    note = None
    if host is None:
        target_obj, note = emulator_target(prof)
    elif isinstance(host, str):
        from edgesdk.deploy.transport import SSHTarget

        target_obj = SSHTarget.parse(host)
    else:
        target_obj = host
    flashed = None
    if bundle is not None:
        release, flashed = ensure_release(bundle, prof, target_obj, opts, event)
    assert release is not None
    measure = measure_remote(target_obj, release, opts)
    target = {"host": target_obj.known_hosts_name, "board": prof.id, "board_name": prof.name,
              "matches_board": measure.get("emulated") is False, "release": release, "flash": flashed,
              "note": note}
    return build_report(measure, prof, target, mpath, model_name, _vendor_estimates(bundle))


__all__ = ["LOCAL", "ProfileOptions", "build_report", "ensure_release", "local_matches_board", "measure_local",
           "measure_remote", "profile", "signed_copy"]

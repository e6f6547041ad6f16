"""Sweeps (`edgesdk profile --sweep threads=1,2,4 engine=ncnn,mnn precision=fp32,int8`) and `edgesdk tune`.

A bundle has one engine per segment, so each (engine, precision) is its own bundle, converted from the model
(edgesdk.conversion.convert, cached by the model's hash); threads are a runtime option. Each combination is
profiled on the target; the combinations whose outputs pass the bundle's accuracy tolerance (the smoke test's
comparison against the reference outputs) are ranked by p50 latency, and the fastest is recommended.
`tune` records that choice: a tuning.json (engines and their options, read by the on-board profiler and the
Session) listed in the bundle's manifest, so a new bundle id that covers it, flashed as a new release.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgesdk.boards import BoardProfile, get_board
from edgesdk.errors import EdgeSDKError, InputError
from edgesdk.paths import home
from edgesdk.profile.report import ProfileReport
from edgesdk.profile.run import LOCAL, Event, ProfileOptions, profile
from edgesdk.runtime.manifest import TUNING

SWEEP_KEYS = ("threads", "engine", "precision")
TUNING_FILE = TUNING  # the one name (edgesdk.runtime.manifest.TUNING)
TUNING_SCHEMA = "edgesdk.tuning/1"


def parse_sweep(spec: str | Sequence[str]) -> dict[str, list[str]]:
    """"threads=1,2,4 engine=ncnn,mnn" (or a list of such words) -> {"threads": ["1","2","4"], ...}."""
    words = spec.split() if isinstance(spec, str) else [w for s in spec for w in s.split()]
    out: dict[str, list[str]] = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not v:
            raise InputError(f"--sweep: expected KEY=V1,V2,... (keys: {', '.join(SWEEP_KEYS)}), got {w!r}")
        if k not in SWEEP_KEYS:
            raise InputError(f"--sweep: unknown key {k!r} (keys: {', '.join(SWEEP_KEYS)})")
        vals = [x for x in v.split(",") if x]
        if k == "threads" and not all(x.isdigit() and int(x) > 0 for x in vals):
            raise InputError(f"--sweep threads: expected positive integers, got {v!r}")
        if k == "precision" and not set(vals) <= {"fp32", "fp16", "int8"}:
            raise InputError(f"--sweep precision: fp32, fp16 or int8, got {v!r}")
        out[k] = list(dict.fromkeys(out.get(k, []) + vals))
    if not out:
        raise InputError("--sweep: nothing to sweep")
    return out


@dataclass
class SweepRow:
    engine: str | None
    precision: str | None
    threads: int | None
    status: str  # ok | failed-accuracy | skipped | error
    bundle: str | None = None
    bundle_id: str | None = None
    p50_ms: float | None = None
    mean_ms: float | None = None
    p90_ms: float | None = None
    fps: float | None = None
    engines_used: list[str] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        return f"engine={self.engine or '-'} precision={self.precision or '-'} threads={self.threads or '-'}"

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "precision": self.precision, "threads": self.threads, "status": self.status,
                "bundle": self.bundle, "bundle_id": self.bundle_id, "p50_ms": self.p50_ms, "mean_ms": self.mean_ms,
                "p90_ms": self.p90_ms, "fps": self.fps, "engines_used": self.engines_used,
                "accuracy": self.accuracy, "reason": self.reason}


@dataclass
class SweepResult:
    board: str
    host: str
    rows: list[SweepRow]
    best: SweepRow | None
    reports: dict[str, ProfileReport] = field(default_factory=dict, repr=False)
    emulated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "edgesdk.sweep/1", "board": self.board, "host": self.host, "emulated": self.emulated,
                "rows": [r.to_dict() for r in self.rows], "best": self.best.to_dict() if self.best else None,
                "rule": "fastest p50 among the combinations whose outputs pass the bundle's accuracy tolerance"}

    def format(self) -> str:
        out = [f"sweep on {self.board} ({self.host})" + ("  [EMULATED]" if self.emulated else "")]
        for r in self.rows:
            mark = "=>" if r is self.best else "  "
            t = f"p50 {r.p50_ms:9.3f} ms" if r.p50_ms is not None else " " * 16
            out.append(f" {mark} {r.label:<44} {t}  {r.status}" + (f": {r.reason}" if r.reason else ""))
        out.append(f"recommended: {self.best.label} ({self.best.bundle_id})" if self.best
                   else "recommended: nothing passed the accuracy tolerance")
        return "\n".join(out)


def _bundle_for(model: Path, board: BoardProfile, engine: str | None, precision: str | None,
                calib: str | Path | None, event: Event | None) -> Path:
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    out = home() / "bundles" / f"sweep-{board.id}-{model.stem}-{digest}-{engine or 'auto'}-{precision or 'fp32'}"
    if (out / "manifest.json").is_file():
        return out
    from edgesdk.conversion import convert

    if event:
        event({"phase": "convert", "state": "start", "detail": f"{model.name} {engine} {precision}"})
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(model, board.id, out=out, engine=engine, precision=precision or "fp32", calib=calib, force=True)
    return out


def sweep(model: str | Path, board: str | BoardProfile, host: Any, spec: str | Sequence[str] | dict[str, list[str]],
          options: ProfileOptions | None = None, *, calib: str | Path | None = None,
          event: Event | None = None) -> SweepResult:
    """Profile every combination of the sweep on `host` ("local", an SSHTarget, or None: the emulated board)."""
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    axes = spec if isinstance(spec, dict) else parse_sweep(spec)
    opts = replace(options or ProfileOptions(), per_layer=False)
    src = Path(model)
    if src.is_dir():  # a bundle: only threads can vary, unless its source model is on this host
        if set(axes) - {"threads"}:
            sm = json.loads((src / "manifest.json").read_text()).get("source_model") or {}
            if sm.get("path") and Path(sm["path"]).is_file():
                src = Path(sm["path"])
            else:
                raise InputError(f"{model}: sweeping engine/precision needs the model (the bundle's source model "
                                 "is not on this host)")
    elif not src.is_file():
        raise InputError(f"{model}: no such model file or bundle directory")
    engines = axes.get("engine") or [None]
    precs = axes.get("precision") or [None]
    threads = [int(t) for t in axes.get("threads") or []] or [None]
    rows: list[SweepRow] = []
    reports: dict[str, ProfileReport] = {}
    emulated = False
    for eng, prec in itertools.product(engines, precs):
        try:
            bundle = src if src.is_dir() else _bundle_for(src, prof, eng, prec, calib, event)
        except EdgeSDKError as exc:
            for th in threads:
                rows.append(SweepRow(eng, prec, th, "skipped", reason=f"conversion: {str(exc).splitlines()[0]}"))
            continue
        for th in threads:
            row = SweepRow(eng, prec, th, "error", bundle=str(bundle))
            try:
                rep = profile(bundle, prof, host, replace(opts, threads=th or 0), event=event)
            except EdgeSDKError as exc:
                row.reason = str(exc).splitlines()[0]
                rows.append(row)
                continue
            d = rep.data
            emulated = emulated or rep.emulated
            used = [f"{u['segment']}={u['engine']}" for u in d["engines_used"]]
            row.bundle_id, row.engines_used = d["bundle"]["id"], used
            row.p50_ms, row.mean_ms, row.p90_ms = d["latency"]["p50_ms"], d["latency"]["mean_ms"], d["latency"]["p90_ms"]
            row.fps = (d.get("throughput") or {}).get("fps")
            row.accuracy = d.get("accuracy")
            acc = d.get("accuracy") or {}
            if not acc.get("checked"):
                row.status, row.reason = "failed-accuracy", f"not checked: {acc.get('reason')}"
            elif not acc.get("passed"):
                row.status, row.reason = "failed-accuracy", "outputs beyond the bundle's tolerance"
            else:
                row.status = "ok"
            if eng and not any(u.endswith("=" + eng) for u in used):
                row.reason = (row.reason + "; " if row.reason else "") + f"converter put no segment on {eng}: {used}"
            reports[row.label] = rep
            rows.append(row)
    ok = [r for r in rows if r.status == "ok" and r.p50_ms is not None]
    best = min(ok, key=lambda r: r.p50_ms) if ok else None  # type: ignore[arg-type, return-value]
    host_name = host if isinstance(host, str) else (host.known_hosts_name if host is not None else f"emulated {prof.id}")
    return SweepResult(prof.id, str(host_name), rows, best, reports, emulated)


# -- tune -------------------------------------------------------------------------------------------------
def tuning_document(row: SweepRow, manifest: Any, sweep_result: SweepResult | None = None) -> dict[str, Any]:
    names = sorted({s.engine for s in manifest.segments} | {s.cpu_version.engine for s in manifest.segments
                                                              if s.cpu_version})
    eng = [{"name": n, "options": {"threads": row.threads} if row.threads else {}} for n in names]
    return {"schema": TUNING_SCHEMA, "bundle_id": manifest.bundle_id, "engines": eng, "threads": row.threads,
            "chosen": row.to_dict(), "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "rule": "fastest p50 among the sweep's combinations that pass the bundle's accuracy tolerance",
            "sweep": [r.to_dict() for r in sweep_result.rows] if sweep_result else None}


def tune(result: SweepResult, board: str | BoardProfile, host: Any, *, python: str | None = None,
         event: Event | None = None, allow_root: bool = False, sign_key: str | Path | None = None) -> dict[str, Any]:
    """Write the sweep's recommendation into its release (tuning.json) and make that release current.
    allow_root: the smoke test of that flash may run as root (FlashOptions.allow_root_smoke). sign_key (`--sign
    KEY`): the tuned bundle is signed before it is flashed (a board with a trusted key refuses it unsigned)."""
    from edgesdk.deploy.flash import FlashOptions, check_bundle, flash

    if result.best is None or result.best.bundle is None:
        raise InputError("nothing to tune: no combination of the sweep passed the accuracy tolerance")
    prof = board if isinstance(board, BoardProfile) else get_board(board)
    bundle = Path(result.best.bundle)
    manifest, _ = check_bundle(bundle)
    from edgesdk.bundle import add_tuning

    doc = tuning_document(result.best, manifest, result)
    doc["bundle_id"] = manifest.untuned_id()  # the bundle measured; the tuned one's id covers tuning.json too
    text = json.dumps(doc, indent=1)
    if host == LOCAL:
        m2 = add_tuning(bundle, text)  # listed in the manifest: a new bundle id, covered by a signature
        return {"host": LOCAL, "release": m2.bundle_id, "tuning": str(bundle / TUNING_FILE), "document": doc}
    # the board gets a new release (the same files, hard-linked there, plus tuning.json), flashed like any other:
    # nothing is written into an installed release, and the bundle id and a signature cover the tuning
    import shutil

    tuned = home() / "bundles" / f"tuned-{manifest.untuned_id()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not (tuned / "manifest.json").is_file():
        tmpdir = tuned.with_name(f".{tuned.name}.{secrets.token_hex(4)}")
        shutil.copytree(bundle, tmpdir, ignore=shutil.ignore_patterns("manifest.sig"))
        add_tuning(tmpdir, text)
        shutil.rmtree(tuned, ignore_errors=True)
        tmpdir.rename(tuned)
    bundle = tuned
    if sign_key is not None:
        from edgesdk.signing import sign_bundle

        sign_bundle(bundle, sign_key)  # our own tuned copy, signed now: its release_version the newest
    manifest, _ = check_bundle(bundle)
    if host is None:
        from edgesdk.deploy.flash import emulator_target

        target, _ = emulator_target(prof)
    elif isinstance(host, str):
        from edgesdk.deploy.transport import SSHTarget

        target = SSHTarget.parse(host)
    else:
        target = host
    res = flash(bundle, prof, target, FlashOptions(python=python, allow_root_smoke=allow_root), event)  # only tuning.json + manifest are sent
    if not res.ok:
        raise EdgeSDKError(f"{target.known_hosts_name}: could not make {manifest.bundle_id} current: {res.error}")
    return {"host": target.known_hosts_name, "release": manifest.bundle_id, "bundle": str(bundle),
            "tuning": f"releases/{manifest.bundle_id}/{TUNING_FILE}", "document": doc, "flash": res.to_dict()}


__all__ = ["SweepResult", "SweepRow", "parse_sweep", "sweep", "tune", "tuning_document"]

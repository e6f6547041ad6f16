#!/usr/bin/env python3
"""Fault soak of `edgesdk flash`: N rounds against a local sshd board (Debian's OpenSSH on 127.0.0.1, as the tests
start it), each a flash of the next release of two alternating small real bundles with one random fault, then a
clean rerun, and after each an invariant check of the board's disk.

Faults (one per round, seeded; drawn from a shuffled deck of all kinds, so each comes equally often):
  none            no fault
  cut             the loopback proxy cuts the connection at a random byte (any phase: bootstrap to activate)
  stall           the proxy stops forwarding at a random byte without closing (--stall-timeout 1.5 s)
  corrupt-once    a byte of the uploaded file is flipped on the board once (caught, resent)
  corrupt-always  ... after every upload (the flash fails)
  corrupt-staged  a staged byte is overwritten between the per-file check and install
  kill-activate   SIGKILL of the board's agent while its smoke test runs (the next flash recovers the switch)
  disk-full       the board dir (a tmpfs) is filled: before the flash, or during the upload
  bad-smoke       a bundle whose reference output is wrong (the smoke test fails: rolled back)

The board trusts a signing key (enrolled before the first flash) and every release is signed with it, so the
board's admit, the signature checks at install and activate and the version floor run under every fault.

Invariant (after the faulty flash, once the board's agent is done, and after the clean rerun):
  - exactly one complete, verified release is current: `current` -> releases/<id>, every file re-hashed against
    its manifest, no link, no stray; every other kept release verifies too;
  - the history agrees with the disk: state.json's current and its last activated/rolled-back entry name the
    release `current` points to; no `pending` except right after a killed agent;
  - every release activated since the key was enrolled was signed by it (its history entry's signed_by);
  - after the clean rerun: it succeeded, the new release is current, no staging/*, no lock, no current.tmp.

Exit 0 when no invariant was violated, 1 otherwise, 2 on bad input (not root, no sshd). Needs root (the sshd fixture
logs in as root; the tmpfs needs mount).

Examples:
  sudo .venv/bin/python scripts/soak_flash.py                      (200 rounds, seed 0)
  .venv/bin/python scripts/soak_flash.py --rounds 20 --seed 17 --json
  .venv/bin/python scripts/soak_flash.py --rounds 50 --faults cut,stall,kill-activate
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

FAULTS = ("none", "cut", "stall", "corrupt-once", "corrupt-always", "corrupt-staged", "kill-activate", "disk-full",
          "bad-smoke")
#: what the faulty flash may end as
EXPECTED = {"none": {"success"}, "cut": {"success", "failed", "unreachable"},
            "stall": {"success", "failed", "unreachable"}, "corrupt-once": {"success"},
            "corrupt-always": {"failed"}, "corrupt-staged": {"failed"}, "kill-activate": {"failed"},
            "disk-full": {"failed"}, "bad-smoke": {"rolled-back"}}
OPTIONAL_FILES = {"manifest.json", "manifest.sig"}
PAD = 1 << 20  # the blob that makes each release a real push
STALL_TIMEOUT = 1.5
TMPFS = "48m"


def sha256(p: Path) -> str:
    from edgesdk.runtime.manifest import sha256_file  # the one host-side sha256 helper

    return sha256_file(p)


# -- the invariant -------------------------------------------------------------------------------------------

def verify_release(base: Path, rid: str) -> list[str]:
    """Problems of releases/<rid>: its manifest, each file's sha256, no link, no stray."""
    d = base / "releases" / rid
    try:
        m = json.loads((d / "manifest.json").read_text())
        files = m["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"release {rid}: no readable manifest ({exc})"]
    out = []
    if m.get("bundle_id") != rid:
        out.append(f"release {rid}: its manifest says bundle {m.get('bundle_id')}")
    for rel, digest in files.items():
        p = d / rel
        if p.is_symlink() or not p.is_file():
            out.append(f"release {rid}: {rel} missing or not a regular file")
        elif sha256(p) != digest:
            out.append(f"release {rid}: {rel} does not match its sha256")
    for p in d.rglob("*"):
        rel = p.relative_to(d).as_posix()
        if p.is_symlink():
            out.append(f"release {rid}: link {rel}")
        elif p.is_file() and rel not in files and rel not in OPTIONAL_FILES:
            out.append(f"release {rid}: stray file {rel}")
    return out


def board_current(base: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(base / "current").rstrip("/"))
    except OSError:
        return None


def check_board(base: Path, *, clean: bool, pending_ok: bool = False, key: str | None = None) -> list[str]:
    """The invariant's violations on the board dir `base` (empty: holds). clean: after a clean rerun (no staging,
    lock or pending left); pending_ok: a `pending` switch is allowed (an agent was killed mid-activate); key: the
    fingerprint every release activated since its enrollment must be signed by."""
    out = []
    link = base / "current"
    cur = board_current(base)
    if cur is None:
        return ["no current release" + (" (a dangling or missing link)" if link.exists() or link.is_symlink() else "")]
    target = os.readlink(link)
    if target.rstrip("/") != f"releases/{cur}" or not (base / "releases" / cur).is_dir():
        out.append(f"current -> {target}: not an installed release")
    else:
        out += verify_release(base, cur)
    for rid in sorted(os.listdir(base / "releases")):
        if rid != cur and not rid.startswith("."):
            out += verify_release(base, rid)
    try:
        st = json.loads((base / "state.json").read_text())
        assert isinstance(st, dict)
    except (OSError, ValueError, AssertionError) as exc:
        return [*out, f"state.json unreadable: {exc}"]
    pend = st.get("pending")
    if pend:
        if not pending_ok:
            out.append(f"a pending switch is left: {pend}")
        elif cur not in (pend.get("release"), pend.get("previous")):
            out.append(f"current {cur} is neither side of the pending switch {pend}")
    else:
        if st.get("current") != cur:
            out.append(f"state.json says current {st.get('current')}, the disk {cur}")
        last = next((e for e in reversed(st.get("history") or []) if isinstance(e, dict)
                     and e.get("event") in ("activated", "rolled-back")), None)
        after = None if last is None else last.get("release") if last["event"] == "activated" else last.get("to")
        if after != cur:
            out.append(f"the history's last switch ({last and last.get('event')} -> {after}) is not current {cur}")
    if key is not None:
        hist = [e for e in st.get("history") or [] if isinstance(e, dict)]
        since = next((i for i, e in enumerate(hist) if e.get("event") == "key-enrolled" and e.get("key") == key), None)
        if since is None and len(hist) < 200:
            out.append(f"the board's history has no enrollment of {key}")
        for e in hist[(since or 0):]:
            if e.get("event") == "activated" and e.get("signed_by") != key:
                out.append(f"release {e.get('release')} was activated signed by {e.get('signed_by')}, not {key}")
        if not (base / "releases" / cur / "manifest.sig").is_file():
            out.append(f"the current release {cur} has no manifest.sig")
    if clean:
        staged = sorted(os.listdir(base / "staging")) if (base / "staging").is_dir() else []
        if staged:
            out.append(f"staging left behind: {staged}")
        for name in ("lock", "current.tmp"):
            if (base / name).exists() or (base / name).is_symlink():
                out.append(f"{name} left behind")
    return out


def agent_done(base: Path, wait: float = 60.0) -> bool:
    """Wait until no agent is activating on the board (the flock `activate` holds on DIR/activate.guard)."""
    guard = base / "activate.guard"
    deadline = time.monotonic() + wait
    while True:
        if not guard.exists():
            return True
        fd = os.open(guard, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
        finally:
            os.close(fd)
        time.sleep(0.05)


# -- bundles --------------------------------------------------------------------------------------------------

def release_of(base_bundle: Path, out: Path, seed: int) -> Path:
    """A new release of a base bundle: the same model and reference, a fresh 1 MB blob (so a new bundle id and
    a real push; the unchanged files are hard-linked on the board from the installed release)."""
    import numpy as np

    from edgesdk.runtime.manifest import MANIFEST, Manifest, canonical_json, sha256_file

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base_bundle, out)
    (out / "blob.bin").write_bytes(np.random.default_rng(seed).bytes(PAD))
    m = json.loads((out / MANIFEST).read_text())
    m["files"]["blob.bin"] = sha256_file(out / "blob.bin")
    m.pop("bundle_id", None)
    m["bundle_id"] = Manifest.from_dict(m).content_id()
    (out / MANIFEST).write_bytes(canonical_json(m))
    return out


def bundle_id(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


# -- faults ---------------------------------------------------------------------------------------------------

def _flip(path: Path, at: int = 1000) -> bool:
    if not path.is_file() or path.stat().st_size <= at:
        return False
    with open(path, "r+b") as fh:
        fh.seek(at)
        c = fh.read(1)
        fh.seek(at)
        fh.write(bytes([c[0] ^ 0xFF]))
    return True


def _fill(base: Path, leave: int) -> Path:
    """Fill the board's tmpfs, leaving `leave` bytes free."""
    filler = base / "filler"
    st = os.statvfs(base)
    n = st.f_bavail * st.f_frsize - leave
    with open(filler, "ab") as fh:
        if n > 0:
            os.posix_fallocate(fh.fileno(), fh.tell(), n)
    return filler


def _agent_pids(base: Path, verb: str) -> list[int]:
    want = f"{base}/agent.py".encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if want in argv and verb.encode() in argv:
            pids.append(int(d))
    return pids


def _kill_when_switched(base: Path, release: str, info: dict) -> threading.Thread:
    """SIGKILL the agent's `activate` once it has switched to `release` and its smoke test runs."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pend = json.loads((base / "state.json").read_text()).get("pending") or {}
            except (OSError, ValueError):
                pend = {}
            if pend.get("release") == release and board_current(base) == release:
                for pid in _agent_pids(base, "activate"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        info["killed"] = pid
                return
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


# -- the soak -------------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, rounds: int, seed: int, faults: tuple[str, ...], log=None) -> None:
        self.rounds, self.seed, self.faults = rounds, seed, faults
        self.rng = random.Random(seed)
        self.log = log or (lambda s: None)
        self.count: collections.Counter = collections.Counter()
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.violations: list[dict] = []
        self.stall_detect: list[float] = []
        self.notes: collections.Counter = collections.Counter()
        self.key: str | None = None
        self.signed = 0

    def violation(self, rnd: int, fault: str, what: str) -> None:
        self.violations.append({"round": rnd, "fault": fault, "violation": what})
        self.log(f"  VIOLATION round {rnd} ({fault}): {what}")

    def run(self) -> dict:
        import sshd_fixture
        from netproxy import LinkProxy
        from sshd_fixture import local_profile, make_test_bundle, public_dir, start_sshd

        import edgesdk.deploy.probe as probe_mod
        from edgesdk.deploy.flash import FlashOptions
        from edgesdk.deploy.flash import flash as _flash
        from edgesdk.deploy.trust import enroll_key
        from edgesdk.signing import generate_keys, sign_bundle

        probe_mod.MIN_FREE_BYTES = 0  # the board dir is a small tmpfs: the agent's own space check decides
        py, root_ok = sshd_fixture.board_python() if hasattr(sshd_fixture, "board_python") else (sys.executable, True)
        work = public_dir("edgesdk-soak-")
        board = start_sshd("soak")
        t_start = time.monotonic()
        try:
            board.mount_tmpfs(TMPFS)
            base = board.base
            prof = local_profile()
            bases = [make_test_bundle(work / "base-a", seed=0), make_test_bundle(work / "base-b", seed=5)]
            bad = make_test_bundle(work / "base-bad", seed=9, wrong_reference=True)
            slow = work / "slow-python"  # the smoke test starts 1 s late: time to kill the agent mid-activate
            slow.write_text(f'#!/bin/sh\ncase " $* " in *" smoke "*) sleep 1;; esac\nexec "{py}" "$@"\n')
            slow.chmod(0o755)

            def opts(**kw):
                kw.setdefault("python", py)
                kw.setdefault("smoke_timeout", 60)
                kw.setdefault("stall_timeout", 20)
                if "allow_root_smoke" in FlashOptions.__dataclass_fields__:
                    kw.setdefault("allow_root_smoke", root_ok)
                return FlashOptions(**kw)

            # every flash goes through one loopback proxy (armed to cut or stall in its round, healthy otherwise):
            # the board keeps one address, so a rerun takes over the lock a faulty flash left
            proxy = LinkProxy(board.port)
            line = board.known_hosts.read_text().split(" ", 1)[1]
            kh = work / "known_hosts_proxy"
            kh.write_text(f"[127.0.0.1]:{proxy.port} {line}")
            via = board.target(port=proxy.port, known_hosts=kh, connect_timeout=3.0)
            # the board trusts one key from the start: every release below is signed with it
            kp = generate_keys(work / "keys", "soak")
            enroll_key(board.target(), kp.public)
            self.key = kp.fingerprint

            def flash(bundle, *a, **kw):
                if not (bundle / "manifest.sig").is_file():
                    sign_bundle(bundle, kp.private)  # once per release: its rerun is the same signed release
                    self.signed += 1
                return _flash(bundle, *a, **kw)

            first = release_of(bases[1], work / "r-init", seed=10_000 + self.seed)
            r = flash(first, prof, via, opts())
            if r.status != "success":
                raise RuntimeError(f"the first flash failed: {r.error}")
            deck: list[str] = []
            for i in range(1, self.rounds + 1):
                if not deck:  # every kind equally often, in a random order (20 rounds cover all nine)
                    deck = list(self.faults)
                    self.rng.shuffle(deck)
                fault = deck.pop()
                self.count[fault] += 1
                target = release_of(bases[i % 2], work / f"r{i % 4}", seed=self.seed * 100_000 + i)
                sign_bundle(target, kp.private)  # before its id is taken: signing gives it its release id
                self.signed += 1
                t0 = time.monotonic()
                status, note = self.one_round(i, fault, target, bad, base, prof, slow, opts, proxy, via, flash,
                                              work)
                self.outcomes[fault][status] += 1
                self.log(f"round {i:4d} {fault:15s} -> {status:12s} {time.monotonic() - t0:5.1f}s {note}")
        finally:
            board.stop()
            shutil.rmtree(work, ignore_errors=True)
        secs = time.monotonic() - t_start
        return {"rounds": self.rounds, "seed": self.seed, "faults": dict(sorted(self.count.items())),
                "outcomes": {k: dict(v) for k, v in sorted(self.outcomes.items())},
                "violations": len(self.violations), "violation_list": self.violations,
                "stall_detected_s_max": round(max(self.stall_detect), 2) if self.stall_detect else None,
                "stall_timeout_s": STALL_TIMEOUT, "notes": dict(self.notes), "seconds": round(secs, 1),
                "signing": {"key": self.key, "releases_signed": self.signed}}

    def one_round(self, i, fault, target, bad, base, prof, slow, opts, proxy, via, flash, work):
        rng = self.rng
        tid = bundle_id(target)
        before = board_current(base)
        note = ""
        filler = None
        fps: dict = {}
        kw: dict = {}
        bundle = target
        info: dict = {}
        stalls = proxy.stalls
        if fault in ("cut", "stall"):
            at = rng.randrange(0, PAD + (256 << 10))
            if fault == "cut":
                proxy.cut_after = proxy.sent + at
                note = f"at byte {at:,}"
            else:
                proxy.mode = rng.choice(("hold", "drop"))
                proxy.stall_after = proxy.sent + at
                kw["stall_timeout"] = STALL_TIMEOUT
                note = f"at byte {at:,} ({proxy.mode})"
        elif fault.startswith("corrupt-"):
            flips: list = []
            if fault == "corrupt-staged":
                fps["before_install"] = lambda rb: flips.append(_flip(base / "staging" / tid / "blob.bin", 0))
            else:
                def corrupt(rb, area):
                    if area.startswith("staging/") and (fault == "corrupt-always" or not flips):
                        flips.append(_flip(base / area / "blob.bin.part"))
                fps["after_upload"] = corrupt
        elif fault == "kill-activate":
            kw["python"] = str(slow)
            fps["before_activate"] = lambda rb: _kill_when_switched(base, tid, info)
        elif fault == "disk-full":
            if rng.random() < 0.5:
                filler = _fill(base, 200 << 10)
                note = "before the flash"
            else:
                holder: dict = {}

                def fill(rb, rel):
                    if "f" not in holder:
                        holder["f"] = _fill(base, 256 << 10)
                fps["before_upload"] = fill
                note = "during the upload"
                info["holder"] = holder
        elif fault == "bad-smoke":
            bundle = release_of(bad, work / "r-bad", seed=self.seed * 100_000 + i + 50_000)
        try:
            r = flash(bundle, prof, via, opts(fail_points=fps or None, **kw))
            t_end = time.monotonic()
        finally:
            proxy.cut_after = None
            proxy.heal()
        filler = filler or info.get("holder", {}).get("f")
        if filler is not None:
            filler.unlink(missing_ok=True)
        status = str(r.status)
        if status not in EXPECTED[fault]:
            self.violation(i, fault, f"the faulty flash ended {status}, expected {sorted(EXPECTED[fault])}: {r.error}")
        if fault == "stall" and proxy.stalls > stalls and status != "success":
            took = t_end - proxy.stalled_at
            self.stall_detect.append(took)
            if took > STALL_TIMEOUT + 3:
                self.violation(i, fault, f"the stall was detected after {took:.1f}s (timeout {STALL_TIMEOUT}s)")
        if fault == "kill-activate":
            note = f"agent pid {info['killed']} killed" if "killed" in info else "agent not killed (finished first)"
            self.notes["kill-activate: killed" if "killed" in info else "kill-activate: missed"] += 1
        if fault == "bad-smoke" and board_current(base) != before:
            self.violation(i, fault, f"a failed smoke test left {board_current(base)} current, not {before}")
        if status in ("failed", "unreachable") and fault not in ("cut", "stall", "kill-activate") \
                and board_current(base) != before:
            self.violation(i, fault, f"a failed flash switched current from {before} to {board_current(base)}")
        if not agent_done(base):
            self.violation(i, fault, "an agent still activates 60 s after the flash ended")
        for v in check_board(base, clean=False, pending_ok=fault == "kill-activate", key=self.key):
            self.violation(i, fault, f"after the fault: {v}")
        if status == "success" and fault != "bad-smoke":  # the flash itself was clean: it must leave nothing
            for v in check_board(base, clean=True, key=self.key):
                self.violation(i, fault, f"after a successful flash: {v}")
            if board_current(base) != tid:
                self.violation(i, fault, f"the flash succeeded but current is {board_current(base)}, not {tid}")
            return status, note
        # the clean rerun: the same release over the healed link
        r2 = flash(target, prof, via, opts())
        if r2.status != "success":
            self.violation(i, fault, f"the clean rerun ended {r2.status}: {r2.error}")
        elif board_current(base) != tid:
            self.violation(i, fault, f"the clean rerun succeeded but current is {board_current(base)}, not {tid}")
        if fault == "kill-activate" and "killed" in info and not any("interrupted switch" in w for w in r2.warnings):
            self.violation(i, fault, "the rerun after a killed activation did not recover the pending switch")
        for v in check_board(base, clean=True, key=self.key):
            self.violation(i, fault, f"after the clean rerun: {v}")
        if fault in ("cut", "stall") and r2.transfer and r2.transfer.get("resumed_bytes"):
            self.notes[f"{fault}: rerun resumed"] += 1
        return status, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="soak_flash.py", description=__doc__.split("\n\n")[0],
                                 epilog="Examples:\n  .venv/bin/python scripts/soak_flash.py --rounds 20 --seed 17 "
                                        "--json\n  .venv/bin/python scripts/soak_flash.py --faults cut,stall",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200, help="rounds (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of: {', '.join(FAULTS)}")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout (progress on stderr)")
    ap.add_argument("--quiet", action="store_true", help="no per-round lines")
    a = ap.parse_args(argv)
    faults = tuple(f.strip() for f in a.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(FAULTS))
    if a.rounds < 1:
        print(f"soak_flash.py: --rounds must be >= 1, got {a.rounds}", file=sys.stderr)
        return 2
    if not faults or unknown:
        print(f"soak_flash.py: --faults: unknown {unknown or 'none given'}; known: {', '.join(FAULTS)}",
              file=sys.stderr)
        return 2
    from sshd_fixture import sshd_skip_reason

    reason = sshd_skip_reason() or (None if shutil.which("mount") else "mount is missing (the board dir is a tmpfs)")
    if reason:
        print(f"soak_flash.py: cannot run: {reason}", file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: the sshd is stopped and the tmpfs unmounted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr if a.json else sys.stdout, flush=True))
    res = Soak(a.rounds, a.seed, faults, log).run()
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{res['rounds']} rounds (seed {res['seed']}) in {res['seconds']} s; faults: "
              + ", ".join(f"{k} {v}" for k, v in res["faults"].items()))
        for k, v in res["outcomes"].items():
            print(f"  {k:15s} " + ", ".join(f"{s} {n}" for s, n in sorted(v.items())))
        if res["stall_detected_s_max"] is not None:
            print(f"  stalls detected within {res['stall_detected_s_max']} s (timeout {STALL_TIMEOUT} s)")
        print(f"invariant violations: {res['violations']}")
        for v in res["violation_list"]:
            print(f"  round {v['round']} ({v['fault']}): {v['violation']}")
    return 1 if res["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())

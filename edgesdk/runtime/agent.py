"""The board-side deploy agent: a stdlib-only script with a fixed set of verbs, run as `python3 agent.py`.

It is part of the board package (edgesdk-runtime): `python -m edgesdk.runtime.agent ...` runs it from the
board's venv, and `edgesdk.deploy.agent` is its compatibility name on the host. Because it must work before
that venv exists (it is what provisions it), it stays one file with no imports outside the standard library:
the host pushes this file into the board's edgesdk dir and calls it over SSH with an argv built
from fixed verbs and quoted arguments; anything larger than a word (file lists, probe queries)
comes as JSON on stdin. Every verb prints one JSON object on stdout. It never runs a shell.

Whatever runs a bundle (activate's smoke test, run, profile) is the board package's own entry point in the
venv, `PY -I -B -m edgesdk.runtime smoke|run|profile BUNDLE --result-line ...` (run_bundle): as nobody when the
agent is root (a drop that cannot happen is a failure naming the fix, unless --allow-root: then it runs as root and
says so), with rlimits, in its own session, killed at its time limit. No program text is sent. `run`'s outputs are
copied out of nobody's work dir (O_NOFOLLOW, regular files, at most the manifest's declared size) into a dir only
the agent can write. The board dir is private to the board user (DIR_MODES).

    python3 agent.py --base DIR probe                      stdin: {"dev_nodes": [...], "tools": [...]}
    python3 agent.py --base DIR lock acquire|release|break TOKEN [--ttl S] [--who TEXT]
    python3 agent.py --base DIR need AREA TOKEN            stdin: {"files": {rel: {"sha256", "size"}}}
    python3 agent.py --base DIR commit AREA TOKEN          stdin: same; .part -> file after sha256
    python3 agent.py --base DIR admit BUNDLE_ID TOKEN [--python PY] [--allow-downgrade] [--board ID] [--other-board]
                                                           stdin: {"manifest": b64, "signature": text|null}
    python3 agent.py --base DIR install BUNDLE_ID TOKEN [--python PY]   staging/ID -> releases/ID (verified)
    python3 agent.py --base DIR trust add|remove|list [TOKEN] [FINGERPRINT] [--force]   stdin (add): {"pem": ...}
    python3 agent.py --base DIR activate BUNDLE_ID TOKEN --python PY --timeout S --keep N [--note T] [--fallback cpu]
                                                           [--allow-root]
    python3 agent.py --base DIR rollback TOKEN [--to ID] [--reason TEXT] [--python PY]
    python3 agent.py --base DIR provision TOKEN WHEELSET  stdin: {"wheels": [...], "force": [...]}
    python3 agent.py --base DIR run RELEASE_ID --python PY --timeout S --workdir REL [--input NAME=FILE]... [--allow-root]
    python3 agent.py --base DIR profile RELEASE_ID --python PY --timeout S [--runs N ...] [--fallback cpu] [--allow-root]
    python3 agent.py --base DIR state

Once the board trusts a key (trust/), every use of a release (activate, rollback, run, profile, install of one
already there) checks its manifest.sig again with the verifier (check_release), `need` stages only a manifest
that `admit` checked, and no release_version below the highest ever activated is admitted without
--allow-downgrade (docs/deploy.md, "Signed bundles").

AREA is "staging/<bundle-id>" or "wheels". Layout under DIR (see docs/deploy.md):
venv/ wheels/ releases/<id>/ current -> releases/<id> state.json lock staging/ logs/ tmp/
Exit codes: 0 ok, 1 failed, 2 bad input, 3 no space, 4 locked, 5 smoke test failed (rolled back).
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

#: 2: the trust-aware agent (signature re-checked whenever a release is used, the highest accepted release_version,
#: admitted manifests, trust/agent_min_version). The host refuses to replace a newer agent (edgesdk.deploy.board).
AGENT_VERSION = 2
#: <board dir>/trust/agent_min_version: the lowest AGENT_VERSION that may drive a board with a trust store (an
#: older agent, pushed by an older edgesdk, would not check signatures): written by `trust add`, checked by main()
MIN_VERSION_FILE = "agent_min_version"
EXIT_FAILED, EXIT_INPUT, EXIT_NOSPACE, EXIT_LOCKED, EXIT_SMOKE = 1, 2, 3, 4, 5
LOCK_TTL = 1800.0
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_FILES = 10000
#: optional files beside manifest.json that its files table does not list: only the signature (tuning.json and
#: every other file that changes behaviour are listed, so the bundle id and the signature cover them)
OPTIONAL_FILES = ("manifest.sig",)
#: the trust store: <board dir>/trust/<32 hex>.pub, one Ed25519 public key (PEM) each (edgesdk.runtime.trust)
TRUST_DIR, SIGNATURE = "trust", "manifest.sig"
#: DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 raw key bytes follow
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
FP_RE = re.compile(r"^(?:ed25519:)?([0-9a-f]{32})$")
#: a fallback setting is passed on as one word; the board runtime decides what it means (edgesdk.runtime.fallback)
FALLBACK_RE = re.compile(r"^[a-z]{1,16}$")
SMOKE_LOG_LINES = 60
#: the board runtime's entry point (`python -m edgesdk.runtime VERB ...`, in the board's venv) and what it prints
RUNTIME, RUNTIME_VERBS, RESULT_MARK = "edgesdk.runtime", ("smoke", "run", "profile"), "EDGESDK-RESULT "
#: modes of the board dir, private to the board user: the base and tmp/ only traversable by others (nobody reaches
#: the venv and its own work dirs), releases/ 0750 with nobody's group when the agent is root (release_group:
#: the smoke test reads the release as nobody), else 0700; state.json, logs 0600; release files 0440/0400
DIR_MODES = {"": 0o711, "releases": 0o700, "staging": 0o700, "logs": 0o700, "tmp": 0o711, "wheels": 0o700}
FILE_MODE, RELEASE_FILE_MODE = 0o600, 0o400
#: an output file may exceed its tensor's bytes by this much (the .npy header)
NPY_SLACK = 4096
#: the cap for an output whose size the manifest does not fix (a dynamic dimension)
MAX_OUTPUT_BYTES = 1 << 30


def nobody_ids() -> tuple | None:
    """(uid, gid) of nobody, or None when there is no such user (or no pwd module)."""
    try:
        import pwd

        pw = pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        return None
    return pw.pw_uid, pw.pw_gid


def release_group() -> int | None:
    """The group releases are readable by: nobody's, when the agent is root (the smoke test runs as nobody with
    only that group); None otherwise (releases are the board user's alone)."""
    if os.getuid() != 0:
        return None
    ids = nobody_ids()
    return ids[1] if ids else None


class Fail(Exception):
    def __init__(self, msg: str, code: int = EXIT_FAILED, **extra: object) -> None:
        super().__init__(msg)
        self.code = code
        self.extra = extra


# -- helpers ---------------------------------------------------------------------------------------

def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def check_id(value: str, what: str) -> str:
    if not ID_RE.match(value or "") or value in (".", ".."):
        raise Fail(f"bad {what} {value!r}", EXIT_INPUT)
    return value


def check_rel(rel: object) -> str:
    """A relative path inside an area: no absolute paths, '..', backslashes or control characters."""
    if not isinstance(rel, str) or not rel or len(rel) > 512:
        raise Fail(f"bad file name {rel!r}", EXIT_INPUT)
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        raise Fail(f"file name {rel!r} must stay inside the bundle", EXIT_INPUT)
    if any(ord(c) < 32 or ord(c) == 127 for c in rel) or rel.endswith(".part"):
        raise Fail(f"file name {rel!r} has control characters or a reserved suffix", EXIT_INPUT)
    return rel


def read_stdin() -> dict:
    raw = sys.stdin.buffer.read(64 << 20)
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Fail(f"stdin is not JSON: {exc}", EXIT_INPUT) from None
    if not isinstance(data, dict):
        raise Fail("stdin must be a JSON object", EXIT_INPUT)
    return data


def file_list(data: dict) -> dict:
    files = data.get("files")
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        raise Fail("stdin needs {'files': {name: {'sha256', 'size'}}}", EXIT_INPUT)
    res = {}
    for rel, meta in files.items():
        check_rel(rel)
        if not isinstance(meta, dict) or not re.match(r"^[0-9a-f]{64}$", str(meta.get("sha256", ""))) \
                or not isinstance(meta.get("size"), int) or meta["size"] < 0:
            raise Fail(f"bad entry for {rel!r}", EXIT_INPUT)
        res[rel] = meta
    return res


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str, data: dict) -> None:
    """Write to a temp file (mode 0600: state is the board user's), fsync, rename into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def free_bytes(path: str) -> int:
    p = path
    while not os.path.exists(p):
        p = os.path.dirname(p) or "/"
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


class Board:
    def __init__(self, base: str) -> None:
        if not os.path.isabs(base):
            raise Fail(f"--base must be absolute, got {base!r}", EXIT_INPUT)
        self.base = os.path.normpath(base)

    def p(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    def area(self, area: str) -> str:
        if area == "wheels":
            return self.p("wheels")
        head, _, bid = area.partition("/")
        if head != "staging":
            raise Fail(f"unknown area {area!r}", EXIT_INPUT)
        return self.p("staging", check_id(bid, "bundle id"))

    def ensure(self) -> None:
        """The board dir's layout, private to the board user (DIR_MODES): others may only traverse the base
        (to the venv), releases (as nobody's group, for the smoke test) and tmp (to nobody's work dirs)."""
        group = release_group()
        for d, mode in DIR_MODES.items():
            path = self.p(d) if d else self.base
            made = not os.path.isdir(path)
            os.makedirs(path, mode=0o700, exist_ok=True)
            if not d and not made:
                continue  # a base that was there (the host made it, a --remote-dir shared dir) keeps its owner's mode
            if d == "releases" and group is not None:
                mode = 0o750
                if os.stat(path).st_gid != group:
                    os.chown(path, -1, group)
            if stat.S_IMODE(os.stat(path).st_mode) != mode:
                os.chmod(path, mode)

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> dict:
        """state.json; what is malformed in it (not an object, a history that is not a list of objects, a
        fallback table that is not an object) is dropped here, so that no verb trips over it."""
        try:
            with open(self.p("state.json"), encoding="utf-8") as fh:
                st = json.load(fh)
        except (OSError, ValueError):
            st = None
        if not isinstance(st, dict):
            return {"history": []}
        hist = st.get("history")
        st["history"] = [e for e in hist if isinstance(e, dict)] if isinstance(hist, list) else []
        if "fallback" in st and not isinstance(st["fallback"], dict):
            st["fallback"] = {}
        if "pending" in st and not isinstance(st["pending"], (dict, type(None))):
            st["pending"] = None
        return st

    def save_state(self, st: dict) -> None:
        st["history"] = st.get("history", [])[-200:]
        write_json_atomic(self.p("state.json"), st)

    def current(self) -> str | None:
        try:
            target = os.readlink(self.p("current"))
        except OSError:
            return None
        return os.path.basename(target.rstrip("/"))

    def releases(self) -> list:
        try:
            return sorted(d for d in os.listdir(self.p("releases")) if not d.startswith("."))
        except OSError:
            return []

    def switch(self, bid: str) -> None:
        """Point `current` at releases/<bid> by one atomic rename of a fresh symlink."""
        tmp = self.p("current.tmp")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(os.path.join("releases", bid), tmp)
        os.replace(tmp, self.p("current"))
        fsync_dir(self.base)

    # -- lock --------------------------------------------------------------------------------------
    def read_lock(self) -> dict | None:
        """The lock record. One that cannot be read (empty, cut short, not JSON) is held by an unknown holder
        since the file's mtime: stale only after the TTL, never at once (a lock written half-way is not free)."""
        path = self.p("lock")
        try:
            with open(path, encoding="utf-8") as fh:
                lk = json.load(fh)
            if isinstance(lk, dict):
                try:
                    lk["since"] = float(lk.get("since", 0))
                except (TypeError, ValueError):
                    lk["since"] = os.stat(path).st_mtime
                return lk
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        try:
            since = os.stat(path).st_mtime
        except OSError:
            return None
        return {"token": "?", "since": since, "who": "(unreadable lock file)"}

    def lock_guard(self):
        """An exclusive flock on DIR/lock.guard for the lock verb's check-then-act (acquire, release, break):
        two agents never decide on the same lock at once. The record itself is written to a temp file and
        link()ed into place, so a reader never sees it empty."""
        import fcntl

        fd = os.open(self.p("lock.guard"), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            raise
        return fd

    def require_lock(self, token: str) -> None:
        lk = self.read_lock()
        if not lk or lk.get("token") != token:
            raise Fail("this flash does not hold the board's lock (another flash took it?)", EXIT_LOCKED)


# -- signatures and versions (edgesdk.runtime.trust does the Ed25519 check, in the venv) -------------

def trusted_keys(b: Board) -> dict:
    """fingerprint -> path of each trusted key; empty: the board accepts unsigned bundles."""
    out = {}
    try:
        names = sorted(os.listdir(b.p(TRUST_DIR)))
    except OSError:
        return out
    for n in names:
        m = re.match(r"^([0-9a-f]{32})\.pub$", n)
        if m and os.path.isfile(b.p(TRUST_DIR, n)):
            out["ed25519:" + m.group(1)] = b.p(TRUST_DIR, n)
    return out


def key_fingerprint(raw: bytes) -> str:
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def pem_raw(text: object) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM (SubjectPublicKeyInfo); Fail (bad input) otherwise."""
    import base64
    import binascii

    m = re.search(r"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----",
                  text if isinstance(text, str) and len(text) < 4096 else "")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True) if m else b""
    except (binascii.Error, ValueError):
        der = b""
    if len(der) != len(SPKI_PREFIX) + 32 or not der.startswith(SPKI_PREFIX):
        raise Fail("not an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)", EXIT_INPUT)
    return der[len(SPKI_PREFIX):]


def sig_fingerprint(sig_text: str) -> str:
    """The signer named in manifest.sig (read with the stdlib; the signature itself is checked by the verifier)."""
    try:
        doc = json.loads(sig_text)
        m = FP_RE.match(str(doc.get("key", "")).lower()) if isinstance(doc, dict) else None
    except ValueError:
        m = None
    if not m:
        raise Fail("refused: manifest.sig is malformed (no signer key)", EXIT_INPUT, refused="bad-signature")
    return "ed25519:" + m.group(1)


def manifest_version(data: object) -> int | None:
    v = data.get("release_version") if isinstance(data, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def release_info(b: Board, rid: str | None) -> tuple:
    """(release_version, signer fingerprint) of an installed release, from its manifest.json and manifest.sig."""
    if not rid:
        return None, None
    try:
        with open(b.p("releases", rid, "manifest.json"), encoding="utf-8") as fh:
            ver = manifest_version(json.load(fh))
    except (OSError, ValueError):
        ver = None
    try:
        with open(b.p("releases", rid, SIGNATURE), encoding="utf-8") as fh:
            signer = sig_fingerprint(fh.read(8192))
    except (OSError, Fail):
        signer = None
    return ver, signer


def check_signed(b: Board, manifest: bytes, sig_text, python: str | None, what: str,
                 tail: str = "nothing was staged", expiry: bool = True) -> dict:
    """Once the board trusts a key: the bundle must be signed by a trusted key and the signature must match the
    exact manifest bytes (checked by `PY -I -m edgesdk.runtime.trust verify`, with cryptography). Fail (bad input,
    `refused`: unsigned, untrusted, bad-signature, no-crypto) otherwise. A board with no key accepts anything."""
    keys = trusted_keys(b)
    if not keys:
        return {"signed": sig_text is not None, "checked": False, "key": None}
    listed = ", ".join(sorted(keys))
    if sig_text is None:
        raise Fail(f"refused {what}: it is unsigned, and this board accepts only bundles signed by {listed}; "
                   f"sign it (`edgesdk sign BUNDLE --key KEY`); {tail}", EXIT_INPUT, refused="unsigned")
    if not isinstance(sig_text, str) or len(sig_text) > 4096:
        raise Fail(f"refused {what}: manifest.sig is malformed", EXIT_INPUT, refused="bad-signature")
    fp = sig_fingerprint(sig_text)
    if fp not in keys:
        raise Fail(f"refused {what}: it is signed by {fp}, which this board does not trust (trusted: {listed}); "
                   f"{tail}", EXIT_INPUT, refused="untrusted", key=fp)
    py = python or b.p("venv", "bin", "python")
    if not os.path.isabs(py) or not os.path.isfile(py):
        raise Fail(f"refused {what}: this board trusts signing keys but has no interpreter at {py} to check "
                   "signatures; provision it (flash without --no-provision)", EXIT_INPUT, refused="no-crypto")
    import base64

    data = json.dumps({"manifest": base64.b64encode(manifest).decode(), "signature": sig_text}).encode()
    try:
        r = subprocess.run([py, "-I", "-B", "-m", "edgesdk.runtime.trust", "verify", f"--trust={b.p(TRUST_DIR)}"],
                           input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, cwd="/",
                           check=False)
        text = r.stdout.decode("utf-8", "replace")
        res = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        raise Fail(f"refused {what}: {py} could not check the signature (an edgesdk-runtime without "
                   "edgesdk.runtime.trust? provision again): " + (locals().get("text") or "")[-300:],
                   EXIT_INPUT, refused="no-crypto") from None
    if not res.get("ok"):
        raise Fail(f"refused {what}: {res.get('error')}; {tail}", EXIT_INPUT,
                   refused=res.get("kind", "bad-signature"), key=fp)
    exp = res.get("expires_at") if isinstance(res.get("expires_at"), str) else None
    if expiry and exp and exp <= now():
        raise Fail(f"refused {what}: its signature expired at {exp} (the board's clock: {now()}); sign it again "
                   f"(`edgesdk sign BUNDLE --key KEY --expires ...`); {tail}", EXIT_INPUT, refused="expired",
                   key=fp, expires_at=exp)
    return {"signed": True, "checked": True, "key": fp, "expires_at": exp}


def highest_version(st: dict) -> int | None:
    """The highest release_version this board ever activated: state.json's highest_version, or (a board from
    before it was recorded) the highest in its history. Rollback and --allow-downgrade never lower it."""
    vals = [st.get("highest_version")] + [e.get("release_version") for e in st.get("history", [])
                                          if e.get("event") == "activated"]
    vals = [v for v in vals if isinstance(v, int) and not isinstance(v, bool)]
    return max(vals) if vals else None


def check_version(b: Board, new: int | None, allow_downgrade: bool, what: str) -> dict | None:
    """A release_version lower than the current release's, or than the highest this board ever accepted (a
    rollback does not reopen the versions in between), is refused unless allow_downgrade (then reported)."""
    cur = b.current()
    cur_v, _ = release_info(b, cur)
    high = highest_version(b.state())
    floor = max([v for v in (cur_v, high) if v is not None], default=None)
    if new is None or floor is None or new >= floor:
        return None
    if cur_v is not None and cur_v >= floor:
        why = f"older than the current release {cur} (release_version {cur_v})"
    else:
        why = (f"older than release_version {floor}, the highest this board has accepted (the current release "
               f"{cur} has release_version {cur_v}: rolled back to)")
    if not allow_downgrade:
        raise Fail(f"refused {what}: its release_version {new} is {why}; flash --allow-downgrade to install it "
                   "anyway (recorded in the history), or `edgesdk rollback` to a release still on the board",
                   EXIT_INPUT, refused="downgrade", current_version=cur_v, highest_version=high,
                   release_version=new)
    return {"from": floor, "to": new, "from_release": cur, "allowed": True}


def check_release(b: Board, rid: str, python: str | None, what: str, tail: str, expiry: bool = False) -> dict:
    """Once the board trusts a key, an installed release is used (activated, rolled back to, run, profiled) only
    if its own manifest.json and manifest.sig verify against the trust store now, with the verifier
    (check_signed): a release installed before the first key was enrolled (never checked), one whose
    manifest.sig was forged, or one signed by a key revoked since, is refused. A board with no key: no check."""
    if not trusted_keys(b):
        return {"signed": os.path.isfile(b.p("releases", rid, SIGNATURE)), "checked": False, "key": None}
    try:
        with open(b.p("releases", rid, "manifest.json"), "rb") as fh:
            mbytes = fh.read(64 << 20)
    except OSError as exc:
        raise Fail(f"refused {what}: its manifest.json is not readable ({exc.strerror}); {tail}", EXIT_INPUT,
                   refused="bad-signature") from None
    sig = None
    if os.path.isfile(b.p("releases", rid, SIGNATURE)):
        with open(b.p("releases", rid, SIGNATURE), "rb") as fh:
            sig = fh.read(8192).decode("utf-8", "replace")
    return check_signed(b, mbytes, sig, python or recorded_python(b), what, tail, expiry)


def recorded_python(b: Board) -> str | None:
    """The interpreter the last activation used (state.json `python`): what rollback checks signatures with when
    the host names none (default: the venv's)."""
    py = b.state().get("python")
    return py if isinstance(py, str) and os.path.isabs(py) and os.path.isfile(py) else None


# -- verbs -----------------------------------------------------------------------------------------

def verb_probe(b: Board, args: argparse.Namespace) -> dict:
    q = read_stdin()
    res: dict = {"agent_version": AGENT_VERSION, "machine": platform.machine(), "system": platform.system(),
                 "python": "%d.%d.%d" % sys.version_info[:3], "python_exe": sys.executable,
                 "uid": os.getuid(), "base": b.base}
    lib, ver = platform.libc_ver()
    res["libc"] = f"{lib} {ver}".strip() if lib else ""
    osr = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                k, _, v = line.strip().partition("=")
                if k in ("ID", "VERSION_ID", "PRETTY_NAME", "VERSION_CODENAME"):
                    osr[k] = v.strip('"')
    except OSError:
        pass
    res["os"] = osr
    res["free_bytes"] = free_bytes(b.base)
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    res["ram_bytes"] = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        res["ram_bytes"] = None
    dt = None
    for path in ("/sys/firmware/devicetree/base/model", "/proc/device-tree/model"):
        try:
            with open(path, "rb") as fh:
                dt = fh.read(256).rstrip(b"\0").decode("utf-8", "replace").strip()
            break
        except OSError:
            continue
    res["device_tree_model"] = dt
    try:
        with open("/etc/edgesdk/emulated.json", encoding="utf-8") as fh:
            res["emulated"] = json.load(fh)
    except (OSError, ValueError):
        res["emulated"] = None
    usb = []
    root = "/sys/bus/usb/devices"
    try:
        for d in sorted(os.listdir(root)):
            try:
                with open(os.path.join(root, d, "idVendor")) as v, open(os.path.join(root, d, "idProduct")) as p:
                    usb.append(f"{v.read().strip()}:{p.read().strip()}")
            except OSError:
                continue
    except OSError:
        pass
    res["usb_ids"] = usb
    # device nodes, and the sysfs device paths some drivers expose instead (Horizon's BPU: /sys/devices/system/bpu)
    res["dev_nodes"] = {n: os.path.exists(n) for n in q.get("dev_nodes", []) if isinstance(n, str)
                        and n.startswith(("/dev/", "/sys/")) and ".." not in n}
    res["tools"] = {t: find_tool(t) for t in q.get("tools", []) if isinstance(t, str)
                    and (re.match(r"^[\w.+-]+$", t) or (re.match(r"^/[\w./+-]+$", t) and ".." not in t))}
    vpy = b.p("venv", "bin", "python")
    res["venv"] = os.path.exists(vpy)
    try:
        with open(b.p("venv", ".edgesdk-wheelset"), encoding="utf-8") as fh:
            res["wheelset"] = fh.read().strip()
    except OSError:
        res["wheelset"] = None
    res["current"] = b.current()
    res["trust"] = sorted(trusted_keys(b))
    res["current_version"] = release_info(b, res["current"])[0]
    res["highest_version"] = highest_version(b.state())
    return res


LIB_DIRS = ("/usr/lib", "/lib", "/usr/local/lib", "/usr/lib64", "/lib64")


def find_tool(name: str) -> str | None:
    """A vendor tool: an absolute path that exists, a shared library (libX.so[.N]) in the usual library dirs
    (multiarch ones too), or a program on PATH."""
    if name.startswith("/"):
        return name if os.path.exists(name) else None
    if ".so" in name:
        dirs = []
        for d in LIB_DIRS:
            dirs.append(d)
            try:
                dirs += [os.path.join(d, s) for s in os.listdir(d) if s.endswith(("-linux-gnu", "gnueabihf"))]
            except OSError:
                pass
        for d in dirs:
            if os.path.exists(os.path.join(d, name)):
                return os.path.join(d, name)
        return None
    return shutil.which(name)


def verb_lock(b: Board, args: argparse.Namespace) -> dict:
    b.ensure()
    if not TOKEN_RE.match(args.token):
        raise Fail("bad lock token", EXIT_INPUT)
    path = b.p("lock")
    guard = b.lock_guard()
    try:
        if args.action == "acquire":
            if not _take_lock(b, path, args):
                raise Fail("could not take the lock", EXIT_LOCKED)
        elif args.action == "release":
            held = b.read_lock()
            if held and held.get("token") == args.token:
                os.unlink(path)
            return {"locked": False}
        else:
            if os.path.lexists(path):
                os.unlink(path)
            return {"locked": False, "broken": True}
    finally:
        os.close(guard)
    return {"locked": True, "recovered": recover(b)}


def _take_lock(b: Board, path: str, args: argparse.Namespace) -> bool:
    """Under the lock guard: create the lock record atomically (temp file, then link(): never replaces, never
    seen empty), or find who holds it. Raises Fail(EXIT_LOCKED) when another live flash holds it."""
    info = {"token": args.token, "since": time.time(), "who": args.who[:200], "pid": os.getpid()}
    tmp = f"{path}.{args.token}.{os.getpid()}.tmp"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w", encoding="utf-8") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        for _ in range(2):
            try:
                _place_lock(tmp, path, info)
                return True
            except FileExistsError:
                pass
            held = b.read_lock() or {}
            if args.takeover and held.get("token") == args.takeover:
                os.unlink(path)  # our own lock, left by a flash from this host that died
                continue
            if held.get("token") == args.token:
                return True
            age = time.time() - float(held.get("since", 0))
            if age > args.ttl:
                os.unlink(path)  # stale: its holder died long ago
                continue
            raise Fail(f"board is locked by another flash ({str(held.get('who', '?'))[:200]}, "
                       f"{max(age, 0):.0f}s ago); it is released when that flash ends, or after its TTL",
                       EXIT_LOCKED, holder=held)
        return False
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


#: what link() fails with on a file system without hard links (vfat, exFAT, some FUSE mounts)
NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _place_lock(tmp: str, path: str, info: dict) -> None:
    """Put the lock record in place: link() the written temp file (atomic, never replaces, never seen empty); where
    the file system has no hard links (EPERM on vfat/exFAT/FUSE), create it with O_EXCL and write it, which is still
    one winner since every acquirer decides under the lock guard. FileExistsError: the lock is held."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in NO_LINK_ERRNOS:
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(path)  # never leave a half-written lock behind
        raise


#: how long a lock acquire waits for an activation that is still running (its host went away: a stalled link)
ACTIVATION_WAIT = 60.0


def activation_guard(b: Board, wait: float = 0.0) -> int | None:
    """An exclusive flock on DIR/activate.guard, held by `activate` for its whole run: the kernel drops it when
    that process ends, however (exit, SIGKILL, power cut). The fd (held), or None when another process still
    holds it after `wait` seconds."""
    import fcntl

    fd = os.open(b.p("activate.guard"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def recover(b: Board) -> str | None:
    """A switch that never reported its smoke result (power cut, agent killed): roll it back. A `pending` whose
    agent is still running (its host lost the link, the agent goes on by itself) is not interrupted: wait for
    its verdict (ACTIVATION_WAIT), else refuse (locked) rather than switch under it."""
    if not b.state().get("pending"):
        return None
    guard = activation_guard(b, ACTIVATION_WAIT)
    if guard is None:
        pend = b.state().get("pending") or {}
        raise Fail(f"the switch to {pend.get('release')} (since {pend.get('since')}) is still being smoke-tested on "
                   "the board by an agent whose host went away; retry when it ends (within its smoke timeout)",
                   EXIT_LOCKED)
    try:
        return _recover(b)
    finally:
        os.close(guard)


def _recover(b: Board) -> str | None:
    st = b.state()  # read again under the guard: the activation we waited for may have just given its verdict
    pend = st.get("pending")
    if not pend:
        return None
    prev = pend.get("previous")
    if prev and os.path.isdir(b.p("releases", prev)):
        b.switch(prev)
    elif os.path.lexists(b.p("current")):
        os.unlink(b.p("current"))
    st["pending"] = None
    st["current"] = b.current()
    st["history"].append({"at": now(), "event": "rolled-back", "release": pend.get("release"),
                          "to": prev, "reason": "interrupted switch found at the next flash"})
    b.save_state(st)
    return pend.get("release")


def _find_existing(b: Board, rel: str, sha: str) -> str | None:
    """A file with this name and hash in an installed release (skip-unchanged across releases)."""
    for rid in b.releases():
        mpath = b.p("releases", rid, "manifest.json")
        cand = b.p("releases", rid, rel)
        if rel == "manifest.json":
            continue
        try:
            with open(mpath, encoding="utf-8") as fh:
                files = json.load(fh).get("files", {})
        except (OSError, ValueError):
            continue
        if files.get(rel) == sha and os.path.isfile(cand) and not os.path.islink(cand):
            return cand
    return None


def verb_need(b: Board, args: argparse.Namespace) -> dict:
    """Which files the host must send, and from which offset; links unchanged files from releases."""
    b.require_lock(args.token)
    b.ensure()
    files = file_list(read_stdin())
    d = b.area(args.area)
    staging = args.area.startswith("staging/")
    bid = args.area.partition("/")[2]
    if staging and trusted_keys(b):
        # nothing is staged on a board with keys unless `admit` checked this very manifest (under this lock)
        adm = (b.state().get("admitted") or {}).get(bid)
        sent = (files.get("manifest.json") or {}).get("sha256")
        if not isinstance(adm, dict) or adm.get("token") != args.token or adm.get("manifest_sha256") != sent:
            raise Fail(f"refused staging/{bid}: this board trusts signing keys and its manifest was not admitted "
                       "(the agent's `admit` checks manifest.json and manifest.sig first); nothing was staged",
                       EXIT_INPUT, refused="not-admitted")
    if staging and os.path.isdir(b.p("releases", bid)):
        return {"installed": True, "files": {rel: {"status": "have"} for rel in files}, "need_bytes": 0}
    os.makedirs(d, mode=0o700 if staging else 0o755, exist_ok=True)
    if staging:
        os.chmod(d, 0o700)
    res, need = {}, 0
    for rel, meta in files.items():
        dst = os.path.join(d, rel)
        part = dst + ".part"
        if os.path.isfile(dst) and not os.path.islink(dst) and os.path.getsize(dst) == meta["size"] \
                and sha256_file(dst) == meta["sha256"]:
            res[rel] = {"status": "have"}
            continue
        src = _find_existing(b, rel, meta["sha256"]) if staging else None
        if src is not None:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            res[rel] = {"status": "have", "from": os.path.relpath(src, b.base)}
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        off = 0
        if os.path.isfile(part) and not os.path.islink(part):
            off = os.path.getsize(part)
            if off > meta["size"]:
                os.unlink(part)
                off = 0
        res[rel] = {"status": "send", "offset": off}
        need += meta["size"] - off
    free = free_bytes(d)
    margin = 1 << 20
    if need + margin > free:
        raise Fail(f"no space left on the board: {need} bytes to send, {free} free under {b.base}", EXIT_NOSPACE,
                   need_bytes=need, free_bytes=free)
    return {"installed": False, "files": res, "need_bytes": need, "free_bytes": free}


def verb_commit(b: Board, args: argparse.Namespace) -> dict:
    """Check each uploaded .part against its sha256, then rename it into place; bad files are deleted."""
    b.require_lock(args.token)
    files = file_list(read_stdin())
    d = b.area(args.area)
    bad, ok = {}, []
    for rel, meta in files.items():
        dst = os.path.join(d, rel)
        part = dst + ".part"
        if os.path.isfile(part):
            got = sha256_file(part)
            if got == meta["sha256"]:
                os.replace(part, dst)
                ok.append(rel)
                continue
            os.unlink(part)
            bad[rel] = f"sha256 {got[:12]} is not {meta['sha256'][:12]}: deleted, to be sent again"
        elif not (os.path.isfile(dst) and sha256_file(dst) == meta["sha256"]):
            bad[rel] = "missing on the board"
    fsync_dir(d)
    return {"verified": not bad, "committed": ok, "bad": bad}


def _check_tree(root: str, expected: set) -> None:
    """Only regular files, only the expected ones: no links, devices or strays."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                raise Fail(f"{rel}: links are not allowed in a release", EXIT_INPUT)
            if name in filenames and rel not in expected:
                raise Fail(f"{rel}: not listed in the bundle", EXIT_INPUT)
            if name in filenames and not os.path.isfile(p):
                raise Fail(f"{rel}: not a regular file", EXIT_INPUT)


def verb_install(b: Board, args: argparse.Namespace) -> dict:
    """Verify staging/<id> against its manifest and rename it to releases/<id> (not yet current)."""
    b.require_lock(args.token)
    bid = check_id(args.bundle_id, "bundle id")
    rel_dir = b.p("releases", bid)
    if os.path.isdir(rel_dir):
        signed = check_release(b, bid, args.python, f"release {bid} (already installed)", "nothing was installed",
                               expiry=True)
        return {"installed": True, "already": True, "signed": signed["signed"], "key": signed["key"]}
    stage = b.p("staging", bid)
    try:
        with open(os.path.join(stage, "manifest.json"), "rb") as fh:
            mbytes = fh.read(64 << 20)
        manifest = json.loads(mbytes.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise Fail(f"staged bundle has no readable manifest.json: {exc}", EXIT_INPUT) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise Fail("manifest.json has no files table", EXIT_INPUT)
    if manifest.get("bundle_id") and manifest["bundle_id"] != bid:
        raise Fail(f"manifest says bundle {manifest['bundle_id']}, staged as {bid}", EXIT_INPUT)
    for rel in files:
        check_rel(rel)
    optional = {f for f in OPTIONAL_FILES if os.path.isfile(os.path.join(stage, f))}
    expected = set(files) | {"manifest.json"} | optional
    _check_tree(stage, expected)
    if "tuning.json" in files:
        try:
            with open(os.path.join(stage, "tuning.json"), encoding="utf-8") as fh:
                tuning = json.load(fh)
        except (OSError, ValueError) as exc:
            raise Fail(f"tuning.json is not readable JSON: {exc}", EXIT_INPUT) from None
        if not isinstance(tuning, dict):
            raise Fail("tuning.json must be a JSON object", EXIT_INPUT)
    for rel, digest in files.items():
        p = os.path.join(stage, rel)
        if not os.path.isfile(p):
            raise Fail(f"{rel}: missing in the staged bundle", EXIT_FAILED)
        got = sha256_file(p)
        if got != digest:
            os.unlink(p)
            raise Fail(f"{rel}: sha256 {got[:12]} does not match the manifest ({digest[:12]}); deleted before "
                       "activation", EXIT_FAILED, bad=rel)
    # the staged manifest again (the files match it, above): signed by a trusted key, unchanged since signing
    sig = None
    if SIGNATURE in optional:
        with open(os.path.join(stage, SIGNATURE), "rb") as fh:
            sig = fh.read(8192).decode("utf-8", "replace")
    try:
        signed = check_signed(b, mbytes, sig, args.python, f"staged bundle {bid}")
    except Fail as exc:
        shutil.rmtree(stage, ignore_errors=True)  # never installed; the next flash sends it again
        exc.args = (str(exc).replace("nothing was staged", "the staged files were deleted"),)
        raise
    group = release_group()  # root: nobody's group may read (the smoke test), no one else; else the user alone
    dmode, fmode = (0o750, 0o440) if group is not None else (0o700, RELEASE_FILE_MODE)
    for dirpath, dirnames, filenames in os.walk(stage):
        for path, mode in [(dirpath, dmode)] + [(os.path.join(dirpath, f), fmode) for f in filenames]:
            if group is not None:
                os.lchown(path, -1, group)
            os.chmod(path, mode)
        for f in filenames:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    b.ensure()
    os.rename(stage, rel_dir)
    fsync_dir(b.p("releases"))
    st = b.state()
    ev = {"at": now(), "event": "installed", "release": bid}
    if signed["checked"]:
        ev["signed_by"] = signed["key"]
        # only when the verifier really ran: what `state` shows; every later use checks again (check_release)
        st.setdefault("verified_by", {})[bid] = signed["key"]
    if manifest_version(manifest) is not None:
        ev["release_version"] = manifest_version(manifest)
    if isinstance(st.get("admitted"), dict):
        st["admitted"].pop(bid, None)
    st["history"].append(ev)
    b.save_state(st)
    return {"installed": True, "already": False, "signed": signed["signed"], "key": signed["key"]}


def _demote(python: str | None = None, limit: float = 30.0):
    """Run the bundle as nobody when we are root: a model file is untrusted input. Returns (ids, why): ids (uid,
    gid) to drop to; (None, None) when not root (nothing to drop); (None, why) when root and the drop cannot
    happen (no user nobody, or nobody cannot run `python -I -c "import edgesdk.runtime"`: the interpreter's or its
    site-packages' dirs are private). The caller decides
    (demotion(): a failure, unless root was allowed)."""
    if os.getuid() != 0:
        return None, None
    ids = nobody_ids()
    if ids is None:
        return None, "there is no user nobody on the board"
    if python is not None:
        def pre() -> None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        def start(as_nobody: bool) -> subprocess.CompletedProcess:
            # what the run itself does first: its -I -B interpreter imports the board runtime (nobody must be able to
            # read the venv's site-packages, not only start the interpreter)
            return subprocess.run([python, "-I", "-B", "-c", f"import {RUNTIME}"], check=False,
                                  preexec_fn=pre if as_nobody else None, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=min(30.0, limit), cwd="/")
        try:
            r = start(True)
            if r.returncode != 0 and start(False).returncode == 0:  # as root it starts: nobody is the problem
                err = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {r.returncode}"]
                return None, f"nobody cannot run {python} -I -c 'import {RUNTIME}' ({err[0][:200]})"
            # (it fails as root too: not a question of who runs it; the run itself reports that failure)
        except subprocess.TimeoutExpired:
            return ids, None  # it ran (and hangs): nobody can run it; the smoke test's own limit deals with the hang
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"nobody cannot run {python} ({type(exc).__name__}: {exc})"
    return ids, None


def demotion(b: Board, python: str, allow_root: bool, what: str, flag: str, limit: float = 30.0) -> tuple:
    """(ids, why) as _demote says; a drop to nobody that cannot happen is a failure naming the fix, unless the
    operator allowed root (`flag`): then (None, why) and the caller reports loudly that it ran as root."""
    ids, why = _demote(python, limit)
    if why is not None and not allow_root:
        raise Fail(f"{what} must run as nobody (the agent is root and a model is untrusted input), but {why}. "
                   "Fix: make the interpreter and every directory above it readable and executable by nobody "
                   f"(chmod o+rx on each; the board's own venv under {b.base}/venv is), or pass {flag} to run "
                   "it as root (reported as such)", EXIT_FAILED, demote="failed", why=why)
    return ids, why


def ran_as(ids: tuple | None) -> str:
    return "nobody" if ids is not None else "root" if os.getuid() == 0 else "user"


def check_fallback_word(value: str | None) -> str:
    """The fallback setting as one inert word ("error" when empty). Which values mean what is the board runtime's
    to say (edgesdk.runtime.fallback, the one fallback rule): the runtime refuses a value it does not know."""
    value = value or "error"
    if not FALLBACK_RE.match(value):
        raise Fail(f"bad fallback {value!r}", EXIT_INPUT)
    return value


def run_bundle(b: Board, verb: str, bundle: str, python: str, timeout: float, extra: list,
               fallback: str = "error", workdir: str | None = None, allow_root: bool = False,
               flag: str = "--allow-root") -> tuple:
    """Run the board runtime's own entry point, `python -I -B -m edgesdk.runtime VERB BUNDLE --result-line
    --fallback=F EXTRA...`, in a child: as nobody when we are root, in its own session, with RLIMIT_CORE=0,
    RLIMIT_CPU and RLIMIT_FSIZE, killed (its whole process group) at `timeout`. workdir: its cwd, HOME and
    TMPDIR (made nobody's); default tmp/. When the drop to nobody cannot happen it is a Fail naming the fix, unless
    allow_root (`flag` on the host): then it runs as root, the log's first line says so, and result["ran_as"] is
    "root" (else "nobody", or "user" when the agent is not root).

    Returns (result or None, log text, reason or None, seconds): reason says why it failed (timed out, an
    error the runtime reported, a smoke test beyond the tolerance, a crash, no result)."""
    if verb not in RUNTIME_VERBS:
        raise Fail(f"bad runtime verb {verb!r}", EXIT_INPUT)
    fallback = check_fallback_word(fallback)
    if not os.path.isabs(python) or not os.path.isfile(python):
        raise Fail(f"no python at {python!r} on the board (provision first)", EXIT_INPUT)
    ids, why = demotion(b, python, allow_root, f"the {verb} run", flag, timeout)
    home = workdir or b.p("tmp")
    if workdir and ids is not None:
        os.chown(workdir, ids[0], ids[1])

    def pre() -> None:
        os.setsid()
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_CPU, (int(timeout * 4) + 10,) * 2)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 30,) * 2)
        except (ImportError, ValueError, OSError):
            pass
        if ids is not None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])

    env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "")}
    if workdir:
        env["TMPDIR"] = workdir
    for k in ("QEMU_CPU", "EDGESDK_EMULATED"):
        if k in os.environ:
            env[k] = os.environ[k]
    env = {k: v for k, v in env.items() if v}
    # -I: the installed runtime only (no cwd, PYTHONPATH or user site on sys.path); -B: no .pyc writes (-I drops
    # PYTHONDONTWRITEBYTECODE)
    argv = [python, "-I", "-B", "-m", RUNTIME, verb, bundle, "--result-line", f"--fallback={fallback}"] + list(extra)
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=pre, cwd=home, env=env)
    reason = None
    try:
        data, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        data, _ = proc.communicate()
        reason = f"timed out after {timeout:.0f}s (killed)"
    text = data.decode("utf-8", "replace")
    result = None
    lines = []
    for line in text.splitlines():
        if line.startswith(RESULT_MARK):
            try:
                result = json.loads(line[len(RESULT_MARK):])
            except ValueError:
                pass
            if verb == "profile":
                continue  # a whole profile: it comes back as the result, not twice
        lines.append(line)
    if reason is None and isinstance(result, dict) and result.get("error"):
        reason = f"{result['error']}: {result.get('message')}"
    if reason is None and isinstance(result, dict) and verb == "smoke" and not result.get("ok"):
        bad = {k: v for k, v in (result.get("checks") or {}).items() if not v.get("ok")}
        reason = f"outputs differ from the reference beyond the tolerance: {json.dumps(bad)}"
    if reason is None and proc.returncode != 0:
        reason = f"exited with {proc.returncode}"
    if reason is None and not isinstance(result, dict):
        reason = "printed no result"
    log = "\n".join(lines[-SMOKE_LOG_LINES:])
    if isinstance(result, dict):
        result["ran_as"] = ran_as(ids)
    if why is not None:
        log = f"WARNING: ran as ROOT ({flag}): {why}\n" + log
        if isinstance(result, dict):
            result["ran_as_root_because"] = why
    return result, log, reason, round(time.monotonic() - t0, 3)


def gc(b: Board, keep: int) -> list:
    st = b.state()
    cur = b.current()
    order = []
    for ev in st.get("history", []):
        r = ev.get("release")
        if ev.get("event") in ("installed", "activated") and r:
            if r in order:
                order.remove(r)
            order.append(r)
    have = b.releases()
    keep_set = {cur, st.get("previous")} | set([r for r in order if r in have][-keep:])
    removed = []
    for r in have:
        if r not in keep_set:
            shutil.rmtree(b.p("releases", r), ignore_errors=True)
            removed.append(r)
    if removed and isinstance(st.get("fallback"), dict):
        st["fallback"] = {k: v for k, v in st["fallback"].items() if k not in removed}
        b.save_state(st)
    for s in os.listdir(b.p("staging")) if os.path.isdir(b.p("staging")) else []:
        p = b.p("staging", s)
        try:
            if time.time() - os.path.getmtime(p) > 7 * 86400:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass
    return removed


def verb_activate(b: Board, args: argparse.Namespace) -> dict:
    """Switch `current`, smoke-test it, and commit or switch back: all here, so a dropped connection
    cannot leave a half-done switch."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    b.require_lock(args.token)
    guard = activation_guard(b, ACTIVATION_WAIT)  # held for the whole verb; the kernel drops it if we are killed
    if guard is None:
        raise Fail("another activation is still running on the board; nothing was switched", EXIT_LOCKED)
    try:
        return _activate(b, args)
    finally:
        os.close(guard)


def _activate(b: Board, args: argparse.Namespace) -> dict:
    bid = check_id(args.bundle_id, "bundle id")
    args.fallback = check_fallback_word(args.fallback)
    if not os.path.isdir(b.p("releases", bid)):
        raise Fail(f"release {bid} is not installed", EXIT_INPUT)
    if not os.path.isabs(args.python) or not os.path.isfile(args.python):
        raise Fail(f"no python at {args.python!r} on the board (provision first); nothing was switched", EXIT_INPUT)
    # its signature verified again now against the trust store (installed before a key was enrolled, or signed by
    # a key revoked since: refused), and not older than the highest release accepted unless --allow-downgrade
    version, signer = release_info(b, bid)
    check_release(b, bid, args.python, f"release {bid}", "nothing was switched", expiry=True)
    downgrade = check_version(b, version, args.allow_downgrade, f"release {bid}")
    # before anything is switched: the smoke test runs as nobody, or the operator allowed root (--allow-root-smoke)
    demote_ids, root_why = demotion(b, args.python, args.allow_root, "the smoke test", "--allow-root-smoke",
                                    args.timeout)
    st = b.state()
    prev = b.current()
    if prev == bid:
        prev = st.get("previous")
    st["pending"] = {"release": bid, "previous": prev, "since": now()}
    b.save_state(st)
    b.switch(bid)
    try:
        result, log, reason, secs = run_bundle(b, "smoke", b.p("current") + "/", args.python, args.timeout, [],
                                               fallback=args.fallback, allow_root=args.allow_root,
                                               flag="--allow-root-smoke")
    except Exception as exc:  # noqa: BLE001 - whatever broke, the switch must be undone
        result, log, reason, secs = None, "", f"could not run the smoke test: {type(exc).__name__}: {exc}", 0.0
    logname = f"smoke-{bid}-{int(time.time())}.log"
    b.ensure()
    with open(os.open(b.p("logs", logname), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w",
              encoding="utf-8") as fh:
        fh.write(log)
    st = b.state()
    st["pending"] = None
    ev = {"at": now(), "release": bid, "smoke_seconds": secs, "log": f"logs/{logname}"}
    if version is not None:
        ev["release_version"] = version
    if signer is not None:
        ev["signed_by"] = signer
    if downgrade:
        ev["downgrade"] = downgrade  # --allow-downgrade: from which version to which
    if args.note:
        ev["note"] = args.note[:500]
    if args.fallback != "error":
        ev["fallback"] = args.fallback
    ev["ran_as"] = ran_as(demote_ids)
    if root_why is not None:
        ev["ran_as_root_because"] = root_why
    if reason is None:
        st["previous"] = prev
        st["current"] = bid
        st["python"] = args.python  # what rollback checks signatures with when the host names no interpreter
        if version is not None:
            st["highest_version"] = max(version, highest_version(st) or version)
        # how this release runs from now on (`run` honours it): the CPU fallback, or its own engines
        fb = st.setdefault("fallback", {})
        if args.fallback != "error":
            fb[bid] = args.fallback
        else:
            fb.pop(bid, None)
        ev.update(event="activated", smoke="passed", latency_ms=result.get("latency_ms"))
        st["history"].append(ev)
        b.save_state(st)
        removed = gc(b, args.keep)
        return {"status": "success", "release": bid, "previous": prev, "smoke": result, "log": log,
                "smoke_seconds": secs, "removed": removed, "fallback": args.fallback, "release_version": version,
                "signed_by": signer, "downgrade": downgrade, "ran_as": ev["ran_as"], "ran_as_root_because": root_why}
    if prev and os.path.isdir(b.p("releases", prev)):
        b.switch(prev)
    else:
        os.unlink(b.p("current"))
    st["current"] = b.current()
    ev.update(event="rolled-back", smoke="failed", reason=reason, to=prev)
    st["history"].append(ev)
    b.save_state(st)
    raise Fail(f"smoke test of {bid} failed: {reason}; switched back to {prev or 'nothing'}", EXIT_SMOKE,
               status="rolled-back", release=bid, current=b.current(), log=log, reason=reason, smoke=result)


def verb_rollback(b: Board, args: argparse.Namespace) -> dict:
    b.require_lock(args.token)
    st = b.state()
    cur = b.current()
    to = args.to or st.get("previous")
    if to:
        check_id(to, "release id")
    if not to or not os.path.isdir(b.p("releases", to)):
        raise Fail(f"no release to roll back to (previous: {to or 'none'}; installed: {b.releases()})", EXIT_INPUT)
    # a downgrade is the operator's choice; a way around the trust store it is not
    check_release(b, to, args.python, f"rollback to {to}", "nothing was switched")
    st = b.state()
    b.switch(to)
    st["previous"], st["current"], st["pending"] = cur, to, None
    ev = {"at": now(), "event": "rolled-back", "release": cur, "to": to, "reason": args.reason[:300] or "requested"}
    # the operator's choice, allowed to an older release still on the board: recorded with both versions
    (cur_v, _), (to_v, _) = release_info(b, cur), release_info(b, to)
    if cur_v is not None or to_v is not None:
        ev.update(from_version=cur_v, release_version=to_v)
        if cur_v is not None and to_v is not None and to_v < cur_v:
            ev["downgrade"] = {"from": cur_v, "to": to_v, "by": "rollback"}
    st["history"].append(ev)
    b.save_state(st)
    return {"status": "rolled-back", "from": cur, "current": to, "downgrade": ev.get("downgrade")}


#: what `python -m venv` itself puts in a venv
VENV_OWN = frozenset({"pip", "setuptools", "wheel"})


def norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(wheel: str) -> str:
    """The normalized distribution name of a wheel file name (PEP 427: name-version-...)."""
    return norm_dist(wheel.split("-", 1)[0])


def venv_dists(venv: str) -> list:
    """The normalized names of the distributions installed in a venv, read from its dist-info dirs."""
    names = []
    for lib in ("lib", "lib64"):
        base = os.path.join(venv, lib)
        if not os.path.isdir(base):
            continue
        for pyd in sorted(os.listdir(base)):
            site = os.path.join(base, pyd, "site-packages")
            if not pyd.startswith("python") or not os.path.isdir(site):
                continue
            for d in sorted(os.listdir(site)):
                if d.endswith(".dist-info"):
                    names.append(norm_dist(d[: -len(".dist-info")].rsplit("-", 1)[0]))
    return sorted(set(names))


def verb_provision(b: Board, args: argparse.Namespace) -> dict:
    """Install the pushed wheelhouse into venv/ with no index (the board needs no internet)."""
    b.require_lock(args.token)
    data = read_stdin()
    wheels = data.get("wheels", [])
    force = set(data.get("force", []))
    for w in wheels:
        check_rel(w)
        if "/" in w or not w.endswith(".whl"):
            raise Fail(f"bad wheel name {w!r}", EXIT_INPUT)
    venv = b.p("venv")
    py = os.path.join(venv, "bin", "python")
    t0 = time.monotonic()
    logs = []

    def run(argv: list, limit: float) -> None:
        env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
                   PIP_CONFIG_FILE=os.devnull)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=limit, env=env)
        except subprocess.TimeoutExpired:
            raise Fail(f"{argv[0]} {argv[1:4]} timed out after {limit:.0f}s", EXIT_FAILED) from None
        text = r.stdout.decode("utf-8", "replace")
        logs.append(text[-3000:])
        if r.returncode != 0:
            raise Fail(f"{' '.join(argv[:6])} ... failed ({r.returncode}):\n{text[-3000:]}", EXIT_FAILED)

    if not os.path.exists(py):
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", venv], 600)
    try:
        os.unlink(os.path.join(venv, ".edgesdk-wheelset"))
    except FileNotFoundError:
        pass
    # the venv holds the wheel set and nothing else: what an older set installed goes first (e.g. the whole
    # `edgesdk` distribution, before the board package edgesdk-runtime existed), before its files are reinstalled
    strangers = sorted(set(venv_dists(venv)) - {dist_name(w) for w in wheels} - VENV_OWN)
    if strangers:
        run([py, "-m", "pip", "uninstall", "-y", *strangers], float(args.timeout))
    paths = [b.p("wheels", w) for w in wheels if w not in force]
    base = [py, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", b.p("wheels")]
    if paths:
        run(base + paths, float(args.timeout))
    fpaths = [b.p("wheels", w) for w in wheels if w in force]
    if fpaths:
        run(base + ["--force-reinstall"] + fpaths, float(args.timeout))
    with open(os.path.join(venv, ".edgesdk-wheelset"), "w", encoding="utf-8") as fh:
        fh.write(args.wheelset + "\n")
    keep = set(wheels)
    for w in os.listdir(b.p("wheels")):
        if w not in keep:
            try:
                os.unlink(b.p("wheels", w))
            except OSError:
                pass
    st = b.state()
    st["wheelset"] = args.wheelset
    st["history"].append({"at": now(), "event": "provisioned", "wheelset": args.wheelset,
                          "wheels": sorted(wheels), "seconds": round(time.monotonic() - t0, 1)})
    b.save_state(st)
    return {"provisioned": True, "seconds": round(time.monotonic() - t0, 1), "python": py}


def _release_dir(b: Board, release_id: str) -> str:
    rid = check_id(release_id, "release id") if release_id != "current" else b.current()
    if not rid or not os.path.isdir(b.p("releases", rid)):
        raise Fail(f"release {release_id} is not installed (installed: {b.releases()})", EXIT_INPUT)
    return rid


def verb_run(b: Board, args: argparse.Namespace) -> dict:
    """Run one inference on a release with inputs the host pushed to tmp/<workdir>/; outputs land there too
    (`python -m edgesdk.runtime run RELEASE --tensors --out-dir WORKDIR --input NAME=FILE ... --bench=1`)."""
    rid = _release_dir(b, args.release_id)
    check_release(b, rid, args.python, f"release {rid}", "nothing was run")
    wd = b.p("tmp", check_id(args.workdir, "work dir"))
    if not os.path.isdir(wd) or os.path.islink(wd):
        raise Fail("work dir missing", EXIT_INPUT)
    limits = output_limits(b.p("releases", rid))
    # a model's run: tensors in, output files, one timed run; an app's: frames in, decoded results in the answer
    extra = [] if is_app_release(b.p("releases", rid)) else ["--tensors", f"--out-dir={wd}", "--bench=1"]
    for item in args.inputs:
        name, _, fn = item.partition("=")
        check_rel(fn)
        if name and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,200}$", name):
            raise Fail(f"bad input name {name!r}", EXIT_INPUT)
        extra.append(f"--input={name}={os.path.join(wd, fn)}" if name else f"--input={os.path.join(wd, fn)}")
    ids, _ = demotion(b, args.python, args.allow_root, "the run", "--allow-root")
    if ids is not None:
        os.chown(wd, ids[0], ids[1])
    fb = args.fallback or (b.state().get("fallback") or {}).get(rid) or "error"  # as the release was flashed
    result, log, reason, secs = run_bundle(b, "run", b.p("releases", rid), args.python, args.timeout, extra,
                                           fallback=fb, allow_root=args.allow_root, flag="--allow-root")
    if reason is not None:
        raise Fail(f"run on {rid} failed: {reason}", EXIT_INPUT if _input_error(result) else EXIT_FAILED, log=log)
    # the work dir is nobody's (the model's user): its outputs are copied, checked, into a dir only we can write,
    # and the host fetches them from there (never through a link, never more than the manifest declares)
    files = result.get("files") if isinstance(result, dict) else None
    outs = collect_outputs(wd, files if isinstance(files, dict) else {}, limits, wd + ".out",
                           uid=ids[0] if ids is not None else None)
    return {"release": rid, "result": result, "log": log, "seconds": secs, "fallback": fb, "outputs": outs,
            "out_dir": os.path.relpath(wd + ".out", b.base)}


#: bytes per element of the manifest's dtypes
ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1}
OUTPUT_FILE_RE = re.compile(r"^output_[0-9]{1,4}\.npy$")


def npy_limit(shape: object, dtype: object) -> int:
    """The most bytes the .npy of one declared output may have: its elements times the dtype's size (at least 4:
    a quantized output comes back as float32) plus the header; MAX_OUTPUT_BYTES when the shape is not static."""
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                              for d in shape):
        return MAX_OUTPUT_BYTES
    n = 1
    for d in shape:
        n *= d
    return min(n * max(ITEMSIZE.get(str(dtype), 8), 4) + NPY_SLACK, MAX_OUTPUT_BYTES)


def _release_manifest(release: str) -> dict:
    try:
        with open(os.path.join(release, "manifest.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        raise Fail("the release's manifest.json is not readable", EXIT_FAILED)
    return data


def is_app_release(release: str) -> bool:
    """An app release (manifest kind "app"): its run takes frames and answers with decoded results, no files."""
    return _release_manifest(release).get("kind") == "app"


def output_limits(release: str) -> dict:
    """{output name: the most bytes its .npy may have} from the release's manifest.json."""
    data = _release_manifest(release)
    outs = data.get("outputs")
    if data.get("kind") == "app":
        return {}  # an app's outputs (texts, boxes, track ids) come back in the run's result, never as files
    if not isinstance(outs, list):
        raise Fail("the release's manifest.json has no outputs list", EXIT_FAILED)
    return {o["name"]: npy_limit(o.get("shape"), o.get("dtype")) for o in outs
            if isinstance(o, dict) and isinstance(o.get("name"), str)}


def collect_outputs(wd: str, files: dict, limits: dict, dest: str, uid: int | None = None) -> dict:
    """Copy each output the runtime reported ({file name: tensor name}) from the work dir `wd` (writable by the
    model's user) into `dest` (0700, ours): opened with O_NOFOLLOW, only a regular file with one link (a hard link
    to someone else's file is refused, as on boards with fs.protected_hardlinks=0 nobody can make one to a root
    file) owned by `uid` (the model's user: nobody when the run was demoted; default ours), at most the size its
    tensor declares (limits). Returns {file: {"tensor", "size", "sha256"}} of the copies."""
    uid = os.getuid() if uid is None else uid
    shutil.rmtree(dest, ignore_errors=True)
    os.mkdir(dest, 0o700)
    os.chmod(dest, 0o700)
    res = {}
    for fn, tensor in files.items():
        if not isinstance(fn, str) or not OUTPUT_FILE_RE.match(fn):
            raise Fail(f"the run reported a bad output file name {fn!r}: refused", EXIT_FAILED)
        if not isinstance(tensor, str) or tensor not in limits:  # (a list is unhashable: checked first)
            raise Fail(f"{fn}: {str(tensor)[:100]!r} is not an output of the release's manifest: refused", EXIT_FAILED)
        limit = limits[tensor]
        try:
            fd = os.open(os.path.join(wd, fn), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise Fail(f"{fn}: the run reported it but did not write it", EXIT_FAILED) from None
        except OSError as exc:  # ELOOP: a symlink
            raise Fail(f"{fn}: not a regular file ({exc.strerror}): refused", EXIT_FAILED) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Fail(f"{fn}: not a regular file: refused", EXIT_FAILED)
            if st.st_nlink != 1:
                raise Fail(f"{fn}: a hard link ({st.st_nlink} links): refused", EXIT_FAILED)
            if st.st_uid != uid:
                raise Fail(f"{fn}: owned by uid {st.st_uid}, not by the run's user (uid {uid}): refused", EXIT_FAILED)
            if st.st_size > limit:
                raise Fail(f"{fn}: {st.st_size} bytes, larger than the {limit} bytes output {tensor!r} can take "
                           "(its shape and dtype in the manifest): refused", EXIT_FAILED)
            h, size = hashlib.sha256(), 0
            with open(os.open(os.path.join(dest, fn), os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as out:
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise Fail(f"{fn}: grew past the {limit} bytes output {tensor!r} can take: refused",
                                   EXIT_FAILED)
                    h.update(chunk)
                    out.write(chunk)
        finally:
            os.close(fd)
        res[fn] = {"tensor": tensor, "size": size, "sha256": h.hexdigest()}
    return res


#: the board runtime's errors that mean bad input (its exit code 2)
INPUT_ERRORS = ("InputError", "BundleError", "InputMismatch")


def _input_error(result: object) -> bool:
    return isinstance(result, dict) and result.get("error") in INPUT_ERRORS


def verb_profile(b: Board, args: argparse.Namespace) -> dict:
    """Profile a release with the installed runtime (`python -m edgesdk.runtime profile RELEASE ...`), in a
    fresh work dir under tmp/ that is removed afterwards; the profile comes back as `result`."""
    rid = _release_dir(b, args.release_id)
    check_release(b, rid, args.python, f"release {rid}", "nothing was profiled")
    extra = [f"--runs={args.runs}", f"--warmup={args.warmup}", f"--threads={args.threads}",
             f"--layer-runs={args.layer_runs}"]
    if args.per_layer:
        extra.append("--per-layer")
    if args.frames is not None:
        extra.append(f"--frames={args.frames}")
    for e in args.engine:
        if not re.match(r"^[a-z0-9_]{1,32}$", e):
            raise Fail(f"bad engine name {e!r}", EXIT_INPUT)
        extra.append(f"--engine={e}")
    if args.no_tuning:
        extra.append("--no-tuning")
    fb = args.fallback or (b.state().get("fallback") or {}).get(rid) or "error"
    b.ensure()
    wd = b.p("tmp", f"profile-{os.getpid()}-{int(time.time() * 1000) % 10**9}")
    os.makedirs(wd, mode=0o700)
    try:
        result, log, reason, secs = run_bundle(b, "profile", b.p("releases", rid), args.python, args.timeout, extra,
                                               fallback=fb, workdir=wd, allow_root=args.allow_root,
                                               flag="--allow-root")
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    if reason is not None:
        raise Fail(f"profile of {rid} failed: {reason}", EXIT_INPUT if _input_error(result) else EXIT_FAILED,
                   log=log, result=result)
    return {"release": rid, "result": result, "log": log, "seconds": secs, "fallback": fb}


def verb_trust(b: Board, args: argparse.Namespace) -> dict:
    """The trust store: `add` (stdin {"pem": PUBLIC KEY}), `remove FINGERPRINT`, `list`; add/remove under the lock."""
    if args.action == "list":
        return {"keys": sorted(trusted_keys(b))}
    b.require_lock(args.token)
    b.ensure()
    d = b.p(TRUST_DIR)
    os.makedirs(d, mode=0o700, exist_ok=True)
    if stat.S_IMODE(os.lstat(d).st_mode) != 0o700:
        os.chmod(d, 0o700)  # private like the rest of the board dir (a store from an older agent was 0755)
    keys = trusted_keys(b)
    st = b.state()
    if args.action == "add":
        raw = pem_raw(read_stdin().get("pem"))
        fp = key_fingerprint(raw)
        import base64

        pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(SPKI_PREFIX + raw).decode() + "\n-----END PUBLIC KEY-----\n"
        path = os.path.join(d, fp.split(":", 1)[1] + ".pub")
        tmp = f"{path}.tmp{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        write_min_version(b)
        fsync_dir(d)
        st["history"].append({"at": now(), "event": "key-enrolled", "key": fp, "already": fp in keys})
        b.save_state(st)
        return {"key": fp, "already": fp in keys, "keys": sorted(trusted_keys(b))}
    m = FP_RE.match((args.key or "").strip().lower())
    if not m:
        raise Fail(f"bad key fingerprint {args.key!r}: expected ed25519:<32 hex digits>", EXIT_INPUT)
    fp = "ed25519:" + m.group(1)
    if fp not in keys:
        raise Fail(f"key {fp} is not trusted by this board (trusted: {', '.join(sorted(keys)) or 'none'})",
                   EXIT_INPUT)
    if len(keys) == 1 and not args.force:
        raise Fail(f"{fp} is the board's last trusted key: without it the board accepts unsigned bundles again. "
                   "Rotate by enrolling the new key first (enroll new, flash signed with it, revoke old), or pass "
                   "--force", EXIT_INPUT)
    _, cur_signer = release_info(b, b.current())
    os.unlink(keys[fp])
    fsync_dir(d)
    if isinstance(st.get("verified_by"), dict):
        st["verified_by"] = {r: k for r, k in st["verified_by"].items() if k != fp}
    if len(keys) == 1:
        st.pop("board_id", None)  # no key left: the next enrollment records the board again
    st["history"].append({"at": now(), "event": "key-revoked", "key": fp})
    b.save_state(st)
    res = {"key": fp, "removed": True, "keys": sorted(trusted_keys(b))}
    if cur_signer == fp:
        res["warning"] = (f"the current release {b.current()} is signed by the revoked key; it keeps running as it "
                          "is, but it cannot be activated, rolled back to, run or profiled again: flash a release "
                          "signed by a trusted key")
    return res


def write_min_version(b: Board) -> None:
    """trust/agent_min_version = this AGENT_VERSION (never lowered): an older agent must not drive this board."""
    path = b.p(TRUST_DIR, MIN_VERSION_FILE)
    if read_min_version(b) >= AGENT_VERSION:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "w", encoding="utf-8") as fh:
        fh.write(f"{AGENT_VERSION}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_min_version(b: Board) -> int:
    try:
        with open(b.p(TRUST_DIR, MIN_VERSION_FILE), encoding="utf-8") as fh:
            return int(fh.read(32).strip() or 0)
    except (OSError, ValueError):
        return 0


def verb_admit(b: Board, args: argparse.Namespace) -> dict:
    """Before anything of a bundle is staged: its manifest.json (exact bytes) and manifest.sig, on stdin, checked
    against the trust store (edgesdk.runtime.trust) and the current release's version. Writes nothing."""
    b.require_lock(args.token)
    bid = check_id(args.bundle_id, "bundle id")
    import base64
    import binascii

    data = read_stdin()
    try:
        raw = base64.b64decode(str(data.get("manifest") or ""), validate=True)
        manifest = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Fail("admit: stdin needs {'manifest': base64 of manifest.json, 'signature': text or null}",
                   EXIT_INPUT) from None
    if not isinstance(manifest, dict) or manifest.get("bundle_id") != bid:
        raise Fail(f"admit: the manifest is not that of bundle {bid}", EXIT_INPUT)
    sig = data.get("signature")
    what = f"bundle {bid}"
    res = check_signed(b, raw, sig, args.python, what)
    # the board type: the signed manifest's board against the one this board recorded at its first signed admit
    made_for = manifest.get("board") if isinstance(manifest.get("board"), str) else None
    recorded = b.state().get("board_id")
    if res["checked"] and isinstance(recorded, str) and made_for != recorded and not args.other_board:
        raise Fail(f"refused {what}: it is made for board {made_for!r}, and this board is {recorded!r} (recorded "
                   "at its first signed flash); flash --force to install it anyway (recorded in the history); "
                   "nothing was staged", EXIT_INPUT, refused="wrong-board", board=recorded, made_for=made_for)
    version = manifest_version(manifest)
    res.update(admitted=True, release_version=version, trusted_keys=len(trusted_keys(b)),
               downgrade=check_version(b, version, args.allow_downgrade, what))
    if res["checked"]:
        # `need` stages this bundle only with this manifest, under this lock
        st = b.state()
        st["admitted"] = {bid: {"token": args.token, "manifest_sha256": hashlib.sha256(raw).hexdigest(),
                                "at": now()}}
        if not isinstance(st.get("board_id"), str):
            st["board_id"] = args.board or made_for  # the host's board profile id, else the bundle's
            st["history"].append({"at": now(), "event": "board-recorded", "board": st["board_id"]})
        elif made_for != st["board_id"]:
            res["other_board"] = {"board": st["board_id"], "made_for": made_for}
            st["history"].append({"at": now(), "event": "other-board-admitted", "release": bid,
                                  "board": st["board_id"], "made_for": made_for})
        b.save_state(st)
    return res


def verb_state(b: Board, args: argparse.Namespace) -> dict:
    st = b.state()
    return {"current": b.current(), "releases": b.releases(), "state": st, "lock": b.read_lock(),
            "base": b.base}


def verb_cleanup(b: Board, args: argparse.Namespace) -> dict:
    wd = b.p("tmp", check_id(args.workdir, "work dir"))
    shutil.rmtree(wd, ignore_errors=True)
    shutil.rmtree(wd + ".out", ignore_errors=True)
    return {"removed": True}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agent.py")
    p.add_argument("--base", required=True)
    sub = p.add_subparsers(dest="verb", required=True)
    sub.add_parser("probe")
    lk = sub.add_parser("lock")
    lk.add_argument("action", choices=("acquire", "release", "break"))
    lk.add_argument("token")
    lk.add_argument("--ttl", type=float, default=LOCK_TTL)
    lk.add_argument("--who", default="")
    lk.add_argument("--takeover", default="")
    for name in ("need", "commit"):
        s = sub.add_parser(name)
        s.add_argument("area")
        s.add_argument("token")
    s = sub.add_parser("install")
    s.add_argument("bundle_id")
    s.add_argument("token")
    s.add_argument("--python", default=None, help="the interpreter that checks signatures (default: venv's)")
    s = sub.add_parser("activate")
    s.add_argument("bundle_id")
    s.add_argument("token")
    s.add_argument("--python", required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--keep", type=int, default=3)
    s.add_argument("--note", default="")
    s.add_argument("--fallback", default="error")
    s.add_argument("--allow-downgrade", action="store_true")
    s.add_argument("--allow-root", action="store_true", help="run the smoke test as root if nobody cannot run it")
    s = sub.add_parser("rollback")
    s.add_argument("token")
    s.add_argument("--to", default=None)
    s.add_argument("--python", default=None, help="the interpreter that checks signatures (default: the one the "
                   "last activation used, else venv's)")
    s.add_argument("--reason", default="")
    s = sub.add_parser("provision")
    s.add_argument("token")
    s.add_argument("wheelset")
    s.add_argument("--timeout", type=float, default=1800)
    s = sub.add_parser("run")
    s.add_argument("release_id")
    s.add_argument("--python", required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--workdir", required=True)
    s.add_argument("--input", dest="inputs", action="append", default=[])
    s.add_argument("--fallback", default=None, help="default: as recorded at the flash")
    s.add_argument("--allow-root", action="store_true", help="run as root if nobody cannot run the python")
    s = sub.add_parser("profile")
    s.add_argument("release_id")
    s.add_argument("--python", required=True)
    s.add_argument("--timeout", type=float, default=1800)
    s.add_argument("--runs", type=int, default=50)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--per-layer", action="store_true")
    s.add_argument("--layer-runs", type=int, default=10)
    s.add_argument("--frames", type=int, default=None)
    s.add_argument("--engine", action="append", default=[])
    s.add_argument("--no-tuning", action="store_true")
    s.add_argument("--fallback", default=None, help="default: as recorded at the flash")
    s.add_argument("--allow-root", action="store_true", help="run as root if nobody cannot run the python")
    s = sub.add_parser("cleanup")
    s.add_argument("workdir")
    sub.add_parser("state")
    s = sub.add_parser("trust")
    s.add_argument("action", choices=("add", "remove", "list"))
    s.add_argument("token", nargs="?", default="")
    s.add_argument("key", nargs="?", default="")
    s.add_argument("--force", action="store_true")
    s = sub.add_parser("admit")
    s.add_argument("bundle_id")
    s.add_argument("token")
    s.add_argument("--python", default=None, help="the interpreter that checks signatures (default: venv's)")
    s.add_argument("--allow-downgrade", action="store_true")
    s.add_argument("--board", default=None, help="the host's board profile id (recorded at the first signed admit)")
    s.add_argument("--other-board", action="store_true", help="admit a bundle made for another board (flash --force)")
    return p


VERBS = {"probe": verb_probe, "lock": verb_lock, "need": verb_need, "commit": verb_commit,
         "install": verb_install, "activate": verb_activate, "rollback": verb_rollback,
         "provision": verb_provision, "run": verb_run, "profile": verb_profile, "state": verb_state,
         "cleanup": verb_cleanup, "trust": verb_trust, "admit": verb_admit}


def main(argv: list | None = None) -> int:
    args = parser().parse_args(argv)
    os.umask(0o022)
    try:
        b = Board(args.base)
        if args.verb not in ("probe", "state") and read_min_version(b) > AGENT_VERSION:
            raise Fail(f"this board's trust store was set up by agent version {read_min_version(b)}; this agent is "
                       f"version {AGENT_VERSION} (an older edgesdk on the host): upgrade edgesdk on this host",
                       EXIT_INPUT, refused="old-agent", agent_version=AGENT_VERSION,
                       min_version=read_min_version(b))
        res = VERBS[args.verb](b, args)
    except Fail as exc:
        out({"ok": False, "error": str(exc), "code": exc.code, **exc.extra})
        return exc.code
    except OSError as exc:
        code = EXIT_NOSPACE if getattr(exc, "errno", None) == 28 else EXIT_FAILED
        out({"ok": False, "error": f"{type(exc).__name__}: {exc}", "code": code})
        return code
    res.setdefault("ok", True)
    out(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

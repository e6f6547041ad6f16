"""The board-side deploy agent: a stdlib-only script with a fixed set of verbs, run as `python3 agent.py`.

It is part of the board package (edgesdk-runtime): `python -m edgesdk.runtime.agent ...` runs it from the
board's venv, and `edgesdk.deploy.agent` is its compatibility name on the host. Because it must work before
that venv exists (it is what provisions it), it stays one file with no imports outside the standard library:
the host pushes this file into the board's edgesdk dir and calls it over SSH with an argv built
from fixed verbs and quoted arguments; anything larger than a word (file lists, probe queries)
comes as JSON on stdin. Every verb prints one JSON object on stdout. It never runs a shell.

Whatever runs a bundle (activate's smoke test, run, profile) is the board package's own entry point in the
venv, `PY -I -B -m edgesdk.runtime smoke|run|profile BUNDLE --result-line ...` (run_bundle): as nobody when the
agent is root, with rlimits, in its own session, killed at its time limit. No program text is sent.

    python3 agent.py --base DIR probe                      stdin: {"dev_nodes": [...], "tools": [...]}
    python3 agent.py --base DIR lock acquire|release|break TOKEN [--ttl S] [--who TEXT]
    python3 agent.py --base DIR need AREA TOKEN            stdin: {"files": {rel: {"sha256", "size"}}}
    python3 agent.py --base DIR commit AREA TOKEN          stdin: same; .part -> file after sha256
    python3 agent.py --base DIR install BUNDLE_ID TOKEN    staging/ID -> releases/ID (verified)
    python3 agent.py --base DIR activate BUNDLE_ID TOKEN --python PY --timeout S --keep N [--note T] [--fallback cpu]
    python3 agent.py --base DIR rollback TOKEN [--to ID] [--reason TEXT]
    python3 agent.py --base DIR provision TOKEN WHEELSET  stdin: {"wheels": [...], "force": [...]}
    python3 agent.py --base DIR run RELEASE_ID --python PY --timeout S --workdir REL [--input NAME=FILE]...
    python3 agent.py --base DIR profile RELEASE_ID --python PY --timeout S [--runs N ...] [--fallback cpu]
    python3 agent.py --base DIR state

AREA is "staging/<bundle-id>" or "wheels". Layout under DIR (see docs/deploy.md):
venv/ wheels/ releases/<id>/ current -> releases/<id> state.json lock staging/ logs/ tmp/
Exit codes: 0 ok, 1 failed, 2 bad input, 3 no space, 4 locked, 5 smoke test failed (rolled back).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

AGENT_VERSION = 1
EXIT_FAILED, EXIT_INPUT, EXIT_NOSPACE, EXIT_LOCKED, EXIT_SMOKE = 1, 2, 3, 4, 5
LOCK_TTL = 1800.0
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_FILES = 10000
#: optional files beside manifest.json that its files table does not list
OPTIONAL_FILES = ("manifest.sig", "tuning.json")
#: a fallback setting is passed on as one word; the board runtime decides what it means (edgesdk.runtime.fallback)
FALLBACK_RE = re.compile(r"^[a-z]{1,16}$")
SMOKE_LOG_LINES = 60
#: the board runtime's entry point (`python -m edgesdk.runtime VERB ...`, in the board's venv) and what it prints
RUNTIME, RUNTIME_VERBS, RESULT_MARK = "edgesdk.runtime", ("smoke", "run", "profile"), "EDGESDK-RESULT "


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
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
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
        for d in ("", "releases", "staging", "logs", "tmp", "wheels"):
            os.makedirs(self.p(d), mode=0o755, exist_ok=True)

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            with open(self.p("state.json"), encoding="utf-8") as fh:
                st = json.load(fh)
            if isinstance(st, dict):
                st.setdefault("history", [])
                return st
        except (OSError, ValueError):
            pass
        return {"history": []}

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
        try:
            with open(self.p("lock"), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"token": "?", "since": 0}

    def require_lock(self, token: str) -> None:
        lk = self.read_lock()
        if not lk or lk.get("token") != token:
            raise Fail("this flash does not hold the board's lock (another flash took it?)", EXIT_LOCKED)


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
    res["dev_nodes"] = {n: os.path.exists(n) for n in q.get("dev_nodes", []) if isinstance(n, str) and n.startswith("/dev/")}
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
    if args.action == "acquire":
        info = {"token": args.token, "since": time.time(), "who": args.who[:200], "pid": os.getpid()}
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                held = b.read_lock() or {}
                if args.takeover and held.get("token") == args.takeover:
                    os.unlink(path)  # our own lock, left by a flash from this host that died
                    continue
                if held.get("token") == args.token:
                    return {"locked": True, "recovered": recover(b)}
                age = time.time() - float(held.get("since", 0))
                if age > args.ttl:
                    os.unlink(path)  # stale: its holder died long ago
                    continue
                raise Fail(f"board is locked by another flash ({held.get('who', '?')}, {age:.0f}s ago); "
                           "it is released when that flash ends, or after its TTL", EXIT_LOCKED, holder=held)
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            return {"locked": True, "recovered": recover(b)}
        raise Fail("could not take the lock", EXIT_LOCKED)
    if args.action == "release":
        held = b.read_lock()
        if held and held.get("token") == args.token:
            os.unlink(path)
        return {"locked": False}
    if os.path.exists(path):
        os.unlink(path)
    return {"locked": False, "broken": True}


def recover(b: Board) -> str | None:
    """A switch that never reported its smoke result (power cut, agent killed): roll it back."""
    st = b.state()
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
        return {"installed": True, "already": True}
    stage = b.p("staging", bid)
    try:
        with open(os.path.join(stage, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
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
    if "tuning.json" in optional:
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
    for dirpath, dirnames, filenames in os.walk(stage):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    os.makedirs(b.p("releases"), exist_ok=True)
    os.rename(stage, rel_dir)
    fsync_dir(b.p("releases"))
    st = b.state()
    st["history"].append({"at": now(), "event": "installed", "release": bid})
    b.save_state(st)
    return {"installed": True, "already": False}


def _demote(python: str | None = None, limit: float = 30.0):
    """Run the bundle as nobody when we are root: a model file is untrusted input. None (stay) when
    not root, when there is no nobody, or when nobody cannot run `python` (its dirs are private)."""
    if os.getuid() != 0:
        return None
    try:
        import pwd

        pw = pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        return None
    ids = pw.pw_uid, pw.pw_gid
    if python is not None:
        def pre() -> None:
            os.setgroups([])
            os.setgid(ids[1])
            os.setuid(ids[0])
        try:
            r = subprocess.run([python, "-S", "-c", "pass"], preexec_fn=pre, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=min(30.0, limit), cwd="/")
            if r.returncode != 0:
                return None
        except subprocess.TimeoutExpired:
            return ids  # it ran (and hangs): nobody can run it; the smoke test's own limit deals with the hang
        except (OSError, subprocess.SubprocessError):
            return None
    return ids


def check_fallback_word(value: str | None) -> str:
    """The fallback setting as one inert word ("error" when empty). Which values mean what is the board runtime's
    to say (edgesdk.runtime.fallback, the one fallback rule): the runtime refuses a value it does not know."""
    value = value or "error"
    if not FALLBACK_RE.match(value):
        raise Fail(f"bad fallback {value!r}", EXIT_INPUT)
    return value


def run_bundle(b: Board, verb: str, bundle: str, python: str, timeout: float, extra: list,
               fallback: str = "error", workdir: str | None = None) -> tuple:
    """Run the board runtime's own entry point, `python -I -B -m edgesdk.runtime VERB BUNDLE --result-line
    --fallback=F EXTRA...`, in a child: as nobody when we are root, in its own session, with RLIMIT_CORE=0,
    RLIMIT_CPU and RLIMIT_FSIZE, killed (its whole process group) at `timeout`. workdir: its cwd, HOME and
    TMPDIR (made nobody's); default tmp/.

    Returns (result or None, log text, reason or None, seconds): reason says why it failed (timed out, an
    error the runtime reported, a smoke test beyond the tolerance, a crash, no result)."""
    if verb not in RUNTIME_VERBS:
        raise Fail(f"bad runtime verb {verb!r}", EXIT_INPUT)
    fallback = check_fallback_word(fallback)
    if not os.path.isabs(python) or not os.path.isfile(python):
        raise Fail(f"no python at {python!r} on the board (provision first)", EXIT_INPUT)
    ids = _demote(python, timeout)
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
    if ids is None and os.getuid() == 0:
        log = "(ran as root: no user nobody, or nobody cannot run " + python + ")\n" + log
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
    bid = check_id(args.bundle_id, "bundle id")
    args.fallback = check_fallback_word(args.fallback)
    if not os.path.isdir(b.p("releases", bid)):
        raise Fail(f"release {bid} is not installed", EXIT_INPUT)
    if not os.path.isabs(args.python) or not os.path.isfile(args.python):
        raise Fail(f"no python at {args.python!r} on the board (provision first); nothing was switched", EXIT_INPUT)
    st = b.state()
    prev = b.current()
    if prev == bid:
        prev = st.get("previous")
    st["pending"] = {"release": bid, "previous": prev, "since": now()}
    b.save_state(st)
    b.switch(bid)
    try:
        result, log, reason, secs = run_bundle(b, "smoke", b.p("current") + "/", args.python, args.timeout, [],
                                               fallback=args.fallback)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the switch must be undone
        result, log, reason, secs = None, "", f"could not run the smoke test: {type(exc).__name__}: {exc}", 0.0
    logname = f"smoke-{bid}-{int(time.time())}.log"
    with open(b.p("logs", logname), "w", encoding="utf-8") as fh:
        fh.write(log)
    st = b.state()
    st["pending"] = None
    ev = {"at": now(), "release": bid, "smoke_seconds": secs, "log": f"logs/{logname}"}
    if args.note:
        ev["note"] = args.note[:500]
    if args.fallback != "error":
        ev["fallback"] = args.fallback
    if reason is None:
        st["previous"] = prev
        st["current"] = bid
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
                "smoke_seconds": secs, "removed": removed, "fallback": args.fallback}
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
    b.switch(to)
    st["previous"], st["current"], st["pending"] = cur, to, None
    st["history"].append({"at": now(), "event": "rolled-back", "release": cur, "to": to,
                          "reason": args.reason[:300] or "requested"})
    b.save_state(st)
    return {"status": "rolled-back", "from": cur, "current": to}


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
    wd = b.p("tmp", check_id(args.workdir, "work dir"))
    if not os.path.isdir(wd):
        raise Fail("work dir missing", EXIT_INPUT)
    extra = ["--tensors", f"--out-dir={wd}", "--bench=1"]
    for item in args.inputs:
        name, _, fn = item.partition("=")
        check_rel(fn)
        if name and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,200}$", name):
            raise Fail(f"bad input name {name!r}", EXIT_INPUT)
        extra.append(f"--input={name}={os.path.join(wd, fn)}" if name else f"--input={os.path.join(wd, fn)}")
    ids = _demote(args.python)
    if ids is not None:
        os.chown(wd, ids[0], ids[1])
    fb = args.fallback or (b.state().get("fallback") or {}).get(rid) or "error"  # as the release was flashed
    result, log, reason, secs = run_bundle(b, "run", b.p("releases", rid), args.python, args.timeout, extra,
                                           fallback=fb)
    if reason is not None:
        raise Fail(f"run on {rid} failed: {reason}", EXIT_INPUT if _input_error(result) else EXIT_FAILED, log=log)
    return {"release": rid, "result": result, "log": log, "seconds": secs, "fallback": fb}


#: the board runtime's errors that mean bad input (its exit code 2)
INPUT_ERRORS = ("InputError", "BundleError", "InputMismatch")


def _input_error(result: object) -> bool:
    return isinstance(result, dict) and result.get("error") in INPUT_ERRORS


def verb_profile(b: Board, args: argparse.Namespace) -> dict:
    """Profile a release with the installed runtime (`python -m edgesdk.runtime profile RELEASE ...`), in a
    fresh work dir under tmp/ that is removed afterwards; the profile comes back as `result`."""
    rid = _release_dir(b, args.release_id)
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
                                               fallback=fb, workdir=wd)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    if reason is not None:
        raise Fail(f"profile of {rid} failed: {reason}", EXIT_INPUT if _input_error(result) else EXIT_FAILED,
                   log=log, result=result)
    return {"release": rid, "result": result, "log": log, "seconds": secs, "fallback": fb}


def verb_state(b: Board, args: argparse.Namespace) -> dict:
    st = b.state()
    return {"current": b.current(), "releases": b.releases(), "state": st, "lock": b.read_lock(),
            "base": b.base}


def verb_cleanup(b: Board, args: argparse.Namespace) -> dict:
    wd = b.p("tmp", check_id(args.workdir, "work dir"))
    shutil.rmtree(wd, ignore_errors=True)
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
    s = sub.add_parser("activate")
    s.add_argument("bundle_id")
    s.add_argument("token")
    s.add_argument("--python", required=True)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--keep", type=int, default=3)
    s.add_argument("--note", default="")
    s.add_argument("--fallback", default="error")
    s = sub.add_parser("rollback")
    s.add_argument("token")
    s.add_argument("--to", default=None)
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
    s = sub.add_parser("cleanup")
    s.add_argument("workdir")
    sub.add_parser("state")
    return p


VERBS = {"probe": verb_probe, "lock": verb_lock, "need": verb_need, "commit": verb_commit,
         "install": verb_install, "activate": verb_activate, "rollback": verb_rollback,
         "provision": verb_provision, "run": verb_run, "profile": verb_profile, "state": verb_state,
         "cleanup": verb_cleanup}


def main(argv: list | None = None) -> int:
    args = parser().parse_args(argv)
    os.umask(0o022)
    try:
        b = Board(args.base)
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

"""The host's handle on one board's edgesdk dir: pushes the agent and calls its fixed verbs over SSH."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk._proc import pid_alive
from edgesdk.deploy.transport import RemoteCommandError, Transport
from edgesdk.errors import InputError, RemoteError
from edgesdk.paths import home
from edgesdk.runtime.agent import AGENT_VERSION

#: the agent's file, from the board package (edgesdk-runtime) installed beside this host package
AGENT_PATH = Path(importlib.util.find_spec("edgesdk.runtime.agent").origin)  # type: ignore[union-attr,arg-type]
ROOT_DIR, USER_DIR = "/opt/edgesdk", ".edgesdk"

# What the board's python3 runs first: who am I, where is home, is the agent already there (which version), and
# the lowest agent version its trust store allows (trust/agent_min_version).
_WHOAMI = (
    "import hashlib,json,os,re,sys\n"
    "b=sys.argv[1]\n"
    "base=b if b!='-' else ('/opt/edgesdk' if os.getuid()==0 else os.path.join(os.path.expanduser('~'),'.edgesdk'))\n"
    "a=os.path.join(base,'agent.py')\n"
    "d=open(a,'rb').read() if os.path.isfile(a) else None\n"
    "h=hashlib.sha256(d).hexdigest() if d is not None else None\n"
    "m=re.search(rb'^AGENT_VERSION = ([0-9]{1,9})$',d or b'',re.M)\n"
    "v=int(m.group(1)) if m else None\n"
    "try:\n"
    " mv=int(open(os.path.join(base,'trust','agent_min_version')).read(32).strip() or 0)\n"
    "except (OSError,ValueError):\n"
    " mv=0\n"
    "print(json.dumps({'uid':os.getuid(),'base':base,'agent_sha256':h,'agent_version':v,'min_version':mv}))\n"
)


class BoardLocked(RemoteError):
    """Another flash holds the board's lock."""


class NoSpaceError(RemoteError):
    """The board has no room for what must be sent; nothing was switched."""


class SmokeFailed(RemoteError):
    """The smoke test failed or hung on the board; the previous release is current again."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


class AgentTooNew(InputError):
    """The board's agent (or its trust store) is newer than this host's edgesdk: it is not replaced."""


class AgentError(RemoteError):
    """An agent verb failed on the board."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


class AgentInputError(InputError):
    """The board refused what we sent as bad input (a path escaping the bundle, a bad id)."""

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


_CODES = {3: NoSpaceError, 4: BoardLocked}


@dataclass
class RemoteBoard:
    """One board's edgesdk dir, reached through `conn`; the agent is pushed on first use."""

    conn: Transport  # SSHConnection, or FakeTransport in tests
    base: str = ""
    uid: int = -1
    python: str = "python3"
    token: str = ""
    #: fault injection for tests (aktualizr-style fail points): name -> callable(RemoteBoard, **info)
    fail_points: dict | None = None

    def open(self) -> RemoteBoard:
        hint = self.conn.target.remote_dir or "-"
        res = self.conn.run([self.python, "-c", _WHOAMI, hint], timeout=60)
        try:
            info = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise RemoteError(f"the board's python3 gave no answer: {res.stdout[-300:]} {res.stderr[-300:]}") from exc
        self.base, self.uid = info["base"], info["uid"]
        want = hashlib.sha256(AGENT_PATH.read_bytes()).hexdigest()
        theirs, floor = info.get("agent_version"), info.get("min_version") or 0
        if info.get("agent_sha256") != want and (
                (isinstance(theirs, int) and theirs > AGENT_VERSION) or (isinstance(floor, int) and floor > AGENT_VERSION)):
            # an older edgesdk must not replace a newer agent: the board would stop checking what it checks now
            raise AgentTooNew(
                f"{self.conn.target.known_hosts_name}: the board runs edgesdk agent version "
                f"{theirs if isinstance(theirs, int) else '?'}"
                + (f" and its trust store needs at least version {floor}" if floor and floor > AGENT_VERSION else "")
                + f"; this host's edgesdk has agent version {AGENT_VERSION}, older: it does not replace a newer agent. "
                "Upgrade edgesdk on this host (python -m pip install -U edgesdk)")
        if info.get("agent_sha256") != want:
            with self.conn.sftp(f"push agent to {self.base}") as sftp:
                _mkdirs(sftp, self.base)
                tmp = f"{self.base}/agent.py.{secrets.token_hex(4)}"
                sftp.put(str(AGENT_PATH), tmp)
                sftp.chmod(tmp, 0o644)
                sftp.posix_rename(tmp, f"{self.base}/agent.py")
        return self

    @property
    def venv_python(self) -> str:
        return f"{self.base}/venv/bin/python"

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def call(self, verb: str, *args: str, stdin: dict | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Run one agent verb; its JSON answer, or the matching edgesdk error."""
        argv = [self.python, self.path("agent.py"), "--base", self.base, verb, *args]
        data = json.dumps(stdin).encode() if stdin is not None else b""
        res = self.conn.run(argv, stdin=data, timeout=timeout, check=False)
        lines = [ln for ln in res.stdout.strip().splitlines() if ln.startswith("{")]
        try:
            answer = json.loads(lines[-1])
        except (ValueError, IndexError):
            raise RemoteCommandError(argv, res.returncode, res.stderr or res.stdout) from None
        if res.returncode == 0 and answer.get("ok", True):
            return answer
        msg = f"{self.conn.target.known_hosts_name}: {answer.get('error', 'agent failed')}"
        code = answer.get("code", res.returncode)
        if code == 5:
            raise SmokeFailed(msg, answer)
        if code == 2:
            raise AgentInputError(msg, answer)
        raise _CODES.get(code, AgentError)(msg) if code in _CODES else AgentError(msg, answer)

    # -- verbs ---------------------------------------------------------------------------------
    def probe(self, dev_nodes: list[str], tools: list[str]) -> dict[str, Any]:
        return self.call("probe", stdin={"dev_nodes": dev_nodes, "tools": tools})

    def _lock_record(self) -> Path:
        key = hashlib.sha256(f"{self.conn.target.known_hosts_name} {self.base}".encode()).hexdigest()[:20]
        return home() / "locks" / f"{key}.json"

    def lock(self, who: str, ttl: float = 1800) -> dict[str, Any]:
        """Take the board's lock. A lock that a dead flash from this host left (its connection was cut
        before it could release) is taken over, so that a rerun resumes at once."""
        self.token = secrets.token_hex(12)
        rec = self._lock_record()
        takeover = ""
        try:
            old = json.loads(rec.read_text())
            if not _holder_alive(int(old["pid"]), str(old["token"])):
                takeover = str(old["token"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        args = [f"--ttl={ttl}", f"--who={who[:200]}"] + ([f"--takeover={takeover}"] if takeover else [])
        res = self.call("lock", "acquire", self.token, *args)
        ACTIVE_TOKENS.add(self.token)
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"token": self.token, "pid": os.getpid(), "host": self.conn.target.known_hosts_name}))
        tmp.replace(rec)
        return res

    def unlock(self) -> bool:
        """Release the board's lock; True when the board released it (or there was none to release). A failure
        (a cut or stalled connection) is not raised: False, and the caller may retry over a new connection
        (flash._release) with the token it had; a rerun from this host takes it over in any case."""
        if not self.token:
            return True
        token = self.token
        try:
            self.call("lock", "release", token, timeout=30)
            self._lock_record().unlink(missing_ok=True)
            ok = True
        except (RemoteError, OSError, socket.timeout):
            ok = False
        self.forget()
        return ok

    def forget(self) -> None:
        """This flash is over, released or not."""
        ACTIVE_TOKENS.discard(self.token)
        self.token = ""

    def fail_point(self, name: str, **info: Any) -> None:
        if self.fail_points and name in self.fail_points:
            self.fail_points[name](self, **info)


#: Lock tokens of flashes running in this process (a record with our pid and no live token is stale).
ACTIVE_TOKENS: set[str] = set()


def _holder_alive(pid: int, token: str) -> bool:
    if pid == os.getpid():
        return token in ACTIVE_TOKENS
    return pid_alive(pid)


def whoami_host() -> str:
    import getpass

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # noqa: BLE001 - only a label in the lock file
        return "edgesdk"


def _mkdirs(sftp: Any, path: str) -> None:
    """Make `path` (the board dir) and its missing parents: the parents 0755, the board dir itself, when it is made
    here, 0711 (the agent's mode for it; a dir that was there keeps its owner's mode)."""
    parts = [p for p in path.split("/") if p]
    cur = ""
    for i, p in enumerate(parts):
        cur += "/" + p
        try:
            sftp.stat(cur)
        except FileNotFoundError:
            mode = 0o711 if i == len(parts) - 1 else 0o755
            sftp.mkdir(cur, mode)
            sftp.chmod(cur, mode)  # whatever the sshd's umask

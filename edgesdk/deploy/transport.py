"""How the host reaches a board: SSH on paramiko (keys only, host keys always checked, timeouts everywhere,
quoted argv), or FakeTransport, a local directory standing in for the board (tests).

Both have the interface the flash logic uses (`Transport`): connect/close (and `with`), run(argv, stdin=,
timeout=, check=) -> CommandResult, put/get of one file, and sftp(what): a file session (stat, mkdir, chmod,
put, get, open, posix_rename, remove; FakeTransport's also `write_from`, its pipelined upload).

paramiko's exceptions are translated here, at the boundary, into edgesdk's RemoteError tree.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import select
import shlex
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from edgesdk.errors import InputError, RemoteError

# paramiko's transport thread logs its own failures (a banner that never came over a link that was cut or stalled)
# with a traceback at ERROR; with no handler configured, Python's last-resort handler would print that traceback on
# the user's terminal. The failure reaches the user as a ConnectError / LinkStalled with a message instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# Terrapin (CVE-2023-48795): strict kex protects only against servers that speak it
# (OpenSSH >= 9.6). Older boards run older OpenSSH or Dropbear, so refuse the
# affected modes: CBC ciphers and encrypt-then-MAC MACs (paramiko has no chacha20).
TERRAPIN_DISABLED = {
    "ciphers": ["aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc"],
    "macs": [
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha1-etm@openssh.com",
        "hmac-md5-etm@openssh.com",
    ],
}

#: the only MACs a connection may agree on: MD5 and SHA-1 (and their -96 truncations) are refused, so a board that
#: offers nothing else is refused at the key exchange. Every other MAC paramiko knows is disabled
#: (disabled_algorithms()), so that a MAC a future paramiko adds cannot slip in.
ALLOWED_MACS = ("hmac-sha2-256", "hmac-sha2-512")


def disabled_algorithms(preferred_macs: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """paramiko's `disabled_algorithms` for every connection: TERRAPIN_DISABLED, plus each MAC of paramiko's
    preferred list (`preferred_macs`, default paramiko.Transport._preferred_macs) that is not in ALLOWED_MACS."""
    if preferred_macs is None:
        import paramiko

        preferred_macs = tuple(paramiko.Transport._preferred_macs)
    macs = list(TERRAPIN_DISABLED["macs"])
    macs += [m for m in preferred_macs if m not in ALLOWED_MACS and m not in macs]
    return {"ciphers": list(TERRAPIN_DISABLED["ciphers"]), "macs": macs}


#: the most bytes one command's reply may have on stdout (and, separately, on stderr); past it the command is
#: abandoned (its channel closed) and the call fails naming the board and the verb. The agent's biggest answers
#: (a per-layer profile, a smoke log) are well under 1 MiB.
MAX_REPLY_BYTES = 64 << 20


#: AES-GCM first: one pass (no separate HMAC) makes SFTP pushes ~1.3x faster than aes128-ctr +
#: hmac-sha2-256 on both ends, and GCM is not affected by Terrapin (chacha20-poly1305 and CBC-EtM are).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr")


def _transport_factory(*args: object, **kwargs: object):
    import paramiko

    class _Transport(paramiko.Transport):
        _preferred_ciphers = PREFERRED_CIPHERS + tuple(
            c for c in paramiko.Transport._preferred_ciphers if c not in PREFERRED_CIPHERS
        )

        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            #: time.monotonic() of the last packet read from the board (any packet: the link is alive)
            self.last_read = time.monotonic()
            read = self.packetizer.read_message

            def read_message() -> Any:
                msg = read()
                self.last_read = time.monotonic()
                return msg

            self.packetizer.read_message = read_message

    return _Transport(*args, **kwargs)


class HostKeyError(RemoteError):
    """The board's host key is unknown or does not match: no command was sent."""


class ConnectError(RemoteError):
    """The board could not be reached or refused our key."""


class LinkStalled(ConnectError):
    """The connection stayed open but the board stopped answering (a stalled link, not a cut): no reply to a
    keepalive for `stall_timeout` seconds. The connection was closed, so that nothing waits on it any longer."""


class ReplyTooLarge(RemoteError):
    """A command's reply passed SSHTarget.max_reply_bytes: the command was abandoned."""


class RemoteCommandError(RemoteError):
    """A command on the board exited non-zero or timed out."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited with {returncode}"
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        super().__init__(f"remote command {shlex.join(argv)} {status}\n{tail}")


def fingerprint_sha256(key_blob: bytes) -> str:
    """OpenSSH-style fingerprint of a public key blob: 'SHA256:<base64, no padding>'."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach a board. Settings are checked at construction."""

    host: str
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False
    fingerprint: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    keepalive: int = 15
    #: dead-peer detection (OpenSSH's ServerAliveInterval x ServerAliveCountMax): a keepalive that wants a reply is
    #: sent every stall_timeout/4 s; with no reply for stall_timeout s the link is stalled and every call on it
    #: fails (LinkStalled), however long the command it waits for may legitimately run (`flash --stall-timeout`)
    stall_timeout: float = 60.0
    #: The board's edgesdk dir; None: /opt/edgesdk as root, ~/.edgesdk otherwise.
    remote_dir: str | None = None
    #: cap on one command's stdout (and on its stderr): see MAX_REPLY_BYTES
    max_reply_bytes: int = MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        if not self.host or any(c in self.host for c in " \n\t;$`'\""):
            raise InputError(f"bad host name {self.host!r}")
        if not (0 < self.port < 65536):
            raise InputError(f"bad port {self.port} for host {self.host}")
        if self.remote_dir is not None and (not self.remote_dir.startswith("/") or any(
                c in self.remote_dir for c in "\n\r\0")):
            raise InputError(f"--remote-dir must be an absolute path, got {self.remote_dir!r}")
        if self.fingerprint is not None and not self.fingerprint.startswith("SHA256:"):
            raise InputError(f"--fingerprint must look like SHA256:..., got {self.fingerprint!r}")
        if not (0 < self.stall_timeout <= 86400):
            raise InputError(f"--stall-timeout must be > 0 seconds (at most a day), got {self.stall_timeout}")

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @classmethod
    def parse(cls, spec: str, **kw: object) -> SSHTarget:
        """Parse 'user@host[:port]', honouring ~/.ssh/config Host aliases."""
        user, _, hostport = spec.rpartition("@")
        host, port = hostport, None
        if hostport.count(":") == 1:
            host, p = hostport.split(":")
            try:
                port = int(p)
            except ValueError as exc:
                raise InputError(f"bad port in {spec!r}") from exc
        cfg = _ssh_config_lookup(host)
        real_host = cfg.get("hostname", host)
        args: dict[str, object] = {"host": real_host}
        args["port"] = port or int(cfg.get("port", 22))
        args["user"] = user or cfg.get("user", "root")
        if "identityfile" in cfg and "identity" not in kw:
            args["identity"] = Path(cfg["identityfile"][0]).expanduser()
        args.update(kw)
        return cls(**args)  # type: ignore[arg-type]


def _ssh_config_lookup(alias: str) -> dict:
    path = Path.home() / ".ssh" / "config"
    if not path.is_file():
        return {}
    import paramiko

    try:
        return dict(paramiko.SSHConfig.from_path(str(path)).lookup(alias))
    except Exception as exc:  # a broken config is the user's to fix, with the file named
        raise InputError(f"{path}: cannot parse: {exc}") from exc


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


@dataclass
class SSHConnection:
    """A lazily opened, idempotently closed SSH connection to one board."""

    target: SSHTarget
    _client: object | None = field(default=None, init=False, repr=False)
    _watch: _LinkWatch | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> SSHConnection:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        if self._client is not None:
            return
        import paramiko

        t = self.target
        client = paramiko.SSHClient()
        known = t.known_hosts or Path.home() / ".ssh" / "known_hosts"
        if known.is_file():
            try:
                client.load_host_keys(str(known))
            except Exception as exc:
                raise InputError(f"{known}: cannot read known_hosts: {exc}") from exc
        client.set_missing_host_key_policy(_EnrollPolicy(t, known))
        pkey = None
        if t.identity is not None:
            pkey = _load_key(t.identity)
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=pkey is None,
                timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout,
                auth_timeout=t.connect_timeout,
                channel_timeout=t.connect_timeout,
                disabled_algorithms=disabled_algorithms(),
                transport_factory=_transport_factory,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key of {t.known_hosts_name} does not match {known}: expected "
                f"{fingerprint_sha256(exc.expected_key.asbytes())}, got {fingerprint_sha256(exc.key.asbytes())}. "
                "Nothing was sent. If the board was reinstalled, remove its line from known_hosts."
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ConnectError(f"{t.user}@{t.known_hosts_name}: key authentication failed ({exc})") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise ConnectError(f"cannot connect to {t.user}@{t.known_hosts_name}: {exc}") from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(t.keepalive)
            self._watch = _LinkWatch(transport, t.stall_timeout, t.known_hosts_name)
            self._watch.start()
        self._client = client

    def _stall_check(self, what: str, exc: BaseException | None = None) -> None:
        """Raise LinkStalled if the dead-peer detection closed the connection (the real cause of `exc`)."""
        w = self._watch
        if w is not None and w.stalled is not None:
            raise LinkStalled(
                f"{what}: the link to {self.target.known_hosts_name} stalled: the connection stayed open but the "
                f"board answered nothing for {w.stalled:.1f}s (stall timeout {self.target.stall_timeout:g}s); "
                "closed it") from exc

    @property
    def client(self):  # paramiko.SSHClient
        self.connect()
        return self._client

    def run(
        self, argv: list[str], *, timeout: float | None = None, stdin: bytes | None = None, check: bool = True
    ) -> CommandResult:
        """Run one command, given as an argv list; every word is shell-quoted."""
        if isinstance(argv, str) or not argv:
            raise TypeError("run() takes a non-empty argv list, never a shell string")
        cmd = shlex.join(argv)
        limit = timeout if timeout is not None else self.target.command_timeout
        try:
            chan = self.client.get_transport().open_session(timeout=self.target.connect_timeout)
            chan.settimeout(limit)
            chan.exec_command(cmd)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            try:
                out, err = _drain(chan, limit, self.target.max_reply_bytes)
            except _TooLarge as big:
                chan.close()
                raise ReplyTooLarge(
                    f"{self.target.known_hosts_name}: the reply of {_verb_of(argv)} passed "
                    f"{self.target.max_reply_bytes:,} bytes on {big.stream}: refused (the command was abandoned; "
                    "nothing more was read)") from None
            rc = chan.recv_exit_status()
            chan.close()
        except (socket.timeout, TimeoutError) as exc:
            self._stall_check(_verb_of(argv), exc)
            raise RemoteCommandError(argv, None, f"no answer within {limit:.0f}s") from exc
        except Exception as exc:
            import paramiko

            self._stall_check(_verb_of(argv), exc)
            if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
                raise ConnectError(f"connection to {self.target.known_hosts_name} lost: {exc}") from exc
            raise
        self._stall_check(_verb_of(argv))  # the channel was closed under the command: its output is cut short
        res = CommandResult(argv, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and rc != 0:
            raise RemoteCommandError(argv, rc, res.stderr or res.stdout)
        return res

    def put(self, local: str | Path, remote: str, *, mode: int | None = None) -> None:
        """Copy a local file to `remote` over SFTP; the remote file gets `mode` or the local permission bits."""
        local = Path(local)
        if not local.is_file():
            raise InputError(f"cannot copy {local} to the board: not a file")
        perm = mode if mode is not None else stat.S_IMODE(local.stat().st_mode)
        with self._sftp(f"put {local} -> {remote}") as sftp:
            sftp.put(str(local), remote)
            sftp.chmod(remote, perm)

    def get(self, remote: str, local: str | Path) -> None:
        """Copy the board's file `remote` to `local` over SFTP (written to a temp name, then renamed)."""
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(local.name + ".part")
        try:
            with self._sftp(f"get {remote} -> {local}") as sftp:
                sftp.get(remote, str(tmp))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(local)

    def sftp(self, what: str):
        """One SFTP session (a context manager); paramiko and OS errors inside it become RemoteError."""
        return self._sftp(what)

    @contextlib.contextmanager
    def _sftp(self, what: str) -> Iterator:
        """One SFTP session for one transfer; paramiko and OS errors become RemoteError here."""
        import paramiko

        try:
            sftp = self.client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._stall_check(what, exc)
            raise RemoteError(
                f"{self.target.known_hosts_name}: cannot open SFTP ({exc}); the board's sshd needs an sftp "
                "subsystem (OpenSSH's sftp-server; on Dropbear install openssh-sftp-server)"
            ) from exc
        try:
            try:
                sftp.get_channel().settimeout(self.target.command_timeout)
                yield sftp
            except Exception as exc:
                self._stall_check(what, exc)
                raise
        except LinkStalled:
            raise
        except FileNotFoundError as exc:
            raise RemoteError(f"{what}: no such file ({exc})") from exc
        except PermissionError as exc:
            raise RemoteError(f"{what}: permission denied ({exc})") from exc
        except (socket.timeout, TimeoutError) as exc:
            raise RemoteError(f"{what}: no progress within {self.target.command_timeout:.0f}s") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteError(f"{what}: {type(exc).__name__} {exc}".rstrip()) from exc
        finally:
            try:
                sftp.close()
            except (paramiko.SSHException, OSError, EOFError):
                pass  # the connection is already gone; the error above says why

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def _verb_of(argv: list[str]) -> str:
    """What a command is, for messages: the agent's verb (`agent.py --base DIR VERB ...`), else the program."""
    if len(argv) > 4 and argv[2] == "--base":
        return f"agent {argv[4]}"
    return os.path.basename(argv[0])


class _LinkWatch(threading.Thread):
    """Dead-peer detection for one connection: a keepalive that wants a reply (SSH global request
    keepalive@openssh.com; any reply, even "unsupported", proves the board is there) every limit/4 s. When the
    board has sent nothing for `limit` s the link is declared stalled and the transport closed, so that
    whatever waits on it (an SFTP write blocked on a full socket, a command's output, a reply) fails at once.
    Any packet from the board counts (the transport's `last_read`), not only the keepalive's reply: on a slow link
    the keepalive request waits behind MBs of queued SFTP writes, while the board's answers to them keep coming.
    paramiko's own set_keepalive sends no-reply packets: it keeps NATs open but detects nothing."""

    def __init__(self, transport: Any, limit: float, name: str) -> None:
        super().__init__(daemon=True, name=f"linkwatch-{name}")
        self.transport = transport
        self.limit = limit
        self.interval = max(0.1, limit / 4)
        self.last_answer = time.monotonic()
        #: seconds without an answer when the link was declared stalled; None while it is alive
        self.stalled: float | None = None
        self._halt = threading.Event()  # (not `_stop`: that is threading.Thread's own, which join() calls)

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        t = self.transport
        while not self._halt.is_set() and t.is_active():
            answered = threading.Event()
            threading.Thread(target=self._probe, args=(answered,), daemon=True, name=self.name + "-probe").start()
            while not answered.wait(0.05):
                quiet = time.monotonic() - max(self.last_answer, getattr(t, "last_read", 0.0))
                if self._halt.is_set() or not t.is_active():
                    return
                if quiet > self.limit:
                    self.stalled = quiet
                    t.close()  # wakes every call blocked on this connection
                    return
            self._halt.wait(self.interval)

    def _probe(self, answered: threading.Event) -> None:
        try:
            self.transport.global_request("keepalive@openssh.com", wait=True)
            if self.transport.is_active():
                self.last_answer = time.monotonic()
        except Exception:  # noqa: BLE001, S110 - a dead transport: run() sees it inactive
            pass
        finally:
            answered.set()


class _TooLarge(Exception):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.stream = stream


def _drain(chan, limit: float, cap: int = MAX_REPLY_BYTES) -> tuple[bytes, bytes]:
    """Read stdout and stderr together until the command exits; socket.timeout on a stall; _TooLarge as soon as
    either passes `cap` bytes (nothing more is buffered)."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + limit
    while True:
        if chan.recv_ready():
            out += chan.recv(1 << 16)
            if len(out) > cap:
                raise _TooLarge("stdout")
            continue
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(1 << 16)
            if len(err) > cap:
                raise _TooLarge("stderr")
            continue
        if chan.exit_status_ready() or chan.eof_received:
            if not chan.recv_ready() and not chan.recv_stderr_ready():
                if chan.exit_status_ready():
                    break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("command did not finish in time")
        select.select([chan], [], [], min(remaining, 1.0))
    return bytes(out), bytes(err)


def _load_key(path: Path):
    import paramiko

    if not path.is_file():
        raise InputError(f"identity file {path} does not exist")
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(str(path))
        except paramiko.PasswordRequiredException as exc:
            raise InputError(f"identity {path} is passphrase-protected; load it in a key file without one") from exc
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise InputError(f"identity {path} is not a private key paramiko can read ({'; '.join(errors)})")


class _EnrollPolicy:
    """Unknown host keys are refused, unless the user enrolled them (accept-new or a fingerprint)."""

    def __init__(self, target: SSHTarget, known_hosts: Path) -> None:
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname: str, key) -> None:
        fp = fingerprint_sha256(key.asbytes())
        t = self.target
        if t.fingerprint is not None:
            if fp != t.fingerprint:
                raise HostKeyError(f"host key of {hostname} is {fp}, not the expected {t.fingerprint}. Nothing was sent.")
        elif not t.accept_new:
            raise HostKeyError(
                f"unknown host {hostname} (key {key.get_name()} {fp}); refused. Verify the fingerprint on the board "
                "(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then pass --fingerprint "
                f"{fp} or --accept-new."
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        add_known_host(self.known_hosts, hostname, key)


def add_known_host(path: Path, hostname: str, key: Any) -> None:
    """Add `hostname key` to a known_hosts file as OpenSSH's HashKnownHosts does (|1|salt|hash: the file does not
    list the hosts), mode 0600, atomically (edgesdk.paths.write_atomic: the old lines and the new one go to a temp
    file that replaces it). A known_hosts that is a symlink stays one (its target is replaced). Parallel enrolments
    (a fleet, one process per board) take an flock on a sibling `.NAME.lock` around the read-modify-replace, so
    that none loses another's line."""
    import fcntl

    import paramiko

    from edgesdk.paths import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    real = path.resolve() if path.is_symlink() else path
    line = f"{paramiko.HostKeys.hash_host(hostname)} {key.get_name()} {key.get_base64()}\n".encode()
    fd = os.open(real.with_name(f".{real.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            old = real.read_bytes()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        write_atomic(real, old + line, 0o600)
    finally:
        os.close(fd)  # (releases the flock)


class Transport(Protocol):
    """What the flash logic needs from a connection to a board (SSHConnection, FakeTransport)."""

    target: SSHTarget

    def __enter__(self) -> Transport: ...

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None: ...

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def run(self, argv: list[str], *, timeout: float | None = None, stdin: bytes | None = None,
            check: bool = True) -> CommandResult: ...

    def put(self, local: str | Path, remote: str, *, mode: int | None = None) -> None: ...

    def get(self, remote: str, local: str | Path) -> None: ...

    def sftp(self, what: str) -> contextlib.AbstractContextManager[Any]: ...


# -- a local directory standing in for the board ------------------------------------------------------------

@dataclass
class FakeLink:
    """The wire shared by the FakeTransports of one test (each reconnect is a new FakeTransport on it).

    cut_after_bytes: after that many uploaded bytes the connection is cut (a write stops part-way, then
    ConnectError), like tests/netproxy.LinkProxy(cut_after=); set it to None again to heal the link. unreachable: every
    connect fails. commands: every argv run, in order; bytes_written, cuts: counters."""

    cut_after_bytes: int | None = None
    unreachable: bool = False
    commands: list[list[str]] = field(default_factory=list)
    bytes_written: int = 0
    cuts: int = 0

    def verbs(self) -> list[str]:
        """The agent verbs called so far ('whoami' for the bootstrap), in order."""
        out = []
        for argv in self.commands:
            if "-c" in argv[:2]:
                out.append("whoami")
            elif "--base" in argv:
                i = argv.index("--base")
                out.append(argv[i + 2] if len(argv) > i + 2 else "?")
        return out


class FakeTransport:
    """A board that is a local directory: the SSHTarget's remote_dir (the board's edgesdk dir, e.g. a temp dir).

    Commands run here as local processes (the agent with `python3 BASE/agent.py --base BASE ...`, as on a board,
    and through it the runtime's `python -m edgesdk.runtime ...`); file sessions write real files, only under
    that dir (anything else is PermissionError, as a board would refuse it). So flash_bundle's logic (stage,
    verify, switch, smoke, rollback on failure, lock, keep N) runs end to end with no sshd and no qemu:

        target = FakeTransport.target_for(board_dir)
        flash(bundle, profile, target, FlashOptions(python=sys.executable), transport=FakeTransport)
        link = FakeLink(cut_after_bytes=1 << 20)            # faults: a cut connection, an unreachable board
        flash(..., transport=FakeTransport.on(link))

    When this process is root the agent demotes the smoke test to `nobody` as on a board: the board dir and the
    interpreter must then be readable by nobody (a 0755 temp dir, not pytest's 0700 tmp_path; an interpreter
    nobody can run: tests/sshd_fixture.board_python), else the flash fails unless FlashOptions.allow_root_smoke."""

    def __init__(self, target: SSHTarget, link: FakeLink | None = None) -> None:
        if not target.remote_dir:
            raise InputError("FakeTransport needs the target's remote_dir: the local dir that stands in for the board")
        self.target = target
        self.link = link or FakeLink()
        self.root = Path(target.remote_dir)
        self._open = False
        self._written_here = 0

    @staticmethod
    def target_for(board_dir: str | Path, name: str = "fake-board", **kw: Any) -> SSHTarget:
        """An SSHTarget for a FakeTransport: host `name`, remote_dir the board dir (absolute)."""
        return SSHTarget(host=name, remote_dir=str(Path(board_dir).resolve()), **kw)

    @classmethod
    def on(cls, link: FakeLink) -> Callable[[SSHTarget], FakeTransport]:
        """A transport factory (flash(..., transport=)) whose connections share `link`."""
        return lambda target: cls(target, link)

    def __enter__(self) -> FakeTransport:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        if self._open:
            return
        if self.link.unreachable:
            raise ConnectError(f"cannot connect to {self.target.user}@{self.target.known_hosts_name}: "
                               "[FakeTransport] unreachable")
        self._open = True

    def close(self) -> None:
        self._open = False

    def _alive(self) -> None:
        if not self._open:
            raise ConnectError(f"connection to {self.target.known_hosts_name} lost: [FakeTransport] not connected")

    def run(self, argv: list[str], *, timeout: float | None = None, stdin: bytes | None = None,
            check: bool = True) -> CommandResult:
        if isinstance(argv, str) or not argv:
            raise TypeError("run() takes a non-empty argv list, never a shell string")
        self.connect()
        self._alive()
        self.link.commands.append(list(argv))
        limit = timeout if timeout is not None else self.target.command_timeout
        exe = argv[0] if os.path.isabs(argv[0]) else (shutil.which(argv[0]) or argv[0])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root.parent), "LANG": "C.UTF-8"}
        for k in ("EDGESDK_EMULATED", "QEMU_CPU", "OMP_NUM_THREADS"):
            if k in os.environ:
                env[k] = os.environ[k]
        try:
            p = subprocess.run([exe, *argv[1:]], input=stdin or b"", capture_output=True, timeout=limit, env=env,
                               check=False, cwd="/")
        except subprocess.TimeoutExpired as exc:
            raise RemoteCommandError(list(argv), None, f"no answer within {limit:.0f}s") from exc
        except OSError as exc:
            p = subprocess.CompletedProcess(argv, 127, b"", f"{argv[0]}: {exc}".encode())
        for stream, data in (("stdout", p.stdout), ("stderr", p.stderr)):
            if len(data) > self.target.max_reply_bytes:
                raise ReplyTooLarge(f"{self.target.known_hosts_name}: the reply of {_verb_of(list(argv))} passed "
                                    f"{self.target.max_reply_bytes:,} bytes on {stream}: refused")
        res = CommandResult(list(argv), p.returncode, p.stdout.decode("utf-8", "replace"),
                            p.stderr.decode("utf-8", "replace"))
        if check and p.returncode != 0:
            raise RemoteCommandError(list(argv), p.returncode, res.stderr or res.stdout)
        return res

    def put(self, local: str | Path, remote: str, *, mode: int | None = None) -> None:
        local = Path(local)
        if not local.is_file():
            raise InputError(f"cannot copy {local} to the board: not a file")
        with self.sftp(f"put {local} -> {remote}") as f:
            f.put(str(local), remote)
            f.chmod(remote, mode if mode is not None else stat.S_IMODE(local.stat().st_mode))

    def get(self, remote: str, local: str | Path) -> None:
        with self.sftp(f"get {remote} -> {local}") as f:
            f.get(remote, str(local))

    @contextlib.contextmanager
    def sftp(self, what: str) -> Iterator[_LocalFiles]:
        """A file session on the board dir; OS errors become RemoteError, as SSHConnection's do."""
        self.connect()
        self._alive()
        try:
            yield _LocalFiles(self)
        except ConnectError:
            raise
        except FileNotFoundError as exc:
            raise RemoteError(f"{what}: no such file ({exc})") from exc
        except PermissionError as exc:
            raise RemoteError(f"{what}: permission denied ({exc})") from exc
        except OSError as exc:
            raise RemoteError(f"{what}: {type(exc).__name__} {exc}".rstrip()) from exc

    def _cut(self) -> None:
        self.link.cuts += 1
        self._open = False
        raise ConnectError(f"connection to {self.target.known_hosts_name} lost: [FakeTransport] cut after "
                           f"{self.link.bytes_written} bytes")


class _LocalFiles:
    """The subset of paramiko's SFTPClient the flash logic uses, on local files under the fake board's dir."""

    def __init__(self, t: FakeTransport) -> None:
        self.t = t

    def _inside(self, path: str) -> str:
        p = os.path.normpath(path)
        root = os.path.normpath(str(self.t.root))
        if not os.path.isabs(p) or (p != root and not p.startswith(root + os.sep)):
            raise PermissionError(f"{path}: outside the board's dir {root} (FakeTransport)")
        return p

    def stat(self, path: str) -> os.stat_result:
        self.t._alive()
        return os.stat(path)  # reading outside the board dir is allowed (e.g. its parents)

    def lstat(self, path: str) -> os.stat_result:
        self.t._alive()
        return os.lstat(self._inside(path))

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        self.t._alive()
        os.mkdir(self._inside(path), mode)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._inside(path), mode)

    def remove(self, path: str) -> None:
        os.unlink(self._inside(path))

    def posix_rename(self, old: str, new: str) -> None:
        os.replace(self._inside(old), self._inside(new))

    def put(self, local: str, remote: str) -> None:
        self.t._alive()
        shutil.copyfile(local, self._inside(remote))

    def get(self, remote: str, local: str) -> None:
        self.t._alive()
        shutil.copyfile(self._inside(remote), local)

    def open(self, path: str, mode: str = "r") -> Any:
        self.t._alive()
        return open(self._inside(path), mode if "b" in mode else mode + "b")  # the caller closes it

    def write_from(self, local: Path, remote: str, offset: int, progress: Callable[[int], None] | None = None,
                   limit: int | None = None, chunk: int = 255 * 1024) -> int:
        """Write local[offset:] into remote at offset (transfer.upload's job); the link may cut it part-way."""
        self.t._alive()
        dst = self._inside(remote)
        sent = 0
        link = self.t.link
        with open(local, "rb") as src, open(dst, "r+b" if offset else "wb") as out:
            src.seek(offset)
            out.seek(offset)
            while True:
                data = src.read(chunk)
                if not data:
                    break
                if link.cut_after_bytes is not None:
                    room = link.cut_after_bytes - link.bytes_written
                    if room < len(data):
                        out.write(data[:max(room, 0)])
                        link.bytes_written += max(room, 0)
                        out.flush()
                        self.t._cut()
                out.write(data)
                sent += len(data)
                link.bytes_written += len(data)
                if progress:
                    progress(len(data))
                if limit is not None and sent >= limit:
                    break
        return sent


__all__ = [
    "CommandResult",
    "ConnectError",
    "FakeLink",
    "FakeTransport",
    "HostKeyError",
    "LinkStalled",
    "RemoteCommandError",
    "ReplyTooLarge",
    "SSHConnection",
    "SSHTarget",
    "Transport",
    "fingerprint_sha256",
]

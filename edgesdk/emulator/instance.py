"""Emulated board instances: a per-board copy of the cached rootfs, with OpenSSH's sshd on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgesdk._proc import pid_alive
from edgesdk.boards import BoardProfile, list_boards
from edgesdk.deploy.transport import fingerprint_sha256
from edgesdk.emulator.rootfs import ensure_rootfs, require_host, rootfs_path, rootfs_ready
from edgesdk.errors import EmulatorError, EnvironmentProblem
from edgesdk.paths import emulator_dir

#: What the board reports in its marker file; the probe refuses to treat this as hardware.
EMULATED_MARKER = "/etc/edgesdk/emulated.json"
#: Where a real board exposes its device-tree model (/proc/device-tree links here).
DT_MODEL = "/sys/firmware/devicetree/base/model"
SSHD_CONFIG = "/etc/ssh/edgesdk_sshd_config"
HOST_KEY = "/etc/ssh/edgesdk_host_ed25519_key"


@dataclass(frozen=True)
class EmulatorInfo:
    """How to reach one emulated board."""

    board: str
    state: str  # running | stopped | not-built
    emulated: bool
    host: str | None = None
    port: int | None = None
    user: str | None = None
    ssh_target: str | None = None
    key_path: str | None = None
    known_hosts: str | None = None
    host_key_fingerprint: str | None = None
    ssh_command: str | None = None
    qemu_cpu: str | None = None
    arch: str | None = None
    pid: int | None = None
    rootfs: str | None = None
    rootfs_build_seconds: float | None = None
    instance_copy_seconds: float | None = None
    started_at: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def instance_dir(board: BoardProfile | str) -> Path:
    bid = board if isinstance(board, str) else board.id
    return emulator_dir() / bid


def _state_path(board_id: str) -> Path:
    return instance_dir(board_id) / "state.json"


def _write_private(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically (mode set at creation, then renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _new_keypair() -> tuple[bytes, str]:
    """A fresh Ed25519 key pair: (OpenSSH private key bytes, 'ssh-ed25519 AAAA...' public line)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as exc:  # pragma: no cover - host extra brings it
        raise EnvironmentProblem("the emulator needs the 'cryptography' package", fix="pip install 'edgesdk[host]'") from exc
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return priv, pub


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _banner(port: int, timeout: float = 2.0) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = s.recv(256)
    except OSError:
        return None
    line = data.decode("ascii", "replace").strip()
    return line if line.startswith("SSH-2.0-") else None


def _prepare_instance(board: BoardProfile, progress: Callable[[str], None] | None) -> tuple[Path, float | None, float | None]:
    """Make sure the board's own rootfs copy exists; return (rootfs, build_s, copy_s)."""
    base, build_s = ensure_rootfs(board, progress=progress)
    inst = instance_dir(board) / "rootfs"
    copy_s = None
    if not rootfs_ready(inst):
        if progress:
            progress(f"creating the {board.id} board from the cached rootfs")
        t0 = time.monotonic()
        tmp = inst.with_name("rootfs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            ["cp", "-a", "--reflink=auto", f"{base}/.", str(tmp)], capture_output=True, text=True, timeout=600
        )
        if res.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EmulatorError(f"cannot copy rootfs {base} to {tmp}: {res.stderr.strip()}")
        if inst.exists():
            shutil.rmtree(inst)
        os.rename(tmp, inst)
        copy_s = time.monotonic() - t0
    return inst, build_s, copy_s


def _configure(board: BoardProfile, root: Path, port: int, pub_client: str, host_priv: bytes) -> None:
    """Write the board identity, the emulated marker, keys and the sshd config into the rootfs."""
    model = board.detect.device_tree_model[0] if board.detect.device_tree_model else board.name
    dt = root / DT_MODEL.lstrip("/")
    dt.parent.mkdir(parents=True, exist_ok=True)
    # The real file is NUL-terminated; the suffix makes the emulation plain to anyone who reads it.
    dt.write_bytes(f"{model} (emulated by edgesdk)\0".encode())
    marker = root / EMULATED_MARKER.lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps(
            {
                "emulated": True,
                "board": board.id,
                "qemu_cpu": board.emulation.qemu_cpu,
                "qemu_arch": board.emulation.qemu_arch,
                "note": "qemu-user emulation: timings are not the board's",
            },
            indent=2,
        )
    )
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    _write_private(ssh_dir / "authorized_keys", (pub_client + "\n").encode())
    _write_private(root / HOST_KEY.lstrip("/"), host_priv)
    (root / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    conf = f"""# Written by edgesdk for the emulated {board.id}. Loopback only, keys only.
Port {port}
ListenAddress 127.0.0.1
HostKey {HOST_KEY}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
# qemu-user reads QEMU_CPU at every exec, so sessions see the board's core and ISA features.
SetEnv QEMU_CPU={board.emulation.qemu_cpu} EDGESDK_EMULATED=1
PidFile /run/edgesdk-sshd.pid
LogLevel INFO
"""
    (root / SSHD_CONFIG.lstrip("/")).write_text(conf)


def start(board: BoardProfile, *, progress: Callable[[str], None] | None = None, ready_timeout: float = 60) -> EmulatorInfo:
    """Start (building once if needed) the emulated board and return how to reach it.

    Starting a board that already runs returns its current info.
    """
    cur = status(board)
    if cur.state == "running":
        return cur
    require_host(board, need_debootstrap=not rootfs_ready(rootfs_path(board)))
    root, build_s, copy_s = _prepare_instance(board, progress)
    d = instance_dir(board)
    if not (root / "usr" / "sbin" / "sshd").exists():
        raise EmulatorError(f"{root} has no /usr/sbin/sshd", fix=f"rm -rf {d} and start again")
    client_priv, client_pub = _new_keypair()
    host_priv, host_pub = _new_keypair()
    key_path = d / "id_ed25519"
    _write_private(key_path, client_priv)
    (d / "id_ed25519.pub").write_text(client_pub + "\n")
    blob = base64.b64decode(host_pub.split()[1])
    fingerprint = fingerprint_sha256(blob)

    last_err = ""
    for _attempt in range(3):
        port = _free_port()
        _configure(board, root, port, client_pub, host_priv)
        known = d / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        log = d / "sshd.log"
        q = shlex.quote(str(root))
        script = (
            f"mount -t proc proc {q}/proc && "
            f"(mount -t devpts -o newinstance,ptmxmode=0666 devpts {q}/dev/pts 2>/dev/null || true) && "
            f"(mount -t tmpfs -o mode=1777 tmpfs {q}/dev/shm 2>/dev/null || true) && "
            f"exec chroot {q} /usr/sbin/sshd -D -e -f {SSHD_CONFIG}"
        )
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "QEMU_CPU": board.emulation.qemu_cpu,
            "LANG": "C.UTF-8",
        }
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        banner = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            banner = _banner(port, timeout=1.0)
            if banner:
                break
            time.sleep(0.2)
        if banner:
            info = EmulatorInfo(
                board=board.id,
                state="running",
                emulated=True,
                host="127.0.0.1",
                port=port,
                user="root",
                ssh_target=f"root@127.0.0.1:{port}",
                key_path=str(key_path),
                known_hosts=str(known),
                host_key_fingerprint=fingerprint,
                ssh_command=(
                    f"ssh -i {key_path} -p {port} -o UserKnownHostsFile={known} "
                    "-o StrictHostKeyChecking=yes root@127.0.0.1"
                ),
                qemu_cpu=board.emulation.qemu_cpu,
                arch=board.cpu.arch,
                pid=proc.pid,
                rootfs=str(root),
                rootfs_build_seconds=round(build_s, 1) if build_s is not None else None,
                instance_copy_seconds=round(copy_s, 1) if copy_s is not None else None,
                started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            _state_path(board.id).write_text(json.dumps(info.to_dict(), indent=2))
            return info
        _kill_instance(proc.pid, root)
        last_err = log.read_text(errors="replace")[-2000:]
        if "Address already in use" not in last_err:
            break
    raise EmulatorError(
        f"sshd in the emulated {board.id} did not come up within {ready_timeout:.0f}s.\n{last_err.strip()}",
        fix=f"see {instance_dir(board) / 'sshd.log'}; `edgesdk doctor` checks qemu and binfmt_misc",
    )


def _pids_in_root(root: Path) -> list[int]:
    """Processes whose root directory is the instance rootfs (everything running 'on the board')."""
    out = []
    target = str(root.resolve())
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "root") == target:
                out.append(int(p.name))
        except OSError:
            continue
    return out


def _kill_instance(pid: int | None, root: Path) -> None:
    victims = set(_pids_in_root(root))
    if pid is not None and pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for v in victims:
        try:
            os.kill(v, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = [v for v in victims | ({pid} if pid else set()) if pid_alive(v)]
        if not alive:
            break
        time.sleep(0.1)
    for v in set(_pids_in_root(root)) | ({pid} if pid and pid_alive(pid) else set()):
        try:
            os.kill(v, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if pid is not None:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def status(board: BoardProfile) -> EmulatorInfo:
    """Running, stopped or not built; a stale state file (dead sshd) reads as stopped."""
    sp = _state_path(board.id)
    if sp.is_file():
        try:
            data = json.loads(sp.read_text())
            info = EmulatorInfo(**data)
        except (ValueError, TypeError):
            info = None
        if info and info.pid and pid_alive(info.pid) and info.port and _banner(info.port):
            return info
    inst = instance_dir(board) / "rootfs"
    built = rootfs_ready(inst) or rootfs_ready(rootfs_path(board))
    return EmulatorInfo(
        board=board.id,
        state="stopped" if built else "not-built",
        emulated=True,
        qemu_cpu=board.emulation.qemu_cpu,
        arch=board.cpu.arch,
        rootfs=str(inst) if rootfs_ready(inst) else None,
    )


def stop(board: BoardProfile) -> EmulatorInfo:
    """Stop the board's sshd and everything running inside its rootfs. Idempotent."""
    sp = _state_path(board.id)
    pid = None
    if sp.is_file():
        try:
            pid = json.loads(sp.read_text()).get("pid")
        except ValueError:
            pid = None
    root = instance_dir(board) / "rootfs"
    if root.exists():
        _kill_instance(pid, root)
    sp.unlink(missing_ok=True)
    return status(board)


def list_emulators() -> list[EmulatorInfo]:
    return [status(b) for b in list_boards()]


__all__ = ["EmulatorInfo", "instance_dir", "list_emulators", "start", "status", "stop"]

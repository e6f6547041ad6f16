"""Real OpenSSH servers for tests: Debian's /usr/sbin/sshd on 127.0.0.1 with generated keys.

Each `SshdBoard` is one "board": its own sshd on a free port, its own host key, a client key,
a known_hosts file, and a base dir (what /opt/edgesdk is on a real board). The loopback proxy for link
faults (a cut, a stall) is tests/netproxy.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def sshd_skip_reason() -> str | None:
    if not SSHD.is_file():
        return "Debian's openssh-server is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "the sshd fixture runs sshd as root (it logs in as root with a generated key)"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen missing (apt-get install openssh-client)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def public_dir(prefix: str) -> Path:
    """A temp dir every user can traverse: the smoke test runs as `nobody` on the board."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    return d


@dataclass
class SshdBoard:
    root: Path
    port: int
    key: Path
    known_hosts: Path
    base: Path
    proc: subprocess.Popen | None = None
    fingerprint: str = ""
    mounts: list[Path] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def target(self, **kw):
        from edgesdk.deploy.transport import SSHTarget

        args = dict(host="127.0.0.1", port=self.port, user="root", identity=self.key, known_hosts=self.known_hosts,
                    remote_dir=str(self.base))
        args.update(kw)
        return SSHTarget(**args)

    def known_hosts_for(self, port: int) -> Path:
        """A known_hosts file with this board's host key under another port (a proxy's on 127.0.0.1)."""
        line = self.known_hosts.read_text().split(" ", 1)[1]
        p = self.root / f"known_{port}"
        p.write_text(f"[127.0.0.1]:{port} {line}")
        return p

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for m in self.mounts:
            subprocess.run(["umount", "-l", str(m)], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def mount_tmpfs(self, size: str) -> None:
        """Make the board's base dir a small tmpfs (the disk-full fault)."""
        self.base.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(self.base)], check=True,
                       capture_output=True)
        self.mounts.append(self.base)


def start_sshd(name: str = "board", client_key: Path | None = None, extra_config: str = "") -> SshdBoard:
    """extra_config: sshd_config lines added at the end (e.g. "MACs hmac-sha1" for a server that offers only that)."""
    root = public_dir(f"edgesdk-sshd-{name}-")
    hk = root / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk)], check=True)
    if client_key is None:
        client_key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True)
    auth = root / "authorized_keys"
    shutil.copy(f"{client_key}.pub", auth)
    os.chmod(auth, 0o600)
    Path("/run/sshd").mkdir(exist_ok=True)
    base = root / "opt-edgesdk"
    last = ""
    for _ in range(5):
        port = free_port()
        conf = root / "sshd_config"
        conf.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {root}/sshd.pid\n"
            f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\n"
            "Subsystem sftp internal-sftp\nMaxStartups 200\nMaxSessions 50\nLogLevel ERROR\n" + extra_config
        )
        log = open(root / "sshd.log", "wb")  # noqa: SIM115 - lives as long as the server
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        break
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            pub = (root / "host_ed25519.pub").read_text().split()
            kh = root / "known_hosts"
            kh.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
            import base64
            import hashlib

            fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(pub[1])).digest()).decode().rstrip("=")
            return SshdBoard(root, port, client_key, kh, base, proc, fp)
        last = (root / "sshd.log").read_text(errors="replace")
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"sshd did not start: {last}")


def board_python() -> tuple[str, bool]:
    """An interpreter for the "board" (this machine) that `nobody` can run, so that the agent's drop to nobody
    really happens in the tests: (path, allow_root_smoke).

    The host venv's python usually lives under /root or in a 0700 mktemp clone, which nobody cannot enter: run as
    root, the agent then refuses the smoke test (or, with --allow-root-smoke, runs it as root and says so). So when
    we are root this builds what a provisioned board has: a venv (once, in a public temp dir, keyed by the Python,
    the pinned package versions and the runtime's sources) from the system python of the same version, with the
    host's numpy, onnxruntime, cryptography and cffi versions installed from wheels and the edgesdk-runtime wheel
    built from this checkout (edgesdk/runtime/_build.py), readable by all; then checks that nobody can import them.
    When that is impossible (no same-version system python, no nobody, pip cannot fetch the wheels) it returns
    (sys.executable, True): the tests then ask for the smoke test as root explicitly, and the tests that assert the
    nobody uid fail. Not root: (sys.executable, False), no demotion."""
    import hashlib
    import importlib.metadata as md
    import pwd
    import sys

    from edgesdk.runtime import _build

    global _BOARD_PY
    if _BOARD_PY is not None:
        return _BOARD_PY
    if os.geteuid() != 0:
        _BOARD_PY = (sys.executable, False)
        return _BOARD_PY
    _BOARD_PY = (sys.executable, True)
    ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
    system = Path(f"/usr/bin/python{ver}")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return _BOARD_PY
    if not system.is_file():
        return _BOARD_PY
    pins = [f"{d}=={md.version(d)}" for d in ("numpy", "onnxruntime", "cryptography", "cffi")]
    h = hashlib.sha256(f"{system} {pins}".encode())
    for rel, path in _build.sources():
        h.update(rel.encode() + b"\0" + path.read_bytes())
    venv_dir = Path(tempfile.gettempdir()) / f"edgesdk-board-python-{h.hexdigest()[:12]}"
    py = venv_dir / "bin" / "python"
    if not py.is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f"{venv_dir.name}-", dir=tempfile.gettempdir()))
        try:
            os.chmod(tmp, 0o755)
            subprocess.run([str(system), "-m", "venv", "--without-pip", str(tmp / "v")], capture_output=True,
                           check=True, timeout=120)
            wheel = _build.build_wheel(tmp / "w")
            subprocess.run([sys.executable, "-m", "pip", "--python", str(tmp / "v" / "bin" / "python"), "install",
                            "-q", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", *pins,
                            str(wheel)], capture_output=True, check=True, timeout=600)
            for d in [tmp / "v", *(tmp / "v").rglob("*")]:
                if not d.is_symlink():
                    os.chmod(d, 0o755 if d.is_dir() else (d.stat().st_mode | 0o444))
            try:
                os.rename(tmp / "v", venv_dir)
            except OSError:
                pass  # another test process made it first
        except (OSError, subprocess.SubprocessError):
            return _BOARD_PY
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def drop() -> None:
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    probe = "import edgesdk.runtime as r, numpy, onnxruntime, cryptography, os; print(os.path.realpath(r.__file__))"
    try:
        r = subprocess.run([str(py), "-I", "-B", "-c", probe], capture_output=True, text=True, preexec_fn=drop,
                           cwd="/", timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return _BOARD_PY
    where = r.stdout.strip().splitlines()[-1:] if r.returncode == 0 else []
    if where and where[0].startswith(str(venv_dir.resolve()) + os.sep):
        _BOARD_PY = (str(py), False)
    return _BOARD_PY


_BOARD_PY: tuple[str, bool] | None = None


# -- what the tests on a board share: the skip, the flash options, what the board holds --------------------------

def require_sshd() -> None:
    """Skip the caller with sshd_skip_reason() when this host cannot run these servers; under CI, fail instead
    (CI installs them: their absence there is a setup bug)."""
    import pytest

    reason = sshd_skip_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def sshd_board(name: str, **kw) -> Iterator[SshdBoard]:
    """A board fixture's body (`yield from sshd_board("flash")`): start_sshd(name, **kw), stopped afterwards."""
    b = start_sshd(name, **kw)
    yield b
    b.stop()


def local_board(prefix: str) -> Iterator[Path]:
    """A FakeTransport board fixture's body: its base dir (not made yet) inside a public temp dir, removed after."""
    d = public_dir(prefix)
    yield d / "opt-edgesdk"
    shutil.rmtree(d, ignore_errors=True)


def flash_opts(**kw):
    """FlashOptions for a flash onto this machine: board_python()'s interpreter, --allow-root-smoke when it had to
    be root, a 120 s smoke timeout; any of them can be given."""
    from edgesdk.deploy.flash import FlashOptions

    py, root_ok = board_python()
    kw.setdefault("python", py)
    kw.setdefault("smoke_timeout", 120)
    kw.setdefault("allow_root_smoke", root_ok)
    return FlashOptions(**kw)


def bundle_id(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


def _base(board: SshdBoard | Path) -> Path:
    return board.base if isinstance(board, SshdBoard) else Path(board)


def current_release(board: SshdBoard | Path) -> str | None:
    """The release the board's `current` link names (a board, or its base dir), None without one."""
    link = _base(board) / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def release_ids(board: SshdBoard | Path) -> list[str]:
    d = _base(board) / "releases"
    return sorted(os.listdir(d)) if d.is_dir() else []


def staged_ids(board: SshdBoard | Path) -> list[str]:
    d = _base(board) / "staging"
    return sorted(os.listdir(d)) if d.is_dir() else []


# -- test bundles and a board profile for the host itself ----------------------------------------------

def local_profile():
    """A board profile that the host (x86_64 or aarch64, this Python) matches: for sshd 'boards'."""
    import platform
    import sys

    from edgesdk.boards import get_board

    rpi = get_board("rpi4")
    lib, ver = platform.libc_ver()
    arch = platform.machine()
    return rpi.model_copy(update={
        "id": "localhost",
        "cpu": rpi.cpu.model_copy(update={"arch": arch}),
        "os": rpi.os.model_copy(update={"python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                                        "libc": f"glibc {ver}",
                                        "platform_tags": [f"manylinux_2_28_{arch}", f"manylinux2014_{arch}"]}),
        "detect": rpi.detect.model_copy(update={"device_tree_model": [], "dev_nodes": [], "vendor_tools": []}),
        "memory": rpi.memory.model_copy(update={"sizes_mb": [256]}),
    })


def make_test_bundle(root: Path, board: str = "localhost", pad_bytes: int = 0, seed: int = 0,
                     wrong_reference: bool = False) -> Path:
    """A one-segment onnxruntime bundle with reference I/O (and an optional padding blob to make it big)."""
    import numpy as np
    import onnxruntime as ort
    from runtime_bundles import onnx_model, weights

    from edgesdk.runtime.manifest import (
        MANIFEST, Manifest, Segment, TensorSpec, canonical_json, sha256_file,
    )

    root.mkdir(parents=True, exist_ok=True)
    wt = weights(seed)
    onnx_model("all", wt, root / "model.onnx")
    (root / "reference").mkdir(exist_ok=True)
    x = np.random.default_rng(seed + 1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    sess = ort.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
    if wrong_reference:
        y = y * 2 + 1
    np.save(root / "reference" / "input_0.npy", x)
    np.save(root / "reference" / "output_0.npy", y)
    if pad_bytes:
        with open(root / "blob.bin", "wb") as fh:
            rng = np.random.default_rng(seed + 7)
            left = pad_bytes
            while left > 0:
                n = min(left, 16 << 20)
                fh.write(rng.bytes(n))
                left -= n
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    xs = TensorSpec("x", (1, 3, 16, 16), "float32")
    ys = TensorSpec("logits", (1, 10), "float32")
    seg = Segment("s0", "onnxruntime", {"model": "model.onnx"}, (xs,), (ys,), options={"threads": 1})
    m = Manifest(board=board, precision="fp32", inputs=(xs,), outputs=(ys,), segments=(seg,), files=files,
                 source_model={"name": "tiny", "sha256": "0" * 64, "opset": 13},
                 reference_inputs={"x": "reference/input_0.npy"}, reference_outputs={"logits": "reference/output_0.npy"})
    d = m.to_dict()
    d["bundle_id"] = m.content_id()
    (root / MANIFEST).write_bytes(canonical_json(d))
    return root

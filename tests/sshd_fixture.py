"""Real OpenSSH servers for tests: Debian's /usr/sbin/sshd on 127.0.0.1 with generated keys.

Each `SshdBoard` is one "board": its own sshd on a free port, its own host key, a client key,
a known_hosts file, and a base dir (what /opt/edgesdk is on a real board). Also a loopback TCP
proxy that cuts the connection after N bytes (the dropped-connection fault).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
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


def start_sshd(name: str = "board", client_key: Path | None = None) -> SshdBoard:
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
            "Subsystem sftp internal-sftp\nMaxStartups 200\nMaxSessions 50\nLogLevel ERROR\n"
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


class CutProxy:
    """127.0.0.1:<port> -> sshd; after `limit` client->server bytes it cuts every connection (once armed)."""

    def __init__(self, dest_port: int, limit: int | None = None) -> None:
        self.dest_port = dest_port
        self.limit = limit
        self.sent = 0
        self.cuts = 0
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(16)
        self.port = self._srv.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.dest_port))
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                if upstream and self.limit is not None:
                    room = self.limit - self.sent
                    if room <= 0 or len(data) > room:
                        b.sendall(data[: max(room, 0)])
                        self.sent += max(room, 0)
                        self.cuts += 1
                        break
                    self.sent += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                x.close()

    def close(self) -> None:
        self._stop = True
        self._srv.close()


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

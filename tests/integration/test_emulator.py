"""Integration: start the emulated rpi4 (debootstrap + qemu-user + real sshd) and read aarch64 over SSH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgesdk import emulator
from edgesdk.boards import get_board
from edgesdk.deploy.transport import HostKeyError, SSHConnection, SSHTarget

pytestmark = pytest.mark.integration


def _skip_reason() -> str | None:
    chk = emulator.check_host(get_board("rpi4"), need_debootstrap=True)
    if not chk.ok:
        return "emulated boards unavailable here: " + "; ".join(chk.problems) + " (fix: " + " && ".join(chk.fixes) + ")"
    return None


@pytest.fixture(scope="module")
def rpi4():
    reason = _skip_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs these; their absence there is a setup bug
        pytest.skip(reason)
    board = get_board("rpi4")
    was_running = emulator.status(board).state == "running"
    info = emulator.start(board)
    yield info
    if not was_running:
        emulator.stop(board)


def test_uname_over_real_ssh(rpi4):
    target = SSHTarget(host=rpi4.host, port=rpi4.port, user="root", identity=Path(rpi4.key_path),
                       known_hosts=Path(rpi4.known_hosts))
    with SSHConnection(target) as conn:
        assert conn.run(["uname", "-m"]).stdout.strip() == "aarch64"
        # The board sees its own core through QEMU_CPU, and says it is emulated.
        out = conn.run(["sh", "-c", "echo $QEMU_CPU; cat /etc/edgesdk/emulated.json"]).stdout
        assert "cortex-a72" in out and '"emulated": true' in out
        model = conn.run(["cat", "/sys/firmware/devicetree/base/model"]).stdout
        assert "Raspberry Pi 4" in model and "emulated" in model
        # Arguments are passed inert: no shell expansion of a hostile word.
        res = conn.run(["echo", "$(id); rm -rf /tmp/x\nnext"])
        assert res.stdout == "$(id); rm -rf /tmp/x\nnext\n"
        py = conn.run(["python3", "-c", "import platform; print(platform.machine())"]).stdout.strip()
        assert py == "aarch64"


def test_unknown_host_key_is_refused(rpi4, tmp_path):
    target = SSHTarget(host=rpi4.host, port=rpi4.port, user="root", identity=Path(rpi4.key_path),
                       known_hosts=tmp_path / "empty_known_hosts")
    with pytest.raises(HostKeyError, match="unknown host"):
        SSHConnection(target).connect()
    # enrolling the right fingerprint works and records it
    ok = SSHTarget(host=rpi4.host, port=rpi4.port, user="root", identity=Path(rpi4.key_path),
                   known_hosts=tmp_path / "kh", fingerprint=rpi4.host_key_fingerprint)
    with SSHConnection(ok) as conn:
        assert conn.run(["true"]).returncode == 0
    # recorded hashed (HashKnownHosts style), 0600, and it is the board's key
    import paramiko

    text = (tmp_path / "kh").read_text()
    assert text.startswith("|1|") and rpi4.host not in text
    assert (tmp_path / "kh").stat().st_mode & 0o777 == 0o600
    entry = paramiko.HostKeys(str(tmp_path / "kh")).lookup(f"[{rpi4.host}]:{rpi4.port}")
    assert entry is not None and "ssh-ed25519" in entry


def test_changed_host_key_is_refused(rpi4, tmp_path):
    kh = tmp_path / "known_hosts"
    # a different (valid) ed25519 key recorded for this host:port
    kh.write_text(f"[{rpi4.host}]:{rpi4.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    target = SSHTarget(host=rpi4.host, port=rpi4.port, user="root", identity=Path(rpi4.key_path), known_hosts=kh)
    with pytest.raises(HostKeyError, match="does not match"):
        SSHConnection(target).connect()


def test_start_is_idempotent_and_status_running(rpi4):
    again = emulator.start(get_board("rpi4"))
    assert again.port == rpi4.port
    assert emulator.status(get_board("rpi4")).state == "running"


def test_cached_rootfs_exists(rpi4):
    assert Path(rpi4.rootfs, "usr", "sbin", "sshd").exists()
    assert shutil.which("qemu-aarch64-static")

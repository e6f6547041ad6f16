"""Emulated boards: a Debian rootfs of the board's architecture under qemu-user, with sshd on loopback."""

from edgesdk.emulator.instance import EmulatorInfo, instance_dir, list_emulators, start, status, stop
from edgesdk.emulator.rootfs import check_host, ensure_rootfs, rootfs_path

__all__ = [
    "EmulatorInfo",
    "check_host",
    "ensure_rootfs",
    "instance_dir",
    "list_emulators",
    "rootfs_path",
    "start",
    "status",
    "stop",
]

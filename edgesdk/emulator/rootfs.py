"""Build and cache the Debian rootfs of an emulated board (debootstrap + qemu-user-static via binfmt_misc)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgesdk.boards import BoardProfile
from edgesdk.errors import EmulatorError
from edgesdk.paths import rootfs_cache

#: Packages the emulated board gets: sshd to reach it, Python and venv for the runtime.
ROOTFS_PACKAGES = (
    "openssh-server",
    "python3",
    "python3-venv",
    "ca-certificates",
    "procps",
    "iproute2",
)
#: Bump to invalidate cached rootfs trees when the recipe changes.
RECIPE_VERSION = 1
MARKER = ".edgesdk-rootfs.json"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def debian_mirror() -> str:
    return os.environ.get("EDGESDK_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def recipe_key(board: BoardProfile) -> str:
    e = board.emulation
    recipe = f"{RECIPE_VERSION}|{e.debian_arch}|{e.debian_suite}|{','.join(ROOTFS_PACKAGES)}"
    return f"{e.debian_arch}-{e.debian_suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def rootfs_path(board: BoardProfile) -> Path:
    return rootfs_cache() / recipe_key(board)


@dataclass(frozen=True)
class HostCheck:
    ok: bool
    problems: tuple[str, ...]
    fixes: tuple[str, ...]


def check_host(board: BoardProfile, need_debootstrap: bool = True) -> HostCheck:
    """What this host lacks to emulate `board`, with the exact fix for each gap."""
    problems, fixes = [], []
    arch = board.emulation.qemu_arch
    if os.geteuid() != 0:
        problems.append("emulated boards need root (chroot, mount namespaces, debootstrap)")
        fixes.append("run as root, e.g. sudo -E edgesdk emulator start " + board.id)
    qemu = shutil.which(f"qemu-{arch}-static")
    if qemu is None:
        problems.append(f"qemu-{arch}-static is not installed")
        fixes.append("apt-get install qemu-user-static binfmt-support")
    if not (BINFMT / "status").exists():
        problems.append("binfmt_misc is not mounted")
        fixes.append("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable")
    else:
        entry = BINFMT / f"qemu-{arch}"
        if not entry.exists():
            problems.append(f"no binfmt_misc handler for {arch} ({entry} missing)")
            fixes.append(f"update-binfmts --enable qemu-{arch}")
        else:
            text = entry.read_text()
            if not text.startswith("enabled"):
                problems.append(f"binfmt_misc handler qemu-{arch} is disabled")
                fixes.append(f"update-binfmts --enable qemu-{arch}")
            flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
            if "F" not in flags:
                problems.append(f"binfmt_misc handler qemu-{arch} lacks the F (fix-binary) flag, so it fails in a chroot")
                fixes.append("apt-get install --reinstall qemu-user-static (Debian registers it with flags PF)")
    if need_debootstrap and shutil.which("debootstrap") is None:
        problems.append("debootstrap is not installed")
        fixes.append("apt-get install debootstrap")
    if shutil.which("unshare") is None or shutil.which("chroot") is None:
        problems.append("util-linux unshare / coreutils chroot missing")
        fixes.append("apt-get install util-linux coreutils")
    return HostCheck(not problems, tuple(problems), tuple(dict.fromkeys(fixes)))


def require_host(board: BoardProfile, need_debootstrap: bool) -> None:
    chk = check_host(board, need_debootstrap)
    if not chk.ok:
        raise EmulatorError(
            f"cannot emulate {board.id}: " + "; ".join(chk.problems), fix=" && ".join(chk.fixes)
        )


def rootfs_ready(path: Path) -> bool:
    return (path / MARKER).is_file()


def ensure_rootfs(
    board: BoardProfile, *, progress: Callable[[str], None] | None = None, timeout: float = 1800
) -> tuple[Path, float | None]:
    """Return the cached rootfs for the board's architecture, building it once.

    Returns (path, build_seconds); build_seconds is None when the cache was used.
    The tree is built in a temporary sibling directory and renamed into place, so an
    interrupted build never leaves a half-made rootfs behind as if it were complete.
    """
    path = rootfs_path(board)
    if rootfs_ready(path):
        return path, None
    require_host(board, need_debootstrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    debs = rootfs_cache() / "debs" / board.emulation.debian_arch
    debs.mkdir(parents=True, exist_ok=True)
    e = board.emulation
    argv = [
        "debootstrap",
        f"--arch={e.debian_arch}",
        "--variant=minbase",
        f"--include={','.join(ROOTFS_PACKAGES)}",
        f"--cache-dir={debs}",
        e.debian_suite,
        str(tmp),
        debian_mirror(),
    ]
    if progress:
        progress(f"building {e.debian_arch} Debian {e.debian_suite} rootfs with debootstrap (once; ~2-3 min)")
    t0 = time.monotonic()
    log = path.with_name(f"{path.name}.build.log")
    try:
        with open(log, "w") as fh:
            proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmulatorError(f"debootstrap did not finish in {timeout:.0f}s (log: {log})") from exc
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise EmulatorError(
            f"debootstrap failed with exit {proc.returncode}: {' '.join(argv)}\n{tail}",
            fix=f"check network access to {debian_mirror()} (or set EDGESDK_DEBIAN_MIRROR); full log: {log}",
        )
    # Trim what a board never needs: apt lists and the deb cache inside the tree.
    shutil.rmtree(tmp / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    (tmp / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    seconds = time.monotonic() - t0
    (tmp / MARKER).write_text(
        json.dumps(
            {
                "recipe": recipe_key(board),
                "debian_arch": e.debian_arch,
                "suite": e.debian_suite,
                "packages": list(ROOTFS_PACKAGES),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(seconds, 1),
            },
            indent=2,
        )
    )
    if path.exists():  # a stale, unmarked tree from an interrupted older build
        shutil.rmtree(path)
    os.rename(tmp, path)
    return path, seconds


__all__ = ["ROOTFS_PACKAGES", "check_host", "ensure_rootfs", "rootfs_path", "rootfs_ready"]

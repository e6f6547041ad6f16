"""Confinement of a child process that runs untrusted code (a TorchScript archive's own code, see
`edgesdk.frontends`): the child calls `confine()` on itself after importing what it needs and before it opens
the untrusted file.

What `confine()` does, in this order (each step is enforced by the kernel, not by the child's good will):

1. rlimits: address space, CPU seconds, size of any one written file, open files; no core dumps.
2. ``PR_SET_NO_NEW_PRIVS``: no set-uid binary can give privileges back.
3. Linux Landlock (kernel >= 5.13, an unprivileged LSM that also binds root): the process and every process it
   starts may read only the interpreter's and the system's library folders (plus what `read` names), may write,
   create or delete only inside `write` (the child's fresh temporary folder) and /dev/null, may not connect or
   bind TCP sockets (Landlock ABI >= 4), and may not signal or reach abstract unix sockets of processes outside
   (ABI >= 6). A secret such as ~/.ssh/id_ed25519 or /etc/shadow cannot be read, whatever its mode.
4. When running as root: a new network namespace (no network at all), then the drop to ``nobody`` (setgroups,
   setgid, setuid: every capability is gone, and files mode 0600 of any other user are unreadable too).

Why Landlock rather than only ``nobody`` or a user+mount namespace: ``nobody`` can still write to /tmp,
/var/tmp and /dev/shm and read every world-readable file; a mount namespace needs root or unprivileged user
namespaces (often disabled) and in a user namespace the uid cannot also drop to ``nobody``. Landlock works for
any user, needs no set-up, and confines reads and writes to an allow-list. Without Landlock there is no
confinement edgesdk trusts, so `require()` refuses (EnvironmentProblem) rather than run the code unconfined.

Not covered: UDP sockets of a non-root user (Landlock has no UDP rules; as root the child has no network at
all), and a process the code leaves running (it keeps every restriction; the parent kills the child's process
group when it is done).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Iterable
from pathlib import Path

from edgesdk.errors import EnvironmentProblem

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000

# filesystem rights (include/uapi/linux/landlock.h)
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the rights a rule on a file may carry
NOBODY = 65534

#: system folders a Python process with numpy/torch reads after start-up (shared libraries, locale, zoneinfo)
SYSTEM_READ = ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64", "/usr/share/zoneinfo",
               "/etc/ld.so.cache", "/etc/localtime", "/proc/self", "/proc/cpuinfo", "/proc/meminfo",
               "/sys/devices/system/cpu", "/sys/fs/cgroup", "/dev/urandom", "/dev/random")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (kernel < 5.13, not in the LSM list, seccomp)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        v = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                         ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return int(v) if v > 0 else 0


def require() -> int:
    """The Landlock ABI, or EnvironmentProblem when this kernel cannot confine a child."""
    abi = landlock_abi()
    if abi < 1:
        raise EnvironmentProblem(
            "running a TorchScript archive's code needs a confined process, and this kernel has no Linux "
            "Landlock (kernel >= 5.13 with landlock in the LSM list, not blocked by seccomp)",
            fix="export the model to ONNX yourself where you trust it (torch.onnx.export) and give edgesdk the "
                ".onnx, or run edgesdk on a kernel with Landlock")
    return abi


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _landlock(read: Iterable[str], write: Iterable[str], abi: int) -> None:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled, (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    fd = libc.syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size),
                      ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    read_rights = READ_FILE | READ_DIR | EXECUTE
    write_rights = handled
    try:
        rules = [(p, read_rights) for p in read] + [(p, write_rights) for p in write]
        rules.append(("/dev/null", READ_FILE | WRITE_FILE | (TRUNCATE if abi >= 3 else 0)))
        for path, rights in rules:
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this system
            try:
                if not os.path.isdir(path):
                    rights &= _FILE_ONLY
                rule = _PathBeneath(rights & handled, pfd)
                if libc.syscall(ctypes.c_long(_SYS_ADD_RULE), ctypes.c_int(fd), ctypes.c_int(_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(pfd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def _rlimits(memory_bytes: int, cpu_seconds: int, file_bytes: int) -> None:
    for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, memory_bytes),
                       (resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_FSIZE, file_bytes),
                       (resource.RLIMIT_NOFILE, 1024)):
        _soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and value > hard:
            value = hard
        resource.setrlimit(res, (value, value))


def python_read_paths() -> list[str]:
    """What the interpreter may need to read after start-up: its prefixes and every sys.path folder inside them;
    a sys.path folder outside them (an editable install's source tree) only for its edgesdk package."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    out = sorted(prefixes)
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if any(real == p or real.startswith(p + os.sep) for p in prefixes):
            continue
        pkg = os.path.join(real, "edgesdk")
        if os.path.isdir(pkg):
            out.append(pkg)
    return out


def confine(write_dir: str | Path, *, read: Iterable[str] = (), memory_bytes: int = 8 << 30,
            cpu_seconds: int = 900, file_bytes: int = 2**31 - 1, drop_root: bool = True) -> dict[str, object]:
    """Confine the calling process (see the module docstring); returns what was applied. Raises OSError when
    Landlock cannot be applied: the caller must then not run the untrusted code. `drop_root=False` (tests:
    Landlock alone, as root) keeps the uid."""
    abi = require()
    _rlimits(memory_bytes, cpu_seconds, file_bytes)
    wd = os.path.realpath(write_dir)
    _landlock([*python_read_paths(), *SYSTEM_READ, *read], [wd], abi)
    applied: dict[str, object] = {"landlock_abi": abi, "write": wd, "uid": os.getuid(), "network": "no TCP"}
    if os.getuid() == 0 and drop_root:
        libc = _libc()
        if libc.unshare(_CLONE_NEWNET) == 0:
            applied["network"] = "none (own network namespace)"
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        if os.getuid() != NOBODY or os.geteuid() != NOBODY:
            raise OSError("the drop to nobody did not hold")
        applied["uid"] = NOBODY
    return applied


__all__ = ["NOBODY", "confine", "landlock_abi", "python_read_paths", "require"]

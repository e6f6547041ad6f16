"""The ELF header reader and the per-triple check, on real files and on crafted headers."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from edgesdk.cross.elf import EM_AARCH64, EM_ARM, NotElfError, check_elf, is_elf, read_elf


def _compile(tmp_path: Path, cc: str, flags: list[str], name: str) -> Path:
    if shutil.which(cc) is None:
        reason = f"{cc} not installed (bash scripts/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    out = tmp_path / name
    subprocess.run([cc, *flags, str(src), "-o", str(out)], check=True, capture_output=True, timeout=120)
    return out


def test_real_aarch64_executable(tmp_path):
    exe = _compile(tmp_path, "aarch64-linux-gnu-gcc", ["-mcpu=cortex-a72"], "hello")
    info = read_elf(exe)
    assert (info.bits, info.machine, info.machine_name, info.kind) == (64, EM_AARCH64, "aarch64", "executable")
    assert info.little_endian and info.float_abi is None and info.interpreter == "/lib/ld-linux-aarch64.so.1"
    assert info.glibc_required and tuple(map(int, info.glibc_required.split("."))) >= (2, 17)
    assert check_elf(info, "aarch64-linux-gnu").ok
    bad = check_elf(info, "arm-linux-gnueabihf")
    assert not bad.ok and any("machine is aarch64" in p for p in bad.problems)


def test_real_armhf_shared_library(tmp_path):
    lib = _compile(tmp_path, "arm-linux-gnueabihf-gcc", ["-shared", "-fPIC", "-mcpu=cortex-a53", "-mfpu=neon-vfpv4"], "libx.so")
    info = read_elf(lib)
    assert (info.bits, info.machine, info.kind, info.eabi_version, info.float_abi) == (32, EM_ARM, "shared-library", 5, "hard")
    assert info.interpreter is None
    assert check_elf(info, "arm-linux-gnueabihf").ok
    assert "EABI5 hard-float" in info.describe()
    assert not check_elf(info, "aarch64-linux-gnu").ok


def test_host_binary_does_not_fit_the_boards():
    true = Path(shutil.which("true") or "/bin/true")
    info = read_elf(true)
    assert info.machine_name == "x86-64" or info.machine_name != "aarch64"
    for triple in ("aarch64-linux-gnu", "arm-linux-gnueabihf"):
        chk = check_elf(info, triple)
        assert not chk.ok and chk.problems


def _elf32_arm(flags: int, e_type: int = 3) -> bytes:
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIIIIIHHHHHH", e_type, EM_ARM, 1, 0, 0, 0, flags, 52, 32, 0, 40, 0, 0)


@pytest.mark.parametrize(
    "flags,abi,ok",
    [(0x05000400, "hard", True), (0x05000200, "soft", False), (0x05000000, "unspecified", False), (0x04000400, "hard", False)],
)
def test_arm_float_abi_and_eabi_version(tmp_path, flags, abi, ok):
    f = tmp_path / "x.so"
    f.write_bytes(_elf32_arm(flags))
    info = read_elf(f)
    assert info.float_abi == abi and info.kind == "shared-library"
    chk = check_elf(info, "arm-linux-gnueabihf")
    assert chk.ok is ok
    if abi == "soft":
        assert any("soft-float ABI" in p for p in chk.problems)


def test_glibc_requirement_against_the_board(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(_elf32_arm(0x05000400, e_type=2) + b"\0GLIBC_2.4\0GLIBC_2.34\0GLIBC_2.17\0")
    info = read_elf(f)
    assert info.glibc_required == "2.34" and info.kind == "executable"
    assert check_elf(info, "arm-linux-gnueabihf", board_glibc="2.36").ok
    chk = check_elf(info, "arm-linux-gnueabihf", board_glibc="2.31")
    assert chk.problems == ("needs glibc 2.34, the board has 2.31",)


def test_not_elf(tmp_path):
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\necho hi\n" * 10)
    assert not is_elf(f)
    with pytest.raises(NotElfError):
        read_elf(f)
    (tmp_path / "short").write_bytes(b"\x7fELF\x02")
    with pytest.raises(NotElfError):
        read_elf(tmp_path / "short")
    with pytest.raises(ValueError, match="no ELF expectations"):
        check_elf(read_elf(Path(shutil.which("true") or "/bin/true")), "riscv64-linux-gnu")


def test_vendor_soft_float_expectation(tmp_path):
    f = tmp_path / "himix.so"
    f.write_bytes(_elf32_arm(0x05000200))
    info = read_elf(f)
    assert check_elf(info, "arm-linux-gnueabihf", float_abi="soft").ok
    assert not check_elf(info, "arm-linux-gnueabihf").ok
    with pytest.raises(ValueError):
        check_elf(info, "arm-linux-gnueabihf", float_abi="softfp")

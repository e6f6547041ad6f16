"""Read the ELF header of a built file and check that it fits a board: machine, class, ARM float ABI."""

from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
EM_ARM, EM_X86_64, EM_AARCH64 = 40, 62, 183
MACHINE_NAMES = {3: "x86", 8: "mips", 20: "ppc", 21: "ppc64", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}
ET_NAMES = {0: "none", 1: "relocatable", 2: "executable", 3: "shared-object", 4: "core"}
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_ABI_VER5 = 0x05000000
EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400
PT_INTERP = 3

#: What each cross triple must produce.
EXPECTED: dict[str, dict[str, object]] = {
    "aarch64-linux-gnu": {"machine": EM_AARCH64, "bits": 64, "float_abi": None},
    "arm-linux-gnueabihf": {"machine": EM_ARM, "bits": 32, "float_abi": "hard"},
}


class NotElfError(ValueError):
    """The file is not an ELF file (or is truncated)."""


@dataclass(frozen=True)
class ElfInfo:
    """The facts of one ELF header that decide whether it can run on a board."""

    path: str
    bits: int  # 32 | 64
    little_endian: bool
    type: str  # e_type: executable | shared-object | relocatable | ...
    kind: str  # executable (including PIE) | shared-library | object | other
    machine: int
    machine_name: str
    flags: int
    eabi_version: int | None  # ARM only: 5 for every current toolchain
    float_abi: str | None  # ARM only: hard | soft | unspecified; None elsewhere
    interpreter: str | None  # dynamic loader, e.g. /lib/ld-linux-aarch64.so.1
    glibc_required: str | None  # highest GLIBC_x.y version the file references

    def describe(self) -> str:
        parts = [f"ELF{self.bits}", self.machine_name, self.kind]
        if self.machine == EM_ARM:
            parts.append(f"EABI{self.eabi_version} {self.float_abi}-float")
        if self.glibc_required:
            parts.append(f"needs glibc >= {self.glibc_required}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ElfCheck:
    """Whether an ELF file fits a cross triple, and what does not if it does not."""

    info: ElfInfo
    triple: str
    ok: bool
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"info": self.info.to_dict(), "triple": self.triple, "ok": self.ok, "problems": list(self.problems)}


def is_elf(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def read_elf(path: str | Path) -> ElfInfo:
    """Parse the ELF identification, header and program headers of `path`. NotElfError otherwise."""
    p = Path(path)
    data = p.read_bytes()
    if len(data) < 52 or data[:4] != ELF_MAGIC:
        raise NotElfError(f"{p} is not an ELF file")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise NotElfError(f"{p}: bad ELF class {ei_class} or data encoding {ei_data}")
    bits = 32 if ei_class == 1 else 64
    end = "<" if ei_data == 1 else ">"
    if bits == 32:
        (e_type, e_machine, _ver, _entry, e_phoff, _shoff, e_flags, _ehsize, e_phentsize, e_phnum) = struct.unpack_from(
            end + "HHIIIIIHHH", data, 16
        )
    else:
        if len(data) < 64:
            raise NotElfError(f"{p}: truncated ELF64 header")
        (e_type, e_machine, _ver, _entry, e_phoff, _shoff, e_flags, _ehsize, e_phentsize, e_phnum) = struct.unpack_from(
            end + "HHIQQQIHHH", data, 16
        )
    interp = None
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if off + e_phentsize > len(data):
            break
        if bits == 32:
            p_type, p_offset, _va, _pa, p_filesz = struct.unpack_from(end + "IIIII", data, off)
        else:
            p_type, _pflags, p_offset, _va, _pa, p_filesz = struct.unpack_from(end + "IIQQQQ", data, off)
        if p_type == PT_INTERP:
            interp = data[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode("ascii", "replace")
    eabi = float_abi = None
    if e_machine == EM_ARM:
        eabi = (e_flags & EF_ARM_EABIMASK) >> 24
        if e_flags & EF_ARM_ABI_FLOAT_HARD:
            float_abi = "hard"
        elif e_flags & EF_ARM_ABI_FLOAT_SOFT:
            float_abi = "soft"
        else:
            float_abi = "unspecified"
    # Version needs live in .dynstr; their names are plain strings, so a scan finds them all.
    versions = {m.decode() for m in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\0", data)}
    glibc = max(versions, key=_version_tuple) if versions else None
    etype = ET_NAMES.get(e_type, f"type-{e_type}")
    # A PIE executable is ET_DYN like a shared library; the program interpreter tells them apart.
    if e_type == 2 or (e_type == 3 and interp is not None):
        kind = "executable"
    elif e_type == 3:
        kind = "shared-library"
    elif e_type == 1:
        kind = "object"
    else:
        kind = "other"
    return ElfInfo(
        path=str(p),
        bits=bits,
        little_endian=ei_data == 1,
        type=etype,
        kind=kind,
        machine=e_machine,
        machine_name=MACHINE_NAMES.get(e_machine, f"machine-{e_machine}"),
        flags=e_flags,
        eabi_version=eabi,
        float_abi=float_abi,
        interpreter=interp,
        glibc_required=glibc,
    )


def check_elf(info: ElfInfo, triple: str, board_glibc: str | None = None, float_abi: str | None = None) -> ElfCheck:
    """Does `info` fit `triple` (and the board's glibc, when given as e.g. '2.36')?

    `float_abi` ("hard" | "soft") overrides the triple's ARM float ABI: a vendor's soft-float
    toolchain (HiSilicon's arm-himix200-linux) targets the camera's firmware, not Debian armhf.
    """
    exp = EXPECTED.get(triple)
    if exp is None:
        raise ValueError(f"no ELF expectations for triple {triple!r}; known: {sorted(EXPECTED)}")
    if float_abi is not None:
        if float_abi not in ("hard", "soft"):
            raise ValueError(f"float_abi must be 'hard' or 'soft', got {float_abi!r}")
        exp = {**exp, "float_abi": float_abi}
    problems = []
    want_machine = exp["machine"]
    if info.machine != want_machine:
        problems.append(f"machine is {info.machine_name}, the board needs {MACHINE_NAMES[want_machine]}")  # type: ignore[index]
    if info.bits != exp["bits"]:
        problems.append(f"ELF{info.bits}, the board needs ELF{exp['bits']}")
    if not info.little_endian:
        problems.append("big-endian, the board is little-endian")
    if info.machine == EM_ARM and want_machine == EM_ARM:
        if info.eabi_version != 5:
            problems.append(f"ARM EABI version {info.eabi_version}, the board needs EABI 5")
        if exp["float_abi"] == "hard" and info.float_abi != "hard":
            problems.append(
                f"{info.float_abi}-float ABI, the board's userland is hard-float (arm-linux-gnueabihf); "
                "a soft-float binary would not load against its libraries"
            )
        elif exp["float_abi"] == "soft" and info.float_abi != "soft":
            problems.append(f"{info.float_abi}-float ABI, soft-float (softfp) was asked for")
    if board_glibc and info.glibc_required and _version_tuple(info.glibc_required) > _version_tuple(board_glibc):
        problems.append(f"needs glibc {info.glibc_required}, the board has {board_glibc}")
    return ElfCheck(info=info, triple=triple, ok=not problems, problems=tuple(problems))


__all__ = ["EXPECTED", "ElfCheck", "ElfInfo", "NotElfError", "check_elf", "is_elf", "read_elf"]

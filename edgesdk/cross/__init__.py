"""Cross-compilation for the boards: CMake toolchain files, `cross build`, ELF checks, running on the board."""

from edgesdk.cross.build import (
    Artifact,
    BuildPlan,
    BuildResult,
    ElfMismatchError,
    Sysroot,
    Toolchain,
    cross_build,
    find_sysroot,
    plan_build,
    toolchain_for,
)
from edgesdk.cross.elf import ElfCheck, ElfInfo, NotElfError, check_elf, read_elf

__all__ = [
    "Artifact",
    "BuildPlan",
    "BuildResult",
    "ElfCheck",
    "ElfInfo",
    "ElfMismatchError",
    "NotElfError",
    "Sysroot",
    "Toolchain",
    "check_elf",
    "cross_build",
    "find_sysroot",
    "plan_build",
    "read_elf",
    "toolchain_for",
]

"""Plan and run a CMake cross build for a board, then check that what it built fits the board's ELF ABI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgesdk._data import data_dir
from edgesdk.boards import BoardProfile
from edgesdk.cross.elf import ElfCheck, check_elf, read_elf
from edgesdk.errors import EnvironmentProblem, InputError, ToolchainError

#: Debian's cross compiler package for each triple (scripts/setup.sh installs both).
APT_PACKAGES: dict[str, str] = {
    "aarch64-linux-gnu": "g++-aarch64-linux-gnu",
    "arm-linux-gnueabihf": "g++-arm-linux-gnueabihf",
}
CONFIGURE_TIMEOUT = 300.0
BUILD_TIMEOUT = 1800.0
STAMP = ".edgesdk-cross.json"

Progress = Callable[[str], None] | None


class ElfMismatchError(ToolchainError):
    """The build succeeded but produced files that cannot run on the board (wrong machine or ABI)."""

    def __init__(self, triple: str, command: Sequence[str], checks: Sequence[ElfCheck]) -> None:
        self.checks = list(checks)
        lines = [f"  {c.info.path}: {'; '.join(c.problems)}" for c in checks if not c.ok]
        super().__init__("ELF check", command, 0, "\n".join(lines))
        self.args = (
            f"the build produced files that do not fit {triple}:\n" + "\n".join(lines)
            + "\n  the toolchain file or the project's own flags chose another target",
        )


def cmake_dir() -> Path:
    """cross/cmake: the toolchain files (top of a checkout, or edgesdk/_data/cross/cmake in a wheel)."""
    return data_dir("cross") / "cmake"


@dataclass(frozen=True)
class Toolchain:
    """Which compilers and toolchain file build for a board."""

    triple: str
    toolchain_file: Path
    c_compiler: str
    cxx_compiler: str
    apt_package: str | None
    mcpu: str
    extra_flags: tuple[str, ...]
    vendor_toolchain: str | None

    @property
    def target_flags(self) -> list[str]:
        return [f"-mcpu={self.mcpu}", *self.extra_flags] if self.mcpu else list(self.extra_flags)


def toolchain_for(board: BoardProfile, toolchain_file: Path | None = None, cross_prefix: str | None = None) -> Toolchain:
    """The toolchain of a board's cross triple (cross/cmake/<triple>.cmake and Debian's GCC), or overrides."""
    triple = board.cross.triple
    tf = Path(toolchain_file) if toolchain_file else cmake_dir() / f"{triple}.cmake"
    if not tf.is_file():
        if toolchain_file is None:
            raise EnvironmentProblem(f"edgesdk's toolchain file {tf} is missing from this installation",
                                     fix="reinstall edgesdk, or pass --toolchain-file cross/cmake/<triple>.cmake "
                                     "from a checkout")
        raise InputError(f"toolchain file {tf} does not exist")
    prefix = cross_prefix if cross_prefix is not None else f"{triple}-"
    return Toolchain(
        triple=triple,
        toolchain_file=tf.resolve(),
        c_compiler=f"{prefix}gcc",
        cxx_compiler=f"{prefix}g++",
        apt_package=APT_PACKAGES.get(triple) if cross_prefix is None else None,
        mcpu=board.cross.mcpu,
        extra_flags=tuple(board.cross.extra_flags),
        vendor_toolchain=board.cross.vendor_toolchain,
    )


@dataclass(frozen=True)
class Sysroot:
    """What the build links against.

    mode: "sysroot"    the board's rootfs has headers and start files: it is CMAKE_SYSROOT;
          "board-libs" the rootfs has the board's libraries but no headers (the emulated boards'
                       minimal Debian): Debian's cross libc compiles, the board's libraries link;
          "none"       Debian's cross libc only: fine for plain C/C++ programs.
    """

    mode: str
    path: str | None
    origin: str  # "emulated board", "--sysroot", or "none"
    glibc: str | None
    note: str


def _rootfs_glibc(root: Path, triple: str) -> str | None:
    for d in (root / "lib" / triple, root / "usr" / "lib" / triple):
        if d.is_dir():
            for f in d.glob("libc.so.6"):
                try:
                    data = f.read_bytes()
                except OSError:
                    continue
                vers = re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)\0", data)
                if vers:
                    return max((v.decode() for v in vers), key=lambda s: tuple(int(x) for x in s.split(".")))
    return None


def _has_dev_files(root: Path, triple: str) -> bool:
    return (root / "usr" / "include" / "stdio.h").is_file() and (root / "usr" / "lib" / triple / "crt1.o").is_file()


def _emulated_rootfs(board: BoardProfile) -> Path | None:
    from edgesdk.emulator import instance_dir, rootfs_path
    from edgesdk.emulator.rootfs import rootfs_ready

    for cand in (instance_dir(board) / "rootfs", rootfs_path(board)):
        if rootfs_ready(cand):
            return cand
    return None


def describe_sysroot(root: Path, triple: str, origin: str) -> Sysroot:
    """Classify a rootfs as a full sysroot or a library root (see Sysroot.mode)."""
    glibc = _rootfs_glibc(root, triple)
    if _has_dev_files(root, triple):
        return Sysroot("sysroot", str(root), origin, glibc, f"sysroot: {root} ({origin}): the board's headers, glibc and libraries")
    return Sysroot(
        "board-libs",
        str(root),
        origin,
        glibc,
        f"the {origin} rootfs {root} has no headers (no libc6-dev): compiling with Debian's cross libc "
        f"and linking against the board's libraries there. For a full sysroot, install libc6-dev and the "
        f"-dev packages you need in it (emulated board: edgesdk emulator exec BOARD -- apt-get install -y libc6-dev)",
    )


def find_sysroot(board: BoardProfile, sysroot: str | Path | None = "auto", make: bool = False,
                 progress: Progress = None) -> Sysroot:
    """Resolve --sysroot: "auto" (the emulated board's rootfs when it exists), "none", or a path.

    With make=True and "auto", the emulated board's rootfs is built first if missing.
    """
    triple = board.cross.triple
    if sysroot is None or str(sysroot) == "none":
        return Sysroot("none", None, "none", None, "no sysroot: Debian's cross libc (fine for plain C/C++ programs)")
    if str(sysroot) != "auto":
        root = Path(sysroot).expanduser()
        if not root.is_dir():
            raise InputError(f"--sysroot {root} is not a directory")
        if not any((root / d / triple).is_dir() for d in ("lib", "usr/lib")):
            raise InputError(f"--sysroot {root} has no lib/{triple} or usr/lib/{triple}: not a {triple} root filesystem")
        return describe_sysroot(root.resolve(), triple, "--sysroot")
    root = _emulated_rootfs(board)
    if root is None and make:
        from edgesdk.emulator import ensure_rootfs

        if progress:
            progress(f"building the emulated {board.id} rootfs to use as the sysroot")
        root, _ = ensure_rootfs(board, progress=progress)
    if root is None:
        return Sysroot(
            "none", None, "none", None,
            f"no sysroot: the emulated {board.id} rootfs is not built, so Debian's cross libc is used "
            "(fine for plain C/C++ programs; --run or --make-sysroot builds the rootfs)",
        )
    return describe_sysroot(root, triple, "emulated board")


@dataclass(frozen=True)
class BuildPlan:
    """Exactly what `cross build` will run: golden-testable, and shown by --dry-run."""

    board: str
    triple: str
    source_dir: str
    out_dir: str
    build_dir: str
    toolchain_file: str
    c_compiler: str
    cxx_compiler: str
    apt_package: str | None
    sysroot: Sysroot
    configure: list[str]
    build: list[str]
    float_abi: str | None = None  # ARM: expected float ABI when it is not the triple's (a vendor toolchain)
    timeouts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_source(source_dir: str | Path) -> Path:
    """The resolved project directory; InputError unless it is a directory with a CMakeLists.txt."""
    src = Path(source_dir).expanduser()
    if not src.is_dir():
        raise InputError(f"source directory {src} does not exist")
    if not (src / "CMakeLists.txt").is_file():
        raise InputError(f"{src} has no CMakeLists.txt: `edgesdk cross build` builds CMake projects")
    return src.resolve()


def plan_build(
    source_dir: str | Path,
    board: BoardProfile,
    *,
    out_dir: str | Path | None = None,
    sysroot: Sysroot | None = None,
    build_type: str = "Release",
    jobs: int | None = None,
    targets: Sequence[str] = (),
    cmake_args: Sequence[str] = (),
    toolchain_file: Path | None = None,
    cross_prefix: str | None = None,
    float_abi: str | None = None,
) -> BuildPlan:
    """Plan the configure and build commands for `source_dir` (a CMake project) on `board`."""
    src = check_source(source_dir)
    out = Path(out_dir).expanduser().resolve() if out_dir else src / "build" / board.id
    bdir = out / "cmake-build"
    tc = toolchain_for(board, toolchain_file, cross_prefix)
    if float_abi is not None and (float_abi not in ("hard", "soft") or tc.triple != "arm-linux-gnueabihf"):
        raise InputError(f"--float-abi {float_abi!r}: only 'hard' or 'soft', and only for 32-bit ARM boards")
    sr = sysroot or Sysroot("none", None, "none", None, "no sysroot: Debian's cross libc")
    configure = [
        "cmake", "-S", str(src), "-B", str(bdir),
        f"-DCMAKE_TOOLCHAIN_FILE={tc.toolchain_file}",
        f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DEDGESDK_MCPU={tc.mcpu}",
        f"-DEDGESDK_EXTRA_FLAGS={';'.join(tc.extra_flags)}",
        f"-DEDGESDK_CROSS_PREFIX={tc.c_compiler[: -len('gcc')]}",
        f"-DEDGESDK_SYSROOT={sr.path if sr.mode == 'sysroot' else ''}",
        f"-DEDGESDK_BOARD_ROOT={sr.path if sr.mode == 'board-libs' else ''}",
        *cmake_args,
    ]
    build = ["cmake", "--build", str(bdir), "--parallel", str(jobs or os.cpu_count() or 2)]
    for t in targets:
        build += ["--target", t]
    return BuildPlan(
        board=board.id, triple=tc.triple, source_dir=str(src), out_dir=str(out), build_dir=str(bdir),
        toolchain_file=str(tc.toolchain_file), c_compiler=tc.c_compiler, cxx_compiler=tc.cxx_compiler,
        apt_package=tc.apt_package, sysroot=sr, configure=configure, build=build, float_abi=float_abi,
        timeouts={"configure": CONFIGURE_TIMEOUT, "build": BUILD_TIMEOUT},
    )


def check_tools(plan: BuildPlan) -> None:
    """cmake and the cross compilers must be on PATH; EnvironmentProblem with the install command otherwise."""
    if shutil.which("cmake") is None:
        raise EnvironmentProblem("cmake is not installed", fix="apt-get install cmake (scripts/setup.sh installs it)")
    for exe in (plan.c_compiler, plan.cxx_compiler):
        if shutil.which(exe) is None:
            if plan.apt_package:
                fix = f"apt-get install {plan.apt_package} (as root; scripts/setup.sh installs it)"
            else:
                fix = f"put {exe} on PATH (a vendor toolchain: see cross/README.md)"
            raise EnvironmentProblem(f"the {plan.triple} cross compiler {exe} is not installed", fix=fix)


@dataclass(frozen=True)
class Artifact:
    """One ELF file the build produced, where it was copied, and whether it fits the board."""

    name: str  # path relative to the build tree
    path: str  # the copy in out_dir
    kind: str  # executable | shared-library
    check: ElfCheck

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "kind": self.kind, "check": self.check.to_dict()}


@dataclass(frozen=True)
class BuildResult:
    plan: BuildPlan
    artifacts: list[Artifact]
    warnings: list[str]
    configure_seconds: float
    build_seconds: float

    @property
    def executables(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.kind == "executable"]

    def to_dict(self) -> dict:
        return {
            "plan": self.plan.to_dict(),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "warnings": self.warnings,
            "configure_seconds": round(self.configure_seconds, 2),
            "build_seconds": round(self.build_seconds, 2),
        }


_ERROR_LINE = re.compile(r"(\berror\b|\bError\b|undefined reference|CMake Error|fatal)", re.IGNORECASE)


def failure_tail(output: str, n: int = 30) -> str:
    """The end of a failed tool's output, led by its first error lines if the end would cut them off."""
    lines = output.rstrip().splitlines()
    tail = lines[-n:]
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)][:8]
    head = [ln for ln in errors if ln not in tail]
    if head:
        return "\n".join(["  " + ln for ln in head] + ["  ..."] + ["  " + ln for ln in tail])
    return "\n".join("  " + ln for ln in tail)


def _run(tool: str, argv: list[str], timeout: float, cwd: str) -> float:
    t0 = time.monotonic()
    env = dict(os.environ, LC_ALL="C")  # compiler messages in English, whatever the user's locale
    try:
        res = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode("utf-8", "replace")
        raise ToolchainError(tool, argv, None, failure_tail(out or f"(no output within {timeout:.0f}s)")) from exc
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run {argv[0]}: {exc}", fix="apt-get install cmake") from exc
    if res.returncode != 0:
        raise ToolchainError(tool, argv, res.returncode, failure_tail(res.stdout))
    return time.monotonic() - t0


def _fresh_if_changed(plan: BuildPlan) -> None:
    """CMake reads toolchain flags once per cache; a different toolchain or sysroot needs a fresh cache."""
    bdir = Path(plan.build_dir)
    stamp = bdir / STAMP
    want = json.dumps({"configure": plan.configure}, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == want:
        return
    (bdir / "CMakeCache.txt").unlink(missing_ok=True)
    shutil.rmtree(bdir / "CMakeFiles", ignore_errors=True)
    bdir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)


def collect_artifacts(build_dir: Path) -> list[Path]:
    """Executables and shared objects in the build tree (CMake's own scratch dirs excluded)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(build_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "CMakeFiles")
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.is_symlink() or not p.is_file():
                continue
            try:
                with open(p, "rb") as fh:
                    head = fh.read(18)
            except OSError:
                continue
            if head[:4] == b"\x7fELF" and len(head) == 18:
                e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
                if e_type in (2, 3):
                    found.append(p)
    return found


def _board_glibc(board: BoardProfile) -> str | None:
    libc = board.os.libc
    return libc.split()[1] if libc.startswith("glibc ") else None


def execute(plan: BuildPlan, board: BoardProfile, progress: Progress = None) -> BuildResult:
    """Run a BuildPlan: configure, build, copy the ELF outputs to out_dir, check each against the board."""
    check_tools(plan)
    _fresh_if_changed(plan)
    if progress:
        progress(f"configuring for {board.id} ({plan.triple}, {plan.sysroot.mode})")
    t_conf = _run(f"cmake configure ({plan.cxx_compiler})", plan.configure, plan.timeouts["configure"], plan.source_dir)
    if progress:
        progress("building")
    t_build = _run(f"cmake --build ({plan.cxx_compiler})", plan.build, plan.timeouts["build"], plan.source_dir)
    bdir, out = Path(plan.build_dir), Path(plan.out_dir)
    artifacts, warnings = [], []
    glibc_board = _board_glibc(board)
    for f in collect_artifacts(bdir):
        rel = f.relative_to(bdir)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
        info = read_elf(dest)
        chk = check_elf(info, plan.triple, float_abi=plan.float_abi)
        artifacts.append(Artifact(str(rel), str(dest), info.kind, chk))
        if glibc_board and info.glibc_required:
            g = check_elf(info, plan.triple, board_glibc=glibc_board, float_abi=plan.float_abi)
            warnings += [
                f"{rel}: {p} (fine on the emulated board; for the real {board.id}, build against its own rootfs "
                f"with --sysroot)" for p in g.problems if p.startswith("needs glibc")
            ]
    bad = [a.check for a in artifacts if not a.check.ok]
    if bad:
        raise ElfMismatchError(plan.triple, plan.build, bad)
    if not artifacts:
        warnings.append(f"the build produced no executable or shared library in {bdir}")
    if plan.sysroot.mode != "sysroot":
        warnings.insert(0, plan.sysroot.note)
    return BuildResult(plan, artifacts, warnings, t_conf, t_build)


def cross_build(
    source_dir: str | Path,
    board: BoardProfile,
    *,
    out_dir: str | Path | None = None,
    sysroot: str | Path | None = "auto",
    make_sysroot: bool = False,
    build_type: str = "Release",
    jobs: int | None = None,
    targets: Sequence[str] = (),
    cmake_args: Sequence[str] = (),
    toolchain_file: Path | None = None,
    cross_prefix: str | None = None,
    float_abi: str | None = None,
    progress: Progress = None,
) -> BuildResult:
    """Configure and build a CMake project for `board`, and check its ELF outputs fit the board."""
    check_source(source_dir)
    sr = find_sysroot(board, sysroot, make=make_sysroot, progress=progress)
    plan = plan_build(source_dir, board, out_dir=out_dir, sysroot=sr, build_type=build_type, jobs=jobs,
                      targets=targets, cmake_args=cmake_args, toolchain_file=toolchain_file, cross_prefix=cross_prefix,
                      float_abi=float_abi)
    return execute(plan, board, progress=progress)


__all__ = [
    "APT_PACKAGES",
    "Artifact",
    "BuildPlan",
    "BuildResult",
    "ElfMismatchError",
    "Sysroot",
    "Toolchain",
    "check_source",
    "check_tools",
    "cmake_dir",
    "collect_artifacts",
    "cross_build",
    "describe_sysroot",
    "execute",
    "failure_tail",
    "find_sysroot",
    "plan_build",
    "toolchain_for",
]

"""cross build: toolchain per board, plan golden tests, sysroot detection, real builds, compiler errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from edgesdk.boards import get_board
from edgesdk.cross import build as xb
from edgesdk.cross.build import (
    Sysroot,
    cross_build,
    describe_sysroot,
    find_sysroot,
    plan_build,
    toolchain_for,
)
from edgesdk.errors import EnvironmentProblem, InputError, ToolchainError


def need(*exes: str) -> None:
    """Skip when a tool is absent, but fail under CI, which installs them all (scripts/setup.sh)."""
    missing = [e for e in exes if shutil.which(e) is None]
    if missing:
        reason = f"not installed: {', '.join(missing)} (bash scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cross" / "examples" / "preproc"
NO_SYSROOT = Sysroot("none", None, "none", None, "no sysroot")


@pytest.mark.parametrize(
    "board,triple,mcpu,extra",
    [
        ("rpi4", "aarch64-linux-gnu", "cortex-a72", ()),
        ("rpi5", "aarch64-linux-gnu", "cortex-a76", ()),
        ("kv260", "aarch64-linux-gnu", "cortex-a53", ()),
        ("x3", "aarch64-linux-gnu", "cortex-a53", ()),
        ("coral-usb", "aarch64-linux-gnu", "cortex-a72", ()),
        ("hi3519a", "arm-linux-gnueabihf", "cortex-a53", ("-mfpu=neon-vfpv4",)),
    ],
)
def test_toolchain_per_board(board, triple, mcpu, extra):
    tc = toolchain_for(get_board(board))
    assert tc.triple == triple
    assert tc.toolchain_file == (REPO / "cross" / "cmake" / f"{triple}.cmake").resolve()
    assert tc.toolchain_file.is_file()
    assert (tc.c_compiler, tc.cxx_compiler) == (f"{triple}-gcc", f"{triple}-g++")
    assert tc.apt_package == f"g++-{triple}"
    assert tc.mcpu == mcpu and tc.extra_flags == extra
    assert tc.target_flags == [f"-mcpu={mcpu}", *extra]


def test_toolchain_overrides(tmp_path):
    tf = tmp_path / "himix.cmake"
    tf.write_text("# vendor\n")
    tc = toolchain_for(get_board("hi3519a"), toolchain_file=tf, cross_prefix="arm-himix200-linux-")
    assert tc.toolchain_file == tf.resolve() and tc.cxx_compiler == "arm-himix200-linux-g++"
    assert tc.apt_package is None and tc.vendor_toolchain == "arm-himix200-linux"
    with pytest.raises(InputError, match="does not exist"):
        toolchain_for(get_board("rpi4"), toolchain_file=tmp_path / "nope.cmake")


def test_plan_golden_rpi4(tmp_path):
    plan = plan_build(EXAMPLE, get_board("rpi4"), out_dir=tmp_path / "out", sysroot=NO_SYSROOT, jobs=3)
    b = str(tmp_path / "out" / "cmake-build")
    assert plan.configure == [
        "cmake", "-S", str(EXAMPLE), "-B", b,
        f"-DCMAKE_TOOLCHAIN_FILE={REPO}/cross/cmake/aarch64-linux-gnu.cmake",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DEDGESDK_MCPU=cortex-a72",
        "-DEDGESDK_EXTRA_FLAGS=",
        "-DEDGESDK_CROSS_PREFIX=aarch64-linux-gnu-",
        "-DEDGESDK_SYSROOT=",
        "-DEDGESDK_BOARD_ROOT=",
    ]
    assert plan.build == ["cmake", "--build", b, "--parallel", "3"]
    assert plan.out_dir == str(tmp_path / "out") and plan.triple == "aarch64-linux-gnu"


def test_plan_golden_hi3519a_with_sysroot_and_targets(tmp_path):
    sr = Sysroot("sysroot", "/srv/hi-root", "--sysroot", "2.36", "")
    plan = plan_build(EXAMPLE, get_board("hi3519a"), out_dir=tmp_path, sysroot=sr, jobs=2, build_type="Debug",
                      targets=["preproc_check"], cmake_args=["-DFOO=1"])
    assert plan.configure[5:] == [
        f"-DCMAKE_TOOLCHAIN_FILE={REPO}/cross/cmake/arm-linux-gnueabihf.cmake",
        "-DCMAKE_BUILD_TYPE=Debug",
        "-DEDGESDK_MCPU=cortex-a53",
        "-DEDGESDK_EXTRA_FLAGS=-mfpu=neon-vfpv4",
        "-DEDGESDK_CROSS_PREFIX=arm-linux-gnueabihf-",
        "-DEDGESDK_SYSROOT=/srv/hi-root",
        "-DEDGESDK_BOARD_ROOT=",
        "-DFOO=1",
    ]
    assert plan.build[-2:] == ["--target", "preproc_check"]
    board_libs = Sysroot("board-libs", "/srv/r", "emulated board", "2.36", "")
    plan2 = plan_build(EXAMPLE, get_board("hi3519a"), out_dir=tmp_path, sysroot=board_libs)
    assert "-DEDGESDK_SYSROOT=" in plan2.configure and "-DEDGESDK_BOARD_ROOT=/srv/r" in plan2.configure


def test_plan_default_out_dir_and_bad_sources(tmp_path):
    plan = plan_build(EXAMPLE, get_board("rpi5"), sysroot=NO_SYSROOT)
    assert plan.out_dir == str(EXAMPLE / "build" / "rpi5")
    with pytest.raises(InputError, match="does not exist"):
        plan_build(tmp_path / "missing", get_board("rpi4"))
    with pytest.raises(InputError, match="no CMakeLists.txt"):
        plan_build(tmp_path, get_board("rpi4"))


def _fake_root(root: Path, triple: str, dev: bool) -> Path:
    (root / "lib" / triple).mkdir(parents=True)
    (root / "lib" / triple / "libc.so.6").write_bytes(b"\x7fELF junk GLIBC_2.17\0GLIBC_2.36\0GLIBC_2.4\0")
    if dev:
        (root / "usr" / "include").mkdir(parents=True)
        (root / "usr" / "include" / "stdio.h").write_text("")
        (root / "usr" / "lib" / triple).mkdir(parents=True)
        (root / "usr" / "lib" / triple / "crt1.o").write_bytes(b"")
    return root


def test_sysroot_detection(tmp_path, monkeypatch):
    full = describe_sysroot(_fake_root(tmp_path / "full", "aarch64-linux-gnu", True), "aarch64-linux-gnu", "--sysroot")
    assert full.mode == "sysroot" and full.glibc == "2.36"
    libs = describe_sysroot(_fake_root(tmp_path / "libs", "aarch64-linux-gnu", False), "aarch64-linux-gnu", "x")
    assert libs.mode == "board-libs" and "libc6-dev" in libs.note
    rpi4 = get_board("rpi4")
    assert find_sysroot(rpi4, str(tmp_path / "full")).mode == "sysroot"
    assert find_sysroot(rpi4, "none").mode == "none"
    with pytest.raises(InputError, match="not a directory"):
        find_sysroot(rpi4, str(tmp_path / "nope"))
    with pytest.raises(InputError, match="not a aarch64-linux-gnu root"):
        find_sysroot(get_board("rpi4"), str(_fake_root(tmp_path / "arm", "arm-linux-gnueabihf", True)))
    # no emulated rootfs built: plain cross libc, and the note says how to get one
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))
    auto = find_sysroot(rpi4, "auto")
    assert auto.mode == "none" and "--make-sysroot" in auto.note


def test_missing_cross_compiler_gives_the_install_command(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(xb.shutil, "which", lambda name: None if name.startswith("aarch64-") else real_which(name))
    need("cmake")
    with pytest.raises(EnvironmentProblem) as ei:
        cross_build(EXAMPLE, get_board("rpi4"), out_dir=tmp_path, sysroot="none")
    assert "apt-get install g++-aarch64-linux-gnu" in str(ei.value)
    assert ei.value.fix and ei.value.fix.startswith("apt-get install g++-aarch64-linux-gnu")


def test_missing_vendor_compiler_names_it(tmp_path):
    need("cmake")
    with pytest.raises(EnvironmentProblem, match="arm-himix200-linux-gcc is not installed"):
        cross_build(EXAMPLE, get_board("hi3519a"), out_dir=tmp_path, sysroot="none", cross_prefix="arm-himix200-linux-")


def test_failure_tail_keeps_the_first_errors():
    out = "\n".join(["noise"] * 5 + ["main.cpp:3:10: error: 'nope' was not declared"] + [f"line {i}" for i in range(60)])
    tail = xb.failure_tail(out, n=10)
    assert "error: 'nope' was not declared" in tail and "line 59" in tail and "line 10" not in tail


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    need("cmake", "aarch64-linux-gnu-g++", "arm-linux-gnueabihf-g++")
    out = {}
    for b in ("rpi4", "hi3519a"):
        out[b] = cross_build(EXAMPLE, get_board(b), out_dir=tmp_path_factory.mktemp(b), sysroot="none")
    return out


def test_builds_for_aarch64_and_armhf(builds):
    for res in builds.values():
        names = sorted(Path(a.name).name for a in res.artifacts)
        assert names == ["libedgesdk_preproc.so", "preproc_check"], names
        assert all(a.check.ok for a in res.artifacts)
        assert {a.kind for a in res.artifacts} == {"executable", "shared-library"}
        assert [Path(a.name).name for a in res.executables] == ["preproc_check"]
        assert all(Path(a.path).is_file() and Path(a.path).parent == Path(res.plan.out_dir) for a in res.artifacts)
        assert any("no sysroot" in w for w in res.warnings)
    a64 = builds["rpi4"].executables[0].check.info
    assert (a64.bits, a64.machine_name, a64.interpreter) == (64, "aarch64", "/lib/ld-linux-aarch64.so.1")
    arm = builds["hi3519a"].executables[0].check.info
    assert (arm.bits, arm.machine_name, arm.eabi_version, arm.float_abi) == (32, "arm", 5, "hard")
    assert arm.interpreter == "/lib/ld-linux-armhf.so.3"


def test_rebuild_with_another_sysroot_reconfigures(builds, tmp_path):
    res = builds["rpi4"]
    root = _fake_root(tmp_path / "root", "aarch64-linux-gnu", False)
    again = cross_build(EXAMPLE, get_board("rpi4"), out_dir=res.plan.out_dir, sysroot=str(root))
    cache = (Path(again.plan.build_dir) / "CMakeCache.txt").read_text()
    assert f"EDGESDK_BOARD_ROOT:PATH={root.resolve()}" in cache
    assert f"-Wl,-rpath-link,{root.resolve()}/lib/aarch64-linux-gnu" in cache  # a fresh cache took the new flags
    assert all(a.check.ok for a in again.artifacts)


def test_glibc_newer_than_the_real_board_is_a_warning(tmp_path):
    need("cmake", "aarch64-linux-gnu-g++")
    res = cross_build(EXAMPLE, get_board("x3"), out_dir=tmp_path, sysroot="none", targets=["preproc_check"])
    assert any("needs glibc 2.3" in w and "the board has 2.31" in w for w in res.warnings), res.warnings


def _project(tmp_path: Path, cmakelists: str, source: str) -> Path:
    (tmp_path / "CMakeLists.txt").write_text(cmakelists)
    (tmp_path / "main.cpp").write_text(source)
    return tmp_path


def test_broken_source_gives_the_compiler_message(tmp_path):
    need("cmake", "aarch64-linux-gnu-g++")
    (tmp_path / "p").mkdir()
    src = _project(
        tmp_path / "p",
        "cmake_minimum_required(VERSION 3.16)\nproject(broken CXX)\nadd_executable(broken main.cpp)\n",
        "int main() {\n  return undeclared_thing_xyz;\n}\n",
    )
    with pytest.raises(ToolchainError) as ei:
        cross_build(src, get_board("rpi4"), out_dir=tmp_path / "out", sysroot="none")
    e = ei.value
    assert "cmake --build" in e.tool and "aarch64-linux-gnu-g++" in e.tool
    assert e.returncode not in (0, None) and e.command[:2] == ["cmake", "--build"]
    assert "main.cpp:2" in e.stderr_tail and "undeclared_thing_xyz" in e.stderr_tail and "error" in e.stderr_tail
    assert "undeclared_thing_xyz" in str(e)


def test_broken_cmakelists_gives_cmakes_message(tmp_path):
    need("cmake", "aarch64-linux-gnu-g++")
    (tmp_path / "p").mkdir()
    src = _project(tmp_path / "p", "cmake_minimum_required(VERSION 3.16)\nproject(x CXX)\nadd_executable(\n", "")
    with pytest.raises(ToolchainError) as ei:
        cross_build(src, get_board("rpi4"), out_dir=tmp_path / "out", sysroot="none")
    assert "configure" in ei.value.tool and "CMakeLists.txt" in ei.value.stderr_tail


def test_project_that_forces_another_arch_is_caught(tmp_path):
    need("cmake", "arm-linux-gnueabihf-g++")
    (tmp_path / "p").mkdir()
    # A project that forces soft-float calling conventions: builds, but does not fit an armhf board.
    src = _project(
        tmp_path / "p",
        "cmake_minimum_required(VERSION 3.16)\nproject(sf C)\nadd_library(sf SHARED main.c)\n"
        "target_compile_options(sf PRIVATE -mfloat-abi=soft)\ntarget_link_options(sf PRIVATE -nostdlib)\n",
        "",
    )
    (src / "main.c").write_text("int add(int a, int b) { return a + b; }\n")
    with pytest.raises(xb.ElfMismatchError) as ei:
        cross_build(src, get_board("hi3519a"), out_dir=tmp_path / "out", sysroot="none")
    assert "soft-float ABI" in str(ei.value) and "libsf.so" in str(ei.value)


def test_vendor_softfp_expectation(tmp_path):
    need("cmake", "arm-linux-gnueabihf-g++")
    # Debian's hard-float compiler standing in for himix: asking for soft-float must then fail the check.
    with pytest.raises(xb.ElfMismatchError, match="soft-float \\(softfp\\) was asked for"):
        cross_build(EXAMPLE, get_board("hi3519a"), out_dir=tmp_path, sysroot="none", float_abi="soft",
                    targets=["edgesdk_preproc"])
    with pytest.raises(InputError, match="only for 32-bit ARM"):
        plan_build(EXAMPLE, get_board("rpi4"), sysroot=NO_SYSROOT, float_abi="soft")

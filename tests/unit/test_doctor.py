"""doctor: a missing tool is 'missing' with a fix; a tool that cannot run is 'broken'."""

from __future__ import annotations

import os
import stat

from edgesdk import doctor
from edgesdk.toolchains.spec import Tool, get_toolchain


def test_missing_executable_is_missing_with_hint():
    spec = get_toolchain("onnxruntime")
    tool = Tool(name="nope", kind="executable", command="edgesdk-no-such-binary", install_hint="apt-get install nope")
    c = doctor.check_tool(spec, tool)
    assert c.status == "missing" and c.fix == "apt-get install nope"


def test_broken_executable_is_broken(tmp_path, monkeypatch):
    exe = tmp_path / "brokentool"
    exe.write_text("#!/bin/sh\nexit 3\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    spec = get_toolchain("onnxruntime")
    tool = Tool(name="brokentool", kind="executable", command="brokentool", install_hint="x")
    assert doctor.check_tool(spec, tool).status == "broken"


def test_slow_tool_is_unknown_not_broken(tmp_path, monkeypatch):
    """A tool that does not answer in time (a cold disk cache under load) must not make doctor exit 1."""
    exe = tmp_path / "slowtool"
    exe.write_text("#!/bin/sh\nsleep 5\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    status, _, detail = doctor._run_version([str(exe), "--version"], None, timeout=0.5)
    assert status == "unknown" and "did not answer" in detail
    rep = doctor.DoctorReport(checks=[doctor.Check("tool", "slowtool", status, detail=detail)])
    assert rep.ok


def test_module_that_fails_to_import_is_broken(tmp_path, monkeypatch):
    (tmp_path / "edgesdk_broken_mod.py").write_text("raise RuntimeError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status, _, detail = doctor._module_version("edgesdk_broken_mod")
    assert status == "broken" and "half installed" in detail
    status, _, _ = doctor._module_version("edgesdk_surely_absent_mod")
    assert status == "missing"


def test_tool_for_other_platform_is_not_applicable():
    spec = get_toolchain("onnxruntime")
    tool = Tool(name="x", kind="executable", command="x", install_hint="h", platforms=["sparc64"])
    assert doctor.check_tool(spec, tool).status == "n/a"


def test_report_ok_only_when_nothing_broken():
    rep = doctor.DoctorReport(checks=[doctor.Check("tool", "a", "missing", fix="f")])
    assert rep.ok
    rep.checks.append(doctor.Check("tool", "b", "broken"))
    assert not rep.ok


# -- what a pip user is told: the one command that adds what is missing ------------------------------------

def test_host_extra_carries_the_host_engines():
    extra = {d.lower() for d in doctor.host_extra()}
    assert {"ncnn", "mnn", "ai-edge-litert", "onnxruntime", "onnx", "paramiko"} <= extra


def test_install_command_for_a_checkout_and_for_a_pip_install(monkeypatch):
    import sys

    import edgesdk

    assert doctor.install_command().startswith("bash ") and doctor.install_command().endswith("scripts/setup.sh")
    monkeypatch.setattr(doctor, "_repo_checkout", lambda: None)
    cmd = doctor.install_command()
    assert cmd == f"{sys.executable} -m pip install 'edgesdk[host]=={edgesdk.__version__}'"
    assert not cmd.startswith("pip ")  # never a bare pip (tests/conftest.py)


def test_missing_host_packages_are_named_with_one_fix(monkeypatch):
    monkeypatch.setattr(doctor, "_repo_checkout", lambda: None)
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda d: None if d.lower() in ("ncnn", "paramiko") else real(d))
    checks = {c.name: c for c in doctor.check_packages()}
    assert checks["edgesdk"].status == "ok" and checks["edgesdk-runtime"].status == "ok"
    host = checks["edgesdk[host]"]
    assert host.status == "missing" and "ncnn" in host.detail and "paramiko" in host.detail
    assert host.fix == doctor.install_command() and "-m pip install 'edgesdk[host]==" in host.fix
    rep = doctor.run_doctor()
    assert rep.ok  # missing is not broken


def test_board_package_of_another_version_is_broken(monkeypatch):
    import edgesdk.runtime

    monkeypatch.setattr(edgesdk.runtime, "__version__", "0.0.1")
    c = next(c for c in doctor.check_packages() if c.name == "edgesdk-runtime")
    assert c.status == "broken" and "edgesdk-runtime==" in c.fix


def test_venv_tools_are_fixed_by_toolchain_install_and_host_modules_by_the_extra(monkeypatch):
    monkeypatch.setattr(doctor, "_repo_checkout", lambda: None)
    ncnn = get_toolchain("ncnn")
    tool = next(t for t in ncnn.tools if t.where == "venv")
    assert doctor._tool_fix(ncnn, tool) == "edgesdk toolchain install ncnn"
    ort = get_toolchain("onnxruntime")
    assert doctor._tool_fix(ort, ort.tools[0]) == doctor.install_command()


def test_doctor_cli_prints_the_package_fix_in_full(monkeypatch):
    from typer.testing import CliRunner

    from edgesdk.cli import app

    monkeypatch.setattr(doctor, "_repo_checkout", lambda: None)
    monkeypatch.setattr(doctor, "_dist_version", lambda d: None if d.lower() == "mnn" else "1")
    monkeypatch.setenv("COLUMNS", "60")
    r = CliRunner().invoke(app, ["doctor"])
    assert r.exit_code == 0, r.stdout
    assert doctor.install_command() in r.stdout.replace("\n", "")


def test_an_accelerator_engine_whose_module_imports_is_missing_without_its_native_runtime():
    """ai_edge_litert imports on this host, but no Edge TPU delegate / Ethos-U delegate / librknnrt.so is here:
    doctor and the engines agree (the engine class decides), and doctor says what is missing."""
    from edgesdk.boards import get_board
    from edgesdk.doctor import run_doctor
    from edgesdk.runtime import engines

    for board, eng in (("coral-usb", "edgetpu"), ("imx93", "ethosu"), ("rk3588", "rknn")):
        (c,) = [c for c in run_doctor(get_board(board)).checks if c.category == "engine" and c.name == eng]
        assert not engines.engine_class(eng).available()
        assert c.status == "missing" and c.fix and c.fix.startswith("on the board:"), c

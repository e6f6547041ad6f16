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

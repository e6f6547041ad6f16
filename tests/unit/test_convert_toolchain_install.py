"""`edgesdk toolchain install`: the commands it runs, idempotence, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesdk.errors import InputError, ToolchainError
from edgesdk.toolchains.install import install_toolchain, plan_install, requirements
from edgesdk.toolchains.spec import get_toolchain


def _fake_runner(calls: list):
    def run(cmd):
        calls.append(cmd)
        if cmd.tool == "venv":
            v = Path(cmd.argv[-1])
            (v / "bin").mkdir(parents=True)
            (v / "bin" / "python").write_text("")
        return 0, ""

    return run


def test_ncnn_venv_installs_pnnx_without_deps(tmp_path: Path) -> None:
    cmds = plan_install("ncnn", tmp_path / "v", "/usr/bin/python3")
    assert cmds[0].argv == ("/usr/bin/python3", "-m", "venv", str(tmp_path / "v"))
    pip = cmds[1].argv
    assert "--no-deps" in pip and any(a.startswith("pnnx==") for a in pip)


def test_tflite_requirements_come_from_its_file() -> None:
    reqs = requirements(get_toolchain("tflite"))
    assert any(r.startswith("onnx2tf==") for r in reqs) and any(r.startswith("tensorflow") for r in reqs)


def test_install_is_idempotent(tmp_path: Path) -> None:
    calls: list = []
    r1 = install_toolchain("mnn", venv=tmp_path / "v", python="/usr/bin/python3", runner=_fake_runner(calls))
    assert r1.action == "created" and [c.tool for c in calls] == ["venv", "pip"]
    r2 = install_toolchain("mnn", venv=tmp_path / "v", python="/usr/bin/python3", runner=_fake_runner(calls))
    assert r2.action == "up-to-date" and len(calls) == 2


def test_failed_install_leaves_no_venv(tmp_path: Path) -> None:
    def runner(cmd):
        if cmd.tool == "venv":
            Path(cmd.argv[-1]).mkdir(parents=True)
            return 0, ""
        return 1, "ERROR: No matching distribution found for MNN==3.6.1"

    with pytest.raises(ToolchainError, match="No matching distribution"):
        install_toolchain("mnn", venv=tmp_path / "v", python="/usr/bin/python3", runner=runner)
    assert not (tmp_path / "v").exists()


def test_host_and_vendor_toolchains() -> None:
    assert install_toolchain("onnxruntime").action == "host"
    with pytest.raises(InputError):
        install_toolchain("horizon")

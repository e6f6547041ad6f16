"""`edgesdk cross build` through the CLI: exit codes, dry-run plan, a real build, a compiler error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgesdk.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cross" / "examples" / "preproc"
runner = CliRunner()


def _need(*exes: str) -> None:
    missing = [e for e in exes if shutil.which(e) is None]
    if missing:
        reason = f"not installed: {', '.join(missing)} (bash scripts/setup.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_usage_errors_exit_2(tmp_path):
    res = runner.invoke(app, ["cross", "build", str(tmp_path / "missing"), "--board", "rpi4"])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["cross", "build", str(EXAMPLE), "--board", "rpi44"])
    assert res.exit_code == 2 and "Did you mean 'rpi4'" in res.output
    res = runner.invoke(app, ["cross", "build", str(tmp_path), "--board", "rpi4"])
    assert res.exit_code == 2 and "no CMakeLists.txt" in res.output
    res = runner.invoke(app, ["cross", "build", str(EXAMPLE)])
    assert res.exit_code == 2  # --board is required
    res = runner.invoke(app, ["cross", "build", str(EXAMPLE), "--board", "rpi4", "--sysroot", str(tmp_path / "no")])
    assert res.exit_code == 2 and "not a directory" in res.output


def test_dry_run_json_is_the_plan(tmp_path):
    res = runner.invoke(app, ["cross", "build", str(EXAMPLE), "--board", "hi3519a", "-o", str(tmp_path),
                              "--sysroot", "none", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert plan["triple"] == "arm-linux-gnueabihf" and plan["out_dir"] == str(tmp_path)
    assert "-DEDGESDK_MCPU=cortex-a53" in plan["configure"] and plan["sysroot"]["mode"] == "none"
    assert not (tmp_path / "cmake-build").exists()


def test_build_json(tmp_path):
    _need("cmake", "aarch64-linux-gnu-g++")
    res = runner.invoke(app, ["cross", "build", str(EXAMPLE), "--board", "rpi5", "-o", str(tmp_path),
                              "--sysroot", "none", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    kinds = {Path(a["name"]).name: a["kind"] for a in data["artifacts"]}
    assert kinds == {"libedgesdk_preproc.so": "shared-library", "preproc_check": "executable"}
    assert all(a["check"]["ok"] and a["check"]["info"]["machine_name"] == "aarch64" for a in data["artifacts"])
    assert data["run"] is None and (tmp_path / "preproc_check").is_file()


def test_compiler_error_exit_1_with_message(tmp_path):
    _need("cmake", "arm-linux-gnueabihf-g++")
    (tmp_path / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.16)\nproject(b C)\nadd_executable(b b.c)\n")
    (tmp_path / "b.c").write_text("int main(void) { return missing_fn(; }\n")
    res = runner.invoke(app, ["cross", "build", str(tmp_path), "--board", "hi3519a", "--sysroot", "none"])
    assert res.exit_code == 1
    assert "arm-linux-gnueabihf-g" in res.output and "b.c:1" in res.output and "error" in res.output

"""The foundation CLI: boards, board show, doctor, emulator list/status; JSON parses; exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgesdk.cli import app

runner = CliRunner()


def _json(args: list[str]):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and "edgesdk" in res.stdout


def test_boards_table_and_json():
    res = runner.invoke(app, ["boards"])
    assert res.exit_code == 0
    assert "rpi4" in res.stdout and "coral-usb" in res.stdout
    data = _json(["boards", "--json"])
    ids = {b["id"] for b in data}
    assert {"rpi4", "rpi5", "coral-usb", "kv260", "hi3519a", "x3"} <= ids
    coral = next(b for b in data if b["id"] == "coral-usb")
    assert coral["accelerator"] and coral["accelerator_tops"] > 0


def test_board_show():
    res = runner.invoke(app, ["board", "show", "kv260"])
    assert res.exit_code == 0
    assert "partition rule" in res.stdout
    data = _json(["board", "show", "coral-usb", "--json"])
    assert data["id"] == "coral-usb"
    assert data["accelerator"]["partition_rule"] == "first-unsupported-to-cpu"
    assert data["emulation"]["qemu_cpu"]


def test_unknown_board_did_you_mean_exit_2():
    res = runner.invoke(app, ["board", "show", "rpi"])
    assert res.exit_code == 2
    assert "Did you mean" in res.stderr and "'rpi4'" in res.stderr
    res = runner.invoke(app, ["doctor", "--board", "kv26"])
    assert res.exit_code == 2
    assert "kv260" in res.stderr
    res = runner.invoke(app, ["emulator", "start", "raspberry"])
    assert res.exit_code == 2


def test_usage_error_exit_2():
    res = runner.invoke(app, ["boards", "--no-such-flag"])
    assert res.exit_code == 2


def test_doctor_json_and_exit_code():
    res = runner.invoke(app, ["doctor", "--json"])
    # missing tools are fine (0); only a broken install is 1
    data = json.loads(res.stdout)
    broken = [c for c in data["checks"] if c["status"] == "broken"]
    assert res.exit_code == (1 if broken else 0), broken
    names = {c["name"] for c in data["checks"]}
    assert {"qemu-aarch64-static", "debootstrap", "sshd"} <= names
    engines = {c["name"] for c in data["checks"] if c["category"] == "engine"}
    assert {"ncnn", "mnn", "tflite", "onnxruntime", "edgetpu", "vart", "bpu"} <= engines
    for c in data["checks"]:
        assert c["status"] in {"ok", "missing", "broken", "n/a"}
        if c["status"] == "missing":
            assert c["fix"], c


def test_doctor_for_one_board_only_lists_its_toolchains():
    data = _json(["doctor", "--board", "coral-usb", "--json"])
    comps = {c["component"] for c in data["checks"] if c["category"] == "toolchain"}
    assert comps <= {"edgetpu", "tflite", "onnxruntime"}
    assert "edgetpu" in comps
    engines = {c["name"] for c in data["checks"] if c["category"] == "engine"}
    assert "ncnn" not in engines and "edgetpu" in engines


def test_doctor_table():
    res = runner.invoke(app, ["doctor"])
    assert res.exit_code in (0, 1)
    assert "ok," in res.stdout


def test_emulator_list_and_status_json():
    data = _json(["emulator", "list", "--json"])
    assert {d["board"] for d in data} >= {"rpi4", "hi3519a"}
    for d in data:
        assert d["state"] in {"running", "stopped", "not-built"}
        assert d["emulated"] is True
    one = _json(["emulator", "status", "rpi4", "--json"])
    assert one["board"] == "rpi4"


def test_help_has_examples():
    for args in (["boards", "--help"], ["board", "show", "--help"], ["doctor", "--help"], ["emulator", "start", "--help"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0
        assert "Example" in res.stdout, args

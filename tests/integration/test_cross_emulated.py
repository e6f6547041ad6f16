"""Integration: cross-build the pre-processing example for the emulated rpi4 (arm64) and hi3519a (armhf),
run it there over real SSH, and compare its output with the numpy reference on the host."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesdk import emulator
from edgesdk.boards import get_board
from edgesdk.cli import app
from edgesdk.cross.build import cross_build
from edgesdk.cross.run import run_on_board
from edgesdk.deploy.transport import SSHConnection, SSHTarget
from edgesdk.errors import RemoteError
from edgesdk.runtime.native import letterbox_normalize_numpy, pattern_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cross" / "examples" / "preproc"
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
TRIPLE_CXX = {"rpi4": "aarch64-linux-gnu-g++", "hi3519a": "arm-linux-gnueabihf-g++"}


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)  # CI installs qemu, debootstrap and the cross compilers; their absence is a bug
    pytest.skip(reason)


@pytest.fixture(scope="module", params=["rpi4", "hi3519a"])
def board(request):
    profile = get_board(request.param)
    missing = [e for e in ("cmake", TRIPLE_CXX[profile.id]) if shutil.which(e) is None]
    if missing:
        _skip_or_fail(f"not installed: {', '.join(missing)} (bash scripts/setup.sh installs them)")
    chk = emulator.check_host(profile, need_debootstrap=True)
    if not chk.ok:
        _skip_or_fail("emulated boards unavailable here: " + "; ".join(chk.problems))
    was_running = emulator.status(profile).state == "running"
    info = emulator.start(profile)
    yield profile, info
    if not was_running:
        emulator.stop(profile)


@pytest.fixture(scope="module")
def built(board, tmp_path_factory):
    profile, _ = board
    return cross_build(EXAMPLE, profile, out_dir=tmp_path_factory.mktemp(f"x-{profile.id}"))


def test_build_uses_the_board_rootfs_and_fits(board, built):
    profile, _ = board
    assert built.plan.sysroot.mode in ("sysroot", "board-libs")
    assert built.plan.sysroot.origin == "emulated board"
    assert all(a.check.ok for a in built.artifacts)
    exe = built.executables[0].check.info
    if profile.id == "rpi4":
        assert (exe.machine_name, exe.bits) == ("aarch64", 64)
    else:
        assert (exe.machine_name, exe.bits, exe.float_abi) == ("arm", 32, "hard")


def test_pattern_output_equals_numpy(board, built, tmp_path):
    profile, _ = board
    res = run_on_board(built, profile, exe="preproc_check",
                       args=["--pattern", "480", "640", "--out-h", "320", "--out-w", "320", "--bgr", "--out", "o.f32"],
                       fetch=["o.f32"], fetch_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.emulated and "timings are not the board's" in (res.note or "")
    report = json.loads(res.stdout)
    assert report["pad"] == [0, 40] and report["resized"] == [320, 240]
    ref = letterbox_normalize_numpy(pattern_image(480, 640), (320, 320), MEAN, STD, 114.0, True).tensor
    got = np.fromfile(tmp_path / "o.f32", np.float32).reshape(ref.shape)
    diff = float(np.abs(got - ref).max())
    print(f"{profile.id}: max abs diff native-on-board vs numpy = {diff}")
    assert diff <= 1e-5


def test_random_image_pushed_output_equals_numpy(board, built, tmp_path):
    profile, _ = board
    img = np.random.default_rng(7).integers(0, 256, (123, 457, 3), dtype=np.uint8)
    raw = tmp_path / "img.u8"
    img.tofile(raw)
    res = run_on_board(built, profile, exe="preproc_check", push=[raw], fetch=["o.f32"], fetch_dir=tmp_path / "back",
                       args=["--in", "img.u8", "--h", "123", "--w", "457", "--out-h", "224", "--out-w", "160",
                             "--mean", "0,0,0", "--std", "255,255,255", "--pad", "0", "--out", "o.f32"])
    assert res.returncode == 0, res.stderr
    ref = letterbox_normalize_numpy(img, (224, 160), (0, 0, 0), (255, 255, 255), 0.0, False).tensor
    got = np.fromfile(tmp_path / "back" / "o.f32", np.float32).reshape(ref.shape)
    assert float(np.abs(got - ref).max()) <= 1e-5


def test_failing_program_brings_back_exit_code_and_cleans_up(board, built, tmp_path):
    profile, info = board
    res = run_on_board(built, profile, exe="preproc_check", args=["--bogus"])
    assert res.returncode == 2 and "unknown or incomplete option --bogus" in res.stderr
    target = SSHTarget(host=info.host, port=info.port, user="root", identity=Path(info.key_path),
                       known_hosts=Path(info.known_hosts))
    with SSHConnection(target) as conn:
        left = conn.run(["sh", "-c", "ls -d /tmp/edgesdk-cross-* 2>/dev/null | wc -l"]).stdout.strip()
        with pytest.raises(RemoteError, match="no such file"):
            conn.get("/nonexistent/edgesdk-file", tmp_path / "x")
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()
    assert left == "0"


def test_cli_run_on_the_emulated_board(board, tmp_path):
    profile, _ = board
    res = CliRunner().invoke(app, ["cross", "build", str(EXAMPLE), "--board", profile.id, "-o", str(tmp_path),
                                   "--run", "--exe", "preproc_check", "--json", "--", "--pattern", "48", "64"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["run"]["returncode"] == 0 and data["run"]["emulated"] is True
    ref = letterbox_normalize_numpy(pattern_image(48, 64), (96, 128), MEAN, STD, 114.0, False).tensor
    assert json.loads(data["run"]["stdout"])["checksum"] == pytest.approx(float(ref.astype(np.float64).sum()), rel=1e-7)

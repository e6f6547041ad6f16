"""Bad input to convert/verify: a clear error, exit code 2, and nothing left behind. Executor failures."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgesdk.cli import app
from edgesdk.errors import InputError, ToolchainError
from edgesdk.toolchains.executor import Command, ConversionPlan, execute, run_command

MODEL = Path(__file__).resolve().parent.parent / "data" / "digits_cnn.onnx"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for OUT and a private temp dir, to prove nothing is left in either."""
    t = tmp_path / "tmp"
    t.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(t))
    (tmp_path / "work").mkdir()
    return tmp_path


def _left(sandbox: Path) -> list[str]:
    return sorted(p.name for p in (sandbox / "work").iterdir()) + sorted(p.name for p in (sandbox / "tmp").iterdir())


def _convert(sandbox: Path, *args: str):
    return CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rpi4", "-o", str(sandbox / "work" / "out"),
                                    *args])


def test_empty_calibration_dir(sandbox: Path) -> None:
    (sandbox / "calib").mkdir()
    r = _convert(sandbox, "--engine", "tflite", "--precision", "int8", "--calib", str(sandbox / "calib"))
    assert r.exit_code == 2, r.output
    assert "empty" in r.output and _left(sandbox) == []


def test_corrupt_images_are_named(sandbox: Path) -> None:
    from PIL import Image

    d = sandbox / "calib"
    d.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "good.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "empty.png").write_bytes(b"")
    r = _convert(sandbox, "--engine", "tflite", "--precision", "int8", "--calib", str(d))
    assert r.exit_code == 2, r.output
    assert "broken.jpg" in r.output and "empty.png" in r.output and "good.png" not in r.output
    assert _left(sandbox) == []


def test_misshaped_npy_is_named(sandbox: Path) -> None:
    d = sandbox / "calib"
    d.mkdir()
    np.save(d / "a.npy", np.zeros((3, 32, 32), np.float32))
    np.save(d / "b.npy", np.zeros((3, 16, 16), np.float32))
    r = _convert(sandbox, "--engine", "onnxruntime", "--precision", "int8", "--calib", str(d))
    assert r.exit_code == 2, r.output
    assert "b.npy" in r.output and "a.npy" not in r.output.split("b.npy")[0].split("\n")[-1]
    assert _left(sandbox) == []


def test_unknown_engine(sandbox: Path) -> None:
    r = _convert(sandbox, "--engine", "nccn")
    assert r.exit_code == 2 and "Did you mean 'ncnn'" in r.output and _left(sandbox) == []


def test_precision_the_engine_cannot_do(sandbox: Path) -> None:
    (sandbox / "calib").mkdir()
    r = _convert(sandbox, "--engine", "ncnn", "--precision", "int8", "--calib", str(sandbox / "calib"))
    assert r.exit_code == 2 and "ncnn2int8" in r.output and _left(sandbox) == []
    r = _convert(sandbox, "--engine", "onnxruntime", "--precision", "fp16")
    assert r.exit_code == 2 and _left(sandbox) == []


def test_int8_needs_calibration(sandbox: Path) -> None:
    r = _convert(sandbox, "--engine", "mnn", "--precision", "int8")
    assert r.exit_code == 2 and "--calib" in r.output and _left(sandbox) == []


def test_unknown_precision_and_board(sandbox: Path) -> None:
    assert _convert(sandbox, "--precision", "int4").exit_code == 2
    r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rpi9", "-o", str(sandbox / "work" / "o")])
    assert r.exit_code == 2 and _left(sandbox) == []


def test_existing_out_is_refused_without_force(sandbox: Path) -> None:
    out = sandbox / "work" / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    r = _convert(sandbox)
    assert r.exit_code == 2 and "--force" in r.output
    assert (out / "keep.txt").read_text() == "x"


def test_bad_input_shape(sandbox: Path) -> None:
    r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rpi4", "--engine", "mnn", "--precision", "fp32",
                                 "-o", str(sandbox / "work" / "o"), "--input-shape", "nope=1,2"])
    assert r.exit_code == 2 and _left(sandbox) == []


def test_bad_preprocess_yaml_names_the_field(sandbox: Path) -> None:
    y = sandbox / "pre.yaml"
    y.write_text("resize: squash\nmean: [0.5, 0.5, 0.5]\n")
    r = _convert(sandbox, "--preprocess", str(y))
    assert r.exit_code == 2 and "resize" in r.output and str(y) in r.output


def test_pickled_checkpoint_is_never_loaded(sandbox: Path) -> None:
    p = sandbox / "model.pth"
    p.write_bytes(b"\x80\x04not a torchscript zip")
    pytest.importorskip("torch")
    r = CliRunner().invoke(app, ["convert", str(p), "--board", "rpi4", "-o", str(sandbox / "work" / "o")])
    assert r.exit_code == 2 and "never unpickles" in r.output and _left(sandbox) == []


def test_verify_missing_bundle() -> None:
    r = CliRunner().invoke(app, ["verify", "/nonexistent/bundle"])
    assert r.exit_code == 2


def test_dry_run_writes_nothing(sandbox: Path) -> None:
    r = _convert(sandbox, "--engine", "ncnn", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "pnnx" in r.output and _left(sandbox) == []


# -- the executor ----------------------------------------------------------------------------------

def test_failure_names_tool_command_and_tail(tmp_path: Path) -> None:
    cmd = Command("fake", ("sh", "-c", "for i in $(seq 1 40); do echo line$i; done; echo boom >&2; exit 3"),
                  cwd=tmp_path, timeout=10)
    with pytest.raises(ToolchainError) as ei:
        run_command(cmd)
    e = ei.value
    assert e.tool == "fake" and e.returncode == 3 and e.command[0] == "sh"
    assert "boom" in e.stderr_tail and "line40" in e.stderr_tail and "line1\n" not in e.stderr_tail


def test_timeout_is_a_toolchain_error(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError) as ei:
        run_command(Command("sleeper", ("sleep", "5"), timeout=0.3))
    assert ei.value.returncode is None and "timed out" in str(ei.value)


def test_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError) as ei:
        run_command(Command("ghost", ("/nonexistent/tool",), timeout=5))
    assert ei.value.returncode == 127


def test_missing_output_is_an_error(tmp_path: Path) -> None:
    plan = ConversionPlan("t", "e", "fp32", (), (Command("true", ("true",), timeout=5),), {"model": tmp_path / "x"})
    with pytest.raises(ToolchainError, match="did not write x"):
        execute(plan)


def test_runner_injection() -> None:
    seen = []

    def runner(c: Command) -> tuple[int, str]:
        seen.append(c.argv)
        if c.tool == "slow":
            raise subprocess.TimeoutExpired(c.argv, c.timeout)
        return 0, "ok"

    run_command(Command("a", ("a",)), runner)
    with pytest.raises(ToolchainError):
        run_command(Command("slow", ("b",)), runner)
    assert seen == [("a",), ("b",)]


def test_calibration_warns_under_100(tmp_path: Path) -> None:
    from edgesdk.calib import InputSpec, load_calibration

    for i in range(5):
        np.save(tmp_path / f"{i}.npy", np.zeros((1, 3, 32, 32), np.float32))
    c = load_calibration(tmp_path, [InputSpec("image", (1, 3, 32, 32))], None)
    assert c.count == 5 and c.arrays["image"].shape == (5, 3, 32, 32)
    assert any("100" in w for w in c.warnings)


def test_input_error_is_exit_2() -> None:
    assert InputError.exit_code == 2

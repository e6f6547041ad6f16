"""`edgesdk convert --board` for the four NPU boards up to the vendor compiler, the host int8 simulation that
`edgesdk verify` runs, a test double of edgetpu_compiler for the execute path, and the flash check.

The real vendor compilers (edgetpu_compiler, vai_c_xir, nnie_mapper, hb_mapper) were not run here.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgesdk.errors import InputError

DATA = Path(__file__).resolve().parent.parent / "data"
MODEL = DATA / "digits_cnn.onnx"
# plan="split" forces the accelerator segments: these tests are about the vendor path, not the plan choice (the cost
# model may well find the tiny digits CNN faster on the CPU; tests/unit/test_plans.py tests the choice).
PRE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
LOG = Path(__file__).resolve().parent.parent / "golden" / "npu" / "logs" / "edgetpu_compiler.log"
#: fp32 top-1 on the 500 held-out digits (docs/convert.md)
FP32 = 0.988


def _images(split: str):
    d = np.load(DATA / "digits.npz")
    x8 = d["images8"][d[split]]
    big = np.kron(x8, np.ones((1, 4, 4), dtype=np.uint8))
    return np.ascontiguousarray(np.repeat(big[..., None], 3, axis=-1)), d["labels"][d[split]]


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    for i, im in enumerate(_images("calib")[0]):
        Image.fromarray(im[..., ::-1]).save(d / f"{i:04d}.png")
    return d


def _skip_unready(board: str) -> None:
    from edgesdk.boards import get_board
    from edgesdk.toolchains.adapters import accelerator_adapter_class

    env = accelerator_adapter_class(get_board(board).accelerator.engine)().check_env()
    if not env.ok:
        pytest.skip(f"{board}: {env.detail} (fix: {env.fix})")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, calib: Path):
    root = tmp_path_factory.mktemp("npu")

    @functools.cache
    def make(board: str) -> Path:
        from edgesdk.conversion import convert

        _skip_unready(board)
        out = root / board
        convert(MODEL, board, out, precision="int8", calib=calib, preprocess=PRE, plan="split")
        return out

    return make


BOARDS = ["coral-usb", "kv260", "hi3519a", "x3"]
VENDOR = {"coral-usb": "edgetpu_compiler", "kv260": "vai_c_xir", "hi3519a": "nnie_mapper_12", "x3": "hb_mapper"}


@pytest.mark.parametrize("board", BOARDS)
def test_convert_up_to_the_vendor_compiler(bundles, board: str) -> None:
    from edgesdk.runtime.manifest import load_manifest

    out = bundles(board)
    mf = load_manifest(out)
    acc = [s for s in mf.segments if s.reason and "host int8 simulation" in s.reason]
    assert acc, "the accelerator segments must be there, as their host simulation"
    for s in acc:
        assert s.engine == "onnxruntime" and s.precision == "int8"
        how = (out / "vendor" / s.id / "COMPILE.txt").read_text()
        assert VENDOR[board] in how and "Install" in how
    assert any(VENDOR[board] in n for n in mf.notes)


@pytest.mark.parametrize("board", BOARDS)
def test_host_simulated_int8_accuracy(bundles, board: str) -> None:
    """The digits classifier's held-out top-1 under each accelerator's int8 scheme (docs/npu.md records them)."""
    from edgesdk.verify import evaluate_accuracy, verify

    out = bundles(board)
    x, y = _images("heldout")
    acc = evaluate_accuracy(out, x, y)
    assert acc >= FP32 - 0.02, (board, acc)
    rep = verify(out, layers=False)
    assert rep.ok, rep.to_dict()


def test_nnie_bundle_keeps_the_checked_caffe_model(bundles) -> None:
    out = bundles("hi3519a")
    check = json.loads((out / "vendor" / "s0" / "s0_caffe_check.json").read_text())
    assert max(check["max_abs_diff"].values()) < 1e-3 and check["opencv"].startswith("4.")
    cfg = (out / "vendor" / "s0" / "s0.cfg").read_text()
    assert "[norm_type] 5" in cfg and "[RGB_order] RGB" in cfg


@pytest.mark.parametrize("board", BOARDS)
def test_dry_run_plans_the_compiler(board: str, calib: Path) -> None:
    from edgesdk.conversion import convert

    res = convert(MODEL, board, None, precision="int8", calib=calib, preprocess=PRE, dry_run=True, plan="split")
    tools = [c["tool"] for p in res.plans for c in p["commands"]]
    assert {"edgetpu_compiler", "vai_c_xir", "nnie_mapper", "hb_mapper"} & set(tools)


@pytest.mark.parametrize("board", BOARDS)
def test_float_on_an_accelerator_board_is_input_error(board: str, tmp_path: Path) -> None:
    from edgesdk.conversion import convert

    with pytest.raises(InputError, match="int8 only"):
        convert(MODEL, board, tmp_path / "o", precision="fp32")


FAKE_COMPILER = """#!{python}
# TEST DOUBLE of edgetpu_compiler (the real one was not run here): writes <stem>_edgetpu.tflite (a copy of
# the input) and <stem>_edgetpu.log in the documented format, and prints that log.
import pathlib, shutil, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("-o") + 1])
src = pathlib.Path(args[-1])
out.mkdir(parents=True, exist_ok=True)
shutil.copyfile(src, out / (src.stem + "_edgetpu.tflite"))
log = pathlib.Path({log!r}).read_text()
(out / (src.stem + "_edgetpu.log")).write_text(log)
print(log)
"""


def test_fake_edgetpu_compiler_through_convert_verify_and_flash_check(tmp_path: Path, calib: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgesdk.conversion import convert
    from edgesdk.runtime.manifest import load_manifest
    from edgesdk.deploy.flash import accelerator_routes
    from edgesdk.toolchains.adapters.edgetpu import AcceleratorMissing
    from edgesdk.verify import verify

    _skip_unready("coral-usb")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text(FAKE_COMPILER.format(python=sys.executable, log=str(LOG)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    res = convert(MODEL, "coral-usb", tmp_path / "b", precision="int8", calib=calib, preprocess=PRE, plan="split")
    assert any("3.50 MiB" in w and "10.5 ms" in w for w in res.warnings)  # the parsed log's cache warning
    mf = load_manifest(tmp_path / "b")
    seg = mf.segments[0]
    assert seg.engine == "edgetpu" and seg.accelerator and seg.cpu_version is not None
    assert seg.inputs[0].quant is not None and seg.inputs[0].quant.dtype == "int8"  # int8 I/O
    rep = verify(tmp_path / "b", layers=False)  # no Edge TPU here: the CPU version runs, and says so
    assert rep.ok and any("host int8 simulation" in n for n in rep.notes)
    # flash: an emulated coral-usb has no Edge TPU
    with pytest.raises(AcceleratorMissing, match="--fallback cpu"):
        accelerator_routes(mf, False, None, board_name="coral-usb (emulated)")
    _, lines = accelerator_routes(mf, False, "cpu", board_name="coral-usb")
    assert lines and "runs its CPU version (onnxruntime" in lines[0]
    assert accelerator_routes(mf, True, None)[1] == ()

"""Issue 8: `flash --board coral-usb` to the emulated board, which has no Edge TPU. Refused (exit 2, nothing pushed)
unless `--fallback cpu`; then the accelerator segment runs its CPU version on the board and every report says so.

The bundle's Edge TPU segment comes from a TEST DOUBLE of edgetpu_compiler (tests/unit/test_npu_convert.py): the
real compiler was not run here. Everything else is real: onnx2tf int8 host steps, the emulated aarch64 board over
SSH, provisioning, push, the board-side smoke test and a remote run.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk.boards import get_board

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATA = Path(__file__).resolve().parents[1] / "data"
MODEL = DATA / "digits_cnn.onnx"
LOG = DATA.parent / "golden" / "npu" / "logs" / "edgetpu_compiler.log"
PRE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
FAKE_COMPILER = """#!{python}
# TEST DOUBLE of edgetpu_compiler: copies the input to <stem>_edgetpu.tflite and writes the documented log.
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


@pytest.fixture(scope="module")
def coral():
    from tests.integration.conftest import emulated

    yield from emulated("coral-usb")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits_cnn for coral-usb, int8, with an Edge TPU segment (test-double compiler) and its CPU version."""
    from PIL import Image

    from edgesdk.toolchains.adapters import accelerator_adapter_class

    env = accelerator_adapter_class(get_board("coral-usb").accelerator.engine)().check_env()
    if not env.ok:
        pytest.skip(f"coral-usb host steps unavailable: {env.detail} (fix: {env.fix})")
    root = tmp_path_factory.mktemp("coral")
    calib = root / "calib"
    calib.mkdir()
    d = np.load(DATA / "digits.npz")
    x8 = d["images8"][d["calib"]][:64]
    for i, im in enumerate(np.kron(x8, np.ones((1, 4, 4), dtype=np.uint8))):
        Image.fromarray(np.ascontiguousarray(np.repeat(im[..., None], 3, axis=-1))).save(calib / f"{i:04d}.png")
    bindir = root / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text(FAKE_COMPILER.format(python=sys.executable, log=str(LOG)))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    try:
        from edgesdk.conversion import convert

        convert(MODEL, "coral-usb", root / "b", precision="int8", calib=calib, preprocess=PRE,
                plan="split")  # the accelerator path, not the plan choice (the tiny CNN is faster on the CPU)
    finally:
        mp.undo()
    from edgesdk.runtime.manifest import load_manifest

    seg = load_manifest(root / "b").segments[0]
    assert seg.engine == "edgetpu" and seg.accelerator and seg.cpu_version is not None
    return root / "b"


def _board_tree(info) -> dict[str, object]:
    """What the emulated board holds under its edgesdk dir (its rootfs is a directory here)."""
    base = Path(info.rootfs) / "opt" / "edgesdk"
    snap: dict[str, object] = {}
    for sub in ("releases", "staging", "wheels"):
        d = base / sub
        snap[sub] = sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.is_dir() else None
    st = base / "state.json"
    snap["state"] = st.read_text() if st.is_file() else None
    snap["lock"] = (base / "lock").exists()
    return snap


def test_flash_coral_usb_to_emulated_board_refused_then_cpu_fallback(coral, bundle, tmp_path):
    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.deploy.flash import FlashOptions, emulator_target, flash, run_remote, status

    before = _board_tree(coral)
    r = CliRunner().invoke(app, ["flash", "--board", "coral-usb", str(bundle), "--json"])
    assert r.exit_code == 2, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["status"] == "refused" and res["emulated"] and res["accelerator_present"] is False
    assert "has no accelerator" in res["error"] and "--fallback cpu" in res["error"] and "s0 (edgetpu)" in res["error"]
    assert "push" not in res["phases"] and "provision" not in res["phases"] and res["bytes_sent"] == 0
    assert _board_tree(coral) == before  # nothing pushed, no state change, lock not left behind

    # the human output names the fix too
    r = CliRunner().invoke(app, ["flash", "--board", "coral-usb", str(bundle)])
    text = " ".join((r.stdout + r.stderr).split())  # rich wraps lines
    assert r.exit_code == 2 and "refused" in text and "has no accelerator" in text and "--fallback cpu" in text

    target, _ = emulator_target(get_board("coral-usb"))
    res = flash(bundle, "coral-usb", target, FlashOptions(fallback="cpu"))
    assert res.ok, (res.error, res.log)
    assert res.fallback == "cpu" and res.accelerator_present is False and res.smoke["ok"]
    assert res.notes and "runs its CPU version (onnxruntime" in res.notes[0]
    (use,) = res.engines_used
    assert use["segment"] == "s0" and use["engine"] == "onnxruntime" and use["planned"] == "edgetpu"
    assert use["fallback"] and use["reason"]
    bid = res.bundle_id

    st = status(target)
    assert st.current == bid and st.fallback[bid] == "cpu"
    ev = [e for e in st.history if e.get("event") == "activated"][-1]
    assert ev["release"] == bid and ev["fallback"] == "cpu" and "CPU version" in ev["note"]

    # `edgesdk run` honours the release's recorded fallback
    ref = bundle / "reference" / "input_0.npy"
    out = run_remote(target, [str(ref)], tmp_path / "out")
    assert out.fallback == "cpu" and out.engines_used[0]["fallback"]
    (o,) = out.outputs.values()
    want = np.load(bundle / "reference" / "output_0.npy")
    got = np.load(o.file)
    assert got.shape == want.shape and int(got.argmax()) == int(want.argmax())

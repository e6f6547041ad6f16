"""A real detector through the whole path on the emulated rpi4, as a user runs it from their own folder:
`edgesdk flash --board rpi4 320n.onnx` (YOLOv8n with its decode head, from the nudenet wheel of the zoo; input
size from its metadata), the smoke test on ARM over real SSH, then `edgesdk run` bringing its outputs back."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "yolov8n-nudenet"


def _zoo():
    spec = importlib.util.spec_from_file_location("zoo_fetch", REPO / "scripts" / "zoo_fetch.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def detector() -> Path:
    zoo = _zoo()
    try:
        return zoo.fetch([MODEL_ID])[MODEL_ID]
    except zoo.ZooError as exc:
        _fail_or_skip(f"zoo model {MODEL_ID} unavailable: {exc}")
        raise


def _edgesdk(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("edgesdk")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=1800)


def test_flash_and_run_a_real_detector(rpi4, detector: Path, tmp_path: Path) -> None:
    work = tmp_path / "user"
    work.mkdir()
    model = work / detector.name
    model.write_bytes(detector.read_bytes())
    r = _edgesdk("flash", "--board", "rpi4", model.name, "--json", cwd=work)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["status"] == "success" and res["smoke"]["ok"] and res["emulated"]
    from edgesdk.paths import home

    bundle = max((home() / "bundles").glob("rpi4-320n-*"), key=lambda p: p.stat().st_mtime)
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["bundle_id"] == res["bundle_id"]
    assert man["source_model"]["prepare"]["applied"]  # the shape subgraph of the head was folded
    assert man["inputs"][0]["shape"] == [1, 3, 320, 320]  # from the model's metadata (imgsz)
    ref_in = bundle / "reference" / "input_0.npy"
    run = _edgesdk("run", "--board", "rpi4", "--input", str(ref_in), "-o", str(tmp_path / "out"), "--json", cwd=work)
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    (name, o), = out["outputs"].items()
    got = np.load(o["file"])
    want = np.load(bundle / "reference" / "output_0.npy")
    assert got.shape == want.shape == (1, 22, 2100)
    cos = float(got.ravel() @ want.ravel() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cos > 0.9999 and np.abs(got - want).max() <= 1e-3 * np.abs(want).max()

"""End to end on the emulated aarch64 rpi4: convert, provision (offline wheelhouse), push, smoke test on ARM,
then a remote run, status and rollback, all through the CLI over real SSH."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "tests" / "data" / "digits_cnn.onnx"


def test_flash_convert_smoke_run_on_emulated_rpi4(rpi4, tmp_path):
    from typer.testing import CliRunner

    from edgesdk.cli import app

    r = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(MODEL), "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["status"] == "success" and res["emulated"] and res["smoke"]["ok"]
    assert res["provisioned"] in ("installed", "skipped") and res["latency_ms"] > 0
    assert "EMULATED" in res["target_note"]
    bid = res["bundle_id"]
    # re-flash: nothing sent, provisioning skipped (same wheel set)
    r2 = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(MODEL), "--json"])
    res2 = json.loads(r2.stdout.strip().splitlines()[-1])
    assert res2["status"] == "success" and res2["bytes_sent"] == 0
    # skipped, unless edgesdk's own source changed in between (then only its small wheel is sent again)
    assert res2["provisioned"] == "skipped" or res2["wheel_bytes_sent"] < 2_000_000
    st = CliRunner().invoke(app, ["status", "--board", "rpi4", "--json"])
    assert json.loads(st.stdout)["current"] == bid
    from edgesdk.paths import home

    ref = next((home() / "bundles").glob("rpi4-digits_cnn-*/reference/input_0.npy"))  # the converted bundle
    run = CliRunner().invoke(app, ["run", "--board", "rpi4", "--input", str(ref), "-o", str(tmp_path), "--json"])
    assert run.exit_code == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    import numpy as np

    (name, o), = out["outputs"].items()
    got = np.load(o["file"])
    want = np.load(Path(ref).parent / "output_0.npy")
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-3)

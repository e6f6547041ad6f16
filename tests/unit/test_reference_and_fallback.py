"""The one reference check (edgesdk.runtime.reference) and the one fallback rule (edgesdk.runtime.fallback): their
verdicts, and that verify, convert's artifact check, Session and flash use them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import runtime_bundles as rbundles

from edgesdk.runtime import reference
from edgesdk.runtime.errors import EngineUnavailable, InputError, InputMismatch
from edgesdk.runtime.fallback import (
    CPU_ENGINE_NOT_ALLOWED,
    NO_CPU_VERSION,
    NO_FALLBACK,
    FallbackRefused,
    Route,
    check_fallback,
    engines_needed,
    resolve_fallback,
)
from edgesdk.runtime.manifest import Tolerance, load_manifest


# -- the reference check -------------------------------------------------------------------------------------
def test_verify_artifact_check_and_board_share_one_compare():
    from pathlib import Path

    from edgesdk import verify
    from edgesdk.runtime import agent, profiling
    from edgesdk.toolchains import check

    assert verify.compare is reference.compare and verify.cosine is reference.cosine
    assert verify.OutputMetrics is reference.OutputMetrics
    assert "from edgesdk.runtime.reference import compare" in Path(check.__file__).read_text()
    for mod in (profiling, agent, verify):  # no second implementation anywhere
        assert "np.ptp" not in Path(mod.__file__).read_text() and "def cosine" not in Path(mod.__file__).read_text()


def test_compare_verdicts():
    tol = Tolerance(max_abs_rel=1e-2)
    ref = np.linspace(-1, 1, 20, dtype=np.float32).reshape(1, 20)
    ok = reference.compare("y", [ref + 1e-3], [ref], tol)
    assert ok.ok and ok.problems == () and ok.max_abs_rel == pytest.approx(1e-3 / 2, rel=1e-3)
    assert ok.top1_agreement == 1.0  # a (1, N) output is a classifier's
    far = reference.compare("y", [ref + 0.1], [ref], tol)
    assert not far.ok and "of the output range" in far.problems[0]
    # the range is max - min of the reference; a constant reference divides by 1
    const = reference.compare("c", [np.full((3,), 5.001)], [np.full((3,), 5.0)], tol)
    assert const.ok and const.max_abs_rel == pytest.approx(1e-3, rel=1e-3)
    # cosine floor (int8 bundles)
    flipped = reference.compare("y", [-ref], [ref], Tolerance(max_abs_rel=10.0, cosine_min=0.99))
    assert not flipped.ok and "cosine" in flipped.problems[0]
    # shapes: the same size is reshaped; another size is a problem of its own
    assert reference.compare("y", [ref.ravel()], [ref], tol).ok
    bad = reference.compare("y", [ref[:, :10]], [ref], tol)
    assert not bad.ok and "shape [1, 10]" in bad.problems[0]
    # NaN where the reference is finite fails (NaN would pass every threshold otherwise)
    nan = ref.copy()
    nan[0, 3] = np.nan
    got = reference.compare("y", [nan], [ref], tol)
    assert not got.ok and "NaN/inf" in got.problems[0]
    with pytest.raises(ValueError, match="no samples"):
        reference.compare("y", [], [], tol)


def test_check_outputs_verdict_and_its_json():
    tol = Tolerance(max_abs_rel=1e-3)
    ref = {"a": np.ones((2, 2)), "b": np.arange(4.0)}
    v = reference.check_outputs({"a": np.ones((2, 2)), "b": np.arange(4.0) * 2}, ref, tol)
    assert not v.ok and [m.name for m in v.failed] == ["b"]
    d = v.to_dict()
    assert d["checks"]["a"]["ok"] and not d["checks"]["b"]["ok"] and d["checks"]["b"]["problem"]
    assert d["tolerance"] == {"max_abs_rel": 1e-3, "cosine_min": None}
    # an output the bundle did not produce
    v2 = reference.check_outputs({"a": np.ones((2, 2))}, ref, tol)
    assert not v2.ok and "produced no output 'b'" in v2.checks()["b"]["problem"]
    json.dumps(v2.to_dict(), allow_nan=False)  # inf errors become null: JSON has no inf
    # nothing to compare is no pass
    assert not reference.check_outputs({}, {}, tol).ok


def test_check_reference_reads_the_bundle(tmp_path):
    from sshd_fixture import make_test_bundle

    from edgesdk.runtime import Session

    b = make_test_bundle(tmp_path / "b")
    with Session(b) as s:
        ins, outs = reference.reference_arrays(b, s.manifest)
        assert set(ins) == {t.name for t in s.inputs} and set(outs) == {t.name for t in s.outputs}
        assert reference.check_reference(s, s.run(ins)).ok
        wrong = {k: v + 1 for k, v in s.run(ins).items()}
        assert not reference.check_reference(s, wrong).ok


# -- the fallback rule ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Cpu:
    engine: str


@dataclass(frozen=True)
class _Seg:
    id: str
    engine: str
    cpu_version: _Cpu | None = None
    accelerator: bool = False


def test_check_fallback():
    assert check_fallback(None) == check_fallback("") == check_fallback("error") == "error"
    assert check_fallback("cpu") == "cpu"
    with pytest.raises(InputMismatch, match="--fallback: expected cpu") as ei:
        check_fallback("gpu", "--fallback")
    assert isinstance(ei.value, InputError) and ei.value.exit_code == 2


def test_resolve_fallback_routes_and_refusals():
    segs = [_Seg("s0", "edgetpu", _Cpu("onnxruntime"), True), _Seg("s1", "onnxruntime")]
    gone = lambda s: "accelerator absent" if s.engine == "edgetpu" else None
    # everything runs: each on its own engine
    assert resolve_fallback(segs, "error") == (Route("s0", "edgetpu", "edgetpu"), Route("s1", "onnxruntime", "onnxruntime"))
    # a missing engine and no fallback: refused, the segment named
    with pytest.raises(FallbackRefused) as ei:
        resolve_fallback(segs, None, gone, fix="plug it in")
    assert ei.value.kind == NO_FALLBACK and ei.value.segments == (("s0", "edgetpu"),)
    assert isinstance(ei.value, EngineUnavailable) and "plug it in" in str(ei.value)
    assert "accelerator absent" in str(ei.value)
    # with fallback cpu: its CPU version, recorded as such
    r0, r1 = resolve_fallback(segs, "cpu", gone)
    assert (r0.engine, r0.planned, r0.fallback) == ("onnxruntime", "edgetpu", True)
    assert r0.reason == "edgetpu unavailable: accelerator absent" and r0.cpu_version == _Cpu("onnxruntime")
    assert not r1.fallback
    # no CPU version: refused even with fallback cpu
    with pytest.raises(FallbackRefused, match="no CPU version of segment 's0'") as ei:
        resolve_fallback([_Seg("s0", "edgetpu")], "cpu", gone)
    assert ei.value.kind == NO_CPU_VERSION
    # the CPU version's engine is not among the allowed ones
    with pytest.raises(FallbackRefused, match="CPU version needs 'onnxruntime'") as ei:
        resolve_fallback(segs[:1], "cpu", gone, allowed=["edgetpu"])
    assert ei.value.kind == CPU_ENGINE_NOT_ALLOWED
    # every refused segment is named at once
    two = [_Seg("a", "edgetpu"), _Seg("b", "edgetpu")]
    with pytest.raises(FallbackRefused) as ei:
        resolve_fallback(two, "error", gone)
    assert ei.value.segments == (("a", "edgetpu"), ("b", "edgetpu")) and "segment b (edgetpu)" in str(ei.value)
    with pytest.raises(InputMismatch):
        resolve_fallback(segs, "gpu")


def test_engines_needed():
    segs = [_Seg("s0", "edgetpu", _Cpu("onnxruntime"), True), _Seg("s1", "ncnn"), _Seg("s2", "rknn", None, True)]
    gone = lambda s: "absent" if s.accelerator else None
    assert engines_needed(segs, None) == {"edgetpu", "ncnn", "rknn"}
    assert engines_needed(segs, None, gone) == {"edgetpu", "ncnn", "rknn"}  # no fallback: nothing changes
    assert engines_needed(segs, "cpu", gone) == {"onnxruntime", "ncnn", "rknn"}  # s2 has no CPU version: kept
    assert engines_needed(segs, "cpu") == {"edgetpu", "onnxruntime", "ncnn", "rknn"}  # beside it, to fall back


def test_flash_refuses_or_falls_back_through_the_rule(tmp_path):
    from edgesdk.deploy.flash import accelerator_routes, board_engines
    from edgesdk.toolchains.adapters._accel import AcceleratorMissing

    b = rbundles.make_bundle(tmp_path / "b", [("edgetpu", "head"), ("onnxruntime", "mid"), ("onnxruntime", "tail")],
                             cpu_versions={0: "onnxruntime"}, accelerator=[0])
    m = load_manifest(b)
    assert accelerator_routes(m, True, None)[1] == ()
    with pytest.raises(AcceleratorMissing, match="has no accelerator, but segments s0 \\(edgetpu\\)") as ei:
        accelerator_routes(m, False, None, board_name="coral-usb (EMULATED)")
    assert "--fallback cpu" in str(ei.value) and ei.value.exit_code == 2
    routes, notes = accelerator_routes(m, False, "cpu", board_name="coral-usb")
    assert [r.fallback for r in routes] == [True, False, False]
    assert notes == (("segment s0: edgetpu accelerator absent on coral-usb; runs its CPU version (onnxruntime, host "
                      "int8 simulation) because --fallback cpu was given"),)
    assert board_engines(m, "cpu", accelerator=False) == {"onnxruntime"}
    nocpu = rbundles.make_bundle(tmp_path / "n", [("edgetpu", "all")], accelerator=[0])
    with pytest.raises(AcceleratorMissing, match="s0 carry no CPU version"):
        accelerator_routes(load_manifest(nocpu), False, "cpu")


def test_every_caller_checks_the_fallback_with_the_rule(tmp_path):
    """CLI, flash, fleet, profile, Session and the board CLI refuse a bad value with the same message."""
    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.deploy.fleet import deploy_fleet
    from edgesdk.profile import ProfileOptions
    from edgesdk.runtime import Session
    from edgesdk.runtime.__main__ import main as board_cli

    b = rbundles.make_bundle(tmp_path / "b", [("onnxruntime", "all")])
    with pytest.raises(InputMismatch, match="expected cpu"):
        Session(b, fallback="gpu")
    with pytest.raises(InputMismatch, match="expected cpu"):
        ProfileOptions(fallback="gpu")
    from edgesdk.deploy.flash import FlashOptions, flash

    with pytest.raises(InputMismatch, match="expected cpu"):
        flash(b, "rpi4", None, FlashOptions(fallback="gpu"))
    with pytest.raises(InputMismatch, match="expected cpu"):
        deploy_fleet(b, "rpi4", [], FlashOptions(fallback="gpu"))
    r = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(b), "--fallback", "gpu"])
    assert r.exit_code == 2 and "expected cpu" in " ".join((r.stdout + r.stderr).split())
    assert board_cli(["smoke", str(b), "--fallback", "gpu"]) == 2

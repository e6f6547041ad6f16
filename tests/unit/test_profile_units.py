"""edgesdk profile: statistics, expectations and flags, sweep parsing and choice, diff, report files, HTML, CLI."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesdk.boards import get_board
from edgesdk.errors import InputError
from edgesdk.profile import build_report, diff, load_report, parse_sweep
from edgesdk.profile.expect import expectations, reference_match
from edgesdk.profile.html import render_html, timeline_items
from edgesdk.runtime import profiling
from edgesdk.runtime.manifest import load_manifest


@pytest.fixture(scope="module")
def measure(tmp_path_factory):
    """A real measurement of a tiny onnxruntime bundle, in this process."""
    from sshd_fixture import make_test_bundle

    b = make_test_bundle(tmp_path_factory.mktemp("pb") / "b")
    return profiling.profile_bundle(b, runs=12, warmup=2, per_layer=True, layer_runs=3, pipeline_frames=8)


def _as(m, **kw):
    m = copy.deepcopy(m)
    for k, v in kw.items():
        m[k] = v
    return m


def test_latency_stats_percentiles():
    s = profiling.latency_stats([float(x) for x in range(1, 101)])
    assert (s["min_ms"], s["max_ms"], s["count"]) == (1.0, 100.0, 100)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01) and s["stdev_ms"] == pytest.approx(np.std(range(1, 101), ddof=1), 1e-3)
    assert profiling.latency_stats([]) == {"count": 0}


def test_measurement_shape(measure):
    assert measure["schema"] == profiling.SCHEMA and measure["latency"]["count"] == 12
    assert len(measure["latencies_ms"]) == 12 and measure["segments"][0]["engine"] == "onnxruntime"
    assert measure["accuracy"]["checked"] and measure["accuracy"]["passed"]
    assert measure["throughput"]["frames"] == 8 and measure["throughput"]["fps"] > 0
    assert measure["memory"]["peak_rss_mb"] > 0 and measure["layers"][0]["available"]
    assert {"Conv", "Gemm"} <= {ly["type"] for ly in measure["layers"][0]["layers"]}


def test_throttle_flags_from_vcgencmd_and_clocks():
    after = {"throttled": {"raw": "throttled=0x50005", "value": 0x50005,
                           "flags": ["under-voltage detected", "currently throttled"]},
             "thermal": [{"zone": "thermal_zone0", "celsius": 83.0, "trip_points": [85.0]}],
             "cpufreq": [{"cpu": "cpu0", "cur_mhz": 600.0, "max_mhz": 1800.0, "limit_mhz": 1800.0,
                          "governor": "ondemand"}]}
    f = profiling.throttling_flags({}, after)
    assert any("currently throttled" in x for x in f) and any("83 C" in x for x in f)
    assert any("600 MHz" in x for x in f)
    assert profiling.THROTTLE_BITS[2] == "currently throttled"


def test_reference_match_and_slow_flag_with_causes(measure):
    board = get_board("rpi4")
    m = _as(measure, latency={**measure["latency"], "p50_ms": 200.0})
    m["bundle"] = {**m["bundle"], "source_model": {"name": "mobilenetv2-7.onnx"}, "precision": "fp32",
                   "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}]}
    m["segments"] = [{**m["segments"][0], "engine": "ncnn", "threads": 4}]
    ref, related = reference_match(board, m)
    assert ref["latency_ms"] == 61.9 and ref["threads"] == 4 and len(related) >= 3
    exp, flags = expectations(board, m, emulated=False, matches_board=True)
    slow = [f for f in flags if f["code"] == "slower-than-published"]
    assert slow and exp["reference"]["measured_over_published"] == pytest.approx(200 / 61.9, rel=1e-3)
    # one thread on four cores is a likely cause
    m1 = _as(m, segments=[{**m["segments"][0], "threads": 1}])
    m1["system"] = {**m1["system"], "throttling": ["vcgencmd: currently throttled"]}
    ref1, _ = reference_match(board, m1)
    assert ref1["latency_ms"] == 93.5
    _, flags1 = expectations(board, m1, emulated=False, matches_board=True)
    causes = [c for f in flags1 for c in f.get("causes", [])]
    assert any(c.startswith("throttled") for c in causes)
    _, flags4 = expectations(board, _as(m, latency={**m["latency"], "p50_ms": 300.0},
                                        settings={**m["settings"], "threads": 1}), emulated=False, matches_board=True)
    assert any("wrong thread count" in c for f in flags4 for c in f.get("causes", []))


def test_emulated_is_never_compared(measure):
    board = get_board("rpi4")
    m = _as(measure, latency={**measure["latency"], "p50_ms": 5000.0})
    m["bundle"] = {**m["bundle"], "source_model": {"name": "mobilenet_v2"},
                   "inputs": [{"name": "x", "shape": [1, 3, 224, 224], "dtype": "float32"}]}
    m["segments"] = [{**m["segments"][0], "engine": "ncnn", "threads": 4}]
    exp, flags = expectations(board, m, emulated=True, matches_board=True)
    codes = {f["code"] for f in flags}
    assert "emulated" in codes and "slower-than-published" not in codes and not exp["compared"]
    assert exp["reference"] is not None  # shown, not compared


def test_accelerator_not_used_flag(measure):
    board = get_board("coral-usb") if "coral-usb" in __import__("edgesdk.boards").boards.board_ids() else None
    if board is None:
        pytest.skip("no Edge TPU board profile")
    m = _as(measure, segments=[{**measure["segments"][0], "engine": "onnxruntime", "fallback": True, "kind": "cpu-fallback"}])
    _, flags = expectations(board, m, emulated=False, matches_board=True)
    assert any("accelerator not used" in f["message"] for f in flags)


def test_report_roundtrip_html_and_diff(measure, tmp_path):
    board = get_board("rpi4")
    target = {"host": "local", "board": "rpi4", "board_name": board.name, "matches_board": False, "release": "x"}
    rep = build_report(measure, board, target)
    p = rep.write_json(tmp_path / "a.json")
    a = load_report(p)
    assert a.data["schema"] == "edgesdk.profile/1" and "not-the-board" in {f["code"] for f in a.flags}
    text = rep.format()
    assert "p50" in text and "s0" in text
    h = render_html(a.data)
    assert "<script src" not in h and "http://" not in h.replace("http://www.w3.org/2000/svg", "")
    assert h.count('class="chart"') == 3 and "rect class=\"bar\"" in h
    assert [k for _, k, _ in timeline_items(a.data)][:3] == ["conversion", "cpu", "conversion"]
    # the diff's verdict on fixed latencies (the measured ones are as noisy as this machine): B twice as slow
    # with a spread of 5% is significant; the same change inside a spread as wide as the values is noise
    lat = {"min_ms": 0.9, "p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.2, "max_ms": 1.3, "mean_ms": 1.0,
           "stdev_ms": 0.05, "count": 12}
    a.data["latency"] = lat
    b = copy.deepcopy(a.data)
    b["latency"] = {k: (v * 2 if k.endswith("_ms") and k != "stdev_ms" else v) for k, v in lat.items()}
    (tmp_path / "b.json").write_text(json.dumps(b))
    d = diff(a, load_report(tmp_path / "b.json"))
    assert d.verdict.startswith("B is slower by 100.0%")
    b["latency"]["stdev_ms"] = a.data["latency"]["stdev_ms"] = 3.0
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert diff(a, load_report(tmp_path / "b.json")).verdict == "no significant change in p50 latency"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(InputError, match="schema"):
        load_report(bad)


def test_parse_sweep():
    assert parse_sweep("threads=1,2,4 engine=ncnn,mnn,tflite precision=fp32,int8") == {
        "threads": ["1", "2", "4"], "engine": ["ncnn", "mnn", "tflite"], "precision": ["fp32", "int8"]}
    assert parse_sweep(["threads=1", "threads=2"]) == {"threads": ["1", "2"]}
    for bad in ("threads=0", "speed=1", "engine", "precision=fp8"):
        with pytest.raises(InputError):
            parse_sweep(bad)


def test_sweep_picks_fastest_that_passes(monkeypatch, measure, tmp_path):
    """The selection rule, with profile() replaced: the fastest row fails accuracy and is not chosen."""
    import importlib

    from sshd_fixture import make_test_bundle

    run_mod = importlib.import_module("edgesdk.profile.run")
    sweep_mod = importlib.import_module("edgesdk.profile.sweep")
    from edgesdk.profile.report import ProfileReport

    bundle = make_test_bundle(tmp_path / "b")
    p50 = {1: 9.0, 2: 3.0, 4: 1.0}

    def fake(b, board, host, opts, **kw):
        m = copy.deepcopy(measure)
        m["latency"]["p50_ms"] = p50[opts.threads]
        m["accuracy"] = {"checked": True, "passed": opts.threads != 4}
        return ProfileReport({**m, "target": {}, "emulated": False})

    monkeypatch.setattr(sweep_mod, "profile", fake)
    res = sweep_mod.sweep(bundle, "rpi4", "local", "threads=1,2,4")
    assert [r.status for r in res.rows] == ["ok", "ok", "failed-accuracy"]
    assert res.best.threads == 2 and "threads=2" in res.format()
    done = sweep_mod.tune(res, "rpi4", "local")
    t = json.loads((bundle / "tuning.json").read_text())
    assert t["schema"] == "edgesdk.tuning/1" and t["engines"] == [{"name": "onnxruntime", "options": {"threads": 2}}]
    assert profiling.tuned_engines(bundle) == [("onnxruntime", {"threads": 2})]
    # tuning.json is listed in the manifest: the tuned bundle has a new id; the tuning names the bundle measured
    m = load_manifest(bundle)
    assert "tuning.json" in m.files and done["release"] == m.bundle_id and t["bundle_id"] == m.untuned_id()
    assert run_mod.LOCAL == "local"


def test_cli_profile_local_and_diff(tmp_path):
    from sshd_fixture import make_test_bundle
    from typer.testing import CliRunner

    from edgesdk.cli import app

    b = make_test_bundle(tmp_path / "b")
    r = CliRunner().invoke(app, ["profile", str(b), "--board", "rpi4", "--host", "local", "--runs", "5",
                                 "--warmup", "1", "--frames", "0", "-o", str(tmp_path / "a.json"),
                                 "--html", str(tmp_path / "a.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")
    r2 = CliRunner().invoke(app, ["profile", "diff", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--json"])
    assert r2.exit_code == 0 and json.loads(r2.stdout)["verdict"] == "no significant change in p50 latency"
    r3 = CliRunner().invoke(app, ["profile", str(b), "--host", "local"])
    assert r3.exit_code == 2


def test_the_vendor_compilers_estimate_is_an_expectation_of_the_bundle(measure, tmp_path):
    """imx93: vela's estimate (carried by the bundle's ethosu segment) is shown beside the measurement."""
    import json as _json

    from edgesdk.profile.run import _vendor_estimates

    (tmp_path / "manifest.json").write_text(_json.dumps({"segments": [
        {"id": "s0", "engine": "ethosu", "options": {"vendor_estimate_ms": 0.042, "vendor_estimate_by": "vela"}},
        {"id": "s1", "engine": "tflite", "options": {}}]}))
    est = _vendor_estimates(tmp_path)
    assert est == [{"segment": "s0", "engine": "ethosu", "ms": 0.042, "by": "vela"}]
    exp, _ = expectations(get_board("imx93"), measure, emulated=False, matches_board=True, vendor_estimates=est)
    v = exp["vendor_estimate"]
    assert v["total_ms"] == 0.042 and "accelerator segments only" in v["note"]
    lat = measure["latency"]["p50_ms"]
    assert v["measured_over_estimate"] == round(lat / 0.042, 2)
    exp, _ = expectations(get_board("imx93"), measure, emulated=True, matches_board=False, vendor_estimates=est)
    assert "measured_over_estimate" not in exp["vendor_estimate"]  # shown, never compared on an emulated board

"""Typed results of flash, status, rollback, run and fleets: frozen, an enum status, to_dict() with the --json keys;
and the board CLI's verbs (`python -m edgesdk.runtime smoke|run|profile`) that the agent runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from sshd_fixture import make_test_bundle

from edgesdk.deploy.fleet import FleetResult
from edgesdk.deploy.results import (
    BoardState,
    BoardStatus,
    FlashResult,
    FlashStatus,
    Outcome,
    OutputFile,
    RollbackResult,
    RunResult,
    engines_used,
)
from edgesdk.runtime.__main__ import RESULT_MARK
from edgesdk.runtime.__main__ import main as board_cli

FLASH_KEYS = {"host", "board", "status", "bundle_id", "previous", "phases", "bytes_sent", "bytes_total",
              "wheel_bytes_sent", "provisioned", "smoke", "latency_ms", "emulated", "forced", "warnings", "error",
              "log", "transfer", "target_note", "fallback", "accelerator_present", "notes", "engines_used"}


def test_flash_result_is_frozen_with_an_enum_status():
    r = FlashResult(host="h", board="rpi4", status="rolled-back", smoke={"ok": False, "checks": {"y": {"ok": False}}},
                    warnings=["w"], engines_used=[{"segment": "s0", "engine": "ncnn"}], phases={"push": 1.23456})
    assert r.status is Outcome.ROLLED_BACK and FlashStatus is Outcome and not r.ok
    assert r.status == "rolled-back" and f"{r.status}" == "rolled-back" and {"rolled-back": 1}[r.status] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.status = Outcome.SUCCESS  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.smoke["checks"]["y"]["ok"] = True  # type: ignore[index] - read-only all the way down
    with pytest.raises(AttributeError):
        r.warnings.append("x")  # type: ignore[attr-defined]
    d = r.to_dict()
    assert set(d) == FLASH_KEYS and d["status"] == "rolled-back" and d["phases"] == {"push": 1.235}
    assert d["smoke"] == {"ok": False, "checks": {"y": {"ok": False}}} and d["warnings"] == ["w"]
    assert json.loads(json.dumps(d)) == d  # plain JSON types
    r2 = dataclasses.replace(r, host="b1 (h)")
    assert r2.host == "b1 (h)" and r2.status is Outcome.ROLLED_BACK
    with pytest.raises(ValueError):
        FlashResult(host="h", board="b", status="exploded")


def test_board_state_from_the_agents_answer():
    ans = {"current": "r2", "releases": ["r1", "r2"], "base": "/opt/edgesdk", "lock": None,
           "state": {"history": [{"event": "activated", "release": "r2"}], "fallback": {"r2": "cpu"}}}
    st = BoardState.from_agent("pi", ans)
    assert st.status is BoardStatus.READY and st.current == "r2" and st.releases == ("r1", "r2")
    assert st.history[-1]["release"] == "r2" and st.fallback == {"r2": "cpu"}
    d = st.to_dict()
    assert {"current", "releases", "state", "lock", "base", "host", "status"} <= set(d)
    assert d["releases"] == ["r1", "r2"] and d["state"]["fallback"] == {"r2": "cpu"} and d["status"] == "ready"
    assert BoardState.from_agent("pi", {"current": None}).status is BoardStatus.EMPTY
    assert BoardState.from_agent("pi", dict(ans, lock={"who": "x"})).status is BoardStatus.LOCKED
    assert BoardState.from_agent("pi", dict(ans, state={"pending": {"release": "r3"}})).status \
        is BoardStatus.INTERRUPTED


def test_rollback_and_run_results():
    rb = RollbackResult("pi", "r2", "r1")
    assert rb.status is Outcome.ROLLED_BACK and rb.ok
    assert rb.to_dict() == {"ok": True, "host": "pi", "status": "rolled-back", "from": "r2", "current": "r1"}
    run = RunResult("pi", "r1", {"logits": OutputFile("/x/logits.npy", [1, 10], "float32")}, 1.5, "cpu",
                    engines_used([["s0", "onnxruntime"]]))
    assert run.status is Outcome.SUCCESS and run.outputs["logits"].shape == (1, 10)
    with pytest.raises(TypeError):
        run.outputs["other"] = run.outputs["logits"]  # type: ignore[index]
    d = run.to_dict()
    assert d["outputs"] == {"logits": {"file": "/x/logits.npy", "shape": [1, 10], "dtype": "float32"}}
    assert d["engines_used"] == [{"segment": "s0", "engine": "onnxruntime"}] and d["fallback"] == "cpu"
    assert {"host", "release", "outputs", "latency_ms", "fallback", "engines_used"} <= set(d)


def test_fleet_result():
    a = FlashResult(host="a", board="b", status="success")
    f = FlashResult(host="c", board="b", status="failed")
    fr = FleetResult([a, f], ["d"], "failure rate 50% > --max-fail 0%", 1.0)
    assert fr.results == (a, f) and fr.skipped == ("d",) and not fr.ok
    assert fr.to_dict() == {"boards": 3, "by_status": {"success": 1, "failed": 1}, "skipped": ["d"],
                            "stopped": "failure rate 50% > --max-fail 0%", "seconds": 1.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fr.stopped = None  # type: ignore[misc]


# -- the board CLI ------------------------------------------------------------------------------------------
def _line(out: str) -> dict:
    (line,) = [ln for ln in out.splitlines() if ln.startswith(RESULT_MARK)]
    return json.loads(line[len(RESULT_MARK):])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return {"good": make_test_bundle(d / "good"), "bad": make_test_bundle(d / "bad", seed=3, wrong_reference=True)}


def test_board_cli_smoke(tiny, capsys):
    assert board_cli(["smoke", str(tiny["good"]), "--result-line"]) == 0
    r = _line(capsys.readouterr().out)
    assert r["ok"] and r["checks"]["logits"]["ok"] and r["latency_ms"] > 0 and r["fallback"] == "error"
    assert r["engines_used"][0]["engine"] == "onnxruntime" and r["tolerance"]["max_abs_rel"] > 0
    assert board_cli(["smoke", str(tiny["bad"]), "--json"]) == 1  # beyond the tolerance
    r = json.loads(capsys.readouterr().out)
    assert not r["ok"] and "of the output range" in r["checks"]["logits"]["problem"]
    assert board_cli(["smoke", str(tiny["good"])]) == 0
    assert "passed" in capsys.readouterr().out
    assert board_cli(["smoke", str(tiny["good"].parent), "--result-line"]) == 2  # not a bundle
    assert _line(capsys.readouterr().out)["error"] == "BundleError"


def test_board_cli_run_writes_outputs(tiny, tmp_path, capsys):
    x = tiny["good"] / "reference" / "input_0.npy"
    out = tmp_path / "o"
    out.mkdir()
    assert board_cli(["run", str(tiny["good"]), "--tensors", f"--out-dir={out}", f"--input=x={x}", "--bench=1",
                      "--result-line"]) == 0
    r = _line(capsys.readouterr().out)
    assert r["files"] == {"output_0.npy": "logits"} and r["bench"]["runs"] == 1 and r["latency_ms"] > 0
    assert np.allclose(np.load(out / "output_0.npy"), np.load(tiny["good"] / "reference" / "output_0.npy"), atol=1e-5)
    # the form before verbs still runs
    assert board_cli([str(tiny["good"]), "--input", str(x)]) == 0
    assert "logits: float32[1, 10]" in capsys.readouterr().out


def test_board_cli_profile(tiny, capsys):
    assert board_cli(["profile", str(tiny["good"]), "--runs=3", "--warmup=0", "--frames=0", "--result-line"]) == 0
    r = _line(capsys.readouterr().out)
    assert r["schema"] == "edgesdk.profile/1" and r["latency"]["count"] == 3 and r["accuracy"]["passed"]
    assert board_cli(["profile", str(Path(tiny["good"]).parent), "--result-line"]) == 2
    r = _line(capsys.readouterr().out)
    assert r["ok"] is False and r["schema"] == "edgesdk.profile/1"


def test_agent_sends_no_program_text():
    """The agent runs the installed runtime's entry points; no Python travels inside a string."""
    from edgesdk.runtime import agent

    src = Path(agent.__file__).read_text()
    assert "from edgesdk" not in src and "import numpy" not in src and "r'''" not in src
    # the one -c: can nobody import the board runtime with this python? (the drop to nobody's check)
    assert src.count('"-c"') == 1 and '"-c", f"import {RUNTIME}"' in src
    assert agent.RUNTIME == "edgesdk.runtime" and set(agent.RUNTIME_VERBS) == {"smoke", "run", "profile"}

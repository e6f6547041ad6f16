"""Fuzzed models (issue 17, reliability cases 17/18): mutants of the digits CNN and of a model with the real-model
ops (scripts/fuzz_models.py `ops_model`) go through load, inspect, partition, convert (onnxruntime) and Session;
bundles have a file changed after its hash was recorded. The invariant: a clean edgesdk error or success, never
another exception, a hang past the case timeout, or a crash of this process.

Hypothesis draws every choice the mutators make (derandomized: the same cases in every run); each mutator family
gets its own examples, a few hundred cases in all. A few cases also go through the CLI, in-process (typer's
CliRunner) and as real subprocesses. The 10,000-case campaign is `scripts/fuzz_models.py --cases 10000`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 20  # per mutator family; 16 families


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_models_under_test", ROOT / "scripts" / "fuzz_models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


fz = _load_fuzz()


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory):
    """Seeds, the base bundles (onnxruntime; ncnn and MNN when their toolchains are installed), and an edgesdk
    home of its own (the prepare cache of the mutants stays out of the user's)."""
    work = tmp_path_factory.mktemp("fuzz")
    bundles = fz.base_bundles(work / "bundles")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGESDK_HOME", str(work / "home"))
    yield {"work": work, "seeds": fz.seeds(work), "bundles": bundles}
    mp.undo()


def _check(o) -> None:
    assert o.kind in ("ok", "clean"), (f"{o.kind}: {o.seed} {o.mutator} ({o.detail}) at {o.stage}: {o.error}: "
                                       f"{o.message}\n{o.trace or ''}")
    if o.kind == "clean":
        assert o.exit_code in (1, 2) and o.message


@pytest.mark.parametrize("mutator", [m for m in fz.MUTATORS if m != "bundle"])
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_mutated_model_ends_clean(fuzz_env, mutator: str, data) -> None:
    r = fz.HypothesisRand(data)
    seed = r.choice(fuzz_env["seeds"])
    case = Path(tempfile.mkdtemp(prefix="case-", dir=fuzz_env["work"]))
    try:
        mut = fz.make_mutant(seed, mutator, r, case)
        o = fz.run_stages(mut, case, prepare=r.int(0, 3) == 0)
    finally:
        shutil.rmtree(case, ignore_errors=True)
    _check(o)


@settings(max_examples=3 * EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_bundle_changed_after_hashing_ends_clean(fuzz_env, data) -> None:
    case = Path(tempfile.mkdtemp(prefix="bundle-", dir=fuzz_env["work"]))
    try:
        o = fz.bundle_case(fuzz_env["bundles"], fz.HypothesisRand(data), case)
    finally:
        shutil.rmtree(case, ignore_errors=True)
    _check(o)


def test_the_fuzzer_finds_what_it_is_for(fuzz_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness is not a test that cannot fail: a loader that raises a foreign exception is a bug, an accepted
    escaping external-data path is a bug, a stage that hangs is a hang."""
    from edgesdk.graph import load

    seed = fuzz_env["seeds"][0]
    mut = fz.make_mutant(seed, "truncate", fz.Rand(__import__("random").Random(0)), tmp_path / "a")
    monkeypatch.setattr(load, "_parse", lambda p: (_ for _ in ()).throw(KeyError("raw")))
    o = fz.run_stages(mut, tmp_path / "a", stages=("load",))
    assert o.kind == "bug" and o.error == "KeyError" and "KeyError" in (o.trace or "")
    monkeypatch.setattr(load, "_parse", lambda p: __import__("time").sleep(30))
    o = fz.run_stages(mut, tmp_path / "a", timeout=1, stages=("load",))
    assert o.kind == "hang" and o.stage == "load"
    monkeypatch.undo()
    for i in range(50):
        r = fz.Rand(__import__("random").Random(i))
        d = tmp_path / f"e{i}"
        mut = fz.make_mutant(seed, "external-data", r, d)
        if mut.escapes:
            break
    assert fz.run_stages(mut, d, stages=("load",)).kind == "clean"
    monkeypatch.setattr(load, "load_model", lambda *a, **k: None)  # a loader that accepts anything
    o = fz.run_stages(mut, d, stages=("load",))
    assert o.kind == "bug" and o.error == "EscapeAccepted", (mut.detail, o)


def _mutants(fuzz_env, root: Path) -> dict[str, object]:
    """One fixed mutant per family the CLI runs take (deterministic: Random(i))."""
    import random

    out = {}
    for i, name in enumerate(("truncate", "cycle", "huge-dims", "external-data", "opset-lie", "shape-lie")):
        for k in range(100):
            r = fz.Rand(random.Random(1000 * i + k))
            m = fz.make_mutant(fuzz_env["seeds"][k % 2], name, r, root / f"{name}-{k}")
            if name != "external-data" or m.escapes:
                out[name] = m
                break
    return out


def test_mutants_through_the_cli_in_process(fuzz_env, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgesdk.cli import app

    runner = CliRunner()
    for name, m in _mutants(fuzz_env, tmp_path).items():
        for args in (["inspect", str(m.path), "--board", "rpi4", "--json"],
                     ["partition", str(m.path), "--board", "coral-usb", "-o", str(tmp_path / f"p-{name}")],
                     ["convert", str(m.path), "--board", "rpi4", "--engine", "onnxruntime", "-o",
                      str(tmp_path / f"b-{name}")]):
            res = runner.invoke(app, args)
            out = res.output + (str(res.exception) if res.exception and not isinstance(res.exception, SystemExit)
                                else "")
            assert res.exit_code in (0, 1, 2), (name, args, res.exit_code, out)
            assert "Traceback" not in out and "internal error" not in out, (name, m.detail, out)
            if res.exit_code:
                assert "error:" in out, (name, out)
            if name == "external-data":
                assert res.exit_code == 2 and "external data" in out, (m.detail, out)


def test_mutants_through_the_real_cli(fuzz_env, tmp_path: Path) -> None:
    ms = _mutants(fuzz_env, tmp_path)
    for name in ("truncate", "huge-dims", "external-data", "cycle"):
        m = ms[name]
        r = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(m.path), "--board", "rpi4", "--engine",
                            "onnxruntime", "-o", str(tmp_path / f"b-{name}"), "--json"],
                           check=False, capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 2), (name, m.detail, r.stderr)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, (name, r.stderr)
        if r.returncode == 0:
            assert json.loads(r.stdout)["bundle_id"]
        else:
            assert r.stdout == "" and "error:" in r.stderr


def test_the_campaign_script_runs_and_reports(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_models.py"), "--cases", "12", "--seed", "3",
                        "--json"], check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["cases"] == 12 and sum(doc["outcomes"].values()) == 12 and doc["invariant_violations"] == 0
    assert set(doc["outcomes"]) <= {"ok", "clean"}
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz_models.py"), "--cases", "0"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# -- what the campaign found (each failed before its fix) ------------------------------------------------------

def _digits_with(tmp_path: Path, edit) -> Path:
    import onnx

    m = onnx.load(str(fz.DIGITS))
    edit(m)
    p = tmp_path / "found.onnx"
    p.write_bytes(m.SerializeToString())
    return p


@pytest.mark.parametrize("finding", ["initializer data_type 99", "Cast to=0"])
def test_campaign_findings_are_clean_model_errors(tmp_path: Path, finding: str) -> None:
    """onnx.checker lets an element type that does not exist through; onnx's shape inference then raised a bare
    ValueError ("Invalid tensor data type 99.") out of load_model (campaign seed 2, cases 109, 673, 1000)."""
    import onnx

    from edgesdk.errors import ModelError
    from edgesdk.graph.load import load_model

    def edit(m) -> None:
        if finding == "initializer data_type 99":
            m.graph.initializer[0].data_type = 99
        else:
            last = m.graph.node[-1]
            out = last.output[0]
            last.output[0] = out + "_pre"
            m.graph.node.append(onnx.helper.make_node("Cast", [out + "_pre"], [out], to=0))

    with pytest.raises(ModelError, match="data type 99, which is not an ONNX element type"
                       if "99" in finding else "Invalid tensor data type 0"):
        load_model(_digits_with(tmp_path, edit))


@pytest.mark.parametrize("field", ["node name", "tensor name"])
def test_a_name_that_is_not_utf8_is_a_model_error(tmp_path: Path, field: str) -> None:
    """protobuf returns a string field that is not valid UTF-8 as bytes: a node named b'\\xb8oncat' reached
    plan.json and `partition` died with "TypeError: Object of type bytes is not JSON serializable" (campaign seed
    18, case 5920: one smashed byte)."""
    import onnx

    from edgesdk.errors import ModelError
    from edgesdk.graph.extract import partition_model
    from edgesdk.graph.load import load_model

    m = onnx.load(str(fz.DIGITS))
    if field == "node name":
        m.graph.node[3].name = "MARKER"
    elif field == "tensor name":
        old = m.graph.node[3].output[0]
        m.graph.node[3].output[0] = "MARKER"
        for n in m.graph.node:
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = "MARKER"
    p = tmp_path / "bad.onnx"
    p.write_bytes(m.SerializeToString().replace(b"MARKER", b"\xb8ARKER"))
    with pytest.raises(ModelError, match="is not valid UTF-8 text"):
        load_model(p)
    with pytest.raises(ModelError, match="is not valid UTF-8 text"):
        partition_model(p, "coral-usb", tmp_path / "out", prepare=False)

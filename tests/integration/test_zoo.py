"""The real-model zoo (scripts/zoo_models.yaml) end to end: fetch the pinned wheels, then per model
`scripts/zoo.py --check` (inspect, partition + chained segments, convert with every engine, verify, Session
vs the original), which must pass with no traceback on any stderr.

The models come from PyPI wheels (cached in ~/.cache/edgesdk/zoo, or $EDGESDK_ZOO_CACHE). Without the network
and without a cache the zoo tests skip, except under CI=true, where a failed fetch fails.
Narrow a local run with EDGESDK_ZOO_IDS=a,b and EDGESDK_ZOO_ENGINES=default,ncnn.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
ZOO_PY = ROOT / "scripts" / "zoo.py"
MODEL_TIMEOUT = 3600


def _load_zoo_fetch():
    spec = importlib.util.spec_from_file_location("zoo_fetch_under_test", ROOT / "scripts" / "zoo_fetch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


zf = _load_zoo_fetch()
ENTRIES = zf.load_entries()
_WANT = [i for i in os.environ.get("EDGESDK_ZOO_IDS", "").split(",") if i]
IDS = [e["id"] for e in ENTRIES if not _WANT or e["id"] in _WANT]


@pytest.fixture(scope="module")
def zoo_models() -> dict[str, Path]:
    try:
        return zf.fetch(IDS)
    except zf.ZooError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot fetch the zoo under CI: {exc}", pytrace=False)
        pytest.skip(f"cannot fetch the zoo (no network and no cache?): {exc}")


def test_the_zoo_file_pins_and_covers_the_required_kinds():
    assert len(ENTRIES) >= 10
    for e in ENTRIES:
        assert re.fullmatch(r"[0-9a-f]{64}", e["wheel_sha256"]), e["id"]
        assert re.fullmatch(r"[0-9a-f]{64}", e["member_sha256"]), e["id"]
        assert re.fullmatch(r"[0-9][0-9A-Za-z.]*", e["version"]), e["id"]
        assert e["wheel"].endswith(".whl") and e["wheel"].split("-")[1] == e["version"], e["id"]
    cats = " ".join(e["category"] for e in ENTRIES)
    for kind in ("yolo-detector", "ocr-detector", "ocr-recogniser", "text-direction-classifier", "segmentation",
                 "face-detector", "prelu-heavy"):
        assert kind in cats, kind
    formats = {e["format"] for e in ENTRIES}
    assert {"onnx", "tflite", "torch-module"} <= formats


def test_fetch_is_idempotent_and_needs_no_pip_when_cached(zoo_models, monkeypatch):
    def no_pip(*a, **k):
        raise AssertionError(f"pip called for a cached model: {a}")

    monkeypatch.setattr(zf.subprocess, "run", no_pip)
    again = zf.fetch(IDS)
    assert again == zoo_models
    for p in again.values():
        assert p.is_file()


def test_fetch_cli_unknown_id_exits_2_without_a_traceback():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "zoo_fetch.py"), "--ids", "no-such-model"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert "no-such-model" in r.stderr and "Traceback" not in r.stderr


def test_build_module_gives_the_wheels_weights(zoo_models):
    torch = pytest.importorskip("torch")
    for e in ENTRIES:
        if e["format"] != "torch-module" or e["id"] not in IDS:
            continue
        module, examples = zf.build_module(e)
        assert isinstance(module, torch.nn.Module) and not module.training
        state = torch.load(str(zoo_models[e["id"]]), map_location="cpu", weights_only=True)
        for k, v in module.state_dict().items():
            assert torch.equal(v, state[k]), (e["id"], k)
        with torch.no_grad():
            out = module(*examples)
        assert all(torch.isfinite(o).all() for o in (out if isinstance(out, tuple) else (out,)))


@pytest.mark.parametrize("model_id", IDS)
def test_zoo_model(zoo_models, model_id, tmp_path):
    cmd = [sys.executable, str(ZOO_PY), "--ids", model_id, "--check", "--out", str(tmp_path / "zoo.md"),
           "--json", str(tmp_path / "results.json"), "--work", str(tmp_path / "work")]
    if os.environ.get("EDGESDK_ZOO_ENGINES"):
        cmd += ["--engines", os.environ["EDGESDK_ZOO_ENGINES"]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=MODEL_TIMEOUT, stdin=subprocess.DEVNULL,
                       check=False)
    assert (tmp_path / "zoo.md").is_file(), f"zoo.py wrote no report:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-5000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    steps = [s for res in doc["results"] for s in res["steps"]]
    tracebacks = [f"{s['step']}: {s.get('error')}" for s in steps if s.get("traceback")]
    failed = [f"{s['step']}: {s.get('status')}: {s.get('error')}" for s in steps
              if s.get("status") != "ok" and not s.get("known")]
    if tracebacks:
        pytest.fail(f"{model_id}: tracebacks on stderr:\n" + "\n".join(tracebacks), pytrace=False)
    if failed or r.returncode != 0:
        pytest.fail(f"{model_id}: zoo.py --check exit {r.returncode}; {len(failed)} step(s) not ok:\n"
                    + "\n".join(failed) + ("" if failed else "\n" + r.stdout[-3000:]), pytrace=False)

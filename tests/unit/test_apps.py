"""Apps of several stages (issue 18) on the host: app.yaml validation (errors name the file and field, exit 2),
`edgesdk convert app.yaml` as a user runs it from their own folder, the app bundle (one manifest over sub-bundles,
steps and the app's files, all hashed), `App`/`Pipeline`, the board runtime's verbs on it, `edgesdk verify` stage
by stage (the first failing stage named, then inside it the layers) and `edgesdk profile --host local` per stage.

The model is the repo's digits CNN (a real ONNX model converted with the rpi4's real engine chain); the images are
the digits data set's, written as PNGs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"

POST = '''import os
import numpy as np


def top(inputs, params):
    """softmax + argmax; EDGESDK_TEST_BREAK=1 makes it differ (a custom step that is not the host's)."""
    x = np.asarray(inputs["logits"], dtype=np.float64).reshape(-1)
    e = np.exp(x - x.max())
    p = e / e.sum()
    k = int(p.argmax())
    if os.environ.get("EDGESDK_TEST_BREAK") == "1":
        k = (k + 1) % p.size
    return {"digit": np.asarray(k, dtype=np.int64), "prob": np.asarray(p[k] * params.get("scale", 1.0),
                                                                         dtype=np.float32)}
'''

APP = """name: digits
description: a digit classifier with its pre- and post-processing
inputs: [image]
outputs: {digit: top.digit, prob: top.prob}
samples: samples/
modules: [post.py]
stages:
  - name: pre
    step: resize
    inputs: {image: image}
    params: {size: [32, 32], color: RGB, scale: 0.0625, mean: [0.5], std: [0.5]}
  - name: cnn
    model: digits_cnn.onnx
    precision: PRECISION
    inputs: {input: pre.tensor}
    outputs: [logits]
  - name: top
    custom: post.py:top
    inputs: {logits: cnn.logits}
    outputs: [digit, prob]
    params: {scale: 1.0}
"""


def _edgesdk(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("edgesdk")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **(env or {})})


def _input_name() -> str:
    import onnx

    return onnx.load(str(DATA / "digits_cnn.onnx"), load_external_data=False).graph.input[0].name


def _write_app(d: Path, precision: str = "fp32", n: int = 4) -> Path:
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    (d / "digits_cnn.onnx").write_bytes((DATA / "digits_cnn.onnx").read_bytes())
    (d / "post.py").write_text(POST, encoding="utf-8")
    (d / "app.yaml").write_text(APP.replace("PRECISION", precision).replace("{input:", "{" + _input_name() + ":"),
                                encoding="utf-8")
    z = np.load(DATA / "digits.npz")
    (d / "samples").mkdir(exist_ok=True)
    for i in range(n):
        img = np.repeat(np.kron(z["images8"][z["heldout"][i]], np.ones((4, 4), np.uint8))[:, :, None], 3, axis=2)
        cv2.imwrite(str(d / "samples" / f"digit_{i}.png"), img)
    return d / "app.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy app converted for rpi4 by the CLI, from the user's folder."""
    d = tmp_path_factory.mktemp("user")
    _write_app(d)
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "-o", "build", "--json", cwd=d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return {"dir": d, "res": json.loads(r.stdout), "bundle": d / "build"}


def test_convert_writes_one_app_bundle_over_sub_bundles_and_files(built: dict[str, Any]) -> None:
    b, res = built["bundle"], built["res"]
    man = json.loads((b / "manifest.json").read_text())
    assert man["kind"] == "app" and res["bundle_id"] == man["bundle_id"] and res["board"] == "rpi4"
    assert [s["name"] for s in man["stages"]] == ["pre", "cnn", "top"]
    assert (b / "stages" / "cnn" / "manifest.json").is_file()
    # every file of the app is hashed in the one manifest: the sub-bundle's, the module, the references
    assert "files/post.py" in man["files"] and "stages/cnn/manifest.json" in man["files"]
    for rel, digest in man["files"].items():
        assert hashlib.sha256((b / rel).read_bytes()).hexdigest() == digest, rel
    assert len(man["samples"]) == 4 and all(set(s["stages"]) == {"pre", "cnn", "top"} for s in man["samples"])
    assert [s["kind"] for s in res["stages"]] == ["resize", "model", "custom"]
    assert [r["sample"] for r in res["reference_outputs"]] == res["samples"]
    assert all(isinstance(r["outputs"]["digit"], int) for r in res["reference_outputs"])


def test_app_runs_on_the_board_runtime_and_matches_its_reference(built: dict[str, Any]) -> None:
    import cv2

    from edgesdk.runtime.app import App, Pipeline

    b, d = built["bundle"], built["dir"]
    with App(b) as app:
        ref = app.reference_outputs()
        for i, img_path in enumerate(sorted((d / "samples").glob("*.png"))):
            r = app.run(cv2.imread(str(img_path)))
            assert int(r.outputs["digit"]) == int(ref[i]["digit"])
            assert set(r.timings) == {"pre", "cnn", "top"} and r.total_ms > 0
        checks = app.check()
        assert [c.name for c in checks] == ["pre", "cnn", "top"] and all(c.ok for c in checks)
        frames = list(Pipeline(app, d / "samples"))
        assert [int(f.outputs["digit"]) for f in frames] == [int(x["digit"]) for x in ref]
        assert app.engines_used()["cnn"][0]["engine"] == "ncnn"


def test_board_verbs_smoke_run_profile(built: dict[str, Any], tmp_path: Path) -> None:
    b, d = built["bundle"], built["dir"]
    py = [sys.executable, "-m", "edgesdk.runtime"]
    r = subprocess.run([*py, "smoke", str(b), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    sm = json.loads(r.stdout)
    assert sm["ok"] and sm["kind"] == "app" and sm["first_failure"] is None
    assert set(sm["checks"]) == {"pre", "cnn", "top"} and all(sm["end_to_end"].values())
    imgs = sorted((d / "samples").glob("*.png"))
    r = subprocess.run([*py, "run", str(b), "--json", *[a for p in imgs[:2] for a in ("--input", str(p))]],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run = json.loads(r.stdout)
    assert len(run["frames"]) == 2 and isinstance(run["frames"][0]["outputs"]["digit"], int)
    prof = _edgesdk("profile", str(b), "--board", "rpi4", "--host", "local", "--runs", "2", "--warmup", "1",
                    "--json", "--html", str(tmp_path / "p.html"), cwd=d)
    assert prof.returncode == 0, prof.stdout[-2000:] + prof.stderr[-2000:]
    p = json.loads(prof.stdout)
    assert p["kind"] == "app" and [s["name"] for s in p["stages"]] == ["pre", "cnn", "top"]
    assert p["latency"]["count"] == 8 and p["accuracy"]["passed"]
    assert abs(sum(s["share"] for s in p["stages"]) - 1.0) < 0.2
    html = (tmp_path / "p.html").read_text(encoding="utf-8")
    assert "Stages" in html and "cnn" in html and "letterbox" not in html
    txt = _edgesdk("profile", str(b), "--board", "rpi4", "--host", "local", "--runs", "1", "--warmup", "0", cwd=d)
    assert txt.returncode == 0 and "calls/frame" in txt.stdout and "cnn" in txt.stdout, txt.stdout + txt.stderr


def test_board_verbs_take_threads_and_engines_and_refuse_model_only_options(built: dict[str, Any]) -> None:
    """--threads/--engine reach every model stage's Session; a model bundle's option with no meaning on an app
    (--per-layer, --bench, ...) is refused with exit 2 and what to do instead, not ignored."""
    from edgesdk.runtime.app import App

    b = built["bundle"]
    with App(b, threads=1) as app:
        app.run(app.reference_inputs()[0])
        used = app.engines_used()
        allowed = app.sessions["cnn"]._allowed
    engines = {u["engine"] for u in used["cnn"]}
    assert engines and engines <= set(allowed) and all(v == {"threads": 1} for v in allowed.values()), allowed
    py = [sys.executable, "-m", "edgesdk.runtime"]
    r = subprocess.run([*py, "profile", str(b), "--runs", "1", "--warmup", "0", "--threads", "1",
                        *[a for e in sorted(engines) for a in ("--engine", e)], "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["settings"]["threads"] == 1
    for verb, extra, flag in (("profile", ["--per-layer"], "--per-layer"), ("profile", ["--frames", "3"], "--frames"),
                              ("run", ["--input", str(b / "manifest.json"), "--bench", "2"], "--bench")):
        r = subprocess.run([*py, verb, str(b), *extra, "--json"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (verb, extra, r.stdout + r.stderr)
        assert flag in r.stdout + r.stderr and "app" in r.stdout + r.stderr and "Traceback" not in r.stderr
    # what the refusal of --per-layer says to do instead: a model stage's sub-bundle profiles layer by layer
    st = _edgesdk("profile", str(b / "stages" / "cnn"), "--board", "rpi4", "--host", "local", "--per-layer",
                  "--runs", "1", "--warmup", "0", "--json", cwd=built["dir"])
    assert st.returncode == 0, st.stdout[-2000:] + st.stderr[-2000:]
    assert json.loads(st.stdout)["layers"][0]["available"]


def test_the_board_agent_installs_activates_and_runs_an_app_release(built: dict[str, Any], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The deploy agent as `edgesdk flash` and `edgesdk run` drive it on the board (here: a board dir on this host,
    the real board CLI): lock, install, activate (the app's smoke test), run on frames the host pushed as .npy."""
    import io
    import shutil

    import cv2

    from edgesdk.runtime import agent

    def call(*argv: str) -> tuple[int, dict[str, Any]]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{}")))
        rc = agent.main(["--base", str(base), *argv])
        return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    b, d = built["bundle"], built["dir"]
    bid = json.loads((b / "manifest.json").read_text())["bundle_id"]
    base, token = tmp_path / "board", "t" * 16
    assert call("lock", "acquire", token)[0] == 0
    shutil.copytree(b, base / "staging" / bid)
    rc, r = call("install", bid, token)
    assert rc == 0 and r["installed"], r
    rc, r = call("activate", bid, token, f"--python={sys.executable}", "--allow-root")
    assert rc == 0 and r["smoke"]["ok"] and r["smoke"]["kind"] == "app", r
    wd = base / "tmp" / "w1"
    wd.mkdir(parents=True)
    imgs = sorted((d / "samples").glob("*.png"))[:2]
    for i, img in enumerate(imgs):
        np.save(wd / f"f{i}.npy", cv2.imread(str(img)))
    rc, r = call("run", "current", f"--python={sys.executable}", "--workdir=w1", "--allow-root",
                 *[f"--input==f{i}.npy" for i in range(len(imgs))])  # as the host sends them
    assert rc == 0, r
    frames = r["result"]["frames"]
    assert len(frames) == 2 and all(isinstance(f["outputs"]["digit"], int) for f in frames), r["result"]
    assert r["outputs"] == {} or not r["outputs"]


def test_verify_passes_then_names_the_first_failing_stage(built: dict[str, Any]) -> None:
    b, d = built["bundle"], built["dir"]
    ok = _edgesdk("verify", str(b), "--json", cwd=d, env={"PYTHONDONTWRITEBYTECODE": ""})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert not list(b.rglob("__pycache__"))  # the custom module ran from memory: the bundle is as it was
    rep = json.loads(ok.stdout)
    assert rep["ok"] and [s["name"] for s in rep["stages"]] == ["pre", "cnn", "top"]
    bad = _edgesdk("verify", str(b), "--json", cwd=d, env={"EDGESDK_TEST_BREAK": "1"})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    rep = json.loads(bad.stdout)
    assert rep["first_failure"] == "top" and not rep["ok"]
    assert [s["ok"] for s in rep["stages"]] == [True, True, False]  # each stage on its own recorded inputs
    human = _edgesdk("verify", str(b), cwd=d, env={"EDGESDK_TEST_BREAK": "1"})
    assert human.returncode == 1 and "first failing stage: top" in human.stdout
    refused = _edgesdk("verify", str(b), "--data", str(d / "samples"), cwd=d)
    assert refused.returncode == 2 and "app bundle" in refused.stderr + refused.stdout


def _rehash(bundle: Path) -> None:
    """Record the files' sha256s and the bundle id again after a test changed a file (as a convert would)."""
    from edgesdk.runtime.app.manifest import AppManifest

    mp = bundle / "manifest.json"
    data = json.loads(mp.read_text())
    data["files"] = {rel: hashlib.sha256((bundle / rel).read_bytes()).hexdigest() for rel in data["files"]}
    data["bundle_id"] = AppManifest.from_dict(data).content_id()
    mp.write_text(json.dumps(data), encoding="utf-8")


def test_a_failing_model_stage_is_named_and_looked_at_layer_by_layer(tmp_path: Path) -> None:
    from edgesdk.app.verify import verify_app
    from edgesdk.runtime.app.manifest import load_values, save_values

    d = tmp_path / "int8"
    _write_app(d, precision="int8", n=3)
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "-o", "build", "--json", cwd=d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    b = d / "build"
    assert verify_app(b).ok
    # the cnn stage's recorded outputs no longer match what its engine gives (a reference taken elsewhere)
    man = json.loads((b / "manifest.json").read_text())
    for smp in man["samples"]:
        f = b / smp["stages"]["cnn"]["outputs"]
        v = load_values(f)
        save_values(f, {k: -np.asarray(x) for k, x in v.items()})
    _rehash(b)
    rep = verify_app(b, per_layer=True)
    assert rep.first_failure == "cnn" and rep.layer_stage == "cnn"
    assert rep.layers and all(-1.0 <= x.cosine <= 1.0 + 1e-6 for x in rep.layers)
    assert len({x.node for x in rep.layers}) >= 3  # the CNN's layers, named
    out = _edgesdk("verify", str(b), "--json", cwd=d)
    assert out.returncode == 1
    j = json.loads(out.stdout)
    assert j["first_failure"] == "cnn" and j["per_layer"]["stage"] == "cnn" and j["per_layer"]["layers"]


# -- app.yaml errors: exit 2, the file and the field named, nothing written -------------------------------------
@pytest.mark.parametrize("edit,field", [
    (lambda s: s.replace("step: resize", "step: rezise"), "stages.0.step"),
    (lambda s: s.replace("{logits: cnn.logits}", "{logits: cnn.scores}"), "stages.2.inputs.logits"),
    (lambda s: s.replace("outputs: {digit: top.digit, prob: top.prob}", "outputs: {digit: nowhere.digit}"),
     "outputs.digit"),
    (lambda s: s.replace("custom: post.py:top", "custom: post.py"), "stages.2"),
    (lambda s: s.replace("name: top\n", "name: pre\n"), "stages.2.name"),
    (lambda s: s.replace("    step: resize\n    inputs: {image: image}\n", "    step: resize\n    inputs: {}\n"),
     "stages.0.inputs"),
    (lambda s: s.replace("precision: fp32", "precision: fp8"), "stages.1.precision"),
    (lambda s: s + "colour: red\n", "colour"),
    (lambda s: s.replace("size: [32, 32]", "size: [32]"), "stages.0 (pre).params.size"),
    (lambda s: s.replace("color: RGB", "color: RGB, gamma: 2"), "stages.0 (pre).params.gamma"),
    (lambda s: s.replace("model: digits_cnn.onnx", "model: missing.onnx"), "stages.1.model"),
    (lambda s: s.replace("modules: [post.py]", "modules: [nope.py]"), "modules"),
    (lambda s: s.replace("name: top\n", "name: app\n"), "stages.2.name"),
    (lambda s: s + "tolerance: {max_abs: 0.1}\n", "tolerance"),
    (lambda s: s.replace("    precision: fp32\n", "    precision: fp32\n    input_shape: [1, 3, 32, 32]\n"),
     "stages.1.input_shape"),
    (lambda s: s.replace("outputs: [digit, prob]", "outputs: []"), "stages.2.outputs"),
])
def test_app_spec_errors_name_the_file_and_field(tmp_path: Path, edit: Any, field: str) -> None:
    app = _write_app(tmp_path / "u", n=1)
    app.write_text(edit(app.read_text(encoding="utf-8")), encoding="utf-8")
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "-o", "build", cwd=app.parent)
    assert r.returncode == 2, r.stdout + r.stderr
    msg = " ".join((r.stdout + r.stderr).split())
    assert "Traceback" not in msg and "app.yaml" in msg and field in msg, msg
    assert not (app.parent / "build").exists()


def test_app_spec_flow_list_shapes_and_convert_flags() -> None:
    from edgesdk.app.spec import StageDecl

    s = StageDecl.model_validate({"name": "det", "model": "m.onnx", "inputs": {"x": "image"},
                                  "input_shape": ["x=1", 3, 640, 640, "y=1", 2]})
    assert s.shapes() == ["x=1,3,640,640", "y=1,2"]


def test_convert_refuses_model_flags_for_an_app(tmp_path: Path) -> None:
    app = _write_app(tmp_path / "u", n=1)
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "--precision", "int8", cwd=app.parent)
    assert r.returncode == 2 and "--precision" in r.stdout + r.stderr

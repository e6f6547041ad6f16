"""A model stage converted at several input shapes (shape variants): a text-line recogniser read at the width
nearest the line's own (letterbox `widths`) instead of squeezed into one width. The recogniser here is a small
ONNX model with a dynamic width (conv -> mean over the height -> softmax per column, CTC classes), converted for
rpi4 by the real engine chain at each width; the lines are images of several lengths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesdk.app.spec import AppSpecError, load_app_spec
from edgesdk.runtime.app.steps import AppError, builtin

APP = """name: lines
inputs: [image]
outputs: {text: dec.text}
samples: samples/
stages:
  - name: pre
    step: letterbox
    inputs: {image: image}
    params: {size: [8, 64], fit: height, widths: [32, 64], align: topleft, pad_value: 127.5, mean: [0.5],
             std: [0.5]}
  - name: rec
    model: rec.onnx
    input_shape: [x=1,3,8,32, x=1,3,8,64]
    inputs: {x: pre.tensor}
    outputs: [probs]
  - name: dec
    step: ctc_decode
    inputs: {logits: rec.probs}
    params: {charset: keys.txt}
"""


def _rec_model(path: Path) -> None:
    """x [1, 3, 8, W] -> Conv 3x3 (4 classes) -> mean over H -> [1, W, 4] softmax: any width W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([0.3, 0.0, 0.0, 0.0], np.float32), "b")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["c", "axes"], ["m"], keepdims=0),
             helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Softmax", ["t"], ["probs"], axis=2)]
    g = helper.make_graph(nodes, "rec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, "W"])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, "W", 4])], [w, b, axes])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def _line(h: int, w: int, seed: int) -> np.ndarray:
    """A grey 'text line': random strokes on white, h x w x 3 uint8 BGR."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 235, np.uint8)
    for x in range(2, w - 2, 5):
        if rng.random() < 0.7:
            img[2:h - 2, x:x + 2] = rng.integers(0, 90)
    return img


def _write(d: Path, sizes: list[tuple[int, int]]) -> Path:
    import cv2

    d.mkdir(parents=True, exist_ok=True)
    _rec_model(d / "rec.onnx")
    (d / "keys.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (d / "app.yaml").write_text(APP, encoding="utf-8")
    (d / "samples").mkdir(exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(d / "samples" / f"line_{i}.png"), _line(h, w, i))
    return d / "app.yaml"


def _edgesdk(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("edgesdk")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=900, env=dict(os.environ))


def test_letterbox_widths_pick_the_first_width_a_line_fits() -> None:
    lb = builtin("letterbox")({"size": [8, 64], "fit": "height", "widths": [16, 32, 64], "align": "topleft",
                              "max_squeeze": 1.5}, "t")
    # natural widths at height 8: 16x40 -> 20 (fits 16 squeezed by 1.25), 16x60 -> 30 (32), 16x100 -> 50 (64),
    # 16x400 -> 200 (squeezed into the last, 64)
    shapes = {w: lb(image=np.zeros((16, w, 3), np.uint8))["tensor"].shape for w in (40, 60, 100, 400)}
    assert shapes == {40: (1, 3, 8, 16), 60: (1, 3, 8, 32), 100: (1, 3, 8, 64), 400: (1, 3, 8, 64)}
    m = lb(image=np.zeros((16, 40, 3), np.uint8))["meta"]
    assert m[0] == pytest.approx(16 / 40)  # squeezed: 40 source columns into 16
    for params, key in (({"widths": [32, 16, 64]}, "widths"), ({"widths": [16, 32]}, "widths"),
                        ({"widths": [16, 64], "fit": "contain"}, "widths"), ({"max_squeeze": 2.0}, "max_squeeze"),
                        ({"widths": [16, 64], "max_squeeze": 0.5}, "max_squeeze")):
        with pytest.raises(AppError, match=key):
            builtin("letterbox")({"size": [8, 64], "fit": "height", **params}, "t")


def test_spec_reads_shape_variants(tmp_path: Path) -> None:
    p = _write(tmp_path / "a", [(16, 40)])
    rec = load_app_spec(p).stages[1]
    assert rec.shape_variants() == [["x=1,3,8,32"], ["x=1,3,8,64"]]
    for shape, why in (("[x=1,3,8,32, x=1,3,8,32]", "the same"), ("[x=1,3,8,32, x=1x3x8x32]", "the same"),
                       ("[x=1,3,8,32, x=1,3,8,a]", "integers"),
                       ("[x=1,3,8,32, x=1,3,8,64, y=1,2, y=1,3, y=1,4]", "as many shapes")):
        p.write_text(APP.replace("[x=1,3,8,32, x=1,3,8,64]", shape), encoding="utf-8")
        with pytest.raises(AppSpecError, match=why):
            load_app_spec(p)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # natural widths at height 8: 20 and 24 (the 32 variant), 50 (the 64 variant)
    d = tmp_path_factory.mktemp("user")
    _write(d, [(16, 40), (16, 100), (16, 48)])
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "-o", "build", "--json", cwd=d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return {"dir": d, "res": json.loads(r.stdout), "bundle": d / "build"}


def test_convert_makes_one_sub_bundle_per_variant_and_each_line_runs_on_its_own(built: dict[str, Any]) -> None:
    from edgesdk.runtime.app import App
    from edgesdk.runtime.app.graph import jsonable

    b, res = built["bundle"], built["res"]
    m = json.loads((b / "manifest.json").read_text())
    rec = next(s for s in m["stages"] if s["name"] == "rec")
    assert rec["bundle"] == "stages/rec.v0" and rec["variants"] == ["stages/rec.v1"]
    shapes = [json.loads((b / d / "manifest.json").read_text())["inputs"][0]["shape"] for d in ("stages/rec.v0",
                                                                                                "stages/rec.v1")]
    assert shapes == [[1, 3, 8, 32], [1, 3, 8, 64]]
    assert next(s for s in res["stages"] if s["name"] == "rec")["variants"] == 2
    assert not [w for w in res["warnings"] if "no sample gave it" in w]
    with App(b) as app:
        assert set(app.sessions) == {"rec", "rec#1"}
        outs = [{k: jsonable(v) for k, v in app.run(x).outputs.items()} for x in app.reference_inputs()]
        assert outs == [{k: jsonable(v) for k, v in o.items()} for o in app.reference_outputs()]
        assert len({o["text"] for o in outs}) > 1, outs  # the lines read differently
        assert all(c.ok for c in app.check()), [c.to_dict() for c in app.check()]
        assert {s.id for s in app.manifest.segments} >= {"rec/s0", "rec#1/s0"}
        with pytest.raises(AppError, match="no variant of the stage takes inputs x=1x3x8x40"):
            app.graph.impl["rec"](x=np.zeros((1, 3, 8, 40), np.float32))
    ver = _edgesdk("verify", str(b), "--json", cwd=built["dir"])
    assert ver.returncode == 0 and json.loads(ver.stdout)["ok"], ver.stdout[-2000:] + ver.stderr[-2000:]
    py = [sys.executable, "-m", "edgesdk.runtime"]
    r = subprocess.run([*py, "profile", str(b), "--runs", "1", "--warmup", "0", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    prof = json.loads(r.stdout)
    st = {s["name"]: s for s in prof["stages"]}
    assert st["rec"]["variants"] == 2 and st["rec"]["engines"]
    from edgesdk.profile.report import stage_table

    assert [row[1] for row in stage_table(prof)] == ["letterbox", "model (2 shapes)", "ctc_decode"]


def test_a_variant_no_sample_reaches_gets_a_fitted_input_and_a_warning(tmp_path: Path) -> None:
    d = tmp_path / "u"
    _write(d, [(16, 40), (16, 44)])  # both lines fit the 32 variant
    r = _edgesdk("convert", "app.yaml", "--board", "rpi4", "-o", "build", "--json", cwd=d)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout)
    warn = [w for w in res["warnings"] if "no sample gave it" in w]
    assert len(warn) == 1 and "x=1x3x8x64" in warn[0], res["warnings"]
    ver = _edgesdk("verify", "build", "--json", cwd=d)
    assert ver.returncode == 0, ver.stdout[-2000:] + ver.stderr[-2000:]
    # the variant no sample reaches is checked on its own sub-bundle's reference (the smoke test runs it too)
    stages = {s["name"]: s for s in json.loads(ver.stdout)["stages"]}
    assert stages["rec#1"]["ok"] and stages["rec#1"]["samples"] == 1, stages
    py = [sys.executable, "-m", "edgesdk.runtime"]
    sm = subprocess.run([*py, "smoke", str(d / "build"), "--json"], capture_output=True, text=True, timeout=300)
    assert sm.returncode == 0 and json.loads(sm.stdout)["checks"]["rec#1"]["ok"], sm.stdout + sm.stderr

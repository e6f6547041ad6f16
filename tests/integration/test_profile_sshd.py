"""edgesdk profile over a real OpenSSH server (this machine as the board): flash first, remote profile, reports
well formed, per-layer times add up, a deliberately slow CPU segment is the slowest, sweep + tune on the board."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_fixture import board_python, flash_opts, local_profile, make_test_bundle, public_dir, sshd_board

from edgesdk.profile import ProfileOptions, load_report, profile, sweep, tune

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_sshd")]
PY, ROOT_OK = board_python()  # nobody can run PY (the agent's drop to nobody), or ROOT_OK: as root, said so


@pytest.fixture(scope="module")
def board():
    yield from sshd_board("profile")


def _conv(name, cin, cout, inp, out, rng):
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(cin * 9))).astype(np.float32),
                                f"{name}_w")
    return helper.make_node("Conv", [inp, f"{name}_w"], [out], pads=[1, 1, 1, 1], name=name), w


def slow_bundle(root: Path) -> Path:
    """Three onnxruntime segments: a small conv (s0), a deliberately slow stack of 256-channel convs (s1), a head."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgesdk.runtime.manifest import MANIFEST, Manifest, Segment, TensorSpec, canonical_json, sha256_file

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "reference").mkdir()

    def save(nodes, inits, i, o, ishape, oshape, fn):
        g = helper.make_graph(nodes, fn, [helper.make_tensor_value_info(i, TensorProto.FLOAT, ishape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, oshape)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        onnx.save(m, root / fn)

    n0, w0 = _conv("c0", 3, 8, "x", "a", rng)
    save([n0], [w0], "x", "a", [1, 3, 32, 32], [1, 8, 32, 32], "s0.onnx")
    nodes, inits, prev, cin = [], [], "a", 8
    for k, cout in enumerate([192, 192, 192, 8]):
        n, w = _conv(f"slow{k}", cin, cout, prev, f"t{k}" if cout != 8 else "b", rng)
        nodes.append(n)
        inits.append(w)
        prev, cin = f"t{k}", cout
    save(nodes, inits, "a", "b", [1, 8, 32, 32], [1, 8, 32, 32], "s1.onnx")
    from onnx import numpy_helper

    fc = numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc")
    tail = [helper.make_node("GlobalAveragePool", ["b"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    save(tail, [fc], "b", "logits", [1, 8, 32, 32], [1, 10], "s2.onnx")
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    y = x
    for fn, name in (("s0.onnx", "x"), ("s1.onnx", "a"), ("s2.onnx", "b")):
        y = ort.InferenceSession(str(root / fn), providers=["CPUExecutionProvider"]).run(None, {name: y})[0]
    np.save(root / "reference" / "input_0.npy", x)
    np.save(root / "reference" / "output_0.npy", y)
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    t = lambda n, s: TensorSpec(n, tuple(s), "float32")
    segs = (Segment("s0", "onnxruntime", {"model": "s0.onnx"}, (t("x", [1, 3, 32, 32]),), (t("a", [1, 8, 32, 32]),),
                    options={"threads": 1}),
            Segment("s1", "onnxruntime", {"model": "s1.onnx"}, (t("a", [1, 8, 32, 32]),), (t("b", [1, 8, 32, 32]),),
                    options={"threads": 1}),
            Segment("s2", "onnxruntime", {"model": "s2.onnx"}, (t("b", [1, 8, 32, 32]),), (t("logits", [1, 10]),),
                    options={"threads": 1}))
    m = Manifest(board="localhost", precision="fp32", inputs=(t("x", [1, 3, 32, 32]),), outputs=(t("logits", [1, 10]),),
                 segments=segs, files=files, source_model={"name": "slowmid", "sha256": "0" * 64, "opset": 13},
                 reference_inputs={"x": "reference/input_0.npy"}, reference_outputs={"logits": "reference/output_0.npy"})
    d = m.to_dict()
    d["bundle_id"] = m.content_id()
    (root / MANIFEST).write_bytes(canonical_json(d))
    return root


@pytest.fixture(scope="module")
def bundles():
    d = public_dir("edgesdk-profile-bundles-")
    yield {"slow": slow_bundle(d / "slow"), "tiny": make_test_bundle(d / "tiny", seed=3),
           "bad": make_test_bundle(d / "bad", seed=4, wrong_reference=True)}
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def opts(**kw) -> ProfileOptions:
    return ProfileOptions(python=PY, allow_root=ROOT_OK, flash=flash_opts(), **kw)


def test_remote_profile_flashes_first_and_finds_the_slow_segment(board, bundles, tmp_path):
    prof = local_profile()
    rep = profile(bundles["slow"], prof, board.target(), opts(runs=15, warmup=2, per_layer=True, layer_runs=5,
                                                              frames=10))
    d = rep.data
    assert d["target"]["flash"]["status"] == "success"  # not on the board yet: flashed first
    assert d["target"]["release"] in os.listdir(board.base / "releases")
    # well formed: written and read back against the schema
    a = load_report(rep.write_json(tmp_path / "r.json"))
    assert a.data["latency"]["count"] == 15 and a.data["accuracy"]["passed"]
    for k in ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "stdev_ms"):
        assert k in a.data["latency"]
    assert a.data["latency"]["min_ms"] <= a.data["latency"]["p50_ms"] <= a.data["latency"]["p99_ms"] \
        <= a.data["latency"]["max_ms"]
    # the deliberately slow CPU segment is the slowest, in the segment split and in the layers
    segs = {s["id"]: s["compute"]["mean_ms"] for s in d["segments"]}
    assert max(segs, key=segs.get) == "s1" and segs["s1"] > 5 * (segs["s0"] + segs["s2"])
    from edgesdk.profile.report import top_layers

    assert top_layers(d, 1)[0]["segment"] == "s1" and top_layers(d, 1)[0]["type"] == "Conv"
    # per-layer times add up (docs/profile.md: onnxruntime within 30 % of its instrumented run)
    s1 = next(e for e in d["layers"] if e["segment"] == "s1")
    assert 0.7 <= s1["coverage"] <= 1.02, s1
    assert 0.5 <= s1["profiler_overhead"] <= 2.0, s1
    # segments add up to the run: engine + conversions within 10 % (+0.5 ms) of the mean latency
    total = sum(s["total_mean_ms"] for s in d["segments"])
    assert abs(total - d["latency"]["mean_ms"]) <= 0.1 * d["latency"]["mean_ms"] + 0.5
    # second profile: already on the board, no flash
    rep2 = profile(bundles["slow"], prof, board.target(), opts(runs=3, warmup=1, frames=0))
    assert rep2.data["target"]["flash"] is None
    html = rep.write_html(tmp_path / "r.html").read_text()
    assert html.count('class="chart"') == 3


def test_remote_sweep_and_tune(board, bundles):
    """threads sweep on the board: only the passing configurations compete; tune writes tuning.json there."""
    prof = local_profile()
    res = sweep(bundles["tiny"], prof, board.target(), "threads=1,2", opts(runs=8, warmup=1, frames=0))
    assert [r.status for r in res.rows] == ["ok", "ok"]
    assert res.best.p50_ms == min(r.p50_ms for r in res.rows)
    # a bundle whose outputs miss its reference: the smoke test refuses it on the board, nothing is recommended
    bad = sweep(bundles["bad"], prof, board.target(), "threads=1", opts(runs=3, warmup=1, frames=0))
    assert bad.best is None and bad.rows[0].status != "ok"
    done = tune(res, prof, board.target(), python=PY, allow_root=ROOT_OK)
    t = json.loads((board.base / "releases" / done["release"] / "tuning.json").read_text())
    assert t["threads"] == res.best.threads and os.readlink(board.base / "current").endswith(done["release"])
    rep = profile(None, prof, board.target(), opts(runs=3, warmup=1, frames=0), release=done["release"])
    # tuning.json is listed in the release's manifest (in its id); the tuning names the bundle that was measured
    rel_manifest = json.loads((board.base / "releases" / done["release"] / "manifest.json").read_text())
    assert "tuning.json" in rel_manifest["files"] and rel_manifest["bundle_id"] == done["release"]
    assert rep.data["settings"]["tuning"]["bundle_id"] == t["bundle_id"] != done["release"]

"""MNN int8 with ONNX nodes kept in float (issue 16), on the zoo's YOLOv8n and real photos.

The segment is made as convert makes it (shapes fixed, onnxslim's preparation, calibration images resized and
written as PNGs with MNN's mean/normal), converted by the MNN adapter, run by edgesdk's MNN engine on the
evaluation photos and judged against onnxruntime's fp32 outputs:

- plain int8: mnnquant's KL gives the output Concat (boxes in pixels | class scores in 0..1) one scale, clipped
  to the scores' range: the box block is clipped (cosine ~0.80) and the scores are a few int8 steps;
- the output Concat kept in float (`exclude_nodes`): both blocks get their own precision back (boxes ~0.997, the
  per-photo score cosine 0.2 -> 0.67), and in the final model's debug session the Concat runs in float while the
  convolutions still run int8;
- every node kept: the int8 model computes what the fp32 one does (nothing the mapping misses stays int8);
- plain int8 on 12 photos (the calibration photos less every 4th, as convert's method trial calibrates), where
  ADMM is the default: ADMM's one-batch calibration run fails on YOLOv8n's fixed batch and mnnquant writes float
  activations (exit 0); the plan's check calibrates again with KL, so the model runs int8 (or is refused), and an
  ADMM asked for is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.conftest import zoo_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MODEL_ID = "yolov8n-nudenet"
INPUT_SHAPE = {"images": (1, 3, 320, 320)}


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (under CI)", pytrace=False)
    pytest.skip(why)


def _zoo_model() -> Path:
    return zoo_model(MODEL_ID)


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole model as one prepared segment, its calibration data, the evaluation feeds and fp32 outputs."""
    from edgesdk.calib import InputSpec, load_calibration
    from edgesdk.conversion import _write_images
    from edgesdk.convert_base import declared_preprocess
    from edgesdk.graph.load import load_model, load_weights
    from edgesdk.graph.prepare import prepare
    from edgesdk.preprocess_config import mnn_mean_normal
    from edgesdk.quantize import _session
    from edgesdk.toolchains.adapters import CalibData, IOSpec
    from edgesdk.toolchains.adapters.mnn import MnnAdapter

    st = MnnAdapter().check_env()
    if not st.ok:
        _unavailable(f"mnn toolchain not ready: {st.detail} (fix: {st.fix})")
    if importlib.util.find_spec("MNN") is None:
        _unavailable("the MNN engine is not installed (pip install 'edgesdk[test]')")
    d = tmp_path_factory.mktemp("mnn-mixed")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "photos.py"), "--out", str(d / "photos")], check=True,
                   capture_output=True)
    m = load_model(_zoo_model(), INPUT_SHAPE)
    ins = tuple(IOSpec(n, tuple(int(x) for x in m.tensors[n].shape), m.tensors[n].dtype) for n in m.inputs)
    pre = declared_preprocess(ins, None, d / "photos" / "calib")
    specs = [InputSpec(i.name, i.shape, i.dtype) for i in ins]
    cset = load_calibration(d / "photos" / "calib", specs, pre)
    eset = load_calibration(d / "photos" / "eval", specs, pre, what="--sample")
    feeds = [{k: v[i:i + 1] for k, v in eset.arrays.items()} for i in range(eset.count)]
    proto = load_weights(prepare(m, feed=feeds[0]).model)
    onnx_path = d / "s0.onnx"
    import onnx

    onnx.save(proto, onnx_path)
    sess = _session(proto)
    names = [o.name for o in sess.get_outputs()]
    refs = [dict(zip(names, sess.run(names, f))) for f in feeds]
    outs = tuple(IOSpec(n, tuple(refs[0][n].shape), str(refs[0][n].dtype)) for n in names)
    np.savez(d / "s0_calib.npz", **cset.arrays)
    images = _write_images(cset.images, d / "s0_calib_images")
    mean, normal = mnn_mean_normal(pre, ins[0].shape[1])
    calib = CalibData(d / "s0_calib.npz", cset.count, images, mean, normal, pre.color)
    return {"dir": d, "onnx": onnx_path, "proto": proto, "inputs": ins, "outputs": outs, "calib": calib,
            "feeds": feeds, "refs": refs, "images": cset.images}


def _build(seg: dict[str, Any], tag: str, kept: list[str], calib: Any = None,
           options: dict[str, Any] | None = None) -> tuple[Any, float]:
    from edgesdk.toolchains.adapters import ConversionJob
    from edgesdk.toolchains.adapters.mnn import MnnAdapter
    from edgesdk.toolchains.executor import execute

    work = seg["dir"] / tag
    work.mkdir()
    job = ConversionJob("s0", seg["onnx"], work, "int8", seg["inputs"], seg["outputs"], calib or seg["calib"],
                        {**({"exclude_nodes": kept} if kept else {}), **(options or {})})
    a = MnnAdapter()
    plan = a.plan(job)
    t0 = time.perf_counter()
    execute(plan)
    art = a.describe(job, plan)
    return art, time.perf_counter() - t0


def _judge(seg: dict[str, Any], art: Any) -> dict[str, Any]:
    """The reference judge per block of the output (pooled over the photos), and each block's mean per-photo cosine."""
    from edgesdk.convert_base import TOLERANCES
    from edgesdk.runtime.reference import compare, components, cosine
    from edgesdk.toolchains.check import run_artifact

    got = run_artifact("mnn", art.files, tuple(art.inputs), tuple(art.outputs), dict(art.options), seg["feeds"])
    (name,) = [o.name for o in seg["outputs"]]
    refs = [r[name] for r in seg["refs"]]
    m = compare(name, [g[name] for g in got], refs, TOLERANCES["int8"])
    blocks = []
    for c, cm in zip(components(refs), m.components):
        per = [cosine(c.take(g[name]), c.take(r)) for g, r in zip(got, refs)]
        probs = all(float(np.min(c.take(r))) >= 0 and float(np.max(c.take(r))) <= 1 for r in refs)
        blocks.append({"indexes": cm.indexes, "pooled": cm.cosine_min, "per_photo": float(np.mean(per)),
                       "probabilities": probs})
    return {"worst": m.cosine_min, "blocks": blocks}


def _commands(model: Path) -> list[tuple[str, str]]:
    """What the int8 model runs, in MNN's own debug session (the toolchain venv): (name, type + " [ DT_INT8 ] ")."""
    from edgesdk.toolchains.adapters.mnn import _PROBE, MnnAdapter

    out = model.with_suffix(".commands.json")
    subprocess.run([str(MnnAdapter().python), "-c", _PROBE, str(model), str(out)], check=True, capture_output=True)
    return [tuple(c) for c in json.loads(out.read_text())["commands"]]


def test_output_concat_kept_in_float_gives_both_blocks_their_precision(seg: dict[str, Any]) -> None:
    graph = seg["proto"].graph
    (final,) = [n for n in graph.node if graph.output[0].name in n.output]
    assert final.op_type == "Concat", final  # boxes | scores, one tensor

    plain, t_plain = _build(seg, "plain", [])
    kept, t_kept = _build(seg, "kept", [final.name])
    jp, jk = _judge(seg, plain), _judge(seg, kept)
    print(f"plain int8 {t_plain:.1f} s: {jp}\n{final.name} kept {t_kept:.1f} s: {jk}")
    (box_p, score_p), (box_k, score_k) = jp["blocks"], jk["blocks"]
    assert score_p["probabilities"] and not box_p["probabilities"], jp
    assert box_p["pooled"] < 0.9 and score_p["per_photo"] < 0.5, jp  # KL's one scale for both blocks
    assert box_k["pooled"] > 0.99, jk
    assert score_k["per_photo"] > score_p["per_photo"] + 0.3 and score_k["pooled"] >= score_p["pooled"] - 0.01, (jp, jk)

    # the artifact says what it kept, and MNN's own debug session agrees: the Concat (named after its output, as
    # MNN names ops) runs in float, the convolutions still in int8
    mnn_op = final.output[0]
    assert any(f"1 ONNX node(s) kept in float on MNN: {final.name} -> {mnn_op} [Concat]: float" in n
               for n in kept.notes), kept.notes
    cmds = _commands(kept.files["model"])
    mine = [t for n, t in cmds if n == mnn_op or n.startswith(f"{mnn_op}_raster_")]
    work = [t for t in mine if not t.startswith(("FloatToInt8", "Int8ToFloat"))]
    assert work and not any("DT_INT8" in t for t in work), mine
    convs = [t for _, t in cmds if t.startswith("Convolution")]
    assert sum("DT_INT8" in t for t in convs) >= 0.9 * len(convs), convs
    plain_cmds = _commands(plain.files["model"])
    assert any("DT_INT8" in t for n, t in plain_cmds if n.startswith(f"{mnn_op}_raster_")), plain_cmds


def test_every_node_kept_computes_the_fp32_model(seg: dict[str, Any]) -> None:
    every = [n.name for n in seg["proto"].graph.node]
    art, seconds = _build(seg, "every", every)
    j = _judge(seg, art)
    print(f"{len(every)} nodes kept {seconds:.1f} s: {j}")
    assert j["worst"] > 0.999, j
    cmds = _commands(art.files["model"])
    assert not [n for n, t in cmds if "DT_INT8" in t], cmds
    assert not any("still run int8" in n for n in art.notes), art.notes


def _calib12(seg: dict[str, Any]) -> Any:
    """The calibration photos less every 4th (convert's held-back split), written as mnnquant reads them."""
    from dataclasses import replace

    from edgesdk.conversion import _write_images
    from edgesdk.precision_plan import split

    train, held = split(seg["calib"].count, False)
    assert len(train) == 12 and held, (train, held)
    d = seg["dir"]
    with np.load(seg["calib"].arrays) as z:
        np.savez(d / "s0_calib12.npz", **{k: z[k][train] for k in z.files})
    return replace(seg["calib"], arrays=d / "s0_calib12.npz", count=len(train),
                   images=_write_images(seg["images"][train], d / "s0_calib12_images"))


def _scales(model: Path) -> dict[str, int]:
    """activation_scales of an .mnn, read through MNN's JSON dump (the toolchain venv)."""
    from edgesdk.toolchains.adapters.mnn import _CONVERT, MnnAdapter, activation_scales

    dump = model.with_suffix(".dump.json")
    subprocess.run([str(MnnAdapter().python), "-c", _CONVERT, "-f", "MNN", "--modelFile", str(model), "--JsonFile",
                    str(dump)], check=True, capture_output=True)
    return activation_scales(json.loads(dump.read_text()))


def test_plain_int8_on_12_photos_is_int8_for_real_or_refused(seg: dict[str, Any]) -> None:
    from edgesdk.toolchains.adapters import ConversionRefused
    from edgesdk.toolchains.adapters.mnn import ADMM_MAX_ELEMENTS

    cal = _calib12(seg)
    assert cal.count * int(np.prod(seg["inputs"][0].shape)) <= ADMM_MAX_ELEMENTS  # the default here is ADMM
    try:
        art, seconds = _build(seg, "plain12", [], cal)
    except ConversionRefused as exc:  # refused with the reason is fine; a silent float model is not
        assert "segment s0" in str(exc) and "activation" in str(exc), exc
        return
    cfg = json.loads((seg["dir"] / "plain12" / "s0_mnnquant.json").read_text())
    assert cfg["feature_quantize_method"] == "ADMM" and cfg["used_image_num"] == 12, cfg
    stats = _scales(art.files["model"])
    j = _judge(seg, art)
    print(f"plain int8, 12 photos, {seconds:.1f} s: {stats}, notes {art.notes}: {j}")
    assert stats["int8_convolutions"] > 0 and stats["with_scale"] >= 0.9 * stats["int8_convolutions"], stats
    # what MNN runs: the convolutions in int8, not int8 weights on float activations
    convs = [t for _, t in _commands(art.files["model"]) if t.startswith("Convolution")]
    assert sum("DT_INT8" in t for t in convs) >= 0.9 * len(convs), convs
    rep = json.loads((seg["dir"] / "plain12" / "s0_mnn_int8_check.json").read_text())
    if rep.get("first"):  # ADMM wrote no scales (YOLOv8n's fixed batch): the artifact says KL replaced it
        assert rep["method"] == "KL" and any("calibrated with KL" in n for n in art.notes), (rep, art.notes)

    # ADMM asked for: nothing to fall back on inside MNN, so a model without scales is refused with the reason
    try:
        forced, _ = _build(seg, "admm12", [], cal, {"mnn_feature_method": "ADMM"})
    except ConversionRefused as exc:
        msg = str(exc)
        assert msg.startswith("mnnquant: segment s0:") and "mnn_feature_method ADMM" in msg, msg
        assert rep.get("first"), "ADMM failed when asked for but not by default"
        return
    assert not rep.get("first"), "ADMM wrote scales when asked for but not by default"
    assert _scales(forced.files["model"])["with_scale"] > 0

"""Task metrics of a bundle against its fp32 model (edgesdk.evaluate) and `edgesdk verify --eval` (issue 16).

The metric functions on hand-made cases with known answers; then the zoo's YOLOv8n (a real detector from a PyPI
wheel) converted for rpi4 and verified on the real evaluation photos of scripts/photos.py: an fp32 bundle must
agree with its own fp32 model (mAP@0.5 ~1); the int8 bundle's mAP is printed and its exit code must follow it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgesdk.errors import InputError
from edgesdk.evaluate import (
    Detections,
    average_precision,
    box_iou,
    cer,
    class_chars,
    ctc_greedy,
    detection_metrics,
    levenshtein,
    load_charset,
    load_postprocess,
    mean_iou,
    meets_target,
    parse_target,
    plan_tasks,
    seg_mask,
    top1_agreement,
)
from edgesdk.runtime.manifest import Postprocess

REPO = Path(__file__).resolve().parents[2]


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """Detections from (x1, y1, x2, y2, score, class) rows."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


# -- targets --------------------------------------------------------------------------------------

def test_parse_target():
    assert parse_target("map50=0.9") == ("map50", 0.9)
    assert parse_target(" CER = 0.05 ") == ("cer", 0.05)
    assert parse_target("cosine=0.99") == ("cosine", 0.99)
    assert parse_target("cer=2") == ("cer", 2.0)  # an error rate may exceed 1
    for bad, why in (("map50", "METRIC=VALUE"), ("=0.9", "METRIC=VALUE"), ("map50=", "METRIC=VALUE"),
                     ("accuracy=0.9", "unknown metric 'accuracy'"), ("top1=high", "'high' is not a number"),
                     ("miou=1.5", "from 0 to 1"), ("cer=-0.1", ">= 0"), ("map50=nan", "from 0 to 1")):
        with pytest.raises(InputError, match="--target") as e:
            parse_target(bad)
        assert why in str(e.value), (bad, str(e.value))
    with pytest.raises(InputError, match="^--my-flag 'x'"):
        parse_target("x", flag="--my-flag")


def test_meets_target_directions():
    assert meets_target("map50", 0.9, 0.9) and not meets_target("map50", 0.9, 0.89)
    assert meets_target("cer", 0.05, 0.05) and not meets_target("cer", 0.05, 0.06)


# -- detection --------------------------------------------------------------------------------------

def test_box_iou_and_ap():
    assert box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0, 0] == pytest.approx(1 / 7)
    assert box_iou([[0, 0, 1, 1]], [[2, 2, 3, 3]])[0, 0] == 0.0
    assert box_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0  # empty boxes: no division by zero
    assert average_precision([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert average_precision([0.0, 0.5, 1.0], [0.0, 0.5, 2 / 3]) == pytest.approx(2 / 3)


def test_identical_detections_score_one():
    ref = [dets((10, 10, 50, 50, 0.9, 0), (60, 60, 90, 100, 0.6, 3)), dets((0, 0, 30, 30, 0.8, 3))]
    m = detection_metrics(ref, ref)
    assert m.map50 == pytest.approx(1.0) and m.ap_per_class == {0: 1.0, 3: 1.0}
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert (m.reference_boxes, m.bundle_boxes, m.true_positives) == (3, 3, 3)


def test_missing_box_lowers_recall():
    ref = [dets((10, 10, 50, 50, 0.9, 0), (60, 60, 90, 100, 0.6, 0))]
    m = detection_metrics([dets((11, 11, 50, 52, 0.7, 0))], ref)
    assert m.recall == 0.5 and m.precision == 1.0 and m.f1 == pytest.approx(2 / 3)
    assert m.map50 == pytest.approx(0.5)


def test_class_mismatch_and_poor_overlap_are_false_positives():
    ref = [dets((10, 10, 50, 50, 0.9, 0))]
    wrong_class = detection_metrics([dets((10, 10, 50, 50, 0.9, 1))], ref)
    assert wrong_class.map50 == 0.0 and wrong_class.precision == 0.0 and wrong_class.recall == 0.0
    assert wrong_class.ap_per_class == {0: 0.0}  # class 1 has no reference box: not in the mean
    shifted = detection_metrics([dets((30, 30, 70, 70, 0.9, 0))], ref)  # IoU 400/2800 < 0.5
    assert shifted.map50 == 0.0 and shifted.true_positives == 0


def test_ranking_duplicates_and_images_without_reference():
    ref = [dets((0, 0, 10, 10, 0.9, 0)), dets((20, 20, 40, 40, 0.9, 0)), dets()]
    # a false positive ranked above two true positives: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> AP 2/3
    got = [dets((0, 0, 10, 10, 0.8, 0)), dets((20, 20, 40, 40, 0.7, 0)), dets((50, 50, 60, 60, 0.95, 0))]
    m = detection_metrics(got, ref)
    assert m.map50 == pytest.approx(2 / 3) and m.images_without_reference == 1
    assert m.precision == pytest.approx(2 / 3) and m.recall == 1.0
    # a duplicate box is matched once: the second is a false positive ranked below the true one, AP stays 1
    dup = detection_metrics([dets((0, 0, 10, 10, 0.9, 0), (0, 0, 10, 11, 0.5, 0))], ref[:1])
    assert dup.map50 == pytest.approx(1.0) and dup.precision == 0.5
    # a class no reference has, on an image with no reference: only precision sees it
    extra = detection_metrics([dets((0, 0, 10, 10, 0.9, 0)), dets((5, 5, 9, 9, 0.9, 7))], [ref[0], dets()])
    assert extra.map50 == pytest.approx(1.0) and extra.precision == 0.5 and extra.recall == 1.0


def test_no_reference_detection_leaves_map_undefined():
    m = detection_metrics([dets(), dets()], [dets(), dets()])
    assert m.map50 is None and m.recall is None and m.precision is None and m.f1 is None
    m = detection_metrics([dets((0, 0, 5, 5, 0.5, 1))], [dets()])
    assert m.map50 is None and m.precision == 0.0
    nothing = detection_metrics([dets()], [dets((0, 0, 5, 5, 0.5, 1))])
    assert nothing.map50 == 0.0 and nothing.precision is None and nothing.recall == 0.0 and nothing.f1 == 0.0


# -- classification, segmentation, CTC ----------------------------------------------------------------

def test_top1_agreement():
    ref = [np.array([[0.1, 0.9, 0.0]]), np.array([[2.0, 1.0, 0.0]])]
    assert top1_agreement(ref, ref) == 1.0
    assert top1_agreement([np.array([[0.9, 0.1, 0.0]]), np.array([[3.0, 1.0, 0.0]])], ref) == 0.5


def test_masks_and_iou():
    ref = np.zeros((1, 3, 4, 4))
    ref[0, 0] = 1.0  # class 0 everywhere ...
    ref[0, 1, :2, :2] = 2.0  # ... but class 1 in the top-left 2x2
    got = ref.copy()
    got[0, 2, 0, 0] = 5.0  # one pixel of class 2
    r, g = seg_mask(ref), seg_mask(got)
    assert r[0, 0] == 1 and g[0, 0] == 2 and r[3, 3] == 0
    miou, per = mean_iou([g], [r])
    assert per == {0: 1.0, 1: pytest.approx(3 / 4), 2: 0.0} and miou == pytest.approx((1 + 0.75 + 0) / 3)
    # channels last, as MediaPipe's [1, H, W, 1]
    assert (seg_mask(np.moveaxis(ref, 1, -1), channels_last=True) == r).all()
    # one channel: the foreground's IoU; logits go through a sigmoid (> 0.5 <=> logit > 0)
    logit = np.array([[[[-3.0, 2.0], [0.5, -0.1]]]])
    fg = seg_mask(logit, probabilities=False)
    assert fg.tolist() == [[0, 1], [1, 0]]
    assert seg_mask(np.array([[[[0.2, 0.7]]]])).tolist() == [[0, 1]]
    miou, per = mean_iou([np.array([[0, 1], [1, 1]])], [fg], binary=True)
    assert per == {1: pytest.approx(2 / 3)} and miou == pytest.approx(2 / 3)
    assert mean_iou([np.zeros((2, 2), int)], [np.zeros((2, 2), int)], binary=True)[0] is None


def test_ctc_and_cer():
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3]  # repeats merge, a blank separates two 1s
    x = np.eye(4)[steps][None]  # [1, T, C]
    assert ctc_greedy(x) == [1, 1, 2, 3]
    assert ctc_greedy(np.transpose(x, (1, 0, 2))) == [1, 1, 2, 3]  # [T, 1, C]
    assert ctc_greedy(x, blank=3) == [1, 0, 1, 2, 0]
    with pytest.raises(ValueError):
        ctc_greedy(np.zeros((2, 3, 4)))
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein([1, 2], [1, 2]) == 0
    assert cer(["sitting"], ["kitten"]) == pytest.approx(3 / 6)
    assert cer(["abc", "x"], ["abd", "xy"]) == pytest.approx(2 / 5)  # summed edits over summed lengths
    assert cer([""], [""]) is None


def test_charset_paddleocr_layout(tmp_path: Path):
    p = tmp_path / "keys.txt"
    p.write_text("a\nb\n \nc\n", encoding="utf-8")  # a line may be a space
    chars = load_charset(p)
    assert chars == ("a", "b", " ", "c")
    assert class_chars(chars, 5, 0, "x") == [None, "a", "b", " ", "c"]
    assert class_chars(chars, 6, 0, "x") == [None, "a", "b", " ", "c", " "]  # PaddleOCR's use_space_char
    with pytest.raises(InputError, match="--charset k: the charset has 4 characters and the output 9 classes"):
        class_chars(chars, 9, 0, "--charset k")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(InputError, match="empty.txt: empty"):
        load_charset(tmp_path / "empty.txt")


# -- which task each output has -------------------------------------------------------------------------

def _out(name: str, *shape: int) -> SimpleNamespace:
    return SimpleNamespace(name=name, shape=shape)


def test_plan_tasks():
    yolo = Postprocess(kind="yolo", num_classes=18)
    plans, notes = plan_tasks([_out("output0", 1, 22, 2100)], (320, 320), yolo, "manifest postprocess", None)
    assert [(p.task, p.outputs) for p in plans] == [("detect", ("output0",))] and not notes
    plans, notes = plan_tasks([_out("probs", 1, 4), _out("mask", 1, 256, 256, 1), _out("feat", 1, 64, 20, 20)],
                              (256, 256), None, "manifest postprocess", None)
    assert [(p.task, p.outputs, p.channels_last) for p in plans] == [("classify", ("probs",), False),
                                                                    ("segment", ("mask",), True)]
    assert any("feat" in n and "tensor metrics only" in n for n in notes)
    assert any("probs" in n and "inferred from its shape" in n for n in notes)
    plans, notes = plan_tasks([_out("logits", 1, 40, 6625)], (48, 320), None, "manifest postprocess", "ctc")
    assert [(p.task, p.decided_by) for p in plans] == [("ctc", "--task")]
    plans, notes = plan_tasks([_out("logits", 1, 40, 6625, 2)], (48, 320), None, "manifest postprocess", "ctc")
    assert not plans and "does not fit --task ctc" in notes[0]
    with pytest.raises(InputError, match="--task detect needs .* --postprocess"):
        plan_tasks([_out("output0", 1, 22, 2100)], (320, 320), None, "manifest postprocess", "detect")
    with pytest.raises(InputError, match="--task 'boxes'"):
        plan_tasks([_out("output0", 1, 22, 2100)], (320, 320), None, "manifest postprocess", "boxes")


def test_load_postprocess_names_file_and_field(tmp_path: Path):
    good = tmp_path / "post.yaml"
    good.write_text("kind: yolo\nnum_classes: 18\nconf_threshold: 0.1\n")
    spec = load_postprocess(good, ["output0"])
    assert spec.kind == "yolo" and spec.conf_threshold == 0.1 and spec.num_classes == 18
    cases = {"kind: yolo\nconf_threshold: high\n": "field conf_threshold",
             "kind: boxes\n": "field kind",
             "kind: none\n": "field kind",
             "kind: yolo\noutput: nope\n": "postprocess.output: 'nope'",
             "kind: yolo\nthreshold: 0.3\n": "unknown field(s) ['threshold']",
             "- a\n- b\n": "must be an object",
             "kind: [yolo\n": "not valid YAML"}
    for i, (text, field) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text(text)
        with pytest.raises(InputError) as e:
            load_postprocess(p, ["output0"])
        assert str(p) in str(e.value) and field in str(e.value), (text, str(e.value))


# -- the real detector on real photos ---------------------------------------------------------------------

def _zoo_detector() -> Path:
    spec = importlib.util.spec_from_file_location("zoo_fetch_for_eval", REPO / "scripts" / "zoo_fetch.py")
    zoo = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(zoo)  # type: ignore[union-attr]
    try:
        return zoo.fetch(["yolov8n-nudenet"])["yolov8n-nudenet"]
    except zoo.ZooError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"zoo model yolov8n-nudenet unavailable: {exc}")
        pytest.skip(f"zoo model yolov8n-nudenet unavailable: {exc}")
        raise


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("skimage")
    from edgesdk.conversion import convert

    model = _zoo_detector()
    d = tmp_path_factory.mktemp("eval")
    subprocess.run([sys.executable, str(REPO / "scripts" / "photos.py"), "--out", str(d / "photos")], check=True,
                   capture_output=True, text=True, timeout=120)
    post = Postprocess(kind="yolo", head="anchor-free", num_classes=18)
    common = {"engine": "onnxruntime", "postprocess": post, "preprocess": {"resize": "letterbox"}}
    convert(model, "rpi4", d / "fp32", precision="fp32", **common)
    convert(model, "rpi4", d / "int8", precision="int8", calib=d / "photos" / "calib", **common)
    low = d / "post_conf010.yaml"  # more fp32 boxes on these photos than at the default 0.25
    low.write_text("kind: yolo\nhead: anchor-free\nnum_classes: 18\nconf_threshold: 0.1\n")
    return SimpleNamespace(dir=d, eval=d / "photos" / "eval", fp32=d / "fp32", int8=d / "int8", low_conf=low)


def _verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGESDK_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgesdk", "verify", *args], check=False, capture_output=True,
                          text=True, timeout=300, env=env)


def test_fp32_bundle_agrees_with_its_model_on_real_photos(yolo: SimpleNamespace):
    from edgesdk.verify import verify

    for post in (None, yolo.low_conf):
        rep = verify(yolo.fp32, eval_dir=yolo.eval, layers=False, postprocess=post)
        assert rep.source == "eval" and rep.samples == 8 and rep.evaluation is not None
        (t,) = rep.evaluation.tasks
        assert (t.task, t.outputs, t.metric) == ("detect", ("output0",), "map50")
        assert t.metrics["reference_boxes"] > 0, t.metrics  # the photos hold something this detector finds
        assert t.value == pytest.approx(1.0, abs=1e-6), t.metrics
        assert t.metrics["precision"] == t.metrics["recall"] == pytest.approx(1.0)
    r = _verify_cli(str(yolo.fp32), "--eval", str(yolo.eval), "--no-layers", "--target", "map50=0.99", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "target" and out["ok"] and out["target"]["metric"] == "map50"
    assert out["eval"]["images"] == 8 and out["eval"]["tasks"][0]["metrics"]["map50"] == pytest.approx(1.0)


def test_int8_bundle_map_on_real_photos(yolo: SimpleNamespace):
    from edgesdk.verify import verify

    for post in (None, yolo.low_conf):
        rep = verify(yolo.int8, eval_dir=yolo.eval, layers=False, postprocess=post)
        (t,) = rep.evaluation.tasks  # type: ignore[union-attr]
        m = t.metrics
        print(f"\nyolov8n int8 (onnxruntime) on {rep.samples} eval photos, conf > {m['conf_threshold']}: mAP@0.5 "
              f"{t.value}, P {m['precision']}, R {m['recall']}, F1 {m['f1']} ({m['reference_boxes']} fp32 boxes, "
              f"{m['bundle_boxes']} int8 boxes); tensor tolerance ok: {rep.tolerance_ok}")
        assert t.value is not None and 0.0 <= t.value <= 1.0
    # the exit code follows the measured value, and the message names the metric, the value and the target
    r = _verify_cli(str(yolo.int8), "--eval", str(yolo.eval), "--no-layers", "--postprocess", str(yolo.low_conf),
                    "--target", "map50=0.99")
    assert "Traceback" not in r.stderr
    assert r.returncode == (0 if t.value >= 0.99 else 1), r.stdout + r.stderr
    assert f"mAP@0.5 {t.value:.4f}" in r.stdout and "the target map50 >= 0.99" in " ".join(r.stdout.split())


def test_verify_eval_refuses_bad_input(yolo: SimpleNamespace):
    cases = [(["--target", "map50=0.9"], "give --eval DIR"),
             (["--eval", str(yolo.eval), "--target", "top1=0.9"], "no output of this bundle has a top-1"),
             (["--eval", str(yolo.eval), "--target", "mAP"], "--target 'mAP': expected METRIC=VALUE"),
             (["--eval", str(yolo.eval), "--data", str(yolo.eval)], "give --data or --eval, not both"),
             (["--eval", str(yolo.dir / "nowhere")], "does not exist")]
    for args, msg in cases:
        r = _verify_cli(str(yolo.fp32), "--no-layers", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (args, r.stderr)
        assert msg in " ".join(r.stderr.split()), (args, r.stderr)

"""Session.predict, the streaming Pipeline, and `python -m edgesdk.runtime`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

import runtime_bundles as rb

from edgesdk.runtime import Pipeline, Session
from edgesdk.runtime.__main__ import main
from edgesdk.runtime.manifest import Postprocess, Preprocess
from edgesdk.runtime.pipeline import DropQueue
from edgesdk.runtime.postprocess import softmax

LABELS = tuple(f"class{i}" for i in range(10))


@pytest.fixture(scope="module")
def cls_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rb.make_bundle(tmp_path_factory.mktemp("cls") / "b", [("onnxruntime", "all")],
                          preprocess=Preprocess(input="x", size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25,) * 3),
                          postprocess=Postprocess(kind="classification", softmax=True, top_k=3, labels=LABELS))


def _image() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.coffee()[:, :, ::-1])


def test_predict_is_pre_run_post(cls_bundle: Path) -> None:
    img = _image()
    with Session(cls_bundle) as s:
        pred = s.predict(img)
        # by hand
        h, w = img.shape[:2]
        r = min(16 / h, 16 / w)
        nw, nh = round(w * r), round(h * r)
        lb = cv2.copyMakeBorder(cv2.resize(img, (nw, nh)), (16 - nh) // 2, 16 - nh - (16 - nh) // 2,
                                (16 - nw) // 2, 16 - nw - (16 - nw) // 2, cv2.BORDER_CONSTANT, value=(114,) * 3)
        x = ((lb[:, :, ::-1].astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)[None]
        p = softmax(s.run({"x": np.ascontiguousarray(x, dtype=np.float32)})["logits"][0])
    assert pred.kind == "classification" and pred.source_size == (h, w)
    assert [c.class_id for c in pred.classifications] == list(np.argsort(-p)[:3])
    assert pred.classifications[0].label == LABELS[pred.classifications[0].class_id]
    assert abs(pred.classifications[0].score - p.max()) < 1e-4
    assert pred.timings.inference_ms > 0


def test_pipeline_in_order_without_drops(cls_bundle: Path) -> None:
    frames = [_image()] * 12
    with Session(cls_bundle) as s, Pipeline(s, frames, drop=False) as p:
        res = list(p)
    assert [r.index for r in res] == list(range(12))
    assert p.stats.dropped_total == 0 and p.stats.captured == p.stats.delivered == 12
    one = Session(cls_bundle).predict(frames[0])
    assert res[0].prediction.classifications == one.classifications


def test_pipeline_drops_oldest_when_consumer_is_slow(cls_bundle: Path) -> None:
    def source():
        for _ in range(60):
            time.sleep(0.002)
            yield _image()

    with Session(cls_bundle) as s, Pipeline(s, source(), queue_size=2, drop=True) as p:
        seen = []
        for r in p:
            seen.append(r.index)
            time.sleep(0.03)  # slow consumer
    st = p.stats
    assert st.captured == 60 and st.dropped_total > 0
    assert st.delivered + st.dropped_total == 60
    assert seen == sorted(seen) and seen[-1] == 59  # the newest frame always arrives


def test_pipeline_from_folder_and_video(cls_bundle: Path, tmp_path: Path) -> None:
    img = _image()[:64, :96]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), img)
    np.save(folder / "3.npy", img)
    with Session(cls_bundle) as s:
        assert len(list(Pipeline(s, folder, drop=False))) == 4
        video = tmp_path / "v.avi"
        wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
        if not wr.isOpened():
            pytest.skip("this OpenCV build cannot write MJPG video")
        for _ in range(5):
            wr.write(img)
        wr.release()
        assert len(list(Pipeline(s, video, drop=False))) == 5
        from edgesdk.runtime.errors import InputError

        with pytest.raises(InputError, match="no such video"):
            list(Pipeline(s, tmp_path / "nope.mp4"))


def test_pipeline_error_reaches_consumer(cls_bundle: Path) -> None:
    from edgesdk.runtime.errors import InputMismatch

    with Session(cls_bundle) as s, pytest.raises(InputMismatch):
        list(Pipeline(s, [np.zeros((8, 8, 3), np.float32)], drop=False))


def test_drop_queue_counts() -> None:
    q = DropQueue(2, drop=True)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and [q.get(), q.get()] == [3, 4]


# -- CLI --------------------------------------------------------------------------------------------------
def test_cli_image_json(cls_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "i.png"
    cv2.imwrite(str(img), _image())
    assert main([str(cls_bundle), "--input", str(img), "--json", "--bench", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["engines_used"][0]["engine"] == "onnxruntime"
    assert len(out["prediction"]["classifications"]) == 3 and out["bench"]["runs"] == 3


def test_cli_npy_human(cls_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "x.npy"
    np.save(f, rb.sample_input())
    assert main([str(cls_bundle), "--input", f"x={f}"]) == 0
    assert "logits: float32[1, 10]" in capsys.readouterr().out


def test_cli_bad_input_exits_2(cls_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((1, 3, 8, 8), np.float64))
    assert main([str(cls_bundle), "--input", str(f), "--json"]) == 2
    err = json.loads(capsys.readouterr().out)
    assert err["error"] == "InputMismatch" and "expected float32[1, 3, 16, 16]" in err["message"]
    assert main([str(cls_bundle), "--input", str(tmp_path / "none.png")]) == 2
    assert main([str(tmp_path), "--input", str(f)]) == 2  # not a bundle
    assert main([str(cls_bundle)]) == 2  # usage


def test_cli_as_module(cls_bundle: Path, tmp_path: Path) -> None:
    f = tmp_path / "x.npy"
    np.save(f, rb.sample_input())
    r = subprocess.run(check=False, args=[sys.executable, "-m", "edgesdk.runtime", str(cls_bundle), "--input", str(f), "--json"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"]["logits"]["shape"] == [1, 10]

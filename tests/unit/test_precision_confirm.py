"""edgesdk.precision_plan.confirm: a --target's layers re-measured on the segment's own engine, grown while it misses.

The search runs on onnxruntime's QDQ model; MNN or TFLite quantize differently, so convert builds their artifact with
the kept layers and judges it with the same judge (the fp32 segment's outputs on the evaluation samples, computed
here by onnxruntime on a real model). `build` stands in for the engine (its outputs are the fp32 outputs plus an
error that shrinks as more layers are kept), which is what this unit checks: the growth, the stop, the record.
tests/integration/test_mnn_mixed.py and test_tflite_mixed.py build the real artifacts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgesdk.errors import InputError, ModelError
from edgesdk.precision_plan import Int8Plan, check_options, confirm, latency_estimate
from edgesdk.quantize import SearchResult, SearchStep

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _model(path: Path) -> Path:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.normal(size=(4, 3, 3, 3)).astype(np.float32).ravel())
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.fixture()
def seg(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    import onnxruntime as ort

    model = _model(tmp_path / "s0.onnx")
    xs = np.random.default_rng(1).normal(size=(3, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=xs)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    refs = [sess.run(["y"], {"x": x[None]})[0] for x in xs]
    return model, tmp_path / "eval.npz", refs


def _plan(kept: tuple[str, ...], target: float = 0.999) -> Int8Plan:
    res = SearchResult(target, True, "minmax", True, kept, 0.9995, (SearchStep(kept, 0.9995, 100, True),), "met")
    ranking = tuple({"node": n} for n in ("n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8"))
    return Int8Plan("s0", "minmax", "forced", target=("cosine", target), eval_source="3 samples", search=res,
                    ranking=ranking)


def _engine(refs: list[np.ndarray], good_at: int, calls: list[tuple[str, ...]]):
    """An engine whose error falls as layers are kept: cosine >= 0.999 from `good_at` kept layers on."""
    def build(kept: tuple[str, ...]) -> tuple[list[dict[str, np.ndarray]], int]:
        calls.append(kept)
        noise = 0.0 if len(kept) >= good_at else 1.0
        rng = np.random.default_rng(len(kept))
        return [{"y": r + noise * rng.normal(size=r.shape).astype(np.float32)} for r in refs], 1000 + len(kept)
    return build


def test_confirm_grows_the_kept_layers_along_the_ranking_until_the_engine_meets_the_target(seg) -> None:
    model, ev, refs = seg
    calls: list[tuple[str, ...]] = []
    est = latency_estimate({"n1": 1e9, "n2": 1e9}, 100e9, 50e9)
    out = confirm(_plan(("n1",)), "mnn", model, ev, None, _engine(refs, 4, calls), lambda _m: None, est)
    assert calls == [("n1",), ("n1", "n2"), ("n1", "n2", "n3", "n4")]  # 1, doubled, doubled
    assert out.engine == "mnn" and out.kept == ("n1", "n2", "n3", "n4")
    assert [s.meets for s in out.confirm_steps] == [False, False, True]
    assert all(s.engine == "mnn" for s in out.confirm_steps)
    assert out.metric_value == pytest.approx(1.0, abs=1e-6)
    assert out.confirm_steps[0].estimate_ms == pytest.approx(1e3 * (1e9 / 100e9 + 1e9 / 50e9))
    d = out.to_dict()
    assert d["engine"] == "mnn" and d["kept_in_float"] == ["n1", "n2", "n3", "n4"] and len(d["engine_steps"]) == 3
    assert "3 build(s) on mnn" in out.summary()


def test_confirm_that_runs_out_of_builds_raises_and_names_every_step(seg) -> None:
    model, ev, refs = seg
    calls: list[tuple[str, ...]] = []
    with pytest.raises(ModelError) as e:
        confirm(_plan(("n1",)), "tflite", model, ev, None, _engine(refs, 8, calls), lambda _m: None, max_builds=2)
    assert len(calls) == 2
    msg = str(e.value)
    assert "tflite misses --target cosine=0.999" in msg and "1 kept" in msg and "2 kept" in msg


def test_plain_int8_that_meets_on_onnxruntime_is_still_measured_on_the_engine(seg) -> None:
    model, ev, refs = seg
    calls: list[tuple[str, ...]] = []
    out = confirm(_plan(()), "mnn", model, ev, None, _engine(refs, 2, calls), lambda _m: None)
    assert calls == [(), ("n1",), ("n1", "n2")]
    assert out.kept == ("n1", "n2")


def test_latency_estimate_charges_kept_layers_at_the_fp32_peak() -> None:
    est = latency_estimate({"a": 2e9, "b": 6e9}, 100e9, 25e9)
    assert est([]) == pytest.approx(80.0)
    assert est(["b"]) == pytest.approx(1e3 * (2e9 / 100e9 + 6e9 / 25e9))
    assert est(["unknown"]) == pytest.approx(80.0)


def test_target_on_an_engine_that_cannot_keep_layers_is_refused_before_anything_runs() -> None:
    with pytest.raises(InputError) as e:
        check_options("int8", "ncnn", "cosine=0.9", None)
    assert "ncnn cannot keep named layers in float" in str(e.value)
    with pytest.raises(InputError) as e:
        check_options("int8", "mnn", None, "entropy")
    assert "entropy is onnxruntime's calibration" in str(e.value)
    assert check_options("int8", "onnxruntime", "cosine=0.9", "auto")[0] == ("cosine", 0.9)


def test_engine_method_choice_keeps_the_best_held_back_score_and_says_why_a_method_failed(seg) -> None:
    from edgesdk.errors import ToolchainError
    from edgesdk.precision_plan import choose_engine_method

    model, ev, refs = seg
    noise = {"KL": 0.05, "ADMM": 0.01}

    def build(method: str) -> list[dict[str, np.ndarray]]:
        if method == "EMA":
            raise ToolchainError("mnnquant", ["python", "-c", "..."], 1, "Segmentation fault")
        rng = np.random.default_rng(3)
        return [{"y": r + noise[method] * rng.normal(size=r.shape).astype(np.float32)} for r in refs]

    best, scores = choose_engine_method("s0", "mnn", ("KL", "ADMM", "EMA"), model, ev, build, lambda _m: None)
    assert best == "ADMM"
    assert [x["method"] for x in scores] == ["KL", "ADMM", "EMA"]
    assert scores[1]["score"] > scores[0]["score"] > 0.9
    assert scores[2]["score"] is None and scores[2]["error"].startswith("mnnquant exited with 1")
    none, failed = choose_engine_method("s0", "mnn", ("EMA",), model, ev, build, lambda _m: None)
    assert none is None and failed[0]["score"] is None


def test_mnn_admm_is_not_tried_above_its_size_limit() -> None:
    from edgesdk.precision_plan import engine_methods

    assert engine_methods("mnn", 8, (3, 32, 32)) == ("KL", "ADMM", "EMA")
    assert "ADMM" not in engine_methods("mnn", 64, (3, 224, 224))
    assert engine_methods("tflite", 8, (3, 32, 32)) == ("per-channel", "per-tensor")
    assert engine_methods("onnxruntime", 8, (3, 32, 32)) == ()
    assert engine_methods("mnn", 8, (3, 32, 32), keep_layers=True) == ("KL", "ADMM")  # EMA ignores the skip list


def test_a_tool_failure_becomes_one_readable_line_in_the_notes() -> None:
    from edgesdk.conversion import _one_line
    from edgesdk.errors import ToolchainError

    exc = ToolchainError("mnn-check", ["python", "-c", "import sys\n" * 50], 1,
                         "checking...\nsegment s0: the int8 model would run float activations\n")
    line = _one_line(exc)
    assert line == "mnn-check exited with 1: segment s0: the int8 model would run float activations"
    assert "\n" not in _one_line(ValueError("first\nsecond")) and len(_one_line(ValueError("x" * 999))) == 400

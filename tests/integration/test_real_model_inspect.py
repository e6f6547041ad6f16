"""A real detection model (PP-OCRv4 text detector from a PyPI package) through inspect and partition on every board."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgesdk.boards import list_boards
from edgesdk.graph import load_model, run_segments, write_segments
from edgesdk.graph.report import analyze, compare_boards

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def det_model():
    spec = importlib.util.spec_from_file_location("real_model", ROOT / "scripts" / "real_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        return mod.fetch()
    except (subprocess.SubprocessError, OSError, StopIteration, KeyError) as exc:
        pytest.skip(f"cannot download {mod.PACKAGE} from PyPI: {exc}")


def test_all_boards_table(det_model):
    rows = compare_boards(det_model, {"x": (1, 3, 640, 640)})
    assert {r.board_id for r in rows} == {b.id for b in list_boards()}
    for r in rows:
        assert r.segments >= 1 and r.estimate_ms > 0


@pytest.mark.parametrize("board", [b.id for b in list_boards()])
def test_segments_reproduce_the_model(det_model, tmp_path, board):
    ort = pytest.importorskip("onnxruntime")
    model = load_model(det_model, {"x": (1, 3, 640, 640)})
    a = analyze(model, next(b for b in list_boards() if b.id == board))
    out = write_segments(a.model, a.plan, tmp_path / "o")
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    ref = ort.InferenceSession(str(det_model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = run_segments(out, {"x": x})[model.outputs[0]]
    assert np.abs(got - ref).max() <= 1e-5

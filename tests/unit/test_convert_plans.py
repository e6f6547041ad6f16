"""Golden tests of the CPU adapters' plans: exactly the commands and files each would run and expect.

Regenerate after an intended change with: UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_convert_plans.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters import CalibData, ConversionJob, ConversionRefused, IOSpec, get_adapter
from edgesdk.toolchains.adapters.mnn import MnnAdapter
from edgesdk.toolchains.adapters.ncnn import NcnnAdapter
from edgesdk.toolchains.adapters.onnxruntime import OnnxRuntimeAdapter
from edgesdk.toolchains.adapters.tflite import TfliteAdapter

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "convert"
W = Path("/WORK")
VENV = Path("/VENV")


def _job(precision: str, calib: bool = True, images: bool = True, inputs=None) -> ConversionJob:
    cal = None
    if calib:
        cal = CalibData(W / "s0_calib.npz", 200, W / "s0_calib_images" if images else None,
                        (127.5, 127.5, 127.5), (1 / 127.5,) * 3, "RGB")
    return ConversionJob("s0", W / "s0.onnx", W, precision,
                         inputs or (IOSpec("image", (1, 3, 32, 32)),), (IOSpec("logits", (1, 10)),), cal)


def _adapters():
    return {
        "ncnn": NcnnAdapter(venv=VENV, binary=VENV / "lib/python3.11/site-packages/pnnx/pnnx"),
        "mnn": MnnAdapter(venv=VENV),
        "tflite": TfliteAdapter(venv=VENV),
        "onnxruntime": OnnxRuntimeAdapter(venv=VENV, python="/HOST/python"),
    }


CASES = [("ncnn", "fp32"), ("ncnn", "fp16"), ("mnn", "fp32"), ("mnn", "fp16"), ("mnn", "int8"),
         ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "int8"), ("onnxruntime", "fp32"),
         ("onnxruntime", "int8")]


@pytest.mark.parametrize(("engine", "precision"), CASES)
def test_plan_matches_golden(engine: str, precision: str) -> None:
    plan = _adapters()[engine].plan(_job(precision))
    got = plan.to_dict()
    path = GOLDEN / f"{engine}_{precision}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"plan changed; see {path}"


def test_every_command_is_an_argv_list_with_a_timeout() -> None:
    for engine, precision in CASES:
        for c in _adapters()[engine].plan(_job(precision)).commands:
            assert isinstance(c.argv, tuple) and all(isinstance(a, str) for a in c.argv)
            assert 0 < c.timeout <= 3600


def test_ncnn_refuses_int8_with_the_reason() -> None:
    with pytest.raises(InputError, match="ncnn2table"):
        _adapters()["ncnn"].plan(_job("int8"))


def test_onnxruntime_refuses_fp16() -> None:
    with pytest.raises(InputError, match="fp16"):
        _adapters()["onnxruntime"].plan(_job("fp16"))


def test_int8_without_calibration_is_input_error() -> None:
    for engine in ("mnn", "tflite", "onnxruntime"):
        with pytest.raises(InputError, match="calib"):
            _adapters()[engine].plan(_job("int8", calib=False))


def test_mnn_int8_refuses_non_image_segment() -> None:
    job = _job("int8", images=False, inputs=(IOSpec("feat", (1, 64, 8, 8)),))
    with pytest.raises(ConversionRefused, match="mnnquant"):
        _adapters()["mnn"].plan(job)


def test_mnn_int8_config_is_the_declared_preprocessing() -> None:
    plan = _adapters()["mnn"].plan(_job("int8"))
    cfg = json.loads(plan.writes[0].content)
    assert cfg["mean"] == [127.5] * 3 and cfg["width"] == 32 and cfg["height"] == 32
    assert cfg["feature_quantize_method"] == "ADMM"
    # the wrappers that phone home are never used: the converter core is called directly
    assert all("_tools" in c.argv[2] for c in plan.commands)


def test_unknown_engine_suggests() -> None:
    with pytest.raises(InputError, match="Did you mean 'mnn'"):
        get_adapter("mnm")

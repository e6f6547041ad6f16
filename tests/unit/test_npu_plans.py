"""Golden tests of the four accelerator adapters: the exact commands, config files and outputs each plans,
and the parsers of their compilers' logs (fixtures in documented formats, tests/golden/npu/logs/README.md).

Regenerate after an intended change with: UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_npu_plans.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from edgesdk.errors import InputError
from edgesdk.toolchains.adapters import CalibData, ConversionJob, IOSpec, accelerator_adapter_class
from edgesdk.toolchains.logs import (
    edgetpu_cache_warning,
    parse_edgetpu_log,
    parse_horizon_checker,
    parse_vitis_log,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "npu"
LOGS = GOLDEN / "logs"
W = Path("/WORK")
VENV = Path("/VENV")


def _job(options=None, images: bool = True, normal=(1 / 127.5,) * 3) -> ConversionJob:
    cal = CalibData(W / "s0_calib.npz", 200, W / "s0_calib_images" if images else None,
                    (127.5, 127.5, 127.5) if images else None, normal if images else None, "RGB")
    return ConversionJob("s0", W / "s0.onnx", W, "int8", (IOSpec("image", (1, 3, 32, 32)),),
                         (IOSpec("logits", (1, 10)),), cal, options or {})


def _adapter(engine: str, mode: str = "native"):
    cls = accelerator_adapter_class(engine)
    kw = {"tflite_venv": VENV} if engine == "edgetpu" else {}
    return cls(venv=VENV, python="/HOST/python", mode=mode, **kw)


CASES = {
    "edgetpu": ("edgetpu", {}, True),
    "edgetpu_segments": ("edgetpu", {"num_segments": 2, "min_runtime_version": 13}, True),
    "vart": ("vart", {"use_vai_q_onnx": False}, True),
    "vart_vai_q_onnx_container": ("vart", {"use_vai_q_onnx": True, "mode": "container"}, True),
    "nnie": ("nnie", {}, True),
    "nnie_featuremap": ("nnie", {}, False),
    "bpu": ("bpu", {}, True),
    "bpu_container": ("bpu", {"mode": "container"}, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_matches_golden(case: str) -> None:
    engine, opts, images = CASES[case]
    opts = dict(opts)
    mode = opts.pop("mode", "native")
    plan = _adapter(engine, mode).plan(_job(opts, images))
    got = plan.to_dict()
    path = GOLDEN / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"plan changed; see {path}"


def test_edgetpu_compiler_flags() -> None:
    c = _adapter("edgetpu").plan(_job()).commands[-1]
    assert c.argv[:6] == ("edgetpu_compiler", "-s", "-m", "14", "-o", "/WORK/s0_edgetpu")
    assert "-n" not in c.argv
    c = _adapter("edgetpu").plan(_job({"num_segments": 3})).commands[-1]
    assert c.argv[c.argv.index("-n") + 1] == "3"


def test_vart_command_and_fingerprint_mismatch_is_refused_before_compiling() -> None:
    plan = _adapter("vart").plan(_job({"use_vai_q_onnx": False}))
    vai = plan.commands[-1].argv
    assert vai == ("vai_c_xir", "-x", "/WORK/s0_vart_quant.onnx", "-a", "/WORK/s0_arch.json", "-o", "/WORK/s0_vart",
                   "-n", "s0")
    assert json.loads(plan.writes[0].content) == {"fingerprint": "0x101000056010407"}
    from edgesdk.toolchains.adapters.vitis_ai import parse_xdputil_query

    board = parse_xdputil_query((LOGS / "xdputil_query.json").read_text())
    assert board == ["0x101000056010407"]
    _adapter("vart").plan(_job({"use_vai_q_onnx": False, "board_fingerprint": board[0]}))  # agrees: fine
    with pytest.raises(InputError, match="CHECK fingerprint fail"):
        _adapter("vart").plan(_job({"use_vai_q_onnx": False, "vai_version": "2.5", "board_fingerprint": board[0]}))


def test_nnie_cfg_fields() -> None:
    plan = _adapter("nnie").plan(_job())
    cfg = next(w for w in plan.writes if w.path.suffix == ".cfg").content.decode()
    fields = dict(line[1:].split("] ", 1) for line in cfg.splitlines())
    assert fields["prototxt_file"] == "/WORK/s0.prototxt" and fields["caffemodel_file"] == "/WORK/s0.caffemodel"
    assert fields["net_type"] == "0" and fields["compile_mode"] == "0" and fields["image_list"] == "/WORK/s0_image_list.txt"
    assert fields["RGB_order"] == "RGB" and fields["norm_type"] == "5" and fields["image_type"] == "1"
    assert abs(float(fields["data_scale"]) - 1 / 127.5) < 1e-12
    mean = next(w for w in plan.writes if w.path.name == "s0_mean.txt").content.decode().split()
    assert [float(x) for x in mean] == [127.5] * 3
    # a per-channel std difference goes into a Scale layer at the input (NNIE has one data_scale)
    plan = _adapter("nnie").plan(_job(normal=(0.01, 0.02, 0.04)))
    export = next(c for c in plan.commands if c.tool == "caffe-export").argv
    assert export[-2:] == ("--input-scale", "image=1,2,4")


def test_horizon_yaml() -> None:
    plan = _adapter("bpu").plan(_job())
    conf = yaml.safe_load(plan.writes[0].content)
    assert conf["model_parameters"]["march"] == "bernoulli2"
    ip = conf["input_parameters"]
    assert ip["input_type_rt"] == "nv12" and ip["input_type_train"] == "rgb" and ip["input_layout_train"] == "NCHW"
    assert ip["norm_type"] == "data_mean_and_scale" and ip["mean_value"] == "127.5 127.5 127.5"
    assert conf["calibration_parameters"]["cal_data_dir"] == "/WORK/s0_cal_data"
    assert set(conf) == {"model_parameters", "input_parameters", "calibration_parameters", "compiler_parameters"}
    tools = [c.argv[:2] for c in plan.commands if c.tool == "hb_mapper"]
    assert tools == [("hb_mapper", "checker"), ("hb_mapper", "makertbin")]


@pytest.mark.parametrize("engine", ["edgetpu", "vart", "nnie", "bpu"])
def test_refuses_float_and_missing_calibration(engine: str) -> None:
    a = _adapter(engine)
    job = _job()
    with pytest.raises(InputError, match="int8"):
        a.plan(ConversionJob("s0", job.onnx, W, "fp32", job.inputs, job.outputs, job.calib))
    with pytest.raises(InputError, match="calib"):
        a.plan(ConversionJob("s0", job.onnx, W, "int8", job.inputs, job.outputs, None))


@pytest.mark.parametrize("engine", ["edgetpu", "vart", "nnie", "bpu"])
def test_split_and_instructions(engine: str) -> None:
    a = _adapter(engine)
    plan = a.plan(_job({"use_vai_q_onnx": False}))
    pre, vend = a.split(plan)
    assert vend.commands and all(c.tool in a.vendor_tools for c in vend.commands)
    assert not any(c.tool in a.vendor_tools for c in pre.commands)
    assert "sim" in pre.outputs
    text = a.instructions(plan)
    assert a.install_hint in text and vend.commands[-1].argv[0] in text


def test_parse_edgetpu_log() -> None:
    log = parse_edgetpu_log((LOGS / "edgetpu_compiler.log").read_text())
    assert log.compiler_version == "16.0.384591198"
    assert (log.tpu_ops, log.cpu_ops, log.total_ops, log.subgraphs) == (60, 7, 67, 1)
    assert log.on_chip_mib == pytest.approx(7.25) and log.off_chip_mib == pytest.approx(3.5)
    mapped = sum(o.count for o in log.ops if o.target == "accelerator")
    assert mapped == 60 and sum(o.count for o in log.ops) == 67
    reasons = {o.reason for o in log.ops if o.target == "cpu"}
    assert "Tensor has unsupported rank (up to 3 innermost dimensions mapped)" in reasons
    warn = edgetpu_cache_warning(log)
    assert warn and "10.5 ms" in warn


def test_parse_vitis_log() -> None:
    log = parse_vitis_log((LOGS / "vai_c_xir.log").read_text())
    assert log.target == "DPUCZDX8G_ISA1_B4096" and log.op_count == 58
    assert (log.subgraphs, log.dpu_subgraphs, log.cpu_subgraphs) == (5, 1, 4)
    assert [o.op for o in log.cpu_ops] == ["softmax s0__Softmax", "transpose s0__Transpose"]
    assert log.xmodel == "/WORK/s0_vart/s0.xmodel"


def test_parse_horizon_checker() -> None:
    chk = parse_horizon_checker((LOGS / "hb_mapper_checker.log").read_text())
    assert len(chk.nodes) == 9 and chk.subgraphs == 2
    cpu = [n for n in chk.nodes if n[1] == "CPU"]
    assert [n[0] for n in cpu] == ["/12/Flatten", "/14/Softmax"]
    assert {(o.op, o.target) for o in chk.ops} >= {("Softmax", "cpu"), ("HzSQuantizedConv", "accelerator")}

"""Toolchain specs and op tables: all parse, and name only real ONNX op types."""

from __future__ import annotations

from pathlib import Path

import onnx.defs
import pytest
import yaml

from edgesdk.boards import TOOLCHAIN_IDS
from edgesdk.errors import ProfileError, UnknownToolchainError
from edgesdk.toolchains.spec import (
    NAMED_CHECKS,
    get_op_table,
    get_toolchain,
    list_toolchains,
    load_op_table,
    load_spec,
    toolchains_dir,
)


def test_every_toolchain_has_spec_and_op_table():
    ids = {t.id for t in list_toolchains()}
    assert ids == set(TOOLCHAIN_IDS)
    for tid in TOOLCHAIN_IDS:
        assert (toolchains_dir() / tid / "ops.yaml").is_file(), tid
        table = get_op_table(tid)
        assert table.toolchain == tid


@pytest.mark.parametrize("tid", TOOLCHAIN_IDS)
def test_op_tables_name_only_onnx_ops(tid):
    table = get_op_table(tid)
    unknown = [op for op in table.ops if not onnx.defs.has(op)]
    assert not unknown, f"{tid}/ops.yaml names op types that are not in the ONNX schema: {unknown}"


@pytest.mark.parametrize("tid", TOOLCHAIN_IDS)
def test_op_tables_attrs_exist_on_the_op(tid):
    table = get_op_table(tid)
    for op, rule in table.ops.items():
        # An attribute of any opset version counts: ReduceMean's `axes` became an input in opset 18,
        # but the opset-11 models Horizon's toolchain takes still carry it as an attribute.
        known = {a for s in _HISTORY.get(op, []) for a in s.attributes}
        for attr in rule.attrs:
            assert attr in known, f"{tid}: {op} has no attribute {attr!r} in any opset"
        for c in rule.checks:
            assert c in NAMED_CHECKS


_HISTORY: dict[str, list] = {}
for _s in onnx.defs.get_all_schemas_with_history():
    if _s.domain in ("", "ai.onnx"):
        _HISTORY.setdefault(_s.name, []).append(_s)

ACCEL = ("edgetpu", "vitis-ai", "nnie", "horizon")
COMMON = ("Conv", "Relu", "Add", "Concat", "MaxPool", "Softmax", "Resize", "Reshape")


@pytest.mark.parametrize("tid", ACCEL)
def test_accelerator_tables_cover_common_vision_ops(tid):
    table = get_op_table(tid)
    assert table.default_supported is False
    missing = [op for op in COMMON if op not in table.ops]
    assert not missing, f"{tid} op table does not say anything about {missing}"
    for rule in table.ops.values():
        assert rule.source or table.source


def test_every_spec_has_tools_with_hints():
    for t in list_toolchains():
        assert t.tools
        for tool in t.tools:
            assert tool.install_hint.strip()


def test_bad_op_table_names_field(tmp_path):
    d = tmp_path / "ncnn"
    d.mkdir()
    p = d / "ops.yaml"
    p.write_text(yaml.safe_dump({
        "toolchain": "ncnn", "target": "x", "default_supported": False, "source": "somewhere",
        "ops": {"Conv": {"supported": True, "checks": ["no_such_check"]}, "Gelu": {"supported": False}},
    }))
    with pytest.raises(ProfileError) as ei:
        load_op_table(p)
    msg = str(ei.value)
    assert "ops.Conv.checks" in msg and "ops.Gelu" in msg and str(p) in msg


def test_bad_spec_unknown_id(tmp_path):
    src = yaml.safe_load((toolchains_dir() / "onnxruntime" / "toolchain.yaml").read_text())
    src["id"] = "tensorrt"
    d = tmp_path / "tensorrt"
    d.mkdir()
    (d / "toolchain.yaml").write_text(yaml.safe_dump(src))
    with pytest.raises(ProfileError, match="field id"):
        load_spec(d / "toolchain.yaml")


def test_unknown_toolchain_suggests():
    with pytest.raises(UnknownToolchainError) as ei:
        get_toolchain("vitis")
    assert "vitis-ai" in ei.value.suggestions


def test_no_tool_probe_runs_mnn_console_scripts():
    # MNN's console-script wrappers pip-install into whatever pip is on PATH and send telemetry;
    # doctor must only ever import the converter core in the toolchain venv.
    for t in list_toolchains():
        for tool in t.tools:
            assert tool.command not in {"mnnconvert", "mnnquant", "mnn", "MNNConvert"}, (t.id, tool.name)

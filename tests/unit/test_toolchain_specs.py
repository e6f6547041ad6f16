"""Toolchain specs and op tables: all parse, and name only real ONNX op types."""

from __future__ import annotations


import onnx.defs
import pytest
import yaml

from edgesdk.errors import ProfileError, UnknownToolchainError
from edgesdk.toolchains.spec import (
    NAMED_CHECKS,
    get_op_table,
    get_toolchain,
    list_toolchains,
    load_op_table,
    load_spec,
    toolchain_ids,
    toolchains_dir,
)

TOOLCHAIN_IDS = toolchain_ids()


def test_every_toolchain_has_spec_and_op_table():
    ids = {p.parent.name for p in toolchains_dir().glob("*/toolchain.yaml")}
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


def test_a_new_toolchain_is_a_new_folder_and_its_record_is_checked(tmp_path):
    src = yaml.safe_load((toolchains_dir() / "onnxruntime" / "toolchain.yaml").read_text())
    src["id"] = "tensorrt"
    d = tmp_path / "tensorrt"
    d.mkdir()
    (d / "toolchain.yaml").write_text(yaml.safe_dump(src))
    assert load_spec(d / "toolchain.yaml").id == "tensorrt"  # no list of ids to extend
    src["adapter"] = "tensorrt_adapter"
    (d / "toolchain.yaml").write_text(yaml.safe_dump(src))
    with pytest.raises(ProfileError, match="field adapter"):
        load_spec(d / "toolchain.yaml")
    src["adapter"], src["id"] = "edgesdk.toolchains.adapters.onnxruntime:OnnxRuntimeAdapter", "other"
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


@pytest.mark.parametrize("tid", TOOLCHAIN_IDS)
def test_one_record_per_toolchain_drives_its_adapter_and_engine(tid):
    """The toolchain record is the one place: its adapter class has its id, and the board-side engine module
    (which cannot read the record) names the same import modules and install hint."""
    import importlib

    from edgesdk.runtime import engines

    spec = get_toolchain(tid)
    mod, cls = spec.adapter.split(":")
    adapter = getattr(importlib.import_module(mod), cls)
    assert adapter.id == tid
    assert spec.engine in engines.REGISTRY, f"no edgesdk/runtime/engines/{spec.engine}.py"
    eng = engines.engine_class(spec.engine)
    assert eng.name == spec.engine
    assert tuple(eng.modules) == tuple(spec.runtime.python_modules), (tid, eng.modules)
    assert eng.install_hint == spec.runtime.install_hint
    if spec.kind == "accelerator":
        from edgesdk.simulate import ENGINE_SCHEME
        from edgesdk.toolchains.adapters import accelerator_adapter_class

        assert accelerator_adapter_class(spec.engine) is adapter
        assert spec.simulation_scheme is not None and spec.engine in ENGINE_SCHEME
        from edgesdk.toolchains.spec import cpu_engines

        # the CPU version's engine (what runs the segment where the accelerator is absent) is a CPU engine
        assert spec.fallback_engine in cpu_engines() and adapter().cpu_engine() == spec.fallback_engine
    else:
        from edgesdk.toolchains.adapters import CPU_ENGINES, adapter_class

        assert tid == spec.engine and tid in CPU_ENGINES and adapter_class(tid) is adapter


def test_toolchain_status_lists_every_record_with_its_kind():
    """`edgesdk toolchain status --json`: the CPU converters and the vendor compilers, one row per record."""
    import json

    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.toolchains.spec import list_toolchains

    r = CliRunner().invoke(app, ["toolchain", "status", "--json"])
    assert r.exit_code == 0, r.stdout
    rows = {x["toolchain"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {s.id for s in list_toolchains()}
    for s in list_toolchains():
        assert rows[s.id]["kind"] == s.kind and (rows[s.id]["ok"] or rows[s.id]["fix"])

"""Board profile schema: every shipped profile loads; bad profiles fail naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgesdk.boards import board_ids, boards_dir, get_board, list_boards, load_profile
from edgesdk.errors import ProfileError, UnknownBoardError
from edgesdk.toolchains.spec import list_toolchains

EXPECTED = {"rpi4", "rpi5", "coral-usb", "kv260", "hi3519a", "x3"}


def test_every_shipped_profile_loads():
    ids = set(board_ids())
    assert EXPECTED <= ids, f"missing profiles: {EXPECTED - ids}"
    for b in list_boards():
        assert b.engines, b.id
        assert b.peaks.cpu_fp32_gflops.source


def test_shipped_profiles_name_known_toolchains_and_have_their_folders():
    shipped = {t.id for t in list_toolchains()}
    for b in list_boards():
        assert set(b.toolchains) <= shipped, (b.id, set(b.toolchains) - shipped)
        if b.accelerator:
            assert b.accelerator.op_table in shipped


def test_every_vendor_number_has_a_source():
    for b in list_boards():
        for fig in (b.peaks.cpu_fp32_gflops, b.peaks.cpu_int8_gops, b.memory.bandwidth_gbs):
            assert len(fig.source) >= 3
        if b.accelerator:
            assert b.accelerator.tops.source and b.accelerator.partition_rule_source
        for r in b.reference_latencies:
            assert r.source and r.latency_ms > 0


def test_profiles_match_the_issue():
    assert get_board("rpi4").emulation.qemu_cpu == "cortex-a72"
    assert get_board("rpi5").emulation.qemu_cpu == "cortex-a76"
    assert get_board("kv260").emulation.qemu_cpu == "cortex-a53"
    assert get_board("x3").emulation.qemu_cpu == "cortex-a53"
    assert get_board("hi3519a").emulation.debian_arch == "armhf"
    coral = get_board("coral-usb")
    assert coral.accelerator and coral.accelerator.partition_rule == "first-unsupported-to-cpu"
    assert {u.vid_pid for u in coral.detect.usb_ids} >= {"1a6e:089a", "18d1:9302"}
    for bid in ("kv260", "hi3519a", "x3"):
        acc = get_board(bid).accelerator
        assert acc and acc.partition_rule == "any-segments"
    for bid in ("rpi4", "rpi5"):
        assert get_board(bid).accelerator is None


def _good() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[2] / "boards" / "rpi4.yaml").read_text())


def _write(tmp_path: Path, data: dict, name: str = "rpi4") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_template_is_valid(tmp_path):
    assert load_profile(_write(tmp_path, _good())).id == "rpi4"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d.pop("soc"), "soc"),
        (lambda d: d["cpu"].pop("cores"), "cpu.cores"),
        (lambda d: d["cpu"].__setitem__("cores", "four"), "cpu.cores"),
        (lambda d: d["cpu"].__setitem__("clock_mhz", [1]), "cpu.clock_mhz"),
        (lambda d: d.__setitem__("engines", ["ncnn", "tensorrt"]), "engines.1"),
        (lambda d: d.__setitem__("toolchains", ["ncnn", "openvino"]), "toolchains.1"),
        (lambda d: d["peaks"]["cpu_fp32_gflops"].pop("source"), "peaks.cpu_fp32_gflops.source"),
        (lambda d: d.__setitem__("surprise", 1), "surprise"),
        (lambda d: d["cpu"].__setitem__("features", ["neon", "avx512"]), "cpu.features"),
        (lambda d: d["reference_latencies"][0].pop("source"), "reference_latencies.0.source"),
        (lambda d: d["os"].__setitem__("libc", "glibc"), "os.libc"),
    ],
)
def test_bad_profiles_name_file_and_field(tmp_path, mutate, field):
    data = _good()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError) as ei:
        load_profile(path)
    msg = str(ei.value)
    assert str(path) in msg
    assert f"field {field}" in msg, msg


def test_accelerator_engine_must_be_listed(tmp_path):
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "boards" / "coral-usb.yaml").read_text())
    data["engines"] = ["tflite", "onnxruntime"]
    with pytest.raises(ProfileError, match="accelerator.engine"):
        load_profile(_write(tmp_path, data, "coral-usb"))


def test_id_must_match_file_name(tmp_path):
    with pytest.raises(ProfileError, match="must match the file name"):
        load_profile(_write(tmp_path, _good(), "rpi9"))


def test_not_yaml_and_not_mapping(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: [unclosed")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(p)


def test_unknown_board_suggests():
    with pytest.raises(UnknownBoardError) as ei:
        get_board("rpi")
    assert "rpi4" in ei.value.suggestions
    assert ei.value.exit_code == 2
    with pytest.raises(UnknownBoardError) as ei:
        get_board("coral")
    assert "coral-usb" in ei.value.suggestions


def test_boards_name_only_engines_and_toolchains_that_have_records():
    from edgesdk.runtime.manifest import engine_ids as runtime_engines
    from edgesdk.toolchains.spec import engine_ids, toolchain_ids

    assert set(engine_ids()) <= set(runtime_engines())
    for b in list_boards():
        assert set(b.engines) <= set(engine_ids()) and set(b.toolchains) <= set(toolchain_ids()), b.id


def test_a_board_naming_an_unknown_engine_is_refused_with_the_field(tmp_path):
    import yaml as _yaml

    raw = _yaml.safe_load((boards_dir() / "rpi4.yaml").read_text())
    raw["engines"] = ["ncnn", "tensorrt"]
    p = tmp_path / "rpi4.yaml"
    p.write_text(_yaml.safe_dump(raw))
    with pytest.raises(ProfileError) as ei:
        load_profile(p)
    assert "tensorrt" in str(ei.value) and "engines" in str(ei.value)


def test_docs_boards_md_is_generated_from_the_profiles():
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, str(repo / "scripts" / "gen_boards_doc.py"), "--check"],
                         capture_output=True, text=True, cwd=repo)
    assert res.returncode == 0, res.stderr

"""Units of issue 8's flash wiring: accelerator presence from the probe, the engines to provision, the board agent
recording `--fallback cpu` and `run` honouring it, tuning.json beside the manifest, and `--input-shape` in the
converted bundle's cache key. The end-to-end run is tests/integration/test_flash_npu_fallback.py."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import runtime_bundles as rbundles

from edgesdk.boards import get_board
from edgesdk.deploy import agent
from edgesdk.deploy.flash import board_engines, check_bundle, resolve_bundle
from edgesdk.deploy.probe import accelerator_present, compare
from edgesdk.errors import BundleError, InputError
from edgesdk.runtime.manifest import load_manifest

TOKEN = "t" * 16


def run_agent(base: Path, *argv: str, stdin: dict | None = None, monkeypatch=None, capsys=None) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(stdin or {}).encode())))
    rc = agent.main(["--base", str(base), *argv])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _coral_facts(**kw) -> dict:
    facts = {"machine": "aarch64", "python": "3.11.2", "libc": "glibc 2.36", "free_bytes": 1 << 30,
             "device_tree_model": "Raspberry Pi 4 Model B Rev 1.4", "usb_ids": ["1d6b:0002"], "dev_nodes": {},
             "tools": {"libedgetpu.so.1": None}, "emulated": None}
    facts.update(kw)
    return facts


def test_accelerator_presence_from_the_probe():
    coral = get_board("coral-usb")
    assert not accelerator_present(coral, _coral_facts())
    # a Coral shows one of its two USB ids (before / after its firmware is loaded)
    assert accelerator_present(coral, _coral_facts(usb_ids=["1d6b:0002", "18d1:9302"]))
    assert accelerator_present(coral, _coral_facts(usb_ids=["1a6e:089a"]))
    # an emulated board never has it, whatever it reports
    assert not accelerator_present(coral, _coral_facts(usb_ids=["18d1:9302"], emulated={"emulated": True}))
    assert not accelerator_present(get_board("rpi4"), _coral_facts(usb_ids=["18d1:9302"]))
    # a real board without it: a probe problem by default, a warning when flash judges it against the bundle
    problems, _ = compare(coral, _coral_facts())
    assert any("accelerator" in p for p in problems)
    problems, warnings = compare(coral, _coral_facts(), accelerator_required=False)
    assert problems == [] and any("18d1:9302" in w for w in warnings)
    problems, _ = compare(coral, _coral_facts(usb_ids=["18d1:9302"], tools={"libedgetpu.so.1": "/usr/lib/x"}))
    assert problems == []  # one of the alternative USB ids is enough


def test_board_engines_with_the_cpu_fallback(tmp_path):
    b = rbundles.make_bundle(tmp_path / "b", [("edgetpu", "head"), ("onnxruntime", "mid"), ("onnxruntime", "tail")],
                             cpu_versions={0: "onnxruntime"}, accelerator=[0])
    m = load_manifest(b)
    assert board_engines(m) == {"edgetpu", "onnxruntime"}
    assert board_engines(m, "cpu", accelerator=False) == {"onnxruntime"}
    assert board_engines(m, "cpu", accelerator=True) == {"edgetpu", "onnxruntime"}


def test_check_bundle_accepts_tuning_json(tmp_path):
    from edgesdk.bundle import add_tuning

    b = rbundles.make_bundle(tmp_path / "b", [("onnxruntime", "all")])
    m, files = check_bundle(b)
    assert "tuning.json" not in files
    tuning = {"schema": "edgesdk.tuning/1", "bundle_id": m.bundle_id, "engines": [{"name": "onnxruntime",
                                                                                   "options": {"threads": 2}}]}
    (b / "tuning.json").write_text(json.dumps(tuning))
    with pytest.raises(BundleError, match="not listed in manifest.json's files"):  # outside the id: refused
        check_bundle(b)
    (b / "tuning.json").unlink()
    m2 = add_tuning(b, json.dumps(tuning))
    m3, files = check_bundle(b)
    assert "tuning.json" in files and "tuning.json" in m3.files and m3.bundle_id == m2.bundle_id != m.bundle_id
    b = rbundles.make_bundle(tmp_path / "other", [("onnxruntime", "all")])
    add_tuning(b, json.dumps(dict(tuning, bundle_id="bother")))
    with pytest.raises(BundleError, match="made for bundle bother"):
        check_bundle(b)
    b = rbundles.make_bundle(tmp_path / "c", [("onnxruntime", "all")])
    add_tuning(b, "{not json")
    with pytest.raises(BundleError):
        check_bundle(b)
    b = rbundles.make_bundle(tmp_path / "d", [("onnxruntime", "all")])
    (b / "stray.txt").write_text("x")
    with pytest.raises(BundleError, match="not listed"):
        check_bundle(b)


def test_agent_installs_a_bundle_with_tuning_json(tmp_path, monkeypatch, capsys):
    from edgesdk.bundle import add_tuning

    src = rbundles.make_bundle(tmp_path / "src", [("onnxruntime", "all")])
    m = add_tuning(src, json.dumps({"schema": "edgesdk.tuning/1", "engines": []}))  # listed in the manifest
    base = tmp_path / "board"
    assert run_agent(base, "lock", "acquire", TOKEN, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    shutil.copytree(src, base / "staging" / m.bundle_id)
    rc, r = run_agent(base, "install", m.bundle_id, TOKEN, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["installed"], r
    assert (base / "releases" / m.bundle_id / "tuning.json").is_file()


def test_agent_records_the_fallback_and_run_honours_it(tmp_path, monkeypatch, capsys):
    base = tmp_path / "board"
    seen: list[str] = []

    def fake_run_bundle(b, mode, bundle, python, timeout, extra, fallback="error", **kw):
        seen.append(fallback)
        used = [{"segment": "s0", "engine": "onnxruntime", "planned": "edgetpu", "fallback": fallback == "cpu",
                 "reason": "edgetpu unavailable"}]
        res = {"ok": True, "checks": {"y": {"ok": True}}, "engines_used": used, "latency_ms": 1.0, "outputs": {}}
        return res, "log", None, 0.1

    monkeypatch.setattr(agent, "run_bundle", fake_run_bundle)
    assert run_agent(base, "lock", "acquire", TOKEN, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    (base / "releases" / "bone").mkdir(parents=True)
    (base / "releases" / "bone" / "manifest.json").write_text('{"outputs": []}')  # `run` bounds outputs by it
    # --allow-root: this python may be one nobody cannot run (the drop to nobody: tests/unit/test_probe_findings.py)
    rc, r = run_agent(base, "activate", "bone", TOKEN, f"--python={sys.executable}", "--fallback=cpu", "--allow-root",
                      monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["fallback"] == "cpu" and seen[-1] == "cpu"
    st = agent.Board(str(base)).state()
    assert st["fallback"] == {"bone": "cpu"} and st["history"][-1]["fallback"] == "cpu"
    (base / "tmp" / "w1").mkdir(parents=True)
    rc, r = run_agent(base, "run", "current", f"--python={sys.executable}", "--workdir=w1", "--allow-root",
                      monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["fallback"] == "cpu" and seen[-1] == "cpu"  # as recorded at the flash
    # a release flashed without it runs without it
    (base / "releases" / "btwo").mkdir(parents=True)
    (base / "releases" / "btwo" / "manifest.json").write_text('{"outputs": []}')
    rc, r = run_agent(base, "activate", "btwo", TOKEN, f"--python={sys.executable}", "--allow-root",
                      monkeypatch=monkeypatch,
                      capsys=capsys)
    assert rc == 0 and seen[-1] == "error" and "btwo" not in agent.Board(str(base)).state()["fallback"]
    rc, r = run_agent(base, "run", "btwo", f"--python={sys.executable}", "--workdir=w1", "--allow-root",
                      monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["fallback"] == "error"


def test_resolve_bundle_passes_input_shapes_and_keys_the_cache_by_them(tmp_path, monkeypatch):
    import edgesdk.conversion

    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))
    calls = []

    def fake_convert(model, board, out=None, force=False, input_shapes=None, **kw):
        calls.append(input_shapes)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text("{}")

    monkeypatch.setattr(edgesdk.conversion, "convert", fake_convert)
    model = tmp_path / "det.onnx"
    model.write_bytes(b"not really onnx")
    plain, _ = resolve_bundle(model, "rpi4")
    shaped, _ = resolve_bundle(model, "rpi4", input_shapes={"images": (1, 3, 640, 640)})
    other, _ = resolve_bundle(model, "rpi4", input_shapes={"images": (1, 3, 320, 320)})
    again, _ = resolve_bundle(model, "rpi4", input_shapes={"images": [1, 3, 640, 640]})
    assert len({plain, shaped, other}) == 3 and again == shaped
    assert calls == [None, {"images": (1, 3, 640, 640)}, {"images": (1, 3, 320, 320)}]  # the 4th was cached
    with pytest.raises(InputError, match="--input-shape"):
        resolve_bundle(shaped, "rpi4", input_shapes={"images": (1, 3, 640, 640)})


def test_cli_flash_and_profile_take_input_shape_and_fallback(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import edgesdk.deploy.flash as fl
    from edgesdk.cli import app

    got = {}

    def fake_flash(model, board, target, opts, event):
        got.update(fallback=opts.fallback, shapes=opts.input_shapes)
        return fl.FlashResult(host="h", board=board, status="refused", error="stop here", exit_code=2)

    monkeypatch.setattr(fl, "flash", fake_flash)
    r = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(tmp_path), "--fallback", "cpu",
                                 "--input-shape", "x=1,3,32,32", "--json"])
    assert r.exit_code == 2 and got == {"fallback": "cpu", "shapes": {"x": (1, 3, 32, 32)}}
    r = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(tmp_path), "--fallback", "gpu"])
    assert r.exit_code == 2 and "expected cpu" in " ".join((r.stdout + r.stderr).split())
    r = CliRunner().invoke(app, ["profile", "--help"])
    assert "--input-shape" in r.stdout

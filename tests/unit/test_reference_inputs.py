"""The bundle's reference input is real when the user gives real inputs (issue 16, item 2).

`--sample DIR` first, else the first calibration sample; random noise only when nothing is given, and then the
report says so. The manifest records where the reference came from, so verify and the smoke test judge on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edgesdk.cli import app
from edgesdk.runtime.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "tests" / "data" / "digits_cnn.onnx"


def _photos(tmp: Path) -> Path:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "photos.py"), "--out", str(tmp)], check=True,
                   capture_output=True)
    return tmp


def _convert(out: Path, *args: str) -> dict:
    r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rpi4", "--engine", "onnxruntime", "-o", str(out),
                                 "--mean", "0.5", "--std", "0.5", "--resize", "stretch", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_sample_dir_is_the_reference_and_the_manifest_says_so(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    res = _convert(tmp_path / "b", "--sample", str(photos / "eval"))
    assert res["reference"] == {"kind": "sample", "dir": str(photos / "eval"), "file": "astronaut.png"}
    assert not [w for w in res["warnings"] if "random" in w]
    mf = load_manifest(tmp_path / "b")
    assert mf.reference_source["kind"] == "sample" and mf.reference_source["file"] == "astronaut.png"
    x = np.load(tmp_path / "b" / mf.reference_inputs[mf.inputs[0].name])
    # the astronaut photo through the declared preprocessing: (p / 255 - 0.5) / 0.5, not uniform noise
    assert x.shape == (1, 3, 32, 32) and -1.001 <= x.min() < x.max() <= 1.001
    from edgesdk.calib import read_image
    from edgesdk.runtime.preprocess import Preprocessor

    pre = Preprocessor(mf.preprocess)
    want = pre.normalize(pre.letterbox(read_image(photos / "eval" / "astronaut.png"))[0])
    np.testing.assert_allclose(x, want, atol=1e-6)
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output


def test_calibration_sample_is_the_reference_without_sample(tmp_path: Path) -> None:
    photos = _photos(tmp_path / "photos")
    res = _convert(tmp_path / "b", "--precision", "int8", "--calib", str(photos / "calib"))
    assert res["reference"]["kind"] == "calibration" and res["reference"]["file"] == "brick.png"


def test_random_reference_is_said(tmp_path: Path) -> None:
    res = _convert(tmp_path / "b")
    assert res["reference"] == {"kind": "random"}
    assert any("random noise" in w and "--sample" in w for w in res["warnings"])
    assert load_manifest(tmp_path / "b").reference_source == {"kind": "random"}


def test_bad_sample_dir_is_exit_2_naming_the_flag(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for d in (tmp_path / "empty", tmp_path / "absent"):
        r = CliRunner().invoke(app, ["convert", str(MODEL), "--board", "rpi4", "-o", str(tmp_path / "b"),
                                     "--sample", str(d)])
        assert r.exit_code == 2 and "sample dir" in r.output, r.output
        assert not (tmp_path / "b").exists()


def test_verify_sensitivity_ranks_layers_by_their_own_int8_error(tmp_path: Path) -> None:
    """verify --sensitivity: each layer alone quantized, most harmful first (issue 16, item 4)."""
    photos = _photos(tmp_path / "photos")
    _convert(tmp_path / "b", "--precision", "int8", "--calib", str(photos / "calib"), "--sample", str(photos / "eval"))
    r = CliRunner().invoke(app, ["verify", str(tmp_path / "b"), "--data", str(photos / "eval"), "--no-layers",
                                 "--sensitivity", "--json"])
    assert r.exit_code in (0, 1), r.output
    sens = json.loads(r.stdout)["sensitivity"]
    cos = [x["alone_cosine"] for x in sens["layers"]]
    assert len(cos) >= 3 and cos == sorted(cos) and cos[0] < cos[-1] <= 1.0
    assert all(x["op_type"] and x["node"] for x in sens["layers"])


def test_bundles_made_before_reference_source_keep_their_content_id(tmp_path: Path) -> None:
    """A manifest without the field (every bundle made before it, signed ones on boards too) must hash as before:
    the field is left out of manifest.json when not recorded, never written as {}."""
    import dataclasses

    _convert(tmp_path / "b")
    mf = load_manifest(tmp_path / "b")
    old = dataclasses.replace(mf, reference_source=None)
    d = old.to_dict()
    assert "reference_source" not in d
    d.pop("bundle_id")
    d["bundle_id"] = old.content_id()
    from edgesdk.runtime.manifest import Manifest

    assert Manifest.from_dict(d).content_id() == d["bundle_id"]

"""Session applies the release's tuning.json (`edgesdk tune`) when no engines= is given; without one, nothing changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import runtime_bundles as rb

from edgesdk.runtime import Session
from edgesdk.runtime.errors import BundleError, EngineUnavailable
from edgesdk.runtime.manifest import load_manifest
from edgesdk.runtime.profiling import TUNING_FILE, TUNING_SCHEMA


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rb.make_bundle(tmp_path_factory.mktemp("tune") / "b", [("onnxruntime", "all")])


@pytest.fixture()
def bundle(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "b"))


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options each onnxruntime segment was loaded with."""
    from edgesdk.runtime.engines.onnxruntime import OnnxRuntimeEngine

    seen: list[dict[str, Any]] = []
    real = OnnxRuntimeEngine.load

    def load(self, files, inputs, outputs, options):  # type: ignore[no-untyped-def]
        seen.append(dict(options))
        return real(self, files, inputs, outputs, options)

    monkeypatch.setattr(OnnxRuntimeEngine, "load", load)
    return seen


def _tune(bundle: Path, engines: list[dict[str, Any]], bundle_id: str | None = None) -> None:
    doc = {"schema": TUNING_SCHEMA, "bundle_id": bundle_id or load_manifest(bundle).bundle_id, "engines": engines,
           "threads": 3}
    (bundle / TUNING_FILE).write_text(json.dumps(doc), encoding="utf-8")


def test_without_tuning_nothing_changes(bundle: Path, loads: list[dict[str, Any]]) -> None:
    with Session(bundle) as s:
        assert s.tuning is None
        s.run({"x": rb.sample_input()})
    assert loads == [{"threads": 1}]  # the bundle's own options


def test_tuning_json_sets_the_engine_options(bundle: Path, loads: list[dict[str, Any]]) -> None:
    _tune(bundle, [{"name": "onnxruntime", "options": {"threads": 3}}])
    with Session(bundle) as s:
        assert s.tuning is not None and s.tuning["threads"] == 3
        y = s.run({"x": rb.sample_input()})["logits"]
    assert loads == [{"threads": 3}]
    np.testing.assert_allclose(y, rb.reference("all", rb.weights(), rb.sample_input()), atol=1e-5)


def test_tuning_json_restricts_the_engines(bundle: Path, loads: list[dict[str, Any]]) -> None:
    _tune(bundle, [{"name": "ncnn", "options": {"threads": 2}}])
    with pytest.raises(EngineUnavailable, match="not in engines="):
        Session(bundle)
    with Session(bundle, use_tuning=False) as s:  # opted out
        assert s.tuning is None
    with Session(bundle, engines=[("onnxruntime", {"threads": 2})]) as s:  # an explicit list wins
        assert s.tuning is None
    assert loads == [{"threads": 1}, {"threads": 2}]


def test_stale_or_bad_tuning(bundle: Path, loads: list[dict[str, Any]]) -> None:
    _tune(bundle, [{"name": "onnxruntime", "options": {"threads": 3}}], bundle_id="b0000000000000000")
    with Session(bundle) as s:  # made for another bundle: not applied
        assert s.tuning is None
    assert loads == [{"threads": 1}]
    (bundle / TUNING_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="tuning.json"):
        Session(bundle)

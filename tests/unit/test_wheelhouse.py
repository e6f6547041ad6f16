"""Provisioning without a network or a board: the wheelhouse is numpy + the engines + the board package's wheel
(written from the installed edgesdk.runtime), and the agent keeps the board's venv to exactly that set."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import edgesdk
from edgesdk.boards import get_board
from edgesdk.deploy import wheelhouse
from edgesdk.runtime import _build, agent


@pytest.fixture
def fake_pip(monkeypatch):
    calls: list[list[str]] = []

    def pip(args: list[str], what: str) -> None:
        calls.append(args)
        d = Path(args[args.index("-d") + 1])
        for req in args:
            if req.startswith(("numpy", "ncnn", "ml-dtypes", "ai-edge-litert")):
                name = req.split(">")[0].split("=")[0].replace("-", "_")
                (d / f"{name}-1.0-cp311-cp311-manylinux_2_28_aarch64.whl").write_bytes(name.encode())

    monkeypatch.setattr(wheelhouse, "_pip", pip)
    return calls


def test_wheelhouse_is_numpy_engines_and_the_board_package(fake_pip, tmp_path):
    wh = wheelhouse.build_wheelhouse(get_board("rpi5"), {"ncnn"}, cache=tmp_path)
    assert wh.board_wheel == f"edgesdk_runtime-{edgesdk.__version__}-py3-none-any.whl"
    assert sorted(wh.wheels) == sorted(["numpy-1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
                                        "ncnn-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", wh.board_wheel])
    assert wh.requirements == ("numpy>=1.24", "ncnn")
    assert len(fake_pip) == 1 and "--no-deps" in fake_pip[0]  # no edgesdk base dependencies any more
    board = wh.wheels[wh.board_wheel]
    assert board.sha256 == hashlib.sha256(_build.build_wheel(tmp_path / "again").read_bytes()).hexdigest()
    # cached: a second build downloads nothing and gives the same key
    again = wheelhouse.build_wheelhouse(get_board("rpi5"), {"ncnn"}, cache=tmp_path)
    assert again.key == wh.key and len(fake_pip) == 1


def test_engine_extras_are_in_the_set(fake_pip, tmp_path):
    wh = wheelhouse.build_wheelhouse(get_board("rpi5"), {"tflite"}, cache=tmp_path)
    assert "ml-dtypes" in wh.requirements


def test_board_package_of_another_version_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(edgesdk, "__version__", "9.9.9")
    with pytest.raises(edgesdk.EnvironmentProblem, match="edgesdk-runtime") as ei:
        wheelhouse.board_wheel(tmp_path)
    assert "-m pip install 'edgesdk-runtime==9.9.9'" in (ei.value.fix or str(ei.value))


def test_agent_names_the_strangers_in_a_venv(tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    for d in ("numpy-2.4.6", "ncnn-1.0.20261020", "edgesdk-0.1.0", "edgesdk_runtime-0.1.0", "pip-24.0",
              "Ml_Dtypes-0.5.4"):
        (site / f"{d}.dist-info").mkdir(parents=True)
    (tmp_path / "venv" / "lib64").symlink_to("lib")
    have = agent.venv_dists(str(tmp_path / "venv"))
    assert have == ["edgesdk", "edgesdk-runtime", "ml-dtypes", "ncnn", "numpy", "pip"]
    wanted = {agent.dist_name(w) for w in ("numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl",
                                           "ncnn-1.0-cp311-cp311-manylinux_2_28_aarch64.whl",
                                           "edgesdk_runtime-0.1.0-py3-none-any.whl")}
    assert sorted(set(have) - wanted - agent.VENV_OWN) == ["edgesdk", "ml-dtypes"]

"""The two distributions of this repository (docs/architecture.md, "Packaging").

- `edgesdk` (the host): ships boards/ and toolchains/ as package data, leaves edgesdk/runtime out, and pins
  `edgesdk-runtime` at its own version; `edgesdk boards` works from any directory.
- `edgesdk-runtime` (the board, board/): edgesdk/runtime only, numpy only, one py3-none-any wheel, in an
  implicit `edgesdk` namespace. The same bytes come from `pip wheel board/`, from the stdlib writer, from an
  sdist, and from an installed host outside any checkout (what provisioning sends to a board).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import tomllib

import edgesdk
import edgesdk.runtime
from edgesdk.runtime import _build

REPO = Path(__file__).resolve().parents[2]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _pip_wheel(out: Path, *projects: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
         *map(str, projects)], check=False, capture_output=True, text=True, timeout=300)
    if res.returncode != 0 and "hatchling" in res.stderr:
        pytest.skip("hatchling is not installed in this environment (the README's set-up installs it)")
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    _pip_wheel(out, REPO, REPO / "board")
    return {"host": next(out.glob("edgesdk-*.whl")), "board": next(out.glob("edgesdk_runtime-*.whl"))}


def _metadata(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(meta).decode().splitlines()


def test_wheel_contains_data(wheels):
    names = zipfile.ZipFile(wheels["host"]).namelist()
    for b in ("rpi4", "rpi5", "coral-usb", "kv260", "hi3519a", "x3"):
        assert f"edgesdk/_data/boards/{b}.yaml" in names
    for t in ("ncnn", "mnn", "tflite", "onnxruntime", "edgetpu", "vitis-ai", "nnie", "horizon"):
        assert f"edgesdk/_data/toolchains/{t}/toolchain.yaml" in names
        assert f"edgesdk/_data/toolchains/{t}/ops.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "edgesdk/graph/rewrites.yaml" in names
    assert "edgesdk/_data/cross/cmake/aarch64-linux-gnu.cmake" in names
    # the board package owns edgesdk/runtime: one owner per file; the compatibility module stays here
    assert not [n for n in names if n.startswith("edgesdk/runtime/")]
    assert "edgesdk/deploy/agent.py" in names and "edgesdk/__init__.py" in names
    reqs = [ln.split(":", 1)[1].strip() for ln in _metadata(wheels["host"]) if ln.startswith("Requires-Dist:")]
    assert f"edgesdk-runtime=={edgesdk.__version__}" in reqs
    host = {r.split(";")[0].split(">")[0].split("=")[0].lower() for r in reqs if "extra == 'host'" in r}
    assert {"ncnn", "mnn", "ai-edge-litert", "onnxruntime", "paramiko", "onnx"} <= host
    assert not [r for r in reqs if r.startswith("torch") and "extra == 'torch'" not in r]


def test_board_wheel_is_pure_numpy_only_and_namespaced(wheels):
    whl = wheels["board"]
    assert whl.name == f"edgesdk_runtime-{edgesdk.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(whl).namelist()
    info = f"edgesdk_runtime-{edgesdk.__version__}.dist-info/"
    assert {n for n in names if not n.startswith(info)} == {n for n, _ in _build.sources()}
    assert "edgesdk/__init__.py" not in names  # implicit namespace: the host's edgesdk adds the rest
    for must in ("session.py", "agent.py", "profiling.py", "pipeline.py", "preprocess.py", "postprocess.py",
                 "engines/ncnn.py", "__main__.py"):
        assert f"edgesdk/runtime/{must}" in names
    assert all(n.endswith(".py") or n.startswith(info) for n in names)
    meta = _metadata(whl)
    assert [ln for ln in meta if ln.startswith("Requires-Dist:")] == ["Requires-Dist: numpy>=1.24"]
    wheel_file = zipfile.ZipFile(whl).read(info + "WHEEL").decode()
    assert "Tag: py3-none-any" in wheel_file and "Root-Is-Purelib: true" in wheel_file


def test_board_wheel_same_bytes_from_pip_and_the_writer(wheels, tmp_path):
    again = _build.build_wheel(tmp_path)
    assert _sha(again) == _sha(wheels["board"])
    mtime = again.stat().st_mtime_ns
    _build.build_wheel(tmp_path)  # unchanged sources: the file is left alone
    assert again.stat().st_mtime_ns == mtime


def test_versions_and_metadata_agree():
    host = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    board = tomllib.loads((REPO / "board" / "pyproject.toml").read_text())["project"]
    v = host["version"]
    assert v == edgesdk.__version__ == edgesdk.runtime.__version__ == board["version"] == _build.version()
    assert f"edgesdk-runtime=={v}" in host["dependencies"]
    assert board["name"] == _build.NAME and board["requires-python"] == _build.REQUIRES_PYTHON
    assert tuple(board["dependencies"]) == _build.REQUIRES and board["description"] == _build.SUMMARY


def _run_outside(site: Path, code: str, tmp: Path) -> subprocess.CompletedProcess:
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(site), EDGESDK_HOME=str(tmp / "home"))
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)


def test_installed_wheels_work_outside_a_checkout(wheels, tmp_path):
    """Both wheels unpacked into a site dir: `edgesdk boards` works, and provisioning finds the board wheel
    (written from the installed files, checked against their RECORD) with the bytes of the clone's."""
    site = tmp_path / "site"
    for w in wheels.values():
        zipfile.ZipFile(w).extractall(site)
    code = (
        "import json, sys, edgesdk, edgesdk.runtime\n"
        "from edgesdk.deploy.wheelhouse import board_wheel\n"
        "from edgesdk.deploy.board import AGENT_PATH\n"
        "import importlib.util; board_cli = importlib.util.find_spec('edgesdk.runtime.__main__').origin\n"
        "w = board_wheel()\n"
        "print(json.dumps({'edgesdk': edgesdk.__file__, 'runtime': edgesdk.runtime.__file__, 'wheel': str(w.path),"
        " 'sha256': w.sha256, 'agent': str(AGENT_PATH), 'board_cli': board_cli}))\n"
        "from edgesdk.cli import main; sys.argv = ['edgesdk', 'boards', '--json']; main()\n"
    )
    res = _run_outside(site, code, tmp_path)
    assert res.returncode == 0, res.stderr
    first, _, rest = res.stdout.partition("\n")
    got = json.loads(first)
    for k in ("edgesdk", "runtime", "agent", "board_cli"):
        assert got[k].startswith(str(site)), (k, got[k])
    assert got["wheel"].startswith(str(tmp_path / "home" / "wheelhouse"))
    assert got["sha256"] == _sha(wheels["board"])
    assert '"rpi4"' in rest and '"x3"' in rest
    # an installed file changed after install: provisioning refuses to send it as edgesdk-runtime
    p = site / "edgesdk" / "runtime" / "results.py"
    p.write_text(p.read_text() + "\n# edited\n")
    res = _run_outside(site, "from edgesdk.deploy.wheelhouse import board_wheel; board_wheel()", tmp_path)
    assert res.returncode != 0 and "changed after install" in res.stderr


def test_sdists_build_the_same_wheels(wheels, tmp_path):
    """The host sdist carries board/ and the runtime sources; both wheels built from it match the clone's.
    The board's own sdist (its backend's build_sdist) does too."""
    pytest.importorskip("hatchling")
    out = tmp_path / "sdist"
    res = subprocess.run([sys.executable, "-c", f"from hatchling.build import build_sdist; print(build_sdist({str(out)!r}))"],
                         check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    sdist = out / res.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    top = next((tmp_path / "x").iterdir())
    assert (top / "board" / "pyproject.toml").is_file() and (top / "edgesdk" / "runtime" / "_build.py").is_file()
    built = tmp_path / "from-sdist"
    _pip_wheel(built, top, top / "board")
    assert _sha(next(built.glob("edgesdk_runtime-*.whl"))) == _sha(wheels["board"])
    host_names = sorted(zipfile.ZipFile(next(built.glob("edgesdk-*.whl"))).namelist())
    assert host_names == sorted(zipfile.ZipFile(wheels["host"]).namelist())
    # the board package's own sdist: self-contained (sources inside), same wheel
    bsd = _build.build_sdist(tmp_path / "bsd", REPO, REPO / "board")
    assert _sha(bsd) == _sha(_build.build_sdist(tmp_path / "bsd2", REPO, REPO / "board"))
    from_bsd = tmp_path / "from-board-sdist"
    _pip_wheel(from_bsd, bsd)
    assert _sha(next(from_bsd.glob("edgesdk_runtime-*.whl"))) == _sha(wheels["board"])


def test_public_api_all_is_complete():
    import types

    # Submodules become attributes once imported anywhere; the curated API is the rest.
    public = {
        n for n in dir(edgesdk)
        if not n.startswith("_") and n != "annotations" and not isinstance(getattr(edgesdk, n), types.ModuleType)
    }
    assert public <= set(edgesdk.__all__), public - set(edgesdk.__all__)
    for name in edgesdk.__all__:
        assert hasattr(edgesdk, name)

"""A user's first day, from PyPI's point of view (the README's third way in):

build both wheels from a copy of the repository, `pip install "edgesdk-<v>-py3-none-any.whl[host]"` into a fresh
venv in a temp dir (cwd there, no PYTHONPATH, no checkout on sys.path), then with that venv's `edgesdk`:
`toolchain install ncnn`, `flash --board rpi5 digits_cnn.onnx` to a fresh emulated rpi5 (its own edgesdk home,
so the board is provisioned from nothing), `run` on it, and the board's `pip list`: numpy, the bundle's
engines and the board package edgesdk-runtime, nothing else.

The heavy caches are shared with the user's edgesdk home by symlink (the debootstrapped rootfs, the
converters' venvs): everything else (bundles, wheelhouse, the board itself) starts empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesdk import emulator
from edgesdk.boards import get_board
from edgesdk.paths import home

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "tests" / "data" / "digits_cnn.onnx"
BOARD = "rpi5"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class Steps:
    """Runs commands like a user in a shell, and keeps a log of each (the test's output)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env, self.log = cwd, env, []

    def run(self, argv: list[str], timeout: float, label: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        t0 = time.monotonic()
        r = subprocess.run(argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        took = time.monotonic() - t0
        self.log.append(f"[{took:6.1f} s] rc={r.returncode} {label or ' '.join(map(str, argv))}")
        print(self.log[-1], flush=True)
        if ok:
            assert r.returncode == 0, f"{label or argv}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r


@pytest.fixture(scope="module")
def emulation_ok() -> None:
    chk = emulator.check_host(get_board(BOARD), need_debootstrap=True)
    if not chk.ok:
        reason = "emulated boards unavailable here: " + "; ".join(chk.problems)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_first_day_from_the_wheels(emulation_ok, tmp_path: Path) -> None:
    # -- the two wheels, built from a copy of the repository -------------------------------------------------
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "*.egg-info",
                                                             ".ruff_cache", "build", "dist"))
    dist = tmp_path / "dist"
    user = tmp_path / "user"  # the user's shell: a temp dir, nothing of edgesdk in it but the model
    user.mkdir()
    shutil.copy(MODEL, user / MODEL.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    # a fresh edgesdk home: bundles, wheelhouse and the emulated board start empty; the rootfs and the
    # converters' venvs are the user's caches (a cold machine builds them first: see DEVELOPERS.md)
    ehome = tmp_path / "edgesdk-home"
    ehome.mkdir()
    for cache in ("rootfs", "toolchains"):
        (home() / cache).mkdir(parents=True, exist_ok=True)
        (ehome / cache).symlink_to(home() / cache)
    env["EDGESDK_HOME"] = str(ehome)
    sh = Steps(user, env)
    sh.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
            "-q", "-w", str(dist), str(src), str(src / "board")], 600, "pip wheel --no-deps src src/board")
    host_whl = next(dist.glob("edgesdk-*-py3-none-any.whl"))
    board_whl = next(dist.glob("edgesdk_runtime-*-py3-none-any.whl"))
    sizes = {p.name: p.stat().st_size for p in (host_whl, board_whl)}
    print(f"wheels: {sizes}", flush=True)

    # -- a fresh venv, edgesdk[host] from the wheel (deps from the index, pinned like the dev venv) -------------
    venv = tmp_path / "venv"
    sh.run([sys.executable, "-m", "venv", str(venv)], 300, "python -m venv venv")
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "edgesdk")
    sh.run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(REPO / "constraints.txt"),
            f"{host_whl}[host]", str(board_whl)], 1800, f"pip install '{host_whl.name}[host]' {board_whl.name}")
    listed = {_norm(d["name"]): d["version"] for d in json.loads(
        sh.run([py, "-m", "pip", "list", "--format=json"], 120, "pip list (host venv)").stdout)}
    assert "torch" not in listed, "edgesdk[host] must never pull torch"
    assert {"edgesdk", "edgesdk-runtime", "ncnn", "mnn", "ai-edge-litert", "onnxruntime", "paramiko"} <= set(listed)
    code = "import edgesdk, edgesdk.runtime, json, sys; print(json.dumps([edgesdk.__file__, edgesdk.runtime.__file__, sys.path]))"
    where = json.loads(sh.run([py, "-c", code], 60, "python -c 'import edgesdk, edgesdk.runtime' (where from)").stdout)
    for p in where[:2]:
        assert p.startswith(str(venv)), p
    assert not [p for p in where[2] if p and Path(p).resolve() in (REPO, src)], where[2]

    # -- what a user runs ------------------------------------------------------------------------------------------
    r = sh.run([cli, "doctor", "--json"], 600, "edgesdk doctor --json", ok=False)
    doc = json.loads(r.stdout)
    broken = [c for c in doc["checks"] if c["status"] == "broken"]
    assert r.returncode == 0 and not broken, f"doctor exit {r.returncode}, broken: {broken}\n{r.stderr[-2000:]}"
    pk = {c["name"]: c for c in doc["checks"] if c["category"] == "package"}
    assert pk["edgesdk-runtime"]["status"] == "ok" and pk["edgesdk[host]"]["status"] == "ok", pk
    sh.run([cli, "toolchain", "install", "ncnn"], 3600, "edgesdk toolchain install ncnn")
    try:
        r = sh.run([cli, "flash", "--board", BOARD, MODEL.name, "--json"], 2400, f"edgesdk flash --board {BOARD} {MODEL.name}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"flash: status={res['status']} provisioned={res['provisioned']} phases={res.get('phases')} "
              f"wheel_bytes_sent={res['wheel_bytes_sent']} latency_ms={res['latency_ms']}", flush=True)
        assert res["status"] == "success" and res["emulated"] and res["smoke"]["ok"]
        assert res["provisioned"] == "installed"  # a fresh board: provisioned from nothing
        bundle = next((ehome / "bundles").glob(f"{BOARD}-digits_cnn-*"))
        ref = bundle / "reference" / "input_0.npy"
        out = tmp_path / "out"
        r = sh.run([cli, "run", "--board", BOARD, "--input", str(ref), "-o", str(out), "--json"], 600,
                   f"edgesdk run --board {BOARD} --input input_0.npy")
        outputs = json.loads(r.stdout)["outputs"]
        import numpy as np

        (name, o), = outputs.items()
        got, want = np.load(o["file"]), np.load(ref.parent / "output_0.npy")
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-3)
        print(f"run: output {name} {list(got.shape)} argmax {int(got.argmax())} (reference {int(want.argmax())})", flush=True)

        # -- the board: its venv holds numpy, the bundle's engines and the board package, nothing else ------------
        exe = [cli, "emulator", "exec", BOARD, "--"]
        board_list = json.loads(sh.run([*exe, "/opt/edgesdk/venv/bin/python", "-m", "pip", "list", "--format=json"], 300,
                                       "board: venv/bin/python -m pip list --format=json").stdout)
        names = {_norm(d["name"]): d["version"] for d in board_list}
        print(f"board pip list: {json.dumps(names, sort_keys=True)}", flush=True)
        manifest = json.loads((bundle / "manifest.json").read_text())
        engines = {s["engine"] for s in manifest["segments"]}
        from edgesdk.deploy.wheelhouse import engine_packages

        want_names = {"numpy", "edgesdk-runtime"} | {_norm(re.split(r"[<>=!~ ]", p)[0]) for p in engine_packages(engines)}
        assert set(names) - {"pip", "setuptools", "wheel"} == want_names, (names, engines)
        assert names["edgesdk-runtime"] == listed["edgesdk-runtime"]
        # the exact board wheel of this version: the host sent the bytes of the one built from the clone
        r = sh.run([*exe, "sha256sum", f"/opt/edgesdk/wheels/{board_whl.name}"], 120, "board: sha256sum the board wheel")
        assert r.stdout.split()[0] == _sha(board_whl)
        # the agent runs from the board package too
        r = sh.run([*exe, "/opt/edgesdk/venv/bin/python", "-m", "edgesdk.runtime.agent", "--base", "/opt/edgesdk", "state"],
                   120, "board: python -m edgesdk.runtime.agent state")
        assert json.loads(r.stdout.strip().splitlines()[-1])["current"] == res["bundle_id"]
    finally:
        sh.run([cli, "emulator", "stop", BOARD], 300, f"edgesdk emulator stop {BOARD}", ok=False)
        shutil.rmtree(ehome / "emulators", ignore_errors=True)  # the board's rootfs copy (~400 MB)
        shutil.rmtree(venv, ignore_errors=True)  # the host venv (~700 MB): pytest keeps its last temp dirs
    print("\n".join(["first day:", *sh.log]), flush=True)

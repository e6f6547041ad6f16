"""The board package (edgesdk-runtime's wheel) in a venv that has numpy alone: it imports, runs a bundle
(through a fake engine), loads nothing but the standard library, numpy and its own modules, and runs the agent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGESDK_TEST_VENVS", Path.home() / ".cache" / "edgesdk" / "test-venvs"))

SCRIPT = r'''
import sys, json, tempfile
from pathlib import Path
before = set(sys.modules)
import edgesdk.runtime
from edgesdk.runtime import Session, Preprocessor, nms
import numpy as np
from edgesdk.runtime import fakes
from edgesdk.runtime.manifest import (Manifest, Segment, TensorSpec, Preprocess, Postprocess, canonical_json,
                                      sha256_file, MANIFEST)

# a one-segment BPU bundle; hobot_dnn is the fake (no vendor runtime here either)
calls = fakes.Calls()
P = fakes.FakeProperties
model = fakes.FakeBpuModel(
    "m", [fakes.FakeDNNTensor("in", P("NV12_SEPARATE", "uint8", "NCHW", (1, 3, 32, 32)))],
    [fakes.FakeDNNTensor("out", P("F32", "float32", "NCHW", (1, 10)))],
    lambda d: [np.arange(10, dtype=np.float32)[None] * float(d.mean()) / 100], calls)
sys.modules.update(fakes.modules_hobot(model, calls))
root = Path(tempfile.mkdtemp())
(root / "m.bin").write_bytes(b"fake")
seg = Segment("s0", "bpu", {"model": "m.bin"}, (TensorSpec("img", (1, 3, 32, 32), "uint8"),),
              (TensorSpec("logits", (1, 10), "float32"),), accelerator=True)
m = Manifest(board="rdk-x3", precision="int8", inputs=seg.inputs, outputs=seg.outputs, segments=(seg,),
             files={"m.bin": sha256_file(root / "m.bin")}, source_model={"name": "t"},
             preprocess=Preprocess(input="img", size=(32, 32), scale=1.0, color="BGR", dtype="uint8"),
             postprocess=Postprocess(kind="classification", softmax=True, top_k=2))
d = m.to_dict(); d["bundle_id"] = m.content_id()
(root / MANIFEST).write_bytes(canonical_json(d))
img = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
with Session(root) as s:
    pred = s.predict(img)
    assert [c.class_id for c in pred.classifications] == [9, 8], pred
    assert s.engines_used[0].engine == "bpu"
    assert not s._pre.uses_opencv
assert nms(np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.float32), np.array([0.9, 0.8]), 0.5).tolist() == [0]

fake = {"hobot_dnn", "hobot_dnn.pyeasy_dnn"}
loaded = set(sys.modules) - before - fake
std = set(sys.stdlib_module_names)
third = sorted({n.split(".")[0] for n in loaded} - std - {"numpy", "edgesdk", "_distutils_hack"})
ours = sorted(n for n in loaded if n.startswith("edgesdk") and n != "edgesdk" and not n.startswith("edgesdk.runtime"))
print(json.dumps({"third_party": third, "other_edgesdk": ours}))
sys.exit(1 if third or ours else 0)
'''


def _numpy_only_venv() -> Path:
    tag = f"numpy-only-py{sys.version_info[0]}{sys.version_info[1]}"
    d = CACHE / tag
    py = d / "bin" / "python"
    if py.is_file() and subprocess.run(check=False, args=[str(py), "-c", "import numpy"], capture_output=True).returncode == 0:
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(tag + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(tmp)
    import numpy

    r = subprocess.run(check=False, args=[str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"numpy=={numpy.__version__}"], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot install numpy into a fresh venv here: {r.stderr[-300:]}")
    tmp.rename(d)
    return d


@pytest.mark.slow
def test_runtime_needs_numpy_only(tmp_path: Path) -> None:
    env_dir = _numpy_only_venv()
    py = env_dir / "bin" / "python"
    listing = subprocess.run(check=False, args=[str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert {ln.split("==")[0].lower() for ln in listing.stdout.split()} <= {"numpy", "pip", "setuptools"}
    # the board package's own wheel, unpacked: only edgesdk/runtime, as a namespace package (nothing else of
    # edgesdk is importable)
    import zipfile

    from edgesdk.runtime import _build

    zipfile.ZipFile(_build.build_wheel(tmp_path / "wheel")).extractall(tmp_path / "site")
    assert not (tmp_path / "site" / "edgesdk" / "__init__.py").exists()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path / "site"), "PYTHONNOUSERSITE": "1"}
    r = subprocess.run(check=False, args=[str(py), "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    cli = subprocess.run(check=False, args=[str(py), "-m", "edgesdk.runtime", "--help"], capture_output=True, text=True, env=env,
                         timeout=60, cwd=tmp_path)
    assert cli.returncode == 0 and "--bench" in cli.stdout
    # the deploy agent runs from the board package too
    agent = subprocess.run(check=False, args=[str(py), "-m", "edgesdk.runtime.agent", "--base", str(tmp_path / "b"), "state"],
                           capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert agent.returncode == 0 and '"releases": []' in agent.stdout, agent.stdout + agent.stderr

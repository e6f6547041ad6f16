"""edgesdk.frontends.to_onnx: every accepted model input -> one ONNX file (ONNX as is, TorchScript and nn.Module
through torch.onnx.export with inputs built from the shapes, .tflite through tf2onnx in the tflite toolchain venv),
its refusals (pickles, unknown files, missing shapes, missing venv) and the .tflite cache.

The real .tflite test converts a small TFLite model written with the flatbuffer schema (tests/runtime_bundles.py)
and compares onnxruntime with the TFLite interpreter; it skips when the tflite toolchain venv (or tf2onnx in it) is
absent, and fails instead under CI=true. MediaPipe's face detector is in tests/integration/test_frontends_real.py.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk import frontends
from edgesdk.errors import EnvironmentProblem, InputError, ModelError
from edgesdk.frontends import OnnxSource, to_onnx

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load:DeprecationWarning")]
REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "tests" / "data" / "digits_cnn.onnx"
CI = os.environ.get("CI") == "true"


def _ort(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def _input_names(path: Path) -> list[str]:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(path))
    init = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in init]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- ONNX, unknown files, pickles ----------------------------------------------------------------------------

def test_onnx_is_used_as_it_is(tmp_path: Path) -> None:
    src = to_onnx(DIGITS, tmp_path)
    assert src == OnnxSource(DIGITS, "onnx", DIGITS, ())
    assert not any(tmp_path.iterdir())  # nothing copied or written
    assert to_onnx(str(DIGITS), tmp_path).path == DIGITS


def test_module_imports_without_torch_and_onnx(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['onnx'] = None\n"  # any import of them raises ImportError
        "from pathlib import Path\n"
        "from edgesdk.errors import EnvironmentProblem\n"
        "import edgesdk.frontends as f\n"
        f"print(f.to_onnx({str(DIGITS)!r}, Path({str(tmp_path)!r})).kind)\n"
        f"p = Path({str(tmp_path)!r}) / 'm.pt'\n"
        "import zipfile\n"
        "with zipfile.ZipFile(p, 'w') as z: z.writestr('m/code/__torch__.py', '')\n"
        "try:\n"
        "    f.to_onnx(p, p.parent, {'x': (1, 3, 8, 8)}, trust_model=True)\n"
        "except EnvironmentProblem as e:\n"
        "    print('needs torch' if 'needs torch' in str(e) else e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["onnx", "needs", "torch"]


@pytest.mark.parametrize("name", ["model.h5", "model.caffemodel", "model"])
def test_unknown_suffix_lists_what_is_accepted(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="unsupported file type") as ei:
        to_onnx(p, tmp_path)
    for accepted in (".onnx", "TorchScript", ".pt", ".tflite", "torch.nn.Module"):
        assert accepted in str(ei.value)


def test_missing_file_and_wrong_object(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        to_onnx(tmp_path / "nope.onnx", tmp_path)
    with pytest.raises(InputError, match="expected a path or a torch.nn.Module, got dict"):
        to_onnx({"w": 1}, tmp_path)


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["ckpt.pt", "ckpt.pth", "ckpt.pkl", "ckpt.ckpt"])
def test_a_pickle_is_refused_and_never_unpickled(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "unpickled"
    p = tmp_path / name
    p.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(ModelError, match="never unpickles checkpoints") as ei:
        to_onnx(p, tmp_path, {"x": (1, 3, 8, 8)})
    assert "torch.jit.script/trace" in str(ei.value)
    assert not marker.exists()


def test_a_torch_save_checkpoint_is_refused_before_torch_reads_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "unpickled"
    p = tmp_path / "full.pth"
    torch.save({"state": torch.nn.Linear(2, 2).state_dict(), "evil": _Evil(marker)}, p)  # a zip, no code/
    with pytest.raises(ModelError, match="torch.save checkpoint.*never unpickles"):
        to_onnx(p, tmp_path, {"x": (1, 2)})
    assert not marker.exists()


# -- TorchScript and nn.Module ---------------------------------------------------------------------------------

def _two_input_net(torch):
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 5)

        def forward(self, image, scale):
            y = torch.relu(self.conv(image)).mean(dim=(2, 3))
            return self.fc(y) * scale

    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture
def torchscript(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    net = _two_input_net(torch)
    p = tmp_path / "net.pt"
    torch.jit.trace(net, (torch.rand(1, 3, 8, 8), torch.rand(1, 1))).save(str(p))
    return p


def test_torchscript_from_shapes_only_matches_torch(torchscript: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    # keys in another order than forward's: put in forward's order, ONNX inputs named after them
    src = to_onnx(torchscript, tmp_path / "w", input_shapes={"scale": [1, 1], "image": (1, 3, 16, 16)},
                  trust_model=True)
    assert src.kind == "torchscript" and src.original == torchscript
    assert src.path == tmp_path / "w" / "net.onnx" and src.path.is_file()
    assert _input_names(src.path) == ["image", "scale"]
    assert any("built from the input shapes" in n and "image [1, 3, 16, 16]" in n for n in src.notes)
    assert any("torch.onnx.export" in n for n in src.notes)
    rng = np.random.default_rng(1)
    x, s = rng.random((1, 3, 16, 16), dtype=np.float32), rng.random((1, 1), dtype=np.float32)
    with torch.no_grad():
        ref = torch.jit.load(str(torchscript))(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    got = _ort(src.path, {"image": x, "scale": s})[0]
    assert got.shape == (1, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_torchscript_keys_that_do_not_name_the_arguments_are_positional(torchscript: Path, tmp_path: Path) -> None:
    src = to_onnx(torchscript, tmp_path, input_shapes={"x": (1, 3, 8, 8), "k": (1, 1)}, trust_model=True)
    assert _input_names(src.path) == ["x", "k"]
    assert any("x -> image, k -> scale" in n for n in src.notes)


def test_torchscript_without_shapes_says_how(torchscript: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError) as ei:
        to_onnx(torchscript, tmp_path, trust_model=True)
    msg = str(ei.value)
    assert "--input-shape NAME=1,3,H,W" in msg and "image, scale" in msg and str(torchscript) in msg


def test_torchscript_with_the_wrong_number_of_shapes(torchscript: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"forward\(image, scale\) takes 2 input"):
        to_onnx(torchscript, tmp_path, input_shapes={"image": (1, 3, 8, 8)}, trust_model=True)


@pytest.mark.parametrize("shape", [(1, 0, 8), (1, -1), ("a", 2)])
def test_bad_shapes(torchscript: Path, tmp_path: Path, shape) -> None:
    with pytest.raises(InputError, match="input shape of 'image'"):
        to_onnx(torchscript, tmp_path, input_shapes={"image": shape, "scale": (1, 1)}, trust_model=True)


def test_nn_module_with_example_inputs_and_with_shapes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    net = _two_input_net(torch)
    x, s = torch.rand(1, 3, 8, 8), torch.rand(1, 1)
    src = to_onnx(net, tmp_path / "a", example_inputs=(x, s))
    assert src.kind == "pytorch" and src.original is None and src.path == tmp_path / "a" / "model.onnx"
    assert _input_names(src.path) == ["image", "scale"]  # forward's argument names
    with torch.no_grad():
        ref = net(x, s).numpy()
    np.testing.assert_allclose(_ort(src.path, {"image": x.numpy(), "scale": s.numpy()})[0], ref, rtol=1e-5, atol=1e-5)

    src2 = to_onnx(net, tmp_path / "b", input_shapes={"image": (2, 3, 8, 8), "scale": (2, 1)})
    assert _input_names(src2.path) == ["image", "scale"]
    assert _ort(src2.path, {"image": np.zeros((2, 3, 8, 8), np.float32), "scale": np.ones((2, 1), np.float32)})[0].shape == (2, 5)

    seq = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    assert _input_names(to_onnx(seq, tmp_path / "c", example_inputs=torch.zeros(1, 3, 2, 2)).path) == ["input"]
    with pytest.raises(InputError, match="shape"):
        to_onnx(net, tmp_path / "d", input_shapes={"image": (1, 3, 4, 4), "scale": (1, 1)}, example_inputs=(x, s))
    with pytest.raises(InputError, match="--input-shape NAME=1,3,H,W"):
        to_onnx(net, tmp_path / "e")


def test_export_failure_is_a_model_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # no ONNX export

    with pytest.raises(ModelError, match="torch.onnx.export .* failed"):
        to_onnx(Bad(), tmp_path, input_shapes={"x": (1, 3, 3)})


# -- .tflite: refusals and the cache, with a fake converter ------------------------------------------------------

def _tflite_bytes() -> bytes:
    return b"\x1c\x00\x00\x00TFL3" + b"\0" * 64  # a flatbuffer header with the TFLite identifier


@pytest.fixture
def fake_tf2onnx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """tf2onnx "installed" (version 1.17.0), a private cache, and a runner that records commands."""
    monkeypatch.setattr(frontends, "tflite_frontend", lambda: (Path(sys.executable), "1.17.0"))
    monkeypatch.setattr(frontends, "cache_dir", lambda: tmp_path / "cache")
    calls: list = []

    def runner_for(log: str = "INFO - done", rc: int = 0, write: Path | None = DIGITS):
        def run(cmd):
            calls.append(cmd)
            if write is not None:
                shutil.copyfile(write, cmd.argv[cmd.argv.index("--output") + 1])
            return rc, log
        return run

    return calls, runner_for


def test_tflite_without_the_toolchain_venv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import edgesdk.paths

    venv = tmp_path / "venv"
    monkeypatch.setattr(edgesdk.paths, "toolchain_venv", lambda tid: venv)
    p = tmp_path / "m.tflite"
    p.write_bytes(_tflite_bytes())
    with pytest.raises(EnvironmentProblem, match="tflite toolchain venv") as ei:
        to_onnx(p, tmp_path)
    assert ei.value.fix == "edgesdk toolchain install tflite"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "lib" / "python3.11" / "site-packages" / "numpy-1.26.4.dist-info").mkdir(parents=True)
    with pytest.raises(EnvironmentProblem, match="needs tf2onnx") as ei:
        to_onnx(p, tmp_path)
    assert ei.value.fix == "edgesdk toolchain install tflite"


def test_not_a_tflite_file(tmp_path: Path) -> None:
    p = tmp_path / "m.tflite"
    p.write_bytes(b"PK\3\4 not a flatbuffer")
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        to_onnx(p, tmp_path)


def test_tflite_converter_failure_names_file_tool_and_output(fake_tf2onnx, tmp_path: Path) -> None:
    _, runner_for = fake_tf2onnx
    p = tmp_path / "m.tflite"
    p.write_bytes(_tflite_bytes())
    log = "\n".join(f"line {i}" for i in range(40)) + "\nValueError: unknown builtin op 999"
    with pytest.raises(ModelError) as ei:
        to_onnx(p, tmp_path / "w", runner=runner_for(log, rc=1, write=None))
    msg = str(ei.value)
    assert str(p) in msg and "tf2onnx 1.17.0" in msg and "exited with 1" in msg
    assert "ValueError: unknown builtin op 999" in msg and "line 39" in msg and "line 3\n" not in msg
    assert "-m tf2onnx.convert --tflite" in msg
    assert not list((tmp_path / "cache").glob("*.onnx"))  # a failure is not cached


def test_tflite_unconverted_ops_are_a_model_error(fake_tf2onnx, tmp_path: Path) -> None:
    _, runner_for = fake_tf2onnx
    p = tmp_path / "seg.tflite"
    p.write_bytes(_tflite_bytes())
    log = ("ERROR - Tensorflow op [segment: TFL_Convolution2DTransposeBias] is not supported\n"
           "ERROR - Unsupported ops: Counter({'HardSwish': 11, 'TFL_Convolution2DTransposeBias': 1})\n"
           "INFO - Successfully converted")
    with pytest.raises(ModelError) as ei:
        to_onnx(p, tmp_path / "w", runner=runner_for(log))
    msg = str(ei.value)
    assert "HardSwish x11, TFL_Convolution2DTransposeBias x1" in msg and "opset 13" in msg
    assert "HardSwish exists from opset 14" in msg


def test_tflite_cache_is_keyed_and_atomic(fake_tf2onnx, tmp_path: Path) -> None:
    calls, runner_for = fake_tf2onnx
    p = tmp_path / "m.tflite"
    p.write_bytes(_tflite_bytes())
    run = runner_for()
    a = to_onnx(p, tmp_path / "w1", runner=run)
    assert a.kind == "tflite" and a.original == p and a.path == tmp_path / "w1" / "m.onnx" and a.path.is_file()
    assert "converted m.tflite to ONNX with tf2onnx 1.17.0 (opset 13)" in a.notes[0]
    assert len(calls) == 1 and calls[0].argv[1:4] == ("-m", "tf2onnx.convert", "--tflite")
    b = to_onnx(p, tmp_path / "w2", runner=run)  # same file, version, opset: from the cache
    assert len(calls) == 1 and "cached" in b.notes[0] and b.path.read_bytes() == DIGITS.read_bytes()
    to_onnx(p, tmp_path / "w3", opset=17, runner=run)  # another opset: another key
    assert len(calls) == 2 and calls[1].argv[-1] == "17"
    p.write_bytes(_tflite_bytes() + b"\1")  # another file content: another key
    to_onnx(p, tmp_path / "w4", runner=run)
    assert len(calls) == 3
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*.onnx"))) == 3 and len(list(cache.glob("*.json"))) == 3
    assert not [q for q in cache.iterdir() if q.name.startswith(".")]  # no temporary left behind
    sha = frontends._sha256(p)
    assert (cache / f"{frontends.cache_key(sha, '1.17.0', 13)}.onnx").is_file()
    assert frontends.cache_key(sha, "1.17.0", 13) != frontends.cache_key(sha, "1.16.1", 13)


# -- .tflite: the real converter ----------------------------------------------------------------------------------

def need_tflite_frontend() -> tuple[Path, str]:
    try:
        return frontends.tflite_frontend()
    except EnvironmentProblem as exc:
        if CI:
            pytest.fail(f"CI=true and the .tflite frontend is missing: {exc}")
        pytest.skip(f"the tflite toolchain venv with tf2onnx is absent ({exc.fix})")


def test_real_tflite_matches_the_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_tflite_frontend()
    import runtime_bundles as rb

    if not rb.tflite_available():
        pytest.skip("ai-edge-litert (TFLite schema and interpreter) not installed")
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setattr(frontends, "cache_dir", lambda: tmp_path / "cache")
    p = rb.to_tflite_head(rb.weights(), tmp_path / "head.tflite")  # conv 3x3 + relu, NHWC input 'x', output 'a'
    src = to_onnx(p, tmp_path / "w")
    assert src.kind == "tflite" and src.original == p
    assert _input_names(src.path) == ["x"]  # the file's names and NHWC layout
    assert "[1, 16, 16, 3]" in src.notes[1]
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
    it = Interpreter(str(p))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    ref = it.get_tensor(it.get_output_details()[0]["index"])
    got = _ort(src.path, {"x": x})[0]
    assert got.shape == ref.shape == (1, 16, 16, 8)
    assert cosine(got, ref) >= 0.999
    assert np.abs(got - ref).max() <= 1e-4


def test_a_damaged_cache_entry_is_converted_again(fake_tf2onnx, tmp_path: Path) -> None:
    calls, runner_for = fake_tf2onnx
    p = tmp_path / "m.tflite"
    p.write_bytes(_tflite_bytes())
    run = runner_for()
    to_onnx(p, tmp_path / "w1", runner=run)
    (entry,) = (tmp_path / "cache").glob("*.onnx")
    entry.write_bytes(b"truncated")
    src = to_onnx(p, tmp_path / "w2", runner=run)
    assert len(calls) == 2 and "cached" not in src.notes[0]
    assert entry.read_bytes() == DIGITS.read_bytes()

"""A TorchScript archive is code: torch.jit.load runs its __setstate__, and TorchScript reads and writes files
(torch.from_file). The security probe's archive read /etc/shadow into the bundle's weights.

- without --trust-model every command refuses it (exit 2) and nothing of the archive runs;
- with --trust-model it runs in the confined child (edgesdk.confine): it cannot write outside its temporary
  folder (a marker in a world-writable folder is not created) and cannot read a secret, neither a 0600 file nor
  a world-readable one, so the secret's bytes are in no output;
- Landlock alone binds root (the uid drop is a second layer, not the only one);
- what the child hands back is read without following links.

Also: impossible tensor sizes (an Expand to 120 GB) are a clean model error before any engine allocates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesdk.errors import ModelError

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]
REPO = Path(__file__).resolve().parents[2]
SECRET = b"s3cr3t-" + uuid.uuid4().hex[:9].encode()  # 16 bytes


def _cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "edgesdk", *args], check=False, capture_output=True, text=True, cwd=cwd,
                       timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _evil_archive(torch, path: Path, secret: Path | None, marker: Path | None) -> Path:
    """A scripted module whose __setstate__ reads `secret` into a buffer forward() uses (so the bytes would land
    in the exported weights) and creates `marker`."""
    read, write = str(secret or ""), str(marker or "")

    class Evil(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(16))
            self.secret = read
            self.marker = write
            self.leak = torch.zeros(16, dtype=torch.uint8)

        def forward(self, x):
            return x * self.w + self.leak.float()

        @torch.jit.export
        def __getstate__(self):
            return (self.w, self.secret, self.marker, self.leak, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, str, str, torch.Tensor, bool]) -> None:
            self.w = state[0]
            self.secret = state[1]
            self.marker = state[2]
            self.leak = state[3]
            self.training = state[4]
            if self.marker != "":
                m = torch.from_file(self.marker, True, 16, dtype=torch.uint8)  # shared=True creates the file
                m.fill_(65)
                self.leak = self.leak + m * 0
            if self.secret != "":
                self.leak = torch.from_file(self.secret, False, 16, dtype=torch.uint8)

    torch.jit.script(Evil()).save(str(path))
    return path


@pytest.fixture
def world(tmp_path: Path):
    """A world-writable folder (as /tmp is) holding a world-readable secret: only Landlock keeps the child out."""
    d = Path("/tmp") / f"edgesdk-untrusted-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o1777)
    (d / "public-secret").write_bytes(SECRET)
    os.chmod(d / "public-secret", 0o644)
    yield d
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    p = tmp_path / "secret"
    p.write_bytes(SECRET)
    os.chmod(p, 0o600)
    return p


def _leaked(root: Path) -> list[str]:
    """Files under root holding the secret, raw or as the float32 the buffer becomes."""
    as_float = np.frombuffer(SECRET, dtype=np.uint8).astype(np.float32).tobytes()
    hits = []
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink() and f.name not in ("secret", "public-secret"):
            b = f.read_bytes()
            if SECRET in b or as_float in b:
                hits.append(str(f))
    return hits


def test_refused_without_trust_model_and_nothing_ran(tmp_path: Path, secret: Path, world: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = world / "marker"
    evil = _evil_archive(torch, tmp_path / "evil.pt", secret, marker)
    for cmd in (["convert", "evil.pt", "--board", "rpi4", "--input-shape", "x=1,16", "-o", "b", "--engine",
                 "onnxruntime"],
                ["inspect", "evil.pt", "--board", "rpi4", "--input-shape", "x=1,16"],
                ["partition", "evil.pt", "--board", "rpi4", "--input-shape", "x=1,16", "-o", "p"],
                ["flash", "evil.pt", "--board", "rpi4", "--host", "root@127.0.0.1:9", "--input-shape", "x=1,16"]):
        r = _cli(*cmd, cwd=tmp_path)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        msg = " ".join(r.stderr.split())
        assert "TorchScript archive is code" in msg and "--trust-model" in msg, msg
        assert not marker.exists()
    assert not (tmp_path / "b").exists() and not (tmp_path / "p").exists()
    from edgesdk.conversion import convert
    from edgesdk.graph.extract import partition_model
    from edgesdk.graph.report import inspect_model

    with pytest.raises(ModelError, match="trust_model=True"):
        inspect_model(evil, "rpi4", {"x": (1, 16)})
    with pytest.raises(ModelError, match="trust_model=True"):
        partition_model(evil, "rpi4", tmp_path / "p2", input_shapes={"x": (1, 16)})
    with pytest.raises(ModelError, match="trust_model=True"):
        convert(evil, "rpi4", tmp_path / "b2", engine="onnxruntime", input_shapes={"x": (1, 16)})
    assert not marker.exists() and not (tmp_path / "p2").exists() and not (tmp_path / "b2").exists()
    assert not _leaked(tmp_path)


@pytest.mark.parametrize("which", ["0600 secret", "world-readable secret", "marker only"])
def test_trusted_archive_runs_confined(tmp_path: Path, secret: Path, world: Path, which: str) -> None:
    torch = pytest.importorskip("torch")
    marker = world / "marker"
    outside = tmp_path / "marker-in-my-dir"
    src = {"0600 secret": secret, "world-readable secret": world / "public-secret", "marker only": None}[which]
    _evil_archive(torch, tmp_path / "evil.pt", src, None if src is not None else marker)
    r = _cli("convert", "evil.pt", "--trust-model", "--board", "rpi4", "--input-shape", "x=1,16", "-o", "b",
             "--engine", "onnxruntime", cwd=tmp_path)
    msg = " ".join(r.stderr.split())
    # the archive's code failed to open the file (Permission denied): a clean model error, nothing written
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "torch.jit.load failed in the confined process" in msg and "Permission denied" in msg, msg
    assert not marker.exists() and not outside.exists()
    assert not (tmp_path / "b").exists() and not _leaked(tmp_path)
    # the same archive, loaded unconfined, does what it says (the test's archive is not a dud)
    if src is not None:
        loaded = torch.jit.load(str(tmp_path / "evil.pt"))
        assert bytes(loaded.leak.numpy()) == SECRET


def test_a_benign_archive_still_converts_and_says_it_was_confined(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    _evil_archive(torch, tmp_path / "ok.pt", None, None)
    from edgesdk.frontends import to_onnx

    src = to_onnx(tmp_path / "ok.pt", tmp_path / "w", {"x": (1, 16)}, trust_model=True)
    assert src.kind == "torchscript" and src.path == tmp_path / "w" / "ok.onnx"
    onnx.checker.check_model(onnx.load(str(src.path)))
    note = next(n for n in src.notes if n.startswith("--trust-model"))
    assert "Landlock" in note and ("nobody" in note if os.getuid() == 0 else True), note


_LANDLOCK_ALONE = """
import json, os, sys
from edgesdk.confine import confine
td, secret, outside = sys.argv[1:4]
applied = confine(td, drop_root=False)
res = {"uid": os.getuid(), "applied": applied}
for what, fn in (("read_secret", lambda: open(secret, "rb").read()),
                 ("write_outside", lambda: open(outside, "wb").write(b"x")),
                 ("write_inside", lambda: open(os.path.join(td, "ok"), "wb").write(b"x")),
                 ("read_lib", lambda: open(os.__file__, "rb").read(10))):
    try:
        fn()
        res[what] = "ok"
    except OSError as exc:
        res[what] = exc.strerror
print(json.dumps(res))
"""


def test_landlock_alone_binds_root(tmp_path: Path, secret: Path, world: Path) -> None:
    from edgesdk.confine import landlock_abi

    if landlock_abi() < 1:
        pytest.fail("this kernel has no Landlock: the confined TorchScript export cannot run here")
    td = tmp_path / "box"
    td.mkdir()
    r = subprocess.run([sys.executable, "-c", _LANDLOCK_ALONE, str(td), str(secret), str(world / "marker")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["uid"] == os.getuid()  # not dropped: Landlock alone
    assert res["read_secret"] == "Permission denied" and res["write_outside"] == "Permission denied", res
    assert res["write_inside"] == "ok" and res["read_lib"] == "ok", res
    assert not (world / "marker").exists() and (td / "ok").is_file()


def test_what_the_child_hands_back_is_never_read_through_a_link(tmp_path: Path, secret: Path) -> None:
    from edgesdk.frontends import _read_child_file

    (tmp_path / "model.onnx").symlink_to(secret)
    with pytest.raises(ModelError, match="does not read"):
        _read_child_file(tmp_path / "model.onnx", 1 << 20)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ModelError, match="non-regular"):
        _read_child_file(tmp_path / "fifo", 1 << 20)
    (tmp_path / "big").write_bytes(b"x" * 100)
    with pytest.raises(ModelError, match="more than the 10"):
        _read_child_file(tmp_path / "big", 10)
    assert _read_child_file(tmp_path / "absent", 10) is None


# -- impossible tensor sizes ------------------------------------------------------------------------------------

DIGITS = REPO / "tests" / "data" / "digits_cnn.onnx"


def _expand_model(path: Path, target: list[int] | None) -> Path:
    """x -> Expand(x, shape) named big_expand; `target` None: the shape is a model input (only known at run)."""
    inits, inputs = [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])]
    if target is None:
        inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [4]))
    else:
        inits.append(numpy_helper.from_array(np.array(target, dtype=np.int64), "shape"))
    g = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["y"], name="big_expand")], "g", inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch):
    """Any onnxruntime session created in this process fails the test: the check is before any engine."""
    ort = pytest.importorskip("onnxruntime")

    def refuse(*a, **k):
        raise AssertionError("an onnxruntime session was created")

    monkeypatch.setattr(ort, "InferenceSession", refuse)


def test_an_expand_to_120_gb_is_a_model_error_before_any_engine(tmp_path: Path, no_engine) -> None:
    from edgesdk.conversion import convert
    from edgesdk.graph.load import load_model
    from edgesdk.graph.report import inspect_model

    p = _expand_model(tmp_path / "expand.onnx", [1, 30000, 1000, 1000])
    for call in (lambda: load_model(p), lambda: inspect_model(p, "rpi4"),
                 lambda: convert(p, "rpi4", tmp_path / "b", engine="onnxruntime")):
        with pytest.raises(ModelError) as ei:
            call()
        msg = str(ei.value)
        assert "node 'big_expand' (Expand)" in msg and "[1, 30000, 1000, 1000] float32 = 112 GiB" in msg, msg
        assert "EDGESDK_MAX_TENSOR_BYTES" in msg
    assert not (tmp_path / "b").exists()


def _dynamic_digits(tmp_path: Path) -> Path:
    m = onnx.load(str(DIGITS))
    for i, d in enumerate(m.graph.input[0].type.tensor_type.shape.dim):
        if i != 1:
            d.Clear()
            d.dim_param = "nhw"[min(i, 2) if i < 2 else i - 1]
    onnx.save(m, str(tmp_path / "dyn.onnx"))
    return tmp_path / "dyn.onnx"


def test_the_cli_says_it_with_exit_2(tmp_path: Path) -> None:
    _expand_model(tmp_path / "expand.onnx", [1, 30000, 1000, 1000])
    _dynamic_digits(tmp_path)
    for cmd in (["inspect", "expand.onnx", "--board", "rpi4"],
                ["partition", "expand.onnx", "--board", "rpi4", "-o", "p"],
                ["convert", "expand.onnx", "--board", "rpi4", "--engine", "onnxruntime", "-o", "b"],
                ["inspect", "dyn.onnx", "--board", "rpi4", "--input-shape", "image=1,3,100000,100000"]):
        r = _cli(*cmd, cwd=tmp_path, timeout=120)
        assert r.returncode == 2 and "more than the per-tensor limit" in r.stderr, (cmd, r.stderr)
        assert "onnxruntime" not in r.stderr.lower() and "bfc_arena" not in r.stderr
    assert "input 'image' would be [1, 3, 100000, 100000] float32 = 112 GiB" in " ".join(r.stderr.split())


def test_the_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgesdk.errors import InputError
    from edgesdk.graph.load import load_model

    assert load_model(DIGITS).inputs == ("image",)
    monkeypatch.setenv("EDGESDK_MAX_TENSOR_BYTES", "8K")  # a conv weight is 18 KiB
    with pytest.raises(ModelError, match=r"\(shape \[32, 16, 3, 3\]\) would take 18 KiB, more than the per-tensor "
                                         r"limit of 8 KiB"):
        load_model(DIGITS)
    monkeypatch.setenv("EDGESDK_MAX_TENSOR_BYTES", "100K")  # every tensor of batch 1 fits (72 KiB at most)
    assert load_model(DIGITS).inputs == ("image",)
    with pytest.raises(ModelError, match=r"input 'image' would be \[16, 3, 32, 32\] float32 = 192 KiB"):
        load_model(_dynamic_digits(tmp_path), {"image": (16, 3, 32, 32)})
    monkeypatch.setenv("EDGESDK_MAX_TENSOR_BYTES", "lots")
    with pytest.raises(InputError, match="EDGESDK_MAX_TENSOR_BYTES='lots'"):
        load_model(DIGITS)


@pytest.mark.parametrize("lie", ["more dims than data", "huge dims, no data", "negative dim", "ragged bytes"])
def test_an_initializer_whose_shape_lies(tmp_path: Path, lie: str, no_engine) -> None:
    from edgesdk.graph.load import load_model

    m = onnx.load(str(DIGITS))
    w = m.graph.initializer[0]
    if lie == "more dims than data":
        w.dims[0] *= 4
    elif lie == "huge dims, no data":
        del w.dims[:]
        w.dims.extend([1 << 20, 1 << 20, 1 << 10])
        w.ClearField("raw_data")
    elif lie == "negative dim":
        w.dims[0] = -w.dims[0]
    else:
        w.raw_data = w.raw_data[:-1]
    p = tmp_path / "lie.onnx"
    onnx.save(m, str(p))
    want = {"more dims than data": "declares .* but holds", "huge dims, no data": "per-tensor limit",
            "negative dim": "negative dimension", "ragged bytes": "not a whole number"}[lie]
    with pytest.raises(ModelError, match=want) as ei:
        load_model(p)
    assert repr(w.name) in str(ei.value)


def test_an_allocation_failure_at_run_time_is_described(tmp_path: Path) -> None:
    """A size only the input's values decide cannot be checked at load: onnxruntime's allocation failure is then
    an EngineFailure that names the node and the size, not its C++ source location."""
    pytest.importorskip("onnxruntime")
    from edgesdk.errors import EngineFailure
    from edgesdk.runtime.engines.onnxruntime import OnnxRuntimeEngine
    from edgesdk.runtime.manifest import TensorSpec

    p = _expand_model(tmp_path / "dyn.onnx", None)
    e = OnnxRuntimeEngine()
    e.load({"model": p}, (TensorSpec("x", (1, 1, 1, 1), "float32"), TensorSpec("shape", (4,), "int64")),
           (TensorSpec("y", (1, 1, 1, 1), "float32"),), {})
    with pytest.raises(EngineFailure) as ei:
        e.run({"x": np.ones((1, 1, 1, 1), np.float32), "shape": np.array([1, 30000, 1000, 1000], np.int64)})
    msg = str(ei.value)
    assert "out of memory: node 'big_expand' (Expand) asked for 120000000000 bytes (112 GiB)" in msg, msg
    assert "bfc_arena" not in msg

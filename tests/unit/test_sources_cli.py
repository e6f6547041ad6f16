"""Every command takes every input convert takes, from the CLI, as a user types it: TorchScript with
--input-shape, an ONNX whose metadata names its input size, --no-prepare; and preparation is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "edgesdk", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=600)
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.fixture
def torchscript(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, image):
            return torch.relu(self.bn(self.conv(image)))

    torch.manual_seed(0)
    p = tmp_path / "net.pt"
    torch.jit.trace(Net().eval(), (torch.rand(1, 3, 16, 16),)).save(str(p))
    return p


def test_torchscript_through_inspect_partition_convert(torchscript: Path, tmp_path: Path) -> None:
    r = _cli("inspect", torchscript.name, "--trust-model", "--board", "rpi4", "--input-shape", "image=1,3,16,16", "--json",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["model"] == "net" and doc["inputs"][0]["shape"] == [1, 3, 16, 16]
    r = _cli("partition", torchscript.name, "--trust-model", "--board", "coral-usb", "--input-shape", "image=1,3,16,16", "-o", "p",
             "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p" / "plan.json").is_file()
    r = _cli("convert", torchscript.name, "--trust-model", "--board", "rpi4", "--input-shape", "image=1,3,16,16", "-o", "b",
             "--engine", "onnxruntime", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["source_model"]["kind"] == "torchscript" and man["source_model"]["path"] == "reference/model.onnx"
    assert (tmp_path / "b" / "reference" / "model.onnx").is_file()
    r = _cli("verify", "b", "--json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"]
    r = _cli("convert", torchscript.name, "--trust-model", "--board", "rpi4", "-o", "c", cwd=tmp_path)  # no shapes: says how
    assert r.returncode == 2 and "--input-shape" in r.stderr


def _metadata_model(path: Path) -> Path:
    """A dynamic-size image model whose metadata names its input size, as ultralytics writes it (imgsz), with a
    shape subgraph (Shape -> Gather -> Concat -> Reshape) that only folds once the size is fixed."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    idx = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), "idx")
    minus1 = numpy_helper.from_array(np.array([-1], dtype=np.int64), "m1")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["sh"]),
             helper.make_node("Gather", ["sh", "idx"], ["nc"]),
             helper.make_node("Concat", ["nc", "m1"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["c", "tgt"], ["y"])]
    g = helper.make_graph(nodes, "meta", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, idx, minus1])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    m.metadata_props.add(key="imgsz", value="[32, 48]")
    onnx.save(m, path)
    return path


def test_input_size_from_metadata_and_preparation_report(tmp_path: Path) -> None:
    model = _metadata_model(tmp_path / "meta.onnx")
    r = _cli("inspect", model.name, "--board", "kv260", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["inputs"][0]["shape"] == [1, 3, 32, 48]
    assert any("from the model's metadata (imgsz=[32, 48])" in n for n in doc["notes"])
    prep = doc["prepare"]
    assert prep["applied"] and prep["nodes_before"] == 5 and prep["nodes_after"] < 5
    assert "Shape" in prep["changed_ops"] and prep["max_abs"] == 0.0
    r = _cli("inspect", model.name, "--board", "kv260", "--json", "--no-prepare", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not json.loads(r.stdout)["prepare"]["applied"]
    r = _cli("inspect", model.name, "--all-boards", "--json", cwd=tmp_path)
    assert r.returncode == 0 and all(row["prepare"]["applied"] for row in json.loads(r.stdout))
    r = _cli("convert", model.name, "--board", "rpi4", "-o", "b", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["prepare"]["applied"] and res["prepare"]["input_source"] == "the bundle's reference input"
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["source_model"]["prepare"]["cosine"] == pytest.approx(1.0)
    assert man["inputs"][0]["shape"] == [1, 3, 32, 48] and man["outputs"][0]["shape"] == [1, 8, 1536]


def test_nn_module_through_the_api(tmp_path: Path) -> None:
    """inspect, partition and convert take an nn.Module from Python (example inputs or input shapes)."""
    torch = pytest.importorskip("torch")
    from edgesdk.graph.extract import partition_model
    from edgesdk.graph.report import compare_boards, inspect_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(8), torch.nn.Conv2d(8, 4, 1)).eval()
    rep = inspect_model(net, "coral-usb", example_inputs=(torch.rand(1, 3, 24, 24),))
    assert rep.inputs[0]["shape"] == [1, 3, 24, 24] and rep.nodes >= 3
    rows = compare_boards(net, {"input": (1, 3, 24, 24)})
    assert {r.board_id for r in rows} >= {"rpi4", "kv260", "x3"}
    res = partition_model(net, "kv260", tmp_path / "p", input_shapes={"input": (1, 3, 24, 24)})
    assert (res.out_dir / "plan.json").is_file() and res.prepare is not None

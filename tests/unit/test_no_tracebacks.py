"""No Python traceback ever reaches the user; `--json` stdout is JSON and nothing else.

The real CLI (``python -m edgesdk``, a fresh process each time) runs inspect, partition, convert and verify on
malformed variants of tests/data/digits_cnn.onnx. Each run must end with exit 0 (a variant that is a valid model)
or 1/2, without ``Traceback`` on stderr, and its stdout must be empty or one JSON document. An MNN bundle's
``verify --json`` must parse although MNN prints banners on fd 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

DATA = Path(__file__).resolve().parent.parent / "data"
MODEL = DATA / "digits_cnn.onnx"
FAIL, OK, ANY = (1, 2), (0,), (0, 1, 2)


# -- the variants ----------------------------------------------------------------------------------------

def _proto() -> onnx.ModelProto:
    return onnx.load(str(MODEL))


def v_truncated(d: Path) -> Path:
    b = MODEL.read_bytes()
    p = d / "truncated.onnx"
    p.write_bytes(b[: len(b) // 2])
    return p


def v_zero(d: Path) -> Path:
    p = d / "zero.onnx"
    p.write_bytes(b"")
    return p


def v_random(d: Path) -> Path:
    p = d / "random.onnx"
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def v_unknown_op(d: Path) -> Path:
    m = _proto()
    next(n for n in m.graph.node if n.op_type == "Relu").op_type = "FancyRelu"
    return _save(m, d / "unknown_op.onnx", check=False)


def v_dynamic_input(d: Path) -> Path:
    m = _proto()
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, name in ((0, "N"), (2, "H"), (3, "W")):
        dims[i].ClearField("dim_value")
        dims[i].dim_param = name
    return _save(m, d / "dynamic_input.onnx")


def v_value_info_no_shape(d: Path) -> Path:
    """PaddlePaddle-style: every intermediate tensor has a value_info with its type and no shape (a valid model)."""
    m = _proto()
    outs = {o.name for o in m.graph.output}
    m.graph.value_info.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                              for n in m.graph.node for o in n.output if o not in outs)
    return _save(m, d / "value_info_no_shape.onnx")


def v_dangling_input(d: Path) -> Path:
    m = _proto()
    n = next(n for n in m.graph.node if n.op_type == "MaxPool")
    n.input[0] = "no_such_tensor"
    return _save(m, d / "dangling_input.onnx", check=False)


def v_gather_out_of_range(d: Path) -> Path:
    """Flatten -> Gather(axis=1, constant indices with 1000 among them, on a dim of 64) -> Gemm: valid to the checker
    and to shape inference, fails in onnxruntime."""
    m = _proto()
    g = m.graph
    k = next(i for i, n in enumerate(g.node) if n.op_type == "Gemm")
    gemm = g.node[k]
    idx = np.arange(64, dtype=np.int64)
    idx[5] = 1000
    g.initializer.append(numpy_helper.from_array(idx, "oob_idx"))
    g.node.insert(k, helper.make_node("Gather", [gemm.input[0], "oob_idx"], ["gathered"], axis=1, name="oob_gather"))
    gemm.input[0] = "gathered"
    return _save(m, d / "gather_oob.onnx")


def _save(m: onnx.ModelProto, p: Path, check: bool = True) -> Path:
    if check:
        onnx.checker.check_model(m)
    onnx.save_model(m, str(p))
    return p


@dataclass(frozen=True)
class Case:
    variant: str
    command: str
    expect: tuple[int, ...]
    json: bool = True


#: variant -> (builder, expected exit codes for inspect, partition, convert, verify)
VARIANTS = {
    "truncated": (v_truncated, FAIL, FAIL, FAIL, FAIL),
    "zero_bytes": (v_zero, FAIL, FAIL, FAIL, FAIL),
    "random_bytes": (v_random, FAIL, FAIL, FAIL, FAIL),
    "unknown_op": (v_unknown_op, FAIL, FAIL, FAIL, FAIL),
    "dynamic_input_no_shape": (v_dynamic_input, FAIL, FAIL, FAIL, ANY),  # verify fixes it from the manifest
    "value_info_no_shape": (v_value_info_no_shape, OK, OK, OK, OK),
    "dangling_input": (v_dangling_input, FAIL, FAIL, FAIL, FAIL),
    "gather_out_of_range": (v_gather_out_of_range, ANY, FAIL, FAIL, FAIL),
    "wrong_input_shape_rank": (lambda d: MODEL, FAIL, FAIL, FAIL, None),  # verify has no --input-shape
}
COMMANDS = ("inspect", "partition", "convert", "verify")
#: Foreign errors that still reach handle_errors' catch-all (a clean "internal error", exit 1), to translate at
#: their source.
KNOWN_UNTRANSLATED = {
}
CASES = [Case(v, c, spec[1 + i]) for v, spec in VARIANTS.items() for i, c in enumerate(COMMANDS)
         if spec[1 + i] is not None]
CASES += [Case(v, c, spec[1 + i], json=False) for v, spec in VARIANTS.items() for i, c in enumerate(COMMANDS)
          if v in ("unknown_op", "gather_out_of_range", "truncated") and spec[1 + i] is not None]


def _argv(case: Case, model: Path, work: Path, bundle: Path) -> list[str]:
    out = work / f"{case.variant}_{case.command}_{int(case.json)}"
    shape = ["--input-shape", "image=1,3,32"] if case.variant == "wrong_input_shape_rank" else []
    if case.command == "inspect":
        args = ["inspect", str(model), "--board", "rpi4", *shape]
    elif case.command == "partition":
        args = ["partition", str(model), "--board", "kv260", "-o", str(out), *shape]
    elif case.command == "convert":
        args = ["convert", str(model), "--board", "rpi4", "-o", str(out), *shape]
    else:
        args = ["verify", str(bundle), "--model", str(model)]
    return [sys.executable, "-m", "edgesdk", *args, *(["--json"] if case.json else [])]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Case, subprocess.CompletedProcess]:
    pytest.importorskip("onnxruntime")
    from edgesdk.conversion import convert

    d = tmp_path_factory.mktemp("malformed")
    bundle = d / "bundle"
    convert(MODEL, "rpi4", bundle, engine="onnxruntime")
    models = {v: spec[0](d) for v, spec in VARIANTS.items()}
    env = {k: v for k, v in os.environ.items() if k != "EDGESDK_DEBUG"}

    def one(case: Case) -> subprocess.CompletedProcess:
        return subprocess.run(_argv(case, models[case.variant], d, bundle), check=False, capture_output=True, text=True,
                              timeout=600, env=env, cwd=d)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(CASES, pool.map(one, CASES)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}-{c.variant}{'-json' if c.json else ''}")
def test_clean_failure(runs, case: Case) -> None:
    r = runs[case]
    what = f"{' '.join(r.args[2:])}\nexit {r.returncode}\nstderr:\n{r.stderr[-3000:]}\nstdout:\n{r.stdout[-1500:]}"
    assert "Traceback" not in r.stderr, what
    if "internal error" in r.stderr and (case.variant, case.command) in KNOWN_UNTRANSLATED:
        pytest.xfail(KNOWN_UNTRANSLATED[case.variant, case.command])
    assert "internal error" not in r.stderr, what
    assert r.returncode in case.expect, what
    if r.returncode != 0:
        assert "error:" in r.stderr, what
    if case.json and (r.stdout.strip() or r.returncode == 0):
        json.loads(r.stdout)  # one JSON document, nothing before or after it


def test_messages_name_the_problem(runs) -> None:
    """The failures say what is wrong, in words a user can act on."""
    def err(variant: str, command: str) -> str:
        return runs[Case(variant, command, VARIANTS[variant][1 + COMMANDS.index(command)])].stderr

    assert "not an ONNX model" in err("truncated", "inspect") or "truncated" in err("truncated", "inspect")
    assert "empty file" in err("zero_bytes", "partition")
    assert "FancyRelu" in err("unknown_op", "convert")
    assert "--input-shape" in err("dynamic_input_no_shape", "inspect")
    assert "no_such_tensor" in err("dangling_input", "partition")
    part = err("gather_out_of_range", "partition")
    assert "onnxruntime" in part and "oob_gather" in part.replace("\n", " ") or "Gather" in part, part
    assert "image" in err("wrong_input_shape_rank", "inspect")


# -- handle_errors itself ---------------------------------------------------------------------------------

def _crashing_app():
    import typer

    from edgesdk.cli.common import JSON_OPTION, handle_errors, print_json

    app = typer.Typer(pretty_exceptions_enable=False)

    @app.command("boom")
    @handle_errors
    def boom_cmd(json_out: bool = JSON_OPTION) -> None:
        print("noise on stdout")
        raise KeyError("surprise")

    @app.command("ok")
    @handle_errors
    def ok_cmd(json_out: bool = JSON_OPTION) -> None:
        os.write(1, b"native banner on fd 1\n")  # what MNN's printf does
        subprocess.run(["sh", "-c", "echo child on fd 1"], check=False)  # a tool run without capture
        print_json({"x": float("nan"), "y": [1.5]})
        if not json_out:
            print("table")

    return app


def test_internal_error_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    monkeypatch.delenv("EDGESDK_DEBUG", raising=False)
    r = CliRunner().invoke(_crashing_app(), ["boom"])
    assert r.exit_code == 1
    assert "internal error in edgesdk boom: KeyError: 'surprise'; please report it with the command line" in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    monkeypatch.setenv("EDGESDK_DEBUG", "1")
    r = CliRunner().invoke(_crashing_app(), ["boom"])
    assert r.exit_code == 1 and "Traceback" in r.stderr and "internal error in edgesdk boom" in r.stderr


def test_json_stdout_survives_fd1_writes(tmp_path: Path) -> None:
    """Writes to fd 1 (native libraries, child processes) go to stderr while a --json command runs."""
    script = tmp_path / "app.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                      "from test_no_tracebacks import _crashing_app\n_crashing_app()()\n")
    r = subprocess.run([sys.executable, str(script), "ok", "--json"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"x": None, "y": [1.5]}
    assert "native banner on fd 1" in r.stderr and "child on fd 1" in r.stderr
    r = subprocess.run([sys.executable, str(script), "ok"], check=False, capture_output=True, text=True, timeout=120)
    assert "native banner on fd 1" in r.stdout and "table" in r.stdout  # without --json nothing moves


def _mnn_ready() -> str | None:
    import importlib.util

    from edgesdk.toolchains.adapters import get_adapter

    st = get_adapter("mnn").check_env()
    if not st.ok:
        return f"mnn toolchain not ready: {st.detail} (fix: {st.fix})"
    if importlib.util.find_spec("MNN") is None:
        return "engine module MNN not installed (pip install 'edgesdk[test]')"
    return None


def test_mnn_verify_json_is_pure(tmp_path: Path) -> None:
    why = _mnn_ready()
    if why:
        pytest.skip(why)
    out = tmp_path / "mnn"
    r = subprocess.run([sys.executable, "-m", "edgesdk", "convert", str(MODEL), "--board", "rpi4", "--engine", "mnn",
                        "-o", str(out), "--json"], check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["engine"] == "mnn" or json.loads(r.stdout)
    r = subprocess.run([sys.executable, "-m", "edgesdk", "verify", str(out), "--json"], check=False, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["engines"][0]["engine"] == "mnn"
    assert "The device supports" not in r.stdout and "MNN use" not in r.stdout

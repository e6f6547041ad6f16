"""`edgesdk inspect` and `edgesdk partition`: exit codes, JSON output, nothing written on error; shipped boards."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgesdk.boards import list_boards
from edgesdk.cli import app
from edgesdk.errors import UnknownToolchainError
from edgesdk.graph import check_support, load_model, partition
from edgesdk.graph.support import CHECKS, engine_chain
from edgesdk.toolchains.spec import NAMED_CHECKS

from test_graph_util import chain_cpu_middle, save, skip_across_cpu

runner = CliRunner()


def _boards_with_tables():
    out = []
    for b in list_boards():
        try:
            engine_chain(b)
        except UnknownToolchainError as exc:  # an op table another change has not shipped yet
            out.append(pytest.param(b, marks=pytest.mark.skip(reason=f"board {b.id}: {exc}")))
            continue
        out.append(b)
    return out


def test_every_named_check_is_implemented():
    assert set(CHECKS) == set(NAMED_CHECKS)


@pytest.mark.parametrize("board", _boards_with_tables(), ids=lambda b: getattr(b, "id", str(b)))
def test_shipped_board_smoke(tmp_path, board):
    model = load_model(save(skip_across_cpu(), tmp_path))
    s = check_support(model, board)
    plan = partition(model, board, s)
    assert sum(len(x.nodes) for x in plan.segments) == len(model.nodes)
    assert all(p.reasons for p in s.placements if p.kind != "supported")
    json.dumps(plan.to_dict())


def _board_id():
    for b in _boards_with_tables():
        if not hasattr(b, "values"):
            return b.id
    pytest.skip("no shipped board has all its op tables yet")


def test_inspect_json_parses(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    r = runner.invoke(app, ["inspect", str(p), "--board", _board_id(), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["segments"] and doc["latency"]["label"].startswith("estimate")
    assert len(doc["placements"]) == 5


def test_inspect_table_and_html(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    html = tmp_path / "r.html"
    r = runner.invoke(app, ["inspect", str(p), "--board", _board_id(), "--html", str(html)])
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert "<svg" in text and "http" not in text.split("<svg", 1)[1].replace("http://www.w3.org/2000/svg", "")
    assert text.count('class="node"') == 5


def test_inspect_all_boards(tmp_path):
    if any(hasattr(b, "values") for b in _boards_with_tables()):
        pytest.skip("some shipped boards lack op tables")
    p = save(chain_cpu_middle(), tmp_path)
    r = runner.invoke(app, ["inspect", str(p), "--all-boards", "--json"])
    assert r.exit_code == 0, r.output
    assert {row["board"] for row in json.loads(r.stdout)} == {b.id for b in list_boards()}


def test_inspect_bad_input_exit_2(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_text("nope")
    r = runner.invoke(app, ["inspect", str(bad), "--board", "rpi4"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["inspect", str(save(chain_cpu_middle(), tmp_path)), "--board", "nosuchboard"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["inspect", str(save(chain_cpu_middle(), tmp_path)), "--board", "rpi4",
                            "--input-shape", "x=1,a"])
    assert r.exit_code == 2


def test_partition_writes_segments_and_plan(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    out = tmp_path / "out"
    r = runner.invoke(app, ["partition", str(p), "--board", _board_id(), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "plan.json" in doc["files"] and (out / "plan.json").is_file()


def test_partition_existing_dir_needs_force(tmp_path):
    p = save(chain_cpu_middle(), tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    r = runner.invoke(app, ["partition", str(p), "--board", _board_id(), "-o", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    assert list(out.iterdir()) == []
    r = runner.invoke(app, ["partition", str(p), "--board", _board_id(), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert (out / "plan.json").is_file()


def test_partition_escaping_external_data_writes_nothing(tmp_path):
    from test_graph_load import _external_model

    inner = tmp_path / "m"
    inner.mkdir()
    p, raw = _external_model(inner, "../w.bin")
    (tmp_path / "w.bin").write_bytes(raw)
    out = tmp_path / "out"
    before = sorted(x.name for x in tmp_path.iterdir())
    r = runner.invoke(app, ["partition", str(p), "--board", "rpi4", "-o", str(out)])
    assert r.exit_code == 2 and "model's folder" in r.output
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == before


def test_partition_too_large_writes_nothing(tmp_path):
    from edgesdk.graph.load import PROTOBUF_LIMIT

    p = tmp_path / "huge.onnx"
    with open(p, "wb") as f:
        f.truncate(PROTOBUF_LIMIT + 1)
    r = runner.invoke(app, ["partition", str(p), "--board", "rpi4", "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "2 GB" in r.output
    assert not (tmp_path / "out").exists()

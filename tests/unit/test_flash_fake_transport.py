"""flash_bundle's logic on FakeTransport (a local dir standing in for the board, the real agent run locally, the
smoke test through the installed runtime's `python -m edgesdk.runtime smoke`): stage, verify, switch, smoke,
rollback on failure, lock, keep N, a cut connection and its resume; status, rollback, run and profile. Fast: no
sshd, no qemu. The same paths over real OpenSSH: tests/integration/test_flash_sshd.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sshd_fixture import (
    board_python, bundle_id, current_release, flash_opts, local_board, local_profile, make_test_bundle,
    public_dir,
)

from edgesdk.deploy.board import RemoteBoard
from edgesdk.deploy.flash import flash, rollback, run_remote, status
from edgesdk.deploy.results import BoardStatus, FlashResult, Outcome
from edgesdk.deploy.transport import FakeLink, FakeTransport
from edgesdk.errors import RemoteError

# the "board" is this machine: its python has edgesdk.runtime + onnxruntime, and nobody can run it (the agent drops
# the smoke test to nobody); ROOT_OK: it could not be made so here, the smoke test runs as root (--allow-root-smoke)
PY, ROOT_OK = board_python()


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))  # lock records of this host


@pytest.fixture(scope="module")
def bundles():
    d = public_dir("edgesdk-fake-bundles-")  # readable by nobody: the smoke test is demoted when we are root
    yield {"a": make_test_bundle(d / "a", seed=0), "b": make_test_bundle(d / "b", seed=5, pad_bytes=3 << 20),
           "bad": make_test_bundle(d / "bad", seed=9, wrong_reference=True), "dir": d}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def board():
    yield from local_board("edgesdk-fake-board-")


def go(bundle: Path, base: Path, link: FakeLink | None = None, **kw) -> FlashResult:
    return flash(bundle, local_profile(), FakeTransport.target_for(base), flash_opts(**kw),
                 transport=FakeTransport.on(link or FakeLink()))


def test_flash_stage_verify_switch_smoke_then_status_rollback_run(bundles, board, tmp_path):
    link = FakeLink()
    r = go(bundles["a"], board, link)
    assert r.status is Outcome.SUCCESS and r.ok and r.exit_code == 0, (r.error, r.log)
    assert current_release(board) == bundle_id(bundles["a"]) and r.smoke["ok"] and r.latency_ms is not None
    assert r.smoke["checks"]["logits"]["ok"] and r.engines_used[0]["engine"] == "onnxruntime"
    assert not (board / "lock").exists() and not list((board / "staging").iterdir())
    # the phases in order, each an agent verb; the smoke test is the runtime's own `smoke` verb
    assert link.verbs() == ["whoami", "probe", "lock", "need", "commit", "install", "activate", "lock"]
    from edgesdk.runtime import agent as board_agent

    assert (board / "agent.py").read_bytes() == Path(board_agent.__file__).read_bytes()  # pushed, as to a board
    log = (board / "logs").glob("smoke-*.log")
    assert "EDGESDK-RESULT" in next(log).read_text()
    rel = board / "releases" / bundle_id(bundles["a"])
    assert all(not os.access(p, os.W_OK) or os.getuid() == 0 for p in rel.rglob("*") if p.is_file())
    assert all((p.stat().st_mode & 0o777) in (0o440, 0o400) for p in rel.rglob("*") if p.is_file())  # private
    # the same bundle again: nothing sent
    assert go(bundles["a"], board).bytes_sent == 0
    r2 = go(bundles["b"], board)
    assert r2.ok and current_release(board) == bundle_id(bundles["b"]) and r2.bytes_sent >= 3 << 20
    st = status(FakeTransport.target_for(board), transport=FakeTransport)
    assert st.status is BoardStatus.READY and st.current == bundle_id(bundles["b"])
    assert set(st.releases) == {bundle_id(bundles["a"]), bundle_id(bundles["b"])}
    assert [e["event"] for e in st.history].count("activated") == 3
    rb = rollback(FakeTransport.target_for(board), transport=FakeTransport)
    assert rb.status is Outcome.ROLLED_BACK
    assert rb.current == bundle_id(bundles["a"]) == current_release(board)
    assert rb.previous == bundle_id(bundles["b"])
    out = run_remote(FakeTransport.target_for(board), [f"x={bundles['a']}/reference/input_0.npy"], tmp_path / "res",
                     python=PY, allow_root=ROOT_OK, transport=FakeTransport)
    assert out.ok and out.release == bundle_id(bundles["a"]) and out.latency_ms is not None
    got = np.load(out.outputs["logits"].file)
    assert np.allclose(got, np.load(bundles["a"] / "reference" / "output_0.npy"), atol=1e-5)
    assert out.outputs["logits"].shape == (1, 10) and not list((board / "tmp").glob("run-*"))


def test_smoke_failure_rolls_back_to_the_previous_release(bundles, board):
    assert go(bundles["a"], board).ok
    r = go(bundles["bad"], board)
    assert r.status is Outcome.ROLLED_BACK and r.exit_code == 1 and "beyond the tolerance" in r.error
    assert "EDGESDK-RESULT" in r.log and r.smoke and not r.smoke["ok"]
    assert current_release(board) == bundle_id(bundles["a"]) and r.previous == bundle_id(bundles["a"])
    st = status(FakeTransport.target_for(board), transport=FakeTransport)
    assert st.history[-1]["event"] == "rolled-back" and st.history[-1]["release"] == bundle_id(bundles["bad"])
    assert not (board / "lock").exists()


def test_smoke_failure_of_the_first_release_leaves_nothing_current(bundles, board):
    r = go(bundles["bad"], board)
    assert r.status is Outcome.ROLLED_BACK
    assert current_release(board) is None and not (board / "current").exists()


def test_smoke_hang_is_killed_and_rolled_back(bundles, board):
    assert go(bundles["a"], board).ok
    hang = board.parent / "hang-python"
    hang.write_text("#!/bin/sh\necho loading; exec sleep 600\n")
    hang.chmod(0o755)
    r = go(bundles["b"], board, python=str(hang), smoke_timeout=2)
    assert r.status is Outcome.ROLLED_BACK and "timed out" in r.error
    assert current_release(board) == bundle_id(bundles["a"])


def test_failure_before_the_switch_changes_nothing(bundles, board):
    assert go(bundles["a"], board).ok

    def boom(rb):
        raise RemoteError("injected: the board went away before activation")

    r = go(bundles["b"], board, fail_points={"before_activate": boom})
    assert r.status is Outcome.FAILED and "injected" in r.error
    assert current_release(board) == bundle_id(bundles["a"])
    assert (board / "releases" / bundle_id(bundles["b"])).is_dir()  # installed, verified, not switched to
    assert not (board / "lock").exists()


def test_keep_n_releases(bundles, board):
    ids = []
    for seed in (20, 21, 22, 23):
        bb = make_test_bundle(bundles["dir"] / f"k{seed}", seed=seed)
        ids.append(bundle_id(bb))
        assert go(bb, board, keep=2).ok
    assert current_release(board) == ids[-1] and sorted(os.listdir(board / "releases")) == sorted(ids[-2:])


def test_lock_held_by_another_flash(bundles, board):
    assert go(bundles["a"], board).ok
    with FakeTransport(FakeTransport.target_for(board)) as c:
        rb = RemoteBoard(c).open()
        rb.lock("someone else")
        r = go(bundles["b"], board)
        assert r.status is Outcome.FAILED and "locked by another flash" in r.error
        assert current_release(board) == bundle_id(bundles["a"])
        st = status(FakeTransport.target_for(board), transport=FakeTransport)
        assert st.status is BoardStatus.LOCKED
        rb.unlock()
    assert go(bundles["b"], board).ok


def test_cut_connection_then_resume(bundles, board):
    assert go(bundles["a"], board).ok
    link = FakeLink(cut_after_bytes=1 << 20)
    r = go(bundles["b"], board, link)
    assert r.status is Outcome.FAILED and link.cuts == 1 and "lost" in r.error
    assert current_release(board) == bundle_id(bundles["a"])
    assert bundle_id(bundles["b"]) not in os.listdir(board / "releases")
    part = board / "staging" / bundle_id(bundles["b"]) / "blob.bin.part"
    assert part.is_file() and 0 < part.stat().st_size < 3 << 20
    assert not (board / "lock").exists()  # released over a fresh connection
    link.cut_after_bytes = None
    r2 = go(bundles["b"], board, link)
    assert r2.ok and r2.transfer["resumed_bytes"] > 0 and r2.bytes_sent < r2.bytes_total
    assert current_release(board) == bundle_id(bundles["b"])


def test_unreachable_board(bundles, board):
    r = go(bundles["a"], board, FakeLink(unreachable=True))
    assert r.status is Outcome.UNREACHABLE and r.exit_code == 1 and not board.exists()


def test_fake_transport_keeps_writes_inside_the_board_dir(board):
    board.mkdir(parents=True)
    with FakeTransport(FakeTransport.target_for(board)) as c, pytest.raises(RemoteError, match="outside"), \
            c.sftp("mkdir") as f:
        f.mkdir(str(board.parent / "elsewhere"), 0o755)
    with pytest.raises(TypeError):
        FakeTransport(FakeTransport.target_for(board)).run("echo hi")  # type: ignore[arg-type]


def test_profile_runs_the_installed_runtime_through_the_agent(bundles, board):
    from edgesdk.profile import ProfileOptions
    from edgesdk.profile.run import measure_remote

    assert go(bundles["a"], board).ok
    link = FakeLink()
    m = measure_remote(FakeTransport.target_for(board), bundle_id(bundles["a"]),
                       ProfileOptions(python=PY, runs=3, warmup=1, frames=0, allow_root=ROOT_OK),
                       transport=FakeTransport.on(link))
    assert m["latency"]["count"] == 3 and m["accuracy"]["checked"] and m["accuracy"]["passed"]
    assert link.verbs() == ["whoami", "state", "profile"]  # nothing copied, no raw command
    assert not list((board / "tmp").glob("profile-*"))
    from edgesdk.errors import InputError

    with pytest.raises(InputError, match="not installed"):
        measure_remote(FakeTransport.target_for(board), "nope", ProfileOptions(python=PY), transport=FakeTransport)

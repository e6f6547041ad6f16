"""The security probe's board/host-hardening findings (issue 17), each reproduced as the probe did it, on a
FakeTransport board (a local dir, the real agent and runtime run locally, as root the real drop to nobody):

- `run` fetched whatever the nobody-owned work dir held (a symlink to a secret, a 300 MB "output");
- a failed drop to nobody ran the smoke test as root silently;
- two simultaneous `lock acquire` both won;
- board strings reached the terminal raw (escape sequences, rich markup); malformed state crashed the CLI;
- releases, state and logs were world-readable.

The same over real OpenSSH (reply cap, known_hosts, MACs): tests/integration/test_probe_findings_sshd.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pwd
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from sshd_fixture import board_python, local_profile, make_test_bundle, public_dir

from edgesdk.deploy.flash import FlashOptions, flash, run_remote
from edgesdk.deploy.results import Outcome
from edgesdk.deploy.transport import FakeTransport
from edgesdk.errors import RemoteError

ROOT = os.geteuid() == 0
PY, ROOT_OK = board_python()
NOBODY = pwd.getpwnam("nobody").pw_uid if ROOT else None


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def bundles():
    d = public_dir("edgesdk-probe-bundles-")
    yield {"a": make_test_bundle(d / "a", seed=0), "b": make_test_bundle(d / "b", seed=5)}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def board():
    d = public_dir("edgesdk-probe-board-")
    yield d / "opt-edgesdk"
    shutil.rmtree(d, ignore_errors=True)


def go(bundle: Path, base: Path, python: str = PY, **kw):
    kw.setdefault("allow_root_smoke", ROOT_OK)
    return flash(bundle, local_profile(), FakeTransport.target_for(base),
                 FlashOptions(python=python, smoke_timeout=120, **kw), transport=FakeTransport)


def bid(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


def current(base: Path) -> str | None:
    link = base / "current"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def need_nobody_python() -> None:
    if not ROOT:
        pytest.skip("the drop to nobody happens only when the agent is root")
    if ROOT_OK:
        pytest.fail(f"no interpreter nobody can run here (see sshd_fixture.board_python): {PY}")


# -- run: outputs from a work dir that nobody owns ------------------------------------------------------------

class _SwapAfterRun(FakeTransport):
    """After the board's `run` verb returns and before the host fetches, whoever can write the run's work dir
    (nobody, the model's user) swaps every output in it: for a symlink to a secret, or for a huge file."""

    how = "symlink"
    secret: Path | None = None

    def run(self, argv, **kw):
        res = super().run(argv, **kw)
        if "run" in argv and "--base" in argv:
            work = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
            for f in (self.root / "tmp" / work).glob("output_*.npy"):
                f.unlink()
                if self.how == "symlink":
                    f.symlink_to(self.secret)
                else:
                    with open(f, "wb") as fh:
                        fh.truncate(300 << 20)  # sparse: 300 MB for a (1, 10) float32 tensor
        return res


@pytest.mark.parametrize("how", ["symlink", "huge"])
def test_run_never_fetches_what_nobody_swapped_into_the_work_dir(bundles, board, tmp_path, how):
    assert go(bundles["a"], board).ok
    secret = board.parent / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    swap = type("Swap", (_SwapAfterRun,), {"how": how, "secret": secret})
    out = run_remote(FakeTransport.target_for(board), [f"x={bundles['a']}/reference/input_0.npy"], tmp_path / "res",
                     python=PY, allow_root=ROOT_OK, transport=swap)
    # the host saved the runtime's own output, not the secret, not 300 MB
    got = np.load(out.outputs["logits"].file)
    assert np.allclose(got, np.load(bundles["a"] / "reference" / "output_0.npy"), atol=1e-5)
    saved = [f for f in (tmp_path / "res").rglob("*") if not f.is_dir() or f.is_symlink()]
    assert [f.name for f in saved] == ["logits.npy"]
    for f in saved:
        assert f.is_file() and not f.is_symlink() and f.stat().st_size < 4096
        assert b"secret-hash" not in f.read_bytes()
    assert not list((board / "tmp").glob("run-*"))  # cleaned up


def test_agent_collects_only_regular_files_within_the_declared_size(tmp_path):
    """The agent's own check (it copies the outputs out of the nobody-owned dir into a root-only one)."""
    from edgesdk.runtime import agent

    wd, dest = tmp_path / "wd", tmp_path / "out"
    wd.mkdir()
    np.save(wd / "output_0.npy", np.zeros((1, 10), np.float32))
    limits = {"logits": agent.npy_limit([1, 10], "float32")}
    got = agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(dest))
    assert got["output_0.npy"]["size"] == (wd / "output_0.npy").stat().st_size
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    (wd / "output_0.npy").unlink()
    (wd / "output_0.npy").symlink_to("/etc/shadow")
    with pytest.raises(agent.Fail, match=r"output_0.npy.*not a regular file"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o2"))
    (wd / "output_0.npy").unlink()
    with open(wd / "output_0.npy", "wb") as fh:
        fh.truncate(300 << 20)
    with pytest.raises(agent.Fail, match=r"output_0.npy.*larger than"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o3"))
    os.unlink(wd / "output_0.npy")
    os.mkfifo(wd / "output_0.npy")
    with pytest.raises(agent.Fail, match="not a regular file"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o4"))


def test_an_output_that_is_not_npy_is_a_clean_error(tmp_path):
    """What np.load raised raw (the probe's /etc/shadow as output_0.npy) is a RemoteError, and the file is gone."""
    from edgesdk.deploy.flash import _load_output

    bad = tmp_path / "logits.npy"
    bad.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    with pytest.raises(RemoteError, match="output_0.npy is not a readable .npy file"):
        _load_output(bad, "output_0.npy", "board")
    assert not bad.exists()
    np.save(bad, np.ones((1, 10), np.float32))
    assert _load_output(bad, "output_0.npy", "board").shape == (1, 10)


# -- the drop to nobody ------------------------------------------------------------------------------------

def test_smoke_test_and_run_really_run_as_nobody(bundles, board, tmp_path):
    need_nobody_python()
    r = go(bundles["a"], board, allow_root_smoke=False)
    assert r.ok, (r.error, r.log)
    assert r.smoke["uid"] == NOBODY and not any("root" in w for w in r.warnings)
    out = run_remote(FakeTransport.target_for(board), [f"x={bundles['a']}/reference/input_0.npy"], tmp_path / "res",
                     python=PY, transport=FakeTransport)
    assert out.uid == NOBODY


def test_a_failed_drop_to_nobody_is_a_flash_failure_with_the_fix(bundles, board, tmp_path):
    if not ROOT:
        pytest.skip("the drop to nobody happens only when the agent is root")
    private = public_dir("edgesdk-private-py-")
    os.chmod(private, 0o700)  # the project's own set-up: a venv under /root, which nobody cannot enter
    py = private / "python"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    try:
        r = go(bundles["a"], board, python=str(py), allow_root_smoke=False)
        assert r.status is Outcome.FAILED and r.exit_code == 1, r
        assert "nobody" in r.error and "--allow-root-smoke" in r.error and "o+rx" in r.error
        assert current(board) is None  # nothing switched
        assert bid(bundles["a"]) in os.listdir(board / "releases")  # installed, verified, not current
        # explicitly allowed: it runs as root, and says so loudly
        r = go(bundles["a"], board, python=str(py), allow_root_smoke=True)
        assert r.ok and r.smoke["uid"] == 0, (r.error, r.log)
        assert any("ran as ROOT" in w for w in r.warnings), r.warnings
        st = json.loads((board / "state.json").read_text())
        assert st["history"][-1].get("ran_as") == "root"
        with pytest.raises(RemoteError, match="--allow-root"):
            run_remote(FakeTransport.target_for(board), [f"x={bundles['a']}/reference/input_0.npy"],
                       tmp_path / "res", python=str(py), transport=FakeTransport)
    finally:
        shutil.rmtree(private, ignore_errors=True)


# -- the lock under concurrency ------------------------------------------------------------------------------

def _acquirer(base: str, token: str, start, done, q) -> None:
    from edgesdk.runtime import agent

    b = agent.Board(base)
    while True:
        start.wait()
        try:
            args = agent.parser().parse_args(["--base", base, "lock", "acquire", token, "--who", token])
            agent.verb_lock(b, args)
            q.put(token)
        except agent.Fail:
            q.put("")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            q.put(f"error {type(exc).__name__}: {exc}")
        done.wait()


def test_lock_has_exactly_one_winner_under_parallel_acquirers(tmp_path):
    base = str(tmp_path / "board")
    n, rounds = 4, 200
    ctx = mp.get_context("fork")
    start, done, q = ctx.Barrier(n + 1), ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_acquirer, args=(base, f"token{i:04d}abcd", start, done, q), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    bad = []
    try:
        for rnd in range(rounds):
            start.wait(timeout=30)
            got = [q.get(timeout=30) for _ in range(n)]
            errors = [g for g in got if g.startswith("error")]
            winners = [g for g in got if g and not g.startswith("error")]
            if errors or len(winners) != 1:
                bad.append((rnd, winners, errors))
            os.unlink(os.path.join(base, "lock"))
            done.wait(timeout=30)
    finally:
        for p in procs:
            p.kill()
    assert not bad, f"{len(bad)} of {rounds} rounds without exactly one winner, e.g. {bad[:3]}"


def test_an_empty_or_unreadable_fresh_lock_counts_as_held(tmp_path):
    from edgesdk.runtime import agent

    base = tmp_path / "board"
    base.mkdir()
    (base / "lock").write_text("")  # what a second acquirer saw between another's create and write
    args = agent.parser().parse_args(["--base", str(base), "lock", "acquire", "token0000abcd"])
    with pytest.raises(agent.Fail, match="locked"):
        agent.verb_lock(agent.Board(str(base)), args)
    os.utime(base / "lock", (1, 1))  # an empty lock older than the TTL is stale
    assert agent.verb_lock(agent.Board(str(base)), args)["locked"]


# -- board strings on the operator's terminal, malformed state -------------------------------------------------

HOSTILE = ("\x1b]0;pwned-title\x07\x1b[2J\x1b[8mhidden\x1b[0m\x9b31m [link=https://evil.example/]click[/link] "
           "ci[/x] [bold red]FAKE[/] \x1b]8;;https://evil.example/\x1b\\osc8\x1b]8;;\x1b\\ \u202eevil")


def _cli(monkeypatch, *argv: str):
    from typer.testing import CliRunner

    import edgesdk.deploy.flash as fl
    from edgesdk.cli import app

    monkeypatch.setattr(fl, "SSHConnection", FakeTransport)  # the CLI's SSH connection -> the local board dir
    return CliRunner().invoke(app, list(argv))


def _clean(text: str) -> None:
    bad = [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) < 0xa0 or c == "\u202e"]
    assert not bad, f"control characters reached the terminal: {bad[:8]!r} in {text!r}"
    assert "internal error" not in text and "Traceback" not in text, text


def _crafted_state(base: Path, **extra) -> None:
    base.mkdir(parents=True, exist_ok=True)
    st = {"current": HOSTILE, "history": [
        {"at": HOSTILE, "event": HOSTILE, "release": HOSTILE, "reason": HOSTILE, "note": HOSTILE},
        {"at": "2026-01-01T00:00:00Z", "event": None, "release": None, "latency_ms": {"x": 1}},
        {"at": 5, "event": 7, "wheelset": ["a"]},
        "not-an-object", None, 3,
    ], **extra}
    (base / "state.json").write_text(json.dumps(st))


def test_status_prints_a_crafted_state_safely(monkeypatch, board):
    _crafted_state(board)
    (board / "lock").write_text(json.dumps({"token": "tok00000abc", "since": 1e18, "who": HOSTILE}))
    r = _cli(monkeypatch, "status", "--host", "root@fake", "--remote-dir", str(board))
    assert r.exit_code == 0, r.output
    _clean(r.output)
    assert "[link=https://evil.example/]" in r.output and "ci[/x]" in r.output  # shown as text, not markup
    assert "pwned-title" in r.output  # the text stays readable, its control characters do not
    r = _cli(monkeypatch, "status", "--host", "root@fake", "--remote-dir", str(board), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["lock"]["who"] == HOSTILE  # --json keeps the data as is


@pytest.mark.parametrize("history", [{"a": 1}, "x", 7])
def test_status_with_a_history_that_is_not_a_list(monkeypatch, board, history):
    board.mkdir(parents=True)
    (board / "state.json").write_text(json.dumps({"history": history, "fallback": [1]}))
    r = _cli(monkeypatch, "status", "--host", "root@fake", "--remote-dir", str(board))
    assert r.exit_code in (0, 1), r.output
    _clean(r.output)


def test_rollback_refused_by_a_hostile_lock_holder_is_a_clean_error(monkeypatch, board):
    board.mkdir(parents=True)
    for who in ("ci[/x]", "ci\\", "[/]", HOSTILE):
        (board / "lock").write_text(json.dumps({"token": "tok00000abc", "since": 1e18, "who": who}))
        r = _cli(monkeypatch, "rollback", "--host", "root@fake", "--remote-dir", str(board))
        assert r.exit_code == 1 and "locked" in r.output, r.output
        _clean(r.output)
        assert "ci[/x]" not in who or "ci[/x]" in r.output  # shown as text


def test_flash_summary_and_run_print_board_strings_safely(capsys):
    from edgesdk.cli.deploy import _summary
    from edgesdk.deploy.results import FlashResult

    r = FlashResult(host=HOSTILE, board="localhost", status="rolled-back", bundle_id=HOSTILE, previous=HOSTILE,
                    smoke={"checks": {HOSTILE: {"max_abs_rel": 0.5}}}, warnings=(HOSTILE,), notes=(HOSTILE,),
                    error=HOSTILE, log=HOSTILE + "\nline two", engines_used=({"segment": HOSTILE, "engine": HOSTILE},))
    _summary(r)
    cap = capsys.readouterr()
    _clean(cap.out + cap.err)
    assert "[link=https://evil.example/]" in cap.out and "line two" in cap.err


def test_safe_text_helper():
    from edgesdk.cli.common import safe_text

    s = safe_text(HOSTILE)
    _clean(s)
    assert "\\[link=" in s and "ci\\[/x]" in s  # escaped for rich markup
    assert safe_text("a\nb\tc", markup=False) == "a\nb\tc"
    assert safe_text(None) == "None" and safe_text(7) == "7"


# -- modes on the board ------------------------------------------------------------------------------------------

def test_release_state_and_log_modes_are_private(bundles, board):
    r = go(bundles["a"], board)
    assert r.ok, (r.error, r.log)
    rel = board / "releases" / bid(bundles["a"])
    for p in [board / "state.json", *(board / "logs").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in ("logs", "staging", "releases", "tmp"):
        assert stat.S_IMODE((board / d).stat().st_mode) & 0o007 in (0, 0o001), d  # no one else lists them
    for p in [rel, *rel.rglob("*")]:
        m = stat.S_IMODE(p.lstat().st_mode)
        assert m & 0o007 == 0 and m & 0o022 == 0, (p, oct(m))  # no one else; only the owner may write
        if p.is_file():
            assert m & 0o222 == 0, (p, oct(m))  # release files are read-only
        if ROOT and not ROOT_OK:
            assert p.lstat().st_gid == pwd.getpwnam("nobody").pw_gid  # the smoke test reads it as nobody's group
    assert r.smoke["ok"]  # and nobody could still read what it needs

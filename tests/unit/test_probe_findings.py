"""The security probe's board/host-hardening findings (issue 17), each reproduced as the probe did it, on a
FakeTransport board (a local dir, the real agent and runtime run locally, as root the real drop to nobody):

- `run` fetched whatever the nobody-owned work dir held (a symlink to a secret, a 300 MB "output");
- a failed drop to nobody ran the smoke test as root silently;
- two simultaneous `lock acquire` both won;
- board strings reached the terminal raw (escape sequences, rich markup); malformed state crashed the CLI;
- releases, state and logs were world-readable.

The same over real OpenSSH (reply cap, known_hosts, MACs): tests/integration/test_probe_findings_sshd.py."""

from __future__ import annotations

import errno
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
from sshd_fixture import (
    board_python, bundle_id, current_release, flash_opts, local_board, local_profile, make_test_bundle,
    public_dir,
)

from edgesdk.deploy.flash import flash, run_remote
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
    yield from local_board("edgesdk-probe-board-")


def go(bundle: Path, base: Path, python: str = PY, **kw):
    return flash(bundle, local_profile(), FakeTransport.target_for(base), flash_opts(python=python, **kw),
                 transport=FakeTransport)


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


def test_agent_refuses_hard_links_and_files_of_another_user(tmp_path):
    """A hard link in the work dir passes O_NOFOLLOW and S_ISREG: on a board with fs.protected_hardlinks=0 nobody
    can link a root-only file there. The agent wants exactly one link and the run's user as the owner."""
    from edgesdk.runtime import agent

    wd = tmp_path / "wd"
    wd.mkdir()
    limits = {"logits": agent.npy_limit([1, 10], "float32")}
    secret = tmp_path / "secret.npy"
    np.save(secret, np.full((1, 10), 7, np.float32))  # a file the run's user must not get back
    secret.chmod(0o600)
    os.link(secret, wd / "output_0.npy")
    with pytest.raises(agent.Fail, match=r"output_0.npy: a hard link \(2 links\)"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o1"))
    assert not list((tmp_path / "o1").iterdir())
    secret.unlink()  # one link left, but still not the run's user's file
    if not ROOT:
        return
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(agent.Fail, match=rf"owned by uid 0, not by the run's user \(uid {nobody.pw_uid}\)"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o2"), uid=nobody.pw_uid)
    os.chown(wd / "output_0.npy", nobody.pw_uid, nobody.pw_gid)  # what the demoted run writes: nobody's
    with pytest.raises(agent.Fail, match=r"owned by uid \d+, not by the run's user \(uid 0\)"):
        agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o3"))
    got = agent.collect_outputs(str(wd), {"output_0.npy": "logits"}, limits, str(tmp_path / "o4"), uid=nobody.pw_uid)
    assert got["output_0.npy"]["size"] == (wd / "output_0.npy").stat().st_size


@pytest.mark.parametrize("tensor", [["x"], {"a": 1}, None, 7])
def test_a_tensor_name_that_is_not_a_string_is_refused_not_a_traceback(tmp_path, tensor):
    """The runtime child (untrusted) reports {"output_0.npy": ["x"]}: `["x"] in limits` raised TypeError."""
    from edgesdk.runtime import agent

    wd = tmp_path / "wd"
    wd.mkdir()
    np.save(wd / "output_0.npy", np.zeros((1, 10), np.float32))
    with pytest.raises(agent.Fail, match="is not an output of the release's manifest"):
        agent.collect_outputs(str(wd), {"output_0.npy": tensor}, {"logits": 4096}, str(tmp_path / "out"))


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
        assert current_release(board) is None  # nothing switched
        assert bundle_id(bundles["a"]) in os.listdir(board / "releases")  # installed, verified, not current
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


@pytest.mark.parametrize("links", ["link", "no-hard-links"])
def test_lock_has_exactly_one_winner_under_parallel_acquirers(tmp_path, monkeypatch, links):
    """"no-hard-links": link() fails with EPERM, as on vfat/exFAT/FUSE; the agent creates the record with O_EXCL
    under the lock guard instead (before: every acquirer failed with the raw OSError)."""
    if links == "no-hard-links":
        def no_link(src, dst, *a, **kw):
            raise PermissionError(errno.EPERM, "Operation not permitted", src)

        monkeypatch.setattr(os, "link", no_link)  # the forked acquirers inherit it
    base = str(tmp_path / "board")
    n, rounds = 4, 200 if links == "link" else 100
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


def test_lock_without_hard_links_acquires_releases_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from edgesdk.runtime import agent

    def no_link(src, dst, *a, **kw):
        raise PermissionError(errno.EPERM, "Operation not permitted", src)

    monkeypatch.setattr(os, "link", no_link)
    base = tmp_path / "board"
    b = agent.Board(str(base))
    acq = agent.parser().parse_args(["--base", str(base), "lock", "acquire", "token0000abcd", "--who", "me"])
    assert agent.verb_lock(b, acq)["locked"]
    held = json.loads((base / "lock").read_text())
    assert held["token"] == "token0000abcd" and held["who"] == "me"
    assert stat.S_IMODE((base / "lock").stat().st_mode) == 0o600
    other = agent.parser().parse_args(["--base", str(base), "lock", "acquire", "token1111abcd"])
    with pytest.raises(agent.Fail, match="locked by another flash"):
        agent.verb_lock(b, other)
    rel = agent.parser().parse_args(["--base", str(base), "lock", "release", "token0000abcd"])
    assert agent.verb_lock(b, rel) == {"locked": False} and not (base / "lock").exists()
    assert not list(base.glob("lock.*.tmp"))
    assert agent.verb_lock(b, other)["locked"]


# -- known_hosts: parallel enrolments, a symlinked file -----------------------------------------------------------

class _Key:
    """What add_known_host needs of a paramiko key."""

    def get_name(self) -> str:
        return "ssh-ed25519"

    def get_base64(self) -> str:
        return "AAAAC3NzaC1lZDI1NTE5AAAAIOvV2ZyN1T7rXvmF0+3cHjOVf0H3XcBrU2Q1o8X8v3Zc"


def _enroller(path: str, who: int, start, q) -> None:
    from edgesdk.deploy.transport import add_known_host

    start.wait()
    try:
        for i in range(15):
            add_known_host(Path(path), f"[board-{who}-{i}.example]:22", _Key())
        q.put("")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        q.put(f"{type(exc).__name__}: {exc}")


def test_parallel_enrolments_keep_every_known_hosts_line(tmp_path):
    """A fleet enrolled with --accept-new, one process per board: the read-modify-replace lost lines."""
    import paramiko

    kh = tmp_path / "known_hosts"
    kh.write_text("# mine\n")
    n = 6
    ctx = mp.get_context("fork")
    start, q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_enroller, args=(str(kh), w, start, q), daemon=True) for w in range(n)]
    for p in procs:
        p.start()
    errors = [e for e in (q.get(timeout=60) for _ in procs) if e]
    for p in procs:
        p.join(30)
    assert not errors, errors
    lines = kh.read_text().splitlines()
    assert lines[0] == "# mine" and len(lines) == 1 + n * 15, f"{1 + n * 15 - len(lines)} lines lost"
    hk = paramiko.HostKeys(str(kh))
    assert all(hk.lookup(f"[board-{w}-{i}.example]:22") for w in range(n) for i in range(15))
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".known_hosts.lock", "known_hosts"]  # no temp files


def test_a_symlinked_known_hosts_stays_a_symlink(tmp_path):
    from edgesdk.deploy.transport import add_known_host

    real = tmp_path / "dotfiles" / "known_hosts"
    real.parent.mkdir()
    real.write_text("other.example ssh-ed25519 AAAA\n")
    link = tmp_path / "ssh" / "known_hosts"
    link.parent.mkdir()
    link.symlink_to(real)
    add_known_host(link, "[127.0.0.1]:2222", _Key())
    assert link.is_symlink() and link.resolve() == real
    text = real.read_text().splitlines()
    assert text[0] == "other.example ssh-ed25519 AAAA" and text[1].startswith("|1|") and len(text) == 2


def test_the_macs_a_connection_may_use_are_exactly_the_allowed_ones(monkeypatch):
    """The disabled MACs are derived: paramiko's preferred list minus ALLOWED_MACS (a MAC a future paramiko adds, here
    a made-up one, is disabled too), and a paramiko Transport built with them offers exactly ALLOWED_MACS."""
    import socket

    import paramiko

    from edgesdk.deploy import transport as tr

    a, b = socket.socketpair()
    try:
        t = paramiko.Transport(a, disabled_algorithms=tr.disabled_algorithms())
        assert tuple(t.preferred_macs) == tr.ALLOWED_MACS
        assert not {"aes128-cbc", "3des-cbc"} & set(t.preferred_ciphers)
        t.close()
    finally:
        a.close()
        b.close()
    future = (*paramiko.Transport._preferred_macs, "hmac-sha1-new@example.com", "umac-64@openssh.com")
    monkeypatch.setattr(paramiko.Transport, "_preferred_macs", future)
    dis = tr.disabled_algorithms()["macs"]
    assert {"hmac-sha1-new@example.com", "umac-64@openssh.com", "hmac-sha1", "hmac-md5-96"} <= set(dis)
    assert [m for m in future if m not in dis] == list(tr.ALLOWED_MACS)


def test_one_definition_of_the_host_sha256_the_output_cap_and_the_tuning_file_name():
    """The host hashes files with one helper (manifest.sha256_file), the output cap is the agent's and tuning.json's
    name is manifest.TUNING: no second copy that can drift."""
    import inspect

    from edgesdk.deploy import flash as fl
    from edgesdk.deploy import transfer
    from edgesdk.runtime import agent, manifest

    assert transfer.sha256_file is manifest.sha256_file
    assert fl.MAX_OUTPUT_BYTES is agent.MAX_OUTPUT_BYTES
    src = inspect.getsource(fl)
    assert "MAX_OUTPUT_BYTES =" not in src and "TUNING_FILE" not in src and '"tuning.json"' not in src


class _BusyTransport:
    """A paramiko Transport as _LinkWatch sees it on a slow link: the keepalive's reply never comes (it waits behind
    queued writes), while other packets from the board keep arriving (last_read) until `quiet_from`."""

    def __init__(self, quiet_from: float) -> None:
        import time

        self.closed = False
        self.last_read = time.monotonic()
        self.quiet_from = quiet_from

    def is_active(self) -> bool:
        return not self.closed

    def global_request(self, kind, wait=True):
        import time

        while not self.closed:
            time.sleep(0.02)

    def close(self) -> None:
        self.closed = True


def test_link_watch_counts_any_packet_from_the_board_as_alive():
    import threading
    import time

    from edgesdk.deploy.transport import _LinkWatch

    t0 = time.monotonic()
    t = _BusyTransport(quiet_from=t0 + 1.5)
    stop = threading.Event()

    def board_answers() -> None:  # an SFTP status or window adjust every 50 ms, then nothing
        while not stop.is_set() and time.monotonic() < t.quiet_from:
            t.last_read = time.monotonic()
            time.sleep(0.05)

    threading.Thread(target=board_answers, daemon=True).start()
    w = _LinkWatch(t, 0.5, "busy")
    w.start()
    w.join(5)
    stop.set()
    assert not w.is_alive() and t.closed and w.stalled is not None
    took = time.monotonic() - t0
    assert 1.8 <= took < 1.5 + 0.5 + 1.0, took  # alive while packets came (3x the limit), stalled ~0.5 s after


# -- the board dir's own modes, not a shared dir's -------------------------------------------------------------

def test_ensure_sets_the_modes_of_what_it_creates_and_leaves_a_pre_existing_base_alone(tmp_path):
    """`--remote-dir` may name a dir that is not only edgesdk's (e.g. a shared /srv/models): the agent chmodded it
    to 0711 on every verb. It sets the base's mode only when it creates it; its own subdirs are always private."""
    from edgesdk.runtime import agent

    fresh = tmp_path / "fresh" / "opt-edgesdk"
    agent.Board(str(fresh)).ensure()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o711
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    (shared / "someone-elses.txt").write_text("x")
    (shared / "releases").mkdir(mode=0o755)  # an older agent's, too open
    agent.Board(str(shared)).ensure()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o775  # the owner's choice, kept
    for d, mode in agent.DIR_MODES.items():
        if d:
            want = 0o750 if d == "releases" and agent.release_group() is not None else mode
            assert stat.S_IMODE((shared / d).stat().st_mode) == want, d


def test_the_drop_to_nobody_checks_that_nobody_can_import_the_runtime(tmp_path):
    """`python -S -c pass` as nobody proved only that the interpreter starts: a venv whose site-packages nobody
    cannot read passed, and the smoke test then failed as nobody with an ImportError instead of naming the fix."""
    from edgesdk.runtime import agent

    if not ROOT:
        pytest.skip("the drop to nobody happens only when the agent is root")
    system = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    if not system.is_file():
        system = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    d = public_dir("edgesdk-probe-private-site-")
    try:
        import subprocess

        subprocess.run([str(system), "-m", "venv", "--without-pip", str(d / "v")], check=True, capture_output=True,
                       timeout=120)
        py = d / "v" / "bin" / "python"
        private = d / "private"
        (private / "edgesdk" / "runtime").mkdir(parents=True)
        (private / "edgesdk" / "runtime" / "__init__.py").write_text("")
        private.chmod(0o700)  # root's: nobody starts the interpreter but cannot import the runtime
        site = next((d / "v" / "lib").glob("python*/site-packages"))
        (site / "board.pth").write_text(str(private) + "\n")
        for p in [d, *d.rglob("*")]:
            if p != private and private not in p.parents and not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else p.stat().st_mode | 0o444)
        ids, why = agent._demote(str(py))
        assert ids is None and why is not None, (ids, why)
        assert "import edgesdk.runtime" in why and "No module named" in why, why
        with pytest.raises(agent.Fail, match="must run as nobody.*import edgesdk.runtime.*o\\+rx"):
            agent.demotion(agent.Board(str(d / "b")), str(py), False, "the smoke test", "--allow-root-smoke")
        private.chmod(0o755)
        assert agent._demote(str(py)) == (agent.nobody_ids(), None)
    finally:
        shutil.rmtree(d, ignore_errors=True)


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


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u061c",
                                  "\u202e", "\u2066", "\x1b", "\x9b", "\x7f", "\ud800", "\U000e0001"])
def test_safe_text_shows_every_invisible_character_by_category(char):
    """By Unicode category (Cc, Cf, Cs, Zl, Zp), not a list: line/paragraph separators, zero-width characters, the
    BOM, the soft hyphen, bidi marks, tag characters, lone surrogates, all as \\xNN / \\uNNNN."""
    import unicodedata

    from edgesdk.cli.common import safe_text

    s = safe_text(f"a{char}b\n\tc", markup=False)
    assert char not in s and s.endswith("b\n\tc"), repr(s)
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in s if c not in "\n\t"), repr(s)
    code = ord(char)
    assert (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") in s
    assert safe_text("naïve café ✓ 日本", markup=False) == "naïve café ✓ 日本"  # printable text is untouched
    s.encode("utf-8")  # (a lone surrogate could not even be printed)


# -- modes on the board ------------------------------------------------------------------------------------------

def test_release_state_and_log_modes_are_private(bundles, board):
    r = go(bundles["a"], board)
    assert r.ok, (r.error, r.log)
    rel = board / "releases" / bundle_id(bundles["a"])
    assert stat.S_IMODE(board.stat().st_mode) == 0o711  # made by this flash (the host's push of the agent)
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

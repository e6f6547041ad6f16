"""Fault 3 of reliability.md: a stalled link (the connection stays open, nothing gets through), against a real
sshd through a loopback proxy (tests/netproxy.py).

The flash must fail within its stall timeout (the dead-peer detection of edgesdk.deploy.transport: a keepalive that
wants a reply), say where it stalled, leave the board consistent, and a rerun over a healthy link must finish the job.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from netproxy import LinkProxy
from sshd_fixture import (
    board_python, bundle_id, current_release, flash_opts, local_profile, make_test_bundle, public_dir,
    release_ids, sshd_board,
)

from edgesdk.deploy.flash import FlashOptions, flash, status

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_sshd")]
#: an interpreter `nobody` can run when the fixture provides one (the smoke test drops to nobody)
PY, ROOT_OK = board_python()
STALL = 2.0  # --stall-timeout of these tests
MARGIN = 2.5  # the detection's own granularity, with a loaded 2-core CI machine


class _FailedAt:
    """A flash's event callback: when its phase failed (the stall was detected), before the lock's release."""

    def __init__(self) -> None:
        self.t: float | None = None

    def __call__(self, ev: dict) -> None:
        if ev.get("state") == "failed" and self.t is None:
            self.t = time.monotonic()


@pytest.fixture
def board():
    yield from sshd_board("stall")


@pytest.fixture(scope="module")
def bundles():
    d = public_dir("edgesdk-stall-bundles-")
    yield {"a": make_test_bundle(d / "a", seed=40), "b": make_test_bundle(d / "b", seed=41, pad_bytes=4 << 20),
           "dir": d}
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def opts(**kw) -> FlashOptions:
    return flash_opts(**{"smoke_timeout": 60, **kw})


def via(board, proxy: LinkProxy):
    """The board's target through the proxy (its host key under the proxy's port), short connect timeouts."""
    return board.target(port=proxy.port, known_hosts=board.known_hosts_for(proxy.port), connect_timeout=3.0)


@pytest.mark.parametrize("mode", ["hold", "drop"])
def test_stall_mid_push_fails_within_the_timeout_then_resumes(board, bundles, mode):
    """The proxy stops forwarding after 2 MB of a 4 MB push, closing nothing. "hold": it stops reading, so the
    host's writes block on a full socket (a black-holed route); "drop": it reads and discards (toxiproxy timeout=0)."""
    prof = local_profile()
    assert flash(bundles["a"], prof, board.target(), opts()).status == "success"
    with LinkProxy(board.port, stall_after=2 << 20, mode=mode) as proxy:
        t0 = time.monotonic()
        failed = _FailedAt()
        r = flash(bundles["b"], prof, via(board, proxy), opts(stall_timeout=STALL), failed)
        t_end = time.monotonic()
        assert proxy.stalls == 1 and proxy.stalled_at is not None
        assert r.status == "failed", r
        # detected within the stall timeout; then one try to release the lock over a new connection, which gets at
        # most the stall timeout too (the link is still stalled here)
        assert failed.t is not None and failed.t - proxy.stalled_at < STALL + MARGIN, (failed.t, proxy.stalled_at)
        assert t_end - proxy.stalled_at < 2 * STALL + MARGIN, (t_end - proxy.stalled_at, r.error)
        # where: the phase, the file and how far it got
        assert "stalled link during push" in r.error and "blob.bin" in r.error and "bytes sent" in r.error, r.error
        assert f"{STALL:g}s" in r.error
        # the old release is current, the new one is not installed, its prefix waits in staging
        assert current_release(board) == bundle_id(bundles["a"])
        assert bundle_id(bundles["b"]) not in release_ids(board)
        part = board.base / "staging" / bundle_id(bundles["b"]) / "blob.bin.part"
        assert part.is_file() and 0 < part.stat().st_size < 4 << 20
        # the rerun over the healed link resumes from the board's .part. The stall timeout is about the link, not
        # the command: here the smoke test takes 2x the stall timeout, and passes ("hold"; "drop" runs the plain one)
        proxy.heal()
        slow = _slow_python(board, 2 * STALL) if mode == "hold" else PY
        r2 = flash(bundles["b"], prof, via(board, proxy), opts(stall_timeout=STALL, python=str(slow)))
        assert r2.status == "success", r2.error
        if mode == "hold":
            assert r2.phases["smoke"] > 2 * STALL
        assert r2.transfer["resumed_bytes"] > 0
        assert r2.bytes_sent < r2.bytes_total - (1 << 20)
        assert current_release(board) == bundle_id(bundles["b"])
        assert t_end - t0 < 30


def _slow_python(board, seconds: float) -> Path:
    """PY, but its smoke test starts `seconds` late (the agent's own checks of the interpreter are not delayed)."""
    slow = board.root / "slow-python"
    slow.write_text(f'#!/bin/sh\ncase " $* " in *" smoke "*) sleep {seconds};; esac\nexec "{PY}" "$@"\n')
    slow.chmod(0o755)
    return slow


def _stall_when_switched(board, proxy: LinkProxy, release: str) -> threading.Thread:
    """Stall the proxy as soon as the board's agent has switched to `release` (its smoke test is running)."""
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                pend = json.loads((board.base / "state.json").read_text()).get("pending") or {}
            except (OSError, ValueError):
                pend = {}
            if pend.get("release") == release and current_release(board) == release:
                proxy.stall()
                return
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_stall_during_smoke_reply_agent_finishes_by_itself(board, bundles):
    """The link stalls while the board runs the smoke test: the host fails within the stall timeout; the agent
    (which ignores SIGHUP and needs no host) still commits the switch; an immediate rerun over the healed link waits
    for that activation instead of "recovering" it from under the running agent; status agrees with the disk."""
    prof = local_profile()
    a, b = bundle_id(bundles["a"]), bundle_id(bundles["b"])
    assert flash(bundles["a"], prof, board.target(), opts()).status == "success"
    slow = _slow_python(board, 3 * STALL)
    with LinkProxy(board.port) as proxy:
        started = {}

        def arm(rb):
            started["t"] = time.monotonic()
            started["watch"] = _stall_when_switched(board, proxy, b)

        failed = _FailedAt()
        r = flash(bundles["b"], prof, via(board, proxy),
                  opts(python=str(slow), stall_timeout=STALL, fail_points={"before_activate": arm}), failed)
        t_end = time.monotonic()
        assert proxy.stalled_at is not None, "the board never switched (the smoke test did not start)"
        assert r.status == "failed", r
        assert failed.t is not None and failed.t - proxy.stalled_at < STALL + MARGIN, (failed.t, proxy.stalled_at)
        assert t_end - proxy.stalled_at < 2 * STALL + MARGIN, (t_end - proxy.stalled_at, r.error)
        assert "stalled link during smoke" in r.error and "agent activate" in r.error, r.error
        assert "edgesdk status" in r.error
        # the agent is still smoke-testing b on the board: the rerun (over the healed link) must not undo it
        assert json.loads((board.base / "state.json").read_text()).get("pending", {}).get("release") == b
        proxy.heal()
        r2 = flash(bundles["b"], prof, via(board, proxy), opts())
        assert r2.status == "success", r2.error
        assert not any("interrupted switch" in w for w in r2.warnings), r2.warnings
    assert current_release(board) == b
    st = status(board.target())
    assert st.current == b and not st.state.get("pending") and st.status == "ready", st.to_dict()
    events = [(e.get("event"), e.get("release")) for e in st.history]
    assert ("rolled-back", b) not in events, events  # b was never rolled back: its smoke test passed both times
    assert events[-2:] == [("activated", b), ("activated", b)], events
    assert st.state.get("current") == b and st.state.get("previous") == a
    assert set(release_ids(board)) == {a, b}
    assert not (board.base / "lock").exists()


def test_a_slow_link_is_not_a_stall(board, bundles):
    """A 4 MB push through a link paced at 1 MB/s, stall timeout 2 s: the keepalive request waits behind MBs of
    queued SFTP writes in the socket buffers, longer than the stall timeout, but the board's answers to those writes
    keep arriving, and any packet from the board proves the link alive: no false stall."""
    prof = local_profile()
    assert flash(bundles["a"], prof, board.target(), opts()).status == "success"
    with LinkProxy(board.port, rate=1e6) as proxy:
        t0 = time.monotonic()
        r = flash(bundles["b"], prof, via(board, proxy), opts(stall_timeout=STALL))
        took = time.monotonic() - t0
        assert r.status == "success", r.error
        assert r.bytes_sent > 4 << 20 and took > 2 * STALL, (r.bytes_sent, took)  # it was slow: ~4 s of pushing
        assert proxy.stalls == 0 and proxy.cuts == 0
    assert current_release(board) == bundle_id(bundles["b"])


def test_a_cut_push_releases_the_lock_so_another_host_is_not_locked_out(board, bundles):
    """The link is cut mid-push (once, a blip). The flash fails; its lock must still be released, over a new
    connection: a flash from another host (here: another address of the board, for which this host keeps no
    takeover record) would otherwise be refused as locked until the lock's 30-minute TTL."""
    prof = local_profile()
    assert flash(bundles["a"], prof, board.target(), opts()).status == "success"
    with LinkProxy(board.port, cut_after=2 << 20, heal_after_cut=True) as proxy:
        r = flash(bundles["b"], prof, via(board, proxy), opts())
        assert r.status == "failed" and proxy.cuts == 1, r
        assert "push" in r.error or "lost" in r.error, r.error
    assert not (board.base / "lock").exists(), (board.base / "lock").read_text()
    other = flash(bundles["b"], prof, board.target(), opts())  # [127.0.0.1]:<sshd port>, not the proxy's port
    assert other.status == "success", other.error
    assert current_release(board) == bundle_id(bundles["b"])


def test_bad_stall_timeout_is_a_clear_input_error(tmp_path):
    """`--stall-timeout 0` (or negative): exit 2 naming the option, no traceback; SSHTarget refuses it too."""
    import subprocess

    from edgesdk.deploy.transport import SSHTarget
    from edgesdk.errors import InputError

    exe = Path(sys.executable).with_name("edgesdk")
    for bad in ("0", "-5"):
        p = subprocess.run([str(exe), "flash", str(tmp_path / "m.onnx"), "--board", "rpi4", "--host",
                            "root@127.0.0.1:1", f"--stall-timeout={bad}"], capture_output=True, text=True, timeout=120,
                           check=False)
        assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
        assert "--stall-timeout" in p.stderr and "Traceback" not in p.stderr + p.stdout, p.stderr
    with pytest.raises(InputError, match="stall-timeout"):
        SSHTarget(host="127.0.0.1", stall_timeout=0)

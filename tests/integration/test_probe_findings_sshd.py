"""The security probe's findings over real OpenSSH (issue 17): replies are capped, known_hosts is written hashed
and 0600, only the SHA-2 MACs are accepted, and `run` / the smoke test over SSH+SFTP: outputs never fetched
through a link, the smoke test run as nobody. The same on a local-dir board: tests/unit/test_probe_findings.py."""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_fixture import (
    board_python, flash_opts, local_profile, make_test_bundle, public_dir, sshd_board, start_sshd,
)

from edgesdk.deploy.flash import flash, run_remote
from edgesdk.deploy.transport import ConnectError, ReplyTooLarge, SSHConnection

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_sshd")]
PY, ROOT_OK = board_python()


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def board():
    yield from sshd_board("probe")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_huge_reply_is_refused_at_the_cap_naming_the_board(board):
    """The probe's 200 MB reply raised the host's memory by 576 MB; now reading stops at the cap."""
    with SSHConnection(board.target(max_reply_bytes=4 << 20)) as c:
        before = _rss_mb()
        t0 = time.monotonic()
        with pytest.raises(ReplyTooLarge, match=r"127\.0\.0\.1.*head.*4,194,304 bytes on stdout"):
            c.run(["head", "-c", str(200 << 20), "/dev/zero"], timeout=60)
        assert time.monotonic() - t0 < 30
        assert _rss_mb() - before < 100  # max RSS: the buffer never grew far past the cap
        with pytest.raises(ReplyTooLarge, match="stderr"):
            c.run(["sh", "-c", f"head -c {8 << 20} /dev/zero >&2"], timeout=60)
        assert c.run(["echo", "still usable"]).stdout == "still usable\n"  # the connection survives
    from edgesdk.deploy.transport import MAX_REPLY_BYTES, SSHTarget

    assert SSHTarget(host="h").max_reply_bytes == MAX_REPLY_BYTES == 64 << 20


def test_accept_new_writes_known_hosts_hashed_0600_and_atomically(board, tmp_path):
    kh = tmp_path / "ssh" / "known_hosts"
    kh.parent.mkdir()
    key = board.known_hosts.read_text().split()[1:3]  # some real key, under another name
    kh.write_text(f"# the user's own line\nother.example {key[0]} {key[1]}\n")
    kh.chmod(0o644)
    with SSHConnection(board.target(known_hosts=kh, accept_new=True)) as c:
        assert c.run(["true"]).returncode == 0
    text = kh.read_text()
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    assert text.startswith("# the user's own line\nother.example ")  # kept
    new = text.splitlines()[-1]
    assert new.startswith("|1|") and "127.0.0.1" not in new and str(board.port) not in new.split()[0]
    assert not list(kh.parent.glob("*.tmp"))
    # the hashed entry is what the next connection checks (no --accept-new now)
    with SSHConnection(board.target(known_hosts=kh)) as c:
        assert c.run(["true"]).returncode == 0
    fresh = tmp_path / "fresh" / "known_hosts"
    with SSHConnection(board.target(known_hosts=fresh, accept_new=True)) as c:
        c.run(["true"])
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and fresh.read_text().startswith("|1|")


@pytest.mark.parametrize("macs", ["hmac-sha1", "hmac-md5", "hmac-sha1-96,hmac-md5-96", "hmac-sha1,hmac-md5"])
def test_a_board_offering_only_sha1_or_md5_macs_is_refused(macs):
    b = start_sshd("macs", extra_config=f"Ciphers aes128-ctr,aes256-ctr\nMACs {macs}\n")
    try:
        with pytest.raises(ConnectError, match="(?i)mac"), SSHConnection(b.target()) as c:
            c.run(["true"])
    finally:
        b.stop()


def test_the_default_connection_agrees_on_a_sha2_mac(board):
    b = start_sshd("macs-ok", extra_config="Ciphers aes128-ctr\n")  # a cipher that needs a MAC
    try:
        with SSHConnection(b.target()) as c:
            assert c.run(["true"]).returncode == 0
            t = c.client.get_transport()
            assert t.remote_mac in ("hmac-sha2-256", "hmac-sha2-512"), t.remote_mac
    finally:
        b.stop()


class _SwapAfterRun(SSHConnection):
    """After the board's `run` verb and before the host fetches, nobody (who owns the run's work dir) swaps each
    output for a symlink to a secret, as the probe did."""

    secret: Path

    def run(self, argv, **kw):
        res = super().run(argv, **kw)
        if "run" in argv and "--base" in argv:
            base = Path(argv[argv.index("--base") + 1])
            work = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
            for f in (base / "tmp" / work).glob("output_*.npy"):
                f.unlink()
                f.symlink_to(self.secret)
        return res


def test_run_over_sftp_never_follows_a_swapped_link_and_the_smoke_test_runs_as_nobody(board, tmp_path):
    d = public_dir("edgesdk-probe-sshd-bundle-")
    try:
        bundle = make_test_bundle(d / "a", seed=0)
        r = flash(bundle, local_profile(), board.target(), flash_opts())
        assert r.ok, (r.error, r.log)
        if os.geteuid() == 0:  # the drop to nobody must have happened (no interpreter nobody can run: a failure)
            assert not ROOT_OK, f"no interpreter nobody can run here (see sshd_fixture.board_python): {PY}"
            assert r.smoke["uid"] == pwd.getpwnam("nobody").pw_uid, r.smoke
        secret = d / "shadow"
        secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
        secret.chmod(0o600)
        swap = type("Swap", (_SwapAfterRun,), {"secret": secret})
        out = run_remote(board.target(), [f"x={bundle}/reference/input_0.npy"], tmp_path / "res", python=PY,
                         allow_root=ROOT_OK, transport=swap)
        got = np.load(out.outputs["logits"].file)
        assert np.allclose(got, np.load(bundle / "reference" / "output_0.npy"), atol=1e-5)
        assert all(b"secret-hash" not in f.read_bytes() for f in (tmp_path / "res").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_projects_own_venv_fails_clearly_without_allow_root_smoke(board, tmp_path):
    """The probe's case: `edgesdk flash --python <a venv nobody cannot run>` ran the smoke test as root, silently.
    Here: this host's own venv python (under /root, 0700, when set up as DEVELOPERS.md says)."""
    from typer.testing import CliRunner

    from edgesdk.cli import app
    from edgesdk.runtime.agent import _demote

    if os.geteuid() != 0:
        pytest.skip("the drop to nobody happens only when the agent is root")
    if _demote(sys.executable)[1] is None:
        pytest.skip(f"nobody can run {sys.executable} here: covered by tests/unit/test_probe_findings.py")
    d = public_dir("edgesdk-probe-own-venv-")
    try:
        bundle = make_test_bundle(d / "a", seed=0)
        argv = ["flash", "--board", "rpi4", str(bundle), "--force", "--host", board.spec, "--identity", str(board.key),
                "--known-hosts", str(board.known_hosts), "--remote-dir", str(board.base), "--python", sys.executable]
        env = {"EDGESDK_HOME": str(tmp_path / "home")}
        cur = board.base / "current"
        before = os.readlink(cur) if cur.is_symlink() else None
        r = CliRunner().invoke(app, argv, env=env)
        assert r.exit_code == 1, r.output
        assert "must run as nobody" in r.output and "--allow-root-smoke" in r.output and "Traceback" not in r.output
        assert (os.readlink(cur) if cur.is_symlink() else None) == before  # nothing switched
        r = CliRunner().invoke(app, [*argv, "--allow-root-smoke", "--json"], env=env)
        assert r.exit_code == 0, r.output
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["smoke"]["uid"] == 0 and any("ran as ROOT" in w for w in res["warnings"])
    finally:
        shutil.rmtree(d, ignore_errors=True)

"""Signed bundles, key rotation and downgrade protection against real OpenSSH servers (tests/sshd_fixture.py).

Each test asserts what the board holds afterwards: `current`, releases/, staging/ and the history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_fixture import (
    board_python, bundle_id, current_release, flash_opts, local_profile, make_test_bundle, public_dir,
    release_ids, sshd_board, staged_ids,
)

from edgesdk.deploy import flash as flash_mod
from edgesdk.deploy.flash import FlashOptions, flash, rollback, status
from edgesdk.deploy.trust import enroll_key, list_keys, revoke_key
from edgesdk.signing import generate_keys, sign_bundle

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("need_sshd")]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))


PY, ROOT_SMOKE = board_python()


@pytest.fixture
def board():
    yield from sshd_board("sign")


@pytest.fixture(scope="module")
def src():
    d = public_dir("edgesdk-sign-bundles-")
    yield {s: make_test_bundle(d / f"s{s}", seed=s) for s in (0, 1, 2, 3)}
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def keys(tmp_path):
    return {n: generate_keys(tmp_path / "keys", n) for n in ("old", "new", "other")}


def copy(src_dir: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_dir, dest)
    os.chmod(dest, 0o755)
    return dest


def history(b) -> list[dict]:
    return json.loads((b.base / "state.json").read_text())["history"]


def assert_untouched(b, cur: str | None, rels: list[str]) -> None:
    assert current_release(b) == cur and release_ids(b) == rels and staged_ids(b) == []


def test_keyless_board_accepts_unsigned_with_a_warning(board, src, keys, tmp_path):
    prof = local_profile()
    r = flash(src[0], prof, board.target(), flash_opts())
    assert r.status == "success", r.error
    assert any("trusts no signing key and accepted an unsigned bundle" in w for w in r.warnings), r.warnings
    signed = copy(src[1], tmp_path / "b1")
    sign_bundle(signed, keys["old"].private)
    r = flash(signed, prof, board.target(), flash_opts())
    assert r.status == "success" and any("was not checked" in w for w in r.warnings), r.warnings
    assert list_keys(board.target())["keys"] == []


def test_enrolled_board_refuses_unsigned_other_key_and_altered(board, src, keys, tmp_path, monkeypatch):
    prof = local_profile()
    t = board.target()
    assert enroll_key(t, keys["old"].public)["keys"] == [keys["old"].fingerprint]
    good = copy(src[0], tmp_path / "good")
    sign_bundle(good, keys["old"].private)
    r = flash(good, prof, t, flash_opts())
    assert r.status == "success", r.error
    assert any(keys["old"].fingerprint in n for n in r.notes) and r.warnings == ()
    cur, rels = current_release(board), release_ids(board)
    assert cur == bundle_id(good)

    unsigned = copy(src[1], tmp_path / "unsigned")
    other = copy(src[1], tmp_path / "other")
    sign_bundle(other, keys["other"].private)
    altered = copy(src[1], tmp_path / "altered")
    sign_bundle(altered, keys["old"].private)
    m = json.loads((altered / "manifest.json").read_text())
    m["created_at"] = "2020-01-01T00:00:00Z"  # outside the content id: only the signature notices
    (altered / "manifest.json").write_text(json.dumps(m, indent=2))
    cases = [(unsigned, "unsigned"), (other, "does not trust"), (altered, "changed after signing")]
    # the host refuses first, from what the probe says (nothing locked, provisioned or pushed)
    for bundle, why in cases:
        r = flash(bundle, prof, t, flash_opts())
        assert r.status == "refused" and r.exit_code == 2 and why in r.error, (why, r.error)
        assert "push" not in r.phases and "admit" not in r.phases
        assert_untouched(board, cur, rels)
    # a host whose own check passes anything: the board refuses at admit itself, before anything is staged
    import edgesdk.signing

    monkeypatch.setattr(edgesdk.signing, "verify_bundle", lambda bundle, trusted=None: "ed25519:" + "0" * 32)
    for bundle, why in [(unsigned, "it is unsigned"), (other, "which this board does not trust"),
                        (altered, "altered after signing")]:
        r = flash(bundle, prof, t, flash_opts())
        assert r.status == "refused" and r.exit_code == 2 and why in r.error and "nothing was staged" in r.error, r.error
        assert "admit" in r.phases and "push" not in r.phases
        assert_untouched(board, cur, rels)
    assert status(t).current == cur


def test_staged_files_altered_after_signing(board, src, keys, tmp_path):
    """The board re-checks at install: a staged manifest whose signature no longer matches, a staged file whose
    sha256 no longer matches the signed manifest. Nothing is installed, current unchanged."""
    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    first = copy(src[0], tmp_path / "first")
    sign_bundle(first, keys["old"].private)
    assert flash(first, prof, t, flash_opts()).status == "success"
    cur, rels = current_release(board), release_ids(board)
    nxt = copy(src[1], tmp_path / "next")
    sign_bundle(nxt, keys["old"].private)

    def edit_manifest(rb, **info):
        p = Path(rb.base) / "staging" / bundle_id(nxt) / "manifest.json"
        m = json.loads(p.read_text())
        m["release_version"] = 1000
        p.write_text(json.dumps(m, indent=2))

    r = flash(nxt, prof, t, flash_opts(fail_points={"before_install": edit_manifest}))
    assert r.status == "refused" and r.exit_code == 2 and "altered after signing" in r.error, r.error
    assert "staged files were deleted" in r.error
    assert_untouched(board, cur, rels)

    def edit_model(rb, **info):
        p = Path(rb.base) / "staging" / bundle_id(nxt) / "model.onnx"
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))

    r = flash(nxt, prof, t, flash_opts(fail_points={"before_install": edit_model}))
    assert r.status == "failed" and "does not match the manifest" in r.error, r.error
    assert current_release(board) == cur and release_ids(board) == rels
    # unharmed, it goes through
    r = flash(nxt, prof, t, flash_opts())
    assert r.status == "success", r.error
    assert current_release(board) == bundle_id(nxt)


def test_key_rotation(board, src, keys, tmp_path):
    """Enroll the new key, flash signed with it, revoke the old one: then the old key's bundles are refused."""
    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    a = copy(src[0], tmp_path / "a")
    sign_bundle(a, keys["old"].private, version=5)  # the old key's releases are at v5 by now
    assert flash(a, prof, t, flash_opts()).status == "success"
    assert enroll_key(t, keys["new"].public)["keys"] == sorted([keys["old"].fingerprint, keys["new"].fingerprint])
    b = copy(src[1], tmp_path / "b")
    sign_bundle(b, keys["new"].private)  # the new key's first bundle, default version: above v5, not v1
    r = flash(b, prof, t, flash_opts())
    assert r.status == "success" and current_release(board) == bundle_id(b), r.error
    rv = revoke_key(t, keys["old"].public)  # by its .pub file; a fingerprint works too
    assert rv["keys"] == [keys["new"].fingerprint] and rv["warning"] is None
    c = copy(src[2], tmp_path / "c")
    sign_bundle(c, keys["old"].private)
    r = flash(c, prof, t, flash_opts())
    assert r.status == "refused" and r.exit_code == 2 and "does not trust" in r.error
    assert current_release(board) == bundle_id(b)
    assert bundle_id(c) not in release_ids(board) and staged_ids(board) == []
    # a release signed by the revoked key, still on the board, is not activated again by a flash, nor rolled back
    # to, nor run
    r = flash(a, prof, t, flash_opts())
    assert r.status == "refused" and current_release(board) == bundle_id(b)
    from edgesdk.errors import InputError as _InputError

    with pytest.raises(_InputError, match="does not trust"):
        rollback(t, to=bundle_id(a))
    with pytest.raises(_InputError, match="nothing was run"):
        flash_mod.run_remote(t, [], tmp_path / "out", release=bundle_id(a), python=PY, allow_root=ROOT_SMOKE)
    assert current_release(board) == bundle_id(b)
    # the last key stays unless forced
    from edgesdk.errors import InputError

    with pytest.raises(InputError, match="last trusted key"):
        revoke_key(t, keys["new"].fingerprint)
    ev = [e["event"] for e in history(board) if e["event"].startswith("key-")]
    assert ev == ["key-enrolled", "key-enrolled", "key-revoked"]


def test_downgrade_refused_allowed_recorded_and_rollback(board, src, keys, tmp_path, monkeypatch):
    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    v1 = copy(src[0], tmp_path / "v1")
    sign_bundle(v1, keys["old"].private, version=1)
    v2 = copy(src[1], tmp_path / "v2")
    sign_bundle(v2, keys["old"].private, version=2)
    assert flash(v1, prof, t, flash_opts()).status == "success"
    assert flash(v2, prof, t, flash_opts()).status == "success"
    assert current_release(board) == bundle_id(v2)
    old = copy(src[2], tmp_path / "old")
    sign_bundle(old, keys["old"].private, version=1)
    r = flash(old, prof, t, flash_opts())
    assert r.status == "refused" and r.exit_code == 2 and "older than the current release" in r.error
    assert "--allow-downgrade" in r.error
    assert current_release(board) == bundle_id(v2) and bundle_id(old) not in release_ids(board)
    # the board refuses it itself too, before anything is staged
    real = flash_mod._check_signature
    monkeypatch.setattr(flash_mod, "_check_signature",
                        lambda bundle, manifest, facts, o, res, host: real(bundle, manifest,
                                                                         {**facts, "current_version": None}, o, res,
                                                                         host))
    r = flash(old, prof, t, flash_opts())
    assert r.status == "refused" and "release_version 1 is older" in r.error and staged_ids(board) == []
    monkeypatch.undo()
    r = flash(old, prof, t, flash_opts(allow_downgrade=True))
    assert r.status == "success" and current_release(board) == bundle_id(old), r.error
    assert any("downgrade: release_version 1 replaces 2" in n for n in r.notes), r.notes
    act = [e for e in history(board) if e["event"] == "activated"][-1]
    assert act["release"] == bundle_id(old) and act["downgrade"]["from"] == 2 and act["downgrade"]["to"] == 1
    assert act["release_version"] == 1 and act["signed_by"] == keys["old"].fingerprint
    # rollback to a release still on the board: allowed, recorded with both versions
    rb = rollback(t, to=bundle_id(v2))
    assert rb.current == bundle_id(v2) == current_release(board)
    rb = rollback(t, to=bundle_id(v1))
    assert rb.current == bundle_id(v1) == current_release(board)
    ev = history(board)[-1]
    assert ev["event"] == "rolled-back" and ev["downgrade"] == {"from": 2, "to": 1, "by": "rollback"}


def test_cli_user_path_keys_convert_sign_flash(board, tmp_path):
    """As a user: `edgesdk keys generate`, `keys enroll`, `convert --sign`, `flash`; an unsigned bundle is refused
    with exit 2; `sign` makes it flashable."""
    import runtime_bundles as rbundles

    exe = str(Path(sys.executable).parent / "edgesdk")
    env = dict(os.environ, EDGESDK_HOME=str(tmp_path / "home"))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=600, check=False)

    hostargs = ["--host", board.spec, "-i", str(board.key), "--known-hosts", str(board.known_hosts),
                "--remote-dir", str(board.base)]
    r = cli("keys", "generate", "--out", str(tmp_path / "k"), "--name", "rel", "--json")
    assert r.returncode == 0, r.stderr
    kp = json.loads(r.stdout)
    assert oct(os.stat(kp["private_key"]).st_mode & 0o777) == "0o600"
    r = cli("keys", "enroll", kp["public_key"], *hostargs)
    assert r.returncode == 0 and kp["fingerprint"] in r.stdout, r.stdout + r.stderr
    model = tmp_path / "tiny.onnx"
    rbundles.onnx_model("all", rbundles.weights(0), model)
    r = cli("convert", str(model), "--board", "rpi4", "--engine", "onnxruntime", "-o", str(tmp_path / "signed"),
            "--sign", kp["private_key"], "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    conv = json.loads(r.stdout)
    import time

    assert abs(conv["signed"]["release_version"] - time.time()) < 600  # the default: UTC seconds
    assert (tmp_path / "signed" / "manifest.sig").is_file()
    os.chmod(tmp_path / "signed", 0o755)
    flash_args = ["--board", "rpi4", "--force", "--python", PY, *hostargs, "--json"]
    if ROOT_SMOKE:
        flash_args.append("--allow-root-smoke")
    r = cli("flash", str(tmp_path / "signed"), *flash_args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    signed_id = conv["signed"]["bundle_id"]
    assert res["status"] == "success"
    assert current_release(board) == signed_id == bundle_id(tmp_path / "signed")
    model2 = tmp_path / "tiny2.onnx"
    rbundles.onnx_model("all", rbundles.weights(1), model2)
    r = cli("convert", str(model2), "--board", "rpi4", "--engine", "onnxruntime", "-o", str(tmp_path / "unsigned"))
    assert r.returncode == 0, r.stderr[-2000:]
    os.chmod(tmp_path / "unsigned", 0o755)
    r = cli("flash", str(tmp_path / "unsigned"), *flash_args)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 2 and res["status"] == "refused" and "unsigned" in res["error"]
    assert current_release(board) == signed_id and "Traceback" not in r.stderr
    r = cli("sign", str(tmp_path / "unsigned"), "--key", kp["private_key"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["release_version"] > conv["signed"]["release_version"]
    r = cli("flash", str(tmp_path / "unsigned"), *flash_args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert current_release(board) == bundle_id(tmp_path / "unsigned") != signed_id


def _forge_sig(bundle: Path, fp: str) -> None:
    """manifest.sig naming the trusted key `fp`, its signature garbage: what a board with no key never checks."""
    import base64

    doc = {"schema": "edgesdk.signature/1", "algorithm": "ed25519", "key": fp,
           "public_key": base64.b64encode(b"\0" * 32).decode(), "signature": base64.b64encode(b"\1" * 64).decode()}
    (bundle / "manifest.sig").write_text(json.dumps(doc))


def test_releases_installed_before_enrollment_are_refused(board, src, keys, tmp_path, monkeypatch):
    """A forged-signature release and an unsigned one, both installed (and activated) while the board had no key:
    once a key is enrolled, neither is activated again, rolled back to or run, even when the host's own checks
    pass everything."""
    prof = local_profile()
    t = board.target()
    k = keys["old"]
    forged = copy(src[0], tmp_path / "forged")
    sign_bundle(forged, keys["other"].private, version=1)
    _forge_sig(forged, k.fingerprint)
    unsigned = copy(src[1], tmp_path / "unsigned")
    for bb in (forged, unsigned):
        r = flash(bb, prof, t, flash_opts())
        assert r.status == "success", r.error
    enroll_key(t, k.public)
    good = copy(src[2], tmp_path / "good")
    sign_bundle(good, k.private, version=2)
    assert flash(good, prof, t, flash_opts()).status == "success"
    assert current_release(board) == bundle_id(good)
    from edgesdk.errors import InputError

    for bb, why in ((forged, "altered after signing"), (unsigned, "unsigned")):
        with pytest.raises(InputError, match=why):
            rollback(t, to=bundle_id(bb))
        with pytest.raises(InputError, match="nothing was run"):
            flash_mod.run_remote(t, [], tmp_path / "out", release=bundle_id(bb), python=PY,
                                 allow_root=ROOT_SMOKE)
        assert current_release(board) == bundle_id(good)
    # the host's own checks pass anything: the board's install ("already installed") and activate still refuse
    import edgesdk.signing

    monkeypatch.setattr(edgesdk.signing, "verify_bundle", lambda bundle, trusted=None: k.fingerprint)
    real_verify = flash_mod.RemoteBoard.call

    def call(self, verb, *args, **kw):  # a host that skips admit: the board's `need` refuses to stage
        if verb == "admit":
            return {"ok": True, "key": k.fingerprint}
        return real_verify(self, verb, *args, **kw)

    # (v1 < v2: the version is not what refuses it)
    r = flash(forged, prof, t, flash_opts(allow_downgrade=True))
    assert r.status == "refused" and "altered after signing" in r.error, r.error
    monkeypatch.setattr(flash_mod.RemoteBoard, "call", call)
    # installed already, but never admitted: refused
    r = flash(forged, prof, t, flash_opts(allow_downgrade=True))
    assert r.status == "refused" and "not admitted" in r.error, r.error
    new = copy(src[3], tmp_path / "new")
    sign_bundle(new, keys["other"].private)
    r = flash(new, prof, t, flash_opts())
    assert r.status == "refused" and "not admitted" in r.error, r.error
    assert bundle_id(new) not in staged_ids(board), r.error
    assert current_release(board) == bundle_id(good) and bundle_id(new) not in release_ids(board)


def test_highest_accepted_version_after_a_rollback(board, src, keys, tmp_path):
    """v5 -> rollback to v3: a v4 is refused (the board's floor is the highest it accepted), a v6 goes in."""
    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    v = {}
    for n, s in ((3, 0), (5, 1), (4, 2), (6, 3)):
        v[n] = copy(src[s], tmp_path / f"v{n}")
        sign_bundle(v[n], keys["old"].private, version=n)
    assert flash(v[3], prof, t, flash_opts()).status == "success"
    assert flash(v[5], prof, t, flash_opts()).status == "success"
    assert rollback(t, to=bundle_id(v[3])).current == bundle_id(v[3]) == current_release(board)
    r = flash(v[4], prof, t, flash_opts())
    assert r.status == "refused" and r.exit_code == 2 and "the highest" in r.error and "release_version 5" in r.error
    assert current_release(board) == bundle_id(v[3]) and bundle_id(v[4]) not in release_ids(board)
    assert json.loads((board.base / "state.json").read_text())["highest_version"] == 5
    r = flash(v[6], prof, t, flash_opts())
    assert r.status == "success" and current_release(board) == bundle_id(v[6]), r.error


def test_an_older_edgesdk_does_not_replace_the_agent(board, src, keys, tmp_path):
    """The board's agent is newer than this host's: flash, status and keys refuse (exit 2) and leave it as is."""
    from edgesdk.deploy.board import AgentTooNew
    from edgesdk.runtime.agent import AGENT_VERSION

    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    assert (board.base / "trust" / "agent_min_version").read_text().strip() == str(AGENT_VERSION)
    agent_file = board.base / "agent.py"
    newer = agent_file.read_text().replace(f"AGENT_VERSION = {AGENT_VERSION}\n", "AGENT_VERSION = 99\n")
    agent_file.write_text(newer)
    a = copy(src[0], tmp_path / "a")
    sign_bundle(a, keys["old"].private)
    r = flash(a, prof, t, flash_opts())
    assert r.status == "refused" and r.exit_code == 2 and "Upgrade edgesdk on this host" in r.error, r.error
    with pytest.raises(AgentTooNew):
        status(t)
    with pytest.raises(AgentTooNew):
        list_keys(t)
    assert agent_file.read_text() == newer and release_ids(board) == []


def test_profile_and_tune_sign_what_they_flash(board, src, keys, tmp_path):
    """On a board with a trusted key: profile and tune refuse an unsigned bundle, and with --sign KEY flash a signed
    copy (the bundle itself unchanged) and then a signed tuned release."""
    from edgesdk.errors import RemoteError
    from edgesdk.profile import ProfileOptions, profile, sweep, tune

    prof = local_profile()
    t = board.target()
    enroll_key(t, keys["old"].public)
    b = copy(src[0], tmp_path / "b")
    popts = {"python": PY, "allow_root": ROOT_SMOKE, "runs": 2, "warmup": 0, "frames": 0,
             "flash": FlashOptions(python=PY, smoke_timeout=120, allow_root_smoke=ROOT_SMOKE)}
    with pytest.raises(RemoteError, match="unsigned"):
        profile(b, prof, t, ProfileOptions(**popts))
    assert release_ids(board) == []
    rep = profile(b, prof, t, ProfileOptions(**popts, sign_key=keys["old"].private))
    rid = rep.data["target"]["release"]
    # a signed copy was flashed
    assert current_release(board) == rid != bundle_id(b) and not (b / "manifest.sig").exists()
    hist = [e for e in history(board) if e["event"] == "activated"]
    assert hist[-1]["signed_by"] == keys["old"].fingerprint
    # again: the same signed copy, already on the board: nothing new flashed
    rep2 = profile(b, prof, t, ProfileOptions(**popts, sign_key=keys["old"].private))
    assert rep2.data["target"]["release"] == rid and rep2.data["target"]["flash"] is None
    res = sweep(b, prof, t, "threads=1,2", ProfileOptions(**popts, sign_key=keys["old"].private))
    assert res.best is not None, [r.reason for r in res.rows]
    with pytest.raises(Exception, match="unsigned"):
        tune(res, prof, t, python=PY, allow_root=ROOT_SMOKE)
    done = tune(res, prof, t, python=PY, allow_root=ROOT_SMOKE, sign_key=keys["old"].private)
    assert current_release(board) == done["release"]
    assert (board.base / "releases" / done["release"] / "manifest.sig").is_file()
    assert (board.base / "releases" / done["release"] / "tuning.json").is_file()

"""Signed bundles without a board: keys (mode 0600), manifest.sig over the exact manifest bytes, the board-side
verifier (`python -m edgesdk.runtime.trust verify`), the agent's trust store and admit/install/activate checks,
tuning.json inside the content id, and `edgesdk sign` / `keys generate` on bad input (exit 2, no traceback)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runtime_bundles as rbundles
from typer.testing import CliRunner

from edgesdk.cli import app
from edgesdk.deploy import agent
from edgesdk.deploy.flash import check_bundle
from edgesdk.errors import BundleError, InputError
from edgesdk.runtime import trust
from edgesdk.runtime.manifest import load_manifest
from edgesdk.signing import generate_keys, sign_bundle, verify_bundle

TOKEN = "s" * 16
TUNING = {"schema": "edgesdk.tuning/1", "engines": [{"name": "onnxruntime", "options": {"threads": 2}}], "threads": 2}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESDK_HOME", str(tmp_path / "home"))  # the signer's version record


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rbundles.make_bundle(tmp_path_factory.mktemp("sig") / "b", [("onnxruntime", "all")])


@pytest.fixture()
def bundle(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "b"))


def run_agent(base: Path, *argv: str, stdin: dict | None = None, monkeypatch=None, capsys=None) -> tuple[int, dict]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(stdin or {}).encode())))
    rc = agent.main(["--base", str(base), *argv])
    return rc, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# -- keys and signatures -------------------------------------------------------------------------------------------

def test_keys_generate_private_key_is_0600_and_never_printed(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path / "k"), "--name", "rel", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    priv, pub = Path(info["private_key"]), Path(info["public_key"])
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert info["fingerprint"].startswith("ed25519:") and len(info["fingerprint"]) == 8 + 32
    secret = priv.read_text()
    assert "PRIVATE KEY" in secret and secret.split("\n")[1] not in r.output
    assert trust.fingerprint(trust.raw_from_pem(pub.read_text())) == info["fingerprint"]
    assert not list((tmp_path / "k").glob(".rel*"))  # no temp file left
    again = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path / "k"), "--name", "rel"])
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output
    # the human output names the public key and its fingerprint, never the private key's content
    r2 = CliRunner().invoke(app, ["keys", "generate", "--out", str(tmp_path / "k2")])
    assert r2.exit_code == 0 and "ed25519:" in r2.output and "PRIVATE KEY" not in r2.output


def test_sign_and_verify(bundle: Path, tmp_path: Path) -> None:
    k = generate_keys(tmp_path, "k")
    before = load_manifest(bundle).bundle_id
    t0 = int(time.time())
    s = sign_bundle(bundle, k.private)
    m = load_manifest(bundle)
    # the default version is the UTC time in seconds (hosts signing for the same boards go up together)
    assert t0 <= s.release_version <= int(time.time()) and m.release_version == s.release_version
    assert m.bundle_id == s.bundle_id != before and m.untuned_id() == before  # release_version is in the id
    assert verify_bundle(bundle) == k.fingerprint == s.fingerprint
    assert verify_bundle(bundle, {k.fingerprint}) == k.fingerprint
    check_bundle(bundle)  # manifest.sig is the one unlisted file allowed
    # nothing outside the signed bytes: release_version and bundle_id are in the (signed) manifest only
    assert set(json.loads((bundle / "manifest.sig").read_text())) == {"schema", "algorithm", "key", "public_key",
                                                                       "signature"}
    # the default goes up with each signing on this host, whatever the key (a rotation goes on from the old key's
    # versions); an explicit one is kept
    assert sign_bundle(bundle, k.private).release_version == s.release_version + 1
    far = s.release_version + 1000
    assert sign_bundle(bundle, k.private, version=far).release_version == far
    other = generate_keys(tmp_path, "other")
    assert sign_bundle(bundle, other.private).release_version == far + 1  # a new key: not back to 1 (or to now)
    assert sign_bundle(bundle, k.private).release_version == far + 2
    with pytest.raises(BundleError, match="does not trust"):
        verify_bundle(bundle, {other.fingerprint})
    # the manifest changed after signing, in a field outside the content id: only the signature notices
    d = json.loads((bundle / "manifest.json").read_text())
    d["created_at"] = "2020-01-01T00:00:00Z"
    (bundle / "manifest.json").write_text(json.dumps(d, indent=2))
    check_bundle(bundle)
    with pytest.raises(BundleError, match="changed after signing"):
        verify_bundle(bundle)


def test_board_verifier_checks_against_its_own_trust_store(bundle: Path, tmp_path: Path) -> None:
    """`python -I -m edgesdk.runtime.trust verify`, what the agent runs: the store's key, not the one in the sig."""
    k, other = generate_keys(tmp_path, "k"), generate_keys(tmp_path, "other")
    sign_bundle(bundle, k.private, version=1)
    store = tmp_path / "trust"
    store.mkdir()

    def verify(manifest: bytes, sig: str | None) -> tuple[int, dict]:
        data = json.dumps({"manifest": base64.b64encode(manifest).decode(), "signature": sig})
        r = subprocess.run([sys.executable, "-I", "-B", "-m", "edgesdk.runtime.trust", "verify", f"--trust={store}"],
                           input=data, capture_output=True, text=True, timeout=120, check=False)
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])

    mbytes, sig = (bundle / "manifest.json").read_bytes(), (bundle / "manifest.sig").read_text()
    rc, res = verify(mbytes, sig)
    assert rc == 1 and res["kind"] == "untrusted"  # an empty store trusts nobody
    (store / (trust.fp_hex(other.fingerprint) + ".pub")).write_text(other.public.read_text())
    assert verify(mbytes, sig)[1]["kind"] == "untrusted"
    (store / (trust.fp_hex(k.fingerprint) + ".pub")).write_text(k.public.read_text())
    assert verify(mbytes, sig) == (0, {"ok": True, "key": k.fingerprint})
    rc, res = verify(mbytes.replace(b'"release_version": 1', b'"release_version": 7'), sig)
    assert rc == 1 and res["kind"] == "bad-signature" and "altered after signing" in res["error"]
    assert verify(mbytes, None)[1]["kind"] == "unsigned"
    # a signature that names the trusted key but embeds another key and is made by it: refused (store key used)
    sign_bundle(bundle, other.private)
    forged = json.loads((bundle / "manifest.sig").read_text())
    forged["key"] = k.fingerprint
    assert verify((bundle / "manifest.json").read_bytes(), json.dumps(forged))[1]["kind"] == "bad-signature"


def test_agent_reads_pem_keys_like_cryptography(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    k = generate_keys(tmp_path, "k")
    pem = k.public.read_text()
    raw = serialization.load_pem_public_key(pem.encode()).public_bytes(serialization.Encoding.Raw,
                                                                        serialization.PublicFormat.Raw)
    assert agent.pem_raw(pem) == trust.raw_from_pem(pem) == raw
    assert agent.key_fingerprint(raw) == trust.fingerprint(raw) == k.fingerprint
    for bad in ("", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", pem.replace("MCow", "MCox")):
        with pytest.raises(agent.Fail):
            agent.pem_raw(bad)
    from cryptography.hazmat.primitives.asymmetric import ec

    ecpem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(agent.Fail, match="Ed25519"):
        agent.pem_raw(ecpem)


# -- the agent: trust store, admit, install, activate ---------------------------------------------------------------

def _bid(src: Path) -> str:
    return json.loads((src / "manifest.json").read_text())["bundle_id"]


def _staged(base: Path, src: Path) -> str:
    bid = _bid(src)
    shutil.copytree(src, base / "staging" / bid)
    return bid


def _admit(base: Path, src: Path, monkeypatch, capsys, *extra: str) -> tuple[int, dict]:
    sig = src / "manifest.sig"
    return run_agent(base, "admit", _bid(src), TOKEN, f"--python={sys.executable}", *extra,
                     stdin={"manifest": base64.b64encode((src / "manifest.json").read_bytes()).decode(),
                            "signature": sig.read_text() if sig.is_file() else None},
                     monkeypatch=monkeypatch, capsys=capsys)


def test_agent_trust_store_admit_install_activate(bundle: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    base = tmp_path / "board"
    k, other = generate_keys(tmp_path, "k"), generate_keys(tmp_path, "other")
    assert run_agent(base, "lock", "acquire", TOKEN, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    # no key: an unsigned bundle is admitted, unchecked
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 0 and r["checked"] is False and r["signed"] is False
    # trust add needs the lock; a bad key is bad input
    assert run_agent(base, "trust", "add", "x" * 16, stdin={"pem": k.public.read_text()},
                     monkeypatch=monkeypatch, capsys=capsys)[0] == agent.EXIT_LOCKED
    assert run_agent(base, "trust", "add", TOKEN, stdin={"pem": "nope"}, monkeypatch=monkeypatch,
                     capsys=capsys)[0] == 2
    rc, r = run_agent(base, "trust", "add", TOKEN, stdin={"pem": k.public.read_text()}, monkeypatch=monkeypatch,
                      capsys=capsys)
    assert rc == 0 and r["keys"] == [k.fingerprint]
    assert run_agent(base, "trust", "list", monkeypatch=monkeypatch, capsys=capsys)[1]["keys"] == [k.fingerprint]
    # unsigned, other key, altered after signing: refused at admit, nothing written
    before = sorted(p.relative_to(base).as_posix() for p in base.rglob("*"))
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "unsigned" and "unsigned" in r["error"]
    sign_bundle(bundle, other.private)
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "untrusted" and other.fingerprint in r["error"]
    sign_bundle(bundle, k.private, version=5)
    good_manifest = (bundle / "manifest.json").read_bytes()
    (bundle / "manifest.json").write_bytes(good_manifest.replace(b'"release_version": 5', b'"release_version": 6'))
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "bad-signature" and "altered after signing" in r["error"]
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) == before
    # signed by the trusted key: admitted; install checks the staged manifest again
    (bundle / "manifest.json").write_bytes(good_manifest)
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 0 and r["checked"] and r["key"] == k.fingerprint and r["release_version"] == 5
    bid = _staged(base, bundle)
    staged_manifest = base / "staging" / bid / "manifest.json"
    staged_manifest.write_bytes(good_manifest.replace(b'"release_version": 5', b'"release_version": 9'))
    rc, r = run_agent(base, "install", bid, TOKEN, f"--python={sys.executable}", monkeypatch=monkeypatch,
                      capsys=capsys)
    assert rc == 2 and r["refused"] == "bad-signature" and "deleted" in r["error"]
    assert not (base / "staging" / bid).exists() and not (base / "releases" / bid).exists()
    bid = _staged(base, bundle)
    rc, r = run_agent(base, "install", bid, TOKEN, f"--python={sys.executable}", monkeypatch=monkeypatch,
                      capsys=capsys)
    assert rc == 0 and r["key"] == k.fingerprint
    assert (base / "releases" / bid / "manifest.sig").is_file()
    # activate refuses a release whose signer is no longer trusted (the check needs no crypto)
    rc, r = run_agent(base, "trust", "add", TOKEN, stdin={"pem": other.public.read_text()},
                      monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and len(r["keys"]) == 2
    rc, r = run_agent(base, "trust", "remove", TOKEN, k.fingerprint, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 0 and r["keys"] == [other.fingerprint]
    rc, r = run_agent(base, "activate", bid, TOKEN, f"--python={sys.executable}", monkeypatch=monkeypatch,
                      capsys=capsys)
    assert rc == 2 and r["refused"] == "untrusted" and not (base / "current").exists()
    # the last key goes only with --force
    rc, r = run_agent(base, "trust", "remove", TOKEN, other.fingerprint, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 2 and "last trusted key" in r["error"]
    hist = json.loads((base / "state.json").read_text())["history"]
    assert [e["event"] for e in hist if e["event"].startswith("key-")] == ["key-enrolled", "key-enrolled",
                                                                            "key-revoked"]


def test_agent_downgrade_refused_unless_allowed(bundle: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    assert run_agent(base, "lock", "acquire", TOKEN, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    assert run_agent(base, "trust", "add", TOKEN, stdin={"pem": k.public.read_text()}, monkeypatch=monkeypatch,
                     capsys=capsys)[0] == 0
    sign_bundle(bundle, k.private, version=3)
    bid = _staged(base, bundle)
    assert run_agent(base, "install", bid, TOKEN, f"--python={sys.executable}", monkeypatch=monkeypatch,
                     capsys=capsys)[0] == 0
    (base / "current").symlink_to(f"releases/{bid}")
    older = Path(shutil.copytree(bundle, tmp_path / "older"))
    sign_bundle(older, k.private, version=2)
    rc, r = _admit(base, older, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "downgrade" and r["current_version"] == 3 and "--allow-downgrade" in r["error"]
    rc, r = _admit(base, older, monkeypatch, capsys, "--allow-downgrade")
    assert rc == 0 and r["downgrade"] == {"from": 3, "to": 2, "from_release": bid, "allowed": True}
    assert run_agent(base, "probe", monkeypatch=monkeypatch, capsys=capsys)[1]["current_version"] == 3


# -- tuning.json is inside the content id -----------------------------------------------------------------------------

def test_tuning_json_added_after_conversion_changes_the_content_id(bundle: Path, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    from edgesdk.bundle import add_tuning

    m0 = load_manifest(bundle)
    # dropped in beside the manifest, unlisted: refused on the host and by the agent, never "already installed"
    (bundle / "tuning.json").write_text(json.dumps(dict(TUNING, bundle_id=m0.bundle_id)))
    with pytest.raises(BundleError, match="not listed in manifest.json's files"):
        check_bundle(bundle)
    base = tmp_path / "board"
    assert run_agent(base, "lock", "acquire", TOKEN, monkeypatch=monkeypatch, capsys=capsys)[0] == 0
    bid = _staged(base, bundle)
    rc, r = run_agent(base, "install", bid, TOKEN, monkeypatch=monkeypatch, capsys=capsys)
    assert rc == 2 and "tuning.json: not listed" in r["error"] and not (base / "releases" / bid).exists()
    # `edgesdk tune` lists it: a new content id, and a signature made before no longer applies
    (bundle / "tuning.json").unlink()
    k = generate_keys(tmp_path, "k")
    sign_bundle(bundle, k.private)
    good = json.dumps(dict(TUNING, bundle_id=m0.bundle_id))
    m1 = add_tuning(bundle, good)
    assert m1.bundle_id != m0.bundle_id and "tuning.json" in m1.files and m1.untuned_id() == m0.bundle_id
    assert not (bundle / "manifest.sig").exists()
    check_bundle(bundle)
    sign_bundle(bundle, k.private)
    verify_bundle(bundle)
    # changing the tuning after signing: its sha256 no longer matches the (signed) manifest
    (bundle / "tuning.json").write_text(json.dumps(dict(TUNING, threads=8, bundle_id=m0.bundle_id)))
    with pytest.raises(BundleError, match="tuning.json: sha256"):
        check_bundle(bundle)
    # a tuning made for another bundle is refused
    (bundle / "tuning.json").write_text(good)
    m2 = add_tuning(bundle, json.dumps(dict(TUNING, bundle_id="b0000000000000000")))
    with pytest.raises(BundleError, match="made for bundle b0000000000000000"):
        check_bundle(bundle)
    assert m2.bundle_id not in (m0.bundle_id, m1.bundle_id)


def test_tuning_listed_in_the_manifest_is_applied_by_the_session(bundle: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgesdk.bundle import add_tuning
    from edgesdk.runtime import Session

    m0 = load_manifest(bundle)
    add_tuning(bundle, json.dumps(dict(TUNING, bundle_id=m0.bundle_id)))
    with Session(bundle) as s:
        assert s.tuning is not None and s.tuning["threads"] == 2


# -- bad input: exit 2, the file or field named, no traceback -------------------------------------------------------

def test_sign_bad_input_exit_2(bundle: Path, tmp_path: Path) -> None:
    k = generate_keys(tmp_path, "k")
    runner = CliRunner()

    def sign(*args: str) -> tuple[int, str]:
        r = runner.invoke(app, ["sign", *args])
        assert "Traceback" not in r.output, r.output
        return r.exit_code, r.output

    code, out = sign(str(bundle), "--key", str(tmp_path / "missing.key"))
    assert code == 2 and "missing.key" in out and "keys generate" in out
    code, out = sign(str(bundle), "--key", str(k.public))
    assert code == 2 and "public key" in out
    loose = tmp_path / "loose.key"
    shutil.copy(k.private, loose)
    os.chmod(loose, 0o644)
    code, out = sign(str(bundle), "--key", str(loose))
    assert code == 2 and "chmod 600" in out
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    os.chmod(junk, 0o600)
    code, out = sign(str(bundle), "--key", str(junk))
    assert code == 2 and "junk.key" in out
    code, out = sign(str(tmp_path / "nobundle"), "--key", str(k.private))
    assert code == 2 and "nobundle" in out
    code, out = sign(str(bundle), "--key", str(k.private), "--version", "-1")
    assert code == 2 and "--version" in out
    (bundle / "stray.txt").write_text("x")
    code, out = sign(str(bundle), "--key", str(k.private))
    assert code == 2 and "stray.txt" in out
    assert not (bundle / "manifest.sig").exists()  # nothing written on refusal
    (bundle / "stray.txt").unlink()
    r = runner.invoke(app, ["sign", str(bundle), "--key", str(k.private), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["key"] == k.fingerprint


def test_revoke_bad_fingerprint_is_input_error(tmp_path: Path) -> None:
    from edgesdk.deploy.transport import SSHTarget
    from edgesdk.deploy.trust import revoke_key

    with pytest.raises(InputError, match="neither a public key file nor a fingerprint"):
        revoke_key(SSHTarget(host="unused"), "zzz")


def test_wheelhouse_names_the_fix_when_a_platform_has_no_signing_wheel(monkeypatch, tmp_path: Path) -> None:
    """PyPI has no cffi wheel for armv7l: a board with a trust store there gets a clear refusal with the fix."""
    from edgesdk.boards import get_board
    from edgesdk.deploy import wheelhouse
    from edgesdk.errors import EnvironmentProblem

    calls: list[list[str]] = []

    def fake_pip(args: list[str], what: str) -> None:
        calls.append(args)
        if "cffi>=1.12" in args:
            raise EnvironmentProblem(f"{what} failed:\n  No matching distribution found for cffi")
        Path(args[args.index("-d") + 1], "numpy-2.0-cp311-cp311-linux_armv7l.whl").write_bytes(b"x")

    monkeypatch.setattr(wheelhouse, "_pip", fake_pip)
    with pytest.raises(EnvironmentProblem, match="no wheel of cryptography") as ei:
        wheelhouse.build_wheelhouse(get_board("hi3519a"), set(), signing=True, cache=tmp_path / "wh")
    assert "piwheels" in str(ei.value.fix) and str(wheelhouse.local_wheels_dir()) in str(ei.value.fix)
    assert not list((tmp_path / "wh").glob("*/.complete"))
    assert wheelhouse.SIGNING_PACKAGES == ("cryptography>=42", "cffi>=1.12")


# -- review fixes: every use of a release re-checks its signature; the highest version; old agents ---------------------

def _install(base: Path, src: Path, monkeypatch, capsys) -> tuple[int, dict]:
    bid = _staged(base, src)
    return run_agent(base, "install", bid, TOKEN, f"--python={sys.executable}", monkeypatch=monkeypatch, capsys=capsys)


def _forge(src: Path, fp: str) -> None:
    """A manifest.sig that names `fp` with a signature that is garbage (what a board with no key never checks)."""
    doc = {"schema": trust.SIG_SCHEMA, "algorithm": trust.ALGORITHM, "key": fp,
           "public_key": base64.b64encode(b"\0" * 32).decode(), "signature": base64.b64encode(b"\1" * 64).decode()}
    (src / "manifest.sig").write_text(json.dumps(doc))


def test_releases_installed_before_enrollment_or_by_a_revoked_key_are_refused(bundle: Path, tmp_path: Path,
                                                                                monkeypatch, capsys) -> None:
    """Installed while the board had no key (a forged manifest.sig naming the trusted key, or none), or signed by
    a key revoked since: activate, rollback, run, profile and the already-installed shortcut all refuse it."""
    base = tmp_path / "board"
    k, other = generate_keys(tmp_path, "k"), generate_keys(tmp_path, "other")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    forged = Path(shutil.copytree(bundle, tmp_path / "forged"))
    sign_bundle(forged, other.private, version=1)  # a real release_version and id; then the sig is replaced
    _forge(forged, k.fingerprint)
    unsigned = Path(shutil.copytree(bundle, tmp_path / "unsigned"))
    rc, r = _install(base, forged, monkeypatch, capsys)
    assert rc == 0 and r["signed"] is True and r["key"] is None  # no key: nothing was checked
    assert _install(base, unsigned, monkeypatch, capsys)[0] == 0
    fid, uid = _bid(forged), _bid(unsigned)
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    good = Path(shutil.copytree(bundle, tmp_path / "good"))
    sign_bundle(good, k.private, version=2)
    assert _admit(base, good, monkeypatch, capsys)[0] == 0
    rc, r = _install(base, good, monkeypatch, capsys)
    gid = _bid(good)
    assert rc == 0 and r["key"] == k.fingerprint
    assert json.loads((base / "state.json").read_text())["verified_by"] == {gid: k.fingerprint}
    (base / "current").symlink_to(f"releases/{gid}")
    py = f"--python={sys.executable}"
    for rid, kind in ((fid, "bad-signature"), (uid, "unsigned")):
        rc, r = agent_run("activate", rid, TOKEN, py)
        assert rc == 2 and r["refused"] == kind and "nothing was switched" in r["error"], r
        rc, r = agent_run("rollback", TOKEN, f"--to={rid}", py)
        assert rc == 2 and r["refused"] == kind and "nothing was switched" in r["error"], r
        rc, r = agent_run("run", rid, py, "--workdir=w1")
        assert rc == 2 and r["refused"] == kind and "nothing was run" in r["error"], r
        rc, r = agent_run("profile", rid, py)
        assert rc == 2 and r["refused"] == kind and "nothing was profiled" in r["error"], r
        rc, r = agent_run("install", rid, TOKEN, py)  # the "already installed" shortcut
        assert rc == 2 and r["refused"] == kind, r
        assert os.readlink(base / "current") == f"releases/{gid}"
    # rollback with no --python uses the interpreter the last activation recorded; none here: refused, not skipped
    rc, r = agent_run("rollback", TOKEN, f"--to={fid}")
    assert rc == 2 and r["refused"] in ("no-crypto", "bad-signature")
    # signed by a key revoked since: refused too, and no longer listed as verified
    assert agent_run("trust", "add", TOKEN, stdin={"pem": other.public.read_text()})[0] == 0
    rc, r = agent_run("trust", "remove", TOKEN, k.fingerprint)
    assert rc == 0 and "cannot be activated, rolled back to, run or profiled" in r["warning"]
    assert json.loads((base / "state.json").read_text())["verified_by"] == {}
    rc, r = agent_run("run", gid, py, "--workdir=w1")
    assert rc == 2 and r["refused"] == "untrusted" and k.fingerprint in r["error"]
    rc, r = agent_run("rollback", TOKEN, f"--to={gid}", py)
    assert rc == 2 and r["refused"] == "untrusted"


def test_need_stages_nothing_on_a_board_with_keys_without_an_admitted_manifest(bundle: Path, tmp_path: Path,
                                                                             monkeypatch, capsys) -> None:
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    sign_bundle(bundle, k.private, version=3)
    bid = _bid(bundle)
    listing = {"files": {rel: {"sha256": f.sha256, "size": f.size} for rel, f in check_bundle(bundle)[1].items()}}
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    assert agent_run("need", f"staging/{bid}", TOKEN, stdin=listing)[0] == 0  # no key: as before
    shutil.rmtree(base / "staging" / bid)
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    rc, r = agent_run("need", f"staging/{bid}", TOKEN, stdin=listing)
    assert rc == 2 and r["refused"] == "not-admitted" and not (base / "staging" / bid).exists()
    assert _admit(base, bundle, monkeypatch, capsys)[0] == 0
    # admitted, but another manifest is listed: refused; the admitted one: staged
    other = json.loads(json.dumps(listing))
    other["files"]["manifest.json"]["sha256"] = "0" * 64
    assert agent_run("need", f"staging/{bid}", TOKEN, stdin=other)[1]["refused"] == "not-admitted"
    rc, r = agent_run("need", f"staging/{bid}", TOKEN, stdin=listing)
    assert rc == 0 and r["need_bytes"] > 0 and (base / "staging" / bid).is_dir()


def test_highest_accepted_version_is_the_floor_after_a_rollback(bundle: Path, tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    """Current is v3 (rolled back from v5): a v4 is refused, as the host's early check refuses it too."""
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    v = {}
    for n in (3, 4, 5, 6):
        v[n] = Path(shutil.copytree(bundle, tmp_path / f"v{n}"))
        sign_bundle(v[n], k.private, version=n)
    assert _install(base, v[3], monkeypatch, capsys)[0] == 0
    (base / "current").symlink_to(f"releases/{_bid(v[3])}")
    st = json.loads((base / "state.json").read_text())
    # what a board holds after activating v5 and rolling back to v3 (a board from before highest_version too)
    st["history"].append({"event": "activated", "release": "x", "release_version": 5})
    (base / "state.json").write_text(json.dumps(st))
    assert agent.highest_version(st) == 5
    rc, r = _admit(base, v[4], monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "downgrade" and r["highest_version"] == 5 and "highest" in r["error"], r
    rc, r = _admit(base, v[4], monkeypatch, capsys, "--allow-downgrade")
    assert rc == 0 and r["downgrade"]["from"] == 5 and r["downgrade"]["to"] == 4
    assert _admit(base, v[6], monkeypatch, capsys)[0] == 0
    assert agent_run("probe")[1]["highest_version"] == 5
    # the host's early check reads the same facts
    from edgesdk.deploy import flash as flash_mod

    res = {"notes": [], "warnings": []}
    m4 = load_manifest(v[4])
    facts = {"trust": [k.fingerprint], "current": _bid(v[3]), "current_version": 3, "highest_version": 5}
    with pytest.raises(InputError, match="highest"):
        flash_mod._check_signature(v[4], m4, facts, flash_mod.FlashOptions(), res, "b")


def test_trust_store_is_private_and_pins_the_agent_version(bundle: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    (base / "trust").mkdir(mode=0o755)  # as an older agent made it
    os.chmod(base / "trust", 0o755)
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    assert stat.S_IMODE((base / "trust").stat().st_mode) == 0o700
    pub = base / "trust" / (trust.fp_hex(k.fingerprint) + ".pub")
    assert stat.S_IMODE(pub.stat().st_mode) == 0o600
    assert agent.AGENT_VERSION >= 2
    assert (base / "trust" / "agent_min_version").read_text().strip() == str(agent.AGENT_VERSION)
    assert agent_run("trust", "list")[1]["keys"] == [k.fingerprint]  # the marker is no key
    # a store set up by a newer agent: this (older) one refuses to drive the board; read-only verbs still answer
    (base / "trust" / "agent_min_version").write_text("99\n")
    rc, r = agent_run("lock", "acquire", "t" * 16)
    assert rc == 2 and r["refused"] == "old-agent" and "upgrade edgesdk on this host" in r["error"]
    assert agent_run("state")[0] == 0


def test_host_does_not_replace_a_newer_agent(tmp_path: Path) -> None:
    from edgesdk.deploy.board import AGENT_PATH, AgentTooNew, RemoteBoard
    from edgesdk.deploy.transport import FakeTransport

    board = tmp_path / "board"
    board.mkdir()
    target = FakeTransport.target_for(board)
    with FakeTransport(target) as c:
        RemoteBoard(c).open()
    ours = AGENT_PATH.read_bytes()
    assert (board / "agent.py").read_bytes() == ours
    # an older agent is replaced
    (board / "agent.py").write_bytes(ours.replace(f"AGENT_VERSION = {agent.AGENT_VERSION}\n".encode(),
                                                  b"AGENT_VERSION = 1\n"))
    with FakeTransport(target) as c:
        RemoteBoard(c).open()
    assert (board / "agent.py").read_bytes() == ours
    # a newer one is not: refused (exit 2) with the fix
    newer = ours.replace(f"AGENT_VERSION = {agent.AGENT_VERSION}\n".encode(), b"AGENT_VERSION = 99\n")
    assert newer != ours
    (board / "agent.py").write_bytes(newer)
    with FakeTransport(target) as c, pytest.raises(AgentTooNew, match="Upgrade edgesdk on this host") as ei:
        RemoteBoard(c).open()
    assert ei.value.exit_code == 2 and (board / "agent.py").read_bytes() == newer
    # nor is any agent on a board whose trust store needs a newer one than ours
    (board / "agent.py").write_bytes(b"# some other agent\n")
    (board / "trust").mkdir()
    (board / "trust" / "agent_min_version").write_text("99\n")
    with FakeTransport(target) as c, pytest.raises(AgentTooNew, match="at least version 99"):
        RemoteBoard(c).open()
    assert (board / "agent.py").read_bytes() == b"# some other agent\n"


def test_verifier_main_refuses_a_non_object_stdin(tmp_path: Path) -> None:
    for data in ("[1, 2]", '"x"', "3", "null"):
        r = subprocess.run([sys.executable, "-I", "-B", "-m", "edgesdk.runtime.trust", "verify",
                            f"--trust={tmp_path}"], input=data, capture_output=True, text=True, timeout=120,
                           check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (data, r.stderr)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        assert res["ok"] is False and res["kind"] == "bad-input" and "object" in res["error"]


def test_agent_and_verifier_agree_on_the_trust_store(tmp_path: Path) -> None:
    """The agent (stdlib, standalone) keeps its own copies: they must read the store as edgesdk.runtime.trust does."""
    store = tmp_path / "trust"
    store.mkdir()
    names = ["0123456789abcdef0123456789abcdef.pub", "0123456789ABCDEF0123456789ABCDEF.pub", "abc.pub",
             "0123456789abcdef0123456789abcdef.pub.tmp1", "agent_min_version", "fedcba9876543210fedcba9876543210.pub"]
    for n in names:
        (store / n).write_text("x")
    (store / "00000000000000000000000000000000.pub").mkdir()  # a dir is no key
    b = agent.Board(str(tmp_path))
    agent.TRUST_DIR  # noqa: B018
    assert agent.trusted_keys(b) == trust.trusted(str(store))
    assert sorted(trust.trusted(str(store))) == ["ed25519:0123456789abcdef0123456789abcdef",
                                                 "ed25519:fedcba9876543210fedcba9876543210"]
    assert agent.FP_RE.pattern == trust.FP_RE.pattern and agent.SPKI_PREFIX == trust.SPKI_PREFIX
    assert agent.SIGNATURE == "manifest.sig" and agent.TRUST_DIR == "trust"
    for fp in ("ed25519:" + "a" * 32, "A" * 32, "ed25519:" + "a" * 31, "x", " ed25519:" + "b" * 32):
        m = agent.FP_RE.match(fp.strip().lower())
        try:
            want = trust.fp_hex(fp)
        except trust.TrustError:
            want = None
        assert (m.group(1) if m else None) == want, fp
    raw = bytes(range(32))
    assert agent.key_fingerprint(raw) == trust.fingerprint(raw)


def test_write_atomic_is_the_one_atomic_write(tmp_path: Path, monkeypatch) -> None:
    from edgesdk import bundle as bundle_mod
    from edgesdk import paths, signing

    p = tmp_path / "f.json"
    paths.write_atomic(p, b"one", 0o600)
    assert p.read_bytes() == b"one" and stat.S_IMODE(p.stat().st_mode) == 0o600
    real = tmp_path / "real.txt"
    real.write_bytes(b"old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    paths.write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new" and stat.S_IMODE(real.stat().st_mode) == 0o644
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.json", "link.txt", "real.txt"]  # no temp file left
    assert not hasattr(signing, "_write_atomic") and signing.write_atomic is paths.write_atomic
    assert bundle_mod.write_atomic is paths.write_atomic


def test_keys_commands_print_board_values_as_text(tmp_path: Path, monkeypatch) -> None:
    """What the board answers (keys, host, the revoke warning) is printed through safe_text: never as rich markup,
    never as terminal control sequences."""
    from edgesdk.deploy import trust as dtrust

    evil = "[red]ed25519:x[/red]\x1b]0;owned\x07"
    monkeypatch.setattr(dtrust, "list_keys", lambda target, **kw: {"host": "h[bold]", "keys": [evil]})
    monkeypatch.setattr(dtrust, "enroll_key", lambda target, pub, **kw: {"host": "h", "key": evil, "already": False,
                                                                       "keys": [evil]})
    monkeypatch.setattr(dtrust, "revoke_key", lambda target, key, **kw: {"host": "h", "key": evil, "keys": [evil],
                                                                       "removed": True, "warning": evil})
    pub = generate_keys(tmp_path, "k").public
    runner = CliRunner()
    for args in (["keys", "list"], ["keys", "enroll", str(pub)], ["keys", "revoke", "ed25519:" + "a" * 32]):
        r = runner.invoke(app, [*args, "--host", "pi@10.0.0.7"])
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output, args
        assert "[red]ed25519:x[/red]\\x1b]0;owned\\x07" in r.output, (args, r.output)


def test_expiry_is_signed_and_refused_once_passed(bundle: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from edgesdk.signing import parse_expires

    assert parse_expires("2d", now=0) == "1970-01-03T00:00:00Z"
    assert parse_expires("2027-01-31T12:00:00+01:00", now=0) == "2027-01-31T11:00:00Z"
    for bad in ("yesterday", "0m", "1970-01-01", "-3d"):
        with pytest.raises(InputError, match="--expires"):
            parse_expires(bad)
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    s = sign_bundle(bundle, k.private, version=1, expires="1h")
    sig = json.loads((bundle / "manifest.sig").read_text())
    assert sig["attributes"] == {"expires_at": s.expires_at}
    assert verify_bundle(bundle, {k.fingerprint}) == k.fingerprint
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 0 and r["expires_at"] == s.expires_at
    # the expiry is signed: moved later by hand, the signature no longer matches
    sig["attributes"]["expires_at"] = "2999-01-01T00:00:00Z"
    good_sig = (bundle / "manifest.sig").read_text()
    (bundle / "manifest.sig").write_text(json.dumps(sig))
    with pytest.raises(BundleError, match="changed after signing"):
        verify_bundle(bundle)
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "bad-signature"
    (bundle / "manifest.sig").write_text(good_sig)
    rc, r = _install(base, bundle, monkeypatch, capsys)
    assert rc == 0
    # past the expiry (the board's clock): admit, install (already there) and activate refuse; the host too
    monkeypatch.setattr(agent, "now", lambda: "2999-01-01T00:00:00Z")
    monkeypatch.setattr(trust, "utc_now", lambda: "2999-01-01T00:00:00Z")
    with pytest.raises(BundleError, match="expired"):
        verify_bundle(bundle)
    rc, r = _admit(base, bundle, monkeypatch, capsys)
    assert rc == 2 and r["refused"] == "expired" and s.expires_at in r["error"]
    bid = _bid(bundle)
    rc, r = agent_run("install", bid, TOKEN, f"--python={sys.executable}")
    assert rc == 2 and r["refused"] == "expired"
    rc, r = agent_run("activate", bid, TOKEN, f"--python={sys.executable}")
    assert rc == 2 and r["refused"] == "expired" and not (base / "current").exists()
    code = CliRunner().invoke(app, ["sign", str(bundle), "--key", str(k.private), "--expires", "soon"])
    assert code.exit_code == 2 and "--expires" in code.output and "Traceback" not in code.output


def test_board_id_recorded_at_the_first_signed_admit(bundle: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    base = tmp_path / "board"
    k = generate_keys(tmp_path, "k")
    agent_run = lambda *a, stdin=None: run_agent(base, *a, stdin=stdin, monkeypatch=monkeypatch, capsys=capsys)
    assert agent_run("lock", "acquire", TOKEN)[0] == 0
    assert agent_run("trust", "add", TOKEN, stdin={"pem": k.public.read_text()})[0] == 0
    made_for = load_manifest(bundle).board
    sign_bundle(bundle, k.private, version=1)
    assert _admit(base, bundle, monkeypatch, capsys, f"--board={made_for}")[0] == 0
    assert json.loads((base / "state.json").read_text())["board_id"] == made_for
    # a bundle made (and signed) for another board: refused, unless flash --force
    other = Path(shutil.copytree(bundle, tmp_path / "other"))
    d = json.loads((other / "manifest.json").read_text())
    d["board"] = "jetson-nano" if made_for != "jetson-nano" else "rpi4"
    from edgesdk.runtime.manifest import Manifest

    d["bundle_id"] = Manifest.from_dict(d).content_id()
    (other / "manifest.json").write_text(json.dumps(d, indent=2))
    sign_bundle(other, k.private, version=2)
    rc, r = _admit(base, other, monkeypatch, capsys, f"--board={d['board']}")
    assert rc == 2 and r["refused"] == "wrong-board" and made_for in r["error"] and "--force" in r["error"]
    rc, r = _admit(base, other, monkeypatch, capsys, "--other-board")
    assert rc == 0 and r["other_board"] == {"board": made_for, "made_for": d["board"]}
    hist = json.loads((base / "state.json").read_text())["history"]
    assert [e["event"] for e in hist if "board" in e["event"]] == ["board-recorded", "other-board-admitted"]


def test_profile_and_tune_sign_option_refuses_a_bad_key_first(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """--sign KEY on profile and tune: a key others can read is refused before anything is converted or measured;
    signed_copy signs a copy (the bundle itself unchanged) and reuses it while its signature holds."""
    from edgesdk.profile.run import signed_copy

    k = generate_keys(tmp_path, "k")
    loose = tmp_path / "loose.key"
    shutil.copy(k.private, loose)
    os.chmod(loose, 0o644)
    runner = CliRunner()
    for cmd in (["profile", str(bundle), "--board", "rpi4", "--host", "pi@10.0.0.7"],
                ["tune", str(bundle), "--board", "rpi4", "--host", "pi@10.0.0.7"]):
        r = runner.invoke(app, [*cmd, "--sign", str(loose)])
        assert r.exit_code == 2 and "chmod 600" in r.output and "Traceback" not in r.output, r.output
    before = (bundle / "manifest.json").read_bytes()
    c1 = signed_copy(bundle, k.private)
    assert c1 != bundle and (bundle / "manifest.json").read_bytes() == before and not (bundle / "manifest.sig").exists()
    assert verify_bundle(c1, {k.fingerprint}) == k.fingerprint
    assert signed_copy(bundle, k.private) == c1 and load_manifest(c1).bundle_id == _bid(c1)
    assert signed_copy(c1, k.private) == c1  # already signed by that key: itself
    other = generate_keys(tmp_path, "other")
    c2 = signed_copy(c1, other.private)
    assert c2 not in (c1, bundle) and verify_bundle(c2, {other.fingerprint}) == other.fingerprint


def test_signed_copy_is_made_again_when_damaged(bundle: Path, tmp_path: Path) -> None:
    from edgesdk.profile.run import signed_copy

    k = generate_keys(tmp_path, "k")
    c1 = signed_copy(bundle, k.private)
    victim = next(p for p in c1.iterdir() if p.name not in ("manifest.json", "manifest.sig") and p.is_file())
    victim.write_bytes(victim.read_bytes() + b"x")
    c2 = signed_copy(bundle, k.private)
    assert c2 == c1 and check_bundle(c2)[0].bundle_id == _bid(c2)

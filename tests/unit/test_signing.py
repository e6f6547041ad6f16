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
    s = sign_bundle(bundle, k.private)
    m = load_manifest(bundle)
    assert s.release_version == 1 and m.release_version == 1
    assert m.bundle_id == s.bundle_id != before and m.untuned_id() == before  # release_version is in the id
    assert verify_bundle(bundle) == k.fingerprint == s.fingerprint
    assert verify_bundle(bundle, {k.fingerprint}) == k.fingerprint
    check_bundle(bundle)  # manifest.sig is the one unlisted file allowed
    # the default version goes up with each signing by that key on this host; an explicit one is kept
    assert sign_bundle(bundle, k.private).release_version == 2
    assert sign_bundle(bundle, k.private, version=40).release_version == 40
    assert sign_bundle(bundle, k.private).release_version == 41
    other = generate_keys(tmp_path, "other")
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
    sign_bundle(bundle, k.private)
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
    from edgesdk.signing import revoke_key

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

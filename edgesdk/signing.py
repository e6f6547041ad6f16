"""Signing bundles on the host: Ed25519 key pairs and manifest.sig, through `cryptography`.

    edgesdk keys generate [--out DIR] [--name N]       -> N.key (0600, never printed) + N.pub, its fingerprint
    edgesdk sign BUNDLE --key N.key [--version V]      -> manifest.json gets release_version, manifest.sig beside it
    edgesdk convert ... --sign N.key                   -> the same, right after conversion

manifest.json lists every other file's sha256, so a signature over its exact bytes covers the whole bundle
(edgesdk.runtime.trust describes manifest.sig and how the board checks it). The signed manifest carries a
monotonic `release_version`: by default the current UTC time in seconds, and never lower than the highest
version this host ever signed (with any key: a key rotation does not start again at 1; recorded in
<edgesdk home>/keys/versions.json) + 1 nor than the bundle's own previous release_version + 1; so releases signed
on several hosts (with clocks in step) and with a new key still go up. `--version V` sets it (then recorded
too). release_version is part of the bundle id, so signing gives the bundle its new id (and each signed release
its own dir on the board); boards refuse a signed bundle with a lower version than the highest they ever
activated unless `flash --allow-downgrade`.

The board's trust store (enroll, revoke, list) is edgesdk.deploy.trust.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgesdk.errors import BundleError, InputError
from edgesdk.paths import home, write_atomic
from edgesdk.runtime import trust
from edgesdk.runtime.app.manifest import load_any
from edgesdk.runtime.manifest import MANIFEST, SIGNATURE, TUNING

KEY_SUFFIX, PUB_SUFFIX = ".key", ".pub"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {"private_key": str(self.private), "public_key": str(self.public), "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Signed:
    bundle: Path
    bundle_id: str
    release_version: int
    fingerprint: str
    signature: Path
    expires_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle), "bundle_id": self.bundle_id, "release_version": self.release_version,
                "key": self.fingerprint, "signature": str(self.signature), "expires_at": self.expires_at}


def parse_expires(value: str, now: float | None = None) -> str:
    """`--expires`: a duration from now (90m, 12h, 30d, 8w) or a UTC date/time (2027-01-31, 2027-01-31T12:00:00Z,
    or with an offset); the expiry as YYYY-MM-DDTHH:MM:SSZ, in the future. InputError otherwise."""
    import datetime as dt
    import re

    text = str(value).strip()
    t0 = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.timezone.utc)
    m = re.match(r"^([0-9]{1,6})([mhdw])$", text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        when = t0 + dt.timedelta(**{unit: int(m.group(1))})
    else:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"--expires {value!r}: expected a duration (90m, 12h, 30d, 8w) or a date "
                             "(2027-01-31 or 2027-01-31T12:00:00Z)") from None
        when = when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)
    if when <= t0:
        raise InputError(f"--expires {value!r}: {when:%Y-%m-%dT%H:%M:%SZ} is not in the future")
    if when.year > 9999 - 1:
        raise InputError(f"--expires {value!r}: too far ahead")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - cryptography comes with paramiko ([host])
        from edgesdk.errors import EnvironmentProblem

        raise EnvironmentProblem(f"signing needs the cryptography package ({exc})",
                                 fix="python -m pip install 'edgesdk[host]'") from None
    return serialization, ed25519


def generate_keys(out_dir: str | Path = ".", name: str = "edgesdk-signing", force: bool = False) -> KeyPair:
    """A new Ed25519 key pair: OUT/NAME.key (PKCS#8 PEM, mode 0600 from creation) and OUT/NAME.pub (PEM)."""
    import re

    serialization, ed25519 = _crypto()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name):
        raise InputError(f"--name {name!r}: use letters, digits, '.', '_' and '-'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: not a directory")
    priv_p, pub_p = out / f"{name}{KEY_SUFFIX}", out / f"{name}{PUB_SUFFIX}"
    for p in (priv_p, pub_p):
        if p.exists() and not force:
            raise InputError(f"{p} already exists; choose another --name or pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    write_atomic(priv_p, priv, 0o600)
    write_atomic(pub_p, trust.pem_from_raw(raw).encode(), 0o644)
    return KeyPair(priv_p, pub_p, trust.fingerprint(raw))


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key file; refused if others can read it (like OpenSSH) or if it is not Ed25519."""
    serialization, ed25519 = _crypto()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--key {p}: no such key file (make one with `edgesdk keys generate`)")
    data = p.read_bytes()
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise InputError(f"--key {p}: this is a public key; sign with the private key (.key)")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise InputError(f"--key {p}: mode {mode:04o} lets others read the private key; run `chmod 600 {p}`")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"--key {p}: not a PEM private key without a passphrase ({str(exc).splitlines()[0]})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"--key {p}: a {type(key).__name__}; only Ed25519 keys are supported")
    return key


def read_public_key(path: str | Path) -> tuple[str, str]:
    """(PEM text, fingerprint) of an Ed25519 public key file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such public key file")
    try:
        text = p.read_text(encoding="utf-8")
        raw = trust.raw_from_pem(text)
    except (UnicodeDecodeError, trust.TrustError) as exc:
        raise InputError(f"{p}: {exc}") from None
    return trust.pem_from_raw(raw), trust.fingerprint(raw)


def _versions_file() -> Path:
    return home() / "keys" / "versions.json"


def _last_versions() -> dict[str, int]:
    """{key fingerprint: the highest release_version this host signed with it}."""
    try:
        data = json.loads(_versions_file().read_text(encoding="utf-8"))
        return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _record_version(fp: str, version: int) -> None:
    data = _last_versions()
    data[fp] = max(version, data.get(fp, 0))
    p = _versions_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), 0o644)


def sign_bundle(bundle: str | Path, key: str | Path, version: int | None = None,
                expires: str | None = None) -> Signed:
    """Set the manifest's release_version and write manifest.sig over its exact bytes (and, with `expires`
    (parse_expires), a signed expires_at: boards refuse to admit, install or activate it after that). The bundle
    is checked first (every sha256, no strays: only manifest.sig may sit beside manifest.json unlisted)."""
    from edgesdk.deploy.flash import check_bundle

    b = Path(bundle)
    if not b.is_dir():
        raise InputError(f"{b}: not a bundle directory")
    expires_at = parse_expires(expires) if expires is not None else None
    sk = load_private_key(key)
    serialization, _ = _crypto()
    raw = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fp = trust.fingerprint(raw)
    m, _files = check_bundle(b)
    if version is None:
        # one sequence for all keys on this host (a new key goes on from the old one's), time-based so that hosts
        # signing for the same boards go up together
        version = max(int(time.time()), max(_last_versions().values(), default=0) + 1, (m.release_version or 0) + 1)
    elif isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 1 << 63:
        raise InputError(f"--version {version!r}: expected an integer from 0 to 2**63-1")
    m2 = replace(m, release_version=version, bundle_id="")
    m2 = replace(m2, bundle_id=m2.content_id())
    text = (json.dumps(m2.to_dict(), indent=2, sort_keys=False) + "\n").encode()
    attrs = {"expires_at": expires_at} if expires_at else None
    doc = {"schema": trust.SIG_SCHEMA, "algorithm": trust.ALGORITHM, "key": fp,
           "public_key": base64.b64encode(raw).decode(),
           "signature": base64.b64encode(sk.sign(trust.signed_message(text, attrs))).decode()}
    if attrs:
        doc["attributes"] = attrs  # signed with the manifest (trust.signed_message)
    # (release_version and bundle_id are in the signed manifest only: nothing outside the signed bytes)
    # the old signature goes first: a crash in between leaves an unsigned bundle, never a mismatched pair
    (b / SIGNATURE).unlink(missing_ok=True)
    write_atomic(b / MANIFEST, text, 0o644)
    write_atomic(b / SIGNATURE, (json.dumps(doc, indent=1) + "\n").encode(), 0o644)
    load_any(b, verify=False)
    _record_version(fp, version)
    return Signed(b, m2.bundle_id, version, fp, b / SIGNATURE, expires_at)


def signature_of(bundle: str | Path) -> dict[str, Any] | None:
    """The bundle's manifest.sig (shape checked), or None when it is unsigned. BundleError when malformed."""
    p = Path(bundle) / SIGNATURE
    if not p.is_file():
        return None
    try:
        return trust.parse_signature(p.read_bytes())
    except trust.TrustError as exc:
        raise BundleError(f"{p}: {exc}") from None


def verify_bundle(bundle: str | Path, trusted: set[str] | None = None) -> str:
    """Host-side check of a signed bundle: manifest.sig verifies over manifest.json with the key it names (and,
    when `trusted` is given, that key is one of those fingerprints). The signer's fingerprint; BundleError
    (unsigned, untrusted, altered) otherwise. The board checks again against its own trust store."""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    b = Path(bundle)
    doc = signature_of(b)
    if doc is None:
        raise BundleError(f"{b}: unsigned (no {SIGNATURE}); sign it with `edgesdk sign {b} --key KEY`")
    fp = doc["key"]
    if trust.fingerprint(doc["_pub"]) != fp:
        raise BundleError(f"{b}/{SIGNATURE}: its public key is not {fp}")
    if trusted is not None and fp not in trusted:
        raise BundleError(f"{b} is signed by {fp}, which the board does not trust (trusted: "
                          f"{', '.join(sorted(trusted)) or 'none'}); sign it with one of those keys, or enroll this "
                          "one first (`edgesdk keys enroll`)")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(doc["_pub"]).verify(
            doc["_sig"], trust.signed_message((b / MANIFEST).read_bytes(), doc.get("attributes")))
    except InvalidSignature:
        raise BundleError(f"{b}: manifest.sig by {fp} does not match manifest.json: the bundle was changed after "
                          "signing; sign it again") from None
    exp = (doc.get("attributes") or {}).get("expires_at")
    if exp and exp <= trust.utc_now():
        raise BundleError(f"{b}: its signature expired at {exp}; sign it again (`edgesdk sign {b} --key KEY`)")
    return fp


__all__ = ["TUNING", "KeyPair", "Signed", "generate_keys", "load_private_key", "parse_expires", "read_public_key",
           "sign_bundle", "signature_of", "verify_bundle"]

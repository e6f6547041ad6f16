"""Signed bundles on the board: the trust store and Ed25519 signature checks (imported only when needed).

A signed bundle carries `manifest.sig` beside manifest.json: a JSON object

    {"schema": "edgesdk.signature/1", "algorithm": "ed25519", "key": "ed25519:<32 hex>",
     "public_key": "<base64 of the 32-byte key>", "signature": "<base64 of the 64-byte signature>"}

over the exact bytes of manifest.json, which lists every other file's sha256 (so the signature covers the whole
bundle) and the signer's monotonic `release_version`. An optional `"attributes": {"expires_at":
"YYYY-MM-DDTHH:MM:SSZ"}` is signed too: the signature is then over manifest.json + ATTRS_MARK + the attributes'
canonical JSON (signed_message); the board refuses to admit, install or activate a bundle past its expiry.
Nothing else in manifest.sig counts: release_version and bundle_id are in the signed manifest only. `key` is the key's fingerprint: "ed25519:" + the first 32
hex digits of the sha256 of the raw public key. The board's trust store is `<board dir>/trust/<32 hex>.pub`, one
PEM (SubjectPublicKeyInfo) public key each, written by the agent's `trust add` (`edgesdk keys enroll`).
`public_key` in manifest.sig is for the host's early check only: the board verifies against its own store.

The signature check itself uses `cryptography` (a maintained library; Ed25519 is not in the standard library).
It is not a dependency of edgesdk-runtime (numpy only): the host adds cryptography (and cffi) to the board's
wheelhouse when the board has a trust store. The deploy agent (stdlib only) reads fingerprints itself and runs

    venv/bin/python -I -B -m edgesdk.runtime.trust verify --trust DIR    stdin: {"manifest": b64, "signature": text}

which prints one JSON line: {"ok": true, "key": FP} or {"ok": false, "error": "...", "kind": "..."}; exit 0/1/2.
This module imports cryptography only inside `verify`; the parsing helpers are stdlib only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import re
import sys
from typing import Any

SIG_SCHEMA = "edgesdk.signature/1"
ALGORITHM = "ed25519"
#: DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
FP_RE = re.compile(r"^(?:ed25519:)?([0-9a-f]{32})$")
MAX_SIG_BYTES = 4096
#: what separates manifest.json from the signed attributes in the signed message (no JSON document contains it)
ATTRS_MARK = b"\n\x00edgesdk.signed-attributes/1\n"
ATTRIBUTES = ("expires_at",)
TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def signed_message(manifest: bytes, attributes: dict | None) -> bytes:
    """The bytes a signature covers: manifest.json exactly, plus the signed attributes when there are any."""
    if not attributes:
        return manifest
    return manifest + ATTRS_MARK + json.dumps(attributes, sort_keys=True, separators=(",", ":")).encode()


def utc_now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class TrustError(Exception):
    """A signature or key that does not check out; `kind` says which (for the agent's message)."""

    def __init__(self, msg: str, kind: str = "bad-signature") -> None:
        super().__init__(msg)
        self.kind = kind


def fingerprint(raw: bytes) -> str:
    """"ed25519:" + the first 32 hex digits of sha256(raw public key)."""
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def fp_hex(fp: str) -> str:
    """The 32 hex digits of a fingerprint given with or without its "ed25519:" prefix (the trust file's name)."""
    m = FP_RE.match(fp.strip().lower()) if isinstance(fp, str) else None
    if not m:
        raise TrustError(f"bad key fingerprint {fp!r}: expected ed25519:<32 hex digits>", "bad-input")
    return m.group(1)


def raw_from_pem(text: str) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM (SubjectPublicKeyInfo), stdlib only."""
    if not isinstance(text, str) or len(text) > 4096:
        raise TrustError("not a PEM public key", "bad-input")
    m = re.search(r"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----", text)
    if not m:
        raise TrustError("not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)", "bad-input")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        raise TrustError("the PEM public key is not valid base64", "bad-input") from None
    if len(der) != len(SPKI_PREFIX) + 32 or not der.startswith(SPKI_PREFIX):
        raise TrustError("not an Ed25519 public key (only Ed25519 keys are accepted)", "bad-input")
    return der[len(SPKI_PREFIX):]


def pem_from_raw(raw: bytes) -> str:
    b64 = base64.b64encode(SPKI_PREFIX + raw).decode()
    return "-----BEGIN PUBLIC KEY-----\n" + b64 + "\n-----END PUBLIC KEY-----\n"


def parse_signature(text: str | bytes) -> dict[str, Any]:
    """manifest.sig, checked for shape (not yet for validity): {"key", "public_key", "signature", ...}."""
    if isinstance(text, bytes):
        if len(text) > MAX_SIG_BYTES:
            raise TrustError("manifest.sig is too large", "bad-signature")
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or len(text) > MAX_SIG_BYTES:
        raise TrustError("manifest.sig is missing or too large", "bad-signature")
    try:
        doc = json.loads(text)
    except ValueError:
        raise TrustError("manifest.sig is not JSON", "bad-signature") from None
    if not isinstance(doc, dict) or doc.get("schema") != SIG_SCHEMA or doc.get("algorithm") != ALGORITHM:
        raise TrustError(f"manifest.sig: expected schema {SIG_SCHEMA!r} and algorithm {ALGORITHM!r}", "bad-signature")
    try:
        doc["key"] = "ed25519:" + fp_hex(str(doc.get("key", "")))
        sig = base64.b64decode(str(doc.get("signature", "")), validate=True)
        pub = base64.b64decode(str(doc.get("public_key", "")), validate=True)
    except (binascii.Error, ValueError, TrustError):
        raise TrustError("manifest.sig: fields key, public_key and signature are malformed", "bad-signature") from None
    if len(sig) != 64 or len(pub) != 32:
        raise TrustError("manifest.sig: an Ed25519 signature is 64 bytes and its key 32", "bad-signature")
    attrs = doc.get("attributes")
    if attrs is not None:
        if not isinstance(attrs, dict) or set(attrs) - set(ATTRIBUTES):
            raise TrustError(f"manifest.sig: attributes must be an object with only {list(ATTRIBUTES)}",
                             "bad-signature")
        if "expires_at" in attrs and not (isinstance(attrs["expires_at"], str) and TIME_RE.match(attrs["expires_at"])):
            raise TrustError("manifest.sig: expires_at must be YYYY-MM-DDTHH:MM:SSZ", "bad-signature")
    doc["_sig"], doc["_pub"] = sig, pub
    return doc


def trusted(trust_dir: str) -> dict[str, str]:
    """fingerprint -> path of each *.pub in the trust store (an empty dict: the board trusts no key)."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(trust_dir))
    except OSError:
        return out
    for n in names:
        m = re.match(r"^([0-9a-f]{32})\.pub$", n)
        if m and os.path.isfile(os.path.join(trust_dir, n)):
            out["ed25519:" + m.group(1)] = os.path.join(trust_dir, n)
    return out


def verify(manifest: bytes, signature: str | bytes | None, trust_dir: str) -> str:
    """Check `signature` (manifest.sig's text) over `manifest` (manifest.json's exact bytes, and the signed
    attributes) against the trust store; the signer's fingerprint. TrustError (kind: unsigned, untrusted,
    bad-signature, no-crypto) otherwise. Expiry is the caller's to judge (expires_at)."""
    keys = trusted(trust_dir)
    if signature is None:
        raise TrustError("the bundle is unsigned (no manifest.sig)", "unsigned")
    doc = parse_signature(signature)
    fp = doc["key"]
    if fp not in keys:
        raise TrustError(f"the bundle is signed by {fp}, which this board does not trust "
                         f"(trusted: {', '.join(sorted(keys)) or 'none'})", "untrusted")
    with open(keys[fp], encoding="utf-8") as fh:
        raw = raw_from_pem(fh.read())
    if fingerprint(raw) != fp:
        raise TrustError(f"trust store file for {fp} holds another key ({fingerprint(raw)})", "untrusted")
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:
        raise TrustError(f"cannot check signatures with {sys.executable}: cryptography does not import ({exc}); "
                         "flash again so that the host provisions it (the wheelhouse carries cryptography and cffi "
                         "when the board has a trusted key)", "no-crypto") from None
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(doc["_sig"], signed_message(manifest, doc.get("attributes")))
    except InvalidSignature:
        raise TrustError(f"the signature by {fp} does not match manifest.json: the bundle was altered after "
                         "signing", "bad-signature") from None
    return fp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgesdk.runtime.trust")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="stdin: {\"manifest\": base64 of manifest.json, \"signature\": text|null}")
    v.add_argument("--trust", required=True, help="the trust store (a dir of <fingerprint>.pub)")
    v.add_argument("--bundle", default=None, help="read manifest.json and manifest.sig from this dir instead")
    args = p.parse_args(argv)
    try:
        if args.bundle:
            with open(os.path.join(args.bundle, "manifest.json"), "rb") as fh:
                manifest = fh.read()
            sp = os.path.join(args.bundle, "manifest.sig")
            sig = None
            if os.path.isfile(sp):
                with open(sp, "rb") as fh:
                    sig = fh.read(MAX_SIG_BYTES + 1)
        else:
            data = json.loads(sys.stdin.read(64 << 20) or "{}")
            if not isinstance(data, dict):
                raise TrustError("stdin must be a JSON object {\"manifest\": base64, \"signature\": text|null}, "
                                 f"not {type(data).__name__}", "bad-input")
            manifest = base64.b64decode(str(data.get("manifest") or ""), validate=True)
            sig = data.get("signature")
            if sig is not None and not isinstance(sig, str):
                raise TrustError("stdin: signature must be the text of manifest.sig or null", "bad-input")
        fp = verify(manifest, sig, args.trust)
        attrs = parse_signature(sig).get("attributes") or {}
    except TrustError as exc:
        print(json.dumps({"ok": False, "error": str(exc), "kind": exc.kind}))
        return 2 if exc.kind == "bad-input" else 1
    except (OSError, ValueError, binascii.Error) as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": "bad-input"}))
        return 2
    out = {"ok": True, "key": fp}
    if attrs.get("expires_at"):
        out["expires_at"] = attrs["expires_at"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The board's trust store from the host: `edgesdk keys enroll | revoke | list` (the agent's `trust` verb, add and
remove under the board's lock). Signing itself (keys, manifest.sig) is edgesdk.signing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesdk.errors import InputError
from edgesdk.runtime import trust
from edgesdk.signing import read_public_key


def _trust_call(target: Any, action: str, *args: str, stdin: dict | None = None, transport: Any = None,
                lock: bool = True) -> dict[str, Any]:
    from edgesdk.deploy.board import RemoteBoard, whoami_host
    from edgesdk.deploy.transport import SSHConnection

    conn = (transport or SSHConnection)(target)
    conn.connect()
    with conn:
        rb = RemoteBoard(conn).open()
        if not lock:
            return rb.call("trust", action, stdin=stdin)
        rb.lock(who=f"{whoami_host()} keys {action}")
        try:
            return rb.call("trust", action, rb.token, *args, stdin=stdin)
        finally:
            rb.unlock()


def enroll_key(target: Any, public_key: str | Path, *, transport: Any = None) -> dict[str, Any]:
    """Add a public key to the board's trust store: from then on it accepts only bundles signed by a trusted key."""
    pem, _ = read_public_key(public_key)
    r = _trust_call(target, "add", stdin={"pem": pem}, transport=transport)
    return {"host": target.known_hosts_name, "key": r["key"], "already": r.get("already", False), "keys": r["keys"]}


def revoke_key(target: Any, key: str | Path, *, force: bool = False, transport: Any = None) -> dict[str, Any]:
    """Remove a key (its fingerprint, or its .pub file) from the board's trust store. The last key goes only
    with force (without any key the board accepts unsigned bundles again)."""
    p = Path(str(key))
    if p.is_file():
        _, fp = read_public_key(p)
    else:
        try:
            fp = "ed25519:" + trust.fp_hex(str(key))
        except trust.TrustError as exc:
            raise InputError(f"{key}: neither a public key file nor a fingerprint ({exc})") from None
    r = _trust_call(target, "remove", fp, *(["--force"] if force else []), transport=transport)
    return {"host": target.known_hosts_name, "key": r["key"], "removed": True, "keys": r["keys"],
            "warning": r.get("warning")}


def list_keys(target: Any, *, transport: Any = None) -> dict[str, Any]:
    r = _trust_call(target, "list", transport=transport, lock=False)
    return {"host": target.known_hosts_name, "keys": r["keys"]}


__all__ = ["enroll_key", "list_keys", "revoke_key"]

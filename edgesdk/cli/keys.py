"""`edgesdk keys generate | enroll | revoke | list` and `edgesdk sign`: Ed25519 signing of bundles (edgesdk.signing)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from edgesdk.cli.common import JSON_OPTION, console, err_console, handle_errors, print_json, safe_text
from edgesdk.cli.deploy import (
    ACCEPT_OPT,
    BOARD_OPT,
    FP_OPT,
    HOST_OPT,
    IDENTITY_OPT,
    KNOWN_OPT,
    RDIR_OPT,
    _target,
)

keys_app = typer.Typer(help="Signing keys: make a key pair, enroll its public key on boards, revoke it.",
                       no_args_is_help=True)

#: the options that name the board a command talks to: (parameter, annotation, option), in _target's order
_TARGET_OPTIONS = (
    ("host", "str | None", HOST_OPT), ("board", "str | None", BOARD_OPT), ("identity", "Path | None", IDENTITY_OPT),
    ("known_hosts", "Path | None", KNOWN_OPT), ("accept_new", "bool", ACCEPT_OPT),
    ("fingerprint", "str | None", FP_OPT), ("remote_dir", "str | None", RDIR_OPT),
)


def _on_board(fn: Callable[..., None]) -> Callable[..., None]:
    """A command on one board: fn's `target` parameter becomes, in its place, the options --host, --board,
    --identity, --known-hosts, --accept-new, --fingerprint and --remote-dir (edgesdk.cli.deploy), and fn is called
    with target= the SSHTarget they name (_target), its other arguments as given."""
    params: list[inspect.Parameter] = []
    for p in inspect.signature(fn).parameters.values():
        if p.name == "target":
            params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=ann)
                       for name, ann, opt in _TARGET_OPTIONS]
        else:
            params.append(p)

    @functools.wraps(fn)
    def command(**kw: Any) -> None:
        fn(target=_target(*(kw.pop(name) for name, _, _ in _TARGET_OPTIONS)), **kw)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not p.empty}
    return command


@handle_errors
def generate_cmd(
    out: Path = typer.Option(Path("."), "--out", "-o", metavar="DIR", help="Where to write NAME.key and NAME.pub."),
    name: str = typer.Option("edgesdk-signing", "--name", "-n", metavar="NAME", help="File name stem."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Make an Ed25519 key pair: NAME.key (private, mode 0600, never printed) and NAME.pub.

    Examples:

      edgesdk keys generate --out ~/.config/edgesdk --name release-2026

      edgesdk keys generate --json
    """
    from edgesdk.signing import generate_keys

    kp = generate_keys(out, name, force=force)
    if json_out:
        print_json(kp.to_dict())
        return
    console.print(f"public key  {kp.public}  ({kp.fingerprint})", highlight=False)
    console.print(f"private key {kp.private}  (mode 0600: keep it off the boards and out of the repository)",
                  highlight=False)
    console.print(f"next: edgesdk keys enroll --host USER@BOARD {kp.public}", highlight=False)


@handle_errors
@_on_board
def enroll_cmd(
    public_key: Path = typer.Argument(..., metavar="KEY.pub", help="The public key to trust."),
    target: Any = None,  # the board: --host, --board, --identity, ... (_on_board)
    json_out: bool = JSON_OPTION,
) -> None:
    """Add KEY.pub to the board's trust store (<board dir>/trust/). From then on the board refuses bundles that
    are unsigned, signed by another key or changed after signing.

    Examples:

      edgesdk keys enroll --host pi@10.0.0.7 release-2026.pub

      edgesdk keys enroll --board rpi4 release-2026.pub        (the local emulated rpi4)
    """
    from edgesdk.deploy.trust import enroll_key

    r = enroll_key(target, public_key)
    if json_out:
        print_json(r)
        return
    # what the board says is printed as text, never as markup or terminal control (safe_text)
    console.print(f"{safe_text(r['host'], False)}: {'already trusts' if r['already'] else 'now trusts'} "
                  f"{safe_text(r['key'], False)} ({len(r['keys'])} trusted key{'s' if len(r['keys']) != 1 else ''})",
                  highlight=False, markup=False)


@handle_errors
@_on_board
def revoke_cmd(
    key: str = typer.Argument(..., metavar="FINGERPRINT|KEY.pub", help="The key to stop trusting."),
    target: Any = None,  # the board: --host, --board, --identity, ... (_on_board)
    force: bool = typer.Option(False, "--force", help="Remove even the last key (the board then accepts unsigned "
                                                      "bundles again)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Remove a key from the board's trust store; bundles signed by it are refused from then on.

    Key rotation: enroll the new key, flash a bundle signed with it, then revoke the old one.

    Examples:

      edgesdk keys revoke --host pi@10.0.0.7 ed25519:3f2a...

      edgesdk keys revoke --host pi@10.0.0.7 old.pub
    """
    from edgesdk.deploy.trust import revoke_key

    r = revoke_key(target, key, force=force)
    if json_out:
        print_json(r)
        return
    console.print(f"{safe_text(r['host'], False)}: revoked {safe_text(r['key'], False)}; trusted now: "
                  f"{safe_text(', '.join(map(str, r['keys'])), False) or 'none'}", highlight=False, markup=False)
    if r.get("warning"):
        err_console.print(f"[yellow]warning:[/] {safe_text(r['warning'])}", highlight=False)


@handle_errors
@_on_board
def list_cmd(
    target: Any = None,  # the board: --host, --board, --identity, ... (_on_board)
    json_out: bool = JSON_OPTION,
) -> None:
    """The keys the board trusts.

    Example:

      edgesdk keys list --host pi@10.0.0.7
    """
    from edgesdk.deploy.trust import list_keys

    r = list_keys(target)
    if json_out:
        print_json(r)
        return
    if not r["keys"]:
        console.print(f"{safe_text(r['host'], False)}: no trusted key (unsigned bundles are accepted, with a warning)",
                      highlight=False, markup=False)
    for k in r["keys"]:
        console.print(safe_text(k, False), highlight=False, markup=False)


@handle_errors
def sign_cmd(
    bundle: Path = typer.Argument(..., metavar="BUNDLE", help="The bundle directory."),
    key: Path = typer.Option(..., "--key", "-k", metavar="KEY", help="Private key (edgesdk keys generate)."),
    version: int | None = typer.Option(None, "--version", metavar="N", help="release_version (default: the UTC "
                                       "time in seconds, and above every version this host signed before)."),
    expires: str | None = typer.Option(None, "--expires", metavar="DURATION|DATE",
                                       help="Boards refuse to install or activate it after this: 30d, 12h, 8w, "
                                            "2027-01-31 or 2027-01-31T12:00:00Z (UTC). Signed with the manifest."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Sign BUNDLE: set its release_version and write manifest.sig over manifest.json (which lists every file's
    sha256). Boards that trust the key refuse a lower release_version than the highest they ever activated.

    Examples:

      edgesdk sign build/rpi4 --key release-2026.key

      edgesdk sign build/rpi4 --key release-2026.key --version 42 --json

      edgesdk sign build/rpi4 --key release-2026.key --expires 30d
    """
    from edgesdk.signing import sign_bundle

    r = sign_bundle(bundle, key, version, expires=expires)
    if json_out:
        print_json(r.to_dict())
        return
    console.print(f"signed {r.bundle} (bundle {r.bundle_id}, release_version {r.release_version}) with {r.fingerprint}"
                  + (f", expires {r.expires_at}" if r.expires_at else ""), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    keys_app.command("generate")(generate_cmd)
    keys_app.command("enroll")(enroll_cmd)
    keys_app.command("revoke")(revoke_cmd)
    keys_app.command("list")(list_cmd)
    app.add_typer(keys_app, name="keys")
    app.command("sign")(sign_cmd)

"""Fleets against several real sshd 'boards': parallel, canary, --max-fail, one unreachable board, the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sshd_fixture import (  # noqa: E402
    board_python, free_port, local_profile, make_test_bundle, public_dir, require_sshd, start_sshd,
)

from edgesdk.deploy.flash import FlashOptions  # noqa: E402
from edgesdk.deploy.fleet import InventoryHost, deploy_fleet  # noqa: E402

PY, ROOT_OK = board_python()  # nobody can run PY (the smoke test's user), or ROOT_OK: as root, said so

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet():
    require_sshd()
    first = start_sshd("fleet0")
    boards = [first] + [start_sshd(f"fleet{i}", client_key=first.key) for i in range(1, 4)]
    kh = first.root / "fleet_known_hosts"
    kh.write_text("".join(b.known_hosts.read_text() for b in boards))
    d = public_dir("edgesdk-fleet-bundle-")
    bundle = make_test_bundle(d / "b", seed=2)
    bad = make_test_bundle(d / "bad", seed=3, wrong_reference=True)
    yield boards, kh, bundle, bad
    for b in boards:
        b.stop()


def _hosts(boards, extra_unreachable: bool = False) -> list[InventoryHost]:
    hs = [InventoryHost(name=f"b{i}", host="127.0.0.1", port=b.port, user="root", identity=str(b.key),
                        remote_dir=str(b.base)) for i, b in enumerate(boards)]
    if extra_unreachable:
        hs.insert(1, InventoryHost(name="dead", host="127.0.0.1", port=free_port(), user="root",
                                   identity=str(boards[0].key), remote_dir="/tmp/none"))
    return hs


def test_one_unreachable_board_others_succeed(fleet):
    boards, kh, bundle, _ = fleet
    opts = FlashOptions(python=PY, allow_root_smoke=ROOT_OK)
    fr = deploy_fleet(bundle, local_profile(), _hosts(boards, True), opts, parallel=4, max_fail=1.0, retries=1,
                      target_defaults={"known_hosts": kh, "connect_timeout": 3})
    st = {r.host.split(" ")[0]: r.status for r in fr.results}
    assert st.pop("dead") == "unreachable"
    assert set(st.values()) == {"success"} and len(st) == 4
    assert not fr.ok
    for b in boards:
        assert (b.base / "current").is_symlink()


def test_canary_failure_stops_later_waves(fleet):
    boards, kh, _, bad = fleet
    opts = FlashOptions(python=PY, allow_root_smoke=ROOT_OK)
    before = [os.readlink(b.base / "current") if (b.base / "current").is_symlink() else None for b in boards]
    fr = deploy_fleet(bad, local_profile(), _hosts(boards), opts, parallel=4, canary=1, max_fail=0.0,
                      target_defaults={"known_hosts": kh})
    assert [r.status for r in fr.results] == ["rolled-back"]
    assert fr.skipped == ("b1", "b2", "b3") and "canary" in fr.stopped
    after = [os.readlink(b.base / "current") if (b.base / "current").is_symlink() else None for b in boards]
    assert after == before  # the canary rolled back; the others were never touched


def test_fleet_cli_json_lines_and_ini_inventory(fleet, tmp_path):
    from typer.testing import CliRunner

    from edgesdk.cli import app

    boards, kh, bundle, _ = fleet
    ini = tmp_path / "fleet.ini"
    lines = ["[canaries]", f"b0 ansible_host=127.0.0.1 ansible_port={boards[0].port} edgesdk_remote_dir={boards[0].base}",
             "[rest]"]
    lines += [f"b{i} ansible_host=127.0.0.1 ansible_port={b.port} edgesdk_remote_dir={b.base}"
              for i, b in enumerate(boards) if i]
    lines += ["[pis:children]", "canaries", "rest", "[pis:vars]", "ansible_user=root"]
    ini.write_text("\n".join(lines) + "\n")
    # the CLI flashes a bundle made for board 'localhost': --force lets the rpi4 profile take it, recorded
    env = {"EDGESDK_HOME": str(tmp_path / "home")}
    res = CliRunner().invoke(app, ["flash", "--board", "rpi4", str(bundle), "--hosts", str(ini), "--limit", "pis",
                                   "--identity", str(boards[0].key), "--known-hosts", str(kh), "--python",
                                   PY, *(["--allow-root-smoke"] if ROOT_OK else []), "--force", "--parallel", "4", "--canary", "1", "--json"], env=env)
    out = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert len(out) == 4, res.stdout + (res.stderr if res.stderr_bytes else "")
    assert {o["status"] for o in out} == {"success"} and all(o["forced"] for o in out)
    assert res.exit_code == 0

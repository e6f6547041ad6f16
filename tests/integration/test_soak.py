"""The fault soak (scripts/soak_flash.py) in CI: 20 rounds, fixed seed, against a real local sshd board; and its
invariant checker on a board broken by hand (a checker that cannot fail would make the soak worthless)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from sshd_fixture import board_python, local_profile, make_test_bundle, public_dir, require_sshd

pytestmark = pytest.mark.integration
SCRIPT = ROOT / "scripts" / "soak_flash.py"


def _soak_module():
    spec = importlib.util.spec_from_file_location("soak_flash", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_soak_20_rounds_no_violation():
    require_sshd()
    p = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "20", "--seed", "17", "--json", "--quiet"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert p.stdout.strip(), p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["violations"] == 0 and p.returncode == 0, json.dumps(res["violation_list"], indent=1)
    assert res["rounds"] == 20
    soak = _soak_module()
    assert set(res["faults"]) == set(soak.FAULTS), res["faults"]  # every kind of fault was injected
    assert sum(res["faults"].values()) == 20
    # the faults really happened: the corrupted, full, failing and killed flashes did not succeed
    for kind in ("corrupt-always", "corrupt-staged", "disk-full", "kill-activate"):
        assert set(res["outcomes"][kind]) == {"failed"}, (kind, res["outcomes"][kind])
    assert set(res["outcomes"]["bad-smoke"]) == {"rolled-back"}
    assert res["notes"].get("kill-activate: killed", 0) == res["faults"]["kill-activate"], res["notes"]
    # the board trusted a key and every release was signed with it (admit and the verifier ran under the faults;
    # the invariant checks each activated release's signer)
    assert res["signing"]["key"].startswith("ed25519:") and res["signing"]["releases_signed"] >= 21, res["signing"]


def test_invariant_checker_catches_a_broken_board():
    """One real flash (FakeTransport: the agent runs locally on a dir), then break the board in six ways."""
    from edgesdk.deploy.flash import FlashOptions, flash
    from edgesdk.deploy.transport import FakeTransport

    soak = _soak_module()
    py, root_ok = board_python()
    d = public_dir("edgesdk-soakcheck-")
    try:
        bundle = make_test_bundle(d / "a", seed=3, pad_bytes=1 << 16)
        base = d / "board"
        base.mkdir()
        os.chmod(base, 0o755)
        r = flash(bundle, local_profile(), FakeTransport.target_for(base),
                  FlashOptions(python=py, allow_root_smoke=root_ok), transport=FakeTransport)
        assert r.status == "success", r.error
        assert soak.check_board(base, clean=True) == []
        rid = r.bundle_id
        blob = base / "releases" / rid / "blob.bin"

        os.chmod(blob, 0o600)
        data = blob.read_bytes()
        blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        assert any("blob.bin does not match" in v for v in soak.check_board(base, clean=True))
        blob.write_bytes(data)
        (base / "releases" / rid / "extra.txt").write_text("x")
        assert any("stray file extra.txt" in v for v in soak.check_board(base, clean=True))
        (base / "releases" / rid / "extra.txt").unlink()
        assert soak.check_board(base, clean=True) == []
        (base / "lock").write_text("{}")
        (base / "staging" / "leftover").mkdir(parents=True)
        got = soak.check_board(base, clean=True)
        assert "lock left behind" in got and any("staging left behind" in v for v in got), got
        assert soak.check_board(base, clean=False) == []  # tolerated right after a fault, not after the rerun
        (base / "lock").unlink()
        (base / "staging" / "leftover").rmdir()
        st_path = base / "state.json"
        st = json.loads(st_path.read_text())
        st["pending"] = {"release": rid, "previous": None, "since": "x"}
        st_path.write_text(json.dumps(st))
        assert any("pending switch is left" in v for v in soak.check_board(base, clean=True))
        assert soak.check_board(base, clean=False, pending_ok=True) == []
        st["pending"] = None
        st["history"].append({"event": "rolled-back", "release": rid, "to": "someother"})
        st_path.write_text(json.dumps(st))
        assert any("last switch" in v for v in soak.check_board(base, clean=True))
        os.unlink(base / "current")
        os.symlink("releases/nothing", base / "current")
        assert any("not an installed release" in v for v in soak.check_board(base, clean=True))
    finally:
        shutil.rmtree(d, ignore_errors=True)

"""edgesdk profile on the emulated rpi4 (qemu-user rootfs + sshd): numbers marked emulated, never compared.

Slow (qemu); needs the emulated rpi4 running and provisioned (the flash tests or `edgesdk flash` do it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytestmark = pytest.mark.integration


def _emulated_release():
    from edgesdk import emulator
    from edgesdk.boards import get_board
    from edgesdk.deploy.flash import status

    board = get_board("rpi4")
    if emulator.status(board).state != "running":
        return None, "the emulated rpi4 is not running (edgesdk emulator start rpi4)"
    from edgesdk.deploy.flash import emulator_target

    target, _ = emulator_target(board)
    st = status(target)
    if not st.current:
        return None, "the emulated rpi4 holds no release yet (edgesdk flash MODEL --board rpi4)"
    return (target, st.current), None


def test_profile_on_emulated_rpi4(tmp_path):
    rel, reason = _emulated_release()
    if rel is None:
        if os.environ.get("EDGESDK_REQUIRE_EMULATED"):
            pytest.fail(reason)
        pytest.skip(reason)
    target, release = rel
    from edgesdk.profile import ProfileOptions, load_report, profile

    rep = profile(None, "rpi4", target, ProfileOptions(runs=5, warmup=1, per_layer=True, layer_runs=2, frames=5),
                  release=release)
    d = load_report(rep.write_json(tmp_path / "emu.json")).data
    assert d["emulated"] is True and d["target"]["emulated"] is True
    assert d["system"]["emulated"] is not None and d["system"]["machine"] == "aarch64"
    codes = {f["code"] for f in d["flags"]}
    assert "emulated" in codes and not codes & {"slower-than-published", "faster-than-published", "far-from-roofline"}
    assert d["expectations"]["compared"] is False
    assert "EMULATED" in rep.write_html(tmp_path / "emu.html").read_text()

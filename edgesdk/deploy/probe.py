"""Probe: what the board is (arch, OS, glibc, Python, disk, RAM, device-tree model, accelerator), compared
with its board profile. A mismatch names what was expected and what was found."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgesdk.boards import BoardProfile
from edgesdk.deploy.board import RemoteBoard
from edgesdk.errors import InputError

#: Below this the board cannot hold a venv with an engine and a release.
MIN_FREE_BYTES = 64 << 20


class ProbeMismatch(InputError):
    """The board is not what its profile says; --force overrides (and is recorded on the board)."""

    def __init__(self, host: str, board: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{host} does not look like a {board}:\n{lines}\n  (--force flashes anyway, and the board's "
                         "state records that it was forced)")


@dataclass(frozen=True)
class ProbeResult:
    facts: dict[str, Any]
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    emulated: bool = False
    forced: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"facts": self.facts, "problems": list(self.problems), "warnings": list(self.warnings),
                "emulated": self.emulated, "forced": self.forced}


_ARCH = {"aarch64": {"aarch64", "arm64"}, "armv7l": {"armv7l", "armv7", "armhf", "armv8l"},
         "x86_64": {"x86_64", "amd64"}}


def _ver(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else ()


def missing_devices(profile: BoardProfile, facts: dict[str, Any]) -> list[str]:
    """The profile's detect items (USB ids, device nodes, vendor tools) the probe did not find."""
    missing = []
    usb = {x.lower() for x in facts.get("usb_ids") or []}
    ids = profile.detect.usb_ids
    if ids and not any(u.vid_pid.lower() in usb for u in ids):  # alternatives (e.g. a Coral before/after firmware)
        missing.append("USB device " + " or ".join(f"{u.vid_pid} ({u.meaning})" for u in ids))
    nodes = facts.get("dev_nodes") or {}
    if profile.detect.dev_nodes_any:  # alternatives (rk3588: /dev/rknpu or the rknpu DRM render node)
        if nodes and not any(nodes.values()):
            missing.append("device node " + " or ".join(nodes))
    else:
        missing += [f"device node {n}" for n, ok in nodes.items() if not ok]
    missing += [f"vendor tool {t}" for t, where in (facts.get("tools") or {}).items() if not where]
    return missing


def accelerator_present(profile: BoardProfile, facts: dict[str, Any]) -> bool:
    """Whether the probed board has the profile's accelerator hardware: never on an emulated board; otherwise
    one of its USB ids when it lists some (a Coral shows 1a6e:089a before its firmware is loaded, 18d1:9302
    after) and its device nodes when it lists some: one of them when they are alternatives (`dev_nodes_any`: kv260's
    /dev/dpu or the XRT render node), else all (hi3519a's /dev/nnie, /dev/sys, /dev/mmz_userdev). Vendor tools
    are software: a missing runtime shows up in the smoke test as a missing engine."""
    if not profile.has_accelerator or facts.get("emulated"):
        return False
    usb = {x.lower() for x in facts.get("usb_ids") or []}
    if profile.detect.usb_ids and not any(u.vid_pid.lower() in usb for u in profile.detect.usb_ids):
        return False
    nodes = facts.get("dev_nodes") or {}
    if not profile.detect.dev_nodes:
        return True
    have = [bool(nodes.get(n)) for n in profile.detect.dev_nodes]
    return any(have) if profile.detect.dev_nodes_any else all(have)


def compare(profile: BoardProfile, facts: dict[str, Any], accelerator_required: bool = True) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the probed facts against the profile. accelerator_required=False: a missing
    accelerator is a warning (flash decides with accelerator_routes, the one fallback rule, whether the bundle needs it)."""
    problems: list[str] = []
    warnings: list[str] = []
    want_arch = profile.cpu.arch
    got = facts.get("machine", "")
    if got not in _ARCH.get(want_arch, {want_arch}):
        problems.append(f"CPU architecture: expected {want_arch}, found {got or 'unknown'}")
    want_py = _ver(profile.os.python)
    got_py = _ver(facts.get("python", ""))
    if want_py and got_py != want_py:
        problems.append(f"Python: expected {profile.os.python} (the wheels are built for it), found {facts.get('python')}")
    want_libc, got_libc = _ver(profile.os.libc), _ver(facts.get("libc", ""))
    if "glibc" in profile.os.libc and not facts.get("libc", "").startswith("glibc"):
        problems.append(f"libc: expected {profile.os.libc}, found {facts.get('libc') or 'not glibc'}")
    elif want_libc and got_libc and got_libc < want_libc:
        problems.append(f"glibc: expected >= {'.'.join(map(str, want_libc))} (manylinux tags), found {facts.get('libc')}")
    dt = facts.get("device_tree_model")
    models = profile.detect.device_tree_model
    if models:
        if not dt:
            problems.append(f"device-tree model: expected one of {models}, found none")
        elif not any(m in dt for m in models):
            problems.append(f"device-tree model: expected one of {models}, found {dt!r}")
    free = facts.get("free_bytes") or 0
    if free < MIN_FREE_BYTES:
        problems.append(f"free disk under {facts.get('base')}: expected >= {MIN_FREE_BYTES >> 20} MB, found {free >> 20} MB")
    ram = facts.get("ram_bytes")
    if ram and profile.memory.sizes_mb and ram < min(profile.memory.sizes_mb) * (1 << 20) * 0.8:
        warnings.append(f"RAM: {ram >> 20} MB, less than the smallest {profile.name} ({min(profile.memory.sizes_mb)} MB)")
    emulated = bool(facts.get("emulated"))
    missing = missing_devices(profile, facts)
    if missing:
        msg = f"not found on the board: {', '.join(missing)}"
        if profile.has_accelerator and not emulated and accelerator_required:
            problems.append(f"accelerator ({profile.accelerator.kind}): {msg}")
        else:
            warnings.append(msg + (" (emulated board: CPU side only)" if emulated else ""))
    if emulated:
        warnings.append("EMULATED board (qemu-user): timings are not the board's")
    return problems, warnings


def probe(rb: RemoteBoard, profile: BoardProfile, force: bool = False, accelerator_required: bool = True) -> ProbeResult:
    facts = rb.probe(list(profile.detect.dev_nodes), list(profile.detect.vendor_tools))
    problems, warnings = compare(profile, facts, accelerator_required)
    if problems and not force:
        raise ProbeMismatch(rb.conn.target.known_hosts_name, profile.id, problems)
    return ProbeResult(facts, tuple(problems), tuple(warnings), bool(facts.get("emulated")), bool(problems and force))

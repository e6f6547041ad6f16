"""`edgesdk toolchain install ID`: create a toolchain's isolated venv from its spec, explicitly, once.

Conversions never create or repair a venv: a missing one is an EnvironmentProblem whose fix is
this command. Re-running it is cheap: a marker in the venv records the requirements it was
built from, and a venv that already satisfies them is left alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edgesdk.errors import EnvironmentProblem, InputError
from edgesdk.paths import toolchain_venv
from edgesdk.toolchains.executor import Command, Runner, run_command
from edgesdk.toolchains.spec import ToolchainSpec, get_toolchain, toolchains_dir

MARKER = ".edgesdk-toolchain.json"


@dataclass(frozen=True)
class InstallResult:
    toolchain: str
    kind: str
    venv: Path | None
    action: str  # "created" | "up-to-date" | "host" | "not-installable"
    detail: str
    commands: tuple[Command, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"toolchain": self.toolchain, "kind": self.kind, "venv": str(self.venv) if self.venv else None,
                "action": self.action, "detail": self.detail, "commands": [list(c.argv) for c in self.commands]}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def venv_package_version(venv: Path, dist: str) -> str | None:
    """The installed version of `dist` in a venv, read from its dist-info (no interpreter started)."""
    want = _norm(dist)
    for info in venv.glob("lib/python3*/site-packages/*.dist-info"):
        name, _, ver = info.name[: -len(".dist-info")].rpartition("-")
        if _norm(name) == want:
            return ver
    return None


def requirements(spec: ToolchainSpec, directory: Path | None = None) -> list[str]:
    """The pip requirement lines of a venv toolchain: provision.requirements + its requirements file."""
    reqs = list(spec.provision.requirements)
    if spec.provision.requirements_file:
        f = (directory or toolchains_dir()) / spec.id / spec.provision.requirements_file
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read {f}: {exc.strerror or exc}") from exc
        reqs += [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]
    return reqs


def _pip_args(toolchain_id: str) -> tuple[str, ...]:
    """The adapter's extra pip arguments (rknn: --no-deps over a full pinned closure), from the record's adapter."""
    import importlib

    mod, cls = get_toolchain(toolchain_id).adapter.split(":")
    return tuple(getattr(getattr(importlib.import_module(mod), cls), "pip_args", ()))


def _fingerprint(reqs: list[str], pip_args: tuple[str, ...], python: str) -> str:
    return hashlib.sha256(json.dumps([reqs, list(pip_args), python]).encode()).hexdigest()


def base_python() -> str:
    """The interpreter a toolchain venv is made from: the one edgesdk runs on (outside any venv)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def plan_install(toolchain_id: str, venv: Path | None = None, python: str | None = None) -> tuple[Command, ...]:
    spec = get_toolchain(toolchain_id)
    if spec.provision.kind != "venv":
        return ()
    v = venv or toolchain_venv(spec.id)
    reqs = requirements(spec)
    py = python or base_python()
    return (
        Command("venv", (py, "-m", "venv", str(v)), timeout=300, purpose="create the isolated venv"),
        Command("pip", (str(v / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        *_pip_args(spec.id), *reqs), timeout=3600, purpose=f"install {spec.id}'s pinned requirements"),
    )


def install_toolchain(toolchain_id: str, force: bool = False, venv: Path | None = None, python: str | None = None,
                      runner: Runner | None = None) -> InstallResult:
    """Create (or leave alone, if already satisfied) the isolated venv of a toolchain."""
    spec = get_toolchain(toolchain_id)
    kind = spec.provision.kind
    if kind == "host":
        return InstallResult(spec.id, kind, None, "host",
                             "runs in edgesdk's own environment: pip install 'edgesdk[host]' provides it")
    if kind != "venv":
        hints = "; ".join(f"{t.name}: {t.install_hint}" for t in spec.tools)
        raise InputError(f"toolchain {spec.id!r} is provisioned as {kind!r}, not a venv edgesdk can create. "
                         f"Install it by hand: {hints}")
    v = venv or toolchain_venv(spec.id)
    py = python or base_python()
    reqs = requirements(spec)
    pip_args = _pip_args(spec.id)
    fp = _fingerprint(reqs, pip_args, py)
    marker = v / MARKER
    if not force and marker.is_file() and (v / "bin" / "python").is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == fp:
                return InstallResult(spec.id, kind, v, "up-to-date", f"{v} already satisfies its requirements")
        except (OSError, ValueError):
            pass
    cmds = plan_install(spec.id, v, py)
    if force and v.exists():
        shutil.rmtree(v)
    v.parent.mkdir(parents=True, exist_ok=True)
    fresh = not v.exists()
    try:
        if fresh:
            run_command(cmds[0], runner)
        run_command(cmds[1], runner)
    except BaseException:
        if fresh:  # never leave a half-made venv that looks usable
            shutil.rmtree(v, ignore_errors=True)
        raise
    marker.write_text(json.dumps({"toolchain": spec.id, "fingerprint": fp, "requirements": reqs,
                                  "pip_args": list(pip_args), "python": py}, indent=2) + "\n", encoding="utf-8")
    return InstallResult(spec.id, kind, v, "created", f"installed {len(reqs)} requirement(s) into {v}", cmds)


__all__ = ["InstallResult", "install_toolchain", "plan_install", "requirements", "venv_package_version"]

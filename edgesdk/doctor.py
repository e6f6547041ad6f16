"""What this machine has for edgesdk: toolchains, engines and external tools, each with a version or a fix."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from edgesdk.boards import BoardProfile, list_boards
from edgesdk.errors import ProfileError
from edgesdk.paths import toolchain_venv
from edgesdk.toolchains.spec import Tool, ToolchainSpec, get_op_table, list_toolchains

#: "unknown": present, but it did not answer in time (a cold disk cache, a loaded machine); not counted as broken.
Status = Literal["ok", "missing", "broken", "unknown", "n/a"]

def engine_modules() -> dict[str, tuple[tuple[str, ...], str]]:
    """Runtime engines from the toolchain records: engine id -> (import names in order, install hint)."""
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    for t in list_toolchains():
        hint = t.runtime.install_hint if t.kind == "cpu" else f"on the board: {t.runtime.install_hint}"
        out.setdefault(t.engine, (tuple(t.runtime.python_modules), hint))
    return out


def host_engines() -> tuple[str, ...]:
    """Engines that run on the host too (verify, conversion checks): `edgesdk[host]` brings them."""
    return tuple(t.engine for t in list_toolchains() if t.kind == "cpu")


#: The [host] extra, when edgesdk's metadata cannot be read (a bare checkout on sys.path).
_HOST_EXTRA_FALLBACK = ("numpy", "onnx", "onnxruntime", "onnxslim", "paramiko", "pillow", "ncnn", "MNN",
                        "ai-edge-litert")


def _repo_checkout() -> Path | None:
    """The checkout edgesdk runs from (a clone with scripts/setup.sh), or None for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "scripts" / "setup.sh").is_file() else None


def install_command() -> str:
    """The one command that installs what `edgesdk[host]` brings, for the way edgesdk was installed."""
    import shlex
    import sys

    from edgesdk import __version__

    root = _repo_checkout()
    if root is not None:
        return f"bash {shlex.quote(str(root / 'scripts' / 'setup.sh'))}"
    return f"{shlex.quote(sys.executable)} -m pip install 'edgesdk[host]=={__version__}'"


def host_extra() -> list[str]:
    """The distributions of the `host` extra, from edgesdk's own metadata (pyproject.toml's list)."""
    try:
        reqs = importlib.metadata.requires("edgesdk") or []
    except importlib.metadata.PackageNotFoundError:
        return list(_HOST_EXTRA_FALLBACK)
    out = []
    for r in reqs:
        spec, _, marker = r.partition(";")
        if re.search(r"""extra\s*==\s*['"]host['"]""", marker):
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
            if m:
                out.append(m.group(1))
    return out or list(_HOST_EXTRA_FALLBACK)


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    """edgesdk, its board package at the same version, and the [host] extra (one fix for all of it)."""
    import edgesdk
    import edgesdk.runtime as rt

    out = [Check("package", "edgesdk", "ok", edgesdk.__version__, str(Path(edgesdk.__file__).parent))]
    rt_ver = getattr(rt, "__version__", None)
    if rt_ver == edgesdk.__version__:
        out.append(Check("package", "edgesdk-runtime", "ok", rt_ver, f"board package: {Path(rt.__file__).parent}"))
    else:
        import shlex
        import sys

        out.append(Check("package", "edgesdk-runtime", "broken", rt_ver,
                         f"the board package is {rt_ver}, edgesdk is {edgesdk.__version__}: flashing would send "
                         f"a runtime of another version",
                         f"{shlex.quote(sys.executable)} -m pip install 'edgesdk-runtime=={edgesdk.__version__}'"))
    extra = host_extra()
    missing = [d for d in extra if _dist_version(d) is None]
    if missing:
        out.append(Check("package", "edgesdk[host]", "missing", None,
                         f"not installed: {', '.join(missing)} (inspect, convert, verify and flash need them)",
                         install_command()))
    else:
        out.append(Check("package", "edgesdk[host]", "ok", None, ", ".join(extra)))
    return out

#: External tools and how to get each.
EXTERNAL_TOOLS: list[tuple[str, list[str], str, str]] = [
    # (name, version argv, regex, install hint)
    ("qemu-aarch64-static", ["qemu-aarch64-static", "--version"], r"version ([\d.]+)", "apt-get install qemu-user-static binfmt-support"),
    ("qemu-arm-static", ["qemu-arm-static", "--version"], r"version ([\d.]+)", "apt-get install qemu-user-static binfmt-support"),
    ("debootstrap", ["debootstrap", "--version"], r"debootstrap ([\d.a-z+~-]+)", "apt-get install debootstrap"),
    ("sshd", ["sshd", "-V"], r"OpenSSH_([\w.]+)", "apt-get install openssh-server"),
    ("ssh", ["ssh", "-V"], r"OpenSSH_([\w.]+)", "apt-get install openssh-client"),
    ("cmake", ["cmake", "--version"], r"version ([\d.]+)", "apt-get install cmake"),
    ("aarch64-linux-gnu-gcc", ["aarch64-linux-gnu-gcc", "--version"], r"\) ([\d.]+)", "apt-get install g++-aarch64-linux-gnu"),
    ("arm-linux-gnueabihf-gcc", ["arm-linux-gnueabihf-gcc", "--version"], r"\) ([\d.]+)", "apt-get install g++-arm-linux-gnueabihf"),
    ("docker", ["docker", "--version"], r"version ([\d.]+)", "install Docker Engine (vendor toolchain containers only)"),
]


@dataclass(frozen=True)
class Check:
    category: Literal["package", "board-data", "toolchain", "engine", "tool", "emulation"]
    name: str
    status: Status
    version: str | None = None
    detail: str | None = None
    fix: str | None = None
    component: str | None = None  # e.g. the toolchain a tool belongs to


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    host: dict[str, str] = field(default_factory=dict)
    board: str | None = None

    @property
    def broken(self) -> list[Check]:
        return [c for c in self.checks if c.status == "broken"]

    @property
    def ok(self) -> bool:
        """False only for a broken install; missing optional things are fine."""
        return not self.broken

    def to_dict(self) -> dict:
        return {
            "board": self.board,
            "host": self.host,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
        }


#: Seconds a tool gets to print its version (onnx2tf imports TensorFlow for `-V`: ~3 s warm, far more from a cold
#: disk cache on a loaded machine).
VERSION_TIMEOUT = 90.0


def _run_version(argv: list[str], regex: str | None,
                 timeout: float = VERSION_TIMEOUT) -> tuple[Status, str | None, str | None]:
    exe = shutil.which(argv[0]) if "/" not in argv[0] else (argv[0] if Path(argv[0]).exists() else None)
    if exe is None:
        return "missing", None, None
    try:
        res = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "unknown", None, f"{exe} is there but did not answer within {timeout:g} s"
    except OSError as exc:
        return "broken", None, f"{exe} does not run: {exc}"
    text = (res.stdout or "") + (res.stderr or "")
    if regex:
        m = re.search(regex, text)
        if m:
            return "ok", m.group(1), exe
    first = text.strip().splitlines()[0] if text.strip() else ""
    # Many tools print usage and exit non-zero for a version flag; a found binary that
    # prints anything is installed.
    if first:
        return "ok", first[:60], exe
    if res.returncode != 0:
        return "broken", None, f"{exe} exited {res.returncode} with no output"
    return "ok", None, exe


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """Silence fds 1 and 2 while an engine imports: some print banners from C straight to stdout."""
    import sys

    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError):  # no real fds (e.g. captured by a test runner)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _module_version(mod: str) -> tuple[Status, str | None, str | None]:
    if importlib.util.find_spec(mod) is None:
        return "missing", None, None
    try:
        with _quiet_fds():
            m = importlib.import_module(mod)
    except Exception as exc:  # an installed package that does not import is a broken install
        return "broken", None, f"import {mod} failed: {type(exc).__name__}: {exc}"
    ver = getattr(m, "__version__", None)
    if ver is None:
        try:
            dists = importlib.metadata.packages_distributions().get(mod.split(".")[0]) or [mod]
            ver = importlib.metadata.version(dists[0])
        except importlib.metadata.PackageNotFoundError:
            ver = None
    return "ok", str(ver) if ver else None, None


def _venv_module_version(venv: Path, mod: str) -> tuple[Status, str | None, str | None]:
    py = venv / "bin" / "python"
    if not py.exists():
        return "missing", None, None
    # Engines print banners on stdout from C (MNN: "The device supports: ..."), so the version
    # comes back on a marked line.
    code = (
        "import importlib, importlib.metadata as md\n"
        f"m = importlib.import_module({mod!r})\n"
        "v = getattr(m, '__version__', None)\n"
        "if not v:\n"
        f"    dists = md.packages_distributions().get({mod.split('.')[0]!r}, [])\n"
        "    v = md.version(dists[0]) if dists else ''\n"
        "print('EDGESDK_VERSION=' + str(v or ''))\n"
    )
    try:
        res = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=VERSION_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "unknown", None, f"import {mod} in {venv} did not finish within {VERSION_TIMEOUT:g} s"
    except OSError as exc:
        return "broken", None, f"{py} does not run: {exc}"
    if res.returncode != 0:
        tail = (res.stderr or "").strip().splitlines()[-1:] or [""]
        return "broken", None, f"import {mod} in {venv} failed: {tail[0]}"
    ver = next((ln.split("=", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("EDGESDK_VERSION=")), "")
    return "ok", ver.strip() or None, None


def check_tool(spec: ToolchainSpec, tool: Tool) -> Check:
    arch = platform.machine()
    if tool.platforms and arch not in tool.platforms:
        return Check("toolchain", tool.name, "n/a", None, f"exists for {', '.join(tool.platforms)} only", tool.install_hint, spec.id)
    if tool.kind == "executable":
        assert tool.command is not None
        cmd = tool.command
        if tool.where == "venv":
            cmd = str(toolchain_venv(spec.id) / "bin" / tool.command)
        status, ver, detail = _run_version([cmd, *tool.version_args], tool.version_regex)
    elif tool.kind == "python-module":
        assert tool.module is not None
        if tool.where == "venv":
            status, ver, detail = _venv_module_version(toolchain_venv(spec.id), tool.module)
        else:
            status, ver, detail = _module_version(tool.module)
    else:
        status, ver, detail = _container_image(tool.image or "")
    if status == "missing" and not tool.required:
        detail = (detail + "; " if detail else "") + "optional"
    return Check("toolchain", tool.name, status, ver, detail, _tool_fix(spec, tool) if status != "ok" else None, spec.id)


def _tool_fix(spec: ToolchainSpec, tool: Tool) -> str:
    """The one command that adds a tool: the toolchain's own venv, or edgesdk's [host] extra, else the spec's hint."""
    if tool.where == "venv" and spec.provision.kind == "venv":
        return f"edgesdk toolchain install {spec.id}"
    if tool.where == "host" and spec.provision.kind == "host" and tool.kind == "python-module":
        return install_command()
    return tool.install_hint


def _container_image(image: str) -> tuple[Status, str | None, str | None]:
    docker = shutil.which("docker")
    if docker is None:
        return "missing", None, "docker is not installed"
    try:
        res = subprocess.run([docker, "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "missing", None, f"docker does not answer: {exc}"
    if res.returncode != 0:
        msg = (res.stderr or "").strip().splitlines()
        return "missing", None, (msg[-1][:120] if msg else f"image {image} not present")
    return "ok", res.stdout.strip()[:19], None


def check_emulation() -> list[Check]:
    out = []
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        out.append(Check("emulation", "binfmt_misc", "missing", None, "not mounted",
                         "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable"))
    else:
        for arch in ("aarch64", "arm"):
            entry = binfmt / f"qemu-{arch}"
            if not entry.exists():
                out.append(Check("emulation", f"binfmt qemu-{arch}", "missing", None, None,
                                 "apt-get install qemu-user-static binfmt-support && update-binfmts --enable"))
                continue
            text = entry.read_text()
            flags = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("flags:")), "")
            if not text.startswith("enabled"):
                out.append(Check("emulation", f"binfmt qemu-{arch}", "missing", None, "disabled", f"update-binfmts --enable qemu-{arch}"))
            elif "F" not in flags:
                out.append(Check("emulation", f"binfmt qemu-{arch}", "broken", None, f"flags {flags!r} lack F: fails in chroots",
                                 "apt-get install --reinstall qemu-user-static"))
            else:
                out.append(Check("emulation", f"binfmt qemu-{arch}", "ok", None, f"flags {flags}"))
    out.append(Check("emulation", "root", "ok" if os.geteuid() == 0 else "missing", None,
                     None if os.geteuid() == 0 else "emulated boards need root", None if os.geteuid() == 0 else "run as root"))
    return out


def run_doctor(board: BoardProfile | None = None) -> DoctorReport:
    """Probe everything edgesdk can use here. Restrict toolchains/engines to `board`'s when given."""
    import sys

    from edgesdk import __version__

    rep = DoctorReport(board=board.id if board else None)
    rep.host = {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system(),
                "edgesdk": __version__, "executable": sys.executable}
    rep.checks.extend(check_packages())
    # Shipped data: a profile that does not validate is a broken install.
    try:
        boards = list_boards()
        rep.checks.append(Check("board-data", "board profiles", "ok", None, f"{len(boards)} boards"))
    except ProfileError as exc:
        rep.checks.append(Check("board-data", "board profiles", "broken", None, str(exc), "reinstall edgesdk"))
    try:
        specs = list_toolchains()
        for s in specs:
            get_op_table(s.id)
    except ProfileError as exc:
        rep.checks.append(Check("board-data", "toolchain specs", "broken", None, str(exc), "reinstall edgesdk"))
        specs = []
    else:
        rep.checks.append(Check("board-data", "toolchain specs", "ok", None, f"{len(specs)} toolchains"))

    wanted_tc = set(board.toolchains) if board else None
    for s in specs:
        if wanted_tc is not None and s.id not in wanted_tc:
            continue
        for t in s.tools:
            rep.checks.append(check_tool(s, t))

    known = engine_modules()
    engines = board.engines if board else list(known)
    for eng in engines:
        mods, hint = known[eng]
        if not mods:
            rep.checks.append(Check("engine", eng, "n/a", None, hint, None))
            continue
        found: tuple[Status, str | None, str | None] = ("missing", None, None)
        used = mods[0]
        for m in mods:
            found = _module_version(m)
            used = m
            if found[0] != "missing":
                break
        status, ver, detail = found
        if status == "ok":  # the module imports; the engine may still lack its native part (a delegate, a driver)
            status, detail = _engine_native(eng, status, detail)
        if eng in host_engines():
            hint = install_command()
        rep.checks.append(Check("engine", eng, status, ver, detail or (f"module {used}" if status == "ok" else None),
                                hint if status != "ok" else None))

    for name, argv, regex, hint in EXTERNAL_TOOLS:
        status, ver, detail = _run_version(argv, regex)
        rep.checks.append(Check("tool", name, status, ver, detail, hint if status != "ok" else None))
    rep.checks.extend(check_emulation())
    return rep


def _engine_native(engine: str, status: Status, detail: str | None) -> tuple[Status, str | None]:
    """An engine whose module imports but whose runtime says it cannot run here (edgetpu without libedgetpu, ethosu
    without its delegate, rknn without librknnrt.so or the NPU node) is missing, with what it lacks."""
    from edgesdk.runtime import engines

    if engine not in engines.REGISTRY:
        return status, detail
    try:
        cls = engines.engine_class(engine)
        if cls.available():
            return status, detail
        lacks = cls.missing() if hasattr(cls, "missing") else []
    except Exception as exc:  # noqa: BLE001 - a check must not end the report
        return "broken", f"{engine}: {type(exc).__name__}: {exc}"
    return "missing", "the module imports, but " + ("; ".join(lacks) if lacks else "the engine's native runtime "
                                                   "(delegate, library or driver) is not here")


__all__ = ["Check", "DoctorReport", "check_packages", "host_extra", "install_command", "run_doctor"]

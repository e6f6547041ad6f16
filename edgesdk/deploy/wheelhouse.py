"""Provisioning: an offline wheelhouse for the board's Python and platform tags, built on the host.

It holds the board package edgesdk-runtime (edgesdk.runtime: numpy only), numpy, and the engines the
bundle's segments use. Engines are installed without their declared dependencies: their Python modules
import with numpy alone (ncnn's wheel otherwise pulls opencv-python, requests and tqdm; onnxruntime
pulls sympy). Cached under <edgesdk home>/wheelhouse/<key>/; the board installs it with
`pip install --no-index`, so it needs no internet.

The board wheel is written from the installed edgesdk.runtime's own files by the stdlib writer that
also builds the published wheel (edgesdk/runtime/_build.py), so a clone, an installed wheel and an
sdist install all provision the same bytes, with no build backend and no network.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgesdk.boards import BoardProfile
from edgesdk.deploy.transfer import LocalFile, sha256_file
from edgesdk.errors import EnvironmentProblem, InputError
from edgesdk.paths import home

PIP_TIMEOUT = 900


@dataclass(frozen=True)
class Wheelhouse:
    dir: Path
    wheels: dict[str, LocalFile]  # file name -> file
    board_wheel: str  # the file name of edgesdk-runtime's wheel (reinstalled even at the same version)
    key: str  # hash of the wheel set: the board skips provisioning when it already has it
    requirements: tuple[str, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.wheels.values())


def engine_packages(engines: set[str]) -> list[str]:
    from edgesdk.toolchains.spec import list_toolchains

    pkgs: list[str] = []
    by_engine = {t.runtime.engine: t.runtime for t in list_toolchains() if getattr(t, "runtime", None)}
    for e in sorted(engines):
        rt = by_engine.get(e)
        if rt is None or not rt.pip:
            sysdep = f" (system package {rt.system})" if rt is not None and rt.system else ""
            raise InputError(f"engine {e} has no pip package for the board{sysdep}; install it on the board's image")
        pkgs.append(rt.pip)
        pkgs += rt.pip_extras  # what its module needs besides numpy (the wheelhouse installs --no-deps)
    return pkgs


def board_wheel(out_dir: Path | None = None) -> LocalFile:
    """The board package's wheel (edgesdk_runtime-<version>-py3-none-any.whl) of this host's own version,
    written from the files of the installed edgesdk.runtime (checked against its RECORD when it came from a
    wheel). Cached in <edgesdk home>/wheelhouse/board-wheel/<content key>/: the key is the hash of the package's
    files, so two checkouts (or installs) of one version never write one path with different code."""
    import edgesdk
    from edgesdk.runtime import _build

    pkg = _build.package_dir()
    ver = _build.version(pkg)
    if ver != edgesdk.__version__:
        raise EnvironmentProblem(
            f"the board package edgesdk-runtime here is {ver} ({pkg}), but edgesdk is {edgesdk.__version__}",
            fix=f"{sys.executable} -m pip install 'edgesdk-runtime=={edgesdk.__version__}'")
    _check_installed_files(pkg, ver)
    path = _build.build_wheel((out_dir or home() / "wheelhouse" / "board-wheel") / _package_key(pkg), pkg)
    return LocalFile(path, sha256_file(path), path.stat().st_size)


def _package_key(pkg: Path) -> str:
    from edgesdk.runtime import _build

    h = hashlib.sha256()
    for name, path in _build.sources(pkg):
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _check_installed_files(pkg: Path, ver: str) -> None:
    """An installed (not editable) edgesdk-runtime: its *.py files are exactly those its RECORD lists, unchanged."""
    import base64
    import importlib.metadata as md

    from edgesdk.runtime import _build

    try:
        dist = md.distribution(_build.NAME)
    except md.PackageNotFoundError:
        return  # a checkout on sys.path without an install: the tree is the source
    files = [f for f in dist.files or () if f.as_posix().startswith(_build.PREFIX + "/") and f.suffix == ".py"]
    init = next((f for f in files if f.as_posix() == f"{_build.PREFIX}/__init__.py"), None)
    if init is None or Path(dist.locate_file(init)).resolve().parent != pkg:
        return  # an editable install (a .pth to a checkout), or a copy other than the one imported
    listed = {f.as_posix(): f for f in files}
    have = {n for n, _ in _build.sources(pkg)}
    if have != set(listed):
        extra, gone = sorted(have - set(listed)), sorted(set(listed) - have)
        raise EnvironmentProblem(f"the installed edgesdk-runtime {ver} in {pkg} does not match its RECORD "
                                 f"(not in it: {extra[:5]}; missing: {gone[:5]})",
                                 fix=f"{sys.executable} -m pip install --force-reinstall --no-deps "
                                     f"'edgesdk-runtime=={ver}'")
    for n, f in listed.items():
        if f.hash is None:
            continue
        data = Path(dist.locate_file(f)).read_bytes()
        got = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, data).digest()).rstrip(b"=").decode()
        if got != f.hash.value:
            raise EnvironmentProblem(f"{n} of the installed edgesdk-runtime {ver} was changed after install",
                                     fix=f"{sys.executable} -m pip install --force-reinstall --no-deps "
                                         f"'edgesdk-runtime=={ver}'")


def _pip(args: list[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EnvironmentProblem(f"{what}: pip timed out after {PIP_TIMEOUT}s") from exc
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-12:])
        raise EnvironmentProblem(f"{what} failed:\n  {' '.join(cmd)}\n{tail}",
                                 fix="the host needs PyPI (or a mirror in pip.conf) to build the wheelhouse once")


def _platform_args(profile: BoardProfile, python: str | None = None, tags: list[str] | None = None) -> list[str]:
    py = python or profile.os.python
    args = ["--only-binary=:all:", "--python-version", py, "--implementation", "cp",
            "--abi", "cp" + py.replace(".", "")]
    for t in tags or profile.os.platform_tags:
        args += ["--platform", t]
    return args


#: what a board with a trust store needs to check signatures (edgesdk.runtime.trust): cryptography and its cffi
SIGNING_PACKAGES = ("cryptography>=42", "cffi>=1.12")


def local_wheels_dir() -> Path:
    """Wheels PyPI does not have for a board (e.g. cffi for armv7l, from piwheels): <edgesdk home>/wheelhouse/local."""
    return home() / "wheelhouse" / "local"


def build_wheelhouse(profile: BoardProfile, engines: set[str], *, python: str | None = None,
                     platform_tags: list[str] | None = None, cache: Path | None = None,
                     signing: bool = False) -> Wheelhouse:
    """Download (once, cached) the engines + numpy for the board's tags, and write the board package's wheel.
    signing: the board has trusted keys, so it also gets cryptography + cffi to check signatures with."""
    reqs = ["numpy>=1.24", *engine_packages(engines)]
    sreqs = list(SIGNING_PACKAGES) if signing else []
    tags = platform_tags or list(profile.os.platform_tags)
    py = python or profile.os.python
    key_src = json.dumps({"reqs": reqs + sreqs, "tags": tags, "py": py}, sort_keys=True)
    cache = cache or home() / "wheelhouse"
    third = cache / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    if not (third / ".complete").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache))
        try:
            _pip(["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(tmp),
                  *_platform_args(profile, py, tags), *reqs], f"downloading {', '.join(reqs)} for {profile.id}")
            if sreqs:
                local = local_wheels_dir()
                links = ["--find-links", str(local)] if local.is_dir() else []
                try:
                    _pip(["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(tmp), *links,
                          *_platform_args(profile, py, tags), *sreqs], f"downloading {', '.join(sreqs)}")
                except EnvironmentProblem as exc:
                    raise EnvironmentProblem(
                        f"{profile.id} trusts signing keys, so it checks signatures with cryptography, but there is "
                        f"no wheel of {' or '.join(sreqs)} for Python {py} on {', '.join(tags[:2])} (PyPI has no cffi "
                        f"wheel for armv7l): {str(exc).splitlines()[0]}",
                        fix=f"put a cp{py.replace('.', '')} wheel of cffi for that platform (e.g. from piwheels.org) "
                            f"into {local}, or flash a board with no trusted key (it accepts unsigned bundles, with "
                            "a warning)") from None
            (tmp / ".complete").write_text(key_src)
            third.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(third, ignore_errors=True)
            tmp.rename(third)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    ours = board_wheel(cache / "board-wheel")
    wheels = {p.name: LocalFile(p, sha256_file(p), p.stat().st_size) for p in sorted(third.glob("*.whl"))}
    wheels[ours.path.name] = ours
    key = hashlib.sha256("".join(f"{n}:{f.sha256}\n" for n, f in sorted(wheels.items())).encode()).hexdigest()[:20]
    return Wheelhouse(third, wheels, ours.path.name, key, tuple(reqs + sreqs))

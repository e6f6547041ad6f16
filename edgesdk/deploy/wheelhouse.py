"""Provisioning: an offline wheelhouse for the board's Python and platform tags, built on the host.

It holds edgesdk itself (what the board needs: edgesdk.runtime + numpy) and the engines the bundle's
segments use. Engines are installed without their declared dependencies: their Python modules
import with numpy alone (ncnn's wheel otherwise pulls opencv-python, requests and tqdm; onnxruntime
pulls sympy). Cached under <edgesdk home>/wheelhouse/<key>/; the board installs it with
`pip install --no-index`, so it needs no internet.
"""

from __future__ import annotations

import hashlib
import json
import os
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

#: What each engine's Python module needs besides numpy (installed --no-deps).
ENGINE_EXTRAS: dict[str, list[str]] = {"tflite": ["ml-dtypes"]}
#: edgesdk's own base dependencies, needed on the board only while `import edgesdk` is eager.
BASE_DEPS = ["pydantic>=2.6", "pyyaml>=6.0", "typer>=0.12", "rich>=13.7"]
PIP_TIMEOUT = 900


@dataclass(frozen=True)
class Wheelhouse:
    dir: Path
    wheels: dict[str, LocalFile]  # file name -> file
    edgesdk_wheel: str
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
        pkgs += ENGINE_EXTRAS.get(e, [])
    return pkgs


def repo_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "edgesdk").is_dir() else None


def runtime_needs_base_deps() -> bool:
    """True while `import edgesdk.runtime` pulls pydantic & co through an eager edgesdk/__init__.py."""
    code = ("import sys\nfor m in ('pydantic','yaml','typer','rich'): sys.modules[m]=None\n"
            "import edgesdk.runtime.session, edgesdk.runtime.manifest\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False,
                       cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return r.returncode != 0


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


def build_wheelhouse(profile: BoardProfile, engines: set[str], *, python: str | None = None,
                     platform_tags: list[str] | None = None, cache: Path | None = None) -> Wheelhouse:
    """Download (once, cached) the engines + numpy for the board's tags and build edgesdk's own wheel."""
    reqs = ["numpy>=1.24", *engine_packages(engines)]
    base_deps = runtime_needs_base_deps()
    tags = platform_tags or list(profile.os.platform_tags)
    py = python or profile.os.python
    key_src = json.dumps({"reqs": reqs, "base": base_deps, "tags": tags, "py": py}, sort_keys=True)
    cache = cache or home() / "wheelhouse"
    third = cache / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    if not (third / ".complete").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=cache))
        try:
            _pip(["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(tmp),
                  *_platform_args(profile, py, tags), *reqs], f"downloading {', '.join(reqs)} for {profile.id}")
            if base_deps:
                _pip(["download", "--disable-pip-version-check", "-q", "-d", str(tmp),
                      *_platform_args(profile, py, tags), *BASE_DEPS], f"downloading edgesdk's dependencies for {profile.id}")
            (tmp / ".complete").write_text(key_src)
            third.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(third, ignore_errors=True)
            tmp.rename(third)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    own = cache / "edgesdk-wheel"
    own.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    if root is None:
        raise EnvironmentProblem("cannot build edgesdk's wheel for the board: this edgesdk is not a source checkout",
                                 fix="flash from a clone of edgesdk (scripts/setup.sh), or put edgesdk's wheel in the "
                                     "wheelhouse dir")
    for old in own.glob("edgesdk-*.whl"):
        old.unlink()
    _pip(["wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check", "-q", "-w", str(own),
          str(root)], "building edgesdk's wheel")
    ours = sorted(own.glob("edgesdk-*.whl"))
    if len(ours) != 1:
        raise EnvironmentProblem(f"expected one edgesdk wheel in {own}, found {[p.name for p in ours]}")
    wheels = {p.name: LocalFile(p, sha256_file(p), p.stat().st_size) for p in sorted(third.glob("*.whl"))}
    wheels[ours[0].name] = LocalFile(ours[0], sha256_file(ours[0]), ours[0].stat().st_size)
    key = hashlib.sha256("".join(f"{n}:{f.sha256}\n" for n, f in sorted(wheels.items())).encode()).hexdigest()[:20]
    return Wheelhouse(third, wheels, ours[0].name, key, tuple(reqs))

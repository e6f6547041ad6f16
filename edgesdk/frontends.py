"""Model frontends: every model input edgesdk accepts, turned into one ONNX file for analysis and conversion.

    .onnx                               used as it is
    TorchScript (.pt .pth .ts .torchscript, written by torch.jit.script/trace + save)
                                        torch.jit.load, then torch.onnx.export (TorchScript exporter, dynamo=False)
    torch.nn.Module (Python API only)   torch.onnx.export
    .tflite                             tf2onnx's TFLite frontend, run in the tflite toolchain venv (it needs
                                        TensorFlow); the result is cached (see `cache_dir`)

Pickles and torch.save/torch.load checkpoints are refused and never unpickled: a TorchScript archive is checked
to be one (a zip with code/) before torch.jit.load reads it, and torch.jit.load itself only rebuilds TorchScript
types.

Inputs of a PyTorch export (TorchScript or nn.Module)
-----------------------------------------------------
The tensors come from `example_inputs` (a tensor or a tuple of tensors), or, when it is None, from
`input_shapes`: one float32 tensor per entry, uniform in [0, 1) from a generator seeded with 0 (only the shapes
matter to the export; integer inputs such as token ids need `example_inputs` through the Python API). The ONNX
input names are:

1. the keys of `input_shapes`, when given (for TorchScript this is what `--input-shape NAME=...` names). If the
   keys are exactly the first forward arguments' names (in any order), they are put in the forward's order;
   otherwise they are used in the order given, positionally, and a note says which key went to which argument.
2. else the names of forward's arguments (TorchScript: `forward.schema`; nn.Module: `inspect.signature`);
3. else `input` (one input) or `input0`, `input1`, ... (as before).

The forward's argument names are "not recoverable" when forward takes *args (or the signature cannot be read);
then rule 1 is purely positional. The export has static shapes (no dynamic axes).

A .tflite
---------
The ONNX keeps the file's tensor names and layout (NHWC image inputs stay NHWC; a -1 dimension in the file's
shape signature becomes a symbolic one); `input_shapes` and `example_inputs` are not used here (the graph loader
fixes symbolic dimensions). TFLite ops tf2onnx cannot express in the requested opset are a ModelError (tf2onnx
itself only logs them and writes an invalid model).

Cache: ``cache_dir()/<key>.onnx`` with key = sha256(file sha256, tf2onnx version, opset), written atomically
(temporary file, then rename), plus ``<key>.json`` describing it; the caller gets a copy in its work dir.
"""

from __future__ import annotations

import hashlib
import inspect as _inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesdk.errors import EnvironmentProblem, InputError, ModelError

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".ckpt")
#: What `to_onnx` accepts, for error messages and CLI help.
ACCEPTED = ("an .onnx file, a TorchScript file (.pt/.pth/.ts/.torchscript, saved with torch.jit.script/trace), "
            "a .tflite file, or a torch.nn.Module through the Python API")
#: The converter of a .tflite, and the toolchain venv it runs in.
TFLITE_FRONTEND = "tf2onnx"
TFLITE_TOOLCHAIN = "tflite"
TFLITE_TIMEOUT = 900.0
_FIX_TFLITE = "edgesdk toolchain install tflite"
_NEVER_UNPICKLE = ("edgesdk never unpickles checkpoints (torch.load): export the model with "
                   "torch.jit.script/trace or to ONNX")
_SHAPES_HINT = "--input-shape NAME=1,3,H,W"


@dataclass(frozen=True)
class OnnxSource:
    """The ONNX file standing for the user's model, and how it was obtained."""

    path: Path  # the ONNX to analyse / convert (the user's .onnx, or a file in work_dir)
    kind: str  # "onnx" | "torchscript" | "pytorch" | "tflite"
    original: Path | None  # the user's file (the .onnx itself for an ONNX input); None for an nn.Module
    notes: tuple[str, ...] = ()


# -- entry point ------------------------------------------------------------------------------------------

def to_onnx(model: Any, work_dir: Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
            example_inputs: Any = None, opset: int = 13, *, runner: Any = None) -> OnnxSource:
    """An ONNX file for any accepted model input. Exports and conversions are written into `work_dir`.

    `runner` (tests only) replaces the subprocess runner of the .tflite conversion
    (edgesdk.toolchains.executor.Runner: Command -> (returncode, output)).
    """
    shapes = _check_shapes(input_shapes)
    if not isinstance(model, (str, os.PathLike)):
        if _is_torch_module(model):
            return _export_module(model, Path(work_dir), shapes, example_inputs, opset)
        raise InputError(f"model: expected a path or a torch.nn.Module, got {type(model).__name__}; "
                         f"edgesdk takes {ACCEPTED}")
    p = Path(model)
    if not p.is_file():
        raise InputError(f"model file {p} does not exist" if not p.exists() else f"model {p} is not a file")
    suf = p.suffix.lower()
    if suf == ".onnx":
        return OnnxSource(p, "onnx", p, ())
    if suf in PICKLE_SUFFIXES:
        raise ModelError(f"{p}: a pickle file is not a model edgesdk loads; {_NEVER_UNPICKLE}")
    if suf in TORCHSCRIPT_SUFFIXES:
        return _export_torchscript(p, Path(work_dir), shapes, example_inputs, opset)
    if suf == ".tflite":
        return _tflite_to_onnx(p, Path(work_dir), opset, runner)
    raise InputError(f"model {p}: unsupported file type {suf or '(no suffix)'!r}; give {ACCEPTED}")


def _check_shapes(input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]] | None:
    if input_shapes is None:
        return None
    out: dict[str, tuple[int, ...]] = {}
    for name, dims in input_shapes.items():
        try:
            t = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise InputError(f"input shape of {name!r}: expected integers, got {dims!r}") from None
        if not t or any(d <= 0 for d in t):
            raise InputError(f"input shape of {name!r}: every dimension must be a positive integer, got {list(t)}")
        out[str(name)] = t
    return out or None


# -- PyTorch -----------------------------------------------------------------------------------------------

def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise EnvironmentProblem("converting a PyTorch or TorchScript model needs torch",
                                 fix="pip install torch==2.13.0  (the CPU wheel; or: pip install 'edgesdk[torch]')"
                                 ) from exc
    return torch


def _is_torch_module(obj: Any) -> bool:
    if "torch" not in sys.modules:  # nothing imported torch, so obj cannot be a torch module
        return False
    import torch

    return isinstance(obj, torch.nn.Module)


def _forward_args(module: Any) -> tuple[list[str] | None, int]:
    """(names of forward's positional arguments after self, or None when not recoverable; how many are required)."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:  # a ScriptModule: the TorchScript schema (first argument is the module itself)
        try:
            args = list(schema.arguments)[1:]
            names = [a.name for a in args]
            required = sum(1 for a in args if not a.has_default_value())
        except Exception:  # noqa: BLE001 - an odd schema: fall back to positional
            return None, 0
        return (names, required) if names else (None, 0)
    try:
        sig = _inspect.signature(module.forward)
    except (TypeError, ValueError, AttributeError):
        return None, 0
    names, required = [], 0
    for prm in sig.parameters.values():
        if prm.kind is prm.VAR_POSITIONAL:
            return None, required
        if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD):
            names.append(prm.name)
            required += prm.default is prm.empty
    return (names, required) if names else (None, 0)


def _order_keys(keys: list[str], arg_names: list[str] | None, required: int, what: str) -> tuple[list[str], str | None]:
    """The input_shapes keys in the order forward takes them (rule 1 of the module docstring), and a note."""
    if arg_names is None:
        return keys, None
    sig = ", ".join(arg_names)
    if len(keys) < required or len(keys) > len(arg_names):
        need = f"{required}" if required == len(arg_names) else f"{required} to {len(arg_names)}"
        raise InputError(f"{what}: forward({sig}) takes {need} input(s); got shapes for {len(keys)} "
                         f"({', '.join(keys)}). Give one {_SHAPES_HINT} per input")
    if set(keys) == set(arg_names[: len(keys)]):
        return [n for n in arg_names if n in keys], None
    pairs = ", ".join(f"{k} -> {a}" for k, a in zip(keys, arg_names))
    return keys, f"input shapes do not name forward's arguments ({sig}); used in the order given: {pairs}"


def _example_args(module: Any, shapes: dict[str, tuple[int, ...]] | None, example_inputs: Any,
                  what: str) -> tuple[tuple[Any, ...], list[str], list[str]]:
    """(positional example tensors, ONNX input names, notes)."""
    torch = _torch()
    arg_names, required = _forward_args(module)
    notes: list[str] = []
    if example_inputs is not None:
        args = example_inputs if isinstance(example_inputs, tuple) else (
            tuple(example_inputs) if isinstance(example_inputs, list) else (example_inputs,))
        if shapes is not None:
            if len(shapes) != len(args):
                raise InputError(f"{what}: {len(args)} example input(s) but shapes for {len(shapes)} "
                                 f"({', '.join(shapes)})")
            names, note = _order_keys(list(shapes), arg_names, 0, what)
            for n, a in zip(names, args):
                got = tuple(getattr(a, "shape", ()))
                if got != shapes[n]:
                    raise InputError(f"{what}: example input {n!r} has shape {list(got)}, input shape says "
                                     f"{list(shapes[n])}")
            notes += [note] if note else []
        elif arg_names is not None and len(arg_names) >= len(args):
            names = arg_names[: len(args)]
        else:
            names = [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))]
        return args, names, notes
    if shapes is None:
        sig = f" (forward takes {', '.join(arg_names)})" if arg_names else ""
        raise InputError(f"{what}: a PyTorch model needs its input shapes{sig}: give {_SHAPES_HINT} for each "
                         "input (repeatable), or example_inputs=(tensor, ...) through the Python API")
    names, note = _order_keys(list(shapes), arg_names, required, what)
    gen = torch.Generator().manual_seed(0)
    args = tuple(torch.rand(shapes[n], generator=gen, dtype=torch.float32) for n in names)
    notes.append("example inputs built from the input shapes (float32, uniform [0, 1), seed 0): "
                 + ", ".join(f"{n} {list(shapes[n])}" for n in names))
    notes += [note] if note else []
    return args, names, notes


def _export(module: Any, args: tuple[Any, ...], names: list[str], path: Path, opset: int, what: str) -> None:
    torch = _torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        module = module.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), input_names=names, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    except Exception as exc:  # torch raises many types; the user needs the message, not a traceback
        msg = str(exc).strip().splitlines()
        tail = "\n".join("    " + ln for ln in msg[-12:])
        raise ModelError(f"{what}: torch.onnx.export (torch {torch.__version__}, opset {opset}) failed: "
                         f"{type(exc).__name__}\n{tail}") from exc


def _export_module(module: Any, work: Path, shapes: Any, example_inputs: Any, opset: int) -> OnnxSource:
    what = f"{type(module).__name__} (nn.Module)"
    args, names, notes = _example_args(module, shapes, example_inputs, what)
    out = work / "model.onnx"
    _export(module, args, names, out, opset, what)
    torch = _torch()
    notes.append(f"exported the {type(module).__name__} module to ONNX with torch.onnx.export "
                 f"(torch {torch.__version__}, opset {opset}); inputs: {', '.join(names)}")
    return OnnxSource(out, "pytorch", None, tuple(notes))


def _refuse_non_torchscript(p: Path) -> None:
    """A TorchScript archive is a zip with a code/ folder; anything else (legacy pickle, torch.save) is refused
    before torch sees it."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{p}: not a TorchScript archive (not a zip archive: a legacy pickle or another "
                         f"format); {_NEVER_UNPICKLE}") from exc
    if not any("/code/" in n for n in names):
        raise ModelError(f"{p}: not a TorchScript archive (a torch.save checkpoint: pickled tensors or objects, "
                         f"no TorchScript code); {_NEVER_UNPICKLE}")


def _export_torchscript(p: Path, work: Path, shapes: Any, example_inputs: Any, opset: int) -> OnnxSource:
    _refuse_non_torchscript(p)
    torch = _torch()
    try:
        # torch.jit.load reads TorchScript archives (code + tensors), never arbitrary pickled objects
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13: "torch.jit.load is deprecated"
            scripted = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise ModelError(f"{p}: not a TorchScript archive ({type(exc).__name__}: {exc}); {_NEVER_UNPICKLE}") from exc
    args, names, notes = _example_args(scripted, shapes, example_inputs, str(p))
    out = work / f"{p.stem}.onnx"
    _export(scripted, args, names, out, opset, str(p))
    notes.append(f"exported TorchScript {p.name} to ONNX with torch.onnx.export (torch {torch.__version__}, "
                 f"opset {opset}); inputs: {', '.join(names)}")
    return OnnxSource(out, "torchscript", p, tuple(notes))


# -- TFLite --------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where .tflite -> ONNX conversions are cached: <edgesdk home>/cache/frontends/tflite."""
    from edgesdk.paths import home

    return home() / "cache" / "frontends" / "tflite"


def tflite_frontend() -> tuple[Path, str]:
    """(the tflite toolchain venv's python, tf2onnx's version there); EnvironmentProblem when either is missing."""
    from edgesdk.paths import toolchain_venv
    from edgesdk.toolchains.install import venv_package_version

    venv = toolchain_venv(TFLITE_TOOLCHAIN)
    py = venv / "bin" / "python"
    if not py.is_file():
        raise EnvironmentProblem(f"analysing a .tflite needs the tflite toolchain venv (TensorFlow + "
                                 f"{TFLITE_FRONTEND}); there is none at {venv}", fix=_FIX_TFLITE)
    ver = venv_package_version(venv, TFLITE_FRONTEND)
    if ver is None:
        raise EnvironmentProblem(f"analysing a .tflite needs {TFLITE_FRONTEND} in the tflite toolchain venv "
                                 f"{venv}; it is not installed there", fix=_FIX_TFLITE)
    return py, ver


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(file_sha256: str, tool_version: str, opset: int) -> str:
    return hashlib.sha256(f"{file_sha256}\0{TFLITE_FRONTEND}=={tool_version}\0opset={opset}".encode()).hexdigest()[:32]


def _unsupported_ops(log: str) -> dict[str, int]:
    """tf2onnx's `Unsupported ops: Counter({'HardSwish': 11, ...})` log line, parsed."""
    m = re.search(r"Unsupported ops: Counter\(\{(.*?)\}\)", log)
    if not m:
        return {}
    return {k: int(v) for k, v in re.findall(r"'([^']+)':\s*(\d+)", m.group(1))}


def _since_hint(ops: Mapping[str, int], opset: int) -> str:
    try:
        import onnx.defs
    except ImportError:
        return ""
    def defined(op: str, v: int) -> bool:
        try:
            onnx.defs.get_schema(op, v)  # the op's newest definition at or below opset v
        except Exception:  # noqa: BLE001 - onnx raises SchemaError: not defined up to v
            return False
        return True

    later = []
    for op in ops:
        if not onnx.defs.has(op) or defined(op, opset):  # not an ONNX op (a TFLite custom op), or no opset issue
            continue
        for v in range(opset + 1, onnx.defs.onnx_opset_version() + 1):
            if defined(op, v):
                later.append(f"{op} exists from opset {v}")
                break
    return f" ({'; '.join(later)}: a higher opset may convert it)" if later else ""


def _check_onnx(path: Path) -> tuple[list[tuple[str, list[Any]]], str | None]:
    """The inputs (name, dims) of a converted model, after onnx.checker; (([], None) without onnx installed)."""
    try:
        import onnx
    except ImportError:
        return [], None
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        return [], f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    init = {i.name for i in proto.graph.initializer}
    ins = [(i.name, [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in i.type.tensor_type.shape.dim]) for i in proto.graph.input if i.name not in init]
    return ins, None


def _tflite_to_onnx(p: Path, work: Path, opset: int, runner: Any) -> OnnxSource:
    from edgesdk.toolchains.executor import Command, subprocess_runner, tail

    with p.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(f"{p}: not a TFLite flatbuffer (no 'TFL3' file identifier)")
    py, ver = tflite_frontend()
    sha = _sha256(p)
    key = cache_key(sha, ver, opset)
    cdir = cache_dir()
    cached = cdir / f"{key}.onnx"
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"{p.stem}.onnx"
    tool = f"{TFLITE_FRONTEND} {ver}"
    if cached.is_file():
        shutil.copyfile(cached, out)
        ins, problem = _check_onnx(out)
        if problem is None:
            note = f"converted {p.name} to ONNX with {tool} (opset {opset}) for the analysis (cached)"
            return OnnxSource(out, "tflite", p, (note, _layout_note(ins)))
        cached.unlink(missing_ok=True)  # a damaged cache entry: convert again
    cdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=cdir) as td:
        tmp_out = Path(td) / "model.onnx"
        cmd = Command(TFLITE_FRONTEND, (str(py), "-m", "tf2onnx.convert", "--tflite", str(p.resolve()),
                                        "--output", str(tmp_out), "--opset", str(int(opset))),
                      cwd=Path(td), env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
                                         "PYTHONWARNINGS": "ignore"},
                      timeout=TFLITE_TIMEOUT, purpose=f"convert {p.name} to ONNX for the analysis")
        argv = " ".join(cmd.argv)
        try:
            rc, log = (runner or subprocess_runner)(cmd)
        except (subprocess.TimeoutExpired, OSError) as exc:
            out_text = getattr(exc, "output", None) or ""
            if isinstance(out_text, bytes):
                out_text = out_text.decode("utf-8", "replace")
            why = (f"timed out after {cmd.timeout:.0f} s" if isinstance(exc, subprocess.TimeoutExpired)
                   else f"could not start ({exc})")
            raise ModelError(f"{p}: {tool} {why}\n  command: {argv}\n  last output:\n"
                             f"{tail(out_text) or '    (no output)'}") from exc
        if rc != 0 or not tmp_out.is_file():
            status = f"exited with {rc}" if rc != 0 else "wrote no ONNX file"
            raise ModelError(f"{p}: {tool} could not convert it to ONNX ({status})\n  command: {argv}\n"
                             f"  last output:\n{tail(log) or '    (no output)'}")
        bad = _unsupported_ops(log)
        if bad:
            ops = ", ".join(f"{k} x{v}" for k, v in sorted(bad.items()))
            raise ModelError(f"{p}: {tool} cannot express these TFLite ops in ONNX opset {opset}: {ops}"
                             f"{_since_hint(bad, opset)}\n  command: {argv}\n  last output:\n{tail(log, 8)}")
        ins, problem = _check_onnx(tmp_out)
        if problem:
            raise ModelError(f"{p}: {tool} wrote an invalid ONNX model (onnx.checker: {problem})\n"
                             f"  command: {argv}\n  last output:\n{tail(log, 8)}")
        seconds = time.perf_counter() - t0
        meta = {"source": p.name, "sha256": sha, "tool": TFLITE_FRONTEND, "tool_version": ver, "opset": opset,
                "seconds": round(seconds, 2), "inputs": ins}
        tmp_meta = Path(td) / "meta.json"
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_meta, cdir / f"{key}.json")
        shutil.copyfile(tmp_out, out)
        os.replace(tmp_out, cached)  # same file system: atomic; the .onnx appears complete or not at all
    note = f"converted {p.name} to ONNX with {tool} (opset {opset}) in {seconds:.1f} s for the analysis"
    return OnnxSource(out, "tflite", p, (note, _layout_note(ins)))


def _layout_note(ins: Sequence[tuple[str, Sequence[Any]]]) -> str:
    shown = "; ".join(f"{n} {list(d)}" for n, d in ins)
    return ("the ONNX keeps the .tflite's tensor names and layout (NHWC images stay NHWC)"
            + (f": {shown}" if shown else ""))


__all__ = ["ACCEPTED", "TFLITE_FRONTEND", "OnnxSource", "cache_dir", "cache_key", "tflite_frontend", "to_onnx"]

"""Model frontends: every model input edgesdk accepts, turned into one ONNX file for analysis and conversion.

    .onnx                               used as it is
    TorchScript (.pt .pth .ts .torchscript, written by torch.jit.script/trace + save)
                                        torch.jit.load, then torch.onnx.export (TorchScript exporter, dynamo=False)
    torch.nn.Module (Python API only)   torch.onnx.export
    .tflite                             tf2onnx's TFLite frontend, run in the tflite toolchain venv (it needs
                                        TensorFlow); the result is cached (see `cache_dir`)

Pickles and torch.save/torch.load checkpoints are refused and never unpickled: a TorchScript archive is checked
to be one (a zip with code/) before torch sees it.

A TorchScript archive is untrusted code
---------------------------------------
torch.jit.load runs the archive's own TorchScript, including a module's ``__setstate__``, and TorchScript can read
and write files (``torch.from_file``): a ``__setstate__`` that reads /etc/shadow puts those bytes into the model's
weights, and so into the bundle. So a TorchScript file is refused (ModelError, exit 2) unless the caller trusts
it (``--trust-model``, ``trust_model=True``), and even then it is loaded and exported in a confined child
process (`_export_torchscript_confined`, `edgesdk.confine`): a fresh temporary folder holding a copy of the
archive, the only place it may write; reads limited to the interpreter's and the system's library folders
(Linux Landlock), no TCP, rlimits, and, when edgesdk runs as root, no network and uid ``nobody``. The parent
reads back only model.onnx and result.json from that folder, never through a link, size-bounded, and refuses an
export with external data. A kernel without Landlock is an EnvironmentProblem (exit 1): export to ONNX yourself.
An ``nn.Module`` (Python API) is the caller's own live object: it is exported in-process, as before.

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
from edgesdk.paths import write_atomic
from edgesdk.text import visible

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
#: The CLI option that lets a TorchScript archive's code run (confined).
TRUST_FLAG = "--trust-model"
#: Wall-clock limit of the confined TorchScript export, and its memory (address space) limit.
TORCHSCRIPT_TIMEOUT = 600.0
TORCHSCRIPT_MEMORY = 16 << 30
#: What the confined child may hand back: result.json and the exported model.onnx (no external data).
_RESULT_LIMIT = 1 << 20


@dataclass(frozen=True)
class OnnxSource:
    """The ONNX file standing for the user's model, and how it was obtained."""

    path: Path  # the ONNX to analyse / convert (the user's .onnx, or a file in work_dir)
    kind: str  # "onnx" | "torchscript" | "pytorch" | "tflite"
    original: Path | None  # the user's file (the .onnx itself for an ONNX input); None for an nn.Module
    notes: tuple[str, ...] = ()


# -- entry point ------------------------------------------------------------------------------------------

def to_onnx(model: Any, work_dir: Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
            example_inputs: Any = None, opset: int = 13, *, runner: Any = None,
            trust_model: bool = False) -> OnnxSource:
    """An ONNX file for any accepted model input. Exports and conversions are written into `work_dir`.

    trust_model: a TorchScript archive is code (see the module docstring): refused unless True, and even then
    loaded and exported in a confined child process.
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
        _refuse_non_torchscript(p)
        if not trust_model:
            raise ModelError(f"{p}: a TorchScript archive is code, and loading it runs that code (its "
                             f"__setstate__ and methods can read and write files); edgesdk runs it only when you "
                             f"trust its author: pass {TRUST_FLAG} (trust_model=True in Python). It then runs in a "
                             f"confined process that can write only to a temporary folder. Or give edgesdk an "
                             f".onnx export of the model")
        return _export_torchscript_confined(p, Path(work_dir), shapes, example_inputs, opset)
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


def _clean_text(text: Any, limit: int = 4000) -> str:
    """A string the confined child sent, fit for a message: invisible characters shown escaped, bounded."""
    return visible(text, limit)


def _read_child_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a file the confined child wrote: a regular file, never through a link, at most `limit`
    bytes; None when it is not there."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a link
        raise ModelError(f"the confined TorchScript export left {path.name} as something edgesdk does not read "
                         f"({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"the confined TorchScript export left {path.name} as a non-regular file")
        if st.st_size > limit:
            raise ModelError(f"the confined TorchScript export wrote a {path.name} of {st.st_size} bytes, more "
                             f"than the {limit} edgesdk reads")
        chunks, n = [], 0
        while n <= limit:
            b = os.read(fd, min(1 << 20, limit + 1 - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > limit:
            raise ModelError(f"the confined TorchScript export's {path.name} grew past {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _child_env(td: Path) -> dict[str, str]:
    """The confined child's whole environment: nothing of the caller's (no tokens, no proxies, no paths)."""
    return {"PATH": os.defpath, "HOME": str(td), "TMPDIR": str(td), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": str(max(1, os.cpu_count() or 1))}


def _save_examples(example_inputs: Any, td: Path) -> list[str]:
    import numpy as np

    args = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    files = []
    for i, a in enumerate(args):
        arr = a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
        if arr.dtype == object:
            raise InputError(f"example input {i}: expected a tensor or an array, got {type(a).__name__}")
        name = f"example{i}.npy"
        np.save(td / name, arr, allow_pickle=False)
        files.append(name)
    return files


def _export_torchscript_confined(p: Path, work: Path, shapes: Any, example_inputs: Any, opset: int) -> OnnxSource:
    """torch.jit.load + torch.onnx.export of an archive the caller trusts, in a confined child process (see the
    module docstring and edgesdk.confine); the parent keeps only the checked model.onnx."""
    import importlib.util
    import signal

    from edgesdk import confine
    from edgesdk.toolchains.executor import tail

    if importlib.util.find_spec("torch") is None:
        _torch()  # the EnvironmentProblem with its fix
    confine.require()
    td = Path(tempfile.mkdtemp(prefix="edgesdk-torchscript-"))
    try:
        shutil.copyfile(p, td / "model.pt")
        examples = _save_examples(example_inputs, td) if example_inputs is not None else None
        if os.getuid() == 0:  # the child drops to nobody: its folder and files are nobody's
            for f in [td, *td.iterdir()]:
                os.chown(f, confine.NOBODY, confine.NOBODY)
        req = {"work": str(td), "label": str(p), "opset": int(opset), "examples": examples,
               "shapes": {k: list(v) for k, v in shapes.items()} if shapes else None,
               "memory": TORCHSCRIPT_MEMORY, "cpu": int(TORCHSCRIPT_TIMEOUT) + 30}
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "-m", "edgesdk.frontends", "--confined-torchscript"],
                                    stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=td, env=_child_env(td),
                                    start_new_session=True)
            try:
                proc.communicate(json.dumps(req).encode(), timeout=TORCHSCRIPT_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ModelError(f"{p}: loading and exporting the TorchScript archive (confined) took more than "
                                 f"{TORCHSCRIPT_TIMEOUT:.0f} s; stopped") from None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever the archive's code left running
                except (ProcessLookupError, PermissionError):
                    pass
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 65536))
            out_text = _clean_text(log.read().decode("utf-8", "replace"), 65536)
        raw = _read_child_file(td / "result.json", _RESULT_LIMIT)
        try:
            doc = json.loads(raw) if raw is not None else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            raise ModelError(f"{p}: the confined TorchScript export {how} without a result\n  last output:\n"
                             f"{tail(out_text) or '    (no output)'}")
        if not doc.get("ok"):
            msg = _clean_text(doc.get("message") or "(no message)")
            kind = {"InputError": InputError, "EnvironmentProblem": EnvironmentProblem}.get(doc.get("kind"), ModelError)
            raise kind(msg)
        data = _read_child_file(td / "model.onnx", 2**31 - 1)
        if data is None:
            raise ModelError(f"{p}: the confined TorchScript export wrote no model.onnx")
        _check_exported(p, data)
        out = work / f"{p.stem}.onnx"
        work.mkdir(parents=True, exist_ok=True)
        write_atomic(out, data)
        names = [_clean_text(n, 200) for n in doc.get("names") or [] if isinstance(n, str)]
        notes = [_clean_text(n, 2000) for n in (doc.get("notes") or [])[:20] if isinstance(n, str)]
        how = doc.get("confinement") if isinstance(doc.get("confinement"), dict) else {}
        who = "nobody" if how.get("uid") == confine.NOBODY else f"uid {how.get('uid')}"
        notes.append(f"exported TorchScript {p.name} to ONNX with torch.onnx.export "
                     f"(torch {_clean_text(doc.get('torch'), 40)}, opset {opset}); inputs: {', '.join(names)}")
        notes.append(f"{TRUST_FLAG}: the archive's code ran confined (Landlock ABI {how.get('landlock_abi')}: "
                     f"writes only to its temporary folder, reads only library folders; {who}; network: "
                     f"{_clean_text(how.get('network'), 60)})")
        return OnnxSource(out, "torchscript", p, tuple(notes))
    finally:
        shutil.rmtree(td, ignore_errors=True)


def _check_exported(p: Path, data: bytes) -> None:
    """The child's model.onnx must be an ONNX model with every tensor inside it (external data could name files
    the parent would then read)."""
    import onnx

    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:
        raise ModelError(f"{p}: the confined TorchScript export wrote something that is not an ONNX model "
                         f"({type(exc).__name__})") from exc
    from edgesdk.graph.load import _all_tensors

    for t in _all_tensors(proto):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(f"{p}: the confined TorchScript export wrote tensor {t.name!r} as external data; "
                             "edgesdk takes only self-contained exports from a TorchScript archive (< 2 GB)")


def _warm_up(torch: Any, opset: int) -> None:
    """Load and export a small TorchScript model (trusted, built here) so that every module the real load and
    export import is imported before the child confines itself and drops to nobody."""
    import io

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(net, (torch.zeros(1, 1, 4, 4),)), buf)
        buf.seek(0)
        loaded = torch.jit.load(buf, map_location="cpu")
        _forward_args(loaded)
        with torch.no_grad():
            torch.onnx.export(loaded, (torch.zeros(1, 1, 4, 4),), io.BytesIO(), input_names=["x"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)


def _torch_error(exc: BaseException) -> str:
    """The last line of a TorchScript interpreter error (the real error), and where in the archive's code it was;
    not the interpreter's multi-line "Traceback of TorchScript" listing."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    last = lines[-1] if lines else "(no message)"
    if not last.startswith(type(exc).__name__):
        last = f"{type(exc).__name__}: {last}"
    where = next((m for m in (re.search(r'File "(code/[^"]+)", line (\d+), in (\S+)', ln) for ln in lines) if m), None)
    at = f" (in the archive's {where.group(3)}, {where.group(1)} line {where.group(2)})" if where else ""
    return (last[:1500] + at).replace("Traceback", "traceback")


def _confined_child() -> int:
    """The child of `_export_torchscript_confined`: confine, then load and export the archive."""
    req = json.loads(sys.stdin.read())
    work = Path(req["work"])
    label = str(req["label"])

    def reply(doc: dict[str, Any]) -> None:
        tmp = work / "result.json.part"
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, work / "result.json")

    try:
        import numpy as np

        from edgesdk.confine import confine

        torch = _torch()
        _warm_up(torch, int(req["opset"]))
        examples = None
        if req.get("examples"):
            examples = tuple(torch.from_numpy(np.load(work / f, allow_pickle=False)) for f in req["examples"])
        shapes = {k: tuple(v) for k, v in req["shapes"].items()} if req.get("shapes") else None
        try:
            applied = confine(work, memory_bytes=int(req["memory"]), cpu_seconds=int(req["cpu"]))
        except OSError as exc:
            reply({"ok": False, "kind": "EnvironmentProblem",
                   "message": f"{label}: could not confine the TorchScript export ({exc}); nothing of the archive ran"})
            return 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13: "torch.jit.load is deprecated"
                scripted = torch.jit.load(str(work / "model.pt"), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{label}: torch.jit.load failed in the confined process: {_torch_error(exc)}") from exc
        args, names, notes = _example_args(scripted, shapes, examples, label)
        _export(scripted, args, names, work / "model.onnx", int(req["opset"]), label)
        reply({"ok": True, "names": names, "notes": notes, "torch": torch.__version__, "confinement": applied})
    except (InputError, EnvironmentProblem) as exc:
        reply({"ok": False, "kind": "InputError" if type(exc) is InputError else
               ("EnvironmentProblem" if isinstance(exc, EnvironmentProblem) else "ModelError"), "message": str(exc)})
    except MemoryError:
        reply({"ok": False, "kind": "ModelError", "message": f"{label}: the confined TorchScript export ran out of "
                                                             f"its {int(req['memory']) >> 30} GiB memory limit"})
    return 0


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


if __name__ == "__main__" and sys.argv[1:] == ["--confined-torchscript"]:
    sys.exit(_confined_child())

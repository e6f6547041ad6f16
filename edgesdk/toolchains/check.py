"""The artifact check: load and run a converted segment on its own engine, and compare it with the reference.

A converter that exits 0 has not proven anything: pnnx writes ``Tensor.slice`` layers ncnn does not have,
MNNConvert can write a model that MNN loads but computes wrongly. ``check_artifact`` loads the artifact with
the runtime's own adapter (edgesdk.runtime.engines, the same code Session runs on the board; ncnn and MNN
first in the runtime's guarded child process, because they segfault on bad files), runs it once on the
segment's reference input and compares each output with the reference (edgesdk.verify.compare, the one
output comparison). It answers; it does not raise for anything the engine does.

    check = check_artifact("ncnn", art.files, art.inputs, art.outputs, art.options, feed, reference, tolerance)
    if not check.ok:
        ...  # check.stage is "load", "run" or "verify"; check.message is the engine's own reason
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.runtime.errors import EngineFailure, EngineUnavailable
from edgesdk.runtime.manifest import TensorSpec, Tolerance

STAGES = ("load", "run", "verify")

#: What pnnx leaves behind when it cannot lower an operator to ncnn: pnnx-level layers, which ncnn has not.
PNNX_LEFTOVERS = {
    "Tensor.slice": "strided slices (a Slice with a step other than 1, which ncnn's Crop cannot express)",
    "Tensor.index": "indexing with a runtime tensor (a Gather whose indices are not constant)",
    "Tensor.expand": "an Expand to a shape ncnn cannot broadcast",
    "Tensor.view": "a Reshape ncnn's Reshape cannot express (more than 4 dimensions, or a batch dimension > 1)",
    "Tensor.reshape": "a Reshape ncnn's Reshape cannot express (more than 4 dimensions, or a batch dimension > 1)",
}


@dataclass(frozen=True)
class ArtifactCheck:
    """The answer of check_artifact.

    ok: loaded, ran and matched the reference within the tolerance. stage: the stage that failed ("load",
    "run", "verify"), or "verify" when ok (every stage passed). message: why not, in the engine's own words
    ("" when ok). max_abs / cosine: per output name (empty when it never ran). metrics: edgesdk.verify's
    OutputMetrics per output (max_abs_rel, problems, ...). seconds: the whole check.
    """

    ok: bool
    engine: str
    stage: str
    message: str
    max_abs: Mapping[str, float] = field(default_factory=dict)
    cosine: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    metrics: tuple[Any, ...] = ()  # edgesdk.verify.OutputMetrics

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "engine": self.engine, "stage": self.stage, "message": self.message,
                "max_abs": dict(self.max_abs), "cosine": dict(self.cosine), "seconds": round(self.seconds, 4),
                "outputs": [m.to_dict() for m in self.metrics]}

    def __str__(self) -> str:
        if self.ok:
            worst = min(self.cosine.values(), default=1.0)
            return f"{self.engine}: ok (cosine >= {worst:.6f}, {self.seconds:.2f} s)"
        return f"{self.engine} failed at {self.stage}: {self.message}"


def check_artifact(engine: str, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...],
                   outputs: tuple[TensorSpec, ...], options: Mapping[str, Any], feed: Mapping[str, np.ndarray],
                   reference: Mapping[str, np.ndarray], tolerance: Tolerance,
                   split_outputs: frozenset[str] | None = None) -> ArtifactCheck:
    """Load `files` on `engine`, run `feed`, compare with `reference`; see the module docstring.

    split_outputs: the outputs judged per component as well (None: every output); convert passes the model's
    outputs, so an intermediate feature map with a dead channel is not cut into blocks.

    files: role -> path, as an adapter's Artifact has them. inputs/outputs/options: the artifact's (the
    manifest's) tensor specs and engine options. feed and reference are keyed by the specs' `name` (the model's
    tensor names, as Session.run takes and gives them), in the model's layout and float dtype: the specs' layout
    and quantization are applied as Session applies them. tolerance: the manifest's Tolerance for the precision.

    Raises ValueError/TypeError only for a call that cannot be right (unknown engine id, a feed or reference
    that does not match the specs); everything the engine does is in the answer.
    """
    from edgesdk.runtime import engines as _engines
    from edgesdk.runtime.reference import compare
    from edgesdk.runtime.session import engine_spec, guarded_load

    t0 = time.perf_counter()
    _check_call(engine, files, inputs, outputs, feed, reference, tolerance, _engines.REGISTRY)

    def fail(stage: str, message: str) -> ArtifactCheck:
        return ArtifactCheck(False, engine, stage, message.strip(), seconds=time.perf_counter() - t0)

    paths = {role: Path(p) for role, p in files.items()}
    missing = [f"{role}: {p}" for role, p in paths.items() if not p.is_file()]
    if missing:
        return fail("load", f"the converter did not write {', '.join(missing)}")
    try:
        cls = _engines.require(engine)
    except EngineUnavailable as exc:
        return fail("load", str(exc))
    if engine == "ncnn" and "param" in paths:
        why = ncnn_layer_problem(paths["param"])
        if why:
            return fail("load", why)

    e_in, e_out = tuple(engine_spec(t) for t in inputs), tuple(engine_spec(t) for t in outputs)
    if cls.crash_prone:
        try:
            guarded_load(engine, paths, e_in, e_out, options)
        except (EngineFailure, EngineUnavailable) as exc:
            msg = _child_message(str(exc))
            return fail("run" if _is_run_failure(msg) else "load", msg)
        except OSError as exc:  # the guarded child process could not start
            return fail("load", f"{engine}: the guarded load of {_names(paths)} could not start a process: {exc}")
    inst = cls()
    try:
        try:
            inst.load(paths, e_in, e_out, options)
        except (EngineFailure, EngineUnavailable) as exc:
            return fail("load", str(exc))
        except Exception as exc:  # noqa: BLE001 - the engine's own exception type, unknown to the adapter
            return fail("load", f"{engine} could not load {_names(paths)}: {type(exc).__name__}: {exc}")
        try:
            got = _run_once(inst, engine, inputs, outputs, feed)
        except _NoOutput as exc:
            return fail("run", str(exc))
        except EngineFailure as exc:
            return fail("run", str(exc))
        except Exception as exc:  # noqa: BLE001 - as above, for run
            return fail("run", f"{engine} failed to run {_names(paths)}: {type(exc).__name__}: {exc}")
    finally:
        try:
            inst.close()
        except Exception:  # noqa: BLE001, S110 - closing must not hide the answer
            pass

    metrics = tuple(compare(t.name, [got[t.name]], [reference[t.name]], tolerance,
                            split=split_outputs is None or t.name in split_outputs) for t in outputs)
    max_abs = {m.name: m.max_abs for m in metrics}
    cos = {m.name: m.cosine_min for m in metrics}
    bad = [m for m in metrics if not m.ok]
    seconds = time.perf_counter() - t0
    if bad:
        msg = "; ".join(f"output {m.name!r}: {', '.join(m.problems)}" for m in bad)
        return ArtifactCheck(False, engine, "verify", f"{engine} output differs from the reference: {msg}",
                             max_abs, cos, seconds, metrics)
    return ArtifactCheck(True, engine, "verify", "", max_abs, cos, seconds, metrics)


class _NoOutput(Exception):
    pass


def _run_once(inst: Any, engine: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
              feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One run of a loaded engine, fed and read as Session feeds and reads it (layout, quantization)."""
    from edgesdk.runtime.session import _in_converter, _out_converter

    efeed = {}
    for t in inputs:
        conv = _in_converter(t)
        x = np.asarray(feed[t.name])
        efeed[t.engine_name or t.name] = np.ascontiguousarray(conv(x) if conv is not None else x)
    res = inst.run(efeed)
    got = {}
    for t in outputs:
        en = t.engine_name or t.name
        if en not in res:
            raise _NoOutput(f"{engine} returned no output {en!r} (it returned {sorted(res)})")
        got[t.name] = _out_converter(t)(np.asarray(res[en]))
    return got


def run_artifact(engine: str, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], options: Mapping[str, Any],
                 feeds: list[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The artifact's outputs on each of `feeds` (keyed and laid out like check_artifact's), on the host.

    For measuring a converted segment on many samples (mixed precision's confirmation); a crash-prone engine is
    loaded once in the guarded child first, as check_artifact does. Raises EngineFailure naming the engine and
    the files for anything that goes wrong."""
    from edgesdk.runtime import engines as _engines
    from edgesdk.runtime.session import engine_spec, guarded_load

    paths = {role: Path(p) for role, p in files.items()}
    cls = _engines.require(engine)
    e_in, e_out = tuple(engine_spec(t) for t in inputs), tuple(engine_spec(t) for t in outputs)
    if cls.crash_prone:
        guarded_load(engine, paths, e_in, e_out, options)
    inst = cls()
    try:
        inst.load(paths, e_in, e_out, options)
        return [_run_once(inst, engine, inputs, outputs, f) for f in feeds]
    except (EngineFailure, EngineUnavailable):
        raise
    except Exception as exc:  # the engine's own exception type
        raise EngineFailure(f"{engine} could not run {_names(paths)}: {type(exc).__name__}: {exc}") from exc
    finally:
        try:
            inst.close()
        except Exception:  # noqa: BLE001, S110 - closing must not hide the answer
            pass


# -- ncnn: the layer types of a .param against the layers this ncnn has -----------------------------------

def ncnn_param_layers(param: Path) -> list[tuple[str, str]] | None:
    """(type, name) of every layer of a text .param; None when the file is not one (the load says why)."""
    try:
        lines = param.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if len(lines) < 2 or lines[0].strip() != "7767517":
        return None
    out = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) >= 2:
            out.append((parts[0], parts[1]))
    return out


def ncnn_unknown_layers(param: Path) -> dict[str, list[str]]:
    """Layer type -> layer names, for the types of `param` the installed ncnn has no layer for.

    Asks the ncnn module (``layer_to_index``, else ``create_layer``); empty when it cannot tell."""
    from edgesdk.runtime.engines import import_engine

    layers = ncnn_param_layers(param)
    if not layers:
        return {}
    ncnn = import_engine("ncnn", "ncnn")
    if hasattr(ncnn, "layer_to_index"):
        def known(t: str) -> bool:
            return int(ncnn.layer_to_index(t)) >= 0
    elif hasattr(ncnn, "create_layer"):
        def known(t: str) -> bool:
            return ncnn.create_layer(t) is not None
    else:
        return {}
    unknown: dict[str, list[str]] = {}
    verdict: dict[str, bool] = {}
    for typ, name in layers:
        if typ not in verdict:
            verdict[typ] = known(typ)
        if not verdict[typ]:
            unknown.setdefault(typ, []).append(name)
    return unknown


def ncnn_layer_problem(param: Path) -> str | None:
    """``ncnn has no layer 'Tensor.slice' (2 layers of that type in s0.param; pnnx leaves it for ...)``, or None."""
    try:
        unknown = ncnn_unknown_layers(param)
    except EngineUnavailable:
        return None  # the load says so, with the fix
    if not unknown:
        return None
    parts = []
    for typ, names in unknown.items():
        n = len(names)
        what = PNNX_LEFTOVERS.get(typ)
        if what is None:
            what = ("an operator it could not lower to an ncnn layer" if "." in typ or "::" in typ else None)
        why = (f"pnnx leaves it for {what}" if what else
               "this ncnn build has no such layer: the .param was made for another ncnn version or needs a custom "
               "layer")
        parts.append(f"ncnn has no layer {typ!r} ({n} layer{'s' if n != 1 else ''} of that type in {param.name}; "
                     f"{why}; the first is {names[0]!r})")
    return "; ".join(parts)


# -- helpers -----------------------------------------------------------------------------------------------

def _check_call(engine: str, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...],
                outputs: tuple[TensorSpec, ...], feed: Mapping[str, np.ndarray],
                reference: Mapping[str, np.ndarray], tolerance: Any, registry: Mapping[str, Any]) -> None:
    """A call that cannot be right is the caller's bug: ValueError/TypeError, not an answer."""
    if engine not in registry:
        raise ValueError(f"check_artifact: unknown engine {engine!r} (known: {sorted(registry)})")
    if not files:
        raise ValueError("check_artifact: no files")
    if not hasattr(tolerance, "max_abs_rel"):
        raise TypeError(f"check_artifact: tolerance must be an edgesdk.runtime.manifest.Tolerance, got {tolerance!r}")
    for what, specs, arrays in (("feed", inputs, feed), ("reference", outputs, reference)):
        names = [t.name for t in specs]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"check_artifact: {what} has no {missing} (it has {sorted(arrays)}; the specs name "
                             f"{names})")
        for t in specs:
            a = np.asarray(arrays[t.name])
            if a.size != int(np.prod(t.shape)):
                raise ValueError(f"check_artifact: {what}[{t.name!r}] has shape {list(a.shape)}, the spec says "
                                 f"{list(t.shape)}")


_CHILD_ERROR = re.compile(r"edgesdk\.runtime\.errors\.\w+: ")


def _child_message(msg: str) -> str:
    """The guarded child's own reason, without the wrapper's "could not load ...: edgesdk...EngineFailure: "."""
    m = None
    for m in _CHILD_ERROR.finditer(msg):
        pass
    return msg[m.end():].strip() if m is not None else msg


def _is_run_failure(msg: str) -> bool:
    return "run failed" in msg or "extract(" in msg


def _names(paths: Mapping[str, Path]) -> str:
    return ", ".join(p.name for p in paths.values())


__all__ = ["PNNX_LEFTOVERS", "STAGES", "ArtifactCheck", "check_artifact", "ncnn_layer_problem", "ncnn_param_layers",
           "ncnn_unknown_layers", "run_artifact"]

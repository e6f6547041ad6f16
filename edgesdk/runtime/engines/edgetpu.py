"""Edge TPU adapter (Coral): the TFLite interpreter with the libedgetpu delegate, or pycoral.

NOT VERIFIED ON HARDWARE: written against the documented APIs
(`load_delegate("libedgetpu.so.1", {"device": ...})` of tflite-runtime / ai-edge-litert, and
`pycoral.utils.edgetpu.make_interpreter(model_path, device=...)`), and unit-tested against
fakes of exactly those shapes (edgesdk.runtime.fakes).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesdk.runtime.engines import INSTALL_HINTS
from edgesdk.runtime.engines.tflite import TFLiteEngine, interpreter_module
from edgesdk.runtime.errors import EngineUnavailable

DELEGATE = "libedgetpu.so.1"


class EdgeTPUEngine(TFLiteEngine):
    name = "edgetpu"
    modules = ("pycoral", "ai_edge_litert", "tflite_runtime")
    install_hint = "install the Edge TPU runtime (apt-get install libedgetpu1-std, from Coral's apt repository) and ai-edge-litert or tflite-runtime; pycoral is optional"
    per_layer_note = "the Edge TPU runs the whole compiled subgraph as one custom op: no per-layer times"

    @classmethod
    def available(cls) -> bool:
        """An interpreter module and the delegate library (pycoral brings neither alone)."""
        if not super().available():
            return False
        import ctypes.util

        return ctypes.util.find_library("edgetpu") is not None or _loadable(DELEGATE)

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("pycoral", "ai-edge-litert", "tflite-runtime")

    def _make_interpreter(self, path: Path, options: Mapping[str, Any]) -> Any:
        device = options.get("device")  # e.g. "usb", "usb:0", "pci:0"
        if importlib.util.find_spec("pycoral") is not None and options.get("use_pycoral", True):
            edgetpu = importlib.import_module("pycoral.utils.edgetpu")
            return edgetpu.make_interpreter(str(path), device=device)
        mod = interpreter_module(self.name)
        try:
            delegate = mod.load_delegate(DELEGATE, {"device": device} if device else {})
        except (ValueError, OSError) as exc:
            raise EngineUnavailable(self.name, INSTALL_HINTS[self.name], f"load_delegate({DELEGATE!r}): {exc}") from exc
        return mod.Interpreter(model_path=str(path), experimental_delegates=[delegate],
                               num_threads=int(options.get("threads", 1) or 1))


def _loadable(lib: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(lib)
    except OSError:
        return False
    return True

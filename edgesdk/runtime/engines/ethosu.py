"""Arm Ethos-U65 on NXP i.MX 93: the TFLite interpreter with NXP's external delegate libethosu_delegate.so.

NOT VERIFIED ON HARDWARE: written against NXP's i.MX Machine Learning User's Guide (IMXMLUG, "Ethos-U
delegate": `load_delegate("/usr/lib/libethosu_delegate.so")` on a vela-compiled .tflite; the NPU part is
one `ethos-u` custom op), and unit-tested against a fake (tests/unit/test_vela.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesdk.runtime.engines.tflite import TFLiteEngine, interpreter_module
from edgesdk.runtime.errors import EngineUnavailable

DELEGATE = "libethosu_delegate.so"
#: where NXP's Yocto image installs it (IMXMLUG, Ethos-U delegate section)
DELEGATE_PATHS = ("/usr/lib/libethosu_delegate.so", "/usr/lib64/libethosu_delegate.so")
INSTALL_HINT = ("use NXP's i.MX Linux (Yocto) image with the eIQ machine-learning packages (tflite-runtime, "
                "ethos-u-driver-stack, tensorflow-lite-ethosu-delegate): it ships /usr/lib/libethosu_delegate.so "
                "and /dev/ethosu0")


class EthosUEngine(TFLiteEngine):
    name = "ethosu"
    modules = ("tflite_runtime", "ai_edge_litert")
    install_hint = INSTALL_HINT
    per_layer_note = "the Ethos-U runs each vela-compiled subgraph as one ethos-u custom op: no per-layer times"

    @classmethod
    def available(cls) -> bool:
        """An interpreter module and the delegate library."""
        if not super().available():
            return False
        return delegate_path() is not None

    @classmethod
    def distributions(cls) -> tuple[str, ...]:
        return ("tflite-runtime", "ai-edge-litert")

    def _make_interpreter(self, path: Path, options: Mapping[str, Any]) -> Any:
        mod = interpreter_module(self.name)
        lib = options.get("delegate") or delegate_path() or DELEGATE
        # delegate options as strings (external delegates take a str->str map); none are required
        dopts = {str(k): str(v) for k, v in (options.get("delegate_options") or {}).items()}
        try:
            delegate = mod.load_delegate(str(lib), dopts)
        except (ValueError, OSError) as exc:
            raise EngineUnavailable(self.name, INSTALL_HINT, f"load_delegate({str(lib)!r}): {exc}") from exc
        return mod.Interpreter(model_path=str(path), experimental_delegates=[delegate],
                               num_threads=int(options.get("threads", 1) or 1))


def delegate_path() -> str | None:
    env = os.environ.get("EDGESDK_ETHOSU_DELEGATE")
    for p in ((env,) if env else ()) + DELEGATE_PATHS:
        if p and os.path.isfile(p):
            return p
    return None


__all__ = ["DELEGATE", "DELEGATE_PATHS", "EthosUEngine", "delegate_path"]

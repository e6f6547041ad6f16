"""HiSilicon NNIE (Hi3519A): no Python runtime. The vendor's C SDK (libnnie, HI_MPI_SVP_NNIE_*) runs the .wk
file through the C runner edgesdk cross-builds (edgesdk/cross); this module only says so to a Session."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgesdk.runtime.engines import Engine
from edgesdk.runtime.errors import EngineUnavailable
from edgesdk.runtime.manifest import TensorSpec


class NnieEngine(Engine):
    name = "nnie"
    modules = ()
    install_hint = "the HiSilicon NNIE has no Python runtime in edgesdk; run the bundle with the vendor's C SDK"
    per_layer_note = "NNIE layer times come from the vendor's C SDK, not Python"

    @classmethod
    def available(cls) -> bool:
        return False

    def load(self, files: Mapping[str, Path], inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             options: Mapping[str, Any]) -> None:
        raise EngineUnavailable(self.name, self.install_hint, "no Python runtime for the NNIE")

"""edgesdk.runtime: what runs on the board. Imports only the standard library and numpy; engines load lazily.

It is its own distribution, `edgesdk-runtime` (board/pyproject.toml, built by `_build.py`): numpy only, one
py3-none-any wheel, installed as part of an implicit `edgesdk` namespace (no edgesdk/__init__.py), so that
`from edgesdk.runtime import Session` works on a board that has nothing else, and on a host where the
`edgesdk` distribution (which depends on this one, at the same version) adds the rest of the package.

Names are resolved on first use (module __getattr__), so that `import edgesdk.runtime.errors`
and `edgesdk.runtime.manifest` never import numpy: the host's edgesdk.errors imports them
where numpy may be absent.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: the version of edgesdk-runtime; the host `edgesdk` pins `edgesdk-runtime==` this (tests/unit/test_packaging.py)
__version__ = "0.1.0"

_EXPORTS = {
    "Session": "session",
    "normalize_engines": "session",
    "Pipeline": "pipeline",
    "PipelineStats": "pipeline",
    "FrameResult": "pipeline",
    "Classification": "results",
    "Detection": "results",
    "EngineUse": "results",
    "Prediction": "results",
    "Timings": "results",
    "Preprocessor": "preprocess",
    "Postprocessor": "postprocess",
    "nms": "postprocess",
    "Manifest": "manifest",
    "load_manifest": "manifest",
    "BundleError": "errors",
    "EdgeSDKError": "errors",
    "EngineFailure": "errors",
    "EngineUnavailable": "errors",
    "InputError": "errors",
    "InputMismatch": "errors",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from edgesdk.runtime.errors import (  # noqa: F401
        BundleError,
        EdgeSDKError,
        EngineFailure,
        EngineUnavailable,
        InputError,
        InputMismatch,
    )
    from edgesdk.runtime.manifest import Manifest, load_manifest  # noqa: F401
    from edgesdk.runtime.pipeline import FrameResult, Pipeline, PipelineStats  # noqa: F401
    from edgesdk.runtime.postprocess import Postprocessor, nms  # noqa: F401
    from edgesdk.runtime.preprocess import Preprocessor  # noqa: F401
    from edgesdk.runtime.results import Classification, Detection, EngineUse, Prediction, Timings  # noqa: F401
    from edgesdk.runtime.session import Session, normalize_engines  # noqa: F401


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'edgesdk.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgesdk.runtime.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

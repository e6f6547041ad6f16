"""Apps of several models on the board: `App(bundle).run(inputs)`, `Pipeline(app, frames)`; see docs/apps.md."""

from __future__ import annotations

from edgesdk.runtime.app.app import App, AppFrame, Pipeline
from edgesdk.runtime.app.manifest import AppManifest, is_app, load_any, load_app_manifest
from edgesdk.runtime.app.steps import AppError

__all__ = ["App", "AppError", "AppFrame", "AppManifest", "Pipeline", "is_app", "load_any", "load_app_manifest"]

"""Applications of several models (issue 18): app.yaml (edgesdk.app.spec), `edgesdk convert app.yaml`
(edgesdk.app.build), verify and profile by stage (edgesdk.app.verify). The board side is edgesdk.runtime.app."""

from __future__ import annotations

from edgesdk.app.spec import AppSpec, AppSpecError, load_app_spec, looks_like_app

__all__ = ["AppSpec", "AppSpecError", "load_app_spec", "looks_like_app"]

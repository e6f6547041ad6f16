"""Shared fixtures: an isolated EDGESDK_HOME per test session unless the real cache is wanted."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo() -> Path:
    return REPO

"""Shared test setup: every test gets its own empty ``$EDGELAT_HOME``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def edgelat_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh edgelat home so no test sees another's database or keys."""
    home = tmp_path / "edgelat-home"
    monkeypatch.setenv("EDGELAT_HOME", str(home))
    monkeypatch.delenv("EDGELAT_HUB", raising=False)
    return home

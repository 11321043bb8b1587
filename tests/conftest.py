"""Test-wide settings: nothing may reach a model hub; AppTest runs app.py the way the server does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.runtime.pages_manager import PagesManager

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _apptest_always_runs_the_entrypoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AppTest rebuilds its PagesManager on every run and, seeing a pages/ folder, falls back to Streamlit's old
    pages-directory mode from the second run on: it runs the page file alone and skips app.py (the filters).
    The real server leaves that mode at the first st.navigation call and stays out; make AppTest do the same."""
    original = PagesManager.__init__

    def init(self: PagesManager, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)
    yield

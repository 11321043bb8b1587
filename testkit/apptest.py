"""Starting the app under AppTest on a prepared data folder, with Streamlit's process-wide caches cleared."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def app_for(folder: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The app reading `folder` as its data dir; settings and query results are cached per process, so clear them."""
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(folder))
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)

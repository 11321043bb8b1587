"""Test-wide settings (nothing may reach a model hub) and the fixtures several test modules share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def data_dir_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command a test runs without naming a data folder writes into a fresh one, never the checkout's data/
    (a Spark checkpoint left there by one run breaks the next). A test that names its own still wins."""
    if "INFERENCE_EXPLORER_DATA_DIR" not in os.environ:
        monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="session")
def demo_rows() -> Any:
    """The demo generator's scored requests (6,000, seed 11) as an Arrow table, scored once per session."""
    from testkit.tables import demo_requests  # imported here: the settings above come first

    return demo_requests()


@pytest.fixture
def app(with_rollups: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app under AppTest on the module's `with_rollups` data dir, caches cleared before and after."""
    import streamlit as st

    from testkit.apptest import app_for

    yield app_for(with_rollups, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()

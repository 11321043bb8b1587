"""The app shell under Streamlit's AppTest: filters, URL binding, errors shown without stack traces."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from data_access.config import SETTINGS, Setting
from data_access.demo import generate_requests
from data_access.queries import Filters
from jobs.scoring import parse_and_score
from metrics.profiles import build_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("app-data")
    profile = build_profile("light")
    rows = generate_requests(4_000, 3, lambda payload: parse_and_score(payload, profile))
    with duckdb.connect(str(folder / "inference.duckdb")) as con:
        con.register("incoming", rows)
        con.sql("CREATE TABLE requests AS SELECT * FROM incoming")
    return folder


@pytest.fixture
def app(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    st.cache_data.clear()
    st.cache_resource.clear()


def _published(at: AppTest) -> tuple[Filters, str]:
    return at.session_state["_filters"]


def test_first_view_covers_all_the_data(app: AppTest) -> None:
    app.run()
    assert not app.exception and not app.error
    filters, grain = _published(app)
    assert (filters.start, filters.end, filters.versions, grain) == (date(2026, 4, 1), date(2026, 4, 30), (), "3 hours")
    assert app.multiselect(key="version").options == ["6", "7"]
    assert "Data as of" in " ".join(c.value for c in app.sidebar.caption)


def test_version_filter_reaches_the_page(app: AppTest) -> None:
    app.run()
    app.multiselect(key="version").select("7").run()
    assert not app.exception
    assert _published(app)[0].versions == ("7",)
    app.switch_page("views/overview.py").run()  # filters persist across pages
    assert _published(app)[0].versions == ("7",)


def test_url_reproduces_the_view(app: AppTest) -> None:
    app.query_params["version"] = ["6"]
    app.query_params["grain"] = "day"
    app.query_params["dates"] = ["2026-04-03", "2026-04-05"]
    app.run()
    assert not app.exception
    filters, grain = _published(app)
    assert (filters.versions, grain, filters.start, filters.end) == (("6",), "day", date(2026, 4, 3), date(2026, 4, 5))


def test_broken_backend_shows_what_to_fix(app: AppTest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_EXPLORER_BACKEND", "databricks")
    app.run()
    assert not app.exception
    assert "not configured" in app.error[0].value and "warehouse_id" in app.error[0].value


# Every numeric setting, found from the declarations: a new one is tested without touching this file.
NUMERIC = [s for s in SETTINGS if s.accepts("5") and not s.accepts("abc")]


@pytest.mark.parametrize("declared", NUMERIC, ids=lambda s: s.key)
def test_a_wrong_number_in_the_environment_is_one_clear_box(
    app: AppTest, monkeypatch: pytest.MonkeyPatch, declared: Setting
) -> None:
    monkeypatch.setenv(declared.env, "12k")
    app.run()
    assert not app.exception and len(app.error) == 1
    assert declared.key in app.error[0].value and declared.env in app.error[0].value


@pytest.mark.parametrize("declared", NUMERIC, ids=lambda s: s.key)
def test_a_wrong_number_in_the_secrets_file_is_one_clear_box(app: AppTest, declared: Setting) -> None:
    app.secrets[declared.section] = {declared.key: "seven"}
    app.run()
    assert not app.exception and len(app.error) == 1
    assert f"[{declared.section}] {declared.key}" in app.error[0].value


def test_a_reversed_date_range_in_the_url_is_swapped_and_said(app: AppTest) -> None:
    app.query_params["dates"] = ["2026-04-20", "2026-04-03"]
    app.run()
    assert not app.exception
    filters, _ = _published(app)
    assert (filters.start, filters.end) == (date(2026, 4, 3), date(2026, 4, 20))
    assert "reversed" in " ".join(i.value for i in app.sidebar.info)

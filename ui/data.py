"""Cached access to the query catalog for pages: settings, the source, and query results as pandas."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from core.monitor_rules import RuleFile, load_rules
from core.versions import version_label
from data_access import queries, rollups
from data_access.config import SettingError, Settings, load_settings
from data_access.errors import DataAccessError
from data_access.layouts import detect_layout
from data_access.sources import DuckDBSource, Source, open_source
from ui import detail_charts

CACHE_TTL_S = 300


@dataclass(frozen=True)
class Frame:
    """A query result at the edge: pandas for charts, plus the SQL it ran and when."""

    data: pd.DataFrame
    sql: str
    seconds: float
    fetched_at: datetime


def _secrets() -> Mapping[str, Any]:
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except st.errors.StreamlitSecretNotFoundError as error:
        if "exec_kwargs" in dir(error) and "error" in error.exec_kwargs:  # the file exists but is not valid TOML
            raise SettingError(f"{str(error).splitlines()[0]}.", "Fix the secrets file as TOML.") from None
        return {}  # no secrets file: environment and defaults
    except FileNotFoundError:
        return {}


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return load_settings(secrets=_secrets())


@st.cache_resource(show_spinner=False)
def source() -> Source:
    return open_source(settings())


@st.cache_resource(show_spinner=False, ttl=CACHE_TTL_S)
def payload_layout() -> str:
    """The payload table's layout (legacy or AI Gateway), from its columns on the configured source, or the
    payload_format setting when it names one."""
    configured = settings()
    return detect_layout(
        lambda sql: source().execute(sql).column_names,
        configured.payload_table,
        source().dialect,
        configured.payload_format,
    )


def _builder(query_name: str) -> Callable[..., queries.Query]:
    """'filter_options' names a query in data_access.queries, 'queries.toxicity.x' one in that module,
    'rollups.x' one in data_access.rollups."""
    module, _, function = query_name.rpartition(".")
    return getattr(importlib.import_module(f"data_access.{module or 'queries'}"), function)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Querying…")
def fetch(query_name: str, **arguments: Any) -> Frame:
    """Run one catalog query (by name, so the cache key is its arguments) against the configured source."""
    builder = _builder(query_name)
    where = alert_source() if query_name.startswith("alerts.") else source()
    result = queries.run(where, builder(settings().requests_table, **arguments))
    return Frame(result.table.to_pandas(), result.sql, result.seconds, datetime.now(UTC))


@st.cache_resource(show_spinner=False)
def alert_source() -> Source:
    """Where the monitors job keeps the alert tables: beside the requests table on the embedded engine, and in the
    embedded file under data_dir when the requests table is in a warehouse."""
    return source() if settings().backend == "duckdb" else DuckDBSource(settings().duckdb_path)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def monitor_rules() -> RuleFile:
    """The monitors file the job evaluates (its problems included), re-read with the data."""
    return load_rules(settings().monitors_file)


def fetch_or_stop(query_name: str, **arguments: Any) -> Frame:
    """Fetch, or show what to fix and stop the page: no stack trace, no secret."""
    try:
        return fetch(query_name, **arguments)
    except DataAccessError as error:
        show_error(error)
        st.stop()
        raise  # unreachable: st.stop() ends the run


def show_error(error: DataAccessError) -> None:
    st.error(f"**{error.message}**\n\n{error.hint}" if error.hint else f"**{error.message}**", icon="⚠️")


def refresh() -> None:
    fetch.clear()
    monitor_rules.clear()


def show_sql(*frames: Frame, label: str = "SQL for this chart") -> None:
    """The SQL behind a chart or table, ready to paste into the Databricks SQL editor."""
    with st.expander(label):
        for frame in frames:
            st.code(frame.sql, language="sql")
            st.caption(f"Ran in {frame.seconds:.2f} s at {frame.fetched_at:%H:%M:%S} UTC.")


ROLLUPS_MISSING = (
    "ℹ️ The summary tables are missing or behind the requests table, so these numbers are computed from every "
    "request (slower on large tables). Update them with `python -m data_access.rollups --duckdb <file>`; "
    "the scoring job does it after each run."
)


def rollups_in_use() -> bool:
    """Whether a page may read the analytics rollups: kept for the embedded engine only, and used only while they
    count exactly what the requests table holds; otherwise the page reads the requests and says so."""
    if source().dialect != "duckdb":
        return False
    try:  # one query: a missing rollup table fails it, which also means "not usable"
        freshness = fetch("rollups.rollup_freshness").data.iloc[0].to_dict()
    except DataAccessError:
        freshness = None
    usable = rollups.rollups_usable(2 if freshness else 0, freshness)
    if not usable:
        st.caption(ROLLUPS_MISSING)
    return usable


NO_MATCH = "No requests match these filters. Widen the date range or pick other versions or endpoints."


def trend_or_stop(query_name: str, filters: queries.Filters, grain: str, from_rollups: bool) -> Frame:
    """A page's main trend: the page stops with a hint when no request matches, and names each chosen version
    that has no requests in the selected dates."""
    trend = fetch_or_stop(query_name, filters=filters, grain=grain, from_rollups=from_rollups)
    if trend.data.empty:
        st.info(NO_MATCH)
        st.stop()
    for version in detail_charts.missing_versions(filters.versions, trend.data):
        st.info(f"{version_label(version)} has no requests in the selected dates.")
    return trend

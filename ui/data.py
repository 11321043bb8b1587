"""Cached access to the query catalog for pages: settings, the source, and query results as pandas."""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from core.monitor_rules import RuleFile, load_rules
from core.versions import version_label
from data_access import identity, queries, rollup_status, rollups, sources
from data_access.config import SettingError, Settings, TableName, load_settings
from data_access.errors import DataAccessError
from data_access.identity import APP_CREDENTIAL, Credential
from data_access.layouts import detect_layout
from data_access.queries import pages
from data_access.sources import DatabricksSQLSource, Source, open_source
from ui import detail_charts

CACHE_TTL_S = 300


@dataclass(frozen=True)
class Frame:
    """A query result at the edge: pandas for charts, plus the SQL it ran (in the source's dialect), the same
    query compiled for Databricks (what "SQL for this chart" offers to paste), and when it ran."""

    data: pd.DataFrame
    sql: str
    seconds: float
    fetched_at: datetime
    dialect: str
    databricks_sql: str
    ran_on: str  # the source's label
    figures: int = 1  # the figures its statement carried: a page's first statement carries several (`Bundle`)

    @classmethod
    def of(cls, query: queries.Query, result: queries.QueryResult, where: Source) -> Frame:
        shown = result.sql if where.dialect == "databricks" else query.sql("databricks")
        return cls(
            result.table.to_pandas(), result.sql, result.seconds, datetime.now(UTC), where.dialect, shown, where.label
        )

    @classmethod
    def parts_of(cls, bundle: queries.Bundle, result: queries.QueryResult, where: Source) -> dict[str, Frame]:
        """Each part's frame, keyed by the part's Databricks SQL: its own rows, the part's own SQL to paste (the
        same rows alone), and the statement that ran."""
        at, n = datetime.now(UTC), len(bundle.parts)
        return {
            part.sql("databricks"): cls(
                rows.to_pandas(), result.sql, result.seconds, at, where.dialect, part.sql("databricks"), where.label, n
            )
            for part, rows in zip(bundle.parts, bundle.split(result.table), strict=True)
        }


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


def page_run() -> contextlib.AbstractContextManager[None]:
    """One run of the page script: on the embedded file its queries share one read connection, released when the
    run ends so the scoring job can write between runs (`data_access.sources.page_run`, as the benchmarks time
    pages)."""
    return sources.page_run(source())


def session_credential() -> Credential:
    """Whose permissions this session's warehouse queries run with (data_access.identity.query_credential): the
    viewer's forwarded token in Databricks Apps with user authorization, else the app's own."""
    configured = settings()
    if configured.backend != "databricks":
        return APP_CREDENTIAL
    headers = dict(st.context.headers.items()) if st.context.headers else {}
    return identity.query_credential(headers, os.environ, configured.viewer_credentials)


def _script_stopping() -> Callable[[], bool] | None:
    """Whether Streamlit has asked this script run to stop or rerun (the viewer left the page or changed a widget),
    so a running warehouse query can be cancelled rather than finish for nobody; None outside a script run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    requests = getattr(get_script_run_ctx(suppress_warning=True), "script_requests", None)
    return None if requests is None else stop_probe(requests)


def stop_probe(requests: Any) -> Callable[[], bool]:
    """Reads a script run's pending requests (Streamlit's ScriptRequests, an internal it checks at each st call) the
    way Streamlit does: a stop, or a rerun that preempts this run (not a fragment's own rerun). Should that internal
    change, it answers False and queries stay bounded by query_timeout_s."""
    from streamlit.runtime.scriptrunner_utils import script_requests

    def stopping() -> bool:
        try:
            state, rerun = requests._state, requests._rerun_data
            if state == script_requests.ScriptRequestType.STOP:
                return True
            return state == script_requests.ScriptRequestType.RERUN and not (
                script_requests._fragment_run_should_not_preempt_script(
                    rerun.fragment_id_queue, rerun.is_fragment_scoped_rerun
                )
            )
        except AttributeError:
            return False

    return stopping


def source_for(credential: Credential) -> Source:
    """The configured source as this session uses it: with `credential`, cancelled when the script run stops."""
    shared = source()
    if isinstance(shared, DatabricksSQLSource):
        return shared.bind(credential, _script_stopping())
    return shared


def source_caption() -> str:
    """Where the data comes from and, on a warehouse, whose permissions read it, for the sidebar."""
    label = f"Source: {source().label}"
    if settings().backend != "databricks":
        return label
    try:
        credential = session_credential()
    except DataAccessError:
        return f"{label}, not readable without your Databricks token"
    whose = "your own Databricks permissions" if credential.is_viewer else "the app's own credentials"
    return f"{label}, read with {whose}"


def payload_layout() -> str:
    """The payload table's layout (legacy or AI Gateway), from its columns as this viewer sees them, or the
    payload_format setting when it names one."""
    credential = session_credential()
    return _payload_layout(credential.key, credential)


@st.cache_resource(show_spinner=False, ttl=CACHE_TTL_S)
def _payload_layout(identity_key: str, _credential: Credential) -> str:
    # Kept per identity_key (what the viewer may see of the table); _credential is not part of the key.
    configured = settings()
    where = source_for(_credential)
    return detect_layout(
        lambda sql: where.execute(sql).column_names,
        configured.payload_table,
        where.dialect,
        configured.payload_format,
    )


def _builder(query_name: str) -> Callable[..., queries.Query]:
    """'filter_options' names a query in data_access.queries, 'queries.toxicity.x' one in that module,
    'rollup_status.x' one in data_access.rollup_status."""
    module, _, function = query_name.rpartition(".")
    return getattr(importlib.import_module(f"data_access.{module or 'queries'}"), function)


def fetch(query_name: str, **arguments: Any) -> Frame:
    """Run one catalog query (by name, so the cache key is its arguments) with this session's credential (the alert
    tables too: they live beside the requests table)."""
    return fetch_as(session_credential(), query_name, **arguments)


def fetch_as(credential: Credential, query_name: str, **arguments: Any) -> Frame:
    """Run one catalog query as `credential`; its cached result is kept under that credential's key (a keyed hash
    of the viewer's token, never the token), so no viewer is ever shown a result computed with another's. A query
    the page's first statement already answered (`rollups_in_use`) is not sent again."""
    return _ridden(credential, query_name, arguments) or _fetch(query_name, credential.key, credential, **arguments)


RIDDEN = "_page_statement_frames"  # session state: (identity key, when, frames) of this page's first statement


def _ridden(credential: Credential, query_name: str, arguments: dict[str, Any]) -> Frame | None:
    identity_key, at, frames = st.session_state.get(RIDDEN, ("", 0.0, {}))
    if not frames or identity_key != credential.key or time.monotonic() - at > CACHE_TTL_S:
        return None
    return frames.get(_builder(query_name)(settings().requests_table, **arguments).sql("databricks"))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Querying…")
def _fetch(query_name: str, identity_key: str, _credential: Credential, **arguments: Any) -> Frame:
    # identity_key is part of the cache key; _credential (leading underscore) is not hashed into it.
    query = _builder(query_name)(settings().requests_table, **arguments)
    where = source_for(_credential)
    return Frame.of(query, queries.run(where, query), where)


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
    _fetch.clear()
    _first_statement.clear()
    st.session_state.pop(RIDDEN, None)
    monitor_rules.clear()


def show_sql(*frames: Frame, label: str = "SQL for this chart") -> None:
    """The SQL behind a chart or table in the Databricks dialect, ready to paste into the Databricks SQL editor
    (values inlined as literals by the compiler); on the embedded engine also the DuckDB SQL that ran here."""
    with st.expander(label):
        for frame in frames:
            st.caption(
                f"**Databricks SQL**, for the Databricks SQL editor (tables named as configured: "
                f"`{settings().requests_table}`)."
            )
            st.code(frame.databricks_sql, language="sql")
            ran = f"Ran in {frame.seconds:.2f} s at {frame.fetched_at:%H:%M:%S} UTC"
            if frame.figures > 1:
                st.caption(
                    f"{ran} on {frame.ran_on}, in one statement with {frame.figures - 1} other figures of this page "
                    f"(each a part of a UNION ALL; one round trip instead of {frame.figures}), as this "
                    f"**{queries.DIALECT_NAMES.get(frame.dialect, frame.dialect)}**:"
                )
                st.code(frame.sql, language="sql")
                continue
            if frame.dialect == "databricks":
                st.caption(f"{ran} on {frame.ran_on}.")
                continue
            st.caption(
                f"{ran} as this **{queries.DIALECT_NAMES.get(frame.dialect, frame.dialect)}** on {frame.ran_on}:"
            )
            st.code(frame.sql, language="sql")


ROLLUPS_MISSING = (
    "ℹ️ Read from the requests table: the summary tables are missing or behind it (the rollups), so these numbers "
    "are computed from every request (slower on large tables{cost}). Update them with `python -m jobs.rollups "
    "{where}`; the scoring job does it after each run."
)
ROLLUPS_USED = "Read from the rollups {names}, which count exactly what `{table}` holds."


def rollups_usable() -> bool:
    """Whether the rollups count exactly what the requests table holds (drawing nothing)."""
    try:  # one query: a missing state table (no complete refresh yet) fails it, which also means "not usable"
        freshness = fetch("rollup_status.rollup_freshness").data.to_dict("records")
    except DataAccessError:
        freshness = []
    return rollup_status.rollups_usable(freshness)


def rollups_in_use(page: str | None = None, filters: queries.Filters | None = None, grain: str = "hour",
                   **options: Any) -> bool:  # fmt: skip
    """Whether a page may read the rollups (on every engine): only while they count exactly what the requests
    table holds; otherwise the page reads the requests table. The page says which one it used.

    On a warehouse (`pages.ONE_STATEMENT_DIALECTS`) a page of `pages.ONE_STATEMENT_PAGES` names itself, its filters,
    grain and `options` (what its list in `PAGE_QUERIES` takes): the check then rides in one statement with the
    page's figures over the rollups (`pages.page_statements`), and when they are behind, the page's figures over the
    requests table go as one statement too; its later fetches of those figures take their rows from there."""
    st.session_state.pop(RIDDEN, None)
    if page in pages.ONE_STATEMENT_PAGES and source().dialect in pages.ONE_STATEMENT_DIALECTS:
        try:  # no viewer token: not usable, and each figure's own fetch says what to fix
            credential = session_credential()
            usable, frames = _first_statement(page, credential.key, credential, filters or queries.Filters(), grain,
                                              tuple(sorted(options.items())))  # fmt: skip
            st.session_state[RIDDEN] = (credential.key, time.monotonic(), frames)
        except DataAccessError:
            usable = False
    else:
        usable = rollups_usable()
    table = settings().requests_table
    if usable:
        names = [f"`{name}`" for name, _ in rollups.rollup_builds(table)]
        st.caption(ROLLUPS_USED.format(names=f"{', '.join(names[:-1])} and {names[-1]}", table=table))
    elif source().dialect == "databricks":
        st.caption(ROLLUPS_MISSING.format(cost=", and each visit bills a scan", where="--databricks"))
    else:
        st.caption(ROLLUPS_MISSING.format(cost="", where="--duckdb <file>"))
    return usable


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Querying…")
def _first_statement(
    page: str,
    identity_key: str,
    _credential: Credential,
    filters: queries.Filters,
    grain: str,
    options: tuple[tuple[str, Any], ...],
) -> tuple[bool, dict[str, Frame]]:
    """`page_first_statement` on this session's source, cached per identity."""
    where = source_for(_credential)
    return page_first_statement(where, settings().requests_table, page, filters, grain, options)


def page_first_statement(
    where: Source,
    table: TableName,
    page: str,
    filters: queries.Filters,
    grain: str,
    options: tuple[tuple[str, Any], ...] = (),
) -> tuple[bool, dict[str, Frame]]:
    """Whether the rollups are usable, and the frames of the page's figures that rode in its first statement:
    over the rollups with the check, or (when they are behind or missing) over the requests table."""
    build = pages.PAGE_QUERIES[page]
    try:
        first = pages.page_statements(page, build(table, filters, grain, True, **dict(options)), where.dialect)[0]
        frames = Frame.parts_of(first, queries.run(where, first), where)
        check = frames.pop(rollup_status.rollup_freshness(table).sql("databricks"))
        if rollup_status.rollups_usable(check.data.to_dict("records")):
            return True, frames
    except DataAccessError:  # a missing state table or rollup (no complete refresh yet): not usable
        pass
    statements = pages.page_statements(page, build(table, filters, grain, False, **dict(options)), where.dialect, False)
    together = [s for s in statements if isinstance(s, queries.Bundle)]
    try:
        return False, {k: f for s in together for k, f in Frame.parts_of(s, queries.run(where, s), where).items()}
    except DataAccessError:  # each figure's own fetch then says what failed
        return False, {}


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

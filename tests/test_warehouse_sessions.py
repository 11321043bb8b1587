"""Many sessions and many viewers on one SQL warehouse, at the wire: the real databricks-sql-connector against the
loopback warehouse (testkit/fake_warehouse.py), which answers per bearer token, holds chosen statements until the
test releases them, and counts the sessions it has open.

Assertions are on events and counts (which query finished while which was still held, how many sessions the
warehouse holds, how many cancels reached it), never on wall time.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import streamlit as st

from data_access import queries
from data_access.config import DatabricksSettings, TableName
from data_access.errors import DataAccessError
from data_access.identity import APP_CREDENTIAL, Credential, query_credential
from data_access.queries import versions
from data_access.sources import DatabricksSQLSource, QueryCancelled
from testkit.fake_warehouse import FakeWarehouse, serve_warehouse
from testkit.tables import synthetic_requests, write_requests

APP_TOKEN = "dapiAPP-SERVICE-PRINCIPAL-TOKEN-77"
ANA_TOKEN = "eyJana.viewer-token-SECRET-1111"
BO_TOKEN = "eyJbo.viewer-token-SECRET-2222"
REQUESTS = TableName("requests")
IN_APPS = {"DATABRICKS_APP_NAME": "explorer", "DATABRICKS_APP_PORT": "8000", "DATABRICKS_HOST": "h.example"}
HANG_GUARD_S = 60  # joins give up after this only so a broken build fails instead of hanging; never a timing check


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The app's view of the requests table, and each viewer's as a row filter would leave it: ana sees endpoint
    ep_a only, bo ep_b only."""
    rows = synthetic_requests(800)
    base = tmp_path_factory.mktemp("viewers")
    only = {"app": rows, "ana": _endpoint(rows, "ep_a"), "bo": _endpoint(rows, "ep_b")}
    return {name: write_requests(base / f"{name}.duckdb", table, rollups=False) for name, table in only.items()}


def _endpoint(rows: pa.Table, endpoint: str) -> pa.Table:
    return rows.filter(pc.equal(rows["endpoint_name"], endpoint))


@pytest.fixture
def warehouse(files: dict[str, Path]) -> Iterator[FakeWarehouse]:
    # Short waits: ExecuteStatement answers at once (so a running statement can be cancelled at once), polls too.
    viewers = {ANA_TOKEN: files["ana"], BO_TOKEN: files["bo"]}
    with serve_warehouse(
        files["app"], token=APP_TOKEN, viewers=viewers, direct_wait_s=0.05, poll_wait_s=0.02
    ) as served:
        yield served


def _source(warehouse: FakeWarehouse, pool_size: int = 4, pool_timeout_s: float = 60) -> DatabricksSQLSource:
    settings = DatabricksSettings(
        host=warehouse.host, http_path=warehouse.http_path, token=APP_TOKEN, tls_ca_file=str(warehouse.cert_path)
    )
    return DatabricksSQLSource(
        settings,
        timeout_s=60,
        connect_options={"enable_telemetry": False},
        pool_size=pool_size,
        pool_timeout_s=pool_timeout_s,
    )


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the test
            outcome["error"] = error
        finally:
            outcome["done"] = True

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _held_query(marker: str) -> str:
    return versions.traffic(REQUESTS, queries.Filters(endpoints=(marker,)), "day", from_rollups=False).sql("databricks")


# ------------------------------------------------------------------------------------------ whose credential


def test_the_forwarded_token_counts_only_inside_databricks_apps() -> None:
    headers = {"X-Forwarded-Access-Token": ANA_TOKEN}
    assert query_credential(headers, IN_APPS, "auto") == Credential(ANA_TOKEN)
    assert query_credential(headers, {}, "auto") == APP_CREDENTIAL  # a header anyone could send elsewhere
    assert query_credential(headers, IN_APPS, "app") == APP_CREDENTIAL
    assert query_credential({}, IN_APPS, "auto") == APP_CREDENTIAL
    with pytest.raises(DataAccessError) as refused:  # required but missing: fail closed, never the app's identity
        query_credential({}, IN_APPS, "viewer")
    assert "user authorization" in refused.value.hint and "sql" in refused.value.hint


def test_a_credential_is_named_by_a_keyed_hash_never_the_token() -> None:
    ana, bo = Credential(ANA_TOKEN), Credential(BO_TOKEN)
    assert ana.key != bo.key and ana.key == Credential(ANA_TOKEN).key and APP_CREDENTIAL.key == "app"
    assert ANA_TOKEN not in ana.key and ANA_TOKEN not in repr(ana) and ANA_TOKEN[:12] not in ana.key


# ---------------------------------------------------------------------------------------- concurrent sessions


def test_eight_sessions_at_once_do_not_wait_for_a_slow_one(warehouse: FakeWarehouse, files: dict[str, Path]) -> None:
    hold = warehouse.hold(lambda text: "'held-endpoint'" in text)
    source = _source(warehouse, pool_size=4)
    try:
        slow, slow_outcome = _in_thread(lambda: source.execute(_held_query("held-endpoint")))
        hold.wait_for_arrival()  # the slow statement is running on the warehouse, holding one connection
        fast_queries = [
            queries.filter_options(REQUESTS),
            *(
                versions.traffic(REQUESTS, queries.Filters(versions=(v,)), "day", from_rollups=False)
                for v in ("6", "7", "5")
            ),
            *(
                versions.traffic(REQUESTS, queries.Filters(endpoints=(e,)), "hour", from_rollups=False)
                for e in ("ep_a", "ep_b")
            ),
            versions.traffic(REQUESTS, queries.Filters(), "day", from_rollups=False),
        ]
        fast = [_in_thread(lambda q=q: source.execute(q.sql("databricks"))) for q in fast_queries]
        for thread, _ in fast:
            thread.join(HANG_GUARD_S)
        # Every other session finished while the slow statement was still held on the warehouse.
        assert all(outcome.get("done") and "error" not in outcome for _, outcome in fast), [o for _, o in fast]
        assert not slow_outcome.get("done") and warehouse.running == 1
        expected = _duckdb(files["app"], fast_queries)
        assert [outcome["value"] for _, outcome in fast] == expected
        hold.release()
        slow.join(HANG_GUARD_S)
        assert "error" not in slow_outcome and slow_outcome["value"].num_rows == 0  # no such endpoint: no rows
    finally:
        hold.release()
        source.close()
    opened = [call for call in warehouse.calls if call.method == "OpenSession"]
    assert 1 < len(opened) <= 4  # queries ran side by side, on no more sessions than the pool holds
    assert warehouse.open_sessions == 0


def _duckdb(path: Path, built: list[queries.Query]) -> list[pa.Table]:
    from data_access.sources import DuckDBSource

    local = DuckDBSource(path)
    return [local.execute(query.sql("duckdb")) for query in built]


def test_a_full_pool_gives_up_with_a_clear_message(warehouse: FakeWarehouse) -> None:
    hold = warehouse.hold(lambda text: "'held-endpoint'" in text)
    source = _source(warehouse, pool_size=1, pool_timeout_s=0.2)
    try:
        slow, _ = _in_thread(lambda: source.execute(_held_query("held-endpoint")))
        hold.wait_for_arrival()
        with pytest.raises(DataAccessError) as busy:
            source.execute(queries.filter_options(REQUESTS).sql("databricks"))
        assert "busy" in busy.value.message and "warehouse_pool_size" in busy.value.hint
        assert "pool_timeout_s" in busy.value.hint
    finally:
        hold.release()
        slow.join(HANG_GUARD_S)
        source.close()
    assert warehouse.open_sessions == 0


def test_a_hundred_cancelled_queries_leak_no_connection(warehouse: FakeWarehouse, files: dict[str, Path]) -> None:
    """Each query is held on the warehouse until its caller stops waiting (as a Streamlit rerun or stop does); it is
    cancelled there, and its connection returns to the pool."""
    hold = warehouse.hold(lambda text: "'never-finishes'" in text)
    pool_size = 3
    source = _source(warehouse, pool_size=pool_size)
    outcomes: list[dict[str, Any]] = []
    try:
        for _ in range(100 // 4):  # four callers at a time, more than the pool holds: some wait for a connection
            stops = [threading.Event() for _ in range(4)]
            running = [
                _in_thread(lambda stop=stop: source.execute(_held_query("never-finishes"), should_stop=stop.is_set))
                for stop in stops
            ]
            for stop in stops:
                hold.wait_for_arrival()  # one more statement is running on the warehouse
                stop.set()  # ... and its caller leaves
            for thread, outcome in running:
                thread.join(HANG_GUARD_S)
                outcomes.append(outcome)
        assert len(outcomes) == 100 and all(isinstance(o.get("error"), QueryCancelled) for o in outcomes)
        assert warehouse.cancelled == 100 and warehouse.running == 0  # every one was cancelled on the warehouse
        assert warehouse.open_sessions <= pool_size  # ... and no connection was left behind
        after = source.execute(queries.filter_options(REQUESTS).sql("databricks"))  # the pool still serves
        assert after.equals(_duckdb(files["app"], [queries.filter_options(REQUESTS)])[0])
    finally:
        hold.release()
        source.close()
    assert warehouse.open_sessions == 0


# --------------------------------------------------------------------------------------------- two viewers


@pytest.fixture
def app_on_warehouse(warehouse: FakeWarehouse, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """ui.data configured through the environment, as Databricks Apps configures it, against the loopback warehouse."""
    from ui import data

    for name in ("INFERENCE_EXPLORER_BACKEND", "DATABRICKS_HTTP_PATH", "DATABRICKS_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABRICKS_HOST", warehouse.host)
    monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", warehouse.http_path.rsplit("/", 1)[-1])
    monkeypatch.setenv("DATABRICKS_TOKEN", APP_TOKEN)
    monkeypatch.setenv("DATABRICKS_TLS_CA_FILE", str(warehouse.cert_path))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        yield data
    finally:
        shared = data.source()
        assert isinstance(shared, DatabricksSQLSource)
        shared.close()
        st.cache_data.clear()
        st.cache_resource.clear()


def _endpoint_counts(frame: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame.groupby("endpoint_name")["requests"].sum().items()}


def test_two_viewers_each_see_only_their_rows_cache_included(
    app_on_warehouse: Any, warehouse: FakeWarehouse, files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data = app_on_warehouse
    ana, bo = Credential(ANA_TOKEN), Credential(BO_TOKEN)
    rows = synthetic_requests(800)
    oracle = Counter(str(e) for e in rows["endpoint_name"].to_pylist())  # what each endpoint holds, counted apart
    caplog.set_level(logging.DEBUG)
    first_ana = data.fetch_as(ana, "filter_options")
    first_bo = data.fetch_as(bo, "filter_options")  # same query, same arguments: must not be ana's cached result
    again_ana = data.fetch_as(ana, "filter_options")
    again_bo = data.fetch_as(bo, "filter_options")
    as_app = data.fetch_as(APP_CREDENTIAL, "filter_options")
    assert _endpoint_counts(first_ana.data) == {"ep_a": oracle["ep_a"]}
    assert _endpoint_counts(first_bo.data) == {"ep_b": oracle["ep_b"]}
    assert _endpoint_counts(as_app.data) == {"ep_a": oracle["ep_a"], "ep_b": oracle["ep_b"]}
    assert again_ana is first_ana or again_ana.data.equals(first_ana.data)
    assert again_bo.data.equals(first_bo.data)
    # The repeats came from the cache, each from its own viewer's entry: one statement per token reached the warehouse.
    executed = Counter(call.authorization for call in warehouse.calls if call.method == "ExecuteStatement")
    assert executed == {f"Bearer {ANA_TOKEN}": 1, f"Bearer {BO_TOKEN}": 1, f"Bearer {APP_TOKEN}": 1}
    logged = caplog.text
    assert ANA_TOKEN not in logged and BO_TOKEN not in logged


def test_a_refused_viewer_token_is_named_as_theirs_without_the_token(app_on_warehouse: Any) -> None:
    data = app_on_warehouse
    stranger = Credential("eyJstranger.not-a-workspace-token-3333")
    with pytest.raises(DataAccessError) as refused:
        data.fetch_as(stranger, "filter_options")
    text = f"{refused.value.message} {refused.value.hint}"
    assert "your own credentials" in text and "sql" in refused.value.hint
    assert "eyJstranger" not in text and "Traceback" not in text


def test_a_statement_the_warehouse_times_out_leaves_its_session_in_the_pool(warehouse: FakeWarehouse) -> None:
    """The warehouse ends a statement at the session's STATEMENT_TIMEOUT (query_timeout_s); the session stays healthy
    and serves the next query."""
    warehouse.hold(lambda text: "'too-slow'" in text)  # never released: only the timeout ends it
    settings = DatabricksSettings(
        host=warehouse.host, http_path=warehouse.http_path, token=APP_TOKEN, tls_ca_file=str(warehouse.cert_path)
    )
    source = DatabricksSQLSource(settings, timeout_s=1, connect_options={"enable_telemetry": False}, pool_size=2)
    try:
        with pytest.raises(DataAccessError) as timed_out:
            source.execute(_held_query("too-slow"))
        assert "timed out" in timed_out.value.message and warehouse.running == 0
        source.execute(queries.filter_options(REQUESTS).sql("databricks"))
        assert [call.method for call in warehouse.calls].count("OpenSession") == 1  # the same session, reused
        assert warehouse.open_sessions == 1
    finally:
        source.close()
    assert warehouse.open_sessions == 0


def test_the_stop_probe_reads_streamlits_own_script_requests() -> None:
    """ui.data cancels a query when Streamlit asks the script run to stop or rerun: checked against the installed
    Streamlit's real ScriptRequests, so an internal change fails here rather than silently never cancelling."""
    from streamlit.runtime.scriptrunner_utils.script_requests import RerunData, ScriptRequests

    from ui.data import stop_probe

    running = ScriptRequests()
    assert stop_probe(running)() is False
    rerun = ScriptRequests()
    assert rerun.request_rerun(RerunData())  # the viewer changed a widget
    assert stop_probe(rerun)() is True
    stopped = ScriptRequests()
    stopped.request_stop()  # the session ended (tab closed)
    assert stop_probe(stopped)() is True


def test_a_viewers_idle_connections_are_closed_on_the_warehouse(warehouse: FakeWarehouse) -> None:
    """A viewer's session on the warehouse (and the token it holds) does not outlive idle_s."""
    settings = DatabricksSettings(
        host=warehouse.host, http_path=warehouse.http_path, token=APP_TOKEN, tls_ca_file=str(warehouse.cert_path)
    )
    source = DatabricksSQLSource(settings, connect_options={"enable_telemetry": False}, idle_s=0.0)
    statement = queries.filter_options(REQUESTS).sql("databricks")
    try:
        source.execute(statement, Credential(ANA_TOKEN))
        assert warehouse.open_sessions == 1
        source.execute(statement)  # any later query closes what has been idle for idle_s (here: at once)
        pause = threading.Event()  # never set: a bounded wait while the close runs in the background
        for _ in range(int(HANG_GUARD_S / 0.05)):
            if set(warehouse.service.session_auth.values()) == {f"Bearer {APP_TOKEN}"}:
                break
            pause.wait(0.05)
        assert set(warehouse.service.session_auth.values()) == {f"Bearer {APP_TOKEN}"}  # ana's session is gone
    finally:
        source.close()
    assert warehouse.open_sessions == 0

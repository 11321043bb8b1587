"""`python -m jobs.rollups --databricks` at the wire: the real databricks-sql-connector builds and refreshes the
rollups through the loopback warehouse (testkit/fake_warehouse.py, writable), and the pages' freshness rule reads
them there: while a refresh runs, after one that stopped half-way, and after another writer appended rows.

The loopback warehouse runs each statement on DuckDB and applies Delta's `INSERT INTO ... REPLACE WHERE` as the
DELETE and INSERT it means (a test-only stand-in); so these tests prove the command's statements and the
connector path, and that a refresh of the changed dates equals a full rebuild. The Databricks dialect of the
rollup SQL runs for real on local Spark in tests/test_analytics.py.
"""

from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_access import rollup_status, rollups
from data_access.config import DatabricksSettings, TableName
from data_access.errors import DataAccessError
from data_access.queries import run
from data_access.sources import DatabricksSQLSource
from jobs import rollups as rollup_job
from testkit.fake_warehouse import HTTP_PATH, FakeWarehouse, serve_warehouse
from testkit.tables import write_requests

TOKEN = "dapiROLLUP-WIRE-TOKEN-4567"
TABLE = TableName("requests")
BATCH_DAY = date(2026, 4, 10)


def _contents(path: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = {}
        for name, _ in rollups.rollup_builds(TABLE):
            frame = con.sql(f'SELECT * FROM "{name.table}"').df()
            keys = [c for c in frame.columns if frame[c].dtype == object or c in ("bucket", "hour", "date", "bin")]
            tables[name.table] = frame.sort_values(keys, ignore_index=True)
    return tables


def usable(source: DatabricksSQLSource) -> bool:
    """The pages' check (`ui.data.rollups_usable`): a missing state table fails the statement: not usable."""
    try:
        return rollup_status.rollups_usable(run(source, rollup_status.rollup_freshness(TABLE)).table.to_pylist())
    except DataAccessError:
        return False


def _five_minute_batch(rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The rows before, and a batch of the last five minutes of one day (what a scheduled scoring run adds)."""
    on_day = pc.equal(rows["date"], pa.scalar(BATCH_DAY))
    end = pc.max(rows.filter(on_day)["request_time"]).as_py()
    batch = pc.and_(on_day, pc.greater(rows["request_time"], pa.scalar(end - timedelta(minutes=5))))
    return rows.filter(pc.invert(batch)), rows.filter(batch)


def test_databricks_command_builds_then_replaces_only_the_changed_date(
    tmp_path: Path, demo_rows: pa.Table, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before, batch = _five_minute_batch(demo_rows)
    assert batch.num_rows > 0
    path = write_requests(tmp_path / "warehouse.duckdb", before, rollups=False)
    with serve_warehouse(path, token=TOKEN, writable=True) as warehouse:
        source = _point_at(warehouse, monkeypatch)
        assert rollup_job.main(["--databricks"]) == 0
        assert capsys.readouterr().out.strip() == "rollups rebuilt"
        built = [s.text for s in warehouse.statements if s.text.startswith("CREATE")]
        # every rollup, then last the state table with the counts it verified
        assert [s.split("`")[1] for s in built] == [name.table for name in rollup_status.rollup_tables(TABLE)]
        assert all(s.startswith("CREATE OR REPLACE TABLE `requests__") for s in built)

        assert usable(source)
        _append(path, batch)  # the scoring job appends a five-minute batch
        assert not usable(source)  # the pages read the raw table now

        sent = len(warehouse.statements)
        assert rollup_job.main(["--databricks"]) == 0
        assert capsys.readouterr().out.strip() == "rollups updated for 1 date(s)"
        writes = [s.text for s in warehouse.statements[sent:] if s.text.startswith("INSERT")]
        assert len(writes) == len(rollups.rollup_builds(TABLE))
        for statement in writes:
            assert "REPLACE WHERE `date` IN (CAST('2026-04-10' AS DATE))" in statement
        assert usable(source)  # the pages read the rollups again
        source.close()  # its sessions, while the warehouse still listens

    _assert_same_as_a_rebuild(path, tmp_path, demo_rows)


def test_a_refresh_stopped_between_tables_reads_as_stale_until_one_completes(
    tmp_path: Path, demo_rows: pa.Table, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The warehouse stops under a refresh after it replaced the batch's date in the minute rollup and before the
    histograms: the minute rollup then counts what the requests table holds, the histograms do not. The pages
    read the requests table while the refresh runs and after it stopped (its state table is gone); the next
    refresh finds no date whose count changed, sees the rollups disagree, and rebuilds them."""
    before, batch = _five_minute_batch(demo_rows)
    path = write_requests(tmp_path / "warehouse.duckdb", before)  # rollups and their state, current
    with serve_warehouse(path, token=TOKEN, writable=True) as warehouse:
        source = _point_at(warehouse, monkeypatch)
        assert usable(source)
        _append(path, batch)
        assert not usable(source)

        held: list[str] = []  # the first statement that writes the histograms, only

        def first_histogram_write(statement: str) -> bool:
            if held or not statement.startswith(f"INSERT INTO `{rollups.histogram_rollup_name(TABLE).table}`"):
                return False
            held.append(statement)
            return True

        hold = warehouse.hold(first_histogram_write)
        exit_code: list[int] = []
        refresher = threading.Thread(target=lambda: exit_code.append(rollup_job.main(["--databricks"])))
        refresher.start()
        hold.wait_for_arrival()
        counts = run(source, rollup_status.rollup_counts(TABLE)).table.to_pylist()[0]
        assert counts["rollup_requests"] == counts["table_requests"] == demo_rows.num_rows  # minute: replaced
        assert counts["histogram_latency"] < counts["rollup_latency"]  # histograms: not yet
        assert not usable(source)  # while the refresh runs
        hold.fail()
        refresher.join(timeout=120)
        assert exit_code == [1] and "WAREHOUSE_STOPPED" in capsys.readouterr().err
        assert not usable(source)  # after it stopped half-way

        assert rollup_job.main(["--databricks"]) == 0
        assert capsys.readouterr().out.strip() == "rollups rebuilt"
        assert usable(source)
        source.close()

    _assert_same_as_a_rebuild(path, tmp_path, demo_rows)


def _point_at(warehouse: FakeWarehouse, monkeypatch: pytest.MonkeyPatch) -> DatabricksSQLSource:
    """Configure the command for the loopback warehouse; a source reading it as the pages do."""
    monkeypatch.setenv("DATABRICKS_HOST", warehouse.host)
    monkeypatch.setenv("DATABRICKS_HTTP_PATH", HTTP_PATH)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("DATABRICKS_TLS_CA_FILE", str(warehouse.cert_path))
    settings = DatabricksSettings(
        host=warehouse.host, http_path=HTTP_PATH, token=TOKEN, tls_ca_file=str(warehouse.cert_path)
    )
    return DatabricksSQLSource(settings, connect_options={"enable_telemetry": False})


def _append(path: Path, rows: pa.Table) -> None:
    """Another writer (the scoring job) appends rows to the requests table."""
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rows)
        con.execute("INSERT INTO requests SELECT * FROM incoming")


def _assert_same_as_a_rebuild(path: Path, tmp_path: Path, rows: pa.Table) -> None:
    expected = _contents(write_requests(tmp_path / "rebuilt.duckdb", rows))
    for name, table in _contents(path).items():
        pd.testing.assert_frame_equal(table, expected[name], check_exact=False, rtol=1e-12, check_dtype=False, obj=name)


def test_databricks_command_without_a_warehouse_names_the_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DATABRICKS_HOST", "DATABRICKS_WAREHOUSE_ID", "DATABRICKS_HTTP_PATH", "INFERENCE_EXPLORER_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    assert rollup_job.main(["--databricks"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --databricks needs a Databricks SQL warehouse") and "DATABRICKS_HOST" in error

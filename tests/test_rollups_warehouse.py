"""`python -m jobs.rollups --databricks` at the wire: the real databricks-sql-connector builds and refreshes the
rollups through the loopback warehouse (testkit/fake_warehouse.py, writable), and the pages' freshness rule reads
them there.

The loopback warehouse runs each statement on DuckDB and applies Delta's `INSERT INTO ... REPLACE WHERE` as the
DELETE and INSERT it means (a test-only stand-in); so these tests prove the command's statements and the
connector path, and that a refresh of the changed dates equals a full rebuild. The Databricks dialect of the
rollup SQL runs for real on local Spark in tests/test_analytics.py.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_access import rollups
from data_access.config import DatabricksSettings, TableName
from data_access.queries import run
from data_access.sources import DatabricksSQLSource
from jobs import rollups as rollup_job
from testkit.fake_warehouse import HTTP_PATH, serve_warehouse
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
        monkeypatch.setenv("DATABRICKS_HOST", warehouse.host)
        monkeypatch.setenv("DATABRICKS_HTTP_PATH", HTTP_PATH)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        monkeypatch.setenv("DATABRICKS_TLS_CA_FILE", str(warehouse.cert_path))
        assert rollup_job.main(["--databricks"]) == 0
        assert capsys.readouterr().out.strip() == "rollups rebuilt"
        built = [s.text for s in warehouse.statements if s.text.startswith("CREATE")]
        assert [s.split("`")[1] for s in built] == [name.table for name, _ in rollups.rollup_builds(TABLE)]
        assert all(s.startswith("CREATE OR REPLACE TABLE `requests__") for s in built)

        with duckdb.connect(str(path)) as con:  # the scoring job appends a five-minute batch
            con.register("incoming", batch)
            con.execute("INSERT INTO requests SELECT * FROM incoming")
        settings = DatabricksSettings(
            host=warehouse.host, http_path=HTTP_PATH, token=TOKEN, tls_ca_file=str(warehouse.cert_path)
        )
        source = DatabricksSQLSource(settings, connect_options={"enable_telemetry": False})
        behind = run(source, rollups.rollup_freshness(TABLE)).table.to_pylist()[0]
        assert not rollups.rollups_usable(rollups.ROLLUP_TABLES, behind)  # the pages read the raw table now

        sent = len(warehouse.statements)
        assert rollup_job.main(["--databricks"]) == 0
        assert capsys.readouterr().out.strip() == "rollups updated for 1 date(s)"
        writes = [s.text for s in warehouse.statements[sent:] if s.text.startswith("INSERT")]
        assert len(writes) == rollups.ROLLUP_TABLES
        for statement in writes:
            assert "REPLACE WHERE `date` IN (CAST('2026-04-10' AS DATE))" in statement
        fresh = run(source, rollups.rollup_freshness(TABLE)).table.to_pylist()[0]
        assert rollups.rollups_usable(rollups.ROLLUP_TABLES, fresh)  # the pages read the rollups again
        source.close()  # its sessions, while the warehouse still listens

    rebuilt = write_requests(tmp_path / "rebuilt.duckdb", demo_rows)
    expected = _contents(rebuilt)
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

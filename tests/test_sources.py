"""Sources fail with a message that says what to fix, never a stack trace or a secret."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from data_access.config import DatabricksSettings
from data_access.errors import DataAccessError
from data_access.sources import DatabricksSQLSource, DuckDBSource, connect_duckdb
from testkit.wire import Reply, serve

TOKEN = "dapiTHIS-IS-A-SECRET-TOKEN"


def _warehouse(host: str, **options: object) -> DatabricksSQLSource:
    settings = DatabricksSettings(host=host, http_path="/sql/1.0/warehouses/abc123", token=TOKEN)
    connect = {"_tls_no_verify": True, "_retry_stop_after_attempts_count": 1, "enable_telemetry": False, **options}
    return DatabricksSQLSource(settings, timeout_s=10, connect_options=connect)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "refused the credentials"),
        (403, "refused the credentials"),
        (404, "Cannot reach"),
        (503, "not available right now"),
    ],
)
def test_warehouse_http_failures_become_clear_messages(status: int, expected: str) -> None:
    with serve(lambda request: Reply(status)) as server, pytest.raises(DataAccessError) as raised:
        _warehouse(server.host).execute("SELECT 1")
    error = raised.value
    assert expected in error.message
    assert error.hint
    assert TOKEN not in str(error) and "Traceback" not in str(error)
    # the connector really went over the wire to the warehouse path, with the token as bearer
    first = server.requests[0]
    assert first.method == "POST" and first.path == "/sql/1.0/warehouses/abc123"
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"


def test_unreachable_warehouse() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataAccessError) as raised:
        _warehouse(f"127.0.0.1:{port}").execute("SELECT 1")
    assert "Cannot reach" in raised.value.message
    assert TOKEN not in str(raised.value)


def test_missing_duckdb_file(tmp_path: Path) -> None:
    with pytest.raises(DataAccessError, match="does not exist"):
        DuckDBSource(tmp_path / "absent.duckdb").execute("SELECT 1")


def test_missing_table_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    with pytest.raises(DataAccessError) as raised:
        DuckDBSource(path).execute('SELECT * FROM "requests"')
    assert "missing" in raised.value.message and "jobs.score" in raised.value.hint


def test_file_locked_by_another_process_explains(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS x").close()
    holder = subprocess.Popen(  # another process holds the write lock, as the scoring job does per batch
        [
            sys.executable,
            "-c",
            f"import duckdb,sys,time; c=duckdb.connect({str(path)!r}); print('ok', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        with pytest.raises(DataAccessError) as raised:
            DuckDBSource(path, lock_wait_s=0.3).execute("SELECT * FROM t")
        assert "locked by another process" in raised.value.message
    finally:
        holder.communicate("")
    assert DuckDBSource(path).execute("SELECT x FROM t").to_pylist() == [{"x": 1}]


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "text.duckdb"
    path.write_text("this is not a database")
    with pytest.raises(DataAccessError) as raised:
        DuckDBSource(path).execute("SELECT 1")
    assert "Traceback" not in str(raised.value)


def test_connections_to_one_file_open_and_write_on_several_threads_at_once(tmp_path: Path) -> None:
    """Three threads open and close connections to one file while a fourth writes Arrow rows through `register`, as
    the scoring job's reader and writer threads do: every connection opens and every row lands. Without opening one
    at a time, DuckDB 2.0 failed dozens of these connections ("Unique file handle conflict", now and then
    "python_arrow_scan does not exist")."""
    path, writes, rows = tmp_path / "shared.duckdb", 300, pa.table({"n": list(range(100))})
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t (n BIGINT)")
    errors: list[str] = []
    done = threading.Event()

    def open_and_close() -> None:
        while not done.is_set():
            try:
                con = connect_duckdb(path, read_only=False, wait_s=5)
                con.sql("SELECT count(*) FROM t").fetchall()
                con.close()
            except duckdb.Error as error:
                errors.append(str(error).splitlines()[0])

    openers = [threading.Thread(target=open_and_close) for _ in range(3)]
    for thread in openers:
        thread.start()
    try:
        for _ in range(writes):
            try:
                con = connect_duckdb(path, read_only=False, wait_s=5)
                con.register("incoming", rows)
                con.execute("INSERT INTO t SELECT * FROM incoming")
                con.close()
            except duckdb.Error as error:
                errors.append(str(error).splitlines()[0])
    finally:
        done.set()
        for thread in openers:
            thread.join()
    assert errors == []
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*), sum(n) FROM t").fetchone() == (writes * 100, writes * sum(range(100)))

"""One read connection per page run on the embedded file, and the scoring job still gets its write lock.

DuckDB lets one process write a file, or any number read it; the scoring job is another process that writes a batch
at a time. A page run shares one read-only connection (`sources.page_run`), so the file must be free again as soon
as the run ends: these tests write from a real second process, as the job does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from data_access.errors import DataAccessError
from data_access.sources import DuckDBSource, page_run
from testkit.apptest import ROOT, app_for
from testkit.tables import demo_directory

WRITER = """
import sys, time
from pathlib import Path
from data_access.sources import connect_duckdb
print("trying", flush=True)
con = connect_duckdb(Path(sys.argv[1]), read_only=False, wait_s=float(sys.argv[2]))
acquired = time.time()
con.execute("CREATE TABLE IF NOT EXISTS batches (written_at DOUBLE)")
con.execute("INSERT INTO batches VALUES (?)", [acquired])
con.close()
print(f"wrote {acquired!r}", flush=True)
"""


def start_writer(path: Path, wait_s: float) -> subprocess.Popen[str]:
    """The scoring job's way in: open the file for writing, waiting up to wait_s for readers to leave."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(wait_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "trying"
    return writer


def wrote_at(writer: subprocess.Popen[str]) -> float:
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err[-2000:]
    return float(out.split()[-1])


@pytest.fixture(scope="module")
def with_rollups(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows, rollups=True)


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "inference.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS x FROM range(5)")
    return path


def test_a_page_run_shares_one_connection_and_frees_the_file_when_it_ends(small_file: Path) -> None:
    source = DuckDBSource(small_file)
    with page_run(source):
        source.execute("CREATE TEMP TABLE seen AS SELECT 41 AS x")  # a temp table lives in its connection only
        assert source.execute("SELECT x FROM seen").to_pylist() == [{"x": 41}]
        writer = start_writer(small_file, wait_s=30)  # the job asks for the file while the page still reads it
        time.sleep(0.5)
        assert source.execute("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 5}]
        released = time.time()
    acquired = wrote_at(writer)
    assert acquired >= released  # it waited for the page run, and got the file within its bounded wait
    with pytest.raises(DataAccessError, match="seen"):  # the run's connection is gone; queries connect again
        source.execute("SELECT x FROM seen")
    assert source.execute("SELECT written_at FROM batches").to_pylist() == [{"written_at": acquired}]


def test_a_page_run_without_an_uncached_query_never_opens_the_file(small_file: Path) -> None:
    source = DuckDBSource(small_file)
    with page_run(source):
        assert wrote_at(start_writer(small_file, wait_s=0.5)) > 0  # nothing held it


def test_nested_page_runs_share_the_outer_connection(small_file: Path) -> None:
    source = DuckDBSource(small_file)
    with page_run(source):
        source.execute("CREATE TEMP TABLE seen AS SELECT 1 AS x")
        with page_run(source):
            assert source.execute("SELECT x FROM seen").num_rows == 1
        assert source.execute("SELECT x FROM seen").num_rows == 1  # the inner block did not close it


def test_a_failed_query_leaves_the_page_run_usable(small_file: Path) -> None:
    source = DuckDBSource(small_file)
    with page_run(source):
        with pytest.raises(DataAccessError, match="missing"):
            source.execute("SELECT * FROM absent")
        assert source.execute("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 5}]


def test_the_job_writes_right_after_the_app_drew_a_page(
    with_rollups: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "data"
    shutil.copytree(with_rollups, folder)  # the session's shared data dir stays as it is
    at: AppTest = app_for(folder, monkeypatch)
    at.run()
    at.switch_page("views/usage.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    # The page's queries ran (not from a cache: the caches were cleared) and its connection closed with the run:
    # a writer that waits at most half a second gets in.
    assert wrote_at(start_writer(folder / "inference.duckdb", wait_s=0.5)) > 0

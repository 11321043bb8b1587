"""One scoring job at a time per requests table: a second job stops with a clear message, so no row is scored twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest
from filelock import FileLock

from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.payload import parse_payload
from jobs.score import run_once
from metrics.profiles import build_profile

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = generate_payload(2_000, seed=5)
ROWS = len(set(parse_payload(PAYLOAD)["request_id"].to_pylist()))  # the demo repeats a few ids, as real tables do


def _store(path: Path) -> DuckDBStore:
    store = DuckDBStore(path, TableName("payload"), TableName("requests"))
    store.replace_payload(PAYLOAD)
    return store


def test_a_second_job_stops_before_reading_anything(tmp_path: Path) -> None:
    store = _store(tmp_path / "inference.duckdb")
    with FileLock(store.scoring_lock_path):  # another job holds the table
        with pytest.raises(DataAccessError) as raised:
            run_once(store, build_profile("light"))
        command = [sys.executable, "-m", "jobs.score", "--duckdb", str(store.path), "--quiet"]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ}, capture_output=True, text=True, timeout=300)
    assert "Another scoring job is already scoring requests" in raised.value.message
    assert done.returncode == 1 and "Another scoring job" in done.stderr and "Traceback" not in done.stderr
    with duckdb.connect(str(store.path), read_only=True) as con:
        tables = con.sql("SELECT table_name FROM information_schema.tables").fetchall()
    assert ("requests",) not in tables  # nothing was written, not even the table
    assert run_once(store, build_profile("light")).read == ROWS  # released: the next job does the work


def test_two_jobs_started_at_once_score_every_row_once(tmp_path: Path) -> None:
    store = _store(tmp_path / "inference.duckdb")
    command = [sys.executable, "-m", "jobs.score", "--duckdb", str(store.path), "--quiet", "--batch-size", "200"]
    jobs = [subprocess.Popen(command, cwd=ROOT, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]  # fmt: skip
    results = [(job.wait(timeout=600), *job.communicate()) for job in jobs]
    read = [
        int(re.search(r"read ([\d,]+) rows", out).group(1).replace(",", "")) for code, out, _ in results if code == 0
    ]
    refused = [err for code, _, err in results if code == 1]
    assert len(read) + len(refused) == 2 and read, results
    assert sum(read) == ROWS  # scored once in all: by one job, or by the first with nothing left for the second
    assert all("Another scoring job" in err for err in refused)
    with duckdb.connect(str(store.path), read_only=True) as con:
        ((written, distinct),) = con.sql("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchall()
    assert written == distinct == ROWS


def test_a_second_spark_job_stops_before_starting_spark(tmp_path: Path) -> None:
    # The Spark engine's lock: a file under the data folder per requests table, taken before the session starts.
    env = {**os.environ, "INFERENCE_EXPLORER_DATA_DIR": str(tmp_path)}
    env.pop("DATABRICKS_RUNTIME_VERSION", None)
    command = [sys.executable, "-m", "jobs.score", "--engine", "spark", "--requests-table", "scored", "--quiet"]
    with FileLock(tmp_path / "spark" / "scored.scoring.lock"):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Another scoring job is already scoring scored on Spark" in done.stderr
    assert "scored.scoring.lock" in done.stderr
    assert not (tmp_path / "spark" / "metastore_db").exists()  # Spark never started: nothing read, nothing written


# A Spark job that first copies the embedded payload into its local catalog, then scores on Spark and watches, so it
# holds the table's lock after its first run until it is stopped.
WATCHING_SPARK_JOB = """
import sys
from jobs import score, spark_score
if spark_score.main(["--from-duckdb", sys.argv[1]]) != 0:
    sys.exit(3)
sys.exit(score.main(["--engine", "spark", "--quiet", "--no-monitors", "--watch", "600"]))
"""


@pytest.mark.spark
@pytest.mark.slow  # one local Spark session, in a subprocess (~100 s at load 11 on 2 cores)
def test_two_spark_jobs_at_once_the_second_refuses_and_nothing_is_written_twice(tmp_path: Path) -> None:
    store = _store(tmp_path / "inference.duckdb")
    env = {**os.environ, "INFERENCE_EXPLORER_DATA_DIR": str(tmp_path), "INFERENCE_EXPLORER_SPARK_MASTER": "local[1]"}
    env.pop("DATABRICKS_RUNTIME_VERSION", None)
    first_err = tmp_path / "first.stderr"  # a file, not a pipe nobody reads while Spark logs into it
    with first_err.open("w") as err:
        first = subprocess.Popen(
            [sys.executable, "-c", WATCHING_SPARK_JOB, str(store.path)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    watchdog = threading.Timer(600, first.kill)  # every wait bounded, even if the first job hangs
    watchdog.start()
    try:
        summary = next((line for line in first.stdout if line.startswith("read ")), "")  # type: ignore[union-attr]
        assert summary, first_err.read_text()[-2000:]
        # The first job has scored and is watching: it still holds the table while the second one starts.
        command = [sys.executable, "-m", "jobs.score", "--engine", "spark", "--quiet", "--no-monitors"]
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
        watchdog.cancel()
    assert first.returncode == 130, first_err.read_text()[-2000:]  # stopped by the interrupt, as an operator would
    assert f"wrote {ROWS:,}" in summary
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert "Another scoring job is already scoring requests on Spark" in second.stderr
    assert "requests.scoring.lock" in second.stderr
    table = tmp_path / "spark" / "warehouse" / "requests"
    with duckdb.connect() as con:
        query = "SELECT count(*), count(DISTINCT request_id) FROM read_parquet(?, hive_partitioning = true)"
        ((written, distinct),) = con.execute(query, [f"{table}/**/*.parquet"]).fetchall()
    assert written == distinct == ROWS  # every row once: the first job's, nothing from the second

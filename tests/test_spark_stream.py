"""The Spark engine reads only what is new: Structured Streaming (`availableNow`) with a checkpoint, on local Spark.

Each run reads the payload table's new files only, late rows included whatever their request time; a job process
killed (SIGKILL, JVM included) at a random point and run again ends with exactly one clean run's rows.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from jobs.score import run_once
from jobs.spark_runs import SparkScoringJob, run_spark_stream
from jobs.spark_session import local_spark
from jobs.spark_tables import write_payload_table
from metrics.profiles import build_profile

pytestmark = [pytest.mark.spark, pytest.mark.slow]
pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent


def clean_run(payload: pa.Table, folder: Path) -> dict[str, dict[str, Any]]:
    """The embedded engine's requests rows for this payload, from scratch, by request id."""
    store = DuckDBStore(folder / "clean.duckdb", TableName("payload"), TableName("requests"))
    store.replace_payload(payload)
    run_once(store, build_profile("light"))
    with duckdb.connect(str(folder / "clean.duckdb"), read_only=True) as con:
        return by_id(con.sql("SELECT * FROM requests").to_arrow_table())


def by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Rows by request id without `scored_at`, times as naive UTC; an id written twice fails."""
    rows: dict[str, dict[str, Any]] = {}
    for record in table.to_pylist():
        record.pop("scored_at")
        for name, value in record.items():
            if isinstance(value, dt.datetime) and value.tzinfo is not None:
                record[name] = value.astimezone(dt.UTC).replace(tzinfo=None)
        assert record["request_id"] not in rows, f"request id {record['request_id']} written twice"
        rows[record["request_id"]] = record
    return rows


def assert_same(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> None:
    assert expected.keys() == actual.keys()
    for request_id, row in expected.items():
        for column, value in row.items():
            other = actual[request_id][column]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(value, other, rel_tol=1e-12), (request_id, column, value, other)
            else:
                assert value == other, (request_id, column, value, other)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))


def test_each_run_reads_only_new_files_late_rows_included(spark: Any, tmp_path: Path) -> None:
    payload = generate_payload(500, seed=31)
    late = payload.take(list(range(20, 40)))  # logged a whole batch of runs later than their request time
    first = payload.take([i for i in range(320) if not 20 <= i < 40])
    second = pa.concat_tables([payload.slice(320), late])
    job = SparkScoringJob(
        TableName("ss_payload"), TableName("ss_requests"), "light", checkpoint=str(tmp_path / "checkpoint")
    )
    spark.sql("DROP TABLE IF EXISTS ss_requests")  # the session is shared: start from no requests table
    write_payload_table(spark, job.payload, first)
    one = run_spark_stream(spark, job)
    assert (one.read, one.written) == (first.num_rows, first.num_rows)

    write_payload_table(spark, job.payload, second, mode="append")
    two = run_spark_stream(spark, job)
    assert (two.read, two.written) == (second.num_rows, second.num_rows)  # the new rows only, the late ones too

    three = run_spark_stream(spark, job)
    assert (three.read, three.written) == (0, 0)
    assert_same(clean_run(payload, tmp_path), by_id(spark.table("ss_requests").toArrow()))


# The payload table, written in many files so that a run takes several micro-batches (one file each).
WRITE_PAYLOAD = """
import sys
from data_access.config import TableName, load_settings
from data_access.demo import generate_payload
from jobs.spark_tables import write_payload_table
from jobs.spark_session import job_session
payload = generate_payload({rows}, seed=37)
spark = job_session(load_settings())
for index, start in enumerate(range(0, payload.num_rows, {rows_per_file})):
    part = payload.slice(start, {rows_per_file})
    write_payload_table(spark, TableName("payload"), part, mode="overwrite" if index == 0 else "append")
"""


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "INFERENCE_EXPLORER_DATA_DIR": str(data_dir), "INFERENCE_EXPLORER_SPARK_MASTER": "local[2]"}


def _job(data_dir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "jobs.score", "--engine", "spark", "--payload-table", "payload",
               "--requests-table", "requests", "--files-per-batch", "1", "--quiet"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _commits(data_dir: Path) -> int:
    folders = list((data_dir / "spark" / "checkpoints").glob("*/commits"))
    return sum(1 for f in folders[0].iterdir() if f.name.isdigit()) if folders else 0


def test_killed_stream_resumes_to_one_clean_run(tmp_path: Path) -> None:
    rows, rows_per_file = 400, 50
    script = textwrap.dedent(WRITE_PAYLOAD.format(rows=rows, rows_per_file=rows_per_file))
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(tmp_path), check=True, capture_output=True)

    rng = random.Random(16)
    target = rng.randint(1, rows // rows_per_file - 2)
    job = _job(tmp_path)
    while job.poll() is None and _commits(tmp_path) < target:
        time.sleep(0.2)
    time.sleep(rng.uniform(0.0, 1.5))  # anywhere in the next micro-batch: scoring, the write, or its commit
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its JVM, as a lost node would
    job.wait()
    assert 0 < _commits(tmp_path) < rows // rows_per_file, "the kill must land mid-run for this test to mean anything"

    done = _job(tmp_path)
    _, err = done.communicate(timeout=900)
    assert done.returncode == 0, err.decode()[-2000:]
    by_date = ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive")  # the job partitions by date
    written = pq.read_table(tmp_path / "spark" / "warehouse" / "requests", partitioning=by_date)
    assert_same(clean_run(generate_payload(rows, seed=37), tmp_path), by_id(written))

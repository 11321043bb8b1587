"""Backfill throughput on local Spark against the embedded (DuckDB) engine's backfill, measured in the same run.

Run: `python -m bench.bench_backfill [--rows N] [--rows-per-unit R]`.

Both engines start from the same requests rows, scored by the embedded job with toxicity sampled at 10%, and
backfill toxicity on every row (`light` profile): the contender is `jobs.spark_backfill.run_spark_backfill` on
`local[2]` (the table partitioned by date, units of whole dates); the baseline is `jobs.backfill.run_backfill`
(one Python process, 5,000 rows per committed batch). Each first backfills a 200-row copy (models loaded, Spark's
Python workers started), then the timed run backfills the whole table, its rollups refreshed as it goes; one timed
run each. Rows/s counts the rows examined (scored, or left out with the rate recorded), as the jobs report it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from bench.machine import describe
from data_access.config import TableName
from data_access.demo import generate_payload
from data_access.duckdb_store import DuckDBStore
from jobs.backfill import BackfillSummary, run_backfill
from jobs.rollups import refresh_spark_rollups
from jobs.score import run_once
from jobs.spark_backfill import SparkBackfill, run_spark_backfill
from jobs.spark_session import local_spark
from jobs.spark_tables import SPARK_REQUESTS_ARROW
from metrics.profiles import build_profile

PAYLOAD, REQUESTS = TableName("payload"), TableName("requests")
WARMUP_ROWS = 200


def _scored_file(folder: Path, rows: int) -> Path:
    path = folder / "sampled.duckdb"
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    store.replace_payload(generate_payload(rows, seed=5))
    run_once(store, build_profile("light"), sample_rates={"toxicity": 0.1})
    return path


def _embedded(path: Path, folder: Path, limit: int | None) -> BackfillSummary:
    copy = folder / f"embedded-{limit}.duckdb"
    shutil.copy(path, copy)
    return run_backfill(DuckDBStore(copy, PAYLOAD, REQUESTS), build_profile("light"), "toxicity", limit=limit)


def _spark_table(spark: object, name: str, rows: pa.Table) -> TableName:
    spark.sql(f"DROP TABLE IF EXISTS {name}")  # type: ignore[attr-defined]
    frame = spark.createDataFrame(rows.cast(SPARK_REQUESTS_ARROW))  # type: ignore[attr-defined]
    frame.write.partitionBy("date").saveAsTable(name)
    refresh_spark_rollups(spark, TableName(name))
    return TableName(name)


def _rows_per_second(summary: BackfillSummary) -> float:
    return (summary.scored + summary.left_out) / summary.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rows-per-unit", type=int, default=5_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        path = _scored_file(folder, args.rows)
        with duckdb.connect(str(path), read_only=True) as con:
            rows = con.sql("SELECT * FROM requests").to_arrow_table()
        print(f"machine: {describe()}")
        scored = rows.num_rows - rows["toxicity_scorer"].null_count
        print(f"{rows.num_rows:,} requests rows, toxicity scored on {scored:,} (10% sample) before the backfill")
        _embedded(path, folder, WARMUP_ROWS)
        baseline = _embedded(path, folder, None)
        spark = local_spark("local[2]", warehouse_dir=folder / "warehouse")
        warm = _spark_table(spark, "warmup", rows.slice(0, WARMUP_ROWS))
        run_spark_backfill(spark, SparkBackfill(warm, "toxicity"))
        table = _spark_table(spark, "requests", rows)
        contender = run_spark_backfill(spark, SparkBackfill(table, "toxicity", rows_per_unit=args.rows_per_unit))
        print(f"embedded backfill (baseline): {baseline.line()}")
        print(f"Spark backfill, local[2]:     {contender.line()}")
        ratio = _rows_per_second(contender) / _rows_per_second(baseline)
        print(f"Spark / embedded rows/s: {ratio:.2f}x (same rows, same scorer, both refreshing their rollups)")
        print(f"machine after: {describe()}")
        spark.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

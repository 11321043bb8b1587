"""Every page over the rollups against the same page over the requests table, on DuckDB and on local Spark running
the Databricks-dialect SQL, in one run; and what keeping the rollups current costs after a five-minute batch.

    python -m bench.bench_warehouse [--db PATH | --rows N] [--reps 3] [--spark-reps 1] [--engines duckdb,spark]

The data: a DuckDB file of scored demo requests with its rollups (`--db`, or built like bench_pages at `--rows`).
Spark gets the same rows as a parquet table (exported once beside the file, in batches, timestamps as UTC instants)
and builds its own rollups with the Spark job's refresh (`jobs.rollups`); its catalog is kept beside the file, so a
second run reuses both. For every page (April, the sidebar's default filters, hour grain) each engine runs the
page's queries (`PAGE_QUERIES`) twice: over the rollups (what the app runs when they are current), and with
`from_rollups=False` (what it runs when they are missing or behind, and what a warehouse without rollups scans on
every visit). Before timing, each query's two results are checked equal (that run is both contenders' warm-up);
then the median of the timed runs, the same number for both. The ratio raw/rollups is what the rollups save a page
load on that engine.

The refresh: five minutes of one day's requests again under new ids (a scheduled scoring run's batch), then the
engine's refresh, timed: DuckDB recomputes that date in one transaction (rolled back afterwards: the file is left
as it was); Spark, as its job does after a run (Delta: REPLACE WHERE; local parquet: the date's partitions
dropped and appended; the batch's files are removed afterwards and the date refreshed back).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import ibis
import pyarrow as pa
import pyarrow.parquet as pq

from bench.bench_pages import APRIL, TABLE, build, difference, timed
from bench.machine import describe
from data_access import rollups
from data_access.queries import Query, requests_table
from data_access.queries.pages import PAGE_QUERIES
from data_access.sources import DuckDBSource, Source, SparkSource

BATCH_DAY = date(2026, 4, 30)
BATCH_START = datetime(2026, 4, 30, 12, 0)
BATCH_MINUTES = 5
SKIPPED = ("Requests",)  # reads the requests table only: no rollup is involved
# Local Spark's session catalog has no information_schema (Unity Catalog has): the registry page's presence check
# is left out there (it reads a catalog view, the same cost with or without rollups).
NOT_ON_LOCAL_SPARK = ("rollup_presence",)
EXPORT_BATCH_ROWS = 200_000


def five_minute_batch(dialect: str) -> str:
    """Five minutes of one day's requests again, under new ids: the rows a scheduled scoring run appends."""
    t = requests_table(TABLE)
    end = BATCH_START + timedelta(minutes=BATCH_MINUTES)
    rows = t.filter(
        t.date == ibis.literal(BATCH_DAY),
        t.request_time >= ibis.literal(BATCH_START),
        t.request_time < ibis.literal(end),
    )
    return ibis.to_sql(rows.mutate(request_id=rows.request_id.concat(ibis.literal(":batch"))), dialect)


def page_sets(page: str, dialect: str) -> tuple[list[Query], list[Query]]:
    build_page = PAGE_QUERIES[page]
    fast, slow = build_page(TABLE, APRIL, "hour"), build_page(TABLE, APRIL, "hour", from_rollups=False)
    if dialect == "databricks":
        fast, slow = ([q for q in b if q.name not in NOT_ON_LOCAL_SPARK] for b in (fast, slow))
    return fast, slow


def check(source: Source, page: str) -> None:
    """The checking run (both contenders' warm-up): every query gives the same rows from rollups and raw table."""
    fast, slow = page_sets(page, source.dialect)
    for rolled, raw in zip(fast, slow, strict=True):
        why = difference(
            source.execute(rolled.sql(source.dialect)).to_pandas(),
            source.execute(raw.sql(source.dialect)).to_pandas(),
            1e-9,
        )
        if why:
            raise SystemExit(f"{source.dialect} / {page} / {rolled.name}: raw table differs from the rollups: {why}")


def run_page(source: Source, built: list[Query]) -> None:
    for query in built:
        source.execute(query.sql(source.dialect))


def time_pages(
    label: str, source: Source, pages: list[str], reps: int, check_first: bool
) -> dict[str, tuple[float, float]]:
    first = "the checking run, then" if check_first else "no checking run (no warm-up),"
    print(f"\n{label}: {first} the median of {reps} timed run(s) per contender; April, default filters")
    print(f"{'page':16} {'queries':>7} {'rollups s':>10} {'raw s':>9} {'raw/rollups':>11}")
    times = {}
    for page in pages:
        if check_first:
            check(source, page)
        fast, slow = page_sets(page, source.dialect)
        rolled = timed(lambda b=fast: run_page(source, b), 0, reps)
        raw = timed(lambda b=slow: run_page(source, b), 0, reps)
        times[page] = (rolled, raw)
        print(f"{page:16} {len(fast):7d} {rolled:10.3f} {raw:9.3f} {raw / rolled:10.1f}x", flush=True)
        same = [f.name for f, r in zip(fast, slow, strict=True) if f.sql(source.dialect) == r.sql(source.dialect)]
        if same:
            print(f"  same query in both contenders (no rollup involved): {', '.join(same)}")
    return times


def duckdb_refresh_cost(path: Path) -> tuple[int, float]:
    """Rows in the batch and seconds to refresh the rollups after it; the transaction is rolled back."""
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"INSERT INTO requests {five_minute_batch('duckdb')}").fetchall()
            added = con.execute("SELECT count(*) FROM requests WHERE ends_with(request_id, ':batch')").fetchall()[0][0]
            started = time.perf_counter()
            summary = rollups.refresh_rollups(con, TABLE, own_transaction=False)
            seconds = time.perf_counter() - started
            assert summary.dates == (BATCH_DAY,), summary
        finally:
            con.execute("ROLLBACK")
    return added, seconds


# --- Spark ------------------------------------------------------------------------------------------------


def export_parquet(path: Path, folder: Path) -> None:
    """The requests table as parquet for Spark, written in batches (timestamps as UTC instants, as the job writes)."""
    from jobs.spark_score import SPARK_REQUESTS_ARROW

    if (folder / "_SUCCESS").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with (
        duckdb.connect(str(path), read_only=True) as con,
        pq.ParquetWriter(folder / "part-0.parquet", SPARK_REQUESTS_ARROW) as writer,
    ):
        reader = con.sql("SELECT * FROM requests").to_arrow_reader(EXPORT_BATCH_ROWS)
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).cast(SPARK_REQUESTS_ARROW))
    (folder / "_SUCCESS").touch()
    print(f"exported the requests to parquet for Spark in {time.perf_counter() - started:.0f} s -> {folder}")


def spark_session(base: Path) -> Any:
    from jobs.spark_session import local_spark

    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 4g pyspark-shell")
    return local_spark("local[2]", warehouse_dir=base / "warehouse", metastore_dir=base / "metastore")


def spark_tables(spark: Any, folder: Path) -> float | None:
    """The requests table over the parquet, and its rollups: seconds for their full build (None: reused)."""
    from jobs.rollups import refresh_spark_rollups
    from jobs.spark_score import REQUESTS_DDL

    if not spark.catalog.tableExists(TABLE.table):
        spark.sql(f"CREATE TABLE `{TABLE.table}` ({REQUESTS_DDL}) USING parquet LOCATION '{folder.as_posix()}'")
    started = time.perf_counter()
    summary = refresh_spark_rollups(spark, TABLE)
    return time.perf_counter() - started if summary.rebuilt else None


def spark_refresh_cost(spark: Any, folder: Path) -> tuple[int, float]:
    """Rows in the batch and seconds for the Spark job's refresh after it; the batch is removed afterwards."""
    from jobs.rollups import refresh_spark_rollups

    before = set(folder.iterdir())
    spark.sql(f"INSERT INTO `{TABLE.table}` {five_minute_batch('databricks')}")
    added = spark.sql(f"SELECT count(*) AS n FROM `{TABLE.table}` WHERE endswith(request_id, ':batch')").first()["n"]
    started = time.perf_counter()
    summary = refresh_spark_rollups(spark, TABLE)
    seconds = time.perf_counter() - started
    assert summary.dates == (BATCH_DAY,), summary
    for file in set(folder.iterdir()) - before:
        file.unlink()
    spark.catalog.refreshTable(TABLE.table)
    refresh_spark_rollups(spark, TABLE)  # that date back as it was
    return int(added), seconds


def summary_line(label: str, times: dict[str, tuple[float, float]]) -> None:
    ratios = sorted(raw / rolled for rolled, raw in times.values())
    if ratios:
        print(f"{label}: raw/rollups from {ratios[0]:.1f}x to {ratios[-1]:.1f}x over {len(ratios)} pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="a DuckDB file of scored requests with rollups")
    parser.add_argument("--rows", type=int, default=10_000_000, help="build this many requests when --db is not given")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per contender and page on DuckDB (median)")
    parser.add_argument("--spark-reps", type=int, default=1, help="timed runs per contender and page on Spark")
    parser.add_argument(
        "--spark-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check rollups against the raw table on Spark first (doubles Spark's work; the tests check it too)",
    )
    parser.add_argument("--engines", default="duckdb,spark", help="comma-separated: duckdb, spark")
    parser.add_argument(
        "--refresh", action=argparse.BooleanOptionalAction, default=True, help="time the refresh after a batch"
    )
    parser.add_argument("--pages", default="", help="comma-separated page names (default: every analytics page)")
    parser.add_argument("--spark-dir", type=Path, default=None, help="Spark's copy and catalog (default: beside --db)")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/inference-explorer-bench/requests-{args.rows}.duckdb")
    if not path.exists():
        build(path, args.rows)
    engines = args.engines.split(",")
    pages = [p for p in PAGE_QUERIES if p not in SKIPPED and (not args.pages or p in args.pages.split(","))]
    print(f"machine: {describe()}")
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM requests").fetchall()[0][0]
    print(f"data: {rows:,} requests in {path}")
    results: list[Callable[[], None]] = []
    if "duckdb" in engines:
        duck = time_pages("DuckDB (DuckDB SQL)", DuckDBSource(path), pages, args.reps, True)
        if args.refresh:
            added, seconds = duckdb_refresh_cost(path)
            print(f"DuckDB refresh after a {BATCH_MINUTES}-minute batch ({added:,} rows, one date): {seconds:.2f} s")
        results.append(lambda: summary_line("DuckDB", duck))
    if "spark" in engines:
        base = args.spark_dir or path.with_suffix(".spark")
        export_parquet(path, base / "requests")
        spark = spark_session(base)
        try:
            build_s = spark_tables(spark, base / "requests")
            if build_s is not None:
                print(f"Spark rollups: full build {build_s:.1f} s")
            if args.refresh:
                added, seconds = spark_refresh_cost(spark, base / "requests")
                print(f"Spark refresh after a {BATCH_MINUTES}-minute batch ({added:,} rows, one date): {seconds:.2f} s")
            on_spark = time_pages(
                "local Spark (Databricks SQL)", SparkSource(spark), pages, args.spark_reps, args.spark_check
            )
            results.append(lambda: summary_line("local Spark", on_spark))
        finally:
            spark.stop()
    print()
    for line in results:
        line()
    print("raw/rollups = the page's queries over the requests table vs over the rollups, same engine, same SQL catalog")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores shared with others)")


if __name__ == "__main__":
    main()

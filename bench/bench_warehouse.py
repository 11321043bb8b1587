"""Every page over the rollups against the same page over the requests table, on DuckDB and on local Spark running
the Databricks-dialect SQL, in one run; and what keeping the rollups current costs after a five-minute batch.

    python -m bench.bench_warehouse [--db PATH | --rows N] [--engines duckdb,spark] [--warmup 1] [--reps 3]
                                    [--pages P,Q] [--results FILE] [--report FILE]

The data: a DuckDB file of scored demo requests (`--db`, or built like bench_pages at `--rows`); a read-only file
is copied beside Spark's data first (the DuckDB refresh writes, then rolls back), and its rollups are built when
missing (a new rollup layout). Spark gets the same rows as its scoring job keeps them: a parquet table partitioned
by date (exported once, timestamps as UTC instants, one file per date as after a compaction), with its rollups
built by the Spark job's refresh (`jobs.rollups`); its catalog is kept in `--spark-dir`, so later runs reuse both.

For every page (April, the sidebar's default filters, hour grain), and on each engine in turn, the page's queries
(`PAGE_QUERIES`) run as two contenders: over the rollups (what the app runs when they are current) and with
`from_rollups=False` (what it runs when they are missing or behind, and what a warehouse without rollups scans on
every visit), each run as the app runs a page (`sources.page_run`: on DuckDB the page's queries share one read
connection, opened at its first query and closed after its last). Each query's two results are first checked equal
(`--check`, untimed); then each contender gets the same `--warmup` untimed runs and the same `--reps` timed runs,
alternating rollups / raw so both see the same machine; the median of each, and of each query (printed, so a
page's cost can be traced to its queries). The ratio raw/rollups is what the rollups save a page load on that
engine.

A long run splits by page: `--pages` picks some, `--results FILE` appends each page's numbers (and the machine's
load) to a JSON-lines file, and `--report FILE` prints every page of every run in it as one table. Both engines
and both contenders of a page are always measured in the same run.

The refresh (`--refresh`): five minutes of one day's requests again under new ids (a scheduled scoring run's
batch), then the engine's refresh, timed: DuckDB recomputes that date in one transaction (rolled back afterwards:
the file is left as it was); Spark, as its job does after a run: the dates the batch wrote are recomputed from
their partitions (the batch's files are removed afterwards and the date refreshed back).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from bench.bench_pages import APRIL, TABLE, build, difference
from bench.machine import describe
from data_access import rollup_refresh
from data_access.queries import Bundle, Query, requests_table
from data_access.queries.pages import PAGE_QUERIES, page_statements
from data_access.sources import DuckDBSource, Source, SparkSource, page_run

BATCH_DAY = date(2026, 4, 30)
BATCH_START = datetime(2026, 4, 30, 12, 0)
BATCH_MINUTES = 5
SKIPPED = ("Requests",)  # reads the requests table only: no rollup is involved
EXPORT_BATCH_ROWS = 200_000
Statement = Query | Bundle
ENGINES = {"duckdb": "DuckDB (DuckDB SQL)", "spark": "local Spark (Databricks SQL)"}


def five_minute_batch(dialect: str, columns: list[str] | None = None) -> str:
    """Five minutes of one day's requests again, under new ids: the rows a scheduled scoring run appends
    (`columns`: in this order, for an INSERT by position)."""
    t = requests_table(TABLE)
    end = BATCH_START + timedelta(minutes=BATCH_MINUTES)
    rows = t.filter(
        t.date == ibis.literal(BATCH_DAY),
        t.request_time >= ibis.literal(BATCH_START),
        t.request_time < ibis.literal(end),
    )
    rows = rows.mutate(request_id=rows.request_id.concat(ibis.literal(":batch")))
    return ibis.to_sql(rows.select(*columns) if columns else rows, dialect)


def page_sets(page: str, dialect: str) -> tuple[list[Statement], list[Statement]]:
    """The statements of a page over the rollups and over the requests table, as the page sends them in this
    dialect (`page_statements`)."""
    build_page = PAGE_QUERIES[page]
    fast, slow = build_page(TABLE, APRIL, "hour"), build_page(TABLE, APRIL, "hour", from_rollups=False)
    return page_statements(page, fast, dialect), page_statements(page, slow, dialect, from_rollups=False)


def shared_queries(page: str, dialect: str) -> list[str]:
    """The page's queries that are the same SQL in both contenders (no rollup involved)."""
    build_page = PAGE_QUERIES[page]
    fast, slow = build_page(TABLE, APRIL, "hour"), build_page(TABLE, APRIL, "hour", from_rollups=False)
    return [f.name for f, r in zip(fast, slow, strict=True) if f.sql(dialect) == r.sql(dialect)]


def statement_name(statement: Statement) -> str:
    return "+".join(q.name for q in statement.parts) if isinstance(statement, Bundle) else statement.name


def figures(source: Source, statements: list[Statement]) -> list[tuple[str, pd.DataFrame]]:
    """Each query's rows, in the page's order, from its statement (a bundle's cut into its parts)."""
    out = []
    for statement in statements:
        table = source.execute(statement.sql(source.dialect))
        parts = statement.split(table) if isinstance(statement, Bundle) else [table]
        queries = statement.parts if isinstance(statement, Bundle) else (statement,)
        out += [(query.name, part.to_pandas()) for query, part in zip(queries, parts, strict=True)]
    return out


def check(source: Source, page: str) -> None:
    """Every query gives the same rows from rollups and raw table (untimed), each read from the statement the
    page sends it in."""
    fast, slow = page_sets(page, source.dialect)
    for (name, rolled), (raw_name, raw) in zip(figures(source, fast), figures(source, slow), strict=True):
        assert name == raw_name, (name, raw_name)
        why = difference(rolled, raw, 1e-9)
        if why:
            raise SystemExit(f"{source.dialect} / {page} / {name}: raw table differs from the rollups: {why}")


def run_page(source: Source, built: list[Statement]) -> list[float]:
    """Seconds for each of a page's statements, run as the app runs a page (`page_run`: on DuckDB one read
    connection, whose opening the first statement's time includes)."""
    seconds = []
    with page_run(source):
        for statement in built:
            started = time.perf_counter()
            source.execute(statement.sql(source.dialect))
            seconds.append(time.perf_counter() - started)
    return seconds


def time_page(source: Source, page: str, warmup: int, reps: int) -> tuple[float, float, list[list[Any]]]:
    """Median seconds of the page over the rollups and over the raw table: the same warm-up and repetitions for
    both, alternating (rollups, raw, rollups, raw, ...); and per statement, its median seconds in each contender
    (`[contender, name, seconds]`, from the same timed runs)."""
    fast, slow = page_sets(page, source.dialect)
    for _ in range(warmup):
        run_page(source, fast)
        run_page(source, slow)
    rolled, raw = [], []
    for _ in range(reps):
        rolled.append(run_page(source, fast))
        raw.append(run_page(source, slow))
    per_statement = [
        [contender, statement_name(statement), statistics.median(r[i] for r in runs)]
        for contender, statements, runs in (("rollups", fast, rolled), ("raw", slow, raw))
        for i, statement in enumerate(statements)
    ]
    return statistics.median(map(sum, rolled)), statistics.median(map(sum, raw)), per_statement


# --- DuckDB -----------------------------------------------------------------------------------------------


def writable_duckdb(path: Path, spark_dir: Path) -> Path:
    """The DuckDB file itself, or a copy beside Spark's data when it is read-only (the refresh writes)."""
    if path.stat().st_mode & 0o222:  # the mode, not os.access: root may write anything
        return path
    copy = spark_dir / path.name
    if not copy.exists() or copy.stat().st_mtime < path.stat().st_mtime:
        spark_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        print(f"copied the read-only {path} to {copy}")
    return copy


def duckdb_rollups(path: Path) -> None:
    """The rollups in the file's current layout (built when a new layout left them missing)."""
    with duckdb.connect(str(path)) as con:
        started = time.perf_counter()
        summary = rollup_refresh.refresh_rollups(con, TABLE)
    if summary.rebuilt or summary.dates:
        print(f"DuckDB rollups: {summary.line()} in {time.perf_counter() - started:.1f} s")


def duckdb_refresh_cost(path: Path) -> tuple[int, float]:
    """Rows in the batch and seconds to refresh the rollups after it; the transaction is rolled back."""
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"INSERT INTO requests {five_minute_batch('duckdb')}").fetchall()
            added = con.execute("SELECT count(*) FROM requests WHERE ends_with(request_id, ':batch')").fetchall()[0][0]
            started = time.perf_counter()
            summary = rollup_refresh.refresh_rollups(con, TABLE, own_transaction=False)
            seconds = time.perf_counter() - started
            assert summary.dates == (BATCH_DAY,), summary
        finally:
            con.execute("ROLLBACK")
    return added, seconds


# --- Spark ------------------------------------------------------------------------------------------------


def export_parquet(path: Path, folder: Path) -> None:
    """The requests table as parquet partitioned by date (`date=YYYY-MM-DD/`, one file per date, as after a
    compaction), timestamps as UTC instants as the Spark job writes them; written by Arrow in batches."""
    from jobs.spark_tables import SPARK_REQUESTS_ARROW

    if (folder / "_SUCCESS").exists():
        return
    started = time.perf_counter()
    partitioning = ds.partitioning(pa.schema([SPARK_REQUESTS_ARROW.field("date")]), flavor="hive")
    with duckdb.connect(str(path), read_only=True) as con:
        reader = con.sql("SELECT * FROM requests").to_arrow_reader(EXPORT_BATCH_ROWS)
        batches = (b.cast(SPARK_REQUESTS_ARROW) for b in reader)
        ds.write_dataset(
            pa.RecordBatchReader.from_batches(SPARK_REQUESTS_ARROW, batches),
            folder,
            format="parquet",
            partitioning=partitioning,
            existing_data_behavior="delete_matching",
            min_rows_per_group=EXPORT_BATCH_ROWS // 2,
            max_rows_per_group=EXPORT_BATCH_ROWS,
        )
    (folder / "_SUCCESS").touch()
    print(f"exported the requests to parquet, partitioned by date, in {time.perf_counter() - started:.0f} s")


def spark_session(base: Path) -> Any:
    from jobs.spark_session import local_spark

    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 4g pyspark-shell")
    return local_spark("local[2]", warehouse_dir=base / "warehouse", metastore_dir=base / "metastore")


def spark_tables(spark: Any, duckdb_path: Path, base: Path) -> None:
    """The requests table as the Spark job keeps it (partitioned by date), and its rollups (built when missing)."""
    from jobs.rollups import refresh_spark_rollups
    from jobs.spark_tables import PARTITIONED_BY_DATE, REQUESTS_DDL

    if not spark.catalog.tableExists(TABLE.table):
        folder = base / "requests"
        export_parquet(duckdb_path, folder)
        spark.sql(
            f"CREATE TABLE `{TABLE.table}` ({REQUESTS_DDL}) USING parquet {PARTITIONED_BY_DATE} "
            f"LOCATION '{folder.as_posix()}'"
        )
        spark.sql(f"ALTER TABLE `{TABLE.table}` RECOVER PARTITIONS")
    started = time.perf_counter()
    summary = refresh_spark_rollups(spark, TABLE)
    if summary.rebuilt or summary.dates:
        print(f"Spark rollups: {summary.line()} in {time.perf_counter() - started:.1f} s")


def spark_refresh_cost(spark: Any, table_folder: Path) -> tuple[int, float]:
    """Rows in the batch and seconds for the Spark job's refresh after it (the dates the batch wrote, as the job
    passes them); the batch's files are removed afterwards and that date refreshed back."""
    from jobs.rollups import refresh_spark_rollups

    folder = table_folder / f"date={BATCH_DAY.isoformat()}"
    before = set(folder.iterdir())
    columns = spark.table(TABLE.table).columns
    spark.sql(f"INSERT INTO `{TABLE.table}` {five_minute_batch('databricks', columns)}")
    added = spark.sql(f"SELECT count(*) AS n FROM `{TABLE.table}` WHERE endswith(request_id, ':batch')").first()["n"]
    started = time.perf_counter()
    summary = refresh_spark_rollups(spark, TABLE, [BATCH_DAY])
    seconds = time.perf_counter() - started
    assert summary.dates == (BATCH_DAY,), summary
    for file in set(folder.iterdir()) - before:
        file.unlink()
    spark.catalog.refreshTable(TABLE.table)
    refresh_spark_rollups(spark, TABLE, [BATCH_DAY])  # that date back as it was
    return int(added), seconds


# --- Results ----------------------------------------------------------------------------------------------


def report(records: list[dict[str, Any]]) -> None:
    """One table: each page on each engine, the ratio raw/rollups; the lowest ratio per engine; the machines."""
    latest = {(r["engine"], r["page"]): r for r in records if "page" in r}
    pages = list(dict.fromkeys(r["page"] for r in records if "page" in r))
    engines = [e for e in ENGINES if any(key[0] == e for key in latest)]
    print(f"\n{'page':16}" + "".join(f" | {e + ' rollups s':>16} {'raw s':>8} {'raw/rollups':>11}" for e in engines))
    for page in pages:
        cells = []
        for engine in engines:
            r = latest.get((engine, page))
            cells.append(
                f" | {r['rollups_s']:16.3f} {r['raw_s']:8.3f} {r['raw_s'] / r['rollups_s']:10.1f}x" if r else " |"
            )
        print(f"{page:16}" + "".join(cells))
    for engine in engines:
        ratios = sorted(r["raw_s"] / r["rollups_s"] for (e, _), r in latest.items() if e == engine)
        print(f"{ENGINES[engine]}: raw/rollups from {ratios[0]:.1f}x to {ratios[-1]:.1f}x over {len(ratios)} pages")
    for (engine, page), r in latest.items():
        for contender in ("rollups", "raw"):
            cells = ", ".join(f"{name} {s:.3f}" for c, name, s in r.get("statements", []) if c == contender)
            if cells:
                print(f"{ENGINES[engine]}, {page}, {contender}, per statement (s, medians): {cells}")
    for r in records:
        if "refresh_s" in r:
            print(f"{ENGINES[r['engine']]}: refresh after a {BATCH_MINUTES}-minute batch ({r['rows']:,} rows, one date)"
                  f": {r['refresh_s']:.2f} s")  # fmt: skip
    runs = list(dict.fromkeys((r["run"], r["machine"], r["load_after"]) for r in records))
    for run, machine, load in runs:
        print(f"run {run}: {machine}; load average after {load}")
    print("raw/rollups = a page's queries over the requests table vs over the rollups, same engine, same warm-up and")
    print("repetitions (median), same SQL catalog (PAGE_QUERIES); DuckDB runs DuckDB SQL, Spark the Databricks SQL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="a DuckDB file of scored requests")
    parser.add_argument("--rows", type=int, default=10_000_000, help="build this many requests when --db is not given")
    parser.add_argument("--engines", default="duckdb,spark", help="comma-separated: duckdb, spark")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: every analytics page)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per contender, page and engine")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per contender and page (median; 0: check only)")
    parser.add_argument(
        "--check", action=argparse.BooleanOptionalAction, default=True, help="check rollups equal the raw table"
    )
    parser.add_argument(
        "--refresh", action=argparse.BooleanOptionalAction, default=True, help="time the refresh after a batch"
    )
    parser.add_argument(
        "--spark-dir", type=Path, default=None, help="Spark's tables and catalog (default: beside --db)"
    )
    parser.add_argument("--results", type=Path, default=None, help="append each page's numbers to this JSON-lines file")
    parser.add_argument("--report", type=Path, default=None, help="print the table of a --results file and stop")
    parser.add_argument("--prepare", action="store_true", help="copy or export the data, build rollups, then stop")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for line in args.report.read_text().splitlines() if line.strip()])
        return
    path = args.db or Path(f"/tmp/inference-explorer-bench/requests-{args.rows}.duckdb")
    if not path.exists():
        build(path, args.rows)
    base = args.spark_dir or path.with_suffix(".spark")
    engines = [e for e in ENGINES if e in args.engines.split(",")]
    pages = [p for p in PAGE_QUERIES if p not in SKIPPED and (not args.pages or p in args.pages.split(","))]
    run = datetime.now(UTC).strftime("%H:%M:%S UTC")
    machine = describe()
    print(f"machine: {machine}")
    path = writable_duckdb(path, base)
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM requests").fetchall()[0][0]
    print(f"data: {rows:,} requests in {path}")
    records: list[dict[str, Any]] = []
    sources: dict[str, Source] = {}
    spark = None
    if "duckdb" in engines:
        duckdb_rollups(path)
        sources["duckdb"] = DuckDBSource(path)
    if "spark" in engines:
        spark = spark_session(base)
        spark_tables(spark, path, base)
        sources["spark"] = SparkSource(spark)
    if args.prepare:
        pages, args.refresh = [], False
    try:
        print(f"\nper page and engine: {'a check, then ' if args.check else ''}{args.warmup} untimed and "
              f"{args.reps} timed run(s) per contender (median); April, default filters, hour grain")  # fmt: skip
        for page in pages:
            for engine, source in sources.items():
                if args.check:
                    check(source, page)
                    print(f"{page:16} {engine:7} rollups and raw table agree", flush=True)
                if not args.reps:
                    continue
                rolled, raw, per_query = time_page(source, page, args.warmup, args.reps)
                records.append(
                    {"engine": engine, "page": page, "rollups_s": rolled, "raw_s": raw, "statements": per_query}
                )
                print(
                    f"{page:16} {engine:7} rollups {rolled:8.3f} s  raw {raw:8.3f} s  {raw / rolled:6.1f}x", flush=True
                )
                for contender, name, seconds in per_query:
                    print(f"  {contender:7} {seconds:8.3f} s  {name}")
                same = shared_queries(page, source.dialect)
                if same:
                    print(f"  same query in both contenders (no rollup involved): {', '.join(same)}")
        if args.refresh:
            refreshes: dict[str, Callable[[], tuple[int, float]]] = {
                "duckdb": lambda: duckdb_refresh_cost(path),
                "spark": lambda: spark_refresh_cost(spark, base / "requests"),
            }
            for engine in sources:
                added, seconds = refreshes[engine]()
                records.append({"engine": engine, "rows": added, "refresh_s": seconds})
    finally:
        if spark is not None:
            spark.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    for record in records:
        record |= {"run": run, "machine": machine, "load_after": load, "rows_in_table": rows}
    if args.results:
        with args.results.open("a") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)
    report(records)


if __name__ == "__main__":
    main()

"""Keep the rollups the pages read current, on every engine: `python -m jobs.rollups`.

    python -m jobs.rollups --duckdb data/inference.duckdb   # the embedded file (the scoring job does it too)
    python -m jobs.rollups --databricks                     # SQL only, through the configured SQL warehouse

The refresh rule lives in `data_access.rollup_refresh.refresh` (build when missing, else recompute the dates whose
request counts changed); this module holds the command and the Spark engine's writer, which the Spark scoring
job runs after each run. On Databricks the rollups are Delta tables beside the requests table, written with
`CREATE OR REPLACE TABLE ... AS` and `INSERT INTO ... REPLACE WHERE date IN (...)`: one atomic commit per table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb

from data_access.config import TableName, settings_for_command
from data_access.errors import DataAccessError
from data_access.rollup_refresh import DeltaRollups, RefreshSummary, on_dates, refresh, refresh_rollups
from data_access.rollup_status import rollup_tables
from data_access.sources import DatabricksSQLSource, SparkSource, connect_duckdb


class SparkRollups(DeltaRollups):
    """The rollups on a Spark session: Delta tables (Databricks) as `DeltaRollups` writes them; elsewhere (local
    Spark without Delta, whose parquet tables support neither REPLACE WHERE nor DELETE) one parquet file per
    table, unpartitioned: a page then opens one file, where a table partitioned by date cost a file listing and a
    metastore partition lookup per date on every query. A refresh writes the kept dates and the recomputed ones
    into a sibling table and swaps it in. That is not atomic, but a reader in between finds a rollup missing (or
    counts that differ from the requests table), so the pages read the raw table meanwhile.

    The tables are written `concurrent_writes` at a time, each statement from its own thread: Spark runs the jobs
    side by side, so one table's single-task write (or a small date's few tasks) leaves no core idle."""

    concurrent_writes = 3

    def __init__(self, spark: Any) -> None:
        source = SparkSource(spark)
        super().__init__(source.execute, self._tables_present)
        self.spark = spark

    def _tables_present(self, requests: TableName) -> set[str]:
        return {name.table for name in rollup_tables(requests) if self.spark.catalog.tableExists(str(name))}

    def _delta(self, target: TableName) -> bool:
        if self.spark.catalog.tableExists(str(target)):
            from jobs.spark_tables import table_provider

            return table_provider(self.spark, target) == "delta"
        return self.spark.conf.get("spark.sql.sources.default", "parquet").lower() == "delta"

    def create(self, target: TableName, select_sql: str) -> None:
        if self._delta(target):
            super().create(target, select_sql)
            return
        self.execute(f"DROP TABLE IF EXISTS {target.sql(self.dialect)}")
        self._write_one_file(target, select_sql)

    def replace_dates(self, target: TableName, select_sql: str, dates: Sequence[date]) -> None:
        if self._delta(target):
            super().replace_dates(target, select_sql, dates)
            return
        table = target.sql(self.dialect)
        columns = ", ".join(f"`{c}`" for c in self.spark.table(str(target)).columns)
        kept = f"SELECT {columns} FROM {table} WHERE `date` IS NULL OR NOT ({on_dates(dates).sql(self.dialect)})"
        fresh = f"SELECT {columns} FROM ({select_sql}) AS fresh"
        swap = replace(target, table=f"{target.table}__swap")
        self.execute(f"DROP TABLE IF EXISTS {swap.sql(self.dialect)}")
        self._write_one_file(swap, f"{kept} UNION ALL {fresh}")
        self.execute(f"DROP TABLE {table}")
        self._clear_leftover(target)
        self.execute(f"ALTER TABLE {swap.sql(self.dialect)} RENAME TO {table}")

    def _write_one_file(self, target: TableName, select_sql: str) -> None:
        self._clear_leftover(target)
        # REPARTITION(1) shuffles the (small) result into one task: the build above it stays parallel.
        self.execute(
            f"CREATE TABLE {target.sql(self.dialect)} USING parquet AS "
            f"SELECT /*+ REPARTITION(1) */ * FROM ({select_sql}) AS built"
        )

    def _clear_leftover(self, target: TableName) -> None:
        """A write killed midway (CREATE TABLE ... AS) leaves its directory behind with no table in the catalog,
        and the next CREATE TABLE there fails (LOCATION_ALREADY_EXISTS). Removed only for one of our rollup or swap
        tables (the only targets here), only when the catalog has no such table, and only in its managed
        location under the local warehouse: never a path the catalog or anyone else points at."""
        if self.spark.catalog.tableExists(str(target)):
            return
        directory = self._managed_directory(target)
        if directory is not None and directory.is_dir():
            shutil.rmtree(directory)

    def _managed_directory(self, target: TableName) -> Path | None:
        """Where the catalog puts a managed table of that name on the local file system, if under the warehouse."""
        warehouse = urlparse(self.spark.conf.get("spark.sql.warehouse.dir"))
        schema = self.spark.catalog.getDatabase(target.schema or self.spark.catalog.currentDatabase())
        location = urlparse(schema.locationUri)
        if {warehouse.scheme, location.scheme} - {"", "file"}:
            return None
        directory = Path(location.path).resolve() / target.table.lower()
        return directory if Path(warehouse.path).resolve() in directory.parents else None


def refresh_spark_rollups(spark: Any, requests: TableName, dates: Sequence[date] | None = None) -> RefreshSummary:
    """Refresh the rollups of a requests table in the Spark catalog (the Spark scoring job runs this).

    `dates`: the dates a run wrote; only their rows are read (one partition each of a table partitioned by date),
    instead of counting every date of the table to find the changed ones. If the rollups still disagree with the
    table afterwards (the counts the refresh verified: a date changed by another writer, or an earlier refresh
    that did not finish), the changed dates are looked for in the whole table after all."""
    store = SparkRollups(spark)
    summary = refresh(store, requests, dates)
    _refresh_catalog(spark, requests)
    if dates is not None and not summary.rebuilt and not summary.current:
        more = refresh(store, requests)
        _refresh_catalog(spark, requests)
        summary = replace(more, dates=more.dates if more.rebuilt else tuple(sorted({*summary.dates, *more.dates})))
    return summary


def _refresh_catalog(spark: Any, requests: TableName) -> None:
    for name in rollup_tables(requests):
        spark.catalog.refreshTable(str(name))


def refresh_warehouse_rollups(
    source: DatabricksSQLSource, requests: TableName, rebuild: bool = False
) -> RefreshSummary:
    """Refresh the Delta rollups through a SQL warehouse: for teams with a warehouse and no cluster."""
    return refresh(DeltaRollups(source.execute), requests, rebuild=rebuild)


def main(argv: list[str] | None = None) -> int:
    settings = settings_for_command()
    parser = argparse.ArgumentParser(
        prog="python -m jobs.rollups",
        description="Build or update the rollups (summary tables) of a requests table that the pages read.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--duckdb", type=Path, default=None, help=f"the embedded DuckDB file (default: {settings.duckdb_path})"
    )
    where.add_argument(
        "--databricks",
        action="store_true",
        help="the Delta tables beside the requests table, through the configured Databricks SQL warehouse",
    )
    parser.add_argument(
        "--requests-table", default=str(settings.requests_table), help="requests table name (default: %(default)s)"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild from scratch instead of updating")
    args = parser.parse_args(argv)
    try:
        requests = TableName.parse(args.requests_table)
    except DataAccessError as error:
        print(f"error: --requests-table: {error.message} {error.hint}", file=sys.stderr)
        return 2
    try:
        if args.databricks:
            if settings.databricks is None:
                print(
                    "error: --databricks needs a Databricks SQL warehouse: set the [databricks] section of "
                    ".streamlit/secrets.toml or DATABRICKS_HOST, DATABRICKS_WAREHOUSE_ID and a token or OAuth client",
                    file=sys.stderr,
                )
                return 2
            source = DatabricksSQLSource(
                settings.databricks, timeout_s=settings.query_timeout_s, connect_timeout_s=settings.connect_timeout_s
            )
            try:
                summary = refresh_warehouse_rollups(source, requests, args.rebuild)
            finally:
                source.close()
        else:
            path = args.duckdb or settings.duckdb_path
            if not path.exists():
                print(f"error: {path} does not exist", file=sys.stderr)
                return 2
            with connect_duckdb(path, read_only=False, wait_s=0) as con:
                summary = refresh_rollups(con, requests, rebuild=args.rebuild)
    except DataAccessError as error:
        print(f"error: {error.message} {error.hint or ''}".rstrip(), file=sys.stderr)
        return 1
    except duckdb.Error as error:  # e.g. the file is locked by the scoring job, or has no requests table
        print(f"error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())

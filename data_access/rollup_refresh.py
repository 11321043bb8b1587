"""Keeping the rollups (`data_access.rollups`) current on any engine: `refresh` decides what to write, a
`RollupStore` writes it: the embedded file (`refresh_rollups`, after each scoring run), Delta tables beside the
requests table on Databricks (`DeltaRollups`: a SQL warehouse, or the Spark scoring job after each run,
`jobs.rollups`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import duckdb
import ibis
import pyarrow as pa
import sqlglot.expressions as sge

from data_access.config import TableName
from data_access.queries import requests_table
from data_access.rollup_status import (
    rollup_counts,
    rollup_freshness,
    rollup_presence,
    rollups_usable,
    stale_dates,
    state_name,
)
from data_access.rollups import rollup_builds
from data_access.sources import transaction


def on_dates(dates: Sequence[date]) -> sge.Expression:
    """`date IN (...)` with the dates as typed literals, built by the compiler (pasteable, nothing formatted in)."""
    days = [sge.cast(sge.Literal.string(d.isoformat()), sge.DataType.build("date")) for d in dates]
    return sge.column("date", quoted=True).isin(*days)


class RollupStore(Protocol):
    """Where an engine keeps the rollups, and how it writes them; `refresh` decides what to write."""

    dialect: str
    concurrent_writes: int  # rollup tables written at once (each its own statement)

    def rows(self, sql: str) -> list[dict[str, Any]]: ...

    def present(self, requests: TableName) -> set[str]:
        """The names of the rollup tables (of `rollup_tables`) that exist."""
        ...

    def create(self, target: TableName, select_sql: str) -> None:
        """(Re)create the table from the query."""
        ...

    def replace_dates(self, target: TableName, select_sql: str, dates: Sequence[date]) -> None:
        """Replace the table's rows of these dates by the query's rows (which hold only these dates)."""
        ...

    def drop(self, target: TableName) -> None:
        """Drop the table if it exists."""
        ...


@dataclass(frozen=True)
class RefreshSummary:
    rebuilt: bool  # every rollup built from scratch
    dates: tuple[date, ...]  # dates recomputed otherwise
    current: bool = True  # the counts the refresh verified agree (`rollups_usable`): the pages read the rollups

    def line(self) -> str:
        done = "rollups rebuilt" if self.rebuilt else f"rollups updated for {len(self.dates)} date(s)"
        return done if self.current else f"{done}, but they disagree with the requests table: run it again"


def refresh(
    store: RollupStore, requests: TableName, dates: Iterable[date] | None = None, rebuild: bool = False
) -> RefreshSummary:
    """Bring the rollups up to date on any engine: build them when missing (or rebuild=True), else recompute
    only the dates whose request counts differ between the table and the minute rollup (or the dates given);
    then count what they hold and write those counts, last, to the state table the pages read
    (`rollup_freshness`). Rollups that disagree with no date to blame (a refresh that stopped half-way) are
    rebuilt.

    The one home of the refresh rule; each engine's `RollupStore` writes it its own way (DuckDB: DELETE and
    INSERT in one transaction; Delta: `INSERT INTO ... REPLACE WHERE`, one atomic commit per table). The state
    table is dropped before the first rollup is written and written after the last, so while a refresh runs,
    or after one stopped half-way, the pages read the requests table."""
    raw = requests_table(requests)
    builds = rollup_builds(requests)
    present = store.present(requests)
    missing = {name.table for name, _ in builds} - present
    chosen: list[date | None] = []
    if not (rebuild or missing):
        if dates is None:
            dates = [row["date"] for row in store.rows(stale_dates(requests).sql(store.dialect))]
        chosen = sorted(set(dates), key=lambda d: (d is None, d))
    rebuilt = bool(rebuild or missing or None in chosen)  # rows without a date cannot be replaced date by date
    days = () if rebuilt else tuple(d for d in chosen if d is not None)
    if not (rebuilt or days):
        if state_name(requests).table in present and _fresh(store, requests):
            return RefreshSummary(False, ())  # nothing changed since the last complete refresh
        if _verify(store, requests):
            return RefreshSummary(False, ())  # complete, but its state was not written (a refresh stopped there)
        rebuilt = True
    store.drop(state_name(requests))
    rows = raw if rebuilt else raw.filter(raw.date.isin([ibis.literal(d) for d in days]))
    writes = [(name, ibis.to_sql(build(rows), store.dialect)) for name, build in builds]
    if rebuilt:
        _each(store, lambda write: store.create(*write), writes)
    else:
        _each(store, lambda write: store.replace_dates(*write, days), writes)
    return RefreshSummary(rebuilt, days, _verify(store, requests))


def _each(
    store: RollupStore, write: Callable[[tuple[TableName, str]], None], writes: list[tuple[TableName, str]]
) -> None:
    """Run the writes, `store.concurrent_writes` at a time; the first failure is raised once all have stopped (the
    state table is gone by then, so whatever they left reads as stale)."""
    if store.concurrent_writes <= 1:
        for one in writes:
            write(one)
        return
    with ThreadPoolExecutor(store.concurrent_writes, thread_name_prefix="rollup-write") as pool:
        for done in [pool.submit(write, one) for one in writes]:
            done.result()


def _verify(store: RollupStore, requests: TableName) -> bool:
    """Count what the rollups hold into the state table (`rollup_counts`), then whether the pages may read them."""
    store.create(state_name(requests), rollup_counts(requests).sql(store.dialect))
    return _fresh(store, requests)


def _fresh(store: RollupStore, requests: TableName) -> bool:
    return rollups_usable(store.rows(rollup_freshness(requests).sql(store.dialect)))


class DuckDBRollups:
    """The rollups in an embedded DuckDB file (the caller holds the transaction)."""

    dialect = "duckdb"
    concurrent_writes = 1  # one connection, one transaction; DuckDB runs each statement on every core

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.con.sql(sql).to_arrow_table().to_pylist()

    def present(self, requests: TableName) -> set[str]:
        return {row["table_name"] for row in self.rows(rollup_presence(requests).sql(self.dialect))}

    def create(self, target: TableName, select_sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {target.sql(self.dialect)} AS {select_sql}")

    def replace_dates(self, target: TableName, select_sql: str, dates: Sequence[date]) -> None:
        table = target.sql(self.dialect)
        self.con.execute(f"DELETE FROM {table} WHERE {on_dates(dates).sql(self.dialect)}")
        self.con.execute(f"INSERT INTO {table} {select_sql}")

    def drop(self, target: TableName) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {target.sql(self.dialect)}")


class DeltaRollups:
    """The rollups as Delta tables beside the requests table, written by SQL alone: a SQL warehouse through
    databricks-sql-connector, or a Spark session on Databricks. A table is created in the catalog's default
    format (Delta on Databricks); a refresh replaces the changed dates with `INSERT INTO ... REPLACE WHERE`,
    one atomic Delta commit per table, so a reader sees each table before or after, never half."""

    dialect = "databricks"
    concurrent_writes = 1  # one warehouse session, statements in order

    def __init__(self, execute: Callable[[str], pa.Table], present: Callable[[TableName], set[str]] | None = None):
        self.execute = execute
        self._present = present

    def rows(self, sql: str) -> list[dict[str, Any]]:
        return self.execute(sql).to_pylist()

    def present(self, requests: TableName) -> set[str]:
        if self._present is not None:
            return self._present(requests)
        return {row["table_name"] for row in self.rows(rollup_presence(requests).sql(self.dialect))}

    def create(self, target: TableName, select_sql: str) -> None:
        self.execute(f"CREATE OR REPLACE TABLE {target.sql(self.dialect)} AS {select_sql}")

    def replace_dates(self, target: TableName, select_sql: str, dates: Sequence[date]) -> None:
        self.execute(replace_where(target, select_sql, dates))

    def drop(self, target: TableName) -> None:
        self.execute(f"DROP TABLE IF EXISTS {target.sql(self.dialect)}")


def replace_where(target: TableName, select_sql: str, dates: Sequence[date]) -> str:
    """Delta's atomic replacement of the given dates: `INSERT INTO t REPLACE WHERE date IN (...) SELECT ...`."""
    table, where = target.sql("databricks"), on_dates(dates).sql("databricks")
    return f"INSERT INTO {table} REPLACE WHERE {where} {select_sql}"


def refresh_rollups(
    con: duckdb.DuckDBPyConnection,
    requests: TableName,
    dates: Iterable[date] | None = None,
    *,
    rebuild: bool = False,
    own_transaction: bool = True,
) -> RefreshSummary:
    """Bring the rollups of an embedded requests table up to date, atomically (see `refresh`).

    Set own_transaction=False when the caller already holds a transaction (e.g. inside an append).
    """
    with transaction(con) if own_transaction else contextlib.nullcontext():
        return refresh(DuckDBRollups(con), requests, dates, rebuild)

"""The two rollups of the requests table that keep the pages fast at scale: layout, DDL, refresh and status.

Every page number is an aggregate computed in the engine. Two rollups hold the aggregates the pages need, in the
spirit of Lakehouse Monitoring's profile metrics table:

- the minute profile: per minute x date x endpoint x version x scorers, request and error counts, token sums
  and, for every metric, count, sum, sum of squares, min and max;
- the histograms: per hour x date x endpoint x version x metric x scorer x bin, count, sum, min and max, on fine
  bins (`core.catalog`: 1% wide in relative terms for skewed positive metrics, 0.001 for probabilities, 0.05 for
  grades).

Both are additive over their keys, so every sidebar filter (dates, versions, endpoints) and every grain from
a minute to a month is an aggregate of a rollup. Page queries (`data_access.queries`) read them through
`minute_rows` / `histogram_rows`, which with `from_rollups=False` build the same rows from the raw table by the
same Ibis expressions: identical numbers, only slower. On the embedded engine pages check `rollup_freshness`
and fall back when the rollups are missing or behind (and always on a warehouse, which scans the table itself).

Keep the rollups current with `refresh_rollups(con, requests_table)` after each scoring run (it rebuilds the
dates whose request counts differ), or `python -m data_access.rollups --duckdb PATH` by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path

import duckdb
import ibis
import ibis.expr.types as ir
import sqlglot.expressions as sge

from core.catalog import METRIC_SCORER_COLUMN, METRICS, NONPOSITIVE_BIN, Binning
from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.queries import Filters, Query, filtered, is_error, requests_table, sum_counts

ROLLUP_VERSION = 2  # bump when a rollup's layout or binning changes: old tables then read as missing
SCORER_COLUMNS = tuple(dict.fromkeys(METRIC_SCORER_COLUMN.values()))  # every scorer column, once


def bin_index(binning: Binning, x: ir.FloatingValue) -> ir.IntegerValue:
    """The engine-side bin of a value under a catalog binning (see `core.catalog.Binning`)."""
    if binning.kind == "linear":
        return (x * binning.scale).floor()
    return ibis.cases((x > 0, (x.ln() * binning.scale).floor()), else_=ibis.literal(NONPOSITIVE_BIN, "int64"))


def scorer_of(t: ir.Table, metric: str) -> ir.StringValue:
    """The column naming the scorer of a metric, or a null string for operational metrics."""
    column = METRIC_SCORER_COLUMN.get(metric)
    return (t[column] if column else ibis.null("string")).cast("string").name("scorer")


# --- Rollups ---------------------------------------------------------------------------------------------


def minute_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__minute_v{ROLLUP_VERSION}")


def histogram_rollup_name(requests: TableName) -> TableName:
    return replace(requests, table=f"{requests.table}__hist_v{ROLLUP_VERSION}")


def minute_profile(t: ir.Table) -> ir.Table:
    """Per minute x date x endpoint x version x scorers: counts, token sums and every metric's moments."""
    measures: dict[str, ir.Value] = {
        "requests": t.count(),
        "errors": t.count(where=is_error(t)),
        "parse_errors": t.count(where=t.parse_error.notnull()),
        "total_tokens_sum": t.total_tokens.cast("float64").sum(),
    }
    for metric in METRICS:
        x = t[metric].cast("float64")
        measures |= {
            f"{metric}__n": x.count(),
            f"{metric}__sum": x.sum(),
            f"{metric}__sumsq": (x * x).sum(),
            f"{metric}__min": x.min(),
            f"{metric}__max": x.max(),
        }
    keys = [t.request_time.truncate("m").name("bucket"), t.date, t.endpoint_name, t.model_version]
    return t.group_by([*keys, *(t[c] for c in SCORER_COLUMNS)]).agg(**measures)


def histograms(t: ir.Table) -> ir.Table:
    """Per hour x date x endpoint x version x metric x scorer x fine bin: count, sum, min and max of the values."""
    parts = []
    for metric, info in METRICS.items():
        x = t[metric].cast("float64")
        keys = [
            t.request_time.truncate("h").name("hour"),
            t.date,
            t.endpoint_name,
            t.model_version,
            scorer_of(t, metric),
            bin_index(info.binning, x).name("bin"),
        ]
        part = (
            t.filter(x.notnull())
            .group_by(keys)
            .agg(n=x.count(), total=x.sum(), lo=x.min(), hi=x.max())
            .mutate(metric=ibis.literal(metric))
        )
        parts.append(part.select(*HISTOGRAM_COLUMNS))
    return ibis.union(*parts, distinct=False)


HISTOGRAM_COLUMNS = (
    "hour",
    "date",
    "endpoint_name",
    "model_version",
    "metric",
    "scorer",
    "bin",
    "n",
    "total",
    "lo",
    "hi",
)


def minute_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(ibis.table(_minute_schema(), **_location(minute_rollup_name(table))), filters)
    return minute_profile(filtered(requests_table(table), filters))


def histogram_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(ibis.table(_histogram_schema(), **_location(histogram_rollup_name(table))), filters)
    return histograms(filtered(requests_table(table), filters))


def _location(name: TableName) -> dict[str, str | None]:
    return {"name": name.table, "database": name.schema, "catalog": name.catalog}


@cache
def _minute_schema() -> ibis.Schema:
    return minute_profile(requests_table(TableName("requests"))).schema()


@cache
def _histogram_schema() -> ibis.Schema:
    return histograms(requests_table(TableName("requests"))).schema()


def rollup_statements(requests: TableName, dialect: str, dates: Sequence[date] | None = None) -> list[str]:
    """SQL that rebuilds both rollups (dates=None) or just the given dates in them (the tables must exist)."""
    statements = []
    raw = requests_table(requests)
    for name, build in ((minute_rollup_name(requests), minute_profile), (histogram_rollup_name(requests), histograms)):
        target = sge.table_(name.table, db=name.schema, catalog=name.catalog, quoted=True)
        if dates is None:
            statements.append(f"CREATE OR REPLACE TABLE {target.sql(dialect)} AS {ibis.to_sql(build(raw), dialect)}")
            continue
        some = raw.filter(raw.date.isin([ibis.literal(d) for d in dates]))
        day_list = [sge.cast(sge.Literal.string(d.isoformat()), sge.DataType.build("date")) for d in dates]
        delete = sge.delete(target, where=sge.column("date", quoted=True).isin(*day_list))
        statements.append(delete.sql(dialect))
        statements.append(f"INSERT INTO {target.sql(dialect)} {ibis.to_sql(build(some), dialect)}")
    return statements


@dataclass(frozen=True)
class RefreshSummary:
    rebuilt: bool  # both rollups built from scratch
    dates: tuple[date, ...]  # dates recomputed otherwise


def refresh_rollups(
    con: duckdb.DuckDBPyConnection,
    requests: TableName,
    dates: Iterable[date] | None = None,
    *,
    rebuild: bool = False,
    own_transaction: bool = True,
) -> RefreshSummary:
    """Bring both rollups of an embedded requests table up to date, atomically.

    dates=None recomputes only the dates whose request counts differ between the table and the minute rollup
    (new scoring batches); pass dates to force them (e.g. after rescoring in place), or rebuild=True.
    Set own_transaction=False when the caller already holds a transaction (e.g. inside an append).
    """
    if own_transaction:
        con.execute("BEGIN TRANSACTION")
    try:
        summary = _refresh(con, requests, dates, rebuild)
        if own_transaction:
            con.execute("COMMIT")
    except BaseException:
        if own_transaction:
            con.execute("ROLLBACK")
        raise
    return summary


def _refresh(
    con: duckdb.DuckDBPyConnection, requests: TableName, dates: Iterable[date] | None, rebuild: bool
) -> RefreshSummary:
    present = {row[0] for row in con.sql(rollup_presence(requests).sql("duckdb")).fetchall()}
    missing = {minute_rollup_name(requests).table, histogram_rollup_name(requests).table} - present
    chosen: list[date | None] = []
    if not (rebuild or missing):
        stale = (
            dates if dates is not None else [row[0] for row in con.sql(stale_dates(requests).sql("duckdb")).fetchall()]
        )
        chosen = sorted(set(stale), key=lambda d: (d is None, d))
    if rebuild or missing or None in chosen:  # rows without a date cannot be replaced date by date
        for statement in rollup_statements(requests, "duckdb"):
            con.execute(statement)
        return RefreshSummary(True, ())
    if chosen:
        for statement in rollup_statements(requests, "duckdb", chosen):
            con.execute(statement)
    return RefreshSummary(False, tuple(d for d in chosen if d is not None))


# --- Rollup status ----------------------------------------------------------------------------------------


def rollup_presence(table: TableName) -> Query:
    """Which of the two rollup tables exist (one row per table found)."""
    names = [minute_rollup_name(table).table, histogram_rollup_name(table).table]
    tables = ibis.table(
        {"table_catalog": "string", "table_schema": "string", "table_name": "string"},
        name="tables",
        database="information_schema",
        catalog=table.catalog,
    )
    condition = tables.table_name.isin([ibis.literal(n) for n in names])
    if table.schema:
        condition &= tables.table_schema == ibis.literal(table.schema)
    return Query("rollup_presence", tables.filter(condition).select("table_name").distinct().order_by("table_name"))


def rollup_freshness(table: TableName) -> Query:
    """One row: requests in the table, in the minute rollup, and latency values in each rollup."""
    raw = requests_table(table)
    minute = ibis.table(_minute_schema(), **_location(minute_rollup_name(table)))
    hist = ibis.table(_histogram_schema(), **_location(histogram_rollup_name(table)))
    latency = hist.filter(hist.metric == ibis.literal("latency_ms"))
    expr = (
        raw.aggregate(table_requests=raw.count())
        .cross_join(
            minute.aggregate(
                rollup_requests=sum_counts(minute.requests), rollup_latency=sum_counts(minute.latency_ms__n)
            )
        )
        .cross_join(latency.aggregate(histogram_latency=sum_counts(latency.n)))
    )
    return Query("rollup_freshness", expr)


def rollups_usable(presence_rows: int, freshness: dict[str, int | None] | None) -> bool:
    """True when both rollups exist and count exactly what the requests table holds (`rollup_freshness` row)."""
    if presence_rows < 2 or not freshness:
        return False
    values = {key: int(value or 0) for key, value in freshness.items()}
    return (
        values["table_requests"] == values["rollup_requests"]
        and values["rollup_latency"] == values["histogram_latency"]
    )


def stale_dates(table: TableName) -> Query:
    """Dates whose request count differs between the requests table and the minute rollup."""
    raw = requests_table(table)
    minute = ibis.table(_minute_schema(), **_location(minute_rollup_name(table)))
    counted = raw.group_by("date").agg(table_rows=raw.count())
    rolled = minute.group_by("date").agg(rollup_rows=sum_counts(minute.requests))
    joined = counted.outer_join(rolled, counted.date == rolled.date)
    expr = joined.select(
        date=ibis.coalesce(joined.date, joined.date_right),
        table_rows=joined.table_rows.fill_null(0),
        rollup_rows=joined.rollup_rows.fill_null(0),
    )
    return Query("stale_dates", expr.filter(expr.table_rows != expr.rollup_rows).order_by("date"))


# --- Command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_access.rollups",
        description="Build or update the analytics rollups of an embedded requests table.",
    )
    parser.add_argument("--duckdb", type=Path, required=True, help="the DuckDB file holding the requests table")
    parser.add_argument("--requests-table", default="requests", help="requests table name (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild from scratch instead of updating")
    args = parser.parse_args(argv)
    if not args.duckdb.exists():
        print(f"error: {args.duckdb} does not exist", file=sys.stderr)
        return 2
    try:
        requests = TableName.parse(args.requests_table)
        with duckdb.connect(str(args.duckdb)) as con:
            summary = refresh_rollups(con, requests, rebuild=args.rebuild)
    except DataAccessError as error:
        print(f"error: {error.message} {error.hint or ''}".rstrip(), file=sys.stderr)
        return 2
    except duckdb.Error as error:  # e.g. the file is locked by the scoring job, or has no requests table
        print(f"error: {(str(error).splitlines() or [type(error).__name__])[0]}", file=sys.stderr)
        return 1
    if summary.rebuilt:
        print("rollups rebuilt")
    else:
        print(f"rollups updated for {len(summary.dates)} date(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

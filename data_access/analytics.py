"""Queries for the Overview, Trends and Drift pages, and the two rollups that keep them fast at scale.

Every page number is an aggregate computed in the engine. Two rollups of the requests table hold the
aggregates the pages need, in the spirit of Lakehouse Monitoring's profile metrics table:

- the minute profile: per minute x date x endpoint x version x scorers, request and error counts, token sums
  and, for every metric, count, sum, sum of squares, min and max;
- the histograms: per hour x date x endpoint x version x metric x scorer x bin, count, sum, min and max, on fine
  bins (1% wide in relative terms for skewed positive metrics, 0.001 for probabilities, 0.05 for grades).

Both are additive over their keys, so every sidebar filter (dates, versions, endpoints) and every grain from
a minute to a month is an aggregate of a rollup. The rollups are derived by the same Ibis expressions the pages
would otherwise run on the raw table: on the embedded engine pages call `rollup_presence` / `rollup_freshness`
and pass `from_rollups=False` when the rollups are missing or behind (and always on a warehouse, which scans
the table itself), which gives identical numbers, only slower.

Keep the rollups current with `refresh_rollups(con, requests_table)` after each scoring run (it rebuilds the
dates whose request counts differ), or `python -m data_access.analytics --duckdb PATH` by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path

import duckdb
import ibis
import ibis.expr.types as ir
import sqlglot.expressions as sge

from core.catalog import METRIC_SCORER_COLUMN, METRICS, NONPOSITIVE_BIN, Binning, grain_unit, metric_info
from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.queries import Filters, Query, _is_error, filtered, requests_table

ROLLUP_VERSION = 1  # bump when a rollup's layout or binning changes: old tables then read as missing
BAND_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
BAND_BIN_MERGE = {"hour": 4}  # fine bins merged per band bin, by grain (others: 1)
SCORER_COLUMNS = ("toxicity_scorer", "readability_scorer", "perplexity_scorer")


def _total(counts: ir.IntegerColumn) -> ir.IntegerScalar:
    """A sum of counts as a 64-bit integer: DuckDB widens SUM(BIGINT) to a 128-bit decimal, and Ibis drops a
    cast to the type it already infers, so the sum goes through DOUBLE (exact below 2**53)."""
    return counts.sum().cast("float64").cast("int64")


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
        "errors": t.count(where=_is_error(t)),
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


def _minute_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    if from_rollups:
        return filtered(ibis.table(_minute_schema(), **_location(minute_rollup_name(table))), filters)
    return minute_profile(filtered(requests_table(table), filters))


def _histogram_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
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
            minute.aggregate(rollup_requests=_total(minute.requests), rollup_latency=_total(minute.latency_ms__n))
        )
        .cross_join(latency.aggregate(histogram_latency=_total(latency.n)))
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
    rolled = minute.group_by("date").agg(rollup_rows=_total(minute.requests))
    joined = counted.outer_join(rolled, counted.date == rolled.date)
    expr = joined.select(
        date=ibis.coalesce(joined.date, joined.date_right),
        table_rows=joined.table_rows.fill_null(0),
        rollup_rows=joined.rollup_rows.fill_null(0),
    )
    return Query("stale_dates", expr.filter(expr.table_rows != expr.rollup_rows).order_by("date"))


# --- Page queries -----------------------------------------------------------------------------------------


def version_totals(table: TableName, filters: Filters, from_rollups: bool = True) -> Query:
    """Per model version: requests, errors, unparsed payloads, tokens, and the first and last minute served."""
    return Query(
        "version_totals", totals_by_version(_minute_rows(table, filters, from_rollups)).order_by("model_version")
    )


def totals_by_version(m: ir.Table) -> ir.Table:
    """Minute-profile rows summed per model version (shared with the monitors' window totals)."""
    return m.group_by("model_version").agg(
        requests=_total(m.requests),
        errors=_total(m.errors),
        parse_errors=_total(m.parse_errors),
        total_tokens=m.total_tokens_sum.sum(),
        prompt_tokens=m.prompt_tokens__sum.sum(),
        completion_tokens=m.completion_tokens__sum.sum(),
        first_seen=m.bucket.min(),
        last_seen=m.bucket.max(),
    )


def not_logged_by_version(table: TableName, filters: Filters) -> Query:
    """Per model version and reason: rows whose payload Databricks did not log (AI Gateway `logging_error_codes`,
    e.g. MAX_REQUEST_SIZE_EXCEEDED), apart from our own parse errors. Reads the requests table (one column
    filtered), since the rollups predate the gateway columns; empty for legacy tables."""
    t = filtered(requests_table(table), filters)
    t = t.filter(t.logging_error_codes.notnull())
    expr = (
        t.group_by(["model_version", "logging_error_codes"])
        .agg(requests=t.count())
        .order_by(["model_version", "logging_error_codes"])
    )
    return Query("not_logged_by_version", expr)


def traffic(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """Requests and errors per time bucket and version (the rollout as it happened)."""
    unit = grain_unit(grain)
    m = _minute_rows(table, filters, from_rollups)
    expr = (
        m.group_by([m.bucket.truncate(unit).name("bucket"), m.model_version])
        .agg(requests=_total(m.requests), errors=_total(m.errors))
        .order_by(["bucket", "model_version"])
    )
    return Query("traffic", expr)


def _histogram_agg(h: ir.Table, group: ir.Value, metrics: Sequence[str]) -> ir.Table:
    for metric in metrics:
        metric_info(metric)
    if metrics:
        h = h.filter(h.metric.isin([ibis.literal(m) for m in metrics]))
    return h.group_by([group.name("group"), h.metric, h.scorer, h.bin]).agg(
        n=_total(h.n), total=h.total.sum(), lo=h.lo.min(), hi=h.hi.max()
    )


def histograms_by_version(
    table: TableName, filters: Filters, metrics: tuple[str, ...] = (), from_rollups: bool = True
) -> Query:
    """Fine histograms per version, metric and scorer (all metrics unless some are named)."""
    h = _histogram_rows(table, filters, from_rollups)
    expr = _histogram_agg(h, h.model_version, metrics).order_by(["group", "metric", "scorer", "bin"])
    return Query("histograms_by_version", expr)


def histograms_by_window(
    table: TableName,
    filters: Filters,
    baseline: tuple[date, date],
    comparison: tuple[date, date],
    metrics: tuple[str, ...] = (),
    from_rollups: bool = True,
) -> Query:
    """Fine histograms of a baseline and a comparison date window (inclusive; they may overlap)."""
    parts = []
    for label, (start, end) in (("baseline", baseline), ("comparison", comparison)):
        if start > end:
            raise ValueError(f"the {label} window ends before it starts")
        h = _histogram_rows(table, replace(filters, start=start, end=end), from_rollups)
        parts.append(_histogram_agg(h, ibis.literal(label), metrics))
    expr = ibis.union(*parts, distinct=False).order_by(["group", "metric", "scorer", "bin"])
    return Query("histograms_by_window", expr)


def metric_trend(table: TableName, filters: Filters, grain: str, metric: str, from_rollups: bool = True) -> Query:
    """One metric per time bucket, version and scorer: values scored, mean, standard deviation, min and max."""
    metric_info(metric)
    unit = grain_unit(grain)
    m = _minute_rows(table, filters, from_rollups)
    grouped = m.group_by([m.bucket.truncate(unit).name("bucket"), m.model_version, scorer_of(m, metric)]).agg(
        n=_total(m[f"{metric}__n"]),
        s=m[f"{metric}__sum"].sum(),
        ss=m[f"{metric}__sumsq"].sum(),
        lo=m[f"{metric}__min"].min(),
        hi=m[f"{metric}__max"].max(),
    )
    grouped = grouped.filter(grouped.n > 0)
    # Sample variance from the sum of squares; tiny negative round-off is clipped to zero.
    variance = (grouped.ss - grouped.s * grouped.s / grouped.n) / (grouped.n - 1)
    sd = ibis.cases((grouped.n > 1, ibis.greatest(variance, 0.0).sqrt()), else_=ibis.null("float64"))
    expr = grouped.select("bucket", "model_version", "scorer", "n", mean=grouped.s / grouped.n, sd=sd, lo="lo", hi="hi")
    return Query("metric_trend", expr.order_by(["bucket", "model_version", "scorer"]))


def metric_band(table: TableName, filters: Filters, grain: str, metric: str, from_rollups: bool = True) -> Query:
    """The 10/25/50/75/90th percentiles of one metric per bucket (hour grain or coarser), version and scorer.

    Computed in the engine from the hourly fine histograms: a running count finds the bin holding each order
    statistic and the value is interpolated inside it, so a percentile is off by at most its bin's spread:
    1% for skewed metrics, times `BAND_BIN_MERGE[grain]` (at hour grain adjacent fine bins are merged, which
    halves the cost of the running count over a month of hours). Per-minute percentiles are not offered.
    """
    metric_info(metric)
    unit = grain_unit(grain)
    if grain == "minute":
        raise ValueError("percentile bands start at hour grain; per minute, use the mean and standard deviation")
    h = _histogram_rows(table, filters, from_rollups)
    h = h.filter(h.metric == ibis.literal(metric))
    keys = [h.hour.truncate(unit).name("bucket"), h.model_version, h.scorer]
    merge = BAND_BIN_MERGE.get(grain, 1)
    coarse = (h.bin / merge).floor() if merge > 1 else h.bin  # floor division keeps the bins in value order
    bins = h.group_by([*keys, coarse.name("bin")]).agg(n=_total(h.n), lo=h.lo.min(), hi=h.hi.max())
    partition = ["bucket", "model_version", "scorer"]
    running = ibis.window(group_by=partition, order_by="bin", preceding=None, following=0)
    counted = bins.mutate(cum=bins.n.sum().over(running), total=bins.n.sum().over(ibis.window(group_by=partition)))
    counted = counted.mutate(before=counted.cum - counted.n)
    # numpy's default (linear) percentile: order statistics k = floor((total - 1) q) and k + 1, 0-based, mixed
    # by the fraction. Each order statistic is placed evenly between its bin's smallest and largest value.
    order_statistics = {}
    for q in BAND_QUANTILES:
        k = ((counted.total - 1) * q).floor()
        for name, rank in (
            (f"q{round(q * 100)}_low", k),
            (f"q{round(q * 100)}_high", ibis.least(k + 1, counted.total - 1)),
        ):
            inside = (counted.before <= rank) & (rank < counted.cum)
            share = (rank - counted.before) / ibis.greatest(counted.n - 1, 1)
            order_statistics[name] = (counted.lo + (counted.hi - counted.lo) * share).max(where=inside)
    order_statistics["total"] = counted.total.max()
    ranked = counted.group_by(partition).agg(**order_statistics)
    percentiles = {}
    for q in BAND_QUANTILES:
        low, high = ranked[f"q{round(q * 100)}_low"], ranked[f"q{round(q * 100)}_high"]
        fraction = (ranked.total - 1) * q - ((ranked.total - 1) * q).floor()
        percentiles[f"p{round(q * 100)}"] = low + (high - low) * fraction
    return Query("metric_band", ranked.select(*partition, **percentiles).order_by(partition))


# --- What each page runs (the lead's benchmark times these) -------------------------------------------------


def _overview(table: TableName, filters: Filters, grain: str) -> list[Query]:
    # The page compares versions on the days both served; that window is only known from the daily traffic,
    # so the totals and histograms of the window are listed here with the sidebar's filters (same cost).
    return [
        rollup_freshness(table),
        version_totals(table, filters),
        traffic(table, filters, "day"),
        version_totals(table, filters),  # again, for the comparison window
        histograms_by_version(table, filters),
        traffic(table, filters, grain),
        not_logged_by_version(table, filters),
    ]


def _trends(table: TableName, filters: Filters, grain: str) -> list[Query]:
    return [
        rollup_freshness(table),
        metric_trend(table, filters, grain, "response_perplexity"),
        *([] if grain == "minute" else [metric_band(table, filters, grain, "response_perplexity")]),
    ]


def _drift(table: TableName, filters: Filters, grain: str) -> list[Query]:
    return [
        rollup_freshness(table),
        version_totals(table, filters),
        histograms_by_version(table, filters),
    ]


PAGE_QUERIES: dict[str, Callable[[TableName, Filters, str], list[Query]]] = {
    "Overview": _overview,
    "Trends": _trends,
    "Drift": _drift,
}


# --- Command line -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_access.analytics",
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

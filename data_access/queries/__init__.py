"""The query catalog: each query defined once as an Ibis expression over an unbound table, compiled per dialect.

This package's base (here) holds what every query shares: the sidebar `Filters`, `Query` and its compilation,
`run` and the table expressions. Its modules hold the queries of one page or page group, next to the list of
what that page runs; `pages.PAGE_QUERIES` collects those lists for the pages, the page benchmark and the tests.
`job` holds the scoring job's queries; the rollups the pages read live in `data_access.rollups`.

User values enter only as Ibis literals (escaped by the compiler); table names are validated `TableName`s.
Aggregation happens in the engine: results are rows per (time bucket x version), never per request,
except the paged drill-down lists.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import date

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from core.catalog import grain_of
from data_access.config import TableName
from data_access.schema import LAYOUT_SCHEMAS, REQUESTS_SCHEMA
from data_access.sources import Source

COMPILED_QUERIES = 512  # distinct (query, dialect) pairs whose SQL is kept
DIALECT_NAMES = {"databricks": "Databricks SQL", "duckdb": "DuckDB SQL"}  # as pages and the report name them


@dataclass(frozen=True)
class Filters:
    """The shared sidebar filters. Empty tuples mean 'all'; dates are inclusive."""

    start: date | None = None
    end: date | None = None
    versions: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Query:
    name: str
    expr: ir.Table

    def sql(self, dialect: str) -> str:
        return compiled(self.expr.op(), dialect)


@functools.lru_cache(maxsize=COMPILED_QUERIES)
def compiled(node: ops.Relation, dialect: str) -> str:
    """A query's SQL in a dialect, compiled once per distinct expression: Ibis takes 20-60 ms to compile one of the
    page queries, as long as DuckDB takes to answer it from the rollups. Expressions compare by structure, so the
    same query built again (after the result cache's TTL, a refresh, another viewer, the monitors' next round) is
    not compiled again."""
    return ibis.to_sql(node.to_expr(), dialect=dialect)


@dataclass(frozen=True)
class QueryResult:
    name: str
    sql: str
    table: pa.Table
    seconds: float


@dataclass(frozen=True)
class Bundle:
    """Several queries answered by one statement: on a warehouse every statement is a round trip with a fixed
    cost (on local Spark 0.25-0.4 s however small its input), so a page's small figures ride together.

    The statement is a UNION ALL of the parts, each part's columns under its own prefix (`p0_`, `p1_`, ...) and
    typed nulls under the others', plus the part's index; `split` cuts the result back into each part's own
    rows, columns and order. Each part stays one query of the catalog: `parts[i].sql(dialect)` is what it
    computes alone (what "SQL for this chart" offers), with the same rows."""

    name: str
    parts: tuple[Query, ...]

    @property
    def expr(self) -> ir.Table:
        return _bundled(tuple(part.expr for part in self.parts))

    def sql(self, dialect: str) -> str:
        return compiled(self.expr.op(), dialect)

    def split(self, table: pa.Table) -> list[pa.Table]:
        """Each part's rows of the bundle's result, with the part's columns and order."""
        tables = []
        for i, part in enumerate(self.parts):
            unsorted, keys = _unsorted(part.expr)
            prefix = f"p{i}_"
            rows = table.filter(pc.equal(table["part"], i))
            rows = rows.select([prefix + name for name in unsorted.columns]).rename_columns(list(unsorted.columns))
            if keys:
                rows = rows.sort_by([(*key, "at_end") for key in keys])  # as Ibis orders: nulls last either way
            tables.append(rows)
        return tables


def _unsorted(expr: ir.Table) -> tuple[ir.Table, list[tuple[str, str]]]:
    """A query without its final ORDER BY, and that order as (column, "ascending" | "descending") keys. The order
    of a UNION ALL's member is lost, so `Bundle.split` sorts each part's rows again."""
    op = expr.op()
    if not isinstance(op, ops.Sort):
        if isinstance(op, ops.Limit) or isinstance(getattr(op, "parent", None), ops.Sort | ops.Limit):
            raise ValueError("a bundle part must end in its ORDER BY: its order is restored after the union")
        return expr, []
    keys = []
    for key in op.keys:
        if not isinstance(key.arg, ops.Field) or key.nulls_first:
            raise ValueError("a bundle part must be ordered by its own columns, nulls last")
        keys.append((key.arg.name, "ascending" if key.ascending else "descending"))
    return op.parent.to_expr(), keys


@functools.lru_cache(maxsize=COMPILED_QUERIES)
def _bundled(exprs: tuple[ir.Table, ...]) -> ir.Table:
    parts = [_unsorted(expr)[0] for expr in exprs]
    typed = {f"p{i}_{name}": dtype for i, part in enumerate(parts) for name, dtype in part.schema().items()}
    members = []
    for i, part in enumerate(parts):
        mine = {f"p{i}_{name}": part[name] for name in part.columns}
        columns = {name: mine.get(name, ibis.null(dtype)) for name, dtype in typed.items()}
        members.append(part.select(part=ibis.literal(i, "int16"), **columns))
    return ibis.union(*members, distinct=False)


def run(source: Source, query: Query | Bundle) -> QueryResult:
    """Compile for the source's dialect and execute there."""
    sql = query.sql(source.dialect)
    started = time.perf_counter()
    table = source.execute(sql)
    return QueryResult(query.name, sql, table, time.perf_counter() - started)


def requests_table(name: TableName) -> ir.Table:
    return ibis.table(REQUESTS_SCHEMA, name=name.table, database=name.schema, catalog=name.catalog)


def filtered(t: ir.Table, filters: Filters) -> ir.Table:
    conditions = []
    if filters.start is not None:
        conditions.append(t.date >= ibis.literal(filters.start))
    if filters.end is not None:
        conditions.append(t.date <= ibis.literal(filters.end))
    if filters.versions:
        conditions.append(t.model_version.isin([ibis.literal(v) for v in filters.versions]))
    if filters.endpoints:
        conditions.append(t.endpoint_name.isin([ibis.literal(e) for e in filters.endpoints]))
    return t.filter(*conditions) if conditions else t


def truncate_to(at: ir.TimestampValue, grain: str) -> ir.TimestampValue:
    """The start of the `grain` bucket holding each timestamp. A multi-unit bucket (15 minutes, 3 hours) is the
    unit's start minus the unit count past the last multiple of the step: plain arithmetic both dialects compile
    (Ibis' TIME_BUCKET has no Databricks rule)."""
    spec = grain_of(grain)
    start = at.truncate(spec.unit)
    if spec.step == 1:
        return start
    within = {"m": at.minute, "h": at.hour}[spec.unit]()
    return start - (within % spec.step).as_interval(spec.unit)


def hour_bucket(hour: ir.TimestampValue, grain: str) -> ir.TimestampValue:
    """`truncate_to` for rows keyed by the start of their hour (the histograms and the latency histogram, from the
    rollups or built from the requests table): at hour grain the key is its own bucket and is not truncated again
    (on local Spark a DATE_TRUNC per row, about a tenth of the CPU of the Trends band over a month of hours)."""
    spec = grain_of(grain)
    return hour if (spec.unit, spec.step) == ("h", 1) else truncate_to(hour, grain)


def bucket(t: ir.Table, grain: str) -> ir.TimestampValue:
    return truncate_to(t.request_time, grain).name("bucket")


def is_error(t: ir.Table) -> ir.BooleanValue:
    return t.status_code.isnull() | (t.status_code != 200)


def filter_options(table: TableName) -> Query:
    """What the sidebar offers: each endpoint x version with its request count and date span."""
    t = requests_table(table)
    expr = (
        t.group_by(["endpoint_name", "model_version"])
        .agg(requests=t.count(), first_date=t.date.min(), last_date=t.date.max())
        .order_by(["endpoint_name", "model_version"])
    )
    return Query("filter_options", expr)


def payload_table(name: TableName, layout: str = "legacy") -> ir.Table:
    return ibis.table(LAYOUT_SCHEMAS[layout], name=name.table, database=name.schema, catalog=name.catalog)


def sum_counts(counts: ir.NumericColumn, where: ir.BooleanValue | None = None) -> ir.IntegerScalar:
    """A sum of counts as a 64-bit integer, 0 when there is nothing to sum. DuckDB widens SUM(BIGINT) to a
    128-bit decimal, and Ibis drops a cast to the type it already infers, so the sum goes through DOUBLE (exact
    below 2**53)."""
    return counts.sum(where=where).fill_null(0).cast("float64").cast("int64")

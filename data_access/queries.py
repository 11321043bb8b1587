"""The query catalog: each query defined once as an Ibis expression over an unbound table, compiled per dialect.

User values enter only as Ibis literals (escaped by the compiler); table names are validated `TableName`s.
Aggregation happens in the engine: results are rows per (time bucket x version), never per request,
except the paged drill-down list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from core.catalog import grain_unit
from data_access.config import TableName
from data_access.schema import PAYLOAD_SCHEMA, REQUESTS_SCHEMA
from data_access.sources import Source


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
        return ibis.to_sql(self.expr, dialect=dialect)


@dataclass(frozen=True)
class QueryResult:
    name: str
    sql: str
    table: pa.Table
    seconds: float


def run(source: Source, query: Query) -> QueryResult:
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


def bucket(t: ir.Table, grain: str) -> ir.TimestampValue:
    return t.request_time.truncate(grain_unit(grain)).name("bucket")


def _is_error(t: ir.Table) -> ir.BooleanValue:
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


def volume_over_time(table: TableName, filters: Filters, grain: str) -> Query:
    """Requests, errors and unparsed payloads per time bucket and model version."""
    t = filtered(requests_table(table), filters)
    expr = (
        t.group_by([bucket(t, grain), t.model_version])
        .agg(
            requests=t.count(),
            errors=_is_error(t).sum(),
            parse_errors=t.parse_error.notnull().sum(),
        )
        .order_by(["bucket", "model_version"])
    )
    return Query("volume_over_time", expr)


def payload_table(name: TableName) -> ir.Table:
    return ibis.table(PAYLOAD_SCHEMA, name=name.table, database=name.schema, catalog=name.catalog)


def unscored_payload(payload: TableName, requests: TableName, limit: int | None) -> Query:
    """The next payload rows with an id that the requests table does not hold yet, one row per id.

    Duplicate ids (a retry logged twice) keep their earliest row, chosen the same way in every run, so a
    resumed job writes exactly what one clean run writes. Rows with no id at all are `payload_without_id`.
    """
    p = payload_table(payload)
    key = ibis.coalesce(p.databricks_request_id, p.client_request_id)
    first_of_id = ibis.row_number().over(
        group_by=key, order_by=[p.timestamp_ms, p.execution_time_ms, p.request, p.response]
    )
    ranked = p.mutate(_key=key, _rank=first_of_id).filter(lambda r: r._key.notnull())
    done = requests_table(requests)
    fresh = ranked.filter(ranked._rank == 0).anti_join(done, ranked._key == done.request_id)
    expr = fresh.order_by(["timestamp_ms", "_key"]).limit(limit).select(PAYLOAD_SCHEMA.names)
    return Query("unscored_payload", expr)


def payload_without_id(payload: TableName) -> Query:
    """Payload rows with neither request id; the parser gives them a content hash as id."""
    p = payload_table(payload)
    expr = p.filter(p.databricks_request_id.isnull() & p.client_request_id.isnull())
    return Query("payload_without_id", expr)

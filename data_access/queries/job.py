"""The scoring job's queries: which payload rows still need scoring (one definition for DuckDB and Spark, on both
table layouts), the served entities a gateway row is joined with, and the payload-time window an incremental run
reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from data_access.config import TableName
from data_access.queries import Query, payload_table, requests_table
from data_access.schema import ENTITY_COLUMNS, GATEWAY_PAYLOAD_SCHEMA, PAYLOAD_SCHEMA, SERVED_ENTITIES_SCHEMA

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PayloadWindow:
    """The slice of the payload table an incremental run reads (issue 16: cost in proportion to new rows).

    Payload rows from `rows_from` on are read (and rows without a time, which no mark can cover); they are
    checked against requests rows from `done_from` on (and rows without a time). `done_from` is the run's
    lower bound (watermark minus the late-arrival margin); `rows_from` may be later, as a run walks its window.
    None means the whole table (a first run, or `--full-rescan`).
    """

    rows_from: datetime | None = None
    done_from: datetime | None = None


WHOLE_TABLE = PayloadWindow()


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch of a naive UTC time (the payload's `timestamp_ms` unit)."""
    return (at.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(millis: int) -> datetime:
    """The naive UTC time of milliseconds since the Unix epoch."""
    return (EPOCH + timedelta(milliseconds=millis)).replace(tzinfo=None)


def _logged_at(p: ir.Table) -> ir.Value:
    """The payload's own time column: `timestamp_ms` (legacy, epoch ms) or `request_time` (gateway, timestamp)."""
    return p.request_time if "request_time" in p.columns else p.timestamp_ms


def _at_or_after(p: ir.Table, since: datetime) -> ir.BooleanValue:
    """The payload's time column at or after `since`, in the column's own unit (so row groups can be skipped)."""
    bound = ibis.literal(since) if "request_time" in p.columns else ibis.literal(epoch_ms(since))
    return _logged_at(p) >= bound


def payload_time_from(p: ir.Table, since: datetime) -> ir.BooleanValue:
    """Payload rows at or after `since`, compared on the raw column so the engine can skip older row groups."""
    return _at_or_after(p, since) | _logged_at(p).isnull()


def payload_times(payload: pa.Table) -> list[datetime | None]:
    """The request time of each payload row (what the parser puts in `request_time`), for the watermark."""
    if "request_time" in payload.column_names:  # gateway: a timestamp, from Spark with a UTC zone
        values = payload["request_time"].to_pylist()
        return [v.astimezone(UTC).replace(tzinfo=None) if v is not None and v.tzinfo else v for v in values]
    return [None if ms is None else from_epoch_ms(ms) for ms in payload["timestamp_ms"].to_pylist()]


def _windowed(p: ir.Table, requests: TableName, window: PayloadWindow) -> tuple[ir.Table, ir.Table]:
    done = requests_table(requests)
    if window.rows_from is not None:
        p = p.filter(payload_time_from(p, window.rows_from))  # before ranking: only the window is ranked
    if window.done_from is not None:
        done = done.filter((done.request_time >= ibis.literal(window.done_from)) | done.request_time.isnull())
    return p, done


@dataclass(frozen=True)
class PayloadSpec:
    """Where the job reads raw rows: the inference table, its layout, and for the AI Gateway layout the
    served-entities table to join (None when it cannot be read: rows then keep a null version)."""

    table: TableName
    layout: str = "legacy"
    served_entities: TableName | None = None


def served_entities_table(name: TableName) -> ir.Table:
    return ibis.table(SERVED_ENTITIES_SCHEMA, name=name.table, database=name.schema, catalog=name.catalog)


def served_entities_probe(name: TableName) -> Query:
    """Reads no rows, but fails like the real join would when the table is missing or not granted."""
    se = served_entities_table(name)
    return Query("served_entities_probe", se.select("served_entity_id", *ENTITY_COLUMNS, "change_time").limit(0))


def _latest_entities(name: TableName) -> ir.Table:
    """One row per served_entity_id: its latest change (name and version never change for an id)."""
    se = served_entities_table(name).select("served_entity_id", *ENTITY_COLUMNS, "change_time")
    latest = ibis.row_number().over(group_by=se.served_entity_id, order_by=[ibis.desc(se.change_time)])
    ranked = se.mutate(_latest=latest)
    return ranked.filter(ranked._latest == 0).select("served_entity_id", *ENTITY_COLUMNS)


def _with_entities(rows: ir.Table, spec: PayloadSpec) -> ir.Table:
    """Gateway rows plus endpoint, model name and version from the served-entities table (left join: no row
    is ever dropped; an unknown id or an unreadable table leaves them null)."""
    names = GATEWAY_PAYLOAD_SCHEMA.names
    if spec.served_entities is None:
        return rows.select(*names, **{name: ibis.null("string") for name in ENTITY_COLUMNS})
    se = _latest_entities(spec.served_entities).rename(_entity_id="served_entity_id")
    joined = rows.left_join(se, rows.served_entity_id == se._entity_id)
    return joined.select(*names, *ENTITY_COLUMNS)


def _spec(payload: TableName | PayloadSpec) -> PayloadSpec:
    return payload if isinstance(payload, PayloadSpec) else PayloadSpec(payload)


def unscored_payload(
    payload: TableName | PayloadSpec, requests: TableName, limit: int | None, window: PayloadWindow = WHOLE_TABLE
) -> Query:
    """The next payload rows with an id that the requests table does not hold yet, one row per id.

    Duplicate ids (a retry logged twice) keep their earliest row, chosen the same way in every run, so a
    resumed job writes exactly what one clean run writes. Rows with no id at all are `payload_without_id`.
    With a window, only the window's payload rows are ranked and only its requests rows are anti-joined.
    Gateway rows come with the served-entity columns joined on.
    """
    spec = _spec(payload)
    p, done = _windowed(payload_table(spec.table, spec.layout), requests, window)
    gateway = spec.layout == "gateway"
    logged_at = _logged_at(p)
    duration = p.execution_duration_ms if gateway else p.execution_time_ms
    key = ibis.coalesce(p.databricks_request_id, p.client_request_id)
    first_of_id = ibis.row_number().over(group_by=key, order_by=[logged_at, duration, p.request, p.response])
    ranked = p.mutate(_key=key, _rank=first_of_id).filter(lambda r: r._key.notnull())
    fresh = ranked.filter(ranked._rank == 0).anti_join(done, ranked._key == done.request_id)
    ordered = fresh.order_by([logged_at.get_name(), "_key"]).limit(limit)
    expr = _with_entities(ordered, spec) if gateway else ordered.select(PAYLOAD_SCHEMA.names)
    return Query("unscored_payload", expr)


def payload_without_id(payload: TableName | PayloadSpec, window: PayloadWindow = WHOLE_TABLE) -> Query:
    """Payload rows with neither request id; the parser gives them a content hash as id."""
    spec = _spec(payload)
    p = payload_table(spec.table, spec.layout)
    if window.rows_from is not None:
        p = p.filter(payload_time_from(p, window.rows_from))
    expr = p.filter(p.databricks_request_id.isnull() & p.client_request_id.isnull())
    return Query("payload_without_id", _with_entities(expr, spec) if spec.layout == "gateway" else expr)


def payload_time_span(payload: TableName | PayloadSpec, window: PayloadWindow = WHOLE_TABLE) -> Query:
    """The latest payload time in the window (one row, `latest`): the most a run's watermark may reach
    (epoch ms for a legacy table, a timestamp for a gateway table)."""
    spec = _spec(payload)
    p = payload_table(spec.table, spec.layout)
    if window.rows_from is not None:
        p = p.filter(_at_or_after(p, window.rows_from))
    return Query("payload_time_span", p.aggregate(latest=_logged_at(p).max()))

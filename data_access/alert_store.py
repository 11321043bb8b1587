"""The alert tables' stores: each rule's state, the evaluation history and the notification outbox, kept beside
the requests table in the embedded file (one transaction per evaluation) or in a warehouse's catalog (three
idempotent statements, the history the commit point). What to write is decided by the monitors job."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis.expr.datatypes as dt
import pyarrow as pa
import sqlglot.expressions as sge
from ibis.backends.sql.datatypes import DatabricksType

from data_access import alerts
from data_access.config import TableName
from data_access.duckdb_store import DuckDBStore, quoted
from data_access.queries import Query, run
from data_access.schema import arrow_schema, column_ddl
from data_access.sources import Source, transaction


@dataclass(frozen=True)
class Notification:
    idempotency_key: str
    rule: str
    state: str
    webhook: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Decision:
    """One evaluation's rows for the three alert tables."""

    history: list[dict[str, Any]]
    states: list[dict[str, Any]]
    outbox: list[dict[str, Any]]


ALERT_SCHEMAS = {
    "state": alerts.ALERT_STATE_SCHEMA,
    "history": alerts.ALERT_HISTORY_SCHEMA,
    "outbox": alerts.OUTBOX_SCHEMA,
}


Decide = Callable[[dict[str, dict[str, Any]]], Decision]  # previous states by rule -> the rows to write


class AlertTables:
    """What both stores share: one evaluation recorded (`write` reads the previous states, decides, writes), and
    a send recorded as delivered after a 2xx answer, or as its last failure (never the URL)."""

    def write(self, decide_from: Decide) -> Decision:
        """Read the previous states, decide from them, and write the decision's rows."""
        raise NotImplementedError

    def delivered(self, key: str, attempts: int) -> None:
        self._update(key, attempts, None, datetime.now(UTC).replace(tzinfo=None))

    def failed(self, key: str, attempts: int, error: str) -> None:
        self._update(key, attempts, error, None)

    def _update(self, key: str, attempts: int, error: str | None, sent_at: datetime | None) -> None:
        raise NotImplementedError


class AlertStore(AlertTables):
    """The alert tables in the embedded DuckDB file, beside the requests table; each write is one transaction."""

    def __init__(self, path: Path, requests: TableName, lock_wait_s: float = 30.0) -> None:
        self.files = DuckDBStore(path, requests, requests, lock_wait_s)  # its lock-waiting writer connection
        self.requests = requests
        self.names = alerts.alert_tables(requests)

    def ensure(self) -> None:
        with self.files._connect() as con:
            for kind, name in self.names.items():
                self.files._create(con, name, arrow_schema(ALERT_SCHEMAS[kind]))

    def write(self, decide_from: Decide) -> Decision:
        """Read, decide and write in one transaction."""
        with self.files._connect() as con, transaction(con):
            rows = con.sql(f"SELECT * FROM {quoted(self.names['state'])}").to_arrow_table().to_pylist()
            decision = decide_from({row["rule"]: row for row in rows})
            self._insert_all(con, decision)
        return decision

    def _insert_all(self, con: Any, decision: Decision) -> None:
        self._insert(con, "history", decision.history)
        if decision.states:
            incoming = _arrow("state", decision.states)
            con.register("incoming", incoming)
            try:
                con.sql(f"DELETE FROM {quoted(self.names['state'])} WHERE rule IN (SELECT rule FROM incoming)")
                con.sql(f"INSERT INTO {quoted(self.names['state'])} SELECT * FROM incoming")
            finally:
                con.unregister("incoming")
        self._insert(con, "outbox", decision.outbox)

    def _insert(self, con: Any, kind: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.files._with_arrow(
                con, f"INSERT INTO {quoted(self.names[kind])} SELECT * FROM incoming", _arrow(kind, rows)
            )

    def pending(self) -> list[Notification]:
        with self.files._connect() as con:
            rows = con.sql(alerts.pending_notifications(self.requests).sql("duckdb")).fetchall()
        return [Notification(*row) for row in rows]

    def _update(self, key: str, attempts: int, error: str | None, sent_at: datetime | None) -> None:
        with self.files._connect() as con:
            con.execute(
                f"UPDATE {quoted(self.names['outbox'])} SET attempts = ?, last_error = ?, sent_at = ? "
                "WHERE idempotency_key = ?",
                [attempts, error, sent_at, key],
            )


def _arrow(kind: str, rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=arrow_schema(ALERT_SCHEMAS[kind]))


class WarehouseAlertStore(AlertTables):
    """The alert tables as tables of the warehouse's catalog beside the requests table (Delta on Databricks),
    created when absent and written through the source the monitors read with (a SQL warehouse, or the Spark
    session of the scoring job), in Databricks SQL.

    A warehouse runs one statement per transaction, so one evaluation is written in three idempotent steps:
    the outbox rows (MERGE: inserted once per key), the history rows (MERGE on rule and clock: one Delta commit,
    the decision's commit point), then the states (MERGE on rule). Only outbox rows whose history row exists
    are ever sent (`alerts.pending_notifications`), so a job killed after the outbox and before the history
    sends nothing and decides again next time; one killed before the states are written finds the history
    ahead and takes the rule's state from it (`states`). Nothing is lost, nothing is sent for a decision
    that was not recorded, and each recorded transition keeps one key.
    """

    def __init__(self, source: Source, requests: TableName) -> None:
        if source.dialect != "databricks":
            raise ValueError("WarehouseAlertStore writes Databricks SQL")
        self.source = source
        self.requests = requests
        self.names = alerts.alert_tables(requests)

    def ensure(self) -> None:
        for kind, name in self.names.items():
            self.source.execute(
                f"CREATE TABLE IF NOT EXISTS {name.sql('databricks')} ({column_ddl(ALERT_SCHEMAS[kind])})"
            )

    def _rows(self, query: Query) -> list[dict[str, Any]]:
        """Rows with naive UTC timestamps, as the embedded store has them (a warehouse answers in UTC instants)."""
        table = run(self.source, query).table
        naive = pa.schema(
            [pa.field(f.name, pa.timestamp(f.type.unit)) if pa.types.is_timestamp(f.type) else f for f in table.schema]
        )
        return table.cast(naive).to_pylist()

    def states(self) -> dict[str, dict[str, Any]]:
        """State rows by rule, brought up to the history where a killed job wrote the history and not the state."""
        states = {row["rule"]: row for row in self._rows(alerts.alert_states(self.requests))}
        for newest in self._rows(alerts.latest_history(self.requests)):
            state = states.get(newest["rule"])
            if state is not None and state["evaluated_at"] >= newest["evaluated_at"]:
                continue
            moved = state is None or state["state"] != newest["state"]
            states[newest["rule"]] = {**(state or {}), **newest,
                                      "since": newest["evaluated_at"] if moved else state["since"]}  # fmt: skip
        return states

    def write(self, decide_from: Decide) -> Decision:
        """Three idempotent statements, the history the commit point (see the class)."""
        decision = decide_from(self.states())
        for kind, rows, keys, update in (
            ("outbox", decision.outbox, ("idempotency_key",), False),
            ("history", decision.history, ("rule", "evaluated_at"), False),  # the commit point
            ("state", decision.states, ("rule",), True),
        ):
            if rows:
                self.source.execute(merge_statement(self.names[kind], ALERT_SCHEMAS[kind], rows, keys, update))
        return decision

    def pending(self) -> list[Notification]:
        return [Notification(**row) for row in self._rows(alerts.pending_notifications(self.requests))]

    def _update(self, key: str, attempts: int, error: str | None, sent_at: datetime | None) -> None:
        schema = alerts.OUTBOX_SCHEMA
        values = {"attempts": attempts, "last_error": error, "sent_at": sent_at}
        assignments = ", ".join(f"`{name}` = {sql_value(value, schema[name])}" for name, value in values.items())
        where = f"`idempotency_key` = {sql_value(key, schema['idempotency_key'])}"
        self.source.execute(f"UPDATE {self.names['outbox'].sql('databricks')} SET {assignments} WHERE {where}")


def sql_value(value: Any, dtype: dt.DataType) -> str:
    """A value as a typed Databricks SQL literal (escaped by sqlglot: rule names and details come from a file)."""
    target = DatabricksType.from_ibis(dtype)
    if value is None or (isinstance(value, float) and value != value):
        literal: sge.Expression = sge.null()
    elif isinstance(value, bool):
        literal = sge.Boolean(this=value)
    elif isinstance(value, int | float):
        literal = sge.Literal.number(repr(float(value)) if dtype.is_floating() else int(value))
    elif isinstance(value, datetime):
        literal = sge.Literal.string(value.isoformat(sep=" "))
    else:
        literal = sge.Literal.string(str(value))
    return sge.Cast(this=literal, to=target).sql("databricks")


def merge_statement(
    name: TableName, schema: Any, rows: Sequence[dict[str, Any]], keys: Sequence[str], update: bool
) -> str:
    """MERGE the rows into a table on its keys: new keys inserted, existing ones updated (`update`) or left."""
    on = " AND ".join(f"target.`{key}` = incoming.`{key}`" for key in keys)
    matched = " WHEN MATCHED THEN UPDATE SET *" if update else ""
    return (
        f"MERGE INTO {name.sql('databricks')} AS target USING ({values_select(schema, rows)}) AS incoming ON {on}"
        f"{matched} WHEN NOT MATCHED THEN INSERT *"
    )


def values_select(schema: Any, rows: Sequence[dict[str, Any]]) -> str:
    """`SELECT * FROM VALUES (...), ... AS incoming_rows(columns)`: the rows as typed literals, in schema order."""
    columns = list(schema.names)
    values = ", ".join(
        "(" + ", ".join(sql_value(row[column], schema[column]) for column in columns) + ")" for row in rows
    )
    names = ", ".join(f"`{column}`" for column in columns)
    return f"SELECT * FROM VALUES {values} AS incoming_rows({names})"

"""The writing side of the embedded database: payload and requests tables in one DuckDB file.

Only the scoring job and the demo bootstrap write. Each append is one transaction, so a job killed at any
moment leaves whole batches behind, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa
import sqlglot.expressions as sge

from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.queries import Query, payload_without_id, unscored_payload
from data_access.schema import PAYLOAD_ARROW, REQUESTS_ARROW


def quoted(name: TableName) -> str:
    """A validated table name, quoted for DuckDB by sqlglot rather than by hand."""
    return sge.table_(name.table, db=name.schema, catalog=name.catalog, quoted=True).sql("duckdb")


class DuckDBStore:
    def __init__(self, path: Path, payload: TableName, requests: TableName) -> None:
        self.path = Path(path)
        self.payload = payload
        self.requests = requests
        self._con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> DuckDBStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.IOException as error:
            raise DataAccessError(
                f"Cannot open {self.path} for writing: {str(error).splitlines()[0]}",
                "Another process (the app or another job) may hold it; stop it or retry in a moment.",
            ) from None
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("use DuckDBStore as a context manager")
        return self._con

    def _create(self, name: TableName, schema: pa.Schema) -> None:
        self._from_arrow(f"CREATE TABLE IF NOT EXISTS {quoted(name)} AS SELECT * FROM incoming", schema.empty_table())

    def _from_arrow(self, sql: str, incoming: pa.Table) -> None:
        """Run SQL that reads an Arrow table registered as `incoming`."""
        self.con.register("incoming", incoming)
        try:
            self.con.execute(sql)
        finally:
            self.con.unregister("incoming")

    def ensure_tables(self) -> None:
        if not self.table_exists(self.payload):
            raise DataAccessError(
                f"The payload table {self.payload} is not in {self.path.name}.",
                "Point --payload-table at the inference table, or build the demo data first.",
            )
        self._create(self.requests, REQUESTS_ARROW)

    def table_exists(self, name: TableName) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = ?",
            [name.table, name.schema or "main"],
        ).fetchone()
        return bool(rows and rows[0])

    def replace_payload(self, batches: list[pa.Table] | pa.Table) -> int:
        """(Re)write the payload table; used by the demo bootstrap."""
        self.con.execute(f"DROP TABLE IF EXISTS {quoted(self.payload)}")
        self._create(self.payload, PAYLOAD_ARROW)
        for batch in [batches] if isinstance(batches, pa.Table) else batches:
            self._from_arrow(f"INSERT INTO {quoted(self.payload)} SELECT * FROM incoming", batch)
        return self.count(self.payload)

    def fetch(self, query: Query) -> pa.Table:
        return self.con.sql(query.sql("duckdb")).to_arrow_table()

    def unscored(self, limit: int) -> pa.Table:
        return self.fetch(unscored_payload(self.payload, self.requests, limit))

    def payload_without_id(self) -> pa.Table:
        return self.fetch(payload_without_id(self.payload))

    def append(self, rows: pa.Table) -> int:
        """Insert rows whose request id is new, in one transaction; returns how many were written."""
        rows = rows.select(REQUESTS_ARROW.names).cast(REQUESTS_ARROW)
        target = quoted(self.requests)
        self.con.execute("BEGIN TRANSACTION")
        try:
            before = self.count(self.requests)
            self._from_arrow(
                f"INSERT INTO {target} SELECT * FROM incoming "
                f"WHERE request_id NOT IN (SELECT request_id FROM {target})",
                rows,
            )
            written = self.count(self.requests) - before
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return written

    def count(self, name: TableName) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {quoted(name)}").fetchone()
        return int(row[0]) if row else 0

    def pending_count(self) -> int:
        """How many payload ids the requests table still lacks (for the progress bar)."""
        query = unscored_payload(self.payload, self.requests, limit=2**62)
        row = self.con.sql(f"SELECT count(*) FROM ({query.sql('duckdb')})").fetchone()
        return int(row[0]) if row else 0

    def existing_ids(self, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Which of these request ids the requests table already holds."""
        found = pa.table({"request_id": ids})
        self.con.register("incoming", found)
        try:
            sql = (
                f"SELECT request_id FROM {quoted(self.requests)} WHERE request_id IN (SELECT request_id FROM incoming)"
            )
            return self.con.sql(sql).to_arrow_table()["request_id"].combine_chunks()
        finally:
            self.con.unregister("incoming")

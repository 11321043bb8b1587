"""The writing side of the embedded database: payload and requests tables in one DuckDB file.

Only the scoring job and the demo bootstrap write. Every call opens the file, does one thing and closes it,
so the app can read between the job's batches (DuckDB lets one process write, or many read). Each append
is one transaction: a job killed at any moment leaves whole batches behind, never half of one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import ibis
import pyarrow as pa
from filelock import FileLock, Timeout
from ibis.backends.sql.datatypes import DuckDBType

from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.layouts import detect_layout, local_served_entities, served_entities_problem
from data_access.queries import Query
from data_access.queries.job import (
    WHOLE_TABLE,
    PayloadSpec,
    PayloadWindow,
    from_epoch_ms,
    payload_time_span,
    payload_without_id,
    served_entities_probe,
    unscored_payload,
)
from data_access.schema import LAYOUT_ARROW, REQUESTS_ARROW, REQUESTS_SCHEMA
from data_access.sources import connect_duckdb, transaction


def quoted(name: TableName) -> str:
    """A validated table name, quoted for DuckDB."""
    return name.sql("duckdb")


@contextmanager
def one_job_at_a_time(lock_path: Path, what: str) -> Iterator[None]:
    """Hold a requests table for one scoring job (or backfill). A second job stops at once with a clear message
    instead of scoring the same rows again (the result would be right, the work done twice). The operating system
    drops the lock when its holder dies, so a killed job never blocks the next."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DataAccessError(
            f"Another scoring job is already scoring {what}; this one stopped without scoring anything.",
            f"Wait for the other job to finish (it holds {lock_path.name}), or stop it.",
        ) from None
    try:
        yield
    finally:
        lock.release()


def job_state_name(requests: TableName) -> TableName:
    """The job's own small table beside the requests table: one watermark per payload table it reads."""
    return TableName(requests.table + "_job_state", requests.schema, requests.catalog)


class DuckDBStore:
    def __init__(
        self,
        path: Path,
        payload: TableName,
        requests: TableName,
        lock_wait_s: float = 30.0,
        payload_format: str = "auto",
        served_entities: TableName | None = None,
    ) -> None:
        self.path = Path(path)
        self.payload = payload
        self.requests = requests
        self.job_state = job_state_name(requests)
        self.lock_wait_s = lock_wait_s
        self.payload_format = payload_format
        self.served_entities = served_entities and local_served_entities(served_entities)
        self.spec = PayloadSpec(payload)  # layout and served entities, settled by ensure_tables
        self.entities_problem: str | None = None  # why the served-entities table cannot be read, if so

    @property
    def scoring_lock_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.{self.requests}.scoring.lock")

    def one_scoring_job(self) -> contextlib.AbstractContextManager[None]:
        """Hold the requests table for one scoring job (`one_job_at_a_time`)."""
        return one_job_at_a_time(self.scoring_lock_path, f"{self.requests} in {self.path}")

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open for writing, waiting while a reader (the app) or another writer holds the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = connect_duckdb(self.path, read_only=False, wait_s=self.lock_wait_s)
        except duckdb.IOException as error:
            raise DataAccessError(
                f"Cannot open {self.path} for writing: {str(error).splitlines()[0]}",
                "Another process holds the file; stop it or retry in a moment.",
            ) from None
        try:
            yield con
        finally:
            con.close()

    @staticmethod
    def _with_arrow(con: duckdb.DuckDBPyConnection, sql: str, incoming: pa.Table) -> None:
        """Run SQL that reads an Arrow table registered as `incoming`."""
        con.register("incoming", incoming)
        try:
            con.sql(sql)
        finally:
            con.unregister("incoming")

    def _create(self, con: duckdb.DuckDBPyConnection, name: TableName, schema: pa.Schema) -> None:
        self._with_arrow(
            con, f"CREATE TABLE IF NOT EXISTS {quoted(name)} AS SELECT * FROM incoming", schema.empty_table()
        )

    def ensure_tables(self) -> None:
        with self._connect() as con:
            (exists,) = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = ?",
                [self.payload.table, self.payload.schema or "main"],
            ).fetchall()[0]
            if not exists:
                raise DataAccessError(
                    f"The payload table {self.payload} is not in {self.path.name}.",
                    "Point --payload-table at the inference table, or build the demo data first.",
                )
            layout = detect_layout(lambda sql: con.sql(sql).columns, self.payload, "duckdb", self.payload_format)
            self.spec = PayloadSpec(self.payload, layout, self._readable_entities(con) if layout == "gateway" else None)
            self._create(con, self.requests, REQUESTS_ARROW)
            con.sql(
                f"CREATE TABLE IF NOT EXISTS {quoted(self.job_state)} (payload_table VARCHAR PRIMARY KEY, "
                "watermark TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL)"
            )
            self._add_missing_columns(con)

    def _readable_entities(self, con: duckdb.DuckDBPyConnection) -> TableName | None:
        """The served-entities table when it can be read, else None with `entities_problem` saying why."""
        self.entities_problem = None
        if self.served_entities is None:
            return None
        try:
            con.sql(served_entities_probe(self.served_entities).sql("duckdb")).fetchall()
        except duckdb.Error as error:
            self.entities_problem = served_entities_problem(self.served_entities, str(error).splitlines()[0][:200])
            return None
        return self.served_entities

    def ensure_requests_columns(self) -> None:
        """Give a requests table written before the AI Gateway columns existed those (nullable) columns."""
        with self._connect() as con:
            self._add_missing_columns(con)

    def _add_missing_columns(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = ?",
            [self.requests.table, self.requests.schema or "main"],
        ).fetchall()
        present = {name for (name,) in rows}
        if not present:
            return  # no requests table yet: the job creates it whole
        for name, dtype in REQUESTS_SCHEMA.items():  # rows are inserted by name, so where a column lands is moot
            if name not in present:
                column_type = DuckDBType.from_ibis(dtype).sql("duckdb")
                con.sql(f'ALTER TABLE {quoted(self.requests)} ADD COLUMN "{name}" {column_type}')

    def replace_payload(self, batches: Iterable[pa.Table] | pa.Table, layout: str = "legacy") -> None:
        """(Re)write the payload table in a layout; used by the demo bootstrap and tests."""
        self.replace_table(self.payload, batches, LAYOUT_ARROW[layout])

    def replace_table(self, name: TableName, batches: Iterable[pa.Table] | pa.Table, schema: pa.Schema) -> None:
        """(Re)write any table from Arrow batches (the demo's served-entities table, test fixtures)."""
        with self._connect() as con:
            if name.schema:
                con.sql(f'CREATE SCHEMA IF NOT EXISTS "{name.schema}"')
            con.sql(f"DROP TABLE IF EXISTS {quoted(name)}")
            self._create(con, name, schema)
            for batch in [batches] if isinstance(batches, pa.Table) else batches:
                self._with_arrow(con, f"INSERT INTO {quoted(name)} SELECT * FROM incoming", batch)

    def _fetch(self, query: Query) -> pa.Table:
        with self._connect() as con:
            return con.sql(query.sql("duckdb")).to_arrow_table()

    def unscored(self, limit: int, window: PayloadWindow = WHOLE_TABLE) -> pa.Table:
        return self._fetch(unscored_payload(self.spec, self.requests, limit, window))

    def payload_without_id(self, window: PayloadWindow = WHOLE_TABLE) -> pa.Table:
        return self._fetch(payload_without_id(self.spec, window))

    def pending_count(self, window: PayloadWindow = WHOLE_TABLE) -> int:
        """How many payload ids in the window the requests table still lacks (for the progress bar)."""
        query = unscored_payload(self.spec, self.requests, None, window)
        with self._connect() as con:
            return int(con.sql(ibis.to_sql(query.expr.count(), dialect="duckdb")).fetchall()[0][0])

    def latest_payload_time(self, window: PayloadWindow = WHOLE_TABLE) -> datetime | None:
        """The newest payload time in the window, None for an empty one."""
        latest = self._fetch(payload_time_span(self.spec, window))["latest"][0].as_py()
        return from_epoch_ms(latest) if isinstance(latest, int) else latest

    def watermark(self) -> datetime | None:
        """Payload time up to which every payload row was written (committed with those rows); None: no run yet."""
        with self._connect() as con:
            try:
                found = con.execute(
                    f"SELECT watermark FROM {quoted(self.job_state)} WHERE payload_table = ?", [str(self.payload)]
                ).fetchall()
            except duckdb.CatalogException:  # the job never ran on this file
                return None
        return found[0][0] if found else None

    def existing_ids(self, ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """Which of these request ids the requests table already holds."""
        with self._connect() as con:
            con.register("incoming", pa.table({"request_id": ids}))
            sql = (
                f"SELECT request_id FROM {quoted(self.requests)} WHERE request_id IN (SELECT request_id FROM incoming)"
            )
            return con.sql(sql).to_arrow_table()["request_id"].combine_chunks()

    def append(self, rows: pa.Table, watermark: datetime | None = None) -> int:
        """Insert rows whose request id is new and move the watermark, in one transaction; returns rows written.

        The watermark commits with the rows it covers, so a kill leaves both or neither; it never moves back.
        """
        rows = rows.select(REQUESTS_ARROW.names).cast(REQUESTS_ARROW)
        target = quoted(self.requests)
        with self._connect() as con, transaction(con):
            before = self._count(con, self.requests)
            # By name: a table upgraded with ADD COLUMN may order its columns otherwise than REQUESTS_ARROW.
            self._with_arrow(
                con,
                f"INSERT INTO {target} BY NAME SELECT * FROM incoming "
                f"WHERE request_id NOT IN (SELECT request_id FROM {target}) "
                "QUALIFY row_number() OVER (PARTITION BY request_id) = 1",  # an id repeated in the batch once
                rows,
            )
            written = self._count(con, self.requests) - before
            if watermark is not None:
                self._advance(con, watermark)
        return written

    # --- Backfill: one scorer's columns filled in on rows written without them (jobs/backfill.py) ---

    def _unscored_where(self, scorer_column: str, since: date | None, needs: str | None) -> tuple[str, list]:
        where = f'"{scorer_column}" IS NULL'
        params: list = []
        if since is not None:
            where += " AND date >= ?"
            params.append(since)
        if needs:  # e.g. RAG support: only rows with a retrieved context can be scored
            where += f' AND "{needs}" IS NOT NULL'
        return where, params

    def unscored_count(self, scorer_column: str, since: date | None, needs: str | None = None) -> int:
        """How many requests rows a scorer has not scored (from `since` on)."""
        where, params = self._unscored_where(scorer_column, since, needs)
        with self._connect() as con:
            return int(
                con.execute(f"SELECT count(*) FROM {quoted(self.requests)} WHERE {where}", params).fetchall()[0][0]
            )

    def unscored_rows(
        self,
        scorer_column: str,
        since: date | None,
        after: tuple[date | None, str] | None,
        limit: int,
        needs: str | None = None,
        columns: tuple[str, ...] = (),
    ) -> pa.Table:
        """The next rows a scorer has not scored, in (date, request_id) order after `after` (rows without a date
        last), with their date and `columns`."""
        where, params = self._unscored_where(scorer_column, since, needs)
        if after is not None and after[0] is None:
            where += " AND date IS NULL AND request_id > ?"
            params.append(after[1])
        elif after is not None:
            where += " AND (date > ? OR (date = ? AND request_id > ?) OR date IS NULL)"
            params += [after[0], after[0], after[1]]
        selected = ", ".join(f'"{name}"' for name in ("date", "request_id", *columns))
        order = f"ORDER BY date NULLS LAST, request_id LIMIT {int(limit)}"
        with self._connect() as con:
            return con.sql(
                f"SELECT {selected} FROM {quoted(self.requests)} WHERE {where} {order}", params=params
            ).to_arrow_table()

    def fill_scores(self, rows: pa.Table, scorer_column: str, days: list[date | None]) -> int:
        """Set a scorer's columns (and `sample_rates`; reasons appended to `score_error`) on rows it has not
        scored, and refresh those dates' rollups, in one transaction; returns rows updated."""
        target = quoted(self.requests)
        assignments = [f'"{name}" = incoming."{name}"' for name in rows.column_names if name != "request_id"]
        assignments = [a for a in assignments if not a.startswith('"score_error"')]
        if "score_error" in rows.column_names:
            assignments.append(
                f"score_error = CASE WHEN incoming.score_error IS NULL THEN {target}.score_error "
                f"WHEN {target}.score_error IS NULL THEN incoming.score_error "
                f"ELSE {target}.score_error || '; ' || incoming.score_error END"
            )
        sql = (
            f"UPDATE {target} SET {', '.join(assignments)} FROM incoming "
            f'WHERE {target}.request_id = incoming.request_id AND {target}."{scorer_column}" IS NULL'
        )
        from data_access.rollup_refresh import refresh_rollups

        with self._connect() as con, transaction(con):
            con.register("incoming", rows)
            try:
                (updated,) = con.execute(sql).fetchone() or (0,)
            finally:
                con.unregister("incoming")
            # The changed dates' pre-aggregates (rows without a date: all of them) in the same commit.
            refresh_rollups(con, self.requests, days, rebuild=None in days, own_transaction=False)
        return int(updated)

    def _advance(self, con: duckdb.DuckDBPyConnection, watermark: datetime) -> None:
        con.execute(
            f"INSERT INTO {quoted(self.job_state)} VALUES (?, ?, ?) ON CONFLICT (payload_table) DO UPDATE SET "
            "watermark = greatest(watermark, excluded.watermark), updated_at = excluded.updated_at",
            [str(self.payload), watermark, datetime.now(UTC).replace(tzinfo=None)],
        )

    def refresh_rollups(self) -> None:
        """Bring the analytics rollups up to date (only dates whose request counts changed are rebuilt)."""
        from data_access.rollup_refresh import refresh_rollups

        with self._connect() as con:
            refresh_rollups(con, self.requests)

    @staticmethod
    def _count(con: duckdb.DuckDBPyConnection, name: TableName) -> int:
        return int(con.sql(f"SELECT count(*) FROM {quoted(name)}").fetchall()[0][0])

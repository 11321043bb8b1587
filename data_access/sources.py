"""Where compiled SQL runs: embedded DuckDB, a Databricks SQL warehouse, or a Spark session.

A source takes SQL text that the query catalog compiled for its dialect and returns Arrow. Every failure
leaves here as a `DataAccessError` that names what to fix, with secrets removed.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from data_access.config import DatabricksSettings, Settings
from data_access.errors import DataAccessError, redact


class Source(Protocol):
    dialect: str  # the Ibis/sqlglot dialect the catalog compiles for
    label: str  # says where data comes from, without secrets

    def execute(self, sql: str) -> pa.Table: ...


class DuckDBSource:
    """Reads an embedded DuckDB file. Connects per query, read-only, so the scoring job can write between queries."""

    dialect = "duckdb"

    def __init__(self, path: Path, lock_wait_s: float = 5.0) -> None:
        self.path = Path(path)
        self.label = f"embedded DuckDB ({self.path.name})"
        self.lock_wait_s = lock_wait_s

    def execute(self, sql: str) -> pa.Table:
        if not self.path.exists():
            raise DataAccessError(
                f"The embedded database {self.path} does not exist.",
                "Start the app once to build the demo data, or run `python -m jobs.score --duckdb PATH`.",
            )
        try:
            with connect_duckdb(self.path, read_only=True, wait_s=self.lock_wait_s) as con:
                return con.sql(sql).to_arrow_table()
        except duckdb.IOException as error:
            raise _duckdb_error(error, self.path) from None
        except duckdb.CatalogException as error:
            raise DataAccessError(
                f"A table is missing from {self.path.name}: {_first_line(error)}",
                "Run the scoring job (`python -m jobs.score`) to create the requests table.",
            ) from None
        except duckdb.Error as error:
            raise DataAccessError(f"The embedded database rejected a query: {_first_line(error)}") from None


def _is_lock_conflict(error: BaseException) -> bool:
    return isinstance(error, duckdb.IOException) and "lock" in str(error).lower()


def connect_duckdb(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, waiting up to `wait_s` while another process holds it for writing (DuckDB lets one
    process write, or many read: the scoring job and the app take turns, one batch at a time). After the wait
    the last lock error is raised."""
    retrying = Retrying(
        retry=retry_if_exception(_is_lock_conflict),
        stop=stop_after_delay(wait_s),
        wait=wait_fixed(0.1),
        reraise=True,
    )
    return retrying(duckdb.connect, str(path), read_only=read_only)


def _duckdb_error(error: Exception, path: Path) -> DataAccessError:
    text = str(error).lower()
    if "lock" in text:
        return DataAccessError(
            f"{path.name} is locked by another process.",
            "Wait for the scoring job's batch to finish, or stop the other process that has the file open.",
        )
    return DataAccessError(
        f"Cannot open {path}: {_first_line(error)}", "Check that the file exists and is a DuckDB database."
    )


class DatabricksSQLSource:
    """Runs SQL on a Databricks SQL warehouse through databricks-sql-connector (PAT or OAuth via databricks-sdk)."""

    dialect = "databricks"

    def __init__(
        self, settings: DatabricksSettings, timeout_s: int = 120, connect_options: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.connect_options = connect_options or {}
        self.label = f"Databricks SQL warehouse ({settings.host})"
        self._connection: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        from databricks import sql

        host, _, port = self.settings.host.partition(":")
        options: dict[str, Any] = {
            "server_hostname": host,
            "http_path": self.settings.http_path,
            "session_configuration": {"STATEMENT_TIMEOUT": str(self.timeout_s)},
            "_socket_timeout": self.timeout_s,
            "_retry_stop_after_attempts_count": 3,
            "_retry_stop_after_attempts_duration": min(60, self.timeout_s),
            **({"_port": int(port)} if port else {}),
            **({"_tls_trusted_ca_file": self.settings.tls_ca_file} if self.settings.tls_ca_file else {}),
            **self.connect_options,
        }
        if self.settings.token:
            options["access_token"] = self.settings.token
        else:
            options["credentials_provider"] = self._sdk_credentials()
        return sql.connect(**options)

    def _sdk_credentials(self) -> Callable[[], Any]:
        # OAuth machine-to-machine, as Databricks Apps injects it (DATABRICKS_CLIENT_ID/SECRET), or any SDK auth.
        from databricks.sdk.core import Config

        config = Config(
            host=f"https://{self.settings.host}",
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret,
        )
        return lambda: config.authenticate

    def execute(self, sql_text: str) -> pa.Table:
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                with self._connection.cursor() as cursor:
                    cursor.execute(sql_text)
                    return cursor.fetchall_arrow()
            except Exception as error:  # the connector raises many types; all become one clear message
                if not _statement_failed(error):
                    # The session may be broken: open a new one next time. A statement the warehouse rejected or
                    # timed out leaves its session healthy; dropping it would leak it until garbage collection,
                    # whose close then blocks some later caller with retries.
                    self._connection = None
                raise databricks_error(error, self.settings) from None


def _statement_failed(error: Exception) -> bool:
    """Whether the warehouse ran the statement and reported its failure (SQL error, STATEMENT_TIMEOUT)."""
    from databricks.sql.exc import ServerOperationError

    return isinstance(error, ServerOperationError)


def _accepts_connections(host: str, timeout_s: float = 3.0) -> bool:
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def databricks_error(error: Exception, settings: DatabricksSettings) -> DataAccessError:
    """Turn a connector/SDK failure into what to fix, never echoing a token."""
    context = getattr(error, "context", None) or {}  # the connector's RequestError carries the HTTP status here
    detail = f" (HTTP {context['http-code']}) {context.get('error-message') or ''}" if context.get("http-code") else ""
    # After retries the connector's message only says the retry budget ran out; the cause is in its arguments.
    causes = " ".join(repr(arg) for arg in (*getattr(error, "args", ()), context.get("original-exception")) if arg)
    text = redact(f"{type(error).__name__}: {error}{detail} {causes}", settings.secrets)
    lowered = text.lower()
    where = f"the SQL warehouse at {settings.host}{settings.http_path}"
    if re.search(r"\b(401|403)\b|unauthori[sz]ed|invalid access token|permission_denied|forbidden", lowered):
        return DataAccessError(
            f"Databricks refused the credentials for {where}.",
            "Check the token (or OAuth client id and secret) in .streamlit/secrets.toml or the environment, "
            "and that this identity may use the warehouse and read the tables.",
        )
    if re.search(r"table_or_view_not_found|cannot be found|schema_not_found|does not exist", lowered):
        return DataAccessError(
            f"A table was not found on {where}: {_first_line(text)}",
            "Check payload_table and requests_table (catalog.schema.table) in the [app] settings.",
        )
    if re.search(r"timed? ?out|timeout|deadline", lowered):
        return DataAccessError(
            f"The query on {where} timed out.",
            "Narrow the date range, pick a coarser granularity, or raise query_timeout_s; a stopped warehouse "
            "may need a minute to start.",
        )
    # After its retries the connector no longer says whether anything answered: ask the network directly.
    gave_up = "retry policy" in lowered and context.get("http-code") is None
    if (gave_up and not _accepts_connections(settings.host)) or re.search(
        r"connect|resolve|name or service|refused|unreachable|max retries|ssl|404", lowered
    ):
        return DataAccessError(
            f"Cannot reach {where}.",
            "Check host and warehouse_id/http_path, that the warehouse exists, and the network path to it.",
        )
    if re.search(r"\b(502|503|504)\b|temporarily unavailable|retry policy", lowered):
        return DataAccessError(
            f"The SQL warehouse at {settings.host}{settings.http_path} is not available right now "
            "(starting, stopped or overloaded).",
            "A stopped serverless or pro warehouse starts on the first query: retry in a minute, or start it "
            "in the Databricks SQL Warehouses page.",
        )
    return DataAccessError(f"The query on {where} failed: {_first_line(text)}")


class SparkSource:
    """Runs the Databricks-dialect SQL on a Spark session (a Databricks cluster or notebook, or local pyspark)."""

    dialect = "databricks"

    def __init__(self, spark: Any) -> None:
        self.spark = spark
        self.label = f"Spark session ({spark.sparkContext.master})"

    def execute(self, sql: str) -> pa.Table:
        try:
            return self.spark.sql(sql).toArrow()
        except Exception as error:  # AnalysisException and friends
            raise DataAccessError(f"Spark rejected a query: {_first_line(error)}") from None


def _first_line(error: object) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def open_source(settings: Settings) -> Source:
    """The source the settings select."""
    if settings.backend == "databricks" and settings.databricks is not None:
        return DatabricksSQLSource(settings.databricks, timeout_s=settings.query_timeout_s)
    return DuckDBSource(settings.duckdb_path)

"""Where compiled SQL runs: embedded DuckDB, a Databricks SQL warehouse, or a Spark session.

A source takes SQL text that the query catalog compiled for its dialect and returns Arrow. Every failure
leaves here as a `DataAccessError` that names what to fix, with secrets removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from data_access.config import DatabricksSettings, Settings
from data_access.errors import DataAccessError, redact
from data_access.identity import APP_CREDENTIAL, Credential
from data_access.warehouse_sessions import (
    CANCEL_GRACE_S,
    BoundedCall,
    ConnectTimedOut,
    QueryWatch,
    SessionPool,
    close_cursor,
)


class Source(Protocol):
    dialect: str  # the Ibis/sqlglot dialect the catalog compiles for
    label: str  # says where data comes from, without secrets

    def execute(self, sql: str) -> pa.Table: ...


class DuckDBSource:
    """Reads an embedded DuckDB file, read-only. Outside `held()` it connects per query; inside, the queries of one
    page run share one connection. Either way the file is free between page runs, so the scoring job (another
    process, which DuckDB's file lock keeps out while any reader has the file open) can write its batches."""

    dialect = "duckdb"

    def __init__(self, path: Path, lock_wait_s: float = 5.0) -> None:
        self.path = Path(path)
        self.label = f"embedded DuckDB ({self.path.name})"
        self.lock_wait_s = lock_wait_s
        self._held: contextvars.ContextVar[_HeldConnection | None] = contextvars.ContextVar(
            f"duckdb-held-{id(self)}", default=None
        )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Within this block, this thread's queries (one page run) share one read-only connection: opened at the
        first query (a block whose results all come from the cache never opens the file) and closed when the block
        ends. Opening the 4 GB file costs about 18 ms per connection, more than most rollup queries. Nested blocks
        share the outer one; other threads (other sessions) hold their own."""
        if self._held.get() is not None:
            yield
            return
        held = _HeldConnection(self)
        token = self._held.set(held)
        try:
            yield
        finally:
            self._held.reset(token)
            held.close()

    def execute(self, sql: str) -> pa.Table:
        held = self._held.get()
        try:
            if held is not None:
                return held.connection().sql(sql).to_arrow_table()
            with self.connect() as con:
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

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection, waiting up to lock_wait_s while the scoring job writes."""
        if not self.path.exists():
            raise DataAccessError(
                f"The embedded database {self.path} does not exist.",
                "Start the app once to build the demo data, or run `python -m jobs.score --duckdb PATH`.",
            )
        return connect_duckdb(self.path, read_only=True, wait_s=self.lock_wait_s)


class _HeldConnection:
    """The connection of one `DuckDBSource.held()` block, opened on first use."""

    def __init__(self, source: DuckDBSource) -> None:
        self.source = source
        self._con: duckdb.DuckDBPyConnection | None = None

    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = self.source.connect()
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def page_run(source: Source) -> contextlib.AbstractContextManager[None]:
    """The span of one page's queries, as the app runs a page and the benchmarks time one: on the embedded file one
    shared read connection (`DuckDBSource.held`); other sources keep their own connections (a warehouse's pool, a
    Spark session), so there it changes nothing."""
    return source.held() if isinstance(source, DuckDBSource) else contextlib.nullcontext()


# DuckDB 2.0 keeps one database object per file in a process, made by the first connection, shared by the next and
# closed with the last; each new connection also registers its Arrow scan (`python_arrow_scan`) on it. Connections to
# one file opened on several threads at once (the scoring job's reader and writer, the app's concurrent sessions) failed
# with "Unique file handle conflict" or "python_arrow_scan does not exist" (CI, Dec 4): this process opens them one
# at a time. Stress, 3 threads opening and closing and 1 writing Arrow rows, 3,000 writes: 2,178 failed, none now.
_OPENING = threading.Lock()


def _is_transient(error: BaseException) -> bool:
    """Another process's write lock, or this process's last connection to the file still closing."""
    text = str(error).lower()
    return (isinstance(error, duckdb.IOException) and "lock" in text) or (
        isinstance(error, duckdb.ResourceInUseException) and "unique file handle conflict" in text
    )


def _open_duckdb(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    with _OPENING:
        return duckdb.connect(str(path), read_only=read_only)


def connect_duckdb(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, waiting up to `wait_s` while another process holds it for writing (DuckDB lets one
    process write, or many read: the scoring job and the app take turns, one batch at a time). After the wait
    the last lock error is raised."""
    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_delay(wait_s),
        wait=wait_fixed(0.1),
        reraise=True,
    )
    return retrying(_open_duckdb, path, read_only)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on an open connection: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


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


class QueryCancelled(DataAccessError):
    """A query stopped before it finished because its page was left or rerun, or it outlived the query timeout;
    it was cancelled on the warehouse too."""


class DatabricksSQLSource:
    """Runs SQL on a Databricks SQL warehouse through databricks-sql-connector (PAT or OAuth via databricks-sdk).

    Each credential (the app's own, or one viewer's forwarded token) has a small pool of warehouse connections, so
    sessions do not queue behind one another's queries and no viewer's query runs on another's session. Every wait is
    bounded: the pool (pool_timeout_s), connecting (connect_timeout_s), the statement (query_timeout_s, enforced by the
    warehouse, with a client-side cancel shortly after as a backstop). A query whose caller stops waiting (`should_stop`
    turns true: a Streamlit rerun or stop) is cancelled on the warehouse, and its connection goes back to the pool,
    or is closed when it may be broken: never leaked.
    """

    dialect = "databricks"

    def __init__(
        self,
        settings: DatabricksSettings,
        timeout_s: int = 120,
        connect_options: dict[str, Any] | None = None,
        connect_timeout_s: int | None = None,
        pool_size: int = 4,
        pool_timeout_s: float | None = None,
        idle_s: float = 300.0,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        # The longest a connection attempt (host lookup, OAuth discovery and token, opening the session) may take.
        self.connect_timeout_s = min(connect_timeout_s or timeout_s, timeout_s)
        self.connect_options = connect_options or {}
        self.pool_size = pool_size
        self.pool_timeout_s = pool_timeout_s if pool_timeout_s is not None else self.timeout_s + self.connect_timeout_s
        self.idle_s = idle_s  # an idle connection (and a viewer's pool) is closed after this
        self.label = f"Databricks SQL warehouse ({settings.host})"
        self._pools: dict[str, SessionPool] = {}
        self._pools_lock = threading.Lock()
        self._signing_in = BoundedCall("sign-in")

    def bind(self, credential: Credential, should_stop: Callable[[], bool] | None = None) -> Source:
        """This source as one session sees it: queries run with `credential` and stop when `should_stop()`."""
        return _Bound(self, credential, should_stop)

    def execute(
        self, sql_text: str, credential: Credential = APP_CREDENTIAL, should_stop: Callable[[], bool] | None = None
    ) -> pa.Table:
        self._close_idle()
        pool = self._pool(credential)
        try:
            table, stopped = self._run_pooled(pool, sql_text, credential, should_stop)
        finally:
            with self._pools_lock:
                pool.users -= 1
        if table is None:
            raise QueryCancelled(
                f"The query on {self._where} was cancelled: {stopped}.",
                "Reload the page to run it again; narrow the date range or raise query_timeout_s if it is slow.",
            )
        return table

    def _run_pooled(
        self, pool: SessionPool, sql_text: str, credential: Credential, should_stop: Callable[[], bool] | None
    ) -> tuple[pa.Table | None, str | None]:
        try:
            connection = pool.acquire(self.pool_timeout_s, self._where)
        except DataAccessError:
            raise
        except Exception as error:  # connecting or signing in failed
            raise databricks_error(error, self.settings, self.connect_timeout_s, credential) from None
        healthy = False
        try:
            table, healthy, stopped = self._run(connection, sql_text, should_stop)
        except Exception as error:  # the connector raises many types; all become one clear message
            # A statement the warehouse rejected or timed out leaves its session healthy; anything else may have
            # broken it: it is closed rather than reused.
            healthy = _statement_failed(error)
            raise databricks_error(error, self.settings, self.connect_timeout_s, credential) from None
        finally:
            pool.release(connection, healthy)
        return table, stopped

    def close(self) -> None:
        """Close every idle connection now, waiting for the warehouse to close its sessions (connections in use go
        back to their pool when their query ends)."""
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close_idle(0.0, wait=True)

    @property
    def _where(self) -> str:
        return f"the SQL warehouse at {self.settings.host}{self.settings.http_path}"

    def _pool(self, credential: Credential) -> SessionPool:
        with self._pools_lock:
            pool = self._pools.get(credential.key)
            if pool is None:
                pool = SessionPool(self.pool_size, lambda: self._open(credential), self.connect_timeout_s)
                self._pools[credential.key] = pool
            pool.users += 1  # a pool being used is never forgotten (its connections would go unclosed)
            return pool

    def _close_idle(self) -> None:
        """Close connections idle longer than idle_s, and forget viewers' pools left with none."""
        with self._pools_lock:
            pools = list(self._pools.items())
        for key, pool in pools:
            if pool.close_idle(self.idle_s) and key != APP_CREDENTIAL.key:
                with self._pools_lock:
                    if pool.empty and not pool.users:
                        self._pools.pop(key, None)

    def _run(
        self, connection: Any, sql_text: str, should_stop: Callable[[], bool] | None
    ) -> tuple[pa.Table | None, bool, str | None]:
        """Run one statement: its result (None when it was cancelled), whether the connection may be reused, and why
        it was cancelled. A watcher cancels the statement on the warehouse when the caller stops waiting or it runs
        too long."""
        cursor = connection.cursor()
        watch = QueryWatch(cursor, should_stop, self.timeout_s + CANCEL_GRACE_S)
        table = None
        try:
            cursor.execute(sql_text)
            table = cursor.fetchall_arrow()
        except Exception:
            if watch.reason is None:
                raise
        finally:
            watch.finish()
            reusable = close_cursor(cursor, cancelled=table is None)
        return table, reusable, watch.reason

    def _open(self, credential: Credential) -> Any:
        address_problem = _unreachable(self.settings.host, self.connect_timeout_s)
        if address_problem:
            raise ConnectFailed(address_problem)
        return self._connect(credential)

    def _connect(self, credential: Credential = APP_CREDENTIAL) -> Any:
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
        if credential.token:  # the viewer's own token: Unity Catalog applies their grants and row filters
            options["access_token"] = credential.token
        elif self.settings.token:
            options["access_token"] = self.settings.token
        else:
            options["credentials_provider"] = self._sdk_credentials()
        return sql.connect(**options)

    def _sdk_credentials(self) -> Callable[[], Any]:
        # OAuth machine-to-machine, as Databricks Apps injects it (DATABRICKS_CLIENT_ID/SECRET), or any SDK auth.
        from databricks.sdk.core import Config

        bound = self.connect_timeout_s
        try:
            config = Config(
                host=f"https://{self.settings.host}",
                client_id=self.settings.client_id,
                client_secret=self.settings.client_secret,
                # Bounds the SDK's host-metadata lookup; its OIDC discovery and token request ignore these, which
                # is why every SDK call also runs under BoundedCall.
                http_timeout_seconds=bound,
                retry_timeout_seconds=bound,
            )
        except ValueError as error:  # the SDK reports every sign-in failure as ValueError
            raise SignInError(str(error)) from None
        headers = config.authenticate  # a token refresh may reach the token endpoint: bound it too
        return lambda: lambda: self._signing_in(headers, self.connect_timeout_s)


class _Bound:
    """A DatabricksSQLSource seen through one session: its credential and its stop signal."""

    def __init__(self, source: DatabricksSQLSource, credential: Credential, should_stop: Callable[[], bool] | None):
        self.source, self.credential, self.should_stop = source, credential, should_stop
        self.dialect, self.label = source.dialect, source.label

    def execute(self, sql: str) -> pa.Table:
        return self.source.execute(sql, self.credential, self.should_stop)


def _statement_failed(error: Exception) -> bool:
    """Whether the warehouse ran the statement and reported its failure (SQL error, STATEMENT_TIMEOUT)."""
    from databricks.sql.exc import ServerOperationError

    return isinstance(error, ServerOperationError)


class ConnectFailed(Exception):
    """The warehouse's address cannot be reached at all (no such name, connection refused)."""


class SignInError(Exception):
    """The SDK could not sign in (OAuth discovery or token request failed)."""


def _unreachable(host: str, timeout_s: float) -> str | None:
    """Why `host` cannot be reached over TCP, or None when it accepts connections (or a proxy is in the way).

    A name that does not resolve or a refused port is known in milliseconds; waiting out library retries for it
    would only hide the cause. Behind an HTTP(S) proxy a direct probe proves nothing, so it is skipped.
    """
    name, _, port = host.partition(":")
    if urllib.request.getproxies().get("https") and not urllib.request.proxy_bypass(name):
        return None
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout_s):
            return None
    except socket.gaierror:
        return f"the name {name} does not resolve"
    except ConnectionRefusedError:
        return f"{name} refused the connection on port {port or 443}"
    except TimeoutError:
        return f"{name} did not accept a connection on port {port or 443} within {timeout_s:g} s"
    except (OSError, ValueError) as error:
        return f"{name}:{port or 443} cannot be reached ({type(error).__name__})"


def _connect_problem(error: Exception, secrets: list[str | None]) -> tuple[str, str] | None:
    """What went wrong while connecting or signing in, if that is where `error` came from (also when the connector
    wrapped our bounded token request in its own error)."""
    seen: Exception | None = error
    for _ in range(5):  # the connector nests the cause in args or its context
        if isinstance(seen, ConnectTimedOut):
            return "Cannot reach", f"no answer within {seen.seconds:g} s (connect_timeout_s, capped by query_timeout_s)"
        if isinstance(seen, ConnectFailed):
            return "Cannot reach", str(seen)
        if isinstance(seen, SignInError):
            return "Cannot sign in to", _first_line(redact(str(seen), secrets))
        context = getattr(seen, "context", None) or {}
        nested = [*getattr(seen, "args", ()), context.get("original-exception"), seen.__cause__]
        seen = next((arg for arg in nested if isinstance(arg, Exception)), None)
        if seen is None:
            return None
    return None


def databricks_error(
    error: Exception,
    settings: DatabricksSettings,
    connect_timeout_s: float = 30,
    credential: Credential = APP_CREDENTIAL,
) -> DataAccessError:
    """Turn a connector/SDK failure into what to fix, never echoing a token (the app's or the viewer's)."""
    where = f"the SQL warehouse at {settings.host}{settings.http_path}"
    secrets = [*settings.secrets, credential.token]
    connect_problem = _connect_problem(error, secrets)
    if connect_problem:
        failed, problem = connect_problem
        return DataAccessError(
            f"{failed} {where} with {settings.auth_method}: {problem}.",
            "Check that host is this workspace's address (e.g. adb-123.4.azuredatabricks.net), that "
            "warehouse_id or http_path names one of its SQL warehouses, and that the network path from the app "
            "to the workspace is open (firewall, proxy, private link)"
            + (
                "; for OAuth, that the client id and secret belong to a service principal of this workspace."
                if not settings.token
                else "."
            ),
        )
    context = getattr(error, "context", None) or {}  # the connector's RequestError carries the HTTP status here
    detail = f" (HTTP {context['http-code']}) {context.get('error-message') or ''}" if context.get("http-code") else ""
    # After retries the connector's message only says the retry budget ran out; the cause is in its arguments.
    causes = " ".join(repr(arg) for arg in (*getattr(error, "args", ()), context.get("original-exception")) if arg)
    text = redact(f"{type(error).__name__}: {error}{detail} {causes}", secrets)
    lowered = text.lower()
    refused = re.search(r"\b(401|403)\b|unauthori[sz]ed|invalid access token|permission_denied|forbidden", lowered)
    if refused and credential.is_viewer:
        return DataAccessError(
            f"Databricks refused your own credentials (forwarded by Databricks Apps) for {where}.",
            "Reload the page if it was open for long (Databricks forwards a fresh token). Queries run with your "
            "permissions: ask for CAN USE on the SQL warehouse and SELECT on the tables, and check that the app's "
            "user authorization includes the scope sql. An admin can set "
            "INFERENCE_EXPLORER_VIEWER_CREDENTIALS=app to run every query as the app's service principal instead.",
        )
    if refused:
        return DataAccessError(
            f"Databricks refused the credentials ({settings.auth_method}) for {where}.",
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
    if (gave_up and _unreachable(settings.host, min(3.0, connect_timeout_s))) or re.search(
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
        return DatabricksSQLSource(
            settings.databricks,
            timeout_s=settings.query_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            pool_size=settings.warehouse_pool_size,
            pool_timeout_s=settings.pool_timeout_s,
        )
    return DuckDBSource(settings.duckdb_path)

"""A loopback Databricks SQL warehouse for tests: stands in for the workspace at the wire, nothing more.

databricks-sql-connector talks TCLIService (Thrift, binary protocol) in the bodies of HTTPS POSTs to the
warehouse's HTTP path. This server answers those calls with the connector's own generated Thrift code
(`TCLIService.Processor`), so the connector and `DatabricksSQLSource` run unchanged: sessions, bearer
tokens, statement text, long-polled status, Arrow result batches (LZ4 when the client accepts it) and
paged fetches all cross a real TLS socket. It also answers the workspace's OAuth discovery and token
endpoints, so the SDK's machine-to-machine flow can run against it.

TEST-ONLY CHOICE: a statement runs on local DuckDB after sqlglot transpiles it from "databricks" to
"duckdb", over a DuckDB file the test prepared; `viewers` gives each bearer token a file of its own, standing in for
Unity Catalog's row filters, so two viewers' tokens see different rows. `hold` keeps chosen statements running until
a test releases them (or the client cancels them), and `open_sessions` / `cancelled` count what the server holds, so
tests assert on events and counts, never on wall time. That proves the connector path, not that Databricks SQL
means the same as DuckDB SQL; Spark-dialect parity is tested on pyspark in tests/test_spark_parity.py.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import lz4.frame
import pyarrow as pa
import sqlglot
from databricks.sql.thrift_api.TCLIService import TCLIService
from databricks.sql.thrift_api.TCLIService import ttypes as t
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.transport.TTransport import TMemoryBuffer

from testkit.wire import _self_signed

HTTP_PATH = "/sql/1.0/warehouses/fake123"
# The connector asks for V7 and accepts anything from V2 up; answer what it asks for, as a current warehouse does.
PROTOCOL_VERSION = t.TProtocolVersion.SPARK_CLI_SERVICE_PROTOCOL_V7
# How Databricks words a statement cancelled at its STATEMENT_TIMEOUT (error class QUERY_EXECUTION_TIMEOUT_EXCEEDED).
TIMEOUT_MESSAGE = (
    "[QUERY_EXECUTION_TIMEOUT_EXCEEDED] Query execution was cancelled due to exceeding the timeout ({seconds}s). "
    "SQLSTATE: 57KD0"
)
_OK = t.TStatus(statusCode=t.TStatusCode.SUCCESS_STATUS)


@dataclass(frozen=True)
class Statement:
    """One statement as the warehouse received it."""

    text: str
    session_configuration: dict[str, str]
    conf_overlay: dict[str, str]


@dataclass(frozen=True)
class Call:
    """One Thrift call: its method name and the Authorization header it came with."""

    method: str
    authorization: str | None


@dataclass
class Hold:
    """Statements matching `matches` stay running until `release()` or until the client cancels them; `fail()`
    ends them without running, with an error, as when the warehouse stops under them."""

    matches: Callable[[str], bool]
    released: threading.Event = field(default_factory=threading.Event)
    failed: threading.Event = field(default_factory=threading.Event)
    arrived: list[str] = field(default_factory=list)  # the held statements, in arrival order
    arrival: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))  # one release per arrival

    def release(self) -> None:
        self.released.set()

    def fail(self) -> None:
        self.failed.set()
        self.released.set()

    def wait_for_arrival(self, timeout_s: float = 60.0) -> None:
        """Block until one more held statement has arrived (a guard against a hang, not a timing check)."""
        if not self.arrival.acquire(timeout=timeout_s):
            raise AssertionError(f"no held statement arrived within {timeout_s:g} s")


@dataclass
class _Operation:
    handle: t.TOperationHandle
    statement: str
    timeout_s: int  # 0: none
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    lz4: bool = False  # whether result batches go LZ4-compressed (when the client says it can decompress)
    database: Path | None = None  # the DuckDB file this statement's session reads
    result: pa.Table | None = None
    error: str | None = None
    sent_rows: int = 0


def _handle_id() -> t.THandleIdentifier:
    return t.THandleIdentifier(guid=secrets.token_bytes(16), secret=secrets.token_bytes(16))


def _type_entry(arrow_type: pa.DataType) -> t.TTypeEntry:
    """The Hive type the connector reads column descriptions from; the data itself travels as Arrow."""
    if pa.types.is_decimal(arrow_type):
        qualifiers = {
            "precision": t.TTypeQualifierValue(i32Value=arrow_type.precision),
            "scale": t.TTypeQualifierValue(i32Value=arrow_type.scale),
        }
        entry = t.TPrimitiveTypeEntry(t.TTypeId.DECIMAL_TYPE, t.TTypeQualifiers(qualifiers))
        return t.TTypeEntry(primitiveEntry=entry)
    checks = [
        (pa.types.is_boolean, t.TTypeId.BOOLEAN_TYPE),
        (pa.types.is_int8, t.TTypeId.TINYINT_TYPE),
        (pa.types.is_int16, t.TTypeId.SMALLINT_TYPE),
        (pa.types.is_int32, t.TTypeId.INT_TYPE),
        (pa.types.is_int64, t.TTypeId.BIGINT_TYPE),
        (pa.types.is_float32, t.TTypeId.FLOAT_TYPE),
        (pa.types.is_float64, t.TTypeId.DOUBLE_TYPE),
        (lambda x: pa.types.is_string(x) or pa.types.is_large_string(x), t.TTypeId.STRING_TYPE),
        (pa.types.is_timestamp, t.TTypeId.TIMESTAMP_TYPE),
        (pa.types.is_date32, t.TTypeId.DATE_TYPE),
        (pa.types.is_binary, t.TTypeId.BINARY_TYPE),
        (pa.types.is_map, t.TTypeId.MAP_TYPE),  # before list: a map is a list of structs to pyarrow
        (pa.types.is_list, t.TTypeId.ARRAY_TYPE),
        (pa.types.is_struct, t.TTypeId.STRUCT_TYPE),
        (pa.types.is_null, t.TTypeId.NULL_TYPE),
    ]
    for check, type_id in checks:
        if check(arrow_type):
            return t.TTypeEntry(primitiveEntry=t.TPrimitiveTypeEntry(type_id))
    raise TypeError(f"the fake warehouse has no Databricks type for Arrow {arrow_type}")


def _hive_schema(schema: pa.Schema) -> t.TTableSchema:
    return t.TTableSchema(
        [
            t.TColumnDesc(columnName=f.name, typeDesc=t.TTypeDesc([_type_entry(f.type)]), position=i + 1)
            for i, f in enumerate(schema)
        ]
    )


class _Service(TCLIService.Iface):
    """The TCLIService calls the connector makes; a statement runs on DuckDB in a thread of its own."""

    def __init__(
        self,
        duckdb_path: Path,
        delay_s: float,
        direct_wait_s: float,
        poll_wait_s: float,
        page_rows: int,
        viewers: Mapping[str, Path] | None = None,
    ):
        self.duckdb_path = duckdb_path
        self.viewers = {f"Bearer {token}": path for token, path in (viewers or {}).items()}
        self.request = threading.local()  # the HTTP request's Authorization header, while its call is processed
        self.session_auth: dict[bytes, str | None] = {}  # who opened each session
        self.holds: list[Hold] = []
        self.cancelled = 0  # CancelOperation calls received
        self.delay_s = delay_s  # added before every statement, to make it slow
        self.direct_wait_s = direct_wait_s  # how long ExecuteStatement waits to answer with direct results
        self.poll_wait_s = poll_wait_s  # how long GetOperationStatus waits for a change (a long poll)
        self.page_rows = page_rows  # most rows in one answer, so big results take several fetches
        self.statements: list[Statement] = []
        self.sessions: dict[bytes, dict[str, str]] = {}
        self.operations: dict[bytes, _Operation] = {}
        self.workers: list[threading.Thread] = []
        self.writable = False  # statements may change the DuckDB file (tests of commands that write tables)
        self._writing = threading.Lock()  # one writer at a time, as a table's commits are ordered

    # --- sessions ---------------------------------------------------------------------------------------

    def OpenSession(self, req: t.TOpenSessionReq) -> t.TOpenSessionResp:
        handle = t.TSessionHandle(_handle_id())
        self.sessions[handle.sessionId.guid] = dict(req.configuration or {})
        self.session_auth[handle.sessionId.guid] = getattr(self.request, "authorization", None)
        return t.TOpenSessionResp(
            status=_OK, serverProtocolVersion=PROTOCOL_VERSION, sessionHandle=handle, canUseMultipleCatalogs=True
        )

    def CloseSession(self, req: t.TCloseSessionReq) -> t.TCloseSessionResp:
        self.sessions.pop(req.sessionHandle.sessionId.guid, None)
        self.session_auth.pop(req.sessionHandle.sessionId.guid, None)
        return t.TCloseSessionResp(status=_OK)

    # --- statements -------------------------------------------------------------------------------------

    def ExecuteStatement(self, req: t.TExecuteStatementReq) -> t.TExecuteStatementResp:
        session = self.sessions.get(req.sessionHandle.sessionId.guid)
        owner = self.session_auth.get(req.sessionHandle.sessionId.guid)
        if session is None or owner != getattr(self.request, "authorization", None):  # nobody uses another's session
            status = t.TStatus(statusCode=t.TStatusCode.INVALID_HANDLE_STATUS, errorMessage="Invalid SessionHandle")
            return t.TExecuteStatementResp(status=status)
        overlay = dict(req.confOverlay or {})
        self.statements.append(Statement(req.statement, dict(session), overlay))
        timeout = {k.upper(): v for k, v in {**session, **overlay}.items()}.get("STATEMENT_TIMEOUT", "0")
        operation = _Operation(
            t.TOperationHandle(_handle_id(), t.TOperationType.EXECUTE_STATEMENT, hasResultSet=True),
            req.statement,
            int(timeout),
            lz4=bool(req.canDecompressLZ4Result),
            database=self.viewers.get(owner or "", self.duckdb_path),
        )
        self.operations[operation.handle.operationId.guid] = operation
        worker = threading.Thread(target=self._run, args=(operation,), daemon=True)
        self.workers.append(worker)
        worker.start()
        if req.getDirectResults is None:
            return t.TExecuteStatementResp(status=_OK, operationHandle=operation.handle)
        self._settle(operation, self.direct_wait_s)
        direct = t.TSparkDirectResults(operationStatus=self._status(operation))
        if self._state(operation) == t.TOperationState.FINISHED_STATE:
            direct.resultSetMetadata = self._metadata(operation)
            direct.resultSet = self._fetch(operation, req.getDirectResults.maxRows, include_metadata=False)
        return t.TExecuteStatementResp(status=_OK, operationHandle=operation.handle, directResults=direct)

    def _run(self, operation: _Operation) -> None:
        try:
            if operation.cancelled.wait(self.delay_s) or self._held(operation):
                return
            if self.writable:
                table = self._write(operation.statement)
            else:
                sql = sqlglot.transpile(operation.statement, read="databricks", write="duckdb")[0]
                with duckdb.connect(str(operation.database or self.duckdb_path), read_only=True) as con:
                    table = con.sql(sql).to_arrow_table()
            if not operation.cancelled.is_set():
                operation.result = table
        except Exception as error:  # any failure becomes the statement's error, as a warehouse reports it
            operation.error = (str(error).strip().splitlines() or [type(error).__name__])[0]
        finally:
            operation.done.set()

    def _held(self, operation: _Operation) -> bool:
        """Wait while a hold matches the statement; True when the client cancelled it meanwhile or the hold
        failed it (then it never runs)."""
        for hold in [hold for hold in self.holds if hold.matches(operation.statement)]:
            hold.arrived.append(operation.statement)
            hold.arrival.release()
            while not hold.released.is_set():
                if operation.cancelled.wait(0.01):
                    return True
            if hold.failed.is_set():
                operation.error = "[WAREHOUSE_STOPPED] The SQL warehouse stopped while the statement was running."
                return True
        return False

    def _write(self, statement: str) -> pa.Table:
        """Run a statement that may write. Delta's `INSERT INTO t REPLACE WHERE cond SELECT ...` (which DuckDB
        lacks) becomes what it means, DELETE of the rows matching cond and INSERT, in one transaction."""
        parsed = sqlglot.parse_one(statement, read="databricks")
        with self._writing, duckdb.connect(str(self.duckdb_path)) as con:
            if isinstance(parsed, sqlglot.exp.Insert) and parsed.args.get("where") is not None:
                where = parsed.args["where"]
                target = parsed.this.sql("duckdb")
                con.execute("BEGIN TRANSACTION")
                con.execute(f"DELETE FROM {target} WHERE {where.sql('duckdb')}")
                con.execute(f"INSERT INTO {target} {parsed.expression.sql('duckdb')}")
                con.execute("COMMIT")
                return pa.table({"num_affected_rows": pa.array([], pa.int64())})
            relation = con.sql(parsed.sql("duckdb"))
            return relation.to_arrow_table() if relation is not None else pa.table({"result": pa.array([], pa.int64())})

    def _settle(self, operation: _Operation, wait_s: float) -> None:
        """Wait for the statement up to wait_s; past its STATEMENT_TIMEOUT, cancel it as Databricks does."""
        deadline = operation.started + operation.timeout_s if operation.timeout_s else None
        if deadline is not None:
            wait_s = max(0.0, min(wait_s, deadline - time.monotonic()))
        if not operation.done.wait(wait_s) and deadline is not None and time.monotonic() >= deadline:
            operation.error = TIMEOUT_MESSAGE.format(seconds=operation.timeout_s)
            operation.cancelled.set()

    @staticmethod
    def _state(operation: _Operation) -> int:
        if operation.error is not None:
            return t.TOperationState.ERROR_STATE
        if operation.cancelled.is_set():
            return t.TOperationState.CANCELED_STATE
        if operation.done.is_set():
            return t.TOperationState.FINISHED_STATE
        return t.TOperationState.RUNNING_STATE

    def _status(self, operation: _Operation) -> t.TGetOperationStatusResp:
        return t.TGetOperationStatusResp(
            status=_OK,
            operationState=self._state(operation),
            errorMessage=operation.error,
            displayMessage=operation.error,
            hasResultSet=True,
        )

    def _metadata(self, operation: _Operation) -> t.TGetResultSetMetadataResp:
        assert operation.result is not None
        return t.TGetResultSetMetadataResp(
            status=_OK,
            schema=_hive_schema(operation.result.schema),
            resultFormat=t.TSparkRowSetType.ARROW_BASED_SET,
            lz4Compressed=operation.lz4,
            arrowSchema=operation.result.schema.serialize().to_pybytes(),
        )

    def _fetch(self, operation: _Operation, max_rows: int, include_metadata: bool) -> t.TFetchResultsResp:
        """The next page of rows as Arrow IPC record batches, continuing where the last page stopped."""
        assert operation.result is not None
        start = operation.sent_rows
        page = operation.result.slice(start, min(max_rows, self.page_rows)).combine_chunks()
        operation.sent_rows = start + page.num_rows
        batches = []
        for batch in page.to_batches():
            body = batch.serialize().to_pybytes()
            batches.append(
                t.TSparkArrowBatch(batch=lz4.frame.compress(body) if operation.lz4 else body, rowCount=batch.num_rows)
            )
        return t.TFetchResultsResp(
            status=_OK,
            hasMoreRows=operation.sent_rows < operation.result.num_rows,
            results=t.TRowSet(startRowOffset=start, rows=[], arrowBatches=batches),
            resultSetMetadata=self._metadata(operation) if include_metadata else None,
        )

    # --- operations -------------------------------------------------------------------------------------

    def _operation(self, handle: t.TOperationHandle) -> _Operation:
        return self.operations[handle.operationId.guid]  # an unknown handle fails the call, as it should

    def GetOperationStatus(self, req: t.TGetOperationStatusReq) -> t.TGetOperationStatusResp:
        operation = self._operation(req.operationHandle)
        self._settle(operation, self.poll_wait_s)
        return self._status(operation)

    def GetResultSetMetadata(self, req: t.TGetResultSetMetadataReq) -> t.TGetResultSetMetadataResp:
        operation = self._operation(req.operationHandle)
        if operation.result is None:  # cancelled or failed: no result set, as the warehouse answers
            status = t.TStatus(statusCode=t.TStatusCode.ERROR_STATUS, errorMessage="The operation has no result set.")
            return t.TGetResultSetMetadataResp(status=status)
        return self._metadata(operation)

    def FetchResults(self, req: t.TFetchResultsReq) -> t.TFetchResultsResp:
        return self._fetch(self._operation(req.operationHandle), req.maxRows, bool(req.includeResultSetMetadata))

    def CancelOperation(self, req: t.TCancelOperationReq) -> t.TCancelOperationResp:
        self.cancelled += 1
        self._operation(req.operationHandle).cancelled.set()
        return t.TCancelOperationResp(status=_OK)

    def CloseOperation(self, req: t.TCloseOperationReq) -> t.TCloseOperationResp:
        operation = self.operations.pop(req.operationHandle.operationId.guid, None)
        if operation is not None:
            operation.cancelled.set()
        return t.TCloseOperationResp(status=_OK)

    def stop(self) -> None:
        for hold in self.holds:
            hold.release()
        for operation in self.operations.values():
            operation.cancelled.set()
        for worker in self.workers:
            worker.join(timeout=10)  # a worker waits on its cancel event; only a DuckDB query can hold it


@dataclass
class FakeWarehouse:
    """What a test reads while the warehouse runs: every Thrift call, statement and OAuth token request."""

    port: int
    cert_path: Path
    service: _Service
    calls: list[Call] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    issued_tokens: list[str] = field(default_factory=list)
    http_path: str = HTTP_PATH

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"https://{self.host}"

    @property
    def statements(self) -> list[Statement]:
        return self.service.statements

    @property
    def open_sessions(self) -> int:
        """Sessions opened and not yet closed: what the app's connections hold on the warehouse."""
        return len(self.service.sessions)

    @property
    def running(self) -> int:
        """Statements still running (not finished, failed or cancelled)."""
        return sum(not operation.done.is_set() for operation in list(self.service.operations.values()))

    @property
    def cancelled(self) -> int:
        """How many CancelOperation calls arrived."""
        return self.service.cancelled

    def hold(self, matches: Callable[[str], bool]) -> Hold:
        """From now on, statements for which `matches(text)` is true run only once the returned hold is released."""
        hold = Hold(matches)
        self.service.holds.append(hold)
        return hold


def _thrift_reply(processor: TCLIService.Processor, body: bytes) -> bytes:
    out = TMemoryBuffer()
    processor.process(TBinaryProtocol(TMemoryBuffer(body)), TBinaryProtocol(out))
    return out.getvalue()


@contextmanager
def serve_warehouse(
    duckdb_path: Path,
    *,
    token: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    delay_s: float = 0.0,
    direct_wait_s: float = 2.0,
    poll_wait_s: float = 0.2,
    page_rows: int = 100_000,
    viewers: Mapping[str, Path] | None = None,
    writable: bool = False,
) -> Iterator[FakeWarehouse]:
    """Serve on a free loopback port until the block ends (writable: statements may change the file).

    Thrift calls need `Authorization: Bearer <token>`, the personal access token, one that the token endpoint
    issued to client_id/client_secret, or a key of `viewers` (whose statements read that viewer's DuckDB file);
    anything else gets 401 as from a workspace.
    """
    service = _Service(duckdb_path, delay_s, direct_wait_s, poll_wait_s, page_rows, viewers)
    service.writable = writable
    processor = TCLIService.Processor(service)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value: object) -> None:
            self._reply(200, json.dumps(value).encode())

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path == HTTP_PATH:
                self._thrift(body)
            elif self.path == "/oidc/v1/token" and client_id:
                self._token(body)
            else:
                self._reply(404)

        def do_GET(self) -> None:
            if self.path == "/.well-known/databricks-config" and client_id:
                self._json({"oidc_endpoint": f"{warehouse.base_url}/oidc", "workspace_id": "1234567890"})
            elif self.path == "/oidc/.well-known/oauth-authorization-server" and client_id:
                self._json(
                    {
                        "authorization_endpoint": f"{warehouse.base_url}/oidc/v1/authorize",
                        "token_endpoint": f"{warehouse.base_url}/oidc/v1/token",
                    }
                )
            else:
                self._reply(404)

        def _thrift(self, body: bytes) -> None:
            authorization = self.headers.get("Authorization")
            accepted = {f"Bearer {bearer}" for bearer in [token, *warehouse.issued_tokens, *(viewers or {})] if bearer}
            method = TBinaryProtocol(TMemoryBuffer(body)).readMessageBegin()[0]
            warehouse.calls.append(Call(method, authorization))
            if authorization not in accepted:
                self._reply(401, b"", "text/plain")
                return
            service.request.authorization = authorization
            self._reply(200, _thrift_reply(processor, body), "application/x-thrift")

        def _token(self, body: bytes) -> None:
            form = dict(urllib.parse.parse_qsl(body.decode()))
            warehouse.token_requests.append(form)
            expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
            if self.headers.get("Authorization") != expected or form.get("grant_type") != "client_credentials":
                self._reply(401, json.dumps({"error": "invalid_client", "error_description": "bad client"}).encode())
                return
            issued = secrets.token_urlsafe(24)
            warehouse.issued_tokens.append(issued)
            self._json({"access_token": issued, "token_type": "Bearer", "expires_in": 3600, "scope": form.get("scope")})

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = _self_signed(Path(folder))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        warehouse = FakeWarehouse(server.server_port, cert_path, service)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield warehouse
        finally:
            service.stop()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

"""A warehouse's sessions: a pool per credential, a watch that cancels a statement its page no longer waits for,
and a bounded call for what the connector and the SDK cannot bound themselves. Used by `DatabricksSQLSource`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from data_access.errors import DataAccessError


def close_cursor(cursor: Any, cancelled: bool) -> bool:
    """Close the cursor and its operation on the warehouse (a cancelled one has no result set, so the cursor would not
    close it by itself); False when that failed and the session may be broken."""
    try:
        command = getattr(cursor, "active_command_id", None)
        if cancelled and command is not None:
            cursor.backend.close_command(command)
        cursor.close()
    except Exception:
        return False
    return True


# How long after query_timeout_s the client cancels a statement the warehouse has not ended itself.
CANCEL_GRACE_S = 5.0


class SessionPool:
    """One credential's warehouse connections: at most `size` in use at once; idle ones are reused, newest first."""

    def __init__(self, size: int, open_connection: Callable[[], Any], connect_timeout_s: float) -> None:
        self.slots = threading.BoundedSemaphore(size)
        self.open_connection = open_connection
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[tuple[Any, float]] = []  # (connection, when it was returned)
        self.in_use = 0
        self.users = 0  # queries between taking the pool and finishing with it (under the source's pools lock)
        self.lock = threading.Lock()
        # One connection opens at a time per credential, so each caller gets a session of its own; BoundedCall hands
        # a late-arriving session to the next caller instead of opening another.
        self.opening = threading.Lock()
        self.connecting = BoundedCall("connect")

    @property
    def empty(self) -> bool:
        return not self.idle and not self.in_use

    def acquire(self, wait_s: float, where: str) -> Any:
        if not self.slots.acquire(timeout=wait_s):
            raise DataAccessError(
                f"All connections of this app to {where} stayed busy with other sessions' queries for {wait_s:g} s.",
                "Retry in a moment. If this happens often, raise warehouse_pool_size (more queries at once) or "
                "pool_timeout_s, or narrow the pages' date ranges so queries finish sooner.",
            )
        try:
            with self.lock:
                self.in_use += 1
                if self.idle:
                    return self.idle.pop()[0]
            if not self.opening.acquire(timeout=self.connect_timeout_s):
                raise ConnectTimedOut(self.connect_timeout_s)
            try:
                return self.connecting(self.open_connection, self.connect_timeout_s)
            finally:
                self.opening.release()
        except BaseException:
            with self.lock:
                self.in_use -= 1
            self.slots.release()
            raise

    def release(self, connection: Any, healthy: bool) -> None:
        with self.lock:
            self.in_use -= 1
            if healthy:
                self.idle.append((connection, time.monotonic()))
        if not healthy:
            close_in_background(connection)
        self.slots.release()

    def close_idle(self, older_than_s: float, wait: bool = False) -> bool:
        """Close the connections idle for longer than `older_than_s` (in the background unless `wait`); True when
        none is left idle."""
        now = time.monotonic()
        with self.lock:
            stale = [connection for connection, since in self.idle if now - since >= older_than_s]
            self.idle = [(connection, since) for connection, since in self.idle if now - since < older_than_s]
            left = not self.idle
        for connection in stale:
            if wait:
                with contextlib.suppress(Exception):
                    connection.close()
            else:
                close_in_background(connection)
        return left


def close_in_background(connection: Any) -> None:
    """Close a warehouse session without making anyone wait for the connector's retries on a broken one."""

    def close() -> None:
        with contextlib.suppress(Exception):
            connection.close()

    threading.Thread(target=close, name="close-warehouse-session", daemon=True).start()


class QueryWatch:
    """Watches one running statement from a thread of its own and cancels it on the warehouse when the caller stops
    waiting or it outlives `deadline_s` (the connector's cancel is made to be called from another thread)."""

    def __init__(self, cursor: Any, should_stop: Callable[[], bool] | None, deadline_s: float) -> None:
        self.cursor, self.should_stop = cursor, should_stop
        self.deadline = time.monotonic() + deadline_s
        self.reason: str | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="watch-warehouse-query", daemon=True)
        self.thread.start()

    def _stop_reason(self) -> str | None:
        try:
            if self.should_stop is not None and self.should_stop():
                return "the page was left or rerun"
        except Exception:  # a failing probe must not cancel a query
            pass
        return "it ran longer than query_timeout_s" if time.monotonic() > self.deadline else None

    def _watch(self) -> None:
        while not self.done.wait(WATCH_INTERVAL_S):
            self.reason = self.reason or self._stop_reason()
            # The statement can be cancelled once the warehouse has named it (ExecuteStatement answered).
            if self.reason is not None and self.cursor.active_command_id is not None:
                with contextlib.suppress(Exception):
                    self.cursor.cancel()
                return

    def finish(self) -> None:
        self.done.set()
        self.thread.join(timeout=CANCEL_GRACE_S)


WATCH_INTERVAL_S = 0.05


class BoundedCall:
    """Runs a blocking call in a daemon thread and waits for it at most a given time.

    The Databricks SDK cannot be fully bounded by its settings: its OIDC discovery retries for 300 s whatever
    `retry_timeout_seconds` says, and its token request has no timeout at all (databricks-sdk 0.162). So the caller
    stops waiting at the bound and gets `ConnectTimedOut`; the call goes on in the background, and while it runs the
    next caller waits on it instead of starting another, so a silent host costs one thread, not one per page view.
    A result that arrives after its caller gave up is handed to the next caller.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._pending: Future[Any] | None = None

    def __call__(self, function: Callable[[], Any], timeout_s: float) -> Any:
        with self._lock:
            if self._pending is None:
                self._pending = Future()
                threading.Thread(target=self._run, args=(function, self._pending), name=self.name, daemon=True).start()
            pending = self._pending
        try:
            return pending.result(timeout=timeout_s)
        except FutureTimeout:
            raise ConnectTimedOut(timeout_s) from None
        finally:
            with self._lock:
                if pending.done() and self._pending is pending:
                    self._pending = None  # claimed: the next call starts afresh

    @staticmethod
    def _run(function: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(function())
        except BaseException as error:  # handed to whoever waits
            future.set_exception(error)


class ConnectTimedOut(Exception):
    """A connection attempt, sign-in or token request took longer than the connect bound."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds

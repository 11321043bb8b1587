"""Every connection attempt to a workspace ends within the connect bound, with a message that says what to check.

Stand-ins at the wire only: a loopback port that accepts TCP and then never says a word (a wrong host behind a
firewall that swallows traffic, or a host that is not a workspace), and one that refuses. The real connector and the
real databricks-sdk talk to them. The bound is asserted as behaviour with a generous margin (the SDK alone would
retry for 300 s here), not as a speed claim.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from data_access.config import DatabricksSettings, load_settings
from data_access.errors import DataAccessError
from data_access.sources import BoundedCall, ConnectTimedOut, DatabricksSQLSource, open_source

ROOT = Path(__file__).resolve().parent.parent
SECRET = "oauth-SECRET-never-shown-9876"
TOKEN = "dapiNEVER-SHOWN-TOKEN-5432"
CONNECT_S = 2
# Far below the SDK's own 300 s retry budget and the connector's retries, far above the bound: no speed claim.
MARGIN_S = 20


@contextmanager
def silent_host() -> Iterator[str]:
    """A loopback port that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()


def refused_host() -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _no_sdk_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SDK must see only what the test configures, not a developer's ~/.databrickscfg or environment."""
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no.databrickscfg"))


def _attempt(settings: DatabricksSettings, timeout_s: int = 60) -> tuple[DataAccessError, float]:
    source = DatabricksSQLSource(
        settings, timeout_s=timeout_s, connect_timeout_s=CONNECT_S, connect_options={"enable_telemetry": False}
    )
    started = time.monotonic()
    with pytest.raises(DataAccessError) as raised:
        source.execute("SELECT 1")
    return raised.value, time.monotonic() - started


AUTH = {
    "oauth": ({"client_id": "app-principal", "client_secret": SECRET}, "OAuth machine-to-machine"),
    "token": ({"token": TOKEN}, "personal access token"),
}


@pytest.mark.parametrize("auth", AUTH, ids=str)
def test_a_silent_host_ends_within_the_connect_bound(auth: str) -> None:
    credentials, method = AUTH[auth]
    with silent_host() as host:
        error, seconds = _attempt(DatabricksSettings(host=host, http_path="/sql/1.0/warehouses/wh9", **credentials))
    assert seconds < CONNECT_S + MARGIN_S
    text = str(error)
    assert host in text and "/sql/1.0/warehouses/wh9" in text and method in text
    assert "Cannot reach" in text and f"within {CONNECT_S} s" in text and "connect_timeout_s" in text
    assert "host" in error.hint
    assert SECRET not in text and TOKEN not in text


@pytest.mark.parametrize("auth", AUTH, ids=str)
def test_a_refusing_host_is_named_at_once(auth: str) -> None:
    credentials, method = AUTH[auth]
    host = refused_host()
    error, seconds = _attempt(DatabricksSettings(host=host, http_path="/sql/1.0/warehouses/wh9", **credentials))
    assert seconds < CONNECT_S + MARGIN_S
    assert "refused the connection" in error.message and host.split(":")[0] in error.message and method in error.message


def test_the_query_timeout_caps_a_longer_connect_timeout() -> None:
    env = {"DATABRICKS_HOST": "h.example", "DATABRICKS_WAREHOUSE_ID": "w", "DATABRICKS_TOKEN": TOKEN}
    settings = load_settings(
        environ={**env, "INFERENCE_EXPLORER_QUERY_TIMEOUT": "3", "INFERENCE_EXPLORER_CONNECT_TIMEOUT": "600"},
        secrets={},
    )
    source = open_source(settings)
    assert isinstance(source, DatabricksSQLSource) and source.connect_timeout_s == 3


def test_a_call_still_running_is_joined_not_repeated() -> None:
    """A silent host costs one background attempt, however often a page asks; a late result is not lost."""
    started: list[float] = []
    release = threading.Event()

    def slow() -> str:
        started.append(time.monotonic())
        release.wait(30)
        return "connected"

    bounded = BoundedCall("test")
    for _ in range(3):
        with pytest.raises(ConnectTimedOut):
            bounded(slow, 0.05)
    release.set()
    assert bounded(slow, 30) == "connected"
    assert len(started) == 1
    assert bounded(lambda: "again", 5) == "again"  # claimed: the next call is a new attempt


def test_the_app_shows_one_box_for_a_silent_oauth_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Configured as app.yaml configures Databricks Apps: host, warehouse and the app's OAuth client."""
    with silent_host() as host:
        monkeypatch.setenv("DATABRICKS_HOST", host)
        monkeypatch.setenv("DATABRICKS_WAREHOUSE_ID", "abc123")
        monkeypatch.setenv("DATABRICKS_CLIENT_ID", "app-principal")
        monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", SECRET)
        monkeypatch.setenv("INFERENCE_EXPLORER_CONNECT_TIMEOUT", str(CONNECT_S))
        monkeypatch.setenv("INFERENCE_EXPLORER_DATA_DIR", str(tmp_path))
        st.cache_data.clear()
        st.cache_resource.clear()
        try:
            app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=CONNECT_S + MARGIN_S).run()
        finally:
            st.cache_data.clear()
            st.cache_resource.clear()
    assert not app.exception and len(app.error) == 1
    text = app.error[0].value
    assert host in text and "abc123" in text and "OAuth" in text and SECRET not in text

"""The app as Databricks Apps runs it, in the browser, against the loopback warehouse: each viewer's forwarded token
reads the data, and a page left while its query runs cancels that query on the warehouse.

The browser reaches the app through a loopback stand-in for Databricks Apps' proxy, which adds
`X-Forwarded-Access-Token` to every request, the WebSocket handshake included; the server runs with the variables the
platform sets in every app, so the app trusts the header.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import harness
from testkit.fake_warehouse import FakeWarehouse, serve_warehouse
from testkit.platform_proxy import PlatformProxy, platform_proxy
from testkit.tables import synthetic_requests, write_requests

pytestmark = pytest.mark.browser

APP_TOKEN = "dapiBROWSER-APP-PRINCIPAL-9999"
ANA_TOKEN = "eyJana.browser-viewer-token-1111"
BO_TOKEN = "eyJbo.browser-viewer-token-2222"
CY_TOKEN = "eyJcy.browser-viewer-token-3333"  # a viewer with nothing cached yet
HANG_GUARD_S = 90.0  # waits give up after this only so a broken build fails instead of hanging


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeWarehouse]:
    base = tmp_path_factory.mktemp("browser-viewers")
    rows = synthetic_requests(600)
    app_file = write_requests(base / "app.duckdb", rows, rollups=False)
    viewers = {token: write_requests(base / f"{name}.duckdb", rows, rollups=False)
               for name, token in (("ana", ANA_TOKEN), ("bo", BO_TOKEN), ("cy", CY_TOKEN))}  # fmt: skip
    with serve_warehouse(app_file, token=APP_TOKEN, viewers=viewers, direct_wait_s=0.05, poll_wait_s=0.05) as served:
        yield served


@pytest.fixture(scope="module")
def server(warehouse: FakeWarehouse, tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[Any]:
    env = harness.app_environment(
        tmp_path_factory.mktemp("browser-viewers-data"),
        DATABRICKS_HOST=warehouse.host,
        DATABRICKS_WAREHOUSE_ID=warehouse.http_path.rsplit("/", 1)[-1],
        DATABRICKS_TOKEN=APP_TOKEN,
        DATABRICKS_TLS_CA_FILE=str(warehouse.cert_path),
        DATABRICKS_APP_NAME="inference-explorer",  # what Databricks Apps sets in every app's environment
        DATABRICKS_APP_PORT="8000",
        INFERENCE_EXPLORER_VIEWER_CREDENTIALS="auto",
    )
    with harness.AppServer(env, logs_dir / "viewers.log") as running:
        yield running


@pytest.fixture(scope="module")
def proxy(server: Any) -> Iterator[PlatformProxy]:
    with platform_proxy(server.port) as forwarding:
        yield forwarding


def _executed_with(warehouse: FakeWarehouse, since: int) -> set[str | None]:
    return {call.authorization for call in warehouse.calls[since:] if call.method == "ExecuteStatement"}


@pytest.mark.parametrize("token", [ANA_TOKEN, BO_TOKEN], ids=["ana", "bo"])
def test_each_viewer_reads_with_their_own_token(
    browser: Any, proxy: PlatformProxy, warehouse: FakeWarehouse, token: str
) -> None:
    proxy.forward({"X-Forwarded-Access-Token": token})
    before = len(warehouse.calls)
    page = browser.new_page()
    try:
        harness.open_app(page, proxy.url)
        problems = harness.page_problems(page)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        html = page.content()
    finally:
        page.close()
        proxy.forward({})
    assert not problems, problems
    assert "read with your own Databricks permissions" in sidebar
    assert _executed_with(warehouse, before) == {f"Bearer {token}"}  # never the app's token, never the other viewer's
    assert token not in html and APP_TOKEN not in html


def test_a_page_left_while_its_query_runs_cancels_it_on_the_warehouse(
    browser: Any, proxy: PlatformProxy, warehouse: FakeWarehouse
) -> None:
    hold = warehouse.hold(lambda text: "`logging_error_codes`" in text and "COUNT(*) AS `requests`" in text)
    proxy.forward({"X-Forwarded-Access-Token": CY_TOKEN})
    cancelled_before = warehouse.cancelled
    page = browser.new_page()
    try:
        page.goto(proxy.url, wait_until="domcontentloaded")
        hold.wait_for_arrival(HANG_GUARD_S)  # Overview's query is running on the warehouse ...
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Trends").first.click()  # ... and the viewer leaves
        deadline = time.monotonic() + HANG_GUARD_S
        while warehouse.cancelled == cancelled_before and time.monotonic() < deadline:
            time.sleep(0.1)
        cancelled = warehouse.cancelled - cancelled_before
        hold.release()
        harness.wait_until_settled(page)
        shown = harness.main_text(page)
        url = page.url
    finally:
        hold.release()
        page.close()
        proxy.forward({})
    assert cancelled >= 1  # the warehouse was told to stop the abandoned statement
    # The viewer is on the page they went to; the cancelled query left no message there. (Trends' own queries use
    # Spark's try_divide, which the loopback warehouse's DuckDB cannot run: see NOT_TRANSPILABLE in
    # tests/test_databricks_wire.py; Spark parity tests run them for real.)
    assert "trends" in url.lower() and "was cancelled" not in shown
    assert warehouse.running == 0
    assert warehouse.open_sessions <= 4 * 3  # the app's pool size per viewer who used the app: nothing leaked

"""Browser suite fixtures: one app server on freshly built demo data, one headless Chromium, a page per test.

The server starts on an empty data dir, so the first browser visit watches the app build its demo data
(that is the first-start experience a person gets); every later test reuses the built data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import harness


@pytest.fixture(scope="session")
def chromium_path() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    found = harness.find_chromium()
    if found is None:
        pytest.skip("No Chromium found: apt-get install chromium (.ci/run does), or set INFERENCE_EXPLORER_CHROMIUM")
    return found


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    with harness.chromium() as context:
        yield context


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-logs")


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-data") / "data"  # not created yet: the app's first start makes it


@pytest.fixture(scope="session")
def server(chromium_path: str, demo_data_dir: Path, logs_dir: Path) -> Iterator[harness.AppServer]:
    env = harness.app_environment(demo_data_dir, INFERENCE_EXPLORER_DEMO_REQUESTS=str(harness.BROWSER_DEMO_REQUESTS))
    with harness.AppServer(env, logs_dir / "app.log") as running:
        yield running


@pytest.fixture(scope="session")
def first_start(server: harness.AppServer, browser: Any) -> harness.FirstStart:
    """Open the app for the first time and watch the demo build until the Overview page is settled."""
    seen = harness.FirstStart()
    page = browser.new_page()
    page.add_init_script(harness.PROGRESS_LOG_JS)
    started = time.monotonic()
    try:
        page.goto(server.url, wait_until="domcontentloaded")
        deadline = started + harness.SETTLE_TIMEOUT_S + 60
        while time.monotonic() < deadline:
            view = page.evaluate(harness.BUILD_VIEW_JS)
            seen.record(view)
            if view["state"] == "notRunning" and seen.status_labels:
                break
            time.sleep(0.1)
        harness.wait_until_settled(page)
        seen.seconds = time.monotonic() - started
        seen.final_text = harness.main_text(page)
        seen.problems = harness.page_problems(page)
        seen.nav_links = harness.nav_links(page)
    finally:
        page.close()
    return seen


@pytest.fixture(scope="session")
def app_url(server: harness.AppServer, first_start: harness.FirstStart) -> str:
    """The running app's URL, once its demo data exists."""
    return server.url


@pytest.fixture(scope="session")
def page_urls(first_start: harness.FirstStart) -> dict[str, str]:
    """Each page's URL by its title, as the sidebar links to it."""
    return first_start.nav_links


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _server_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test shows the end of the app's log: the browser only ever sees a redacted error."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and "server" in request.fixturenames:
        running: harness.AppServer = request.getfixturevalue("server")
        request.node.add_report_section("call", "app log", running.log_tail(60))


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab; uncaught JavaScript errors are collected in `page.js_errors`."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.js_errors = errors
    yield tab
    tab.close()

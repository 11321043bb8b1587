"""The app on an AI Gateway inference table, in headless Chromium: every page drawn without errors, and the
Toxicity page ranks who sends toxic prompts. The legacy layout has the full suite; this sweep adds the
gateway demo (INFERENCE_EXPLORER_DEMO_FORMAT=gateway) built ahead by the app's own first-start code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_access.config import load_settings
from jobs.bootstrap import build_demo
from testkit import harness

pytestmark = pytest.mark.browser

PAGES = harness.app_pages()
GATEWAY = {
    "INFERENCE_EXPLORER_DEMO_FORMAT": "gateway",
    "INFERENCE_EXPLORER_DEMO_REQUESTS": str(harness.BROWSER_DEMO_REQUESTS),
}


@pytest.fixture(scope="module")
def gateway_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("browser-gateway") / "data"
    build_demo(load_settings(environ=harness.app_environment(data_dir, **GATEWAY), secrets={}))
    return data_dir


@pytest.fixture(scope="module")
def gateway_url(chromium_path: str, gateway_dir: Path, logs_dir: Path) -> Iterator[str]:
    env = harness.app_environment(gateway_dir, **GATEWAY)
    with harness.AppServer(env, logs_dir / "gateway-app.log") as running:
        yield running.url


@pytest.fixture(scope="module")
def gateway_pages(gateway_url: str, browser: Any) -> dict[str, str]:
    tab = browser.new_page()
    try:
        harness.open_app(tab, gateway_url)
        return harness.nav_links(tab)
    finally:
        tab.close()


@pytest.mark.parametrize("entry", PAGES, ids=[entry.title for entry in PAGES])
def test_every_page_draws_on_the_gateway_layout(
    gateway_pages: dict[str, str], page: Any, entry: harness.PageEntry
) -> None:
    harness.open_app(page, gateway_pages[entry.title])
    assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip() == entry.title
    assert harness.page_problems(page) == []
    for chart in harness.all_plot_reports(page):
        assert chart.drawn, chart
    assert page.js_errors == []


def test_toxicity_page_ranks_requesters(gateway_pages: dict[str, str], page: Any) -> None:
    harness.open_app(page, gateway_pages["Toxicity"])
    text = harness.main_text(page)
    assert "Who sends toxic prompts" in text and "does not log who sent" not in text
    assert harness.page_problems(page) == []

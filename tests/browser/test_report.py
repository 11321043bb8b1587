"""The shareable report and the PNG download, as a person gets them: clicked on the Overview, then the report
opened in a new tab with the network cut off (the profile offline, and every request but the file itself refused)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from testkit import harness
from ui import downloads

pytestmark = pytest.mark.browser

REPORT_CHARTS = 4  # at a glance, its pie view, readability and toxicity over time


def saved_download(page: Any, button: Any, folder: Path) -> Path:
    with page.expect_download(timeout=120_000) as started:
        button.click()
    saved = started.value
    path = folder / saved.suggested_filename
    saved.save_as(path)
    harness.wait_until_settled(page)
    return path


def test_report_opens_offline_with_every_chart_drawn(app_url: str, page: Any, browser: Any, tmp_path: Path) -> None:
    harness.open_app(page, app_url)
    report = saved_download(page, page.get_by_role("button", name=re.compile("Download the report")), tmp_path)
    assert report.name == "inference-explorer-report-v6-v7.html"
    assert page.js_errors == [] and harness.page_problems(page) == []

    refused: list[str] = []
    errors: list[str] = []
    browser.set_offline(True)  # the whole profile; the app's own tab is back online in `finally`
    tab = browser.new_page()
    try:

        def only_the_file(route: Any) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        tab.route("**/*", only_the_file)
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        tab.goto(report.as_uri(), wait_until="load", timeout=60_000)
        tab.wait_for_function(
            "n => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p._fullLayout && "
            "p.querySelector('.main-svg')).length === n",
            arg=REPORT_CHARTS,
            timeout=60_000,
        )
        charts = harness.plot_reports(tab)
        text = tab.inner_text("body")
    finally:
        tab.close()
        browser.set_offline(False)

    assert errors == [] and refused == []
    assert len(charts) == REPORT_CHARTS
    undrawn = [chart for chart in charts if not chart.drawn]
    assert undrawn == [], undrawn
    assert [c.trace_types[0] for c in charts[:2]] == ["bar", "pie"]
    for heading in ("Filters in force", "Version cards", "Is v7 different from v6?", "Toxicity over time"):
        assert heading in text


def test_png_download_of_the_glance_figure(app_url: str, page: Any, tmp_path: Path) -> None:
    if downloads.png_renderer() is None:
        pytest.skip("No Chrome or Chromium for kaleido on this machine")
    harness.open_app(page, app_url)
    png = saved_download(page, page.get_by_role("button", name=re.compile(r"Download PNG")), tmp_path)
    picture = Image.open(io.BytesIO(png.read_bytes()))
    assert picture.format == "PNG" and picture.size == downloads.PNG_SIZE
    assert png.stat().st_size > 15_000

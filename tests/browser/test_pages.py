"""Every page app.py lists, opened in headless Chromium as a person sees it: drawn, downloadable, without errors."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest

from testkit import harness

pytestmark = pytest.mark.browser

PAGES = harness.app_pages()


def test_first_start_shows_progress_then_the_overview(first_start: harness.FirstStart) -> None:
    assert any("First start" in label for label in first_start.status_labels), first_start.status_labels
    assert any(f"{harness.BROWSER_DEMO_REQUESTS:,} demo requests" in text for text in first_start.progress_texts), (
        first_start.progress_texts
    )
    assert any(text.startswith("Scored ") for text in first_start.progress_texts), first_start.progress_texts
    values = first_start.progress_values
    assert len(values) >= 3 and values == sorted(values), values  # the bar moved, and only forward
    assert first_start.problems == []
    assert "Overview" in first_start.final_text
    assert "First start: building" not in first_start.final_text  # the build status is gone once done


def test_sidebar_links_every_page(page_urls: dict[str, str]) -> None:
    assert list(page_urls) == [entry.title for entry in PAGES]
    assert len(set(page_urls.values())) == len(PAGES)


@pytest.mark.parametrize("entry", PAGES, ids=[entry.title for entry in PAGES])
def test_page_renders_for_a_person(page_urls: dict[str, str], page: Any, entry: harness.PageEntry) -> None:
    harness.open_app(page, page_urls[entry.title])

    assert page.locator('[data-testid="stMain"] h1').first.inner_text().strip() == entry.title
    assert harness.page_problems(page) == []
    for chart in harness.all_plot_reports(page):
        assert chart.drawn, chart

    csv_buttons = page.locator('[data-testid="stDownloadButton"] button', has_text=re.compile(r"\(CSV\)"))
    assert csv_buttons.count() >= 1, "every page offers its data as CSV"
    with page.expect_download(timeout=60_000) as started:
        csv_buttons.first.click()
    saved = started.value
    rows = list(csv.reader(io.StringIO(Path(saved.path()).read_text(encoding="utf-8"))))
    assert saved.suggested_filename.endswith(".csv")
    header = rows[0]
    assert all(name.strip() for name in header) and len(set(header)) == len(header), header
    assert len(rows) >= 2 and all(len(row) == len(header) for row in rows[1:]), rows[:3]
    harness.wait_until_settled(page)
    assert harness.page_problems(page) == []
    assert page.js_errors == []

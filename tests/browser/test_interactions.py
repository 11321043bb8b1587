"""What a person does in the app, done with mouse and keyboard in headless Chromium: filter, select, open, download."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import duckdb
import pytest

from data_access.schema import REQUESTS_ARROW
from testkit import harness

pytestmark = pytest.mark.browser


def download(page: Any, button: Any) -> tuple[str, list[list[str]]]:
    """Click a download button; return the suggested file name and the CSV rows the browser saved."""
    with page.expect_download(timeout=60_000) as started:
        button.click()
    saved = started.value
    rows = list(csv.reader(io.StringIO(Path(saved.path()).read_text(encoding="utf-8"))))
    harness.wait_until_settled(page)
    return saved.suggested_filename, rows


def trace_names(page: Any, chart: int = 0) -> set[str]:
    plot = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').nth(chart)
    return set(plot.evaluate("(p) => p._fullData.map((t) => t.name)"))


def pick_version_in_sidebar(page: Any, version: str) -> None:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]', has_text="Model version")
    box.locator('[role="combobox"], input').first.click()
    option = page.locator('[role="option"]', has_text=re.compile(rf"^\s*{re.escape(version)}\s*$"))
    harness.act_and_settle(page, option.click)
    page.keyboard.press("Escape")


def requests_in_file(data_dir: Path) -> int:
    with duckdb.connect(str(data_dir / "inference.duckdb"), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM requests").fetchone()[0])


def test_version_filter_goes_into_the_url_and_follows_to_other_pages(app_url: str, page: Any) -> None:
    harness.open_app(page, app_url)
    assert "v6 · baseline" in harness.main_text(page)

    pick_version_in_sidebar(page, "7")

    assert parse_qs(urlparse(page.url).query).get("version") == ["7"], page.url
    overview = harness.main_text(page)
    assert "v6 · baseline" not in overview and "Only v7 is selected" in overview
    assert harness.page_problems(page) == []

    trends = page.locator('[data-testid="stSidebarNavLink"]', has_text="Trends")
    harness.act_and_settle(page, trends.click)

    assert urlparse(page.url).path.endswith("/trends")
    assert parse_qs(urlparse(page.url).query).get("version") == ["7"], page.url
    names = trace_names(page)
    assert "v7 mean" in names and not any(name.startswith("v6") for name in names), names
    _, rows = download(page, page.get_by_role("button", name=re.compile("Download trend")))
    versions = {row[rows[0].index("model_version")] for row in rows[1:]}
    assert versions == {"7"}, versions  # downloads carry raw version values, as the requests table does
    assert harness.page_problems(page) == []


def test_a_link_reproduces_the_view(app_url: str, page: Any) -> None:
    harness.open_app(page, f"{app_url}/trends?version=6&grain=day")
    tags = page.locator('[data-testid="stSidebar"] [data-testid="stMultiSelect"]', has_text="Model version")
    assert "6" in tags.inner_text() and "7" not in tags.inner_text()
    names = trace_names(page)
    assert "v6 mean" in names and not any(name.startswith("v7") for name in names), names
    title = page.locator('[data-testid="stPlotlyChart"] .gtitle').first.text_content()
    assert "per day" in title, title


# In the browser: which scatter points lie inside a pixel box, by Plotly's own axis conversions.
_POINTS_IN_BOX_JS = """(plot, box) => {
  const layout = plot._fullLayout, xa = layout.xaxis, ya = layout.yaxis;
  const frame = plot.getBoundingClientRect();
  const inside = [];
  for (const trace of plot._fullData) {
    for (let i = 0; i < trace.y.length; i += 1) {
      const px = frame.left + xa._offset + xa.l2p(xa.d2l(trace.x[i]));
      const py = frame.top + ya._offset + ya.l2p(ya.d2l(trace.y[i]));
      if (px > box.left && px < box.right && py > box.top && py < box.bottom) inside.push(trace.customdata[i][0]);
    }
  }
  return inside;
}"""

# The plotting area, and a y (page pixels) in the widest gap between points that has at least half of them below.
_SPLIT_JS = """(plot) => {
  const layout = plot._fullLayout, ya = layout.yaxis, frame = plot.getBoundingClientRect();
  const area = plot.querySelector('.draglayer .nsewdrag').getBoundingClientRect();
  const ys = plot._fullData.flatMap((t) => Array.from(t.y, (y) => frame.top + ya._offset + ya.l2p(ya.d2l(y))));
  ys.sort((a, b) => a - b);  // top of the page first
  let best = null;
  for (let i = 1; i < ys.length; i += 1) {
    const below = ys.length - i, wide = ys[i] - ys[i - 1];
    if (below * 2 >= ys.length && (!best || wide > best.wide)) best = {middle: (ys[i] + ys[i - 1]) / 2, wide};
  }
  return {left: area.left, right: area.right, top: area.top, bottom: area.bottom, points: ys.length,
          split: best && best.middle, gap: best && best.wide};
}"""


def test_box_selection_on_the_toxicity_scatter_lists_those_requests(app_url: str, page: Any) -> None:
    harness.open_app(page, f"{app_url}/toxicity")
    chart = page.locator('[data-testid="stPlotlyChart"]', has_text="Prompts by toxicity")
    plot = chart.locator(".js-plotly-plot")
    plot.scroll_into_view_if_needed()
    assert plot.evaluate("(p) => p._fullLayout.dragmode") == "select"
    area = plot.evaluate(_SPLIT_JS)
    assert area["split"] is not None and area["gap"] >= 4, area  # a clean edge: no point on the box border
    box = {"left": area["left"] + 3, "right": area["right"] - 3, "top": area["split"], "bottom": area["bottom"] - 1}
    expected = plot.evaluate(_POINTS_IN_BOX_JS, box)
    assert 2 * len(expected) >= area["points"] > len(expected) > 1, (len(expected), area)

    def drag_a_box() -> None:
        page.mouse.move(box["left"], box["top"])
        page.mouse.down()
        page.mouse.move((box["left"] + box["right"]) / 2, (box["top"] + box["bottom"]) / 2, steps=8)
        page.mouse.move(box["right"], box["bottom"], steps=8)
        page.mouse.up()

    harness.act_and_settle(page, drag_a_box)

    assert harness.page_problems(page) == []
    shown = page.get_by_role("button", name=re.compile(r"Download selected \(CSV\)"))
    _, rows = download(page, shown)
    listed = [row[rows[0].index("request_id")] for row in rows[1:]]
    cap = 50  # the page lists at most 50 selected prompts and says how many were selected
    assert sorted(listed) == sorted(expected) if len(expected) <= cap else set(listed) <= set(expected)
    assert "prompt_text" in rows[0], rows[0]  # the full prompt, not the hover preview


def test_selecting_a_row_opens_that_request(app_url: str, page: Any) -> None:
    harness.open_app(page, f"{app_url}/requests")
    _, rows = download(page, page.get_by_role("button", name=re.compile(r"Download this page \(CSV\)")))
    header, first = rows[0], rows[1]
    assert header[0] == "request_id" and len(rows) - 1 == 50, (header, len(rows))

    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    frame = grid.bounding_box()
    row_height = 35  # Streamlit's data grid: 35 px header, 35 px rows; the first column holds the row checkbox
    harness.act_and_settle(page, lambda: page.mouse.click(frame["x"] + 18, frame["y"] + row_height * 1.5))

    opened = page.locator('[data-testid="stMain"] h3', has_text="Request ")
    assert opened.inner_text().strip() == f"Request {first[0]}"
    main = harness.main_text(page)
    assert "Prompt" in main and "Response" in main and "Raw payload" in main
    assert harness.page_problems(page) == []


def test_exporting_every_match_writes_all_columns_and_rows(app_url: str, page: Any, demo_data_dir: Path) -> None:
    harness.open_app(page, f"{app_url}/requests")
    harness.act_and_settle(page, page.get_by_role("button", name="Prepare download").click)
    button = page.get_by_role("button", name=re.compile(r"CSV \([\d,]+ rows\)"))
    promised = int(re.search(r"([\d,]+) rows", button.inner_text()).group(1).replace(",", ""))

    name, rows = download(page, button)

    assert name == "requests_export.csv"
    assert rows[0] == list(REQUESTS_ARROW.names)
    assert len(rows) - 1 == promised == requests_in_file(demo_data_dir)

"""The Overview's at-a-glance figure, the shareable HTML report and the PNG download, checked against pandas on the
demo rows (an independent computation) and against what the Overview page itself shows."""

from __future__ import annotations

import html
import io
import json
import math
import re
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import glance, rollout, stats
from core.comparison import PairComparison, compare_pair
from data_access.queries import Filters
from testkit import harness
from testkit.catalog_fetch import catalog_fetch
from testkit.tables import TABLE, demo_directory
from ui import downloads, glance_charts, report

OVERLAP = (date(2026, 4, 12), date(2026, 4, 21))  # the days both versions serve in the demo rows
CARD_KEYS = (
    "requests", "error_rate", "latency_p50", "latency_p95", "tokens_per_request", "fk_mean", "toxicity_rate",
    "perplexity_median",
)  # fmt: skip


@pytest.fixture(scope="module")
def raw(demo_rows: pa.Table) -> pd.DataFrame:
    frame = demo_rows.to_pandas()
    return frame[frame["date"].between(*OVERLAP)]


@pytest.fixture(scope="module")
def with_rollups(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows, rollups=True)


@pytest.fixture(scope="module")
def compared(with_rollups: Path) -> tuple[PairComparison, list[report.Shown], report.Fetch]:
    fetch = catalog_fetch(with_rollups / "inference.duckdb", TABLE)
    window = Filters(start=OVERLAP[0], end=OVERLAP[1])
    totals = fetch("queries.versions.version_totals", filters=window, from_rollups=True)
    histograms = fetch("queries.versions.histograms_by_version", filters=window, from_rollups=True)
    return compare_pair(totals.data, histograms.data, "6", "7", 0.5), [totals, histograms], fetch


@pytest.fixture(scope="module")
def document(compared: tuple[PairComparison, list[report.Shown], report.Fetch]) -> str:
    result, sql, fetch = compared
    context = report.ReportContext(Filters(), "day", "6", "7", 0.5, True, OVERLAP, "duckdb", "requests", True)
    return report.build_html(report.collect(fetch, context, result, sql))


# --- Intervals, against direct computations on the values ------------------------------------------------------


def binned_values(values: np.ndarray, width: float) -> stats.Binned:
    rows = pd.DataFrame({"bin": np.floor(values / width).astype(np.int64), "v": values})
    grouped = rows.groupby("bin")["v"].agg(n="count", total="sum", lo="min", hi="max").reset_index()
    return stats.binned(grouped)


def test_mean_interval_matches_the_t_interval_of_the_values() -> None:
    values = np.random.default_rng(5).gamma(2.0, 3.0, 4_000)
    low, high = stats.mean_interval(binned_values(values, 0.05))
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - half, rel=1e-3)
    assert high == pytest.approx(values.mean() + half, rel=1e-3)


def test_median_interval_brackets_the_median_at_the_order_statistics() -> None:
    values = np.random.default_rng(6).lognormal(7, 1.5, 3_001)
    low, high = stats.median_interval(binned_values(values, 1.0))
    ordered = np.sort(values)
    half = 1.96 * math.sqrt(len(values)) / 2
    expected = ordered[math.floor(len(values) / 2 - half) - 1], ordered[math.ceil(len(values) / 2 + half)]
    assert low == pytest.approx(expected[0], abs=1.0) and high == pytest.approx(expected[1], abs=1.0)
    assert low < np.median(values) < high


def test_proportion_interval_is_wilson() -> None:
    k, n, z = 37, 1_200, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert stats.proportion_interval(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert stats.proportion_interval(0, 500)[0] == pytest.approx(0.0, abs=1e-12)


# --- At a glance --------------------------------------------------------------------------------------------


def test_glance_panels_are_the_demo_rows_numbers(
    compared: tuple[PairComparison, list[report.Shown], report.Fetch], raw: pd.DataFrame
) -> None:
    panels = {p.key: p for p in glance.panels(compared[0], "6", "7", 0.5)}
    assert list(panels) == ["perplexity", "fk", "toxicity_rate"]  # the seed's order
    for version in ("6", "7"):
        rows = raw[raw["model_version"] == version]
        by_version = {key: next(v for v in panel.values if v.version == version) for key, panel in panels.items()}
        perplexity = rows["response_perplexity"].dropna()
        assert by_version["perplexity"].value == pytest.approx(perplexity.median(), rel=0.01)  # 1% bins
        assert by_version["perplexity"].n == len(perplexity)
        fk = rows["response_fk_grade"].dropna()
        assert by_version["fk"].value == pytest.approx(fk.mean(), rel=1e-9)
        assert by_version["fk"].low == pytest.approx(fk.mean() - 1.96 * fk.std() / math.sqrt(len(fk)), rel=1e-2)
        toxic = rows["response_toxicity"].dropna()
        assert by_version["toxicity_rate"].value == pytest.approx((toxic >= 0.5).mean())
        assert by_version["toxicity_rate"].n == len(toxic)
        for value in by_version.values():
            assert value.low <= value.value <= value.high
    for panel in panels.values():
        assert panel.scorer and panel.scorer in str(glance_charts.glance_figure(list(panels.values()), "").to_dict())
        assert "Holm" in panel.verdict and panel.verdict.startswith(("v7 lower than v6", "v7 higher than v6", "no"))
    assert "mean" in panels["perplexity"].note  # says why the median, and what the mean is


def test_seed_pie_shows_shares_of_the_summed_value(
    compared: tuple[PairComparison, list[report.Shown], report.Fetch],
) -> None:
    panels = glance.panels(compared[0], "6", "7", 0.5)
    figure = glance_charts.seed_pie_figure(panels, "v6 vs v7")
    for panel, trace in zip(panels, figure.data, strict=True):
        values = [v.value for v in panel.values]
        assert list(trace.values) == values
        assert glance.seed_shares(panel) == pytest.approx([v / sum(values) for v in values])
    assert "seed's pie style" in figure.layout.title.text and "neither" in figure.layout.title.text


def test_one_version_has_no_verdict(compared: tuple[PairComparison, list[report.Shown], report.Fetch]) -> None:
    table = compared[0].table.loc[["7"]]
    single = PairComparison(compared[0].scorers, table, None)
    panels = glance.panels(single, "7", "7", 0.5)
    assert all(len(p.values) == 1 and p.verdict.startswith("one version") for p in panels)


# --- The report ---------------------------------------------------------------------------------------------


class Cells(HTMLParser):
    """The report's card values and test cells, by their data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[tuple[str, str], str] = {}
        self.tests: dict[tuple[str, str], str] = {}
        self._open: tuple[str, tuple[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "td" and "data-version" in found:
            self._open = ("cards", (str(found["data-version"]), str(found["data-key"])))
        elif tag == "td" and "data-column" in found:
            self._open = ("tests", (str(found["data-key"]), str(found["data-column"])))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            getattr(self, self._open[0])[self._open[1]] = data
            self._open = None


def test_report_numbers_are_the_demo_rows(document: str, raw: pd.DataFrame) -> None:
    cells = Cells()
    cells.feed(document)
    for version in ("6", "7"):
        rows = raw[raw["model_version"] == version]
        assert cells.cards[(version, "requests")] == f"{len(rows):,}"
        assert cells.cards[(version, "error_rate")] == f"{(rows['status_code'] != 200).mean():.2%}"
        assert cells.cards[(version, "fk_mean")] == f"{rows['response_fk_grade'].mean():,.2f}"
        assert cells.cards[(version, "toxicity_rate")] == f"{(rows['response_toxicity'].dropna() >= 0.5).mean():.2%}"
    assert cells.tests[("fk", "verdict")] and cells.tests[("toxicity_rate", "test")] == "two-proportion z-test"
    assert len({key for key, _ in cells.tests}) == 14  # every measure the page tests

    figures = report.figures_json(document)
    assert len(figures) == 4  # at a glance, its pie view, readability and toxicity over time
    bars = {trace["name"]: trace["y"] for trace in figures[0]["data"]}
    fk = [raw.loc[raw["model_version"] == v, "response_fk_grade"].mean() for v in ("6", "7")]
    assert bars["Mean Flesch-Kincaid grade"] == pytest.approx(fk, rel=1e-9)


def test_report_is_self_contained(document: str) -> None:
    assert document.count("<script") == 1 + 4  # plotly.js once, then one per figure
    assert "plotly.js v" in document[:20_000] or re.search(r"plotly\.js v\d", document)
    bundle_end = document.index("</script>")  # plotly.js itself holds attribution links it never loads
    ours = document[:bundle_end].split("<script", 1)[0] + document[bundle_end:]
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", ours) == []
    assert "cdn.plot.ly" not in ours  # (the bundle names it only as the default for map outlines)
    for heading in ("Filters in force", "Version cards", "Is v7 different from v6?", "Toxicity over time"):
        assert heading in document
    assert "<th>Faded below</th><td>30 values per bucket</td>" in document  # the sidebar's chart options
    assert document.count('<pre class="sql">') >= 6  # the cards' and tests' SQL, and each figure's
    assert "FROM" in document and "requests" in document


def test_report_of_one_version(compared: tuple[PairComparison, list[report.Shown], report.Fetch]) -> None:
    result, sql, fetch = compared
    single = PairComparison(result.scorers, result.table.loc[["7"]], None)
    context = report.ReportContext(
        Filters(versions=("7",)), "day", "7", "7", 0.5, True, None, "duckdb", "requests", True
    )
    document = report.build_html(report.collect(fetch, context, single, sql))
    assert "v7 · only version" in document and 'id="tests"' not in document
    assert [len(f["data"][0]["x"]) for f in report.figures_json(document)[:1]] == [1]  # one bar per panel
    assert report.file_name(context) == "inference-explorer-report-v7.html"


def test_report_time_charts_carry_the_rollout_markers(
    compared: tuple[PairComparison, list[report.Shown], report.Fetch],
) -> None:
    result, sql, fetch = compared
    traffic = fetch("queries.rollout.rollout_traffic", filters=Filters(), grain="day", from_rollups=True)
    markers = rollout.markers(rollout.traffic_events(traffic.data, "day"), timedelta(days=1))
    assert markers, "the demo's canary has rollout events"
    context = report.ReportContext(Filters(), "day", "6", "7", 0.5, True, OVERLAP, "duckdb", "requests", True)
    document = report.build_html(report.collect(fetch, context, result, sql, markers, "Dotted rules: the rollout."))
    figures = report.figures_json(document)
    for figure in figures[2:]:  # readability and toxicity over time
        labels = [a["text"] for a in figure["layout"]["annotations"] if a.get("hovertext")]
        assert labels == [html.escape(m.label) for m in markers]  # escaped as the pages draw them
        assert len([s for s in figure["layout"]["shapes"] if s["line"]["dash"] == "dot"]) == len(markers)
    assert "shapes" not in figures[0]["layout"]  # the at-a-glance figure has no time axis
    assert document.count("Dotted rules: the rollout.") == 2


def test_report_says_what_it_could_not_read(compared: tuple[PairComparison, list[report.Shown], report.Fetch]) -> None:
    from data_access.errors import DataAccessError

    def failing(query_name: str, **arguments: object) -> report.Shown:
        raise DataAccessError("The warehouse is asleep.", "Start it.")

    context = report.ReportContext(Filters(), "minute", "6", "7", 0.5, False, None, "duckdb", "requests", True)
    document = report.build_html(report.collect(failing, context, compared[0], compared[1]))
    assert document.count("Could not be read: The warehouse is asleep. Start it.") == 2
    assert len(report.figures_json(document)) == 2  # the at-a-glance figures need no query


# --- On the Overview page --------------------------------------------------------------------------------------


def test_overview_shows_the_glance_figure_with_the_cards_numbers(app: AppTest, document: str) -> None:
    at = app.run()
    assert not at.exception, [e.value for e in at.exception]
    cells = Cells()
    cells.feed(document)
    shown = [m.value for m in at.metric]
    assert shown == [
        cells.cards[(v, key)] for v in ("6", "7") for key in CARD_KEYS
    ]  # the report's cards are the page's
    glance_chart = next(c for c in at.get("plotly_chart") if "At a glance" in c.proto.spec)
    assert "textstat" in glance_chart.proto.spec
    cards = {m.label: m.value for m in at.metric[8:]}  # the newer version's card
    ticks = [
        t
        for axis in ("xaxis", "xaxis2", "xaxis3")
        for t in json.loads(glance_chart.proto.spec)["layout"][axis]["ticktext"]
    ]
    assert f"v7: <b>{cards['Avg Flesch-Kincaid grade']}</b>" in ticks
    labels = [b.label for b in at.get("download_button")]
    assert "Download the report (HTML)" in labels and "Download PNG (1280 x 720)" in labels
    at.button_group(key="overview_glance").set_value("pie").run()
    assert not at.exception
    pie = next(c for c in at.get("plotly_chart") if "At a glance" in c.proto.spec)
    assert "seed's pie style" in pie.proto.spec and '"type":"pie"' in pie.proto.spec.replace(" ", "")


# --- PNG ----------------------------------------------------------------------------------------------------


def test_png_download_is_a_real_picture(compared: tuple[PairComparison, list[report.Shown], report.Fetch]) -> None:
    if harness.find_chromium() is None or downloads.png_renderer() is None:
        pytest.skip("No Chrome or Chromium for kaleido: apt-get install chromium (.ci/run does)")
    panels = glance.panels(compared[0], "6", "7", 0.5)
    png = downloads.png_bytes(glance_charts.glance_figure(panels, "v6 vs v7"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = Image.open(io.BytesIO(png))
    assert picture.size == downloads.PNG_SIZE
    assert 15_000 < len(png) < 2_000_000
    colours = np.asarray(picture.convert("RGB"), dtype=np.int16)
    blue_bar = (np.abs(colours - np.array([76, 120, 168])).sum(axis=2) < 30).sum()  # v6's colour, #4C78A8
    assert blue_bar > 10_000  # the bars are drawn, not just the axes

"""The Overview, Trends and Drift pages under Streamlit's AppTest, and their pure chart builders.

Pages run against real demo requests in a DuckDB data dir (with and without the rollups), and their numbers are
checked against pandas on the same rows.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from core import comparison as page_stats
from core.catalog import METRICS, NONPOSITIVE_BIN, Binning
from data_access.rollups import ROLLUP_VERSION
from data_access.schema import REQUESTS_ARROW
from testkit.apptest import app_for
from testkit.tables import demo_directory, write_requests
from ui import trend_charts

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW, TRENDS, DRIFT = "views/overview.py", "views/trends.py", "views/drift.py"


@pytest.fixture(scope="session")
def raw(demo_rows: pa.Table) -> pd.DataFrame:
    return demo_rows.to_pandas()


@pytest.fixture(scope="session")
def with_rollups(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows, rollups=True)


@pytest.fixture(scope="session")
def without_rollups(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows, rollups=False)


@pytest.fixture(scope="session")
def perplexity_never_scored(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Path:
    frame = demo_rows.to_pandas()
    frame["response_perplexity"] = None
    frame["perplexity_scorer"] = None
    folder = tmp_path_factory.mktemp("no-perplexity")
    write_requests(
        folder / "inference.duckdb", pa.Table.from_pandas(frame, schema=REQUESTS_ARROW, preserve_index=False)
    )
    return folder


def open_page(at: AppTest, page: str) -> AppTest:
    at.run()  # the Overview is the default page
    if page != OVERVIEW:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def texts(elements: object) -> str:
    return " ".join(str(e.value) for e in elements)  # type: ignore[attr-defined]


def cards(at: AppTest) -> dict[tuple[int, str], str]:
    """Card values by (row, label): the baseline row is 0, the newer version's row 1."""
    labels = [m.label for m in at.metric]
    per_row = labels.index("Requests", 1) if labels.count("Requests") > 1 else len(labels)
    return {(i // per_row, m.label): m.value for i, m in enumerate(at.metric)}


# --- Every page renders, and its numbers are the data's -----------------------------------------------------


@pytest.mark.parametrize("page", [OVERVIEW, TRENDS, DRIFT])
def test_page_renders_with_charts_tables_and_sql(app: AppTest, page: str) -> None:
    at = open_page(app, page)
    assert at.get("plotly_chart"), "no chart"
    assert any("SQL for this chart" in e.label for e in at.expander)
    assert at.get("download_button"), "no download"
    assert "summary tables are missing" not in texts(at.caption)
    v = f"v{ROLLUP_VERSION}"
    used = (
        f"Read from the rollups `requests__minute_{v}`, `requests__hourly_{v}`, `requests__hist_{v}`, "
        f"`requests__requesters_{v}`, `requests__samples_{v}`, `requests__flagged_{v}`, `requests__newest_{v}`, "
        f"`requests__latency_{v}` and `requests__band_{v}`"
    )
    assert used in texts(at.caption)


def shown_sql(at: AppTest) -> list[tuple[str, str]]:
    """Each SQL block of the page with the caption above it (the dialect's label)."""
    shown = []
    for expander in at.expander:
        if "SQL for" in expander.label:
            captions = [c.value for c in expander.caption]
            shown += [(captions[i], code.value) for i, code in enumerate(expander.code) if i < len(captions)]
    return shown


def test_sql_for_this_chart_is_databricks_sql_labelled_also_on_the_embedded_default(app: AppTest) -> None:
    """The expander offers the query as Databricks SQL (backtick identifiers, inlined literals) and then the DuckDB
    SQL that ran here, each under its dialect's label; both name the rollups the page read."""
    at = open_page(app, OVERVIEW)
    blocks = shown_sql(at)
    assert blocks
    for (label, databricks), (ran_label, duckdb_sql) in zip(blocks[::2], blocks[1::2], strict=True):
        assert label.startswith("**Databricks SQL**, for the Databricks SQL editor")
        assert "**DuckDB SQL**" in ran_label
        assert re.search(rf"`requests__(minute|hourly|hist)_v{ROLLUP_VERSION}`", databricks)
        assert re.search(rf'"requests__(minute|hourly|hist)_v{ROLLUP_VERSION}"', duckdb_sql)
        assert "MAKE_DATE(2026, 4" in databricks  # the sidebar's dates, inlined as literals


def test_overview_cards_match_pandas_for_the_canary_days(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, OVERVIEW)
    both = raw.groupby("date")["model_version"].agg(lambda v: {"6", "7"} <= set(v.dropna()))
    days = both[both].index
    window = raw[raw["date"].between(days.min(), days.max())]
    shown = cards(at)
    for row, version in ((0, "6"), (1, "7")):
        rows = window[window["model_version"] == version]
        assert shown[(row, "Requests")] == f"{len(rows):,}"
        assert shown[(row, "Error rate")] == f"{(rows['status_code'] != 200).mean():.2%}"
        assert shown[(row, "Avg Flesch-Kincaid grade")] == f"{rows['response_fk_grade'].mean():,.2f}"
        toxic = rows["response_toxicity"].dropna()
        assert shown[(row, "Offensive responses (≥ 0.50)")] == f"{(toxic >= 0.5).mean():.2%}"
    assert f"Compared on {days.min()} to {days.max()}" in texts(at.caption)
    tests = at.dataframe[0].value
    assert len(tests) == 14 and set(tests["test"]) == {"two-proportion z-test", "Mann-Whitney U"}


def test_version_filter_changes_what_is_queried(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, OVERVIEW)
    before = cards(at)[(0, "Requests")]
    at.multiselect(key="version").select("7").run()
    assert not at.exception
    assert "Only v7 is selected" in texts(at.info)
    assert cards(at)[(0, "Requests")] == f"{(raw['model_version'] == '7').sum():,}" != before


def test_threshold_is_a_widget_read_from_the_url(app: AppTest, raw: pd.DataFrame) -> None:
    """A shared link carries the threshold (AppTest cannot observe the browser writing the URL back)."""
    app.query_params["overview_toxicity"] = "0.2"
    at = open_page(app, OVERVIEW)
    assert at.slider(key="overview_toxicity").value == pytest.approx(0.2)
    both = raw.groupby("date")["model_version"].agg(lambda v: {"6", "7"} <= set(v.dropna()))
    window = raw[raw["date"].between(both[both].index.min(), both[both].index.max())]
    toxic = window.loc[window["model_version"] == "7", "response_toxicity"].dropna()
    assert cards(at)[(1, "Offensive responses (≥ 0.20)")] == f"{(toxic >= 0.2).mean():.2%}"


def test_overview_without_overlap_toggle_uses_all_dates(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, OVERVIEW)
    at.toggle(key="overview_overlap").set_value(False).run()
    assert cards(at)[(1, "Requests")] == f"{(raw['model_version'] == '7').sum():,}"


def test_empty_selection_explains_itself(app: AppTest) -> None:
    at = open_page(app, OVERVIEW)
    at.multiselect(key="version").select("7").run()
    at.date_input(key="dates").set_value((date(2026, 4, 1), date(2026, 4, 5))).run()  # before v7's canary
    assert not at.exception
    assert "No requests match these filters" in texts(at.info)
    for page in (TRENDS, DRIFT):
        at.switch_page(page).run()
        assert not at.exception and not at.error
        assert "No requests match" in texts(at.info) or "needs two versions" in texts(at.info)


def test_single_day_range(app: AppTest) -> None:
    at = open_page(app, TRENDS)
    at.date_input(key="dates").set_value((date(2026, 4, 15), date(2026, 4, 15))).run()
    at.selectbox(key="grain").select("day").run()
    assert not at.exception
    assert "single day" in texts(at.info)
    at.switch_page(DRIFT).run()
    at.radio(key="drift_mode").set_value("windows").run()
    assert not at.exception
    assert "at least two days" in texts(at.info)
    at.switch_page(OVERVIEW).run()
    assert not at.exception and at.metric


def test_trends_every_minute_and_every_metric(app: AppTest) -> None:
    at = open_page(app, TRENDS)
    at.selectbox(key="grain").select("minute").run()
    assert not at.exception
    assert "Percentiles per minute are not computed" in texts(at.caption)
    assert "a coarser granularity reads better" in texts(at.info)  # 6,000 requests: a handful per minute
    for metric in METRICS:
        at.selectbox(key="trend_metric").set_value(metric).run()
        assert not at.exception and not at.error, metric
        assert at.get("plotly_chart")


def test_drift_between_windows(app: AppTest) -> None:
    at = open_page(app, DRIFT)
    at.radio(key="drift_mode").set_value("windows").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert set(table["label"]) == {info.label for info in METRICS.values()}
    at.selectbox(key="drift_metric").set_value("latency_ms").run()
    assert not at.exception and len(at.get("plotly_chart")) >= 3


def test_drift_same_version_on_both_sides(app: AppTest) -> None:
    at = open_page(app, DRIFT)
    at.selectbox(key="drift_baseline").set_value("7").run()
    assert "Pick two different versions" in texts(at.info)


def test_missing_metric_is_explained(perplexity_never_scored: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_page(app_for(perplexity_never_scored, monkeypatch), TRENDS)
    at.selectbox(key="trend_metric").set_value("response_perplexity").run()
    assert "has not scored these requests" in texts(at.warning)
    at.switch_page(OVERVIEW).run()
    assert not at.exception
    assert cards(at)[(0, "Median perplexity")] == "–"
    at.switch_page(DRIFT).run()
    assert not at.exception
    assert "Response perplexity: no values on either side (the scorer has not run" in texts(at.markdown)


def test_without_rollups_the_pages_compute_from_requests(
    without_rollups: Path, app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = cards(open_page(app, OVERVIEW))
    at = open_page(app_for(without_rollups, monkeypatch), OVERVIEW)
    assert "summary tables are missing" in texts(at.caption)
    assert cards(at) == expected
    for _, sql in shown_sql(at):  # the SQL shown is what ran: the requests table, no rollup
        assert "requests__" not in sql and ("FROM `requests`" in sql or 'FROM "requests"' in sql)


# --- Chart builders on small frames -------------------------------------------------------------------------


def traffic_frame() -> pd.DataFrame:
    buckets = pd.to_datetime(["2026-04-01 00:00", "2026-04-01 00:00", "2026-04-01 00:01", "2026-04-01 00:02"])
    return pd.DataFrame(
        {"bucket": buckets, "model_version": ["6", "7", "7", None], "requests": [3, 1, 4, 2], "errors": [0, 1, 0, 0]}
    )


def test_share_chart_stacks_to_one_hundred_percent() -> None:
    fig = trend_charts.share_chart(traffic_frame(), "minute", min_count=1)
    areas = [t for t in fig.data if t.fill == "toself"]
    tops = [t for t in fig.data if t.fill != "toself"]
    assert [t.name for t in areas] == ["v6", "v7", "unknown version"]
    np.testing.assert_allclose(tops[0].y, [75.0, 0.0, 0.0])
    np.testing.assert_allclose(tops[1].y, [100.0, 100.0, 0.0])
    np.testing.assert_allclose(tops[-1].y, [100.0, 100.0, 100.0])
    np.testing.assert_allclose(areas[1].y, [100.0, 100.0, 0.0, 0.0, 0.0, 75.0])  # v7 between v6's top and its own
    assert fig.layout.xaxis.type == "date"
    assert tops[0].x[0] == pd.Timestamp("2026-04-01").value / 1e6  # epoch milliseconds
    thin = trend_charts.share_chart(traffic_frame(), "minute", min_count=3)  # the 00:00 and 00:01 buckets: 4 each
    np.testing.assert_allclose([t for t in thin.data if t.fill != "toself"][-1].y, [100.0, 100.0])


def test_versions_are_ordered_numerically_with_missing_last() -> None:
    frame = pd.DataFrame({"model_version": ["10", None, "7", "9"], "requests": [1, 2, 3, 4]})
    assert [v for v, _ in trend_charts.by_version(frame)] == ["7", "9", "10", None]
    bar = trend_charts.version_share_bar(frame)
    assert [t.x[0] for t in bar.data] == pytest.approx([30.0, 40.0, 10.0, 20.0])


def trend_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bucket": pd.to_datetime(["2026-04-01 00:00", "2026-04-01 01:00", "2026-04-01 00:00"]),
            "model_version": ["6", "6", "7"],
            "scorer": ["s", "s", "s"],
            "n": [40, 3, 50],
            "mean": [10.0, 12.0, 8.0],
            "sd": [2.0, 5.0, 1.0],
            "lo": [5.0, 9.0, 4.0],
            "hi": [15.0, 14.0, 11.0],
        }
    )


def test_trend_chart_fades_thin_buckets_and_counts_them() -> None:
    fig = trend_charts.trend_chart(trend_frame(), None, METRICS["response_fk_grade"], "hour", "scored by s")
    means = [t for t in fig.data if t.mode == "markers"]
    lines = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in lines] == ["v6", "v7"]
    np.testing.assert_allclose(means[0].marker.opacity, [1.0, 0.2])  # 3 values < 30
    np.testing.assert_allclose(lines[0].y, [10.0, np.nan])  # the thin bucket is not joined
    counts = [t for t in fig.data if t.name and t.name.endswith("values")]
    np.testing.assert_allclose(counts[0].y, [40, 3])
    bands = [t for t in fig.data if t.fill == "toself"]
    np.testing.assert_allclose(bands[0].y, [12.0, 14.0, 9.0, 8.0])  # mean ± sd, clipped to min and max
    assert "mean ± 1 standard deviation" in fig.layout.title.text


def test_trend_chart_uses_percentiles_when_given() -> None:
    band = trend_frame()[["bucket", "model_version", "scorer"]].assign(
        p10=[6.0, 9.5, 5.0], p25=0.0, p50=0.0, p75=0.0, p90=[14.0, 13.5, 10.0]
    )
    fig = trend_charts.trend_chart(trend_frame(), band, METRICS["response_fk_grade"], "hour", "", min_count=2)
    bands = [t for t in fig.data if t.fill == "toself"]
    np.testing.assert_allclose(bands[0].y, [14.0, 13.5, 9.5, 6.0])
    assert "10th–90th percentile" in fig.layout.title.text
    mean_line = next(t for t in fig.data if t.mode == "markers")
    np.testing.assert_allclose(mean_line.marker.opacity, [1.0, 1.0])


def test_trend_chart_per_minute_draws_whiskers_and_no_lines() -> None:
    fig = trend_charts.trend_chart(trend_frame(), None, METRICS["latency_ms"], "minute", "")
    assert {t.mode for t in fig.data} == {"markers", "lines"}  # dots on top, count lines below
    assert not [t for t in fig.data if t.fill == "toself"]
    dots = [t for t in fig.data if t.mode == "markers" and t.showlegend is False]
    legend = [t.name for t in fig.data if t.showlegend is not False]
    assert legend == ["v6", "v7"] and [t.name for t in dots] == ["v6 mean", "v7 mean"]
    np.testing.assert_allclose(dots[0].error_y.array, [2.0, 2.0])  # up to mean + sd, clipped to the max
    np.testing.assert_allclose(dots[0].error_y.arrayminus, [2.0, 3.0])  # down to mean - sd, clipped to the min
    assert "whiskers: mean ± 1 standard deviation" in fig.layout.title.text


def fine_rows(bins: list[int], counts: list[int], binning: Binning) -> pd.DataFrame:
    lows = binning.lower_edge(np.array(bins))
    return pd.DataFrame({"bin": bins, "n": counts, "total": lows * counts, "lo": lows, "hi": lows})


def test_display_bins_keep_every_share() -> None:
    binning = METRICS["latency_ms"].binning
    base = fine_rows([NONPOSITIVE_BIN, 100, 150, 400], [5, 10, 20, 15], binning)
    comp = fine_rows([120, 399, 700], [10, 10, 20], binning)
    display = trend_charts.display_bins(base, comp, binning, max_bins=10)
    assert len(display) <= 10
    assert display["baseline"].sum() == pytest.approx(45 / 50)
    assert display.attrs["nonpositive_baseline"] == pytest.approx(5 / 50)
    assert display["comparison"].sum() == pytest.approx(1.0)
    assert (display["lower"] < display["upper"]).all()
    fig = trend_charts.distribution_chart(
        display, METRICS["latency_ms"], binning, ("a", "b"), ("#000000", "#ffffff"), ""
    )
    assert fig.layout.xaxis.type == "log"


def test_ecdf_chart_marks_the_ks_gap() -> None:
    binning = METRICS["response_fk_grade"].binning
    base = fine_rows([1, 2, 3], [50, 30, 20], binning)
    comp = fine_rows([2, 3, 4], [20, 30, 50], binning)
    fig = trend_charts.ecdf_chart(base, comp, METRICS["response_fk_grade"], binning, ("a", "b"), ("#000000", "#ffffff"))
    assert fig.data[0].y[-1] == pytest.approx(100.0)
    gap = fig.data[2]
    assert gap.name == "KS gap 60.0%"  # after bin 2: 80% vs 20%


def test_psi_chart_colours_by_reading() -> None:
    drift = pd.DataFrame(
        {"label": ["a", "b", "c"], "psi": [0.05, 0.15, 0.5], "psi_reading": ["no", "moderate", "major"]}
    )
    fig = trend_charts.psi_chart(drift)
    assert list(fig.data[0].marker.color) == ["#E45756", "#EECA3B", "#54A24B"]  # reversed: first metric on top


# --- Fit at 1440 px, heavy-tailed perplexity, raw values in downloads ------------------------------------------


def shown_columns(element: object) -> list[str]:
    """A table's visible columns in order, with the labels the page gives them."""
    proto = element.proto  # type: ignore[attr-defined]
    config = json.loads(proto.columns or "{}")
    return [config.get(f"name:{name}", config.get(name, {})).get("label", name) for name in proto.column_order]


def test_overview_tests_table_fits_and_keeps_the_details(app: AppTest) -> None:
    at = open_page(app, OVERVIEW)
    first, details = at.dataframe[0], at.dataframe[1]
    assert shown_columns(first) == ["Measure", "v6", "v7", "Diff.", "p (Holm)", "Effect", "Size", "Verdict"]
    assert list(details.proto.column_order) == list(page_stats.TEST_DETAIL_COLUMNS)
    # Every column stays visible in one of the two tables (and all of them go into the CSV).
    assert set(page_stats.TEST_COLUMNS) | set(page_stats.TEST_DETAIL_COLUMNS) == set(first.value.columns)


def test_overview_cards_show_a_short_note_and_the_full_sentence_in_help(app: AppTest) -> None:
    at = open_page(app, OVERVIEW)
    newer = [m.proto for m in at.metric if m.proto.delta]
    assert newer, "no delta on the newer version's cards"
    for card in newer:
        assert len(card.delta_description) <= 16, card.delta_description  # fits a card at 1440 px
        assert card.delta_description.split(", ")[-1].startswith("p")
        assert "Holm-adjusted" in card.help


def test_overview_perplexity_card_shows_the_median(app: AppTest, raw: pd.DataFrame) -> None:
    at = open_page(app, OVERVIEW)
    both = raw.groupby("date")["model_version"].agg(lambda v: {"6", "7"} <= set(v.dropna()))
    days = both[both].index
    window = raw[raw["date"].between(days.min(), days.max())]
    label = "Median perplexity (unigram)"
    for row, version in ((0, "6"), (1, "7")):
        perplexity = window.loc[window["model_version"] == version, "response_perplexity"].dropna()
        shown = cards(at)[(row, label)].replace(",", "")
        value = float(shown[:-1]) * (1e6 if shown.endswith("M") else 1e3) if shown[-1] in "Mk" else float(shown)
        assert value == pytest.approx(perplexity.median(), rel=0.02)  # 1% bins, 3 significant digits shown
        assert abs(value - perplexity.mean()) > 0.02 * perplexity.mean()  # the mean would read differently


def test_drift_statistics_table_fits(app: AppTest) -> None:
    at = open_page(app, DRIFT)
    table, details = at.dataframe[0], at.dataframe[1]
    assert len(table.proto.column_order) <= 9
    assert "Scorer" not in shown_columns(table) and "scorer" not in table.proto.column_order
    assert shown_columns(table)[:4] == ["Metric", "Unit", "Median before", "Median after"]
    assert {"scorer", "n_baseline", "n_comparison"} <= set(details.proto.column_order)
    assert set(table.value["label"]) == {info.label for info in METRICS.values()}


def test_trends_offers_a_log_axis_for_perplexity(app: AppTest) -> None:
    at = open_page(app, TRENDS)
    at.selectbox(key="trend_metric").set_value("response_perplexity").run()
    assert at.toggle(key="trend_log_response_perplexity").value is True
    assert at.get("plotly_chart")
    at.selectbox(key="trend_metric").set_value("response_fk_grade").run()
    assert not at.exception  # a grade is not heavy-tailed: no log axis offered
    assert not [t for t in at.toggle if str(t.key).startswith("trend_log_")]


def test_trend_chart_log_axis_applies_to_values_only() -> None:
    fig = trend_charts.trend_chart(trend_frame(), None, METRICS["response_perplexity"], "hour", "", log_y=True)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type != "log"
    plain = trend_charts.trend_chart(trend_frame(), None, METRICS["response_perplexity"], "hour", "")
    assert plain.layout.yaxis.type != "log"


def test_trend_download_keeps_raw_versions() -> None:
    band = trend_frame()[["bucket", "model_version", "scorer"]].assign(p10=1.0, p25=2.0, p50=3.0, p75=4.0, p90=5.0)
    for frame in (trend_charts.trend_download(trend_frame(), band), trend_charts.trend_download(trend_frame(), None)):
        assert list(frame["model_version"]) == ["6", "6", "7"]
    assert list(trend_charts.trend_download(trend_frame(), band)["p50"]) == [3.0, 3.0, 3.0]


def test_trend_scorers_are_offered_most_productive_first() -> None:
    trend = pd.DataFrame({"scorer": ["a", "b", None, "b"], "n": [5, 4, 7, 2]})
    assert trend_charts.scorers_by_output(trend) == [None, "b", "a"]

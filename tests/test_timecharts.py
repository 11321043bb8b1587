"""Time charts that read at a glance: the default granularity per date span, low-count buckets never drawn at
full strength, count-weighted smoothing, and the granularity choice kept in the URL."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.catalog import BUCKETS_WANTED, GRAINS, METRICS, default_grain, histogram_grain, span_buckets
from core.timeseries import smoothed
from data_access.config import TableName
from data_access.queries import Filters, run
from data_access.queries.pages import PAGE_QUERIES
from data_access.sources import DuckDBSource
from testkit.apptest import app_for
from testkit.tables import demo_directory
from ui import charts, detail_charts, trend_charts
from ui.filters import ChartOptions

TABLE = TableName("requests")
PRESETS = {  # the demo month's spans: one day, one week, one month
    "one day": (date(2026, 4, 15), date(2026, 4, 15)),
    "one week": (date(2026, 4, 13), date(2026, 4, 19)),
    "one month": (date(2026, 4, 1), date(2026, 4, 30)),
}
# Each page's time-chart queries and whether they read the hourly histograms (no bucket finer than an hour).
TIME_QUERIES = {
    "traffic": False,
    "metric_trend": False,
    "metric_band": True,
    "toxicity_trend": False,
    "toxicity_shares": True,
    "usage_trend": False,
    "latency_percentiles": True,
}
PANDAS_FREQ = {"minute": "min", "15 minutes": "15min", "hour": "h", "3 hours": "3h", "6 hours": "6h", "day": "D"}


@pytest.fixture(scope="module")
def with_rollups(demo_rows: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows)


@pytest.fixture(scope="module")
def source(with_rollups: Path) -> DuckDBSource:
    return DuckDBSource(with_rollups / "inference.duckdb")


@pytest.fixture(scope="module")
def raw(demo_rows: Any) -> pd.DataFrame:
    return demo_rows.select(["request_time", "date", "model_version"]).to_pandas()


# --- Default granularity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [1, 2, 3, 7, 10, 11, 14, 30, 31, 45, 62, 63, 250])
def test_default_grain_lands_in_range_up_to_eight_months(days: int) -> None:
    grain = default_grain(days)
    assert BUCKETS_WANTED[0] <= span_buckets(days, grain) <= BUCKETS_WANTED[1]
    finer = [g for g in GRAINS if GRAINS[g].minutes < GRAINS[grain].minutes]
    assert all(span_buckets(days, g) > BUCKETS_WANTED[1] for g in finer)  # the finest that fits


def test_default_grain_for_the_presets_and_beyond() -> None:
    assert [default_grain(d) for d in (1, 7, 30)] == ["15 minutes", "hour", "3 hours"]
    assert default_grain(365) == "week"  # 52 weeks: 365 days (too many) is further off by ratio
    assert default_grain(3000) == "month"


@pytest.mark.parametrize("page", [p for p in PAGE_QUERIES if p in ("Overview", "Trends", "Toxicity", "Usage and cost")])
@pytest.mark.parametrize("preset", PRESETS)
def test_each_page_draws_60_to_250_buckets_at_the_default_grain(
    source: DuckDBSource, raw: pd.DataFrame, page: str, preset: str
) -> None:
    start, end = PRESETS[preset]
    grain = default_grain((end - start).days + 1)
    # The last of each name: Overview also counts traffic per day (for its comparison window) before its charts.
    built = {q.name: q for q in PAGE_QUERIES[page](TABLE, Filters(start, end), grain) if q.name in TIME_QUERIES}
    timed = list(built.values())
    assert timed, f"{page} has no time chart query"
    in_span = raw[(raw["date"] >= start) & (raw["date"] <= end)]
    for query in timed:
        drawn = grain if not TIME_QUERIES[query.name] else histogram_grain(grain)
        buckets = run(source, query).table.column("bucket").to_pandas().nunique()
        expected = in_span["request_time"].dt.floor(PANDAS_FREQ[drawn]).nunique()
        assert buckets == expected, (page, query.name)
        if drawn == grain:
            assert BUCKETS_WANTED[0] <= buckets <= BUCKETS_WANTED[1], (page, query.name, buckets)
        else:  # hourly histograms are the finest there is: one day is 24 hours, the closest feasible
            assert (preset, drawn, buckets) == ("one day", "hour", 24), (page, query.name)


# --- Low-count buckets --------------------------------------------------------------------------------------

MIN = 30
BUCKETS = pd.date_range("2026-04-01", periods=12, freq="h")
COUNTS = np.array([100, 3, 80, 0, 29, 30, 31, 1, 200, 5, 60, 45])  # 0: nothing scored, not drawn at all


def _opacities(trace: Any, points: int) -> np.ndarray:
    marker = getattr(trace, "marker", None)
    per_point = getattr(marker, "opacity", None) if marker is not None else None
    alpha = np.ones(points) if per_point is None else np.broadcast_to(np.asarray(per_point, float), (points,))
    return alpha * (1.0 if trace.opacity is None else trace.opacity)


def _x_ms(values: Any) -> np.ndarray:
    x = np.asarray(values)
    if np.issubdtype(x.dtype, np.number):
        return x.astype(np.float64)
    return pd.to_datetime(pd.Series(x)).to_numpy(dtype="datetime64[ms]").astype(np.int64).astype(np.float64)


def full_strength_buckets(fig: go.Figure) -> set[float]:
    """The buckets (epoch ms) any trace draws at full strength: a line through them or an opaque dot or bar."""
    drawn: set[float] = set()
    for trace in fig.data:
        if trace.x is None or trace.y is None or getattr(trace, "fill", None) == "toself":
            continue  # no data, or a spread band (drawn at 0.2 or less, asserted below for Trends)
        if getattr(trace, "yaxis", None) == "y2":
            continue  # the Trends counts panel: the number of values itself, which is what says "thin"
        if "bucket mean" in (trace.name or ""):  # a smoothed line stands on its window's count, not one bucket's
            behind = np.asarray(trace.customdata, dtype=np.float64).ravel()
            assert (behind[~np.isnan(np.asarray(trace.y, dtype=np.float64))] >= MIN).all(), trace.name
            continue
        x, y = _x_ms(trace.x), np.asarray(trace.y, dtype=np.float64)
        alpha = _opacities(trace, len(x))
        mode = getattr(trace, "mode", None) or ""
        # A line draws a segment only between two neighbouring values (connectgaps is never on).
        on_line = ~np.isnan(y) & ((np.roll(~np.isnan(y), 1) & (np.arange(len(y)) > 0)) |
                                  (np.roll(~np.isnan(y), -1) & (np.arange(len(y)) < len(y) - 1)))  # fmt: skip
        full = ~np.isnan(y) & (alpha >= 1.0)
        if "lines" in mode and "markers" not in mode:
            full = on_line & ((trace.opacity or 1.0) >= 1.0)
        drawn |= set(x[full])
    return drawn


def low_buckets(counts: np.ndarray = COUNTS) -> set[float]:
    return set(_x_ms(BUCKETS[(counts < MIN)]))


def _frame(**columns: Any) -> pd.DataFrame:
    return pd.DataFrame({"bucket": BUCKETS, "model_version": "7", **columns})


def test_smoothing_is_count_weighted() -> None:
    values = np.array([1.0, 0.0, np.nan, 4.0, 2.0])
    counts = np.array([1, 3, 9, 2, 2])
    mean, behind = smoothed(values, counts, 3)
    # centred windows of 3: [0,1] [0,1,2] [1,2,3] [2,3,4] [3,4]; the NaN bucket adds nothing
    assert mean == pytest.approx([1 / 4, 1 / 4, 8 / 5, 12 / 4, 12 / 4])
    assert behind.tolist() == [4, 4, 5, 4, 4]
    assert np.isnan(smoothed(np.array([np.nan]), np.array([5]), 3)[0][0])


CHARTS = {
    "trend": lambda window: trend_charts.trend_chart(
        _frame(n=COUNTS, mean=np.linspace(1, 2, 12), sd=0.1, lo=0.5, hi=2.5, scorer="s"), None,
        METRICS["response_fk_grade"], "hour", "", min_count=MIN, window=window,
    ),
    "toxicity share": lambda window: detail_charts.toxicity_trend_chart(
        _frame(prompts_scored=COUNTS, prompts_flagged=COUNTS // 2, responses_scored=COUNTS, responses_flagged=0,
               toxicity_scorer="s"), "prompt", "share", "hour", 0.5, "", MIN, window,
    ),
    "toxicity mean": lambda window: detail_charts.toxicity_trend_chart(
        _frame(prompts_scored=COUNTS, prompt_mean=0.2, responses_scored=COUNTS, response_mean=0.1,
               toxicity_scorer="s"), "response", "mean", "hour", 0.5, "", MIN, window,
    ),
    "tokens": lambda window: detail_charts.tokens_chart(
        _frame(requests=COUNTS, prompt_tokens=COUNTS * 10, completion_tokens=COUNTS * 20), "hour", MIN, window
    ),
    "cost": lambda window: detail_charts.cost_chart(
        _frame(requests=COUNTS, priced=True, cost=COUNTS * 0.01), "hour", MIN
    ),
    "latency percentiles": lambda window: detail_charts.latency_chart(
        _frame(latency_n=COUNTS, p50_ms=100.0, p95_ms=300.0, p99_ms=900.0), "hour", MIN, window
    ),
    "latency mean": lambda window: detail_charts.latency_chart(
        _frame(latency_n=COUNTS, requests=COUNTS, mean_ms=100.0, std_ms=10.0), "15 minutes", MIN, window
    ),
    "request rate": lambda window: detail_charts.request_rate_chart(
        detail_charts.with_request_rate(_frame(requests=COUNTS, peak_requests_per_minute=COUNTS), "hour", None, None),
        "hour", MIN, window,
    ),
    "requests": lambda window: trend_charts.requests_chart(_frame(requests=COUNTS, errors=0), "hour", MIN),
}  # fmt: skip


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize("name", CHARTS)
def test_a_low_count_bucket_is_never_drawn_at_full_strength(name: str, window: int) -> None:
    fig = CHARTS[name](window)
    drawn = full_strength_buckets(fig)
    assert drawn, "the chart draws nothing at full strength"
    assert not drawn & low_buckets(), f"{name}: buckets under {MIN} drawn at full strength"
    faded = [t for t in fig.data if getattr(t, "marker", None) is not None and t.marker.opacity is not None]
    assert any(np.min(np.asarray(t.marker.opacity, float)) < 1 for t in faded), "thin buckets are faded, not hidden"


def test_the_share_chart_leaves_thin_buckets_out() -> None:
    traffic = pd.concat([_frame(requests=COUNTS // 2, errors=0), _frame(requests=COUNTS - COUNTS // 2, errors=0)
                         .assign(model_version="6")])  # fmt: skip
    fig = trend_charts.share_chart(traffic, "hour", MIN)
    shown = {x for trace in fig.data for x in np.asarray(trace.x, float)}
    assert shown == set(_x_ms(BUCKETS[COUNTS >= MIN]))


def test_the_smoothed_line_sits_on_the_raw_points() -> None:
    fig = CHARTS["toxicity mean"](3)
    names = [t.name for t in fig.data]
    assert "v7 (3-bucket mean)" in names
    smooth = fig.data[names.index("v7 (3-bucket mean)")]
    dots = next(t for t in fig.data if t.mode == "markers")
    assert names.index("v7 (3-bucket mean)") > fig.data.index(dots)  # drawn over the dots, which stay
    assert smooth.line.width > 2 and "smoothed" in smooth.hovertemplate


# --- The granularity in the URL -----------------------------------------------------------------------------


@pytest.fixture
def app(with_rollups: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    yield app_for(with_rollups, monkeypatch)
    st.cache_data.clear()
    st.cache_resource.clear()


def _grain(at: AppTest) -> str:
    return at.session_state["_filters"][1]


def test_the_default_follows_the_dates_and_stays_out_of_the_url(app: AppTest) -> None:
    app.query_params["dates"] = ["2026-04-15", "2026-04-15"]
    app.run()
    assert not app.exception
    assert _grain(app) == "15 minutes"
    widget = app.selectbox(key="grain")
    # Bound to ?grain=, and its default is "auto": Streamlit writes a bound value to the URL only when it is not the
    # widget's default, so a link made without a choice carries no grain and keeps following its dates.
    assert (widget.proto.query_param_key, widget.value, widget.proto.default) == ("grain", "auto", 0)
    app.date_input(key="dates").set_value((date(2026, 4, 1), date(2026, 4, 30))).run()
    assert _grain(app) == "3 hours"
    assert "3 hours: 240 buckets over 30 days" in " ".join(c.value for c in app.sidebar.caption).replace("Per ", "")


def test_a_chosen_granularity_from_the_url_wins_over_the_dates(app: AppTest) -> None:
    app.query_params["grain"] = "day"
    app.query_params["dates"] = ["2026-04-15", "2026-04-15"]
    app.run()
    assert not app.exception
    assert (_grain(app), app.selectbox(key="grain").value) == ("day", "day")
    app.date_input(key="dates").set_value((date(2026, 4, 1), date(2026, 4, 30))).run()
    assert _grain(app) == "day"  # the span changed; the choice stays
    app.selectbox(key="grain").select("auto").run()
    assert _grain(app) == "3 hours"


def test_a_granularity_picked_in_the_sidebar_is_kept_across_pages(app: AppTest) -> None:
    app.run()
    app.selectbox(key="grain").select("6 hours").run()
    app.switch_page("views/usage.py").run()
    assert not app.exception and _grain(app) == "6 hours"


def test_smoothing_and_fading_are_in_the_url(app: AppTest) -> None:
    app.query_params["smooth"] = "5"
    app.query_params["min_n"] = "12"
    app.switch_page("views/trends.py").run()
    assert not app.exception
    assert app.session_state["_chart_options"] == ChartOptions(min_count=12, window=5)
    spec = app.get("plotly_chart")[0].proto.spec
    assert "5-bucket mean" in spec and "below 12 values" in spec


def test_the_alerts_sparkline_fades_evaluations_with_too_few_values() -> None:
    from ui import alert_charts

    history = pd.DataFrame(
        {
            "evaluated_at": pd.date_range("2026-04-01", periods=3, freq="h"),
            "value": [0.1, 0.5, 0.2],
            "state": ["ok", "insufficient data", "firing"],
            "samples": [400, 3, 500],
        }
    )
    (trace,) = alert_charts.sparkline(history, 0.3, "rule").data
    assert list(trace.marker.opacity) == [1.0, charts.FADED, 1.0]

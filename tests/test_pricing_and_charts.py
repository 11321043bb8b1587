"""Pure page helpers of Usage and Toxicity: prices and costs (core.pricing), chart builders and frame helpers
(ui.detail_charts). Frames in, frames and figures out: no engine."""

from __future__ import annotations

import math
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from core import pricing
from ui import detail_charts
from ui.charts import version_color

# ---------------------------------------------------------------------------------------------------------
# Pure helpers: prices and costs
# ---------------------------------------------------------------------------------------------------------


def usage_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bucket": pd.to_datetime(["2026-04-01", "2026-04-01", "2026-04-02", "2026-04-02"]),
            "model_version": ["6", "7", "7", None],
            "requests": [10, 20, 30, 1],
            "prompt_tokens": [1000, 2000, 3000, 10],
            "completion_tokens": [500, 0, 1500, 5],
            "estimated_requests": [0, 3, 1, 1],
            "estimated_prompt_tokens": [0, 1500, 500, 10],
            "estimated_completion_tokens": [0, 0, 0, 5],
        }
    )


def test_price_table_keeps_saved_prices_and_orders_versions() -> None:
    table = pricing.price_table(["10", "7", "unknown", "6"], {"7": pricing.Price(0.5, 1.5)})
    assert list(table[pricing.VERSION]) == ["v6", "v7", "v10", "unknown version"]  # as every page labels them
    assert table.loc[1, pricing.PROMPT_PRICE] == "0.5" and table.loc[0, pricing.PROMPT_PRICE] == ""  # blank
    assert not table.isna().any().any()  # no missing cell, so the editor never draws "None"
    prices, problems = pricing.read_prices(table)
    assert set(prices) == {"6", "7", "10", "unknown"} and not problems  # labels map back to the keys
    assert prices["7"] == pricing.Price(0.5, 1.5) and not prices["unknown"].complete


def test_price_table_prefills_example_prices_but_keeps_what_the_user_cleared() -> None:
    example = pricing.EXAMPLE_PRICE
    assert example == pricing.Price(0.0005, 0.0015)
    saved = {"7": pricing.Price(None, None), "6": pricing.Price(0.25, None)}  # v7 cleared, v6 half-cleared
    table = pricing.price_table(["6", "7", "unknown"], saved, example)
    assert table[pricing.PROMPT_PRICE].tolist() == ["0.25", "", "0.0005"]
    assert table[pricing.COMPLETION_PRICE].tolist() == ["", "", "0.0015"]
    prices, problems = pricing.read_prices(table)
    assert prices["unknown"] == example and not prices["7"].complete and not prices["6"].complete
    assert problems == ["v6 has only one of its two prices, so it stays unpriced."]
    summary = pricing.cost_summary(pricing.with_costs(usage_frame(), prices))
    assert list(summary["cost"])[:2] == ["unpriced", "unpriced"]  # cleared: unpriced, never $0
    assert pricing.priced_total(summary)[1] == ["6", "7"]
    assert [pricing.key_label(v) for v in ["6", "unknown"]] == ["v6", "unknown version"]
    assert [pricing.label_key(v) for v in ["v6", "unknown version", "10"]] == ["6", "unknown", "10"]


def test_read_prices_names_bad_cells_and_keeps_the_rest() -> None:
    edited = pd.DataFrame(
        {
            pricing.VERSION: ["6", "7", "8", "9"],
            pricing.PROMPT_PRICE: [0.25, -1.0, 0.0, 0.1],
            pricing.COMPLETION_PRICE: [0.5, 2.0, 0.0, None],
        }
    )
    prices, problems = pricing.read_prices(edited)
    assert prices["6"] == pricing.Price(0.25, 0.5) and prices["6"].complete
    as_text = edited.assign(**{pricing.PROMPT_PRICE: [" $0.25", "-1", "0", "abc"], pricing.COMPLETION_PRICE: "0.5"})
    text_prices, text_problems = pricing.read_prices(as_text)  # the page's cells are text
    assert text_prices["6"] == pricing.Price(0.25, 0.5) and text_prices["8"] == pricing.Price(0.0, 0.5)
    assert any("v9" in p and "not a number" in p for p in text_problems)
    assert prices["7"] == pricing.Price(None, 2.0) and not prices["7"].complete
    assert prices["8"].complete  # 0 is a price
    assert not prices["9"].complete
    assert any("v7" in p and "0 or more" in p for p in problems)
    assert any("v9" in p and "only one" in p for p in problems)


def test_costs_leave_unpriced_versions_missing_never_zero() -> None:
    prices = {"7": pricing.Price(0.5, 2.0), "6": pricing.Price(0.0, 0.0)}
    costed = pricing.with_costs(usage_frame(), prices)
    assert list(costed["priced"]) == [True, True, True, False]
    assert costed["cost"].iloc[1] == pytest.approx(2000 / 1000 * 0.5)
    assert costed["cost"].iloc[2] == pytest.approx(3000 / 1000 * 0.5 + 1500 / 1000 * 2.0)
    assert costed["cost"].iloc[0] == 0.0  # priced at 0 is $0
    assert math.isnan(costed["cost"].iloc[3])  # no price: missing
    summary = pricing.cost_summary(costed)
    assert list(summary["model_version"]) == ["6", "7", "unknown"]
    assert list(summary["cost"]) == ["$0.00", "$5.50", "unpriced"]  # v7: 1.00 + 1.50 + 3.00
    assert summary["estimated_token_share"].tolist() == pytest.approx([0.0, 2000 / 6500, 1.0])
    total, unpriced = pricing.priced_total(summary)
    assert total == pytest.approx(5.5) and unpriced == ["unknown"]
    assert pricing.priced_total(pricing.cost_summary(pricing.with_costs(usage_frame(), {}))) == (
        None, ["6", "7", "unknown"]
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Pure helpers: chart builders and frame helpers
# ---------------------------------------------------------------------------------------------------------


def test_bucket_minutes_follow_calendars_and_selected_dates() -> None:
    assert detail_charts.bucket_minutes(pd.Timestamp("2026-02-01"), "month") == 28 * 1440
    assert detail_charts.bucket_minutes(pd.Timestamp("2026-04-01"), "month") == 30 * 1440
    assert detail_charts.bucket_minutes(pd.Timestamp("2026-04-01"), "month", date(2026, 4, 10), date(2026, 4, 11)) == (
        2 * 1440
    )
    assert detail_charts.bucket_minutes(pd.Timestamp("2026-03-30"), "week", date(2026, 4, 1), None) == 5 * 1440
    assert detail_charts.bucket_minutes(pd.Timestamp("2026-04-01 10:00"), "hour") == 60
    rated = detail_charts.with_request_rate(usage_frame(), "day", None, None)
    assert rated["requests_per_minute"].iloc[2] == pytest.approx(30 / 1440)


def test_toxicity_charts_draw_each_version_in_its_colour() -> None:
    shares = pd.DataFrame(
        {
            "bucket": pd.to_datetime(["2026-04-01 00:00", "2026-04-01 01:00", "2026-04-01 00:00", "2026-04-01 01:00"]),
            "model_version": ["6", "6", "7", None],
            "toxicity_scorer": "s",
            "prompts_scored": [10, 0, 4, 2],
            "prompts_flagged": [1, 0, 2, 1],
            "responses_scored": [10, 5, 4, 2],
            "responses_flagged": [0, 1, 0, 0],
        }
    )
    with_shares = detail_charts.with_toxicity_shares(shares)
    assert with_shares["prompt_share"].iloc[0] == 0.1 and math.isnan(with_shares["prompt_share"].iloc[1])
    fig = detail_charts.toxicity_trend_chart(shares, "prompt", "share", "hour", 0.5, "scored by s")
    dots = [t for t in fig.data if t.mode == "markers"]  # each version: a line of well-filled buckets, and dots
    assert [t.name for t in dots] == ["v6", "v7"]  # rows without a version are left out (their 50% spike)
    assert dots[0].marker.color == version_color("6") and list(dots[0].y) == [0.1]  # the unscored hour is a gap
    assert list(dots[1].customdata[0][:2]) == ["7", "2026-04-01T00:00:00"]
    picked = [list(dots[1].customdata[0]), ["6", "2026-04-01T00:00:00"]]
    selection = {"points": [{"customdata": data} for data in picked]}
    assert detail_charts.selected_points(selection) == ((datetime(2026, 4, 1), "6"), (datetime(2026, 4, 1), "7"))
    assert detail_charts.selected_points(None) == ()
    assert "threshold" not in fig.layout.title.text.lower() or "0.50" in fig.layout.title.text


def test_toxicity_charts_leave_out_unversioned_rows_and_count_them() -> None:
    # The demo's shape: v6/v7 at a few percent, a handful of malformed requests without a version at 100%.
    trend = pd.DataFrame(
        {
            "bucket": pd.to_datetime(["2026-04-01", "2026-04-01", "2026-04-03", "2026-04-09", "2026-04-09"]),
            "model_version": ["6", None, None, "7", None],
            "toxicity_scorer": ["s", "s", None, "s", "s"],
            "requests": [100, 3, 2, 80, 1],
            "prompts_scored": [100, 3, 0, 80, 1],
            "prompt_mean": [0.05, 1.0, None, 0.04, 1.0],
            "responses_scored": [100, 3, 0, 80, 1],
            "response_mean": [0.01, 1.0, None, 0.02, 1.0],
        }
    )
    for side in ("prompt", "response"):
        fig = detail_charts.toxicity_trend_chart(trend, side, "mean", "day", 0.5, "scored by s")
        dots = [t for t in fig.data if t.mode == "markers"]
        assert [t.name for t in dots] == ["v6", "v7"]
        assert max(max(t.y) for t in dots) < 0.1  # no 100% spike from the unversioned rows
    assert detail_charts.unversioned_requests(trend) == 3 + 2 + 1  # every unversioned request, scored or not
    assert detail_charts.unversioned_requests(trend[trend["model_version"].notna()]) == 0


def test_scatter_hover_is_escaped_and_selection_gives_ids() -> None:
    sample = pd.DataFrame(
        {
            "request_id": ["a", "b"],
            "request_time": pd.to_datetime(["2026-04-01 00:00", "2026-04-01 01:00"]),
            "model_version": ["6", "7"],
            "prompt_toxicity": [0.9, 0.1],
            "prompt_preview": ["<script>alert(1)</script>", None],
        }
    )
    fig = detail_charts.toxicity_scatter(sample, 0.5, "scored by s", "spread")
    assert "&lt;script&gt;" in fig.data[0].customdata[0][1] and "<script>" not in fig.data[0].customdata[0][1]
    assert fig.data[1].customdata[0][1] == "(no text)"
    points = {"points": [{"customdata": ["b", "x"]}, {"customdata": ["a", "y"]}, {"customdata": ["b", "x"]}]}
    assert detail_charts.selected_request_ids(points) == ["b", "a"]


def test_cost_chart_leaves_out_unpriced_versions() -> None:
    costed = pricing.with_costs(usage_frame(), {"7": pricing.Price(1.0, 1.0)})
    fig = detail_charts.cost_chart(costed, "day")
    assert [t.name for t in fig.data] == ["v7"]
    assert list(fig.data[0].y) == pytest.approx([2.0, 4.5])


def test_token_charts_split_reported_from_estimated() -> None:
    summary = pricing.cost_summary(pricing.with_costs(usage_frame(), {}))
    fig = detail_charts.token_source_chart(summary)
    reported, estimated = fig.data
    assert list(reported.x) == ["v6", "v7", "unknown version"]
    assert list(reported.y) == [1500, 4500, 0] and list(estimated.y) == [0, 2000, 15]
    lines = detail_charts.tokens_chart(usage_frame(), "day")
    assert [t.line.dash for t in lines.data if t.mode == "lines"][:2] == ["solid", "dash"]


def test_latency_chart_shows_percentiles_or_mean_band() -> None:
    percentiles = pd.DataFrame(
        {"bucket": pd.to_datetime(["2026-04-01"]), "model_version": ["6"], "p50_ms": [10.0], "p95_ms": [20.0],
         "p99_ms": [30.0], "latency_n": [40]}
    )  # fmt: skip
    drawn = detail_charts.latency_chart(percentiles, "hour").data
    assert [t.name for t in drawn if t.mode == "lines"] == ["v6 p50", "v6 p95", "v6 p99"]
    moments = pd.DataFrame(
        {"bucket": pd.to_datetime(["2026-04-01 00:00", "2026-04-01 00:01"]), "model_version": ["7", "7"],
         "mean_ms": [100.0, 120.0], "std_ms": [30.0, None], "requests": [3, 1], "latency_n": [3, 1]}
    )  # fmt: skip
    band, line, dots = detail_charts.latency_chart(moments, "minute").data
    assert list(band.y) == [130.0, 120.0, 120.0, 70.0] and list(dots.y) == [100.0, 120.0]
    assert np.isnan(line.y).all() and list(dots.marker.opacity) == pytest.approx([0.2, 0.2])  # 3 and 1: too few


def test_frame_helpers() -> None:
    usage = usage_frame()
    assert detail_charts.missing_versions(("6", "8"), usage) == ["8"]
    trend = pd.DataFrame({"toxicity_scorer": ["a", "b", "a", None], "prompts_scored": [1, 0, 2, 0],
                          "responses_scored": [1, 0, 0, 0]})  # fmt: skip
    assert detail_charts.scorer_counts(trend).to_dict() == {"a": 4}
    assert detail_charts.epoch_ms(pd.Timestamp("2026-04-01 00:00:00.123")) == 1_775_001_600_123
    assert detail_charts.epoch_ms(pd.NaT) is None
    assert detail_charts.single_bucket(usage.iloc[:2]) and not detail_charts.single_bucket(usage)


def test_token_totals_sum_the_summary_and_share_the_estimate() -> None:
    summary = pricing.cost_summary(pricing.with_costs(usage_frame(), {}))
    tokens, estimated_share, requests = pricing.token_totals(summary)
    assert tokens == 1500 + 2000 + 4500 + 15 and requests == 61
    assert estimated_share == pytest.approx((2000 + 15) / tokens)
    assert pricing.token_totals(summary.iloc[0:0]) == (0, 0.0, 0)


def test_toxicity_by_version_sums_the_buckets_and_keeps_unversioned_apart() -> None:
    shares = pd.DataFrame(
        {"model_version": ["6", "6", None], "prompts_scored": [10, 0, 4], "prompts_flagged": [3, 0, 1],
         "responses_scored": [10, 5, 0], "responses_flagged": [1, 1, 0]}
    )  # fmt: skip
    by_version = detail_charts.toxicity_by_version(shares).set_index("model_version", drop=False)
    assert by_version.loc["6", "prompt_share"] == pytest.approx(0.3)
    assert by_version.loc["6", "response_share"] == pytest.approx(2 / 15)
    unversioned = by_version[by_version["model_version"].isna()].iloc[0]
    assert unversioned["prompts_scored"] == 4 and math.isnan(unversioned["response_share"])

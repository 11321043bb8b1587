"""Trends: any metric over time per model version, with its spread and the number of values behind it."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.catalog import METRICS, below_hour
from core.sampling import slots_of
from core.scorers import scorer_caption
from core.versions import version_sort_key
from data_access.queries import trends
from ui import charts, data, downloads, filters, rollout, sampling, trend_charts

selected, grain = filters.current()
chart = filters.chart_options()
st.title("Trends")
st.caption(
    "One metric per time bucket and model version: the mean, a spread band, and how many values each "
    "bucket holds. Change the granularity in the sidebar, from one minute to one month."
)

left, middle = st.columns(2)
metric = left.selectbox(
    "Metric", list(METRICS), format_func=lambda m: METRICS[m].label, key="trend_metric", bind="query-params"
)
use_rollups = data.rollups_in_use("Trends", selected, grain, metric=metric)
rollout_markers = rollout.markers(selected, grain, use_rollups)
info = METRICS[metric]
min_values = chart.min_count
trend = data.fetch_or_stop("queries.trends.metric_trend", filters=selected, grain=grain, metric=metric,
                           from_rollups=use_rollups)  # fmt: skip
if trend.data.empty:
    totals = data.fetch_or_stop("queries.versions.version_totals", filters=selected, from_rollups=use_rollups).data
    if totals.empty or totals["requests"].sum() == 0:
        st.info(data.NO_MATCH)
    elif info.scorer_column:
        st.warning(
            f"No {info.label.lower()} values in this selection: the {info.scorer_column.replace('_', ' ')} has not "
            "scored these requests (every value is empty). Run the scoring job, or pick another metric."
        )
    else:
        st.warning(f"No {info.label.lower()} values in this selection: the column is empty for every request.")
    st.stop()

# Values from different scorers are never mixed: plot one scorer at a time, the most productive first.
scorer_options = trend_charts.scorers_by_output(trend.data)
scorer = scorer_options[0]
if len(scorer_options) > 1:
    scorer = middle.selectbox(
        "Scorer", scorer_options, key="trend_scorer", format_func=lambda s: s or "unknown",
        help="Values from different scorers are never mixed; pick which one to plot.",
    )  # fmt: skip
    st.caption(f"{len(scorer_options)} scorers produced {info.label.lower()} values here; showing one at a time.")
log_y = False
if METRICS[metric].binning.kind == "log":  # skewed metrics; perplexity's outliers (pasted logs) flatten the rest
    log_y = st.toggle(
        "Log-scale y axis", value=metric == "response_perplexity", key=f"trend_log_{metric}",
        help="Heavy-tailed metrics read better on a log axis: a few extreme values no longer flatten the others.",
    )  # fmt: skip
band = None
if not below_hour(grain):
    band = data.fetch_or_stop("queries.trends.metric_band", filters=selected, grain=grain, metric=metric,
                              from_rollups=use_rollups)  # fmt: skip


def of_scorer(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["scorer"].isna()] if scorer is None else frame[frame["scorer"] == scorer]


rows = of_scorer(trend.data)
band_rows = of_scorer(band.data) if band is not None else None
if rows.empty:
    st.info("No values for this metric and scorer match these filters.")
    st.stop()
if rows["bucket"].nunique() == 1:
    st.info(f"All values fall in a single {grain}: pick a finer granularity to see a trend.")
caption = scorer_caption(scorer) if info.scorer_column else "operational metric, no scorer"
figure = trend_charts.trend_chart(
    rows, band_rows, info, grain, caption, min_count=min_values, log_y=log_y, window=chart.window
)
downloads.chart(charts.with_markers(figure, rollout_markers), f"trend-{metric}-per-{grain}", width="stretch")
st.caption(rollout.NOTE)
coverage = sampling.coverage(selected, use_rollups) if info.scorer_column else None
if coverage is not None:  # a sampled scorer: how many requests each version's line rests on
    slots = slots_of([metric])
    versions = sorted(rows["model_version"].dropna().astype(str).unique(), key=version_sort_key)
    sampling.captions(coverage.data, versions, slots, dict.fromkeys(slots, scorer))
if below_hour(grain):
    st.caption(f"Percentiles per {grain} are not computed (the histograms are hourly): the band is the "
               "mean ± one standard deviation. Pick hour or coarser for a 10th-90th percentile band.")  # fmt: skip
else:
    within = trends.BAND_BIN_MERGE.get(grain, 1)
    st.caption(
        f"The band is the 10th to 90th percentile, from the engine's histograms: within {within}% for skewed "
        "metrics (latency, tokens, perplexity) and within a bin width for grades and probabilities."
    )
thin = rows[rows["n"] < min_values]
if len(thin) > 0.8 * len(rows) and grain != "month":
    st.info(
        f"{len(thin):,} of {len(rows):,} buckets hold fewer than {int(min_values)} values, so most means here are "
        "noise: a coarser granularity reads better."
    )
elif len(thin):
    st.caption(f"{len(thin):,} of {len(rows):,} buckets hold fewer than {int(min_values)} values and are faded.")

downloads.csv_button(
    trend_charts.trend_download(rows, band_rows), f"trend-{metric}-per-{grain}", "Download trend (CSV)"
)
data.show_sql(*[frame for frame in (trend, band, coverage) if frame is not None])

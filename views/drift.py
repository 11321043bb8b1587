"""Drift: has each metric's distribution moved, between two versions or two date windows?"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pandas as pd
import streamlit as st

from core import drift as drift_stats
from core.catalog import METRICS
from core.comparison import Histograms
from core.sampling import pooled, slot_scorers
from core.scorers import scorer_caption
from core.versions import version_label, version_sort_key
from ui import columns, data, downloads, filters, sampling, trend_charts
from ui.charts import version_color

BASELINE_COLOUR, COMPARISON_COLOUR = "#4C78A8", "#F58518"

selected, grain = filters.current()
st.title("Drift")
st.caption(
    "Each metric's distribution on two sides, with the drift statistics Databricks Lakehouse Monitoring "
    "reports: the Kolmogorov-Smirnov test, the Wasserstein distance and the population stability index."
)

use_rollups = data.rollups_in_use()

mode = st.radio(
    "Compare", ["versions", "windows"], horizontal=True, key="drift_mode", bind="query-params",
    format_func={"versions": "Two model versions", "windows": "Two date windows"}.__getitem__,
)  # fmt: skip


def date_pair(value: object, fallback: tuple[date, date]) -> tuple[date, date]:
    """A date_input range as (start, end); a half-picked range is one day."""
    picked = [d for d in (value if isinstance(value, tuple | list) else (value,)) if isinstance(d, date)]
    return (picked[0], picked[-1]) if picked else fallback


if mode == "versions":
    totals = data.fetch_or_stop("queries.versions.version_totals", filters=selected, from_rollups=use_rollups)
    known = sorted(totals.data["model_version"].dropna().unique(), key=version_sort_key)
    if len(known) < 2:
        st.info(
            "Drift between versions needs two versions with traffic in this selection"
            + (f"; only {version_label(known[0])} has any." if known else "; none has any.")
            + " Widen the filters, or compare two date windows instead."
        )
        st.stop()
    left, right = st.columns(2)
    baseline = left.selectbox("Baseline version", known, index=len(known) - 2, key="drift_baseline",
                              bind="query-params", format_func=version_label)  # fmt: skip
    comparison = right.selectbox("Comparison version", known, index=len(known) - 1, key="drift_comparison",
                                 bind="query-params", format_func=version_label)  # fmt: skip
    if baseline == comparison:
        st.info("Pick two different versions.")
        st.stop()
    hist_frame = data.fetch_or_stop(
        "queries.versions.histograms_by_version", filters=selected, from_rollups=use_rollups
    )
    sides: tuple[object, object] = (baseline, comparison)
    labels = (version_label(baseline), version_label(comparison))
    colours = (version_color(str(baseline)), version_color(str(comparison)))
else:
    first_day, last_day = selected.start, selected.end
    if first_day is None or last_day is None or first_day == last_day:
        st.info("Comparing date windows needs a date range of at least two days: widen the dates in the sidebar.")
        st.stop()
    middle = first_day + (last_day - first_day) // 2
    left, right = st.columns(2)
    base_window = date_pair(
        left.date_input("Baseline window", (first_day, middle), min_value=first_day, max_value=last_day,
                        key="drift_base_window", bind="query-params"),
        (first_day, middle),
    )  # fmt: skip
    comp_window = date_pair(
        right.date_input("Comparison window", (middle + timedelta(days=1), last_day), min_value=first_day,
                         max_value=last_day, key="drift_comp_window", bind="query-params"),
        (middle + timedelta(days=1), last_day),
    )  # fmt: skip
    if base_window[0] <= comp_window[1] and comp_window[0] <= base_window[1]:
        st.caption("The windows overlap: requests on shared days count on both sides, which hides drift.")
    hist_frame = data.fetch_or_stop(
        "queries.versions.histograms_by_window", filters=selected, baseline=base_window, comparison=comp_window,
        from_rollups=use_rollups,
    )  # fmt: skip
    sides = ("baseline", "comparison")
    labels = (f"{base_window[0]} – {base_window[1]}", f"{comp_window[0]} – {comp_window[1]}")
    colours = (BASELINE_COLOUR, COMPARISON_COLOUR)

hist = Histograms(hist_frame.data)
if hist.empty:
    st.info("No scored or timed requests match these filters. Widen the date range or pick other versions.")
    st.stop()
missing = [label for side, label in zip(sides, labels, strict=True) if side not in hist.groups()]
if missing:
    st.warning(f"No requests on the {' and '.join(missing)} side: nothing to compare. Adjust the selection.")
    st.stop()

drift = drift_stats.drift_table(hist, *sides)
st.subheader(f"{labels[0]} → {labels[1]}")
st.caption(
    "KS: the largest gap between the two cumulative distributions, with its p-value. Wasserstein: how far values "
    "moved on average, in the metric's unit. PSI over 10 equal-height baseline bins: below 0.1 no significant "
    "change, 0.1-0.2 moderate, above 0.2 major (Databricks' reading). Statistics come from fine bins computed in "
    "the engine; each is within a stated bound of its raw-value value (see the tests)."
)
compared = drift.dropna(subset=["psi"]) if "psi" in drift else drift.iloc[0:0]
if not compared.empty:
    downloads.chart(trend_charts.psi_chart(compared), "drift-psi", width="stretch")
for reading in drift["reading"]:
    st.markdown(f"- {reading}")
st.dataframe(
    drift,
    hide_index=True,
    width="stretch",
    column_order=drift_stats.DRIFT_COLUMNS,  # sample sizes and scorers are in the details below: fits 1440 px
    column_config=columns.drift(*labels),
)
# Sampled scorers: each side's statistics rest on its scored requests only, named here per side.
if mode == "versions":
    coverage_frames = [sampling.coverage(selected, use_rollups)]
    coverage_rows = coverage_frames[0].data
else:
    coverage_frames = [
        sampling.coverage(replace(selected, start=window[0], end=window[1]), use_rollups)
        for window in (base_window, comp_window)
    ]
    coverage_rows = pd.concat(
        [pooled(frame.data, side) for frame, side in zip(coverage_frames, sides, strict=True)], ignore_index=True
    )
side_labels = dict(zip(sides, labels, strict=True))
sampling.captions(
    coverage_rows, list(sides), scorers=slot_scorers(dict(zip(drift["metric"], drift["scorer"], strict=True))),
    label=side_labels.__getitem__,
)  # fmt: skip
with st.expander("Sample sizes and scorers"):
    st.dataframe(
        drift,
        hide_index=True,
        width="stretch",
        column_order=drift_stats.DRIFT_DETAIL_COLUMNS,
        column_config=columns.drift_details(*labels),
    )
downloads.csv_button(drift, "drift-statistics", "Download drift statistics (CSV)")

# --- One metric in detail ----------------------------------------------------------------------------------
st.subheader("Distributions")
metric = st.selectbox(
    "Metric", list(METRICS), format_func=lambda m: METRICS[m].label, key="drift_metric", bind="query-params"
)
info = METRICS[metric]
row = drift.set_index("metric").loc[metric]
if pd.isna(row.get("psi")):  # not comparable, or no values on one side
    st.info(row["reading"])
else:
    scorer = row["scorer"]
    rows_b, rows_c = hist.sample(sides[0], metric, scorer), hist.sample(sides[1], metric, scorer)
    binning = METRICS[metric].binning
    display = trend_charts.display_bins(rows_b, rows_c, binning)
    caption = scorer_caption(scorer) if info.scorer_column else "operational metric, no scorer"
    left, right = st.columns(2)
    with left:
        if display.empty:
            st.info("Every value is zero or below, which a log axis cannot show.")
        else:
            downloads.chart(
                trend_charts.distribution_chart(display, info, binning, labels, colours, caption),
                f"drift-{metric}-distribution",
                width="stretch",
            )
        hidden = display.attrs["nonpositive_baseline"], display.attrs["nonpositive_comparison"]
        if binning.kind == "log" and max(hidden) > 0:
            st.caption(f"Values of zero or below, not drawn on the log axis: {hidden[0]:.1%} vs {hidden[1]:.1%}.")
        downloads.csv_button(display, f"drift-{metric}-histogram", "Download histogram (CSV)")
    with right:
        downloads.chart(
            trend_charts.ecdf_chart(rows_b, rows_c, info, binning, labels, colours),
            f"drift-{metric}-ecdf",
            width="stretch",
        )
        fine = pd.concat([rows_b.assign(side=labels[0]), rows_c.assign(side=labels[1])])
        downloads.csv_button(fine, f"drift-{metric}-fine-bins", "Download fine bins (CSV)")
    max_d_error, max_distance_error = drift_stats.binning_bounds(rows_b, rows_c)
    st.caption(
        f"Binning bounds: KS D is exact to within {max_d_error:.2%}; "
        f"Wasserstein to within {max_distance_error:.3g} {info.unit}."
    )
data.show_sql(hist_frame, *coverage_frames)

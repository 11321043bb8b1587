"""Toxicity: how offensive prompts and responses are per model version, and which requests cross the line."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.catalog import below_hour
from core.requesters import requester_label
from core.scorers import flagged_word, scorer_caption, scorer_help
from core.versions import version_label
from data_access.queries import listing, toxicity
from ui import charts, columns, data, detail_charts, downloads, filters, paging, rollout, sampling

TABLE_ORDER = (
    "request_time",
    "model_version",
    "prompt_toxicity",
    "prompt_text",
    "response_toxicity",
    "response_text",
    "latency_ms",
    "toxicity_scorer",
    "request_id",
)
MAX_SHOWN_SELECTION = 50
OUTSIDE_SAMPLE = (
    " The toxicity scorer scored a sample (see above): requests outside it have no score, so they are never listed "
    "or counted here; they are not clean."
)
TARGETS = {"prompt": "Prompts", "response": "Responses", "either": "Either"}
SORTS = {
    "request_time": "Time",
    "prompt_toxicity": "Prompt toxicity",
    "response_toxicity": "Response toxicity",
    "latency_ms": "Latency",
}


selected, grain = filters.current()
chart = filters.chart_options()
st.title("Toxicity")
st.caption(
    "The toxicity scorer's probability for prompts and responses, per model version over time, and the requests "
    "at or above a threshold. Flagged prompts point to abusive users; flagged responses point to the model. "
    "What the score measures depends on the scorer in force, named below."
)
use_rollups = data.rollups_in_use("Toxicity", selected, grain)
rollout_markers = rollout.markers(selected, grain, use_rollups)

trend = data.trend_or_stop("queries.toxicity.toxicity_trend", selected, grain, use_rollups)
scorers = detail_charts.scorer_counts(trend.data)
if scorers.empty:
    st.warning(
        "No toxicity scores in this selection: the toxicity scorer has not scored these requests (every "
        "prompt_toxicity and response_toxicity is empty). Run the scoring job, then refresh."
    )
    st.stop()

top = st.columns([2, 2, 3])
scorer = str(scorers.index[0])
if len(scorers) > 1:
    scorer = top[2].selectbox(
        "Scorer", [str(s) for s in scorers.index], key="tox_scorer",
        help="Scores from different scorers are never mixed; pick which one to show.",
    )  # fmt: skip
scorer_filter = scorer if len(scorers) > 1 else None  # one scorer: no filter needed, nothing to pool
caption = scorer_caption(scorer)
threshold = top[0].slider(
    "Toxicity threshold", min_value=0.05, max_value=0.95, value=toxicity.DEFAULT_THRESHOLD, step=0.01,
    key="tox_threshold", bind="query-params",
    help=f"A prompt or response at or above this score counts as {flagged_word(scorer).lower()}. "
    + scorer_help(scorer),
)  # fmt: skip
st.caption(scorer_help(scorer))
threshold = round(threshold, 2)
measure = top[1].radio(
    "Show", ["share", "mean"], key="tox_measure", horizontal=True,
    format_func={"share": "Share at or above threshold", "mean": "Mean score"}.__getitem__,
)  # fmt: skip

trend_rows = trend.data[trend.data["toxicity_scorer"] == scorer]
shares = data.fetch_or_stop(
    "queries.toxicity.toxicity_shares", filters=selected, grain=grain, threshold=threshold, scorer=scorer_filter,
    from_rollups=use_rollups,
)  # fmt: skip
share_rows = shares.data[shares.data["toxicity_scorer"] == scorer]
chart_grain = toxicity.chart_grain(grain) if measure == "share" else grain
chart_frame = share_rows if measure == "share" else trend_rows

# Headline per version: scored, mean and share at or above the threshold.
by_version = detail_charts.toxicity_by_version(share_rows)
unversioned = by_version[by_version["model_version"].isna()]
by_version = by_version[by_version["model_version"].notna()]
metric_columns = st.columns(max(len(by_version), 1))
for column, row in zip(metric_columns, by_version.itertuples(), strict=False):
    column.metric(
        f"{version_label(row.model_version)} toxic prompts",
        "–" if math.isnan(row.prompt_share) else f"{row.prompt_share:.2%}",
        f"{row.prompts_flagged:,} of {row.prompts_scored:,}; responses {row.responses_flagged:,}",
        delta_color="off",
    )

# A sampled toxicity scorer: every share above rests on the scored texts only (k of n scored), so say how many.
coverage = sampling.coverage(selected, use_rollups)
sampled = sampling.captions(coverage.data, list(by_version["model_version"]), ["toxicity"], {"toxicity": scorer})

unversioned_count = detail_charts.unversioned_requests(trend.data)
if unversioned_count:
    scored_note = f" ({int(unversioned['prompts_scored'].sum()):,} with a scored prompt)" if len(unversioned) else ""
    st.caption(
        f"{unversioned_count:,} requests carry no model version{scored_note} (malformed requests); they are "
        "left out of the per-version charts below but counted in the flagged list and the sample."
    )

st.subheader("Over time")
if measure == "share" and below_hour(grain):
    st.caption(f"Shares come from hourly histograms, so at {grain} granularity they are shown per hour.")
if detail_charts.single_bucket(chart_frame):
    st.info("Only one time bucket in this range: pick a finer granularity in the sidebar to see change over time.")
st.caption("Select points (click, or drag a box) to list the flagged requests of those buckets below.")
left, right = st.columns(2)
picked: list[tuple] = []
for side, column in (("prompt", left), ("response", right)):
    with column:
        figure = detail_charts.toxicity_trend_chart(
            chart_frame, side, measure, chart_grain, threshold, caption, chart.min_count, chart.window
        )
        charts.with_markers(figure, rollout_markers)
        event = downloads.chart(
            figure,
            f"toxicity-{side}-{measure}-per-{chart_grain}",
            width="stretch",
            on_select="rerun",
            selection_mode=("points", "box"),
            key=f"tox_trend_{side}",
        )
        picked += detail_charts.selected_points(event.selection if event else None)
points = tuple(sorted(set(picked)))[: toxicity.MAX_SELECTED_POINTS]
st.caption(rollout.NOTE)
source_frame = shares if measure == "share" else trend
data.show_sql(source_frame, coverage)
downloads.csv_button(chart_frame, f"toxicity_{measure}_{chart_grain}", "Download chart data (CSV)")

st.subheader("Prompts by toxicity")
sample = data.fetch_or_stop(
    "queries.toxicity.prompt_sample", filters=selected, scorer=scorer_filter, from_rollups=use_rollups
)
if sample.data.empty:
    st.info("No scored prompts in this selection.")
else:
    scatter = downloads.chart(
        detail_charts.toxicity_scatter(sample.data, threshold, caption, "sample"), "toxicity-prompt-sample",
        width="stretch", on_select="rerun", selection_mode=("points", "box", "lasso"), key="tox_scatter",
    )  # fmt: skip
    scored_prompts = int(share_rows["prompts_scored"].sum())
    st.caption(
        f"A fixed sample: {len(sample.data):,} of the {scored_prompts:,} scored prompts in this selection, picked "
        "by the millisecond of the minute they arrived at (as good as random, spread over the whole range, the same "
        f"on every visit; at most {toxicity.SAMPLE_POINTS}). Hover for the prompt; select points to read them in full."
    )
    chosen_ids = detail_charts.selected_request_ids(scatter.selection if scatter else None)
    if chosen_ids:
        chosen = sample.data[sample.data["request_id"].isin(chosen_ids[:MAX_SHOWN_SELECTION])]
        texts = data.fetch_or_stop("queries.listing.request_texts", keys=detail_charts.text_keys(chosen))
        shown = detail_charts.with_texts(chosen.drop(columns=["prompt_preview"]), texts.data)
        if len(chosen_ids) > MAX_SHOWN_SELECTION:
            st.caption(f"{len(chosen_ids):,} points selected; showing the first {MAX_SHOWN_SELECTION}.")
        st.dataframe(shown, hide_index=True, width="stretch")
        downloads.csv_button(shown, "toxicity_selected_prompts", "Download selected (CSV)")
    data.show_sql(sample, label="SQL for the sample")
    downloads.csv_button(sample.data, "toxicity_prompt_sample", "Download sample (CSV)")

st.subheader("Who sends toxic prompts")
who = data.fetch_or_stop(
    "queries.toxicity.toxic_requesters", filters=selected,
    flagged=toxicity.FlaggedQuery(threshold, "prompt", scorer_filter), from_rollups=use_rollups,
)  # fmt: skip
hashed = data.settings().hash_requesters
if who.data.empty:
    st.info(f"No prompt at or above {threshold:.2f} in this selection.")
elif who.data["requester"].isna().all():
    st.info(
        "This inference table does not log who sent each request (the legacy payload layout has no requester); "
        "AI Gateway inference tables do."
    )
else:
    shown_names = [requester_label(r, hashed) for r in who.data["requester"]]
    senders = who.data.assign(
        requester=shown_names,
        requests=[
            None if pd.isna(r) else filters.requests_link(n)
            for r, n in zip(who.data["requester"], shown_names, strict=True)
        ],
    )
    st.caption(
        f"Requesters ranked by prompts at or above {threshold:.2f} ({caption}); the top {toxicity.MAX_REQUESTERS} at "
        "most. Share: of all flagged prompts in the selection. Rate: of the requester's own scored prompts."
        + (OUTSIDE_SAMPLE if sampled else "")
        + (" Requesters are shown as a stable short hash (hash_requesters)." if hashed else "")
    )
    st.dataframe(
        senders,
        hide_index=True,
        width="stretch",
        column_order=("requester", "flagged", "share_of_flagged", "prompts", "flagged_rate", "requests"),
        column_config={
            "requester": st.column_config.TextColumn("Requester", width="large"),
            "flagged": st.column_config.NumberColumn("Flagged prompts", format="%d"),
            "share_of_flagged": st.column_config.NumberColumn("Share of flagged", format="percent"),
            "prompts": st.column_config.NumberColumn("Scored prompts", format="%d"),
            "flagged_rate": st.column_config.NumberColumn("Flagged rate", format="percent"),
            "requests": st.column_config.LinkColumn("Their requests", display_text="Open in Requests"),
        },
    )
    data.show_sql(who, label="SQL for the requesters")
    downloads.csv_button(senders.drop(columns=["requests"]), "toxicity_requesters", "Download requesters (CSV)")

st.subheader("Flagged requests")
controls = st.columns([3, 2, 1, 1])
target = controls[0].radio("Flag", list(TARGETS), format_func=TARGETS.__getitem__, horizontal=True, key="tox_target")
sort, descending, page_size = paging.order_controls(controls[1:], SORTS, "tox")
points_grain = chart_grain if measure == "share" else grain
flagged = toxicity.FlaggedQuery(threshold, target, scorer_filter, points_grain, points)
if points:
    st.caption(f"Narrowed to {len(points)} selected chart point(s); clear the chart selection to see all.")

total = None if below_hour(points_grain) and points else detail_charts.flagged_total(share_rows, target, points)
if total is None:
    counted = data.fetch_or_stop(
        "queries.toxicity.flagged_count", filters=selected, flagged=flagged, from_rollups=use_rollups
    )
    total = int(counted.data["rows"].iloc[0])
if total == 0:
    flagged_kind = f"{flagged_word(scorer).lower()} {TARGETS[target].lower()}"
    st.info(f"No {flagged_kind} at or above {threshold:.2f} in this selection.")
    st.stop()
page = paging.page_picker(total, page_size, "tox")
rows = data.fetch_or_stop(
    "queries.toxicity.flagged_requests", filters=selected, flagged=flagged, sort=sort, descending=descending,
    page=page, page_size=page_size, from_rollups=use_rollups,
)  # fmt: skip
table = paging.with_texts(rows.data, listing.texts_inline(sort))
shown = paging.shown_range(page, page_size, len(table), total)
st.caption(f"Rows {shown} flagged requests (at or above {threshold:.2f})." + (OUTSIDE_SAMPLE if sampled else ""))
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_order=TABLE_ORDER,
    column_config=columns.REQUEST_ROWS,
)
st.caption("Column headers sort this page only; use “Sort by” to order all flagged requests.")
data.show_sql(rows, label="SQL for this page")
downloads.csv_button(pd.DataFrame(table), "toxicity_flagged_page", "Download this page (CSV)")

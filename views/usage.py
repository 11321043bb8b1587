"""Usage and cost: tokens, what they cost at the user's prices, latency percentiles and request rate."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import pricing
from core.catalog import below_hour
from data_access.queries import usage as usage_queries
from ui import charts, columns, data, detail_charts, downloads, filters, rollout

PRICES_KEY = "usage_prices"  # survives page switches (widget state does not)


selected, grain = filters.current()
chart = filters.chart_options()
st.title("Usage and cost")
st.caption(
    "Tokens per model version over time, their cost at the prices you enter, latency percentiles and request "
    "rate. Token counts come from the response's `usage` when it has one, otherwise they are estimated. Latency "
    "covers every request with one, failed requests included."
)
use_rollups = data.rollups_in_use("Usage and cost", selected, grain)
rollout_markers = rollout.markers(selected, grain, use_rollups)


def marked(figure: go.Figure) -> go.Figure:
    return charts.with_markers(figure, rollout_markers)


usage = data.trend_or_stop("queries.usage.usage_trend", selected, grain, use_rollups)
usage_rows = usage.data
if detail_charts.single_bucket(usage_rows):
    st.info("Only one time bucket in this range: pick a finer granularity in the sidebar to see change over time.")

# --- Prices -------------------------------------------------------------------------------------------------
st.subheader("Prices")
saved: dict[str, pricing.Price] = st.session_state.setdefault(PRICES_KEY, {})
versions = pricing.version_keys(usage_rows["model_version"]).unique()
example = pricing.EXAMPLE_PRICE
# Prices are text cells so an empty one shows blank; read_prices turns them into numbers and names bad cells.
edited = st.data_editor(
    pricing.price_table(versions, saved, example),
    key="usage_price_editor",
    num_rows="fixed",
    hide_index=True,
    disabled=[pricing.VERSION],
    column_config={
        pricing.PROMPT_PRICE: st.column_config.TextColumn(help="USD per 1,000 prompt tokens, e.g. 0.0005"),
        pricing.COMPLETION_PRICE: st.column_config.TextColumn(help="USD per 1,000 completion tokens, e.g. 0.0015"),
    },
)
prices, problems = pricing.read_prices(edited)
saved.update(prices)
downloads.csv_button(edited, "usage_prices", "Download prices (CSV)")
for problem in problems:
    st.warning(problem)
st.caption(
    f"Example prices — edit to match your contract: ${example.prompt_per_1k} per 1K prompt tokens and "
    f"${example.completion_per_1k} per 1K completion tokens. Enter both prices for a version to cost it (0 is a "
    "price); a version left without both stays unpriced, never $0."
)

costed = pricing.with_costs(usage_rows, saved)
summary = pricing.cost_summary(costed)
total, unpriced = pricing.priced_total(summary)
tokens, estimated_share, requests = pricing.token_totals(summary)
cards = st.columns(3)
unpriced_labels = ", ".join(pricing.key_label(v) for v in unpriced)
with cards[0]:
    st.metric("Tokens", f"{tokens:,}")
    st.caption(f"{estimated_share:.1%} estimated")  # a share, not a change: no delta arrow
with cards[1]:
    st.metric("Estimated cost (priced versions)", "unpriced" if total is None else f"${total:,.2f}")
    st.caption(f"Unpriced: {unpriced_labels}" if unpriced else "Every version priced")
cards[2].metric("Requests", f"{requests:,}")
shown_summary = summary.assign(model_version=summary["model_version"].map(pricing.key_label))
st.dataframe(
    shown_summary[["model_version", "requests", "prompt_tokens", "completion_tokens", "estimated_token_share", "cost"]],
    hide_index=True,
    width="stretch",
    column_config=columns.USAGE_SUMMARY,
)
downloads.csv_button(shown_summary, "usage_cost_summary", "Download summary (CSV)")

# --- Tokens and cost over time ------------------------------------------------------------------------------
st.subheader("Tokens")
downloads.chart(
    marked(detail_charts.tokens_chart(costed, grain, chart.min_count, chart.window)),
    f"tokens-per-{grain}",
    width="stretch",
)
st.caption(rollout.NOTE)
if estimated_share > 0:
    st.caption(
        f"{estimated_share:.1%} of these tokens are estimated: those responses carried no `usage`, so the parser "
        "counted the text. The bars below split reported from estimated tokens per version."
    )
downloads.chart(detail_charts.token_source_chart(summary), "token-sources", width="stretch")
data.show_sql(usage)
downloads.csv_button(costed, f"usage_tokens_{grain}", "Download tokens and cost (CSV)")

st.subheader("Cost")
if not costed["priced"].any():
    st.info("No version has a price yet: enter prices per 1K tokens above to see cost over time.")
else:
    if unpriced:
        st.caption(f"Left out, not counted as $0: {unpriced_labels} (no price).")
    downloads.chart(
        marked(detail_charts.cost_chart(costed, grain, chart.min_count)),
        f"cost-per-{grain}",
        width="stretch",
    )
    data.show_sql(usage)

# --- Latency and rate ---------------------------------------------------------------------------------------
st.subheader("Latency")
if below_hour(grain):
    latency_frame = usage_rows
    latency_sources = (usage,)
else:
    percentiles = data.fetch_or_stop(
        "queries.usage.latency_percentiles", filters=selected, grain=grain, from_rollups=use_rollups
    )
    latency_frame = percentiles.data
    latency_sources = (percentiles,)
if latency_frame.empty or (below_hour(grain) and latency_frame["latency_n"].sum() == 0):
    st.warning("No latency values in this selection: every request's latency is empty.")
else:
    downloads.chart(
        marked(detail_charts.latency_chart(latency_frame, grain, chart.min_count, chart.window)),
        f"latency-per-{grain}",
        width="stretch",
    )
    if not below_hour(grain):
        st.caption(
            f"Percentiles from log-spaced latency bins {usage_queries.LATENCY_RESOLUTION:.0%} wide: each is within "
            f"{usage_queries.LATENCY_RESOLUTION:.0%} of the exact value."
        )
    data.show_sql(*latency_sources)
    downloads.csv_button(latency_frame, f"usage_latency_{grain}", "Download latency (CSV)")

st.subheader("Requests per minute")
rated = detail_charts.with_request_rate(usage_rows, grain, selected.start, selected.end)
downloads.chart(
    marked(detail_charts.request_rate_chart(rated, grain, chart.min_count, chart.window)),
    f"request-rate-per-{grain}",
    width="stretch",
)
data.show_sql(usage)
downloads.csv_button(
    rated[["bucket", "model_version", "requests", "bucket_minutes", "requests_per_minute", "peak_requests_per_minute"]],
    f"usage_rate_{grain}",
    "Download request rate (CSV)",
)

"""Overview: each model version's traffic and quality, and whether the newer one is really different."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import comparison as page_stats
from core import glance
from core.catalog import METRICS
from core.sampling import slot_scorers
from core.scorers import scorer_caption
from core.versions import version_label, version_sort_key
from ui import (
    charts,
    columns,
    data,
    downloads,
    filters,
    glance_charts,
    report,
    rollout,
    sampling,
    trend_charts,
    version_cards,
)
from ui.comparison import compare_on_traffic

selected, grain = filters.current()
chart_options = filters.chart_options()
st.title("Overview")
st.caption(
    "Each version's traffic, errors, latency, tokens and scored quality, and for the newer version the "
    "difference from the older one with a test that suits the metric and the sample sizes behind it."
)


use_rollups = data.rollups_in_use()
totals = data.fetch_or_stop("queries.versions.version_totals", filters=selected, from_rollups=use_rollups)
if totals.data.empty or totals.data["requests"].sum() == 0:
    st.info(data.NO_MATCH)
    st.stop()

known = sorted(totals.data["model_version"].dropna().unique(), key=version_sort_key)
unversioned = int(totals.data.loc[totals.data["model_version"].isna(), "requests"].sum())
if unversioned:
    st.caption(f"{unversioned:,} requests carry no model version; they count in the charts but in no version card.")
if not known:
    st.warning("None of the matching requests names a model version, so there is nothing to compare.")
    st.stop()

controls = st.columns([1, 1, 1.4, 1.4])
baseline = controls[0].selectbox(
    "Older version (baseline)", known, index=max(len(known) - 2, 0), key="overview_baseline",
    bind="query-params", format_func=version_label,
)  # fmt: skip
comparison = controls[1].selectbox(
    "Newer version", known, index=len(known) - 1, key="overview_newer", bind="query-params", format_func=version_label
)
threshold = controls[2].slider(
    "Toxicity threshold", 0.05, 0.95, 0.5, 0.05, key="overview_toxicity", bind="query-params",
    help="A response counts as flagged when its toxicity score is at or above this value; the card below names "
    "the scorer in force and what it measures.",
)  # fmt: skip
overlap_only = controls[3].toggle(
    "Compare only while both served", value=True, key="overview_overlap", bind="query-params",
    help="Restrict the comparison to the days both versions served requests (the canary period), so the "
    "difference is not mixed up with changes in traffic or users over time.",
)  # fmt: skip
if baseline == comparison:
    st.info(
        f"Only {version_label(baseline)} is selected for comparison"
        + (" (it is the only version with traffic here)." if len(known) == 1 else ". Pick two different versions.")
    )
compared = compare_on_traffic(
    data.fetch_or_stop, selected, totals, baseline, comparison, threshold, overlap_only, use_rollups
)
if compared is None:  # unreachable: fetch_or_stop stops the page on an error
    st.stop()
scorers, table, tests = compared.result.scorers, compared.result.table, compared.result.tests


# --- Version cards -----------------------------------------------------------------------------------------
for card in version_cards.version_cards(compared.result, baseline, comparison, threshold):
    with st.container(border=True):
        st.markdown(f"**{version_label(card.version)}** · {card.role} · {card.requests:,} requests")
        for first in (0, 4):
            for column, figure in zip(st.columns(4), card.figures[first : first + 4], strict=True):
                column.metric(
                    figure.label, figure.value, figure.delta, delta_color="inverse" if figure.coloured else "off",
                    delta_description=figure.note or None, help=figure.help,
                )  # fmt: skip
st.caption(
    "Scorers: "
    + "; ".join(f"{METRICS[m].label}: {scorer_caption(s)}" for m, s in scorers.items() if m != "prompt_toxicity")
    + ". Latency percentiles come from 1%-wide bins (within 1%)."
)
# Scorers limited to a sample of requests (core/sampling.py): how much each figure rests on.
coverage = compared.coverage
if coverage is not None:
    sampling.captions(coverage.data, [baseline, comparison], scorers=slot_scorers(scorers))
data.show_sql(*compared.frames[-2:], *([coverage] if coverage is not None else []))
downloads.csv_button(table.reset_index(), "overview-versions", "Download version figures (CSV)")

# --- At a glance ------------------------------------------------------------------------------------------
st.subheader("At a glance")
panels = glance.panels(compared.result, baseline, comparison, threshold)
glance_style = st.segmented_control(
    "View", ["bars", "pie"], default="bars", key="overview_glance", bind="query-params", required=True,
    format_func={"bars": "Values, intervals and tests", "pie": "The seed's pie style"}.__getitem__,
    help="The seed write-up compared versions in pies; the same numbers are offered that way for teams "
    "reproducing its report. The bars show what the pies cannot: scale, intervals and the tests.",
)  # fmt: skip
glance_subtitle = glance_charts.subtitle(selected, compared.window, [v.version for v in panels[0].values])
glance_figure = (
    glance_charts.seed_pie_figure(panels, glance_subtitle, height=560)
    if glance_style == "pie"
    else glance_charts.glance_figure(panels, glance_subtitle, height=560)
)
st.plotly_chart(glance_figure, width="stretch", key="glance")
st.caption(glance_charts.SEED_CAVEAT if glance_style == "pie" else glance_charts.BARS_CAPTION)
for panel in panels:
    if panel.note:
        st.caption(panel.note)
downloads.png_button(glance_figure, f"at-a-glance-{glance_style}", "Download PNG (1280 x 720)")

# --- The shareable report ---------------------------------------------------------------------------------
rollout_markers = rollout.markers(selected, grain, use_rollups)  # the report's time charts and the traffic below
report_context = report.ReportContext(
    selected, grain, baseline, comparison, threshold, overlap_only, compared.window, data.source().dialect,
    str(data.settings().requests_table), use_rollups, chart_options.min_count, chart_options.window,
)  # fmt: skip
st.download_button(
    "Download the report (HTML)",
    lambda: report.build_html(
        report.collect(data.fetch, report_context, compared.result, compared.frames, rollout_markers, rollout.NOTE)
    ),
    report.file_name(report_context),
    "text/html",
    key="report",
    icon=":material/description:",
    help="One self-contained file for someone without access to the app: the filters, these cards and tests, the "
    "at-a-glance figure, the readability and toxicity trends, and the SQL behind each. Its charts stay "
    "interactive with no server and no network.",
)

# --- Significance ------------------------------------------------------------------------------------------
if tests is not None:
    st.subheader(f"Is {version_label(comparison)} different from {version_label(baseline)}?")
    st.caption(
        "Rates use a two-proportion z-test; skewed metrics (latency, tokens, readability, perplexity) use "
        "Mann-Whitney U on the engine's fine histograms. p-values are Holm-adjusted within two families: the "
        "quality measures, and the safety and content measures (refusals, PII, injection attempts, sentiment, "
        "language, RAG support). With many requests even tiny differences are significant, so read the effect "
        "size too: Cliff's delta for distributions, Cohen's h for rates. Prompt toxicity, injection attempts, "
        "prompt PII and sentiment reflect the users, not the model: a difference there means the two versions saw "
        "different traffic."
    )
    shown_tests = tests.drop(columns=["key"])
    st.dataframe(
        shown_tests,
        hide_index=True,
        width="stretch",
        column_order=page_stats.TEST_COLUMNS,  # the rest is in the details below and the CSV: fits 1440 px
        column_config=columns.version_tests(version_label(baseline), version_label(comparison)),
    )
    with st.expander("Test details: statistics, raw p-values, sample sizes"):
        st.dataframe(
            shown_tests,
            hide_index=True,
            width="stretch",
            column_order=page_stats.TEST_DETAIL_COLUMNS,
            column_config=columns.version_test_details(version_label(baseline), version_label(comparison)),
        )
    downloads.csv_button(shown_tests, "overview-tests", "Download tests (CSV)")

# --- Traffic -----------------------------------------------------------------------------------------------
st.subheader("Traffic by version")
fade_under = chart_options.min_count


def marked(figure: go.Figure) -> go.Figure:
    return charts.with_markers(figure, rollout_markers)


traffic = data.fetch_or_stop("queries.versions.traffic", filters=selected, grain=grain, from_rollups=use_rollups)
all_totals = data.fetch_or_stop("queries.versions.version_totals", filters=selected, from_rollups=use_rollups)
share_tab, volume_tab, split_tab = st.tabs(["Share over time", "Requests over time", "Share of the selection"])
with share_tab:
    downloads.chart(
        marked(trend_charts.share_chart(traffic.data, grain, fade_under)),
        f"version-share-per-{grain}",
        width="stretch",
    )
    st.caption(rollout.NOTE)
    if traffic.data["bucket"].nunique() == 1:
        st.info(f"The selection spans a single {grain}: pick a finer granularity to see the rollout over time.")
with volume_tab:
    downloads.chart(
        marked(trend_charts.requests_chart(traffic.data, grain, fade_under)),
        f"requests-per-{grain}",
        width="stretch",
    )
with split_tab:
    downloads.chart(trend_charts.version_share_bar(all_totals.data), "requests-per-version", width="stretch")
    downloads.csv_button(all_totals.data, "requests-per-version", "Download requests per version (CSV)")
downloads.csv_button(traffic.data, f"traffic-per-{grain}", "Download traffic (CSV)")
data.show_sql(traffic, all_totals)

# --- Payloads Databricks did not log (AI Gateway logging_error_codes) ------------------------------------------
not_logged = data.fetch_or_stop("queries.versions.not_logged_by_version", filters=selected)
if not not_logged.data.empty:
    st.subheader("Not logged by Databricks")
    st.caption(
        "Requests whose payload Databricks did not log, with its reason (for example a request over the size "
        "limit). They are kept and counted above; with no text they have no scores. This is Databricks' reason, "
        "not a parse error of ours."
    )
    st.dataframe(
        not_logged.data.assign(model_version=[version_label(v) for v in not_logged.data["model_version"]]),
        hide_index=True,
        column_config={
            "model_version": "Version",
            "logging_error_codes": st.column_config.TextColumn("Reason (logging_error_codes)", width="large"),
            "requests": st.column_config.NumberColumn("Requests", format="%d"),
        },
    )
    data.show_sql(not_logged, label="SQL for the unlogged payloads")

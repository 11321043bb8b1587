"""Overview: each model version's traffic and quality, and whether the newer one is really different."""

from __future__ import annotations

import streamlit as st

from core import comparison as page_stats
from core.catalog import METRICS
from core.scorers import flagged_word, scorer_caption
from core.versions import version_label, version_sort_key
from ui import columns, data, downloads, filters, trend_charts
from ui.comparison import compare_on_traffic
from ui.formatting import number

selected, grain = filters.current()
st.title("Overview")
st.caption(
    "Each version's traffic, errors, latency, tokens and scored quality, and for the newer version the "
    "difference from the older one with a test that suits the metric and the sample sizes behind it."
)


def delta_text(value: float, kind: str) -> str:
    if value != value:
        return ""
    if kind == "rate":
        return f"{value * 100:+.2f} pp"
    if kind == "ms":
        return f"{value:+,.0f} ms"
    return f"{value:+,.2f}"


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
pair = [baseline, comparison] if baseline != comparison else [baseline]
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
def compact(value: float, digits: int = 2, sign: bool = False) -> str:
    """Large numbers shortened (1.24M, 35.2k) so a card stays readable."""
    plus = "+" if sign and value > 0 else ""
    if abs(value) >= 1e6:
        return f"{plus}{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{plus}{value / 1e3:.1f}k"
    return plus + number(value, digits)


def card_note(test_key: str | None) -> tuple[str, str]:
    """(short note under a newer version's delta, full sentence for the tooltip): Holm-adjusted p and effect."""
    if tests is None or test_key not in notes:
        return "", ""
    return page_stats.significance_note(*notes[test_key])


notes = (
    {}
    if tests is None
    else {k: (p, e) for k, p, e in zip(tests["key"], tests["p_holm"], tests["effect_size"], strict=True)}
)
CARDS = (  # label, column, format, delta kind, test key
    ("Requests", "requests", lambda v: f"{v:,.0f}", None, None),
    ("Error rate", "error_rate", lambda v: f"{v:.2%}", "rate", "error_rate"),
    ("Latency p50", "latency_p50", lambda v: f"{v:,.0f} ms", "ms", "latency"),
    ("Latency p95", "latency_p95", lambda v: f"{v:,.0f} ms", "ms", "latency"),
    ("Tokens per request", "tokens_per_request", lambda v: compact(v, 1), "number", "completion_tokens"),
    ("Avg Flesch-Kincaid grade", "fk_mean", lambda v: number(v, 2), "number", "fk"),
    (
        f"{flagged_word(scorers['response_toxicity'])} responses (≥ {threshold:.2f})",
        "toxicity_rate",
        lambda v: f"{v:.2%}",
        "rate",
        "toxicity_rate",
    ),
    (
        page_stats.perplexity_card_label(scorers.get("response_perplexity")),
        "perplexity_median",
        compact,
        "number",
        "perplexity",
    ),
)
for version in pair:
    row = table.loc[version]
    is_newer = tests is not None and version == comparison
    with st.container(border=True):
        role = "newer" if is_newer else "baseline" if tests is not None else "only version"
        st.markdown(f"**{version_label(version)}** · {role} · {int(row['requests']):,} requests")
        for first in (0, 4):
            for column, (label, key, fmt, kind, test_key) in zip(st.columns(4), CARDS[first : first + 4], strict=True):
                value = row[key]
                delta = None
                if is_newer and kind is not None:
                    difference = value - table.loc[baseline, key]
                    delta = (
                        None
                        if difference != difference
                        else (compact(difference, 2, sign=True) if kind == "number" else delta_text(difference, kind))
                        or None
                    )
                short_note, full_note = card_note(test_key) if delta else ("", "")
                column.metric(
                    label, fmt(value) if value == value else "–", delta, delta_color="inverse" if kind else "off",
                    delta_description=short_note or None,
                    help=" ".join(t for t in (page_stats.card_help(key, row, scorers), full_note) if t),
                )  # fmt: skip
st.caption(
    "Scorers: "
    + "; ".join(f"{METRICS[m].label}: {scorer_caption(s)}" for m, s in scorers.items() if m != "prompt_toxicity")
    + ". Latency percentiles come from 1%-wide bins (within 1%)."
)
data.show_sql(*compared.frames[-2:])
downloads.csv_button(table.reset_index(), "overview-versions", "Download version figures (CSV)")

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
traffic = data.fetch_or_stop("queries.versions.traffic", filters=selected, grain=grain, from_rollups=use_rollups)
all_totals = data.fetch_or_stop("queries.versions.version_totals", filters=selected, from_rollups=use_rollups)
share_tab, volume_tab, split_tab = st.tabs(["Share over time", "Requests over time", "Share of the selection"])
with share_tab:
    st.plotly_chart(trend_charts.share_chart(traffic.data, grain), width="stretch")
    if traffic.data["bucket"].nunique() == 1:
        st.info(f"The selection spans a single {grain}: pick a finer granularity to see the rollout over time.")
with volume_tab:
    st.plotly_chart(trend_charts.requests_chart(traffic.data, grain), width="stretch")
with split_tab:
    st.plotly_chart(trend_charts.version_share_bar(all_totals.data), width="stretch")
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

"""How each page's tables name and format their columns: one home for `st.dataframe` column configs.

Shared columns (request rows, the two sides of a comparison, p-values and effect sizes) are configured once, so
a figure looks the same on every page.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

Config = dict[str, Any]
_Number, _Text = st.column_config.NumberColumn, st.column_config.TextColumn

# Request rows, as the Requests and Toxicity pages list them.
REQUEST_ROWS: Config = {
    "request_time": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS"),
    "model_version": "Version",
    "status_code": _Number("Status", format="%d"),
    "latency_ms": _Number("Latency (ms)", format="localized"),
    "total_tokens": _Number("Tokens", format="localized"),
    "tokens_estimated": "Tokens estimated",
    "prompt_toxicity": _Number("Prompt toxicity", format="%.3f"),
    "response_toxicity": _Number("Response toxicity", format="%.3f"),
    "has_parse_error": "Parse error",
    "has_score_error": "Score error",
    "prompt_text": _Text("Prompt (start)", width="large"),
    "response_text": _Text("Response (start)", width="large"),
}


def sample_sizes(baseline: str, comparison: str) -> Config:
    """How many values each side of a comparison rests on."""
    return {
        "n_baseline": _Number(f"n {baseline}", format="%d"),
        "n_comparison": _Number(f"n {comparison}", format="%d"),
    }


def side_by_side(old: str, new: str) -> Config:
    """Two versions' figures (columns named by their labels) with the difference and the relative change."""
    return {
        old: _Number(format="%.4g"),
        new: _Number(format="%.4g"),
        "difference": _Number("Difference", format="%+.4g"),
        "relative_change": _Number("Relative", format="percent"),
    }


def test_outcome(width: str | None = None) -> Config:
    """A test's Holm-adjusted p-value and effect size."""
    return {
        "p_holm": _Number(
            "p (Holm)", format="%.2e", width=width, help="p-value adjusted for the tests on this page (Holm)"
        ),
        "effect": _Number(
            "Effect", format="%+.3f", width=width, help="Cliff's delta for distributions, Cohen's h for rates"
        ),
    }


def version_tests(baseline: str, comparison: str) -> Config:
    """The Overview's tests table (fits 1440 px)."""
    return {
        "measure": _Text("Measure", width="medium"),
        "baseline": _Number(baseline, format="%.4g", width="small"),
        "comparison": _Number(comparison, format="%.4g", width="small"),
        "difference": _Number("Diff.", format="%+.4g", width="small"),
        **test_outcome("small"),
        "effect_size": _Text("Size", width="small"),
        "verdict": _Text("Verdict", width="medium"),
    }


def version_test_details(baseline: str, comparison: str) -> Config:
    return {
        "p_value": _Number("p (raw)", format="%.2e"),
        "statistic": _Number("Statistic", format="%.4g"),
        **sample_sizes(baseline, comparison),
    }


def drift(baseline: str, comparison: str) -> Config:
    """The Drift page's statistics table (fits 1440 px)."""
    return {
        "label": _Text("Metric", width="medium"),
        "unit": _Text("Unit", width="small"),
        "baseline_median": _Number("Median before", format="%.4g", width="small", help=f"Median of {baseline}"),
        "comparison_median": _Number("Median after", format="%.4g", width="small", help=f"Median of {comparison}"),
        "ks_statistic": _Number("KS D", format="%.3f", width="small"),
        "ks_p_value": _Number("KS p", format="%.2e", width="small"),
        "wasserstein": _Number("Wasserstein", format="%.4g", width="small"),
        "psi": _Number("PSI", format="%.3f", width="small"),
        "psi_reading": _Text("PSI reading", width="medium"),
    }


def drift_details(baseline: str, comparison: str) -> Config:
    return {"label": _Text("Metric"), **sample_sizes(baseline, comparison)}


USAGE_SUMMARY: Config = {
    "model_version": "Model version",
    "requests": _Number("Requests", format="localized"),
    "prompt_tokens": _Number("Prompt tokens", format="localized"),
    "completion_tokens": _Number("Completion tokens", format="localized"),
    "estimated_token_share": _Number("Estimated tokens", format="percent"),
    "cost": "Estimated cost (USD)",
}

ROLLBACK_AUDIT: Config = {
    "result": "Result",
    "timestamp": "Time (UTC)",
    "actor": "Who",
    "from_version": _Number("From", format="%d"),
    "to_version": _Number("To", format="%d"),
    "message": _Text("Message", width="large"),
    "line": _Number("Line", format="%d"),
}

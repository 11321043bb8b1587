"""Two model versions compared on live traffic, as the Overview and the registry's side-by-side both show it:
the days both served (the canary window), then each version's figures and the tests (`core.comparison`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date

import streamlit as st

from core.comparison import PairComparison, compare_pair, overlap_note, overlap_window
from core.versions import version_label
from data_access.queries import Filters
from ui.data import Frame

# `data.fetch_or_stop`, or `registry_data.fetch_or_none` (None once the error is shown: the page goes on).
Fetch = Callable[..., Frame | None]


@dataclass(frozen=True)
class ComparedPair:
    result: PairComparison
    frames: tuple[Frame, ...]  # every query it ran, for the SQL expander
    window: tuple[date, date] | None = None  # the days both versions served, when the comparison kept to them
    coverage: Frame | None = None  # how many requests each sampled scorer scored in the compared days


def compare_on_traffic(
    fetch: Fetch,
    filters: Filters,
    totals: Frame,
    baseline: str,
    comparison: str,
    threshold: float,
    overlap_only: bool,
    use_rollups: bool,
) -> ComparedPair | None:
    """Compare `baseline` with `comparison` (or show one version when they are the same); with `overlap_only`,
    only on the days both served, and say which days those were. None when a query failed (its error is shown)."""
    window_filters, frames, window = filters, [], None
    if baseline != comparison and overlap_only:
        by_day = fetch("queries.versions.traffic", filters=filters, grain="day", from_rollups=use_rollups)
        window = overlap_window(by_day.data, baseline, comparison) if by_day is not None else None
        if by_day is not None:
            frames.append(by_day)
        if by_day is not None and window is None:
            st.warning(overlap_note(version_label(baseline), version_label(comparison)))
        elif window is not None:
            window_filters = replace(filters, start=window[0], end=window[1])
            st.caption(f"Compared on {window[0]} to {window[1]}, the days both versions served requests.")
    in_window = (
        fetch("queries.versions.version_totals", filters=window_filters, from_rollups=use_rollups)
        if window_filters != filters
        else totals
    )
    histograms = fetch("queries.versions.histograms_by_version", filters=window_filters, from_rollups=use_rollups)
    coverage = fetch("queries.sampling.scorer_coverage", filters=window_filters, from_rollups=use_rollups)
    if in_window is None or histograms is None:
        return None
    result = compare_pair(in_window.data, histograms.data, baseline, comparison, threshold)
    return ComparedPair(result, (*frames, in_window, histograms), window, coverage)

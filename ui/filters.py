"""The shared sidebar filters: one set of widgets in app.py, bound to the URL query string.

Widgets bound with `bind="query-params"` live in the URL, so a link reproduces the view, and because they
are drawn by the entrypoint they persist across pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from core.catalog import AUTO_GRAIN, GRAINS, default_grain, span_buckets
from core.versions import version_sort_key
from data_access.queries import Filters
from ui.charts import MIN_COUNT, SMOOTH_HELP

# The URL keys of the shared sidebar filters (widgets bound with bind="query-params" below).
SHARED_PARAMS = ("endpoint", "version", "dates", "grain", "smooth", "min_n")
MAX_SMOOTHING = 48


@dataclass(frozen=True)
class ChartOptions:
    """How every time chart draws: buckets under `min_count` values faded, a `window`-bucket rolling mean."""

    min_count: int = MIN_COUNT
    window: int = 1


def sidebar_filters(options: pd.DataFrame) -> tuple[Filters, str]:
    """Draw the filters from the data's endpoints, versions and dates; return them and the granularity."""
    endpoints = sorted(options["endpoint_name"].dropna().unique())
    versions = sorted(options["model_version"].dropna().unique(), key=version_sort_key)
    first = options["first_date"].min()
    last = options["last_date"].max()
    first_day = first if isinstance(first, date) else date.today()
    last_day = last if isinstance(last, date) else first_day

    with st.sidebar:
        st.header("Filters")
        chosen_endpoints = st.multiselect(
            "Endpoint", endpoints, key="endpoint", bind="query-params", placeholder="All endpoints"
        )
        chosen_versions = st.multiselect(
            "Model version", versions, key="version", bind="query-params", placeholder="All versions"
        )
        span = st.date_input(
            "Dates (UTC)",
            value=(first_day, last_day),
            min_value=first_day,
            max_value=last_day,
            key="dates",
            bind="query-params",
        )
        chosen_grain = st.selectbox(
            "Time granularity",
            options=[AUTO_GRAIN, *GRAINS],
            format_func=lambda g: "auto (follows the dates)" if g == AUTO_GRAIN else g,
            key="grain",
            bind="query-params",
            help="Auto picks the granularity that gives the dates 60 to 250 buckets. A granularity you pick "
            "stays, in the URL too, until you pick auto again.",
        )
    start, end = _date_span(span, first_day, last_day)
    if start > end:  # only a hand-made link can say this: read it the way it was surely meant
        start, end = end, start
        st.sidebar.info(f"The link's dates were reversed; showing {start} to {end}.", icon=":material/swap_horiz:")
    days = (end - start).days + 1
    grain = default_grain(days) if chosen_grain == AUTO_GRAIN else chosen_grain
    with st.sidebar:
        if chosen_grain == AUTO_GRAIN:
            st.caption(f"Per {grain}: {span_buckets(days, grain):,.0f} buckets over {days} day{'s' * (days > 1)}.")
        window = st.number_input(
            "Smoothing (buckets)", min_value=1, max_value=MAX_SMOOTHING, value=1, key="smooth",
            bind="query-params", help=SMOOTH_HELP,
        )  # fmt: skip
        min_count = st.number_input(
            "Fade buckets under", min_value=1, max_value=10_000, value=MIN_COUNT, step=10, key="min_n",
            bind="query-params", help="Time buckets holding fewer values than this are drawn faded (or left out of "
            "shares), on every chart: their figure is noise.",
        )  # fmt: skip
    st.session_state["_chart_options"] = ChartOptions(int(min_count), int(window))
    return Filters(start, end, tuple(chosen_versions), tuple(chosen_endpoints)), grain


def _date_span(span: object, first: date, last: date) -> tuple[date, date]:
    """A half-picked range (one date) means that single day; nothing picked means everything."""
    picked = [d for d in (span if isinstance(span, tuple | list) else (span,)) if isinstance(d, date)]
    if not picked:
        return first, last
    return picked[0], picked[-1]


def publish(filters: Filters, grain: str) -> None:
    """Hand the filters drawn by app.py to the page that runs after it."""
    st.session_state["_filters"] = (filters, grain)


def current() -> tuple[Filters, str]:
    return st.session_state.get("_filters", (Filters(), "hour"))


def chart_options() -> ChartOptions:
    """The sidebar's fading and smoothing, for every time chart."""
    return st.session_state.get("_chart_options", ChartOptions())


def requests_link(requester: str) -> str:
    """A link to the Requests page narrowed to one requester (its label), keeping the sidebar filters in the URL."""
    params = {key: st.query_params.get_all(key) for key in SHARED_PARAMS if key in st.query_params}
    params["requester"] = [requester]
    return "requests?" + urlencode(params, doseq=True)

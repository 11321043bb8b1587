"""Inference Explorer: compare model versions served on Databricks Model Serving.

Thin router: page config, first-start demo data, shared sidebar filters, navigation.
"""

from __future__ import annotations

import streamlit as st

from ui import data, filters

st.set_page_config(page_title="Inference Explorer", page_icon=":material/query_stats:", layout="wide")

# Pages live in views/, not pages/: a pages/ folder beside the entrypoint switches Streamlit into its legacy
# multipage mode until st.navigation first runs, so a deep link on a fresh server would skip this file.
PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/trends.py", title="Trends", icon=":material/show_chart:"),
    st.Page("views/toxicity.py", title="Toxicity", icon=":material/report:"),
    st.Page("views/usage.py", title="Usage and cost", icon=":material/payments:"),
    st.Page("views/drift.py", title="Drift", icon=":material/compare_arrows:"),
    st.Page("views/requests.py", title="Requests", icon=":material/search:"),
    st.Page("views/alerts.py", title="Alerts", icon=":material/notifications_active:"),
    st.Page("views/registry.py", title="Model registry", icon=":material/inventory_2:"),
]


def ensure_demo_data() -> None:
    """On the embedded default, build the demo data the first time, with visible progress."""
    settings = data.settings()
    if settings.backend != "duckdb":
        return
    from jobs.bootstrap import build_demo, demo_ready

    if demo_ready(settings):
        return
    with st.status("First start: building the embedded demo data…", expanded=True) as status:
        bar = st.progress(0.0)
        build_demo(settings, lambda fraction, message: bar.progress(min(fraction, 1.0), text=message))
        status.update(label="Demo data ready", state="complete", expanded=False)
    data.refresh()


def main() -> None:
    try:
        ensure_demo_data()
    except data.DataAccessError as error:
        data.show_error(error)
        st.stop()
    with data.page_run():  # after the demo build: that writes the file
        options = data.fetch_or_stop("filter_options")
        selected, grain = filters.sidebar_filters(options.data)
        filters.publish(selected, grain)
        with st.sidebar:
            st.divider()
            st.caption(data.source_caption())
            st.caption(f"Data as of {options.fetched_at:%Y-%m-%d %H:%M:%S} UTC (cached {data.CACHE_TTL_S // 60} min)")
            if st.button("Refresh data", icon=":material/refresh:"):
                data.refresh()
                st.rerun()
        st.navigation(PAGES).run()


main()

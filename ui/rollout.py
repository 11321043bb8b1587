"""Rollout markers for a page's time charts: events from the traffic (every layout) and, on AI Gateway tables,
from the served-entities table, merged into a few markers inside the selected dates."""

from __future__ import annotations

from datetime import datetime, timedelta

import streamlit as st

from core import rollout
from core.catalog import histogram_grain
from data_access.errors import DataAccessError
from data_access.layouts import local_served_entities
from data_access.queries import Filters
from data_access.queries.rollout import MIN_REQUESTS
from ui import data

NOTE = (
    "Dotted rules mark the rollout: when a version first and last served and when its share of requests passed or "
    f"fell below 5%, 50% and 95% (in buckets of at least {MIN_REQUESTS} requests, an hour at the finest), and on AI "
    "Gateway tables each change of the endpoint's served entities. Hover a label for what changed."
)
MARKERS_PER_SPAN = 40  # events closer than 1/40 of the dates share one marker


def markers(selected: Filters, grain: str, from_rollups: bool) -> list[rollout.Marker]:
    """The markers inside the selected dates; none (and a caption saying why) if the events cannot be read."""
    try:
        traffic = data.fetch(
            "queries.rollout.rollout_traffic", filters=selected, grain=grain, from_rollups=from_rollups
        )
        events = rollout.traffic_events(traffic.data, histogram_grain(grain))
    except DataAccessError as error:
        st.caption(f"Rollout markers left out: {error.message}")
        return []
    events += _entity_events(selected)
    if not events:
        return []
    first = datetime.combine(selected.start or min(e.at for e in events).date(), datetime.min.time())
    last = datetime.combine(selected.end or max(e.at for e in events).date(), datetime.min.time()) + timedelta(days=1)
    shown = [e for e in events if first <= e.at < last]
    return rollout.markers(shown, (last - first) / MARKERS_PER_SPAN)


def _entity_events(selected: Filters) -> list[rollout.RolloutEvent]:
    """Served-entity changes, where the table is the AI Gateway layout and the app may read served_entities."""
    try:
        if data.payload_layout() != "gateway":
            return []
        served_entities = data.settings().served_entities_table
        if data.source().dialect == "duckdb":
            served_entities = local_served_entities(served_entities)
        changes = data.fetch(
            "queries.rollout.served_entity_changes",
            served_entities=served_entities,
            endpoints=selected.endpoints,
        )
    except DataAccessError as error:
        st.caption(f"Served-entity changes not marked: {error.message}")
        return []
    return rollout.entity_events(changes.data)

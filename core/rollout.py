"""Rollout events from the traffic and from served-entity changes, and the chart markers they make: pure Python.

`data_access.queries.rollout` computes, in the engine, each version's first and last minute and the first and last
bucket its share of requests reached each step; these functions turn those rows into dated events ("v7 first
served", "v7 passed 50% of traffic", "v6 fell below 95% of traffic") and merge the events that coincide into one
marker per instant, so a chart carries a few labelled rules, not clutter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from core.catalog import grain_of
from core.versions import version_label, version_sort_key

SHARE_STEPS = (0.05, 0.5, 0.95)
# Which event names a marker when several coincide: served and configuration changes first, then the big steps.
PRIORITY = {"first served": 0, "last served": 1, "endpoint": 2, "50%": 3, "95%": 4, "5%": 5}


def step_name(step: float) -> str:
    """A share step as a column suffix and label: 0.05 -> "5"."""
    return f"{step * 100:g}"


@dataclass(frozen=True)
class RolloutEvent:
    at: datetime
    text: str  # what changed, for the hover: "v7 passed 50% of traffic"
    short: str  # the label on the chart: "v7 ≥50%"
    rank: int  # PRIORITY: the lowest names a marker


@dataclass(frozen=True)
class Marker:
    at: datetime
    label: str
    texts: tuple[str, ...]


def bucket_end(start: datetime, grain: str) -> datetime:
    """The start of the bucket after the one starting at `start`."""
    stamp = pd.Timestamp(start)
    if grain == "month":
        return (stamp + pd.offsets.MonthBegin(1)).to_pydatetime()
    return (stamp + timedelta(minutes=grain_of(grain).minutes)).to_pydatetime()


def _stamp(value: object) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def traffic_events(rows: pd.DataFrame, grain: str) -> list[RolloutEvent]:
    """Events from `rollout_traffic` rows (its buckets at `grain`). Nothing is an event at the edges of the data: a
    version serving from the first minute did not start then, one above a step in the first bucket crossed nothing,
    and one still serving (or above a step) at the end has not stopped (or fallen below)."""
    events: list[RolloutEvent] = []
    for row in rows.to_dict("records"):
        label = version_label(row["model_version"])
        first, last = _stamp(row["first_served"]), _stamp(row["last_served"])
        if first is not None and first > _stamp(row["data_first_minute"]):
            events.append(RolloutEvent(first, f"{label} first served", f"{label} first", PRIORITY["first served"]))
        if last is not None and last < _stamp(row["data_last_minute"]):
            events.append(RolloutEvent(last, f"{label} last served", f"{label} last", PRIORITY["last served"]))
        for step in SHARE_STEPS:
            name = step_name(step)
            up, down = _stamp(row[f"first_at_{name}"]), _stamp(row[f"last_at_{name}"])
            rank = PRIORITY[f"{name}%"]
            if up is not None and up > _stamp(row["data_first"]):
                events.append(RolloutEvent(up, f"{label} passed {name}% of traffic", f"{label} ≥{name}%", rank))
            if down is not None and down < _stamp(row["data_last"]):
                fell = bucket_end(down, grain)
                events.append(RolloutEvent(fell, f"{label} fell below {name}% of traffic", f"{label} <{name}%", rank))
    return sorted(events, key=lambda e: (e.at, e.rank))


def entity_events(changes: pd.DataFrame) -> list[RolloutEvent]:
    """Events from `served_entity_changes` rows: per endpoint, each configuration after the first, with the versions
    it added and removed (or, serving the same versions, a changed configuration: e.g. a new traffic split)."""
    events: list[RolloutEvent] = []
    rank = PRIORITY["endpoint"]
    for endpoint, rows in changes.groupby("endpoint_name", sort=True):
        before: set[str] | None = None
        configs = rows.groupby(["change_time", "endpoint_config_version"], sort=True)["entity_version"]
        for (at, config), versions in configs:
            now = {str(v) for v in versions.dropna()}
            if before is not None:
                added = sorted(now - before, key=version_sort_key)
                removed = sorted(before - now, key=version_sort_key)
                served = ", ".join(version_label(v) for v in sorted(now, key=version_sort_key)) or "nothing"
                what = "; ".join(
                    [f"{version_label(v)} added" for v in added] + [f"{version_label(v)} removed" for v in removed]
                )
                text = f"{endpoint} config {config}: {what or 'configuration changed'} (serving {served})"
                short = f"{version_label(added[0])} added" if added else f"config {config}"
                events.append(RolloutEvent(_stamp(at), text, short, rank))  # type: ignore[arg-type]
            before = now
    return sorted(events, key=lambda e: (e.at, e.rank))


def markers(events: list[RolloutEvent], min_gap: timedelta) -> list[Marker]:
    """One marker per instant: events closer than `min_gap` to the marker they follow join it (the hover lists them
    all, deduplicated); its label is the most telling event's, with "+n" for the others."""
    groups: list[list[RolloutEvent]] = []
    for event in sorted(events, key=lambda e: (e.at, e.rank)):
        if groups and event.at - groups[-1][0].at < min_gap:
            groups[-1].append(event)
        else:
            groups.append([event])
    out = []
    for group in groups:
        texts = tuple(dict.fromkeys(e.text for e in sorted(group, key=lambda e: (e.rank, e.at))))
        lead = min(group, key=lambda e: (e.rank, e.at))
        out.append(Marker(group[0].at, lead.short + (f" +{len(texts) - 1}" if len(texts) > 1 else ""), texts))
    return out

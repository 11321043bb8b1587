"""Rollout markers: events from the traffic (engine query + core logic) against an independent pandas computation
on the demo's v7 canary and against a hand-built table; served-entity changes; markers merge what coincides."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import pytest

from core.catalog import histogram_grain
from core.rollout import SHARE_STEPS, RolloutEvent, entity_events, markers, step_name, traffic_events
from data_access.config import TableName
from data_access.demo.gateway import served_entities
from data_access.queries import Filters, run
from data_access.queries.rollout import rollout_traffic, served_entity_changes
from data_access.sources import DuckDBSource
from testkit.tables import demo_directory
from ui import charts

TABLE = TableName("requests")
FREQ = {"hour": "h", "3 hours": "3h", "6 hours": "6h", "day": "D"}


@pytest.fixture(scope="module")
def source(with_rollups: Path) -> DuckDBSource:
    return DuckDBSource(with_rollups / "inference.duckdb")


@pytest.fixture(scope="module")
def raw(demo_rows: Any) -> pd.DataFrame:
    return demo_rows.select(["request_time", "model_version"]).to_pandas()


def pandas_events(raw: pd.DataFrame, grain: str, min_requests: int) -> list[tuple[datetime, str]]:
    """The events by hand from the requests: loops over versions, buckets and steps."""
    minutes = raw["request_time"].dt.floor("min")
    buckets = raw["request_time"].dt.floor(FREQ[histogram_grain(grain)])
    totals = buckets.value_counts()
    counted = totals.index[totals >= min_requests]
    edges = (minutes.min(), minutes.max(), counted.min(), counted.max())
    step = {"hour": timedelta(hours=1), "3 hours": timedelta(hours=3), "6 hours": timedelta(hours=6),
            "day": timedelta(days=1)}[grain]  # fmt: skip
    events = []
    for version in sorted(raw["model_version"].dropna().unique()):
        mine = raw["model_version"] == version
        first, last = minutes[mine].min(), minutes[mine].max()
        if first > edges[0]:
            events.append((first, f"v{version} first served"))
        if last < edges[1]:
            events.append((last, f"v{version} last served"))
        counts = buckets[mine].value_counts()
        shares = {b: counts.get(b, 0) / n for b, n in totals.items() if n >= min_requests}
        for threshold in SHARE_STEPS:
            hits = sorted(b for b, s in shares.items() if s >= threshold)
            name = step_name(threshold)
            if hits and hits[0] > edges[2]:
                events.append((hits[0], f"v{version} passed {name}% of traffic"))
            if hits and hits[-1] < edges[3]:
                events.append((hits[-1] + step, f"v{version} fell below {name}% of traffic"))
    return sorted((pd.Timestamp(at).to_pydatetime(), text) for at, text in events)


@pytest.mark.parametrize(("grain", "from_rollups"), [("6 hours", True), ("day", False), ("hour", True)])
def test_traffic_events_match_pandas_on_the_demo_canary(
    source: DuckDBSource, raw: pd.DataFrame, grain: str, from_rollups: bool
) -> None:
    rows = run(source, rollout_traffic(TABLE, Filters(versions=("7",)), grain, 30, from_rollups)).table.to_pandas()
    got = sorted((e.at, e.text) for e in traffic_events(rows, grain))
    assert got == pandas_events(raw, grain, 30)


def test_the_demo_canary_reads_as_it_was_made(source: DuckDBSource) -> None:
    rows = run(source, rollout_traffic(TABLE, Filters(), "6 hours")).table.to_pandas()
    events = {e.text: e.at for e in traffic_events(rows, "6 hours")}
    # Small demo, noisy 6-hour shares: the exact check is the pandas one above; here, the canary's shape.
    # data_access.demo.traffic.ROLLOUT: v7 10% from 12 April 10:00, 50% from 17 April 10:00, 100% from 21 April 9:00
    # 6,000 requests: about one v7 request an hour during the 10% canary
    assert datetime(2026, 4, 12, 10) <= events["v7 first served"] < datetime(2026, 4, 12, 18)
    assert datetime(2026, 4, 21, 6) <= events["v6 last served"] < datetime(2026, 4, 21, 9)
    assert datetime(2026, 4, 12, 6) <= events["v7 passed 5% of traffic"] <= datetime(2026, 4, 14)
    assert datetime(2026, 4, 17, 6) <= events["v7 passed 50% of traffic"] <= datetime(2026, 4, 19)
    assert datetime(2026, 4, 21, 6) <= events["v7 passed 95% of traffic"] <= datetime(2026, 4, 22)
    assert "v6 first served" not in events and "v7 last served" not in events  # the edges of the data
    assert "v6 passed 95% of traffic" not in events and "v7 fell below 95% of traffic" not in events


def test_traffic_events_from_a_hand_built_table() -> None:
    at = pd.Timestamp
    rows = pd.DataFrame(
        [
            {"model_version": "6", "first_served": at("2026-04-01 00:00"), "last_served": at("2026-04-09 12:34"),
             "first_at_5": at("2026-04-01"), "last_at_5": at("2026-04-09"),
             "first_at_50": at("2026-04-01"), "last_at_50": at("2026-04-05"),
             "first_at_95": at("2026-04-01"), "last_at_95": at("2026-04-02")},
            {"model_version": "7", "first_served": at("2026-04-02 10:05"), "last_served": at("2026-04-10 23:59"),
             "first_at_5": at("2026-04-02"), "last_at_5": at("2026-04-10"),
             "first_at_50": at("2026-04-06"), "last_at_50": at("2026-04-10"),
             "first_at_95": at("2026-04-10"), "last_at_95": at("2026-04-10")},
            {"model_version": "8", "first_served": at("2026-04-10 23:00"), "last_served": at("2026-04-10 23:30"),
             "first_at_5": None, "last_at_5": None, "first_at_50": None, "last_at_50": None,
             "first_at_95": None, "last_at_95": None},
        ]
    ).assign(data_first=at("2026-04-01"), data_last=at("2026-04-10"), data_first_minute=at("2026-04-01 00:00"),
             data_last_minute=at("2026-04-10 23:59"))  # fmt: skip
    got = [(e.at, e.text) for e in traffic_events(rows, "day")]
    d = datetime
    assert got == [
        (d(2026, 4, 2), "v7 passed 5% of traffic"),
        (d(2026, 4, 2, 10, 5), "v7 first served"),
        (d(2026, 4, 3), "v6 fell below 95% of traffic"),
        (d(2026, 4, 6), "v6 fell below 50% of traffic"),
        (d(2026, 4, 6), "v7 passed 50% of traffic"),
        (d(2026, 4, 9, 12, 34), "v6 last served"),
        (d(2026, 4, 10), "v7 passed 95% of traffic"),  # at one instant, the bigger step first
        (d(2026, 4, 10), "v6 fell below 5% of traffic"),
        (d(2026, 4, 10, 23, 0), "v8 first served"),
        (d(2026, 4, 10, 23, 30), "v8 last served"),
    ]


def test_served_entity_changes_of_the_gateway_demo(tmp_path: Path) -> None:
    import duckdb

    with duckdb.connect(str(tmp_path / "se.duckdb")) as con:
        con.register("incoming", served_entities())
        con.execute("CREATE SCHEMA serving; CREATE TABLE serving.served_entities AS SELECT * FROM incoming")
    source = DuckDBSource(tmp_path / "se.duckdb")
    query = served_entity_changes(TABLE, TableName.parse("serving.served_entities"), ("dbdemos_endpoint_advanced",))
    changes = run(source, query).table.to_pandas()
    got = [(e.at, e.text) for e in entity_events(changes)]
    assert got == [
        (datetime(2026, 4, 12, 10), "dbdemos_endpoint_advanced config 2: v7 added (serving v6, v7)"),
        (datetime(2026, 4, 17, 10), "dbdemos_endpoint_advanced config 3: configuration changed (serving v6, v7)"),
        (datetime(2026, 4, 21, 9), "dbdemos_endpoint_advanced config 4: v6 removed (serving v7)"),
    ]
    other = served_entity_changes(TABLE, TableName.parse("serving.served_entities"), ("no_such_endpoint",))
    assert run(source, other).table.num_rows == 0
    assert "databricks" and other.sql("databricks")


def test_coinciding_events_make_one_marker_named_by_the_most_telling() -> None:
    at = datetime(2026, 4, 12, 10)
    events = [
        RolloutEvent(at, "v7 passed 5% of traffic", "v7 ≥5%", 5),
        RolloutEvent(at + timedelta(minutes=3), "v7 first served", "v7 first", 0),
        RolloutEvent(at, "v6 fell below 95% of traffic", "v6 <95%", 4),
        RolloutEvent(at, "v7 passed 5% of traffic", "v7 ≥5%", 5),  # the same event from both sources
        RolloutEvent(at + timedelta(days=5), "v7 passed 50% of traffic", "v7 ≥50%", 3),
    ]
    got = markers(events, timedelta(hours=3))
    assert [(m.at, m.label) for m in got] == [(at, "v7 first +2"), (at + timedelta(days=5), "v7 ≥50%")]
    assert got[0].texts == ("v7 first served", "v6 fell below 95% of traffic", "v7 passed 5% of traffic")


def test_a_marker_is_a_dotted_rule_and_a_label_that_says_what_changed() -> None:
    fig = go.Figure(go.Scatter(x=pd.to_datetime(["2026-04-11", "2026-04-13"]), y=[1, 2]))
    found = markers(
        [RolloutEvent(datetime(2026, 4, 12, 10), "v7 first served", "v7 first", 0),
         RolloutEvent(datetime(2026, 4, 12, 10), "v6 fell below 95% of traffic", "v6 <95%", 4)],
        timedelta(hours=1),
    )  # fmt: skip
    charts.with_markers(fig, found)
    (rule,), (label,) = fig.layout.shapes, fig.layout.annotations
    assert (rule.x0, rule.x1, rule.yref, rule.line.dash) == (
        "2026-04-12 10:00:00",
        "2026-04-12 10:00:00",
        "paper",
        "dot",
    )
    assert label.text == "v7 first +1" and label.x == rule.x0
    assert label.hovertext == "<b>2026-04-12 10:00 UTC</b><br>v7 first served<br>v6 fell below 95% of traffic"


TIME_CHART_PAGES = ("views/overview.py", "views/trends.py", "views/toxicity.py", "views/usage.py")


@pytest.fixture(scope="module")
def with_rollups(demo_rows: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_directory(tmp_path_factory.getbasetemp(), demo_rows)


def test_every_time_chart_on_every_page_carries_the_markers(app: Any) -> None:
    app.run()
    for page in TIME_CHART_PAGES:
        app.switch_page(page).run()
        assert not app.exception and not app.error, page
        specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
        timed = [s for s in specs if s["layout"].get("xaxis", {}).get("type") == "date" or " per " in
                 s["layout"].get("title", {}).get("text", "").split("<br>")[0]]  # fmt: skip
        assert timed, page
        for spec in timed:
            hovers = " ".join(a.get("hovertext", "") for a in spec["layout"].get("annotations", []))
            assert "v7 first served" in hovers and "v7 passed 50% of traffic" in hovers, (page, spec["layout"]["title"])
        assert "Dotted rules mark the rollout" in " ".join(c.value for c in app.caption), page

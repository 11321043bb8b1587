"""Queries behind the rollout markers on every time chart: when each version first and last served and when its
share of the traffic crossed `SHARE_STEPS`, from the traffic itself (the hourly profile); and when the endpoint's
served entities changed, from `system.serving.served_entities` (AI Gateway layout). `core.rollout` turns the rows
into events."""

from __future__ import annotations

import ibis

from core.catalog import histogram_grain
from core.rollout import SHARE_STEPS, step_name
from data_access.config import TableName
from data_access.queries import Filters, Query, sum_counts, truncate_to
from data_access.queries.job import served_entities_table
from data_access.rollups import profile_rows

MIN_REQUESTS = 30  # a share from fewer requests is not counted as a crossing (one request is 100% of something)


def rollout_traffic(
    table: TableName, filters: Filters, grain: str, min_requests: int = MIN_REQUESTS, from_rollups: bool = True
) -> Query:
    """Per version: first and last minute served, and per share step the first and last bucket (the chart's grain,
    an hour at the finest) whose share of all requests reached it, among buckets of at least `min_requests`.

    Shares are among every version of the selected endpoints over all dates: the version and date filters would
    make any version 100% of its own traffic, and a rollout began before the dates a chart shows. Also the
    first and last counted bucket and minute of the data, so that a version already above a step at the start
    crosses nothing."""
    at = histogram_grain(grain)  # an hour at the finest: the hourly profile (first and last minute included)
    m = profile_rows(table, Filters(endpoints=filters.endpoints), at, from_rollups)
    per = m.group_by([truncate_to(m.bucket, at).name("bucket"), m.model_version]).agg(
        requests=sum_counts(m.requests), first_minute=m.first_minute.min(), last_minute=m.last_minute.max()
    )
    per = per.mutate(total=per.requests.sum().over(group_by=per.bucket))
    counted = per.total >= ibis.literal(int(min_requests))
    per = per.mutate(
        share=ibis.cases((counted, per.requests.cast("float64") / per.total.cast("float64"))),
        counted_bucket=ibis.cases((counted, per.bucket)),
    )
    per = per.mutate(
        data_first=per.counted_bucket.min().over(),
        data_last=per.counted_bucket.max().over(),
        data_first_minute=per.first_minute.min().over(),
        data_last_minute=per.last_minute.max().over(),
    )
    per = per.filter(per.model_version.notnull())
    measures = {
        "requests": sum_counts(per.requests),
        "first_served": per.first_minute.min(),
        "last_served": per.last_minute.max(),
        "data_first": per.data_first.min(),
        "data_last": per.data_last.max(),
        "data_first_minute": per.data_first_minute.min(),
        "data_last_minute": per.data_last_minute.max(),
    }
    for step in SHARE_STEPS:
        reached = per.share >= ibis.literal(step)  # null share (too few requests) is not a hit
        measures[f"first_at_{step_name(step)}"] = per.bucket.min(where=reached)
        measures[f"last_at_{step_name(step)}"] = per.bucket.max(where=reached)
    return Query("rollout_traffic", per.group_by("model_version").agg(**measures).order_by("model_version"))


def served_entity_changes(table: TableName, served_entities: TableName, endpoints: tuple[str, ...] = ()) -> Query:
    """Each endpoint configuration of the selected endpoints: its change time and the versions it serves (one row
    per entity). `table` (the requests table every page query takes) is not read."""
    se = served_entities_table(served_entities)
    if endpoints:
        se = se.filter(se.endpoint_name.isin([ibis.literal(e) for e in endpoints]))
    expr = (
        se.select("endpoint_name", "endpoint_config_version", "change_time", "entity_name", "entity_version")
        .distinct()
        .order_by(["change_time", "endpoint_name", "endpoint_config_version", "entity_version"])
    )
    return Query("served_entity_changes", expr)

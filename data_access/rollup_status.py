"""Whether the pages may read the rollups (`data_access.rollups`): the state table each refresh writes last with
the counts it verified (`rollup_counts`), the check every page runs first (`rollup_freshness`, `rollups_usable`),
and what a refresh looks at (`rollup_presence`, `stale_dates`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from typing import Any

import ibis

from core.catalog import METRICS
from data_access.config import TableName
from data_access.queries import Query, requests_table, sum_counts
from data_access.rollups import (
    FLAGGED_FLOOR,
    ROLLUP_VERSION,
    band_histograms,
    band_rollup_name,
    bin_index,
    flagged_requests,
    flagged_rollup_name,
    histogram_rollup_name,
    histograms,
    hourly_profile,
    hourly_rollup_name,
    latency_histogram,
    latency_rollup_name,
    minute_profile,
    minute_rollup_name,
    newest_flagged,
    newest_flagged_rollup_name,
    prompt_samples,
    requester_prompts,
    requester_rollup_name,
    rollup_builds,
    sample_rollup_name,
    stored,
    table_location,
)


def state_name(requests: TableName) -> TableName:
    """The one-row table each refresh writes last: the counts it verified (`rollup_counts`)."""
    return replace(requests, table=f"{requests.table}__state_v{ROLLUP_VERSION}")


def rollup_tables(requests: TableName) -> list[TableName]:
    """Every table a refresh writes: the rollups and, last, the state table."""
    return [*(name for name, _ in rollup_builds(requests)), state_name(requests)]


def rollup_presence(table: TableName) -> Query:
    """Which of the refresh's tables (`rollup_tables`) exist (one row per table found); for the refresh, which
    builds what is missing (the pages read the state table instead)."""
    names = [name.table for name in rollup_tables(table)]
    tables = ibis.table(
        {"table_catalog": "string", "table_schema": "string", "table_name": "string"},
        name="tables",
        database="information_schema",
        catalog=table.catalog,
    )
    condition = tables.table_name.isin([ibis.literal(n) for n in names])
    if table.schema:
        condition &= tables.table_schema == ibis.literal(table.schema)
    return Query("rollup_presence", tables.filter(condition).select("table_name").distinct().order_by("table_name"))


def rollup_counts(table: TableName) -> Query:
    """One row: requests in the table and in the minute and hourly profiles, latency values in the minute rollup and the
    histograms and the latency histogram, scored prompts in the minute rollup, the requesters rollup and the sample
    rollup's strata, prompts and responses of at least 0.05 toxicity in the histograms, the flagged rollup and the
    newest flagged rollup's bins, and values in the histograms and the band histograms. It reads every rollup: the
    refresh runs it once and keeps its row in the state table (`state_name`), which the pages read."""
    raw = requests_table(table)
    minute = stored(minute_rollup_name(table), minute_profile)
    hourly = stored(hourly_rollup_name(table), hourly_profile)
    hist = stored(histogram_rollup_name(table), histograms)
    requesters = stored(requester_rollup_name(table), requester_prompts)
    samples = stored(sample_rollup_name(table), prompt_samples)
    flagged = stored(flagged_rollup_name(table), flagged_requests)
    newest = stored(newest_flagged_rollup_name(table), newest_flagged)
    latency = stored(latency_rollup_name(table), latency_histogram)
    band = stored(band_rollup_name(table), band_histograms)
    binning = METRICS["prompt_toxicity"].binning
    hist_toxic = {
        f"histogram_{side}": sum_counts(
            hist.n, where=(hist.metric == ibis.literal(metric)) & (hist.bin >= FLAGGED_FLOOR)
        )
        for side, metric in (("flagged_prompts", "prompt_toxicity"), ("flagged_responses", "response_toxicity"))
    }
    expr = (
        raw.aggregate(table_requests=raw.count())
        .cross_join(
            minute.aggregate(
                rollup_requests=sum_counts(minute.requests),
                rollup_latency=sum_counts(minute.latency_ms__n),
                rollup_prompts=sum_counts(minute.prompt_toxicity__n),
            )
        )
        .cross_join(hourly.aggregate(hourly_requests=sum_counts(hourly.requests)))
        .cross_join(
            hist.aggregate(
                histogram_latency=sum_counts(hist.n, where=hist.metric == ibis.literal("latency_ms")),
                histogram_values=sum_counts(hist.n),
                **hist_toxic,
            )
        )
        .cross_join(requesters.aggregate(requester_prompts=sum_counts(requesters.n)))
        .cross_join(
            samples.aggregate(sample_prompts=sum_counts(samples.stratum_prompts, where=samples.sample_rank == 0))
        )
        .cross_join(
            flagged.aggregate(
                **{
                    f"flagged_{side}": sum_counts((bin_index(binning, flagged[column]) >= FLAGGED_FLOOR).cast("int64"))
                    for side, column in (("prompts", "prompt_toxicity"), ("responses", "response_toxicity"))
                }
            )
        )
        .cross_join(
            newest.aggregate(
                **{
                    f"newest_{side}": sum_counts(newest[f"{target}_bin_rows"], where=newest[f"{target}_rank"] == 0)
                    for side, target in (("prompts", "prompt"), ("responses", "response"))
                }
            )
        )
        .cross_join(latency.aggregate(latency_rollup_values=sum_counts(latency.n)))
        .cross_join(band.aggregate(band_values=sum_counts(band.n)))
    )
    return Query("rollup_counts", expr)


def rollup_freshness(table: TableName) -> Query:
    """What a page checks before it reads the rollups, in one statement that reads no rollup: the requests in
    the table now (`table_requests`; Delta answers a bare COUNT(*) from the record counts in its log,
    delta-io/delta#1192) beside the state table's row,
    the counts the last refresh verified, its request count as `verified_requests`. No row when the state table
    is empty; an error when it is missing (a refresh under way, or none yet): either way not usable."""
    raw = requests_table(table)
    state = ibis.table(_state_schema(), **table_location(state_name(table)))
    verified = state.rename(verified_requests="table_requests")
    return Query("rollup_freshness", raw.aggregate(table_requests=raw.count()).cross_join(verified))


@cache
def _state_schema() -> ibis.Schema:
    return rollup_counts(TableName("requests")).expr.schema()


def rollups_usable(freshness: Sequence[dict[str, Any]]) -> bool:
    """True when the rows of `rollup_freshness` say the rollups count exactly what the requests table holds now:
    one state row, whose request count is the table's, and whose rollups agree with each other."""
    if len(freshness) != 1:
        return False
    values = {key: int(value or 0) for key, value in freshness[0].items()}
    agreeing = (
        ("table_requests", "verified_requests"),
        ("verified_requests", "rollup_requests"),
        ("verified_requests", "hourly_requests"),
        ("rollup_latency", "histogram_latency"),
        ("rollup_latency", "latency_rollup_values"),
        ("histogram_values", "band_values"),
        ("rollup_prompts", "requester_prompts"),
        ("rollup_prompts", "sample_prompts"),
        ("histogram_flagged_prompts", "flagged_prompts"),
        ("histogram_flagged_responses", "flagged_responses"),
        ("histogram_flagged_prompts", "newest_prompts"),
        ("histogram_flagged_responses", "newest_responses"),
    )
    return all(values[a] == values[b] for a, b in agreeing)


def stale_dates(table: TableName) -> Query:
    """Dates whose request count differs between the requests table and the minute rollup."""
    raw = requests_table(table)
    minute = stored(minute_rollup_name(table), minute_profile)
    counted = raw.group_by("date").agg(table_rows=raw.count())
    rolled = minute.group_by("date").agg(rollup_rows=sum_counts(minute.requests))
    joined = counted.outer_join(rolled, counted.date == rolled.date)
    expr = joined.select(
        date=ibis.coalesce(joined.date, joined.date_right),
        table_rows=joined.table_rows.fill_null(0),
        rollup_rows=joined.rollup_rows.fill_null(0),
    )
    return Query("stale_dates", expr.filter(expr.table_rows != expr.rollup_rows).order_by("date"))

"""Queries of the Usage and cost page: requests, tokens and latency per bucket and version.

Moments and the tokens the parser estimated come from the minute profile, latency percentiles from the hourly fine
histograms of the rollups (`data_access.rollups`).
"""

from __future__ import annotations

import ibis

from core.catalog import below_hour
from data_access.config import TableName
from data_access.queries import Filters, Query, sum_counts, truncate_to
from data_access.queries.binned import part_percentiles, percentile_name
from data_access.queries.rollout import rollout_traffic
from data_access.rollups import LATENCY_BIN_RATIO, latency_rows, minute_rows, rollup_freshness

PERCENTILES = (0.5, 0.95, 0.99)
LATENCY_RESOLUTION = LATENCY_BIN_RATIO - 1  # a latency percentile is within this share of the exact value


def usage_trend(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """Per bucket and version: requests, the busiest minute, token sums, the requests whose token counts the parser
    estimated (the response had no `usage`) and their token sums, and latency moments (all requests with a
    latency). Minutes are summed first, so the peak is the busiest single minute of the bucket. The estimated
    tokens ride along here, not in a statement of their own: on a warehouse each statement has a fixed cost."""
    m = minute_rows(table, filters, from_rollups)
    per_minute = m.group_by([m.bucket, m.model_version]).agg(
        requests=m.requests.sum(),
        prompt_tokens=m.prompt_tokens__sum.sum(),
        prompt_token_rows=m.prompt_tokens__n.sum(),
        completion_tokens=m.completion_tokens__sum.sum(),
        estimated_requests=m.estimated_requests.sum(),
        estimated_prompt_tokens=m.estimated_prompt_tokens.sum(),
        estimated_completion_tokens=m.estimated_completion_tokens.sum(),
        latency_n=m.latency_ms__n.sum(),
        latency_sum=m.latency_ms__sum.sum(),
        latency_sumsq=m.latency_ms__sumsq.sum(),
        latency_min=m.latency_ms__min.min(),
        latency_max=m.latency_ms__max.max(),
    )
    p = per_minute
    g = p.group_by([truncate_to(p.bucket, grain).name("bucket"), p.model_version]).agg(
        requests=sum_counts(p.requests),
        peak_requests_per_minute=p.requests.max().cast("float64").cast("int64"),
        requests_with_tokens=sum_counts(p.prompt_token_rows),
        prompt_tokens=sum_counts(p.prompt_tokens.fill_null(0)),
        completion_tokens=sum_counts(p.completion_tokens.fill_null(0)),
        estimated_requests=sum_counts(p.estimated_requests),
        estimated_prompt_tokens=sum_counts(p.estimated_prompt_tokens.fill_null(0)),
        estimated_completion_tokens=sum_counts(p.estimated_completion_tokens.fill_null(0)),
        latency_n=sum_counts(p.latency_n),
        s=p.latency_sum.sum(),
        ss=p.latency_sumsq.sum(),
        min_ms=p.latency_min.min(),
        max_ms=p.latency_max.max(),
    )
    variance = (g.ss - g.s * g.s / g.latency_n) / (g.latency_n - 1)  # sample variance; round-off clipped below
    expr = g.select(
        "bucket",
        "model_version",
        "requests",
        "peak_requests_per_minute",
        "requests_with_tokens",
        "prompt_tokens",
        "completion_tokens",
        "estimated_requests",
        "estimated_prompt_tokens",
        "estimated_completion_tokens",
        "latency_n",
        mean_ms=ibis.cases((g.latency_n > 0, g.s / g.latency_n)),
        std_ms=ibis.cases((g.latency_n > 1, ibis.greatest(variance, 0.0).sqrt())),
        min_ms="min_ms",
        max_ms="max_ms",
    )
    return Query("usage_trend", expr.order_by(["bucket", "model_version"]))


def latency_percentiles(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """p50, p95 and p99 latency per bucket (hour grain or coarser) and version, from the latency histogram's
    log-spaced bins (`rollups.latency_histogram`; from the requests table, the same bins built on the fly).

    As numpy's linear percentile: the value between the order statistics k and k+1 around (n - 1) * q. Each
    order statistic is estimated inside its bin, between the bin's smallest and largest latency (exact at
    both ends), so it is off by at most the bin's spread: within `LATENCY_RESOLUTION` (5%) of the exact value.
    """
    if below_hour(grain):
        raise ValueError("latency percentiles start at hour grain; per minute, use the mean and spread")
    h = latency_rows(table, filters, from_rollups)
    parts = h.select(truncate_to(h.hour, grain).name("bucket"), "model_version", "bin", "n", "lo", "hi")
    partition = ["bucket", "model_version"]
    ranked = part_percentiles(parts, partition, PERCENTILES)
    names = {f"{percentile_name(q)}_ms": ranked[percentile_name(q)] for q in PERCENTILES}
    expr = ranked.select(*partition, latency_n="n", **names).order_by(partition)
    return Query("latency_percentiles", expr)


def usage_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    percentiles = [] if below_hour(grain) else [latency_percentiles(table, filters, grain, from_rollups)]
    return [
        rollup_freshness(table),
        usage_trend(table, filters, grain, from_rollups),
        rollout_traffic(table, filters, grain, from_rollups=from_rollups),
        *percentiles,
    ]

"""Queries of the Usage and cost page: requests, tokens and latency per bucket and version.

Moments and the tokens the parser estimated come from the hourly profile (the minute profile below an hour), latency
percentiles from the latency histogram of the rollups (`data_access.rollups`).
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from core.catalog import below_hour
from data_access.config import TableName
from data_access.queries import Filters, Query, hour_bucket, sum_counts, truncate_to
from data_access.queries.binned import part_percentiles, percentile_name
from data_access.queries.rollout import rollout_traffic
from data_access.rollup_status import rollup_freshness
from data_access.rollups import LATENCY_BIN_RATIO, latency_rows, merged, minute_rows, profile_rows

PERCENTILES = (0.5, 0.95, 0.99)
LATENCY_RESOLUTION = LATENCY_BIN_RATIO - 1  # a latency percentile is within this share of the exact value


def usage_trend(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """Per bucket and version: requests, the busiest minute, token sums, the requests whose token counts the parser
    estimated (the response had no `usage`) and their token sums, and latency moments (all requests with a
    latency). The estimated tokens ride along here, not in a statement of their own: on a warehouse each statement
    has a fixed cost."""
    p = _per_part(table, filters, grain, from_rollups)
    g = p.group_by([truncate_to(p.bucket, grain).name("bucket"), p.model_version]).agg(
        requests=sum_counts(p.requests),
        peak_requests_per_minute=p.peak.max().cast("float64").cast("int64"),
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


def _per_part(table: TableName, filters: Filters, grain: str, from_rollups: bool) -> ir.Table:
    """Rows that add up to the page's buckets, each with `peak`, the busiest minute it covers. Over the rollups at
    an hour and coarser, the hourly profile's rows: their busiest minute is the version's on every endpoint
    (`version_peak`) or, with one endpoint selected, on that one (`endpoint_peak`). Otherwise (a finer grain,
    several endpoints, whose minutes must be added up before the busiest is known, or the requests table) the
    minutes, summed per version."""
    if below_hour(grain) or len(filters.endpoints) > 1 or not from_rollups:
        m = minute_rows(table, filters, from_rollups)
        return m.group_by([m.bucket, m.model_version]).agg(
            **{name: merged(m[column]) for name, column in PARTS.items()}, peak=m.requests.sum()
        )
    h = profile_rows(table, filters, grain, from_rollups)
    peak = h.endpoint_peak if filters.endpoints else h.version_peak
    return h.select("bucket", "model_version", peak=peak, **{name: h[column] for name, column in PARTS.items()})


PARTS = {  # what `usage_trend` adds up: its name for it, the profile's column
    "requests": "requests",
    "prompt_tokens": "prompt_tokens__sum",
    "prompt_token_rows": "prompt_tokens__n",
    "completion_tokens": "completion_tokens__sum",
    "estimated_requests": "estimated_requests",
    "estimated_prompt_tokens": "estimated_prompt_tokens",
    "estimated_completion_tokens": "estimated_completion_tokens",
    "latency_n": "latency_ms__n",
    "latency_sum": "latency_ms__sum",
    "latency_sumsq": "latency_ms__sumsq",
    "latency_min": "latency_ms__min",
    "latency_max": "latency_ms__max",
}


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
    parts = h.select(hour_bucket(h.hour, grain).name("bucket"), "model_version", "bin", "n", "lo", "hi")
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

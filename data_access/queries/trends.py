"""Queries of the Trends page: one metric over time, as moments from the hourly profile (the minute profile below
an hour) and percentile bands from the hourly fine histograms."""

from __future__ import annotations

import ibis

from core.catalog import below_hour, metric_info
from data_access.config import TableName
from data_access.queries import Filters, Query, hour_bucket, sum_counts, truncate_to
from data_access.queries.binned import binned_percentiles, part_percentiles
from data_access.queries.rollout import rollout_traffic
from data_access.queries.sampling import scorer_coverage
from data_access.rollup_status import rollup_freshness
from data_access.rollups import BAND_FINE_BINS, band_rows, histogram_rows, profile_rows, scorer_of

BAND_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

BAND_BIN_MERGE = {"hour": BAND_FINE_BINS}  # fine bins merged per band bin, by grain (others: 1)


def metric_trend(table: TableName, filters: Filters, grain: str, metric: str, from_rollups: bool = True) -> Query:
    """One metric per time bucket, version and scorer: values scored, mean, standard deviation, min and max."""
    metric_info(metric)
    m = profile_rows(table, filters, grain, from_rollups)
    grouped = m.group_by([truncate_to(m.bucket, grain).name("bucket"), m.model_version, scorer_of(m, metric)]).agg(
        n=sum_counts(m[f"{metric}__n"]),
        s=m[f"{metric}__sum"].sum(),
        ss=m[f"{metric}__sumsq"].sum(),
        lo=m[f"{metric}__min"].min(),
        hi=m[f"{metric}__max"].max(),
    )
    grouped = grouped.filter(grouped.n > 0)
    # Sample variance from the sum of squares; tiny negative round-off is clipped to zero.
    variance = (grouped.ss - grouped.s * grouped.s / grouped.n) / (grouped.n - 1)
    sd = ibis.cases((grouped.n > 1, ibis.greatest(variance, 0.0).sqrt()), else_=ibis.null("float64"))
    expr = grouped.select("bucket", "model_version", "scorer", "n", mean=grouped.s / grouped.n, sd=sd, lo="lo", hi="hi")
    return Query("metric_trend", expr.order_by(["bucket", "model_version", "scorer"]))


def metric_band(table: TableName, filters: Filters, grain: str, metric: str, from_rollups: bool = True) -> Query:
    """The 10/25/50/75/90th percentiles of one metric per bucket (hour grain or coarser), version and scorer.

    Computed in the engine from the hourly fine histograms: a running count finds the bin holding each order
    statistic and the value is interpolated inside it, so a percentile is off by at most its bin's spread:
    1% for skewed metrics, times `BAND_BIN_MERGE[grain]` (at hour grain adjacent fine bins are merged, which
    halves the cost of the running count over a month of hours). Per-minute percentiles are not offered.
    """
    metric_info(metric)
    if below_hour(grain):
        raise ValueError("percentile bands start at hour grain; per minute, use the mean and standard deviation")
    partition = ["bucket", "model_version", "scorer"]
    if BAND_BIN_MERGE.get(grain, 1) == BAND_FINE_BINS:  # hour grain: the band histograms hold these bins
        b = band_rows(table, filters, from_rollups)
        b = b.filter(b.metric == ibis.literal(metric))
        parts = b.select(hour_bucket(b.hour, grain).name("bucket"), "model_version", "scorer", "bin", "n", "lo", "hi")
        ranked = part_percentiles(parts, partition, BAND_QUANTILES)
    else:
        h = histogram_rows(table, filters, from_rollups)
        h = h.filter(h.metric == ibis.literal(metric))
        keys = [hour_bucket(h.hour, grain).name("bucket"), h.model_version, h.scorer]
        bins = h.group_by([*keys, "bin"]).agg(n=sum_counts(h.n), lo=h.lo.min(), hi=h.hi.max())
        ranked = binned_percentiles(bins, partition, BAND_QUANTILES, coarse_bins=None)
    ranked = ranked.drop("n").order_by(partition)
    return Query("metric_band", ranked)


BENCH_METRIC = "response_perplexity"  # the page's list measures the metric with the most bins


def trends_page(
    table: TableName, filters: Filters, grain: str, from_rollups: bool = True, metric: str = BENCH_METRIC
) -> list[Query]:
    """The page's first load for the metric picked (the page passes it; the benchmark and tests take the default)."""
    return [
        rollup_freshness(table),
        metric_trend(table, filters, grain, metric, from_rollups),
        rollout_traffic(table, filters, grain, from_rollups=from_rollups),
        scorer_coverage(table, filters, from_rollups),  # how many requests a sampled scorer scored
        *([] if below_hour(grain) else [metric_band(table, filters, grain, metric, from_rollups)]),
    ]

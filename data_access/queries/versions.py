"""Queries of the pages that compare model versions: Overview, Drift and the registry's inference figures.

Totals, daily traffic and fine histograms per version (or per date window), all read from the rollups
(`data_access.rollups`), or built from the raw table with `from_rollups=False`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date

import ibis
import ibis.expr.types as ir

from core.catalog import metric_info
from data_access.config import TableName
from data_access.queries import Filters, Query, filtered, requests_table, sum_counts, truncate_to
from data_access.queries.rollout import rollout_traffic
from data_access.queries.sampling import scorer_coverage
from data_access.rollup_status import rollup_freshness
from data_access.rollups import histogram_rows, minute_rows

DEMO_PAIR = ("6", "7")  # the registry page compares these when the sidebar does not pick two versions


def version_totals(table: TableName, filters: Filters, from_rollups: bool = True) -> Query:
    """Per model version: requests, errors, unparsed payloads, tokens, and the first and last minute served."""
    return Query(
        "version_totals", totals_by_version(minute_rows(table, filters, from_rollups)).order_by("model_version")
    )


def totals_by_version(m: ir.Table) -> ir.Table:
    """Minute-profile rows summed per model version (shared with the monitors' window totals)."""
    return m.group_by("model_version").agg(
        requests=sum_counts(m.requests),
        errors=sum_counts(m.errors),
        parse_errors=sum_counts(m.parse_errors),
        total_tokens=m.total_tokens_sum.sum(),
        prompt_tokens=m.prompt_tokens__sum.sum(),
        completion_tokens=m.completion_tokens__sum.sum(),
        first_seen=m.bucket.min(),
        last_seen=m.bucket.max(),
    )


def not_logged_by_version(table: TableName, filters: Filters) -> Query:
    """Per model version and reason: rows whose payload Databricks did not log (AI Gateway `logging_error_codes`,
    e.g. MAX_REQUEST_SIZE_EXCEEDED), apart from our own parse errors. Reads the requests table (one column
    filtered), since the rollups predate the gateway columns; empty for legacy tables."""
    t = filtered(requests_table(table), filters)
    t = t.filter(t.logging_error_codes.notnull())
    expr = (
        t.group_by(["model_version", "logging_error_codes"])
        .agg(requests=t.count())
        .order_by(["model_version", "logging_error_codes"])
    )
    return Query("not_logged_by_version", expr)


def traffic(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """Requests and errors per time bucket and version (the rollout as it happened)."""
    m = minute_rows(table, filters, from_rollups)
    expr = (
        m.group_by([truncate_to(m.bucket, grain).name("bucket"), m.model_version])
        .agg(requests=sum_counts(m.requests), errors=sum_counts(m.errors))
        .order_by(["bucket", "model_version"])
    )
    return Query("traffic", expr)


def _histogram_agg(h: ir.Table, group: ir.Value, metrics: Sequence[str]) -> ir.Table:
    for metric in metrics:
        metric_info(metric)
    if metrics:
        h = h.filter(h.metric.isin([ibis.literal(m) for m in metrics]))
    return h.group_by([group.name("group"), h.metric, h.scorer, h.bin]).agg(
        n=sum_counts(h.n), total=h.total.sum(), lo=h.lo.min(), hi=h.hi.max()
    )


def histograms_by_version(
    table: TableName, filters: Filters, metrics: tuple[str, ...] = (), from_rollups: bool = True
) -> Query:
    """Fine histograms per version, metric and scorer (all metrics unless some are named)."""
    h = histogram_rows(table, filters, from_rollups)
    expr = _histogram_agg(h, h.model_version, metrics).order_by(["group", "metric", "scorer", "bin"])
    return Query("histograms_by_version", expr)


def histograms_by_window(
    table: TableName,
    filters: Filters,
    baseline: tuple[date, date],
    comparison: tuple[date, date],
    metrics: tuple[str, ...] = (),
    from_rollups: bool = True,
) -> Query:
    """Fine histograms of a baseline and a comparison date window (inclusive; they may overlap)."""
    parts = []
    for label, (start, end) in (("baseline", baseline), ("comparison", comparison)):
        if start > end:
            raise ValueError(f"the {label} window ends before it starts")
        h = histogram_rows(table, replace(filters, start=start, end=end), from_rollups)
        parts.append(_histogram_agg(h, ibis.literal(label), metrics))
    expr = ibis.union(*parts, distinct=False).order_by(["group", "metric", "scorer", "bin"])
    return Query("histograms_by_window", expr)


def overview_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    # The page compares versions on the days both served; that window is only known from the daily traffic,
    # so the totals and histograms of the window are listed here with the sidebar's filters (same cost).
    return [
        rollup_freshness(table),
        version_totals(table, filters, from_rollups),
        traffic(table, filters, "day", from_rollups),
        version_totals(table, filters, from_rollups),  # again, for the comparison window
        histograms_by_version(table, filters, from_rollups=from_rollups),
        scorer_coverage(table, filters, from_rollups),  # how much of the traffic each sampled scorer scored
        traffic(table, filters, grain, from_rollups),
        rollout_traffic(table, filters, grain, from_rollups=from_rollups),
        not_logged_by_version(table, filters),
    ]


def drift_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    return [
        rollup_freshness(table),
        version_totals(table, filters, from_rollups),
        histograms_by_version(table, filters, from_rollups=from_rollups),
        scorer_coverage(table, filters, from_rollups),  # how many requests each sampled scorer scored
    ]


def registry_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    """What the registry page runs against the inference table: the two compared versions' totals and
    histograms; the versions are the filter's two, else the demo's 6 and 7."""
    pair = filters.versions if len(filters.versions) == 2 else DEMO_PAIR
    pair_filters = replace(filters, versions=tuple(pair))
    return [
        rollup_freshness(table),
        traffic(table, pair_filters, "day", from_rollups),
        version_totals(table, pair_filters, from_rollups),
        histograms_by_version(table, pair_filters, from_rollups=from_rollups),
        scorer_coverage(table, pair_filters, from_rollups),  # how many requests each sampled scorer scored
    ]

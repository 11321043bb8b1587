"""Queries of the Toxicity page: toxicity over time, shares above a threshold, a sample of prompts, who sends
toxic prompts, and the flagged requests.

Shares come exactly from the 0.001-wide histogram bins of the rollups (`data_access.rollups`): a threshold lies on
the bin grid, so counts from the histograms and from the requests agree; who sends toxic prompts, from the
requesters rollup. Two figures are individual requests, read from the rollups that keep requests: the scatter
sample (`SAMPLE_POINTS` scored prompts picked by the millisecond of the minute they arrived at, from the sample
rollup) and the flagged
requests (a page at a time, `data_access.queries.listing`, from the flagged rollup at any threshold of 0.05 or
more, the first page newest first from the newest flagged rollup); with from_rollups=False both come from the
requests table, the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import ibis
import ibis.expr.types as ir

from core.catalog import METRICS, histogram_grain
from data_access.config import TableName
from data_access.queries import Filters, Query, filtered, hour_bucket, requests_table, sum_counts, truncate_to
from data_access.queries.listing import LISTED_KEYS, TEXT_CHARS, page_of, texts_inline
from data_access.queries.rollout import rollout_traffic
from data_access.queries.sampling import scorer_coverage
from data_access.rollup_status import rollup_freshness
from data_access.rollups import (
    FLAGGED_FLOOR,
    NEWEST_KEPT,
    PROMPT_SAMPLE_SIZE,
    REQUESTER_BIN,
    REQUESTER_FLOOR,
    flagged_rows,
    histogram_rows,
    minute_rows,
    newest_flagged_rows,
    requester_rows,
    sample_rows,
)

MAX_SELECTED_POINTS = 200
DEFAULT_THRESHOLD = 0.5
SAMPLE_POINTS = PROMPT_SAMPLE_SIZE
TOXICITY_METRICS = ("prompt_toxicity", "response_toxicity")

ToxicityTarget = Literal["either", "prompt", "response"]

FLAGGED_SORTS = ("request_time", "prompt_toxicity", "response_toxicity", "latency_ms")


TOXICITY_SCALE = METRICS["prompt_toxicity"].binning.scale  # histogram bins are 1 / TOXICITY_SCALE wide


def threshold_bin(threshold: float) -> int:
    """The histogram bin a threshold starts: thresholds lie on the bin grid (0.001), so that counts from the
    histograms and from the requests agree exactly."""
    threshold = float(threshold)
    edge = round(threshold * TOXICITY_SCALE)
    if not 0.0 <= threshold <= 1.0 or abs(threshold * TOXICITY_SCALE - edge) > 1e-6:
        raise ValueError(f"threshold must be between 0 and 1 in steps of {1 / TOXICITY_SCALE:g}, got {threshold}")
    return edge


def _reaches(score: ir.FloatingValue, threshold: float) -> ir.BooleanValue:
    """score >= threshold, written as the histograms bin it (floor(score * scale) >= edge), so both agree."""
    return score * TOXICITY_SCALE >= threshold_bin(threshold)


def of_scorer(t: ir.Table, column: str, scorer: str | None) -> ir.Table:
    """Keep one scorer's rows; None means the caller saw a single scorer in the selection."""
    return t if scorer is None else t.filter(t[column] == ibis.literal(scorer, type="string"))


def chart_grain(grain: str) -> str:
    """Histograms are hourly: below an hour, histogram-based numbers come per hour."""
    return histogram_grain(grain)


def toxicity_trend(
    table: TableName, filters: Filters, grain: str, scorer: str | None = None, from_rollups: bool = True
) -> Query:
    """Per bucket, version and toxicity scorer: requests, scored prompts and responses, and their means."""
    m = of_scorer(minute_rows(table, filters, from_rollups), "toxicity_scorer", scorer)
    grouped = m.group_by([truncate_to(m.bucket, grain).name("bucket"), m.model_version, m.toxicity_scorer]).agg(
        requests=sum_counts(m.requests),
        prompts_scored=sum_counts(m.prompt_toxicity__n),
        prompt_sum=m.prompt_toxicity__sum.sum(),
        responses_scored=sum_counts(m.response_toxicity__n),
        response_sum=m.response_toxicity__sum.sum(),
    )
    expr = grouped.select(
        "bucket",
        "model_version",
        "toxicity_scorer",
        "requests",
        "prompts_scored",
        prompt_mean=ibis.cases((grouped.prompts_scored > 0, grouped.prompt_sum / grouped.prompts_scored)),
        responses_scored="responses_scored",
        response_mean=ibis.cases((grouped.responses_scored > 0, grouped.response_sum / grouped.responses_scored)),
    )
    return Query("toxicity_trend", expr.order_by(["bucket", "model_version", "toxicity_scorer"]))


def toxicity_shares(
    table: TableName,
    filters: Filters,
    grain: str,
    threshold: float = DEFAULT_THRESHOLD,
    scorer: str | None = None,
    from_rollups: bool = True,
) -> Query:
    """Per bucket (hour grain or coarser: minute becomes hour), version and scorer: scored prompts and
    responses and how many are at or above the threshold, exactly, from the 0.001-wide histogram bins."""
    first_bin = threshold_bin(threshold)
    h = histogram_rows(table, filters, from_rollups)
    h = of_scorer(h.filter(h.metric.isin(list(TOXICITY_METRICS))), "scorer", scorer)
    measures = {}
    for metric, side in zip(TOXICITY_METRICS, ("prompts", "responses"), strict=True):
        is_metric = h.metric == ibis.literal(metric)
        measures[f"{side}_scored"] = sum_counts(h.n, where=is_metric)
        measures[f"{side}_flagged"] = sum_counts(h.n, where=is_metric & (h.bin >= first_bin))
    keys = [hour_bucket(h.hour, chart_grain(grain)).name("bucket"), h.model_version, h.scorer]
    expr = h.group_by(keys).agg(**measures).rename(toxicity_scorer="scorer")
    return Query("toxicity_shares", expr.order_by(["bucket", "model_version", "toxicity_scorer"]))


def prompt_sample(table: TableName, filters: Filters, scorer: str | None = None, from_rollups: bool = True) -> Query:
    """The selection's first `SAMPLE_POINTS` scored prompts by the millisecond of the minute they arrived at
    (`rollups.sample_key`, ties by request id), with a text preview, for the prompt-vs-toxicity scatter: a
    pseudo-random sample spread over the whole selection, the same on every visit and engine. From the sample rollup
    (which keeps that many per date, endpoint, version and scorer, so it holds every selection's sample), or
    with from_rollups=False from the requests table."""
    rows = of_scorer(sample_rows(table, filters, from_rollups), "toxicity_scorer", scorer)
    columns = [*LISTED_KEYS, "prompt_toxicity", "prompt_preview"]
    expr = rows.order_by([rows.sample_key, rows.request_id]).limit(SAMPLE_POINTS).select(*columns)
    return Query("prompt_sample", expr)


@dataclass(frozen=True)
class FlaggedQuery:
    """Which requests count as flagged: the threshold, what must reach it, one scorer, and points picked on a
    trend chart (bucket start at `grain`, model version)."""

    threshold: float = DEFAULT_THRESHOLD
    target: ToxicityTarget = "either"
    scorer: str | None = None
    grain: str = "hour"
    points: tuple[tuple[datetime, str | None], ...] = ()  # version None: requests without a version


def _flagged(
    table: TableName, filters: Filters, flagged: FlaggedQuery, from_rollups: bool, newest: bool = False
) -> ir.Table:
    """The flagged requests of the selection; `newest`: only those the newest flagged rollup keeps (`newest_first`)."""
    # The flagged rollup holds every request reaching 0.05 either way: any threshold from there reads it.
    rolled = from_rollups and threshold_bin(flagged.threshold) >= FLAGGED_FLOOR
    rows = newest_flagged_rows(table, filters) if newest else flagged_rows(table, filters, rolled)
    t = of_scorer(rows, "toxicity_scorer", flagged.scorer)
    prompt_hit = _reaches(t.prompt_toxicity, flagged.threshold)
    response_hit = _reaches(t.response_toxicity, flagged.threshold)
    hits = {"prompt": prompt_hit, "response": response_hit, "either": prompt_hit | response_hit}
    if flagged.target not in hits:
        raise ValueError(f"target must be 'either', 'prompt' or 'response', got {flagged.target!r}")
    t = t.filter(hits[flagged.target])  # a null score is not a hit: WHERE drops NULL
    if flagged.points:
        if len(flagged.points) > MAX_SELECTED_POINTS:
            raise ValueError(f"at most {MAX_SELECTED_POINTS} chart points can be selected, got {len(flagged.points)}")
        at = truncate_to(t.request_time, flagged.grain)
        picked = [
            (at == ibis.literal(start))
            & (t.model_version.isnull() if v is None else t.model_version == ibis.literal(v, type="string"))
            for start, v in flagged.points
        ]
        t = t.filter(ibis.or_(*picked))
    return t


MAX_REQUESTERS = 25  # requesters listed by `toxic_requesters`, most flagged prompts first


def toxic_requesters(
    table: TableName, filters: Filters, flagged: FlaggedQuery = FlaggedQuery(), from_rollups: bool = True
) -> Query:
    """Who sends toxic prompts: per requester, scored prompts and prompts at or above the threshold (one scorer),
    their share of all flagged prompts and the requester's own flagged rate, most flagged first (at most
    MAX_REQUESTERS). Rows without a requester (legacy tables log none) are one group, requester null.

    From the requesters rollup when the threshold is one it bins (the page's 0.01 steps from 0.05); otherwise,
    or with from_rollups=False, from the requests."""
    edge = threshold_bin(flagged.threshold)
    if from_rollups and edge % REQUESTER_BIN == 0 and edge // REQUESTER_BIN >= REQUESTER_FLOOR:
        r = of_scorer(requester_rows(table, filters, from_rollups), "toxicity_scorer", flagged.scorer)
        grouped = r.group_by("requester").agg(
            prompts=sum_counts(r.n), flagged=sum_counts(r.n, where=r.bin >= edge // REQUESTER_BIN)
        )
    else:
        t = of_scorer(filtered(requests_table(table), filters), "toxicity_scorer", flagged.scorer)
        t = t.filter(t.prompt_toxicity.notnull())
        hit = _reaches(t.prompt_toxicity, flagged.threshold)
        grouped = t.group_by("requester").agg(prompts=t.count(), flagged=sum_counts(hit.cast("int64")))
    all_flagged = grouped.flagged.sum().over()
    expr = (
        grouped.filter(grouped.flagged > 0)
        .mutate(
            share_of_flagged=grouped.flagged.cast("float64") / all_flagged.cast("float64"),
            flagged_rate=grouped.flagged.cast("float64") / grouped.prompts.cast("float64"),
        )
        .order_by([ibis.desc("flagged"), "requester"])
        .limit(MAX_REQUESTERS)
    )
    return Query("toxic_requesters", expr)


def requester_options(table: TableName, filters: Filters) -> Query:
    """The requesters in the selection with their request counts, for the Requests page's filter."""
    t = filtered(requests_table(table), filters)
    t = t.filter(t.requester.notnull())
    expr = t.group_by("requester").agg(requests=t.count()).order_by([ibis.desc("requests"), "requester"])
    return Query("requester_options", expr.limit(MAX_REQUESTER_OPTIONS))


MAX_REQUESTER_OPTIONS = 2_000


def flagged_requests(
    table: TableName,
    filters: Filters,
    flagged: FlaggedQuery = FlaggedQuery(),
    sort: str = "request_time",
    descending: bool = True,
    page: int = 0,
    page_size: int = 50,
    from_rollups: bool = True,
) -> Query:
    """One page of flagged requests. Sorted by time it includes the texts (the engine reads them for the
    page's rows only); sorted otherwise it is narrow, and the page fetches texts with `request_texts`. The first
    page newest first (the page's first load) reads the newest flagged rollup where it holds the page
    (`newest_first`): the same rows from a few percent of the flagged ones."""
    if sort not in FLAGGED_SORTS:
        raise ValueError(f"cannot sort flagged requests by {sort!r}; choose one of {', '.join(FLAGGED_SORTS)}")
    newest = from_rollups and newest_first(flagged, sort, descending, page, page_size)
    t = _flagged(table, filters, flagged, from_rollups, newest)
    columns: list[str | ir.Value] = [
        *LISTED_KEYS,
        "toxicity_scorer",
        "prompt_toxicity",
        "response_toxicity",
        "latency_ms",
    ]
    chars = TEXT_CHARS if texts_inline(sort) else None
    return Query("flagged_requests", page_of(t, columns, sort, descending, page, page_size, chars))


def newest_first(flagged: FlaggedQuery, sort: str, descending: bool, page: int, page_size: int) -> bool:
    """Whether the newest flagged rollup holds the page: newest first, within the first `NEWEST_KEPT` rows, at a
    threshold on the 0.01 grid from 0.05 (each target's flagged rows are then whole 0.01 bins, and the newest rows
    of a union of bins are among each bin's newest), no chart points picked (a bucket cuts through bins)."""
    edge = threshold_bin(flagged.threshold)
    on_grid = edge % REQUESTER_BIN == 0 and edge >= FLAGGED_FLOOR
    first_rows = sort == "request_time" and descending and (page + 1) * page_size <= NEWEST_KEPT
    return on_grid and first_rows and not flagged.points


def flagged_count(
    table: TableName, filters: Filters, flagged: FlaggedQuery = FlaggedQuery(), from_rollups: bool = True
) -> Query:
    t = _flagged(table, filters, flagged, from_rollups)
    return Query("flagged_count", t.aggregate(rows=t.count()))


def toxicity_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    """The page's first load: the rollup check, trend, shares, the sample, and the first page of toxic prompts
    (newest first). Its total comes from the shares, so `flagged_count` runs only for "either" or a minute-grain
    chart selection."""
    return [
        rollup_freshness(table),
        toxicity_trend(table, filters, grain, from_rollups=from_rollups),
        toxicity_shares(table, filters, grain, from_rollups=from_rollups),
        rollout_traffic(table, filters, grain, from_rollups=from_rollups),
        scorer_coverage(table, filters, from_rollups),  # how many requests a sampled scorer scored
        prompt_sample(table, filters, from_rollups=from_rollups),
        flagged_requests(
            table, filters, FlaggedQuery(target="prompt", grain=chart_grain(grain)), from_rollups=from_rollups
        ),
        toxic_requesters(table, filters, FlaggedQuery(target="prompt"), from_rollups),
    ]

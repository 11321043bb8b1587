"""Queries of the Toxicity page: toxicity over time, shares above a threshold, a sample of prompts, who sends
toxic prompts, and the flagged requests.

Shares come exactly from the 0.001-wide histogram bins of the rollups (`data_access.rollups`): a threshold lies on
the bin grid, so counts from the histograms and from the requests agree; who sends toxic prompts, from the
requesters rollup. Two figures are individual requests and read the requests table, cheaply: the scatter sample
(at most `SAMPLE_POINTS` prompts from a few narrow time windows the engine prunes to) and the flagged requests (a
page at a time, `data_access.queries.listing`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Literal

import ibis
import ibis.expr.types as ir

from core.catalog import METRICS, histogram_grain
from data_access.config import TableName
from data_access.queries import Filters, Query, filtered, requests_table, sum_counts, truncate_to
from data_access.queries.listing import LISTED_KEYS, PREVIEW_CHARS, TEXT_CHARS, page_of, sort_keys, texts_inline
from data_access.queries.rollout import rollout_traffic
from data_access.queries.sampling import scorer_coverage
from data_access.rollups import (
    REQUESTER_BIN,
    REQUESTER_FLOOR,
    histogram_rows,
    minute_rows,
    requester_rows,
    rollup_freshness,
)

MAX_SELECTED_POINTS = 200
DEFAULT_THRESHOLD = 0.5
SAMPLE_POINTS = 500
SAMPLE_WINDOWS = 17  # 30 days / 17 = 42.4 h apart: the windows fall at different times of day
SAMPLE_WINDOW = timedelta(minutes=12)  # each window costs the engine a visit; width is cheap
TOXICITY_METRICS = ("prompt_toxicity", "response_toxicity")

ToxicityTarget = Literal["either", "prompt", "response"]
SampleMode = Literal["spread", "latest"]

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
    keys = [truncate_to(h.hour, chart_grain(grain)).name("bucket"), h.model_version, h.scorer]
    expr = h.group_by(keys).agg(**measures).rename(toxicity_scorer="scorer")
    return Query("toxicity_shares", expr.order_by(["bucket", "model_version", "toxicity_scorer"]))


def sample_windows(start: date, end: date) -> tuple[tuple[datetime, datetime], ...]:
    """`SAMPLE_WINDOWS` evenly spaced windows of `SAMPLE_WINDOW` across the dates (inclusive), narrower when
    the span is short. Fixed times, so the engine prunes by time and reads only the rows inside them."""
    if start > end:
        raise ValueError("the date range ends before it starts")
    first = datetime.combine(start, datetime.min.time())
    span = datetime.combine(end, datetime.min.time()) + timedelta(days=1) - first
    step = span / SAMPLE_WINDOWS
    width = min(SAMPLE_WINDOW, step)
    return tuple((first + i * step, first + i * step + width) for i in range(SAMPLE_WINDOWS))


def prompt_sample(table: TableName, filters: Filters, mode: SampleMode = "spread", scorer: str | None = None) -> Query:
    """At most `SAMPLE_POINTS` scored prompts with a text preview, for the prompt-vs-toxicity scatter.

    "spread": the prompts inside `sample_windows` (needs a date range), and if there are more than
    `SAMPLE_POINTS`, those whose timestamp's second and millisecond are smallest: a fixed pseudo-random pick
    spread over the whole range. "latest": the most recent prompts.
    """
    if mode not in ("spread", "latest"):
        raise ValueError(f"mode must be 'spread' or 'latest', got {mode!r}")
    spread = mode == "spread"
    if spread and (filters.start is None or filters.end is None):
        raise ValueError("a spread sample needs a date range; use mode='latest' without one")
    # The windows lie inside the dates, so the date filter is left out: fewer columns for the engine to open.
    t = filtered(requests_table(table), replace(filters, start=None, end=None) if spread else filters)
    t = of_scorer(t, "toxicity_scorer", scorer)
    columns = [
        "request_id",
        "request_time",
        "model_version",
        "prompt_toxicity",
        t.prompt_text.substr(0, PREVIEW_CHARS).name("prompt_preview"),
    ]
    if mode == "latest":
        rows = t.filter(t.prompt_toxicity.notnull())
        expr = rows.order_by(sort_keys(rows, "request_time", True)).limit(SAMPLE_POINTS).select(*columns)
        return Query("prompt_sample_latest", expr)
    # One scan per window, each a plain range the engine pushes into its scan and prunes by (an OR of the ranges
    # prunes row groups too, but then tests every row of them against every range).
    rows = ibis.union(
        *[t.filter(t.request_time >= ibis.literal(begin), t.request_time < ibis.literal(stop),
                   t.prompt_toxicity.notnull()).select(*columns)
          for begin, stop in sample_windows(filters.start, filters.end)],  # type: ignore[arg-type]
        distinct=False,
    )  # fmt: skip
    # Sub-second digits of a timestamp are as good as random and the same on every engine.
    pick = rows.request_time.second().cast("int64") * 1000 + rows.request_time.millisecond().cast("int64")
    expr = rows.order_by([pick, rows.request_time, rows.request_id]).limit(SAMPLE_POINTS)
    return Query("prompt_sample_spread", expr)


@dataclass(frozen=True)
class FlaggedQuery:
    """Which requests count as flagged: the threshold, what must reach it, one scorer, and points picked on a
    trend chart (bucket start at `grain`, model version)."""

    threshold: float = DEFAULT_THRESHOLD
    target: ToxicityTarget = "either"
    scorer: str | None = None
    grain: str = "hour"
    points: tuple[tuple[datetime, str | None], ...] = ()  # version None: requests without a version


def _flagged(table: TableName, filters: Filters, flagged: FlaggedQuery) -> ir.Table:
    t = of_scorer(filtered(requests_table(table), filters), "toxicity_scorer", flagged.scorer)
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
) -> Query:
    """One page of flagged requests. Sorted by time it includes the texts (the engine reads them for the
    page's rows only); sorted otherwise it is narrow, and the page fetches texts with `request_texts`."""
    if sort not in FLAGGED_SORTS:
        raise ValueError(f"cannot sort flagged requests by {sort!r}; choose one of {', '.join(FLAGGED_SORTS)}")
    t = _flagged(table, filters, flagged)
    columns: list[str | ir.Value] = [
        *LISTED_KEYS,
        "toxicity_scorer",
        "prompt_toxicity",
        "response_toxicity",
        "latency_ms",
    ]
    chars = TEXT_CHARS if texts_inline(sort) else None
    return Query("flagged_requests", page_of(t, columns, sort, descending, page, page_size, chars))


def flagged_count(table: TableName, filters: Filters, flagged: FlaggedQuery = FlaggedQuery()) -> Query:
    t = _flagged(table, filters, flagged)
    return Query("flagged_count", t.aggregate(rows=t.count()))


def toxicity_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    """The page's first load: the rollup check, trend, shares, the sample, and the first page of toxic prompts
    (newest first). Its total comes from the shares, so `flagged_count` runs only for "either" or a minute-grain
    chart selection."""
    sample_mode: SampleMode = "spread" if filters.start is not None and filters.end is not None else "latest"
    return [
        rollup_freshness(table),
        toxicity_trend(table, filters, grain, from_rollups=from_rollups),
        toxicity_shares(table, filters, grain, from_rollups=from_rollups),
        rollout_traffic(table, filters, grain, from_rollups=from_rollups),
        scorer_coverage(table, filters, from_rollups),  # how many requests a sampled scorer scored
        prompt_sample(table, filters, sample_mode),
        flagged_requests(table, filters, FlaggedQuery(target="prompt", grain=chart_grain(grain))),
        toxic_requesters(table, filters, FlaggedQuery(target="prompt"), from_rollups),
    ]

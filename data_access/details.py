"""Queries of the Toxicity, Usage and cost, and Requests pages.

Every builder takes the requests table first (as `ui.data.fetch` passes it) and returns a `Query`.

Speed at 10M rows comes from two rules:

- Aggregates over time read the shared rollups of `data_access.analytics` (a minute profile and hourly fine
  histograms). With `from_rollups=False` the same expressions run over the raw table and give identical
  numbers, only slower; pages pass it when the rollups are missing or behind.
- Per-request queries never make the engine read every prompt and response: texts are fetched only where a
  filter the engine pushes into its scan (a time range, a time+id point lookup) or a time-ordered top-K limits
  the rows. Lists sorted by anything but time are fetched narrow, and their texts by point lookups.

Per-request results are bounded: pages of at most `MAX_PAGE_SIZE` rows, a scatter sample of at most
`SAMPLE_POINTS`, one request, its raw payload rows, and an export of at most `EXPORT_ROW_CAP` rows.
Paging is a top-K (`ORDER BY keys LIMIT offset + size`) then a row number over those K rows only: correct on
every engine (unlike a window over an ordered subquery), and the keys always end with `request_id`, so pages
never overlap or skip a row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Literal

import ibis
import ibis.expr.types as ir

from core.catalog import METRICS, grain_unit
from data_access import analytics
from data_access.config import TableName
from data_access.queries import Filters, Query, filtered, from_epoch_ms, payload_table, requests_table
from data_access.schema import LAYOUT_SCHEMAS

MAX_PAGE_SIZE = 200
MAX_SELECTED_POINTS = 200
EXPORT_ROW_CAP = 100_000
PREVIEW_CHARS = 300  # list pages show the start of each text; the detail view shows all of it
TEXT_CHARS = 4_000  # flagged-table texts are cut here; the Requests page shows a request in full
DEFAULT_THRESHOLD = 0.5
SAMPLE_POINTS = 500
SAMPLE_WINDOWS = 17  # 30 days / 17 = 42.4 h apart: the windows fall at different times of day
SAMPLE_WINDOW = timedelta(minutes=12)  # each window costs the engine a visit; width is cheap
PERCENTILES = (0.5, 0.95, 0.99)
TOXICITY_METRICS = ("prompt_toxicity", "response_toxicity")

ToxicityTarget = Literal["either", "prompt", "response"]
SampleMode = Literal["spread", "latest"]
ParseErrorFilter = Literal["any", "with", "without"]

FLAGGED_SORTS = ("request_time", "prompt_toxicity", "response_toxicity", "latency_ms")
REQUEST_SORTS = (
    "request_time",
    "latency_ms",
    "total_tokens",
    "prompt_toxicity",
    "response_toxicity",
    "response_fk_grade",
    "response_perplexity",
    "status_code",
)
RANGE_COLUMNS = (
    "prompt_toxicity",
    "response_toxicity",
    "response_fk_grade",
    "response_perplexity",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)
SEARCH_FIELDS = ("prompt_text", "response_text", "request_id")


# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------


def _count_total(counts: ir.NumericColumn, where: ir.BooleanValue | None = None) -> ir.IntegerScalar:
    """A sum of counts as int64, 0 when there is nothing to sum (DuckDB widens SUM(BIGINT) to 128 bits;
    through DOUBLE it is exact below 2**53)."""
    return counts.sum(where=where).fill_null(0).cast("float64").cast("int64")


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


def _check_page(page: int, page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    if page < 0:
        raise ValueError(f"page must be 0 or more, got {page}")


def _sort_keys(t: ir.Table, sort: str, descending: bool) -> list[ir.Value]:
    first = ibis.desc(t[sort]) if descending else ibis.asc(t[sort])
    time_key = [] if sort == "request_time" else [ibis.desc(t.request_time)]  # cheap tie-break before the id
    return [first, *time_key, ibis.asc(t.request_id)]


def _paged(t: ir.Table, sort: str, descending: bool, page: int, page_size: int) -> ir.Table:
    """Rows `page * page_size` up to `(page + 1) * page_size` in (sort, request_id) order, on any engine."""
    _check_page(page, page_size)
    offset = page * page_size
    top = t.order_by(_sort_keys(t, sort, descending)).limit(offset + page_size)
    ranked = top.mutate(_row=ibis.row_number().over(order_by=_sort_keys(top, sort, descending)))
    return ranked.filter(ranked._row >= offset).order_by(_sort_keys(ranked, sort, descending)).drop("_row")


def _of_scorer(t: ir.Table, column: str, scorer: str | None) -> ir.Table:
    """Keep one scorer's rows; None means the caller saw a single scorer in the selection."""
    return t if scorer is None else t.filter(t[column] == ibis.literal(scorer, type="string"))


@functools.cache
def _rollup_schemas() -> tuple[ibis.Schema, ibis.Schema]:
    """The layouts of the minute profile and the histograms (the same for every requests table)."""
    raw = requests_table(TableName("requests"))
    return analytics.minute_profile(raw).schema(), analytics.histograms(raw).schema()


def _minute_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    """The analytics minute profile of the selection: the stored rollup, or the same built from raw rows."""
    if from_rollups:
        name = analytics.minute_rollup_name(table)
        schema = _rollup_schemas()[0]
        rollup = ibis.table(schema, name=name.table, database=name.schema, catalog=name.catalog)
        return filtered(rollup, filters)
    return analytics.minute_profile(filtered(requests_table(table), filters))


def _histogram_rows(table: TableName, filters: Filters, from_rollups: bool) -> ir.Table:
    """The analytics hourly fine histograms of the selection, stored or built from raw rows."""
    if from_rollups:
        name = analytics.histogram_rollup_name(table)
        schema = _rollup_schemas()[1]
        rollup = ibis.table(schema, name=name.table, database=name.schema, catalog=name.catalog)
        return filtered(rollup, filters)
    return analytics.histograms(filtered(requests_table(table), filters))


def _chart_grain(grain: str) -> str:
    """Histograms are hourly: at minute grain, histogram-based numbers come per hour."""
    grain_unit(grain)
    return "hour" if grain == "minute" else grain


# ---------------------------------------------------------------------------------------------------------
# Toxicity
# ---------------------------------------------------------------------------------------------------------


def toxicity_trend(
    table: TableName, filters: Filters, grain: str, scorer: str | None = None, from_rollups: bool = True
) -> Query:
    """Per bucket, version and toxicity scorer: requests, scored prompts and responses, and their means."""
    m = _of_scorer(_minute_rows(table, filters, from_rollups), "toxicity_scorer", scorer)
    grouped = m.group_by([m.bucket.truncate(grain_unit(grain)).name("bucket"), m.model_version, m.toxicity_scorer]).agg(
        requests=_count_total(m.requests),
        prompts_scored=_count_total(m.prompt_toxicity__n),
        prompt_sum=m.prompt_toxicity__sum.sum(),
        responses_scored=_count_total(m.response_toxicity__n),
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
    h = _histogram_rows(table, filters, from_rollups)
    h = _of_scorer(h.filter(h.metric.isin(list(TOXICITY_METRICS))), "scorer", scorer)
    measures = {}
    for metric, side in zip(TOXICITY_METRICS, ("prompts", "responses"), strict=True):
        is_metric = h.metric == ibis.literal(metric)
        measures[f"{side}_scored"] = _count_total(h.n, where=is_metric)
        measures[f"{side}_flagged"] = _count_total(h.n, where=is_metric & (h.bin >= first_bin))
    keys = [h.hour.truncate(grain_unit(_chart_grain(grain))).name("bucket"), h.model_version, h.scorer]
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
    t = _of_scorer(t, "toxicity_scorer", scorer)
    columns = [
        "request_id",
        "request_time",
        "model_version",
        "prompt_toxicity",
        t.prompt_text.substr(0, PREVIEW_CHARS).name("prompt_preview"),
    ]
    if mode == "latest":
        rows = t.filter(t.prompt_toxicity.notnull())
        expr = rows.order_by(_sort_keys(rows, "request_time", True)).limit(SAMPLE_POINTS).select(*columns)
        return Query("prompt_sample_latest", expr)
    # One OR of time ranges: the engine prunes by time on each range, and the SQL stays small to compile.
    in_windows = ibis.or_(
        *[(t.request_time >= ibis.literal(begin)) & (t.request_time < ibis.literal(stop))
          for begin, stop in sample_windows(filters.start, filters.end)]  # type: ignore[arg-type]
    )  # fmt: skip
    rows = t.filter(in_windows, t.prompt_toxicity.notnull()).select(*columns)
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
    t = _of_scorer(filtered(requests_table(table), filters), "toxicity_scorer", flagged.scorer)
    prompt_hit = _reaches(t.prompt_toxicity, flagged.threshold)
    response_hit = _reaches(t.response_toxicity, flagged.threshold)
    hits = {"prompt": prompt_hit, "response": response_hit, "either": prompt_hit | response_hit}
    if flagged.target not in hits:
        raise ValueError(f"target must be 'either', 'prompt' or 'response', got {flagged.target!r}")
    t = t.filter(hits[flagged.target])  # a null score is not a hit: WHERE drops NULL
    if flagged.points:
        if len(flagged.points) > MAX_SELECTED_POINTS:
            raise ValueError(f"at most {MAX_SELECTED_POINTS} chart points can be selected, got {len(flagged.points)}")
        at = t.request_time.truncate(grain_unit(flagged.grain))
        picked = [
            (at == ibis.literal(start))
            & (t.model_version.isnull() if v is None else t.model_version == ibis.literal(v, type="string"))
            for start, v in flagged.points
        ]
        t = t.filter(ibis.or_(*picked))
    return t


MAX_REQUESTERS = 25  # requesters listed by `toxic_requesters`, most flagged prompts first


def toxic_requesters(table: TableName, filters: Filters, flagged: FlaggedQuery = FlaggedQuery()) -> Query:
    """Who sends toxic prompts: per requester, scored prompts and prompts at or above the threshold (one scorer),
    their share of all flagged prompts and the requester's own flagged rate, most flagged first (at most
    MAX_REQUESTERS). Rows without a requester (legacy tables log none) are one group, requester null."""
    t = _of_scorer(filtered(requests_table(table), filters), "toxicity_scorer", flagged.scorer)
    t = t.filter(t.prompt_toxicity.notnull())
    hit = _reaches(t.prompt_toxicity, flagged.threshold)
    grouped = t.group_by("requester").agg(prompts=t.count(), flagged=hit.cast("int64").sum())
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


def texts_inline(sort: str) -> bool:
    """Whether a time-sorted list carries its texts; other orders come narrow and need `request_texts`."""
    return sort == "request_time"


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
        "request_id",
        "request_time",
        "model_version",
        "toxicity_scorer",
        "prompt_toxicity",
        "response_toxicity",
        "latency_ms",
    ]
    if texts_inline(sort):
        columns += [t.prompt_text.substr(0, TEXT_CHARS).name("prompt_text"),
                    t.response_text.substr(0, TEXT_CHARS).name("response_text")]  # fmt: skip
    return Query("flagged_requests", _paged(t.select(*columns), sort, descending, page, page_size))


def flagged_count(table: TableName, filters: Filters, flagged: FlaggedQuery = FlaggedQuery()) -> Query:
    t = _flagged(table, filters, flagged)
    return Query("flagged_count", t.aggregate(rows=t.count()))


def request_texts(table: TableName, keys: tuple[tuple[datetime | None, str], ...], chars: int = TEXT_CHARS) -> Query:
    """Prompt and response (cut at `chars`) of a few requests, by (request_time, request_id): one point lookup
    each, which the engine answers from the rows of that instant only."""
    if not 1 <= len(keys) <= MAX_PAGE_SIZE:
        raise ValueError(f"look up between 1 and {MAX_PAGE_SIZE} requests at a time, got {len(keys)}")
    t = requests_table(table)
    parts = []
    for at, request_id in dict.fromkeys(keys):
        same_id = t.request_id == ibis.literal(request_id, type="string")
        when = t.request_time.isnull() if at is None else t.request_time == ibis.literal(at, type="timestamp")
        parts.append(
            t.filter(when, same_id).select(
                "request_id",
                t.prompt_text.substr(0, chars).name("prompt_text"),
                t.response_text.substr(0, chars).name("response_text"),
            )
        )
    return Query("request_texts", ibis.union(*parts, distinct=False))


# ---------------------------------------------------------------------------------------------------------
# Usage and cost
# ---------------------------------------------------------------------------------------------------------


def usage_trend(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """Per bucket and version: requests, the busiest minute, token sums and latency moments (all requests
    with a latency). Minutes are summed first, so the peak is the busiest single minute of the bucket."""
    m = _minute_rows(table, filters, from_rollups)
    per_minute = m.group_by([m.bucket, m.model_version]).agg(
        requests=m.requests.sum(),
        prompt_tokens=m.prompt_tokens__sum.sum(),
        prompt_token_rows=m.prompt_tokens__n.sum(),
        completion_tokens=m.completion_tokens__sum.sum(),
        latency_n=m.latency_ms__n.sum(),
        latency_sum=m.latency_ms__sum.sum(),
        latency_sumsq=m.latency_ms__sumsq.sum(),
        latency_min=m.latency_ms__min.min(),
        latency_max=m.latency_ms__max.max(),
    )
    p = per_minute
    g = p.group_by([p.bucket.truncate(grain_unit(grain)).name("bucket"), p.model_version]).agg(
        requests=_count_total(p.requests),
        peak_requests_per_minute=p.requests.max().cast("float64").cast("int64"),
        requests_with_tokens=_count_total(p.prompt_token_rows),
        prompt_tokens=_count_total(p.prompt_tokens.fill_null(0)),
        completion_tokens=_count_total(p.completion_tokens.fill_null(0)),
        latency_n=_count_total(p.latency_n),
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
        "latency_n",
        mean_ms=ibis.cases((g.latency_n > 0, g.s / g.latency_n)),
        std_ms=ibis.cases((g.latency_n > 1, ibis.greatest(variance, 0.0).sqrt())),
        min_ms="min_ms",
        max_ms="max_ms",
    )
    return Query("usage_trend", expr.order_by(["bucket", "model_version"]))


def estimated_tokens(table: TableName, filters: Filters) -> Query:
    """Per version, the requests whose token counts the parser estimated (the response had no `usage`) and
    their token sums. Few rows match, and the engine filters on the flag in its scan."""
    t = filtered(requests_table(table), filters)
    t = t.filter(t.tokens_estimated)  # WHERE drops NULL, and a bare column filter reaches the scan
    expr = (
        t.group_by(t.model_version)
        .agg(
            estimated_requests=t.count(),
            estimated_prompt_tokens=_count_total(t.prompt_tokens.fill_null(0)),
            estimated_completion_tokens=_count_total(t.completion_tokens.fill_null(0)),
        )
        .order_by("model_version")
    )
    return Query("estimated_tokens", expr)


def latency_percentiles(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> Query:
    """p50, p95 and p99 latency per bucket (hour grain or coarser) and version, from the 1%-wide histogram bins.

    As numpy's linear percentile: the value between the order statistics k and k+1 around (n - 1) * q. Each
    order statistic is estimated inside its bin, between the bin's smallest and largest latency (exact at
    both ends), so it is off by at most the bin's spread: 1% of the value.
    """
    if grain == "minute":
        raise ValueError("latency percentiles start at hour grain; per minute, use the mean and spread")
    h = _histogram_rows(table, filters, from_rollups)
    h = h.filter(h.metric == ibis.literal("latency_ms"))
    keys = [h.hour.truncate(grain_unit(grain)).name("bucket"), h.model_version]
    bins = h.group_by([*keys, h.bin]).agg(n=_count_total(h.n), lo=h.lo.min(), hi=h.hi.max())
    partition = ["bucket", "model_version"]
    running = ibis.window(group_by=partition, order_by="bin", preceding=None, following=0)
    counted = bins.mutate(cum=bins.n.sum().over(running), total=bins.n.sum().over(ibis.window(group_by=partition)))
    c = counted.mutate(before=counted.cum - counted.n)

    def order_statistic(k: ir.NumericValue) -> ir.FloatingScalar:
        """The k-th smallest latency (0-based), placed linearly between its bin's smallest and largest."""
        inside = (c.before <= k) & (k < c.cum)
        return (c.lo + (c.hi - c.lo) * (k - c.before) / ibis.greatest(c.n - 1, 1)).max(where=inside)

    values: dict[str, ir.Scalar] = {"latency_n": c.total.max()}
    for q in PERCENTILES:
        position = (c.total - 1).cast("float64") * ibis.literal(q, type="float64")  # DOUBLE, not DECIMAL, math
        k = position.floor()
        low, high = order_statistic(k), order_statistic(ibis.least(k + 1, c.total - 1))
        values[f"_k{round(q * 100)}"], values[f"_f{round(q * 100)}"] = low, high
        values[f"_w{round(q * 100)}"] = (position - k).max()
    grouped = c.group_by(partition).agg(**values)
    percentiles = {
        f"p{round(q * 100)}_ms": grouped[f"_k{round(q * 100)}"]
        + grouped[f"_w{round(q * 100)}"] * (grouped[f"_f{round(q * 100)}"] - grouped[f"_k{round(q * 100)}"])
        for q in PERCENTILES
    }
    expr = grouped.select(*partition, "latency_n", **percentiles).order_by(partition)
    return Query("latency_percentiles", expr)


# ---------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRange:
    column: str
    low: float | None = None  # inclusive; None = no lower bound
    high: float | None = None  # inclusive; None = no upper bound


@dataclass(frozen=True)
class RequestSearch:
    """What the Requests page narrows to, on top of the shared sidebar filters."""

    text: str = ""  # case-insensitive substring, matched literally: %, _ and \ mean themselves
    fields: tuple[str, ...] = ("prompt_text", "response_text")
    statuses: tuple[int | None, ...] = ()  # empty = any; None = rows without a status code
    parse_error: ParseErrorFilter = "any"
    ranges: tuple[MetricRange, ...] = field(default_factory=tuple)
    requester: str | None = None  # one requester (user or service principal), matched exactly


def search_problems(search: RequestSearch) -> list[str]:
    """What is wrong with a search, in words for the page; empty when it can run."""
    problems = []
    if search.text and not search.fields:
        problems.append("Pick at least one field to search in.")
    problems += [f"Cannot search in {name!r}." for name in search.fields if name not in SEARCH_FIELDS]
    if search.parse_error not in ("any", "with", "without"):
        problems.append(f"Unknown parse-error filter {search.parse_error!r}.")
    for r in search.ranges:
        if r.column not in RANGE_COLUMNS:
            problems.append(f"Cannot filter on {r.column!r}.")
            continue
        for bound in (r.low, r.high):
            if bound is not None and not math.isfinite(bound):
                problems.append(f"{r.column}: bounds must be finite numbers.")
        if r.low is not None and r.high is not None and r.low > r.high:
            problems.append(f"{r.column}: the minimum {r.low:g} is above the maximum {r.high:g}.")
    return problems


def _searched(table: TableName, filters: Filters, search: RequestSearch) -> ir.Table:
    problems = search_problems(search)
    if problems:
        raise ValueError(" ".join(problems))
    t = filtered(requests_table(table), filters)
    conditions: list[ir.BooleanValue] = []
    if search.text:
        # CONTAINS on lower-cased text: the user's text is one escaped string literal, never a LIKE pattern.
        needle = ibis.literal(search.text, type="string").lower()
        conditions.append(ibis.or_(*[t[name].lower().contains(needle).fill_null(False) for name in search.fields]))
    if search.statuses:
        codes = [ibis.literal(code, type="int32") for code in search.statuses if code is not None]
        in_codes = t.status_code.isin(codes) if codes else ibis.literal(False)
        conditions.append(in_codes | t.status_code.isnull() if None in search.statuses else in_codes)
    if search.parse_error != "any":
        conditions.append(t.parse_error.notnull() if search.parse_error == "with" else t.parse_error.isnull())
    if search.requester is not None:
        conditions.append(t.requester == ibis.literal(search.requester, type="string"))
    for r in search.ranges:
        column = t[r.column]
        conditions.append(column.notnull())
        if r.low is not None:
            conditions.append(column >= ibis.literal(float(r.low), type="float64"))
        if r.high is not None:
            conditions.append(column <= ibis.literal(float(r.high), type="float64"))
    return t.filter(*conditions) if conditions else t


def status_counts(table: TableName, filters: Filters) -> Query:
    """The status codes present, for the status filter."""
    t = filtered(requests_table(table), filters)
    return Query("status_counts", t.group_by("status_code").agg(requests=t.count()).order_by("status_code"))


def request_page(
    table: TableName,
    filters: Filters,
    search: RequestSearch = RequestSearch(),
    sort: str = "request_time",
    descending: bool = True,
    page: int = 0,
    page_size: int = 50,
) -> Query:
    """One page of matching requests: numbers in full, text previews when `page_texts_inline`."""
    if sort not in REQUEST_SORTS:
        raise ValueError(f"cannot sort requests by {sort!r}; choose one of {', '.join(REQUEST_SORTS)}")
    t = _searched(table, filters, search)
    columns: list[str | ir.Value] = [
        "request_id",
        "request_time",
        "model_version",
        "status_code",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "tokens_estimated",
        "prompt_toxicity",
        "response_toxicity",
        "response_fk_grade",
        "response_perplexity",
        t.parse_error.notnull().name("has_parse_error"),
        t.score_error.notnull().name("has_score_error"),
    ]
    if page_texts_inline(sort, search):
        columns += [t.prompt_text.substr(0, PREVIEW_CHARS).name("prompt_text"),
                    t.response_text.substr(0, PREVIEW_CHARS).name("response_text")]  # fmt: skip
    return Query("request_page", _paged(t.select(*columns), sort, descending, page, page_size))


def page_texts_inline(sort: str, search: RequestSearch) -> bool:
    """Time order reads texts for the page's rows only; a text search reads them anyway."""
    return texts_inline(sort) or bool(search.text)


def request_count(table: TableName, filters: Filters, search: RequestSearch = RequestSearch()) -> Query:
    t = _searched(table, filters, search)
    return Query("request_count", t.aggregate(rows=t.count()))


def export_requests(
    table: TableName,
    filters: Filters,
    search: RequestSearch = RequestSearch(),
    sort: str = "request_time",
    descending: bool = True,
    limit: int = EXPORT_ROW_CAP,
) -> Query:
    """Every column of the matching requests, at most `limit` (<= EXPORT_ROW_CAP) rows, in the page order."""
    if not 1 <= limit <= EXPORT_ROW_CAP:
        raise ValueError(f"limit must be between 1 and {EXPORT_ROW_CAP}, got {limit}")
    if sort not in REQUEST_SORTS:
        raise ValueError(f"cannot sort requests by {sort!r}; choose one of {', '.join(REQUEST_SORTS)}")
    t = _searched(table, filters, search)
    return Query("export_requests", t.order_by(_sort_keys(t, sort, descending)).limit(limit))


def request_detail(table: TableName, request_id: str, request_time: datetime | None = None) -> Query:
    """Every column of one request by exact id (the shared filters do not apply to an opened request).
    With its time the engine looks at that instant's rows only."""
    t = requests_table(table)
    conditions = [t.request_id == ibis.literal(request_id, type="string")]
    if request_time is not None:
        conditions.append(t.request_time == ibis.literal(request_time, type="timestamp"))
    return Query("request_detail", t.filter(*conditions).limit(2))


def raw_payload(
    table: TableName,
    payload: TableName,
    request_id: str,
    timestamp_ms: int | None = None,
    day: date | None = None,
    layout: str = "legacy",
) -> Query:
    """The payload rows behind one request, earliest first (the one the scoring job used), at most 5.

    The parser's id rule, reversed: the Databricks request id, else the client request id. A request whose
    payload had neither got a content hash ("sha1:…") as id; its candidates are the id-less rows logged at
    the same millisecond. `day` and `timestamp_ms` narrow the scan to one date partition and one instant,
    on the layout's own columns (legacy `date`/`timestamp_ms`, AI Gateway `request_date`/`request_time`).
    """
    p = payload_table(payload, layout)
    gateway = layout == "gateway"
    no_dbx_id = p.databricks_request_id.isnull() | (p.databricks_request_id == "")
    no_client_id = p.client_request_id.isnull() | (p.client_request_id == "")
    conditions: list[ir.BooleanValue] = []
    if request_id.startswith("sha1:"):
        if timestamp_ms is None:
            raise ValueError("a request without ids can only be found by its timestamp_ms")
        conditions.append(no_dbx_id & no_client_id)
    else:
        wanted = ibis.literal(request_id, type="string")
        conditions.append((p.databricks_request_id == wanted) | (no_dbx_id & (p.client_request_id == wanted)))
    if timestamp_ms is not None:
        if gateway:
            conditions.append(p.request_time == ibis.literal(from_epoch_ms(int(timestamp_ms)), type="timestamp"))
        else:
            conditions.append(p.timestamp_ms == ibis.literal(int(timestamp_ms), type="int64"))
    if day is not None:
        conditions.append((p.request_date if gateway else p.date) == ibis.literal(day, type="date"))
    logged_at, duration = (
        (p.request_time, p.execution_duration_ms) if gateway else (p.timestamp_ms, p.execution_time_ms)
    )
    expr = (
        p.filter(*conditions)
        .order_by([logged_at, duration, p.request, p.response])
        .limit(5)
        .select(LAYOUT_SCHEMAS[layout].names)
    )
    return Query("raw_payload", expr)


# ---------------------------------------------------------------------------------------------------------
# What each page runs on first load (the lead's benchmark times these)
# ---------------------------------------------------------------------------------------------------------


def _rollup_checks(table: TableName) -> list[Query]:
    """The pages ask for freshness only: a missing rollup fails that query, which also means "not usable"."""
    return [analytics.rollup_freshness(table)]


def toxicity_page(table: TableName, filters: Filters, grain: str) -> list[Query]:
    """The page's first load: rollup checks, trend, shares, the sample, and the first page of toxic prompts
    (newest first). Its total comes from the shares, so `flagged_count` runs only for "either" or a minute-grain
    chart selection."""
    sample_mode: SampleMode = "spread" if filters.start is not None and filters.end is not None else "latest"
    return [
        *_rollup_checks(table),
        toxicity_trend(table, filters, grain),
        toxicity_shares(table, filters, grain),
        prompt_sample(table, filters, sample_mode),
        flagged_requests(table, filters, FlaggedQuery(target="prompt", grain=_chart_grain(grain))),
        toxic_requesters(table, filters, FlaggedQuery(target="prompt")),
    ]


def usage_page(table: TableName, filters: Filters, grain: str) -> list[Query]:
    percentiles = [] if grain == "minute" else [latency_percentiles(table, filters, grain)]
    return [
        *_rollup_checks(table),
        usage_trend(table, filters, grain),
        estimated_tokens(table, filters),
        *percentiles,
    ]


def requests_page(table: TableName, filters: Filters, grain: str) -> list[Query]:
    return [
        status_counts(table, filters),
        requester_options(table, filters),
        request_page(table, filters),
        request_count(table, filters),
    ]


PAGE_QUERIES: dict[str, Callable[[TableName, Filters, str], list[Query]]] = {
    "Toxicity": toxicity_page,
    "Usage and cost": usage_page,
    "Requests": requests_page,
}

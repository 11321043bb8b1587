"""Queries of the Requests page: search, a page of matching requests, one request in full, its raw payload,
and an export of at most `EXPORT_ROW_CAP` rows.

Every value a user types reaches SQL as an escaped literal: a text search is a case-insensitive CONTAINS on one
string literal, never a LIKE pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import ibis
import ibis.expr.types as ir

from data_access.config import TableName
from data_access.queries import Filters, Query, filtered, payload_table, requests_table
from data_access.queries.job import from_epoch_ms
from data_access.queries.listing import LISTED_KEYS, PREVIEW_CHARS, page_of, sort_keys, texts_inline
from data_access.queries.toxicity import requester_options
from data_access.schema import LAYOUT_SCHEMAS

EXPORT_ROW_CAP = 100_000

# The scores added after the first three (refusal, PII, injection, sentiment, language, RAG support).
NEWER_SCORES = (
    "response_refusal",
    "response_pii_count",
    "prompt_pii_count",
    "prompt_injection",
    "prompt_sentiment",
    "response_language_match",
    "response_rag_support",
)
REQUEST_SORTS = (
    "request_time",
    "latency_ms",
    "total_tokens",
    "prompt_toxicity",
    "response_toxicity",
    "response_fk_grade",
    "response_perplexity",
    "status_code",
    *NEWER_SCORES,
)

RANGE_COLUMNS = (
    "prompt_toxicity",
    "response_toxicity",
    "response_fk_grade",
    "response_perplexity",
    *NEWER_SCORES,
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)

SEARCH_FIELDS = ("prompt_text", "response_text", "request_id")

ParseErrorFilter = Literal["any", "with", "without"]


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
        *LISTED_KEYS,
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
        *NEWER_SCORES,
        "prompt_language",
        "response_language",
        t.parse_error.notnull().name("has_parse_error"),
        t.score_error.notnull().name("has_score_error"),
    ]
    chars = PREVIEW_CHARS if page_texts_inline(sort, search) else None
    return Query("request_page", page_of(t, columns, sort, descending, page, page_size, chars))


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
    return Query("export_requests", t.order_by(sort_keys(t, sort, descending)).limit(limit))


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


def requests_page(table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]:
    # The Requests page reads the requests table only: no rollup holds single requests.
    return [
        status_counts(table, filters),
        requester_options(table, filters),
        request_page(table, filters),
        request_count(table, filters),
    ]

"""Paged lists of requests, shared by the Toxicity and Requests pages: sort keys, paging, texts by lookup.

Per-request queries never make the engine read every prompt and response: texts are fetched only where a
filter the engine pushes into its scan (a time range, a time+id point lookup) or a time-ordered top-K limits
the rows. Lists sorted by anything but time are fetched narrow, and their texts by point lookups
(`request_texts`).

Paging is a top-K (`ORDER BY keys LIMIT offset + size`) then a row number over those K rows only: correct on
every engine (unlike a window over an ordered subquery), and the keys always end with `request_id`, so pages
never overlap or skip a row. Pages hold at most `MAX_PAGE_SIZE` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import ibis
import ibis.expr.types as ir

from data_access.config import TableName
from data_access.queries import Query, requests_table

MAX_PAGE_SIZE = 200

PREVIEW_CHARS = 300  # list pages show the start of each text; the detail view shows all of it

TEXT_CHARS = 4_000  # flagged-table texts are cut here; the Requests page shows a request in full
LISTED_KEYS = ("request_id", "request_time", "model_version")  # every list's first columns


def _check_page(page: int, page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
    if page < 0:
        raise ValueError(f"page must be 0 or more, got {page}")


def sort_keys(t: ir.Table, sort: str, descending: bool) -> list[ir.Value]:
    first = ibis.desc(t[sort]) if descending else ibis.asc(t[sort])
    time_key = [] if sort == "request_time" else [ibis.desc(t.request_time)]  # cheap tie-break before the id
    return [first, *time_key, ibis.asc(t.request_id)]


def _paged(t: ir.Table, sort: str, descending: bool, page: int, page_size: int) -> ir.Table:
    """Rows `page * page_size` up to `(page + 1) * page_size` in (sort, request_id) order, on any engine."""
    _check_page(page, page_size)
    offset = page * page_size
    top = t.order_by(sort_keys(t, sort, descending)).limit(offset + page_size)
    ranked = top.mutate(_row=ibis.row_number().over(order_by=sort_keys(top, sort, descending)))
    return ranked.filter(ranked._row >= offset).order_by(sort_keys(ranked, sort, descending)).drop("_row")


def texts_inline(sort: str) -> bool:
    """Whether a time-sorted list carries its texts; other orders come narrow and need `request_texts`."""
    return sort == "request_time"


def page_of(
    t: ir.Table,
    columns: Sequence[str | ir.Value],
    sort: str,
    descending: bool,
    page: int,
    page_size: int,
    text_chars: int | None,
) -> ir.Table:
    """One page of `columns` in (sort, request_id) order, with the start of the prompt and the response
    (`text_chars` characters) unless `text_chars` is None."""
    if text_chars is not None:
        columns = [*columns, t.prompt_text.substr(0, text_chars).name("prompt_text"),
                   t.response_text.substr(0, text_chars).name("response_text")]  # fmt: skip
    return _paged(t.select(*columns), sort, descending, page, page_size)


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

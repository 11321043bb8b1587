"""What each page runs on first load, in navigation order: the one list the pages, the page benchmark
(`bench.bench_pages`) and the tests all use. Each page's list is defined next to that page's queries.

`page_statements` says how a page sends its list to the engine: on a warehouse (Databricks SQL, and local Spark
running it), on the pages of `ONE_STATEMENT_PAGES`, the rollup check and every figure that can ride with it go as
one statement (`Bundle`), the rest alone."""

from __future__ import annotations

from typing import Protocol

import ibis.expr.operations as ops

from data_access.config import TableName
from data_access.queries import Bundle, Filters, Query, requests, toxicity, trends, usage, versions


class PageQueries(Protocol):
    """A page's queries at a grain; with from_rollups=False the same figures from the requests table (what the
    page runs when the rollups are missing or behind)."""

    def __call__(self, table: TableName, filters: Filters, grain: str, from_rollups: bool = True) -> list[Query]: ...


PAGE_QUERIES: dict[str, PageQueries] = {
    "Overview": versions.overview_page,
    "Trends": trends.trends_page,
    "Toxicity": toxicity.toxicity_page,
    "Usage and cost": usage.usage_page,
    "Drift": versions.drift_page,
    "Requests": requests.requests_page,
    "Model registry": versions.registry_page,
}


CHECK = "rollup_freshness"  # the query a page reads the rollups only after (`rollup_status.rollups_usable`)
ONE_STATEMENT_PAGES = ("Trends", "Toxicity", "Usage and cost")
# Where a statement has a fixed cost: on a warehouse each is a round trip, queued, planned and billed (local Spark:
# 0.25-0.4 s however small). Embedded DuckDB answers a statement over the rollups in milliseconds, in process, and
# runs each figure alone (measured at 10M: one statement saved it nothing over the rollups).
ONE_STATEMENT_DIALECTS = ("databricks",)


def rides_along(query: Query) -> bool:
    """Whether a query can share a statement (`Bundle`): not one that keeps the first rows of an order (a LIMIT
    under its final projections, filters and order), since a union member's order is lost."""
    op = query.expr.op()
    while isinstance(op, ops.Project | ops.DropColumns | ops.Filter | ops.Sort):
        op = op.parent
    return not isinstance(op, ops.Limit)


def page_statements(page: str, built: list[Query], dialect: str, from_rollups: bool = True) -> list[Query | Bundle]:
    """The statements a page sends for its list `built` (PAGE_QUERIES[page] with the same `from_rollups`): in a dialect
    of `ONE_STATEMENT_DIALECTS`, on a page of `ONE_STATEMENT_PAGES`, its figures that can ride along (`rides_along`;
    a figure listed twice, once) in one statement, the others alone after it. Over the rollups the check rides in
    that statement too: the page reads them only when the check in the same result says they are current, and
    otherwise sends the requests-table statements instead. Over the requests table the check goes alone, first: its
    figures must not depend on the rollups' state table (missing until the first refresh)."""
    if page not in ONE_STATEMENT_PAGES or dialect not in ONE_STATEMENT_DIALECTS:
        return list(built)
    check = [q for q in built if q.name == CHECK]
    figures = [q for q in built if q.name != CHECK]
    riders = list({q.sql("databricks"): q for q in figures if rides_along(q)}.values())
    alone = [q for q in figures if not rides_along(q)]
    if from_rollups:
        riders = check + riders
        check = []
    together: list[Query | Bundle] = [Bundle(page, tuple(riders))] if len(riders) > 1 else list(riders)
    return [*check, *together, *alone]

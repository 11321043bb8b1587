"""What each page runs on first load, in navigation order: the one list the pages, the page benchmark
(`bench.bench_pages`) and the tests all use. Each page's list is defined next to that page's queries."""

from __future__ import annotations

from typing import Protocol

from data_access.config import TableName
from data_access.queries import Filters, Query, requests, toxicity, trends, usage, versions


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

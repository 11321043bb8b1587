"""What each page runs on first load, in navigation order: the one list the pages, the page benchmark
(`bench.bench_pages`) and the tests all use. Each page's list is defined next to that page's queries."""

from __future__ import annotations

from collections.abc import Callable

from data_access.config import TableName
from data_access.queries import Filters, Query, requests, toxicity, trends, usage, versions

PageQueries = Callable[[TableName, Filters, str], list[Query]]

PAGE_QUERIES: dict[str, PageQueries] = {
    "Overview": versions.overview_page,
    "Trends": trends.trends_page,
    "Toxicity": toxicity.toxicity_page,
    "Usage and cost": usage.usage_page,
    "Drift": versions.drift_page,
    "Requests": requests.requests_page,
    "Model registry": versions.registry_page,
}

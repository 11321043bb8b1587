"""Catalog queries by name on a DuckDB file, as a page's `ui.data.fetch` runs them, without Streamlit's cache:
for tests of code that takes a page's fetch (the shareable report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_access import queries
from data_access.config import TableName
from data_access.sources import DuckDBSource
from ui.data import Frame, _builder


def catalog_fetch(duckdb_path: Path, table: TableName) -> Callable[..., Frame]:
    source = DuckDBSource(duckdb_path)

    def fetch(query_name: str, **arguments: Any) -> Frame:
        query = _builder(query_name)(table, **arguments)
        return Frame.of(query, queries.run(source, query), source)

    return fetch

"""Every page's data on a small deterministic demo, for the test that keeps numbers unchanged across refactors.

The demo is built by the app's own first-start code (generator, scoring job, rollups) and every query a page
runs (its catalog entry, for the sidebar's default filters and a few filter combinations, plus the trend of
each metric) goes through the app's query catalog and DuckDB source. Results are stored per filter case, page
and query, with scorer ids kept apart: issue 13 may rename them without changing a single value.

    python -m testkit.page_snapshot --scorer-ids   # after a deliberate scorer-id change: rewrite only the ids
    python -m testkit.page_snapshot --all          # after a deliberate change of the demo data itself

Never regenerate the values to make a refactor pass: a refactor must leave every number as it was.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "page_snapshot.json.gz"
DEMO_REQUESTS = 5_000
DEMO_SEED = 7
SIGNIFICANT_DIGITS = 10
LONG_TEXT = 64  # longer strings are stored as their length and a hash


@dataclass(frozen=True)
class Case:
    name: str
    grain: str
    dates: tuple[date, date] | None = None  # None: the sidebar's default span (the data's first to last day)
    versions: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()


CASES = (
    Case("default", "hour"),
    Case("default-day", "day"),
    Case("minute-one-day", "minute", dates=(date(2026, 4, 15), date(2026, 4, 15))),
    Case("version-7", "hour", versions=("7",)),
    Case("version-6-dates", "day", dates=(date(2026, 4, 8), date(2026, 4, 20)), versions=("6",)),
    Case(
        "endpoint-dates", "hour", dates=(date(2026, 4, 14), date(2026, 4, 17)), endpoints=("dbdemos_endpoint_advanced",)
    ),
    Case("unknown-endpoint", "hour", endpoints=("no_such_endpoint",)),
)


def is_scorer_column(name: str) -> bool:
    return "scorer" in name


def build_demo(data_dir: Path) -> Path:
    """The embedded demo (requests, rollups, MLflow registry) as the app's first start builds it; returns the folder."""
    from data_access.config import load_settings
    from jobs.bootstrap import build_demo as first_start

    environ = {
        "INFERENCE_EXPLORER_DATA_DIR": str(data_dir),
        "INFERENCE_EXPLORER_DEMO_REQUESTS": str(DEMO_REQUESTS),
        "INFERENCE_EXPLORER_DEMO_SEED": str(DEMO_SEED),
    }
    first_start(load_settings(environ))
    return data_dir


def _cell(value: Any) -> Any:
    if isinstance(value, float | Decimal):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and len(value) > LONG_TEXT:
        return f"{len(value)} chars sha1:{hashlib.sha1(value.encode()).hexdigest()[:16]}"
    if isinstance(value, bytes):
        return f"{len(value)} bytes sha1:{hashlib.sha1(value).hexdigest()[:16]}"
    if isinstance(value, list | tuple):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {k: _cell(v) for k, v in value.items()}
    return value


def _columns(table: pa.Table) -> dict[str, list[Any]]:
    return {name: [_cell(v) for v in table.column(name).to_pylist()] for name in table.column_names}


def _queries(table_name: Any, filters: Any, grain: str, metrics: list[str]) -> Iterator[tuple[str, Any]]:
    """(page, query) for every page in the catalog, then each metric's trend and band as the Trends page offers."""
    from core.catalog import below_hour
    from data_access.queries import trends
    from data_access.queries.pages import PAGE_QUERIES

    for page, build in PAGE_QUERIES.items():
        for query in build(table_name, filters, grain):
            yield page, query
    for metric in metrics:
        yield "Trends (each metric)", trends.metric_trend(table_name, filters, grain, metric)
        if not below_hour(grain):
            yield "Trends (each metric)", trends.metric_band(table_name, filters, grain, metric)


def snapshot(duckdb_path: Path) -> dict[str, dict[str, dict[str, dict[str, list[Any]]]]]:
    """{case: {page: {query key: {column: values}}}}; a query a page runs twice gets keys `name`, `name#2`."""
    from core.catalog import METRICS
    from data_access import queries
    from data_access.config import TableName
    from data_access.sources import DuckDBSource

    source = DuckDBSource(duckdb_path)
    table_name = TableName("requests")
    options = queries.run(source, queries.filter_options(table_name)).table
    first, last = min(options.column("first_date").to_pylist()), max(options.column("last_date").to_pylist())
    metrics = sorted(METRICS)
    result: dict[str, dict[str, dict[str, dict[str, list[Any]]]]] = {}
    for case in CASES:
        start, end = case.dates or (first, last)
        filters = queries.Filters(start, end, case.versions, case.endpoints)
        pages: dict[str, dict[str, dict[str, list[Any]]]] = {"Sidebar": {"filter_options": _columns(options)}}
        for page, query in _queries(table_name, filters, case.grain, metrics):
            named = pages.setdefault(page, {})
            key = query.name if page != "Trends (each metric)" else f"{query.name}:{_metric_of(query)}"
            base, n = key, 1
            while key in named:
                n += 1
                key = f"{base}#{n}"
            named[key] = _columns(queries.run(source, query).table)
        result[case.name] = pages
    return result


def _metric_of(query: Any) -> str:
    from core.catalog import METRICS

    sql = query.sql("duckdb")
    found = [m for m in METRICS if f"{m}__" in sql or f"'{m}'" in sql]
    return max(found, key=len)


def scorer_ids(data: dict[str, Any]) -> dict[str, list[str]]:
    """Every scorer id a page shows, per scorer column, across all cases."""
    ids: dict[str, set[str]] = {}
    for pages in data.values():
        for queries_ in pages.values():
            for columns in queries_.values():
                for name, values in columns.items():
                    if is_scorer_column(name):
                        ids.setdefault(name, set()).update(v for v in values if isinstance(v, str))
    return {name: sorted(values) for name, values in sorted(ids.items())}


def values_only(data: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without scorer-id columns (their values are compared apart)."""
    return {
        case: {
            page: {key: {c: v for c, v in columns.items() if not is_scorer_column(c)} for key, columns in qs.items()}
            for page, qs in pages.items()
        }
        for case, pages in data.items()
    }


def capture(data_dir: Path) -> dict[str, Any]:
    """The snapshot of a built demo folder: {"values": ..., "scorer_ids": ...}."""
    data = snapshot(data_dir / "inference.duckdb")
    return {"values": values_only(data), "scorer_ids": scorer_ids(data)}


def store(values: dict[str, Any]) -> dict[str, Any]:
    """Identical results (the same query under several pages or cases) stored once: {"results", "pages"}."""
    results: dict[str, Any] = {}
    pages: dict[str, Any] = {}
    for case, by_page in values.items():
        for page, by_key in by_page.items():
            for key, columns in by_key.items():
                text = json.dumps(columns, sort_keys=True)
                digest = hashlib.sha1(text.encode()).hexdigest()[:16]
                results[digest] = columns
                pages.setdefault(case, {}).setdefault(page, {})[key] = digest
    return {"results": results, "pages": pages}


def write_golden(path: Path, data: dict[str, Any]) -> None:
    """Compact, byte-stable gzip JSON (no timestamp in the header), so an unchanged golden is an unchanged file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def load(path: Path = GOLDEN) -> dict[str, Any]:
    """The golden file with its values expanded back to {case: {page: {key: columns}}}."""
    golden = json.loads(gzip.decompress(path.read_bytes()))
    results = golden.pop("results")
    golden["values"] = {
        case: {page: {key: results[digest] for key, digest in by_key.items()} for page, by_key in by_page.items()}
        for case, by_page in golden.pop("pages").items()
    }
    return golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--scorer-ids", action="store_true", help="rewrite only the scorer ids")
    which.add_argument("--all", action="store_true", help="rewrite values and scorer ids (demo data changed)")
    parser.add_argument("--out", type=Path, default=GOLDEN)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="page-snapshot-") as scratch:
        taken = capture(build_demo(Path(scratch)))
    values = taken["values"] if args.all else load(args.out)["values"]
    golden = {
        "demo": {"requests": DEMO_REQUESTS, "seed": DEMO_SEED},
        "scorer_ids": taken["scorer_ids"],
        **store(values),
    }
    write_golden(args.out, golden)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

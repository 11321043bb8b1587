"""Each page's queries over the rollups, the same queries over the raw table, and pandas on the raw rows.

    python -m bench.bench_pages [--rows 10000000] [--warmup 0] [--reps 3] [--db PATH]

Builds (or reuses) a DuckDB file with the demo generator's scored requests and the analytics rollups. For every
page of the catalog (April, the sidebar's default filters, hour grain; Trends and Usage also per minute) three
contenders do the page's work, each with the same warm-up runs and the same timed repetitions (median):
- rollups: the page's queries as the app runs them (one read-only connection for the page's run,
  `sources.page_run`, no cache);
- raw table: the very same queries with the rollup tables replaced by views that aggregate the raw table on the
  fly (what the app runs when the rollups are missing, and what a warehouse without rollups scans);
- pandas: the month's narrow rows loaded into a DataFrame, then every figure of the page computed there
  (bench/pandas_pages.py: the same columns, not a simpler aggregate), texts fetched for the shown rows only.
Before timing, each page's results are checked: rollups equal raw table, and pandas equals the engine (exactly,
or within a bin for the engine's percentile estimates); that run is every contender's first, untimed, run.
The rollups' full build and one day's refresh are timed too, with how many page loads pay for the build.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa

from bench import pandas_pages
from bench.machine import describe
from data_access import queries, rollup_refresh, rollups
from data_access.config import TableName
from data_access.demo import generate_requests
from data_access.queries import Query
from data_access.queries.pages import PAGE_QUERIES
from data_access.queries.versions import DEMO_PAIR
from data_access.sources import DuckDBSource, page_run
from jobs.scoring import parse_and_score
from metrics.profiles import build_profile

TABLE = TableName("requests")
RAW = TableName("requests", schema="raw_views")  # same names, in a schema whose "rollups" are views
APRIL = queries.Filters(date(2026, 4, 1), date(2026, 4, 30))
MINUTE_PAGES = ("Trends", "Usage and cost")


def build(path: Path, rows: int) -> None:
    profile = build_profile("light")
    started = time.perf_counter()
    table = generate_requests(rows, 7, lambda payload: parse_and_score(payload, profile))
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.register("incoming", table)
        con.sql("CREATE TABLE requests AS SELECT * FROM incoming")
        con.unregister("incoming")
        del table
        rollup_refresh.refresh_rollups(con, TABLE, rebuild=True)
    print(f"built {rows:,} scored requests with rollups in {time.perf_counter() - started:.0f} s -> {path}")


def create_raw_views(con: duckdb.DuckDBPyConnection) -> None:
    """`raw_views.requests` and its "rollups" as views over the raw table: the queries stay the same."""
    raw = queries.requests_table(TABLE)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW.schema}")
    con.execute(f"CREATE OR REPLACE VIEW {RAW.schema}.requests AS SELECT * FROM main.requests")
    for name, build_rows in rollups.rollup_builds(RAW):
        con.execute(f'CREATE OR REPLACE VIEW {name.schema}."{name.table}" AS {ibis.to_sql(build_rows(raw), "duckdb")}')


def rollup_costs(path: Path) -> tuple[float, float]:
    """Seconds for a full rebuild of both rollups, and for refreshing one day (a scoring batch's usual case)."""
    with duckdb.connect(str(path)) as con:
        started = time.perf_counter()
        rollup_refresh.refresh_rollups(con, TABLE, rebuild=True)
        rebuild = time.perf_counter() - started
        started = time.perf_counter()
        rollup_refresh.refresh_rollups(con, TABLE, dates=[APRIL.end])
        one_day = time.perf_counter() - started
        create_raw_views(con)
    return rebuild, one_day


def timed(work: Callable[[], object], warmup: int, reps: int) -> float:
    for _ in range(warmup):
        work()
    seconds = []
    for _ in range(reps):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def run_queries(source: DuckDBSource, built: list[Query]) -> list[pa.Table]:
    with page_run(source):  # as the app runs a page
        return [source.execute(q.sql("duckdb")) for q in built]


def grain_of(query: Query, page_grain: str) -> str:
    """The grain a query buckets by (a page may mix: the Overview also counts per day)."""
    found = re.findall(r"DATE_TRUNC\('(\w+)'", query.sql("duckdb"))
    return found[0].lower() if found else page_grain


def metric_of(query: Query) -> str:
    sql = query.sql("duckdb")
    return max((m for m in pandas_pages.METRICS if f"{m}__" in sql or f"'{m}'" in sql), key=len, default="")


class PandasPage:
    """The notebook way: load the month's narrow rows, then compute each of the page's figures."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _texts(self, ids: list[str], chars: int) -> pd.DataFrame:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute(
                "SELECT request_id, substr(prompt_text, 1, ?) AS prompt_text, substr(response_text, 1, ?) AS "
                "response_text FROM requests WHERE list_contains(?, request_id)",
                [chars, chars, ids],
            ).df()

    def load(self, filters: queries.Filters, columns: list[str]) -> pandas_pages.Rows:
        with duckdb.connect(str(self.path), read_only=True) as con:
            frame = con.execute(
                f"SELECT {', '.join(columns)} FROM requests WHERE date BETWEEN ? AND ?",
                [filters.start, filters.end],
            ).df()
            table_rows = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        if filters.versions:
            frame = frame[frame.model_version.isin(filters.versions)]
        if filters.endpoints:
            frame = frame[frame.endpoint_name.isin(filters.endpoints)]
        return pandas_pages.Rows(pandas_pages.prepare(frame), self._texts, table_rows)

    def figures(self, page: str, built: list[Query], filters: queries.Filters, grain: str) -> list[pd.DataFrame | None]:
        """Each query's figures; None where pandas_pages has no version of a query yet (reported, not timed)."""
        if page == "Model registry" and len(filters.versions) != 2:  # the page compares the demo's pair
            filters = replace(filters, versions=DEMO_PAIR)
        rows = self.load(filters, pandas_pages.columns_for([q.sql("duckdb") for q in built]))
        return [pandas_pages.FIGURES[q.name](rows, filters, grain_of(q, grain), metric_of(q)) if q.name in
                pandas_pages.FIGURES else None for q in built]  # fmt: skip


def _normal(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def difference(engine: pd.DataFrame, other: pd.DataFrame, rel: float) -> str | None:
    """Why `other` does not hold the engine's figures (columns the engine has, rows in any order), or None."""
    missing = [c for c in engine.columns if c not in other.columns]
    if missing:
        return f"columns missing: {missing}"
    if len(engine) != len(other):
        return f"{len(other)} rows instead of {len(engine)}"
    columns = list(engine.columns)
    numeric = [c for c in columns if pd.api.types.is_float_dtype(engine[c]) or pd.api.types.is_float_dtype(other[c])]
    keys = [c for c in columns if c not in numeric]

    def rows(frame: pd.DataFrame) -> list[list[Any]]:
        records = [[_normal(v) for v in row] for row in frame[keys + numeric].itertuples(index=False)]
        return sorted(records, key=lambda r: [(v is None, str(v)) for v in r])

    for want, got in zip(rows(engine), rows(other), strict=True):
        for name, w, g in zip(keys + numeric, want, got, strict=True):
            same = (w is None and g is None) or (
                w is not None and g is not None and
                (np.isclose(float(w), float(g), rtol=rel, atol=1e-9) if name in numeric else w == g)
            )  # fmt: skip
            if not same:
                return f"{name}: engine {w!r}, other {g!r} (row {dict(zip(keys, want[: len(keys)], strict=True))})"
    return None


def check(page: str, grain: str, source: DuckDBSource, pandas_page: PandasPage) -> None:
    """Rollups equal the raw table, and pandas equals the engine, for every query of the page."""
    built, raw_built = PAGE_QUERIES[page](TABLE, APRIL, grain), PAGE_QUERIES[page](RAW, APRIL, grain)
    engine = [t.to_pandas() for t in run_queries(source, built)]
    raw = [t.to_pandas() for t in run_queries(source, raw_built)]
    computed = pandas_page.figures(page, built, APRIL, grain)
    for query, from_rollups, from_raw, from_pandas in zip(built, engine, raw, computed, strict=True):
        if query.name in pandas_pages.NOT_COMPARED:
            continue
        for label, other, rel in (("raw table", from_raw, 1e-9),
                                  ("pandas", from_pandas, pandas_pages.APPROXIMATE.get(query.name, 1e-6))):  # fmt: skip
            if other is None:
                continue
            why = difference(from_rollups, other, rel)
            if why:
                raise SystemExit(f"{page} / {grain} / {query.name}: {label} differs from the rollups: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--warmup", type=int, default=0, help="untimed runs per contender and page, after the check")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per contender and page (median)")
    parser.add_argument("--db", type=Path, default=None, help="reuse or create this DuckDB file")
    parser.add_argument("--pages", default="", help="comma-separated page names (default: every page)")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/inference-explorer-bench/requests-{args.rows}.duckdb")
    if not path.exists():
        build(path, args.rows)
    print(f"machine: {describe()}")
    rebuild, one_day = rollup_costs(path)
    print(f"rollups: full build {rebuild:.2f} s, refresh of one day {one_day:.2f} s ({args.rows:,} requests)")
    source, pandas_page = DuckDBSource(path), PandasPage(path)
    print(f"each contender: the checking run and {args.warmup} more untimed, then the median of {args.reps} timed runs;"
          " April, default filters")  # fmt: skip
    header = f"{'page':16} {'grain':6} {'queries':>7} {'rollups s':>9} {'raw s':>8} {'pandas s':>9}"
    print(f"{header} {'raw/rollups':>11} {'pandas/rollups':>14} {'pandas/raw':>10} {'build pays after':>16}")
    for page in [p for p in PAGE_QUERIES if not args.pages or p in args.pages.split(",")]:
        for grain in ("hour", "minute") if page in MINUTE_PAGES else ("hour",):
            check(page, grain, source, pandas_page)
            built, raw_built = PAGE_QUERIES[page](TABLE, APRIL, grain), PAGE_QUERIES[page](RAW, APRIL, grain)
            fast = timed(lambda b=built: run_queries(source, b), args.warmup, args.reps)
            slow = timed(lambda b=raw_built: run_queries(source, b), args.warmup, args.reps)
            notebook = timed(
                lambda p=page, b=built, g=grain: pandas_page.figures(p, b, APRIL, g), args.warmup, args.reps
            )
            pays = f"{rebuild / (slow - fast):.1f} loads" if slow > fast else "never"
            lacking = [q.name for q in built if q.name not in pandas_pages.FIGURES]
            if lacking:
                print(f"  (pandas leaves out {', '.join(lacking)}: no pandas version yet; its ratio is flattering)")
            print(f"{page:16} {grain:6} {len(built):7d} {fast:9.3f} {slow:8.3f} {notebook:9.3f} "
                  f"{slow / fast:10.1f}x {notebook / fast:13.1f}x {notebook / slow:9.1f}x {pays:>16}")  # fmt: skip
    print("ratios: raw/rollups = the same queries without vs with the rollups (what the rollups save a page load);")
    print("pandas/rollups and pandas/raw = the notebook way (load the rows, compute the figures) vs the engine.")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores shared with others)")


if __name__ == "__main__":
    main()

"""Each page's queries at 10 million requests on the embedded default, against loading rows into pandas.

    python -m bench.bench_pages [--rows 10000000] [--reps 5] [--db PATH]

Builds (or reuses) a DuckDB file with the demo generator's scored requests and the analytics rollups, then for every
page times its queries the way the app runs them (a read-only connection per query, no cache), median of --reps runs,
and one baseline in the same run: the month's rows loaded into pandas and aggregated there per hour and version.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

import duckdb

from bench.machine import describe
from data_access import analytics, details, queries
from data_access.config import TableName
from data_access.demo import generate_requests
from data_access.sources import DuckDBSource
from jobs.scoring import parse_and_score
from metrics.profiles import build_profile
from ui import registry_view

TABLE = TableName("requests")
APRIL = queries.Filters(date(2026, 4, 1), date(2026, 4, 30))
PAGES = {**analytics.PAGE_QUERIES, **details.PAGE_QUERIES, **registry_view.PAGE_QUERIES}
NUMERIC = ["latency_ms", "prompt_tokens", "completion_tokens", "prompt_toxicity", "response_toxicity",
           "response_fk_grade", "response_perplexity"]  # fmt: skip


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
        analytics.refresh_rollups(con, TABLE, rebuild=True)
    print(f"built {rows:,} scored requests with rollups in {time.perf_counter() - started:.0f} s -> {path}")


def page_seconds(source: DuckDBSource, page: str, grain: str, reps: int) -> tuple[float, int]:
    built = PAGES[page](TABLE, APRIL, grain)
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        for query in built:
            source.execute(query.sql("duckdb"))
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), len(built)


def pandas_seconds(path: Path) -> float:
    """The notebook way: load the month's rows into pandas, then aggregate per hour and version there."""
    started = time.perf_counter()
    with duckdb.connect(str(path), read_only=True) as con:
        frame = con.sql(
            f"SELECT request_time, model_version, status_code, {', '.join(NUMERIC)} FROM requests "
            "WHERE date BETWEEN DATE '2026-04-01' AND DATE '2026-04-30'"
        ).df()
    frame["bucket"] = frame["request_time"].dt.floor("h")
    grouped = frame.groupby(["bucket", "model_version"])
    grouped[NUMERIC].agg(["mean", "count"])
    grouped["latency_ms"].quantile([0.5, 0.95])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--db", type=Path, default=None, help="reuse or create this DuckDB file")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/inference-explorer-bench/requests-{args.rows}.duckdb")
    if not path.exists():
        build(path, args.rows)
    source = DuckDBSource(path)
    print(f"machine: {describe()}")
    baseline = pandas_seconds(path)
    print(f"baseline: load {args.rows:,} rows into pandas and aggregate per hour: {baseline:.2f} s")
    print(f"{'page':16} {'grain':7} {'queries':>7} {'median s':>9} {'x faster than pandas':>21}  target <0.5 s, >=10x")
    for page in PAGES:
        for grain in ("hour", "minute") if page == "Trends" else ("hour",):
            seconds, count = page_seconds(source, page, grain, args.reps)
            verdict = "ok" if seconds < 0.5 and baseline / seconds >= 10 else "MISSES TARGET"
            print(f"{page:16} {grain:7} {count:7d} {seconds:9.3f} {baseline / seconds:20.1f}x  {verdict}")


if __name__ == "__main__":
    main()

"""Every query of the catalog gives the same answer on local Spark SQL as on DuckDB, over the same data.

The data: the demo generator's payload, scored once by the embedded job; the very same payload and requests
rows are loaded into both engines (so this compares the queries, not the scorers). Each query is compiled
by Ibis for "duckdb" and for "databricks" and run through `DuckDBSource` and `SparkSource`.

Every page's queries come from the one page catalog, `data_access.queries.pages.PAGE_QUERIES`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_access import rollup_refresh, rollup_status
from data_access.config import TableName
from data_access.duckdb_store import DuckDBStore
from data_access.errors import DataAccessError
from data_access.queries import Bundle, Filters, Query, filter_options, run, usage
from data_access.queries.job import payload_without_id, unscored_payload
from data_access.queries.pages import CHECK, ONE_STATEMENT_PAGES, PAGE_QUERIES, page_statements
from data_access.queries.versions import traffic
from data_access.sources import DuckDBSource, SparkSource
from jobs.rollups import refresh_spark_rollups
from jobs.score import run_once
from jobs.spark_session import local_spark
from jobs.spark_tables import PAYLOAD_DDL, REQUESTS_DDL, SPARK_REQUESTS_ARROW
from metrics.profiles import build_profile

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)", allow_module_level=True)

DEMO_ROWS = 4_000
PAYLOAD = TableName("parity_payload")
REQUESTS = TableName("parity_requests")
HALF_SCORED = TableName("parity_requests_half")  # every other id: what a job stopped midway leaves behind
# Floating-point sums and means are added up in a different order by each engine.
REL_TOL = 1e-9
ABS_TOL = 1e-9
# Approximate quantiles (if a query ever uses them) come from different sketches: Spark's percentile_approx
# (accuracy 10000: rank error <= n/10000) and DuckDB's t-digest approx_quantile (about 1% rank error). On the
# demo's smooth latency and score distributions a 1% rank error moves a value by well under 5%.
APPROX_REL_TOL = 0.05
FilterKind = str


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))
    yield session
    session.stop()


def _generate_payload(rows: int) -> pa.Table:
    try:
        from data_access.demo import generate_payload
    except ImportError as error:
        pytest.skip(f"the demo generator is not available yet: {error}")
    return generate_payload(rows, 7)


def _spark_table(spark: Any, name: TableName, rows: pa.Table, ddl: str, folder: Path) -> None:
    """A parquet table in the Spark catalog holding exactly these Arrow rows (timestamps as UTC instants)."""
    folder.mkdir(parents=True)
    pq.write_table(rows, folder / "part-0.parquet")
    spark.sql(f"DROP TABLE IF EXISTS `{name.table}`")
    spark.sql(f"CREATE TABLE `{name.table}` ({ddl}) USING parquet LOCATION '{folder.as_posix()}'")


def _duckdb_table(path: Path, name: TableName, rows: pa.Table) -> None:
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rows)
        con.execute(f'CREATE OR REPLACE TABLE "{name.table}" AS SELECT * FROM incoming')


@pytest.fixture(scope="module")
def engines(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("parity")
    path = folder / "parity.duckdb"
    payload = _generate_payload(DEMO_ROWS)
    store = DuckDBStore(path, PAYLOAD, REQUESTS)
    store.replace_payload(payload)
    run_once(store, build_profile("light"))
    with duckdb.connect(str(path), read_only=True) as con:
        requests = con.sql(f'SELECT * FROM "{REQUESTS.table}" ORDER BY request_id').to_arrow_table()
    half = requests.take(list(range(0, requests.num_rows, 2)))
    _duckdb_table(path, HALF_SCORED, half)
    _spark_table(spark, PAYLOAD, payload, PAYLOAD_DDL, folder / "payload")
    _spark_table(spark, REQUESTS, requests.cast(SPARK_REQUESTS_ARROW), REQUESTS_DDL, folder / "requests")
    _spark_table(spark, HALF_SCORED, half.cast(SPARK_REQUESTS_ARROW), REQUESTS_DDL, folder / "half")
    _build_rollups(spark, path)
    return {"duckdb": DuckDBSource(path), "spark": SparkSource(spark), "requests": requests}


def _build_rollups(spark: Any, path: Path) -> None:
    """The rollups, built in each engine as its jobs build them (the embedded store; the Spark job's refresh)."""
    with duckdb.connect(str(path)) as con:
        rollup_refresh.refresh_rollups(con, REQUESTS, rebuild=True)
    refresh_spark_rollups(spark, REQUESTS)


# ---------------------------------------------------------------------------------------------------------
# Filters, resolved from the data at test time
# ---------------------------------------------------------------------------------------------------------


def resolve_filters(kind: FilterKind, requests: pa.Table) -> Filters:
    dates = sorted(d for d in set(requests["date"].to_pylist()) if d is not None)
    versions = _by_count(requests["model_version"].to_pylist())
    endpoints = _by_count(requests["endpoint_name"].to_pylist())
    if kind == "all":
        return Filters()
    if kind == "window+version":
        return Filters(start=dates[len(dates) // 4], end=dates[len(dates) // 2], versions=versions[:1])
    if kind == "endpoint+versions":
        return Filters(start=dates[0], end=dates[-1], versions=tuple(versions[:2]), endpoints=endpoints[:1])
    raise ValueError(kind)


def _by_count(values: list[str | None]) -> tuple[str, ...]:
    counts: dict[str, int] = {}
    for value in values:
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return tuple(sorted(counts, key=lambda v: (-counts[v], v)))


# ---------------------------------------------------------------------------------------------------------
# Comparing results
# ---------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return value


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    rows = [tuple(_plain(v) for v in record.values()) for record in table.to_pylist()]
    return sorted(rows, key=_sort_key)


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # Numbers rounded for ordering only, so that 0.1+0.2 and 0.3 sort alike; None first; types never mixed.
    return tuple(
        (0, "") if v is None else (1, round(float(v), 6)) if isinstance(v, int | float) else (2, str(v)) for v in row
    )


def _same(left: Any, right: Any, rel_tol: float) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return math.isclose(float(left), float(right), rel_tol=rel_tol, abs_tol=ABS_TOL)
    return left == right


def assert_same_result(query: Query, duck: pa.Table, spark: pa.Table) -> None:
    assert duck.column_names == spark.column_names, query.name
    assert duck.num_rows == spark.num_rows, (query.name, duck.num_rows, spark.num_rows)
    approx = re.search(r"approx", query.sql("databricks") + query.sql("duckdb"), re.IGNORECASE)
    rel_tol = APPROX_REL_TOL if approx else REL_TOL
    for duck_row, spark_row in zip(_rows(duck), _rows(spark), strict=True):
        for column, left, right in zip(duck.column_names, duck_row, spark_row, strict=True):
            assert _same(left, right, rel_tol), f"{query.name}.{column}: DuckDB {left!r} vs Spark {right!r}"


# Queries whose SQL cannot run on open-source Spark, with the exact error they raise there. Each is asserted
# to still fail that way, so a fix shows up here as a failing test to delete the entry.
SPARK_GAPS: dict[str, str] = {
    # Spark's session catalog has no information_schema (Unity Catalog on Databricks has one per catalog).
    "rollup_presence": "[TABLE_OR_VIEW_NOT_FOUND] The table or view `information_schema`.`tables` cannot be found",
}


def assert_known_gap(engines: dict[str, Any], query: Query) -> None:
    run(engines["duckdb"], query)  # DuckDB answers it
    with pytest.raises(DataAccessError) as raised:
        run(engines["spark"], query)
    assert SPARK_GAPS[query.name] in str(raised.value)


def test_known_gaps_still_fail_on_spark(engines: dict[str, Any]) -> None:
    """No page runs these (the refresh asks Spark's catalog which rollups exist), but the gap stays documented."""
    assert_known_gap(engines, rollup_status.rollup_presence(REQUESTS))


def check_parity(engines: dict[str, Any], queries: list[Query]) -> None:
    assert queries, "no queries to compare"
    for query in queries:
        if query.name in SPARK_GAPS:
            assert_known_gap(engines, query)
            continue
        duck = run(engines["duckdb"], query).table
        spark = run(engines["spark"], query).table
        assert_same_result(query, duck, spark)


# ---------------------------------------------------------------------------------------------------------
# The core catalog
# ---------------------------------------------------------------------------------------------------------


def test_the_data_is_loaded_alike(engines: dict[str, Any]) -> None:
    count = Query("count", filter_options(REQUESTS).expr.count().as_table())
    check_parity(engines, [count])
    assert engines["requests"].num_rows > DEMO_ROWS * 0.9  # duplicates of an id are scored once


def test_filter_options(engines: dict[str, Any]) -> None:
    check_parity(engines, [filter_options(REQUESTS)])


@pytest.mark.parametrize(
    ("kind", "grain"),
    [("all", grain) for grain in ("minute", "15 minutes", "hour", "3 hours", "day", "week", "month")]
    + [("window+version", "hour"), ("endpoint+versions", "day")],
)
def test_traffic_from_the_requests_table(engines: dict[str, Any], kind: FilterKind, grain: str) -> None:
    check_parity(engines, [traffic(REQUESTS, resolve_filters(kind, engines["requests"]), grain, from_rollups=False)])


@pytest.mark.parametrize("limit", [1, 250, None])
def test_unscored_payload(engines: dict[str, Any], limit: int | None) -> None:
    query = unscored_payload(PAYLOAD, HALF_SCORED, limit)
    check_parity(engines, [query])
    # Independently: ids with a request id that the half-scored table lacks (hash ids are not its business).
    requests = engines["requests"]["request_id"].to_pylist()
    keyed = {i for i in requests if not i.startswith("sha1:")}
    lacking = keyed - set(requests[::2])
    pending = run(engines["spark"], query).table
    ids = [
        d or c
        for d, c in zip(
            pending["databricks_request_id"].to_pylist(), pending["client_request_id"].to_pylist(), strict=True
        )
    ]
    assert len(ids) == len(set(ids)) == min(limit or len(lacking), len(lacking))
    assert set(ids) <= lacking


def test_payload_without_id(engines: dict[str, Any]) -> None:
    check_parity(engines, [payload_without_id(PAYLOAD)])


# ---------------------------------------------------------------------------------------------------------
# Every page's queries, from the page catalog
# ---------------------------------------------------------------------------------------------------------

PAGE_COMBOS = [("all", "day"), ("window+version", "hour"), ("endpoint+versions", "minute")]


@pytest.mark.parametrize("page", list(PAGE_QUERIES))
@pytest.mark.parametrize(("kind", "grain"), PAGE_COMBOS)
def test_page_queries(engines: dict[str, Any], page: str, kind: FilterKind, grain: str) -> None:
    check_parity(engines, PAGE_QUERIES[page](REQUESTS, resolve_filters(kind, engines["requests"]), grain))


# The same pages without the rollups (what each page runs, and shows, when they are missing or behind). Two
# combinations keep the test quick: every query of every page still runs both ways, at a coarse and a fine grain.
RAW_COMBOS = [("window+version", "hour"), ("endpoint+versions", "minute")]


@pytest.mark.parametrize("page", list(PAGE_QUERIES))
@pytest.mark.parametrize(("kind", "grain"), RAW_COMBOS)
def test_page_queries_from_the_requests_table(engines: dict[str, Any], page: str, kind: FilterKind, grain: str) -> None:
    filters = resolve_filters(kind, engines["requests"])
    check_parity(engines, PAGE_QUERIES[page](REQUESTS, filters, grain, from_rollups=False))


@pytest.mark.parametrize("selected", [1, 2])
def test_usage_busiest_minute_by_endpoints_selected(engines: dict[str, Any], selected: int) -> None:
    """Usage's busiest minute with endpoints selected: one reads the hourly profile's `endpoint_peak`, two add the
    minutes up from the minute profile; either way the same on both engines, and over the rollups what the
    requests table gives."""
    endpoints = (*_by_count(engines["requests"]["endpoint_name"].to_pylist())[:1], "another endpoint")[:selected]
    filters = Filters(versions=resolve_filters("endpoint+versions", engines["requests"]).versions, endpoints=endpoints)
    rolled, raw = (usage.usage_trend(REQUESTS, filters, "3 hours", from_rollups=r) for r in (True, False))
    assert ("hourly" in rolled.sql("databricks")) == (selected == 1)
    check_parity(engines, [rolled, raw])
    assert_same_result(rolled, run(engines["spark"], raw).table, run(engines["spark"], rolled).table)


@pytest.mark.parametrize("page", ONE_STATEMENT_PAGES)
@pytest.mark.parametrize("from_rollups", [True, False])
def test_one_statement_pages(engines: dict[str, Any], page: str, from_rollups: bool) -> None:
    """A page's figures sent as one statement (`page_statements`, on a warehouse): each part cut from the bundle's
    result is the part run alone, rows, columns and order, on each engine; and the same on both. The check rides
    only over the rollups (over the requests table it goes alone: that statement must not read the rollups' state
    table)."""
    filters = resolve_filters("window+version", engines["requests"])
    built = PAGE_QUERIES[page](REQUESTS, filters, "hour", from_rollups=from_rollups)
    statements = page_statements(page, built, "databricks", from_rollups)
    bundle = next(s for s in statements if isinstance(s, Bundle))
    names = [p.name for p in bundle.parts]
    assert (CHECK in names) == from_rollups and len(names) >= 3
    sent = [q.name for s in statements for q in (s.parts if isinstance(s, Bundle) else (s,))]
    assert sorted(sent) == sorted(q.name for q in built)  # every figure sent once
    assert rollup_status.state_name(REQUESTS).table not in bundle.sql("databricks") or from_rollups
    split = {engine: bundle.split(run(engines[engine], bundle).table) for engine in ("duckdb", "spark")}
    for engine, parts in split.items():
        for part, rows in zip(bundle.parts, parts, strict=True):
            alone = run(engines[engine], part).table
            assert rows.schema.types == alone.schema.types, (engine, part.name)  # nullability aside
            assert_same_result(part, alone, rows)
            ordered = [c for c in alone.column_names if not pa.types.is_floating(alone.schema.field(c).type)]
            assert rows.select(ordered).to_pylist() == alone.select(ordered).to_pylist(), (engine, part.name)
    for i, part in enumerate(bundle.parts):
        assert_same_result(part, split["duckdb"][i], split["spark"][i])


@pytest.mark.parametrize(("table", "usable"), [(REQUESTS, True), (HALF_SCORED, False)])
def test_a_page_first_statement_on_spark(engines: dict[str, Any], table: TableName, usable: bool) -> None:
    """What the Usage page reads on a warehouse (`ui.data.page_first_statement`): with current rollups, one statement
    gives the check and every figure over the rollups; with none (the half table has no state table), the figures
    over the requests table, from one statement too. Each figure equals the query run alone."""
    from ui import data

    page, filters = "Usage and cost", resolve_filters("window+version", engines["requests"])
    got_usable, frames = data.page_first_statement(engines["spark"], table, page, filters, "hour")
    assert got_usable == usable
    built = [q for q in PAGE_QUERIES[page](table, filters, "hour", from_rollups=usable) if q.name != CHECK]
    assert set(frames) == {q.sql("databricks") for q in built}
    for query in built:
        frame = frames[query.sql("databricks")]
        assert frame.figures == len(built) + usable and "UNION ALL" in frame.sql
        alone = run(engines["spark"], query).table
        assert_same_result(query, alone, pa.Table.from_pandas(frame.data, schema=alone.schema, preserve_index=False))


def test_results_are_compared_for_real(engines: dict[str, Any]) -> None:
    """The comparison notices a difference: one request less on one side changes the counts."""
    query = filter_options(REQUESTS)
    duck = run(engines["duckdb"], query).table
    spark = run(engines["spark"], filter_options(HALF_SCORED)).table
    with pytest.raises(AssertionError):
        assert_same_result(query, duck, spark)

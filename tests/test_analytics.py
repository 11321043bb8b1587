"""Analytics queries, rollups and statistics, checked against pandas and scipy on the same rows.

The demo generator's real scored requests go into a DuckDB file; every query runs there through the app's own
DuckDBSource and is compared with an independent computation on the raw rows. The statistics computed from the
engine's fine bins are compared with scipy on the raw values, within the bounds that binning allows (each bound
is derived in core/stats.py and reported by the function itself, so the tests check the derivation too).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
from scipy import stats as scipy_stats

from core import comparison as page_stats
from core import drift as drift_stats
from core import stats
from core.catalog import METRIC_SCORER_COLUMN, METRICS, NONPOSITIVE_BIN
from data_access import queries, rollup_refresh, rollup_status, rollups
from data_access.config import TableName
from data_access.errors import DataAccessError
from data_access.queries import Filters, Query, pages, requests_table, run, toxicity, trends
from data_access.queries import versions as version_queries
from data_access.schema import REQUESTS_ARROW
from data_access.sources import DuckDBSource, Source
from jobs import rollups as rollup_job
from jobs.rollups import refresh_spark_rollups
from testkit.tables import write_requests

TABLE = TableName("requests")
GRAINS = ("minute", "15 minutes", "hour", "3 hours", "day", "week", "month")


# --- Data ---------------------------------------------------------------------------------------------------


def synthetic_requests(values: dict[str, np.ndarray], versions: np.ndarray, start: datetime) -> pa.Table:
    """A requests table with the given metric columns, one request per minute from `start`; the rest null."""
    n = len(versions)
    times = pd.Series(pd.date_range(start, periods=n, freq="min"))
    columns: dict[str, pa.Array] = {
        "request_id": pa.array([f"r{i}" for i in range(n)]),
        "request_time": pa.array(times.to_numpy(dtype="datetime64[us]")),
        "date": pa.array(times.dt.date),
        "endpoint_name": pa.array(["endpoint"] * n),
        "model_version": pa.array(versions),
        "status_code": pa.array(np.full(n, 200, np.int32)),
    }
    for metric, array in values.items():
        columns[metric] = pa.array(array)
        if metric in METRIC_SCORER_COLUMN:
            columns[METRIC_SCORER_COLUMN[metric]] = pa.array(["synthetic-scorer"] * n)
    fields = [columns[f.name].cast(f.type) if f.name in columns else pa.nulls(n, f.type) for f in REQUESTS_ARROW]
    return pa.Table.from_arrays(fields, schema=REQUESTS_ARROW)


SHADOW = "dbdemos_endpoint_shadow"


@pytest.fixture(scope="session")
def two_endpoints(demo_rows: pa.Table) -> pa.Table:
    """The demo's requests with every third one served by a second endpoint, so endpoint filters matter."""
    endpoints = np.where(np.arange(demo_rows.num_rows) % 3 == 0, SHADOW, demo_rows["endpoint_name"].to_numpy(False))
    column = demo_rows.schema.get_field_index("endpoint_name")
    return demo_rows.set_column(column, "endpoint_name", pa.array(endpoints, type=pa.string()))


@pytest.fixture(scope="session")
def raw(two_endpoints: pa.Table) -> pd.DataFrame:
    return two_endpoints.to_pandas()


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory, two_endpoints: pa.Table) -> DuckDBSource:
    return DuckDBSource(write_requests(tmp_path_factory.mktemp("analytics") / "inference.duckdb", two_endpoints))


def fetch(source: DuckDBSource, query: Query) -> pd.DataFrame:
    return run(source, query).table.to_pandas()


def in_filters(raw: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    keep = pd.Series(True, index=raw.index)
    if filters.start:
        keep &= raw["date"] >= filters.start
    if filters.end:
        keep &= raw["date"] <= filters.end
    if filters.versions:
        keep &= raw["model_version"].isin(filters.versions)
    if filters.endpoints:
        keep &= raw["endpoint_name"].isin(filters.endpoints)
    return raw[keep]


FILTERS = (
    Filters(),
    Filters(versions=("7",)),
    Filters(start=date(2026, 4, 12), end=date(2026, 4, 21)),
    Filters(
        start=date(2026, 4, 15), end=date(2026, 4, 15), versions=("6", "7"), endpoints=("dbdemos_endpoint_advanced",)
    ),
    Filters(endpoints=(SHADOW,)),
)


def test_each_filter_case_keeps_some_rows_and_drops_others(raw: pd.DataFrame) -> None:
    """Otherwise a filter the engine ignored would still match the oracle."""
    assert raw["endpoint_name"].nunique() == 2
    for filters in FILTERS[1:]:
        assert 0 < len(in_filters(raw, filters)) < len(raw), filters


# --- The catalog --------------------------------------------------------------------------------------------


def test_compiled_sql_is_reused_only_for_the_same_query() -> None:
    """A query built again compiles once (`queries.compiled`); another filter, grain or dialect compiles anew."""
    april = Filters(date(2026, 4, 1), date(2026, 4, 30))
    builds = [
        (april, "hour", "duckdb"),
        (april, "hour", "databricks"),
        (april, "day", "duckdb"),
        (Filters(date(2026, 4, 1), date(2026, 4, 30), versions=("7",)), "hour", "duckdb"),
        (Filters(date(2026, 4, 1), date(2026, 4, 29)), "hour", "duckdb"),
    ]
    first = [trends.trends_page(TABLE, f, grain)[1].sql(dialect) for f, grain, dialect in builds]
    assert len(set(first)) == len(builds)  # every difference reaches the SQL
    hits = queries.compiled.cache_info().hits
    again = [trends.trends_page(TABLE, f, grain)[1].sql(dialect) for f, grain, dialect in builds]
    assert again == first
    assert queries.compiled.cache_info().hits == hits + len(builds)
    assert first[0] == ibis.to_sql(trends.trends_page(TABLE, april, "hour")[1].expr, dialect="duckdb")


def test_rollups_cover_every_metric_of_the_catalog() -> None:
    t = requests_table(TABLE)
    profile = rollups.minute_profile(t).columns
    assert all(f"{metric}__{part}" in profile for metric in METRICS for part in ("n", "sum", "sumsq", "min", "max"))
    assert set(METRIC_SCORER_COLUMN.values()) <= set(t.columns) & set(profile)


def every_query(filters: Filters) -> list[Query]:
    built = [query for page in pages.PAGE_QUERIES.values() for grain in GRAINS for query in page(TABLE, filters, grain)]
    for metric in ("response_fk_grade", "latency_ms"):  # with a scorer column, and without one
        built.append(trends.metric_trend(TABLE, filters, "minute", metric))
        built.append(trends.metric_band(TABLE, filters, "week", metric))
    built.append(
        version_queries.histograms_by_window(
            TABLE, filters, (date(2026, 4, 1), date(2026, 4, 10)), (date(2026, 4, 11), date(2026, 4, 30))
        )
    )
    built += [
        rollup_status.stale_dates(TABLE),
        rollup_status.rollup_counts(TABLE),
        rollup_status.rollup_presence(TABLE),
    ]
    return built


@pytest.mark.parametrize("filters", [FILTERS[0], FILTERS[3]])
def test_every_page_query_compiles_for_databricks_and_duckdb(filters: Filters) -> None:
    for dialect in ("databricks", "duckdb"):
        compiled = {(query.name, query.sql(dialect)) for query in every_query(filters)}  # pages share queries
        for name, sql in compiled:
            sqlglot.parse_one(sql, read=dialect)  # what we send is valid in that dialect
            if name not in ("rollup_presence", "rollup_freshness", "rollup_counts", "stale_dates", "rollout_traffic"):
                for version in filters.versions:
                    assert f"'{version}'" in sql  # user values travel as quoted literals
            if name == "rollout_traffic":  # shares among all versions and dates: only the endpoints narrow it
                assert all(f"'{endpoint}'" in sql for endpoint in filters.endpoints)


def test_delta_replace_where_is_valid_databricks_sql() -> None:
    table = TableName.parse("main.serving.requests")
    raw = requests_table(table)
    for name, build in rollups.rollup_builds(table):
        statement = rollup_refresh.replace_where(name, ibis.to_sql(build(raw), "databricks"), [date(2026, 4, 3)])
        parsed = sqlglot.parse_one(statement, read="databricks")
        assert isinstance(parsed, sqlglot.exp.Insert) and parsed.args["where"] is not None
        assert statement.startswith(f"INSERT INTO `main`.`serving`.`{name.table}` REPLACE WHERE `date` IN (CAST(")


def test_raw_fallback_queries_compile_for_databricks() -> None:
    catalog_table = TableName.parse("main.serving.requests")
    builders = raw_and_rollup_builders()
    for name, build in builders.items():
        sql = build(catalog_table, Filters(versions=("7",)), False).sql("databricks")
        assert "`main`.`serving`.`requests`" in sql, name


def test_bad_arguments_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        trends.metric_trend(TABLE, Filters(), "hour", "nonsense")
    with pytest.raises(ValueError, match="unknown granularity"):
        version_queries.traffic(TABLE, Filters(), "fortnight")
    with pytest.raises(ValueError, match="percentile bands start at hour"):
        trends.metric_band(TABLE, Filters(), "minute", "latency_ms")
    with pytest.raises(ValueError, match="ends before it starts"):
        version_queries.histograms_by_window(
            TABLE, Filters(), (date(2026, 4, 9), date(2026, 4, 1)), (date(2026, 4, 1), date(2026, 4, 2))
        )


def test_user_values_enter_as_literals(source: DuckDBSource) -> None:
    hostile = Filters(versions=("7' OR '1'='1",), endpoints=("x'); DROP TABLE requests; --",))
    assert fetch(source, version_queries.version_totals(TABLE, hostile)).empty
    assert fetch(source, version_queries.histograms_by_version(TABLE, hostile)).empty
    assert not fetch(source, version_queries.version_totals(TABLE, Filters())).empty  # the table is still there


# --- Numbers against pandas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("filters", FILTERS)
def test_version_totals_match_pandas(source: DuckDBSource, raw: pd.DataFrame, filters: Filters) -> None:
    got = fetch(source, version_queries.version_totals(TABLE, filters)).set_index("model_version", drop=False)
    rows = in_filters(raw, filters)
    error = rows["status_code"].isna() | (rows["status_code"] != 200)
    expected = (
        rows.assign(error=error, parsed_bad=rows["parse_error"].notna())
        .groupby("model_version", dropna=False)
        .agg(
            requests=("request_id", "size"),
            errors=("error", "sum"),
            parse_errors=("parsed_bad", "sum"),
            total_tokens=("total_tokens", "sum"),
            completion_tokens=("completion_tokens", "sum"),
        )
    )
    assert len(got) == len(expected)
    for version, row in expected.iterrows():
        match = got[got["model_version"].isna()] if pd.isna(version) else got[got["model_version"] == version]
        assert match["requests"].item() == row["requests"]
        assert match["errors"].item() == row["errors"]
        assert match["parse_errors"].item() == row["parse_errors"]
        assert match["total_tokens"].item() == pytest.approx(row["total_tokens"])
        assert match["completion_tokens"].item() == pytest.approx(row["completion_tokens"])


PANDAS_FLOOR = {"minute": "min", "15 minutes": "15min", "hour": "h", "3 hours": "3h", "6 hours": "6h", "day": "D"}


def bucket_of(times: pd.Series, grain: str) -> pd.Series:
    if grain in PANDAS_FLOOR:
        return times.dt.floor(PANDAS_FLOOR[grain])
    return times.dt.to_period("W" if grain == "week" else "M").dt.start_time


@pytest.mark.parametrize("grain", GRAINS)
def test_traffic_matches_pandas(source: DuckDBSource, raw: pd.DataFrame, grain: str) -> None:
    filters = Filters(start=date(2026, 4, 10), end=date(2026, 4, 24))
    got = fetch(source, version_queries.traffic(TABLE, filters, grain))
    rows = in_filters(raw, filters)
    error = rows["status_code"].isna() | (rows["status_code"] != 200)
    expected = (
        rows.assign(
            bucket=bucket_of(rows["request_time"], grain), error=error, version=rows["model_version"].fillna("∅")
        )
        .groupby(["bucket", "version"])
        .agg(requests=("request_id", "size"), errors=("error", "sum"))
        .reset_index()
    )
    got = got.assign(version=got["model_version"].fillna("∅")).sort_values(["bucket", "version"], ignore_index=True)
    expected = expected.sort_values(["bucket", "version"], ignore_index=True)
    assert got["bucket"].tolist() == expected["bucket"].tolist()
    assert got["version"].tolist() == expected["version"].tolist()
    assert got["requests"].tolist() == expected["requests"].tolist()
    assert got["errors"].tolist() == expected["errors"].tolist()


def numpy_bins(metric: str, values: np.ndarray) -> np.ndarray:
    """The engine's binning, restated in numpy."""
    binning = METRICS[metric].binning
    if binning.kind == "linear":
        return np.floor(values * binning.scale).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.floor(np.log(values) * binning.scale)
    return np.where(values > 0, index, NONPOSITIVE_BIN).astype(np.int64)


@pytest.mark.parametrize("metric", list(METRICS))
def test_histograms_match_pandas(source: DuckDBSource, raw: pd.DataFrame, metric: str) -> None:
    got = fetch(source, version_queries.histograms_by_version(TABLE, Filters(versions=("6", "7")), metrics=(metric,)))
    rows = raw[raw["model_version"].isin(["6", "7"]) & raw[metric].notna()]
    values = rows[metric].to_numpy(np.float64)
    expected = (
        rows.assign(bin=numpy_bins(metric, values), value=values)
        .groupby(["model_version", "bin"])
        .agg(n=("value", "size"), total=("value", "sum"), lo=("value", "min"), hi=("value", "max"))
        .reset_index()
    )
    got = got.sort_values(["group", "bin"], ignore_index=True)
    assert set(got["metric"]) == {metric}
    assert got["group"].tolist() == expected["model_version"].tolist()
    assert got["bin"].tolist() == expected["bin"].tolist()
    assert got["n"].tolist() == expected["n"].tolist()
    np.testing.assert_allclose(got["total"], expected["total"], rtol=1e-12)
    np.testing.assert_array_equal(got["lo"], expected["lo"])
    np.testing.assert_array_equal(got["hi"], expected["hi"])


@pytest.mark.parametrize("metric", ["response_perplexity", "latency_ms", "response_toxicity", "response_fk_grade"])
def test_band_histograms_match_pandas(source: DuckDBSource, raw: pd.DataFrame, metric: str) -> None:
    """The band rollup holds each hour's values of every endpoint, version and scorer on band bins: four adjacent
    fine bins (the numpy binning floor-divided by 4), with their count, smallest and largest value."""
    band = rollups.stored(rollups.band_rollup_name(TABLE), rollups.band_histograms)
    got = fetch(source, Query("band", band.filter(band.metric == metric)))
    rows = raw[raw[metric].notna()]
    values = rows[metric].to_numpy(np.float64)
    scorer = METRIC_SCORER_COLUMN.get(metric)
    rows = rows.assign(
        hour=rows["request_time"].dt.floor("h"),
        bin=np.floor_divide(numpy_bins(metric, values), rollups.BAND_FINE_BINS),
        value=values,
        scorer=rows[scorer] if scorer else None,
    )
    keys = ["hour", "date", "endpoint_name", "model_version", "scorer", "bin"]
    expected = rows.groupby(keys, dropna=False).agg(n=("value", "size"), lo=("value", "min"), hi=("value", "max"))
    expected = expected.reset_index()
    assert 0 < len(expected) < len(rows)  # bins of several values
    got, expected = (
        frame.fillna({"model_version": "", "scorer": ""}).sort_values(keys, ignore_index=True)
        for frame in (got, expected)
    )  # a request without a version, a metric without a scorer: one null key each
    for column in [*keys, "n"]:
        assert got[column].tolist() == expected[column].tolist(), column
    np.testing.assert_array_equal(got["lo"], expected["lo"])
    np.testing.assert_array_equal(got["hi"], expected["hi"])


@pytest.mark.parametrize(
    ("metric", "grain"),
    [
        ("response_fk_grade", "minute"),
        ("latency_ms", "hour"),
        ("response_perplexity", "day"),
        ("completion_tokens", "month"),
        ("response_toxicity", "15 minutes"),
    ],
)
def test_metric_trend_matches_pandas(source: DuckDBSource, raw: pd.DataFrame, metric: str, grain: str) -> None:
    got = fetch(source, trends.metric_trend(TABLE, Filters(versions=("6", "7")), grain, metric))
    rows = raw[raw["model_version"].isin(["6", "7"]) & raw[metric].notna()]
    expected = (
        rows.assign(bucket=bucket_of(rows["request_time"], grain), value=rows[metric].astype(float))
        .groupby(["bucket", "model_version"])["value"]
        .agg(["size", "mean", "std", "min", "max"])
        .reset_index()
    )
    got = got.sort_values(["bucket", "model_version"], ignore_index=True)
    assert got["bucket"].tolist() == expected["bucket"].tolist()
    assert got["n"].tolist() == expected["size"].tolist()
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-9)
    np.testing.assert_allclose(got["sd"], expected["std"], rtol=1e-6, atol=1e-9)  # sum-of-squares variance
    np.testing.assert_array_equal(got["lo"], expected["min"])
    np.testing.assert_array_equal(got["hi"], expected["max"])
    scorer_column = METRIC_SCORER_COLUMN.get(metric)
    assert set(got["scorer"].fillna("")) == ({""} if scorer_column is None else set(rows[scorer_column]))


def bin_spread(metric: str, value: float, merged: int = 1) -> float:
    """How far apart two values sharing a bin of `merged` fine bins can be, at this value."""
    binning = METRICS[metric].binning
    if binning.kind == "linear":
        return merged / binning.scale
    return abs(value) * (math.exp(merged / binning.scale) - 1) if value > 0 else 0.0


@pytest.mark.parametrize(
    ("metric", "grain"),
    [
        ("response_perplexity", "day"),
        ("response_fk_grade", "week"),
        ("latency_ms", "hour"),
        ("response_toxicity", "month"),
        ("latency_ms", "6 hours"),
    ],
)
def test_metric_band_is_within_a_bin_of_numpy_percentiles(
    source: DuckDBSource, raw: pd.DataFrame, metric: str, grain: str
) -> None:
    got = fetch(source, trends.metric_band(TABLE, Filters(versions=("6", "7")), grain, metric))
    rows = raw[raw["model_version"].isin(["6", "7"]) & raw[metric].notna()]
    rows = rows.assign(bucket=bucket_of(rows["request_time"], grain))
    assert len(got) == rows.groupby(["bucket", "model_version"]).ngroups
    for _, band in got.iterrows():
        values = np.sort(
            rows.loc[
                (rows["bucket"] == band["bucket"]) & (rows["model_version"] == band["model_version"]), metric
            ].to_numpy(float)
        )
        for q in trends.BAND_QUANTILES:
            position = q * (len(values) - 1)
            below, above = values[math.floor(position)], values[math.ceil(position)]
            merged = trends.BAND_BIN_MERGE.get(grain, 1)
            tolerance = max(bin_spread(metric, below, merged), bin_spread(metric, above, merged)) + 1e-9
            assert abs(band[f"p{round(q * 100)}"] - np.quantile(values, q)) <= tolerance


def raw_and_rollup_builders() -> dict[str, Callable[[TableName, Filters, bool], Query]]:
    window = ((date(2026, 4, 1), date(2026, 4, 14)), (date(2026, 4, 10), date(2026, 4, 30)))
    return {
        "version_totals": lambda t, f, r: version_queries.version_totals(t, f, from_rollups=r),
        "traffic_minute": lambda t, f, r: version_queries.traffic(t, f, "minute", from_rollups=r),
        "traffic_week": lambda t, f, r: version_queries.traffic(t, f, "week", from_rollups=r),
        "histograms_by_version": lambda t, f, r: version_queries.histograms_by_version(t, f, from_rollups=r),
        "histograms_by_window": lambda t, f, r: version_queries.histograms_by_window(t, f, *window, from_rollups=r),
        "trend_minute": lambda t, f, r: trends.metric_trend(t, f, "minute", "response_fk_grade", from_rollups=r),
        "trend_day": lambda t, f, r: trends.metric_trend(t, f, "day", "latency_ms", from_rollups=r),
        "band_hour": lambda t, f, r: trends.metric_band(t, f, "hour", "response_perplexity", from_rollups=r),
        "prompt_sample": lambda t, f, r: toxicity.prompt_sample(t, f, from_rollups=r),
        "flagged_newest": lambda t, f, r: toxicity.flagged_requests(t, f, FLAGGED_PROMPTS, from_rollups=r),
        "flagged_by_latency": lambda t, f, r: toxicity.flagged_requests(
            t, f, FLAGGED_EITHER, "latency_ms", False, 2, 40, from_rollups=r
        ),
        "flagged_count": lambda t, f, r: toxicity.flagged_count(t, f, FLAGGED_EITHER, from_rollups=r),
    }


FLAGGED_PROMPTS = toxicity.FlaggedQuery(0.5, "prompt")
FLAGGED_EITHER = toxicity.FlaggedQuery(0.05, "either")


@pytest.mark.parametrize("filters", FILTERS)
def test_rollups_give_the_same_numbers_as_the_raw_table(source: DuckDBSource, filters: Filters) -> None:
    for name, build in raw_and_rollup_builders().items():
        from_rollups = fetch(source, build(TABLE, filters, True))
        from_raw = fetch(source, build(TABLE, filters, False))
        keys = [c for c in from_raw.columns if from_raw[c].dtype == object or c in ("bucket", "bin")]
        pd.testing.assert_frame_equal(
            from_rollups.sort_values(keys, ignore_index=True),
            from_raw.sort_values(keys, ignore_index=True),
            check_exact=False,
            rtol=1e-9,
            obj=name,
        )


# --- Keeping the rollups current ----------------------------------------------------------------------------


def rollup_contents(path: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = {}
        for name, _ in rollups.rollup_builds(TABLE):
            frame = con.sql(f'SELECT * FROM "{name.table}"').df()
            keys = [c for c in frame.columns if frame[c].dtype == object or c in ("bucket", "hour", "date", "bin")]
            tables[name.table] = frame.sort_values(keys, ignore_index=True)
    return tables


def usable(source: Source, table: TableName = TABLE) -> bool:
    """The pages' check: one statement, which fails while the state table is missing (the pages then read the
    requests table, as when it says the rollups are behind)."""
    try:
        freshness = run(source, rollup_status.rollup_freshness(table)).table.to_pylist()
    except DataAccessError:
        return False
    return rollup_status.rollups_usable(freshness)


def test_refresh_after_new_rows_equals_a_full_rebuild(tmp_path: Path, demo_rows: pa.Table) -> None:
    frame = demo_rows.to_pandas()
    cut = date(2026, 4, 20)
    early = frame["date"] < cut
    extra_day = (frame["date"] == date(2026, 4, 19)).to_numpy() & (np.arange(len(frame)) % 2 == 0)
    first = demo_rows.filter(pa.array(early.to_numpy() & ~extra_day))
    rest = demo_rows.filter(pa.array(~early.to_numpy() | extra_day))
    path = write_requests(tmp_path / "incremental.duckdb", first)
    source = DuckDBSource(path)
    assert usable(source)
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rest)
        con.execute("INSERT INTO requests SELECT * FROM incoming")
    assert not usable(source)
    stale = fetch(source, rollup_status.stale_dates(TABLE))
    expected_dates = sorted(set(rest.column("date").to_pylist()))
    assert [d.date() if isinstance(d, datetime) else d for d in stale["date"]] == expected_dates
    with duckdb.connect(str(path)) as con:
        summary = rollup_refresh.refresh_rollups(con, TABLE)
    assert summary == rollup_refresh.RefreshSummary(False, tuple(expected_dates))
    assert usable(source)
    rebuilt = write_requests(tmp_path / "rebuilt.duckdb", demo_rows)
    for name, table in rollup_contents(path).items():
        pd.testing.assert_frame_equal(table, rollup_contents(rebuilt)[name], check_exact=False, rtol=1e-12, obj=name)


def test_missing_rollups_are_reported_and_built(tmp_path: Path, demo_rows: pa.Table) -> None:
    path = write_requests(tmp_path / "plain.duckdb", demo_rows, rollups=False)
    source = DuckDBSource(path)
    assert run(source, rollup_status.rollup_presence(TABLE)).table.num_rows == 0
    assert not usable(source)
    with duckdb.connect(str(path)) as con:
        assert rollup_refresh.refresh_rollups(con, TABLE) == rollup_refresh.RefreshSummary(True, ())
        assert rollup_refresh.refresh_rollups(con, TABLE) == rollup_refresh.RefreshSummary(False, ())  # nothing stale
    assert usable(source)


def test_forced_dates_and_failed_refresh_leave_rollups_consistent(tmp_path: Path, demo_rows: pa.Table) -> None:
    path = write_requests(tmp_path / "forced.duckdb", demo_rows)
    before = rollup_contents(path)
    with duckdb.connect(str(path)) as con:
        assert rollup_refresh.refresh_rollups(con, TABLE, [date(2026, 4, 3)]).dates == (date(2026, 4, 3),)
        with pytest.raises(duckdb.Error):
            rollup_refresh.refresh_rollups(con, TableName("no_such_table"), [date(2026, 4, 3)])
    for name, table in rollup_contents(path).items():
        pd.testing.assert_frame_equal(table, before[name], check_exact=False, rtol=1e-12, obj=name)


def test_command_line_builds_the_rollups(
    tmp_path: Path, demo_rows: pa.Table, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_requests(tmp_path / "cli.duckdb", demo_rows, rollups=False)
    assert rollup_job.main(["--duckdb", str(path)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    assert usable(DuckDBSource(path))
    assert rollup_job.main(["--duckdb", str(tmp_path / "missing.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert rollup_job.main(["--duckdb", str(path), "--requests-table", "bad name;"]) == 2
    assert "not a valid table name" in capsys.readouterr().err
    assert rollup_job.main(["--duckdb", str(path), "--requests-table", "no_such_table"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "Traceback" not in error


# --- Statistics against scipy on raw values -----------------------------------------------------------------


def engine_samples(
    tmp_path: Path, metric: str, first: np.ndarray, second: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both samples through the real engine path: a requests table, its rollups, the histogram query."""
    values = np.concatenate([first, second])
    versions = np.array(["1"] * len(first) + ["2"] * len(second))
    path = write_requests(
        tmp_path / f"{metric}.duckdb", synthetic_requests({metric: values}, versions, datetime(2026, 4, 1))
    )
    hist = fetch(DuckDBSource(path), version_queries.histograms_by_version(TABLE, Filters(), metrics=(metric,)))
    return hist[hist["group"] == "1"], hist[hist["group"] == "2"]


def test_statistics_equal_scipy_when_every_value_has_its_own_bin(tmp_path: Path) -> None:
    """Whole numbers below 100 each get a 1%-wide bin, so binned ranks are the real ranks (ties included)."""
    rng = np.random.default_rng(1)
    first = rng.integers(1, 90, 1500).astype(float)
    second = rng.integers(3, 95, 1300).astype(float)
    rows_1, rows_2 = engine_samples(tmp_path, "completion_tokens", first, second)
    a, b = stats.aligned(rows_1, rows_2)
    mwu = stats.mann_whitney(a, b)
    expected = scipy_stats.mannwhitneyu(second, first, method="asymptotic")
    assert mwu.u == expected.statistic
    assert mwu.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    ks = stats.kolmogorov_smirnov(a, b)
    expected_ks = scipy_stats.ks_2samp(first, second, method="asymp")
    assert ks.statistic == pytest.approx(expected_ks.statistic, abs=1e-12)
    assert ks.p_value == pytest.approx(expected_ks.pvalue, rel=1e-9)
    assert stats.wasserstein(a, b).distance == pytest.approx(scipy_stats.wasserstein_distance(first, second), rel=1e-12)
    for q in (0.05, 0.5, 0.95):
        assert stats.binned(rows_1).quantile(q) == pytest.approx(np.quantile(first, q), abs=1e-9)


def quantile_bins(sample: stats.Binned, q: float) -> tuple[float, float]:
    """Bounds that surely hold the q-quantile: from the bin of its lower to that of its upper order statistic."""
    ends = np.cumsum(sample.counts)
    position = q * (sample.n - 1)
    first = int(np.searchsorted(ends, math.floor(position), side="right"))
    last = int(np.searchsorted(ends, math.ceil(position), side="right"))
    return float(sample.lows[first]), float(sample.highs[last])


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.4])
def test_statistics_stay_within_their_binning_bounds(tmp_path: Path, shift: float) -> None:
    rng = np.random.default_rng(7)
    first = rng.lognormal(5.0, 0.8, 2500)
    second = rng.lognormal(5.0 + shift, 0.9, 2000)
    rows_1, rows_2 = engine_samples(tmp_path, "response_perplexity", first, second)
    a, b = stats.aligned(rows_1, rows_2)

    mwu = stats.mann_whitney(a, b)
    exact_u = scipy_stats.mannwhitneyu(second, first, method="asymptotic").statistic
    assert abs(mwu.u - exact_u) <= mwu.max_u_error
    assert mwu.max_u_error / (len(first) * len(second)) < 0.01  # 1% bins: under 1% of pairs are binned ties

    ks = stats.kolmogorov_smirnov(a, b)
    exact_d = scipy_stats.ks_2samp(first, second).statistic
    assert ks.statistic - 1e-12 <= exact_d <= ks.statistic + ks.max_d_error + 1e-12

    distance = stats.wasserstein(a, b)
    assert abs(distance.distance - scipy_stats.wasserstein_distance(first, second)) <= distance.max_error

    for q in (0.1, 0.5, 0.9, 0.99):
        low, high = quantile_bins(stats.binned(rows_2), q)
        assert low <= np.quantile(second, q) <= high
        assert low <= stats.binned(rows_2).quantile(q) <= high

    significant = scipy_stats.ks_2samp(first, second).pvalue < 0.01
    assert (ks.p_value < 0.01) == significant


def test_psi_equals_numpy_on_the_same_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    first = rng.beta(1.2, 12.0, 4000)
    second = rng.beta(1.5, 10.0, 3000)
    rows_1, rows_2 = engine_samples(tmp_path, "response_toxicity", first, second)
    a, b = stats.aligned(rows_1, rows_2)
    psi = stats.population_stability_index(a, b)

    def shares(values: np.ndarray) -> np.ndarray:
        coarse = np.searchsorted(psi.edges, values, side="right") - 1
        return np.bincount(np.maximum(coarse, 0), minlength=len(psi.edges)) / len(values)

    base, comp = np.maximum(shares(first), stats.PSI_FLOOR), np.maximum(shares(second), stats.PSI_FLOOR)
    assert psi.value == pytest.approx(float(np.sum((comp - base) * np.log(comp / base))), rel=1e-12)
    largest_fine_bin = a.counts.max() / a.n
    assert len(psi.edges) == stats.PSI_BINS
    assert np.all(np.abs(shares(first) - 1 / stats.PSI_BINS) <= largest_fine_bin + 1e-12)  # equal height


# --- What the pages show, against pandas and scipy on the demo rows -----------------------------------------


@pytest.fixture(scope="module")
def overview_inputs(source: DuckDBSource) -> tuple[pd.DataFrame, page_stats.Histograms]:
    filters = Filters(start=date(2026, 4, 12), end=date(2026, 4, 21))
    totals = fetch(source, version_queries.version_totals(TABLE, filters))
    return totals, page_stats.Histograms(fetch(source, version_queries.histograms_by_version(TABLE, filters)))


def test_version_table_matches_pandas(
    overview_inputs: tuple[pd.DataFrame, page_stats.Histograms], raw: pd.DataFrame
) -> None:
    totals, hist = overview_inputs
    scorers = {m: hist.shared_scorer(m, ["6", "7"]) for m, info in METRICS.items() if info.scorer_column}
    table = page_stats.version_table(totals, hist, 0.3, scorers).set_index("model_version")
    rows = in_filters(raw, Filters(start=date(2026, 4, 12), end=date(2026, 4, 21)))
    for version in ("6", "7"):
        mine = rows[rows["model_version"] == version]
        row = table.loc[version]
        assert row["requests"] == len(mine)
        assert row["error_rate"] == pytest.approx((mine["status_code"] != 200).mean())
        latency = mine["latency_ms"].dropna().to_numpy(float)
        assert row["latency_p50"] == pytest.approx(np.quantile(latency, 0.5), rel=0.01)
        assert row["latency_p95"] == pytest.approx(np.quantile(latency, 0.95), rel=0.01)
        assert row["fk_mean"] == pytest.approx(mine["response_fk_grade"].mean(), rel=1e-9)
        assert row["perplexity_mean"] == pytest.approx(mine["response_perplexity"].mean(), rel=1e-9)
        # The card shows the median (perplexity is heavy-tailed); from 1%-wide log bins, so within 1%.
        perplexity = mine["response_perplexity"].dropna().to_numpy(float)
        assert row["perplexity_median"] == pytest.approx(np.median(perplexity), rel=0.01)
        toxicity = mine["response_toxicity"].dropna()
        assert row["toxicity_above"] == int((toxicity >= 0.3).sum())  # no demo score sits within 1e-15 of 0.3
        assert row["toxicity_n"] == len(toxicity)
        assert row["tokens_per_request"] == pytest.approx(mine["total_tokens"].sum() / len(mine))


def _holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest p times (m - i), made monotone, capped at 1; NaN stays."""
    order = sorted((i for i, p in enumerate(p_values) if p == p), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def test_version_comparison_matches_scipy(
    overview_inputs: tuple[pd.DataFrame, page_stats.Histograms], raw: pd.DataFrame
) -> None:
    totals, hist = overview_inputs
    scorers = {m: hist.shared_scorer(m, ["6", "7"]) for m, info in METRICS.items() if info.scorer_column}
    table = page_stats.compare_versions(totals, hist, "6", "7", 0.5, scorers).set_index("key")
    rows = in_filters(raw, Filters(start=date(2026, 4, 12), end=date(2026, 4, 21)))
    old, new = rows[rows["model_version"] == "6"], rows[rows["model_version"] == "7"]
    errors = [[(v["status_code"] != 200).sum(), (v["status_code"] == 200).sum()] for v in (old, new)]
    assert table.loc["error_rate", "p_value"] == pytest.approx(
        scipy_stats.chi2_contingency(errors, correction=False)[1], rel=1e-9
    )
    for key, metric in (("latency", "latency_ms"), ("fk", "response_fk_grade"), ("perplexity", "response_perplexity")):
        first, second = old[metric].dropna().to_numpy(float), new[metric].dropna().to_numpy(float)
        exact = scipy_stats.mannwhitneyu(second, first, method="asymptotic").statistic
        binned = stats.mann_whitney(
            *stats.aligned(
                hist.sample("6", metric, scorers.get(metric) or ""), hist.sample("7", metric, scorers.get(metric) or "")
            )
        )
        assert abs(table.loc[key, "statistic"] - exact) <= binned.max_u_error
        assert table.loc[key, "effect"] == pytest.approx(2 * exact / (len(first) * len(second)) - 1, abs=0.01)
        assert (table.loc[key, "n_baseline"], table.loc[key, "n_comparison"]) == (len(first), len(second))
    # Holm within each family (quality, safety), computed here step by step from the raw p-values.
    family = {measure.key: measure.family for measure in page_stats.MEASURES}
    assert set(family.values()) == {"quality", "safety"}
    for name in ("quality", "safety"):
        members = table[[family[key] == name for key in table.index]]
        np.testing.assert_allclose(members["p_holm"], _holm_by_hand(members["p_value"].to_list()))
    assert table.loc["fk", "verdict"].startswith("significant")  # v7 writes far simpler answers in the demo
    # Perplexity is summarised by its median (heavy-tailed: the mean follows a few pasted logs).
    for column, version in (("baseline", old), ("comparison", new)):
        perplexity = version["response_perplexity"].dropna().to_numpy(float)
        assert table.loc["perplexity", column] == pytest.approx(np.median(perplexity), rel=0.01)
        assert abs(table.loc["perplexity", column] - perplexity.mean()) > 0.02 * perplexity.mean()


def test_drift_table_matches_scipy_within_bounds(source: DuckDBSource, raw: pd.DataFrame) -> None:
    hist = page_stats.Histograms(fetch(source, version_queries.histograms_by_version(TABLE, Filters())))
    drift = drift_stats.drift_table(hist, "6", "7").set_index("metric")
    for metric in METRICS:
        first = raw.loc[raw["model_version"] == "6", metric].dropna().to_numpy(float)
        second = raw.loc[raw["model_version"] == "7", metric].dropna().to_numpy(float)
        row = drift.loc[metric]
        assert (row["n_baseline"], row["n_comparison"]) == (len(first), len(second))
        a, b = stats.aligned(hist.sample("6", metric, row["scorer"]), hist.sample("7", metric, row["scorer"]))
        exact_d = scipy_stats.ks_2samp(first, second).statistic
        assert (
            row["ks_statistic"] - 1e-12
            <= exact_d
            <= row["ks_statistic"] + stats.kolmogorov_smirnov(a, b).max_d_error + 1e-12
        )
        bound = stats.wasserstein(a, b).max_error
        assert abs(row["wasserstein"] - scipy_stats.wasserstein_distance(first, second)) <= bound + 1e-9
        assert row["reading"].startswith(METRICS[metric].label)


def test_metrics_from_different_scorers_are_not_compared(tmp_path: Path, demo_rows: pa.Table) -> None:
    frame = demo_rows.to_pandas()
    frame.loc[frame["model_version"] == "7", "readability_scorer"] = "another-readability-1.0"
    path = write_requests(
        tmp_path / "scorers.duckdb", pa.Table.from_pandas(frame, schema=REQUESTS_ARROW, preserve_index=False)
    )
    hist = page_stats.Histograms(fetch(DuckDBSource(path), version_queries.histograms_by_version(TABLE, Filters())))
    assert hist.shared_scorer("response_fk_grade", ["6", "7"]) is None
    drift = drift_stats.drift_table(hist, "6", "7").set_index("metric")
    assert "scored by different scorers" in drift.loc["response_fk_grade", "reading"]
    assert math.isnan(drift.loc["response_fk_grade", "psi"])
    assert not math.isnan(drift.loc["latency_ms", "psi"])


# --- The Databricks dialect, run for real on local Spark ----------------------------------------------------


@pytest.fixture(scope="module")
def spark_source(tmp_path_factory: pytest.TempPathFactory, demo_rows: pa.Table) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs a Java runtime (java on PATH or JAVA_HOME)")
    from data_access.sources import SparkSource
    from jobs.spark_session import local_spark

    spark = local_spark("local[2]", warehouse_dir=tmp_path_factory.mktemp("analytics-warehouse"))
    spark.createDataFrame(demo_rows).write.mode("overwrite").saveAsTable("aq_requests")
    assert refresh_spark_rollups(spark, TableName("aq_requests")) == rollup_refresh.RefreshSummary(True, ())
    yield SparkSource(spark)
    spark.stop()


@pytest.mark.spark
def test_databricks_sql_gives_the_same_numbers_on_spark(spark_source: Any, source: DuckDBSource) -> None:
    """Every page query compiled for Databricks runs on Spark SQL and matches DuckDB, rollups and raw alike."""
    assert_same_on_spark(spark_source, TableName("aq_requests"), source, (True, False))


def assert_same_on_spark(
    spark_source: Any, spark_table: TableName, source: DuckDBSource, variants: tuple[bool, ...]
) -> None:
    filters = Filters(start=date(2026, 4, 10), end=date(2026, 4, 24), versions=("6", "7"))
    assert usable(spark_source, spark_table)
    for name, build in raw_and_rollup_builders().items():
        for from_rollups in variants:
            on_spark = run(spark_source, build(spark_table, filters, from_rollups)).table.to_pandas()
            on_duckdb = fetch(source, build(TABLE, filters, from_rollups))
            keys = [c for c in on_duckdb.columns if on_duckdb[c].dtype == object or c in ("bucket", "bin")]
            pd.testing.assert_frame_equal(
                on_spark.sort_values(keys, ignore_index=True),
                on_duckdb.sort_values(keys, ignore_index=True),
                check_exact=False,
                rtol=1e-9,
                check_dtype=False,
                obj=f"{name} (rollups: {from_rollups})",
            )


@pytest.mark.spark
def test_spark_job_refresh_of_a_changed_date_equals_a_full_build(
    spark_source: Any, source: DuckDBSource, demo_rows: pa.Table
) -> None:
    """The Spark job's refresh after a batch: only the batch's date is recomputed (local parquet: the table
    rewritten with that date's new rows; Delta: REPLACE WHERE), and every figure equals the embedded engine's."""
    spark, table, day = spark_source.spark, TableName("aq_incremental"), date(2026, 4, 12)
    on_day = (demo_rows.to_pandas()["date"] == day).to_numpy() & (np.arange(demo_rows.num_rows) % 3 == 0)
    spark.createDataFrame(demo_rows.filter(pa.array(~on_day))).write.mode("overwrite").saveAsTable(table.table)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(True, ())
    spark.createDataFrame(demo_rows.filter(pa.array(on_day))).write.insertInto(table.table)
    assert not usable(spark_source, table)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(False, (day,))
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(False, ())
    assert_same_on_spark(spark_source, table, source, (True,))


@pytest.mark.spark
def test_spark_refresh_of_the_dates_a_run_wrote(spark_source: Any, source: DuckDBSource, demo_rows: pa.Table) -> None:
    """The job passes the dates it wrote: those are recomputed without looking for changed dates; a date changed
    behind its back is still found (the total count disagrees), and the local rollups stay one file each."""
    spark, table = spark_source.spark, TableName("aq_dated")
    days = pd.Series(demo_rows.column("date").to_pylist())
    first, second = date(2026, 4, 12), date(2026, 4, 20)
    held_back = {day: (days == day).to_numpy() & (np.arange(demo_rows.num_rows) % 2 == 0) for day in (first, second)}
    late = held_back[first] | held_back[second]
    spark.createDataFrame(demo_rows.filter(pa.array(~late))).write.partitionBy("date").saveAsTable(table.table)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(True, ())
    columns = spark.table(table.table).columns  # by position: the partition column is last
    spark.createDataFrame(demo_rows.filter(pa.array(held_back[first]))).select(*columns).write.insertInto(table.table)
    assert refresh_spark_rollups(spark, table, [first]) == rollup_refresh.RefreshSummary(False, (first,))
    spark.createDataFrame(demo_rows.filter(pa.array(held_back[second]))).select(*columns).write.insertInto(table.table)
    assert refresh_spark_rollups(spark, table, [first]) == rollup_refresh.RefreshSummary(False, (first, second))
    assert_same_on_spark(spark_source, table, source, (True,))
    for name, _ in rollups.rollup_builds(table):
        assert spark.sql(f"SELECT DISTINCT input_file_name() FROM `{name.table}`").count() == 1
        assert not any(column.isPartition for column in spark.catalog.listColumns(name.table))


@pytest.mark.spark
def test_spark_refresh_stopped_in_one_write_reads_as_stale_until_the_next_one(
    spark_source: Any, source: DuckDBSource, demo_rows: pa.Table
) -> None:
    """The Spark job writes its rollup tables side by side (`SparkRollups.concurrent_writes`). One of them fails
    for real (a file where the histograms' swap table must go, which the refresh leaves alone), while the others
    run on: the refresh raises, and the pages read the requests table (the state table is gone); once the
    obstacle is gone the next refresh of the same date repairs every table and equals the embedded engine."""
    spark, table, day = spark_source.spark, TableName("aq_stopped"), date(2026, 4, 15)
    assert rollup_job.SparkRollups.concurrent_writes > 1
    on_day = (demo_rows.to_pandas()["date"] == day).to_numpy() & (np.arange(demo_rows.num_rows) % 2 == 0)
    spark.createDataFrame(demo_rows.filter(pa.array(~on_day))).write.mode("overwrite").saveAsTable(table.table)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(True, ())
    spark.createDataFrame(demo_rows.filter(pa.array(on_day))).write.insertInto(table.table)
    warehouse = Path(spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:"))
    obstacle = warehouse / f"{rollups.histogram_rollup_name(table).table}__swap"
    obstacle.write_bytes(b"not a table")
    minute_before = spark.table(rollups.minute_rollup_name(table).table).count()
    with pytest.raises(DataAccessError):
        refresh_spark_rollups(spark, table, [day])
    assert spark.table(rollups.minute_rollup_name(table).table).count() != minute_before  # the others were written
    assert not usable(spark_source, table)
    obstacle.unlink()
    assert refresh_spark_rollups(spark, table, [day]) == rollup_refresh.RefreshSummary(False, (day,))
    assert_same_on_spark(spark_source, table, source, (True,))


@pytest.mark.spark
def test_spark_refresh_clears_what_a_killed_write_left_behind(
    spark_source: Any, source: DuckDBSource, demo_rows: pa.Table
) -> None:
    """A write killed midway leaves its table's directory (Spark's part files, its _temporary folder) with no table
    in the catalog, where a CREATE TABLE then refuses to write. The next refresh clears it for its own tables: a
    leftover swap table (a date's refresh) and a leftover rollup (a rebuild); a directory of another name stays."""
    spark, table, day = spark_source.spark, TableName("aq_killed"), date(2026, 4, 15)
    on_day = (demo_rows.to_pandas()["date"] == day).to_numpy() & (np.arange(demo_rows.num_rows) % 2 == 0)
    spark.createDataFrame(demo_rows.filter(pa.array(~on_day))).write.mode("overwrite").saveAsTable(table.table)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(True, ())
    warehouse = Path(spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:"))
    hist = rollups.histogram_rollup_name(table).table
    swap, other = warehouse / f"{hist}__swap", warehouse / f"{hist}__mine"
    for leftover in (swap, other):  # the files a write had finished, as Spark wrote them, and its unfinished ones
        shutil.copytree(warehouse / hist, leftover)
        (leftover / "_temporary" / "0").mkdir(parents=True)
    assert not spark.catalog.tableExists(swap.name)
    with pytest.raises(Exception, match="LOCATION_ALREADY_EXISTS"):
        spark.sql(f"CREATE TABLE `{swap.name}` USING parquet AS SELECT 1 AS x")
    spark.createDataFrame(demo_rows.filter(pa.array(on_day))).write.insertInto(table.table)
    assert refresh_spark_rollups(spark, table, [day]) == rollup_refresh.RefreshSummary(False, (day,))
    assert_same_on_spark(spark_source, table, source, (True,))
    assert not swap.exists() and (other / "_temporary").is_dir()
    minute = rollups.minute_rollup_name(table).table
    shutil.copytree(warehouse / minute, warehouse / "kept")  # a rebuild after a killed one: the rollup's own folder
    spark.sql(f"DROP TABLE `{minute}`")
    shutil.copytree(warehouse / "kept", warehouse / minute)
    assert refresh_spark_rollups(spark, table) == rollup_refresh.RefreshSummary(True, ())
    assert_same_on_spark(spark_source, table, source, (True,))
    assert spark.sql(f"SELECT DISTINCT input_file_name() FROM `{minute}`").count() == 1

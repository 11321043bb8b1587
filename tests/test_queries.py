"""The query catalog on real DuckDB over generated data, checked against pandas on the same rows."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from core.catalog import GRAINS
from data_access import queries
from data_access.config import TableName
from data_access.demo import generate_requests
from data_access.payload import parse_payload
from data_access.queries import job, versions
from data_access.schema import REQUESTS_ARROW
from data_access.sources import DuckDBSource

TABLE = TableName("requests")


def _parsed_only(payload: pa.Table) -> pa.Table:
    parsed = parse_payload(payload)
    for field in REQUESTS_ARROW:
        if field.name not in parsed.schema.names:
            parsed = parsed.append_column(field, pa.nulls(parsed.num_rows, field.type))
    return parsed


SHADOW = "dbdemos_endpoint_shadow"


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    """Generated requests, every fourth one served by a second endpoint so that endpoint filters matter."""
    generated = generate_requests(20_000, 5, _parsed_only)
    endpoints = generated["endpoint_name"].to_numpy(False).copy()
    endpoints[::4] = SHADOW
    column = generated.schema.get_field_index("endpoint_name")
    return generated.set_column(column, "endpoint_name", pa.array(endpoints, type=pa.string()))


@pytest.fixture(scope="module")
def source(rows: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> DuckDBSource:
    path = tmp_path_factory.mktemp("q") / "inference.duckdb"
    with duckdb.connect(str(path)) as con:
        con.register("incoming", rows)
        con.sql("CREATE TABLE requests AS SELECT * FROM incoming")
    return DuckDBSource(path)


@pytest.fixture(scope="module")
def frame(rows: pa.Table) -> pd.DataFrame:
    return rows.to_pandas()


def _expected_traffic(frame: pd.DataFrame, filters: queries.Filters, freq: str) -> pd.DataFrame:
    df = frame
    if filters.start:
        df = df[df["date"] >= filters.start]
    if filters.end:
        df = df[df["date"] <= filters.end]
    if filters.versions:
        df = df[df["model_version"].isin(filters.versions)]
    if filters.endpoints:
        df = df[df["endpoint_name"].isin(filters.endpoints)]
    df = df.assign(bucket=df["request_time"].dt.floor(freq), error=df["status_code"].ne(200) | df["status_code"].isna())
    out = df.groupby(["bucket", "model_version"], dropna=False).agg(
        requests=("request_id", "size"), errors=("error", "sum")
    )
    return out.reset_index()


@pytest.mark.parametrize(
    ("filters", "grain", "freq"),
    [
        (queries.Filters(), "day", "D"),
        (queries.Filters(date(2026, 4, 10), date(2026, 4, 20), ("7",)), "hour", "h"),
        (queries.Filters(date(2026, 4, 15), date(2026, 4, 15)), "minute", "min"),
        (queries.Filters(endpoints=(SHADOW,)), "day", "D"),
        (queries.Filters(date(2026, 4, 12), date(2026, 4, 14), ("6",), ("dbdemos_endpoint_advanced",)), "hour", "h"),
    ],
)
def test_traffic_matches_pandas(
    source: DuckDBSource, frame: pd.DataFrame, filters: queries.Filters, grain: str, freq: str
) -> None:
    got = queries.run(source, versions.traffic(TABLE, filters, grain, from_rollups=False)).table.to_pandas()
    expected = _expected_traffic(frame, filters, freq)
    assert len(got) == len(expected) > 0
    assert 0 < expected["requests"].sum() < len(frame) or filters == queries.Filters()  # the filter narrows
    got["bucket"] = pd.to_datetime(got["bucket"]).astype(expected["bucket"].dtype)
    pd.testing.assert_frame_equal(
        got.sort_values(["bucket", "model_version"]).reset_index(drop=True),
        expected.sort_values(["bucket", "model_version"]).reset_index(drop=True),
        check_dtype=False,
    )


def test_filter_options_match_pandas(source: DuckDBSource, frame: pd.DataFrame) -> None:
    got = queries.run(source, queries.filter_options(TABLE)).table.to_pandas()
    expected = (
        frame.groupby(["endpoint_name", "model_version"], dropna=False)
        .agg(requests=("request_id", "size"), first_date=("date", "min"), last_date=("date", "max"))
        .reset_index()
    )
    assert got["requests"].sum() == len(frame)
    assert set(got["model_version"].dropna()) == set(frame["model_version"].dropna()) == {"6", "7"}
    assert set(got["endpoint_name"]) == {"dbdemos_endpoint_advanced", SHADOW}
    keys = ["endpoint_name", "model_version"]
    pd.testing.assert_frame_equal(
        got.sort_values(keys, na_position="last").reset_index(drop=True),
        expected.sort_values(keys, na_position="last").reset_index(drop=True),
        check_dtype=False,
    )


def test_hostile_filter_values_are_literals(source: DuckDBSource) -> None:
    hostile = queries.Filters(versions=("7' OR '1'='1", "6\\'; DROP TABLE requests; --"))
    result = queries.run(source, versions.traffic(TABLE, hostile, "day", from_rollups=False))
    assert result.table.num_rows == 0
    assert queries.run(source, queries.filter_options(TABLE)).table.num_rows > 0  # the table is still there


def test_every_catalog_query_compiles_for_databricks() -> None:
    filters = queries.Filters(date(2026, 4, 1), date(2026, 4, 30), ("6", "7"), ("dbdemos_endpoint_advanced",))
    built = [queries.filter_options(TABLE), job.unscored_payload(TableName("payload"), TABLE, 10)]
    built += [versions.traffic(TABLE, filters, grain, from_rollups=False) for grain in GRAINS]
    for query in built:
        sql = query.sql("databricks")
        assert "`requests`" in sql or "`payload`" in sql
        assert '"' not in sql.replace('\\"', "")  # Databricks quotes identifiers with backticks


def test_unknown_grain_is_refused() -> None:
    with pytest.raises(ValueError, match="granularity"):
        versions.traffic(TABLE, queries.Filters(), "fortnight")


def test_a_bundle_keeps_only_what_a_union_can() -> None:
    """Parts that keep the first rows of an order (the flagged list, a LIMIT) go alone; a bundle refuses them."""
    from data_access.queries import Bundle, toxicity
    from data_access.queries.pages import page_statements, rides_along

    table, filters = TableName("requests"), queries.Filters(start=date(2026, 4, 1), end=date(2026, 4, 30))
    built = {q.name: q for q in toxicity.toxicity_page(table, filters, "hour")}
    assert not rides_along(built["flagged_requests"]) and not rides_along(built["toxic_requesters"])
    assert rides_along(built["toxicity_trend"]) and rides_along(built["rollup_freshness"])
    with pytest.raises(ValueError, match="ORDER BY"):
        Bundle("x", (built["toxicity_trend"], built["toxic_requesters"])).sql("duckdb")
    first, *alone = page_statements("Toxicity", list(built.values()), "databricks")
    assert isinstance(first, Bundle) and [q.name for q in alone] == ["prompt_sample", "flagged_requests",
                                                                      "toxic_requesters"]  # fmt: skip
    assert page_statements("Overview", list(built.values()), "databricks") == list(built.values())
    assert page_statements("Toxicity", list(built.values()), "duckdb") == list(built.values())  # in process

"""Toxicity, Usage and cost, and Requests queries, checked against pandas on the same rows; their pure helpers.

A synthetic requests table (and the payload rows behind it) with the awkward cases built in: two toxicity
scorers, missing versions, null scores, estimated tokens, missing latencies and status codes, parse errors,
ids without a payload id, a duplicated id, and texts full of quotes, %, _, backslashes and SQL. Every query runs
on DuckDB through the app's `DuckDBSource` and is compared with an independent pandas computation.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlglot
import sqlglot.expressions as sge

from core.catalog import below_hour
from data_access import queries, rollup_status, rollups
from data_access.config import TableName
from data_access.queries import Filters, Query, listing, pages, requests, run, toxicity, usage
from data_access.queries.requests import MetricRange, RequestSearch
from data_access.queries.toxicity import FlaggedQuery
from data_access.schema import REQUESTS_ARROW
from data_access.sources import DuckDBSource
from testkit.tables import ROWS, SCORERS, synthetic_requests, write_data_dir
from ui import detail_charts

TABLE = TableName("requests")
PAYLOAD = TableName("payload")
NEEDLES = (
    "50%",
    "%",
    "_",
    "a_b",
    "\\",
    "\\n",
    "it's",
    "'",
    '"',
    "'; drop table requests; --",
    '" or 1=1 --',
    "ärger",
    "stupid",
    "%'--",
    "no such text anywhere",
)
FILTERS = (
    Filters(),
    Filters(versions=("7",)),
    Filters(start=date(2026, 4, 2), end=date(2026, 4, 2)),
    Filters(start=date(2026, 4, 1), end=date(2026, 4, 3), versions=("6", "7"), endpoints=("ep_a",)),
)
GRAINS = ("minute", "15 minutes", "hour", "3 hours", "6 hours", "day", "week", "month")


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def requests_rows() -> pa.Table:
    return synthetic_requests()


@pytest.fixture(scope="session")
def raw(requests_rows: pa.Table) -> pd.DataFrame:
    return requests_rows.to_pandas()


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory, requests_rows: pa.Table) -> DuckDBSource:
    folder = write_data_dir(tmp_path_factory.mktemp("details"), requests_rows)
    return DuckDBSource(folder / "inference.duckdb")


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


def bucket_of(times: pd.Series, grain: str) -> pd.Series:
    floors = {"minute": "min", "15 minutes": "15min", "hour": "h", "3 hours": "3h", "6 hours": "6h", "day": "D"}
    if grain in floors:
        return times.dt.floor(floors[grain])
    return times.dt.to_period("W" if grain == "week" else "M").dt.start_time  # weeks start on Monday


def keyed(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by keys, with null keys made comparable."""
    out = frame.copy()
    for key in keys:
        if out[key].dtype == object:
            out[key] = out[key].fillna("<null>")
    out["bucket"] = pd.to_datetime(out["bucket"]).astype("datetime64[us]") if "bucket" in out else None
    return out.sort_values(keys).reset_index(drop=True)


def assert_frames_close(got: pd.DataFrame, expected: pd.DataFrame, keys: list[str]) -> None:
    got, expected = keyed(got, keys), keyed(expected, keys)
    assert len(got) == len(expected)
    for column in expected.columns:
        left, right = got[column].to_numpy(), expected[column].to_numpy()
        if column in keys or (left.dtype == object and not isinstance(right[0], float)):
            assert list(left) == list(right), column
        else:
            np.testing.assert_allclose(left.astype(float), right.astype(float), rtol=1e-9, atol=1e-9, err_msg=column)


# ---------------------------------------------------------------------------------------------------------
# Toxicity
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize(("filters", "grain"), [(FILTERS[0], "hour"), (FILTERS[1], "minute"), (FILTERS[3], "week")])
def test_toxicity_trend_matches_pandas(
    source: DuckDBSource, raw: pd.DataFrame, filters: Filters, grain: str, from_rollups: bool
) -> None:
    got = fetch(source, toxicity.toxicity_trend(TABLE, filters, grain, from_rollups=from_rollups))
    rows = in_filters(raw, filters).assign(bucket=lambda f: bucket_of(f["request_time"], grain))
    expected = (
        rows.groupby(["bucket", "model_version", "toxicity_scorer"], dropna=False)
        .agg(
            requests=("request_id", "size"),
            prompts_scored=("prompt_toxicity", "count"),
            prompt_mean=("prompt_toxicity", "mean"),
            responses_scored=("response_toxicity", "count"),
            response_mean=("response_toxicity", "mean"),
        )
        .reset_index()
    )
    assert_frames_close(got, expected, ["bucket", "model_version", "toxicity_scorer"])
    assert set(got["toxicity_scorer"].dropna()) == set(SCORERS)  # never pooled: one row per scorer


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize(("threshold", "grain"), [(0.5, "hour"), (0.37, "minute"), (0.05, "day"), (0.95, "month")])
def test_toxicity_shares_match_pandas(
    source: DuckDBSource, raw: pd.DataFrame, threshold: float, grain: str, from_rollups: bool
) -> None:
    filters = FILTERS[3]
    got = fetch(source, toxicity.toxicity_shares(TABLE, filters, grain, threshold, from_rollups=from_rollups))
    rows = in_filters(raw, filters)
    rows = rows.assign(bucket=bucket_of(rows["request_time"], "hour" if grain == "minute" else grain))
    parts = []
    for column, side in (("prompt_toxicity", "prompts"), ("response_toxicity", "responses")):
        scored = rows[rows[column].notna()]
        parts.append(
            scored.groupby(["bucket", "model_version", "toxicity_scorer"], dropna=False).agg(
                **{f"{side}_scored": (column, "size"), f"{side}_flagged": (column, lambda x: (x >= threshold).sum())}
            )
        )
    expected = pd.concat(parts, axis=1).fillna(0).reset_index()
    assert_frames_close(got, expected, ["bucket", "model_version", "toxicity_scorer"])
    assert got["prompts_flagged"].sum() > 0


def test_shares_of_one_scorer_only(source: DuckDBSource, raw: pd.DataFrame) -> None:
    got = fetch(source, toxicity.toxicity_shares(TABLE, Filters(), "day", 0.5, scorer=SCORERS[1]))
    assert set(got["toxicity_scorer"]) == {SCORERS[1]}
    ours = raw[(raw["toxicity_scorer"] == SCORERS[1]) & raw["prompt_toxicity"].notna()]
    assert got["prompts_scored"].sum() == len(ours)
    assert got["prompts_flagged"].sum() == (ours["prompt_toxicity"] >= 0.5).sum()


def pick(times: pd.Series) -> pd.Series:
    """The millisecond of the minute (pandas' own clock arithmetic, not the engine's)."""
    return times.dt.second * 1000 + times.dt.microsecond // 1000


SAMPLE_FILTERS = (*FILTERS, Filters(start=date(2026, 4, 2), end=date(2026, 4, 3), versions=("7",)))


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize("scorer", [None, SCORERS[1]])
def test_prompt_sample_is_the_lowest_hashing_scored_prompts(
    source: DuckDBSource, raw: pd.DataFrame, from_rollups: bool, scorer: str | None
) -> None:
    """From the sample rollup or the requests table: the selection's first scored prompts by the millisecond of the
    minute they arrived at, then id, at most SAMPLE_POINTS, with their previews."""
    for filters in SAMPLE_FILTERS:
        got = fetch(source, toxicity.prompt_sample(TABLE, filters, scorer, from_rollups))
        rows = in_filters(raw, filters)
        rows = rows[rows["prompt_toxicity"].notna() & ((rows["toxicity_scorer"] == scorer) if scorer else True)]
        expected = (
            rows.assign(key=pick(rows["request_time"])).sort_values(["key", "request_id"]).head(toxicity.SAMPLE_POINTS)
        )
        assert 0 < len(got) == min(len(rows), toxicity.SAMPLE_POINTS)
        assert list(got["request_id"]) == list(expected["request_id"])
        assert list(got["prompt_preview"]) == [p[: listing.PREVIEW_CHARS] for p in expected["prompt_text"]]
        assert list(got["prompt_toxicity"]) == list(expected["prompt_toxicity"])
        assert list(got.columns) == ["request_id", "request_time", "model_version", "prompt_toxicity", "prompt_preview"]
    big = fetch(source, toxicity.prompt_sample(TABLE, Filters(), scorer, from_rollups))
    assert len(big) == toxicity.SAMPLE_POINTS and big["model_version"].isna().any()  # no version: sampled too


def test_the_sample_rollup_keeps_only_what_a_sample_can_pick(source: DuckDBSource, raw: pd.DataFrame) -> None:
    """Per date, endpoint, version and scorer, the first SAMPLE_POINTS scored prompts by key, and no more."""
    kept = fetch(source, Query("kept", rollups.stored(rollups.sample_rollup_name(TABLE), rollups.prompt_samples)))
    scored = raw[raw["prompt_toxicity"].notna()].assign(key=lambda f: pick(f["request_time"]))
    strata = list(rollups.SAMPLE_STRATA)
    expected = scored.sort_values(["key", "request_id"]).groupby(strata, dropna=False).head(toxicity.SAMPLE_POINTS)
    assert len(scored) > len(expected) == len(kept)  # some stratum is larger than a sample
    assert set(kept["request_id"]) == set(expected["request_id"])
    assert set(kept["sample_key"]) == set(expected["key"])
    assert kept.groupby(strata, dropna=False)["stratum_prompts"].first().sum() == len(scored)


def expected_flagged(raw: pd.DataFrame, filters: Filters, flagged: FlaggedQuery) -> pd.DataFrame:
    rows = in_filters(raw, filters)
    if flagged.scorer:
        rows = rows[rows["toxicity_scorer"] == flagged.scorer]
    prompt_hit = rows["prompt_toxicity"].fillna(-1) >= flagged.threshold
    response_hit = rows["response_toxicity"].fillna(-1) >= flagged.threshold
    hit = {"prompt": prompt_hit, "response": response_hit, "either": prompt_hit | response_hit}[flagged.target]
    rows = rows[hit]
    if flagged.points:
        at = bucket_of(rows["request_time"], flagged.grain)
        pairs = set(flagged.points)
        rows = rows[[(b.to_pydatetime(), v) in pairs for b, v in zip(at, rows["model_version"], strict=True)]]
    return rows


def sort_like_the_engine(rows: pd.DataFrame, sort: str, descending: bool) -> pd.DataFrame:
    """(sort, then request_time newest first unless sorting by time, then request_id), nulls last."""
    keys, ascending = [sort], [not descending]
    if sort != "request_time":
        keys.append("request_time")
        ascending.append(False)
    ordered = rows.sort_values([*keys, "request_id"], ascending=[*ascending, True], na_position="last", kind="stable")
    return ordered


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize(
    ("target", "sort", "descending", "page_size", "threshold"),
    [
        ("either", "request_time", True, 50, 0.37),
        ("prompt", "prompt_toxicity", True, 37, 0.05),
        ("response", "response_toxicity", False, 200, 0.37),
        ("either", "latency_ms", True, 64, 0.049),  # below the flagged rollup's floor: the requests table
    ],
)
def test_flagged_pages_list_each_flagged_request_once_in_order(
    source: DuckDBSource,
    raw: pd.DataFrame,
    target: str,
    sort: str,
    descending: bool,
    page_size: int,
    threshold: float,
    from_rollups: bool,
) -> None:
    filters = FILTERS[0]
    flagged = FlaggedQuery(threshold, target, None)  # type: ignore[arg-type]
    expected = sort_like_the_engine(expected_flagged(raw, filters, flagged), sort, descending)
    count_query = toxicity.flagged_count(TABLE, filters, flagged, from_rollups)
    assert ("__flagged_v" in count_query.sql("duckdb")) == (from_rollups and threshold >= 0.05)
    count = fetch(source, count_query)["rows"].iloc[0]
    assert count == len(expected) > page_size
    pages = []
    for page in range(math.ceil(count / page_size)):
        query = toxicity.flagged_requests(TABLE, filters, flagged, sort, descending, page, page_size, from_rollups)
        pages.append(fetch(source, query))
    listed = pd.concat(pages)
    assert list(listed["request_id"]) == list(expected["request_id"])
    if listing.texts_inline(sort):
        cut = listing.TEXT_CHARS
        assert list(listed["prompt_text"].fillna("")) == [t[:cut] for t in expected["prompt_text"].fillna("")]
        assert list(listed["response_text"].fillna("")) == [t[:cut] for t in expected["response_text"].fillna("")]
    else:
        assert "prompt_text" not in listed


def test_flagged_points_narrow_to_picked_buckets(source: DuckDBSource, raw: pd.DataFrame) -> None:
    unversioned = raw[raw["model_version"].isna() & (raw["prompt_toxicity"] >= 0.05)].iloc[0]
    points = (
        (datetime(2026, 4, 1, 5), "6"),
        (datetime(2026, 4, 2, 20), "7"),
        (datetime(2026, 4, 2, 21), "7"),
        (unversioned["request_time"].floor("h").to_pydatetime(), None),
    )
    flagged = FlaggedQuery(0.05, "either", SCORERS[0], "hour", points)
    expected = expected_flagged(raw, Filters(), flagged)
    got = fetch(source, toxicity.flagged_requests(TABLE, Filters(), flagged, page_size=200))
    assert 0 < len(expected) < 200
    assert set(got["request_id"]) == set(expected["request_id"])
    assert expected["model_version"].isna().any()
    assert fetch(source, toxicity.flagged_count(TABLE, Filters(), flagged))["rows"].iloc[0] == len(expected)


DENSE_ROWS = 20_000  # enough that many (stratum, 0.01 bin) cells hold more than rollups.NEWEST_KEPT requests
NEWEST_CASES = [  # (threshold, target, scorer, page, page_size), each the first NEWEST_KEPT rows newest first
    (0.05, "either", None, 0, 50),
    (0.05, "prompt", SCORERS[0], 1, 25),
    (0.1, "response", None, 4, 10),
    (0.37, "either", SCORERS[1], 0, 50),
    (0.5, "prompt", None, 2, 16),
    (0.9, "response", SCORERS[0], 0, 50),
]


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[DuckDBSource, pd.DataFrame]:
    rows = synthetic_requests(DENSE_ROWS, seed=5)
    folder = write_data_dir(tmp_path_factory.mktemp("dense"), rows)
    return DuckDBSource(folder / "inference.duckdb"), rows.to_pandas()


def expected_page(raw: pd.DataFrame, filters: Filters, flagged: FlaggedQuery, page: int, size: int) -> pd.DataFrame:
    return sort_like_the_engine(expected_flagged(raw, filters, flagged), "request_time", True)[page * size :][:size]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize(("threshold", "target", "scorer", "page", "page_size"), NEWEST_CASES)
def test_the_newest_flagged_rollup_gives_the_first_rows_newest_first(
    dense: tuple[DuckDBSource, pd.DataFrame],
    filters: Filters,
    threshold: float,
    target: str,
    scorer: str | None,
    page: int,
    page_size: int,
) -> None:
    source, raw = dense
    flagged = FlaggedQuery(threshold, target, scorer)  # type: ignore[arg-type]
    query = toxicity.flagged_requests(TABLE, filters, flagged, page=page, page_size=page_size)
    assert "__newest_v" in query.sql("duckdb") and "__flagged_v" not in query.sql("duckdb")
    got = fetch(source, query)
    expected = expected_page(raw, filters, flagged, page, page_size)
    assert len(expected) == page_size  # a full page: the rollup's cut is what is tested
    assert list(got["request_id"]) == list(expected["request_id"])
    cut = listing.TEXT_CHARS
    assert list(got["prompt_text"].fillna("")) == [t[:cut] for t in expected["prompt_text"].fillna("")]
    raw_query = toxicity.flagged_requests(TABLE, filters, flagged, page=page, page_size=page_size, from_rollups=False)
    pd.testing.assert_frame_equal(got, fetch(source, raw_query))


def test_the_newest_flagged_rollup_keeps_fewer_rows_than_are_flagged(dense: tuple[DuckDBSource, pd.DataFrame]) -> None:
    """The cut is real (some stratum's bin holds more than NEWEST_KEPT flagged prompts, and the rollup fewer
    requests than the flagged rollup), and every kept row is flagged and among its bin's newest."""
    source, raw = dense
    newest = fetch(source, Query("newest", rollups.newest_flagged_rows(TABLE, Filters())))
    every = fetch(source, toxicity.flagged_count(TABLE, Filters(), FlaggedQuery(0.05, "either")))["rows"].iloc[0]
    assert 0 < len(newest) < every
    strata = list(rollups.NEWEST_STRATA)

    def prompt_bins(rows: pd.DataFrame) -> pd.Series:
        prompts = rows[rows["prompt_toxicity"] >= 0.05]
        hundredths = (np.floor(prompts["prompt_toxicity"] * 1000) // 10).rename("bin")
        return prompts.groupby([*(prompts[k].astype(str) for k in strata), hundredths]).size()  # null as "None"

    sizes = prompt_bins(raw)
    assert sizes.max() > rollups.NEWEST_KEPT
    kept = prompt_bins(newest[newest["prompt_rank"] < rollups.NEWEST_KEPT])
    assert kept.to_dict() == sizes.clip(upper=rollups.NEWEST_KEPT).to_dict()  # each bin's newest, all of a small one
    ranks = newest[["prompt_rank", "response_rank", "either_rank"]]
    assert (ranks.min(axis=1) < rollups.NEWEST_KEPT).all()  # nothing else
    assert set(newest["request_id"]) <= set(raw.loc[raw["prompt_toxicity"].ge(0.05) | raw["response_toxicity"].ge(
        0.05), "request_id"])  # fmt: skip


@pytest.mark.parametrize(
    ("flagged", "sort", "descending", "page", "page_size"),
    [
        (FlaggedQuery(0.05, "either"), "request_time", True, 1, 50),  # past the first NEWEST_KEPT rows
        (FlaggedQuery(0.375, "prompt"), "request_time", True, 0, 50),  # between two 0.01 bins
        (FlaggedQuery(0.5, "prompt"), "request_time", False, 0, 50),  # oldest first
        (FlaggedQuery(0.5, "prompt"), "latency_ms", True, 0, 50),
        (FlaggedQuery(0.5, "prompt", None, "hour", ((datetime(2026, 4, 1, 5), "6"),)), "request_time", True, 0, 50),
    ],
)
def test_other_flagged_pages_read_every_flagged_request(
    dense: tuple[DuckDBSource, pd.DataFrame],
    flagged: FlaggedQuery,
    sort: str,
    descending: bool,
    page: int,
    page_size: int,
) -> None:
    source, raw = dense
    query = toxicity.flagged_requests(TABLE, Filters(), flagged, sort, descending, page, page_size)
    assert "__flagged_v" in query.sql("duckdb") and "__newest_v" not in query.sql("duckdb")
    expected = sort_like_the_engine(expected_flagged(raw, Filters(), flagged), sort, descending)
    got = fetch(source, query)
    assert list(got["request_id"]) == list(expected["request_id"][page * page_size :][:page_size])


@pytest.mark.parametrize("target", ["prompt", "response", "either"])
def test_flagged_total_from_shares_equals_the_count(source: DuckDBSource, raw: pd.DataFrame, target: str) -> None:
    filters = Filters(start=date(2026, 4, 1), end=date(2026, 4, 3), endpoints=("ep_a",))
    shares = fetch(source, toxicity.toxicity_shares(TABLE, filters, "hour", 0.5))
    keys = shares[["bucket", "model_version"]]
    unversioned = keys[keys["model_version"].isna()].head(2)
    assert len(unversioned) == 2  # a point of requests without a version is picked too
    points = tuple(
        (pd.Timestamp(b).to_pydatetime(), None if pd.isna(v) else str(v))
        for b, v in pd.concat([keys.head(9), unversioned]).values
    )
    for chosen in ((), points):
        total = detail_charts.flagged_total(shares, target, chosen)
        counted = fetch(source, toxicity.flagged_count(TABLE, filters, FlaggedQuery(0.5, target, None, "hour", chosen)))
        if target == "either":
            assert total is None  # a request toxic both ways must count once: needs the requests
        else:
            assert total == counted["rows"].iloc[0] > 0


def test_request_texts_finds_each_key(source: DuckDBSource, raw: pd.DataFrame) -> None:
    picked = raw.iloc[[3, 7, 100, 2500, 3999]].copy()
    picked.loc[picked.index[0], "request_time"] = pd.NaT  # a key without a time matches rows without a time: none
    got = fetch(source, listing.request_texts(TABLE, detail_charts.text_keys(picked), chars=10))
    assert list(got.sort_values("request_id")["request_id"]) == sorted(picked["request_id"][1:])
    merged = detail_charts.with_texts(picked.drop(columns=["prompt_text", "response_text"]), got)
    for _, row in merged.iloc[1:].iterrows():
        source_row = raw[raw["request_id"] == row["request_id"]].iloc[0]
        assert row["prompt_text"] == (source_row["prompt_text"][:10] if source_row["prompt_text"] else None)
    assert pd.isna(merged.iloc[0]["prompt_text"])


# ---------------------------------------------------------------------------------------------------------
# Usage and cost
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize(
    ("filters", "grain"),
    [
        (FILTERS[0], "minute"),
        (FILTERS[0], "hour"),  # the hourly profile: every endpoint's busiest minute per version
        (FILTERS[2], "hour"),
        (FILTERS[3], "day"),  # one endpoint: its own busiest minute
        (Filters(endpoints=("ep_b",)), "3 hours"),
        (Filters(versions=("6", "7"), endpoints=("ep_a", "ep_b")), "hour"),  # two: their minutes added up first
    ],
)
def test_usage_trend_matches_pandas(
    source: DuckDBSource, raw: pd.DataFrame, filters: Filters, grain: str, from_rollups: bool
) -> None:
    got = fetch(source, usage.usage_trend(TABLE, filters, grain, from_rollups=from_rollups))
    rows = in_filters(raw, filters).assign(bucket=lambda f: bucket_of(f["request_time"], grain))
    rows["minute"] = rows["request_time"].dt.floor("min")
    guessed = rows["tokens_estimated"].fillna(False).astype(bool)
    rows["guessed"] = guessed.astype("int64")
    rows["guessed_prompt"] = rows["prompt_tokens"].where(guessed)
    rows["guessed_completion"] = rows["completion_tokens"].where(guessed)
    per_minute = rows.groupby(["minute", "model_version"], dropna=False).size().rename("n").reset_index()
    per_minute["bucket"] = bucket_of(per_minute["minute"], grain)
    peak = per_minute.groupby(["bucket", "model_version"], dropna=False)["n"].max().rename("peak_requests_per_minute")
    latency = rows["latency_ms"].astype(float)
    expected = (
        rows.assign(latency=latency)
        .groupby(["bucket", "model_version"], dropna=False)
        .agg(
            requests=("request_id", "size"),
            requests_with_tokens=("prompt_tokens", "count"),
            prompt_tokens=("prompt_tokens", lambda x: x.fillna(0).sum()),
            completion_tokens=("completion_tokens", lambda x: x.fillna(0).sum()),
            estimated_requests=("guessed", "sum"),
            estimated_prompt_tokens=("guessed_prompt", lambda x: x.fillna(0).sum()),
            estimated_completion_tokens=("guessed_completion", lambda x: x.fillna(0).sum()),
            latency_n=("latency", "count"),
            mean_ms=("latency", "mean"),
            std_ms=("latency", "std"),
            min_ms=("latency", "min"),
            max_ms=("latency", "max"),
        )
        .join(peak)
        .reset_index()
    )
    got = got[[*expected.columns]]
    # std from sums of squares: allow for round-off relative to the mean
    got_std, expected_std = got.pop("std_ms"), expected.pop("std_ms")
    assert_frames_close(got, expected, ["bucket", "model_version"])
    merged = keyed(got.assign(std_ms=got_std), ["bucket", "model_version"])
    np.testing.assert_allclose(
        merged["std_ms"].astype(float), keyed(expected.assign(std_ms=expected_std), ["bucket", "model_version"])[
            "std_ms"
        ].astype(float), rtol=1e-6, atol=1e-6
    )  # fmt: skip


@pytest.mark.parametrize("from_rollups", [True, False])
@pytest.mark.parametrize("grain", ["hour", "day", "week"])
def test_latency_percentiles_are_within_their_stated_resolution_of_numpy(
    source: DuckDBSource, raw: pd.DataFrame, grain: str, from_rollups: bool
) -> None:
    got = fetch(source, usage.latency_percentiles(TABLE, Filters(), grain, from_rollups=from_rollups))
    rows = raw[raw["latency_ms"].notna()].assign(bucket=lambda f: bucket_of(f["request_time"], grain))
    checked = 0
    for (bucket, version), group in rows.groupby(["bucket", "model_version"], dropna=False):
        match = got[(pd.to_datetime(got["bucket"]) == bucket) & (got["model_version"].fillna("<null>") == (
            "<null>" if pd.isna(version) else version))]  # fmt: skip
        assert len(match) == 1
        values = np.sort(group["latency_ms"].astype(float).to_numpy())
        assert match["latency_n"].iloc[0] == len(values)
        for q in usage.PERCENTILES:
            exact = np.percentile(values, q * 100)
            k = math.floor((len(values) - 1) * q)
            neighbours = values[k : k + 2]
            # Each order statistic is placed inside its bin (5% wide): off by at most 5% of the larger neighbour.
            bound = usage.LATENCY_RESOLUTION * neighbours.max() + 1e-9
            assert abs(match[f"p{round(q * 100)}_ms"].iloc[0] - exact) <= bound
            checked += 1
    assert checked > 3 * 3


def test_latency_percentiles_refuse_minutes() -> None:
    with pytest.raises(ValueError, match="hour grain"):
        usage.latency_percentiles(TABLE, Filters(), "minute")


# ---------------------------------------------------------------------------------------------------------
# Requests: search and filters
# ---------------------------------------------------------------------------------------------------------


def contains(raw: pd.DataFrame, needle: str, fields: tuple[str, ...]) -> pd.Series:
    hit = pd.Series(False, index=raw.index)
    for name in fields:
        hit |= raw[name].fillna("").str.lower().str.contains(needle.lower(), regex=False)
    return hit


@pytest.mark.parametrize("needle", NEEDLES)
def test_search_text_is_a_literal_substring(source: DuckDBSource, raw: pd.DataFrame, needle: str) -> None:
    search = RequestSearch(text=needle, fields=("prompt_text", "response_text"))
    got = fetch(source, requests.request_count(TABLE, Filters(), search))["rows"].iloc[0]
    expected = contains(raw, needle, search.fields).sum()
    assert got == expected
    assert fetch(source, Query("n", queries.requests_table(TABLE).count().as_table())).iloc[0, 0] == ROWS  # intact


def test_search_wildcards_mean_themselves(source: DuckDBSource, raw: pd.DataFrame) -> None:
    def count(text: str) -> int:
        search = RequestSearch(text=text, fields=("prompt_text",))
        return int(fetch(source, requests.request_count(TABLE, Filters(), search))["rows"].iloc[0])

    prompts = raw["prompt_text"].fillna("")
    assert count("a_b") == (prompts == "a_b").sum() > 0  # "axb" would match a LIKE '%a_b%'
    assert count("%") == prompts.str.contains("%", regex=False).sum() < (prompts != "").sum()
    assert count("ÄRGER") == count("ärger") == prompts.str.contains("ÄRGER").sum() > 0


@pytest.mark.parametrize("needle", NEEDLES)
def test_search_literal_survives_the_databricks_dialect(needle: str) -> None:
    sql = requests.request_count(TABLE, Filters(), RequestSearch(text=needle)).sql("databricks")
    literals = [node.this for node in sqlglot.parse_one(sql, read="databricks").find_all(sge.Literal) if node.is_string]
    assert needle in literals  # Spark's own escaping rules read back exactly the user's text
    assert "LIKE" not in sql.upper()


@pytest.mark.parametrize(
    "search",
    [
        RequestSearch(statuses=(429, 503)),
        RequestSearch(statuses=(None,)),
        RequestSearch(statuses=(200, None), parse_error="without"),
        RequestSearch(parse_error="with"),
        RequestSearch(ranges=(MetricRange("prompt_toxicity", 0.37, 0.5),)),
        RequestSearch(ranges=(MetricRange("latency_ms", None, 800.0), MetricRange("total_tokens", 500.0, None))),
        RequestSearch(text="cluster_size", fields=("response_text",), ranges=(MetricRange("response_fk_grade", 9.0),)),
        RequestSearch(text="-0000", fields=("request_id",)),
    ],
)
def test_search_filters_match_pandas(source: DuckDBSource, raw: pd.DataFrame, search: RequestSearch) -> None:
    filters = FILTERS[3]
    rows = in_filters(raw, filters)
    keep = pd.Series(True, index=rows.index)
    if search.text:
        keep &= contains(rows, search.text, search.fields)
    if search.statuses:
        codes = [c for c in search.statuses if c is not None]
        keep &= rows["status_code"].isin(codes) | (rows["status_code"].isna() if None in search.statuses else False)
    if search.parse_error != "any":
        keep &= rows["parse_error"].notna() if search.parse_error == "with" else rows["parse_error"].isna()
    for r in search.ranges:
        values = rows[r.column].astype(float)
        keep &= values.notna()
        keep &= values >= r.low if r.low is not None else True
        keep &= values <= r.high if r.high is not None else True
    expected = sort_like_the_engine(rows[keep], "request_time", True)
    assert fetch(source, requests.request_count(TABLE, filters, search))["rows"].iloc[0] == len(expected) > 0
    page = fetch(source, requests.request_page(TABLE, filters, search, page_size=200))
    assert list(page["request_id"]) == list(expected["request_id"].head(200))


def test_search_problems_are_named() -> None:
    assert requests.search_problems(RequestSearch()) == []
    assert requests.search_problems(RequestSearch(text="x", fields=()))
    assert requests.search_problems(RequestSearch(fields=("status_code",)))
    assert requests.search_problems(RequestSearch(ranges=(MetricRange("latency_ms", 5.0, 1.0),)))
    assert requests.search_problems(RequestSearch(ranges=(MetricRange("request_id", 1.0),)))
    assert requests.search_problems(RequestSearch(ranges=(MetricRange("latency_ms", math.inf),)))
    with pytest.raises(ValueError, match="minimum"):
        requests.request_count(TABLE, Filters(), RequestSearch(ranges=(MetricRange("latency_ms", 5.0, 1.0),)))


@pytest.mark.parametrize(
    ("sort", "descending"), [("request_time", False), ("latency_ms", True), ("status_code", False)]
)
def test_request_pages_cover_every_match_in_order(
    source: DuckDBSource, raw: pd.DataFrame, sort: str, descending: bool
) -> None:
    filters = Filters(start=date(2026, 4, 2), end=date(2026, 4, 2))
    expected = sort_like_the_engine(in_filters(raw, filters), sort, descending)
    listed = []
    for page in range(math.ceil(len(expected) / 200)):
        rows = fetch(source, requests.request_page(TABLE, filters, RequestSearch(), sort, descending, page, 200))
        listed.append(rows)
        assert ("prompt_text" in rows) == requests.page_texts_inline(sort, RequestSearch())
    assert list(pd.concat(listed)["request_id"]) == list(expected["request_id"])


def test_export_is_capped_and_ordered(source: DuckDBSource, raw: pd.DataFrame) -> None:
    got = fetch(source, requests.export_requests(TABLE, Filters(), RequestSearch(), "latency_ms", True, limit=25))
    expected = sort_like_the_engine(raw, "latency_ms", True).head(25)
    assert list(got["request_id"]) == list(expected["request_id"])
    assert list(got.columns) == REQUESTS_ARROW.names
    with pytest.raises(ValueError, match="limit"):
        requests.export_requests(TABLE, Filters(), limit=requests.EXPORT_ROW_CAP + 1)


def test_request_detail_and_its_payload(source: DuckDBSource, raw: pd.DataFrame) -> None:
    for index in (3, 50, 10):  # by Databricks id; by client id only; an id logged twice
        row = raw.iloc[index]
        found = fetch(source, requests.request_detail(TABLE, row["request_id"], row["request_time"].to_pydatetime()))
        assert list(found["request_id"]) == [row["request_id"]]
        assert found["prompt_text"].iloc[0] == row["prompt_text"]
        payload = fetch(source, requests.raw_payload(TABLE, PAYLOAD, row["request_id"], None, row["date"]))
        ids = set(payload["databricks_request_id"].dropna()) | set(payload["client_request_id"].dropna())
        assert ids == {row["request_id"]}
        assert json.loads(payload["request"].iloc[0])["messages"][0]["content"] == row["prompt_text"]
        assert len(payload) == (2 if index == 10 else 1)
    retried = fetch(source, requests.raw_payload(TABLE, PAYLOAD, raw.iloc[10]["request_id"]))
    assert list(retried["timestamp_ms"]) == sorted(retried["timestamp_ms"])  # the scored (earliest) row first
    no_ids = raw.iloc[7]
    ms = detail_charts.epoch_ms(no_ids["request_time"])
    found = fetch(source, requests.raw_payload(TABLE, PAYLOAD, no_ids["request_id"], ms, no_ids["date"]))
    assert len(found) == 1 and found["timestamp_ms"].iloc[0] == ms  # the id-less decoy a millisecond later is not
    assert fetch(source, requests.request_detail(TABLE, "no-such-id")).empty
    with pytest.raises(ValueError, match="timestamp_ms"):
        requests.raw_payload(TABLE, PAYLOAD, no_ids["request_id"])


# ---------------------------------------------------------------------------------------------------------
# Every query: compiles for Databricks, runs on DuckDB, refuses bad arguments
# ---------------------------------------------------------------------------------------------------------


def every_query(filters: Filters, grain: str) -> list[Query]:
    flagged = FlaggedQuery(0.42, "prompt", SCORERS[0], grain, ((datetime(2026, 4, 1, 5), "6"),))
    search = RequestSearch("x'%_\\", ("prompt_text", "request_id"), (200, None), "with", (MetricRange("latency_ms"),))
    return [
        *(q for build in pages.PAGE_QUERIES.values() for q in build(TABLE, filters, grain)),
        toxicity.toxicity_trend(TABLE, filters, grain, SCORERS[0], from_rollups=False),
        toxicity.toxicity_shares(TABLE, filters, grain, 0.42, SCORERS[1], from_rollups=False),
        toxicity.prompt_sample(TABLE, filters, SCORERS[0], from_rollups=False),
        toxicity.flagged_requests(TABLE, filters, flagged, "request_time", True, 0, 20, from_rollups=False),
        toxicity.flagged_requests(TABLE, filters, flagged, "prompt_toxicity", False, 3, 20),
        toxicity.flagged_count(TABLE, filters, flagged),
        listing.request_texts(TABLE, ((datetime(2026, 4, 1, 5), "a"), (None, "b"))),
        usage.usage_trend(TABLE, filters, grain, from_rollups=False),
        toxicity.toxic_requesters(TABLE, filters, flagged, from_rollups=False),
        toxicity.toxic_requesters(TABLE, filters, replace(flagged, threshold=0.4)),
        requests.request_page(TABLE, filters, search, "response_perplexity", True, 2, 10),
        requests.request_count(TABLE, filters, search),
        requests.export_requests(TABLE, filters, search, "latency_ms", False, 10),
        requests.request_detail(TABLE, "a'b", datetime(2026, 4, 1)),
        requests.raw_payload(TABLE, PAYLOAD, "sha1:" + "0" * 40, 1_775_000_000_000, date(2026, 4, 1)),
        *([] if below_hour(grain) else [usage.latency_percentiles(TABLE, filters, grain, from_rollups=False)]),
    ]


EVERY_FILTER = Filters(start=date(2026, 4, 1), end=date(2026, 4, 3), versions=("6", "7"), endpoints=("ep_a",))


def test_every_query_compiles_for_databricks_at_every_grain() -> None:
    for grain in GRAINS:
        for query in every_query(EVERY_FILTER, grain):
            assert "SELECT" in query.sql("databricks").upper(), query.name


@pytest.mark.parametrize("grain", ["minute", "15 minutes", "week"])
def test_every_query_runs_on_duckdb(source: DuckDBSource, grain: str) -> None:
    """Each query gives the columns its expression declares, and the pages find rows under these filters."""
    page_queries = {q.name for build in pages.PAGE_QUERIES.values() for q in build(TABLE, EVERY_FILTER, grain)}
    page_rows = 0
    for query in every_query(EVERY_FILTER, grain):
        result = run(source, query).table
        assert result.column_names == list(query.expr.schema().names), query.name
        page_rows += result.num_rows if query.name in page_queries else 0
    assert page_rows > 0


def test_page_queries_for_undated_filters_run(source: DuckDBSource) -> None:
    for page, build in pages.PAGE_QUERIES.items():
        queries = build(TABLE, Filters(), "hour")
        assert queries, page
        for query in queries:
            run(source, query)


def test_bad_arguments_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="threshold"):
        toxicity.toxicity_shares(TABLE, Filters(), "hour", 0.4567)
    with pytest.raises(ValueError, match="threshold"):
        toxicity.flagged_count(TABLE, Filters(), FlaggedQuery(threshold=1.5))
    with pytest.raises(ValueError, match="granularity"):
        toxicity.toxicity_trend(TABLE, Filters(), "fortnight")
    with pytest.raises(ValueError, match="page_size"):
        toxicity.flagged_requests(TABLE, Filters(), page_size=listing.MAX_PAGE_SIZE + 1)
    with pytest.raises(ValueError, match="page"):
        requests.request_page(TABLE, Filters(), page=-1)
    with pytest.raises(ValueError, match="sort"):
        requests.request_page(TABLE, Filters(), sort="prompt_text; DROP TABLE x")
    with pytest.raises(ValueError, match="target"):
        toxicity.flagged_count(TABLE, Filters(), FlaggedQuery(target="both"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="between 1"):
        listing.request_texts(TABLE, ())
    too_many = tuple((datetime(2026, 4, 1), str(i)) for i in range(toxicity.MAX_SELECTED_POINTS + 1))
    with pytest.raises(ValueError, match="at most"):
        toxicity.flagged_count(TABLE, Filters(), FlaggedQuery(points=too_many))


def test_rollups_that_are_behind_are_noticed(tmp_path: Path, requests_rows: pa.Table) -> None:
    folder = write_data_dir(tmp_path / "behind", requests_rows)
    with duckdb.connect(str(folder / "inference.duckdb")) as con:
        con.execute("DELETE FROM requests WHERE date = DATE '2026-04-02'")
    source = DuckDBSource(folder / "inference.duckdb")
    freshness = fetch(source, rollup_status.rollup_freshness(TABLE)).to_dict("records")
    assert not rollup_status.rollups_usable(freshness)  # the pages then read the requests table


# ---------------------------------------------------------------------------------------------------------
# The Databricks dialect on a real engine: local Spark SQL gives the same rows as DuckDB
# ---------------------------------------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float):
        return round(value, 9)
    return value


def _rows(table: pa.Table) -> list[tuple[object, ...]]:
    return [tuple(_plain(v) for v in row.values()) for row in table.to_pylist()]


@pytest.mark.spark
def test_user_input_and_lookups_give_the_same_rows_on_spark(
    tmp_path_factory: pytest.TempPathFactory, requests_rows: pa.Table, source: DuckDBSource
) -> None:
    pytest.importorskip("pyspark")
    import shutil

    import pyarrow.parquet as pq

    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime")
    from data_access.sources import SparkSource
    from jobs.spark_session import local_spark
    from jobs.spark_tables import REQUESTS_DDL, SPARK_REQUESTS_ARROW

    folder = tmp_path_factory.mktemp("details-spark")
    spark = local_spark("local[2]", warehouse_dir=folder / "warehouse")
    (folder / "requests").mkdir()
    pq.write_table(requests_rows.cast(SPARK_REQUESTS_ARROW), folder / "requests" / "part-0.parquet")
    spark.sql("DROP TABLE IF EXISTS details_requests")
    location = (folder / "requests").as_posix()
    spark.sql(f"CREATE TABLE details_requests ({REQUESTS_DDL}) USING parquet LOCATION '{location}'")
    spark_table, spark_source = TableName("details_requests"), SparkSource(spark)
    raw = requests_rows.to_pandas()
    picked = raw.iloc[[3, 100, 2500]]
    filters = Filters(start=date(2026, 4, 1), end=date(2026, 4, 3), endpoints=("ep_a",))
    flagged = FlaggedQuery(0.37, "either", SCORERS[0], "hour", ((datetime(2026, 4, 1, 5), "6"),))

    def both(build: object) -> None:
        duck = run(source, build(TABLE)).table  # type: ignore[operator]
        spark_rows = run(spark_source, build(spark_table)).table  # type: ignore[operator]
        assert duck.num_rows > 0
        assert _rows(duck) == _rows(spark_rows)  # same rows, same order

    for needle in NEEDLES:  # the count differs per needle (checked against pandas above); here: Spark agrees
        both(lambda t, n=needle: requests.request_count(t, Filters(), RequestSearch(text=n)))
    search = RequestSearch("it's", ("prompt_text",), (200, None), "without", (MetricRange("latency_ms", 500.0),))
    both(lambda t: requests.request_page(t, filters, search, "latency_ms", True, 1, 20))
    both(lambda t: listing.request_texts(t, detail_charts.text_keys(picked)))
    both(lambda t: toxicity.flagged_requests(t, filters, flagged, "prompt_toxicity", True, 0, 50, from_rollups=False))
    both(lambda t: requests.export_requests(t, filters, search, "request_time", False, 30))
    both(lambda t: toxicity.prompt_sample(t, filters, SCORERS[0], from_rollups=False))
    first_id, first_time = picked["request_id"].iloc[0], picked["request_time"].iloc[0].to_pydatetime()
    both(lambda t: requests.request_detail(t, first_id, first_time))


@pytest.mark.spark
def test_the_newest_flagged_rollup_on_spark(
    tmp_path_factory: pytest.TempPathFactory, dense: tuple[DuckDBSource, pd.DataFrame]
) -> None:
    """The Spark job's rollups give the first rows newest first as its requests table does, and as DuckDB does
    (same rows, same order), at every case's threshold, target and page; its state counts agree."""
    pytest.importorskip("pyspark")
    import shutil

    import pyarrow.parquet as pq

    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime")
    from data_access.sources import SparkSource
    from jobs.rollups import refresh_spark_rollups
    from jobs.spark_session import local_spark
    from jobs.spark_tables import REQUESTS_DDL, SPARK_REQUESTS_ARROW

    source, raw = dense
    folder = tmp_path_factory.mktemp("dense-spark")
    spark = local_spark("local[2]", warehouse_dir=folder / "warehouse")
    (folder / "requests").mkdir()
    rows = pa.Table.from_pandas(raw, REQUESTS_ARROW, preserve_index=False)
    pq.write_table(rows.cast(SPARK_REQUESTS_ARROW), folder / "requests" / "part-0.parquet")
    spark.sql("DROP TABLE IF EXISTS dense_requests")
    spark.sql(f"CREATE TABLE dense_requests ({REQUESTS_DDL}) USING parquet LOCATION '{folder / 'requests'}'")
    spark_table, spark_source = TableName("dense_requests"), SparkSource(spark)
    assert refresh_spark_rollups(spark, spark_table).current
    for filters in (FILTERS[0], FILTERS[3]):
        for threshold, target, scorer, page, page_size in NEWEST_CASES:
            flagged = FlaggedQuery(threshold, target, scorer)  # type: ignore[arg-type]
            query = toxicity.flagged_requests(spark_table, filters, flagged, page=page, page_size=page_size)
            assert "__newest_v" in query.sql("databricks")
            got = _rows(run(spark_source, query).table)
            raw_query = toxicity.flagged_requests(
                spark_table, filters, flagged, page=page, page_size=page_size, from_rollups=False
            )
            assert got == _rows(run(spark_source, raw_query).table)
            duck = toxicity.flagged_requests(TABLE, filters, flagged, page=page, page_size=page_size)
            assert got == _rows(run(source, duck).table) and len(got) > 0
